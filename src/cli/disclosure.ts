import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type { JsonValue } from "@bufbuild/protobuf";
import { verifyDisclosure } from "../bench/disclosure.js";
import { type Command, usageError } from "./command.js";

const usage = `Usage: envelope disclosure verify [options] FILE

Checks that a benchmark disclosure backs its own figures: it is a valid BenchmarkDisclosure, every
embedded artifact matches its SHA-256, every reported percentile equals the one recomputed from its
raw HDR histogram, quality checks are marked as their figures say, the run came from a clean git
tree, and its review is recent enough.

Options:
  --max-age-days N   oldest acceptable reviewedAtUtc (default 90)
  --allow-dirty      accept a run made from a work tree with uncommitted changes
  -h, --help         show this help

Exit status: 0 verified, 1 a problem found (each is listed), 2 usage error or unreadable file.
`;

export const runDisclosure: Command = {
  summary: "verify a benchmark disclosure against its raw histograms",
  usage,
  async run(args) {
    let flags: ReturnType<typeof parse>;
    try {
      flags = parse(args);
    } catch (e) {
      return usageError("disclosure", (e as Error).message, usage);
    }
    const [action, file, ...extra] = flags.positionals;
    if (action !== "verify" || file === undefined || extra.length > 0) {
      return usageError("disclosure", "expected: verify FILE", usage);
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
  return parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: { "max-age-days": { type: "string" }, "allow-dirty": { type: "boolean" } },
  });
}
