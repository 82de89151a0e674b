import { keyTypeLabel, spkiOfCertificate } from '../ca/x509/spki.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { Clock } from '../shared/clock.js';
import { badRequest } from '../shared/errors.js';
import type { Db } from '../store/db.js';
import type { SettingsStore } from '../store/key-store.js';
import type { FleetCounts, PostureStore, UnlabelledCursor } from '../store/posture-store.js';
import { judgeBackupPlacement, judgeKekPlacement, type StorageLayout } from './storage-layout.js';
import { FreshRead } from '../shared/single-flight.js';
import type { WatchDetector } from '../shared/detection-rules.js';
import { busFigures, DAY, type BusFigures, type BusPostureSources } from './bus-posture.js';

export const FUNCTIONS = ['identify', 'protect', 'detect', 'respond', 'recover'] as const;
export type CsfFunction = (typeof FUNCTIONS)[number];
export type Tier = 1 | 2 | 3 | 4;
export const TIER_NAMES: Record<Tier, string> = { 1: 'Partial', 2: 'Risk-Informed', 3: 'Repeatable', 4: 'Adaptive' };
export type TargetProfile = Record<CsfFunction, Tier>;
export type OutcomeStatus = 'met' | 'partial' | 'unmet';

/** One subcategory of the MQTT cybersecurity framework core as this deployment shows it. */
export interface Outcome {
  function: CsfFunction;
  category: string;
  subcategory: string;
  status: OutcomeStatus;
  /** What was measured, in words. */
  evidence: string;
  /** What to do while it is not met. */
  remedy: string;
}

/** What the report reads beyond the database: the running service's own state and settings. */
export interface PostureSources {
  cas(): Promise<{ id: string; kind: string; status: string; keyAlgorithm: string; notAfter: string | null }[]>;
  /** The CRL watch's last check, a CA at a time; empty before its first check. */
  crls(): { caId: string; stale: boolean }[];
  pastRenewalPoint(now: Date): Promise<{ past: number; current: number }>;
  /** From revoke calls to OCSP and CRL showing them, in this process; null before the first. */
  revocationVisible(): { count: number; p50Seconds: number; p99Seconds: number } | null;
  /** OCSP answers about certificate status in this process: brokers asking about the certificates presented to them. */
  ocspStatusAnswers(): number;
  /** Where the KEK, the store and the backups are kept, measured on each call. */
  storage(): StorageLayout;
  /** Detection rules: their names and responses. */
  rules: { name: string; actions: readonly string[] }[];
  rateLimitScopes: string[];
  brokerConnectors: string[];
  renewalNoticeSinks: string[];
  backupEveryMs: number;
  /** How long the fleet-wide counts (scans of every device and certificate) are reused; 0: counted for every report. */
  fleetCountsMaxAgeMs: number;
  /** The bus watch's books, rules and presence (absent: the Detect subcategories on the bus are not observed). */
  bus?: BusPostureSources;
}

/** The figures that scan the whole fleet: counted together, and reused for `fleetCountsMaxAgeMs`. */
interface FleetFigures {
  countedAt: Date;
  fleet: FleetCounts;
  renewal: { past: number; current: number };
  certificatesByKey: Record<string, number>;
  /** Active devices seen on a watched broker in the 24 h before countedAt. */
  busActiveSeen: number;
}

export interface PostureReport {
  generatedAt: string;
  /** When the fleet-wide figures (devices, renewal, key types) were counted: up to POSTURE_FLEET_COUNTS_MAX_AGE_SECONDS before generatedAt. */
  fleetCountedAt: string;
  figures: {
    devices: {
      byStatus: Record<string, number>;
      active: number;
      activeWithValidCertificate: number;
      validCertificateShare: number | null;
      brokers: number;
      brokersWithValidCertificate: number;
    };
    inventory: { modelShare: number | null; firmwareShare: number | null; siteShare: number | null };
    renewal: { currentCertificates: number; pastRenewalPoint: number };
    crypto: { certificatesByKey: Record<string, number>; casByKey: Record<string, number> };
    revocationVisible: { count: number; p50Seconds: number; p99Seconds: number } | null;
    lastBackupAt: string | null;
    lastBackupAgeHours: number | null;
    openIncidents: { total: number; byKind: Record<string, number>; oldestOpenedAt: string | null };
    securityEvents24h: { kind: string; severity: string; count: number }[];
    staleCrls: string[];
    /** The bus watch: brokers watched, coverage, rules, gaps and detection lag; null without a watch. */
    bus: BusFigures | null;
  };
  current: Record<CsfFunction, { tier: Tier; name: string; met: number; partial: number; unmet: number }>;
  target: TargetProfile;
  outcomes: Outcome[];
  /** Every outcome short of met, whatever its function's tier, with its remedy: the widest gap to the target first, unmet before partial. */
  gaps: (Outcome & { currentTier: Tier; targetTier: Tier })[];
}

const TARGET_KEY = 'posture.target';
const DEFAULT_TARGET: TargetProfile = { identify: 3, protect: 3, detect: 3, respond: 3, recover: 3 };
const PAGE = 5000;
const HOUR = 3_600_000;
const STRONG_KEYS = new Set(['EC P-256', 'EC P-384', 'Ed25519', 'RSA 3072', 'RSA 4096']);

const share = (part: number, whole: number): number | null => (whole === 0 ? null : part / whole);
/** A share as the report and its page write it. */
export const percent = (s: number | null) => (s === null ? 'n/a' : `${(s * 100).toFixed(1)} %`);
/** met at or above `met`, partial at or above `partial`; no data is unmet. */
const byShare = (s: number | null, met: number, partial: number): OutcomeStatus =>
  s === null ? 'unmet' : s >= met ? 'met' : s >= partial ? 'partial' : 'unmet';
const RANK: Record<OutcomeStatus, number> = { unmet: 0, partial: 1, met: 2 };
const worst = (...s: OutcomeStatus[]): OutcomeStatus => s.reduce((w, x) => (RANK[x] < RANK[w] ? x : w));

/** What the service cannot see: it is not met, and the report says so. */
export const NOT_OBSERVED = 'not observed';

/** The framework's Detect subcategories that this service has no view of, bus watch or not. */
const UNOBSERVED_DETECT: [category: string, subcategory: string][] = [
  ['Physical Monitoring', 'End-devices and their vicinity physical inspection'],
];

/** What the bus watch shows of a Detect subcategory: its rules, whether they observe, coverage and gaps. */
export interface BusOutcome {
  observed: boolean;
  status: OutcomeStatus;
  evidence: string;
  remedy: string;
}

const WATCH_REMEDY =
  'Watch the broker: BROKER_MQTT_URL (its $SYS log), BUS_WATCH_LOG_FILE (its debug log: publishes and denials) or POST /v1/bus-events (EMQX, HiveMQ); keep a DETECTION_RULES watch rule for it.';

/**
 * Met when a rule watches for it, the sources observe all it counts, every watched broker is
 * watched now with no gap open, and 90 % of the active devices were seen in 24 h; partial when
 * observed short of that; unmet, "not observed", when no rule watches for it or nothing observes it.
 */
export function busOutcome(bus: BusFigures | null, detectors: WatchDetector[], events: { kind: string; n: number }[]): BusOutcome {
  const no = (why: string): BusOutcome => ({ observed: false, status: 'unmet', evidence: `${NOT_OBSERVED}: ${why}`, remedy: WATCH_REMEDY });
  if (!bus || bus.brokers.length === 0) return no('no bus watch runs (BUS_WATCH)');
  const rules = bus.rules.filter((r) => detectors.includes(r.watch));
  if (rules.length === 0) return no(`no DETECTION_RULES watch rule for ${detectors.join(' or ')}`);
  const observed = rules.filter((r) => r.observed);
  if (observed.length === 0) return no(rules.map((r) => `${r.rule}: ${r.why}`).join('; '));
  const watchedNow = bus.brokers.filter((b) => b.watchedNow);
  if (watchedNow.length === 0)
    return no(`no broker is being watched now (${bus.brokers.map((b) => `${b.broker} last ${b.watchedUntil ?? 'never'}`).join(', ')})`);
  const raised = events.filter((e) => observed.some((r) => r.raises === e.kind)).reduce((t, e) => t + e.n, 0);
  const open = bus.gaps24h.filter((g) => g.to === null);
  const share = bus.coverage.share;
  const complete = observed.length === rules.length && observed.every((r) => !r.note);
  const status: OutcomeStatus =
    complete && open.length === 0 && watchedNow.length === bus.brokers.length && share !== null && share >= 0.9 ? 'met' : 'partial';
  const parts = [
    observed.map((r) => (r.note ? `${r.summary} (${r.note})` : r.summary)).join('; '),
    ...rules.filter((r) => !r.observed).map((r) => `${r.rule} ${NOT_OBSERVED}: ${r.why}`),
    `${raised} raised in 24 h`,
    `${percent(share)} of active devices seen in 24 h on ${watchedNow.map((b) => b.broker).join(', ')}`,
    ...(bus.gaps24h.length
      ? [`gaps in 24 h: ${bus.gaps24h.map((g) => `${g.broker} ${g.from}–${g.to ?? 'now'} (${g.why})`).join(', ')}`]
      : []),
    ...(bus.lag24h
      ? [`act to event p50 ${bus.lag24h.p50Seconds} s, p99 ${bus.lag24h.p99Seconds} s over ${bus.lag24h.count} bus events`]
      : []),
  ];
  return {
    observed: true,
    status,
    evidence: parts.join('; '),
    remedy:
      status === 'met'
        ? WATCH_REMEDY
        : 'Close the gaps: watch every broker the devices use (and keep the watch up), give it the debug log where rules count publishes or denials, and find the active devices it has not seen.',
  };
}

function tierOf(outcomes: Outcome[]): Tier {
  const score = outcomes.reduce((a, o) => a + (o.status === 'met' ? 1 : o.status === 'partial' ? 0.5 : 0), 0) / outcomes.length;
  return score >= 0.9 ? 4 : score >= 0.6 ? 3 : score >= 0.25 ? 2 : 1;
}

const CA_KEY_LABELS: Record<string, string> = {
  'EC-P256': 'EC P-256',
  'EC-P384': 'EC P-384',
  Ed25519: 'Ed25519',
  'RSA-2048': 'RSA 2048',
  'RSA-3072': 'RSA 3072',
  'RSA-4096': 'RSA 4096',
};

/**
 * The deployment measured against the MQTT cybersecurity framework's subcategories (Current
 * Profile, a tier per function), compared with the Target Profile the operator sets, and every
 * outcome short of met in priority order. Each status follows from a measurement; what the service
 * cannot see is unmet, "not observed", never met. The tier of a function follows from its
 * outcomes: the share met (a partial counts half) of 90 % and more is Adaptive, 60 % Repeatable,
 * 25 % Risk-Informed, less Partial.
 */
export class Posture {
  constructor(
    private readonly db: Db,
    private readonly store: PostureStore,
    private readonly settings: SettingsStore,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly src: PostureSources,
  ) {}

  /** The last fleet counts (or those under way), shared by the reports within their age. */
  private counts: { at: number; figures: Promise<FleetFigures> } | undefined;
  private readonly counting = new FreshRead(() => this.countFleet());

  async target(): Promise<TargetProfile> {
    return { ...DEFAULT_TARGET, ...((await this.settings.get<Partial<TargetProfile>>(this.db, TARGET_KEY)) ?? {}) };
  }

  async setTarget(
    input: Partial<Record<CsfFunction, number>>,
    ctx: { actor: string; requestId?: string | undefined },
  ): Promise<TargetProfile> {
    const before = await this.target();
    const next = { ...before };
    for (const [f, t] of Object.entries(input)) {
      if (!(FUNCTIONS as readonly string[]).includes(f) || !Number.isInteger(t) || (t as number) < 1 || (t as number) > 4)
        throw badRequest(`${f}: a tier is 1 to 4 for one of ${FUNCTIONS.join(', ')}`);
      next[f as CsfFunction] = t as Tier;
    }
    await this.db.transaction(async (tx) => {
      await this.settings.set(tx, TARGET_KEY, next);
      await this.audit.append(tx, [
        { ...ctx, action: 'posture.target-set', targetType: 'posture', targetId: 'target', details: { from: before, to: next } },
      ]);
    });
    return next;
  }

  /**
   * The report. The fleet-wide figures are counted anew when older than `fleetCountsMaxAgeMs` or
   * when `fresh` (they scan every device and certificate: ~0.3 s at 100,000 devices, seconds at a
   * million); everything else (incidents, events, CRLs, CAs, backups, the target) is read for each.
   */
  async report(opts: { fresh?: boolean } = {}): Promise<PostureReport> {
    const now = this.clock.now();
    const [{ fleet, renewal, certificatesByKey, countedAt, busActiveSeen }, lastBackup, incidents, events, cas, target] = await Promise.all(
      [
        this.fleetFigures(now, opts.fresh === true),
        this.store.lastBackupAt(this.db),
        this.store.openIncidents(this.db),
        this.store.eventsSince(this.db, new Date(now.getTime() - 24 * HOUR)),
        this.src.cas(),
        this.target(),
      ],
    );
    const a = fleet.active;
    const validShare = share(a.validCertificate, a.total);
    const casByKey: Record<string, number> = {};
    const activeCas = cas.filter((c) => c.status === 'active');
    for (const c of activeCas) {
      const label = CA_KEY_LABELS[c.keyAlgorithm] ?? c.keyAlgorithm;
      casByKey[label] = (casByKey[label] ?? 0) + 1;
    }
    const backupAge = lastBackup ? (now.getTime() - lastBackup.getTime()) / HOUR : null;
    const visible = this.src.revocationVisible();
    const oldestIncident = incidents.reduce<Date | null>((m, i) => (!m || i.openedAt < m ? i.openedAt : m), null);
    const byKind: Record<string, number> = {};
    for (const i of incidents) byKind[i.kind] = (byKind[i.kind] ?? 0) + 1;
    const keysInUse = [...new Set([...Object.keys(certificatesByKey), ...Object.keys(casByKey)])];
    const weakKeys = keysInUse.filter((k) => !STRONG_KEYS.has(k));
    const issuingExpiry = activeCas
      .filter((c) => c.kind === 'intermediate' && c.notAfter)
      .map((c) => (new Date(c.notAfter!).getTime() - now.getTime()) / (24 * HOUR));
    const soonestIssuingDays = issuingExpiry.length ? Math.min(...issuingExpiry) : null;
    const actions = new Set(this.src.rules.flatMap((r) => r.actions));
    const ruleNames = this.src.rules.map((r) => r.name);
    const pastShare = share(renewal.past, renewal.current);
    const crls = this.src.crls();
    const staleCrls = [...new Set(crls.filter((c) => c.stale).map((c) => c.caId))];
    const brokers = a.brokers + fleet.otherBrokers;
    const validBrokers = a.validBrokers + fleet.otherBrokers;
    const storage = this.src.storage();
    const kekPlacement = judgeKekPlacement(storage);
    const backupPlacement = judgeBackupPlacement(storage);
    const backupFresh: OutcomeStatus = backupAge === null ? 'unmet' : backupAge <= 24 ? 'met' : backupAge <= 7 * 24 ? 'partial' : 'unmet';
    const ocspAnswers = this.src.ocspStatusAnswers();
    const revokedQueried = events.filter((e) => e.kind === 'ocsp.revoked-queried').reduce((t, e) => t + e.n, 0);
    const bus = this.src.bus ? await busFigures(this.src.bus, now, { active: a.total, activeSeen: busActiveSeen }) : null;
    const onBus = (detectors: WatchDetector[]) => busOutcome(bus, detectors, events);
    const authAtBroker = onBus(['tls-failures', 'revoked-certificate']);
    const busRow = (category: string, subcategory: string, w: BusOutcome): Outcome => ({
      function: 'detect',
      category,
      subcategory,
      status: w.status,
      evidence: w.evidence,
      remedy: w.remedy,
    });

    const o = (
      fn: CsfFunction,
      category: string,
      subcategory: string,
      status: OutcomeStatus,
      evidence: string,
      remedy: string,
    ): Outcome => ({ function: fn, category, subcategory, status, evidence, remedy });
    const outcomes: Outcome[] = [
      o(
        'identify',
        'Asset Management',
        'List of hardware devices',
        a.total === 0 ? 'unmet' : byShare(share(a.withModel, a.total), 0.95, 0.5),
        `${a.total} active devices; model recorded for ${percent(share(a.withModel, a.total))}`,
        'Record the model and hardware revision of every device (PATCH /v1/devices/{id} or the lot manifest).',
      ),
      o(
        'identify',
        'Asset Management',
        'Software inventory',
        a.total === 0 ? 'unmet' : byShare(share(a.withFirmware, a.total), 0.95, 0.5),
        `firmware version recorded for ${percent(share(a.withFirmware, a.total))} of active devices`,
        'Record firmware versions as devices are flashed and updated.',
      ),
      o(
        'identify',
        'Asset Management',
        'Lifecycle tracking',
        byShare(validShare, 0.99, 0.9),
        `${percent(validShare)} of active devices hold a valid certificate`,
        'Renew or re-enroll the active devices without a valid certificate; decommission those gone.',
      ),
      o(
        'identify',
        'Environmental Awareness',
        'Location of (client-side) end-devices',
        a.total === 0 ? 'unmet' : byShare(share(a.withSite, a.total), 0.95, 0.5),
        `site recorded for ${percent(share(a.withSite, a.total))} of active devices`,
        "Record each device's site.",
      ),
      o(
        'identify',
        'Information Sharing and Communications',
        'Cryptographic suites versioning',
        keysInUse.length === 0 ? 'unmet' : weakKeys.length === 0 ? 'met' : 'partial',
        weakKeys.length ? `in use below the strong set: ${weakKeys.join(', ')}` : `keys in use: ${keysInUse.join(', ') || 'none yet'}`,
        'Move certificates and CAs off the weaker key types (renewal to P-256 or larger; an issuing-CA rollover).',
      ),
      o(
        'protect',
        'Identity, Credential and Access Management',
        'Authentication of Clients by the Server',
        byShare(share(a.validCertificate - a.validBrokers, a.clients), 0.99, 0.9),
        `${a.validCertificate - a.validBrokers} of ${a.clients} active clients hold a valid certificate`,
        'Give every active client a current certificate (enrollment tokens, renewal).',
      ),
      o(
        'protect',
        'Identity, Credential and Access Management',
        'Authentication of the Server by the Clients',
        brokers === 0 ? 'unmet' : byShare(share(validBrokers, brokers), 1, 0.5),
        `${validBrokers} of ${brokers} brokers hold a valid server certificate (active broker devices, and holders of a valid broker certificate from any route)`,
        'Issue broker certificates with their DNS and IP names (broker tokens).',
      ),
      o(
        'protect',
        'Server-side Protection',
        'Frequent session renegotiation (certificate renewal)',
        renewal.current === 0 ? 'unmet' : pastShare! <= 0.01 ? 'met' : pastShare! <= 0.1 ? 'partial' : 'unmet',
        `${renewal.past} of ${renewal.current} current certificates are past their renewal point`,
        'Make sure renewal notices reach the devices (RENEWAL_MQTT_URL or RENEWAL_WEBHOOK_URL) and that they renew.',
      ),
      o(
        'protect',
        'Server-side Protection',
        'Rate limiting and/or blocking',
        this.src.rateLimitScopes.length === 3 && actions.has('block-source')
          ? 'met'
          : this.src.rateLimitScopes.length > 0 || actions.has('block-source')
            ? 'partial'
            : 'unmet',
        `rate limits on ${this.src.rateLimitScopes.join(', ') || 'nothing'}; blocking ${actions.has('block-source') ? 'on' : 'off'}`,
        'Set API_RATE_PER_SOURCE, API_RATE_PER_KEY and ENROLL_RATE_PER_SOURCE, and keep a block-source rule.',
      ),
      o(
        'protect',
        'Server-side Protection',
        'Data-at-rest encryption',
        kekPlacement.status,
        kekPlacement.evidence,
        'Keep the KEK apart from what it protects: MQTT_CA_KEK_FILE on another filesystem (a secrets mount, a separate volume) than DATA_DIR and BACKUP_DIR.',
      ),
      o(
        'detect',
        'Intrusion Detection',
        'Repeated authentication attempts',
        // At the API (enrollment, keys) and at the broker (TLS handshakes, revoked certificates): met only with both seen.
        worst(
          ruleNames.length && actions.has('block-source') ? 'met' : ruleNames.length ? 'partial' : 'unmet',
          authAtBroker.observed ? authAtBroker.status : 'partial',
        ),
        `detection rules: ${ruleNames.join(', ') || 'none'}; at the broker: ${authAtBroker.evidence}`,
        'Keep rules counting refused enrollments and wrong API keys (DETECTION_RULES).',
      ),
      ((w) =>
        o(
          'detect',
          'Network Monitoring',
          'Repeated connection attempts',
          w.observed ? w.status : ocspAnswers > 0 ? 'partial' : 'unmet',
          w.observed
            ? `${w.evidence}; also ${ocspAnswers} OCSP status answers since the service started, ${revokedQueried} about revoked certificates (ocsp.revoked-queried) in 24 h`
            : ocspAnswers > 0
              ? `only attempts with revoked certificates are seen, through OCSP: ${ocspAnswers} status answers since the service started, ${revokedQueried} queries about revoked certificates reported (ocsp.revoked-queried) in 24 h; at the broker: ${w.evidence}`
              : `${w.evidence}; and no OCSP status query since the service started`,
          w.observed
            ? w.remedy
            : 'Watch the broker (BROKER_MQTT_URL with its $SYS log, BUS_WATCH_LOG_FILE, or POST /v1/bus-events), and have the brokers check client certificates with OCSP.',
        ))(onBus(['connect-attempts', 'client-id-two-sources'])),
      busRow('Network Monitoring', 'Abnormal termination of connections', onBus(['abnormal-terminations'])),
      busRow('Physical Monitoring', 'Client availability verification', onBus(['silent'])),
      busRow('Intrusion Detection', 'Topic scanning (attempts to send or subscribe to many topics)', onBus(['topic-scan'])),
      busRow('Intrusion Detection', 'Sending undeliverable messages (no subscribers to the topics)', onBus(['undeliverable'])),
      busRow('Intrusion Detection', 'Clients that connect but do not send data', onBus(['idle-connected'])),
      ...UNOBSERVED_DETECT.map(([category, subcategory]) =>
        o(
          'detect',
          category,
          subcategory,
          'unmet',
          `${NOT_OBSERVED}: neither the service nor the brokers see the devices themselves`,
          'Inspect the end-devices and their vicinity on site; nothing on the bus shows it.',
        ),
      ),
      o(
        'detect',
        'Network Monitoring',
        'Revocation information current',
        crls.length === 0 ? 'unmet' : staleCrls.length === 0 ? 'met' : 'unmet',
        crls.length === 0
          ? `${NOT_OBSERVED}: the CRL watch has not checked since the service started`
          : staleCrls.length
            ? `stale CRLs: ${staleCrls.join(', ')}`
            : `the CRLs of ${crls.length} CAs are within their refresh period`,
        'Find why the CRL publisher fails (the crl-stale events, the job queue); the CRL watch runs with the job workers.',
      ),
      o(
        'respond',
        'Response Planning',
        'Revoke lost and/or compromised certificates',
        visible === null ? 'unmet' : visible.p99Seconds <= 1 ? 'met' : visible.p99Seconds <= 60 ? 'partial' : 'unmet',
        visible
          ? `revoke-to-visible p50 ${visible.p50Seconds} s, p99 ${visible.p99Seconds} s over ${visible.count} revocations`
          : `${NOT_OBSERVED}: no revocation measured since the service started`,
        'Revocations should show in OCSP and the CRL within a second; look at the OCSP and CRL hooks if they do not.',
      ),
      o(
        'respond',
        'Response Planning',
        'Disconnect suspicious or compromised end-devices',
        this.src.brokerConnectors.length ? 'met' : 'unmet',
        `broker connectors: ${this.src.brokerConnectors.join(', ') || 'none'}`,
        'Configure a broker connector (BROKER_MQTT_URL, BROKER_WEBHOOK_URL, BROKER_RABBITMQ_URL or BROKER_NATS_USERS_FILE) so incidents disconnect and block devices.',
      ),
      o(
        'respond',
        'Response Planning',
        'Revoke compromised Client or Server authentication credentials',
        actions.has('suspend-device') || actions.has('open-incident') ? 'met' : 'partial',
        `automatic responses: ${[...actions].join(', ') || 'none'}`,
        'Keep automatic responses (suspend-device, open-incident) in DETECTION_RULES.',
      ),
      o(
        'respond',
        'Response Planning',
        'Incidents handled',
        incidents.length === 0 ? 'met' : oldestIncident && now.getTime() - oldestIncident.getTime() > 7 * 24 * HOUR ? 'partial' : 'met',
        `${incidents.length} open incidents${oldestIncident ? `, the oldest opened ${oldestIncident.toISOString()}` : ''}`,
        'Work the incidents open for more than a week, and close them.',
      ),
      o(
        'recover',
        'Recover Planning',
        'Backup systems',
        worst(backupFresh, backupPlacement.status),
        `${backupAge === null ? 'no backup made' : `last backup ${backupAge.toFixed(1)} h ago`}; scheduled ${this.src.backupEveryMs ? `every ${this.src.backupEveryMs / HOUR} h` : 'never'}; ${backupPlacement.evidence}`,
        'Schedule backups (BACKUP_EVERY_HOURS) and keep them off this machine: BACKUP_DIR on another disk than the database, copied elsewhere.',
      ),
      o(
        'recover',
        'Post Recovery',
        'Reissue certificates and authentication credentials',
        this.src.renewalNoticeSinks.length ? 'met' : 'partial',
        `renewal notices go to ${this.src.renewalNoticeSinks.join(', ') || 'nowhere (devices renew on their own schedule)'}`,
        'Configure a renewal notice channel, so a mass reissue (CA recovery) reaches the devices.',
      ),
      o(
        'recover',
        'Post Recovery',
        'Review Key Management and cryptographic deployments',
        soonestIssuingDays === null ? 'unmet' : soonestIssuingDays > 180 ? 'met' : soonestIssuingDays > 30 ? 'partial' : 'unmet',
        soonestIssuingDays === null
          ? 'no active issuing CA'
          : `the soonest active issuing CA expires in ${Math.floor(soonestIssuingDays)} days`,
        'Roll the issuing CA over well before it expires (POST /v1/cas/{id}/rollover).',
      ),
    ];

    const current = {} as PostureReport['current'];
    for (const f of FUNCTIONS) {
      const of = outcomes.filter((x) => x.function === f);
      const tier = tierOf(of);
      current[f] = {
        tier,
        name: TIER_NAMES[tier],
        met: of.filter((x) => x.status === 'met').length,
        partial: of.filter((x) => x.status === 'partial').length,
        unmet: of.filter((x) => x.status === 'unmet').length,
      };
    }
    const gaps = outcomes
      .filter((x) => x.status !== 'met')
      .map((x) => ({ ...x, currentTier: current[x.function].tier, targetTier: target[x.function] }))
      .sort(
        (p, q) =>
          q.targetTier - q.currentTier - (p.targetTier - p.currentTier) ||
          (p.status === 'unmet' ? 0 : 1) - (q.status === 'unmet' ? 0 : 1) ||
          FUNCTIONS.indexOf(p.function) - FUNCTIONS.indexOf(q.function),
      );

    return {
      generatedAt: now.toISOString(),
      fleetCountedAt: countedAt.toISOString(),
      figures: {
        devices: {
          byStatus: fleet.byStatus,
          active: a.total,
          activeWithValidCertificate: a.validCertificate,
          validCertificateShare: validShare,
          brokers,
          brokersWithValidCertificate: validBrokers,
        },
        inventory: {
          modelShare: share(a.withModel, a.total),
          firmwareShare: share(a.withFirmware, a.total),
          siteShare: share(a.withSite, a.total),
        },
        renewal: { currentCertificates: renewal.current, pastRenewalPoint: renewal.past },
        crypto: { certificatesByKey, casByKey },
        revocationVisible: visible,
        lastBackupAt: lastBackup?.toISOString() ?? null,
        lastBackupAgeHours: backupAge === null ? null : Math.round(backupAge * 10) / 10,
        openIncidents: { total: incidents.length, byKind, oldestOpenedAt: oldestIncident?.toISOString() ?? null },
        securityEvents24h: events.map((e) => ({ kind: e.kind, severity: e.severity, count: e.n })),
        staleCrls,
        bus,
      },
      current,
      target,
      outcomes,
      gaps,
    };
  }

  private fleetFigures(now: Date, fresh: boolean): Promise<FleetFigures> {
    const c = this.counts;
    if (c && !fresh && now.getTime() - c.at < this.src.fleetCountsMaxAgeMs) return c.figures;
    // A count that began after this call (however many ask, at most two counts at a time: `fresh` cannot pile scans up).
    const figures = this.counting.get();
    const entry = { at: now.getTime(), figures };
    this.counts = entry;
    // A failed count is not kept: the next report counts again.
    figures.catch(() => {
      if (this.counts === entry) this.counts = undefined;
    });
    return figures;
  }

  private async countFleet(): Promise<FleetFigures> {
    const now = this.clock.now();
    const bus = this.src.bus;
    const [fleet, renewal, certificatesByKey, busActiveSeen] = await Promise.all([
      this.store.fleet(this.db, now),
      this.src.pastRenewalPoint(now),
      this.cryptoInventory(now),
      bus && bus.brokers().length ? bus.activeSeen(new Date(now.getTime() - DAY)) : 0,
    ]);
    return { countedAt: now, fleet, renewal, certificatesByKey, busActiveSeen };
  }

  /**
   * Key types of every issued, unexpired end-entity certificate: counted in the database by the
   * type recorded when each was issued (certificates.key_type, migration 0029). Rows issued before
   * that have none: their key type is read from their DER, a page at a time.
   */
  private async cryptoInventory(now: Date): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    let unlabelled = 0;
    for (const { keyType, n } of await this.store.certificateKeyTypes(this.db, now)) {
      if (keyType === null) unlabelled = n;
      else counts[keyType] = n;
    }
    if (unlabelled === 0) return counts;
    let after: UnlabelledCursor | null = null;
    do {
      const page = await this.store.unlabelledCertificates(this.db, now, after, PAGE);
      for (const c of page.rows) {
        const k = keyTypeLabel(spkiOfCertificate(c.der));
        counts[k] = (counts[k] ?? 0) + 1;
      }
      after = page.next;
    } while (after);
    return counts;
  }
}
