/** The public URLs every issued certificate points at; all built from PUBLIC_URL. */
export class PkiUrls {
  constructor(private readonly publicUrl: string) {}
  ocsp(): string {
    return `${this.publicUrl}/pki/ocsp`;
  }
  caCertificate(caId: string): string {
    return `${this.publicUrl}/pki/ca/${caId}.crt`;
  }
  crl(caId: string): string {
    return `${this.publicUrl}/pki/crl/${caId}.crl`;
  }
  /** Where the CA's delta CRLs are published (named by its full CRLs' Freshest CRL extension). */
  deltaCrl(caId: string): string {
    return `${this.publicUrl}/pki/crl/${caId}-delta.crl`;
  }
}
