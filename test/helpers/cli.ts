// The `envelope` command as users run it, from the sources (tsx), as bin/envelope.js runs the
// compiled build: a child process, its exit status, stdout and stderr.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";

export const repositoryRoot = new URL("../../", import.meta.url).pathname;

export interface CliOutcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** The test's directory: servers started keep their ledger in it, not in the work tree. */
  readonly dir: string;
  readonly env?: Record<string, string>;
  readonly stdin?: string;
  /** Where the child is added, for the test to kill if it outlives it. */
  readonly children?: ChildProcess[];
}

/** Runs `envelope ARGS` to its exit. */
export function runEnvelope(args: string[], options: CliOptions): Promise<CliOutcome> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli/run.ts", ...args], {
      cwd: repositoryRoot,
      env: { ...process.env, ENVELOPE_DATA_DIR: join(options.dir, "ledger"), ...options.env },
    });
    options.children?.push(child);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.stdin ?? "");
  });
}
