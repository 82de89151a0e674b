import type { IncidentKind } from '../shared/security-terms.js';
import type { ResponseAction } from '../shared/detection-rules.js';
import { pgJsonObject, pgText } from '../shared/pg-text.js';
import type { SourceBlocks } from './source-blocks.js';

/** What one broker action did, per connector: applied and confirmed per client, and the connectors that failed. */
export interface BrokerActionOutcome {
  /** Every connector answered and confirmed its effect on every client. */
  confirmed: boolean;
  connectors: {
    connector: string;
    effects: { clientId: string; applied: boolean; confirmed: boolean; detail?: string; sessionsEnded?: string[] }[];
  }[];
  failures: { connector: string; error: string }[];
  /** Why nothing was done (a broker's own identity, no connector configured). */
  skipped?: string;
}

/** What the automatic responses do beyond blocking a source; the composition root wires them to the services. */
export interface ResponsePorts {
  /** Puts the device's current certificate on hold (the device is suspended); null when it has none in use. */
  suspendDevice(deviceId: string): Promise<{ held: string | null }>;
  /** Opens an incident; `devices` are named only when they are in the inventory. */
  openIncident(input: { kind: IncidentKind; title: string; description: string; devices: string[] }): Promise<{ incidentId: string }>;
  /** Blocks the client identities at every broker (dynsec deny role, then a kick); never a broker's own identity. */
  blockClients(clientIds: string[], reason: string): Promise<BrokerActionOutcome>;
  /** Ends the client identities' sessions at every broker; never a broker's own identity. */
  disconnectClients(clientIds: string[], reason: string): Promise<BrokerActionOutcome>;
}

/** What a rule that fired knows when its actions run. */
export interface ResponseContext {
  rule: { name: string; raise: { kind: string }; incidentKind: string };
  /** The client address concerned, where known (block-source acts on it). */
  source?: string | undefined;
  /** The device or client identity concerned, where known (suspend-device, block-client, disconnect-client act on it). */
  identity?: string | undefined;
  /** Why, in words: "20 × connect within 60 s (rule ...)". */
  why: string;
  /** The incident open-incident opens: its title, the evidence for its description, the devices it names. */
  incident: { title: string; evidence: string; devices: string[] };
}

/** The longest incident description the responses write (the evidence is cut to fit). */
const MAX_DESCRIPTION = 8000;

/**
 * The one way detection runs a rule's actions, for the event rules (AutomaticResponses) and the
 * bus watch (BusDetectors): each action in turn, open-incident last so that the incident's
 * description carries what the others did. A failing action is reported in the outcome (and to
 * onError); it never stops the others and never throws.
 */
export class ResponseRunner {
  constructor(
    private readonly ports: ResponsePorts,
    private readonly blocks: SourceBlocks,
    private readonly onError: (e: unknown) => void = () => undefined,
  ) {}

  /** Blocks a source (the block-source response); returns the block's length in seconds. */
  blockSource(source: string): number {
    return this.blocks.block(source);
  }

  async run(actions: readonly ResponseAction[], ctx: ResponseContext): Promise<Record<string, unknown>> {
    const outcomes: Record<string, unknown> = {};
    const ordered = [...actions.filter((a) => a !== 'open-incident'), ...actions.filter((a) => a === 'open-incident')];
    for (const action of ordered) {
      try {
        outcomes[action] = await this.respond(action, ctx, outcomes);
      } catch (e) {
        this.onError(e);
        outcomes[action] = { error: e instanceof Error ? e.message : String(e) };
      }
    }
    return outcomes;
  }

  private async respond(action: ResponseAction, ctx: ResponseContext, before: Record<string, unknown>): Promise<unknown> {
    const reason = `detection: ${ctx.why}`;
    switch (action) {
      case 'block-source':
        return ctx.source ? { retryAfterSeconds: this.blocks.block(ctx.source) } : { skipped: 'no source address' };
      case 'suspend-device':
        return ctx.identity ? this.ports.suspendDevice(ctx.identity) : { held: null, status: 'no device' };
      case 'block-client':
        return ctx.identity ? this.ports.blockClients([ctx.identity], reason) : { skipped: 'no client identity' };
      case 'disconnect-client':
        return ctx.identity ? this.ports.disconnectClients([ctx.identity], reason) : { skipped: 'no client identity' };
      case 'open-incident': {
        const done = Object.keys(before).length ? `\nResponses: ${JSON.stringify(pgJsonObject(before))}` : '';
        const head = `Opened by detection: ${ctx.why}.${done}\nEvidence: `;
        const evidence = ctx.incident.evidence.slice(0, Math.max(0, MAX_DESCRIPTION - head.length));
        return this.ports.openIncident({
          kind: ctx.rule.incidentKind as IncidentKind,
          title: pgText(ctx.incident.title.slice(0, 200)),
          description: pgText(head + evidence),
          devices: ctx.incident.devices.map(pgText),
        });
      }
    }
  }
}
