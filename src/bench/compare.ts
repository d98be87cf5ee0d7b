// Comparing two benchmark disclosures scenario by scenario over their repetitions, with a
// statistical test rather than one ratio of two numbers: the Mann-Whitney U test (no assumption of
// normality; per-round throughputs on a shared machine are not normal), two-sided, normal
// approximation with tie correction.
import type { BenchmarkDisclosure } from "../gen/envelope/v1/benchmark_disclosure_pb.js";

export interface ScenarioComparison {
  readonly scenario: string;
  readonly baselineMedian: number;
  readonly candidateMedian: number;
  /** candidate / baseline of the medians. */
  readonly ratio: number;
  /** Two-sided p-value of "the two samples come from the same distribution". */
  readonly pValue: number;
  readonly baselineRounds: number;
  readonly candidateRounds: number;
  /** A significant drop of more than the threshold. */
  readonly regression: boolean;
}

export interface CompareOptions {
  /** Largest tolerated throughput drop, as a fraction (0.05 = 5 %). Default 0.05. */
  readonly threshold?: number;
  /** Significance level. Default 0.05. */
  readonly alpha?: number;
}

/** Per-round throughputs by scenario (results with a repetition number). */
export function roundThroughputs(d: BenchmarkDisclosure): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const r of d.results) {
    if (r.repetition === undefined || r.achievedRate === undefined) continue;
    out.set(r.scenario, [...(out.get(r.scenario) ?? []), r.achievedRate]);
  }
  return out;
}

export function compareDisclosures(
  baseline: BenchmarkDisclosure,
  candidate: BenchmarkDisclosure,
  options: CompareOptions = {},
): ScenarioComparison[] {
  const threshold = options.threshold ?? 0.05;
  const alpha = options.alpha ?? 0.05;
  const a = roundThroughputs(baseline);
  const b = roundThroughputs(candidate);
  const out: ScenarioComparison[] = [];
  for (const [scenario, xs] of a) {
    const ys = b.get(scenario);
    if (ys === undefined) continue;
    const baselineMedian = median(xs);
    const candidateMedian = median(ys);
    const ratio = candidateMedian / baselineMedian;
    const pValue = mannWhitneyP(xs, ys);
    out.push({
      scenario,
      baselineMedian,
      candidateMedian,
      ratio,
      pValue,
      baselineRounds: xs.length,
      candidateRounds: ys.length,
      regression: pValue < alpha && ratio < 1 - threshold,
    });
  }
  return out;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((p, q) => p - q);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Two-sided p-value of the Mann-Whitney U test, normal approximation with tie correction. */
export function mannWhitneyP(xs: readonly number[], ys: readonly number[]): number {
  const n1 = xs.length;
  const n2 = ys.length;
  if (n1 === 0 || n2 === 0) return 1;
  const all = [...xs.map((v) => ({ v, a: true })), ...ys.map((v) => ({ v, a: false }))].sort((p, q) => p.v - q.v);
  // Average ranks over ties, and the tie correction term.
  const ranks = new Array<number>(all.length);
  let tieTerm = 0;
  for (let i = 0; i < all.length; ) {
    let j = i;
    while (j + 1 < all.length && (all[j + 1] as { v: number }).v === (all[i] as { v: number }).v) j++;
    const rank = (i + j + 2) / 2;
    for (let k = i; k <= j; k++) ranks[k] = rank;
    const t = j - i + 1;
    tieTerm += t * t * t - t;
    i = j + 1;
  }
  let r1 = 0;
  all.forEach((item, i) => {
    if (item.a) r1 += ranks[i] as number;
  });
  const u1 = r1 - (n1 * (n1 + 1)) / 2;
  const mean = (n1 * n2) / 2;
  const n = n1 + n2;
  const variance = ((n1 * n2) / 12) * (n + 1 - tieTerm / (n * (n - 1)));
  if (variance <= 0) return 1;
  const z = (Math.abs(u1 - mean) - 0.5) / Math.sqrt(variance); // continuity correction
  return Math.min(1, 2 * (1 - normalCdf(Math.max(0, z))));
}

/** Standard normal CDF (Abramowitz and Stegun 7.1.26 erf, error below 1.5e-7). */
export function normalCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erf =
    1 -
    ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? (1 + erf) / 2 : (1 - erf) / 2;
}
