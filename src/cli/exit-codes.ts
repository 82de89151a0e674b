/**
 * Exit codes of the daily-work commands (docs/cli.md, "Exit codes"), for scripts:
 * 0 done; 1 failed (the service unreachable or failing, 429, 5xx, an incident step that failed);
 * 2 refused: bad usage, or the API refused the input (400, 409, 413, 415, 422), or no confirmation;
 * 3 not found (404); 4 not allowed: no or a wrong API key (401), a role that may not (403);
 * 5 waits for a second person (202, or an incident step recorded as `proposed`).
 */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  forbidden: 4,
  needsApproval: 5,
} as const;

export function exitCodeForStatus(status: number): number {
  if (status === 202) return EXIT.needsApproval;
  if (status >= 200 && status < 300) return EXIT.ok;
  if (status === 401 || status === 403) return EXIT.forbidden;
  if (status === 404) return EXIT.notFound;
  if (status === 429 || status >= 500) return EXIT.failure;
  if (status >= 400) return EXIT.usage;
  return EXIT.failure;
}
