import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { newIdempotencyKey } from '../api.js';

/**
 * A destructive action's confirmation: a modal <dialog> (focus stays inside, Escape cancels) that
 * names the device (or the incident, the proposal: `noun`) and runs only once its id is typed. The confirm button is disabled while the
 * action runs, so a double click cannot run it twice; and the dialog makes one Idempotency-Key when it opens, handed to `onConfirm`
 * for its request, so a confirmation tried again (after an error, a lost answer) is the same intent to the API, which runs it once.
 */
export function ConfirmDialog(props: {
  title: string;
  deviceId: string;
  /** What the typed id names: `device id` unless said. */
  noun?: string;
  confirmLabel: string;
  children?: ComponentChildren;
  /** Runs the action; its request carries `idempotencyKey` (the same for every try in this dialog). */
  onConfirm: (idempotencyKey: string) => Promise<void>;
  onClose: () => void;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  const input = useRef<HTMLInputElement>(null);
  const [typed, setTyped] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  // One intent per dialog opened: made once, sent with every try.
  const intentKey = useRef(newIdempotencyKey());

  useEffect(() => {
    const d = dialog.current!;
    const opener = document.activeElement as HTMLElement | null;
    d.showModal();
    input.current?.focus();
    return () => opener?.focus();
  }, []);

  const confirm = async (e: Event) => {
    e.preventDefault();
    if (typed !== props.deviceId || busy) return;
    setBusy(true);
    setError(undefined);
    try {
      await props.onConfirm(intentKey.current);
      dialog.current?.close();
      props.onClose();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
      setBusy(false);
    }
  };

  return (
    <dialog ref={dialog} aria-labelledby="confirm-title" aria-describedby="confirm-what" onClose={props.onClose} class="confirm">
      <form onSubmit={confirm}>
        <h2 id="confirm-title">{props.title}</h2>
        <div id="confirm-what">{props.children}</div>
        <label for="confirm-id">
          Type the {props.noun ?? 'device id'} <code>{props.deviceId}</code> to confirm
        </label>
        <input
          id="confirm-id"
          ref={input}
          value={typed}
          autocomplete="off"
          spellcheck={false}
          onInput={(e) => setTyped((e.target as HTMLInputElement).value)}
        />
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <div class="actions">
          <button type="button" onClick={() => dialog.current?.close()}>
            Cancel
          </button>
          <button type="submit" class="danger" disabled={typed !== props.deviceId || busy}>
            {busy ? 'Working…' : props.confirmLabel}
          </button>
        </div>
      </form>
    </dialog>
  );
}
