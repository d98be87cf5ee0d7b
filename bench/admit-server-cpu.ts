// Server CPU per Admit call, before and after a change: short closed-loop gRPC load against this
// tree's server, optionally against another tree's (a checkout of an earlier commit, built), against
// the empty unary on a bare @grpc/grpc-js server (the floor), and against that server carrying
// Admit's request and an answer of Admit's size (what moving the bytes alone costs). The servers
// run at once and the load moves between them in short slices, round after round, so that drift on
// a shared machine lands on each alike. Server CPU is read from /proc (user + system) per slice.
//
//   npm run build && tsx bench/admit-server-cpu.ts [--baseline DIR] [--governed FILE] [--seconds 1.5] [--rounds 3]
//
// DIR must hold a built tree (bin/envelope.js and dist/), e.g. `git archive REV | tar -x -C DIR`,
// node_modules linked in, then `npx tsc -p tsconfig.build.json` there.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { grpcUnaryCall } from "../src/bench/grpc-call.js";
import { runClosedLoop } from "../src/bench/load.js";
import { createRequestPool } from "../src/bench/scenarios.js";
import { readFixture } from "../test/helpers/requests.js";

const { values: flags } = parseArgs({
  options: {
    baseline: { type: "string" },
    seconds: { type: "string", default: "1.5" },
    warmup: { type: "string", default: "1" },
    rounds: { type: "string", default: "3" },
    inflight: { type: "string", default: "32" },
    governed: { type: "string" },
  },
});
const sliceMs = Number(flags.seconds) * 1000;
const root = new URL("../", import.meta.url).pathname;

// A new requestId and idempotency key on every call: a repeated one is answered as an idempotent
// replay, a lookup instead of an admission.
const admitBody = createRequestPool(readFixture("runtime-request.json"), 4096).admitBinary;
const emptyBody = () => Buffer.alloc(0);

interface Server {
  readonly name: string;
  readonly command: readonly string[];
  readonly cwd: string;
  readonly path: string;
  readonly body: () => Buffer;
}
const serve = (dir: string) => [
  `${dir}/bin/envelope.js`,
  "serve",
  "--grpc-listen",
  "127.0.0.1:0",
  "--http-listen",
  "127.0.0.1:0",
];
const admitPath = "/envelope.v1.AdmissionService/Admit";
const servers: Server[] = [
  {
    name: "floor (empty unary, bare grpc-js)",
    command: ["--import", "tsx", "src/bench/floor-server.ts", "grpc-js"],
    cwd: root,
    path: "/envelope.v1.AdmissionService/GetCapabilities",
    body: emptyBody,
  },
  {
    name: "floor with Admit-sized payloads",
    command: ["--import", "tsx", "src/bench/floor-server.ts", "grpc-js-payload"],
    cwd: root,
    path: "/envelope.v1.AdmissionService/GetCapabilities",
    body: admitBody,
  },
  ...(flags.baseline === undefined
    ? []
    : [
        {
          name: "Admit, baseline tree",
          command: serve(flags.baseline),
          cwd: flags.baseline,
          path: admitPath,
          body: admitBody,
        },
      ]),
  // The decision path alone: this tree records nothing (trees from before the ledger had none).
  {
    name: "Admit, this tree",
    command: [...serve(root), "--ledger", "none"],
    cwd: root,
    path: admitPath,
    body: admitBody,
  },
  // With --governed FILE: the ledger alone, and the ledger with the configuration in FILE (a policy
  // bundle, budgets), to weigh what governance adds to an Admit.
  ...(flags.governed === undefined
    ? []
    : [
        { name: "Admit, ledger", command: [...serve(root), "--data-dir", ledgerDir("plain")] },
        {
          name: "Admit, ledger + governance",
          command: [...serve(root), "--data-dir", ledgerDir("governed"), "--config", flags.governed],
        },
      ].map((x) => ({ ...x, cwd: root, path: admitPath, body: admitBody }))),
];

/** A fresh SQLite ledger directory for one server. */
function ledgerDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `envelope-cpu-${name}-`));
}

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, USER_HZ = 100
}

async function start(s: Server): Promise<{ child: ChildProcess; client: grpc.Client }> {
  const child = spawn(process.execPath, [...s.command], { cwd: s.cwd });
  const port = await new Promise<number>((resolve, reject) => {
    let seen = "";
    const onData = (d: Buffer) => {
      seen += d;
      const m = /listening (\d+)|"grpc":"127\.0\.0\.1:(\d+)"/.exec(seen);
      if (m) resolve(Number(m[1] ?? m[2]));
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => reject(new Error(`${s.name} exited (${code}): ${seen}`)));
  });
  return { child, client: new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) };
}

const running = await Promise.all(servers.map(async (s) => ({ s, ...(await start(s)) })));
const slice = async (r: (typeof running)[number], durationMs: number) => {
  const pid = r.child.pid as number;
  const cpu0 = cpuSeconds(pid);
  const result = await runClosedLoop({
    concurrency: Number(flags.inflight),
    durationMs,
    call: grpcUnaryCall(r.client, r.s.path, r.s.body),
  });
  const cpu = cpuSeconds(pid) - cpu0;
  if (result.errors > 0) throw new Error(`${r.s.name}: ${JSON.stringify(result.errorsByCategory)}`);
  return { callsPerSecond: result.completed / result.elapsedSeconds, cpuUsPerCall: (cpu * 1e6) / result.completed };
};

try {
  for (const r of running) await slice(r, Number(flags.warmup) * 1000);
  const samples = new Map(running.map((r) => [r.s.name, [] as { callsPerSecond: number; cpuUsPerCall: number }[]]));
  for (let round = 0; round < Number(flags.rounds); round++) {
    const order = round % 2 === 0 ? running : [...running].reverse();
    for (const r of order) samples.get(r.s.name)?.push(await slice(r, sliceMs));
    process.stderr.write(`round ${round + 1}/${flags.rounds}\n`);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  const rows = running.map((r) => {
    const xs = samples.get(r.s.name) ?? [];
    return {
      name: r.s.name,
      callsPerSecond: median(xs.map((x) => x.callsPerSecond)),
      cpuUsPerCall: median(xs.map((x) => x.cpuUsPerCall)),
      all: xs.map((x) => `${Math.round(x.callsPerSecond)}/s ${x.cpuUsPerCall.toFixed(0)}µs`).join(", "),
    };
  });
  const floor = rows[0] as (typeof rows)[number];
  process.stdout.write(
    `closed loop, ${flags.inflight} in flight, ${flags.rounds} interleaved rounds of ${flags.seconds} s per server (medians)\n\n`,
  );
  for (const row of rows) {
    process.stdout.write(
      `${row.name.padEnd(36)} ${row.callsPerSecond.toFixed(0).padStart(6)} calls/s (${(row.callsPerSecond / floor.callsPerSecond).toFixed(2)}x floor)  ${row.cpuUsPerCall.toFixed(1).padStart(6)} µs server CPU/call   [${row.all}]\n`,
    );
  }
} finally {
  for (const r of running) {
    r.client.close();
    r.child.kill();
  }
}
