import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, setCsrfToken, whenSignedOut, type Session } from './api.js';
import { navigate, onLink, useLocation } from './router.js';
import { SignIn } from './pages/sign-in.js';
import { Fleet } from './pages/fleet.js';
import { DevicePage } from './pages/device.js';
import { Provisioning } from './pages/provisioning.js';

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

function Shell({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const loc = useLocation();
  const main = useRef<HTMLElement>(null);
  const device = /^\/console\/devices\/([^/]+)$/.exec(loc.path);
  const provisioning = loc.path === '/console/provisioning';
  const title = device ? 'Device' : provisioning ? 'Provisioning' : 'Fleet';

  // Focus management: after a navigation, focus the page's heading region so screen readers announce it.
  useEffect(() => {
    document.title = `${title} · mqtt-ca console`;
    main.current?.focus();
  }, [loc.path]);

  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">mqtt-ca console</span>
        <nav aria-label="Main">
          <ul>
            <li>
              <a href="/console/" aria-current={title === 'Fleet' ? 'page' : undefined} onClick={(e) => onLink(e, '/console/')}>
                Fleet
              </a>
            </li>
            <li>
              <a
                href="/console/provisioning"
                aria-current={provisioning ? 'page' : undefined}
                onClick={(e) => onLink(e, '/console/provisioning')}
              >
                Provisioning
              </a>
            </li>
            {/* Pages of later slices (incidents, revocation health, posture, events) are offered here by role as they land. */}
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
        {device ? (
          <DevicePage id={decodeURIComponent(device[1]!)} role={session.role} />
        ) : provisioning ? (
          <Provisioning query={loc.query} role={session.role} />
        ) : (
          <Fleet query={loc.query} />
        )}
      </main>
    </div>
  );
}
