import type { ActorContext, CaHierarchy } from '../ca/hierarchy.js';
import type { Issuance, IssueRequest } from '../ca/issuance.js';
import type { ProfileName } from '../ca/profiles.js';
import { CsrError, csrFromBody, parseCsrDer, verifyCsr, type ParsedCsr } from '../ca/x509/csr.js';
import { toPem } from '../ca/x509/pem.js';
import { DomainError } from '../shared/errors.js';

export interface CsrIssueInput {
  profile: ProfileName;
  csr: string;
  caId?: string | undefined;
  deviceId?: string | undefined;
  commonName?: string | undefined;
  dnsNames?: string[] | undefined;
  ipAddresses?: string[] | undefined;
  validityDays?: number | undefined;
}

export interface IssuedWithChain {
  serial: string;
  certificate: string;
  chain: string[];
  caId: string;
  notBefore: string;
  notAfter: string;
}

/**
 * Issuance by an operator or provisioner holding an API key: the CSR proves possession of the key,
 * and only the key is taken from it; the names come from the request, checked by the profile.
 */
export class OperatorIssuance {
  constructor(
    private readonly issuance: Issuance,
    private readonly hierarchy: CaHierarchy,
  ) {}

  async issueFromCsr(input: CsrIssueInput, ctx: ActorContext): Promise<IssuedWithChain> {
    let csr: ParsedCsr;
    try {
      csr = parseCsrDer(csrFromBody(input.csr));
    } catch (e) {
      if (e instanceof CsrError) throw new DomainError('BadCsr', e.message);
      throw e;
    }
    if (!verifyCsr(csr)) throw new DomainError('BadCsr', 'the CSR signature does not verify (no proof of possession)');
    const req: IssueRequest = {
      profile: input.profile,
      caId: input.caId,
      subjectPublicKeyInfo: csr.spki,
      deviceId: input.deviceId,
      commonName: input.commonName,
      dnsNames: input.dnsNames,
      ipAddresses: input.ipAddresses,
      validityDays: input.validityDays,
    };
    const issued = await this.issuance.issue(req, ctx);
    const chain = await this.hierarchy.chain(issued.caId);
    return {
      serial: issued.serial,
      certificate: toPem(issued.der),
      chain: chain.map((d) => toPem(d)),
      caId: issued.caId,
      notBefore: issued.notBefore.toISOString(),
      notAfter: issued.notAfter.toISOString(),
    };
  }
}
