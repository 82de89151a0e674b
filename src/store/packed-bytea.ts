/**
 * Byte strings as one binary parameter, their concatenation, and their lengths (-1 for NULL), for
 * SQL's `bytea_split(?::bytea, ?::int[])` (migration 0021) to cut apart: node-postgres would send a
 * bytea[] as hex text, twice the bytes, encoded on the event loop and parsed by the backend.
 */
export function packedBytea(parts: readonly (Uint8Array | null)[]): [Buffer, number[]] {
  const present: Uint8Array[] = [];
  const lengths = parts.map((p) => {
    if (p === null) return -1;
    present.push(p);
    return p.length;
  });
  return [Buffer.concat(present), lengths];
}
