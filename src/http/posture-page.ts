import { FUNCTIONS, TIER_NAMES, percent, type PostureReport } from '../detect/posture.js';

const esc = (v: unknown) =>
  String(v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const title = (f: string) => f[0]!.toUpperCase() + f.slice(1);
const rows = (cells: unknown[][]) => cells.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('\n');

/** The posture report as one self-contained HTML page (no scripts, no outside resources). */
export function posturePage(r: PostureReport): string {
  const f = r.figures;
  const profile = rows(
    FUNCTIONS.map((fn) => [
      title(fn),
      `${r.current[fn].tier} ${r.current[fn].name}`,
      `${r.target[fn]} ${TIER_NAMES[r.target[fn]]}`,
      r.current[fn].tier >= r.target[fn] ? 'on target' : `${r.target[fn] - r.current[fn].tier} below`,
      `${r.current[fn].met} met, ${r.current[fn].partial} partial, ${r.current[fn].unmet} unmet`,
    ]),
  );
  const gaps = r.gaps.length
    ? rows(r.gaps.map((g, i) => [i + 1, title(g.function), g.subcategory, g.status, g.evidence, g.remedy]))
    : '<tr><td colspan="6">No gaps: every outcome is met.</td></tr>';
  const outcomes = rows(r.outcomes.map((o) => [title(o.function), o.category, o.subcategory, o.status, o.evidence]));
  const keys = rows([
    ...Object.entries(f.crypto.certificatesByKey).map(([k, n]) => ['certificates issued and unexpired', k, n]),
    ...Object.entries(f.crypto.casByKey).map(([k, n]) => ['active CAs', k, n]),
  ]);
  const events = f.securityEvents24h.length
    ? rows(f.securityEvents24h.map((e) => [e.kind, e.severity, e.count]))
    : '<tr><td colspan="3">none</td></tr>';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mqtt-ca posture</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem}table{border-collapse:collapse;margin:0 0 1.5rem}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}th{background:#f3f3f3}</style>
</head><body>
<h1>MQTT cybersecurity posture</h1>
<p>Generated ${esc(r.generatedAt)}; fleet figures counted ${esc(r.fleetCountedAt)}. Measured against the MQTT and NIST Cybersecurity Framework subcategories this service can observe; the Detect subcategories it cannot see are listed as unmet, not observed.</p>
<h2>Profile</h2>
<table><thead><tr><th>Function</th><th>Current tier</th><th>Target tier</th><th>Gap</th><th>Outcomes</th></tr></thead><tbody>
${profile}
</tbody></table>
<h2>Gaps, in priority order</h2>
<p>Every outcome short of met, whatever its function's tier, with its remedy; "not observed" is what this service cannot see.</p>
<table><thead><tr><th>#</th><th>Function</th><th>Subcategory</th><th>Status</th><th>Evidence</th><th>Remedy</th></tr></thead><tbody>
${gaps}
</tbody></table>
<h2>Figures</h2>
<table><tbody>
${rows([
  ['active devices', f.devices.active],
  ['active devices with a valid certificate', `${f.devices.activeWithValidCertificate} (${percent(f.devices.validCertificateShare)})`],
  ['active brokers with a valid certificate', `${f.devices.brokersWithValidCertificate} of ${f.devices.brokers}`],
  [
    'devices by status',
    Object.entries(f.devices.byStatus)
      .map(([s, n]) => `${s} ${n}`)
      .join(', ') || 'none',
  ],
  ['current certificates past their renewal point', `${f.renewal.pastRenewalPoint} of ${f.renewal.currentCertificates}`],
  [
    'revoke-to-visible',
    f.revocationVisible
      ? `p50 ${f.revocationVisible.p50Seconds} s, p99 ${f.revocationVisible.p99Seconds} s (${f.revocationVisible.count})`
      : 'not measured yet',
  ],
  ['last backup', f.lastBackupAt ? `${f.lastBackupAt} (${f.lastBackupAgeHours} h ago)` : 'none'],
  [
    'open incidents',
    `${f.openIncidents.total}${
      f.openIncidents.total
        ? ` (${Object.entries(f.openIncidents.byKind)
            .map(([k, n]) => `${k} ${n}`)
            .join(', ')})`
        : ''
    }`,
  ],
  ['stale CRLs', f.staleCrls.join(', ') || 'none'],
])}
</tbody></table>
<h2>Crypto inventory</h2>
<table><thead><tr><th>What</th><th>Key</th><th>Count</th></tr></thead><tbody>
${keys}
</tbody></table>
<h2>Security events, last 24 hours</h2>
<table><thead><tr><th>Kind</th><th>Severity</th><th>Count</th></tr></thead><tbody>
${events}
</tbody></table>
<h2>Every outcome</h2>
<table><thead><tr><th>Function</th><th>Category</th><th>Subcategory</th><th>Status</th><th>Evidence</th></tr></thead><tbody>
${outcomes}
</tbody></table>
</body></html>
`;
}
