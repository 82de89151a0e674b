import { parseCertificate } from '../ca/x509/inspect.js';
import { readOcspResponse, type ReadBasicResponse } from '../ca/x509/ocsp-response-reader.js';
import type { OcspErrorStatus } from '../ca/x509/ocsp-response.js';
import { notFound } from '../shared/errors.js';
import { serialToBytes, type Serial } from '../shared/ids.js';
import type { OcspSource } from '../shared/telemetry.js';
import type { OcspResponder } from './ocsp-responder.js';
import { REASON_CODES, type RevocationReason } from './reasons.js';

/** GET /v1/certificates/{serial}/ocsp: what the signed response says, decoded from its DER. */
export interface OcspCheckView {
  serial: Serial;
  /** OCSPResponseStatus; anything but `successful` carries no certificate status. */
  responseStatus: 'successful' | OcspErrorStatus;
  certStatus: 'good' | 'revoked' | 'unknown' | null;
  revocationTime: string | null;
  /** The CRLReason in the response; null when it gives none (unspecified is left out, RFC 5280). */
  reason: RevocationReason | null;
  thisUpdate: string | null;
  nextUpdate: string | null;
  producedAt: string | null;
  /** ResponderID: the SHA-1 of the responder's public key (hex), or its DER Name (base64). */
  responderId: { byKey: string } | { byName: string } | null;
  /** The delegated responder certificate the response carries. */
  responderCertificate: { serial: string; subject: string; notAfter: string } | null;
  /** Where the responder found the answer: its memory, the stored pre-signed response, or signed now (`none`: an error status). */
  source: OcspSource;
  /** The CertID asked: the hash OpenSSL uses by default. */
  hashAlgorithm: 'sha1';
  /** The OCSPResponse as signed (base64 DER), for `openssl ocsp -respin`. */
  der: string;
}

const REASON_NAMES = new Map<number, RevocationReason>(
  (Object.entries(REASON_CODES) as [RevocationReason, number][]).map(([name, code]) => [code, name]),
);

/** Asks the service's own OCSP responder about one of its certificates and reads its answer back. */
export class OcspCheck {
  constructor(private readonly responder: Pick<OcspResponder, 'answerFor'>) {}

  async check(serial: Serial): Promise<OcspCheckView> {
    const asked = await this.responder.answerFor(serialToBytes(serial), 'sha1');
    if (!asked) throw notFound(`no certificate with serial ${serial}`);
    const read = readOcspResponse(asked.der);
    const base = { serial, responseStatus: read.responseStatus, source: asked.source, hashAlgorithm: 'sha1' as const };
    const der = asked.der.toString('base64');
    if (!read.basic) return { ...base, ...NO_STATUS, der };
    return { ...base, ...statusOf(read.basic, serial), der };
  }
}

const NO_STATUS = {
  certStatus: null,
  revocationTime: null,
  reason: null,
  thisUpdate: null,
  nextUpdate: null,
  producedAt: null,
  responderId: null,
  responderCertificate: null,
} satisfies Partial<OcspCheckView>;

function statusOf(
  basic: ReadBasicResponse,
  serial: Serial,
): Omit<OcspCheckView, 'serial' | 'responseStatus' | 'source' | 'hashAlgorithm' | 'der'> {
  // One CertID was asked: its answer is the one naming the serial (an INTEGER: no leading zero bytes).
  const asked = unsigned(serialToBytes(serial));
  const single = basic.responses.find((r) => unsigned(r.serial).equals(asked));
  if (!single) throw new Error(`the OCSP response does not answer serial ${serial}`);
  const s = single.status;
  const carried = basic.certs[0];
  const responder = carried ? parseCertificate(carried, 'OCSP responder certificate') : undefined;
  return {
    certStatus: s.kind,
    revocationTime: s.kind === 'revoked' ? s.revokedAt.toISOString() : null,
    reason: s.kind === 'revoked' && s.reasonCode !== null ? (REASON_NAMES.get(s.reasonCode) ?? null) : null,
    thisUpdate: single.thisUpdate.toISOString(),
    nextUpdate: single.nextUpdate?.toISOString() ?? null,
    producedAt: basic.producedAt.toISOString(),
    responderId:
      'byKey' in basic.responderId
        ? { byKey: basic.responderId.byKey.toString('hex') }
        : { byName: basic.responderId.byName.toString('base64') },
    responderCertificate: responder
      ? { serial: responder.serialHex, subject: responder.subject, notAfter: responder.notAfter.toISOString() }
      : null,
  };
}

function unsigned(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}
