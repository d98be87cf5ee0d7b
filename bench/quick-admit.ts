// Quick admission benchmark: closed-loop gRPC calls with a fixed number in flight from one
// @grpc/grpc-js client, against servers started as child processes. All servers run at once and the
// load moves between them in short slices, round after round, so that drift on a shared machine
// lands on every scenario alike. Writes a BenchmarkDisclosure (format envelope.bench/1) with the
// raw HDR histograms embedded; `envelope disclosure verify FILE` recomputes every percentile.
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { basename } from "node:path";
import { parseArgs } from "node:util";
import { create, fromBinary, fromJson, type JsonObject, toBinary, toJsonString } from "@bufbuild/protobuf";
import { timestampFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import type * as hdr from "hdr-histogram-js";
import {
  describeHardware,
  describeSoftware,
  disclosureFormat,
  histogramArtifact,
  percentilesOf,
  sha256,
} from "../src/bench/disclosure.js";
import { grpcUnaryCall } from "../src/bench/grpc-call.js";
import { httpPostCall } from "../src/bench/http-call.js";
import { type CallFn, latencyHistogram, runClosedLoop, runOpenLoop } from "../src/bench/load.js";
import { renderReport } from "../src/bench/report.js";
import { spreadOf } from "../src/bench/statistics.js";
import {
  type Artifact,
  BenchmarkDisclosureSchema,
  type ScenarioResult,
  ScenarioResultSchema,
} from "../src/gen/envelope/v1/benchmark_disclosure_pb.js";
import { RuntimeRequestSchema } from "../src/gen/envelope/v1/runtime_request_pb.js";

const usage = `Usage: tsx bench/quick-admit.ts [options]
  --seconds N    length of one slice of load on one scenario (default 1)
  --rounds N     slices per scenario, interleaved across scenarios (default 10)
  --warmup N     seconds of load per scenario before measuring (default 2)
  --inflight N   calls in flight (default 64)
  --out FILE     write the disclosure there, and its report beside it as .html
                 (default: the disclosure on standard output, no report)
`;
const { values: flags } = parseArgs({
  options: {
    seconds: { type: "string", default: "1" },
    warmup: { type: "string", default: "2" },
    rounds: { type: "string", default: "10" },
    inflight: { type: "string", default: "64" },
    out: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});
if (flags.help) {
  process.stdout.write(usage);
  process.exit(0);
}
const seconds = Number(flags.seconds);
const warmupSeconds = Number(flags.warmup);
const rounds = Number(flags.rounds);
const inflight = Number(flags.inflight);
const root = new URL("../", import.meta.url);
const fixturePath = new URL("test/fixtures/runtime-request.json", root);

interface Scenario {
  readonly name: string;
  readonly description: string;
  readonly transport: string;
  readonly command: readonly string[];
  readonly ready: RegExp;
  /** The load's calls against the server's port. */
  readonly connect: (port: number) => { call: CallFn; close(): void };
}

const grpcTo =
  (path: string, body: () => Buffer) =>
  (port: number): { call: CallFn; close(): void } => {
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    return { call: grpcUnaryCall(client, path, body), close: () => client.close() };
  };

const httpTo =
  (path: string, body: () => Buffer) =>
  (port: number): { call: CallFn; close(): void } =>
    httpPostCall({
      url: `http://127.0.0.1:${port}${path}`,
      contentType: "application/json",
      body,
      connections: inflight,
    });

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
const jsonPool = pool.map((bytes) =>
  Buffer.from(toJsonString(RuntimeRequestSchema, fromBinary(RuntimeRequestSchema, bytes))),
);
let next = 0;
const admitBody = () => pool[next++ % pool.length] as Buffer;
const admitJson = () => jsonPool[next++ % jsonPool.length] as Buffer;
const emptyJson = () => Buffer.from("{}");
const emptyBody = () => Buffer.alloc(0);

const tsx = ["--import", "tsx"];
const serve = ["bin/envelope.js", "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
const capabilities = "/envelope.v1.AdmissionService/GetCapabilities";
const admit = "/envelope.v1.AdmissionService/Admit";
const scenarios: Scenario[] = [
  {
    name: "floor-grpc-js",
    description: "empty unary on a bare @grpc/grpc-js server",
    transport: "grpc",
    command: [...tsx, "bench/floor-server.ts", "grpc-js"],
    ready: /listening (\d+)/,
    connect: grpcTo(capabilities, emptyBody),
  },
  {
    name: "floor-grpc-js-payload",
    description:
      "bare @grpc/grpc-js server answering Admit's request bytes with 940 fixed bytes: Admit's payload, no work",
    transport: "grpc",
    command: [...tsx, "bench/floor-server.ts", "grpc-js-payload"],
    ready: /listening (\d+)/,
    connect: grpcTo(capabilities, admitBody),
  },
  {
    name: "floor-connect-node",
    description: "empty unary on a bare connect-node HTTP/2 server (gRPC protocol)",
    transport: "grpc",
    command: [...tsx, "bench/floor-server.ts", "connect-node"],
    ready: /listening (\d+)/,
    connect: grpcTo(capabilities, emptyBody),
  },
  {
    name: "admit-grpc-port",
    description: "Admit with the sample request on Envelope's gRPC port (@grpc/grpc-js)",
    transport: "grpc",
    command: serve,
    ready: /"grpc":"127\.0\.0\.1:(\d+)"/,
    connect: grpcTo(admit, admitBody),
  },
  {
    name: "health-grpc-port",
    description: "grpc.health.v1 Check on Envelope's gRPC port: the service's own cheapest call",
    transport: "grpc",
    command: serve,
    ready: /"grpc":"127\.0\.0\.1:(\d+)"/,
    connect: grpcTo("/grpc.health.v1.Health/Check", emptyBody),
  },
  {
    name: "admit-http-port-grpc",
    description: "Admit with the sample request over gRPC on Envelope's HTTP port (connect-node)",
    transport: "grpc-h2c-http-port",
    command: serve,
    ready: /"http":"127\.0\.0\.1:(\d+)"/,
    connect: grpcTo(admit, admitBody),
  },
  {
    name: "floor-connect-json-http1",
    description: "empty Connect unary with a JSON body over HTTP/1.1 on a bare connect-node server",
    transport: "connect-json-http1",
    command: [...tsx, "bench/floor-server.ts", "connect-node-http1"],
    ready: /listening (\d+)/,
    connect: httpTo(capabilities, emptyJson),
  },
  {
    name: "admit-connect-json-http1",
    description: "Admit with the sample request as Connect JSON over HTTP/1.1 on Envelope's HTTP port",
    transport: "connect-json-http1",
    command: serve,
    ready: /"http":"127\.0\.0\.1:(\d+)"/,
    connect: httpTo(admit, admitJson),
  },
  {
    name: "peer-fastify-ajv-http1",
    description:
      "the peer baseline: fastify validating the contract's JSON Schema with ajv and answering, JSON over HTTP/1.1",
    transport: "json-http1",
    command: [...tsx, "bench/peer-server.ts"],
    ready: /listening (\d+)/,
    connect: httpTo("/admit", admitJson),
  },
];

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, USER_HZ = 100
}

function peakRssBytes(pid: number): number {
  const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb ?? 0) * 1024;
}

async function start(s: Scenario): Promise<{ child: ChildProcess; load: { call: CallFn; close(): void } }> {
  const child = spawn(process.execPath, [...s.command], { cwd: root });
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
  return { child, load: s.connect(port) };
}

interface Totals {
  ttft: hdr.Histogram;
  e2e: hdr.Histogram;
  rounds: ScenarioResult[];
}

// The software is described before the run, so the disclosure binds the code that ran.
const software = describeSoftware(root, [
  "@grpc/grpc-js",
  "@connectrpc/connect",
  "@connectrpc/connect-node",
  "@bufbuild/protobuf",
  "@bufbuild/protovalidate",
  "hdr-histogram-js",
]);
const running = await Promise.all(scenarios.map(async (s) => ({ s, ...(await start(s)) })));
for (const { load } of running) {
  await runClosedLoop({ concurrency: inflight, durationMs: warmupSeconds * 1000, call: load.call });
}
const totals = new Map<string, Totals>(
  scenarios.map((s) => [s.name, { ttft: latencyHistogram(), e2e: latencyHistogram(), rounds: [] }]),
);
for (let round = 1; round <= rounds; round++) {
  for (const { s, child, load } of running) {
    const serverCpu0 = cpuSeconds(child.pid as number);
    const clientCpu0 = process.cpuUsage();
    const r = await runClosedLoop({ concurrency: inflight, durationMs: seconds * 1000, call: load.call });
    const clientCpu = process.cpuUsage(clientCpu0);
    const serverCpu = cpuSeconds(child.pid as number) - serverCpu0;
    const t = totals.get(s.name) as Totals;
    t.ttft.add(r.ttft);
    t.e2e.add(r.e2e);
    const calls = Math.max(1, r.completed);
    t.rounds.push(
      create(ScenarioResultSchema, {
        scenario: s.name,
        transport: s.transport,
        loadModel: "closed",
        repetition: round,
        concurrency: inflight,
        achievedRate: r.completed / r.elapsedSeconds,
        completed: r.completed,
        errors: { ...r.errorsByCategory },
        errorRate: r.errors / Math.max(1, r.completed + r.errors),
        durationSeconds: r.elapsedSeconds,
        serverCpuUsPerCall: (serverCpu * 1e6) / calls,
        clientCpuUsPerCall: (clientCpu.user + clientCpu.system) / calls,
      }),
    );
  }
  process.stderr.write(`round ${round}/${rounds} done\n`);
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const results: ScenarioResult[] = [];
const artifacts: Artifact[] = [];
const summary = new Map<string, { throughput: number; serverCpu: number; p99: number }>();
for (const { s, child } of running) {
  const t = totals.get(s.name) as Totals;
  const throughput = mean(t.rounds.map((r) => r.achievedRate ?? 0));
  const serverCpu = mean(t.rounds.map((r) => r.serverCpuUsPerCall ?? 0));
  const completed = t.rounds.reduce((a, r) => a + (r.completed ?? 0), 0);
  const errorsByCategory: Record<string, number> = {};
  for (const r of t.rounds)
    for (const [k, v] of Object.entries(r.errors)) errorsByCategory[k] = (errorsByCategory[k] ?? 0) + v;
  const errors = Object.values(errorsByCategory).reduce((a, b) => a + b, 0);
  artifacts.push(histogramArtifact(`${s.name}.ttft`, t.ttft), histogramArtifact(`${s.name}.e2e`, t.e2e));
  results.push(
    create(ScenarioResultSchema, {
      scenario: s.name,
      description: s.description,
      transport: s.transport,
      loadModel: "closed",
      concurrency: inflight,
      achievedRate: throughput,
      completed,
      errors: errorsByCategory,
      errorRate: errors / Math.max(1, completed + errors),
      durationSeconds: t.rounds.reduce((a, r) => a + (r.durationSeconds ?? 0), 0),
      ttftUs: percentilesOf(t.ttft),
      e2eUs: percentilesOf(t.e2e),
      ttftArtifact: `${s.name}.ttft`,
      e2eArtifact: `${s.name}.e2e`,
      serverCpuUsPerCall: serverCpu,
      clientCpuUsPerCall: mean(t.rounds.map((r) => r.clientCpuUsPerCall ?? 0)),
      serverPeakRssBytes: peakRssBytes(child.pid as number),
      throughputSpread: spreadOf(t.rounds.map((r) => r.achievedRate ?? 0)),
    }),
    ...t.rounds,
  );
  summary.set(s.name, { throughput, serverCpu, p99: t.e2e.getValueAtPercentile(99) });
}
// Open loop at half of Admit's saturation rate, offered alike to Admit and to its floor: latency at
// a load the server carries, each call timed from its intended send time (coordinated omission is
// avoided by the schedule). Poisson arrivals with a fixed seed per slice, slices interleaved.
const openPairs = [
  ["floor-grpc-js", "admit-grpc-port"],
  ["floor-connect-json-http1", "admit-connect-json-http1"],
] as const;
const openSlices = Math.max(2, Math.ceil(rounds / 3));
const openSummary = new Map<string, { rate: number; p99: number }>();
for (const pair of openPairs) {
  const rate = Math.round((summary.get(pair[1])?.throughput ?? 0) / 2);
  const acc = new Map(
    pair.map((name) => [
      name,
      {
        ttft: latencyHistogram(),
        e2e: latencyHistogram(),
        scheduled: 0,
        completed: 0,
        late: 0,
        seconds: 0,
        errors: {} as Record<string, number>,
      },
    ]),
  );
  for (let slice = 1; slice <= openSlices; slice++) {
    for (const name of pair) {
      const target = running.find((r) => r.s.name === name);
      if (target === undefined || rate === 0) continue;
      const r = await runOpenLoop({
        rate,
        durationMs: seconds * 2000,
        arrival: "poisson",
        seed: slice,
        call: target.load.call,
      });
      const a = acc.get(name) as NonNullable<ReturnType<typeof acc.get>>;
      a.ttft.add(r.ttft);
      a.e2e.add(r.e2e);
      a.scheduled += r.scheduled;
      a.completed += r.completed;
      a.late += r.lateSends;
      a.seconds += r.elapsedSeconds;
      for (const [k, v] of Object.entries(r.errorsByCategory)) a.errors[k] = (a.errors[k] ?? 0) + v;
    }
  }
  for (const [name, a] of acc) {
    const label = `${name}@open`;
    const errorCount = Object.values(a.errors).reduce((x, y) => x + y, 0);
    artifacts.push(histogramArtifact(`${label}.ttft`, a.ttft), histogramArtifact(`${label}.e2e`, a.e2e));
    results.push(
      create(ScenarioResultSchema, {
        scenario: label,
        description: `${scenarios.find((s) => s.name === name)?.description ?? name}; open loop, Poisson arrivals at half of ${pair[1]}'s saturation rate`,
        transport: scenarios.find((s) => s.name === name)?.transport ?? "",
        loadModel: "open",
        targetRate: rate,
        achievedRate: a.completed / Math.max(1e-9, a.seconds),
        scheduled: a.scheduled,
        completed: a.completed,
        lateSends: a.late,
        errors: a.errors,
        errorRate: errorCount / Math.max(1, a.scheduled),
        durationSeconds: a.seconds,
        ttftUs: percentilesOf(a.ttft),
        e2eUs: percentilesOf(a.e2e),
        ttftArtifact: `${label}.ttft`,
        e2eArtifact: `${label}.e2e`,
      }),
    );
    openSummary.set(name, { rate, p99: a.e2e.getValueAtPercentile(99) });
  }
  process.stderr.write(`open loop at ${rate}/s: ${pair.join(" vs ")} done\n`);
}

// Overload: the floor offered 1.5x its saturation rate in open loop. The driver keeps its schedule
// (achieved rate, late sends and latency show the server falling behind), showing that the load
// generator is not what limits the closed-loop figures.
{
  const floor = running.find((r) => r.s.name === "floor-grpc-js");
  const rate = Math.round((summary.get("floor-grpc-js")?.throughput ?? 0) * 1.5);
  if (floor !== undefined && rate > 0) {
    const r = await runOpenLoop({ rate, durationMs: seconds * 3000, arrival: "constant", call: floor.load.call });
    const label = "floor-grpc-js@overload";
    artifacts.push(histogramArtifact(`${label}.ttft`, r.ttft), histogramArtifact(`${label}.e2e`, r.e2e));
    results.push(
      create(ScenarioResultSchema, {
        scenario: label,
        description: "empty unary on bare grpc-js, open loop at 1.5x its closed-loop saturation rate",
        transport: "grpc",
        loadModel: "open",
        targetRate: rate,
        achievedRate: r.completed / Math.max(1e-9, r.elapsedSeconds),
        scheduled: r.scheduled,
        completed: r.completed,
        lateSends: r.lateSends,
        errors: { ...r.errorsByCategory },
        errorRate: r.errors / Math.max(1, r.scheduled),
        durationSeconds: r.elapsedSeconds,
        ttftUs: percentilesOf(r.ttft),
        e2eUs: percentilesOf(r.e2e),
        ttftArtifact: `${label}.ttft`,
        e2eArtifact: `${label}.e2e`,
      }),
    );
    process.stderr.write(
      `overload: offered ${rate}/s, completed ${(r.completed / r.elapsedSeconds).toFixed(0)}/s, late sends ${r.lateSends}\n`,
    );
  }
}

// Concurrency sweep (closed loop): throughput against calls in flight, Admit beside its floor.
const sweep = [1, 4, 16, 64, 256];
for (let slice = 1; slice <= 2; slice++) {
  for (const concurrency of sweep) {
    for (const name of ["floor-grpc-js", "admit-grpc-port"]) {
      const target = running.find((r) => r.s.name === name);
      if (target === undefined) continue;
      const r = await runClosedLoop({ concurrency, durationMs: seconds * 1000, call: target.load.call });
      results.push(
        create(ScenarioResultSchema, {
          scenario: `${name}@sweep`,
          transport: target.s.transport,
          loadModel: "closed-sweep",
          repetition: slice,
          concurrency,
          achievedRate: r.completed / r.elapsedSeconds,
          completed: r.completed,
          errors: { ...r.errorsByCategory },
          durationSeconds: r.elapsedSeconds,
        }),
      );
    }
  }
}
process.stderr.write("concurrency sweep done\n");

for (const { child, load } of running) {
  load.close();
  child.kill("SIGKILL");
}

const of = (name: string) => summary.get(name) ?? { throughput: 0, serverCpu: 0, p99: 0 };
const ratio = (a: number, b: number) => Math.round((a / b) * 1000) / 1000;
const admitOverFloor = ratio(of("admit-grpc-port").throughput, of("floor-grpc-js").throughput);
const totalErrors = results.filter((r) => r.repetition === undefined).reduce((a, r) => a + (r.errorRate ?? 0), 0);
const check = (name: string, observed: number, comparison: "<=" | ">=", threshold: number) => ({
  name,
  observed,
  comparison,
  threshold,
  passed: comparison === "<=" ? observed <= threshold : observed >= threshold,
});

const disclosure = create(BenchmarkDisclosureSchema, {
  reviewedAtUtc: timestampNow(),
  format: disclosureFormat,
  hardware: describeHardware(),
  software,
  workload: {
    arrival: `closed loop, ${inflight} calls in flight from one client; then open loop, Poisson arrivals at half of Admit's saturation rate`,
    concurrencyMax: inflight,
    requestFixtureSha256: sha256(readFileSync(fixturePath)),
  },
  method: {
    durationSeconds: seconds,
    repetitions: rounds,
    warmupSeconds,
    externalLoadGenerator: false,
    loadGenerator:
      "same host as the servers, sharing all cores; all servers running, load moved between them in slices",
    coordinatedOmission:
      "closed-loop rounds (saturation throughput) are timed from each call's actual send; the '@open' results are open loop, Poisson arrivals, timed from each call's intended send time",
    command: `tsx bench/quick-admit.ts --seconds ${seconds} --warmup ${warmupSeconds} --rounds ${rounds} --inflight ${inflight}`,
  },
  metrics: ["throughput", "TTFT", "E2E", "errors", "server CPU per call", "client CPU per call", "server peak RSS"],
  results,
  artifacts,
  qualityChecks: [
    check("error rate, all scenarios", totalErrors, "<=", 0),
    check("Admit (gRPC port) throughput / empty unary on bare grpc-js (issue 2 target)", admitOverFloor, ">=", 0.8),
    check(
      "Admit (gRPC port) p99 / empty unary p99, open loop at half Admit's saturation",
      ratio(openSummary.get("admit-grpc-port")?.p99 ?? 0, openSummary.get("floor-grpc-js")?.p99 ?? 1),
      "<=",
      3,
    ),
    check(
      "Admit (Connect JSON, HTTP/1.1) throughput / fastify+ajv peer baseline",
      ratio(of("admit-connect-json-http1").throughput, of("peer-fastify-ajv-http1").throughput),
      ">=",
      1,
    ),
  ],
});

const json = `${toJsonString(BenchmarkDisclosureSchema, disclosure, { prettySpaces: 2 })}\n`;
if (flags.out) {
  writeFileSync(flags.out, json);
  // The report sits beside its disclosure; it is derived from it alone.
  writeFileSync(`${flags.out.replace(/\.json$/, "")}.html`, renderReport(disclosure, basename(flags.out)));
} else {
  process.stdout.write(json);
}
process.stderr.write(
  `${[...summary].map(([n, v]) => `${n.padEnd(24)} ${v.throughput.toFixed(0).padStart(6)} calls/s  server ${v.serverCpu.toFixed(0)} us/call  p99 ${v.p99} us`).join("\n")}\n` +
    `admit/floor throughput ${admitOverFloor}; admit/payload-floor ${ratio(of("admit-grpc-port").throughput, of("floor-grpc-js-payload").throughput)}; ` +
    `admit/floor p99 ${ratio(of("admit-grpc-port").p99, of("floor-grpc-js").p99)}; connect-node/grpc-js floor CPU ${ratio(of("floor-connect-node").serverCpu, of("floor-grpc-js").serverCpu)}\n` +
    `connect json: admit/floor throughput ${ratio(of("admit-connect-json-http1").throughput, of("floor-connect-json-http1").throughput)}, p99 ${ratio(of("admit-connect-json-http1").p99, of("floor-connect-json-http1").p99)}; ` +
    `admit/peer throughput ${ratio(of("admit-connect-json-http1").throughput, of("peer-fastify-ajv-http1").throughput)}, p99 ${ratio(of("admit-connect-json-http1").p99, of("peer-fastify-ajv-http1").p99)}; ` +
    `admit grpc/peer throughput ${ratio(of("admit-grpc-port").throughput, of("peer-fastify-ajv-http1").throughput)}\n` +
    `${[...openSummary].map(([n, v]) => `${n}@open ${v.rate}/s p99 ${v.p99} us`).join("; ")}\n`,
);
