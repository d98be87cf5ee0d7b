// Small statistics for benchmark results: medians, the spread of a sample with a confidence
// interval of its mean, and the Mann-Whitney U test.
import { create } from "@bufbuild/protobuf";
import { type Spread, SpreadSchema } from "../gen/envelope/v1/benchmark_disclosure_pb.js";

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

// Two-sided 95 % critical values of Student's t for 1 to 30 degrees of freedom; 1.96 beyond.
const t95 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11,
  2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/** Mean, sample standard deviation and the 95 % confidence interval of the mean. */
export function spreadOf(xs: readonly number[]): Spread {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / Math.max(1, n);
  const stddev = n < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1));
  const half = n < 2 ? 0 : ((t95[n - 2] ?? 1.96) * stddev) / Math.sqrt(n);
  return create(SpreadSchema, { n, mean, stddev, ci95Low: mean - half, ci95High: mean + half });
}
