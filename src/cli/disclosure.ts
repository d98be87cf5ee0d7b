import { readFileSync, writeFileSync } from "node:fs";
import { basename } from "node:path";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { verifyDisclosure } from "../bench/disclosure.js";
import { renderReport } from "../bench/report.js";
import { type BenchmarkDisclosure, BenchmarkDisclosureSchema } from "../gen/envelope/v1/benchmark_disclosure_pb.js";
import { type Command, parseFlags, usageError } from "./command.js";

const usage = `Usage: envelope disclosure verify [options] FILE
       envelope disclosure report FILE [--out HTML]

verify checks that a benchmark disclosure backs its own figures: it is a valid BenchmarkDisclosure, every
embedded artifact matches its SHA-256, every reported percentile equals the one recomputed from its
raw HDR histogram, quality checks are marked as their figures say, the run came from a clean git
tree, and its review is recent enough.

report writes the disclosure as a page: latency by percentile of every scenario (log-scaled
percentile axis), throughput, quality checks and the figures (default: FILE with .html).

Options:
  --max-age-days N   verify: oldest acceptable reviewedAtUtc (default 90)
  --allow-dirty      verify: accept a run made from a work tree with uncommitted changes
  --out HTML         report: where to write the page
  -h, --help         show this help

Exit status: 0 verified (or written), 1 a problem found (each is listed), 2 usage error or
unreadable file.
`;

export const runDisclosure: Command = {
  summary: "verify a benchmark disclosure against its raw histograms, or render its report",
  usage,
  async run(args) {
    const flags = parse(args);
    if (typeof flags === "number") return flags;
    const [action, file, ...extra] = flags.positionals;
    if ((action !== "verify" && action !== "report") || file === undefined || extra.length > 0) {
      return usageError("disclosure", "expected: verify FILE, or report FILE", usage);
    }
    const maxAgeDays = Number(flags.values["max-age-days"] ?? "90");
    if (!Number.isFinite(maxAgeDays) || maxAgeDays <= 0) {
      return usageError("disclosure", "--max-age-days takes a positive number", usage);
    }
    let json: JsonValue;
    try {
      json = JSON.parse(readFileSync(file, "utf8")) as JsonValue;
    } catch (e) {
      process.stderr.write(`envelope disclosure: cannot read ${file}: ${(e as Error).message}\n`);
      return 2;
    }
    if (action === "report") {
      let disclosure: BenchmarkDisclosure;
      try {
        disclosure = fromJson(BenchmarkDisclosureSchema, json);
      } catch (e) {
        process.stderr.write(`envelope disclosure: ${file} is not a BenchmarkDisclosure: ${(e as Error).message}\n`);
        return 2;
      }
      const out = flags.values.out ?? `${file.replace(/\.json$/, "")}.html`;
      writeFileSync(out, renderReport(disclosure, basename(file)));
      process.stdout.write(`${out}: written\n`);
      return 0;
    }
    const problems = verifyDisclosure(json, { maxAgeDays, allowDirty: flags.values["allow-dirty"] === true });
    if (problems.length === 0) {
      process.stdout.write(`${file}: verified\n`);
      return 0;
    }
    process.stdout.write(`${file}: ${problems.length} problem(s)\n${problems.map((p) => `  - ${p}`).join("\n")}\n`);
    return 1;
  },
};

function parse(args: string[]) {
  return parseFlags("disclosure", usage, {
    args,
    strict: true,
    allowPositionals: true,
    options: { "max-age-days": { type: "string" }, "allow-dirty": { type: "boolean" }, out: { type: "string" } },
  });
}
