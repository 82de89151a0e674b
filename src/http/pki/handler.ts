import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { toPem } from '../../ca/x509/pem.js';
import { encodeOcspError } from '../../ca/x509/ocsp-response.js';
import { writeProblem } from '../problem.js';
import type { OcspAnswer } from '../../revoke/ocsp-responder.js';
import { sourceOf } from '../request-context.js';
import type { Clock } from '../../shared/clock.js';

/** A published CRL, without its body: enough to answer a conditional GET. */
export interface PublishedCrl {
  caId: string;
  /** 0: the CA's one CRL; 1..n: one of its CRL shards. */
  shard: number;
  kind: 'full' | 'delta';
  crlNumber: bigint;
  thisUpdate: Date;
  /** No other CRL of its partition and kind shares its second: an If-Modified-Since may be answered 304. */
  secondUnique?: boolean;
}

/** What the public PKI endpoints read. */
export interface PkiSource {
  /** Immutable once published, so cached in memory. */
  caCertificateDer(caId: string): Promise<Buffer | undefined>;
  /** The CA's (or CRL shard's) current CRL (replaced first when it is due); undefined for one that has none. */
  currentCrl(caId: string, shard: number): Promise<PublishedCrl | undefined>;
  /** The delta CRL published with the current CRL. */
  currentDeltaCrl(caId: string, shard: number): Promise<PublishedCrl | undefined>;
  /** Every signing CA's current CRLs, each shard's too. */
  allCrls(): Promise<PublishedCrl[]>;
  /** A published CRL's body: immutable, so cached here by CA, shard and number. */
  crlDer(crl: PublishedCrl): Promise<Buffer | undefined>;
  /** Answers a DER OCSPRequest from `requester` (the client's address); never rejects (failures are OCSP error statuses). */
  ocsp(request: Buffer, requester: string): Promise<OcspAnswer>;
}

export interface PkiOptions {
  /** Cache-Control max-age of a pre-signed OCSP GET answer, capped by its refresh point (half its validity) and its nextUpdate. */
  ocspMaxAgeSeconds: number;
  clock: Clock;
  /**
   * OCSP answers and CRL/CA bodies being worked on at once, counted from a complete request to its
   * answer (a slow client's unfinished body holds no slot); beyond, OCSP answers tryLater and the
   * others 503, both with Retry-After. 0: no bound.
   */
  maxInFlight?: number;
  /** Told of each request refused by that bound. */
  onRefused?: () => void;
}

/** Work in flight across the PKI endpoints, and whether one more may start. */
class InFlight {
  private n = 0;
  constructor(
    private readonly max: number,
    private readonly onRefused: () => void,
  ) {}
  /** Starts one unit of work, or returns false (and reports it) when the bound is reached. */
  enter(): boolean {
    if (this.max > 0 && this.n >= this.max) {
      this.onRefused();
      return false;
    }
    this.n++;
    return true;
  }
  leave(): void {
    this.n--;
  }
}

const CA_PATH = /^\/pki\/ca\/([a-z0-9_]{1,64})\.(pem|crt)$/;
/** A CA's CRL (`/pki/crl/ID.crl`) or one of its shards' (`/pki/crl/ID/N.crl`), full or `-delta`, DER or PEM. */
const CRL_PATH = /^\/pki\/crl\/([a-z0-9_]{1,64})(?:\/([1-9][0-9]{0,3}))?(-delta)?\.(pem|crl)$/;
const BUNDLE_PATH = '/pki/crl/bundle.pem';
const OCSP_PATH = '/pki/ocsp';
const OCSP_PREFIX = '/pki/ocsp/';
const OCSP_TYPE = 'application/ocsp-response';
const OCSP_REQUEST_TYPE = 'application/ocsp-request';
/** Larger requests are refused unread (the parser's own limit is 16 KiB). */
const OCSP_MAX_BODY = 16 * 1024;
const BASE64 = /^[A-Za-z0-9+/_-]+={0,2}$/;

const problem = (res: ServerResponse, status: number, title: string, detail: string) =>
  writeProblem(res, { status, title, detail }, undefined);

interface Representation {
  /** Built only when the client does not already hold it. */
  body: () => Promise<Buffer> | Buffer;
  type: string;
  cacheControl: string;
  etag?: string;
  lastModified?: Date;
  /**
   * Whether Last-Modified, in whole seconds, names this representation alone, so that an
   * If-Modified-Since at or after it may be answered 304. Not for a CRL published in the same
   * second as another of its kind (the client may hold the other), nor for the bundle.
   */
  lastModifiedUnique?: boolean;
}

/** Whether the client holds the representation: If-None-Match names its ETag, or (without If-None-Match, RFC 9110 13.1.3) If-Modified-Since is not before it. */
function notModified(req: IncomingMessage, r: Representation): boolean {
  const inm = req.headers['if-none-match'];
  if (inm !== undefined) return r.etag !== undefined && inm.split(',').some((t) => t.trim() === r.etag || t.trim() === '*');
  const ims = req.headers['if-modified-since'];
  if (!ims || !r.lastModified || !r.lastModifiedUnique) return false;
  const since = Date.parse(ims);
  return Number.isFinite(since) && Math.floor(r.lastModified.getTime() / 1000) * 1000 <= since;
}

/** Sends a representation, or 304 when the client already holds it (If-None-Match, If-Modified-Since). */
async function send(req: IncomingMessage, res: ServerResponse, r: Representation): Promise<void> {
  const headers: Record<string, string | number> = { 'Content-Type': r.type, 'Cache-Control': r.cacheControl };
  if (r.etag) headers.ETag = r.etag;
  if (r.lastModified) headers['Last-Modified'] = r.lastModified.toUTCString();
  if (notModified(req, r)) {
    res.writeHead(304, headers);
    return void res.end();
  }
  const body = await r.body();
  headers['Content-Length'] = body.length;
  res.writeHead(200, headers);
  res.end(req.method === 'HEAD' ? undefined : body);
}

// CRLs change on every revocation: pollers revalidate each time, cheaply, with If-None-Match.
const CRL_CACHE = 'public, no-cache';
const crlEtag = (c: PublishedCrl) => (c.shard === 0 ? `"${c.caId}-${c.crlNumber}"` : `"${c.caId}-${c.shard}-${c.crlNumber}"`);

/**
 * The unauthenticated /pki endpoints, on bare node:http in front of Express: relying parties
 * (brokers, devices) poll these, and Express costs several times the per-request overhead.
 * Returns false for paths it does not serve.
 */
export function createPkiHandler(source: PkiSource, options: PkiOptions): (req: IncomingMessage, res: ServerResponse) => boolean {
  const inFlight = new InFlight(options.maxInFlight ?? 0, options.onRefused ?? (() => undefined));
  const ocsp = createOcspHandler(source, options, inFlight);
  const caCache = new Map<string, Buffer>();
  // The newest CRL body seen per CA, shard and kind, in both encodings: pollers get it without a database read.
  const crlCache = new Map<string, { crlNumber: bigint; der: Buffer; pem?: Buffer }>();

  async function crlBody(c: PublishedCrl, pem: boolean): Promise<Buffer> {
    const key = `${c.caId}|${c.shard}|${c.kind}`;
    let hit = crlCache.get(key);
    if (!hit || hit.crlNumber !== c.crlNumber) {
      const der = await source.crlDer(c);
      if (!der) throw new Error(`CRL ${c.crlNumber} of ${c.caId} (shard ${c.shard}) is gone`);
      hit = { crlNumber: c.crlNumber, der };
      if (!crlCache.has(key) || crlCache.get(key)!.crlNumber < c.crlNumber) crlCache.set(key, hit);
    }
    if (!pem) return hit.der;
    hit.pem ??= Buffer.from(toPem(hit.der, 'X509 CRL'));
    return hit.pem;
  }

  async function serve(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (path === BUNDLE_PATH) {
      const crls = await source.allCrls();
      const etag = `"bundle-${createHash('sha256').update(crls.map(crlEtag).join(',')).digest('base64url').slice(0, 22)}"`;
      const newest = crls.reduce<Date | undefined>((m, c) => (!m || c.thisUpdate > m ? c.thisUpdate : m), undefined);
      const body = async () => Buffer.concat(await Promise.all(crls.map((c) => crlBody(c, true))));
      return send(req, res, { body, type: 'application/x-pem-file', cacheControl: CRL_CACHE, etag, lastModified: newest });
    }
    const crl = CRL_PATH.exec(path);
    if (crl) {
      const [, caId, shardText, delta, ext] = crl;
      const shard = shardText ? Number(shardText) : 0;
      const c = await (delta ? source.currentDeltaCrl(caId!, shard) : source.currentCrl(caId!, shard));
      if (!c) return problem(res, 404, 'Not found', `no ${delta ? 'delta ' : ''}CRL for CA ${caId}${shard ? ` shard ${shard}` : ''}`);
      const pem = ext === 'pem';
      return send(req, res, {
        body: () => crlBody(c, pem),
        type: pem ? 'application/x-pem-file' : 'application/pkix-crl',
        cacheControl: CRL_CACHE,
        etag: crlEtag(c),
        lastModified: c.thisUpdate,
        lastModifiedUnique: c.secondUnique === true,
      });
    }
    const ca = CA_PATH.exec(path);
    if (!ca) return problem(res, 404, 'Not found', 'no such PKI resource');
    const [, caId, ext] = ca;
    let der = caCache.get(caId!);
    if (!der) {
      der = await source.caCertificateDer(caId!);
      if (!der) return problem(res, 404, 'Not found', `no CA certificate ${caId}`);
      caCache.set(caId!, der);
    }
    await send(req, res, {
      body: () => (ext === 'pem' ? Buffer.from(toPem(der)) : der),
      type: ext === 'pem' ? 'application/x-pem-file' : 'application/pkix-cert',
      cacheControl: 'public, max-age=3600',
    });
  }

  return (req, res) => {
    const url = req.url ?? '';
    if (!url.startsWith('/pki/')) return false;
    if (url === OCSP_PATH || url.startsWith(OCSP_PREFIX)) {
      ocsp(req, res, url);
      return true;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      problem(res, 405, 'Method not allowed', 'use GET');
      return true;
    }
    if (!inFlight.enter()) {
      res.setHeader('Retry-After', '1');
      problem(res, 503, 'Service unavailable', 'too many PKI requests in progress; retry in 1 s');
      return true;
    }
    serve(req, res, url.split('?')[0]!)
      .catch(() => {
        if (!res.headersSent) problem(res, 503, 'Service unavailable', 'the PKI resource could not be read');
      })
      .finally(() => inFlight.leave());
    return true;
  };
}

/**
 * OCSP over HTTP (RFC 6960 appendix A, RFC 5019): POST with a DER body, or GET with the request
 * base64-encoded (and URL-escaped) in the path. A request that cannot be read is answered with the
 * OCSP status malformedRequest, not an HTTP error: OCSP clients read statuses, not problem+json.
 * Pre-signed answers to GETs carry the RFC 5019 caching headers.
 */
function createOcspHandler(source: PkiSource, options: PkiOptions, inFlight: InFlight) {
  function reply(req: IncomingMessage, res: ServerResponse, answer: OcspAnswer, get: boolean): void {
    const c = answer.cacheable;
    if (!get || !c) {
      res.writeHead(200, { 'Content-Type': OCSP_TYPE, 'Content-Length': answer.der.length, 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : answer.der);
      return;
    }
    const now = options.clock.now().getTime();
    // Not kept by an HTTP cache past the point where this responder hands out a new one (half its
    // validity: a broker's response may be valid for a minute only).
    const keepUntil = Math.min(c.nextUpdate.getTime(), c.refreshAt);
    const maxAge = Math.max(0, Math.min(options.ocspMaxAgeSeconds, Math.floor((keepUntil - now) / 1000)));
    const headers = {
      'Content-Type': OCSP_TYPE,
      'Cache-Control': `public, max-age=${maxAge}, no-transform, must-revalidate`,
      ETag: c.etag,
      'Last-Modified': c.thisUpdate.toUTCString(),
      Expires: new Date(now + maxAge * 1000).toUTCString(),
    };
    const inm = req.headers['if-none-match'];
    if (inm && inm.split(',').some((t) => t.trim() === c.etag)) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Length': answer.der.length });
    res.end(req.method === 'HEAD' ? undefined : answer.der);
  }

  const malformed = (req: IncomingMessage, res: ServerResponse, close = false) => {
    if (close) res.setHeader('Connection', 'close');
    reply(req, res, { der: encodeOcspError('malformedRequest'), error: 'malformedRequest' }, false);
  };

  const answer = (req: IncomingMessage, res: ServerResponse, request: Buffer, get: boolean) => {
    if (!inFlight.enter()) {
      res.setHeader('Retry-After', '1');
      return reply(req, res, { der: encodeOcspError('tryLater'), error: 'tryLater' }, false);
    }
    source
      .ocsp(request, sourceOf(req))
      .then(
        (a) => reply(req, res, a, get),
        () => reply(req, res, { der: encodeOcspError('internalError'), error: 'internalError' }, false),
      )
      .finally(() => inFlight.leave());
  };

  return (req: IncomingMessage, res: ServerResponse, url: string): void => {
    if (req.method === 'GET' || req.method === 'HEAD') {
      const encoded = url.length > OCSP_PREFIX.length ? url.slice(OCSP_PREFIX.length).split('?')[0]! : '';
      let b64: string;
      try {
        b64 = decodeURIComponent(encoded);
      } catch {
        return malformed(req, res);
      }
      if (!BASE64.test(b64)) return malformed(req, res);
      return answer(req, res, Buffer.from(b64, b64.includes('-') || b64.includes('_') ? 'base64url' : 'base64'), true);
    }
    if (req.method !== 'POST') {
      res.setHeader('Allow', 'GET, HEAD, POST');
      return problem(res, 405, 'Method not allowed', 'OCSP takes POST (application/ocsp-request) or GET /pki/ocsp/{base64 request}');
    }
    // RFC 6960 A.1 names application/ocsp-request; a body declared as something else is refused
    // unread (some embedded clients send no Content-Type at all: those are read).
    const type = req.headers['content-type'];
    if (type !== undefined && type.split(';')[0]!.trim().toLowerCase() !== OCSP_REQUEST_TYPE) {
      req.resume();
      res.setHeader('Accept-Post', OCSP_REQUEST_TYPE);
      return problem(res, 415, 'Unsupported media type', `an OCSP request is ${OCSP_REQUEST_TYPE}, not ${type}`);
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > OCSP_MAX_BODY) {
      req.resume();
      return malformed(req, res, true);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > OCSP_MAX_BODY) {
        done = true;
        malformed(req, res, true);
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      answer(req, res, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), false);
    });
    req.on('error', () => {
      done = true;
    });
  };
}
