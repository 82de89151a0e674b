import { useEffect, useRef, useState } from 'preact/hooks';
import {
  api,
  ApiError,
  Intent,
  can,
  REVOCATION_REASONS,
  reasonOf,
  type AuditEntry,
  type Certificate,
  type DeviceView,
  type EnrollmentToken,
  type Page,
  type Role,
  type SecurityEvent,
} from '../api.js';
import { onLink } from '../router.js';
import { ConfirmDialog } from './confirm.js';
import { TokenTable } from './provisioning.js';

const EDITABLE = [
  ['model', 'Model'],
  ['hardwareRevision', 'Hardware revision'],
  ['firmwareVersion', 'Firmware version'],
  ['site', 'Site'],
] as const;
type Editable = (typeof EDITABLE)[number][0];

const fmt = (iso: string | null | undefined) => (iso ? new Date(iso).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' : '—');

type Action = 'revoke' | 'hold' | 'release' | 'readmit' | 'decommission';

interface Loaded {
  device: DeviceView;
  certificates: Certificate[];
  tokens: EnrollmentToken[];
  audit: AuditEntry[] | undefined;
  events: SecurityEvent[] | undefined;
}

export function DevicePage({ id, role }: { id: string; role: Role }) {
  const [data, setData] = useState<Loaded>();
  const [error, setError] = useState<ApiError>();
  const [action, setAction] = useState<Action>();
  const [notice, setNotice] = useState<string>();
  const [reload, setReload] = useState(0);

  useEffect(() => {
    let live = true;
    const enc = encodeURIComponent(id);
    Promise.all([
      api<DeviceView>('GET', `/v1/devices/${enc}`),
      api<Page<Certificate>>('GET', `/v1/certificates?deviceId=${enc}&limit=100`),
      api<Page<EnrollmentToken>>('GET', `/v1/enrollment-tokens?deviceId=${enc}&limit=50`),
      can.readAudit(role)
        ? api<Page<AuditEntry>>('GET', `/v1/audit?targetType=device&targetId=${enc}&limit=50`).then((p) => p.items)
        : Promise.resolve(undefined),
      can.readEvents(role)
        ? api<Page<SecurityEvent>>('GET', `/v1/events?subject=${enc}&limit=50`).then((p) => p.items)
        : Promise.resolve(undefined),
    ])
      .then(
        ([device, certs, tokens, audit, events]) =>
          live && setData({ device, certificates: certs.items, tokens: tokens.items, audit, events }),
      )
      .catch((e) => live && setError(e instanceof ApiError ? e : new ApiError(0, 'The service did not answer', '', {})));
    return () => {
      live = false;
    };
  }, [id, reload]);

  if (error)
    return (
      <section>
        <h1>Device {id}</h1>
        <p class="error" role="alert">
          {error.title}
          {error.detail ? `: ${error.detail}` : ''}
        </p>
        <a href="/console/" onClick={(e) => onLink(e, '/console/')}>
          Back to the fleet
        </a>
      </section>
    );
  if (!data) return <p aria-busy="true">Loading device…</p>;

  const { device, certificates, tokens, audit, events } = data;
  const current = certificates.find((c) => c.serial === device.currentSerial);
  const onHold = current?.status === 'revoked' && current.revocation?.reason === 'certificateHold';
  const live = current?.status === 'issued';
  const mayRevoke = can.revoke(role);
  const newToken = `/console/provisioning?device=${encodeURIComponent(device.id)}`;
  const done = (msg: string) => {
    setNotice(msg);
    setReload((n) => n + 1);
  };

  return (
    <section aria-labelledby="device-title">
      <p>
        <a href="/console/" onClick={(e) => onLink(e, '/console/')}>
          ← Fleet
        </a>
      </p>
      <h1 id="device-title">
        Device <span class="device-id">{device.id}</span>{' '}
        <span class={`status status-${device.status}`} data-testid="device-status">
          {device.status}
        </span>
      </h1>
      {notice && (
        <p class="note" role="status">
          {notice}
        </p>
      )}

      <h2>Identity</h2>
      <dl class="facts">
        <dt>Kind</dt>
        <dd>{device.kind}</dd>
        <dt>Lot</dt>
        <dd>{device.lot ?? '—'}</dd>
        <dt>Current certificate</dt>
        <dd>{device.currentSerial ?? 'none'}</dd>
        {device.currentSerial && (
          <>
            <dt>OCSP</dt>
            <dd>
              <OcspLine serial={device.currentSerial} reload={reload} />
            </dd>
          </>
        )}
        <dt>Certificate ends</dt>
        <dd>{fmt(device.currentNotAfter)}</dd>
        <dt>Registered</dt>
        <dd>{fmt(device.createdAt)}</dd>
        <dt>Activated</dt>
        <dd>{fmt(device.activatedAt)}</dd>
        <dt>Suspended</dt>
        <dd>{fmt(device.suspendedAt)}</dd>
        <dt>Revoked</dt>
        <dd>{fmt(device.revokedAt)}</dd>
        <dt>Decommissioned</dt>
        <dd>{fmt(device.decommissionedAt)}</dd>
        <dt>Labels</dt>
        <dd>
          {Object.keys(device.labels).length === 0
            ? '—'
            : Object.entries(device.labels).map(([k, v]) => (
                <span class="label">
                  {k}={v}
                </span>
              ))}
        </dd>
      </dl>

      <Inventory
        device={device}
        editable={can.editDevice(role) && device.status !== 'decommissioned'}
        onSaved={() => done('Inventory saved.')}
      />

      {mayRevoke && (
        <section aria-labelledby="actions-title" class="device-actions">
          <h2 id="actions-title">Actions</h2>
          {live && (
            <button type="button" class="danger" onClick={() => setAction('revoke')}>
              Revoke certificate…
            </button>
          )}
          {live && (
            <button type="button" onClick={() => setAction('hold')}>
              Put on hold…
            </button>
          )}
          {onHold && (
            <button type="button" onClick={() => setAction('release')}>
              Release hold…
            </button>
          )}
          {device.status === 'revoked' && (
            <button type="button" onClick={() => setAction('readmit')}>
              Re-admit…
            </button>
          )}
          {device.status !== 'decommissioned' && (
            <button type="button" class="danger" onClick={() => setAction('decommission')}>
              Decommission…
            </button>
          )}
        </section>
      )}
      {action && (
        <ActionDialog
          action={action}
          device={device}
          serial={device.currentSerial}
          onClose={() => setAction(undefined)}
          onDone={(msg) => done(msg)}
        />
      )}

      <OnTheBus presence={device.presence} />

      <h2>Certificates</h2>
      {certificates.length === 0 ? (
        <p>No certificates.</p>
      ) : (
        <table class="certs">
          <caption class="visually-hidden">Certificates of {device.id}, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Serial</th>
              <th scope="col">Status</th>
              <th scope="col">Issuer</th>
              <th scope="col">Valid from</th>
              <th scope="col">Valid to</th>
              <th scope="col">Renewed from</th>
              <th scope="col">Revocation</th>
            </tr>
          </thead>
          <tbody>
            {certificates.map((c) => (
              <tr key={c.serial} aria-current={c.serial === device.currentSerial ? 'true' : undefined}>
                <th scope="row">
                  <code>{c.serial}</code>
                  {c.serial === device.currentSerial ? ' (current)' : ''}
                </th>
                <td>
                  <span class={`status status-${c.status}`}>{c.status}</span>
                </td>
                <td>{c.caId}</td>
                <td>{fmt(c.notBefore)}</td>
                <td>{fmt(c.notAfter)}</td>
                <td>{c.renewedFrom ? <code>{c.renewedFrom}</code> : '—'}</td>
                <td>{c.revocation ? `${c.revocation.reason}, ${fmt(c.revocation.revokedAt)}` : '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <section aria-labelledby="tokens-title">
        <h2 id="tokens-title">Enrollment tokens</h2>
        {tokens.length === 0 ? (
          <p>No token names this device{device.lot ? ` (a token of lot ${device.lot} may enroll it)` : ''}.</p>
        ) : (
          <TokenTable tokens={tokens} caption={`Enrollment tokens of ${device.id}, newest first`} />
        )}
        {can.provision(role) && device.kind === 'client' && (device.status === 'registered' || device.status === 'active') && (
          <a href={newToken} onClick={(e) => onLink(e, newToken)}>
            Create a token for this device…
          </a>
        )}
      </section>

      {events && (
        <>
          <h2>Security events</h2>
          {events.length === 0 ? (
            <p>No security events name this device.</p>
          ) : (
            <table class="events">
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">Kind</th>
                  <th scope="col">Severity</th>
                  <th scope="col">Source</th>
                  <th scope="col">Details</th>
                </tr>
              </thead>
              <tbody>
                {events.map((ev) => (
                  <tr key={ev.id}>
                    <td>{fmt(ev.at)}</td>
                    <td>{ev.kind}</td>
                    <td>{ev.severity}</td>
                    <td>{ev.source ?? '—'}</td>
                    <td>
                      <code>{JSON.stringify(ev.details)}</code>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}

      {audit && (
        <>
          <h2>Audit</h2>
          {audit.length === 0 ? (
            <p>No audit entries for this device.</p>
          ) : (
            <table class="audit">
              <thead>
                <tr>
                  <th scope="col">#</th>
                  <th scope="col">When</th>
                  <th scope="col">Who</th>
                  <th scope="col">What</th>
                  <th scope="col">Details</th>
                </tr>
              </thead>
              <tbody>
                {audit.map((a) => (
                  <tr key={a.seq}>
                    <td>{a.seq}</td>
                    <td>{fmt(a.at)}</td>
                    <td>{a.actor}</td>
                    <td>{a.action}</td>
                    <td>
                      <code>{JSON.stringify(a.details)}</code>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </section>
  );
}

/** GET /v1/certificates/{serial}/ocsp: what the service's OCSP responder signs for the certificate, read back. */
interface OcspAnswer {
  responseStatus: string;
  certStatus: 'good' | 'revoked' | 'unknown' | null;
  reason: string | null;
  revocationTime: string | null;
  producedAt: string | null;
  nextUpdate: string | null;
  source: string;
}

/** Where the responder found its answer, in words. */
const OCSP_SOURCES: Record<string, string> = {
  memory: "from the responder's memory",
  stored: 'the stored pre-signed response',
  signed: 'signed when asked',
};

/** What OCSP says of the current certificate: asked on arrival, after every action, and on demand. */
function OcspLine({ serial, reload }: { serial: string; reload: number }) {
  const [answer, setAnswer] = useState<OcspAnswer>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(true);
  const [asked, setAsked] = useState(0);

  useEffect(() => {
    let live = true;
    setBusy(true);
    api<OcspAnswer>('GET', `/v1/certificates/${encodeURIComponent(serial)}/ocsp`)
      .then((a) => {
        if (!live) return;
        setAnswer(a);
        setError(undefined);
      })
      .catch((e: unknown) => live && setError(reasonOf(e)))
      .finally(() => live && setBusy(false));
    return () => {
      live = false;
    };
  }, [serial, reload, asked]);

  const said =
    answer === undefined
      ? undefined
      : answer.responseStatus !== 'successful'
        ? `no status: the responder answered ${answer.responseStatus}`
        : `${answer.certStatus ?? 'unknown'}${answer.reason ? ` (${answer.reason})` : ''}`;
  return (
    <span class="ocsp">
      <span aria-live="polite" data-testid="ocsp-status">
        {error ? `could not ask: ${error}` : (said ?? 'asking…')}
      </span>
      {answer?.producedAt && (
        <span class="ocsp-detail">
          {' '}
          — signed {fmt(answer.producedAt)}
          {answer.revocationTime ? `, revoked at ${fmt(answer.revocationTime)}` : ''}, valid to {fmt(answer.nextUpdate)}
          {OCSP_SOURCES[answer.source] ? ` (${OCSP_SOURCES[answer.source]})` : ''}
        </span>
      )}{' '}
      <button type="button" disabled={busy} onClick={() => setAsked((n) => n + 1)}>
        Ask OCSP again
      </button>
    </span>
  );
}

/** The inventory fields; each refusal is shown next to the field the API's problem names. */
function Inventory({ device, editable, onSaved }: { device: DeviceView; editable: boolean; onSaved: () => void }) {
  const [errors, setErrors] = useState<Partial<Record<Editable | 'form', string>>>({});
  const [busy, setBusy] = useState(false);
  // One Idempotency-Key per edit saved: tried again after an error, the same; a new one once saved.
  const intent = useRef(new Intent()).current;

  const save = async (e: Event) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget as HTMLFormElement);
    const patch: Record<string, string | null> = {};
    for (const [k] of EDITABLE) {
      const v = String(data.get(k) ?? '').trim();
      const was = device[k] ?? '';
      if (v !== was) patch[k] = v === '' ? null : v;
    }
    if (Object.keys(patch).length === 0) {
      setErrors({ form: 'Nothing changed.' });
      return;
    }
    setBusy(true);
    setErrors({});
    try {
      await api('PATCH', `/v1/devices/${encodeURIComponent(device.id)}`, patch, 'application/json', intent);
      onSaved();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const next: Partial<Record<Editable | 'form', string>> = {};
      for (const [k] of EDITABLE) if (err.fields[k]) next[k] = err.fields[k];
      // A domain refusal names its field at the start of its detail ("site must be …").
      const named = EDITABLE.find(([k]) => err.detail.startsWith(`${k} `));
      if (named && !next[named[0]]) next[named[0]] = err.detail;
      if (Object.keys(next).length === 0) next.form = err.detail || err.title;
      setErrors(next);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="inventory-title">
      <h2 id="inventory-title">Inventory</h2>
      <form onSubmit={save} class="inventory" key={device.updatedAt}>
        {EDITABLE.map(([k, label]) => (
          <div class="field">
            <label for={`inv-${k}`}>{label}</label>
            <input
              id={`inv-${k}`}
              name={k}
              defaultValue={device[k] ?? ''}
              readOnly={!editable}
              aria-invalid={errors[k] ? 'true' : undefined}
              aria-describedby={errors[k] ? `inv-${k}-error` : undefined}
            />
            {errors[k] && (
              <span id={`inv-${k}-error`} class="error field-error" role="alert">
                {errors[k]}
              </span>
            )}
          </div>
        ))}
        {errors.form && (
          <p class="error" role="alert">
            {errors.form}
          </p>
        )}
        {editable && (
          <button type="submit" disabled={busy}>
            Save inventory
          </button>
        )}
      </form>
    </section>
  );
}

function ActionDialog(props: {
  action: Action;
  device: DeviceView;
  serial: string | null;
  onClose: () => void;
  onDone: (msg: string) => void;
}) {
  const { action, device, serial } = props;
  const [reason, setReason] = useState<string>('keyCompromise');
  const enc = encodeURIComponent(device.id);
  const run = async (key: string) => {
    const json = 'application/json';
    try {
      if (action === 'revoke') await api('POST', `/v1/certificates/${serial}/revoke`, { reason }, json, key);
      else if (action === 'hold') await api('POST', `/v1/certificates/${serial}/revoke`, { reason: 'certificateHold' }, json, key);
      else if (action === 'release') await api('POST', `/v1/certificates/${serial}/release`, undefined, json, key);
      else if (action === 'readmit') await api('POST', `/v1/devices/${enc}/readmit`, undefined, json, key);
      else await api('POST', `/v1/devices/${enc}/decommission`, undefined, json, key);
    } catch (e) {
      if (e instanceof ApiError) throw new Error(e.detail || e.title);
      throw e;
    }
    props.onDone(
      {
        revoke: `Certificate ${serial} revoked (${reason}).`,
        hold: `Certificate ${serial} is on hold.`,
        release: `Certificate ${serial} released.`,
        readmit: `Device ${device.id} re-admitted: it may be given a new enrollment token.`,
        decommission: `Device ${device.id} decommissioned.`,
      }[action],
    );
  };
  const title = {
    revoke: `Revoke the certificate of ${device.id}`,
    hold: `Put the certificate of ${device.id} on hold`,
    release: `Release the hold on ${device.id}`,
    readmit: `Re-admit ${device.id}`,
    decommission: `Decommission ${device.id}`,
  }[action];
  return (
    <ConfirmDialog
      title={title}
      deviceId={device.id}
      confirmLabel={{ revoke: 'Revoke', hold: 'Hold', release: 'Release', readmit: 'Re-admit', decommission: 'Decommission' }[action]}
      onConfirm={run}
      onClose={props.onClose}
    >
      {action === 'revoke' && (
        <>
          <p>
            Certificate <code>{serial}</code> is revoked at once: OCSP and the CRL say so before this returns. A revoked device cannot
            enroll or renew until it is re-admitted. keyCompromise also revokes every other certificate of the device.
          </p>
          <label for="revoke-reason">Reason</label>
          <select id="revoke-reason" value={reason} onChange={(e) => setReason((e.target as HTMLSelectElement).value)}>
            {REVOCATION_REASONS.map((r) => (
              <option value={r}>{r}</option>
            ))}
          </select>
        </>
      )}
      {action === 'hold' && (
        <p>
          Certificate <code>{serial}</code> is suspended (certificateHold) and the device with it, until released.
        </p>
      )}
      {action === 'release' && (
        <p>
          Certificate <code>{serial}</code> is valid again and the device active.
        </p>
      )}
      {action === 'readmit' && (
        <p>The device goes back to registered, so it can be given a new enrollment token; its revoked certificates stay revoked.</p>
      )}
      {action === 'decommission' && (
        <p>The device is taken out of service for good and its certificates are revoked (cessationOfOperation); this cannot be undone.</p>
      )}
    </ConfirmDialog>
  );
}

/** Where the bus watch last saw the device, per broker (docs/bus-watch.md#presence). */
function OnTheBus({ presence }: { presence: DeviceView['presence'] }) {
  return (
    <section aria-labelledby="bus-title">
      <h2 id="bus-title">On the bus</h2>
      {!presence || presence.length === 0 ? (
        <p>Not seen on a watched broker.</p>
      ) : (
        <table class="presence" data-testid="presence">
          <caption class="visually-hidden">The device on each broker, as the bus watch last saw it</caption>
          <thead>
            <tr>
              <th scope="col">Broker</th>
              <th scope="col">Now</th>
              <th scope="col">Last connect</th>
              <th scope="col">From</th>
              <th scope="col">Client id</th>
              <th scope="col">Last disconnect</th>
              <th scope="col">Sessions</th>
              <th scope="col">Last seen</th>
            </tr>
          </thead>
          <tbody>
            {presence.map((p) => (
              <tr key={p.broker} data-broker={p.broker}>
                <th scope="row">{p.broker}</th>
                <td>
                  <span class={`status ${p.connected ? 'status-active' : 'status-registered'}`}>
                    {p.connected ? 'connected' : 'not connected'}
                  </span>
                </td>
                <td>{fmt(p.lastConnectAt)}</td>
                <td>{p.source ? `${p.source.host}${p.source.port === null ? '' : `:${p.source.port}`}` : '—'}</td>
                <td>{p.clientId ?? '—'}</td>
                <td>
                  {p.lastDisconnectAt ? `${fmt(p.lastDisconnectAt)}${p.lastDisconnectReason ? `, ${p.lastDisconnectReason}` : ''}` : '—'}
                  {p.lastDisconnectDetail ? ` (${p.lastDisconnectDetail})` : ''}
                </td>
                <td>{p.sessions}</td>
                <td>{fmt(p.lastSeenAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
