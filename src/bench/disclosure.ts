// Benchmark disclosures: the record that binds every figure to the machine, software, workload and
// method that produced it, with the raw HDR histograms embedded and hashed so that anyone can
// recompute each reported percentile. verifyDisclosure is what `envelope disclosure verify` runs.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import * as os from "node:os";
import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import * as hdr from "hdr-histogram-js";
import {
  type Artifact,
  ArtifactSchema,
  type BenchmarkDisclosure,
  BenchmarkDisclosureSchema,
  type Hardware,
  HardwareSchema,
  type Percentiles,
  PercentilesSchema,
  type Software,
  SoftwareSchema,
} from "../gen/envelope/v1/benchmark_disclosure_pb.js";
import { descriptorSet } from "../schema.js";
import { spreadOf } from "./statistics.js";

/** The layout of Envelope's additions to the disclosure. */
export const disclosureFormat = "envelope.bench/1";
export const histogramMediaType = "application/x-hdr-histogram;encoding=compressed-base64";

export function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** A histogram as an embedded artifact. */
export function histogramArtifact(name: string, histogram: hdr.Histogram): Artifact {
  const content = hdr.encodeIntoCompressedBase64(histogram);
  return create(ArtifactSchema, { name, mediaType: histogramMediaType, sha256: sha256(content), content });
}

/**
 * The percentiles a disclosure reports, in the histogram's unit (microseconds). The maximum is the
 * 100th percentile (the top of the highest bucket), which an encoded histogram keeps; the exact
 * raw maximum is not part of the encoding and could not be recomputed.
 */
export function percentilesOf(histogram: hdr.Histogram): Percentiles {
  return create(PercentilesSchema, {
    p50: histogram.getValueAtPercentile(50),
    p90: histogram.getValueAtPercentile(90),
    p99: histogram.getValueAtPercentile(99),
    p999: histogram.getValueAtPercentile(99.9),
    max: histogram.getValueAtPercentile(100),
    count: histogram.totalCount,
  });
}

/** This machine, as a disclosure describes it. */
export function describeHardware(): Hardware {
  const cpus = os.cpus();
  const cgroup = "/sys/fs/cgroup/cpu.max";
  return create(HardwareSchema, {
    device: "CPU",
    count: 1,
    cpuModel: cpus[0]?.model ?? "unknown",
    logicalCpus: cpus.length,
    cpuMhz: cpus[0]?.speed ?? 0,
    memoryGib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    cgroupCpuLimit: existsSync(cgroup) ? readFileSync(cgroup, "utf8").trim() : "unknown",
    topology: `${cpus.length} logical CPUs`,
  });
}

/** The software a run used: runtime, key packages from the lockfile, git state, schema hash. */
export function describeSoftware(root: URL, packages: readonly string[]): Software {
  const lockText = readFileSync(new URL("package-lock.json", root));
  const lock = JSON.parse(lockText.toString()) as { packages: Record<string, { version?: string }> };
  const git = (args: string[]) => execFileSync("git", args, { cwd: root, encoding: "utf8" }).trim();
  return create(SoftwareSchema, {
    os: `${os.type()} ${os.release()}`,
    kernel: os.version(),
    runtime: `Node.js ${process.versions.node}`,
    runtimeVersions: { node: process.versions.node, v8: process.versions.v8, openssl: process.versions.openssl },
    packages: Object.fromEntries(
      packages.map((name) => [name, lock.packages[`node_modules/${name}`]?.version ?? "not installed"]),
    ),
    gitRevision: git(["rev-parse", "HEAD"]),
    gitDirty: git(["status", "--porcelain"]) !== "",
    lockfileSha256: sha256(lockText),
    descriptorSetSha256: sha256(descriptorSet()),
  });
}

export interface VerifyOptions {
  /** The moment the review age is judged at. Default now. */
  readonly nowMs?: number;
  /** Oldest acceptable reviewedAtUtc, in days. Default 90. */
  readonly maxAgeDays?: number;
  /** Accept a run from a work tree with uncommitted changes. Default false. */
  readonly allowDirty?: boolean;
}

/**
 * Every way the disclosure fails to back its own figures, as readable problems; none means it
 * verifies. Never throws on bad input.
 */
export function verifyDisclosure(json: JsonValue, options: VerifyOptions = {}): string[] {
  let d: BenchmarkDisclosure;
  try {
    d = fromJson(BenchmarkDisclosureSchema, json);
  } catch (e) {
    return [`not a BenchmarkDisclosure: ${e instanceof Error ? e.message : String(e)}`];
  }
  const problems: string[] = [];
  if (d.format !== disclosureFormat) problems.push(`format is "${d.format}", expected "${disclosureFormat}"`);

  const histograms = new Map<string, hdr.Histogram>();
  for (const a of d.artifacts) {
    const actual = sha256(a.content);
    if (actual !== a.sha256) {
      problems.push(`artifact ${a.name}: sha256 is ${actual}, the disclosure says ${a.sha256}`);
      continue;
    }
    if (a.mediaType !== histogramMediaType) continue;
    try {
      histograms.set(a.name, hdr.decodeFromCompressedBase64(a.content));
    } catch {
      problems.push(`artifact ${a.name}: not a compressed HDR histogram`);
    }
  }

  for (const r of d.results) {
    const label = `${r.scenario}${r.repetition === undefined ? "" : ` (repetition ${r.repetition})`}`;
    for (const [metric, reported, artifact] of [
      ["ttft", r.ttftUs, r.ttftArtifact],
      ["e2e", r.e2eUs, r.e2eArtifact],
    ] as const) {
      if (reported === undefined && artifact === "") continue;
      const histogram = histograms.get(artifact);
      if (histogram === undefined || reported === undefined) {
        problems.push(`${label}: ${metric} has no verifiable histogram "${artifact}"`);
        continue;
      }
      const recomputed = percentilesOf(histogram);
      for (const key of ["p50", "p90", "p99", "p999", "max", "count"] as const) {
        if (reported[key] !== recomputed[key]) {
          problems.push(
            `${label}: ${metric} ${key} is reported as ${reported[key]}, the histogram gives ${recomputed[key]}`,
          );
        }
      }
    }
  }

  // Spreads summarize the rounds of the same scenario: recompute them from those rounds.
  for (const r of d.results) {
    if (r.repetition !== undefined || r.throughputSpread === undefined) continue;
    const rounds = d.results
      .filter((x) => x.scenario === r.scenario && x.repetition !== undefined)
      .map((x) => x.achievedRate ?? 0);
    const recomputed = spreadOf(rounds);
    for (const key of ["n", "mean", "stddev", "ci95Low", "ci95High"] as const) {
      if (r.throughputSpread[key] !== recomputed[key]) {
        problems.push(
          `${r.scenario}: throughput ${key} is reported as ${r.throughputSpread[key]}, its rounds give ${recomputed[key]}`,
        );
      }
    }
  }

  for (const q of d.qualityChecks) {
    const { observed, threshold } = q;
    if (observed === undefined || threshold === undefined || (q.comparison !== "<=" && q.comparison !== ">=")) {
      problems.push(`quality check ${q.name}: needs observed, threshold and comparison ("<=" or ">=")`);
      continue;
    }
    const passes = q.comparison === "<=" ? observed <= threshold : observed >= threshold;
    if (q.passed !== passes)
      problems.push(
        `quality check ${q.name}: marked ${q.passed ? "passed" : "failed"} but ${observed} ${q.comparison} ${threshold} is ${passes}`,
      );
  }

  if (d.software?.gitDirty !== false && !options.allowDirty) {
    problems.push(
      d.software?.gitDirty === undefined
        ? "software.gitDirty is not stated"
        : "the run was made from a work tree with uncommitted changes (software.gitDirty): it cannot be reproduced from git",
    );
  }
  const reviewed = d.reviewedAtUtc === undefined ? undefined : Number(d.reviewedAtUtc.seconds) * 1000;
  const maxAgeMs = (options.maxAgeDays ?? 90) * 86_400_000;
  if (reviewed === undefined) problems.push("reviewedAtUtc is missing");
  else if ((options.nowMs ?? Date.now()) - reviewed > maxAgeMs) {
    problems.push(`reviewedAtUtc ${new Date(reviewed).toISOString()} is older than ${options.maxAgeDays ?? 90} days`);
  }
  return problems;
}
