import type { Response } from 'express';
import type { ActorContext } from '../ca/hierarchy.js';
import type { ApprovalActor } from '../respond/approvals.js';
import { actorOf, type Principal } from './auth.js';

/** Who is acting and under which request id: what every audit entry records. */
export function ctxOf(res: Response): ActorContext {
  const p = res.locals.principal as Principal;
  return { actor: actorOf(p), requestId: res.locals.requestId as string };
}

/** ctxOf plus the API key, its owner's name and role: the two-person rule tells people apart by them. */
export function approverOf(res: Response): ApprovalActor {
  const p = res.locals.principal as Principal;
  return { ...ctxOf(res), keyId: p.keyId, name: p.name, role: p.role };
}
