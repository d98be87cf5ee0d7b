// A disclosure as a page people can read: latency by percentile for every scenario side by side
// (log-scaled percentile axis, as HdrHistogram plots them), throughput per scenario, and what the
// figures are bound to. Self-contained HTML with inline SVG; no scripts, no external resources.
import * as hdr from "hdr-histogram-js";
import type { BenchmarkDisclosure, Spread } from "../gen/envelope/v1/benchmark_disclosure_pb.js";

// One colour per scenario of the standard run (eleven).
const palette = [
  "#1f77b4",
  "#d62728",
  "#2ca02c",
  "#9467bd",
  "#ff7f0e",
  "#8c564b",
  "#e377c2",
  "#17becf",
  "#7f7f7f",
  "#bcbd22",
  "#393b79",
];

const escapeHtml = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c] as string);

interface Curve {
  readonly name: string;
  readonly points: readonly { nines: number; ms: number }[];
}

/** Latency at percentiles 1 - 10^-k for k from 0 (the median side) up to what the count supports. */
function curve(name: string, histogram: hdr.Histogram): Curve {
  const maxNines = Math.max(1, Math.min(5, Math.log10(Math.max(10, histogram.totalCount))));
  const points: { nines: number; ms: number }[] = [];
  for (let nines = 0; nines <= maxNines + 1e-9; nines += 0.05) {
    const percentile = 100 * (1 - 10 ** -nines);
    points.push({ nines, ms: histogram.getValueAtPercentile(percentile) / 1000 });
  }
  return { name, points };
}

function percentileChart(curves: readonly Curve[]): string {
  const width = 860;
  const height = 420;
  const m = { left: 70, right: 240, top: 20, bottom: 50 };
  const w = width - m.left - m.right;
  const h = height - m.top - m.bottom;
  const maxNines = Math.max(1, ...curves.flatMap((c) => c.points.map((p) => p.nines)));
  const maxMs = niceCeiling(Math.max(1, ...curves.flatMap((c) => c.points.map((p) => p.ms))));
  const x = (n: number) => m.left + (n / maxNines) * w;
  const y = (ms: number) => m.top + h - (ms / maxMs) * h;
  const parts: string[] = [];
  for (let k = 0; k <= Math.floor(maxNines); k++) {
    const label = k === 0 ? "0%" : `${(100 * (1 - 10 ** -k)).toFixed(Math.max(0, k - 2))}%`;
    parts.push(`<line x1="${x(k)}" y1="${m.top}" x2="${x(k)}" y2="${m.top + h}" stroke="#ddd"/>`);
    parts.push(`<text x="${x(k)}" y="${m.top + h + 18}" text-anchor="middle">${label}</text>`);
  }
  for (let i = 0; i <= 5; i++) {
    const ms = (maxMs / 5) * i;
    parts.push(`<line x1="${m.left}" y1="${y(ms)}" x2="${m.left + w}" y2="${y(ms)}" stroke="#eee"/>`);
    parts.push(`<text x="${m.left - 8}" y="${y(ms) + 4}" text-anchor="end">${trim(ms)}</text>`);
  }
  curves.forEach((c, i) => {
    const color = palette[i % palette.length];
    const d = c.points.map((p, j) => `${j === 0 ? "M" : "L"}${x(p.nines).toFixed(1)},${y(p.ms).toFixed(1)}`).join(" ");
    parts.push(
      `<path class="curve" data-scenario="${escapeHtml(c.name)}" d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`,
    );
    parts.push(`<rect x="${m.left + w + 20}" y="${m.top + i * 22}" width="14" height="4" fill="${color}"/>`);
    parts.push(`<text x="${m.left + w + 40}" y="${m.top + i * 22 + 6}">${escapeHtml(c.name)}</text>`);
  });
  parts.push(
    `<text x="${m.left + w / 2}" y="${height - 8}" text-anchor="middle">percentile (log scale: each grid line adds a nine)</text>`,
  );
  parts.push(
    `<text transform="translate(16 ${m.top + h / 2}) rotate(-90)" text-anchor="middle">E2E latency (ms)</text>`,
  );
  return svg(width, height, "Latency by percentile", parts);
}

function throughputChart(rows: readonly { name: string; rate: number }[]): string {
  const width = 860;
  const barHeight = 22;
  const m = { left: 230, right: 90, top: 10, bottom: 30 };
  const height = m.top + m.bottom + rows.length * (barHeight + 8);
  const w = width - m.left - m.right;
  const max = Math.max(1, ...rows.map((r) => r.rate));
  const parts = rows.map((r, i) => {
    const yTop = m.top + i * (barHeight + 8);
    const len = (r.rate / max) * w;
    return (
      `<text x="${m.left - 8}" y="${yTop + 15}" text-anchor="end">${escapeHtml(r.name)}</text>` +
      `<rect class="bar" data-scenario="${escapeHtml(r.name)}" x="${m.left}" y="${yTop}" width="${len.toFixed(1)}" height="${barHeight}" fill="${palette[i % palette.length]}"/>` +
      `<text x="${m.left + len + 6}" y="${yTop + 15}">${Math.round(r.rate)}/s</text>`
    );
  });
  return svg(width, height, "Throughput", parts);
}

/** Throughput against calls in flight (log2 axis), one line per scenario, mean over repetitions. */
function sweepChart(
  series: readonly { name: string; points: readonly { concurrency: number; rate: number }[] }[],
): string {
  const width = 860;
  const height = 360;
  const m = { left: 70, right: 240, top: 20, bottom: 50 };
  const w = width - m.left - m.right;
  const h = height - m.top - m.bottom;
  const all = series.flatMap((s) => s.points);
  const maxC = Math.max(2, ...all.map((p) => p.concurrency));
  const maxRate = niceCeiling(Math.max(1, ...all.map((p) => p.rate)));
  const x = (c: number) => m.left + (Math.log2(c) / Math.log2(maxC)) * w;
  const y = (rate: number) => m.top + h - (rate / maxRate) * h;
  const parts: string[] = [];
  for (let c = 1; c <= maxC; c *= 2) {
    parts.push(`<line x1="${x(c)}" y1="${m.top}" x2="${x(c)}" y2="${m.top + h}" stroke="#eee"/>`);
    parts.push(`<text x="${x(c)}" y="${m.top + h + 18}" text-anchor="middle">${c}</text>`);
  }
  for (let i = 0; i <= 5; i++) {
    const rate = (maxRate / 5) * i;
    parts.push(`<line x1="${m.left}" y1="${y(rate)}" x2="${m.left + w}" y2="${y(rate)}" stroke="#eee"/>`);
    parts.push(`<text x="${m.left - 8}" y="${y(rate) + 4}" text-anchor="end">${Math.round(rate)}</text>`);
  }
  series.forEach((s, i) => {
    const color = palette[i % palette.length];
    const d = s.points
      .map((p, j) => `${j === 0 ? "M" : "L"}${x(p.concurrency).toFixed(1)},${y(p.rate).toFixed(1)}`)
      .join(" ");
    parts.push(
      `<path class="sweep" data-scenario="${escapeHtml(s.name)}" d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`,
    );
    for (const p of s.points)
      parts.push(`<circle cx="${x(p.concurrency).toFixed(1)}" cy="${y(p.rate).toFixed(1)}" r="3" fill="${color}"/>`);
    parts.push(`<rect x="${m.left + w + 20}" y="${m.top + i * 22}" width="14" height="4" fill="${color}"/>`);
    parts.push(`<text x="${m.left + w + 40}" y="${m.top + i * 22 + 6}">${escapeHtml(s.name)}</text>`);
  });
  parts.push(`<text x="${m.left + w / 2}" y="${height - 8}" text-anchor="middle">calls in flight (closed loop)</text>`);
  parts.push(`<text transform="translate(16 ${m.top + h / 2}) rotate(-90)" text-anchor="middle">calls/s</text>`);
  return svg(width, height, "Throughput against concurrency", parts);
}

function svg(width: number, height: number, title: string, parts: readonly string[]): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12" role="img" aria-label="${title}"><title>${title}</title>${parts.join("")}</svg>`;
}

function niceCeiling(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const f of [1, 2, 2.5, 5, 10]) if (f * p >= v) return f * p;
  return 10 * p;
}

function trim(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

/** The report page of a disclosure. Histograms come from its artifacts. */
export function renderReport(d: BenchmarkDisclosure, title: string): string {
  const artifacts = new Map(d.artifacts.map((a) => [a.name, a.content]));
  const summary = d.results.filter((r) => r.repetition === undefined);
  const sweeps = new Map<string, Map<number, number[]>>();
  for (const r of d.results) {
    if (r.loadModel !== "closed-sweep" || r.concurrency === undefined) continue;
    const byConcurrency = sweeps.get(r.scenario) ?? new Map<number, number[]>();
    byConcurrency.set(r.concurrency, [...(byConcurrency.get(r.concurrency) ?? []), r.achievedRate ?? 0]);
    sweeps.set(r.scenario, byConcurrency);
  }
  const sweepSeries = [...sweeps].map(([name, byConcurrency]) => ({
    name,
    points: [...byConcurrency]
      .sort((a, b) => a[0] - b[0])
      .map(([concurrency, rates]) => ({ concurrency, rate: rates.reduce((a, b) => a + b, 0) / rates.length })),
  }));
  const curvesOf = (model: string) =>
    summary
      .filter((r) => (r.loadModel === "open") === (model === "open"))
      .flatMap((r) => {
        const content = artifacts.get(r.e2eArtifact);
        return content === undefined ? [] : [curve(r.scenario, hdr.decodeFromCompressedBase64(content))];
      });
  const closedCurves = curvesOf("closed");
  const openCurves = curvesOf("open");
  const rows = summary
    .filter((r) => r.loadModel !== "open")
    .map((r) => ({ name: r.scenario, rate: r.achievedRate ?? 0 }));
  const table = summary
    .map(
      (r) =>
        `<tr><td>${escapeHtml(r.scenario)}</td><td>${Math.round(r.achievedRate ?? 0)}${spreadText(r.throughputSpread)}${r.targetRate === undefined ? "" : ` (${Math.round(r.targetRate)})`}</td><td>${fmt(r.e2eUs?.p50)}</td><td>${fmt(r.e2eUs?.p99)}</td><td>${fmt(r.e2eUs?.p999)}</td><td>${fmt(r.ttftUs?.p99)}</td><td>${Math.round(r.serverCpuUsPerCall ?? 0)}</td><td>${Math.round(r.clientCpuUsPerCall ?? 0)}</td><td>${r.clientCpuShare === undefined ? "" : r.clientCpuShare.toFixed(2)}</td><td>${r.stealShare === undefined ? "" : `${(r.stealShare * 100).toFixed(1)} %`}</td><td>${r.errorRate ?? 0}</td></tr>`,
    )
    .join("");
  const checks = d.qualityChecks
    .map(
      (q) =>
        `<li>${q.passed ? "pass" : "FAIL"}: ${escapeHtml(q.name)}: ${q.observed} ${escapeHtml(q.comparison)} ${q.threshold}</li>`,
    )
    .join("");
  const s = d.software;
  const hw = d.hardware;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}</style>
</head><body>
<h1>${escapeHtml(title)}</h1>
<p>Reviewed ${d.reviewedAtUtc ? new Date(Number(d.reviewedAtUtc.seconds) * 1000).toISOString() : "?"}; git ${escapeHtml(s?.gitRevision ?? "?")}${s?.gitDirty ? " (dirty work tree)" : ""}; ${escapeHtml(hw?.cpuModel ?? "")}, ${hw?.logicalCpus ?? "?"} logical CPUs, ${hw?.memoryGib ?? "?"} GiB; ${escapeHtml(s?.runtime ?? "")}.<br>
${escapeHtml(d.workload?.arrival ?? "")}; ${d.method?.repetitions ?? "?"} rounds of ${d.method?.durationSeconds ?? "?"} s per scenario.</p>
<h2>Quality checks</h2><ul>${checks}</ul>
${d.notes.length > 0 ? `<h2>Notes</h2><ul>${d.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join("")}</ul>` : ""}
<h2>Method</h2><p>${escapeHtml(d.method?.loadGenerator ?? "")}</p><p>${escapeHtml(d.method?.coordinatedOmission ?? "")}</p>
<h2>Latency by percentile, closed loop (at saturation)</h2>${percentileChart(closedCurves)}
${openCurves.length > 0 ? `<h2>Latency by percentile, open loop (offered rate, timed from intended send)</h2>${percentileChart(openCurves)}` : ""}
<h2>Throughput</h2>${throughputChart(rows)}
${sweepSeries.length > 0 ? `<h2>Throughput against concurrency</h2>${sweepChart(sweepSeries)}` : ""}
<h2>Figures (latency in ms, CPU in µs per call)</h2>
<table><tr><th>scenario</th><th>calls/s (target)</th><th>p50</th><th>p99</th><th>p99.9</th><th>TTFT p99</th><th>server CPU</th><th>client CPU</th><th>client cores</th><th>steal</th><th>error rate</th></tr>${table}</table>
<p>Client cores: the load generator's CPU time over the wall time, as a share of one core. It is one Node.js thread (V8's helper threads can take it past 1): near 1, the client rather than the server limits a closed-loop figure.</p>
<p>Verify with <code>envelope disclosure verify</code>: every figure is recomputed from the histograms embedded in the disclosure.</p>
</body></html>
`;
}

/** " ±h" where h is the half width of the 95 % confidence interval of the mean over the rounds. */
function spreadText(s: Spread | undefined): string {
  return s?.ci95High === undefined || s.mean === undefined ? "" : ` ±${Math.round(s.ci95High - s.mean)}`;
}

function fmt(us: number | undefined): string {
  return us === undefined ? "" : (us / 1000).toFixed(2);
}
