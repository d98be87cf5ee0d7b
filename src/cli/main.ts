// The `envelope` command: a dispatcher over subcommands, each with its own --help.
import { runBench } from "./bench.js";
import type { Command } from "./command.js";
import { runDisclosure } from "./disclosure.js";
import { runExport, runMigrate } from "./ledger.js";
import { runPolicy } from "./policy.js";
import { runServe } from "./serve.js";
import { runToken } from "./token.js";
import { runValidate } from "./validate.js";

const commands: Record<string, Command> = {
  serve: runServe,
  validate: runValidate,
  migrate: runMigrate,
  export: runExport,
  disclosure: runDisclosure,
  bench: runBench,
  token: runToken,
  policy: runPolicy,
};

const usage = `envelope: admission control plane for AI backends

Usage: envelope <command> [options]

Commands:
${Object.entries(commands)
  .map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`)
  .join("\n")}

Run "envelope <command> --help" for a command's options.
`;

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(usage);
    return name === undefined ? 2 : 0;
  }
  if (name === "--version") {
    process.stdout.write("envelope 0.1.0 (contract 2.0)\n");
    return 0;
  }
  const command = commands[name];
  if (command === undefined) {
    process.stderr.write(`envelope: unknown command "${name}"\n\n${usage}`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(command.usage);
    return 0;
  }
  return command.run(rest);
}
