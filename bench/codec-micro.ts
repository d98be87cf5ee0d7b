// In-process micro-benchmark of the Admit hot path's codec: protobuf-es (fromBinary, toBinary)
// against the compiled codec (src/codec), for the decode of the request, the encode of the envelope
// with the received request spliced in, and the whole path (decode, admission core, encode). The
// variants run interleaved, round after round, so that drift on a shared machine lands on each alike;
// garbage collection time is attributed to the variant during which it ran.
//
//   tsx bench/codec-micro.ts [--rounds 7] [--ms 400]
import { PerformanceObserver, performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { fromBinary, fromJson, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { compileBinaryDecoder } from "../src/codec/binary-decoder.js";
import { compileBinaryEncoder } from "../src/codec/binary-encoder.js";
import { defaultConfig } from "../src/config/config.js";
import { admit } from "../src/core/admit.js";
import { type ExecutionEnvelope, ExecutionEnvelopeSchema } from "../src/gen/envelope/v1/execution_envelope_pb.js";
import { type RuntimeRequest, RuntimeRequestSchema } from "../src/gen/envelope/v1/runtime_request_pb.js";
import { admissionConfig } from "../src/server.js";
import { freshRequestJson } from "../test/helpers/requests.js";

const { values: flags } = parseArgs({
  options: { rounds: { type: "string", default: "7" }, ms: { type: "string", default: "400" } },
});
const rounds = Number(flags.rounds);
const sliceMs = Number(flags.ms);

// A pool of distinct requests (ids and times differ), as a server sees them.
const nowMs = Date.now();
const pool = Array.from({ length: 64 }, () =>
  Buffer.from(toBinary(RuntimeRequestSchema, fromJson(RuntimeRequestSchema, freshRequestJson(nowMs, 30 * 60_000)))),
);
const config = admissionConfig(defaultConfig);
const decodeFast = compileBinaryDecoder(RuntimeRequestSchema);
const encoder = compileBinaryEncoder(ExecutionEnvelopeSchema);
if (decodeFast === undefined || encoder === undefined) throw new Error("the codec does not compile");
const requestField = ExecutionEnvelopeSchema.field.request.number;

let next = 0;
const body = () => pool[next++ % pool.length] as Buffer;
const core = (request: RuntimeRequest): ExecutionEnvelope => {
  const result = admit(request, config, {
    nowMs,
    envelopeId: "env_01M827SFG193WQ3ABACPNCF6PQ",
    traceId: "0123456789abcdef0123456789abcdef",
  });
  if (result.kind !== "admitted") throw new Error("the sample request must be admitted");
  return result.envelope;
};
// The transport's encoding before the compiled codec: toBinary, then the received bytes spliced in.
const encodeSlow = (envelope: ExecutionEnvelope, received: Buffer) => {
  const w = new BinaryWriter();
  w.tag(requestField, WireType.LengthDelimited).bytes(received);
  return Buffer.concat([toBinary(ExecutionEnvelopeSchema, { ...envelope, request: undefined }), w.finish()]);
};
const encodeFast = (envelope: ExecutionEnvelope, received: Buffer) =>
  encoder.encodeWithField({ ...envelope, request: undefined }, requestField, received);

const sampleBytes = pool[0] as Buffer;
const sampleRequest = fromBinary(RuntimeRequestSchema, sampleBytes);
const sampleEnvelope = core(sampleRequest);
if (!(encodeFast(sampleEnvelope, sampleBytes) as Buffer).equals(encodeSlow(sampleEnvelope, sampleBytes))) {
  throw new Error("the encoders disagree");
}

// Pairs: [protobuf-es, compiled], each a function of one call.
const variants: Record<string, () => unknown> = {
  "decode/protobuf-es": () => fromBinary(RuntimeRequestSchema, body()),
  "decode/compiled": () => decodeFast(body()),
  "encode/protobuf-es": () => encodeSlow(sampleEnvelope, body()),
  "encode/compiled": () => encodeFast(sampleEnvelope, body()),
  // The core leaves its request untouched, so one decoded request serves every call.
  "admit core": () => core(sampleRequest),
  "path/protobuf-es": () => {
    const bytes = body();
    return encodeSlow(core(fromBinary(RuntimeRequestSchema, bytes)), bytes);
  },
  "path/compiled": () => {
    const bytes = body();
    return encodeFast(core(decodeFast(bytes) as RuntimeRequest), bytes);
  },
};

interface Slice {
  readonly variant: string;
  readonly start: number;
  readonly end: number;
  readonly calls: number;
}
const slices: Slice[] = [];
const gc: { start: number; duration: number }[] = [];
const observer = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gc.push({ start: e.startTime, duration: e.duration });
});
observer.observe({ entryTypes: ["gc"] });

function runSlice(variant: string, fn: () => unknown): void {
  let calls = 0;
  const start = performance.now();
  const stop = start + sliceMs;
  let now = start;
  while (now < stop) {
    for (let i = 0; i < 200; i++) fn();
    calls += 200;
    now = performance.now();
  }
  slices.push({ variant, start, end: now, calls });
}

// Warm-up: every variant compiled and optimized before measuring.
for (const [name, fn] of Object.entries(variants)) runSlice(`warmup ${name}`, fn);
const names = Object.keys(variants);
for (let r = 0; r < rounds; r++) {
  // Alternate the order each round so neither side of a pair always runs first.
  for (const name of r % 2 === 0 ? names : [...names].reverse()) runSlice(name, variants[name] as () => unknown);
  process.stderr.write(`round ${r + 1}/${rounds}\n`);
}
await new Promise((resolve) => setTimeout(resolve, 100));
observer.disconnect();

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1
    ? (s[(s.length - 1) / 2] as number)
    : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};
const perCall = (name: string) => {
  const mine = slices.filter((s) => s.variant === name);
  const us = mine.map((s) => ((s.end - s.start) * 1000) / s.calls);
  const gcUs = mine.map((s) => {
    const ms = gc.filter((g) => g.start >= s.start && g.start < s.end).reduce((a, g) => a + g.duration, 0);
    return (ms * 1000) / s.calls;
  });
  return { us: median(us), min: Math.min(...us), max: Math.max(...us), gcUs: median(gcUs) };
};

const rows = names.map((name) => ({ name, ...perCall(name) }));
const fmt = (n: number) => n.toFixed(2).padStart(7);
process.stdout.write(
  `Admit codec micro-benchmark: node ${process.version}, ${rounds} interleaved rounds of ${sliceMs} ms per variant, ${pool.length} distinct ${sampleBytes.length}-byte requests\n\n`,
);
process.stdout.write(
  `${"variant".padEnd(20)} ${"µs/call".padStart(7)} ${"min".padStart(7)} ${"max".padStart(7)} ${"gc µs".padStart(7)}\n`,
);
for (const r of rows)
  process.stdout.write(`${r.name.padEnd(20)} ${fmt(r.us)} ${fmt(r.min)} ${fmt(r.max)} ${fmt(r.gcUs)}\n`);
const us = (name: string) => rows.find((r) => r.name === name)?.us ?? Number.NaN;
process.stdout.write("\nratios (protobuf-es / compiled, medians):\n");
for (const part of ["decode", "encode", "path"]) {
  const slow = us(`${part}/protobuf-es`);
  const fast = us(`${part}/compiled`);
  process.stdout.write(
    `  ${part.padEnd(7)} ${(slow / fast).toFixed(2)}x  (${slow.toFixed(2)} -> ${fast.toFixed(2)} µs, saves ${(slow - fast).toFixed(2)} µs)\n`,
  );
}
