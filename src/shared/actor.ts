/** Who is acting, for the audit log: `api-key:<id>`, `system:<job>`, ... and the request it came with. */
export interface ActorContext {
  actor: string;
  requestId?: string | undefined;
}
