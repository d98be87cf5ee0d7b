// Comparing two benchmark disclosures scenario by scenario over their repetitions, with a
// statistical test rather than one ratio of two numbers: the Mann-Whitney U test (no assumption of
// normality; per-round throughputs on a shared machine are not normal), two-sided, normal
// approximation with tie correction.
import type { BenchmarkDisclosure } from "../gen/envelope/v1/benchmark_disclosure_pb.js";
import { mannWhitneyP, median } from "./statistics.js";

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

/** Per-round throughputs by scenario (results with a repetition number, sweeps aside). */
function roundThroughputs(d: BenchmarkDisclosure): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const r of d.results) {
    if (r.repetition === undefined || r.achievedRate === undefined || r.loadModel === "closed-sweep") continue;
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
