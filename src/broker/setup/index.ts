import { emqxSetup } from './emqx.js';
import { mosquittoSetup } from './mosquitto.js';
import { rabbitmqSetup } from './rabbitmq.js';
import { natsSetup } from './nats.js';
import type { BrokerSetupWriter } from './plan.js';

/** The brokers `mqtt-ca broker-setup --broker` writes a configuration for. */
export const BROKER_SETUPS = {
  mosquitto: mosquittoSetup,
  emqx: emqxSetup,
  rabbitmq: rabbitmqSetup,
  nats: natsSetup,
} satisfies Record<string, BrokerSetupWriter>;

export type BrokerKind = keyof typeof BROKER_SETUPS;
export const BROKER_KINDS = Object.keys(BROKER_SETUPS) as BrokerKind[];
export const isBrokerKind = (s: string): s is BrokerKind => Object.hasOwn(BROKER_SETUPS, s);
