// The Mosquitto 2.0 log parser against lines recorded from Mosquitto 2.0.11 (test/fixtures/mosquitto-2.0.11,
// each section saying how its lines were produced), then against hostile input: it parses or drops
// with a counter, never throws.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { BusEvent } from '../../src/broker/bus-events.js';
import { LogLineSplitter, MAX_LOG_LINE, MosquittoLogParser } from '../../src/broker/mosquitto-log.js';

const FIXTURES = join(import.meta.dirname, '../fixtures/mosquitto-2.0.11');
const records = (file: string) =>
  readFileSync(join(FIXTURES, file), 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'));

/** One short line per event, for comparing sequences. */
function brief(e: BusEvent): string {
  const src = 'source' in e && e.source ? ` @${e.source.host}${e.source.port !== undefined ? `:${e.source.port}` : ''}` : '';
  switch (e.kind) {
    case 'connect':
      return `connect ${e.clientId} u=${e.username} ${e.protocol} c${+e.cleanStart} k${e.keepAliveSeconds}${src}`;
    case 'disconnect':
      return `disconnect ${e.clientId ?? '-'} ${e.reason}${e.detail ? ` (${e.detail})` : ''}${src}`;
    case 'tls-failure':
      return `tls-failure ${e.failure}${src}`;
    case 'subscribe':
      return `subscribe ${e.clientId} q${e.qos} ${e.topic}`;
    case 'unsubscribe':
      return `unsubscribe ${e.clientId} ${e.topic}`;
    case 'acl-denied':
      return `acl-denied ${e.action} ${e.clientId} q${e.qos} ${e.topic}`;
    case 'publish':
      return `publish ${e.clientId} q${e.qos} r${+e.retain} ${e.bytes}B ${e.topic}`;
    case 'undeliverable':
      return `undeliverable ${e.clientId} ${e.reason} ${e.topic}`;
  }
}

const sysParse = (p: MosquittoLogParser, record: string) => {
  const tab = record.indexOf('\t');
  return p.message(record.slice(0, tab), Buffer.from(record.slice(tab + 1), 'utf8'));
};

describe('Mosquitto 2.0.11 log on $SYS/broker/log (recorded)', () => {
  it('gives each client action its typed event, with client id, CN, source, protocol, clean start, keep-alive and the reason', () => {
    const p = new MosquittoLogParser({ broker: 'mosquitto' });
    const events = records('sys-broker-log.txt').flatMap((r) => sysParse(p, r));
    const L = '127.0.0.1';
    assert.deepEqual(events.map(brief), [
      // TLS client certificate (CN = username), subscribe, clean disconnect
      `connect meter-0001 u=meter-0001 mqtt5 c1 k60 @${L}:49022`,
      'subscribe meter-0001 q1 meters/meter-0001/cmd',
      `disconnect meter-0001 client @${L}:49022`,
      `connect meter-0002 u=meter-0002 mqtt3.1.1 c1 k60 @${L}:49026`,
      `disconnect meter-0002 client @${L}:49026`,
      `connect meter-0002 u=meter-0002 mqtt3.1 c1 k60 @${L}:49038`,
      `disconnect meter-0002 client @${L}:49038`,
      // ACL-denied publish and subscribes: $SYS shows nothing of the denials
      `connect meter-0001 u=meter-0001 mqtt5 c1 k60 @${L}:49040`,
      `disconnect meter-0001 client @${L}:49040`,
      `connect meter-0001 u=meter-0001 mqtt5 c1 k60 @${L}:49054`,
      `disconnect meter-0001 client @${L}:49054`,
      `connect meter-0001 u=meter-0001 mqtt3.1.1 c1 k60 @${L}:49060`,
      `disconnect meter-0001 client @${L}:49060`,
      // kill -9
      `connect meter-0001 u=meter-0001 mqtt3.1.1 c1 k60 @${L}:49074`,
      'subscribe meter-0001 q0 meters/x',
      `disconnect meter-0001 connection-lost @${L}:49074`,
      // client id taken over: the old session's end carries the old source
      `connect meter-0001 u=meter-0001 mqtt5 c1 k60 @${L}:49082`,
      'subscribe meter-0001 q0 meters/x',
      `disconnect meter-0001 taken-over @${L}:49082`,
      `connect meter-0001 u=meter-0001 mqtt3.1.1 c1 k60 @${L}:49096`,
      'subscribe meter-0001 q0 meters/x',
      `disconnect meter-0001 client @${L}:49096`,
      `tls-failure closed-during-handshake @${L}`,
      // keep-alive 1 s, killed after 5 s (before the broker's check)
      `connect meter-idle u=meter-0001 mqtt3.1.1 c1 k1 @${L}:41518`,
      `connect meter-0001 u=meter-0001 mqtt5 c1 k60 @${L}:41522`,
      'subscribe meter-0001 q0 meters/x',
      `disconnect meter-idle connection-lost @${L}:41518`,
      // garbage instead of CONNECT (TLS, plain), then after CONNECT
      `disconnect - protocol-error @${L}:41526`,
      `disconnect - protocol-error @${L}:37846`,
      `connect meter-garbage u=meter-0001 mqtt3.1.1 c1 k60 @${L}:41540`,
      `disconnect meter-garbage protocol-error @${L}:41540`,
      // revoked, expired, foreign CA: one and the same failure; then no certificate
      `tls-failure verify-failed @${L}:41542`,
      `tls-failure verify-failed @${L}:41548`,
      `tls-failure verify-failed @${L}:41564`,
      `tls-failure no-certificate @${L}:41574`,
      `disconnect - not-authorised @${L}:37850`,
      // keep-alive timeout
      `connect meter-idle u=meter-0001 mqtt3.1.1 c1 k1 @${L}:46422`,
      `disconnect meter-idle keepalive-timeout @${L}:46422`,
      `connect meter-rst u=meter-0001 mqtt3.1.1 c1 k60 @${L}:33504`,
      `disconnect meter-rst connection-lost @${L}:33504`,
      // hostile client ids: the broker refuses them before any client id is logged
      `disconnect - protocol-error @${L}:33512`,
      `disconnect - protocol-error @${L}:33518`,
      `disconnect - protocol-error @${L}:33530`,
      // a topic with control characters: malformed packet
      `connect meter-0001 u=meter-0001 mqtt3.1.1 c1 k60 @${L}:33540`,
      `disconnect meter-0001 malformed-packet @${L}:33540`,
      // the 64 KB topic's line is left out of the fixture (built in the test below)
      `connect meter-0001 u=meter-0001 mqtt3.1.1 c1 k60 @${L}:33554`,
      `disconnect meter-0001 client @${L}:33554`,
      // dynsec kick (the connector's own sessions show too)
      `connect meter-0002 u=meter-0002 mqtt5 c1 k60 @${L}:33558`,
      'subscribe meter-0002 q0 meters/meter-0002/#',
      `connect auto-7535BC3C-14D0-38C5-76B3-DF0BE38FD84C u=mqtt-ca-connector mqtt5 c1 k60 @${L}:33564`,
      'subscribe auto-7535BC3C-14D0-38C5-76B3-DF0BE38FD84C q1 $CONTROL/dynamic-security/v1/response',
      `disconnect meter-0002 administrative @${L}:33558`,
      `disconnect auto-7535BC3C-14D0-38C5-76B3-DF0BE38FD84C connection-lost @${L}:33564`,
      `connect auto-02EB1A99-0FEB-6479-ADFE-EE7DE3AB6380 u=mqtt-ca-connector mqtt5 c1 k60 @${L}:33580`,
      'subscribe auto-02EB1A99-0FEB-6479-ADFE-EE7DE3AB6380 q1 $CONTROL/dynamic-security/v1/response',
      `disconnect auto-02EB1A99-0FEB-6479-ADFE-EE7DE3AB6380 connection-lost @${L}:33580`,
      // MQTT 5 clean start false, keep-alive 30, two subscriptions, one unsubscribe
      `connect meter-0002 u=meter-0002 mqtt5 c0 k30 @${L}:40496`,
      'subscribe meter-0002 q1 meters/meter-0002/a',
      'subscribe meter-0002 q2 meters/meter-0002/b',
      'unsubscribe meter-0002 meters/meter-0002/a',
      `disconnect meter-0002 client @${L}:40496`,
    ]);
    // The broker's own time and id on every event; only the dynsec information lines were not events.
    assert.ok(events.every((e) => e.broker === 'mosquitto' && e.at.getTime() >= 1796668564_000 && e.at.getTime() <= 1796668642_000));
    assert.deepEqual(events[0]!.at, new Date(1796668586_000));
    assert.deepEqual(p.dropped(), { unrecognised: 2 });
  });

  it('takes the 64 KB topic line the broker logged whole', () => {
    const p = new MosquittoLogParser({ broker: 'b' });
    const topic = 'meters/' + 'x'.repeat(65_535 - 7);
    p.line("1796668638: New client connected from 127.0.0.1:33554 as meter-0001 (p2, c1, k60, u'meter-0001').");
    const [e] = p.message('$SYS/broker/log/M/subscribe', Buffer.from(`1796668639: meter-0001 0 ${topic}`));
    assert.equal(e?.kind, 'subscribe');
    assert.equal(e.kind === 'subscribe' && e.topic, topic);
  });
});

describe('Mosquitto 2.0.11 log file (recorded, with debug lines)', () => {
  it('adds publishes and ACL denials, which only the debug lines show', () => {
    let now = new Date('2026-12-07T18:37:35Z');
    const p = new MosquittoLogParser({ broker: 'mosquitto', now: () => now });
    const events = records('mosquitto-log-file.txt').flatMap((l) => p.line(l));
    const L = '127.0.0.1';
    assert.deepEqual(events.map(brief), [
      `connect meter-0002 u=meter-0002 mqtt3.1.1 c1 k60 @${L}:49026`,
      'publish meter-0002 q1 r0 2B meters/meter-0002/kwh',
      `disconnect meter-0002 client @${L}:49026`,
      `connect meter-0001 u=meter-0001 mqtt5 c1 k60 @${L}:49040`,
      'acl-denied publish meter-0001 q1 other/topic',
      `disconnect meter-0001 client @${L}:49040`,
      `connect meter-0001 u=meter-0001 mqtt5 c1 k60 @${L}:49054`,
      'acl-denied subscribe meter-0001 q0 #',
      `disconnect meter-0001 client @${L}:49054`,
      `connect meter-0001 u=meter-0001 mqtt3.1.1 c1 k60 @${L}:49074`,
      'subscribe meter-0001 q0 meters/x',
      `disconnect meter-0001 connection-lost @${L}:49074`,
      `connect meter-0002 u=meter-0002 mqtt3.1.1 c1 k60 @${L}:40822`,
      'publish meter-0002 q1 r0 2B meters/meter-0002/kwh',
      `disconnect meter-0002 client @${L}:40822`,
    ]);
    // log_timestamp_format without a zone: the time is not guessed from it, the reader's clock is used.
    assert.deepEqual(events.at(-1)!.at, now);
    now = new Date(0);
    const [zoned] = p.line('2026-12-07T18:37:34+0100: New client connected from 10.0.0.1:5 as a (p5, c1, k60).');
    assert.deepEqual(zoned!.at, new Date('2026-12-07T17:37:34Z'));
    assert.equal(zoned!.kind === 'connect' && zoned!.username, undefined);
  });
});

describe('a log file read in chunks', () => {
  const file = readFileSync(join(FIXTURES, 'mosquitto-log-file.txt'));
  const whole = () => {
    const p = new MosquittoLogParser({ broker: 'b', now: () => new Date(0) });
    return records('mosquitto-log-file.txt')
      .flatMap((l) => p.line(l))
      .map(brief);
  };

  it('gives the same events wherever the chunks are cut, with CRLF too', () => {
    const expected = whole();
    assert.equal(expected.length, 15);
    for (const crlf of [false, true]) {
      const bytes = crlf ? Buffer.from(file.toString('utf8').replace(/\n/g, '\r\n')) : file;
      for (let cut = 1; cut < bytes.length; cut += 7) {
        const p = new MosquittoLogParser({ broker: 'b', now: () => new Date(0) });
        const split = new LogLineSplitter();
        const lines = [...split.push(bytes.subarray(0, cut)), ...split.push(bytes.subarray(cut))];
        const last = split.end();
        if (last) lines.push(last);
        const got = lines
          .filter((l) => l.length && l[0] !== 0x23)
          .flatMap((l) => p.bytes(l))
          .map(brief);
        assert.deepEqual(got, expected, `cut at ${cut}${crlf ? ' (CRLF)' : ''}`);
      }
    }
  });

  it('drops an endless line whole (it never holds more than its bound) and goes on after its newline', () => {
    const split = new LogLineSplitter(1_000);
    for (let i = 0; i < 100; i++) assert.deepEqual(split.push(Buffer.alloc(500, 0x78)), []);
    const [after] = split.push(Buffer.from('\n1700000000: Client m disconnected.\n'));
    assert.equal(split.tooLong, 1);
    assert.deepEqual(new MosquittoLogParser({ broker: 'b' }).bytes(after!).map(brief), ['disconnect m client']);
    // A last line cut short (no newline) is handed over, and is no event of another kind.
    split.push(Buffer.from('1700000000: New client connected from 10.0.0.1:5 as m (p5, c1'));
    const p = new MosquittoLogParser({ broker: 'b' });
    assert.deepEqual(p.bytes(split.end()!), []);
    assert.deepEqual(p.dropped(), { malformed: 1 });
    assert.equal(split.end(), undefined);
  });
});

describe("Mosquitto 2.0's other disconnect lines (from do_disconnect in its src/loop.c, not produced here)", () => {
  it('each gives its reason; errno and unknown errors keep the broker text', () => {
    const p = new MosquittoLogParser({ broker: 'b' });
    const lines = [
      'Client m disconnected due to oversize packet.',
      'Client m disconnected due to oversize payload.',
      'Client m disconnected due to out of memory.',
      'Client m disconnected due to QoS too high or retain not supported.',
      'Client m disconnected: Connection reset by peer.',
      'Bad socket read/write on client m: Unknown error.',
    ];
    assert.deepEqual(lines.flatMap((l) => p.line(`1700000000: ${l}`)).map(brief), [
      'disconnect m oversize',
      'disconnect m oversize',
      'disconnect m out-of-memory',
      'disconnect m not-supported',
      'disconnect m socket-error (Connection reset by peer)',
      'disconnect m other (Unknown error.)',
    ]);
  });
});

describe('hostile log input', () => {
  const connect = (id: string, port = 40000, user = 'u') =>
    `1700000000: New client connected from 10.1.2.3:${port} as ${id} (p5, c1, k60, u'${user}').`;

  it('drops control characters, NULs, lone surrogates and invalid UTF-8 with a counter, never throwing', () => {
    const p = new MosquittoLogParser({ broker: 'b' });
    for (const bad of ['meter\u0000nul', 'meter\u0001x', 'a\u001b[31mred', 'line\nbreak', 'del\u007f', 'c1\u0085'])
      assert.deepEqual(p.line(connect(bad)), []);
    assert.deepEqual(p.line(connect('half\uD800')), []);
    assert.deepEqual(p.line(connect('\uDC00half')), []);
    assert.deepEqual(p.message('$SYS/broker/log/N', Buffer.from([0x31, 0x3a, 0x20, 0xed, 0xa0, 0x80])), []);
    assert.deepEqual(p.message('$SYS/broker/log/N', Buffer.from([0xff, 0xfe])), []);
    assert.deepEqual(p.dropped(), { 'control-characters': 6, 'invalid-utf8': 4 });
    // A well-formed surrogate pair (an emoji) and a tab are text.
    assert.equal(p.line(connect('meter-😀\tx'))[0]?.kind, 'connect');
  });

  it('drops lines beyond the longest Mosquitto writes, and anything that is not a $SYS log line or text', () => {
    const p = new MosquittoLogParser({ broker: 'b' });
    assert.deepEqual(p.line(`1700000000: x 0 ${'y'.repeat(MAX_LOG_LINE)}`), []);
    assert.deepEqual(p.message('$SYS/broker/log/N', Buffer.alloc(MAX_LOG_LINE * 3 + 1, 0x41)), []);
    assert.deepEqual(p.line(undefined as unknown as string), []);
    assert.deepEqual(p.line({} as unknown as string), []);
    assert.deepEqual(p.message('$SYS/broker/log/N', 'text' as unknown as Buffer), []);
    assert.deepEqual(p.message('fleet/meter-1', Buffer.from('1700000000: Client a disconnected.')), []);
    assert.deepEqual(p.message('$SYS/broker/log/I', Buffer.from('1700000000: Client a disconnected.')), []);
    assert.deepEqual(p.line('Client a disconnected.'), []);
    assert.deepEqual(p.dropped(), { 'too-long': 2, 'not-text': 3, unrecognised: 2, 'no-timestamp': 1 });
  });

  it('every truncation of a recorded connection line gives no event (a cut line is not some other line), and never throws', () => {
    const lines = records('sys-broker-log.txt')
      .filter((r) => r.startsWith('$SYS/broker/log/N\t') || r.startsWith('$SYS/broker/log/E\t'))
      .map((r) => r.slice(r.indexOf('\t') + 1));
    for (const line of lines) {
      const whole = new MosquittoLogParser({ broker: 'b' }).line(line).map(brief);
      for (let cut = 0; cut < line.length; cut++) {
        const p = new MosquittoLogParser({ broker: 'b' });
        const got = p.line(line.slice(0, cut)).map(brief);
        // A cut line is a different line: it must not become a connect or disconnect of another client.
        if (got.length) assert.fail(`${JSON.stringify(line.slice(0, cut))} gave ${got.join(', ')} (whole: ${whole.join(', ')})`);
      }
    }
  });

  it('random garbage and mangled lines: counted, never thrown', () => {
    let seed = 42;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const p = new MosquittoLogParser({ broker: 'b' });
    const recorded = records('sys-broker-log.txt');
    let events = 0;
    for (let i = 0; i < 5_000; i++) {
      const bytes = Buffer.from(recorded[Math.floor(rnd() * recorded.length)]!.split('\t')[1]!, 'utf8');
      // Flip, drop or insert bytes at random places.
      for (let k = 0; k < 1 + Math.floor(rnd() * 4); k++) bytes[Math.floor(rnd() * bytes.length)] = Math.floor(rnd() * 256);
      const garbage = Buffer.from(Array.from({ length: Math.floor(rnd() * 200) }, () => Math.floor(rnd() * 256)));
      events += p.message('$SYS/broker/log/N', bytes).length + p.message('$SYS/broker/log/E', garbage).length;
      events += p.line(bytes.toString('latin1')).length + p.line(garbage.toString('utf8')).length;
    }
    const dropped = Object.values(p.dropped()).reduce((a, b) => a + b, 0);
    assert.ok(dropped > 15_000, JSON.stringify(p.dropped()));
    assert.ok(dropped + events >= 19_000, `${dropped} dropped + ${events} events of 20,000 inputs`);
  });

  it('client ids may hold any text: the disconnect reason is read from the end of the line', () => {
    const p = new MosquittoLogParser({ broker: 'b' });
    const id = 'x disconnected due to protocol error. Client y';
    p.line(connect(id));
    assert.deepEqual(p.line(`1700000001: Client ${id} disconnected.`).map(brief), [`disconnect ${id} client @10.1.2.3:40000`]);
    const fake = "z (p5, c1, k60, u'admin')";
    assert.deepEqual(p.line(connect(fake, 40001, 'meter-7')).map(brief), [`connect ${fake} u=meter-7 mqtt5 c1 k60 @10.1.2.3:40001`]);
  });

  it('splits "<id> <qos> <topic>" after a connected session id; an ambiguous line is dropped, not guessed', () => {
    const p = new MosquittoLogParser({ broker: 'b' });
    const sub = (s: string) => p.message('$SYS/broker/log/M/subscribe', Buffer.from(`1700000001: ${s}`)).map(brief);
    const unsub = (s: string) => p.message('$SYS/broker/log/M/unsubscribe', Buffer.from(`1700000001: ${s}`)).map(brief);
    assert.deepEqual(sub('meter 1 1 a 2 b'), []);
    assert.deepEqual(unsub('meter 1 a b'), []);
    assert.deepEqual(p.dropped(), { ambiguous: 2 });
    p.line(connect('meter 1'));
    assert.deepEqual(sub('meter 1 1 a 2 b'), ['subscribe meter 1 q1 a 2 b']);
    assert.deepEqual(unsub('meter 1 a b'), ['unsubscribe meter 1 a b']);
    assert.deepEqual(sub('plain 2 x/y'), ['subscribe plain q2 x/y']);
    assert.deepEqual(sub('nothing'), []);
    assert.equal(p.dropped().malformed, 1);
  });

  it('a failed handshake gets its source only when one connection was pending', () => {
    const p = new MosquittoLogParser({ broker: 'b' });
    const run = (lines: string[]) => lines.flatMap((l) => p.line(`1700000000: ${l}`)).map(brief);
    const fail = [
      'OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed',
      'Client <unknown> disconnected: Protocol error.',
    ];
    assert.deepEqual(run(['New connection from 10.0.0.1:1000 on port 8883.', ...fail]), ['tls-failure verify-failed @10.0.0.1:1000']);
    assert.deepEqual(run(['New connection from 10.0.0.2:1000 on port 8883.', 'New connection from 10.0.0.3:1000 on port 8883.', ...fail]), [
      'tls-failure verify-failed',
    ]);
    // A session's own TLS error (a killed client) is its disconnect, not a handshake failure.
    p.line(connect('m', 7));
    assert.deepEqual(
      run(['OpenSSL Error[0]: error:0A000126:SSL routines::unexpected eof while reading', 'Client m closed its connection.']),
      ['disconnect m connection-lost @10.1.2.3:7'],
    );
  });

  it('remembers a bounded number of sessions', () => {
    const p = new MosquittoLogParser({ broker: 'b', maxSessions: 10 });
    for (let i = 0; i < 1_000; i++) p.line(connect(`m${i}`, 1000 + i));
    assert.deepEqual(p.line('1700000001: Client m0 disconnected.').map(brief), ['disconnect m0 client']);
    assert.deepEqual(p.line('1700000001: Client m999 disconnected.').map(brief), ['disconnect m999 client @10.1.2.3:1999']);
  });
});
