import { Router, type Request, type Response } from 'express';
import type { TLSSocket } from 'node:tls';
import type { CaHierarchy } from '../../ca/hierarchy.js';
import type { Enrollment } from '../../enroll/enrollment.js';
import type { ServerKeygen } from '../../enroll/server-keygen.js';
import { CERTS_ONLY_CONTENT_TYPE, CSRATTRS_CONTENT_TYPE, csrAttrs, estCertsOnly, serverKeygenMultipart } from '../../enroll/est/formats.js';
import { fromPemAll } from '../../ca/x509/pem.js';
import { CsrError, csrFromBody, parseCsrDer } from '../../ca/x509/csr.js';
import { DomainError, notFound } from '../../shared/errors.js';
import { credentialOf, sourceOf } from '../request-context.js';

/** EST labels select a profile (RFC 7030 §3.2.2). */
const LABELS = new Set(['device', 'broker']);
const BASE = '/.well-known/est';

function labelOf(req: Request): 'device' | 'broker' | undefined {
  const label = req.params.label as string | undefined;
  if (label === undefined) return undefined;
  if (!LABELS.has(label)) throw notFound(`no EST label ${label} (labels: ${[...LABELS].join(', ')})`);
  return label as 'device' | 'broker';
}

function sendBase64(res: Response, status: number, contentType: string, body: string): void {
  res.status(status).setHeader('Content-Type', contentType);
  res.setHeader('Content-Transfer-Encoding', 'base64');
  res.send(body);
}

const isTls = (req: Request) => (req.socket as TLSSocket).encrypted === true;

/**
 * EST (RFC 7030) under /.well-known/est, optionally /.well-known/est/<label>: cacerts,
 * simpleenroll (HTTP Basic with the enrollment token as password, or a TLS client certificate),
 * simplereenroll (the TLS client certificate of a current certificate), serverkeygen (TLS only:
 * the key travels unencrypted inside TLS, as the RFC allows), csrattrs.
 */
export function estRoutes(enrollment: Enrollment, keygen: ServerKeygen, hierarchy: CaHierarchy): Router {
  const r = Router();
  const paths = (op: string) => [`${BASE}/${op}`, `${BASE}/:label/${op}`];

  r.get(paths('cacerts'), async (req, res) => {
    labelOf(req);
    const issuer = await hierarchy.defaultIssuerId();
    if (!issuer) throw new DomainError('Unavailable', 'no issuing CA yet');
    sendBase64(res, 200, CERTS_ONLY_CONTENT_TYPE, estCertsOnly(await hierarchy.chain(issuer)));
  });

  r.get(paths('csrattrs'), (req, res) => {
    labelOf(req);
    // What we sign with and what we accept: the client picks its key; the profile sets the rest.
    sendBase64(res, 200, CSRATTRS_CONTENT_TYPE, csrAttrs({ oids: ['1.2.840.10045.4.3.2', '1.2.840.10045.2.1', '1.3.101.112'] }));
  });

  const enrollOp = (methods: string[] | undefined) => async (req: Request, res: Response) => {
    const out = await enrollment.enroll({
      credential: credentialOf(req),
      csr: bodyOf(req),
      ctx: { source: sourceOf(req), requestId: res.locals.requestId as string },
      expectedProfile: labelOf(req),
      methods,
    });
    sendBase64(res, 200, CERTS_ONLY_CONTENT_TYPE, estCertsOnly(fromPemAll(out.result.certificate)));
  };
  r.post(paths('simpleenroll'), enrollOp(['est-basic', 'token', 'mtls-renewal']));
  r.post(paths('simplereenroll'), enrollOp(['mtls-renewal']));

  r.post(paths('serverkeygen'), async (req, res) => {
    if (!isTls(req)) throw new DomainError('Forbidden', 'serverkeygen returns a private key: use the TLS listener');
    const requested = enrollmentCsrIdentity(req);
    const out = await keygen.generate({
      credential: credentialOf(req),
      deviceId: requested,
      ctx: { source: sourceOf(req), requestId: res.locals.requestId as string },
      expectedProfile: labelOf(req),
    });
    const [cert] = fromPemAll(out.result.certificate);
    const multipart = serverKeygenMultipart({ privateKeyPkcs8: out.privateKeyPkcs8, certificate: cert! });
    res.status(200).setHeader('Content-Type', multipart.contentType);
    res.setHeader('Cache-Control', 'no-store');
    res.send(multipart.body);
  });
  return r;
}

function bodyOf(req: Request): Buffer {
  if (!Buffer.isBuffer(req.body)) throw new DomainError('BadCsr', 'send the CSR as application/pkcs10 (base64 DER)');
  return req.body;
}

/** serverkeygen's CSR names the subject (its CN); its key is replaced by one generated here. */
function enrollmentCsrIdentity(req: Request): string | undefined {
  try {
    return parseCsrDer(csrFromBody(bodyOf(req))).commonName;
  } catch (e) {
    if (e instanceof CsrError) throw new DomainError('BadCsr', e.message);
    throw e;
  }
}
