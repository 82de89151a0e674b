import { open, stat, type FileHandle } from 'node:fs/promises';
import { DomainError } from '../shared/errors.js';
import type { BusEvent, BusEventSource, DropCounts, SourceStatus } from './bus-events.js';
import { LogLineSplitter, MOSQUITTO_TLS_FAILURE_NOTE, MosquittoLogParser, mosquittoLogObserves } from './mosquitto-log.js';

/** What a Mosquitto 2.0 log file shows with `log_type debug` (besides the $SYS log's levels). */
export const MOSQUITTO_LOG_FILE_OBSERVES = mosquittoLogObserves({
  'tls-failure': { observed: true, note: MOSQUITTO_TLS_FAILURE_NOTE },
  'acl-denied': {
    observed: true,
    note: 'with log_type debug only: "Denied PUBLISH", and a requested subscription the SUBACK did not grant',
  },
  publish: { observed: true, note: 'with log_type debug only ("Received PUBLISH")' },
});

/** A broker (re)starting writes this line; the sessions of before are gone. */
const BROKER_STARTING = /^\d[^:]*: mosquitto version \S+ starting$/;

export interface MosquittoLogFileSourceOptions {
  /** The broker's id in the events. */
  broker: string;
  /** The log file (`log_dest file <path>`). */
  path: string;
  /** How often the file is looked at. */
  pollMs?: number;
  /**
   * Bytes read per look at most: memory stays bounded whatever the file's growth. A look that
   * stops at this budget with more to read is followed by the next at once (after the event loop's
   * turn), not after pollMs: a backlog is read as fast as it is handled, in bounded pieces.
   */
  maxReadBytes?: number;
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

/**
 * A Mosquitto broker's events from its log file (`log_dest file`), followed from its end as it was
 * at start: new lines are read as they are written, in bounded reads. A rotated file (another
 * inode at the path) is read to its end and the new one from its start; a truncated file (shorter
 * than what was read) from its start. A missing file at start is a failed start (the watch retries);
 * a file that goes missing while the broker may still write the one open (renamed by logrotate) is
 * read on; missing with none open, the source is down (`file-missing`) until it appears.
 */
export class MosquittoLogFileSource implements BusEventSource {
  readonly broker: string;
  readonly kind = 'mosquitto-log-file';
  readonly observes = MOSQUITTO_LOG_FILE_OBSERVES;
  private readonly parser: MosquittoLogParser;
  private readonly splitter = new LogLineSplitter();
  private readonly listeners = new Set<(s: SourceStatus) => void>();
  private readonly pollMs: number;
  private readonly maxRead: number;
  private readonly buf: Buffer;
  private fh: FileHandle | undefined;
  private ino = 0;
  private pos = 0;
  private onEvent: ((e: BusEvent) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private running = false;
  private up = false;
  /** The last look stopped at its read budget: there is likely more to read now. */
  private more = false;
  /** Times the file was reopened from its start (rotated or truncated). */
  reopened = 0;

  constructor(private readonly o: MosquittoLogFileSourceOptions) {
    this.broker = o.broker;
    this.parser = new MosquittoLogParser({ broker: o.broker });
    this.pollMs = o.pollMs ?? 250;
    this.maxRead = o.maxReadBytes ?? 1 << 20;
    this.buf = Buffer.alloc(Math.min(this.maxRead, 256 * 1024));
  }

  dropped(): DropCounts {
    const d = this.parser.dropped();
    if (this.splitter.tooLong) d['too-long'] = (d['too-long'] ?? 0) + this.splitter.tooLong;
    return d;
  }

  onStatus(listener: (s: SourceStatus) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async start(onEvent: (e: BusEvent) => void): Promise<void> {
    if (this.running) throw new Error('already started');
    try {
      const fh = await open(this.o.path, 'r');
      const st = await fh.stat();
      this.fh = fh;
      this.ino = st.ino;
      this.pos = st.size; // from its end: what was written before the watch is not replayed
    } catch (e) {
      throw new DomainError('Unavailable', `cannot read the broker's log file ${this.o.path}: ${errorText(e)}`);
    }
    this.onEvent = onEvent;
    this.running = true;
    this.up = true;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.polling;
    await this.fh?.close().catch(() => undefined);
    this.fh = undefined;
  }

  /** Reads what is new now, up to maxReadBytes (tests; the timer does the same). A look that leaves more brings the next one forward. */
  async poll(): Promise<void> {
    this.polling ??= this.look().finally(() => {
      this.polling = undefined;
      // Called from outside the timer with a backlog left: the waiting timer comes at once.
      if (this.more && this.timer) this.schedule();
    });
    return this.polling;
  }

  private schedule(): void {
    if (!this.running) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        void this.poll().finally(() => this.schedule());
      },
      this.more ? 0 : this.pollMs,
    );
    this.timer.unref();
  }

  private emit(s: SourceStatus): void {
    for (const l of [...this.listeners]) {
      try {
        l(s);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  private async look(): Promise<void> {
    this.more = false;
    try {
      let st: { ino: number; size: number } | undefined;
      try {
        st = await stat(this.o.path);
      } catch {
        st = undefined;
      }
      if (this.fh && st && st.ino !== this.ino) {
        // Rotated: the old file to its end, then the new one from its start.
        await this.readOn();
        await this.fh.close().catch(() => undefined);
        this.fh = undefined;
      }
      if (!this.fh) {
        if (!st) {
          this.setUp(false, `${this.o.path} is missing`);
          return;
        }
        this.fh = await open(this.o.path, 'r');
        const now = await this.fh.stat();
        this.ino = now.ino;
        this.pos = 0;
        this.reopened++;
        this.restartLines();
      } else if (st && st.size < this.pos) {
        // Truncated (copytruncate): from the start.
        this.pos = 0;
        this.reopened++;
        this.restartLines();
      }
      this.setUp(true);
      await this.readOn();
    } catch (e) {
      await this.fh?.close().catch(() => undefined);
      this.fh = undefined;
      this.setUp(false, errorText(e));
    }
  }

  private setUp(up: boolean, detail?: string): void {
    if (up === this.up) return;
    this.up = up;
    if (up) {
      this.parser.forgetSessions();
      this.emit({ up: true, sessionsReset: true });
    } else this.emit({ up: false, why: 'file-missing', ...(detail ? { detail } : {}) });
  }

  private restartLines(): void {
    // A partial line of the old file is not part of the new one's first line.
    this.splitter.end();
  }

  /** Reads from the position to the file's current end, at most maxReadBytes per call. */
  private async readOn(): Promise<void> {
    const fh = this.fh;
    if (!fh) return;
    let budget = this.maxRead;
    while (budget > 0 && this.running) {
      const { bytesRead } = await fh.read(this.buf, 0, Math.min(this.buf.length, budget), this.pos);
      if (bytesRead === 0) return;
      this.pos += bytesRead;
      budget -= bytesRead;
      for (const line of this.splitter.push(this.buf.subarray(0, bytesRead))) this.line(line);
    }
    this.more = budget <= 0;
  }

  private line(raw: Buffer): void {
    if (raw.length < 200 && BROKER_STARTING.test(raw.toString('latin1'))) {
      this.parser.forgetSessions();
      this.emit({ up: true, sessionsReset: true });
      return;
    }
    for (const e of this.parser.bytes(raw)) this.onEvent?.(e);
  }
}
