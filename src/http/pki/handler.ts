import type { IncomingMessage, ServerResponse } from 'node:http';
import { toPem } from '../../ca/x509/pem.js';
import { writeProblem } from '../problem.js';

/** What the public PKI endpoints read: immutable once published, so cached in memory. */
export interface PkiSource {
  caCertificateDer(caId: string): Promise<Buffer | undefined>;
}

const CA_PATH = /^\/pki\/ca\/([a-z0-9_]{1,64})\.(pem|crt)$/;

const problem = (res: ServerResponse, status: number, title: string, detail: string) => writeProblem(res, { status, title, detail }, undefined);

/**
 * The unauthenticated /pki endpoints, on bare node:http in front of Express: relying parties
 * (brokers, devices) poll these, and Express costs several times the per-request overhead.
 * Returns false for paths it does not serve.
 */
export function createPkiHandler(source: PkiSource): (req: IncomingMessage, res: ServerResponse) => boolean {
  const cache = new Map<string, Buffer>();
  return (req, res) => {
    const url = req.url ?? '';
    if (!url.startsWith('/pki/')) return false;
    void (async () => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('Allow', 'GET, HEAD');
        return problem(res, 405, 'Method not allowed', 'use GET');
      }
      const m = CA_PATH.exec(url.split('?')[0]!);
      if (!m) return problem(res, 404, 'Not found', 'no such PKI resource');
      const [, caId, ext] = m;
      let der = cache.get(caId!);
      if (!der) {
        der = await source.caCertificateDer(caId!);
        if (!der) return problem(res, 404, 'Not found', `no CA certificate ${caId}`);
        cache.set(caId!, der);
      }
      const body = ext === 'pem' ? Buffer.from(toPem(der)) : der;
      res.writeHead(200, {
        'Content-Type': ext === 'pem' ? 'application/x-pem-file' : 'application/pkix-cert',
        'Content-Length': body.length,
        'Cache-Control': 'public, max-age=3600',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    })().catch(() => {
      if (!res.headersSent) problem(res, 503, 'Service unavailable', 'the CA certificate could not be read');
    });
    return true;
  };
}
