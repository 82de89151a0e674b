#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, settingNames, type Config } from './config/config.js';
import { defaultKekPath, deriveKey, KekError, loadKek } from './ca/kek.js';
import { AuditLog } from './audit/audit-log.js';
import { AuditStore } from './store/audit-store.js';
import { BackupStore } from './store/backup-store.js';
import { restoreBackup } from './respond/backups.js';
import { isDomainError } from './shared/errors.js';
import { systemClock } from './shared/clock.js';
import { bootstrap, type BootstrapResult } from './bootstrap.js';
import { buildService, createLogger, listen, listenTls, type Service } from './main.js';
import { isServePrimary, onMessageForSlot0, sendToSlot0, serveSlot, superviseServe } from './cluster.js';
import { handOffEvents, takeHandedOff } from './detect/bus-event-handoff.js';
import type { Logger } from 'pino';
import { ROLES, type Role } from './access/api-keys.js';
import { createDb, embeddedStoreExists, holdsCa, migrateLatest, pgliteDirUnder, type Db } from './store/db.js';
import { DataDirError, securePrivateDirs } from './store/data-dir.js';
import { StoreLockedError } from './store/store-lock.js';
import { CrlSyncError, hashDirBundle, syncCrlBundle } from './revoke/crl-sync.js';
import { writeBrokerSetup } from './broker-identity.js';
import { BROKER_KINDS, type BrokerKind } from './broker/setup/index.js';
import { RABBIT_CRL_MODES, type RabbitCrlMode } from './broker/setup/rabbitmq.js';
import { DEFAULT_DYNSEC_PLUGIN } from './broker/mosquitto-setup.js';
import { anchorAtStart, AuditCheckpoints, type CheckpointSource } from './audit/audit-anchor.js';
import { verifyAuditLog } from './respond/audit-verification.js';
import { isApiCommand, registerApiCommands } from './cli/index.js';

const cliActor = () => ({ actor: `cli:${userInfo().username}` });

/** A command that needs a store (and a CA) found none where it looked; it created nothing. */
class NoStoreError extends Error {
  override name = 'NoStoreError';
}

/** Where the store is, for messages: DATABASE_URL without its password, else DATA_DIR. */
function storeLocation(config: Config): string {
  if (!config.databaseUrl) return `DATA_DIR=${config.dataDir}`;
  const url = new URL(config.databaseUrl);
  if (url.password) url.password = '***';
  return `DATABASE_URL=${url.toString()}`;
}

/**
 * The store of a command that is not `init`, `serve` or `restore`: it must exist (and, with
 * `ca`, hold a CA). Such a command never creates a store, a schema or a KEK: run in the wrong
 * directory, it says where it looked instead of starting a second, unrelated CA.
 */
async function openExistingStore(config: Config, need: 'store' | 'ca'): Promise<Db> {
  const pgliteDir = pgliteDirUnder(config.dataDir);
  const hint = `Nothing was created. Point DATA_DIR (or DATABASE_URL) at the service's store, or make a new CA with \`mqtt-ca init\`.`;
  if (!config.databaseUrl && !embeddedStoreExists(pgliteDir))
    throw new NoStoreError(`no store at ${storeLocation(config)} (${pgliteDir} does not exist). ${hint}`);
  const db = createDb({ databaseUrl: config.databaseUrl, pgliteDir: config.databaseUrl ? undefined : pgliteDir });
  try {
    if (need === 'ca' && !(await holdsCa(db))) throw new NoStoreError(`the store at ${storeLocation(config)} holds no CA. ${hint}`);
    return db;
  } catch (e) {
    await db.destroy();
    throw e;
  }
}

/** The service over an existing store that holds a CA; with `mayCreate` (init), over any store. */
async function openService(config: Config, opts: { mayCreate?: boolean; logger?: Logger } = {}): Promise<Service> {
  const db = opts.mayCreate ? undefined : await openExistingStore(config, 'ca');
  try {
    return await buildService(config, { ...(opts.logger ? { logger: opts.logger } : {}), ...(db ? { db } : {}) });
  } catch (e) {
    await db?.destroy(); // buildService leaves a database handed in to its caller
    throw e;
  }
}

/** Runs a one-shot command's `fn` on the service (see openService), then closes it. */
async function withService<T>(fn: (svc: Service) => Promise<T>, opts: { mayCreate?: boolean } = {}): Promise<T> {
  const config = loadConfig();
  const svc = await openService(config, { ...opts, logger: createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel) });
  try {
    return await fn(svc);
  } finally {
    await svc.close();
  }
}

function packageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
    if (dirname(dir) === dir) return 'unknown';
  }
}

function settingsHelp(): string {
  const settings = settingNames();
  const width = Math.max(...settings.map((s) => s.name.length));
  return settings.map((s) => `  ${s.name.padEnd(width)}  ${s.default === undefined ? '' : `(default ${s.default})`}`.trimEnd()).join('\n');
}

/** The generated admin key stays in its 0600 file: the console (which may be the log stream) only says where. */
function announce(r: BootstrapResult): void {
  if (r.created) console.log(`Initialised a new CA: root ${r.rootId}, issuing CA ${r.issuingId} (default issuer).`);
  if (r.adminKey)
    console.log(
      `Generated the admin API key: it is in ${r.adminKeyFile} (mode 0600, readable by this user only); it is not shown here or logged.`,
    );
}

const program = new Command('mqtt-ca')
  .description('Private CA and credential lifecycle manager for MQTT fleets')
  .version(packageVersion(), '-V, --version')
  .addHelpText('after', () => `\nSettings it reads from the environment (docs/configuration.md):\n${settingsHelp()}\n`)
  .hook('preAction', (_program, command) => {
    if (command.name() === 'crl-sync') return; // a broker host's tool: no DATA_DIR, and the broker reads what it writes
    if (isApiCommand(command)) return; // the daily-work commands talk to the service's API: no DATA_DIR here
    // DATA_DIR holds the KEK, the admin key and the embedded store: refuse one others can write to.
    const { dataDir } = loadConfig();
    securePrivateDirs(dataDir, [pgliteDirUnder(dataDir)]);
    // Everything else this process creates is the service user's alone; broker-setup's files are for the broker.
    if (command.name() !== 'broker-setup') process.umask(0o077);
  });

program
  .command('serve')
  .description('run the service (initialises a CA on an empty store)')
  .option(
    '--processes <n>',
    'processes serving the port (default SERVE_PROCESSES: every core with PostgreSQL, 1 on the embedded store)',
    (v: string) => {
      if (!/^[1-9]\d{0,2}$/.test(v)) throw new InvalidArgumentError('a number of processes from 1 to 999');
      return Number(v);
    },
  )
  .action(async (o: { processes?: number }) => {
    const config = loadConfig();
    const processes = o.processes ?? config.serveProcesses;
    if (processes > 1 && !config.databaseUrl)
      throw new ConfigError('--processes: the embedded store (no DATABASE_URL) is opened by one process only; use PostgreSQL for more');
    const slot = serveSlot();
    if (processes > 1 && isServePrimary()) {
      // Migrations, the first-start bootstrap and the TLS identity happen once, here, before any process serves.
      const svc = await buildService(config);
      try {
        announce(await bootstrap(svc));
        if (config.tlsPort !== undefined) await svc.identities.ensure('tls-server');
      } finally {
        await svc.close();
      }
      superviseServe(processes, createLogger(config.logLevel));
      return;
    }
    const svc = await buildService(config);
    if (slot === undefined) announce(await bootstrap(svc));
    // Housekeeping (CRL refresh, sweeps, renewal planning) runs as scheduled jobs: here, or only in `mqtt-ca worker` processes.
    // BullMQ runs each job once across processes; the in-process runner (no Redis) runs in one process of serve only.
    if (config.jobs.inServe && (config.redisUrl || (slot ?? 0) === 0)) await svc.jobs.start();
    const server = await listen(svc);
    const tls = config.tlsPort === undefined ? undefined : await listenTls(svc, config.tlsPort);
    if (tls) console.log(`mqtt-ca TLS (EST, renewal) on https://${config.host}:${(tls.address() as { port: number }).port}`);
    svc.logger.info(
      {
        url: `http://${config.host}:${config.port}`,
        publicUrl: config.publicUrl,
        database: config.databaseUrl ? 'postgresql' : `pglite:${pgliteDirUnder(config.dataDir)}`,
      },
      'mqtt-ca listening',
    );
    console.log(`mqtt-ca listening on http://${config.host}:${(server.address() as { port: number }).port} (API docs at /docs)`);
    // The bus watch, in one process of serve (each would see every event): started, not waited for;
    // a source that cannot start yet is retried, its gap recorded.
    // The others hand the events brokers post to them on to it.
    if (svc.busWatch.configured && (slot ?? 0) === 0) {
      if (slot !== undefined) onMessageForSlot0((payload) => takeHandedOff(svc.busEventWebhooks, payload));
      void svc.busWatch.start().catch((e: unknown) => svc.logger.error({ err: e }, 'bus watch did not start'));
    } else if (svc.busWatch.configured) await handOffEvents(svc.busEventWebhooks.values(), sendToSlot0);
    const stop = async (signal: string) => {
      svc.logger.info({ signal }, 'shutting down');
      server.close();
      server.closeAllConnections();
      tls?.close();
      tls?.closeAllConnections();
      await svc.close();
      process.exit(0);
    };
    process.once('SIGINT', () => void stop('SIGINT'));
    process.once('SIGTERM', () => void stop('SIGTERM'));
  });

program
  .command('worker')
  .description('run job workers only (renewal planning and notices, CRL and OCSP refresh, sweeps); start any number of them')
  .action(async () => {
    const config = loadConfig();
    if (!config.redisUrl) {
      console.error('mqtt-ca worker: REDIS_URL is not set. Without Redis, `mqtt-ca serve` runs the jobs in-process.');
      process.exit(2);
    }
    const svc = await openService(config);
    await svc.jobs.start();
    console.log(`mqtt-ca worker running (queues on ${new URL(config.redisUrl).host}, prefix ${config.jobs.prefix})`);
    const stop = async (signal: string) => {
      svc.logger.info({ signal }, 'worker shutting down: finishing running jobs');
      await svc.close();
      process.exit(0);
    };
    process.once('SIGINT', () => void stop('SIGINT'));
    process.once('SIGTERM', () => void stop('SIGTERM'));
  });

program
  .command('migrate')
  .description('apply database migrations')
  .action(async () => {
    const db = await openExistingStore(loadConfig(), 'store');
    try {
      const applied = await migrateLatest(db);
      console.log(applied.length ? `applied: ${applied.join(', ')}` : 'already up to date');
    } finally {
      await db.destroy();
    }
  });

program
  .command('init')
  .description('initialise the CA hierarchy and the admin API key on an empty store')
  .action(async () => {
    await withService(
      async (svc) => {
        const r = await bootstrap(svc);
        announce(r);
        if (!r.created && !r.adminKey) console.log('already initialised');
      },
      { mayCreate: true },
    );
  });

const apikey = program.command('apikey').description('manage API keys');
const parseRole = (v: string): Role => {
  if (!(ROLES as readonly string[]).includes(v)) throw new InvalidArgumentError(`one of ${ROLES.join(', ')}`);
  return v as Role;
};
apikey
  .command('create')
  .requiredOption('--name <name>', 'what the key is for')
  .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`, parseRole)
  .action(async (o: { name: string; role: Role }) => {
    await withService(async (svc) => {
      const k = await svc.apiKeys.create({ name: o.name, role: o.role }, cliActor());
      console.log(`id:   ${k.id}\nrole: ${k.role}\nkey:  ${k.key}\n(the key is shown once)`);
    });
  });
apikey.command('list').action(async () => {
  await withService(async (svc) => {
    for (const k of await svc.apiKeys.list()) {
      console.log([k.id, k.role, k.name, k.revokedAt ? `revoked ${new Date(k.revokedAt).toISOString()}` : 'active'].join('\t'));
    }
  });
});
apikey.command('revoke <id>').action(async (id: string) => {
  await withService(async (svc) => {
    await svc.apiKeys.revoke(id, { ...cliActor(), role: 'admin' }); // the machine's operator acts as admin
    console.log(`revoked ${id}`);
  });
});

const collect = (v: string, all: string[]) => [...all, v];

program
  .command('audit')
  .description('audit log tools')
  .command('verify')
  .description(
    'check the hash chain (names the first altered, removed or reordered entry) and its head against the checkpoints kept outside the database (entries removed from the end)',
  )
  .option(
    '--checkpoint <json-or-file>',
    'also compare with this checkpoint (a kind "audit-checkpoint" line from the log stream, or a file holding one); repeatable',
    collect,
    [],
  )
  .action(async (o: { checkpoint: string[] }) => {
    await withService(async (svc) => {
      const given: CheckpointSource[] = o.checkpoint.map((c, i) => {
        const text = c.trimStart().startsWith('{') ? c : readFileSync(c, 'utf8');
        try {
          return { source: `--checkpoint #${i + 1}`, value: JSON.parse(text) as unknown };
        } catch {
          return { source: `--checkpoint #${i + 1}`, value: { malformed: true } };
        }
      });
      const r = await verifyAuditLog(
        { db: svc.db, audit: svc.audit, checkpoints: svc.auditCheckpoints, anchorFile: svc.config.audit.anchorFile, backups: svc.backups },
        given,
      );
      if (!r.chain.ok) {
        console.error(`audit log BROKEN at seq ${r.chain.firstBad.seq}: ${r.chain.firstBad.problem} — ${r.chain.firstBad.message}`);
        process.exitCode = 1;
        return;
      }
      const a = r.anchor!;
      for (const s of r.skipped) console.log(`not compared: ${s}`);
      if (a.findings.length) {
        for (const f of a.findings)
          console.error(`audit log ${f.problem === 'tail-missing' ? 'TAIL MISSING' : `anchor ${f.problem.toUpperCase()}`}: ${f.message}`);
        process.exitCode = 1;
        return;
      }
      const anchored = a.newest ? `; anchored at seq ${a.newest.seq} (${a.newest.source}, ${a.newest.at})` : '';
      console.log(`audit log intact: ${r.chain.entries} entries${anchored}`);
      if (a.unanchored > 0)
        console.log(
          `the newest ${a.unanchored} entries are after the newest checkpoint (appended in the last AUDIT_ANCHOR_BATCH_MS, or by another process or host)`,
        );
    });
  });

program
  .command('backup')
  .description('write an encrypted backup of the whole state (keys stay wrapped under the KEK) and record it')
  .option('--out <file>', 'where to write it (default: a new file under BACKUP_DIR, default DATA_DIR/backups)')
  .action(async (o: { out?: string }) => {
    await withService(async (svc) => {
      const b = await svc.backups.create(cliActor(), { out: o.out });
      const rows = Object.values(b.rowCounts).reduce((n, x) => n + x, 0);
      const file = b.fileName.includes('/') ? b.fileName : `${svc.backups.dir}/${b.fileName}`;
      console.log(
        `backup ${b.id}\nfile:   ${file}\nsize:   ${b.sizeBytes} bytes\nsha256: ${b.sha256}\nrows:   ${rows} in ${Object.keys(b.rowCounts).length} tables\nkek id: ${b.kekId} (restoring needs this KEK)`,
      );
    });
  });

program
  .command('restore <file>')
  .description('restore a backup into an EMPTY database (DATABASE_URL, else DATA_DIR); needs the KEK the backup was made under')
  .action(async (file: string) => {
    const config = loadConfig();
    if (!config.kek && !config.kekFile && !existsSync(defaultKekPath(config.dataDir))) {
      console.error(
        `mqtt-ca restore: no key-encryption key: set MQTT_CA_KEK or MQTT_CA_KEK_FILE to the KEK of the instance the backup came from (or put it in ${defaultKekPath(config.dataDir)})`,
      );
      process.exit(1);
    }
    const { kek } = loadKek(config, false);
    const db = createDb({ databaseUrl: config.databaseUrl, pgliteDir: config.databaseUrl ? undefined : pgliteDirUnder(config.dataDir) });
    try {
      const audit = new AuditLog(new AuditStore(db), deriveKey(kek, 'audit chain'), systemClock);
      const r = await restoreBackup({ db, store: new BackupStore(), kek, audit, clock: systemClock }, file, cliActor());
      const v = await audit.verify(db);
      // The restored log is the history from now on: anchor its head (an anchor of the replaced history is kept beside it).
      const checkpoints = new AuditCheckpoints(deriveKey(kek, 'audit anchor'));
      const anchored = await anchorAtStart(
        checkpoints,
        config.audit.anchorFile,
        await audit.head(db),
        (seq) => audit.hashAt(db, seq),
        systemClock.now(),
      ).catch((e: unknown) => {
        console.error(
          `mqtt-ca restore: the restored audit log could not be anchored at ${config.audit.anchorFile} (${(e as Error).message}): set AUDIT_ANCHOR_FILE to a file this user can write`,
        );
        return undefined;
      });
      if (anchored?.status === 'superseded') console.log(`the audit anchor of the replaced history was kept as ${anchored.kept}`);
      console.log(`restored backup ${r.header.id} of ${r.header.createdAt}: ${r.rows} rows in ${r.header.tables.length} tables`);
      if (r.migratedAfter.length) console.log(`then migrated: ${r.migratedAfter.join(', ')}`);
      if (v.ok) console.log(`audit log intact: ${v.entries} entries`);
      else {
        console.error(`audit log BROKEN at seq ${v.firstBad.seq}: ${v.firstBad.problem} — ${v.firstBad.message}`);
        process.exitCode = 1;
      }
    } catch (e) {
      if (!isDomainError(e)) throw e;
      console.error(`mqtt-ca restore: ${e.message}`);
      process.exitCode = 1;
    } finally {
      await db.destroy();
    }
  });

const positiveNumber = (what: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${what} must be a positive number`);
  return n;
};

program
  .command('crl-sync')
  .description('for broker hosts: keep a CRL bundle file fresh (conditional GETs, atomic writes, a reload command on change)')
  .requiredOption('--url <url>', 'the bundle URL, e.g. https://ca.example/pki/crl/bundle.pem')
  .option('--out <file>', "where the broker reads it (Mosquitto's crlfile); optional with --hash-dir")
  .option(
    '--hash-dir <dir>',
    'also (or only) keep a hashed directory: <issuer hash>.r0 per CRL, as openssl rehash names them (RabbitMQ ssl_crl_hash_dir, OpenSSL CApath)',
  )
  .option('--cafile <file>', 'PEM CA certificates: every CRL must be signed by one of them (recommended: the CRLs come over plain HTTP)')
  .option('--reload <command>', 'run after the file changed, e.g. "kill -HUP $(cat /run/mosquitto/mosquitto.pid)"')
  .option('--interval <seconds>', 'poll every so many seconds; without it, sync once and exit', positiveNumber('--interval'))
  .option(
    '--min-remaining <minutes>',
    "fail when the file is this close to a CRL's nextUpdate and cannot be refreshed",
    positiveNumber('--min-remaining'),
    60,
  )
  .action(
    async (o: {
      url: string;
      out?: string;
      hashDir?: string;
      cafile?: string;
      reload?: string;
      interval?: number;
      minRemaining: number;
    }) => {
      if (!o.out && !o.hashDir) {
        console.error('mqtt-ca crl-sync: give --out, --hash-dir, or both');
        process.exit(2);
      }
      const out = o.out ?? hashDirBundle(o.hashDir!);
      const written = o.hashDir ? (o.out ? `${o.out} and ${o.hashDir}` : o.hashDir) : out;
      const opts = {
        url: o.url,
        out,
        hashDir: o.hashDir,
        reload: o.reload,
        minRemainingMs: o.minRemaining * 60_000,
        trustedPem: o.cafile ? readFileSync(o.cafile, 'utf8') : undefined,
      };
      for (;;) {
        try {
          const r = await syncCrlBundle(opts);
          if (r.kind === 'updated')
            console.log(
              `${new Date().toISOString()} updated ${written}: ${r.crls.map((c) => `${c.issuer} (${c.entries} entries, next update ${c.nextUpdate?.toISOString()})`).join('; ')}`,
            );
          else if (r.kind === 'kept') console.warn(`${new Date().toISOString()} kept ${written}: ${r.reason}`);
        } catch (e) {
          if (e instanceof CrlSyncError) {
            console.error(`mqtt-ca crl-sync: ${e.message}`);
            process.exit(2);
          }
          throw e;
        }
        if (!o.interval) return;
        await new Promise((r) => setTimeout(r, o.interval! * 1000));
      }
    },
  );

const portNumber = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new InvalidArgumentError('a port number');
  return n;
};

program
  .command('broker-setup')
  .description(
    'write what a broker needs to enforce this CA: CA bundle in its order, CRLs, a broker certificate and its configuration (see README.txt in --dir)',
  )
  .requiredOption('--dir <dir>', 'where to write the files')
  .addOption(new Option('--broker <broker>', 'the broker').choices(BROKER_KINDS).default('mosquitto'))
  .option('--broker-dir <dir>', 'where the broker will read them (default: --dir)')
  .option('--port <port>', 'the mutual-TLS listener port', portNumber, 8883)
  .option('--dns <name>', "a DNS name for the broker's certificate (repeat for more)", collect, [])
  .option('--ip <address>', "an IP address for the broker's certificate (repeat for more)", collect, [])
  .option(
    '--must-staple',
    'the issued certificate carries the TLS Feature status_request (RFC 7633): for a broker that staples OCSP (EMQX)',
  )
  .option('--cert-file <file>', "instead of issuing one: the broker's own certificate, as the broker sees it")
  .option('--key-file <file>', "instead of issuing one: the broker's own key, as the broker sees it")
  .option('--plugin <path>', 'mosquitto: mosquitto_dynamic_security.so', DEFAULT_DYNSEC_PLUGIN)
  .addOption(
    new Option('--crl-mode <mode>', 'rabbitmq: CRLs from a hashed directory kept by crl-sync, or fetched over HTTP at every handshake')
      .choices(RABBIT_CRL_MODES)
      .default('hash-dir'),
  )
  .option('--management-port <port>', 'rabbitmq: the management API listener (the connector)', portNumber, 15672)
  .action(
    async (o: {
      dir: string;
      broker: BrokerKind;
      brokerDir?: string;
      port: number;
      dns: string[];
      ip: string[];
      mustStaple?: boolean;
      certFile?: string;
      keyFile?: string;
      plugin: string;
      crlMode: RabbitCrlMode;
      managementPort: number;
    }) => {
      const names = { dnsNames: o.dns, ipAddresses: o.ip, mustStaple: o.mustStaple === true };
      const issue = names.dnsNames.length + names.ipAddresses.length > 0;
      if (issue === Boolean(o.certFile || o.keyFile) || Boolean(o.certFile) !== Boolean(o.keyFile)) {
        console.error('mqtt-ca broker-setup: give --dns/--ip to issue a broker certificate, or both --cert-file and --key-file');
        process.exit(2);
      }
      if (o.mustStaple && !issue) {
        console.error('mqtt-ca broker-setup: --must-staple is for a certificate it issues (--dns/--ip)');
        process.exit(2);
      }
      await withService(async (svc) => {
        const f = await writeBrokerSetup(svc, {
          broker: o.broker,
          dir: o.dir,
          ...(o.brokerDir ? { brokerDir: o.brokerDir } : {}),
          port: o.port,
          ...(issue ? { certificate: names } : { certFile: o.certFile!, keyFile: o.keyFile! }),
          pluginPath: o.plugin,
          crlMode: o.crlMode,
          managementPort: o.managementPort,
        });
        if (f.issued) console.log(`issued the broker certificate ${f.issued.serial}`);
        console.log(`connector identity: certificate CN ${f.connectorCn}`);
        for (const file of Object.values(f.paths)) console.log(`wrote ${file}`);
      });
    },
  );

// The daily-work commands over the running service's API (src/cli/, docs/cli.md).
registerApiCommands(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof ConfigError || e instanceof KekError) {
    console.error(`mqtt-ca: ${e.message}`);
  } else if (e instanceof StoreLockedError) {
    console.error(
      `mqtt-ca: the embedded store ${e.lockFile.replace(/\.pid$/, '')} is ${e.message}.\n` +
        "  Only one process may open it at a time: do this through the running service's API (e.g. POST and GET /v1/api-keys, POST /v1/backups), " +
        'or stop that process first. (With DATABASE_URL, PostgreSQL lets several processes share the store.)',
    );
    process.exit(2);
  } else if (e instanceof DataDirError || e instanceof NoStoreError) {
    console.error(`mqtt-ca: ${e.message}`);
    process.exit(2);
  } else {
    console.error('mqtt-ca: failed:', e instanceof Error ? e.message : e);
  }
  process.exit(1);
});
