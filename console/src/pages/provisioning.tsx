import { useEffect, useRef, useState } from 'preact/hooks';
import {
  api,
  ApiError,
  can,
  DEVICE_STATUSES,
  Intent,
  type DeviceStatus,
  type EnrollmentToken,
  type ImportPreview,
  type Page,
  type ProblemError,
  type Role,
} from '../api.js';
import { navigate, onLink } from '../router.js';

/** How often a watched lot's progress is read again (only while the page is open and the tab visible). */
const PROGRESS_INTERVAL_MS = 5000;

const fmt = (iso: string | null | undefined) => (iso ? new Date(iso).toISOString().replace('T', ' ').slice(0, 16) + ' UTC' : '—');
const failed = (e: unknown) => (e instanceof ApiError ? e : new ApiError(0, 'The service did not answer', '', {}));
const reason = (e: ApiError) => e.detail || e.title;
const provisioningUrl = (lot: string) => (lot ? `/console/provisioning?lot=${encodeURIComponent(lot)}` : '/console/provisioning');

/**
 * Provisioning: import a lot (dry run first: the preview or each row's errors, then Import), create
 * an enrollment token (shown once), and watch a lot's enrollment. A role that may not import or
 * create tokens sees only the progress.
 */
export function Provisioning({ query, role }: { query: URLSearchParams; role: Role }) {
  const lot = query.get('lot') ?? '';
  return (
    <section aria-labelledby="prov-title">
      <h1 id="prov-title">Provisioning</h1>
      {can.provision(role) && <ImportLot />}
      {can.provision(role) && <CreateToken deviceId={query.get('device') ?? ''} navKey={query.toString()} />}
      <LotProgress lot={lot} key={lot} />
    </section>
  );
}

// ---- import ---------------------------------------------------------------------------------

/**
 * The manifest's rows as written, for showing a refused row beside its errors (display only: the
 * API reads the manifest). CSV: the records after the header, split at line breaks outside quotes;
 * JSON: each device, as JSON.
 */
function rowsAsWritten(text: string, format: Format): string[] {
  if (format === 'json') {
    try {
      const m = JSON.parse(text) as unknown;
      const list = Array.isArray(m) ? m : (m as { devices?: unknown } | null)?.devices;
      return Array.isArray(list) ? list.map((d) => JSON.stringify(d)) : [];
    } catch {
      return [];
    }
  }
  const records: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i <= text.length; i++) {
    const ch = text[i];
    if (ch === '"') quoted = !quoted;
    else if ((ch === '\n' && !quoted) || ch === undefined) {
      records.push(text.slice(start, i).replace(/\r$/, ''));
      start = i + 1;
    }
  }
  if (records[records.length - 1] === '') records.pop();
  return records.slice(1);
}

type Format = 'csv' | 'json';

function ImportLot() {
  const [text, setText] = useState('');
  const [format, setFormat] = useState<Format>('csv');
  const [lot, setLot] = useState('');
  const [preview, setPreview] = useState<ImportPreview>();
  const [refusal, setRefusal] = useState<{ error: ApiError; rows: string[] }>();
  const [done, setDone] = useState<{ imported: number; lot: string | null }>();
  const [busy, setBusy] = useState(false);
  const intent = useRef(new Intent()).current; // the import's Idempotency-Key, until it is imported (a dry run has its own)
  const result = useRef<HTMLDivElement>(null);

  /** Any change to what would be sent voids the preview: Import is offered only for what was checked. */
  const changed = () => {
    setPreview(undefined);
    setRefusal(undefined);
    setDone(undefined);
  };
  const path = (dryRun: boolean) => {
    const q = new URLSearchParams();
    if (lot.trim()) q.set('lot', lot.trim());
    if (dryRun) q.set('dryRun', 'true');
    const s = q.toString();
    return `/v1/devices/import${s ? `?${s}` : ''}`;
  };
  const body = (): unknown => {
    if (format === 'csv') return text;
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new ApiError(400, 'Bad request', 'the manifest is not valid JSON', {});
    }
  };
  const send = <T,>(dryRun: boolean) =>
    api<T>('POST', path(dryRun), body(), format === 'csv' ? 'text/csv' : 'application/json', dryRun ? undefined : intent);

  const onFile = async (e: Event) => {
    const file = (e.currentTarget as HTMLInputElement).files?.[0];
    if (!file) return;
    changed();
    setFormat(/\.json$/i.test(file.name) || file.type === 'application/json' ? 'json' : 'csv');
    setText(await file.text());
  };

  const check = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    changed();
    if (!text.trim()) {
      setRefusal({ error: new ApiError(400, 'Bad request', 'paste a manifest or choose a file first', {}), rows: [] });
      return;
    }
    setBusy(true);
    try {
      setPreview(await send<ImportPreview>(true));
    } catch (err) {
      setRefusal({ error: failed(err), rows: rowsAsWritten(text, format) });
    } finally {
      setBusy(false);
      result.current?.focus();
    }
  };

  const commit = async () => {
    if (busy || !preview) return;
    setBusy(true);
    try {
      const r = await send<{ imported: number; lot: string | null }>(false);
      setPreview(undefined);
      setText('');
      setDone(r);
    } catch (err) {
      // Checked again by the import: e.g. an id registered since the preview.
      setPreview(undefined);
      setRefusal({ error: failed(err), rows: rowsAsWritten(text, format) });
    } finally {
      setBusy(false);
      result.current?.focus();
    }
  };

  return (
    <section aria-labelledby="import-title" class="panel">
      <h2 id="import-title">Import a lot</h2>
      <p class="help">
        CSV (a header row: id, kind, model, hardwareRevision, firmwareVersion, site, lot, labels.&lt;key&gt;) or JSON (
        <code>{'{ "lot": …, "devices": [...] }'}</code> or an array). Check it first: nothing is imported until the preview is clean.
      </p>
      <form class="import" onSubmit={check}>
        <div class="field">
          <label for="imp-file">Manifest file</label>
          <input id="imp-file" type="file" accept=".csv,.json,text/csv,application/json" onChange={onFile} />
        </div>
        <div class="field">
          <label for="imp-format">Format</label>
          <select
            id="imp-format"
            value={format}
            onChange={(e) => {
              changed();
              setFormat((e.currentTarget as HTMLSelectElement).value as Format);
            }}
          >
            <option value="csv">CSV</option>
            <option value="json">JSON</option>
          </select>
        </div>
        <div class="field">
          <label for="imp-lot">Lot (for rows that name none)</label>
          <input
            id="imp-lot"
            value={lot}
            maxLength={128}
            autocomplete="off"
            onInput={(e) => {
              changed();
              setLot((e.currentTarget as HTMLInputElement).value);
            }}
          />
        </div>
        <div class="field wide">
          <label for="imp-text">Manifest (or paste it here)</label>
          <textarea
            id="imp-text"
            rows={8}
            spellcheck={false}
            value={text}
            onInput={(e) => {
              changed();
              setText((e.currentTarget as HTMLTextAreaElement).value);
            }}
          />
        </div>
        <div class="actions">
          <button type="submit" disabled={busy}>
            Check manifest
          </button>
        </div>
      </form>

      <div ref={result} tabIndex={-1} aria-live="polite" class="import-result">
        {done && (
          <p class="note" role="status">
            Imported {done.imported} device{done.imported === 1 ? '' : 's'}
            {done.lot ? ` into lot ${done.lot}` : ''}.{' '}
            {done.lot && (
              <a href={provisioningUrl(done.lot)} onClick={(e) => onLink(e, provisioningUrl(done.lot!))}>
                Watch its enrollment
              </a>
            )}
          </p>
        )}
        {refusal && <ManifestErrors {...refusal} />}
        {preview && (
          <>
            <p data-testid="import-summary">
              Ready: {preview.wouldImport} device{preview.wouldImport === 1 ? '' : 's'} would be registered
              {preview.lot ? ` in lot ${preview.lot}` : ''}. Nothing is imported yet.
            </p>
            <table class="preview">
              <caption>
                {preview.preview.length < preview.wouldImport
                  ? `The first ${preview.preview.length} of ${preview.wouldImport} rows`
                  : `All ${preview.wouldImport} rows`}
              </caption>
              <thead>
                <tr>
                  <th scope="col">Row</th>
                  <th scope="col">Device</th>
                  <th scope="col">Kind</th>
                  <th scope="col">Model</th>
                  <th scope="col">Hardware</th>
                  <th scope="col">Firmware</th>
                  <th scope="col">Site</th>
                  <th scope="col">Lot</th>
                  <th scope="col">Labels</th>
                </tr>
              </thead>
              <tbody>
                {preview.preview.map((r) => (
                  <tr key={r.row}>
                    <td>{r.row}</td>
                    <th scope="row">{r.id}</th>
                    <td>{r.kind}</td>
                    <td>{r.model ?? '—'}</td>
                    <td>{r.hardwareRevision ?? '—'}</td>
                    <td>{r.firmwareVersion ?? '—'}</td>
                    <td>{r.site ?? '—'}</td>
                    <td>{r.lot ?? '—'}</td>
                    <td>
                      {Object.entries(r.labels).map(([k, v]) => (
                        <span class="label">
                          {k}={v}
                        </span>
                      ))}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            <button type="button" class="primary" disabled={busy} onClick={commit}>
              Import {preview.wouldImport} device{preview.wouldImport === 1 ? '' : 's'}
            </button>
          </>
        )}
      </div>
    </section>
  );
}

/** A refused manifest: the API's reason, then its errors grouped by row (row, device, field, message). */
function ManifestErrors({ error, rows }: { error: ApiError; rows: string[] }) {
  const byRow = new Map<string, ProblemError[]>();
  for (const e of error.errors) {
    const k = e.row === undefined ? '' : String(e.row);
    byRow.set(k, [...(byRow.get(k) ?? []), e]);
  }
  return (
    <div class="manifest-errors">
      <p class="error" role="alert">
        Not imported: {reason(error)}
      </p>
      {error.errors.length > 0 && (
        <table class="errors">
          <caption>Problems by row (rows count from 1, after a CSV's header)</caption>
          <thead>
            <tr>
              <th scope="col">Row</th>
              <th scope="col">Device</th>
              <th scope="col">Problems</th>
              <th scope="col">The row as written</th>
            </tr>
          </thead>
          <tbody>
            {[...byRow].map(([row, errs]) => (
              <tr key={row}>
                <th scope="row">{row || 'manifest'}</th>
                <td>{errs.find((e) => e.id)?.id ?? '—'}</td>
                <td>
                  <ul>
                    {errs.map((e) => (
                      <li>
                        {e.field ? <strong>{e.field}: </strong> : null}
                        {e.message ?? ''}
                      </li>
                    ))}
                  </ul>
                </td>
                <td>{row && rows[Number(row) - 1] !== undefined ? <code>{rows[Number(row) - 1]}</code> : '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

// ---- tokens ---------------------------------------------------------------------------------

const EXPIRIES = [
  [3600, '1 hour'],
  [86400, '1 day'],
  [7 * 86400, '7 days'],
  [30 * 86400, '30 days'],
] as const;

/**
 * An enrollment token for a lot or one device. The secret is shown once, in a read-only field
 * with a Copy button; it lives only in this component's state, which any navigation clears.
 */
function CreateToken({ deviceId, navKey }: { deviceId: string; navKey: string }) {
  const [target, setTarget] = useState<'lot' | 'device'>(deviceId ? 'device' : 'lot');
  const [created, setCreated] = useState<EnrollmentToken & { token: string }>();
  const [errors, setErrors] = useState<Partial<Record<'lot' | 'deviceId' | 'maxUses' | 'form', string>>>({});
  const [busy, setBusy] = useState(false);
  const [copied, setCopied] = useState<string>();
  const intent = useRef(new Intent()).current; // the token's Idempotency-Key, until it is made
  const field = useRef<HTMLInputElement>(null);

  // The secret goes with any navigation (and with the page).
  useEffect(() => () => setCreated(undefined), [navKey]);
  useEffect(() => {
    if (created) field.current?.focus();
  }, [created]);

  const create = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    const data = new FormData(e.currentTarget as HTMLFormElement);
    const value = (k: string) => String(data.get(k) ?? '').trim();
    const body: Record<string, unknown> = { expiresInSeconds: Number(value('expiresInSeconds')) };
    if (target === 'lot') {
      body.lot = value('lot');
      if (value('maxUses')) body.maxUses = Number(value('maxUses'));
    } else body.deviceId = value('deviceId');
    if (value('name')) body.name = value('name');
    setBusy(true);
    setErrors({});
    setCreated(undefined);
    setCopied(undefined);
    try {
      setCreated(await api<EnrollmentToken & { token: string }>('POST', '/v1/enrollment-tokens', body, 'application/json', intent));
    } catch (err) {
      const x = failed(err);
      const next: typeof errors = {};
      for (const k of ['lot', 'deviceId', 'maxUses'] as const) if (x.fields[k]) next[k] = x.fields[k];
      // A domain refusal names what it is about ("device X is revoked", "no device with id X").
      if (Object.keys(next).length === 0) {
        if (target === 'device' && /device/i.test(x.detail)) next.deviceId = reason(x);
        else if (target === 'lot' && /\blot\b/i.test(x.detail)) next.lot = reason(x);
        else next.form = reason(x);
      }
      setErrors(next);
    } finally {
      setBusy(false);
    }
  };

  const copy = async () => {
    if (!created) return;
    try {
      await navigator.clipboard.writeText(created.token);
      setCopied('Copied to the clipboard.');
    } catch {
      field.current?.select();
      setCopied('The browser refused the clipboard: the token is selected, copy it with the keyboard.');
    }
  };

  const err = (k: keyof typeof errors) =>
    errors[k] ? (
      <span id={`tok-${k}-error`} class="error field-error" role="alert">
        {errors[k]}
      </span>
    ) : null;
  const invalid = (k: keyof typeof errors) => (errors[k] ? { 'aria-invalid': 'true' as const, 'aria-describedby': `tok-${k}-error` } : {});

  return (
    <section aria-labelledby="token-title" class="panel">
      <h2 id="token-title">Create an enrollment token</h2>
      <form class="token" onSubmit={create}>
        <fieldset>
          <legend>For</legend>
          <label>
            <input type="radio" name="target" checked={target === 'lot'} onChange={() => setTarget('lot')} /> a lot (each device enrolls
            once)
          </label>
          <label>
            <input type="radio" name="target" checked={target === 'device'} onChange={() => setTarget('device')} /> one device
          </label>
        </fieldset>
        {target === 'lot' ? (
          <>
            <div class="field">
              <label for="tok-lot">Lot</label>
              <input id="tok-lot" name="lot" required maxLength={100} autocomplete="off" {...invalid('lot')} />
              {err('lot')}
            </div>
            <div class="field">
              <label for="tok-uses">Uses at most (empty: the lot's default)</label>
              <input id="tok-uses" name="maxUses" type="number" min={1} max={10000000} {...invalid('maxUses')} />
              {err('maxUses')}
            </div>
          </>
        ) : (
          <div class="field">
            <label for="tok-device">Device id</label>
            <input
              id="tok-device"
              name="deviceId"
              required
              maxLength={64}
              autocomplete="off"
              defaultValue={deviceId}
              {...invalid('deviceId')}
            />
            {err('deviceId')}
          </div>
        )}
        <div class="field">
          <label for="tok-expiry">Expires in</label>
          <select id="tok-expiry" name="expiresInSeconds">
            {EXPIRIES.map(([s, label]) => (
              <option value={String(s)} selected={s === 7 * 86400}>
                {label}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="tok-name">Name (optional)</label>
          <input id="tok-name" name="name" maxLength={100} autocomplete="off" />
        </div>
        <div class="actions">
          <button type="submit" disabled={busy}>
            Create token
          </button>
        </div>
        {errors.form && (
          <p class="error" role="alert">
            {errors.form}
          </p>
        )}
      </form>
      {created && (
        <div class="secret" role="group" aria-labelledby="secret-title">
          <h3 id="secret-title">
            Token for {created.lot ? `lot ${created.lot}` : `device ${created.deviceId ?? ''}`}, ends {fmt(created.expiresAt)}
          </h3>
          <p class="warn">
            Copy it now: it is shown this once. The service keeps only its hash, and this page forgets it when you leave or press Done.
          </p>
          <div class="actions">
            <label for="tok-secret" class="visually-hidden">
              Enrollment token
            </label>
            <input id="tok-secret" ref={field} readOnly value={created.token} size={48} onFocus={(e) => e.currentTarget.select()} />
            <button type="button" onClick={copy}>
              Copy
            </button>
            <button
              type="button"
              onClick={() => {
                setCreated(undefined);
                setCopied(undefined);
              }}
            >
              Done
            </button>
          </div>
          {copied && <p role="status">{copied}</p>}
        </div>
      )}
    </section>
  );
}

// ---- progress -------------------------------------------------------------------------------

interface Progress {
  counts: { byStatus: Record<DeviceStatus, number>; total: number };
  tokens: Page<EnrollmentToken>;
  at: Date;
}

/** A lot's enrollment: devices by status (GET /v1/device-counts?lot=), its lot tokens, read again every few seconds. */
function LotProgress({ lot }: { lot: string }) {
  const [progress, setProgress] = useState<Progress>();
  const [error, setError] = useState<ApiError>();

  useEffect(() => {
    if (!lot) return;
    let live = true;
    const q = encodeURIComponent(lot);
    const read = () => {
      if (document.hidden) return;
      Promise.all([
        api<Progress['counts']>('GET', `/v1/device-counts?lot=${q}`),
        api<Page<EnrollmentToken>>('GET', `/v1/enrollment-tokens?lot=${q}&limit=100`),
      ])
        .then(([counts, tokens]) => {
          if (!live) return;
          setProgress({ counts, tokens, at: new Date() });
          setError(undefined);
        })
        .catch((e) => live && setError(failed(e)));
    };
    read();
    const timer = window.setInterval(read, PROGRESS_INTERVAL_MS);
    return () => {
      live = false;
      window.clearInterval(timer);
    };
  }, [lot]);

  const watch = (e: Event) => {
    e.preventDefault();
    const v = String(new FormData(e.currentTarget as HTMLFormElement).get('lot') ?? '').trim();
    navigate(provisioningUrl(v));
  };

  const c = progress?.counts;
  const enrolled = c ? c.byStatus.active + c.byStatus.suspended : 0;
  const open = progress?.tokens.items.filter((t) => t.status === 'active') ?? [];
  const fleet = `/console/?lot=${encodeURIComponent(lot)}`;

  return (
    <section aria-labelledby="progress-title" class="panel">
      <h2 id="progress-title">Enrollment progress</h2>
      <form class="filters" onSubmit={watch} aria-label="Watch a lot">
        <div class="field">
          <label for="prog-lot">Lot to watch</label>
          <input id="prog-lot" name="lot" defaultValue={lot} maxLength={100} autocomplete="off" />
        </div>
        <div class="actions">
          <button type="submit">Watch</button>
        </div>
      </form>
      {error && (
        <p class="error" role="alert">
          {reason(error)}
        </p>
      )}
      {lot && c && (
        <div class="progress">
          <p aria-live="polite" data-testid="lot-enrolled">
            Lot <strong>{lot}</strong>: <span class="n">{enrolled}</span> of <span class="n">{c.total}</span> device
            {c.total === 1 ? '' : 's'} enrolled
            {c.total > 0 ? ` (${Math.floor((enrolled / c.total) * 100)}%)` : ''}; <span class="n">{c.byStatus.registered}</span> waiting.
          </p>
          <progress max={Math.max(c.total, 1)} value={enrolled} aria-label={`Enrolled devices of lot ${lot}`} />
          <ul class="by-status" aria-label="Devices by status">
            {DEVICE_STATUSES.map((s) => (
              <li data-status={s}>
                <span class={`status status-${s}`}>{s}</span> <span class="n">{c.byStatus[s]}</span>
              </li>
            ))}
          </ul>
          <p>
            <a href={fleet} onClick={(e) => onLink(e, fleet)}>
              The lot's devices in the fleet
            </a>{' '}
            · updated {progress.at.toISOString().slice(11, 19)} UTC, every {PROGRESS_INTERVAL_MS / 1000} s while this page is open
          </p>
          <h3>Lot tokens</h3>
          {progress.tokens.items.length === 0 ? (
            <p>No token names this lot.</p>
          ) : (
            <>
              <p data-testid="lot-tokens">
                {open.length} token{open.length === 1 ? '' : 's'} outstanding
                {open.length > 0 ? ` (${open.reduce((n, t) => n + (t.maxUses - t.uses), 0)} uses left)` : ''}.
              </p>
              <TokenTable tokens={progress.tokens.items} caption={`Enrollment tokens of lot ${lot}, newest first`} />
            </>
          )}
        </div>
      )}
    </section>
  );
}

/** Tokens' metadata: never a secret (the API never answers one after creation). */
export function TokenTable({ tokens, caption }: { tokens: EnrollmentToken[]; caption: string }) {
  return (
    <table class="tokens">
      <caption class="visually-hidden">{caption}</caption>
      <thead>
        <tr>
          <th scope="col">Token</th>
          <th scope="col">Profile</th>
          <th scope="col">Status</th>
          <th scope="col">Uses</th>
          <th scope="col">Expires</th>
          <th scope="col">Last used</th>
          <th scope="col">Created</th>
          <th scope="col">By</th>
        </tr>
      </thead>
      <tbody>
        {tokens.map((t) => (
          <tr key={t.id}>
            <th scope="row">
              {t.name ? `${t.name} ` : ''}
              <code>{t.id}</code>
            </th>
            <td>{t.profile}</td>
            <td>
              <span class={`status status-token-${t.status}`}>{t.status}</span>
            </td>
            <td>
              {t.uses} / {t.maxUses}
            </td>
            <td>{fmt(t.expiresAt)}</td>
            <td>{fmt(t.lastUsedAt)}</td>
            <td>{fmt(t.createdAt)}</td>
            <td>{t.createdBy}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
