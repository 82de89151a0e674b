import type { ActorContext, CaHierarchy } from '../ca/hierarchy.js';
import type { Issuance, IssueRequest } from '../ca/issuance.js';
import type { ProfileName } from '../ca/profiles.js';
import { parseCsr } from '../ca/x509/inspect.js';
import { fromPemAll, toPem } from '../ca/x509/pem.js';
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
    const der = fromPemAll(input.csr, 'CERTIFICATE REQUEST')[0] ?? fromPemAll(input.csr, 'NEW CERTIFICATE REQUEST')[0];
    if (!der) throw new DomainError('BadCsr', 'csr must be a PEM "CERTIFICATE REQUEST"');
    const csr = await parseCsr(der);
    if (!csr.signatureValid) throw new DomainError('BadCsr', 'the CSR signature does not verify (no proof of possession)');
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
