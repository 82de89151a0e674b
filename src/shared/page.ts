import { badRequest } from './errors.js';

/** One page of a list; `nextCursor` is null on the last page. */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** Cursors are opaque to clients: where a list stopped, as text, in base64url. */
export const encodeCursor = (text: string): string => Buffer.from(text, 'utf8').toString('base64url');

/** A cursor's text, unchecked: each list checks the shape it wrote. */
export const cursorText = (cursor: string): string => Buffer.from(cursor, 'base64url').toString('utf8');

/** Whether `cursor` is the one encodeCursor writes for `text`, not another spelling of the same bytes. */
export const isCanonicalCursor = (cursor: string, text: string): boolean => encodeCursor(text) === cursor;

/** `<ISO time>|<id>`: where a list ordered by time, then id, stopped. */
export const timeIdCursor = (at: Date, id: string): string => encodeCursor(`${at.toISOString()}|${id}`);

/**
 * Reads a timeIdCursor leniently, as the certificate, incident and token lists always have: the text
 * before the first `|` is the time, the text up to the next `|` the id. Stricter lists check the
 * text themselves (cursorText, isCanonicalCursor).
 */
export function readTimeIdCursor(cursor: string): { at: Date; id: string } {
  const [text, id] = cursorText(cursor).split('|');
  const at = new Date(text ?? '');
  if (!id || Number.isNaN(at.getTime())) throw badRequest('the cursor is not valid');
  return { at, id };
}
