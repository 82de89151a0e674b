import type { Response } from 'express';
import type { ActorContext } from '../ca/hierarchy.js';
import { actorOf, type Principal } from './auth.js';

/** Who is acting and under which request id: what every audit entry records. */
export function ctxOf(res: Response): ActorContext {
  const p = res.locals.principal as Principal;
  return { actor: actorOf(p), requestId: res.locals.requestId as string };
}
