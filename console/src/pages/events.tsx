import { useEffect, useRef, useState } from 'preact/hooks';
import { api, fmtTime, reasonOf, type Page, type SecurityEvent } from '../api.js';
import { CursorPager, filterErrors, FilterInput, formFilters, listQuery, listUrl } from '../filtered-list.js';
import { navigate } from '../router.js';

/** The filters of GET /v1/events the page offers, as they appear in the URL. */
const FILTERS = ['kind', 'severity', 'subject', 'source', 'since', 'until'] as const;
type Filter = (typeof FILTERS)[number];
/** Live events kept in memory at most; the oldest are dropped past it. */
export const LIVE_CAP = 500;
const RECONNECT_MS = 2000;

const eventsUrl = (q: URLSearchParams, cursor?: string) => listUrl('/console/events', FILTERS, q, cursor);

/** Splits a text/event-stream into its events (`id`, `data`); what is left of an unfinished one is returned as `rest`. */
export function parseSse(buffer: string): { events: { id?: string; data: string }[]; rest: string } {
  const blocks = buffer.replace(/\r\n?/g, '\n').split('\n\n');
  const rest = blocks.pop() ?? '';
  const events: { id?: string; data: string }[] = [];
  for (const block of blocks) {
    let id: string | undefined;
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'id') id = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length) events.push({ id, data: data.join('\n') });
  }
  return { events, rest };
}

type LiveState = 'off' | 'connecting' | 'live' | 'paused' | 'reconnecting';

/**
 * Security events, newest first, filtered as GET /v1/events allows (the filters live in the URL).
 * On the first page, events arrive live from GET /v1/events/stream (the session cookie
 * authenticates it), prepended; Pause closes the stream, Resume reopens it after the newest event
 * shown so that those missed meanwhile arrive first. Leaving the page closes it.
 */
export function Events({ query }: { query: URLSearchParams }) {
  const cursor = query.get('cursor') ?? undefined;
  const key = eventsUrl(query, cursor);
  const [items, setItems] = useState<SecurityEvent[]>();
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<string>();
  const [fieldErrors, setFieldErrors] = useState<Partial<Record<Filter, string>>>({});
  const [paused, setPaused] = useState(false);
  const [reloads, setReloads] = useState(0);
  const [live, setLive] = useState<LiveState>('off');
  const newest = useRef<number | undefined>(undefined);
  // Live updates only on the first page, and not when the view ends at `until`.
  const liveOffered = !cursor && !query.get('until');

  useEffect(() => {
    let on = true;
    setError(undefined);
    setFieldErrors({});
    setItems(undefined);
    newest.current = undefined;
    const q = listQuery(FILTERS, query, cursor);
    q.set('limit', '50');
    api<Page<SecurityEvent>>('GET', `/v1/events?${q}`)
      .then((p) => {
        if (!on) return;
        newest.current = p.items[0]?.id;
        setItems(p.items);
        setNext(p.nextCursor);
      })
      .catch((e) => {
        if (!on) return;
        const out = filterErrors(e, FILTERS);
        if (Object.keys(out).length) setFieldErrors(out);
        else setError(reasonOf(e));
        setItems([]);
      });
    return () => {
      on = false;
    };
  }, [key, reloads]);

  // The live stream: opened once the first page is shown, unless paused; closed on pause, on a filter change and on leave.
  useEffect(() => {
    if (!liveOffered || paused || items === undefined || error || Object.keys(fieldErrors).length) {
      setLive(liveOffered && paused ? 'paused' : 'off');
      return;
    }
    const ctl = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const q = new URLSearchParams();
    for (const f of ['kind', 'severity', 'subject', 'source'] as const) {
      const v = query.get(f);
      if (v) q.set(f, v);
    }
    const connect = async (again: boolean) => {
      setLive(again ? 'reconnecting' : 'connecting');
      const headers: Record<string, string> = { Accept: 'text/event-stream' };
      if (newest.current !== undefined) headers['Last-Event-ID'] = String(newest.current);
      try {
        const qs = q.toString();
        const res = await fetch(`/v1/events/stream${qs ? `?${qs}` : ''}`, { headers, credentials: 'same-origin', signal: ctl.signal });
        if (res.status === 401 || res.status === 403) {
          // The session ended (or the role lost the right): the API client's handling signs out.
          await api('GET', '/v1/events?limit=1').catch(() => undefined);
          setLive('off');
          return;
        }
        if (!res.ok || !res.body) throw new Error(`the event stream answered ${res.status}`);
        setLive('live');
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          const parsed = parseSse(buffer);
          buffer = parsed.rest;
          const arrived: SecurityEvent[] = [];
          for (const e of parsed.events) {
            try {
              arrived.push(JSON.parse(e.data) as SecurityEvent);
            } catch {
              /* not an event: ignored */
            }
          }
          if (arrived.length) {
            newest.current = Math.max(newest.current ?? 0, ...arrived.map((a) => a.id));
            setItems((old) => {
              const seen = new Set((old ?? []).map((o) => o.id));
              const fresh = arrived.filter((a) => !seen.has(a.id)).reverse();
              return [...fresh, ...(old ?? [])].slice(0, LIVE_CAP);
            });
          }
        }
      } catch {
        // A network error or the stream cut: reconnected below unless the page closed it.
      }
      if (ctl.signal.aborted) return;
      // The stream ended (the service restarted, a proxy cut it): reopen after the newest event seen, as EventSource would.
      setLive('reconnecting');
      timer = setTimeout(() => void connect(true), RECONNECT_MS);
    };
    void connect(false);
    return () => {
      ctl.abort();
      if (timer) clearTimeout(timer);
    };
  }, [key, paused, items === undefined, error, liveOffered]);

  const submit = (e: Event) => {
    e.preventDefault();
    navigate(eventsUrl(formFilters(e.currentTarget as HTMLFormElement, FILTERS)));
  };

  const input = (f: Filter, label: string, help?: string) => (
    <FilterInput idPrefix="ev" name={f} label={label} help={help} value={query.get(f) ?? ''} error={fieldErrors[f]} />
  );

  return (
    <section aria-labelledby="events-title">
      <h1 id="events-title">Security events</h1>
      <form class="filters" aria-label="Filter events" onSubmit={submit} key={key}>
        {input('kind', 'Kind', 'one, or several separated by commas')}
        <div class="field">
          <label for="ev-severity">Severity</label>
          <select id="ev-severity" name="severity" value={query.get('severity') ?? ''}>
            <option value="">any</option>
            <option value="info">info and above</option>
            <option value="warning">warning and above</option>
            <option value="critical">critical</option>
          </select>
        </div>
        {input('subject', 'Subject', 'e.g. device:meter-1')}
        {input('source', 'Source')}
        {input('since', 'Since', 'UTC, e.g. 2026-12-07T15:00:00Z')}
        {input('until', 'Until', 'UTC; stops live updates')}
        <button type="submit">Show events</button>
      </form>
      <div class="actions live">
        {liveOffered ? (
          <>
            <button
              type="button"
              aria-pressed={paused}
              onClick={() => {
                // Resuming with nothing shown yet: no event id to resume after, so read the list again first.
                if (paused && newest.current === undefined) setReloads((n) => n + 1);
                setPaused((p) => !p);
              }}
            >
              {paused ? 'Resume live updates' : 'Pause live updates'}
            </button>
            <span role="status" data-testid="live-state" data-state={live}>
              {live === 'live'
                ? 'Live: new events appear at the top.'
                : live === 'paused'
                  ? 'Paused: events that arrive meanwhile are fetched on resume.'
                  : live === 'reconnecting'
                    ? 'The stream was cut: reconnecting…'
                    : live === 'connecting'
                      ? 'Connecting…'
                      : 'Not live.'}
            </span>
          </>
        ) : (
          <span class="help">Live updates are shown on the first page without an end time.</span>
        )}
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {items && (
        <table class="events" data-testid="events">
          <caption>
            {items.length === 0
              ? 'No security events match.'
              : `${items.length} events, newest first${items.length >= LIVE_CAP ? ` (the newest ${LIVE_CAP} kept)` : ''}`}
          </caption>
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Kind</th>
              <th scope="col">Severity</th>
              <th scope="col">Subject</th>
              <th scope="col">Source</th>
              <th scope="col">Details</th>
            </tr>
          </thead>
          <tbody>
            {items.map((ev) => (
              <tr key={ev.id} data-event={ev.id}>
                <td>{fmtTime(ev.at)}</td>
                <td>{ev.kind}</td>
                <td>
                  <span class={`status severity-${ev.severity}`}>{ev.severity}</span>
                </td>
                <td>{ev.subject ?? '—'}</td>
                <td>{ev.source ?? '—'}</td>
                <td>
                  <code>{JSON.stringify(ev.details)}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <CursorPager
        first={eventsUrl(query)}
        firstLabel="Newest events"
        onFirst={!cursor}
        next={next ? eventsUrl(query, next) : undefined}
        nextLabel="Older events"
      />
    </section>
  );
}
