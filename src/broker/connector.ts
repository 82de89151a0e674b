export type BrokerAction = 'disconnect' | 'block' | 'unblock' | 'notify';
export interface BrokerEffect { clientId: string; action: BrokerAction; applied: boolean; confirmed: boolean; detail?: string }
export interface BrokerResult { connector: string; effects: BrokerEffect[] }
export interface BrokerConnector {
  readonly name: string;
  disconnect(clientIds: string[], reason: string): Promise<BrokerResult>;
  block(clientIds: string[], reason: string): Promise<BrokerResult>;
  unblock(clientIds: string[], reason: string): Promise<BrokerResult>;
  notify(event: { kind: string; subject: string; details?: Record<string, unknown> }): Promise<BrokerResult>;
  close(): Promise<void>;
}
export class BrokerConnectors {
  constructor(private readonly connectors: BrokerConnector[]) {}
  list(): BrokerConnector[] {
    return this.connectors;
  }
}
