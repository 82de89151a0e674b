// With several serve processes, only the one of slot 0 watches the bus (each would otherwise see
// every event of the $SYS log, and count windows apart). A broker's signed batch may reach any of
// them: the others take it (signature, replay guard, mapping) and hand the mapped events to the
// watching process, batched per turn of the event loop, so its presence and detectors see them all.
import type { BusEvent } from '../broker/bus-events.js';
import type { WebhookBusEventSource } from '../broker/webhook-bus-source.js';

/** In a serve process that does not watch: each source takes batches and hands their events on through `send`. */
export async function handOffEvents(sources: Iterable<WebhookBusEventSource>, send: (payload: unknown) => boolean): Promise<void> {
  for (const source of sources) {
    let batch: BusEvent[] = [];
    await source.start((e) => {
      if (batch.length === 0)
        setImmediate(() => {
          const events = batch;
          batch = [];
          if (!send({ broker: source.broker, events })) source.countDropped('handoff-failed', events.length);
        });
      batch.push(e);
    });
  }
}

/** In the watching process: events another process handed on, delivered through their broker's source (times revived). */
export function takeHandedOff(sources: ReadonlyMap<string, WebhookBusEventSource>, payload: unknown): void {
  if (!payload || typeof payload !== 'object') return;
  const { broker, events } = payload as { broker?: unknown; events?: unknown };
  const source = typeof broker === 'string' ? sources.get(broker) : undefined;
  if (!source || !Array.isArray(events)) return;
  source.deliver(events.map((e: BusEvent & { at: string | Date }) => ({ ...e, at: new Date(e.at) }) as BusEvent));
}
