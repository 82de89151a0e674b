import type { CertIdHash } from '../ca/x509/ocsp-request.js';

/** A certificate's state as OCSP answers it. */
export type CertState =
  | { kind: 'good'; caId: string; profile: string }
  | { kind: 'revoked'; caId: string; profile: string; revokedAt: Date; reason: string }
  /** Never issued by us (or not yet: an intent not signed is unknown too). */
  | { kind: 'unknown' };

/** A signed single-CertID response, ready to send. */
export interface Presigned {
  der: Buffer;
  thisUpdate: Date;
  nextUpdate: Date;
  /** After this (epoch ms) it is still served, but replaced in the background. */
  refreshAt: number;
  etag: string;
  /** The CertID's issuerKeyHash it answers: entries are keyed by serial, and a serial asked under another issuer gets its own answer. */
  issuerKeyHash: Buffer;
}

interface Entry {
  state: CertState;
  /** Epoch ms after which the entry is dropped (unknown serials only: a serial can become issued). */
  expiresAt: number;
  byHash: Partial<Record<CertIdHash, Presigned>>;
}

/**
 * The responder's in-process cache of certificate states and pre-signed responses, keyed by
 * serial (hex). Correctness rests on two rules:
 *  - every change of a certificate's revocation state reaches `forget` (this process after its
 *    commit; other replicas through the database's notifications), and
 *  - a fill writes back only if no `forget` happened since it began reading (`generation`), so a
 *    read that raced a revocation never parks the old state here.
 * While the notification feed is down the cache is `disabled`: every answer comes from the
 * database, which is always right.
 */
export class OcspCache {
  private readonly entries = new Map<string, Entry>();
  private gen = 0;
  private on = true;

  constructor(private readonly maxEntries: number) {}

  get generation(): number {
    return this.gen;
  }

  get enabled(): boolean {
    return this.on;
  }

  get size(): number {
    return this.entries.size;
  }

  get(serial: string, now: number): Entry | undefined {
    if (!this.on) return undefined;
    const e = this.entries.get(serial);
    if (e && e.expiresAt <= now) {
      this.entries.delete(serial);
      return undefined;
    }
    return e;
  }

  /** Records a state (and optionally a response) read when the generation was `since`; ignored if anything was forgotten meanwhile. */
  put(since: number, serial: string, state: CertState, expiresAt: number, presigned?: { hash: CertIdHash; response: Presigned }): void {
    if (!this.on || since !== this.gen) return;
    let e = this.entries.get(serial);
    if (!e || !sameState(e.state, state)) {
      if (!e && this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
      e = { state, expiresAt, byHash: {} };
      this.entries.set(serial, e);
    }
    if (presigned) e.byHash[presigned.hash] = presigned.response;
  }

  forget(serials: readonly string[]): void {
    this.gen++;
    for (const s of serials) this.entries.delete(s);
  }

  clear(): void {
    this.gen++;
    this.entries.clear();
  }

  /** Off while the feed of other replicas' changes is down; back on (empty) once it is up again. */
  setEnabled(on: boolean): void {
    this.clear();
    this.on = on;
  }
}

function sameState(a: CertState, b: CertState): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'revoked' && b.kind === 'revoked') return a.reason === b.reason && a.revokedAt.getTime() === b.revokedAt.getTime();
  return true;
}
