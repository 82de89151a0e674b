import { useEffect, useRef, useState } from 'preact/hooks';
import {
  api,
  ApiError,
  can,
  fmtTime,
  Intent,
  reasonOf,
  REVOCATION_REASONS,
  type Incident,
  type IncidentDetail,
  type IncidentKind,
  type IncidentStep,
  type Role,
} from '../api.js';
import { onLink } from '../router.js';
import { ConfirmDialog } from './confirm.js';
import { splitIds } from './incidents.js';

/** How often an open incident's timeline is read again while the page is shown (there is no incident stream). */
export const POLL_MS = 2000;

/** The actions of POST /v1/incidents/{id}/actions, those of one kind of incident only where they belong. */
const ACTIONS: { name: string; kinds?: IncidentKind[]; takes: ('reason' | 'devices' | 'credentials' | 'extra')[] }[] = [
  { name: 'revoke-certificates', takes: ['reason', 'devices', 'extra'] },
  { name: 'suspend', takes: ['devices'] },
  { name: 'revoke-credentials', takes: ['credentials', 'devices', 'extra'] },
  { name: 'disconnect', takes: ['devices'] },
  { name: 'block', takes: ['devices'] },
  { name: 'unblock', takes: ['devices'] },
  { name: 'quarantine-broker', kinds: ['broker-compromise'], takes: ['reason', 'devices'] },
  { name: 'restore-broker', kinds: ['broker-compromise'], takes: ['devices'] },
  { name: 'readmit', takes: ['devices'] },
  { name: 'reissue', takes: ['devices', 'extra'] },
  { name: 'supersede-replaced', takes: ['devices'] },
  { name: 'rotate-channel-keys', takes: ['devices', 'extra'] },
  { name: 'recover-ca', kinds: ['ca-compromise'], takes: ['extra'] },
];

const TOUCHED_SHOWN = 20;

export function IncidentPage({ id, role }: { id: string; role: Role }) {
  const [data, setData] = useState<IncidentDetail>();
  const [error, setError] = useState<ApiError>();
  const [reload, setReload] = useState(0);
  const [notice, setNotice] = useState<string>();
  const [secrets, setSecrets] = useState<Record<string, unknown>>();

  // Live: read again every POLL_MS while the incident is open; stop when it closes or the page is left.
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        const d = await api<IncidentDetail>('GET', `/v1/incidents/${encodeURIComponent(id)}`);
        if (!live) return;
        setData(d);
        setError(undefined);
        if (d.status === 'open') timer = setTimeout(load, POLL_MS);
      } catch (e) {
        if (!live) return;
        const err = e instanceof ApiError ? e : new ApiError(0, 'The service did not answer', '', {});
        setError(err);
        // A passing outage (5xx, no answer) is tried again; a refusal (404, 403) is not.
        if (err.status === 0 || err.status >= 500) timer = setTimeout(load, POLL_MS * 2);
      }
    };
    void load();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [id, reload]);

  if (!data)
    return error ? (
      <section>
        <h1>Incident {id}</h1>
        <p class="error" role="alert">
          {error.title}
          {error.detail ? `: ${error.detail}` : ''}
        </p>
        <a href="/console/incidents" onClick={(e) => onLink(e, '/console/incidents')}>
          Back to incidents
        </a>
      </section>
    ) : (
      <p aria-busy="true">Loading incident…</p>
    );

  const incident = data;
  const mayAct = can.actInIncidents(role) && incident.status === 'open';
  const retried = new Set(incident.timeline.map((s) => s.retryOf).filter(Boolean));
  const after = (msg: string, s?: Record<string, unknown>) => {
    setNotice(msg);
    setSecrets(s);
    setReload((n) => n + 1);
  };
  const t = incident.targets;

  return (
    <section aria-labelledby="incident-title">
      <p>
        <a href="/console/incidents" onClick={(e) => onLink(e, '/console/incidents')}>
          ← Incidents
        </a>
      </p>
      <h1 id="incident-title">
        Incident <span class="incident-title">{incident.title}</span>{' '}
        <span class={`status status-${incident.status}`} data-testid="incident-status">
          {incident.status}
        </span>
      </h1>
      {notice && (
        <p class="note" role="status">
          {notice}
        </p>
      )}
      {secrets && <Secrets secrets={secrets} onDismiss={() => setSecrets(undefined)} />}
      {error && (
        <p class="error" role="alert">
          Could not refresh: {error.title}
          {error.detail ? `: ${error.detail}` : ''}
        </p>
      )}
      <dl class="facts">
        <dt>Id</dt>
        <dd>
          <code>{incident.id}</code>
        </dd>
        <dt>Kind</dt>
        <dd>{incident.kind}</dd>
        <dt>Opened</dt>
        <dd>
          {fmtTime(incident.openedAt)} by {incident.openedBy}
        </dd>
        {incident.description && (
          <>
            <dt>Description</dt>
            <dd class="prose">{incident.description}</dd>
          </>
        )}
        {incident.closedAt && (
          <>
            <dt>Closed</dt>
            <dd>
              {fmtTime(incident.closedAt)} by {incident.closedBy}
            </dd>
            <dt>Summary</dt>
            <dd class="prose" data-testid="incident-summary">
              {incident.summary}
            </dd>
          </>
        )}
      </dl>

      <h2>Targets</h2>
      <dl class="facts targets">
        <dt>Devices</dt>
        <dd>
          {t.devices.length === 0
            ? '—'
            : t.devices.map((d) => {
                const href = `/console/devices/${encodeURIComponent(d)}`;
                return (
                  <a class="label" href={href} onClick={(e) => onLink(e, href)}>
                    {d}
                  </a>
                );
              })}
        </dd>
        <dt>Lots</dt>
        <dd>{t.lots.join(', ') || '—'}</dd>
        <dt>Brokers</dt>
        <dd>{t.brokers.join(', ') || '—'}</dd>
        <dt>CA</dt>
        <dd>{t.caId ?? '—'}</dd>
      </dl>

      <h2 id="timeline-title">Timeline</h2>
      {incident.status === 'open' && <p class="help">Updated live while the incident is open.</p>}
      {incident.timeline.length === 0 ? (
        <p>No steps yet.</p>
      ) : (
        <table class="timeline" aria-labelledby="timeline-title">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Action</th>
              <th scope="col">Status</th>
              <th scope="col">Actor</th>
              <th scope="col">Started</th>
              <th scope="col">Touched</th>
              <th scope="col">Error</th>
              {mayAct && <th scope="col">Retry</th>}
            </tr>
          </thead>
          <tbody>
            {incident.timeline.map((s) => (
              <StepRow
                key={s.id}
                step={s}
                incident={incident}
                retryable={mayAct && !s.dryRun && (s.status === 'failed' || s.status === 'unconfirmed') && !retried.has(s.id)}
                showRetry={mayAct}
                onRetried={(r) => after(stepNotice(r, true), r.secrets)}
              />
            ))}
          </tbody>
        </table>
      )}

      {mayAct && <ActionForm incident={incident} role={role} onDone={(s) => after(stepNotice(s, false), s.secrets)} />}
      {mayAct && <CloseForm incident={incident} onClosed={() => after('Incident closed.')} />}
    </section>
  );
}

const stepNotice = (s: IncidentStep, retry: boolean) => {
  const what = `${retry ? 'Retry of ' : ''}${s.action} (step #${s.seq})`;
  if (s.status === 'proposed') return `${what} waits for a second person to approve it (approval ${s.approvalId}).`;
  if (s.status === 'failed') return `${what} failed: ${s.error ?? 'no reason given'}.`;
  return `${what} ${s.status}: touched ${s.touchedCount}.`;
};

function StepRow(props: {
  step: IncidentStep;
  incident: Incident;
  retryable: boolean;
  showRetry: boolean;
  onRetried: (s: IncidentStep) => void;
}) {
  const { step: s } = props;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const inFlight = useRef(false);
  const intent = useRef(new Intent()).current; // this retry's Idempotency-Key, until it is done
  const retry = async () => {
    if (inFlight.current) return; // a double click retries once
    inFlight.current = true;
    setBusy(true);
    setError(undefined);
    try {
      const r = await api<IncidentStep>(
        'POST',
        `/v1/incidents/${encodeURIComponent(props.incident.id)}/steps/${encodeURIComponent(s.id)}/retry`,
        undefined,
        'application/json',
        intent,
      );
      props.onRetried(r);
    } catch (e) {
      setError(reasonOf(e));
    } finally {
      inFlight.current = false;
      setBusy(false);
    }
  };
  const shown = s.touched.slice(0, TOUCHED_SHOWN);
  return (
    <tr data-step={s.seq} data-status={s.status}>
      <td>{s.seq}</td>
      <td>
        {s.action}
        {s.dryRun ? ' (dry run)' : ''}
        {s.retryOf ? <span class="help"> retry</span> : null}
      </td>
      <td>
        <span class={`status status-${s.status}`}>{s.status}</span>
        {s.status === 'proposed' && (
          <span class="help">
            {' '}
            waits for a second person:{' '}
            <a href="/console/approvals" onClick={(e) => onLink(e, '/console/approvals')}>
              approval {s.approvalId}
            </a>
          </span>
        )}
      </td>
      <td>{s.actor}</td>
      <td>{fmtTime(s.startedAt)}</td>
      <td>
        {s.dryRun ? 'would touch ' : ''}
        <span class="n">{s.touchedCount}</span>
        {shown.length > 0 && (
          <details>
            <summary>list</summary>
            <ul class="touched">
              {shown.map((t) => (
                <li>
                  {t.type} <code>{t.id}</code>
                </li>
              ))}
              {s.touchedCount > shown.length && <li>… and {s.touchedCount - shown.length} more</li>}
            </ul>
          </details>
        )}
      </td>
      <td>{s.error ?? '—'}</td>
      {props.showRetry && (
        <td>
          {props.retryable && (
            <button type="button" onClick={retry} disabled={busy} aria-label={`Retry step ${s.seq}`}>
              {busy ? 'Retrying…' : 'Retry'}
            </button>
          )}
          {error && (
            <span class="error" role="alert">
              {error}
            </span>
          )}
        </td>
      )}
    </tr>
  );
}

type ActionField = 'action' | 'reason' | 'devices' | 'extra' | 'form';

/** The action form: a dry run first (the plan), then Run for real, only for the parameters that were dry-run. */
function ActionForm({ incident, role, onDone }: { incident: Incident; role: Role; onDone: (s: IncidentStep) => void }) {
  const offered = ACTIONS.filter((a) => !a.kinds || a.kinds.includes(incident.kind));
  const [action, setAction] = useState(offered[0]!.name);
  const [reason, setReason] = useState('keyCompromise');
  const [devices, setDevices] = useState('');
  const [extra, setExtra] = useState('');
  const [tokens, setTokens] = useState(true);
  const [sessionKeys, setSessionKeys] = useState(true);
  const [plan, setPlan] = useState<{ key: string; step: IncidentStep }>();
  const [errors, setErrors] = useState<Partial<Record<ActionField, string>>>({});
  const [busy, setBusy] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const inFlight = useRef(false);
  const spec = offered.find((a) => a.name === action)!;

  /** The request's body for the form as it is now, or the field whose value is wrong. */
  const request = ():
    { body: { action: string; params?: Record<string, unknown> }; key: string } | { field: ActionField; message: string } => {
    const params: Record<string, unknown> = {};
    if (spec.takes.includes('extra') && extra.trim()) {
      let v: unknown;
      try {
        v = JSON.parse(extra);
      } catch {
        return { field: 'extra', message: 'not JSON: write an object such as {"expiresInSeconds": 3600}' };
      }
      if (!v || typeof v !== 'object' || Array.isArray(v)) return { field: 'extra', message: 'a JSON object' };
      Object.assign(params, v);
    }
    if (spec.takes.includes('reason')) params.reason = reason;
    if (spec.takes.includes('credentials')) {
      params.enrollmentTokens = tokens;
      params.sessionKeys = sessionKeys;
    }
    const ids = splitIds(devices);
    if (spec.takes.includes('devices') && ids.length) params.devices = ids;
    const body = { action, ...(Object.keys(params).length ? { params } : {}) };
    return { body, key: JSON.stringify(body) };
  };
  const current = request();
  const planned = plan && 'key' in current && plan.key === current.key ? plan.step : undefined;

  /** A dry run has a key of its own; the run itself the confirmation's (`key`). */
  const send = async (dryRun: boolean, key?: string) => {
    if (inFlight.current) return; // a double click sends once
    const r = request();
    if ('field' in r) {
      setErrors({ [r.field]: r.message });
      return;
    }
    inFlight.current = true;
    setBusy(true);
    setErrors({});
    try {
      const step = await api<IncidentStep>(
        'POST',
        `/v1/incidents/${encodeURIComponent(incident.id)}/actions`,
        { ...r.body, dryRun },
        'application/json',
        key,
      );
      if (dryRun) setPlan({ key: r.key, step });
      else {
        setPlan(undefined);
        onDone(step);
      }
    } catch (e) {
      if (!dryRun) throw e; // the confirmation shows it
      setErrors(actionErrors(e));
    } finally {
      inFlight.current = false;
      setBusy(false);
    }
  };

  const waits =
    action === 'recover-ca' || (action === 'reissue' && role === 'operator')
      ? 'It waits for a second person to approve it before it runs.'
      : action === 'revoke-certificates' || action === 'suspend'
        ? 'Above the service’s approval threshold it waits for a second person to approve it.'
        : undefined;

  return (
    <section aria-labelledby="act-title" class="incident-action">
      <h2 id="act-title">Run an action</h2>
      <form
        class="inventory"
        aria-label="Run an action"
        onSubmit={(e) => {
          e.preventDefault();
          void send(true);
        }}
      >
        <div class="field">
          <label for="act-action">Action</label>
          <select id="act-action" value={action} onChange={(e) => setAction((e.target as HTMLSelectElement).value)}>
            {offered.map((a) => (
              <option value={a.name}>{a.name}</option>
            ))}
          </select>
        </div>
        {spec.takes.includes('reason') && (
          <div class="field">
            <label for="act-reason">Reason</label>
            <select id="act-reason" value={reason} onChange={(e) => setReason((e.target as HTMLSelectElement).value)}>
              {REVOCATION_REASONS.map((r) => (
                <option value={r}>{r}</option>
              ))}
            </select>
          </div>
        )}
        {spec.takes.includes('credentials') && (
          <fieldset class="field">
            <legend>Revoke</legend>
            <label>
              <input type="checkbox" checked={tokens} onChange={(e) => setTokens((e.target as HTMLInputElement).checked)} /> enrollment
              tokens
            </label>
            <label>
              <input type="checkbox" checked={sessionKeys} onChange={(e) => setSessionKeys((e.target as HTMLInputElement).checked)} />{' '}
              session keys
            </label>
          </fieldset>
        )}
        {spec.takes.includes('devices') && (
          <div class="field">
            <label for="act-devices">Only these devices</label>
            <input
              id="act-devices"
              value={devices}
              onInput={(e) => setDevices((e.target as HTMLInputElement).value)}
              aria-invalid={errors.devices ? 'true' : undefined}
              aria-describedby={errors.devices ? 'act-devices-error act-devices-help' : 'act-devices-help'}
            />
            <span class="help" id="act-devices-help">
              empty: all of the incident’s
            </span>
            {errors.devices && (
              <span id="act-devices-error" class="error field-error" role="alert">
                {errors.devices}
              </span>
            )}
          </div>
        )}
        {spec.takes.includes('extra') && (
          <div class="field">
            <label for="act-extra">More parameters (JSON)</label>
            <textarea
              id="act-extra"
              rows={2}
              value={extra}
              onInput={(e) => setExtra((e.target as HTMLTextAreaElement).value)}
              aria-invalid={errors.extra ? 'true' : undefined}
              aria-describedby={errors.extra ? 'act-extra-error' : undefined}
            />
            {errors.extra && (
              <span id="act-extra-error" class="error field-error" role="alert">
                {errors.extra}
              </span>
            )}
          </div>
        )}
        {(errors.form || errors.action || errors.reason) && (
          <p class="error" role="alert">
            {errors.form ?? errors.action ?? errors.reason}
          </p>
        )}
        <div class="actions">
          <button type="submit" disabled={busy}>
            Dry run
          </button>
          <button type="button" class="danger" disabled={busy || !planned} onClick={() => setConfirming(true)}>
            Run…
          </button>
        </div>
        {!planned && <p class="help">Run is offered after a dry run of the same parameters.</p>}
      </form>
      {planned && (
        <section aria-labelledby="plan-title" class="plan" data-testid="plan">
          <h3 id="plan-title">
            Dry run: {planned.action} would touch {planned.touchedCount}
          </h3>
          <p class="help">Nothing was changed. The dry run is step #{planned.seq} of the timeline.</p>
          {planned.touched.length > 0 && (
            <ul class="touched">
              {planned.touched.slice(0, 50).map((t) => (
                <li>
                  {t.type} <code>{t.id}</code>
                </li>
              ))}
              {planned.touchedCount > 50 && <li>… and {planned.touchedCount - 50} more</li>}
            </ul>
          )}
          {waits && <p>{waits}</p>}
        </section>
      )}
      {confirming && planned && (
        <ConfirmDialog
          title={`Run ${planned.action} in incident ${incident.title}`}
          deviceId={incident.id}
          noun="incident id"
          confirmLabel="Run"
          onConfirm={async (key) => {
            try {
              await send(false, key);
            } catch (e) {
              throw new Error(reasonOf(e));
            }
          }}
          onClose={() => setConfirming(false)}
        >
          <p>
            {planned.action} in incident <code>{incident.id}</code> touches <strong>{planned.touchedCount}</strong> (
            {[...new Set(planned.touched.map((t) => t.type))].join(', ') || 'nothing'}), as its dry run listed.
          </p>
          {waits && <p>{waits}</p>}
        </ConfirmDialog>
      )}
    </section>
  );
}

const actionErrors = (e: unknown): Partial<Record<ActionField, string>> => {
  if (!(e instanceof ApiError)) return { form: reasonOf(e) };
  for (const f of ['devices', 'reason', 'action'] as const) if (e.fields[f]) return { [f]: e.fields[f] };
  if (Object.keys(e.fields).length)
    return {
      extra: Object.entries(e.fields)
        .map(([k, v]) => `${k}: ${v}`)
        .join('; '),
    };
  if (/^not targets of incident/.test(e.detail)) return { devices: e.detail };
  if (/^action .* takes no /.test(e.detail)) return { extra: e.detail };
  return { form: e.detail || e.title };
};

/** Closes the incident with a summary; refused while a step runs or waits, or a failed step was not retried (unless forced). */
function CloseForm({ incident, onClosed }: { incident: Incident; onClosed: () => void }) {
  const [summary, setSummary] = useState('');
  const [force, setForce] = useState(false);
  const [errors, setErrors] = useState<{ summary?: string; form?: string }>({});
  const [busy, setBusy] = useState(false);
  const inFlight = useRef(false);
  const intent = useRef(new Intent()).current; // the close's Idempotency-Key, until it is closed
  const submit = async (e: Event) => {
    e.preventDefault();
    if (inFlight.current) return;
    if (!summary.trim()) {
      setErrors({ summary: 'Write a summary: what happened and what was done.' });
      return;
    }
    inFlight.current = true;
    setBusy(true);
    setErrors({});
    try {
      await api(
        'POST',
        `/v1/incidents/${encodeURIComponent(incident.id)}/close`,
        { summary, ...(force ? { force: true } : {}) },
        'application/json',
        intent,
      );
      onClosed();
    } catch (err) {
      if (err instanceof ApiError && err.fields.summary) setErrors({ summary: err.fields.summary });
      else setErrors({ form: reasonOf(err) });
    } finally {
      inFlight.current = false;
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="close-title">
      <h2 id="close-title">Close the incident</h2>
      <form class="inventory" aria-label="Close the incident" onSubmit={submit} noValidate>
        <div class="field wide">
          <label for="close-summary">Summary</label>
          <textarea
            id="close-summary"
            rows={3}
            maxLength={10000}
            value={summary}
            onInput={(e) => setSummary((e.target as HTMLTextAreaElement).value)}
            aria-invalid={errors.summary ? 'true' : undefined}
            aria-describedby={errors.summary ? 'close-summary-error' : undefined}
          />
          {errors.summary && (
            <span id="close-summary-error" class="error field-error" role="alert">
              {errors.summary}
            </span>
          )}
        </div>
        <label>
          <input type="checkbox" checked={force} onChange={(e) => setForce((e.target as HTMLInputElement).checked)} /> close although a
          failed step was never retried
        </label>
        {errors.form && (
          <p class="error" role="alert">
            {errors.form}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {busy ? 'Closing…' : 'Close incident'}
        </button>
      </form>
    </section>
  );
}

/** What an action hands out once (reissue's enrollment tokens): shown here until dismissed or the page is left, never stored. */
export function Secrets({ secrets, onDismiss }: { secrets: Record<string, unknown>; onDismiss: () => void }) {
  return (
    <section class="secrets note" aria-labelledby="secrets-title">
      <h2 id="secrets-title">Shown once</h2>
      <p>Copy these now: the service does not keep them and this page forgets them when you leave it.</p>
      <pre>{JSON.stringify(secrets, null, 2)}</pre>
      <button type="button" onClick={onDismiss}>
        I have copied them
      </button>
    </section>
  );
}
