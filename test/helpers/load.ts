import { createHash, verify, X509Certificate } from 'node:crypto';
import { Agent, request } from 'node:http';

/**
 * What a load generator needs beside the service: OCSP requests and answers in DER, written and
 * read here with a few lines of X.690 of their own (not the service's encoder and parser, so that
 * the two check each other); a keep-alive HTTP client; a probe of the server's memory after each
 * major GC; and the figures of a run (percentiles, a least-squares slope).
 */

interface Tlv {
  tag: number;
  /** Where the element starts (its tag byte). */
  at: number;
  /** Where its value starts and ends. */
  start: number;
  end: number;
}

function tlvAt(buf: Buffer, at: number, limit = buf.length): Tlv {
  if (at + 2 > limit) throw new Error(`DER: truncated at ${at}`);
  const tag = buf[at]!;
  let len = buf[at + 1]!;
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n < 1 || n > 4 || start + n > limit) throw new Error(`DER: bad length at ${at}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start++]!;
  }
  if (start + len > limit) throw new Error(`DER: element at ${at} runs past its parent`);
  return { tag, at, start, end: start + len };
}

function children(buf: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let p = parent.start; p < parent.end; p = out[out.length - 1]!.end) out.push(tlvAt(buf, p, parent.end));
  return out;
}

function expect(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (!t || t.tag !== tag)
    throw new Error(`DER: expected ${what} (tag 0x${tag.toString(16)}), got ${t ? `0x${t.tag.toString(16)}` : 'nothing'}`);
  return t;
}

function tlv(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), body]);
}

const SHA1_ALGORITHM = Buffer.from('300906052b0e03021a0500', 'hex');
const NONCE_OID = Buffer.from('06092b0601050507300102', 'hex');
const BASIC_RESPONSE_OID = Buffer.from('06092b0601050507300101', 'hex');
const SIGNATURE_HASHES: Record<string, string> = {
  '2a8648ce3d040302': 'sha256', // ecdsa-with-SHA256
  '2a8648ce3d040303': 'sha384', // ecdsa-with-SHA384
};

export const pemDer = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
const sha1 = (b: Buffer) => createHash('sha1').update(b).digest();

/** The issuer half of a SHA-1 CertID (RFC 6960 §4.1.1): hashes of the issuer's subject and of its public key bits. */
export interface OcspIssuer {
  nameHash: Buffer;
  keyHash: Buffer;
}

export function ocspIssuer(issuerPem: string): OcspIssuer {
  const der = pemDer(issuerPem);
  const tbs = expect(children(der, tlvAt(der, 0))[0], 0x30, 'tbsCertificate');
  const fields = children(der, tbs);
  const v = fields[0]?.tag === 0xa0 ? 1 : 0; // [0] version, then serial, signature, issuer, validity, subject, spki
  const subject = expect(fields[v + 4], 0x30, 'subject');
  const keyBits = expect(children(der, expect(fields[v + 5], 0x30, 'subjectPublicKeyInfo'))[1], 0x03, 'subjectPublicKey');
  return { nameHash: sha1(der.subarray(subject.at, subject.end)), keyHash: sha1(der.subarray(keyBits.start + 1, keyBits.end)) };
}

/** An OCSPRequest for one certificate of `issuer` (serial as lowercase hex), optionally with a nonce (RFC 8954). */
export function ocspRequest(issuer: OcspIssuer, serialHex: string, nonce?: Buffer): Buffer {
  let serial = Buffer.from(serialHex, 'hex');
  if (serial[0]! & 0x80) serial = Buffer.concat([Buffer.from([0]), serial]);
  const certId = tlv(0x30, SHA1_ALGORITHM, tlv(0x04, issuer.nameHash), tlv(0x04, issuer.keyHash), tlv(0x02, serial));
  const extensions = nonce ? [tlv(0xa2, tlv(0x30, tlv(0x30, NONCE_OID, tlv(0x04, tlv(0x04, nonce)))))] : [];
  return tlv(0x30, tlv(0x30, tlv(0x30, tlv(0x30, certId)), ...extensions));
}

export interface OcspSingle {
  /** Lowercase hex, no leading zero byte. */
  serial: string;
  status: 'good' | 'revoked' | 'unknown';
  /** The CRLReason code of a revoked certificate, when the response gives one. */
  reason?: number;
}

export interface ParsedOcspResponse {
  /** OCSPResponseStatus: 0 successful, 1 malformedRequest, 2 internalError, 3 tryLater, 5 sigRequired, 6 unauthorized. */
  responseStatus: number;
  singles: OcspSingle[];
  /** The nonce the response echoes (the inner OCTET STRING's value), if any. */
  nonce?: Buffer;
  /** tbsResponseData as signed, the signature's hash and value, and the certificates the response carries (DER). */
  signed?: { tbs: Buffer; hash: string; signature: Buffer; certs: Buffer[] };
}

/** Reads an OCSPResponse (RFC 6960 §4.2.1) with a BasicOCSPResponse; throws on anything else. */
export function parseOcspResponse(der: Buffer): ParsedOcspResponse {
  const top = expect(tlvAt(der, 0), 0x30, 'OCSPResponse');
  if (top.end !== der.length) throw new Error('DER: bytes after the OCSPResponse');
  const [status, bytes] = children(der, top);
  const responseStatus = der[expect(status, 0x0a, 'responseStatus').start]!;
  if (!bytes) return { responseStatus, singles: [] };
  const [type, octets] = children(der, expect(children(der, expect(bytes, 0xa0, 'responseBytes'))[0], 0x30, 'ResponseBytes'));
  if (!type || !der.subarray(type.at, type.end).equals(BASIC_RESPONSE_OID)) throw new Error('not a BasicOCSPResponse');
  const basic = der.subarray(expect(octets, 0x04, 'response').start, octets!.end);
  const [tbs, alg, signature, certs] = children(basic, expect(tlvAt(basic, 0), 0x30, 'BasicOCSPResponse'));
  const data = children(basic, expect(tbs, 0x30, 'tbsResponseData'));
  const v = data[0]?.tag === 0xa0 ? 1 : 0; // [0] version, then responderID, producedAt, responses, [1] extensions
  if (data[v]?.tag !== 0xa1 && data[v]?.tag !== 0xa2) throw new Error('DER: expected a responderID');
  expect(data[v + 1], 0x18, 'producedAt');
  const singles = children(basic, expect(data[v + 2], 0x30, 'responses')).map((s): OcspSingle => {
    const [certId, certStatus] = children(basic, expect(s, 0x30, 'SingleResponse'));
    const serialTlv = expect(children(basic, expect(certId, 0x30, 'CertID'))[3], 0x02, 'serialNumber');
    let serial = basic.subarray(serialTlv.start, serialTlv.end);
    if (serial.length > 1 && serial[0] === 0) serial = serial.subarray(1);
    if (certStatus?.tag === 0x80) return { serial: serial.toString('hex'), status: 'good' };
    if (certStatus?.tag === 0x82) return { serial: serial.toString('hex'), status: 'unknown' };
    const info = children(basic, expect(certStatus, 0xa1, 'certStatus'));
    expect(info[0], 0x18, 'revocationTime');
    const reason = info[1]
      ? basic[expect(children(basic, expect(info[1], 0xa0, 'revocationReason'))[0], 0x0a, 'CRLReason').start]
      : undefined;
    return { serial: serial.toString('hex'), status: 'revoked', ...(reason === undefined ? {} : { reason }) };
  });
  let nonce: Buffer | undefined;
  const extensions = data[v + 3];
  if (extensions) {
    for (const e of children(basic, expect(children(basic, expect(extensions, 0xa1, 'responseExtensions'))[0], 0x30, 'Extensions'))) {
      const parts = children(basic, e);
      if (!basic.subarray(parts[0]!.at, parts[0]!.end).equals(NONCE_OID)) continue;
      const value = expect(parts[parts.length - 1], 0x04, 'extnValue');
      const inner = expect(tlvAt(basic, value.start, value.end), 0x04, 'nonce');
      nonce = basic.subarray(inner.start, inner.end);
    }
  }
  const algOid = expect(children(basic, expect(alg, 0x30, 'signatureAlgorithm'))[0], 0x06, 'algorithm');
  const hash = SIGNATURE_HASHES[basic.subarray(algOid.start, algOid.end).toString('hex')];
  if (!hash) throw new Error('unexpected signature algorithm');
  const sig = expect(signature, 0x03, 'signature');
  const carried = certs
    ? children(basic, expect(children(basic, expect(certs, 0xa0, 'certs'))[0], 0x30, 'certs')).map((c) => basic.subarray(c.at, c.end))
    : [];
  return {
    responseStatus,
    singles,
    ...(nonce ? { nonce } : {}),
    signed: { tbs: basic.subarray(tbs!.at, tbs!.end), hash, signature: basic.subarray(sig.start + 1, sig.end), certs: carried },
  };
}

/**
 * Whether the response is signed by the certificate it carries, and that certificate by `issuer`
 * (a delegated responder). Checked responder certificates are remembered in `known`.
 */
export function ocspSignedBy(r: ParsedOcspResponse, issuer: X509Certificate, known = new Set<string>()): boolean {
  const responderDer = r.signed?.certs[0];
  if (!r.signed || !responderDer) return false;
  const responder = new X509Certificate(responderDer);
  if (!known.has(responder.fingerprint256)) {
    if (!responder.checkIssued(issuer) || !responder.verify(issuer.publicKey)) return false;
    known.add(responder.fingerprint256);
  }
  return verify(r.signed.hash, r.signed.tbs, { key: responder.publicKey, dsaEncoding: 'der' }, r.signed.signature);
}

/** The value of an unlabelled Prometheus sample (`name 123`), or undefined. */
export function metric(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/** The p-quantile (0..1) of `xs`, nearest rank. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const sorted = Float64Array.from(xs).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

/** Least-squares slope of y over x. */
export function slope(points: readonly { x: number; y: number }[]): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  return num / den;
}

export interface HttpAnswer {
  status: number;
  type: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/**
 * HTTP/1.1 over keep-alive connections to one server (node:http: a load generator spends far
 * less of its own CPU per request than with fetch). Rejects on a network error or a timeout.
 */
export function keepAliveClient(base: string, maxSockets = 64) {
  // With a timeout set, the agent also honours the server's `Keep-Alive: timeout=5` hint and drops a
  // free socket a second before the server would: otherwise a request sent on a socket the server
  // is just closing fails with ECONNRESET (a race of idle keep-alive, not of the server).
  const agent = new Agent({ keepAlive: true, maxSockets, timeout: 60_000 });
  const { hostname, port } = new URL(base);
  return {
    request(
      method: string,
      path: string,
      body?: Buffer | string,
      headers: Record<string, string> = {},
      timeoutMs = 30_000,
    ): Promise<HttpAnswer> {
      const payload = typeof body === 'string' ? Buffer.from(body) : body;
      return new Promise((resolve, reject) => {
        const req = request(
          {
            agent,
            host: hostname,
            port,
            method,
            path,
            headers: payload ? { ...headers, 'Content-Length': String(payload.length) } : headers,
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('error', reject);
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                type: String(res.headers['content-type'] ?? ''),
                headers: res.headers,
                body: Buffer.concat(chunks),
              }),
            );
          },
        );
        req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
        req.on('error', reject);
        req.end(payload);
      });
    },
    close: () => agent.destroy(),
  };
}

/**
 * NODE_OPTIONS for a server process that prints its memory after every major (mark-compact) GC on
 * stderr: `gc-probe <epoch ms> <old generation> <external> <rss> <heap total>` (bytes; the old generation is
 * the heap without its young generation, which refills at once). That is the heap's floor, free of
 * GC's sawtooth, which /metrics samples only catch by luck. Read back with majorGcs(output).
 *
 * It also forces a full GC every `forceEveryMs`: V8 alone may run a single major GC in a minute when
 * less is promoted (seen in CI: 1 in 45 s, then 13 in the next 45), which leaves a memory check
 * nothing to judge; a floor every few seconds makes the check's input steady.
 */
export function gcProbeNodeOptions(forceEveryMs = 4000): string {
  const probe =
    "import{PerformanceObserver as O,constants as C}from'node:perf_hooks';import{isMainThread}from'node:worker_threads';import v8 from'node:v8';import vm from'node:vm';" +
    `if(isMainThread){v8.setFlagsFromString('--expose-gc');const gc=vm.runInNewContext('gc');setInterval(()=>gc(),${forceEveryMs}).unref()}` +
    'if(isMainThread)new O((l)=>{for(const e of l.getEntries())if(e.detail?.kind===C.NODE_PERFORMANCE_GC_MAJOR){' +
    "const old=v8.getHeapSpaceStatistics().filter((s)=>!s.space_name.startsWith('new_')).reduce((n,s)=>n+s.space_used_size,0);const m=process.memoryUsage();" +
    "process.stderr.write('gc-probe '+Date.now()+' '+old+' '+m.external+' '+m.rss+' '+m.heapTotal+'\\n')}}).observe({entryTypes:['gc']})";
  return `${process.env.NODE_OPTIONS ?? ''} --import=data:text/javascript,${encodeURIComponent(probe)}`.trim();
}

export function majorGcs(output: string): { at: number; heap: number; external: number; rss: number; heapTotal: number }[] {
  return [...output.matchAll(/^gc-probe (\d+) (\d+) (\d+) (\d+) (\d+)$/gm)].map((m) => ({
    at: Number(m[1]),
    heap: Number(m[2]),
    external: Number(m[3]),
    rss: Number(m[4]),
    heapTotal: Number(m[5]),
  }));
}
