import { readFileSync, statSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { BusRelay } from '../bus-relay.js';
import { EXIT } from '../exit-codes.js';
import { wholeNumber } from '../run.js';

interface RelayOpts {
  url?: string;
  broker?: string;
  secretFile?: string;
  listen: string;
  maxBatch: number;
  maxDelayMs: number;
  buffer: number;
  statsEvery: number;
}

function listenAddress(v: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(v) ?? /^()()(\d{1,5})$/.exec(v);
  if (!m || Number(m[3]) > 65_535) throw new InvalidArgumentError('host:port or a port (e.g. 127.0.0.1:9191)');
  return { host: m[1] || m[2] || '127.0.0.1', port: Number(m[3]) };
}

const fail = (message: string): never => {
  process.stderr.write(`mqtt-ca: ${message}\n`);
  process.exit(EXIT.usage);
};

/** The broker's secret: from --secret-file / MQTT_CA_BUS_SECRET_FILE, or MQTT_CA_BUS_SECRET; never from the command line. */
function secretOf(file: string | undefined): string {
  if (!file) {
    const s = process.env.MQTT_CA_BUS_SECRET;
    return s && s.length >= 32
      ? s
      : fail('the broker secret: --secret-file / MQTT_CA_BUS_SECRET_FILE, or MQTT_CA_BUS_SECRET (>= 32 characters)');
  }
  let text = '';
  try {
    text = readFileSync(file, 'utf8').trim();
    if ((statSync(file).mode & 0o077) !== 0)
      process.stderr.write(`mqtt-ca: warning: the secret file ${file} is readable by others (chmod 600 it)\n`);
  } catch (e) {
    fail(`cannot read the secret file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return text.length >= 32 && !/\s/.test(text) ? text : fail(`the secret file ${file} does not hold one secret of at least 32 characters`);
}

/** `mqtt-ca bus-relay`: EMQX's HTTP action → signed batches to POST /v1/bus-events (docs/bus-watch.md). */
export function registerBusRelay(program: Command): Command {
  return program
    .command('bus-relay')
    .description("relay a broker's unsigned webhook posts (EMQX's HTTP action, one event each) to POST /v1/bus-events, batched and signed")
    .option('--url <url>', "the service's base URL (MQTT_CA_URL; default http://127.0.0.1:8080)")
    .option('--broker <id>', "the broker's id, a key of the service's BUS_EVENT_SECRETS (MQTT_CA_BUS_BROKER)")
    .option('--secret-file <file>', "a file holding that broker's secret (MQTT_CA_BUS_SECRET_FILE, or the secret in MQTT_CA_BUS_SECRET)")
    .option('--listen <host:port>', 'where the broker posts (loopback only unless you say otherwise)', '127.0.0.1:9191')
    .option('--max-batch <n>', 'events per batch at most', wholeNumber('--max-batch', 1, 1000), 500)
    .option('--max-delay-ms <ms>', 'a batch leaves at most this long after its first event', wholeNumber('--max-delay-ms', 1, 60_000), 200)
    .option(
      '--buffer <n>',
      'events held at most while the service is away; beyond, posts are refused and counted',
      wholeNumber('--buffer', 1, 10_000_000),
      20_000,
    )
    .option('--stats-every <s>', 'print the counters on stderr this often (0: only at exit)', wholeNumber('--stats-every', 0, 86_400), 60)
    .action(async (o: RelayOpts, cmd: Command) => {
      const parentUrl = (cmd.parent?.opts() as { url?: string } | undefined)?.url;
      const url = (o.url ?? parentUrl ?? process.env.MQTT_CA_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
      if (!/^https?:\/\/[^/@\s]+/.test(url)) fail('--url / MQTT_CA_URL: an http:// or https:// URL without a user or password');
      const broker = o.broker ?? process.env.MQTT_CA_BUS_BROKER;
      if (!broker || !/^[A-Za-z0-9._:-]{1,64}$/.test(broker))
        fail('--broker / MQTT_CA_BUS_BROKER: the broker id (letters, digits, . _ : -)');
      const { host, port } = listenAddress(o.listen);
      const relay = new BusRelay({
        url,
        broker: broker!,
        secret: secretOf(o.secretFile ?? process.env.MQTT_CA_BUS_SECRET_FILE),
        host,
        port,
        maxBatch: o.maxBatch,
        maxDelayMs: o.maxDelayMs,
        maxBuffered: o.buffer,
        onError: (m) => process.stderr.write(`mqtt-ca bus-relay: ${m}\n`),
      });
      const at = await relay.start();
      process.stderr.write(`mqtt-ca bus-relay: broker ${broker} posts to ${at.url}/ ; batches go to ${url}/v1/bus-events\n`);
      const print = () => process.stderr.write(`mqtt-ca bus-relay: ${JSON.stringify(relay.stats())}\n`);
      const ticker = o.statsEvery > 0 ? setInterval(print, o.statsEvery * 1000) : undefined;
      await new Promise<void>((resolve) => {
        process.once('SIGTERM', resolve);
        process.once('SIGINT', resolve);
      });
      clearInterval(ticker);
      await relay.stop({ flush: true });
      print();
    });
}
