import type { Knex } from 'knex';
import type { AuditEntryInput, AuditLog } from '../audit/audit-log.js';
import type { ActorContext } from '../shared/actor.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, badRequest, conflict, forbidden, notFound } from '../shared/errors.js';
import { serialFromBytes, serialToBytes, type Serial } from '../shared/ids.js';
import type { Db, Executor } from '../store/db.js';
import { takesWholeDevices, type CertificateRow, type CertificateStore, type RevocationSelector } from '../store/certificate-store.js';
import { deviceEffectOf, isRevocationReason, type RevocationReason } from './reasons.js';
import { NO_TELEMETRY, type Telemetry } from '../shared/telemetry.js';

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
}

export interface BulkRevokeResult {
  dryRun: boolean;
  /** Revoked by this request (dry run: would be). */
  revoked: number;
  /** Matched, but revoked already (left as they are). */
  alreadyRevoked: number;
  /** The first SAMPLE serials revoked (dry run: that would be), in serial order. */
  serials: Serial[];
  truncated: boolean;
}

const SAMPLE = 1000;

/** Certificates whose revocation state changed, and their CAs. */
export interface RevocationChange {
  caIds: string[];
  serials: Buffer[];
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
   * Revokes every certificate a selector matches, set-based: one statement for the certificates,
   * one for their devices, one audit append, whatever the count. A dry run says what it would do.
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
  ): Promise<{ serial: Buffer; caId: string; deviceId: string | null }[]> {
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
    if (revoked.length === 0) return revoked;
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
    return revoked;
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
