// The pieces every filtered, cursor-paged list of the console shares (audit, events, incidents,
// fleet): its filters live in the URL, the API refuses a bad one by naming the field, and the
// API's cursor only goes forward.
import { ApiError } from './api.js';
import { onLink } from './router.js';

/** The page's URL at `path` with the filters set in `q` (only `filters`, in their order) and the cursor. */
export function listUrl(path: string, filters: readonly string[], q: URLSearchParams, cursor?: string): string {
  const s = listQuery(filters, q, cursor).toString();
  return s ? `${path}?${s}` : path;
}

/** The filters set in `q` (only `filters`) and the cursor, as a query: the page's URL and the API call share it. */
export function listQuery(filters: readonly string[], q: URLSearchParams, cursor?: string): URLSearchParams {
  const out = new URLSearchParams();
  for (const f of filters) {
    const v = q.get(f);
    if (v) out.set(f, v);
  }
  if (cursor) out.set('cursor', cursor);
  return out;
}

/** The filters a submitted form sets (trimmed, empty ones left out). */
export function formFilters(form: HTMLFormElement, filters: readonly string[]): URLSearchParams {
  const data = new FormData(form);
  const q = new URLSearchParams();
  for (const f of filters) {
    const v = String(data.get(f) ?? '').trim();
    if (v) q.set(f, v);
  }
  return q;
}

/** The API's refusal of a filter, per field it names; empty when it names none (then the error is the page's). */
export function filterErrors<F extends string>(e: unknown, filters: readonly F[]): Partial<Record<F, string>> {
  const out: Partial<Record<F, string>> = {};
  if (e instanceof ApiError) for (const f of filters) if (e.fields[f]) out[f] = e.fields[f];
  return out;
}

/** A text filter: its label, its help and the API's refusal of it tied to the input for assistive technology. */
export function FilterInput(p: { idPrefix: string; name: string; label: string; help?: string; value: string; error?: string }) {
  const id = `${p.idPrefix}-${p.name}`;
  const described = [p.help ? `${id}-help` : '', p.error ? `${id}-error` : ''].filter(Boolean).join(' ');
  return (
    <div class="field">
      <label for={id}>{p.label}</label>
      <input
        id={id}
        name={p.name}
        defaultValue={p.value}
        aria-invalid={p.error ? 'true' : undefined}
        aria-describedby={described || undefined}
      />
      {p.help && (
        <span class="help" id={`${id}-help`}>
          {p.help}
        </span>
      )}
      {p.error && (
        <span id={`${id}-error`} class="error field-error" role="alert">
          {p.error}
        </span>
      )}
    </div>
  );
}

/** Links to the first page (shown when not on it) and to the next one (when there is one). */
export function CursorPager(p: { first: string; firstLabel: string; onFirst: boolean; next?: string | undefined; nextLabel: string }) {
  return (
    <nav aria-label="Pages" class="pager">
      <a href={p.first} onClick={(e) => onLink(e, p.first)} hidden={p.onFirst}>
        {p.firstLabel}
      </a>
      {p.next && (
        <a href={p.next} onClick={(e) => onLink(e, p.next!)}>
          {p.nextLabel}
        </a>
      )}
    </nav>
  );
}
