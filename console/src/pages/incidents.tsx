import type { JSX } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, can, fmtTime, INCIDENT_KINDS, Intent, reasonOf, type Incident, type Page, type Role } from '../api.js';
import { CursorPager } from '../filtered-list.js';
import { navigate, onLink } from '../router.js';

const incidentsUrl = (status: string, cursor?: string) => {
  const q = new URLSearchParams();
  if (status) q.set('status', status);
  if (cursor) q.set('cursor', cursor);
  const s = q.toString();
  return s ? `/console/incidents?${s}` : '/console/incidents';
};

/** A list field's value: ids separated by commas, spaces or new lines. */
export const splitIds = (v: string) =>
  v
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);

/** Incidents, newest first, open ones by default (the filter lives in the URL); admins and operators open one here. */
export function Incidents({ query, role }: { query: URLSearchParams; role: Role }) {
  const status = query.get('status') ?? 'open';
  const cursor = query.get('cursor') ?? undefined;
  const [page, setPage] = useState<Page<Incident>>();
  const [error, setError] = useState<string>();

  useEffect(() => {
    let live = true;
    setError(undefined);
    const q = new URLSearchParams({ limit: '50' });
    if (status !== 'any') q.set('status', status);
    if (cursor) q.set('cursor', cursor);
    api<Page<Incident>>('GET', `/v1/incidents?${q}`)
      .then((p) => live && setPage(p))
      .catch((e) => live && setError(reasonOf(e)));
    return () => {
      live = false;
    };
  }, [status, cursor]);

  return (
    <section aria-labelledby="incidents-title">
      <h1 id="incidents-title">Incidents</h1>
      {can.actInIncidents(role) && <OpenIncident />}
      <form
        class="filters"
        aria-label="Filter incidents"
        onSubmit={(e) => {
          e.preventDefault();
          const v = new FormData(e.currentTarget as HTMLFormElement).get('status');
          navigate(incidentsUrl(String(v ?? 'open')));
        }}
        key={status}
      >
        <div class="field">
          <label for="i-status">Show</label>
          <select id="i-status" name="status" value={status}>
            <option value="open">open</option>
            <option value="closed">closed</option>
            <option value="any">any</option>
          </select>
        </div>
        <button type="submit">Show incidents</button>
      </form>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {page && (
        <table class="incidents">
          <caption>
            {page.items.length === 0
              ? `No ${status === 'any' ? '' : `${status} `}incidents.`
              : `${status === 'any' ? 'All' : status} incidents, newest first`}
          </caption>
          <thead>
            <tr>
              <th scope="col">Incident</th>
              <th scope="col">Title</th>
              <th scope="col">Kind</th>
              <th scope="col">Status</th>
              <th scope="col">Opened</th>
              <th scope="col">Targets</th>
            </tr>
          </thead>
          <tbody>
            {page.items.map((i) => {
              const href = `/console/incidents/${encodeURIComponent(i.id)}`;
              const t = i.targets;
              return (
                <tr key={i.id}>
                  <th scope="row">
                    <a href={href} onClick={(e) => onLink(e, href)}>
                      {i.id}
                    </a>
                  </th>
                  <td>{i.title}</td>
                  <td>{i.kind}</td>
                  <td>
                    <span class={`status status-${i.status}`}>{i.status}</span>
                  </td>
                  <td>
                    {fmtTime(i.openedAt)} by {i.openedBy}
                  </td>
                  <td>
                    {[
                      t.devices.length ? `${t.devices.length} device${t.devices.length === 1 ? '' : 's'}` : '',
                      t.lots.length ? `lots ${t.lots.join(', ')}` : '',
                      t.brokers.length ? `${t.brokers.length} broker${t.brokers.length === 1 ? '' : 's'}` : '',
                      t.caId ? `CA ${t.caId}` : '',
                    ]
                      .filter(Boolean)
                      .join('; ') || '—'}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <CursorPager
        first={incidentsUrl(status)}
        firstLabel="First page"
        onFirst={!cursor}
        next={page?.nextCursor ? incidentsUrl(status, page.nextCursor) : undefined}
        nextLabel="Next page"
      />
    </section>
  );
}

const OPEN_FIELDS = ['kind', 'title', 'description', 'devices', 'lots', 'brokers', 'caId'] as const;
type OpenField = (typeof OPEN_FIELDS)[number] | 'form';

/** Where a refusal of POST /v1/incidents belongs: the field its errors[].path names, else the one its detail speaks of. */
export function openErrors(e: ApiError): Partial<Record<OpenField, string>> {
  const out: Partial<Record<OpenField, string>> = {};
  for (const f of OPEN_FIELDS) if (e.fields[f]) out[f] = e.fields[f];
  if (Object.keys(out).length) return out;
  const d = e.detail;
  const field: OpenField = /^kind /.test(d)
    ? 'kind'
    : /^not brokers|names its brokers/.test(d)
      ? 'brokers'
      : /^no devices in lot/.test(d)
        ? 'lots'
        : /^unknown targets|devices and brokers|needs targets/.test(d)
          ? 'devices'
          : /^no CA |targets\.caId/.test(d)
            ? 'caId'
            : 'form';
  out[field] = d || e.title;
  return out;
}

/** The "Open incident" form: kind, title, description and targets; each refusal beside its field. */
function OpenIncident() {
  const [errors, setErrors] = useState<Partial<Record<OpenField, string>>>({});
  const [busy, setBusy] = useState(false);
  const inFlight = useRef(false);
  const intent = useRef(new Intent()).current; // the Idempotency-Key of this incident's opening, until it is open

  const submit = async (e: Event) => {
    e.preventDefault();
    if (inFlight.current) return; // a double click opens one incident
    const data = new FormData(e.currentTarget as HTMLFormElement);
    const text = (k: string) => String(data.get(k) ?? '').trim();
    const targets: Record<string, unknown> = {};
    for (const k of ['devices', 'lots', 'brokers'] as const) {
      const ids = splitIds(text(k));
      if (ids.length) targets[k] = ids;
    }
    if (text('caId')) targets.caId = text('caId');
    const body = {
      kind: text('kind'),
      title: text('title'),
      ...(text('description') ? { description: text('description') } : {}),
      targets,
    };
    inFlight.current = true;
    setBusy(true);
    setErrors({});
    try {
      const incident = await api<Incident>('POST', '/v1/incidents', body, 'application/json', intent);
      navigate(`/console/incidents/${encodeURIComponent(incident.id)}`);
    } catch (err) {
      setErrors(err instanceof ApiError ? openErrors(err) : { form: reasonOf(err) });
    } finally {
      inFlight.current = false;
      setBusy(false);
    }
  };

  const field = (k: OpenField, label: string, input: JSX.Element, help?: string) => (
    <div class="field">
      <label for={`oi-${k}`}>{label}</label>
      {input}
      {help && (
        <span class="help" id={`oi-${k}-help`}>
          {help}
        </span>
      )}
      {errors[k] && (
        <span id={`oi-${k}-error`} class="error field-error" role="alert">
          {errors[k]}
        </span>
      )}
    </div>
  );
  const described = (k: OpenField, help?: boolean) =>
    [help ? `oi-${k}-help` : '', errors[k] ? `oi-${k}-error` : ''].filter(Boolean).join(' ') || undefined;

  return (
    <details class="open-incident">
      <summary>Open incident</summary>
      <form onSubmit={submit} class="inventory" aria-label="Open incident" noValidate>
        {field(
          'kind',
          'Kind',
          <select id="oi-kind" name="kind" aria-invalid={errors.kind ? 'true' : undefined} aria-describedby={described('kind')}>
            {INCIDENT_KINDS.map((k) => (
              <option value={k}>{k}</option>
            ))}
          </select>,
        )}
        {field(
          'title',
          'Title',
          <input
            id="oi-title"
            name="title"
            maxLength={200}
            aria-invalid={errors.title ? 'true' : undefined}
            aria-describedby={described('title')}
          />,
        )}
        {field(
          'description',
          'Description',
          <textarea
            id="oi-description"
            name="description"
            rows={2}
            aria-invalid={errors.description ? 'true' : undefined}
            aria-describedby={described('description')}
          />,
        )}
        {field(
          'devices',
          'Devices',
          <textarea
            id="oi-devices"
            name="devices"
            rows={2}
            aria-invalid={errors.devices ? 'true' : undefined}
            aria-describedby={described('devices', true)}
          />,
          'ids, separated by commas or spaces',
        )}
        {field(
          'lots',
          'Lots',
          <input id="oi-lots" name="lots" aria-invalid={errors.lots ? 'true' : undefined} aria-describedby={described('lots', true)} />,
          'lot names, separated by commas',
        )}
        {field(
          'brokers',
          'Brokers',
          <input
            id="oi-brokers"
            name="brokers"
            aria-invalid={errors.brokers ? 'true' : undefined}
            aria-describedby={described('brokers', true)}
          />,
          'broker device ids',
        )}
        {field(
          'caId',
          'CA',
          <input
            id="oi-caId"
            name="caId"
            maxLength={64}
            aria-invalid={errors.caId ? 'true' : undefined}
            aria-describedby={described('caId', true)}
          />,
          'ca-compromise: the CA id',
        )}
        {errors.form && (
          <p class="error" role="alert">
            {errors.form}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {busy ? 'Opening…' : 'Open incident'}
        </button>
      </form>
    </details>
  );
}
