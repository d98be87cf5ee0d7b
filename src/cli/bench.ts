import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { constants } from "node:os";
import { basename, dirname } from "node:path";
import { fromJson, type JsonValue, toJsonString } from "@bufbuild/protobuf";
import { compareDisclosures } from "../bench/compare.js";
import { renderReport } from "../bench/report.js";
import { standardScenarioNames } from "../bench/scenarios.js";
import { runStandardBenchmark, standardRunDefaults } from "../bench/standard-run.js";
import { type BenchmarkDisclosure, BenchmarkDisclosureSchema } from "../gen/envelope/v1/benchmark_disclosure_pb.js";
import { type Command, parseFlags, usageError } from "./command.js";

const d = standardRunDefaults;
const usage = `Usage: envelope bench run [options]
       envelope bench compare [options] BASELINE CANDIDATE

run starts every scenario's server as a child process (Admit on each transport, the floors it is
measured against, the fastify+ajv peer baseline), moves closed-loop load between them in slices,
round after round, then measures an open loop, an overload and a concurrency sweep. It writes a
benchmark disclosure (verify it with envelope disclosure verify) and its HTML report beside it.
gRPC calls use @grpc/grpc-js; HTTP/1.1 closed loops use autocannon, open loops the project's own
driver (timed from each call's intended send). Progress goes to standard error. With the defaults
it takes about two minutes on two cores; keep the machine otherwise idle.

compare compares two disclosures scenario by scenario over their rounds: the median throughput of
each, their ratio, and the p-value of a two-sided Mann-Whitney U test. A scenario regresses when the
candidate is significantly slower (p < alpha) by more than the threshold. Compare runs from the
same machine.

Options of run:
  --out FILE        the disclosure; its report is FILE with .html ("-": the disclosure on
                    standard output, no report) (default disclosures/<UTC date>-standard.json,
                    or -2, -3... when that exists: a committed disclosure is never overwritten)
  --seconds N       length of one closed-loop slice on one scenario (default ${d.seconds})
  --rounds N        slices per scenario, interleaved across scenarios; compare wants 5 or more
                    (default ${d.rounds})
  --warmup N        seconds of unmeasured load per scenario first (default ${d.warmupSeconds})
  --inflight N      closed-loop calls in flight, connections for HTTP/1.1 (default ${d.inflight})
  --only NAMES      run only these scenarios, comma-separated; what needs another is left out,
                    with a note in the disclosure (default: all)

Options of compare:
  --threshold PCT   largest tolerated throughput drop in percent (default 5)
  --alpha P         significance level (default 0.05)

  -h, --help        show this help

Exit status: 0 written (run) or no regression (compare), 1 a regression (usable as a CI gate),
2 usage error or unreadable file.
`;

export const runBench: Command = {
  summary: "run the standard benchmark, or compare two disclosures (regression gate)",
  usage,
  async run(args) {
    const [action, ...rest] = args;
    if (action === "run") return benchRun(rest);
    if (action === "compare") return benchCompare(rest);
    return usageError("bench", "expected: run, or compare BASELINE CANDIDATE", usage);
  },
};

async function benchRun(args: string[]): Promise<number> {
  const flags = parseFlags("bench", usage, {
    args,
    strict: true,
    options: {
      out: { type: "string" },
      seconds: { type: "string" },
      rounds: { type: "string" },
      warmup: { type: "string" },
      inflight: { type: "string" },
      only: { type: "string" },
    },
  });
  if (typeof flags === "number") return flags;
  const number = (flag: "seconds" | "rounds" | "warmup" | "inflight", fallback: number) =>
    Number(flags.values[flag] ?? fallback);
  const seconds = number("seconds", d.seconds);
  const rounds = number("rounds", d.rounds);
  const warmupSeconds = number("warmup", d.warmupSeconds);
  const inflight = number("inflight", d.inflight);
  if (!(seconds > 0) || !(warmupSeconds >= 0) || !Number.isInteger(rounds) || rounds < 1) {
    return usageError(
      "bench",
      "--seconds takes a positive number, --warmup zero or more, --rounds an integer from 1",
      usage,
    );
  }
  if (!Number.isInteger(inflight) || inflight < 1)
    return usageError("bench", "--inflight takes an integer from 1", usage);
  const out = flags.values.out ?? freshDisclosurePath(new Date());

  const only = flags.values.only?.split(",").filter((name) => name !== "");
  const unknown = only?.filter((name) => !standardScenarioNames.includes(name)) ?? [];
  if (unknown.length > 0) {
    return usageError(
      "bench",
      `no scenario ${unknown.join(", ")}; scenarios: ${standardScenarioNames.join(", ")}`,
      usage,
    );
  }
  const command = `envelope bench run --seconds ${seconds} --rounds ${rounds} --warmup ${warmupSeconds} --inflight ${inflight}${only === undefined ? "" : ` --only ${only.join(",")}`}`;
  // Interrupted, exit through process.exit, on which the benchmarked servers are stopped too.
  const interrupted = (signal: NodeJS.Signals) => process.exit(128 + (constants.signals[signal] ?? 0));
  process.once("SIGINT", interrupted).once("SIGTERM", interrupted);
  const { disclosure, summary } = await runStandardBenchmark({
    seconds,
    rounds,
    warmupSeconds,
    inflight,
    command,
    ...(only === undefined ? {} : { only }),
  }).finally(() => process.off("SIGINT", interrupted).off("SIGTERM", interrupted));
  const json = `${toJsonString(BenchmarkDisclosureSchema, disclosure, { prettySpaces: 2 })}\n`;
  process.stderr.write(summary);
  if (out === "-") {
    process.stdout.write(json);
    return 0;
  }
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, json);
  // The report sits beside its disclosure; it is derived from it alone.
  const report = `${out.replace(/\.json$/, "")}.html`;
  writeFileSync(report, renderReport(disclosure, basename(out)));
  process.stdout.write(`${out}: written\n${report}: written\n`);
  return 0;
}

async function benchCompare(args: string[]): Promise<number> {
  const flags = parseFlags("bench", usage, {
    args,
    strict: true,
    allowPositionals: true,
    options: { threshold: { type: "string" }, alpha: { type: "string" } },
  });
  if (typeof flags === "number") return flags;
  const [baselineFile, candidateFile, ...extra] = flags.positionals;
  if (baselineFile === undefined || candidateFile === undefined || extra.length > 0) {
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
}

function readDisclosure(file: string): BenchmarkDisclosure | string {
  try {
    return fromJson(BenchmarkDisclosureSchema, JSON.parse(readFileSync(file, "utf8")) as JsonValue);
  } catch (e) {
    return `cannot read ${file} as a BenchmarkDisclosure: ${(e as Error).message}`;
  }
}

/** <dir>/<UTC date>-standard.json, or the first of -2, -3... that does not exist yet. */
export function freshDisclosurePath(now: Date, dir = "disclosures"): string {
  const stem = `${dir}/${now.toISOString().slice(0, 10)}-standard`;
  for (let n = 1; ; n++) {
    const path = n === 1 ? `${stem}.json` : `${stem}-${n}.json`;
    if (!existsSync(path)) return path;
  }
}
