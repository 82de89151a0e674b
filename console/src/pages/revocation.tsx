import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, fmtTime, reasonOf, type Certificate, type RevocationHealth } from '../api.js';
import { onLink } from '../router.js';

/** How often the report is read again while the page is shown. */
const POLL_MS = 10_000;

/** OCSP sources as the telemetry names them, in the order of the table's columns. */
const SOURCES: [string, string][] = [
  ['memory', 'Cache'],
  ['stored', 'Pre-signed'],
  ['signed', 'Signed on demand'],
  ['none', 'None (error)'],
];
const CERT_STATUSES = ['good', 'revoked', 'unknown', 'several'];

/** 3725 → "1 h 2 min"; negative durations read as "… ago" by the caller. */
export function fmtDuration(seconds: number): string {
  const s = Math.abs(Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
}

const fmtSeconds = (s: number) => (s < 1 ? `${Math.round(s * 1000)} ms` : `${Math.round(s * 100) / 100} s`);

/**
 * Revocation health: each signing CA's CRLs (number, age, next update, entries, newest delta) with
 * the CRL watch's stale alarm, this process's OCSP answers by status and source, the
 * revoke-to-visible latency; and a certificate lookup by serial or by a PEM (pasted or a file).
 */
export function Revocation() {
  const [report, setReport] = useState<RevocationHealth>();
  const [error, setError] = useState<string>();

  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        const r = await api<RevocationHealth>('GET', '/v1/revocation-health');
        if (!live) return;
        setReport(r);
        setError(undefined);
      } catch (e) {
        if (live) setError(reasonOf(e));
      }
      // Read again while shown, after a failure too; the cleanup stops it when the page is left.
      if (live) timer = setTimeout(load, POLL_MS);
    };
    void load();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, []);

  const stale = report?.crls.filter((c) => c.stale) ?? [];
  return (
    <section aria-labelledby="revocation-title">
      <h1 id="revocation-title">Revocation health</h1>
      <p class="help">Read again every {POLL_MS / 1000} s while this page is open.</p>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {report && (
        <>
          <p class="help" data-testid="report-at">
            As of {fmtTime(report.at)}.
          </p>
          {stale.length > 0 ? (
            <p class="alarm" role="alert" data-testid="stale-alarm">
              <strong>Alarm:</strong> {stale.length === 1 ? '1 CRL is' : `${stale.length} CRLs are`} stale (due and not replaced):{' '}
              {stale.map((c) => partitionName(c)).join(', ')}. Brokers refuse every client once a CRL expires.
            </p>
          ) : (
            <p class="note" data-testid="stale-alarm">
              No stale CRL.
            </p>
          )}
          <CrlTable crls={report.crls} />
          <OcspTable ocsp={report.ocsp} />
          <Latency visible={report.revocationVisible} />
        </>
      )}
      {!report && !error && <p aria-busy="true">Loading…</p>}
      <Lookup />
    </section>
  );
}

const partitionName = (c: { caName: string; shard: number }) => (c.shard === 0 ? c.caName : `${c.caName} shard ${c.shard}`);

function CrlTable({ crls }: { crls: RevocationHealth['crls'] }) {
  return (
    <table class="crls">
      <caption>CRLs of each signing CA and partition (shard 0: the CA's one CRL)</caption>
      <thead>
        <tr>
          <th scope="col">CA</th>
          <th scope="col">Partition</th>
          <th scope="col">State</th>
          <th scope="col">CRL number</th>
          <th scope="col">Issued (age)</th>
          <th scope="col">Next update</th>
          <th scope="col">Entries</th>
          <th scope="col">Newest delta</th>
        </tr>
      </thead>
      <tbody>
        {crls.map((c) => (
          <tr key={`${c.caId}/${c.shard}`} data-ca={c.caId} data-shard={c.shard} data-stale={c.stale ? 'true' : 'false'}>
            <th scope="row">
              {c.caName}
              <br />
              <code>{c.caId}</code>
            </th>
            <td>{c.shard === 0 ? 'CA CRL' : `shard ${c.shard}`}</td>
            <td>{c.stale ? <span class="status status-stale">⚠ Stale</span> : <span class="status status-fresh">✓ Current</span>}</td>
            {c.full ? (
              <>
                <td class="n">{c.full.crlNumber}</td>
                <td>
                  {fmtTime(c.full.thisUpdate)} ({fmtDuration(c.full.ageSeconds)} ago)
                </td>
                <td>
                  {fmtTime(c.full.nextUpdate)} (
                  {c.full.secondsToNextUpdate >= 0
                    ? `in ${fmtDuration(c.full.secondsToNextUpdate)}`
                    : `expired ${fmtDuration(c.full.secondsToNextUpdate)} ago`}
                  )
                </td>
                <td class="n">{c.full.entries}</td>
              </>
            ) : (
              <td colSpan={4}>No CRL published</td>
            )}
            <td>{c.delta ? `#${c.delta.crlNumber} (base #${c.delta.baseNumber ?? '—'}), ${c.delta.entries} entries` : 'none'}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function OcspTable({ ocsp }: { ocsp: RevocationHealth['ocsp'] }) {
  const count = (status: string, source?: string) =>
    ocsp.answers.filter((a) => a.status === status && (source === undefined || a.source === source)).reduce((n, a) => n + a.count, 0);
  const errors = [...new Set(ocsp.answers.map((a) => a.status).filter((s) => !CERT_STATUSES.includes(s)))];
  const rows = [...CERT_STATUSES, ...errors];
  return (
    <table class="ocsp">
      <caption>
        OCSP answers since {fmtTime(ocsp.since)}: {ocsp.total} in all (by status, and where each came from)
      </caption>
      <thead>
        <tr>
          <th scope="col">Status</th>
          {SOURCES.map(([, label]) => (
            <th scope="col">{label}</th>
          ))}
          <th scope="col">Total</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((status) => (
          <tr key={status} data-ocsp-status={status}>
            <th scope="row">{CERT_STATUSES.includes(status) ? status : `error: ${status}`}</th>
            {SOURCES.map(([source]) => (
              <td class="n">{count(status, source)}</td>
            ))}
            <td class="n" data-testid={`ocsp-${status}`}>
              {count(status)}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Latency({ visible }: { visible: RevocationHealth['revocationVisible'] }) {
  return (
    <section aria-labelledby="latency-title">
      <h2 id="latency-title">Revoke-to-visible latency</h2>
      <p class="help">
        From a revocation request to OCSP answering revoked and the CRL published, in this process since {fmtTime(visible.since)}.
      </p>
      {visible.count === 0 ? (
        <p data-testid="latency">No revocation measured yet.</p>
      ) : (
        <dl class="facts" data-testid="latency">
          <dt>Revocations</dt>
          <dd class="n">{visible.count}</dd>
          <dt>Mean</dt>
          <dd>{fmtSeconds(visible.sumSeconds / visible.count)}</dd>
          {visible.recent && (
            <>
              <dt>Median (last {visible.recent.count})</dt>
              <dd>{fmtSeconds(visible.recent.p50Seconds)}</dd>
              <dt>99th percentile</dt>
              <dd>{fmtSeconds(visible.recent.p99Seconds)}</dd>
            </>
          )}
          <dt>Within</dt>
          <dd>
            {visible.buckets
              .filter((b) => b.le >= 0.01)
              .map((b) => `${fmtSeconds(b.le)}: ${b.count}`)
              .join(' · ')}
          </dd>
        </dl>
      )}
    </section>
  );
}

type Found = { certificate: Certificate; matches?: boolean };

/** Certificate lookup: by serial (GET /v1/certificates/{serial}) or by a PEM (POST /v1/certificates/lookup). */
function Lookup() {
  const [found, setFound] = useState<Found>();
  const [busy, setBusy] = useState(false);
  const [errors, setErrors] = useState<{ serial?: string; pem?: string }>({});
  const [pem, setPem] = useState('');

  const run = async (field: 'serial' | 'pem', request: () => Promise<Found>) => {
    setBusy(true);
    setErrors({});
    setFound(undefined);
    try {
      setFound(await request());
    } catch (e) {
      setErrors({ [field]: e instanceof ApiError && e.status === 404 ? e.detail || 'not found' : reasonOf(e) });
    } finally {
      setBusy(false);
    }
  };
  const described = (f: 'serial' | 'pem', help: string) => (errors[f] ? `${help} lk-${f}-error` : help);

  return (
    <section aria-labelledby="lookup-title" class="lookup">
      <h2 id="lookup-title">Look up a certificate</h2>
      <form
        class="filters"
        aria-label="Look up by serial"
        onSubmit={(e) => {
          e.preventDefault();
          const raw = String(new FormData(e.currentTarget as HTMLFormElement).get('serial') ?? '');
          // openssl prints serials as 26:A3:0D…: accept that too; the API checks the rest.
          const serial = raw.replace(/[\s:]/g, '').toLowerCase();
          void run('serial', async () => ({
            certificate: await api<Certificate>('GET', `/v1/certificates/${encodeURIComponent(serial)}`),
          }));
        }}
      >
        <div class="field">
          <label for="lk-serial">Serial</label>
          <input
            id="lk-serial"
            name="serial"
            required
            autocomplete="off"
            spellcheck={false}
            aria-invalid={errors.serial ? 'true' : undefined}
            aria-describedby={described('serial', 'lk-serial-help')}
          />
          <span id="lk-serial-help" class="help">
            Hexadecimal, with or without colons.
          </span>
          {errors.serial && (
            <span id="lk-serial-error" class="error field-error" role="alert">
              {errors.serial}
            </span>
          )}
        </div>
        <button type="submit" disabled={busy}>
          Look up serial
        </button>
      </form>
      <form
        class="filters wide"
        aria-label="Look up by PEM"
        onSubmit={(e) => {
          e.preventDefault();
          void run('pem', () => api<{ certificate: Certificate; matches: boolean }>('POST', '/v1/certificates/lookup', { pem }));
        }}
      >
        <div class="field">
          <label for="lk-pem">PEM certificate</label>
          <textarea
            id="lk-pem"
            name="pem"
            rows={6}
            spellcheck={false}
            value={pem}
            onInput={(e) => setPem((e.currentTarget as HTMLTextAreaElement).value)}
            aria-invalid={errors.pem ? 'true' : undefined}
            aria-describedby={described('pem', 'lk-pem-help')}
          />
          <span id="lk-pem-help" class="help">
            Paste -----BEGIN CERTIFICATE----- … or choose a file.
          </span>
          {errors.pem && (
            <span id="lk-pem-error" class="error field-error" role="alert">
              {errors.pem}
            </span>
          )}
        </div>
        <div class="field">
          <label for="lk-file">Certificate file</label>
          <input
            id="lk-file"
            type="file"
            accept=".pem,.crt,.cer,application/x-pem-file,text/plain"
            onChange={async (e) => {
              const file = (e.currentTarget as HTMLInputElement).files?.[0];
              // A certificate is a few KB; a large file is left to the API's size limit to refuse.
              if (file) setPem(await file.text());
            }}
          />
        </div>
        <button type="submit" disabled={busy || pem.trim() === ''}>
          Look up PEM
        </button>
      </form>
      <div aria-live="polite">{found && <LookupResult found={found} />}</div>
    </section>
  );
}

function LookupResult({ found: { certificate: c, matches } }: { found: Found }) {
  const hold = c.revocation?.reason === 'certificateHold';
  const state = c.status === 'revoked' ? (hold ? 'on hold' : 'revoked') : c.status;
  return (
    <article class="lookup-result" aria-labelledby="lk-result-title" data-testid="lookup-result">
      <h3 id="lk-result-title">
        Certificate <code>{c.serial}</code>:{' '}
        <span class={`status status-${c.status}`} data-testid="lookup-status">
          {state}
        </span>
      </h3>
      {matches !== undefined && (
        <p class={matches ? 'note' : 'alarm'} data-testid="lookup-matches">
          {matches
            ? 'The uploaded certificate is byte for byte the one this CA recorded.'
            : 'The uploaded certificate has this serial but differs from the one this CA recorded: it was not issued by this CA as uploaded.'}
        </p>
      )}
      <dl class="facts">
        <dt>Subject</dt>
        <dd>{c.subject}</dd>
        <dt>Profile</dt>
        <dd>{c.profile}</dd>
        <dt>CA</dt>
        <dd>
          <code>{c.caId}</code>
        </dd>
        <dt>Valid</dt>
        <dd>
          {fmtTime(c.notBefore)} to {fmtTime(c.notAfter)}
        </dd>
        <dt>Reason</dt>
        <dd data-testid="lookup-reason">{c.revocation?.reason ?? '—'}</dd>
        <dt>Revoked at</dt>
        <dd>{fmtTime(c.revocation?.revokedAt)}</dd>
        <dt>Device</dt>
        <dd>
          {c.deviceId ? (
            <a
              href={`/console/devices/${encodeURIComponent(c.deviceId)}`}
              onClick={(e) => onLink(e, `/console/devices/${encodeURIComponent(c.deviceId!)}`)}
            >
              {c.deviceId}
            </a>
          ) : (
            '—'
          )}
        </dd>
      </dl>
    </article>
  );
}
