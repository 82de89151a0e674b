import express, { Router, type Request } from 'express';
import type { Logger } from 'pino';
import type { BusEventIngestion } from '../../detect/bus-event-ingestion.js';
import { DomainError } from '../../shared/errors.js';
import { WEBHOOK_HEADERS } from '../../shared/webhook-signature.js';
import { operationContract } from '../openapi-contract.js';
import { sendProblem } from '../problem.js';

const header = (req: Request, name: string): string | undefined => {
  const v = req.headers[name];
  return typeof v === 'string' ? v : undefined;
};

const isJson = (req: Request) => {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  return type === 'application/json' || /^application\/[a-z0-9.+-]+\+json$/.test(type);
};

/**
 * POST /v1/bus-events: batches of broker events signed like the service's own webhooks (HMAC over
 * the exact bytes, so the body is read raw, up to its own limit, before the global JSON parser),
 * authenticated by the broker's secret instead of an API key. Mounted before API-key authentication
 * and the OpenAPI validator: events are checked one by one (a malformed one is dropped and counted,
 * not the batch refused); in test mode the answer is checked against openapi.yaml here.
 * 404 while no broker has a secret (BUS_EVENT_SECRETS), before the body is read.
 */
export function busEventRoutes(ingestion: BusEventIngestion, opts: { logger: Logger; validateResponses?: boolean | undefined }): Router {
  const r = Router();
  const contract = opts.validateResponses ? operationContract('/v1/bus-events', 'post') : undefined;
  r.post(
    '/v1/bus-events',
    (_req, res, next) => {
      if (ingestion.enabled) return next();
      sendProblem(res, { status: 404, title: 'Not found', detail: 'no broker may post bus events here (BUS_EVENT_SECRETS is not set)' });
    },
    express.raw({ type: () => true, limit: ingestion.bodyLimitBytes }),
    async (req, res, next) => {
      try {
        if (!isJson(req)) throw Object.assign(new Error('send application/json'), { status: 415 });
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const answer = await ingestion.receive(
          {
            broker: header(req, WEBHOOK_HEADERS.broker),
            timestamp: header(req, WEBHOOK_HEADERS.timestamp),
            signature: header(req, WEBHOOK_HEADERS.signature),
          },
          body,
        );
        const errors = contract?.responseErrors(202, 'application/json', answer) ?? [];
        if (errors.length) {
          opts.logger.error({ errors }, 'response breaks the API contract');
          return sendProblem(res, {
            status: 500,
            title: 'Internal error',
            detail: `the response breaks the API contract: ${errors.join('; ')}`,
          });
        }
        res.status(202).json(answer);
      } catch (e) {
        if (e instanceof DomainError && e.kind === 'Unauthenticated')
          res.setHeader('WWW-Authenticate', 'MqttCa-Signature realm="mqtt-ca bus-events"');
        next(e);
      }
    },
  );
  return r;
}
