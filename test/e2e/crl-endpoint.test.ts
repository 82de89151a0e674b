// The CRL endpoint as brokers fetch it (issue #27 item 3): HEAD, If-None-Match, If-Modified-Since
// (304 only when the CRL's Last-Modified second names it alone), and a new CRL served at once,
// also to requests that arrive together (their database reads are shared). Asked with curl.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { runAsync } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import { ManualClock } from '../../src/shared/clock.js';

interface Head {
  status: number;
  headers: Record<string, string>;
  bodyBytes: number;
}

/** curl's view of one request: the status line and headers (-D), and how many body bytes came. */
async function curl(args: string[]): Promise<Head> {
  const r = await runAsync('curl', ['-sS', '-D', '-', '-o', '/dev/null', '-w', '\n%{size_download}\n', ...args]);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split(/\r?\n/);
  const bodyBytes = Number(lines.pop());
  const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(lines[0]!)![1]);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const m = /^([^:]+):\s*(.*)$/.exec(l);
    if (m) headers[m[1]!.toLowerCase()] = m[2]!;
  }
  return { status, headers, bodyBytes };
}

for (const target of dbTargets) {
  describe(`CRL endpoint for brokers on ${target.name}`, { skip: target.skip ?? toolSkip('curl') }, () => {
    // Whole seconds are what this is about: the clock starts 100 ms into one.
    const clock = new ManualClock(new Date(Math.floor(Date.now() / 1000) * 1000 + 100));
    let svc: Service & { dispose(): Promise<void> };
    let server: Server;
    let url: string;
    let issuingId: string;

    before(async () => {
      const made = await makeApiService(target, { clock });
      svc = made.svc;
      issuingId = made.issuingId;
      server = createServer(createHttpHandler(svc));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(server.address() as { port: number }).port}/pki/crl/${issuingId}.crl`;
    });
    after(async () => {
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
      await svc?.dispose();
    });

    const publish = async () => {
      const pair = await svc.crls.publish(issuingId);
      await svc.crls.settled();
      return pair.full;
    };

    it('HEAD answers the headers of GET without the body', async () => {
      await publish();
      const get = await curl([url]);
      const head = await curl(['-I', url]);
      assert.equal(get.status, 200);
      assert.equal(head.status, 200);
      assert.equal(head.bodyBytes, 0);
      assert.equal(head.headers['content-length'], String(get.bodyBytes));
      for (const h of ['etag', 'last-modified', 'content-type', 'cache-control']) assert.equal(head.headers[h], get.headers[h], h);
    });

    it('If-Modified-Since: 304 at or after the Last-Modified of a CRL alone in its second, 200 before it', async () => {
      clock.advance(2_000);
      await publish();
      const get = await curl([url]);
      const lm = get.headers['last-modified']!;
      assert.equal(Date.parse(lm), Math.floor(clock.now().getTime() / 1000) * 1000);
      const same = await curl(['-H', `If-Modified-Since: ${lm}`, url]);
      assert.equal(same.status, 304);
      assert.equal(same.bodyBytes, 0);
      assert.equal(same.headers.etag, get.headers.etag);
      assert.equal((await curl(['-H', `If-Modified-Since: ${new Date(Date.parse(lm) - 1000).toUTCString()}`, url])).status, 200);
      // If-None-Match decides when both are sent (RFC 9110 13.1.3): an old ETag gets the body.
      assert.equal((await curl(['-H', `If-Modified-Since: ${lm}`, '-H', 'If-None-Match: "not-it"', url])).status, 200);
      assert.equal((await curl(['-H', 'If-Modified-Since: not a date', url])).status, 200);
    });

    it('a CRL published in the same second as the one a client holds is sent whole, though its Last-Modified is the same', async () => {
      clock.advance(2_000);
      const first = await publish();
      const held = await curl([url]);
      assert.equal((await curl(['-H', `If-Modified-Since: ${held.headers['last-modified']}`, url])).status, 304);
      clock.advance(300); // the same second
      const second = await publish();
      assert.ok(second.crlNumber > first.crlNumber);
      const again = await curl(['-H', `If-Modified-Since: ${held.headers['last-modified']}`, url]);
      assert.equal(again.headers['last-modified'], held.headers['last-modified'], 'HTTP dates have whole seconds');
      assert.equal(again.status, 200, 'the client may hold the earlier CRL of that second');
      assert.notEqual(again.headers.etag, held.headers.etag);
      // Its ETag still says 304.
      assert.equal((await curl(['-H', `If-None-Match: ${again.headers.etag}`, url])).status, 304);
      // The next second's CRL is alone in its second again.
      clock.advance(1_000);
      await publish();
      const third = await curl([url]);
      assert.equal((await curl(['-H', `If-Modified-Since: ${third.headers['last-modified']}`, url])).status, 304);
      assert.equal((await curl(['-H', `If-Modified-Since: ${held.headers['last-modified']}`, url])).status, 200);
    });

    it('requests arriving together while a CRL is published: each gets a CRL at least as new as the one committed before it began', async () => {
      clock.advance(2_000);
      const before = await publish();
      const storm = async () =>
        Promise.all(Array.from({ length: 40 }, () => fetch(url).then((r) => ({ status: r.status, etag: r.headers.get('etag') }))));
      const during = storm();
      const after = await publish();
      const later = await storm();
      for (const r of await during)
        assert.ok(r.status === 200 && [`"${issuingId}-${before.crlNumber}"`, `"${issuingId}-${after.crlNumber}"`].includes(r.etag!));
      for (const r of later) assert.deepEqual(r, { status: 200, etag: `"${issuingId}-${after.crlNumber}"` });
    });
  });
}
