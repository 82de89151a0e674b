import { useEffect, useState } from 'preact/hooks';
import { api, fmtTime, reasonOf, type AuditEntry, type Page } from '../api.js';
import { CursorPager, filterErrors, FilterInput, formFilters, listQuery, listUrl } from '../filtered-list.js';
import { navigate } from '../router.js';

/** The filters of GET /v1/audit, as they appear in the URL. */
const FILTERS = ['action', 'actor', 'targetType', 'targetId', 'since', 'until'] as const;
type Filter = (typeof FILTERS)[number];

/** GET /v1/audit/verification. */
export interface AuditVerification {
  verifiedAt: string;
  ok: boolean;
  chain: {
    ok: boolean;
    checked: number;
    head: { seq: number; hash: string } | null;
    firstBad: { seq: number; problem: string; message: string } | null;
    /** incremental: only the entries after `from` were walked now; the whole chain at `fullVerifiedAt`. */
    mode: 'full' | 'incremental';
    from: number;
    fullVerifiedAt: string;
  };
  anchor: {
    ok: boolean;
    newest: { seq: number; at: string; source: string } | null;
    unanchored: number;
    findings: { source: string; problem: string; message: string }[];
  } | null;
  skipped: string[];
}

const auditUrl = (q: URLSearchParams, cursor?: string) => listUrl('/console/audit', FILTERS, q, cursor);

/** The audit log, newest first, 50 a page by the API's cursor, filtered (in the URL); and the chain's verification. */
export function Audit({ query }: { query: URLSearchParams }) {
  const cursor = query.get('cursor') ?? undefined;
  const key = auditUrl(query, cursor);
  const [page, setPage] = useState<Page<AuditEntry & { hash?: string }>>();
  const [error, setError] = useState<string>();
  const [fieldErrors, setFieldErrors] = useState<Partial<Record<Filter, string>>>({});

  useEffect(() => {
    let on = true;
    setError(undefined);
    setFieldErrors({});
    const q = listQuery(FILTERS, query, cursor);
    q.set('limit', '50');
    api<Page<AuditEntry>>('GET', `/v1/audit?${q}`)
      .then((p) => on && setPage(p))
      .catch((e) => {
        if (!on) return;
        const out = filterErrors(e, FILTERS);
        if (Object.keys(out).length) setFieldErrors(out);
        else setError(reasonOf(e));
        setPage(undefined);
      });
    return () => {
      on = false;
    };
  }, [key]);

  const submit = (e: Event) => {
    e.preventDefault();
    navigate(auditUrl(formFilters(e.currentTarget as HTMLFormElement, FILTERS)));
  };

  const input = (f: Filter, label: string, help?: string) => (
    <FilterInput idPrefix="au" name={f} label={label} help={help} value={query.get(f) ?? ''} error={fieldErrors[f]} />
  );

  return (
    <section aria-labelledby="audit-title">
      <h1 id="audit-title">Audit log</h1>
      <Verification />
      <h2>Entries</h2>
      <form class="filters" aria-label="Filter audit entries" onSubmit={submit} key={key}>
        {input('action', 'Action', 'e.g. certificate.revoked')}
        {input('actor', 'Actor', 'e.g. api-key:ak_…')}
        {input('targetType', 'Target type')}
        {input('targetId', 'Target id')}
        {input('since', 'Since', 'UTC, e.g. 2026-12-07T15:00:00Z')}
        {input('until', 'Until', 'UTC')}
        <button type="submit">Show entries</button>
      </form>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {page && (
        <table class="audit" data-testid="audit">
          <caption>{page.items.length === 0 ? 'No audit entries match.' : 'Audit entries, newest first'}</caption>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">When</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Details</th>
            </tr>
          </thead>
          <tbody>
            {page.items.map((a) => (
              <tr key={a.seq} data-seq={a.seq}>
                <td>{a.seq}</td>
                <td>{fmtTime(a.at)}</td>
                <td>{a.actor}</td>
                <td>{a.action}</td>
                <td>
                  {a.targetType}:{a.targetId}
                </td>
                <td>
                  <code>{JSON.stringify(a.details)}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <CursorPager
        first={auditUrl(query)}
        firstLabel="Newest entries"
        onFirst={!cursor}
        next={page?.nextCursor ? auditUrl(query, page.nextCursor) : undefined}
        nextLabel="Older entries"
      />
    </section>
  );
}

/**
 * The chain's verification (GET /v1/audit/verification): on arrival the service's latest (the
 * entries since its last verification walked, the whole chain at least hourly), rendered beside the
 * entries, which do not wait for it; **Verify again** walks the whole chain.
 */
function Verification() {
  const [v, setV] = useState<AuditVerification>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(true);
  const [runs, setRuns] = useState(0);

  useEffect(() => {
    let on = true;
    setBusy(true);
    api<AuditVerification>('GET', runs > 0 ? '/v1/audit/verification?full=true' : '/v1/audit/verification')
      .then((r) => {
        if (!on) return;
        setV(r);
        setError(undefined);
      })
      .catch((e) => on && setError(reasonOf(e)))
      .finally(() => on && setBusy(false));
    return () => {
      on = false;
    };
  }, [runs]);

  return (
    <section aria-labelledby="verify-title" class="verification" data-testid="audit-verification" data-ok={v ? String(v.ok) : undefined}>
      <h2 id="verify-title">Chain verification</h2>
      <div role="status" aria-busy={busy ? 'true' : 'false'}>
        {busy && !v && <p>Verifying the chain…</p>}
        {error && <p class="error">{error}</p>}
        {v && (
          <>
            {v.chain.ok ? (
              <p class="verify-ok">
                <strong>Chain intact</strong>: {v.chain.checked} entries checked
                {v.chain.head ? `, head seq ${v.chain.head.seq}` : ''} ({fmtTime(v.verifiedAt)}).
              </p>
            ) : (
              <p class="verify-bad">
                <strong>Chain broken at seq {v.chain.firstBad!.seq}</strong> ({v.chain.firstBad!.problem}): {v.chain.firstBad!.message}.{' '}
                {v.chain.checked} entries before it are intact.
              </p>
            )}
            <p data-testid="verify-scope" data-mode={v.chain.mode}>
              {v.chain.mode === 'full'
                ? 'The whole chain was walked.'
                : `Entries after seq ${v.chain.from} were walked now; the whole chain was last walked ${fmtTime(v.chain.fullVerifiedAt)}. ` +
                  'An edit of an earlier entry shows at the next whole walk (Verify again).'}
            </p>
            {v.anchor &&
              (v.anchor.ok ? (
                <p>
                  Checkpoints agree
                  {v.anchor.newest
                    ? `: anchored at seq ${v.anchor.newest.seq} (${v.anchor.newest.source}, ${fmtTime(v.anchor.newest.at)})`
                    : ''}
                  {v.anchor.unanchored > 0 ? `; the newest ${v.anchor.unanchored} entries are after the newest checkpoint` : ''}.
                </p>
              ) : (
                <ul class="verify-bad">
                  {v.anchor.findings.map((f) => (
                    <li key={f.source + f.problem}>
                      <strong>Anchor {f.problem}</strong>: {f.message}
                    </li>
                  ))}
                </ul>
              ))}
            {v.skipped.length > 0 && (
              <details>
                <summary>{v.skipped.length} checkpoints not compared</summary>
                <ul>
                  {v.skipped.map((s) => (
                    <li key={s}>{s}</li>
                  ))}
                </ul>
              </details>
            )}
          </>
        )}
      </div>
      <button type="button" onClick={() => setRuns((n) => n + 1)} disabled={busy}>
        {busy ? 'Verifying…' : 'Verify again'}
      </button>
    </section>
  );
}
