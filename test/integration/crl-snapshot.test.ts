// CRLs published while revocations and releases commit around them: every full CRL is exactly the
// revocation state at the clock value it covers, and every delta exactly the changes between its
// base's value and its own. Pins the revocation clock (one row, handed out in commit order) and
// the one-statement snapshot the publisher reads.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { bootstrap } from '../../src/bootstrap.js';
import { CrlPublisher, type PublishedPair } from '../../src/revoke/crl-publisher.js';
import { CrlStore } from '../../src/store/crl-store.js';
import { PkiUrls } from '../../src/ca/urls.js';
import type { Service } from '../../src/main.js';
import type { Serial } from '../../src/shared/ids.js';

const x509 = await import('@peculiar/x509');
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** serial (hex) → reason ('' for removeFromCRL) of a CRL's entries. */
function entries(der: Buffer): Map<string, number | undefined> {
  return new Map(new x509.X509Crl(der).entries.map((e) => [e.serialNumber.toLowerCase().replace(/^0+/, ''), e.reason]));
}

for (const target of dbTargets) {
  describe(`CRL snapshots on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let caId: string;
    const ctx = { actor: 'test' };

    before(async () => {
      svc = await makeService(target);
      caId = (await bootstrap(svc)).issuingId!;
    });
    after(async () => svc?.dispose());

    it('full and delta CRLs published amid concurrent revocations, holds and releases match the state at the clock value they cover', async () => {
      const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
      const certs = await svc.issuance.issueBatch(
        Array.from({ length: 60 }, (_, i) => ({ profile: 'device' as const, deviceId: `snap-${i}`, subjectPublicKeyInfo: spki })),
        ctx,
      );
      const serials = certs.map((c) => c.serial);
      // Rebased publishes (deltaBaseMs 0 every third one) and plain ones, racing the changes.
      const publisher = (deltaBaseMs: number) =>
        new CrlPublisher(
          svc.db,
          new CrlStore(),
          { signingCas: async () => [{ id: caId, scope: 'user', keyAlgorithm: 'EC-P256' }], issuer: (id) => svc.hierarchy.issuer(id) },
          new PkiUrls(svc.config.publicUrl),
          svc.audit,
          svc.clock,
          { validityMs: svc.config.crlValidityMs, refreshBeforeMs: 0, deltaBaseMs },
        );
      const plain = publisher(86_400_000);
      const rebasing = publisher(0);
      // The first base goes in too: a plain publish that commits before the first racing rebase builds on it.
      const pairs: PublishedPair[] = [await rebasing.publish(caId)];
      const changes = serials.map(async (s: Serial, i) => {
        if (i % 3 === 0) {
          await svc.revocations.revoke(s, { reason: 'certificateHold' }, ctx);
          if (i % 2 === 0) await svc.revocations.release(s, ctx);
          else await svc.revocations.revoke(s, { reason: 'keyCompromise' }, ctx);
        } else if (i % 3 === 1) {
          await svc.revocations.revoke(s, { reason: 'superseded' }, ctx);
        }
      });
      const publishes = Array.from({ length: 12 }, async (_, k) => {
        await new Promise((r) => setTimeout(r, k * 15));
        pairs.push(await (k % 3 === 0 ? rebasing : plain).publish(caId));
      });
      await Promise.all([...changes, ...publishes]);
      pairs.push(await plain.publish(caId));

      // Every certificate's history of revocation states, by clock value, as the database holds it now.
      const rows = await svc
        .db('certificates')
        .select('serial', 'status', 'revocation_reason', 'revocation_seq')
        .where({ ca_id: caId, profile: 'device' });
      const now = new Map(
        rows.map((r: { serial: Uint8Array; status: string; revocation_reason: string | null; revocation_seq: string | null }) => [
          Buffer.from(r.serial).toString('hex').replace(/^0+/, ''),
          r,
        ]),
      );
      const bases = new Map<bigint, PublishedPair['full']>();
      for (const p of pairs) if (p.full.isBase) bases.set(p.full.crlNumber, p.full);
      const last = pairs.at(-1)!;

      // The last full CRL covers every change: exactly the certificates revoked now.
      const revokedNow = [...now]
        .filter(([, r]) => r.status === 'revoked')
        .map(([s]) => s)
        .sort();
      assert.deepEqual([...entries(last.full.der).keys()].sort(), revokedNow);
      assert.equal(BigInt(String((await svc.db('revocation_epoch').select('seq').first())!.seq)), last.full.coversSeq);

      for (const p of pairs) {
        const full = entries(p.full.der);
        // No certificate changed after the clock value it covers is in a state the CRL does not show, and vice versa,
        // as far as the final state tells: those whose last change is covered must appear exactly as they are now.
        for (const [s, r] of now) {
          if (r.revocation_seq === null || BigInt(r.revocation_seq) > p.full.coversSeq!) continue;
          assert.equal(
            full.has(s),
            r.status === 'revoked',
            `CRL ${p.full.crlNumber}: ${s} is ${r.status} since ${r.revocation_seq}, covered by ${p.full.coversSeq}`,
          );
        }
        // The delta holds exactly the certificates whose last change falls between its base and itself.
        const base: PublishedPair['full'] | undefined = bases.get(p.delta.baseNumber!) ?? (p.full.isBase ? p.full : undefined);
        assert.ok(base, `the base ${p.delta.baseNumber} of delta ${p.delta.crlNumber} was published in this test`);
        const delta = entries(p.delta.der);
        for (const [s, r] of now) {
          const seq = r.revocation_seq === null ? null : BigInt(r.revocation_seq);
          if (seq === null || seq > p.delta.coversSeq!) continue;
          const changedSinceBase: boolean = seq > base.coversSeq!;
          assert.equal(
            delta.has(s),
            changedSinceBase,
            `delta ${p.delta.crlNumber} (base ${base.crlNumber} at ${base.coversSeq}): ${s} last changed at ${seq}`,
          );
          if (changedSinceBase) assert.equal(delta.get(s) === x509.X509CrlReason.removeFromCRL, r.status === 'issued');
        }
        assert.equal(p.delta.coversSeq, p.full.coversSeq);
      }
    });
  });
}
