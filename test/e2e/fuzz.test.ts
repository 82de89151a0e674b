import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { listenOnLoopback, writeCaFiles } from '../helpers/http.js';
import { p256Csr } from '../helpers/csr.js';
import { KEY_ARGS, opensslCsr, run, tempDir, writeTemp } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';
import { toPem } from '../../src/ca/x509/pem.js';
import { readTlv } from '../../src/ca/x509/der.js';
import { encodeCertificationRequest, encodeCertificationRequestInfo, nodeSignHash } from '../../src/ca/x509/encode.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import { loadApiSpec } from '../../src/http/openapi.js';
import type { Role } from '../../src/access/api-keys.js';

/** mulberry32: a small seeded generator, so a failing input can be made again from the seed printed with it. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  return { next, int, bytes, pick: <T>(xs: readonly T[]): T => xs[int(xs.length)]! };
}
type Rng = ReturnType<typeof prng>;

/** One mutation of a valid input: bit flips, byte changes, insertions, deletions, truncation, splices, repetition. */
function mutate(r: Rng, seed: Buffer): Buffer {
  const b = Buffer.from(seed);
  switch (r.int(8)) {
    case 0: {
      for (let i = 0, n = 1 + r.int(8); i < n && b.length; i++) b[r.int(b.length)]! ^= 1 << r.int(8);
      return b;
    }
    case 1: {
      for (let i = 0, n = 1 + r.int(4); i < n && b.length; i++)
        b[r.int(b.length)] = r.pick([0x00, 0xff, 0x80, 0x7f, 0x30, 0x82, 0x84, r.int(256)]);
      return b;
    }
    case 2: {
      const at = r.int(b.length + 1);
      return Buffer.concat([b.subarray(0, at), r.bytes(1 + r.int(64)), b.subarray(at)]);
    }
    case 3: {
      const at = r.int(b.length);
      return Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + r.int(32))]);
    }
    case 4:
      return b.subarray(0, r.int(b.length));
    case 5: {
      const at = r.int(b.length);
      const from = r.int(b.length);
      return Buffer.concat([b.subarray(0, at), b.subarray(from, from + 1 + r.int(100)), b.subarray(at)]);
    }
    case 6:
      return Buffer.concat(Array.from({ length: 2 + r.int(6) }, () => b));
    default:
      return r.bytes(r.int(600));
  }
}

/** A random JSON value of some depth: what an API body may be when a client is wrong. */
function randomJson(r: Rng, depth = 0): unknown {
  const k = r.int(depth > 3 ? 6 : 9);
  switch (k) {
    case 0:
      return null;
    case 1:
      return r.next() < 0.5;
    case 2:
      return r.pick([0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 1, 42]);
    case 3:
      return r.pick([
        '',
        'x'.repeat(r.int(5000)),
        '\u0000',
        '<script>',
        '../../etc/passwd',
        'ü😀',
        '2026-13-45T99:99:99Z',
        "'; drop table devices; --",
      ]);
    case 4:
      return r.bytes(r.int(40)).toString('latin1');
    case 5:
      return r.pick(['client', 'broker', 'device', 'keyCompromise', 'admin', 'L-1']);
    case 6:
      return Array.from({ length: r.int(5) }, () => randomJson(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = 0, n = r.int(6); i < n; i++)
        o[
          r.pick([
            'id',
            'kind',
            'lot',
            'deviceId',
            'reason',
            'profile',
            'maxUses',
            'expiresInSeconds',
            'devices',
            'model',
            'site',
            'labels',
            'csr',
            'title',
            'targets',
            '__proto__',
            'constructor',
          ])
        ] = randomJson(r, depth + 1);
      return o;
    }
  }
}

/** A mutation of a JSON object: a field's value replaced by a random one, a field dropped or added. */
function mutateJson(r: Rng, seed: Record<string, unknown>): unknown {
  const o: Record<string, unknown> = structuredClone(seed);
  const keys = Object.keys(o);
  switch (r.int(4)) {
    case 0:
      o[r.pick(keys)] = randomJson(r);
      return o;
    case 1:
      delete o[r.pick(keys)];
      return o;
    case 2:
      o[r.pick(['extra', 'id', 'kind', 'x'])] = randomJson(r);
      return o;
    default:
      return randomJson(r);
  }
}

type Schema = {
  $ref?: string;
  type?: string;
  enum?: unknown[];
  format?: string;
  pattern?: string;
  minimum?: number;
  minLength?: number;
  minItems?: number;
  minProperties?: number;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  additionalProperties?: Schema | boolean;
  allOf?: Schema[];
  oneOf?: Schema[];
  anyOf?: Schema[];
};
type Parameter = { $ref?: string; name: string; in: string; required?: boolean; schema?: Schema };
type Operation = { parameters?: Parameter[]; requestBody?: { content?: Record<string, { schema?: Schema }> } };
const spec = loadApiSpec();
const deref = <T>(node: T): T => {
  const ref = (node as { $ref?: string } | undefined)?.$ref;
  return ref
    ? deref(
        ref
          .slice(2)
          .split('/')
          .reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], spec) as T,
      )
    : node;
};
/** A schema with its allOf/oneOf/anyOf branches merged: every property any branch names. */
function flat(schema: Schema | undefined): Schema {
  const s = deref(schema ?? {});
  const branches = [...(s.allOf ?? []), ...(s.oneOf ?? []), ...(s.anyOf ?? [])].map(flat);
  if (!branches.length) return s;
  return branches.reduce<Schema>(
    (m, b) => ({ ...b, ...m, properties: { ...b.properties, ...m.properties }, required: [...(m.required ?? []), ...(b.required ?? [])] }),
    { ...s, allOf: undefined, oneOf: undefined, anyOf: undefined },
  );
}
/** A string its schema accepts: the first of a few shapes the spec's patterns use (ids with a prefix, hex, names). */
function sampleText(s: Schema): string {
  if (s.format === 'date-time') return new Date().toISOString();
  const prefixed = s.pattern && /^\^([a-z]+_)\[0-9a-f\]\{(\d+)\}\$$/.exec(s.pattern);
  const candidates = [
    ...(prefixed ? [prefixed[1]! + '0'.repeat(Number(prefixed[2]))] : []),
    'fz-1',
    'fz1',
    'fz_1',
    'AB',
    '0a',
    '0'.repeat(64),
  ];
  const fits = (c: string) => (!s.pattern || new RegExp(s.pattern, 'u').test(c)) && c.length >= (s.minLength ?? 0);
  return candidates.find(fits) ?? 'fz-1'.padEnd(s.minLength ?? 0, 'x');
}
/** A plausible value for a schema, so that a request reaches the field under test. */
function sample(schema: Schema | undefined, depth = 0): unknown {
  const s = flat(schema);
  if (s.enum?.length) return s.enum[0];
  const type = s.type ?? (s.properties ? 'object' : 'string');
  if (type === 'object') {
    if (depth > 5) return {};
    const names = Object.keys(s.properties ?? {});
    const wanted = [...new Set([...(s.required ?? []).filter((k) => s.properties?.[k]), ...names.slice(0, s.minProperties ?? 0)])];
    return Object.fromEntries(wanted.map((k) => [k, sample(s.properties![k], depth + 1)]));
  }
  if (type === 'array') return Array.from({ length: Math.max(1, s.minItems ?? 1) }, () => sample(s.items, depth + 1));
  if (type === 'integer' || type === 'number') return Math.max(1, s.minimum ?? 1);
  if (type === 'boolean') return false;
  return sampleText(s);
}
/** Every place a string can go in a value of this schema (string properties, array items, map values and keys), as key paths. */
function textPaths(
  schema: Schema | undefined,
  at: (string | number)[] = [],
  seen = new Set<Schema>(),
): { path: (string | number)[]; key?: true }[] {
  const s = flat(schema);
  if (seen.has(s) || at.length > 6) return [];
  const inner = new Set(seen).add(s);
  const type = s.type ?? (s.properties ? 'object' : s.items ? 'array' : undefined);
  if (type === 'string') return [{ path: at }];
  if (type === 'array') return textPaths(s.items, [...at, 0], inner);
  if (type !== 'object') return [];
  const out = Object.entries(s.properties ?? {}).flatMap(([k, p]) => textPaths(p, [...at, k], inner));
  if (s.additionalProperties && typeof s.additionalProperties === 'object')
    out.push({ path: [...at, 'fz-key'], key: true }, ...textPaths(s.additionalProperties, [...at, 'fz-key'], inner));
  return out;
}
/** `root` (a value of `schema`) with `value` at `path` (or, with `key`, as the last key of the path), the objects on the way made from the schema. */
function setAt(schema: Schema | undefined, root: unknown, path: (string | number)[], value: string, key: boolean): unknown {
  if (path.length === 0) return value;
  const s = flat(schema);
  const [head, ...rest] = path;
  if (typeof head === 'number') {
    const list = Array.isArray(root) ? [...root] : [sample(s.items)];
    list[head] = setAt(s.items, list[head], rest, value, key);
    return list;
  }
  const node: Record<string, unknown> = {
    ...(root && typeof root === 'object' && !Array.isArray(root) ? root : (sample(s) as Record<string, unknown>)),
  };
  if (key && rest.length === 0) node[value] = sample(typeof s.additionalProperties === 'object' ? s.additionalProperties : {});
  else {
    const child = s.properties?.[head!] ?? (typeof s.additionalProperties === 'object' ? s.additionalProperties : undefined);
    node[head!] = setAt(child, node[head!], rest, value, key);
  }
  return node;
}
/** Every operation of openapi.yaml under /v1, with the parameters its path declares. */
function operations(): { method: string; path: string; op: Operation }[] {
  return Object.entries(spec.paths as Record<string, Record<string, Operation>>)
    .filter(([path]) => path.startsWith('/v1/'))
    .flatMap(([path, item]) => {
      const shared = (item as { parameters?: Parameter[] }).parameters ?? [];
      return Object.entries(item)
        .filter(([m]) => ['get', 'post', 'put', 'patch', 'delete'].includes(m))
        .map(([method, op]) => ({ method, path, op: { ...op, parameters: [...shared, ...(op.parameters ?? [])] } }));
    });
}
/** Not text: PostgreSQL cannot store the first, and the second is half a character. */
const NOT_TEXT = ['fz\u0000x', 'fz\ud800x'];

/** A DER element as a tree (a constructed one holds its children), to encode again with one header made wrong. */
type DerNode = { tag: number; value: Buffer; children?: DerNode[] };
type DerFault = 'non-minimal 81' | 'non-minimal 82 00' | 'indefinite' | 'past the end' | 'a lone tag inside';

function derTree(buf: Buffer, start = 0, end = buf.length): DerNode[] {
  const out: DerNode[] = [];
  for (let pos = start; pos < end;) {
    const h = readTlv(buf, pos, end);
    out.push({ tag: h.tag, value: buf.subarray(h.start, h.end), ...(h.tag & 0x20 ? { children: derTree(buf, h.start, h.end) } : {}) });
    pos = h.end;
  }
  return out;
}

const minimalLength = (n: number) => (n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff]);

/** The tree as DER, minimal everywhere but at `target`, whose header gets `fault` (its ancestors' lengths still add up). */
function derEncode(nodes: DerNode[], target?: DerNode, fault?: DerFault): Buffer {
  return Buffer.concat(
    nodes.map((n) => {
      let body = n.children ? derEncode(n.children, target, fault) : n.value;
      let length = minimalLength(body.length);
      if (n === target) {
        if (fault === 'non-minimal 81') length = [0x81, body.length];
        else if (fault === 'non-minimal 82 00') length = [0x82, 0x00, body.length];
        else if (fault === 'past the end') length = minimalLength(body.length + 1);
        else if (fault === 'a lone tag inside') {
          body = Buffer.concat([body, Buffer.from([0x04])]);
          length = minimalLength(body.length);
        } else {
          body = Buffer.concat([body, Buffer.from([0, 0])]);
          length = [0x80];
        }
      }
      return Buffer.concat([Buffer.from([n.tag, ...length]), body]);
    }),
  );
}

/**
 * The shared DER reader's refusals, at every element of a valid input: non-minimal lengths (81 05, 82 00 05),
 * the indefinite form (80), a length past the end of its container (for a last child or the whole input),
 * a tag with no length inside a container, and the input cut after its first tag octet. `reason` is the
 * CSR parser's words where the element's own header is what is refused.
 */
function derFaults(seed: Buffer): { name: string; input: Buffer; reason?: RegExp }[] {
  const tree = derTree(seed);
  assert.deepEqual(derEncode(tree), seed, 'the seed is minimal DER and encodes again to itself');
  const out: { name: string; input: Buffer; reason?: RegExp }[] = [{ name: 'a lone tag', input: seed.subarray(0, 1) }];
  const visit = (nodes: DerNode[], path: string) =>
    nodes.forEach((node, i) => {
      const at = `${path}/${i}`;
      const add = (fault: DerFault, reason?: RegExp) =>
        out.push({ name: `${fault} at ${at}`, input: derEncode(tree, node, fault), reason });
      if (node.value.length < 0x80) add('non-minimal 81', /^non-minimal DER length$/);
      if (node.value.length < 0x100) add('non-minimal 82 00', /^non-minimal DER length$/);
      add('indefinite', /^indefinite lengths are not DER$/);
      if (i === nodes.length - 1) add('past the end');
      if (node.children) {
        add('a lone tag inside');
        visit(node.children, at);
      }
    });
  visit(tree, '');
  return out;
}

const PER_TARGET = Number(process.env.FUZZ_INPUTS ?? 800);
/** A request that takes longer than this is a hang. */
const HANG_MS = 15_000;

const target = dbTargets.find((t) => t.name === 'postgres' && !t.skip) ?? dbTargets[0]!;

describe(
  `fuzzing every parser that takes outside bytes, over HTTP, on ${target.name}`,
  { skip: target.skip ?? toolSkip('openssl') },
  () => {
    let svc: Service & { dispose(): Promise<void> };
    let keys: Record<Role, string>;
    let http: { url: string; close(): Promise<void> };
    const dir = tempDir();
    const seeds: Record<string, Buffer> = {};
    let lotToken: string;
    const tally: Record<string, Record<string, number>> = {};
    const issued: string[] = [];

    /** Sends one input; fails on a 5xx, a wrong error type, or a hang. */
    let lastProblem: { status: number; errors?: { path?: string }[] } | undefined;
    async function send(
      name: string,
      seed: number,
      method: string,
      path: string,
      body: Buffer | string | undefined,
      headers: Record<string, string>,
    ): Promise<number> {
      let res: Response;
      try {
        res = await fetch(`${http.url}${path}`, { method, headers, body, signal: AbortSignal.timeout(HANG_MS) });
      } catch (e) {
        throw new Error(`${name} #${seed}: no answer (${String(e)}) for ${JSON.stringify(String(body).slice(0, 200))}`);
      }
      const text = await res.text();
      (tally[name] ??= {})[res.status] = (tally[name]![res.status] ?? 0) + 1;
      assert.ok(res.status < 500, `${name} #${seed}: ${res.status} ${text.slice(0, 300)}`);
      const type = res.headers.get('content-type') ?? '';
      if (path.startsWith('/pki/ocsp')) {
        assert.equal(res.status, 200, `${name} #${seed}: OCSP answers with an OCSP status, not HTTP ${res.status}`);
        assert.equal(type, 'application/ocsp-response');
      } else if (res.status >= 400) {
        assert.match(type, /^application\/problem\+json/, `${name} #${seed}: ${res.status} is not problem+json`);
        lastProblem = JSON.parse(text);
        assert.equal(lastProblem!.status, res.status);
      }
      if (res.status === 201 && /"serial"/.test(text)) issued.push(JSON.parse(text).serial);
      return res.status;
    }

    before(async () => {
      let issuingId: string;
      // Detection and rate limits off: the point is that every input reaches its parser.
      ({ svc, keys, issuingId } = await makeApiService(target, {
        env: {
          DETECTION_RULES: '[]',
          EST_BASIC_OVER_HTTP: 'true',
          API_RATE_PER_SOURCE: '0',
          API_RATE_PER_KEY: '0',
          ENROLL_RATE_PER_SOURCE: '0',
        },
      }));
      http = await listenOnLoopback(createHttpHandler(svc));
      const files = await writeCaFiles(svc, issuingId, dir);
      await svc.devices.importManifest(
        Array.from({ length: 20 }, (_, i) => ({ id: `fz-${i}`, kind: 'client' as const })),
        { actor: 'test' },
        { lot: 'FUZZ' },
      );
      lotToken = (await svc.tokens.create({ lot: 'FUZZ', maxUses: 1_000_000 }, { actor: 'test' })).token;
      // Valid inputs made by clients nobody here wrote, to mutate from.
      const cert = await svc.issuance.issue(
        {
          profile: 'device',
          deviceId: 'fz-seed',
          subjectPublicKeyInfo: generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }),
        },
        { actor: 'test' },
      );
      const certFile = writeTemp(dir, 'seed.pem', toPem(cert.der));
      for (const [name, extra] of [
        ['ocsp', ['-no_nonce']],
        ['ocsp-nonce', []],
      ] as const) {
        const out = join(dir, `${name}.der`);
        assert.equal(run('openssl', ['ocsp', '-issuer', files.issuing, '-cert', certFile, ...extra, '-reqout', out]).status, 0);
        seeds[name] = readFileSync(out);
      }
      const csr = opensslCsr([...KEY_ARGS.p256], '/CN=fz-1');
      seeds.csrPem = Buffer.from(csr.csrPem);
      seeds.csrDer = p256Csr('fz-2').der;
      seeds.manifestCsv = Buffer.from('id,kind,model,site\nfz-100,client,M1,north\nfz-101,client,M2,south\n');
    });
    after(async () => {
      await http?.close();
      await svc?.dispose();
      console.log(`fuzz tally (status → count), ${PER_TARGET} inputs per target: ${JSON.stringify(tally)}`);
    });

    it('OCSP requests (POST, and GET base64 in the path): every answer an OCSP response, never an HTTP error', async () => {
      const r = prng(1);
      for (let i = 0; i < PER_TARGET; i++) {
        const input = mutate(r, r.next() < 0.5 ? seeds.ocsp! : seeds['ocsp-nonce']!);
        if (i % 2) await send('ocsp-post', i, 'POST', '/pki/ocsp', input, { 'Content-Type': 'application/ocsp-request' });
        else
          await send(
            'ocsp-get',
            i,
            'GET',
            `/pki/ocsp/${encodeURIComponent(input.toString(r.next() < 0.5 ? 'base64' : 'base64url'))}`,
            undefined,
            {},
          );
      }
    });

    it('CSRs to /v1/enroll (PEM in JSON, raw DER, base64) and EST simpleenroll: 4xx problem+json, nothing issued from a broken CSR', async () => {
      const r = prng(2);
      const before = await svc.db('certificates').count({ n: '*' }).first();
      // A CN in a BMPString with half a surrogate pair: not text, so the CSR is bad (it was a 500, from the refusal's jsonb record).
      for (const half of [
        [0xd8, 0x00, 0x00, 0x41],
        [0x00, 0x41, 0xdc, 0x00],
      ]) {
        const der = (tag: number, body: Buffer) => Buffer.concat([Buffer.from([tag, body.length]), body]);
        const name = der(0x30, der(0x31, der(0x30, Buffer.concat([Buffer.from('0603550403', 'hex'), der(0x1e, Buffer.from(half))]))));
        const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const info = encodeCertificationRequestInfo(name, publicKey.export({ format: 'der', type: 'spki' }));
        const csr = encodeCertificationRequest(
          info,
          'ecdsa-with-SHA256',
          sign(nodeSignHash('ecdsa-with-SHA256'), info, { key: privateKey, dsaEncoding: 'der' }),
        );
        const status = await send(
          'csr-half-surrogate',
          half[0]!,
          'POST',
          '/v1/enroll',
          JSON.stringify({ csr: toPem(csr, 'CERTIFICATE REQUEST') }),
          { Authorization: `Bearer ${lotToken}`, 'Content-Type': 'application/json' },
        );
        assert.equal(status, 400);
      }
      for (let i = 0; i < PER_TARGET; i++) {
        const useDer = r.next() < 0.5;
        const m = mutate(r, useDer ? seeds.csrDer! : seeds.csrPem!);
        const auth = { Authorization: `Bearer ${lotToken}` };
        switch (i % 4) {
          case 0:
            await send('enroll-json', i, 'POST', '/v1/enroll', JSON.stringify({ csr: m.toString('latin1') }), {
              ...auth,
              'Content-Type': 'application/json',
            });
            break;
          case 1:
            await send('enroll-pkcs10', i, 'POST', '/v1/enroll', m, { ...auth, 'Content-Type': 'application/pkcs10' });
            break;
          case 2:
            await send('enroll-pkcs10-b64', i, 'POST', '/v1/enroll', m.toString('base64'), {
              ...auth,
              'Content-Type': 'application/pkcs10',
            });
            break;
          default:
            await send('est-simpleenroll', i, 'POST', '/.well-known/est/simpleenroll', m.toString('base64'), {
              Authorization: `Basic ${Buffer.from(`fz-3:${lotToken}`).toString('base64')}`,
              'Content-Type': 'application/pkcs10',
            });
        }
      }
      // Whatever was issued is recorded: every 201's serial is an issued row, and no other row appeared.
      const after = await svc.db('certificates').count({ n: '*' }).first();
      assert.equal(Number(after!.n) - Number(before!.n), issued.length);
      for (const serial of issued) assert.equal((await svc.certificates.get(serial as never)).status, 'issued');
    });

    it('the shared DER reader refuses at every element: CSRs are a 400 with the reason, OCSP requests malformedRequest (non-minimal lengths too)', async () => {
      const ocsp = async (input: Buffer) => {
        const res = await fetch(`${http.url}/pki/ocsp`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/ocsp-request' },
          body: input,
          signal: AbortSignal.timeout(HANG_MS),
        });
        assert.equal(res.status, 200);
        return Buffer.from(await res.arrayBuffer());
      };
      const malformed = Buffer.from('30030a0101', 'hex');
      for (const name of ['ocsp', 'ocsp-nonce']) {
        assert.notDeepEqual(await ocsp(seeds[name]!), malformed, `${name}: the seed itself is answered`);
        for (const c of derFaults(seeds[name]!))
          assert.deepEqual(await ocsp(c.input), malformed, `${name}, ${c.name}: ${c.input.toString('hex')}`);
      }
      const csrs = derFaults(seeds.csrDer!);
      for (const [i, c] of csrs.entries()) {
        const status = await send('csr-der-faults', i, 'POST', '/v1/enroll', c.input, {
          Authorization: `Bearer ${lotToken}`,
          'Content-Type': 'application/pkcs10',
        });
        assert.equal(status, 400, `${c.name}: ${c.input.toString('hex')}`);
        if (c.reason) assert.match((lastProblem as { detail?: string }).detail ?? '', c.reason, c.name);
      }
      assert.ok(csrs.length > 50, `only ${csrs.length} faults made from the CSR: the walk is broken`);
    });

    it('device manifests (JSON and CSV) and API JSON bodies: 4xx problem+json, never a 500', async () => {
      const r = prng(3);
      const admin = { Authorization: `Bearer ${keys.admin}` };
      const manifest = {
        lot: 'FZ-M',
        devices: [
          { id: 'fzm-1', kind: 'client', model: 'M1' },
          { id: 'fzm-2', kind: 'client', site: 'x' },
        ],
      };
      const bodies: [string, string, Record<string, unknown>][] = [
        ['devices', '/v1/devices', { id: 'fzd-1', kind: 'client', model: 'M1', lot: 'L', labels: { a: 'b' } }],
        ['tokens', '/v1/enrollment-tokens', { deviceId: 'fz-5', profile: 'device', maxUses: 2, expiresInSeconds: 3600 }],
        ['incidents', '/v1/incidents', { kind: 'lost-device', title: 't', targets: { devices: ['fz-6'] } }],
        ['bulk-revoke', '/v1/revocations', { reason: 'superseded', lots: ['NOPE'], dryRun: true }],
      ];
      // U+0000, which PostgreSQL's text and jsonb cannot hold, in a refused manifest's cell and in API bodies (found by this fuzzing).
      await send('nul', 0, 'POST', '/v1/devices/import?lot=FZ-NUL', 'id,kind,model\nfz-nul\u0000,client,M\u0000\n', {
        ...admin,
        'Content-Type': 'text/csv',
      });
      await send(
        'nul',
        1,
        'POST',
        '/v1/devices/import',
        JSON.stringify({ lot: 'FZ-NUL2', devices: [{ id: 'fz\u0000', kind: 'client' }] }),
        { ...admin, 'Content-Type': 'application/json' },
      );
      for (const [, path, seed] of bodies)
        await send(
          'nul',
          2,
          'POST',
          path,
          JSON.stringify(Object.fromEntries(Object.entries(seed).map(([k, v]) => [k, typeof v === 'string' ? `${v}\u0000` : v]))),
          { ...admin, 'Content-Type': 'application/json' },
        );
      for (let i = 0; i < PER_TARGET; i++) {
        switch (i % 4) {
          case 0:
            await send('manifest-json', i, 'POST', '/v1/devices/import', JSON.stringify(mutateJson(r, manifest)), {
              ...admin,
              'Content-Type': 'application/json',
            });
            break;
          case 1:
            await send('manifest-csv', i, 'POST', `/v1/devices/import?lot=FZ-C${i}`, mutate(r, seeds.manifestCsv!).toString('latin1'), {
              ...admin,
              'Content-Type': 'text/csv',
            });
            break;
          case 2: {
            const [name, path, seed] = r.pick(bodies);
            await send(`api-${name}`, i, 'POST', path, JSON.stringify(mutateJson(r, seed)), {
              ...admin,
              'Content-Type': 'application/json',
            });
            break;
          }
          default: {
            // Broken JSON text itself.
            const [name, path, seed] = r.pick(bodies);
            await send(`api-${name}-text`, i, 'POST', path, mutate(r, Buffer.from(JSON.stringify(seed))).toString('latin1'), {
              ...admin,
              'Content-Type': 'application/json',
            });
          }
        }
      }
    });

    it('every text field of every JSON body, query and path parameter in openapi.yaml: NUL or an unpaired surrogate is a 400 naming it, never a 5xx', async () => {
      const headers = { Authorization: `Bearer ${keys.admin}`, 'Content-Type': 'application/json' };
      let fields = 0;
      for (const { method, path, op } of operations()) {
        const params = (op.parameters ?? []).map(deref).filter((p) => p.in === 'query' || p.in === 'path');
        const url = (bad?: Parameter) => {
          const value = (p: Parameter) => (p === bad ? 'fz%00x' : encodeURIComponent(String(sample(p.schema))));
          const query = params.filter((p) => p.in === 'query' && (p.required || p === bad)).map((p) => `${p.name}=${value(p)}`);
          const filled = params.filter((p) => p.in === 'path').reduce((u, p) => u.replace(`{${p.name}}`, value(p)), path);
          return query.length ? `${filled}?${query.join('&')}` : filled;
        };
        const body = op.requestBody?.content?.['application/json']?.schema;
        const seed = body ? sample(body) : undefined;
        const refused = async (name: string, target: string, u: string, json: unknown) => {
          fields++;
          const status = await send(
            'text-fields',
            fields,
            method.toUpperCase(),
            u,
            json === undefined ? undefined : JSON.stringify(json),
            headers,
          );
          assert.equal(status, 400, `${name}: a NUL or an unpaired surrogate must be refused`);
          assert.ok(
            lastProblem?.errors?.some((e) => e.path?.startsWith(target)),
            `${name}: the problem names ${target}: ${JSON.stringify(lastProblem)}`,
          );
        };
        for (const { path: at, key } of body ? textPaths(body) : []) {
          for (const bad of NOT_TEXT) {
            await refused(
              `text ${method.toUpperCase()} ${path} /${at.join('/')}${key ? ' (key)' : ''} ${JSON.stringify(bad)}`,
              `/body/${(key ? at.slice(0, -1) : at).join('/')}`,
              url(),
              setAt(body, seed, key ? at.slice(0, -1).concat(bad) : at, bad, !!key),
            );
          }
        }
        for (const p of params.filter((x) => flat(x.schema).type === 'string')) {
          await refused(
            `text ${method.toUpperCase()} ${path} ${p.in} ${p.name}`,
            `/${p.in === 'path' ? 'params' : 'query'}/${p.name}`,
            url(p),
            seed,
          );
        }
      }
      assert.ok(fields > 100, `only ${fields} text fields found in openapi.yaml: the walk is broken`);
    });

    it('is still healthy after all of it: /healthz, and a good enrollment issues a certificate', async () => {
      assert.equal((await fetch(`${http.url}/healthz`)).status, 200);
      const res = await fetch(`${http.url}/v1/enroll`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${lotToken}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ csr: p256Csr('fz-19').pem }),
      });
      assert.equal(res.status, 201, await res.text());
    });
  },
);
