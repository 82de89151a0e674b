/**
 * The CRL shard a new end-entity certificate is assigned (#29 item 3, as Boulder shards CRLs): 0
 * when the CA is not sharded (its one CRL), else 1..shards, taken from the serial's last four
 * octets (serials are random, so shards fill evenly). Recorded with the certificate, so a later
 * change of the shard count never moves an issued certificate to another CRL.
 */
export function crlShardFor(serial: Uint8Array, shards: number): number {
  if (shards <= 0) return 0;
  const n = serial.length;
  const tail = ((serial[n - 4] ?? 0) * 0x1000000 + ((serial[n - 3] ?? 0) << 16) + ((serial[n - 2] ?? 0) << 8) + (serial[n - 1] ?? 0)) >>> 0;
  return 1 + (tail % shards);
}
