import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, DEVICE_STATUSES, type DeviceView, type DeviceStatus, type Page } from '../api.js';
import { listQuery, listUrl } from '../filtered-list.js';
import { navigate, onLink } from '../router.js';

/** The list's filters, named as GET /v1/devices names them; they live in the URL so a view can be shared. */
const FILTERS = ['status', 'kind', 'lot', 'model', 'firmwareVersion', 'site', 'expiringBefore'] as const;
type Filter = (typeof FILTERS)[number];
const PAGE_SIZE = 50;

/** The cursors of the pages before this one, for Previous (the API's cursor only goes forward). */
let previous: { filters: string; cursors: string[] } = { filters: '', cursors: [] };

const filterString = (q: URLSearchParams) => listQuery(FILTERS, q).toString();

const fleetUrl = (filters: string, cursor?: string) => listUrl('/console/', FILTERS, new URLSearchParams(filters), cursor);

const fmt = (iso: string | null) => (iso ? new Date(iso).toISOString().replace('T', ' ').slice(0, 16) + ' UTC' : '—');

/** datetime-local's value (no zone, read as UTC here) ⇄ the API's ISO time. */
const toLocalInput = (iso: string | null) => (iso ? iso.slice(0, 16) : '');
const fromLocalInput = (v: string) => (v ? new Date(`${v}:00Z`).toISOString() : '');

export function Fleet({ query }: { query: URLSearchParams }) {
  const filters = filterString(query);
  const cursor = query.get('cursor') ?? undefined;
  const [page, setPage] = useState<Page<DeviceView>>();
  const [counts, setCounts] = useState<{ byStatus: Record<DeviceStatus, number>; total: number }>();
  const [error, setError] = useState<ApiError>();
  const [loading, setLoading] = useState(true);
  const form = useRef<HTMLFormElement>(null);

  if (previous.filters !== filters) previous = { filters, cursors: [] };

  useEffect(() => {
    let live = true;
    setLoading(true);
    setError(undefined);
    const list = new URLSearchParams(filters);
    list.set('limit', String(PAGE_SIZE));
    if (cursor) list.set('cursor', cursor);
    const countQuery = new URLSearchParams(filters);
    countQuery.delete('status');
    Promise.all([api<Page<DeviceView>>('GET', `/v1/devices?${list}`), api<typeof counts>('GET', `/v1/device-counts?${countQuery}`)])
      .then(([p, c]) => {
        if (!live) return;
        setPage(p);
        setCounts(c);
      })
      .catch((e) => live && setError(e instanceof ApiError ? e : new ApiError(0, 'The service did not answer', '', {})))
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
  }, [filters, cursor]);

  const apply = (e: Event) => {
    e.preventDefault();
    const data = new FormData(form.current!);
    const q = new URLSearchParams();
    for (const k of FILTERS) {
      let v = String(data.get(k) ?? '').trim();
      if (k === 'expiringBefore') v = fromLocalInput(v);
      if (v) q.set(k, v);
    }
    navigate(fleetUrl(q.toString()));
  };

  const next = () => {
    if (!page?.nextCursor) return;
    previous.cursors.push(cursor ?? '');
    navigate(fleetUrl(filters, page.nextCursor));
  };
  const prev = () => {
    const c = previous.cursors.pop();
    navigate(fleetUrl(filters, c || undefined));
  };
  const statusFilter = (s: DeviceStatus | '') => {
    const q = new URLSearchParams(filters);
    if (s) q.set('status', s);
    else q.delete('status');
    return fleetUrl(q.toString());
  };
  const v = (k: Filter) => query.get(k) ?? '';

  return (
    <section aria-labelledby="fleet-title">
      <h1 id="fleet-title">Fleet</h1>
      <form ref={form} class="filters" onSubmit={apply} aria-label="Filter devices" key={filters}>
        <div class="field">
          <label for="f-status">Status</label>
          <select id="f-status" name="status" value={v('status')}>
            <option value="">any</option>
            {DEVICE_STATUSES.map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="f-kind">Kind</label>
          <select id="f-kind" name="kind" value={v('kind')}>
            <option value="">any</option>
            <option value="client">client</option>
            <option value="broker">broker</option>
          </select>
        </div>
        {(
          [
            ['lot', 'Lot'],
            ['model', 'Model'],
            ['firmwareVersion', 'Firmware'],
            ['site', 'Site'],
          ] as const
        ).map(([k, label]) => (
          <div class="field">
            <label for={`f-${k}`}>{label}</label>
            <input id={`f-${k}`} name={k} value={v(k)} maxLength={128} autocomplete="off" />
          </div>
        ))}
        <div class="field">
          <label for="f-expiring">Certificate ends before (UTC)</label>
          <input id="f-expiring" name="expiringBefore" type="datetime-local" value={toLocalInput(v('expiringBefore') || null)} />
        </div>
        <div class="actions">
          <button type="submit">Apply filters</button>
          <a href="/console/" onClick={(e) => onLink(e, '/console/')}>
            Clear
          </a>
        </div>
      </form>

      {counts && (
        <nav aria-label="Devices by status" class="counts">
          <ul>
            <li>
              <a href={statusFilter('')} onClick={(e) => onLink(e, statusFilter(''))} aria-current={v('status') ? undefined : 'true'}>
                all <span class="n">{counts.total}</span>
              </a>
            </li>
            {DEVICE_STATUSES.map((s) => (
              <li>
                <a
                  href={statusFilter(s)}
                  onClick={(e) => onLink(e, statusFilter(s))}
                  aria-current={v('status') === s ? 'true' : undefined}
                  data-status={s}
                >
                  {s} <span class="n">{counts.byStatus[s]}</span>
                </a>
              </li>
            ))}
          </ul>
        </nav>
      )}

      {error && (
        <p class="error" role="alert">
          {error.title}
          {error.detail ? `: ${error.detail}` : ''}
        </p>
      )}
      <div aria-live="polite" aria-busy={loading ? 'true' : 'false'}>
        {page && (
          <table class="devices">
            <caption>
              {page.items.length === 0
                ? 'No devices match.'
                : `Devices ${previous.cursors.length * PAGE_SIZE + 1}–${previous.cursors.length * PAGE_SIZE + page.items.length}`}
            </caption>
            <thead>
              <tr>
                <th scope="col">Device</th>
                <th scope="col">Status</th>
                <th scope="col">Kind</th>
                <th scope="col">Model</th>
                <th scope="col">Firmware</th>
                <th scope="col">Site</th>
                <th scope="col">Lot</th>
                <th scope="col">Certificate ends</th>
              </tr>
            </thead>
            <tbody>
              {page.items.map((d) => {
                const href = `/console/devices/${encodeURIComponent(d.id)}`;
                return (
                  <tr key={d.id}>
                    <th scope="row">
                      <a href={href} onClick={(e) => onLink(e, href)}>
                        {d.id}
                      </a>
                    </th>
                    <td>
                      <span class={`status status-${d.status}`}>{d.status}</span>
                    </td>
                    <td>{d.kind}</td>
                    <td>{d.model ?? '—'}</td>
                    <td>{d.firmwareVersion ?? '—'}</td>
                    <td>{d.site ?? '—'}</td>
                    <td>{d.lot ?? '—'}</td>
                    <td>{fmt(d.currentNotAfter)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </div>
      <nav aria-label="Pages" class="pager">
        <button type="button" onClick={prev} disabled={!cursor}>
          Previous page
        </button>
        <button type="button" onClick={next} disabled={!page?.nextCursor}>
          Next page
        </button>
      </nav>
    </section>
  );
}
