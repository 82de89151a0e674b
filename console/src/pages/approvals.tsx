import { useEffect, useRef, useState } from 'preact/hooks';
import { api, APPROVAL_STATUSES, can, fmtTime, reasonOf, type Approval, type Page, type Session } from '../api.js';
import { navigate } from '../router.js';
import { ConfirmDialog } from './confirm.js';
import { Secrets } from './incident.js';

/** How often the list is read again while shown, so a proposal made elsewhere appears. */
const POLL_MS = 5000;

const approvalsUrl = (status: string) =>
  status === 'pending' ? '/console/approvals' : `/console/approvals?status=${encodeURIComponent(status)}`;

/**
 * Proposals of the two-person rule: waiting ones by default. A second person whose role the action
 * admits approves or rejects; the proposer sees their own but is offered neither (the API refuses both).
 */
export function Approvals({ query, session }: { query: URLSearchParams; session: Session }) {
  const status = query.get('status') ?? 'pending';
  const [page, setPage] = useState<Page<Approval>>();
  const [error, setError] = useState<string>();
  const [reload, setReload] = useState(0);
  const [notice, setNotice] = useState<string>();
  const [secrets, setSecrets] = useState<Record<string, unknown>>();
  const [deciding, setDeciding] = useState<{ approval: Approval; how: 'approve' | 'reject' }>();

  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      const q = new URLSearchParams({ limit: '100' });
      if (status !== 'any') q.set('status', status);
      try {
        const p = await api<Page<Approval>>('GET', `/v1/approvals?${q}`);
        if (!live) return;
        setPage(p);
        setError(undefined);
        timer = setTimeout(load, POLL_MS);
      } catch (e) {
        if (live) setError(reasonOf(e));
      }
    };
    void load();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [status, reload]);

  const decided = (a: Approval) => {
    setNotice(
      a.status === 'executed'
        ? `Approved: ${a.action} ran (${a.summary}).`
        : a.status === 'failed'
          ? `Approved, but the action failed: ${a.error?.message ?? 'no reason given'}.`
          : a.status === 'rejected'
            ? `Rejected: ${a.summary}.`
            : `${a.id} is ${a.status}.`,
    );
    setSecrets(a.secrets);
    setReload((n) => n + 1);
  };

  return (
    <section aria-labelledby="approvals-title">
      <h1 id="approvals-title">Approvals</h1>
      <p class="help">Actions that wait for a second person. Nobody approves or rejects their own proposal.</p>
      {notice && (
        <p class="note" role="status">
          {notice}
        </p>
      )}
      {secrets && <Secrets secrets={secrets} onDismiss={() => setSecrets(undefined)} />}
      <form
        class="filters"
        aria-label="Filter approvals"
        key={status}
        onSubmit={(e) => {
          e.preventDefault();
          navigate(approvalsUrl(String(new FormData(e.currentTarget as HTMLFormElement).get('status') ?? 'pending')));
        }}
      >
        <div class="field">
          <label for="a-status">Show</label>
          <select id="a-status" name="status" value={status}>
            {APPROVAL_STATUSES.map((s) => (
              <option value={s}>{s}</option>
            ))}
            <option value="any">any</option>
          </select>
        </div>
        <button type="submit">Show approvals</button>
      </form>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {page &&
        (page.items.length === 0 ? (
          <p>No {status === 'any' ? '' : `${status} `}proposals.</p>
        ) : (
          <ul class="approvals">
            {page.items.map((a) => {
              const own = a.proposedBy.keyId === session.keyId;
              const mayDecide = a.status === 'pending' && can.decide(session.role, a, session.keyId);
              return (
                <li key={a.id} class="approval" data-approval={a.id}>
                  <h2 id={`ap-${a.id}`}>
                    {a.action} <span class={`status status-${a.status}`}>{a.status}</span>
                  </h2>
                  <p class="approval-summary">{a.summary}</p>
                  <dl class="facts">
                    <dt>Proposal</dt>
                    <dd>
                      <code>{a.id}</code>
                    </dd>
                    <dt>Proposed</dt>
                    <dd>
                      {fmtTime(a.proposedAt)} by {a.proposedBy.name} ({a.proposedBy.role}){own ? ' — you' : ''}
                    </dd>
                    {a.note && (
                      <>
                        <dt>Note</dt>
                        <dd class="prose">{a.note}</dd>
                      </>
                    )}
                    {a.status === 'pending' && (
                      <>
                        <dt>Expires</dt>
                        <dd>{fmtTime(a.expiresAt)}</dd>
                      </>
                    )}
                    {a.decidedBy && (
                      <>
                        <dt>Decided</dt>
                        <dd>
                          {fmtTime(a.decidedAt)} by {a.decidedBy.name} ({a.decidedBy.role})
                        </dd>
                      </>
                    )}
                    {a.reason && (
                      <>
                        <dt>Reason</dt>
                        <dd class="prose">{a.reason}</dd>
                      </>
                    )}
                    {a.error && (
                      <>
                        <dt>Error</dt>
                        <dd class="error">{a.error.message}</dd>
                      </>
                    )}
                  </dl>
                  {a.status === 'pending' && own && <p class="help">Your proposal: a second person approves or rejects it.</p>}
                  {mayDecide && (
                    <div class="actions">
                      <button type="button" class="danger" onClick={() => setDeciding({ approval: a, how: 'approve' })}>
                        Approve…
                      </button>
                      <button type="button" onClick={() => setDeciding({ approval: a, how: 'reject' })}>
                        Reject…
                      </button>
                    </div>
                  )}
                </li>
              );
            })}
          </ul>
        ))}
      {deciding && <Decide approval={deciding.approval} how={deciding.how} onDecided={decided} onClose={() => setDeciding(undefined)} />}
    </section>
  );
}

function Decide(props: { approval: Approval; how: 'approve' | 'reject'; onDecided: (a: Approval) => void; onClose: () => void }) {
  const { approval: a, how } = props;
  const [reason, setReason] = useState('');
  const inFlight = useRef(false);
  return (
    <ConfirmDialog
      title={how === 'approve' ? `Approve ${a.action}` : `Reject ${a.action}`}
      deviceId={a.id}
      noun="proposal id"
      confirmLabel={how === 'approve' ? 'Approve and run' : 'Reject'}
      onConfirm={async (key) => {
        if (inFlight.current) return;
        inFlight.current = true;
        try {
          const done = await api<Approval>(
            'POST',
            `/v1/approvals/${encodeURIComponent(a.id)}/${how}`,
            how === 'reject' && reason.trim() ? { reason: reason.trim() } : undefined,
            'application/json',
            key,
          );
          props.onDecided(done);
        } catch (e) {
          throw new Error(reasonOf(e));
        } finally {
          inFlight.current = false;
        }
      }}
      onClose={props.onClose}
    >
      <p>
        {a.summary}. Proposed by {a.proposedBy.name} ({a.proposedBy.role}).
      </p>
      {how === 'approve' ? (
        <p>Approving runs it at once, with you as its actor.</p>
      ) : (
        <>
          <label for="reject-reason">Reason (optional)</label>
          <input id="reject-reason" maxLength={1000} value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
        </>
      )}
    </ConfirmDialog>
  );
}
