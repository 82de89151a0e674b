import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, type Session } from '../api.js';

/** Sign-in: an API key exchanged for a session. The key leaves the page's memory as soon as it is sent. */
export function SignIn({ reason, onSignedIn }: { reason?: string | undefined; onSignedIn: (s: Session) => void }) {
  const input = useRef<HTMLInputElement>(null);
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    document.title = 'Sign in · mqtt-ca console';
    input.current?.focus();
  }, []);

  const submit = async (e: Event) => {
    e.preventDefault();
    const el = input.current!;
    const apiKey = el.value;
    if (!apiKey) {
      setError('Enter an API key.');
      el.focus();
      return;
    }
    setBusy(true);
    setError(undefined);
    try {
      const session = await api<Session>('POST', '/v1/console/session', { apiKey });
      el.value = '';
      onSignedIn(session);
    } catch (err) {
      setError(err instanceof ApiError ? err.detail || err.title : 'The service did not answer.');
      setBusy(false);
      el.select();
      el.focus();
    }
  };

  return (
    <main class="sign-in" id="main">
      <h1>mqtt-ca console</h1>
      {reason && (
        <p class="note" role="status">
          {reason}
        </p>
      )}
      <form onSubmit={submit} aria-describedby={error ? 'sign-in-error' : undefined} novalidate>
        <label for="api-key">API key</label>
        <input
          id="api-key"
          ref={input}
          name="apiKey"
          type="password"
          autocomplete="off"
          spellcheck={false}
          required
          aria-invalid={error ? 'true' : undefined}
          aria-describedby={error ? 'sign-in-error' : 'api-key-help'}
        />
        <p id="api-key-help" class="help">
          The key is exchanged for a session; it is not kept in the browser.
        </p>
        {error && (
          <p id="sign-in-error" class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
