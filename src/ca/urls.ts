/** The public URLs every issued certificate points at; all built from PUBLIC_URL. */
export class PkiUrls {
  constructor(private readonly publicUrl: string) {}
  ocsp(): string {
    return `${this.publicUrl}/pki/ocsp`;
  }
  caCertificate(caId: string): string {
    return `${this.publicUrl}/pki/ca/${caId}.crt`;
  }
  /** A CA's CRL (shard 0), or one of its CRL shards. */
  crl(caId: string, shard = 0): string {
    return shard === 0 ? `${this.publicUrl}/pki/crl/${caId}.crl` : `${this.publicUrl}/pki/crl/${caId}/${shard}.crl`;
  }
  /** Where the delta CRLs of a CA's CRL (or shard) are published (named by its full CRLs' Freshest CRL extension). */
  deltaCrl(caId: string, shard = 0): string {
    return shard === 0 ? `${this.publicUrl}/pki/crl/${caId}-delta.crl` : `${this.publicUrl}/pki/crl/${caId}/${shard}-delta.crl`;
  }
}
