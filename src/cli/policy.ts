// `envelope policy check FILE` compiles a policy bundle offline, exactly as the server does at start
// and on SIGHUP, and says what is wrong with it.
import { loadPolicyFile } from "../policy/load.js";
import { type Command, parseFlags, usageError } from "./command.js";

const usage = `Usage: envelope policy check FILE

Checks a CEL policy bundle (YAML or JSON) as the server compiles it for policy.file: every key
known, every rule named once, every expression parsed and checked against the variables
(request, kind, requested, caller), the limits (1 MiB, 1000 rules, 4096 characters per
expression). Prints the bundle's version and rule count, or every problem.

Options:
  -h, --help   show this help

Exit status: 0 valid, 1 invalid, 2 usage error or unreadable file.
`;

export const runPolicy: Command = {
  summary: "check a CEL policy bundle offline",
  usage,
  async run(args) {
    const flags = parseFlags("policy", usage, { args, strict: true, allowPositionals: true, options: {} });
    if (typeof flags === "number") return flags;
    const [action, file, ...extra] = flags.positionals;
    if (action !== "check" || file === undefined || extra.length > 0) {
      return usageError("policy", "expected: check FILE", usage);
    }
    const loaded = loadPolicyFile(file);
    switch (loaded.kind) {
      case "ok": {
        const { version, rules } = loaded.bundle;
        process.stdout.write(
          `${file}: valid, version ${JSON.stringify(version)}, ${rules.length} rule${rules.length === 1 ? "" : "s"}\n`,
        );
        return 0;
      }
      case "unreadable":
        process.stderr.write(`envelope policy: ${loaded.problems.join("; ")}\n`);
        return 2;
      case "invalid": {
        const n = loaded.problems.length;
        const lines = [`${file}: invalid, ${n} problem${n === 1 ? "" : "s"}`, ...loaded.problems.map((p) => `  ${p}`)];
        process.stdout.write(`${lines.join("\n")}\n`);
        return 1;
      }
    }
  },
};
