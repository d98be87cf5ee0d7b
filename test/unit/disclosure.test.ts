// A disclosure must back its own figures: verification recomputes every percentile from the embedded
// histograms and checks every hash, so changing any byte of an artifact, or any reported figure, is
// caught.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type JsonObject, toJson } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  describeHardware,
  disclosureFormat,
  histogramArtifact,
  percentilesOf,
  verifyDisclosure,
} from "../../src/bench/disclosure.js";
import { latencyHistogram } from "../../src/bench/load.js";
import { spreadOf } from "../../src/bench/statistics.js";
import { freshDisclosurePath } from "../../src/cli/bench.js";
import { BenchmarkDisclosureSchema } from "../../src/gen/envelope/v1/benchmark_disclosure_pb.js";

const nowMs = Date.parse("2026-11-22T12:00:00Z");

function sampleDisclosure(): JsonObject {
  const ttft = latencyHistogram();
  const e2e = latencyHistogram();
  for (let i = 1; i <= 5000; i++) {
    ttft.recordValue(100 + (i % 97) * 3);
    e2e.recordValue(250 + (i % 89) * 11 + (i % 1000 === 0 ? 40_000 : 0));
  }
  const disclosure = create(BenchmarkDisclosureSchema, {
    reviewedAtUtc: timestampFromMs(nowMs - 86_400_000),
    format: disclosureFormat,
    hardware: describeHardware(),
    software: { gitRevision: "0123456", gitDirty: false },
    results: [
      {
        scenario: "admit",
        ttftUs: percentilesOf(ttft),
        e2eUs: percentilesOf(e2e),
        ttftArtifact: "admit.ttft",
        e2eArtifact: "admit.e2e",
        throughputSpread: spreadOf([900, 1000, 1100]),
      },
      ...[900, 1000, 1100].map((achievedRate, i) => ({ scenario: "admit", repetition: i + 1, achievedRate })),
    ],
    artifacts: [histogramArtifact("admit.ttft", ttft), histogramArtifact("admit.e2e", e2e)],
    qualityChecks: [
      {
        name: "p99 under 10 ms",
        observed: e2e.getValueAtPercentile(99),
        comparison: "<=",
        threshold: 10_000,
        passed: true,
      },
    ],
  });
  return toJson(BenchmarkDisclosureSchema, disclosure) as JsonObject;
}

const verify = (json: JsonObject, options = {}) => verifyDisclosure(json, { nowMs, ...options });

describe("disclosure verify", () => {
  it("verifies an untouched disclosure", () => {
    expect(verify(sampleDisclosure())).toEqual([]);
  });

  it("fails when any character of a histogram artifact changes", () => {
    const base = sampleDisclosure();
    const content = ((base.artifacts as JsonObject[])[1] as JsonObject).content as string;
    expect(content.length).toBeGreaterThan(50);
    for (let i = 0; i < content.length; i++) {
      const tampered = structuredClone(base);
      const artifact = (tampered.artifacts as JsonObject[])[1] as JsonObject;
      const replacement = content[i] === "A" ? "B" : "A";
      artifact.content = content.slice(0, i) + replacement + content.slice(i + 1);
      const problems = verify(tampered);
      if (!problems.some((p) => p.includes("admit.e2e"))) expect.fail(`a change at character ${i} went unnoticed`);
    }
  });

  it("fails when a histogram is swapped for another with a matching hash but other values", () => {
    const tampered = sampleDisclosure();
    const [ttft, e2e] = tampered.artifacts as JsonObject[];
    (tampered.artifacts as JsonObject[])[1] = { ...(ttft as JsonObject), name: (e2e as JsonObject).name as string };
    expect(verify(tampered).some((p) => p.startsWith("admit: e2e"))).toBe(true);
  });

  it("fails when any reported percentile changes", () => {
    const base = sampleDisclosure();
    for (const metric of ["ttftUs", "e2eUs"]) {
      for (const key of ["p50", "p90", "p99", "p999", "max", "count"]) {
        const tampered = structuredClone(base);
        const figures = ((tampered.results as JsonObject[])[0] as JsonObject)[metric] as JsonObject;
        figures[key] = (figures[key] as number) + 1;
        expect(verify(tampered), `${metric}.${key}`).toContainEqual(expect.stringContaining(`${key} is reported as`));
      }
    }
  });

  it("fails when a round's throughput no longer matches the reported spread", () => {
    const tampered = sampleDisclosure();
    ((tampered.results as JsonObject[])[2] as JsonObject).achievedRate = 1200;
    expect(verify(tampered)).toContainEqual(expect.stringContaining("throughput mean is reported as"));
  });

  it("fails a quality check marked passed against its own figures", () => {
    const tampered = sampleDisclosure();
    ((tampered.qualityChecks as JsonObject[])[0] as JsonObject).threshold = 1;
    expect(verify(tampered)).toContainEqual(expect.stringContaining("quality check p99 under 10 ms"));
  });

  it("flags a run from a dirty work tree unless allowed", () => {
    const dirty = sampleDisclosure();
    (dirty.software as JsonObject).gitDirty = true;
    expect(verify(dirty)).toContainEqual(expect.stringContaining("uncommitted changes"));
    expect(verify(dirty, { allowDirty: true })).toEqual([]);
  });

  it("flags a review older than the limit", () => {
    expect(verify(sampleDisclosure(), { maxAgeDays: 0.5 })).toContainEqual(expect.stringContaining("older than"));
  });

  it("rejects what is not a disclosure, without throwing", () => {
    expect(verify({ ...sampleDisclosure(), surprise: 1 })[0]).toMatch(/not a BenchmarkDisclosure/);
    expect(verify([] as unknown as JsonObject)[0]).toMatch(/not a BenchmarkDisclosure/);
  });
});

describe("bench run's default output", () => {
  it("never names a disclosure that exists: -2, -3... after the day's first", () => {
    const dir = mkdtempSync(join(tmpdir(), "envelope-disclosures-"));
    const day = new Date("2026-11-23T10:00:00Z");
    expect(freshDisclosurePath(day, dir)).toBe(`${dir}/2026-11-23-standard.json`);
    writeFileSync(`${dir}/2026-11-23-standard.json`, "{}");
    expect(freshDisclosurePath(day, dir)).toBe(`${dir}/2026-11-23-standard-2.json`);
    writeFileSync(`${dir}/2026-11-23-standard-2.json`, "{}");
    expect(freshDisclosurePath(day, dir)).toBe(`${dir}/2026-11-23-standard-3.json`);
    rmSync(dir, { recursive: true });
  });
});
