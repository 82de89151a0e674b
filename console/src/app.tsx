import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, can, setCsrfToken, whenSignedOut, type Session } from './api.js';
import { navigate, onLink, useLocation } from './router.js';
import { SignIn } from './pages/sign-in.js';
import { Fleet } from './pages/fleet.js';
import { DevicePage } from './pages/device.js';
import { Incidents } from './pages/incidents.js';
import { IncidentPage } from './pages/incident.js';
import { Approvals } from './pages/approvals.js';
import { Provisioning } from './pages/provisioning.js';
import { Revocation } from './pages/revocation.js';
import { canPosture, Posture } from './pages/posture.js';
import { Events } from './pages/events.js';
import { Audit } from './pages/audit.js';

type State = { kind: 'loading' } | { kind: 'signed-out'; reason?: string } | { kind: 'signed-in'; session: Session };

export function App() {
  const [state, setState] = useState<State>({ kind: 'loading' });
  const loc = useLocation();

  useEffect(() => {
    whenSignedOut(() => {
      setCsrfToken(undefined);
      setState({ kind: 'signed-out', reason: 'Your session has ended. Sign in again.' });
    });
    api<Session>('GET', '/v1/console/session')
      .then((session) => {
        setCsrfToken(session.csrfToken);
        setState({ kind: 'signed-in', session });
      })
      .catch(() => setState({ kind: 'signed-out' }));
  }, []);

  if (state.kind === 'loading') return <p class="loading">Loading…</p>;
  if (state.kind === 'signed-out')
    return (
      <SignIn
        reason={state.reason}
        onSignedIn={(session) => {
          setCsrfToken(session.csrfToken);
          setState({ kind: 'signed-in', session });
          if (!loc.path.startsWith('/console/')) navigate('/console/', { replace: true });
        }}
      />
    );
  return (
    <Shell
      session={state.session}
      onSignOut={async () => {
        try {
          await api('DELETE', '/v1/console/session');
        } catch (e) {
          if (!(e instanceof ApiError)) throw e;
        }
        setCsrfToken(undefined);
        setState({ kind: 'signed-out', reason: 'You have signed out.' });
      }}
    />
  );
}

/** The page a path names; `nav` is the navigation entry it belongs to. */
function route(path: string): {
  page: 'fleet' | 'device' | 'provisioning' | 'incidents' | 'incident' | 'approvals' | 'revocation' | 'posture' | 'events' | 'audit';
  id?: string;
  title: string;
  nav: string;
} {
  const device = /^\/console\/devices\/([^/]+)$/.exec(path);
  if (device) return { page: 'device', id: decodeURIComponent(device[1]!), title: 'Device', nav: 'fleet' };
  const incident = /^\/console\/incidents\/([^/]+)$/.exec(path);
  if (incident) return { page: 'incident', id: decodeURIComponent(incident[1]!), title: 'Incident', nav: 'incidents' };
  if (/^\/console\/incidents\/?$/.test(path)) return { page: 'incidents', title: 'Incidents', nav: 'incidents' };
  if (/^\/console\/approvals\/?$/.test(path)) return { page: 'approvals', title: 'Approvals', nav: 'approvals' };
  if (/^\/console\/provisioning\/?$/.test(path)) return { page: 'provisioning', title: 'Provisioning', nav: 'provisioning' };
  if (/^\/console\/revocation\/?$/.test(path)) return { page: 'revocation', title: 'Revocation health', nav: 'revocation' };
  if (/^\/console\/posture\/?$/.test(path)) return { page: 'posture', title: 'Posture', nav: 'posture' };
  if (/^\/console\/events\/?$/.test(path)) return { page: 'events', title: 'Security events', nav: 'events' };
  if (/^\/console\/audit\/?$/.test(path)) return { page: 'audit', title: 'Audit log', nav: 'audit' };
  return { page: 'fleet', title: 'Fleet', nav: 'fleet' };
}

function Shell({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const loc = useLocation();
  const main = useRef<HTMLElement>(null);
  const r = route(loc.path);
  const role = session.role;

  // Focus management: after a navigation, focus the page's heading region so screen readers announce it.
  useEffect(() => {
    document.title = `${r.title} · mqtt-ca console`;
    main.current?.focus();
  }, [loc.path]);

  const links: [string, string, string][] = [
    ['fleet', '/console/', 'Fleet'],
    ['provisioning', '/console/provisioning', 'Provisioning'],
  ];
  if (can.readIncidents(role)) links.push(['incidents', '/console/incidents', 'Incidents']);
  if (can.readApprovals(role)) links.push(['approvals', '/console/approvals', 'Approvals']);
  if (can.readRevocationHealth(role)) links.push(['revocation', '/console/revocation', 'Revocation']);
  if (canPosture.read(role)) links.push(['posture', '/console/posture', 'Posture']);
  if (can.readEvents(role)) links.push(['events', '/console/events', 'Events']);
  if (can.readAudit(role)) links.push(['audit', '/console/audit', 'Audit']);
  const refused =
    ((r.page === 'incidents' || r.page === 'incident') && !can.readIncidents(role)) ||
    (r.page === 'approvals' && !can.readApprovals(role)) ||
    (r.page === 'revocation' && !can.readRevocationHealth(role)) ||
    (r.page === 'posture' && !canPosture.read(role)) ||
    (r.page === 'events' && !can.readEvents(role)) ||
    (r.page === 'audit' && !can.readAudit(role));

  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">mqtt-ca console</span>
        <nav aria-label="Main">
          <ul>
            {links.map(([key, href, label]) => (
              <li>
                <a href={href} aria-current={r.nav === key ? 'page' : undefined} onClick={(e) => onLink(e, href)}>
                  {label}
                </a>
              </li>
            ))}
            {/* Pages of later slices (revocation health, posture, events) are offered here by role as they land. */}
          </ul>
        </nav>
        <div class="who">
          <span>
            {session.name} <span class="role">({session.role})</span>
          </span>
          <button type="button" onClick={onSignOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        {refused ? (
          <section>
            <h1>{r.title}</h1>
            <p class="error" role="alert">
              The {role} role does not read this page.
            </p>
          </section>
        ) : r.page === 'device' ? (
          <DevicePage id={r.id!} role={role} />
        ) : r.page === 'incident' ? (
          <IncidentPage id={r.id!} role={role} />
        ) : r.page === 'incidents' ? (
          <Incidents query={loc.query} role={role} />
        ) : r.page === 'provisioning' ? (
          <Provisioning query={loc.query} role={role} />
        ) : r.page === 'revocation' ? (
          <Revocation />
        ) : r.page === 'approvals' ? (
          <Approvals query={loc.query} session={session} />
        ) : r.page === 'posture' ? (
          <Posture role={role} />
        ) : r.page === 'events' ? (
          <Events query={loc.query} />
        ) : r.page === 'audit' ? (
          <Audit query={loc.query} />
        ) : (
          <Fleet query={loc.query} />
        )}
      </main>
    </div>
  );
}
