// Quick admission benchmark (a load loop ahead of the full harness): closed-loop gRPC calls with a
// fixed number in flight from one @grpc/grpc-js client, against servers started as child processes,
// alternating scenarios over several rounds so that drift on a shared machine hits all of them.
// Reports throughput, latency percentiles and the server's CPU time per call (from /proc), and
// writes a JSON record binding the figures to the machine, software and git revision.
//
// Usage: tsx bench/quick-admit.ts [--seconds 1] [--warmup 2] [--rounds 15] [--inflight 64] [--out FILE]
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import { parseArgs } from "node:util";
import { fromJson, type JsonObject, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { RuntimeRequestSchema } from "../src/gen/envelope/v1/runtime_request_pb.js";

const { values: flags } = parseArgs({
  options: {
    seconds: { type: "string", default: "1" },
    warmup: { type: "string", default: "2" },
    rounds: { type: "string", default: "15" },
    inflight: { type: "string", default: "64" },
    out: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});
if (flags.help) {
  process.stdout.write(
    "Usage: tsx bench/quick-admit.ts [--seconds 1] [--warmup 2] [--rounds 15] [--inflight 64] [--out FILE]\n",
  );
  process.exit(0);
}
const seconds = Number(flags.seconds);
const warmupSeconds = Number(flags.warmup);
const rounds = Number(flags.rounds);
const inflight = Number(flags.inflight);
const root = new URL("../", import.meta.url).pathname;
const fixturePath = new URL("../test/fixtures/runtime-request.json", import.meta.url);

interface Scenario {
  readonly name: string;
  readonly description: string;
  readonly start: () => ChildProcess;
  readonly ready: RegExp;
  readonly path: string;
  readonly body: () => Buffer;
}

// Admit requests with fresh ids and a live deadline, encoded ahead so the client spends its time
// on the wire, not on building requests.
const fixture = JSON.parse(readFileSync(fixturePath, "utf8")) as JsonObject;
const pool: Buffer[] = [];
for (let i = 0; i < 20_000; i++) {
  const request = fromJson(RuntimeRequestSchema, fixture);
  const now = Date.now();
  request.requestId = randomUUID();
  request.occurredAtUtc = timestampFromMs(now);
  request.deadlineUtc = timestampFromMs(now + 30 * 60_000);
  pool.push(Buffer.from(toBinary(RuntimeRequestSchema, request)));
}
let next = 0;
const admitBody = () => pool[next++ % pool.length] as Buffer;
const emptyBody = () => Buffer.alloc(0);

const tsx = [process.execPath, "--import", "tsx"];
const scenarios: Scenario[] = [
  {
    name: "floor-grpc-js",
    description: "empty unary on a bare @grpc/grpc-js server",
    start: () => spawn(tsx[0] as string, [...tsx.slice(1), "bench/floor-server.ts", "grpc-js"], { cwd: root }),
    ready: /listening (\d+)/,
    path: "/envelope.v1.AdmissionService/GetCapabilities",
    body: emptyBody,
  },
  {
    name: "floor-grpc-js-payload",
    description:
      "bare @grpc/grpc-js server answering Admit's request bytes with a fixed 940-byte response: Admit's payload, no work",
    start: () => spawn(tsx[0] as string, [...tsx.slice(1), "bench/floor-server.ts", "grpc-js-payload"], { cwd: root }),
    ready: /listening (\d+)/,
    path: "/envelope.v1.AdmissionService/GetCapabilities",
    body: admitBody,
  },
  {
    name: "floor-connect-node",
    description: "empty unary on a bare connect-node HTTP/2 server (gRPC protocol)",
    start: () => spawn(tsx[0] as string, [...tsx.slice(1), "bench/floor-server.ts", "connect-node"], { cwd: root }),
    ready: /listening (\d+)/,
    path: "/envelope.v1.AdmissionService/GetCapabilities",
    body: emptyBody,
  },
  {
    name: "admit-grpc-port",
    description: "Admit with the sample request on Envelope's gRPC port (@grpc/grpc-js)",
    start: () =>
      spawn(
        process.execPath,
        ["bin/envelope.js", "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
        { cwd: root },
      ),
    ready: /"grpc":"127\.0\.0\.1:(\d+)"/,
    path: "/envelope.v1.AdmissionService/Admit",
    body: admitBody,
  },
  {
    name: "admit-http-port-grpc",
    description: "Admit with the sample request over gRPC on Envelope's HTTP port (connect-node)",
    start: () =>
      spawn(
        process.execPath,
        ["bin/envelope.js", "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
        { cwd: root },
      ),
    ready: /"http":"127\.0\.0\.1:(\d+)"/,
    path: "/envelope.v1.AdmissionService/Admit",
    body: admitBody,
  },
];

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime
  return ticks / 100; // USER_HZ is 100 on Linux
}

async function startServer(s: Scenario): Promise<{ child: ChildProcess; port: number }> {
  const child = s.start();
  const port = await new Promise<number>((resolve, reject) => {
    let seen = "";
    const onData = (d: Buffer) => {
      seen += d;
      const m = s.ready.exec(seen);
      if (m) resolve(Number(m[1]));
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => reject(new Error(`${s.name} server exited (${code}): ${seen}`)));
  });
  return { child, port };
}

interface Run {
  calls: number;
  errors: number;
  seconds: number;
  latenciesUs: number[];
  serverCpuSeconds: number;
}

async function drive(s: Scenario, port: number, pid: number, durationS: number, measure: boolean): Promise<Run> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const passThrough = (b: Buffer) => b;
  const latenciesUs: number[] = [];
  let calls = 0;
  let errors = 0;
  const cpu0 = cpuSeconds(pid);
  const t0 = performance.now();
  const end = t0 + durationS * 1000;
  const worker = () =>
    new Promise<void>((resolve) => {
      const one = () => {
        if (performance.now() >= end) return resolve();
        const started = performance.now();
        client.makeUnaryRequest(s.path, passThrough, passThrough, s.body(), (err) => {
          if (err) errors++;
          else calls++;
          if (measure) latenciesUs.push(Math.round((performance.now() - started) * 1000));
          one();
        });
      };
      one();
    });
  await Promise.all(Array.from({ length: inflight }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  const serverCpuSeconds = cpuSeconds(pid) - cpu0;
  client.close();
  return { calls, errors, seconds: elapsed, latenciesUs, serverCpuSeconds };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

// All servers run at once and the load moves between them in short slices, round after round, so
// that the machine's drift (it is shared) lands on every scenario alike.
const running = await Promise.all(scenarios.map(async (s) => ({ s, ...(await startServer(s)) })));
for (const { s, child, port } of running) await drive(s, port, child.pid as number, warmupSeconds, false);
interface Totals {
  throughput: number[];
  cpuUsPerCall: number[];
  latenciesUs: number[];
  errors: number;
}
const results: Record<string, Totals> = {};
for (let round = 1; round <= rounds; round++) {
  for (const { s, child, port } of running) {
    const r = await drive(s, port, child.pid as number, seconds, true);
    results[s.name] ??= { throughput: [], cpuUsPerCall: [], latenciesUs: [], errors: 0 };
    const entry = results[s.name] as Totals;
    entry.throughput.push(r.calls / r.seconds);
    entry.cpuUsPerCall.push((r.serverCpuSeconds * 1e6) / Math.max(1, r.calls));
    for (const l of r.latenciesUs) entry.latenciesUs.push(l);
    entry.errors += r.errors;
  }
  process.stderr.write(`round ${round}/${rounds} done\n`);
}
for (const { child } of running) child.kill("SIGKILL");

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const summary = Object.fromEntries(
  Object.entries(results).map(([name, r]) => [
    name,
    {
      throughputPerRound: r.throughput.map(Math.round),
      meanThroughput: Math.round(mean(r.throughput)),
      meanServerCpuUsPerCall: Math.round(mean(r.cpuUsPerCall)),
      p50Us: percentile(
        r.latenciesUs.sort((a, b) => a - b),
        50,
      ),
      p99Us: percentile(r.latenciesUs, 99),
      errors: r.errors,
    },
  ]),
);
const ratio = (a: string, b: string, key: "meanThroughput" | "meanServerCpuUsPerCall" | "p99Us") =>
  Number(((summary[a]?.[key] ?? 0) / (summary[b]?.[key] ?? 1)).toFixed(3));
const ratios = {
  admitGrpcPortThroughputOverFloorGrpcJs: ratio("admit-grpc-port", "floor-grpc-js", "meanThroughput"),
  admitGrpcPortP99OverFloorGrpcJs: ratio("admit-grpc-port", "floor-grpc-js", "p99Us"),
  admitGrpcPortThroughputOverPayloadFloor: ratio("admit-grpc-port", "floor-grpc-js-payload", "meanThroughput"),
  payloadFloorThroughputOverFloorGrpcJs: ratio("floor-grpc-js-payload", "floor-grpc-js", "meanThroughput"),
  admitGrpcPortCpuOverFloorGrpcJs: ratio("admit-grpc-port", "floor-grpc-js", "meanServerCpuUsPerCall"),
  floorConnectNodeCpuOverFloorGrpcJs: ratio("floor-connect-node", "floor-grpc-js", "meanServerCpuUsPerCall"),
  admitHttpPortCpuOverAdmitGrpcPort: ratio("admit-http-port-grpc", "admit-grpc-port", "meanServerCpuUsPerCall"),
  admitHttpPortThroughputOverAdmitGrpcPort: ratio("admit-http-port-grpc", "admit-grpc-port", "meanThroughput"),
};

const git = (args: string[]) => execFileSync("git", args, { cwd: root, encoding: "utf8" }).trim();
const lock = JSON.parse(readFileSync(new URL("../package-lock.json", import.meta.url), "utf8")) as {
  packages: Record<string, { version?: string }>;
};
const versionOf = (name: string) => lock.packages[`node_modules/${name}`]?.version ?? "unknown";
const record = {
  disclosure: {
    reviewedAtUtc: new Date().toISOString(),
    hardware: {
      device: os.cpus()[0]?.model ?? "unknown",
      count: os.cpus().length,
      topology: `${os.cpus().length} logical CPUs, ${Math.round(os.totalmem() / 2 ** 30)} GiB; client and server on the same host`,
    },
    software: {
      os: `${os.type()} ${os.release()}`,
      runtime: `Node ${process.versions.node} (V8 ${process.versions.v8})`,
    },
    workload: {
      arrival: `closed loop, ${inflight} calls in flight from one @grpc/grpc-js client`,
      concurrencyMax: inflight,
    },
    method: {
      warmupRequests: 0,
      durationSeconds: seconds,
      repetitions: rounds,
      externalLoadGenerator: false,
    },
    metrics: ["throughput", "E2E p50", "E2E p99", "server CPU per call", "errors"],
  },
  binding: {
    gitRevision: git(["rev-parse", "HEAD"]),
    gitDirty: git(["status", "--porcelain"]) !== "",
    packages: Object.fromEntries(
      ["@grpc/grpc-js", "@connectrpc/connect-node", "@bufbuild/protobuf", "@bufbuild/protovalidate"].map((n) => [
        n,
        versionOf(n),
      ]),
    ),
    requestFixtureSha256: createHash("sha256").update(readFileSync(fixturePath)).digest("hex"),
    warmupSeconds,
    command: `tsx bench/quick-admit.ts --seconds ${seconds} --warmup ${warmupSeconds} --rounds ${rounds} --inflight ${inflight}`,
    scenarios: Object.fromEntries(scenarios.map((s) => [s.name, s.description])),
  },
  results: summary,
  ratios,
};
const json = `${JSON.stringify(record, null, 2)}\n`;
if (flags.out) writeFileSync(flags.out, json);
process.stdout.write(json);
