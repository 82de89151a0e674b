import { createHash } from 'node:crypto';
import type { CaHierarchy } from '../ca/hierarchy.js';
import type { Issuance } from '../ca/issuance.js';
import { CsrError, csrFromBody, parseCsrDer, verifyCsr, type ParsedCsr } from '../ca/x509/csr.js';
import { toPem } from '../ca/x509/pem.js';
import type { SourceGuard } from '../detect/source-blocks.js';
import type { RateLimits } from '../detect/rate-limits.js';
import type { SecurityEvents } from '../detect/security-events.js';
import { DomainError } from '../shared/errors.js';
import { serialFromBytes } from '../shared/ids.js';
import type { Idempotency } from './idempotency.js';
import type { AbandonedAttempts } from './abandoned-attempts.js';
import type { ReservedIdentities } from './reserved-identities.js';
import type { Authorization, Credential, EnrollmentContext, EnrollmentMethod, IssuerRouting } from './methods.js';
import { runSteps } from './policy.js';

export interface EnrollResult {
  serial: string;
  certificate: string;
  chain: string[];
  caId: string;
  notBefore: string;
  notAfter: string;
}

export interface EnrollInput {
  credential: Credential | undefined;
  csr: Buffer | string;
  idempotencyKey?: string | undefined;
  ctx: EnrollmentContext;
  /** An EST label (or a route) that only enrolls this profile. */
  expectedProfile?: 'device' | 'broker' | undefined;
  /** Only these methods may authorize (e.g. simplereenroll: renewal by client certificate). */
  methods?: string[] | undefined;
}

/**
 * Registration's enrollment flow, the same for every method: parse the CSR → the method checks
 * the credential → policy steps → (idempotency) → spend the credential and check the proof of
 * possession while the intent is recorded → sign → record → the certificate and its chain.
 * Every refusal is a security event. A source over its enrollment rate is refused at once; one
 * the detection rules have blocked is refused unless its request carries a valid credential.
 */
export class Enrollment {
  private readonly chainPems = new Map<string, string[]>();

  constructor(
    private readonly methods: EnrollmentMethod[],
    private readonly issuance: Issuance,
    private readonly hierarchy: CaHierarchy,
    private readonly idempotency: Idempotency,
    private readonly events: SecurityEvents,
    private readonly sources: SourceGuard,
    private readonly limits: RateLimits,
    private readonly abandoned: AbandonedAttempts,
    /** The service's own names: no certificate asked for here may carry one. */
    private readonly reserved: ReservedIdentities,
    /** Set by the composition root: renewals of a rolled-over CA's certificates go to its successor. */
    private readonly routing?: IssuerRouting,
  ) {}

  async enroll(input: EnrollInput): Promise<{ result: EnrollResult; replayed: boolean; method: string }> {
    const { ctx } = input;
    const slow = await this.limits.check('enroll-source', ctx.source);
    if (slow > 0)
      throw new DomainError('RateLimited', `too many enrollments from this address; retry in ${slow} s`, { retryAfterSeconds: slow });
    let auth: Authorization | undefined;
    let method = 'none';
    try {
      const csr = parse(input.csr);
      const credential = input.credential;
      const m = credential && this.methods.find((x) => x.accepts(credential) && (!input.methods || input.methods.includes(x.name)));
      if (!credential || !m)
        throw new DomainError('Unauthenticated', 'an enrollment credential is required (Authorization: Bearer <enrollment token>)');
      method = m.name;
      auth = await m.authorize(credential, csr, ctx);
      // Proof of possession is checked on a worker while the rest goes on; nothing is signed before it holds.
      const possession = verifyCsr(csr).then((ok) => {
        if (!ok) throw new DomainError('BadCsr', 'the CSR signature does not verify (no proof of possession)');
      });
      possession.catch(() => undefined); // awaited below, or by issuance; a policy refusal may come first
      const draft = auth.draft;
      if (input.expectedProfile && draft.profile !== input.expectedProfile) {
        throw new DomainError(
          'Forbidden',
          `this endpoint enrolls ${input.expectedProfile} certificates; the credential is for a ${draft.profile}`,
        );
      }
      await runSteps(auth.steps, draft, csr);
      const request = {
        profile: draft.profile,
        deviceId: draft.deviceId,
        commonName: draft.commonName,
        dnsNames: draft.dnsNames,
        ipAddresses: draft.ipAddresses,
        renews: draft.renews,
        caId: this.routing ? await this.routing.issuerFor(draft) : draft.caId,
        validityDays: draft.validityDays,
        mustStaple: draft.mustStaple,
        subjectPublicKeyInfo: csr.spki,
      };
      this.issuance.validate(request); // key policy and names, before anything is spent
      this.reserved.refuse([request.deviceId, request.commonName, ...(request.dnsNames ?? [])], 'certificate');
      if (request.caId) await this.hierarchy.assertIssuesLeaves(request.caId, request.profile);

      const granted = auth;
      const actor = { actor: granted.actor, requestId: ctx.requestId };
      const work = async () => {
        // The credential is spent, and the proof of possession checked, while the intent is
        // recorded: nothing is signed unless both hold (a use spent for a CSR that fails is refunded).
        const spend = granted.spend();
        const spent = spend.then(
          () => true,
          () => false,
        );
        const registration = Promise.all([possession, spend]).then(([, s]) => s);
        try {
          return await this.result(await this.issuance.issue(request, actor, { registration }));
        } catch (e) {
          if (await spent) await granted.refund();
          throw e;
        }
      };
      // A first attempt under this key died with its process: its certificate, if it was
      // recorded, is this answer; else what it left is settled and the request runs anew.
      const recover = async (claimedAt: Date): Promise<EnrollResult | undefined> => {
        const deviceId = request.deviceId;
        if (!deviceId) return undefined;
        const recorded = await this.abandoned.recordedSince(deviceId, claimedAt, createHash('sha256').update(csr.spki).digest());
        if (recorded?.der)
          return this.result({
            serial: serialFromBytes(recorded.serial),
            der: recorded.der,
            caId: recorded.caId,
            notBefore: recorded.notBefore,
            notAfter: recorded.notAfter,
          });
        await this.abandoned.close(deviceId, { actor: 'system:recovery', requestId: ctx.requestId });
        // Its token use paid for nothing, unless another request's certificate came of it.
        if (!(await this.abandoned.recordedSince(deviceId, claimedAt))) await granted.refund();
        return undefined;
      };
      const { response, replayed } = await this.idempotency.run(granted.scope, input.idempotencyKey, csr.der, 201, work, recover);
      this.sources.succeeded(ctx.source);
      return { result: response, replayed, method };
    } catch (e) {
      // A blocked source is refused only when it brought no valid credential: a device with a
      // valid token or certificate behind the same address (a gateway, a proxy) still gets through.
      const wait = auth ? 0 : this.sources.retryAfter(ctx.source);
      if (wait > 0)
        throw new DomainError('RateLimited', `this address is blocked after repeated failures; retry in ${wait} s`, {
          retryAfterSeconds: wait,
        });
      if (e instanceof DomainError && e.kind !== 'Internal' && e.kind !== 'Unavailable' && e.kind !== 'Conflict') {
        await this.refused(e, method, auth, ctx);
      }
      throw e;
    }
  }

  /** Whom a refusal counts against: the device, while the credential speaks for it; else the credential itself. */
  private async accountable(auth: Authorization): Promise<{ subject: string; details: Record<string, unknown> }> {
    const claims = auth.claimsSubject ? await auth.claimsSubject().catch(() => false) : true;
    return claims ? { subject: auth.subject, details: {} } : { subject: auth.actor, details: { deviceId: auth.subject } };
  }

  private async result(c: { serial: string; der: Uint8Array; caId: string; notBefore: Date; notAfter: Date }): Promise<EnrollResult> {
    return {
      serial: c.serial,
      certificate: toPem(c.der),
      chain: await this.chainPem(c.caId),
      caId: c.caId,
      notBefore: c.notBefore.toISOString(),
      notAfter: c.notAfter.toISOString(),
    };
  }

  /** A CA's chain never changes once it is active (CaHierarchy.chain): its PEM is made once. */
  private async chainPem(caId: string): Promise<string[]> {
    let pem = this.chainPems.get(caId);
    if (!pem) {
      pem = (await this.hierarchy.chain(caId)).map((d) => toPem(d));
      if (pem.length) this.chainPems.set(caId, pem);
    }
    return pem;
  }

  /**
   * Every refusal is a security event, of the kind its refusal names (`enrollment.token-invalid`:
   * a token that does not exist; `enrollment.unknown-identity`: a name not in the inventory) or
   * else `enrollment.refused`; the detection rules count them per source and per subject.
   * Operators are authenticated by API key before they get here: their refusals are
   * `issuance.refused`, recorded but not counted against an address.
   */
  private async refused(e: DomainError, method: string, auth: Authorization | undefined, ctx: EnrollmentContext): Promise<void> {
    const refusal = typeof e.details?.refusal === 'string' ? e.details.refusal : undefined;
    const against = auth ? await this.accountable(auth) : { subject: undefined, details: {} };
    await this.events.record({
      kind: method === 'operator' ? 'issuance.refused' : `enrollment.${refusal ?? 'refused'}`,
      severity: e.kind === 'Forbidden' || e.kind === 'Unauthenticated' ? 'warning' : 'info',
      source: ctx.source,
      subject: against.subject,
      requestId: ctx.requestId,
      details: { method, reason: e.message, error: e.kind, ...against.details },
    });
  }
}

function parse(body: Buffer | string): ParsedCsr {
  try {
    return parseCsrDer(csrFromBody(body));
  } catch (e) {
    if (e instanceof CsrError) throw new DomainError('BadCsr', e.message);
    throw e;
  }
}
