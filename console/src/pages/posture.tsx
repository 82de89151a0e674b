import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, fmtTime, reasonOf, type Role } from '../api.js';

export const FUNCTIONS = ['identify', 'protect', 'detect', 'respond', 'recover'] as const;
type CsfFunction = (typeof FUNCTIONS)[number];
const TIER_NAMES = ['', 'Partial', 'Risk-Informed', 'Repeatable', 'Adaptive'] as const;
const label = (f: CsfFunction) => f[0]!.toUpperCase() + f.slice(1);

interface Outcome {
  function: CsfFunction;
  category: string;
  subcategory: string;
  status: 'met' | 'partial' | 'unmet';
  evidence: string;
  remedy: string;
  currentTier?: number;
  targetTier?: number;
}

export interface PostureReport {
  generatedAt: string;
  fleetCountedAt: string;
  current: Record<CsfFunction, { tier: number; name: string; met: number; partial: number; unmet: number }>;
  target: Record<CsfFunction, number>;
  outcomes: Outcome[];
  gaps: Outcome[];
}

/** Who reads the posture (GET /v1/posture) and who sets the target (PUT /v1/posture/target), as the API allows. */
export const canPosture = {
  read: (r: Role) => r === 'admin' || r === 'operator' || r === 'auditor',
  setTarget: (r: Role) => r === 'admin',
};

/** Posture: current against target tier per function (a chart and its table), the gaps with remedies, each outcome's evidence. */
export function Posture({ role }: { role: Role }) {
  const [report, setReport] = useState<PostureReport>();
  const [error, setError] = useState<string>();
  // `fresh`: the fleet-wide figures counted anew rather than reused (the API keeps them POSTURE_FLEET_COUNTS_MAX_AGE_SECONDS).
  const [reload, setReload] = useState({ n: 0, fresh: false });

  useEffect(() => {
    let live = true;
    api<PostureReport>('GET', reload.fresh ? '/v1/posture?fresh=true' : '/v1/posture')
      .then((r) => {
        if (!live) return;
        setReport(r);
        setError(undefined);
      })
      .catch((e) => live && setError(reasonOf(e)));
    return () => {
      live = false;
    };
  }, [reload]);

  return (
    <section aria-labelledby="posture-title">
      <h1 id="posture-title">Posture</h1>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {report && (
        <>
          <p class="help">
            Measured {fmtTime(report.generatedAt)} against the MQTT and NIST Cybersecurity Framework: a function&apos;s tier is the share of
            its outcomes met (a partial counts half): 90 % Adaptive (4), 60 % Repeatable (3), 25 % Risk-Informed (2), else Partial (1).
          </p>
          <p
            class="help"
            data-testid="fleet-counted"
            data-counted-anew={String(Date.parse(report.fleetCountedAt) >= Date.parse(report.generatedAt))}
          >
            Fleet figures (devices, renewal, key types) counted {fmtTime(report.fleetCountedAt)}.{' '}
            <button type="button" onClick={() => setReload((r) => ({ n: r.n + 1, fresh: true }))}>
              Count the fleet again
            </button>
          </p>
          <h2 id="profile-title">Current and target profile</h2>
          <TierChart report={report} />
          <TierTable report={report} />
          {canPosture.setTarget(role) && (
            <TargetForm target={report.target} onSaved={() => setReload((r) => ({ n: r.n + 1, fresh: false }))} />
          )}
          <Gaps gaps={report.gaps} />
          <Outcomes outcomes={report.outcomes} />
        </>
      )}
    </section>
  );
}

const CHART = { left: 110, width: 640, row: 44, top: 28, scale: 120 };

/** The profile as an inline SVG bar chart: a bar to the current tier, a marker at the target; the table below says the same in text. */
function TierChart({ report }: { report: PostureReport }) {
  const height = CHART.top + FUNCTIONS.length * CHART.row + 8;
  const desc = FUNCTIONS.map((f) => `${label(f)}: current tier ${report.current[f].tier}, target ${report.target[f]}`).join('; ');
  return (
    <figure class="tier-chart">
      <svg
        viewBox={`0 0 ${CHART.width} ${height}`}
        width={CHART.width}
        height={height}
        role="img"
        aria-labelledby="tier-chart-title tier-chart-desc"
        data-testid="tier-chart"
      >
        <title id="tier-chart-title">Current tier (bar) and target tier (marker) per function</title>
        <desc id="tier-chart-desc">{desc}</desc>
        {[1, 2, 3, 4].map((t) => {
          const x = CHART.left + t * CHART.scale;
          return (
            <g key={t} class="tick">
              <line x1={x} x2={x} y1={CHART.top - 6} y2={height - 8} />
              <text x={x} y={CHART.top - 10} text-anchor="end">
                {t} {TIER_NAMES[t]}
              </text>
            </g>
          );
        })}
        {FUNCTIONS.map((f, i) => {
          const y = CHART.top + i * CHART.row;
          const cur = report.current[f].tier;
          const tgt = report.target[f];
          const tx = CHART.left + tgt * CHART.scale;
          return (
            <g key={f} data-function={f}>
              <text x={CHART.left - 8} y={y + 24} text-anchor="end" class="fn">
                {label(f)}
              </text>
              <rect
                class={cur >= tgt ? 'bar bar-ok' : 'bar bar-short'}
                x={CHART.left}
                y={y + 8}
                width={cur * CHART.scale}
                height={24}
                data-current={cur}
              />
              <path class="target" d={`M ${tx} ${y + 2} l 7 10 l -7 10 l -7 -10 z M ${tx} ${y + 22} v 16`} data-target={tgt} />
            </g>
          );
        })}
      </svg>
      <figcaption class="help">
        Bar: current tier; diamond: target tier. A bar short of its target is drawn in the warning colour.
      </figcaption>
    </figure>
  );
}

function TierTable({ report }: { report: PostureReport }) {
  return (
    <table class="tiers" data-testid="tier-table">
      <caption>Tiers per function (the chart in text)</caption>
      <thead>
        <tr>
          <th scope="col">Function</th>
          <th scope="col">Current tier</th>
          <th scope="col">Target tier</th>
          <th scope="col">Met</th>
          <th scope="col">Partial</th>
          <th scope="col">Unmet</th>
        </tr>
      </thead>
      <tbody>
        {FUNCTIONS.map((f) => {
          const c = report.current[f];
          const t = report.target[f];
          return (
            <tr key={f} data-function={f}>
              <th scope="row">{label(f)}</th>
              <td data-current={c.tier}>
                {c.tier} {c.name}
              </td>
              <td data-target={t}>
                {t} {TIER_NAMES[t]}
                {c.tier < t ? ` (short by ${t - c.tier})` : ''}
              </td>
              <td>{c.met}</td>
              <td>{c.partial}</td>
              <td>{c.unmet}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/** Admin: set the Target Profile (PUT /v1/posture/target); the API's refusal beside the function it names. */
function TargetForm({ target, onSaved }: { target: Record<CsfFunction, number>; onSaved: () => void }) {
  const [errors, setErrors] = useState<Partial<Record<CsfFunction | 'form', string>>>({});
  const [saved, setSaved] = useState<string>();
  const [busy, setBusy] = useState(false);
  const inFlight = useRef(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (inFlight.current) return;
    const data = new FormData(e.currentTarget as HTMLFormElement);
    const body: Record<string, unknown> = {};
    for (const f of FUNCTIONS) {
      const v = String(data.get(f) ?? '').trim();
      // Sent as typed (a number when it reads as one): the API's validation is the one that counts.
      if (v !== '' && Number(v) !== target[f]) body[f] = /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v;
    }
    if (Object.keys(body).length === 0) {
      setErrors({ form: 'Nothing changed.' });
      return;
    }
    inFlight.current = true;
    setBusy(true);
    setErrors({});
    setSaved(undefined);
    try {
      await api('PUT', '/v1/posture/target', body);
      setSaved('Target profile set.');
      onSaved();
    } catch (err) {
      const out: Partial<Record<CsfFunction | 'form', string>> = {};
      if (err instanceof ApiError) {
        for (const f of FUNCTIONS) if (err.fields[f]) out[f] = err.fields[f];
        const named = FUNCTIONS.find((f) => err.detail.startsWith(`${f}:`));
        if (!Object.keys(out).length) out[named ?? 'form'] = err.detail || err.title;
      } else out.form = reasonOf(err);
      setErrors(out);
    } finally {
      inFlight.current = false;
      setBusy(false);
    }
  };

  return (
    <form class="inventory target-form" aria-labelledby="target-title" onSubmit={submit} noValidate>
      <h2 id="target-title">Target profile</h2>
      {FUNCTIONS.map((f) => (
        <div class="field" key={f}>
          <label for={`tp-${f}`}>{label(f)}</label>
          <input
            id={`tp-${f}`}
            name={f}
            type="number"
            min={1}
            max={4}
            step={1}
            defaultValue={String(target[f])}
            aria-invalid={errors[f] ? 'true' : undefined}
            aria-describedby={errors[f] ? `tp-${f}-error` : 'tp-help'}
          />
          {errors[f] && (
            <span id={`tp-${f}-error`} class="error field-error" role="alert">
              {errors[f]}
            </span>
          )}
        </div>
      ))}
      <p class="help" id="tp-help">
        A tier from 1 (Partial) to 4 (Adaptive) per function.
      </p>
      {errors.form && (
        <p class="error" role="alert">
          {errors.form}
        </p>
      )}
      <button type="submit" disabled={busy}>
        {busy ? 'Setting…' : 'Set target'}
      </button>
      {saved && (
        <p role="status" class="note">
          {saved}
        </p>
      )}
    </form>
  );
}

function Gaps({ gaps }: { gaps: Outcome[] }) {
  return (
    <>
      <h2>Gaps</h2>
      {gaps.length === 0 ? (
        <p>Every outcome is met.</p>
      ) : (
        <table class="gaps" data-testid="gaps">
          <caption>Outcomes short of met, the widest gap to the target first</caption>
          <thead>
            <tr>
              <th scope="col">Outcome</th>
              <th scope="col">Function (tier → target)</th>
              <th scope="col">Status</th>
              <th scope="col">Remedy</th>
            </tr>
          </thead>
          <tbody>
            {gaps.map((g) => (
              <tr key={g.subcategory} data-subcategory={g.subcategory}>
                <th scope="row">
                  {g.subcategory} <span class="help">{g.category}</span>
                </th>
                <td>
                  {label(g.function)} ({g.currentTier ?? '?'} → {g.targetTier ?? '?'})
                </td>
                <td>
                  <span class={`status outcome-${g.status}`}>{g.status}</span>
                </td>
                <td>{g.remedy}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

/** Every outcome by function; its evidence (what was measured) and remedy behind a disclosure. */
function Outcomes({ outcomes }: { outcomes: Outcome[] }) {
  return (
    <>
      <h2>Outcomes and their evidence</h2>
      {FUNCTIONS.map((f) => {
        const of = outcomes.filter((o) => o.function === f);
        return (
          <section key={f} aria-labelledby={`oc-${f}`} class="outcomes">
            <h3 id={`oc-${f}`}>{label(f)}</h3>
            <ul>
              {of.map((o) => (
                <li key={o.subcategory} data-subcategory={o.subcategory}>
                  <details>
                    <summary>
                      <span class={`status outcome-${o.status}`}>{o.status}</span> {o.subcategory}: {o.category}
                    </summary>
                    <dl class="facts">
                      <dt>Evidence</dt>
                      <dd>{o.evidence}</dd>
                      <dt>Remedy</dt>
                      <dd>{o.remedy}</dd>
                    </dl>
                  </details>
                </li>
              ))}
            </ul>
          </section>
        );
      })}
    </>
  );
}
