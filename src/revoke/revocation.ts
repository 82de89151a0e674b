import type { Knex } from 'knex';
import type { AuditEntryInput, AuditLog } from '../audit/audit-log.js';
import type { ActorContext } from '../shared/actor.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, badRequest, conflict, forbidden, isDomainError, notFound } from '../shared/errors.js';
import { newId, serialFromBytes, serialToBytes, type Serial } from '../shared/ids.js';
import type { Db, Executor } from '../store/db.js';
import {
  takesWholeDevices,
  type CertificateRow,
  type CertificateStore,
  type RevocationSelector,
  type RevokedRow,
} from '../store/certificate-store.js';
import { deviceEffectOf, isRevocationReason, type RevocationReason } from './reasons.js';
import { NO_TELEMETRY, type Telemetry } from '../shared/telemetry.js';
import type { BulkRevocationRow, BulkRevocationStore } from '../store/bulk-revocation-store.js';

export interface RevokeInput {
  reason: RevocationReason;
  /** RFC 5280 §5.3.2: when the key is known or suspected to have been compromised. */
  invalidityDate?: Date | undefined;
}

/** The part of the device inventory that follows a certificate's revocation (DeviceInventory in production). */
export interface DeviceLifecycle {
  /** Moves the devices whose current certificate is one of `serials`; returns the audit entries to append. */
  followCertificates(
    tx: Executor,
    serials: Buffer[],
    to: 'suspended' | 'revoked' | 'active',
    ctx: ActorContext,
    details: Record<string, unknown>,
  ): Promise<AuditEntryInput[]>;
}

/** A bulk revocation: which certificates (every criterion must hold), why, and whether only to look. */
export interface BulkRevokeInput extends RevokeInput {
  selector: RevocationSelector;
  dryRun?: boolean | undefined;
  /** Refuse (409, nothing changes) when more than this many would be revoked: the approval threshold, held to even against a racing issuance. */
  atMost?: number | undefined;
  /** What starts it when not a request of its own (e.g. `incident:<id>`): its runs can be listed by it. */
  origin?: string | undefined;
}

export interface BulkRevokeResult {
  dryRun: boolean;
  /** Revoked by this request (dry run: would be). */
  revoked: number;
  /** Matched, but revoked already (left as they are). */
  alreadyRevoked: number;
  /** Up to SAMPLE of the serials revoked (dry run: that would be), in serial order: the lowest, except for a chunked run (those of its first chunks). */
  serials: Serial[];
  truncated: boolean;
  /** The run (GET /v1/revocations/{id}), when the selection took more than one chunk. */
  id?: string | undefined;
}

const SAMPLE = 1000;

/** Chunked bulk revocations: where their runs are recorded, how big a chunk is, and who this process is. */
export interface BulkRunSettings {
  store: BulkRevocationStore;
  /** Certificates per chunk (each chunk one transaction). */
  chunkSize: number;
  /** How long a run's lease lasts without a chunk renewing it; a run whose lease lapsed is taken over. */
  leaseMs: number;
  /** This process, as a lease holder. */
  owner: string;
  /** Tests only: called after each chunk commits and is published; throwing there is a process dying there. */
  afterChunk?(runId: string, chunk: number): void | Promise<void>;
}

/** A bulk revocation run, as GET /v1/revocations/{id} and incidents show it. */
export interface BulkRevocationView {
  id: string;
  status: 'running' | 'done' | 'failed';
  reason: string;
  invalidityDate: string | null;
  actor: string;
  origin: string | null;
  matched: number;
  revoked: number;
  alreadyRevoked: number;
  chunks: number;
  lastSerial: Serial | null;
  error: string | null;
  startedAt: string;
  updatedAt: string;
  finishedAt: string | null;
}

export function bulkRevocationView(r: BulkRevocationRow): BulkRevocationView {
  return {
    id: r.id,
    status: r.status,
    reason: r.reason,
    invalidityDate: r.invalidityDate?.toISOString() ?? null,
    actor: r.actor,
    origin: r.origin,
    matched: r.matched,
    revoked: r.revoked,
    alreadyRevoked: r.alreadyRevoked,
    chunks: r.chunks,
    lastSerial: r.cursor ? serialFromBytes(r.cursor) : null,
    error: r.error,
    startedAt: r.startedAt.toISOString(),
    updatedAt: r.updatedAt.toISOString(),
    finishedAt: r.finishedAt?.toISOString() ?? null,
  };
}

/** Certificates whose revocation state changed, and their CAs. */
export interface RevocationChange {
  caIds: string[];
  serials: Buffer[];
  /**
   * Set on a chunk of a bulk revocation run that has more chunks to follow (the run's last chunk
   * leaves it unset). The chunk is published like any change (OCSP, a delta CRL) before the next
   * one starts; what a listener may do with the hint is defer work whose cost grows with the
   * whole revoked set rather than with the change: the CRL publisher need not rebuild the full
   * CRL at once because the delta passed CRL_DELTA_MAX_ENTRIES (the deltas carry the chunks
   * meanwhile), as long as the run's last chunk, and the schedule, still have it rebuilt.
   */
  moreToCome?: boolean;
}

/** The CRL and OCSP publishers: told inside the changing transaction (optionally) and after it commits. */
export interface RevocationListener {
  /** Inside the transaction, after the change: sees it, and commits or rolls back with it. */
  onRevocationWriting?(tx: Executor, change: RevocationChange): Promise<void>;
  /** After the commit. A failure here means "committed, but not yet published everywhere". */
  onRevocationChanged(change: RevocationChange): Promise<void>;
}

/** What revoking a CA needs of the hierarchy (CaHierarchy). */
export interface CaRevocationPort {
  revocationTarget(caId: string): Promise<{ serial: Buffer }>;
  markRevokedIn(
    tx: Knex.Transaction,
    caId: string,
    ctx: ActorContext,
    details: Record<string, unknown>,
  ): Promise<{ wasDefaultIssuer: boolean }>;
  forgetDefaultIssuer(): void;
}

/**
 * Revoking and releasing single certificates. Each change commits with its audit entry and the
 * device's new status (a hold suspends the device; a revocation that says the identity can't be
 * trusted revokes it). Revoking again is idempotent: the first revocation stands, unchanged,
 * except that a hold may be made permanent (RFC 5280 §5.3.1 lets certificateHold become any other reason).
 */
export class Revocations {
  constructor(
    private readonly db: Db,
    private readonly certificates: CertificateStore,
    private readonly devices: DeviceLifecycle,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    /** In order: the OCSP responder goes first, so a revoke call that fails on its CRL still left OCSP answering revoked. */
    private readonly listeners: RevocationListener[] = [],
    /** The CA side of revokeCa (CaHierarchy in production). */
    private readonly cas?: CaRevocationPort,
    private readonly telemetry: Telemetry = NO_TELEMETRY,
    /** Absent: every bulk revocation is one transaction, whatever its size. */
    private readonly bulk?: BulkRunSettings,
  ) {}

  /**
   * Revokes one certificate. For keyCompromise, the device goes with it: every other unexpired
   * certificate of its device and of its renewal lineage is revoked in the same transaction
   * (`alsoRevoked`), so no older certificate of a compromised device stays good.
   */
  async revoke(
    serial: Serial,
    input: RevokeInput,
    ctx: ActorContext,
  ): Promise<{ certificate: CertificateRow; changed: boolean; alsoRevoked: Serial[] }> {
    const started = performance.now();
    const now = this.checkInput(input);
    const target = serialToBytes(serial);
    const out = await this.db.transaction(async (tx) => {
      // A key compromise locks the whole set first, in serial order: two of one device at once never deadlock.
      const set = input.reason === 'keyCompromise' ? await this.certificates.lockKeyCompromiseSet(tx, target, now) : [];
      const row = set.find((r) => r.serial.equals(target)) ?? (await this.locked(tx, serial));
      // A CA's certificate goes with the CA, under the two-person rule (revokeCa).
      if (row.profile === 'ca')
        throw forbidden(
          `certificate ${serial} is a CA's certificate: it is revoked by revoking the CA, which takes a second person's approval`,
        );
      const one = await this.revokeRow(tx, row, input, ctx, now);
      const others = set.filter(
        (r) => !r.serial.equals(target) && (r.status === 'issued' || (r.status === 'revoked' && r.revocationReason === 'certificateHold')),
      );
      const withIt = others.length
        ? await this.revokeSelected(tx, { serials: others.map((r) => r.serial) }, input, ctx, now, { keyCompromiseOf: serial })
        : [];
      return { ...one, withIt };
    });
    // A retry republishes too: the first call may have died between its commit and its CRL.
    const touched = [{ serial: out.certificate.serial, caId: out.certificate.caId }, ...out.withIt];
    await this.published({ caIds: [...new Set(touched.map((r) => r.caId))], serials: touched.map((r) => r.serial) });
    const count = (out.changed ? 1 : 0) + out.withIt.length;
    if (count) this.counted(input.reason, count, started);
    return { certificate: out.certificate, changed: out.changed, alsoRevoked: out.withIt.map((r) => serialFromBytes(r.serial)) };
  }

  /**
   * Revokes an intermediate CA: its certificate, with `reason`, on its parent's CRL and OCSP, and the
   * CA itself marked revoked (it issues nothing more and is no longer the default issuer), in one
   * transaction with their audit entries. Run by an approved proposal (the two-person rule).
   */
  async revokeCa(
    caId: string,
    input: RevokeInput,
    ctx: ActorContext,
  ): Promise<{ caId: string; certificate: CertificateRow; wasDefaultIssuer: boolean }> {
    const started = performance.now();
    const cas = this.cas;
    if (!cas) throw new TypeError('Revocations was built without the CA hierarchy');
    if (input.reason === 'certificateHold')
      throw badRequest('a CA is not put on hold: revoke it for good (e.g. cACompromise, keyCompromise, superseded, cessationOfOperation)');
    const now = this.checkInput(input);
    const target = await cas.revocationTarget(caId);
    const out = await this.db.transaction(async (tx) => {
      const { wasDefaultIssuer } = await cas.markRevokedIn(tx, caId, ctx, { reason: input.reason, serial: serialFromBytes(target.serial) });
      const row = await this.certificates.getForUpdate(tx, target.serial);
      if (!row) throw conflict(`the certificate of CA ${caId} is not recorded here`);
      const { certificate } = await this.revokeRow(tx, row, input, ctx, now);
      return { caId, certificate, wasDefaultIssuer };
    });
    cas.forgetDefaultIssuer();
    await this.published({ caIds: [out.certificate.caId], serials: [out.certificate.serial] });
    this.counted(input.reason, 1, started);
    return out;
  }

  private checkInput(input: RevokeInput): Date {
    if (!isRevocationReason(input.reason)) throw badRequest(`unknown revocation reason ${String(input.reason)}`);
    const now = this.clock.now();
    if (input.invalidityDate && input.invalidityDate.getTime() > now.getTime()) throw badRequest('invalidityDate is in the future');
    return now;
  }

  /** One locked row revoked (idempotently), with its device and audit entries, inside `tx`. */
  private async revokeRow(
    tx: Executor,
    row: CertificateRow,
    input: RevokeInput,
    ctx: ActorContext,
    now: Date,
  ): Promise<{ certificate: CertificateRow; changed: boolean }> {
    const serial = serialFromBytes(row.serial);
    if (row.status === 'pending' || row.status === 'failed') throw conflict(`certificate ${serial} was never issued (${row.status})`);
    const held = row.status === 'revoked' && row.revocationReason === 'certificateHold';
    if (row.status === 'revoked' && !(held && input.reason !== 'certificateHold')) return { certificate: row, changed: false };
    if (input.invalidityDate && input.invalidityDate.getTime() < row.notBefore.getTime())
      throw badRequest('invalidityDate is before the certificate was valid');
    const updated = await this.certificates.setRevoked(tx, row.serial, {
      reason: input.reason,
      // A hold made permanent keeps the time the certificate stopped being trusted.
      at: held ? row.revokedAt! : now,
      invalidityDate: input.invalidityDate ?? null,
    });
    const effect = deviceEffectOf(input.reason);
    const deviceEntries = effect ? await this.devices.followCertificates(tx, [row.serial], effect, ctx, { reason: input.reason }) : [];
    await this.writing(tx, { caIds: [row.caId], serials: [row.serial] });
    await this.audit.append(tx, [
      entry(ctx, held ? 'certificate.hold-made-permanent' : 'certificate.revoked', updated, {
        reason: input.reason,
        ...(input.invalidityDate ? { invalidityDate: input.invalidityDate.toISOString() } : {}),
      }),
      ...deviceEntries,
    ]);
    return { certificate: updated, changed: true };
  }

  /** Takes a certificate off hold. Releasing a certificate that is not on hold is a conflict; one already released changes nothing. */
  async release(serial: Serial, ctx: ActorContext): Promise<{ certificate: CertificateRow; changed: boolean }> {
    const out = await this.db.transaction(async (tx) => {
      const row = await this.locked(tx, serial);
      if (row.status === 'issued') return { certificate: row, changed: false };
      if (row.status !== 'revoked' || row.revocationReason !== 'certificateHold') {
        throw conflict(
          `certificate ${serial} is ${row.status === 'revoked' ? `revoked (${row.revocationReason})` : row.status}, not on hold: only a hold can be released`,
        );
      }
      const updated = await this.certificates.setReleased(tx, row.serial);
      const deviceEntries = await this.devices.followCertificates(tx, [row.serial], 'active', ctx, { reason: 'released' });
      await this.writing(tx, { caIds: [row.caId], serials: [row.serial] });
      await this.audit.append(tx, [entry(ctx, 'certificate.released', updated, {}), ...deviceEntries]);
      return { certificate: updated, changed: true };
    });
    if (out.changed) await this.published({ caIds: [out.certificate.caId], serials: [out.certificate.serial] });
    return out;
  }

  /**
   * Revokes every certificate a selector matches, set-based. Up to one chunk: one transaction (one
   * statement for the certificates, one for their devices, one audit append). More: a recorded run
   * over the selection frozen now (certificates issued from now on are not taken), chunk by chunk
   * (runChunks), answered when done. A dry run says what it would do.
   */
  async revokeMany(input: BulkRevokeInput, ctx: ActorContext): Promise<BulkRevokeResult> {
    const started = performance.now();
    if (!isRevocationReason(input.reason)) throw badRequest(`unknown revocation reason ${String(input.reason)}`);
    const asked = input.selector;
    const criteria = [asked.serials, asked.deviceIds, asked.lot, asked.caId, asked.issuedAfter, asked.issuedBefore, asked.lineageOf].filter(
      (c) => c !== undefined,
    );
    if (criteria.length === 0)
      throw badRequest(
        'a bulk revocation needs at least one selector (serials, deviceIds, lot, caId, issuedAfter, issuedBefore or lineageOf)',
      );
    if ((asked.serials && asked.serials.length === 0) || (asked.deviceIds && asked.deviceIds.length === 0))
      throw badRequest('an empty list selects nothing');
    const now = this.clock.now();
    if (input.invalidityDate && input.invalidityDate.getTime() > now.getTime()) throw badRequest('invalidityDate is in the future');
    // A key compromise takes the devices with it (as a single revocation does), dry run included.
    const sel = input.reason === 'keyCompromise' && !takesWholeDevices(asked) ? { ...asked, withDevicesUnexpiredAt: now } : asked;
    if (input.dryRun) {
      const p = await this.certificates.previewRevocation(this.db, sel, input.reason, SAMPLE);
      return {
        dryRun: true,
        revoked: p.revocable,
        alreadyRevoked: p.alreadyRevoked,
        serials: p.serials.map(serialFromBytes),
        truncated: p.revocable > p.serials.length,
      };
    }
    if (this.bulk) {
      // issued_at < now + 1 ms: issued at or before the start.
      const upTo = new Date(now.getTime() + 1);
      const frozen = { ...sel, issuedBefore: sel.issuedBefore && sel.issuedBefore < upTo ? sel.issuedBefore : upTo };
      const count = await this.certificates.previewRevocation(this.db, frozen, input.reason, 0);
      if (count.revocable > this.bulk.chunkSize) {
        if (input.atMost !== undefined && count.revocable > input.atMost) {
          throw conflict(
            `the selection grew to ${count.revocable} certificates, more than ${input.atMost}: nothing was revoked; repeat the request (it will take approval)`,
          );
        }
        return this.startRun(frozen, count, input, ctx);
      }
    }
    const out = await this.db.transaction(async (tx) => {
      const before = await this.certificates.previewRevocation(tx, sel, input.reason, 0);
      const revoked = await this.revokeSelected(tx, sel, input, ctx, now, { bulk: true });
      return { revoked, alreadyRevoked: before.alreadyRevoked };
    });
    if (out.revoked.length) {
      await this.published({ caIds: [...new Set(out.revoked.map((r) => r.caId))], serials: out.revoked.map((r) => r.serial) });
      this.counted(input.reason, out.revoked.length, started);
    }
    const sorted = out.revoked.map((r) => r.serial).sort(Buffer.compare);
    return {
      dryRun: false,
      revoked: out.revoked.length,
      alreadyRevoked: out.alreadyRevoked,
      serials: sorted.slice(0, SAMPLE).map(serialFromBytes),
      truncated: sorted.length > SAMPLE,
    };
  }

  /**
   * Revokes what `sel` matches inside `tx`, set-based (one statement for the certificates, one for
   * their devices, one audit append), with `details` in the audit entries. Returns what it revoked.
   */
  private async revokeSelected(
    tx: Executor,
    sel: RevocationSelector,
    input: RevokeInput & { atMost?: number | undefined },
    ctx: ActorContext,
    now: Date,
    details: Record<string, unknown>,
  ): Promise<RevokedRow[]> {
    const revoked = await this.certificates.revokeMatching(tx, sel, {
      reason: input.reason,
      at: now,
      invalidityDate: input.invalidityDate ?? null,
    });
    if (input.atMost !== undefined && revoked.length > input.atMost) {
      throw conflict(
        `the selection grew to ${revoked.length} certificates while it was being revoked, more than ${input.atMost}: nothing was revoked; repeat the request (it will take approval)`,
      );
    }
    await this.followRevoked(tx, revoked, input, ctx, details);
    return revoked;
  }

  /** What follows certificates just revoked inside `tx`: their devices, the listeners, the audit entries (with `details`). */
  private async followRevoked(
    tx: Executor,
    revoked: RevokedRow[],
    input: RevokeInput,
    ctx: ActorContext,
    details: Record<string, unknown>,
  ): Promise<void> {
    if (revoked.length === 0) return;
    const effect = deviceEffectOf(input.reason);
    const serials = revoked.map((r) => r.serial);
    const deviceEntries = effect
      ? await this.devices.followCertificates(tx, serials, effect, ctx, { reason: input.reason, ...details })
      : [];
    await this.writing(tx, { caIds: [...new Set(revoked.map((r) => r.caId))], serials });
    const entryDetails = {
      reason: input.reason,
      ...details,
      ...(input.invalidityDate ? { invalidityDate: input.invalidityDate.toISOString() } : {}),
    };
    await this.audit.append(tx, [
      ...revoked.map((r): AuditEntryInput => ({
        ...ctx,
        action: 'certificate.revoked',
        targetType: 'certificate',
        targetId: serialFromBytes(r.serial),
        details: { caId: r.caId, deviceId: r.deviceId, ...entryDetails },
      })),
      ...deviceEntries,
    ]);
  }

  private async writing(tx: Executor, change: RevocationChange): Promise<void> {
    for (const l of this.listeners) await l.onRevocationWriting?.(tx, change);
  }

  /** OCSP and CRLs updated; the change is committed whatever happens here, so a failure says so and asks for a retry. */
  private async published(change: RevocationChange): Promise<void> {
    for (const l of this.listeners) {
      try {
        await l.onRevocationChanged(change);
      } catch (e) {
        throw new DomainError(
          'Unavailable',
          `the revocation is recorded, but could not be published yet (${e instanceof Error ? e.message : String(e)}); repeat the call`,
        );
      }
    }
  }

  /** Newly revoked certificates, and how long until they were visible (OCSP and CRL): told once published. */
  private counted(reason: RevocationReason, count: number, started: number): void {
    this.telemetry.revoked(reason, count);
    this.telemetry.revocationVisible((performance.now() - started) / 1000);
  }

  private async locked(tx: Executor, serial: Serial): Promise<CertificateRow> {
    const row = await this.certificates.getForUpdate(tx, serialToBytes(serial));
    if (!row) throw notFound(`no certificate with serial ${serial}`);
    return row;
  }

  // ---- Chunked bulk revocations (runs) ----

  private runs(): BulkRunSettings {
    if (!this.bulk) throw new TypeError('Revocations was built without bulk revocation runs');
    return this.bulk;
  }

  /** A run recorded (held by this process), then revoked chunk by chunk; answered in today's shape plus its id. */
  private async startRun(
    frozen: RevocationSelector,
    count: { revocable: number; alreadyRevoked: number },
    input: BulkRevokeInput,
    ctx: ActorContext,
  ): Promise<BulkRevokeResult> {
    const b = this.runs();
    const now = this.clock.now();
    // The selection frozen with the run: its serials listed, in one transaction with the run's row.
    const run = await this.db.transaction(async (tx) => {
      const row = await b.store.insert(tx, {
        id: newId('rvk'),
        selector: frozen,
        reason: input.reason,
        invalidityDate: input.invalidityDate ?? null,
        actor: ctx.actor,
        requestId: ctx.requestId ?? null,
        origin: input.origin ?? null,
        alreadyRevoked: count.alreadyRevoked,
        leaseOwner: b.owner,
        leaseUntil: new Date(now.getTime() + b.leaseMs),
        startedAt: now,
      });
      const matched = await b.store.freeze(tx, row.id, this.certificates.revocableSerials(tx, frozen, input.reason));
      if (input.atMost !== undefined && matched > input.atMost) {
        throw conflict(
          `the selection grew to ${matched} certificates, more than ${input.atMost}: nothing was revoked; repeat the request (it will take approval)`,
        );
      }
      await b.store.setMatched(tx, row.id, matched);
      return { ...row, matched };
    });
    const sample: Buffer[] = [];
    const end = await this.runChunks(run, input.atMost, sample);
    sample.sort(Buffer.compare);
    if (end.status === 'failed')
      throw conflict(`bulk revocation ${end.id} failed after revoking ${end.revoked} certificates: ${end.error ?? 'unknown error'}`);
    // Its lease lapsed between two chunks and another process took it over: that one finishes it.
    if (end.status === 'running')
      throw new DomainError(
        'Unavailable',
        `bulk revocation ${end.id} was taken over by another process after ${end.revoked} certificates; GET /v1/revocations/${end.id} follows it`,
      );
    return {
      dryRun: false,
      id: end.id,
      revoked: end.revoked,
      alreadyRevoked: end.alreadyRevoked,
      serials: sample.map(serialFromBytes),
      truncated: end.revoked > sample.length,
    };
  }

  /**
   * Revokes a run's selection after its cursor, one chunk per transaction: the certificates, their
   * devices, their audit entries, the listeners' writes and the cursor advance commit together,
   * then the chunk is published (OCSP and CRLs), so a crash between two chunks leaves a consistent
   * state and the resumed run neither revokes twice nor skips. Ends with one summary audit entry.
   * Stops (returning the run as it is) if another process took the run over. A chunk that fails
   * for a reason a retry will not change (a domain error) fails the run; any other failure releases
   * the lease, so the run is resumed (resumeLapsed) and the error rethrown.
   */
  private async runChunks(run: BulkRevocationRow, atMost?: number, sample: Buffer[] = []): Promise<BulkRevocationRow> {
    const b = this.runs();
    const reason = run.reason as RevocationReason;
    const input: RevokeInput = { reason, invalidityDate: run.invalidityDate ?? undefined };
    const ctx: ActorContext = { actor: run.actor, ...(run.requestId ? { requestId: run.requestId } : {}) };
    let revoked = run.revoked;
    // The last position done: rows up to it are deleted with their chunk, so a resumed run starts from 0.
    let pos = 0;
    for (let chunk = run.chunks + 1; ; chunk++) {
      const started = performance.now();
      const limit = atMost === undefined ? b.chunkSize : Math.min(b.chunkSize, atMost - revoked);
      if (limit <= 0) break;
      let out: { done: RevokedRow[]; more: boolean; pos: number } | undefined;
      try {
        out = await this.db.transaction(async (tx) => {
          const held = await b.store.lockHeld(tx, run.id, b.owner);
          if (!held) return undefined;
          const now = this.clock.now();
          const window = await b.store.window(tx, run.id, pos, limit);
          if (!window) return { done: [], more: false, pos };
          // Those revoked meanwhile (by a single revocation) are skipped: revokeAmong takes only the revocable.
          const done = await this.certificates.revokeAmong(tx, b.store.serialsIn(tx, run.id, pos, window.last), {
            reason,
            at: now,
            invalidityDate: input.invalidityDate ?? null,
          });
          await this.followRevoked(tx, done, input, ctx, { bulk: true, revocation: run.id });
          await b.store.dropWindow(tx, run.id, window.last);
          await b.store.advance(tx, run.id, {
            cursor: window.lastSerial,
            revoked: done.length,
            at: now,
            leaseUntil: new Date(now.getTime() + b.leaseMs),
          });
          return { done, more: window.more, pos: window.last };
        });
        if (out === undefined) return (await b.store.get(this.db, run.id))!;
        if (out.done.length) {
          await this.published({
            caIds: [...new Set(out.done.map((r) => r.caId))],
            serials: out.done.map((r) => r.serial),
            ...(out.more ? { moreToCome: true } : {}),
          });
          this.counted(reason, out.done.length, started);
        }
      } catch (e) {
        await this.interrupted(run.id, e);
        throw e;
      }
      revoked += out.done.length;
      pos = out.pos;
      for (const r of out.done) if (sample.length < SAMPLE) sample.push(r.serial);
      await b.afterChunk?.(run.id, chunk);
      if (!out.more) break;
    }
    return this.db.transaction(async (tx) => {
      const held = await b.store.lockHeld(tx, run.id, b.owner);
      if (!held) return (await b.store.get(tx, run.id))!;
      const end = await b.store.finish(tx, run.id, { status: 'done', at: this.clock.now() });
      await this.audit.append(tx, [
        {
          ...ctx,
          action: 'revocation.bulk-completed',
          targetType: 'bulk-revocation',
          targetId: run.id,
          details: {
            reason,
            matched: end.matched,
            revoked: end.revoked,
            alreadyRevoked: end.alreadyRevoked,
            chunks: end.chunks,
            ...(run.origin ? { origin: run.origin } : {}),
          },
        },
      ]);
      return end;
    });
  }

  /** A chunk failed: a domain error fails the run (with an audit entry); anything else lets the lease go for a resume. */
  private async interrupted(id: string, e: unknown): Promise<void> {
    const b = this.runs();
    const message = e instanceof Error ? e.message : String(e);
    try {
      await this.db.transaction(async (tx) => {
        const held = await b.store.lockHeld(tx, id, b.owner);
        if (!held) return;
        const now = this.clock.now();
        if (isDomainError(e) && e.kind !== 'Unavailable') {
          await b.store.finish(tx, id, { status: 'failed', at: now, error: message });
          await this.audit.append(tx, [
            {
              actor: held.actor,
              action: 'revocation.bulk-failed',
              targetType: 'bulk-revocation',
              targetId: id,
              details: { revoked: held.revoked, error: message },
            },
          ]);
        } else {
          await b.store.release(tx, id, { at: now, error: message });
        }
      });
    } catch {
      // The database may be what failed: the lease then lapses by itself and the run is resumed.
    }
  }

  /**
   * Resumes the runs left `running` by a process that died (their lease lapsed), one at a time,
   * each taken by one process only. Run at start-up and by the scheduler. Returns the runs it finished.
   */
  async resumeLapsed(): Promise<BulkRevocationView[]> {
    const b = this.runs();
    const out: BulkRevocationView[] = [];
    for (;;) {
      const now = this.clock.now();
      const run = await b.store.claimLapsed(this.db, b.owner, now, new Date(now.getTime() + b.leaseMs));
      if (!run) return out;
      out.push(bulkRevocationView(await this.runChunks(run)));
    }
  }

  /** A run's progress. */
  async bulkRun(id: string): Promise<BulkRevocationView> {
    const run = await this.runs().store.get(this.db, id);
    if (!run) throw notFound(`no bulk revocation ${id}`);
    return bulkRevocationView(run);
  }

  /** The runs an origin (e.g. `incident:<id>`) started, oldest first. */
  async bulkRunsOf(origin: string): Promise<BulkRevocationView[]> {
    if (!this.bulk) return [];
    return (await this.bulk.store.ofOrigin(this.db, origin)).map(bulkRevocationView);
  }
}

function entry(ctx: ActorContext, action: string, c: CertificateRow, details: Record<string, unknown>): AuditEntryInput {
  return {
    ...ctx,
    action,
    targetType: 'certificate',
    targetId: serialFromBytes(c.serial),
    details: { caId: c.caId, deviceId: c.deviceId, ...details },
  };
}
