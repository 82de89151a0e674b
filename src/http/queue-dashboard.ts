import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { RequestHandler, Router } from 'express';
import type { Queue } from 'bullmq';
import type { ApiKeyService } from '../access/api-keys.js';
import { DomainError } from '../shared/errors.js';

export const DASHBOARD_PATH = '/admin/queues';

/**
 * Admins only: an admin API key as a bearer token, or as the password of HTTP Basic so a browser
 * can open the page (it asks once and sends it with every request the dashboard makes).
 */
export function adminOnly(apiKeys: ApiKeyService): RequestHandler {
  return async (req, res, next) => {
    const h = req.headers.authorization ?? '';
    let secret: string | undefined;
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(h);
    const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(h);
    if (bearer) secret = bearer[1];
    else if (basic) secret = Buffer.from(basic[1]!, 'base64').toString('utf8').split(':').slice(1).join(':');
    const key = secret ? await apiKeys.authenticate(secret) : undefined;
    if (!key) {
      res.setHeader('WWW-Authenticate', 'Basic realm="mqtt-ca queues", charset="UTF-8"');
      return next(new DomainError('Unauthenticated', 'an admin API key is required (Bearer, or as the HTTP Basic password)'));
    }
    if (key.role !== 'admin') return next(new DomainError('Forbidden', `the ${key.role} role may not open the queue dashboard`));
    next();
  };
}

/** The BullMQ dashboard (bull-board) over the service's queues. */
export function queueDashboard(queues: Queue[]): Router {
  const adapter = new ExpressAdapter();
  adapter.setBasePath(DASHBOARD_PATH);
  createBullBoard({ queues: queues.map((q) => new BullMQAdapter(q)), serverAdapter: adapter });
  return adapter.getRouter() as Router;
}
