// A benchmarked server as a child process: started, found on its port, measured from /proc (CPU
// time and peak RSS, Linux), stopped. Separate processes keep the servers' CPU apart from the load
// generator's.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";

export interface ServerProcess {
  readonly port: number;
  /** CPU seconds (user + system) the process has used so far. */
  cpuSeconds(): number;
  /** The process's peak resident set size so far, in bytes. */
  peakRssBytes(): number;
  /** Kills the process (SIGKILL: a benchmark's server has nothing to save). */
  stop(): void;
  /** Resolves once the process has exited. */
  readonly exited: Promise<void>;
}

export interface ServerProcessOptions {
  /** Arguments of `node`. */
  readonly args: readonly string[];
  readonly cwd: URL;
  /** Matches the output line that says the server listens; group 1 is the port. */
  readonly ready: RegExp;
  /** Give up (and kill the process) after this long. Default 60 s. */
  readonly startTimeoutMs?: number;
}

/** Servers not stopped yet: whatever ends the harness (an error, process.exit) must not leave them running. */
const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

export function startServerProcess(options: ServerProcessOptions): Promise<ServerProcess> {
  const child = spawn(process.execPath, [...options.args], { cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"] });
  const pid = child.pid as number;
  live.add(child);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("exit", () => live.delete(child));
  return new Promise<ServerProcess>((resolve, reject) => {
    let seen = "";
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${options.args.join(" ")}: ${why}\n${seen}`));
    };
    const timer = setTimeout(() => fail("did not report listening in time"), options.startTimeoutMs ?? 60_000);
    const exitedEarly = (code: number | null) => fail(`exited (${code}) before listening`);
    const onData = (data: Buffer) => {
      seen += data;
      const port = options.ready.exec(seen)?.[1];
      if (port === undefined) return;
      clearTimeout(timer);
      child.removeListener("exit", exitedEarly);
      // Keep draining the pipes, or a server that writes enough would block on them.
      for (const stream of [child.stdout, child.stderr]) stream.removeListener("data", onData).on("data", () => {});
      resolve({
        port: Number(port),
        cpuSeconds: () => cpuSecondsOf(pid),
        peakRssBytes: () => peakRssBytesOf(pid),
        stop: () => child.kill("SIGKILL"),
        exited,
      });
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", exitedEarly);
    child.once("error", (error) => fail(error.message));
  });
}

function cpuSecondsOf(pid: number): number {
  // Fields after the command name, which may itself hold spaces: utime and stime are the 12th and 13th.
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ = 100
}

function peakRssBytesOf(pid: number): number {
  const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb ?? 0) * 1024;
}
