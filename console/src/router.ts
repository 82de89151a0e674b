import { useEffect, useState } from 'preact/hooks';

/** The console's location: a path under /console and its query (the Fleet's filters live there). */
export interface Location {
  path: string;
  query: URLSearchParams;
}

const read = (): Location => ({ path: window.location.pathname, query: new URLSearchParams(window.location.search) });

export function navigate(to: string, opts: { replace?: boolean } = {}): void {
  if (opts.replace) window.history.replaceState(null, '', to);
  else window.history.pushState(null, '', to);
  window.dispatchEvent(new Event('console:navigate'));
}

export function useLocation(): Location {
  const [loc, setLoc] = useState(read);
  useEffect(() => {
    const update = () => setLoc(read());
    window.addEventListener('popstate', update);
    window.addEventListener('console:navigate', update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener('console:navigate', update);
    };
  }, []);
  return loc;
}

/** A same-origin link that navigates without reloading (and still opens in a new tab with a modifier key). */
export function onLink(e: MouseEvent, to: string): void {
  if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(to);
}
