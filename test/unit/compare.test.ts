// Comparing benchmark runs must tell a real regression from noise: a statistical test over the
// rounds, and a threshold on the size of the drop.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { compareDisclosures } from "../../src/bench/compare.js";
import { seededRandom } from "../../src/bench/load.js";
import { mannWhitneyP, median, normalCdf, spreadOf } from "../../src/bench/statistics.js";
import { BenchmarkDisclosureSchema } from "../../src/gen/envelope/v1/benchmark_disclosure_pb.js";

function run(scenario: string, rates: number[]) {
  return create(BenchmarkDisclosureSchema, {
    results: [
      { scenario, achievedRate: median(rates) },
      ...rates.map((achievedRate, i) => ({ scenario, repetition: i + 1, achievedRate })),
    ],
  });
}

function noisy(center: number, n: number, seed: number): number[] {
  const random = seededRandom(seed);
  return Array.from({ length: n }, () => center * (1 + (random() - 0.5) * 0.2)); // +-10 %
}

describe("statistics", () => {
  it("computes the standard normal CDF", () => {
    expect(normalCdf(0)).toBeCloseTo(0.5, 6);
    expect(normalCdf(1.959964)).toBeCloseTo(0.975, 4);
    expect(normalCdf(-1.959964)).toBeCloseTo(0.025, 4);
  });

  it("gives the Mann-Whitney p-value of fully separated samples (n = 10 + 10)", () => {
    const low = Array.from({ length: 10 }, (_, i) => i);
    const high = Array.from({ length: 10 }, (_, i) => 100 + i);
    // U = 0; z = (50 - 0.5) / sqrt(175) = 3.742; two-sided p = 0.000183.
    expect(mannWhitneyP(low, high)).toBeCloseTo(0.000183, 5);
    expect(mannWhitneyP(high, low)).toBeCloseTo(0.000183, 5);
  });

  it("gives the mean, spread and 95 % confidence interval of a sample", () => {
    // mean 5, sample sd sqrt(10/4) = 1.5811; t(4) = 2.776; half width 2.776 * 1.5811 / sqrt(5) = 1.963.
    const s = spreadOf([3, 4, 5, 6, 7]);
    expect(s.n).toBe(5);
    expect(s.mean).toBe(5);
    expect(s.stddev).toBeCloseTo(1.5811, 4);
    expect(s.ci95Low).toBeCloseTo(3.037, 3);
    expect(s.ci95High).toBeCloseTo(6.963, 3);
    expect(spreadOf([42])).toMatchObject({ n: 1, mean: 42, stddev: 0, ci95Low: 42, ci95High: 42 });
  });

  it("finds no difference between a sample and itself", () => {
    const xs = noisy(1000, 15, 1);
    expect(mannWhitneyP(xs, xs)).toBeGreaterThan(0.9);
  });
});

describe("compareDisclosures", () => {
  it("flags a significant drop beyond the threshold", () => {
    const [row] = compareDisclosures(run("admit", noisy(1000, 15, 1)), run("admit", noisy(700, 15, 2)));
    expect(row?.regression).toBe(true);
    expect(row?.ratio).toBeLessThan(0.8);
    expect(row?.pValue).toBeLessThan(0.001);
  });

  it("does not flag a drop within the threshold, however significant", () => {
    const base = Array.from({ length: 15 }, (_, i) => 1000 + i);
    const slower = base.map((x) => x * 0.97);
    const [row] = compareDisclosures(run("admit", base), run("admit", slower), { threshold: 0.05 });
    expect(row?.regression).toBe(false);
  });

  it("does not flag noise: the same distribution drawn twice", () => {
    const [row] = compareDisclosures(run("admit", noisy(1000, 15, 3)), run("admit", noisy(1000, 15, 4)));
    expect(row?.regression).toBe(false);
  });

  it("compares only scenarios both runs have", () => {
    expect(compareDisclosures(run("a", [1, 2, 3]), run("b", [1, 2, 3]))).toEqual([]);
  });
});
