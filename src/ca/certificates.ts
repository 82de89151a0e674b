import type { Db } from '../store/db.js';
import type { CertificateFilter, CertificateRow, CertificateStore } from '../store/certificate-store.js';
import { badRequest, notFound } from '../shared/errors.js';
import { parseSerial, serialFromBytes, serialToBytes, type Serial } from '../shared/ids.js';
import { readTimeIdCursor, timeIdCursor, type Page } from '../shared/page.js';
import { fromPemAll, toPem } from './x509/pem.js';
import { parseCertificate } from './x509/inspect.js';

export interface CertificateView {
  serial: Serial;
  certificate: string | null;
  status: CertificateRow['status'];
  caId: string;
  profile: string;
  subject: string;
  deviceId: string | null;
  notBefore: string;
  notAfter: string;
  createdAt: string;
  issuedAt: string | null;
  /** The certificate this one renewed (lineage). */
  renewedFrom: Serial | null;
  revocation: { reason: string; revokedAt: string; invalidityDate: string | null } | null;
}

export function certificateView(r: CertificateRow): CertificateView {
  return {
    serial: serialFromBytes(r.serial),
    certificate: r.der ? toPem(r.der) : null,
    status: r.status,
    caId: r.caId,
    profile: r.profile,
    subject: r.subjectCn,
    deviceId: r.deviceId,
    notBefore: r.notBefore.toISOString(),
    notAfter: r.notAfter.toISOString(),
    createdAt: r.createdAt.toISOString(),
    issuedAt: r.issuedAt?.toISOString() ?? null,
    renewedFrom: r.renewedFrom ? serialFromBytes(r.renewedFrom) : null,
    revocation:
      r.status === 'revoked' && r.revokedAt && r.revocationReason
        ? { reason: r.revocationReason, revokedAt: r.revokedAt.toISOString(), invalidityDate: r.invalidityDate?.toISOString() ?? null }
        : null,
  };
}

const encodeCursor = (r: CertificateRow) => timeIdCursor(r.createdAt, serialFromBytes(r.serial));

function decodeCursor(cursor: string): { createdAt: Date; serial: Buffer } {
  const { at, id: serial } = readTimeIdCursor(cursor);
  if (!/^[0-9a-f]+$/.test(serial)) throw badRequest('the cursor is not valid');
  return { createdAt: at, serial: serialToBytes(serial as Serial) };
}

/** Reading the certificate register. */
export class CertificateRegistry {
  constructor(
    private readonly db: Db,
    private readonly store: CertificateStore,
  ) {}

  async get(serial: Serial): Promise<CertificateView> {
    const row = await this.store.get(this.db, serialToBytes(serial));
    if (!row) throw notFound(`no certificate with serial ${serial}`);
    return certificateView(row);
  }

  /**
   * The recorded certificate of an uploaded PEM certificate (by its serial), and whether the
   * uploaded bytes are exactly the recorded ones. Exactly one CERTIFICATE block, else 400.
   */
  async lookupPem(pem: string): Promise<{ serial: Serial; matches: boolean; certificate: CertificateView }> {
    const blocks = fromPemAll(pem);
    if (blocks.length === 0) throw badRequest('pem holds no -----BEGIN CERTIFICATE----- block');
    if (blocks.length > 1) throw badRequest(`pem holds ${blocks.length} certificates; look up one at a time`);
    const parsed = parseCertificate(blocks[0]!, 'uploaded certificate');
    const serial = parseSerial(parsed.serialHex);
    if (!serial) throw badRequest('the uploaded certificate has a serial this CA never issues');
    const row = await this.store.get(this.db, serialToBytes(serial));
    if (!row) throw notFound(`no certificate with serial ${serial} is recorded`);
    return { serial, matches: row.der !== null && row.der.equals(parsed.der), certificate: certificateView(row) };
  }

  async list(filter: CertificateFilter, page: { cursor?: string | undefined; limit: number }): Promise<Page<CertificateView>> {
    const rows = await this.store.list(this.db, filter, { cursor: page.cursor ? decodeCursor(page.cursor) : undefined, limit: page.limit });
    const last = rows.length === page.limit ? rows[rows.length - 1] : undefined;
    return { items: rows.map(certificateView), nextCursor: last ? encodeCursor(last) : null };
  }
}
