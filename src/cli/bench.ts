import { readFileSync } from "node:fs";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { compareDisclosures } from "../bench/compare.js";
import { type BenchmarkDisclosure, BenchmarkDisclosureSchema } from "../gen/envelope/v1/benchmark_disclosure_pb.js";
import { type Command, parseFlags, usageError } from "./command.js";

const usage = `Usage: envelope bench compare [options] BASELINE CANDIDATE

Compares two benchmark disclosures scenario by scenario over their rounds: the median throughput of
each, their ratio, and the p-value of a two-sided Mann-Whitney U test. A scenario regresses when the
candidate is significantly slower (p < alpha) by more than the threshold. Runs are produced by
npm run bench:quick; compare runs from the same machine.

Options:
  --threshold PCT   largest tolerated throughput drop in percent (default 5)
  --alpha P         significance level (default 0.05)
  -h, --help        show this help

Exit status: 0 no regression, 1 a regression (usable as a CI gate), 2 usage error or unreadable file.
`;

export const runBench: Command = {
  summary: "compare two benchmark disclosures (regression gate)",
  usage,
  async run(args) {
    const flags = parse(args);
    if (typeof flags === "number") return flags;
    const [action, baselineFile, candidateFile, ...extra] = flags.positionals;
    if (action !== "compare" || baselineFile === undefined || candidateFile === undefined || extra.length > 0) {
      return usageError("bench", "expected: compare BASELINE CANDIDATE", usage);
    }
    const threshold = Number(flags.values.threshold ?? "5") / 100;
    const alpha = Number(flags.values.alpha ?? "0.05");
    if (!(threshold >= 0 && threshold < 1) || !(alpha > 0 && alpha < 1)) {
      return usageError("bench", "--threshold takes 0 to 100, --alpha a number between 0 and 1", usage);
    }
    const baseline = readDisclosure(baselineFile);
    const candidate = readDisclosure(candidateFile);
    if (typeof baseline === "string" || typeof candidate === "string") {
      process.stderr.write(`envelope bench: ${typeof baseline === "string" ? baseline : candidate}\n`);
      return 2;
    }
    const rows = compareDisclosures(baseline, candidate, { threshold, alpha });
    if (rows.length === 0) {
      process.stderr.write("envelope bench: the disclosures share no scenario with per-round results\n");
      return 2;
    }
    const lines = rows.map(
      (r) =>
        `${r.regression ? "REGRESSION" : "ok        "} ${r.scenario.padEnd(26)} ${r.baselineMedian.toFixed(0).padStart(7)} -> ${r.candidateMedian.toFixed(0).padStart(7)} calls/s  x${r.ratio.toFixed(3)}  p=${r.pValue.toPrecision(2)}  (${r.baselineRounds} vs ${r.candidateRounds} rounds)`,
    );
    process.stdout.write(`${lines.join("\n")}\n`);
    return rows.some((r) => r.regression) ? 1 : 0;
  },
};

function readDisclosure(file: string): BenchmarkDisclosure | string {
  try {
    return fromJson(BenchmarkDisclosureSchema, JSON.parse(readFileSync(file, "utf8")) as JsonValue);
  } catch (e) {
    return `cannot read ${file} as a BenchmarkDisclosure: ${(e as Error).message}`;
  }
}

function parse(args: string[]) {
  return parseFlags("bench", usage, {
    args,
    strict: true,
    allowPositionals: true,
    options: { threshold: { type: "string" }, alpha: { type: "string" } },
  });
}
