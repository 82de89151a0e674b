import { DomainError, badRequest } from '../shared/errors.js';
import type { BrokerAction, BrokerConnector, BrokerEffect, BrokerEvent, BrokerResult } from './connector.js';

export interface RabbitMqConnectorOptions {
  /** The management API's base URL, e.g. http://broker:15672. */
  url: string;
  username: string;
  password: string;
  /** The vhost notices are published in (amq.topic, where the MQTT plugin publishes). */
  vhost: string;
  /** Notices go to the MQTT topic `${notifyTopic}/${kind}`. */
  notifyTopic: string;
  /** Each API call's timeout, and how long the connector waits to see a user's connections gone. */
  timeoutMs?: number;
  name?: string;
}

/** What block() keeps at the broker for unblock(): a global parameter per user, which survives restarts. */
interface SavedAccess {
  blockedAt: string;
  reason: string;
  permissions: { vhost: string; configure: string; write: string; read: string }[];
  topicPermissions: { vhost: string; exchange: string; write: string; read: string }[];
}

interface Connection {
  name: string;
  user?: string;
  client_properties?: { client_id?: unknown };
}

/** The global parameter holding a blocked user's permissions. */
export const blockedParameter = (user: string) => `mqtt-ca-blocked.${user}`;

/** An MQTT topic as the routing key RabbitMQ's MQTT plugin uses on amq.topic (a/b -> a.b, a.b -> a/b). */
export const mqttTopicToRoutingKey = (topic: string) => topic.replace(/[./]/g, (c) => (c === '/' ? '.' : '/'));

const enc = encodeURIComponent;

/**
 * RabbitMQ through its management HTTP API. With `ssl_cert_login` a device is the RabbitMQ user
 * named by its certificate CN, so every action is on that user:
 * - disconnect closes the user's connections (DELETE /api/connections/{name}, X-Reason), confirmed
 *   once the list shows none left;
 * - block saves the user's permissions and topic permissions in every vhost in a global parameter
 *   (`mqtt-ca-blocked.<user>`: it survives restarts and is kept only on the first block), deletes
 *   them, then closes the connections: a reconnect is refused (no access to the vhost). Confirmed
 *   when the permissions read back are gone and no connection of the user is listed;
 * - unblock puts the saved permissions back, reads them back, and deletes the parameter;
 * - notify publishes on amq.topic (the MQTT topic `${notifyTopic}/${kind}`), confirmed when routed.
 * The management plugin lists a connection only once it has collected its statistics
 * (collect_statistics_interval): one opened within that interval before a block is closed by no
 * one, but its next connection is refused. An unreachable API, or an answer other than the one
 * expected, is DomainError('Unavailable'). The password is never logged nor put in a message.
 */
export class RabbitMqConnector implements BrokerConnector {
  readonly name: string;
  private readonly base: string;
  private readonly auth: string;
  private readonly timeoutMs: number;

  constructor(private readonly opts: RabbitMqConnectorOptions) {
    this.name = opts.name ?? 'rabbitmq';
    this.base = opts.url.replace(/\/+$/, '');
    this.auth = `Basic ${Buffer.from(`${opts.username}:${opts.password}`).toString('base64')}`;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  async disconnect(clientIds: string[], reason: string): Promise<BrokerResult> {
    const ids = checkIds(clientIds);
    const effects: BrokerEffect[] = [];
    for (const u of ids) effects.push(await this.kick(u, 'disconnect', reason));
    return { connector: this.name, effects };
  }

  async block(clientIds: string[], reason: string): Promise<BrokerResult> {
    const ids = checkIds(clientIds);
    const effects: BrokerEffect[] = [];
    for (const u of ids) {
      const existing = await this.call<{ value: SavedAccess }>('GET', `/api/global-parameters/${enc(blockedParameter(u))}`, {
        allow404: true,
      });
      const permissions = await this.call<SavedAccess['permissions']>('GET', `/api/users/${enc(u)}/permissions`, { allow404: true });
      const topicPermissions = await this.call<SavedAccess['topicPermissions']>('GET', `/api/users/${enc(u)}/topic-permissions`, {
        allow404: true,
      });
      if (permissions === undefined) {
        effects.push({ ...(await this.kick(u, 'block', reason)), detail: 'no such RabbitMQ user: it cannot log in' });
        continue;
      }
      // The first block keeps what the user had; a second one (nothing left to take) keeps the first's record.
      if (!existing) {
        const saved: SavedAccess = {
          blockedAt: new Date().toISOString(),
          reason,
          permissions: permissions.map(({ vhost, configure, write, read }) => ({ vhost, configure, write, read })),
          topicPermissions: (topicPermissions ?? []).map(({ vhost, exchange, write, read }) => ({ vhost, exchange, write, read })),
        };
        await this.call('PUT', `/api/global-parameters/${enc(blockedParameter(u))}`, { body: { name: blockedParameter(u), value: saved } });
      }
      for (const p of permissions) await this.call('DELETE', `/api/permissions/${enc(p.vhost)}/${enc(u)}`, { allow404: true });
      for (const t of topicPermissions ?? [])
        await this.call('DELETE', `/api/topic-permissions/${enc(t.vhost)}/${enc(u)}`, { allow404: true });
      const left = (await this.call<unknown[]>('GET', `/api/users/${enc(u)}/permissions`, { allow404: true })) ?? [];
      const kicked = await this.kick(u, 'block', reason);
      if (left.length > 0) {
        effects.push({
          ...kicked,
          confirmed: false,
          detail: `permissions in ${left.length} vhost(s) still read back after their deletion`,
        });
        continue;
      }
      effects.push({
        ...kicked,
        detail: `no permission in any vhost (read back; the previous ones kept in global parameter ${blockedParameter(u)}); ${kicked.detail}`,
      });
    }
    return { connector: this.name, effects };
  }

  async unblock(clientIds: string[], reason: string): Promise<BrokerResult> {
    const ids = checkIds(clientIds);
    const effects: BrokerEffect[] = [];
    for (const u of ids) {
      const saved = await this.call<{ value: SavedAccess }>('GET', `/api/global-parameters/${enc(blockedParameter(u))}`, {
        allow404: true,
      });
      if (!saved) {
        effects.push({
          clientId: u,
          action: 'unblock',
          applied: true,
          confirmed: true,
          detail: 'not blocked: no saved permissions for this user',
        });
        continue;
      }
      const s = saved.value;
      for (const p of s.permissions)
        await this.call('PUT', `/api/permissions/${enc(p.vhost)}/${enc(u)}`, {
          body: { configure: p.configure, write: p.write, read: p.read },
        });
      for (const t of s.topicPermissions)
        await this.call('PUT', `/api/topic-permissions/${enc(t.vhost)}/${enc(u)}`, {
          body: { exchange: t.exchange, write: t.write, read: t.read },
        });
      const now = (await this.call<SavedAccess['permissions']>('GET', `/api/users/${enc(u)}/permissions`, { allow404: true })) ?? [];
      const restored = s.permissions.every((p) =>
        now.some((n) => n.vhost === p.vhost && n.configure === p.configure && n.write === p.write && n.read === p.read),
      );
      if (!restored) {
        effects.push({
          clientId: u,
          action: 'unblock',
          applied: true,
          confirmed: false,
          detail: 'the saved permissions do not all read back; the saved copy is kept',
        });
        continue;
      }
      await this.call('DELETE', `/api/global-parameters/${enc(blockedParameter(u))}`, { allow404: true });
      effects.push({
        clientId: u,
        action: 'unblock',
        applied: true,
        confirmed: true,
        detail: `permissions in ${s.permissions.length} vhost(s) restored as they were before the block (read back; reason: ${reason})`,
      });
    }
    return { connector: this.name, effects };
  }

  async notify(event: BrokerEvent): Promise<BrokerResult> {
    if (!event.kind || /[+#/\0]/.test(event.kind)) throw badRequest('an event kind must be a non-empty MQTT topic level (no + # /)');
    const topic = `${this.opts.notifyTopic}/${event.kind}`;
    const r = await this.call<{ routed?: boolean }>('POST', `/api/exchanges/${enc(this.opts.vhost)}/amq.topic/publish`, {
      body: {
        properties: { delivery_mode: 2, content_type: 'application/json' },
        routing_key: mqttTopicToRoutingKey(topic),
        payload: JSON.stringify({ ...event, at: new Date().toISOString() }),
        payload_encoding: 'string',
      },
    });
    const routed = r?.routed === true;
    return {
      connector: this.name,
      effects: [
        {
          clientId: event.subject,
          action: 'notify',
          applied: true,
          confirmed: routed,
          detail: routed
            ? `published on ${topic} (amq.topic), routed to a subscriber`
            : `published on ${topic} (amq.topic), but no subscriber's queue was bound to it`,
        },
      ],
    };
  }

  async close(): Promise<void> {}

  /** Closes the user's connections and waits (up to the timeout) for the list to show none. */
  private async kick(user: string, action: BrokerAction, reason: string): Promise<BrokerEffect> {
    const mine = await this.connectionsOf(user);
    for (const c of mine)
      await this.call('DELETE', `/api/connections/${enc(c.name)}`, {
        allow404: true,
        headers: { 'X-Reason': `mqtt-ca: ${reason}`.replace(/[^\x20-\x7e]/g, '?').slice(0, 200) },
      });
    const sessionsEnded = mine.map((c) => (typeof c.client_properties?.client_id === 'string' ? c.client_properties.client_id : c.name));
    const end = Date.now() + this.timeoutMs;
    let left = mine.length ? await this.connectionsOf(user) : [];
    while (left.length > 0 && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
      left = await this.connectionsOf(user);
    }
    if (left.length > 0)
      return {
        clientId: user,
        action,
        applied: true,
        confirmed: false,
        detail: `${left.length} connection(s) still listed after closing`,
        sessionsEnded,
      };
    return {
      clientId: user,
      action,
      applied: true,
      confirmed: true,
      detail: mine.length ? `closed ${mine.length} connection(s); none listed now` : 'no connection listed',
      ...(mine.length ? { sessionsEnded } : {}),
    };
  }

  private async connectionsOf(user: string): Promise<Connection[]> {
    const all = (await this.call<Connection[]>('GET', '/api/connections?columns=name,user,client_properties')) ?? [];
    return all.filter((c) => c.user === user);
  }

  private async call<T>(
    method: string,
    path: string,
    o: { body?: unknown; allow404?: boolean; headers?: Record<string, string> } = {},
  ): Promise<T | undefined> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers: {
          authorization: this.auth,
          ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...o.headers,
        },
        ...(o.body !== undefined ? { body: JSON.stringify(o.body) } : {}),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      const msg =
        e instanceof Error
          ? e.name === 'TimeoutError'
            ? 'no answer in time'
            : `${e.message}${e.cause instanceof Error ? ` (${e.cause.message})` : ''}`
          : String(e);
      throw unavailable(`broker connector ${this.name}: ${method} ${path.split('?')[0]}: ${msg}`);
    }
    const text = await res.text();
    if (res.status === 404 && o.allow404) return undefined;
    if (res.status < 200 || res.status >= 300) {
      const why = res.status === 401 ? 'the management API refused the credentials' : `answered ${res.status} ${text.slice(0, 200)}`;
      throw unavailable(`broker connector ${this.name}: ${method} ${path.split('?')[0]}: ${why}`);
    }
    if (!text) return undefined;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw unavailable(`broker connector ${this.name}: ${method} ${path.split('?')[0]}: not JSON`);
    }
  }
}

function checkIds(clientIds: string[]): string[] {
  const ids = [...new Set(clientIds)];
  if (ids.some((id) => typeof id !== 'string' || id.length === 0 || id.length > 256))
    throw badRequest('client ids must be non-empty strings');
  return ids;
}

const unavailable = (msg: string) => new DomainError('Unavailable', msg);
