// In-process cost of one Admit on the gRPC port's handler, grpc-js itself left out: the bytes in,
// decodeBinary, the admission service (clock, ids, core), the envelope encoded, the callback. This
// tree's handler and, with --baseline, another tree's (an earlier commit's sources) run interleaved
// in one process, round after round; CPU time and GC time per call are reported for each.
//
//   tsx bench/admit-handler.ts [--baseline DIR] [--rounds 9] [--ms 400]
import { PerformanceObserver, performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { fromJson, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { RuntimeRequestSchema } from "../src/gen/envelope/v1/runtime_request_pb.js";
import { freshRequestJson } from "../test/helpers/requests.js";

const { values: flags } = parseArgs({
  options: {
    baseline: { type: "string" },
    rounds: { type: "string", default: "9" },
    ms: { type: "string", default: "400" },
  },
});

type Handler = grpc.handleUnaryCall<Buffer, Buffer>;

/** The Admit handler of the tree at `dir`, registered on a stand-in for grpc.Server. */
async function admitHandler(dir: string): Promise<Handler> {
  const { addAdmissionService } = (await import(`${dir}/src/transport/grpc-server.ts`)) as {
    addAdmissionService: (server: grpc.Server, options: unknown) => void;
  };
  const { createAdmissionService } = await import(`${dir}/src/service/admission-service.ts`);
  const { admissionConfig, features } = await import(`${dir}/src/server.ts`);
  const { defaultConfig } = await import(`${dir}/src/config/config.ts`);
  const { createLogger } = await import(`${dir}/src/telemetry/log.ts`);
  let admit: Handler | undefined;
  const server = {
    addService: (_definition: unknown, implementation: { Admit: Handler }) => {
      admit = implementation.Admit;
    },
  } as unknown as grpc.Server;
  addAdmissionService(server, {
    service: createAdmissionService({ config: admissionConfig(defaultConfig), features }),
    maxMessageBytes: defaultConfig.limits.maxMessageBytes,
    log: createLogger({ level: "error", write: () => {} }),
  });
  if (admit === undefined) throw new Error(`${dir}: no Admit handler`);
  return admit;
}

const nowMs = Date.now();
const pool = Array.from({ length: 64 }, () =>
  Buffer.from(toBinary(RuntimeRequestSchema, fromJson(RuntimeRequestSchema, freshRequestJson(nowMs, 30 * 60_000)))),
);
const metadata = new grpc.Metadata();
/** What the handler reads of a grpc-js call. */
const call = (request: Buffer) =>
  ({
    request,
    metadata,
    cancelled: false,
    getDeadline: () => Number.POSITIVE_INFINITY,
    once: () => {},
  }) as unknown as grpc.ServerUnaryCall<Buffer, Buffer>;

/** Runs `n` Admit calls, 32 at a time as a loaded server would interleave them. */
function batch(handler: Handler, n: number): Promise<number> {
  let bytes = 0;
  let i = 0;
  return new Promise((resolve, reject) => {
    let inFlight = 0;
    const one = () => {
      if (i >= n) {
        if (inFlight === 0) resolve(bytes);
        return;
      }
      inFlight++;
      handler(call(pool[i++ % pool.length] as Buffer), (error, value) => {
        inFlight--;
        if (error) return reject(error);
        bytes += (value as Buffer).length;
        one();
      });
    };
    for (let k = 0; k < 32; k++) one();
  });
}

const root = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const trees: [string, Handler][] = [["this tree", await admitHandler(root)]];
if (flags.baseline !== undefined) trees.unshift(["baseline", await admitHandler(flags.baseline.replace(/\/$/, ""))]);

const gc: { start: number; duration: number }[] = [];
const observer = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gc.push({ start: e.startTime, duration: e.duration });
});
observer.observe({ entryTypes: ["gc"] });

const samples = new Map(
  trees.map(([name]) => [name, [] as { us: number; cpuUs: number; start: number; end: number; calls: number }[]]),
);
const slice = async (name: string, handler: Handler, ms: number) => {
  let calls = 0;
  const start = performance.now();
  const cpu0 = process.cpuUsage();
  while (performance.now() - start < ms) {
    await batch(handler, 256);
    calls += 256;
  }
  const end = performance.now();
  const cpu = process.cpuUsage(cpu0);
  samples
    .get(name)
    ?.push({ us: ((end - start) * 1000) / calls, cpuUs: (cpu.user + cpu.system) / calls, start, end, calls });
};
for (const [name, handler] of trees) await slice(`${name} warmup`, handler, 1000);
const rounds = Number(flags.rounds);
for (let r = 0; r < rounds; r++) {
  for (const [name, handler] of r % 2 === 0 ? trees : [...trees].reverse())
    await slice(name, handler, Number(flags.ms));
  process.stderr.write(`round ${r + 1}/${rounds}\n`);
}
await new Promise((resolve) => setTimeout(resolve, 100));
observer.disconnect();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
process.stdout.write(
  `Admit handler in process (grpc-js excluded): node ${process.version}, ${rounds} interleaved rounds of ${flags.ms} ms, 32 calls in flight\n\n`,
);
const rows = trees.map(([name]) => {
  const xs = samples.get(name) ?? [];
  const gcUs = xs.map(
    (x) =>
      (gc.filter((g) => g.start >= x.start && g.start < x.end).reduce((a, g) => a + g.duration, 0) * 1000) / x.calls,
  );
  return { name, us: median(xs.map((x) => x.us)), cpuUs: median(xs.map((x) => x.cpuUs)), gcUs: median(gcUs) };
});
for (const r of rows) {
  process.stdout.write(
    `${r.name.padEnd(10)} ${r.us.toFixed(2).padStart(7)} µs/call wall  ${r.cpuUs.toFixed(2).padStart(7)} µs/call CPU  ${r.gcUs.toFixed(2).padStart(6)} µs/call in GC\n`,
  );
}
if (rows.length === 2) {
  const [before, after] = rows as [(typeof rows)[number], (typeof rows)[number]];
  process.stdout.write(
    `\nbaseline / this tree: ${(before.us / after.us).toFixed(2)}x (saves ${(before.us - after.us).toFixed(2)} µs per call)\n`,
  );
}
