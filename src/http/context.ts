import type { Response } from 'express';
import type { ActorContext } from '../shared/actor.js';
import type { ApprovalActor } from '../respond/approvals.js';
import { actorOf, type Principal } from './auth.js';

/** Who is acting and under which request id: what every audit entry records. */
export function ctxOf(res: Response): ActorContext {
  const p = res.locals.principal as Principal;
  return { actor: actorOf(p), requestId: res.locals.requestId as string };
}

/** ctxOf plus the acting API key and its role: what key lineage and the role ranking need. */
export function keyCtxOf(res: Response): ActorContext & { keyId: string; role: Principal['role'] } {
  const p = res.locals.principal as Principal;
  return { ...ctxOf(res), keyId: p.keyId, role: p.role };
}

/** ctxOf plus the API key, its owner's name and role: the two-person rule tells people apart by them. */
export function approverOf(res: Response): ApprovalActor {
  const p = res.locals.principal as Principal;
  return { ...ctxOf(res), keyId: p.keyId, name: p.name, role: p.role };
}
