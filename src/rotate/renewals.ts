import type { AuditLog } from '../audit/audit-log.js';
import type { Clock } from '../shared/clock.js';
import { serialFromBytes, serialToBytes, type Serial } from '../shared/ids.js';
import type { Db } from '../store/db.js';
import type { NoticeRow, RenewalStore } from '../store/renewal-store.js';
import type { NoticeSink } from '../store/rotation-policy-store.js';
import { DEFAULT_RENEW_AT_FRACTION, type RotationPolicies } from './policies.js';

/** What a device is told when its certificate comes due. */
export interface RenewalNotice {
  /** renewal-due: renew with the current certificate; credential-staged: pick up the new key and certificate made here. */
  type: 'renewal-due' | 'credential-staged';
  /** Stable across redeliveries: a device that sees it twice renews once. */
  noticeId: string;
  deviceId: string;
  serial: Serial;
  dueAt: string;
  /** The certificate's notAfter: renew before it. */
  deadline: string;
  /** REST renewal (TLS client certificate or a request signed with the current key). */
  renewUrl: string;
  /** EST re-enrollment with the TLS client certificate. */
  estUrl: string;
  /** due: the certificate reached its renewal point; rollover: its issuing CA is being replaced (renew onto the successor). */
  reason: 'due' | 'rollover';
  /** credential-staged: the new certificate, and where the device fetches it with its current certificate. */
  newSerial?: string;
  pickupUrl?: string;
}

/** Stages the successor of a certificate whose key the service generated (StagedCredentials). */
export interface CredentialStager {
  stage(renews: Buffer): Promise<{ serial: string }>;
}

/** A way to tell devices (the MQTT broker connection, a signed webhook); src/broker implements them. */
export interface NoticeSender {
  readonly sink: NoticeSink;
  /** Delivers what it can; returns the noticeIds delivered and the error that stopped the rest. */
  send(notices: RenewalNotice[]): Promise<{ delivered: string[]; error?: string }>;
}

export interface RenewalOptions {
  /** Notices per delivery job. */
  batchSize: number;
  /** How long a worker holds the notices it is sending (lapses if it dies). */
  leaseMs: number;
  /** A pending notice whose job has not run for this long is enqueued again (its job was lost). */
  redriveAfterMs: number;
  /** This process, as the lease holder. */
  workerId: string;
  renewUrl: string;
  estUrl: string;
  pickupUrl: string;
}

/** Thrown when some notices of a batch could not be sent now: the job is retried for them. */
export class DeliveryIncomplete extends Error {
  override name = 'DeliveryIncomplete';
}

const PLAN_CHUNK = 5000;

/**
 * Renewal notices: planning finds the certificates past their renewal point (PostgreSQL is the
 * truth: each gets one notice row, ever) and hands back batches for delivery jobs; delivery
 * leases a batch's notices, sends each through every sink it has not reached yet, and records
 * what went out. A notice is delivered at least once per sink and recorded once; its noticeId
 * lets a device drop a repeat.
 */
export class Renewals {
  constructor(
    private readonly db: Db,
    private readonly store: RenewalStore,
    private readonly policies: RotationPolicies,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly senders: NoticeSender[],
    private readonly opts: RenewalOptions,
    private readonly stager?: CredentialStager,
  ) {}

  /** Plans every due certificate and re-drives lost batches; returns the batches (serials, hex) to deliver. */
  async plan(): Promise<{ planned: number; redriven: number; superseded: number; batches: Serial[][] }> {
    const batches: Serial[][] = [];
    let planned = 0;
    const superseded = (await this.store.supersedeRenewed(this.db, this.clock.now())).length;
    for (;;) {
      const now = this.clock.now();
      const serials = await this.db.transaction(async (tx) => {
        const s = await this.store.plan(tx, now, { fraction: DEFAULT_RENEW_AT_FRACTION, notify: this.policies.sinks }, PLAN_CHUNK);
        for (const b of chunks(s.map(serialFromBytes), this.opts.batchSize)) {
          await this.audit.append(tx, [
            {
              actor: 'system:rotation',
              action: 'renewal.planned',
              targetType: 'renewal-batch',
              targetId: b[0]!,
              details: { count: b.length, serials: b },
            },
          ]);
        }
        return s;
      });
      planned += serials.length;
      batches.push(...chunks(serials.map(serialFromBytes), this.opts.batchSize));
      if (serials.length < PLAN_CHUNK) break;
    }
    const now = this.clock.now();
    const again = await this.store.redrive(this.db, new Date(now.getTime() - this.opts.redriveAfterMs), now, 100_000);
    batches.push(...chunks(again.map(serialFromBytes), this.opts.batchSize));
    return { planned, redriven: again.length, superseded, batches };
  }

  /** Sends one batch. Throws DeliveryIncomplete when a sink failed or another worker still holds some of it. */
  async deliver(batch: Serial[]): Promise<{ sent: number }> {
    const now = this.clock.now();
    const serials = batch.map(serialToBytes);
    const claimed = await this.store.claim(this.db, serials, this.opts.workerId, now, new Date(now.getTime() + this.opts.leaseMs));
    const leasedElsewhere = batch.length - claimed.length - (await this.settledAmong(serials, claimed));
    const bySerial = new Map<string, NoticeRow>(claimed.map((n) => [serialFromBytes(n.serial), n]));
    const errors: string[] = [];
    const failed = new Set<string>();
    // Devices that cannot make a key: their successor is made and staged first; the notice says where to fetch it.
    const staged = new Map<string, string>();
    for (const n of claimed.filter((x) => x.keyOrigin === 'server' && this.stager)) {
      try {
        staged.set(serialFromBytes(n.serial), (await this.stager!.stage(n.serial)).serial);
      } catch (e) {
        failed.add(serialFromBytes(n.serial));
        errors.push(`staging ${serialFromBytes(n.serial)}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    for (const sender of this.senders) {
      const todo = claimed.filter(
        (n) => !failed.has(serialFromBytes(n.serial)) && n.notify.includes(sender.sink) && sentAt(n, sender.sink) === null,
      );
      if (todo.length === 0) continue;
      const r = await sender.send(todo.map((n) => this.notice(n, staged.get(serialFromBytes(n.serial)))));
      const delivered = new Set(r.delivered);
      await this.store.markSent(
        this.db,
        todo.filter((n) => delivered.has(serialFromBytes(n.serial))).map((n) => n.serial),
        sender.sink,
        this.clock.now(),
      );
      for (const n of todo) if (!delivered.has(serialFromBytes(n.serial))) failed.add(serialFromBytes(n.serial));
      if (r.error) errors.push(`${sender.sink}: ${r.error}`);
    }
    const sent = claimed.filter((n) => !failed.has(serialFromBytes(n.serial)));
    await this.db.transaction(async (tx) => {
      await this.store.finish(
        tx,
        this.opts.workerId,
        sent.map((n) => n.serial),
        [...failed].map((s) => bySerial.get(s)!.serial),
        errors.join('; ') || null,
        this.clock.now(),
      );
      if (sent.length > 0) {
        await this.audit.append(tx, [
          {
            actor: 'system:rotation',
            action: 'renewal.notified',
            targetType: 'renewal-batch',
            targetId: serialFromBytes(sent[0]!.serial),
            details: { count: sent.length, serials: sent.map((n) => serialFromBytes(n.serial)), sinks: this.senders.map((s) => s.sink) },
          },
        ]);
      }
    });
    if (failed.size > 0 || leasedElsewhere > 0) {
      throw new DeliveryIncomplete(
        `${failed.size} notices not delivered${errors.length ? ` (${errors.join('; ')})` : ''}, ${leasedElsewhere} held by another worker`,
      );
    }
    return { sent: sent.length };
  }

  notice(n: NoticeRow, stagedSerial?: string): RenewalNotice {
    const serial = serialFromBytes(n.serial);
    return {
      type: stagedSerial ? 'credential-staged' : 'renewal-due',
      noticeId: serial,
      deviceId: n.deviceId,
      serial,
      dueAt: n.dueAt.toISOString(),
      deadline: n.deadline.toISOString(),
      renewUrl: this.opts.renewUrl,
      estUrl: this.opts.estUrl,
      reason: n.reason,
      ...(stagedSerial ? { newSerial: stagedSerial, pickupUrl: this.opts.pickupUrl } : {}),
    };
  }

  async noticeFor(serial: Serial): Promise<NoticeRow | undefined> {
    return this.store.get(this.db, serialToBytes(serial));
  }

  counts() {
    return this.store.counts(this.db);
  }

  /** Of a batch's notices not claimed now, those already sent or superseded (nothing to retry). */
  private async settledAmong(serials: Buffer[], claimed: NoticeRow[]): Promise<number> {
    if (claimed.length === serials.length) return 0;
    return (
      serials.length -
      claimed.length -
      (await this.store.pendingAmong(
        this.db,
        serials.filter((s) => !claimed.some((c) => c.serial.equals(s))),
      ))
    );
  }
}

const sentAt = (n: NoticeRow, sink: NoticeSink) => (sink === 'mqtt' ? n.mqttSentAt : n.webhookSentAt);

function chunks<T>(xs: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size));
  return out;
}
