// The bus detectors' block-client for real: a private Mosquitto 2.0 with mutual TLS and dynsec
// (seeded by broker-setup), its log read by MosquittoLogSource, devices on mqtt.js with
// certificates from this CA. A device that subscribes to many topics trips the topic-scan rule
// once; the rule blocks it at the broker through the connector (confirmed there: mosquitto_ctrl
// shows the deny role, its subscribe is refused) and opens an incident with the evidence, while
// the other devices carry on.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { dbTargets } from '../helpers/db.js';
import { until } from '../helpers/processes.js';
import { toolSkip } from '../helpers/tools.js';
import { dynsecCtrl, startConnectorBroker, type ConnectorBroker, type MosquittoTls } from '../helpers/mosquitto-tls.js';
import { MosquittoLogSource } from '../../src/broker/mosquitto-log-source.js';
import { BusDetectors } from '../../src/detect/bus-detectors.js';
import { ResponseRunner } from '../../src/detect/response-runner.js';
import { DetectionResponsePorts } from '../../src/detect/response-ports.js';
import { SourceBlocks } from '../../src/detect/source-blocks.js';
import { rulesSchema } from '../../src/shared/detection-rules.js';
import { systemClock } from '../../src/shared/clock.js';

const pglite = dbTargets.find((t) => t.name === 'pglite')!;

describe(
  'Bus detectors: topic-scan blocks the client at a real Mosquitto (mutual TLS, dynsec)',
  { skip: toolSkip('mosquitto') ?? toolSkip('mosquitto_ctrl') },
  () => {
    let rig: ConnectorBroker;
    let svc: ConnectorBroker['svc'];
    let broker: MosquittoTls;
    let source: MosquittoLogSource;
    let detectors: BusDetectors;
    let admin: ConnectorBroker['adminFiles'];
    const errors: unknown[] = [];
    const device = (id: string) => rig.device(id);

    before(async () => {
      rig = await startConnectorBroker(pglite, { devices: ['meter-1', 'meter-2'], fleet: ['meter-1', 'meter-2'] });
      ({ svc, broker, adminFiles: admin } = rig);
      const id = rig.identity;

      // What main.ts wires: the response ports with the broker connectors, one runner, the detectors.
      const ports = new DetectionResponsePorts({
        device: (deviceId) => svc.devices.get(deviceId),
        knownDevices: async (ids) =>
          (
            await Promise.all(
              ids.map((i) =>
                svc.devices.get(i).then(
                  (d) => ({ id: d.id, kind: d.kind }),
                  () => undefined,
                ),
              ),
            )
          ).filter((d) => d !== undefined),
        hold: (serial, input, ctx) => svc.revocations.revoke(serial, input, ctx),
        openIncident: (input, ctx) => svc.incidents.open(input, ctx),
        brokers: svc.brokers,
      });
      const rules = rulesSchema.parse([
        {
          name: 'scan',
          watch: 'topic-scan',
          per: 'client',
          distinctTopics: 5,
          windowSeconds: 60,
          raise: { kind: 'bus.topic-scan', severity: 'critical' },
          actions: ['block-client', 'open-incident'],
        },
      ]);
      detectors = new BusDetectors(rules, svc.securityEvents, new ResponseRunner(ports, new SourceBlocks(systemClock)), {}, systemClock, {
        onError: (e) => errors.push(e),
      });
      // The bus watch's part, as small as this test needs: the identity is the connect's username, else the client id.
      const identities = new Map<string, string>();
      source = new MosquittoLogSource({
        broker: 'mosquitto',
        url: broker.url,
        tls: async () => ({ key: id.key, cert: id.cert, ca: broker.caPem }),
      });
      await source.start((event) => {
        if (event.kind === 'connect' && event.username) identities.set(event.clientId, event.username);
        const clientId = 'clientId' in event ? event.clientId : undefined;
        detectors.observe({ event, ...(clientId !== undefined ? { identity: identities.get(clientId) ?? clientId } : {}) });
      });
    });

    after(async () => {
      await detectors?.stop();
      await source?.stop();
      await rig?.stop();
    });

    it('a device subscribing to many topics is blocked at the broker once, confirmed, with an incident holding the evidence; the others carry on', async () => {
      const other = await device('meter-2');
      const scanner = await device('meter-1');
      const gone = new Promise<void>((resolve) => scanner.once('close', () => resolve()));
      for (let i = 0; i < 8; i++) await scanner.subscribeAsync(`fleet/meter-${i + 10}/#`, { qos: 0 }).catch(() => undefined);
      await gone; // the broker ended its session: the block's kick

      const raised = await until(
        'the bus.topic-scan event',
        async () => (await svc.securityEvents.list({ kinds: ['bus.topic-scan'] }, { limit: 10 })).items[0],
        20_000,
      );
      const responses = raised.details.responses as Record<string, any>;
      assert.equal(raised.subject, 'meter-1');
      assert.equal(raised.details.detector, 'topic-scan');
      assert.equal(raised.details.distinctTopics, 5);
      const block = responses['block-client'];
      assert.equal(block.confirmed, true, JSON.stringify(block));
      assert.deepEqual(block.failures, []);
      const effect = block.connectors[0].effects[0];
      assert.equal(block.connectors[0].connector, 'mosquitto');
      assert.deepEqual([effect.clientId, effect.applied, effect.confirmed], ['meter-1', true, true]);
      assert.deepEqual(effect.sessionsEnded, ['meter-1']);

      // Confirmed at the broker itself: the deny role, and the device's subscribe refused when it comes back.
      const view = await dynsecCtrl(broker, admin, ['getClient', 'meter-1']);
      assert.equal(view.status, 0, view.out);
      assert.match(view.out, /mqtt-ca-blocked/);
      const again = await device('meter-1');
      await assert.rejects(again.subscribeAsync('fleet/#', { qos: 1 }), (err: any) => err.packet?.granted?.[0] === 0x87);

      // The incident: opened by detection, naming the device, with the evidence and the block's outcome.
      const incident = await svc.incidents.get(responses['open-incident'].incidentId);
      assert.equal(incident.openedBy, 'system:detection');
      assert.deepEqual(incident.targets.devices, ['meter-1']);
      assert.match(incident.description!, /rule scan, detector topic-scan/);
      assert.match(incident.description!, /"block-client":\{"confirmed":true/);
      assert.match(incident.description!, /fleet\/meter-1\d\/#/);

      // The other device carries on; the episode raised one event.
      await other.publishAsync('fleet/meter-2', 'still here', { qos: 1 });
      await detectors.settled();
      assert.equal((await svc.securityEvents.list({ kinds: ['bus.topic-scan'] }, { limit: 10 })).items.length, 1);
      assert.equal(detectors.stats().fired.scan, 1);
      assert.deepEqual(errors, []);
    });
  },
);
