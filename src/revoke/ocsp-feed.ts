import type pg from 'pg';
import type { Logger } from 'pino';
import { listenTo, type NotificationFeed } from '../store/notifications.js';
import { OCSP_CHANNEL } from '../store/ocsp-store.js';
import type { OcspResponder } from './ocsp-responder.js';

/**
 * With replicas (PostgreSQL), the OCSP cache starts off: other replicas' revocations arrive as
 * notifications, and while the feed is down the responder answers from the database.
 */
export function followReplicaRevocations(
  ocsp: Pick<OcspResponder, 'cache' | 'forgetRemote' | 'feedState'>,
  connection: pg.ClientConfig,
  logger: Pick<Logger, 'warn'>,
): NotificationFeed {
  ocsp.cache.setEnabled(false);
  return listenTo(connection, OCSP_CHANNEL, {
    onMessage: (payload) => ocsp.forgetRemote(payload),
    onState: (listening) => {
      ocsp.feedState(listening);
      if (!listening) logger.warn('OCSP change feed lost: answering from the database until it is back');
    },
    onError: (e) => logger.warn({ err: e }, 'OCSP change feed error'),
  });
}
