import type { ParsedCsr } from '../ca/x509/csr.js';
import { DomainError } from '../shared/errors.js';
import type { EnrollmentTokens } from './tokens.js';
import { type Authorization, type Credential, type EnrollmentContext, type EnrollmentMethod, type PolicyStep } from './methods.js';
import { brokerIdentity, deviceIdentity, noSmuggledExtensions } from './policy.js';

const forbidden = (msg: string, details?: Record<string, unknown>) => new DomainError('Forbidden', msg, details);

/**
 * Enrollment with an enrollment token: a device token (that device), a lot token (any device of the
 * lot, each once, named by the CSR's CN) or a broker token (that broker, its allowed names).
 * `bearer` takes the token from `Authorization: Bearer`; `est-basic` from HTTP Basic's password
 * (RFC 7030 §3.2.3), the username naming the device for lot tokens, and only over TLS unless
 * `basicOverHttp` (EST_BASIC_OVER_HTTP: a TLS-terminating proxy in front) allows plain HTTP.
 */
export class TokenEnrollment implements EnrollmentMethod {
  constructor(
    readonly name: 'token' | 'est-basic',
    private readonly tokens: EnrollmentTokens,
    private readonly opts: { basicOverHttp?: boolean } = {},
  ) {}

  accepts(c: Credential): boolean {
    return this.name === 'token' ? c.kind === 'bearer' : c.kind === 'basic';
  }

  async authorize(c: Credential, csr: ParsedCsr, _ctx: EnrollmentContext): Promise<Authorization> {
    if (c.kind === 'basic' && !c.overTls && !this.opts.basicOverHttp) {
      throw forbidden(
        'EST with HTTP Basic sends the enrollment token in clear: RFC 7030 (3.2.3) requires TLS. Use the TLS listener (TLS_PORT), or set EST_BASIC_OVER_HTTP=true when a TLS-terminating proxy is in front',
      );
    }
    const presented = c.kind === 'bearer' ? c.value : c.kind === 'basic' ? c.password : '';
    const auth = await this.tokens.authenticate(presented);
    if (!auth.ok) {
      // A token that does not exist (or cannot): what guessing looks like, counted apart from spent or expired ones.
      const guess = auth.reason === 'unknown' || auth.reason === 'malformed';
      throw new DomainError(
        'Unauthenticated',
        `the enrollment token is not valid (${auth.reason})`,
        guess ? { refusal: 'token-invalid' } : undefined,
      );
    }
    const token = auth.token;
    const named = csr.commonName ?? (c.kind === 'basic' && c.user ? c.user : undefined);
    if (!token.deviceId && !named) throw forbidden("a lot token enrolls the device named by the CSR's common name; the CSR has none");
    const deviceId = token.deviceId ?? named!;

    const steps: PolicyStep[] = [noSmuggledExtensions];
    if (token.profile === 'broker') {
      if (!token.allowedNames) throw forbidden('this broker token names no DNS names or IP addresses');
      steps.push(brokerIdentity(token.allowedNames));
    } else {
      steps.push(deviceIdentity);
    }
    return {
      method: this.name,
      // Idempotency-Keys need only be unique per device: a lot token's devices share the token.
      scope: `token:${token.id}:${deviceId}`,
      actor: `enrollment-token:${token.id}`,
      subject: deviceId,
      draft: { profile: token.profile === 'broker' ? 'broker' : 'device', deviceId },
      steps,
      claimsSubject: () => this.tokens.claims(token.id, deviceId),
      spend: () => this.tokens.consume(token, deviceId),
      refund: () => this.tokens.refund(token.id, deviceId),
    };
  }
}
