// The compiled binary codec must be protobuf-es, only faster: for every input the decoder either
// gives exactly what fromBinary gives (the same objects, key order and $unknown included) or defers
// to it, and the encoder either writes exactly toBinary's bytes or defers. Checked differentially on
// thousands of seeded random messages, on the fixtures, and on mutated and truncated bytes.
import {
  create,
  type DescFile,
  type DescMessage,
  equals,
  fromBinary,
  fromJson,
  type Message,
  toBinary,
} from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { seededRandom } from "../../src/bench/load.js";
import { compileBinaryDecoder } from "../../src/codec/binary-decoder.js";
import { compileBinaryEncoder } from "../../src/codec/binary-encoder.js";
import { defaultConfig } from "../../src/config/config.js";
import { admit } from "../../src/core/admit.js";
import { WarningSchema } from "../../src/gen/envelope/v1/common_pb.js";
import {
  type Decision,
  type ExecutionEnvelope,
  ExecutionEnvelopeSchema,
} from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import { type RuntimeRequest, RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { contractFiles } from "../../src/schema.js";
import { admissionConfig } from "../../src/server.js";
import { decodeBinary } from "../../src/service/decode-request.js";
import { pick, type Random, randomMessage, randomUnknownFields } from "../helpers/random-message.js";
import { freshRequestJson, readFixture } from "../helpers/requests.js";

const decodeRequest = compileBinaryDecoder(RuntimeRequestSchema);
const envelopeEncoder = compileBinaryEncoder(ExecutionEnvelopeSchema);

/**
 * A value written out with everything `equals` does not look at: key order, own properties only,
 * prototypes, -0 and NaN, bigint against number, the class of byte arrays.
 */
function exact(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  switch (typeof value) {
    case "number":
      return Object.is(value, -0) ? "-0" : String(value);
    case "bigint":
      return `${value}n`;
    case "string":
      return JSON.stringify(value);
    case "boolean":
      return String(value);
    case "object": {
      if (value instanceof Uint8Array) return `${value.constructor.name}[${Buffer.from(value).toString("hex")}]`;
      if (Array.isArray(value)) return `[${value.map(exact).join(",")}]`;
      const proto = Object.getPrototypeOf(value) === Object.prototype ? "" : "(prototype!)";
      const keys = Reflect.ownKeys(value).map(String);
      const record = value as Record<string, unknown>;
      return `${proto}{${keys.map((k) => `${JSON.stringify(k)}:${exact(Object.getOwnPropertyDescriptor(record, k)?.value)}`).join(",")}}`;
    }
    default:
      throw new Error(`unexpected ${typeof value}`);
  }
}

/** protobuf-es's answer: the message, or the fact that it threw. */
function reference(desc: DescMessage, bytes: Uint8Array): Message | "throws" {
  try {
    return fromBinary(desc, bytes);
  } catch {
    return "throws";
  }
}

/** Asserts that the fast decoder's answer is protobuf-es's; returns whether it deferred. */
function expectSameDecode(desc: DescMessage, fast: Message | undefined, bytes: Uint8Array, what: string): boolean {
  const expected = reference(desc, bytes);
  if (fast === undefined) return true;
  if (expected === "throws") expect.fail(`${what}: protobuf-es throws, the fast decoder gave a message`);
  // NaN is not equal to itself for `equals`: hold the fast answer to what a second decode gets.
  expect(equals(desc, fast, expected), what).toBe(equals(desc, fromBinary(desc, bytes), expected));
  expect(exact(fast), what).toBe(exact(expected));
  return false;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

/** The bytes of a request whose fields are written in two runs with unknown fields between them. */
function reordered(request: RuntimeRequest, random: Random): Uint8Array {
  const first = create(RuntimeRequestSchema);
  const second = create(RuntimeRequestSchema);
  for (const f of RuntimeRequestSchema.fields) {
    const target = (random() < 0.5 ? first : second) as unknown as Record<string, unknown>;
    target[f.localName] = (request as unknown as Record<string, unknown>)[f.localName];
  }
  const between = create(RuntimeRequestSchema);
  between.$unknown = randomUnknownFields(RuntimeRequestSchema, random);
  return Buffer.concat([second, between, first].map((m) => toBinary(RuntimeRequestSchema, m)));
}

describe("compiled decoder: RuntimeRequest", () => {
  it("compiles for RuntimeRequest", () => {
    expect(decodeRequest).toBeDefined();
  });
  const decode = decodeRequest as NonNullable<typeof decodeRequest>;

  it("decodes the fixture exactly as fromBinary", () => {
    const bytes = toBinary(RuntimeRequestSchema, fromJson(RuntimeRequestSchema, readFixture("runtime-request.json")));
    const fast = decode(bytes);
    expect(fast).toBeDefined();
    expectSameDecode(RuntimeRequestSchema, fast, bytes, "fixture");
  });

  it("decodes 3000 random requests exactly as fromBinary, never deferring", () => {
    const random = seededRandom(20261122);
    for (let i = 0; i < 3000; i++) {
      const request = randomMessage<RuntimeRequest>(RuntimeRequestSchema, random, { unknownFields: 0.2 });
      const bytes = i % 3 === 0 ? reordered(request, random) : toBinary(RuntimeRequestSchema, request);
      const fast = decode(bytes);
      if (fast === undefined) expect.fail(`case ${i} deferred: ${hex(bytes)}`);
      expectSameDecode(RuntimeRequestSchema, fast, bytes, `case ${i}: ${hex(bytes)}`);
    }
  });

  it("on mutated and truncated bytes answers as protobuf-es or defers, and never throws", () => {
    const random = seededRandom(7);
    let decoded = 0;
    let deferred = 0;
    for (let i = 0; i < 3000; i++) {
      const request = randomMessage<RuntimeRequest>(RuntimeRequestSchema, random);
      const bytes = mutate(toBinary(RuntimeRequestSchema, request), random);
      let fast: RuntimeRequest | undefined;
      expect(() => {
        fast = decode(bytes);
      }).not.toThrow();
      if (expectSameDecode(RuntimeRequestSchema, fast, bytes, `case ${i}: ${hex(bytes)}`)) deferred++;
      else decoded++;
    }
    // Both outcomes must be well represented, or the agreement would prove little.
    expect(decoded).toBeGreaterThan(150);
    expect(deferred).toBeGreaterThan(1500);
  });

  // Hand-made inputs at the edges, each with what the fast path does: decode or defer.
  const w = () => new BinaryWriter();
  const struct = (entries: (x: BinaryWriter) => void) => {
    const task = w();
    task.tag(2, WireType.LengthDelimited).fork();
    entries(task);
    task.join();
    return w().tag(7, WireType.LengthDelimited).bytes(task.finish()).finish();
  };
  const entry = (x: BinaryWriter, key: string, value: (v: BinaryWriter) => void) => {
    x.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(key);
    x.tag(2, WireType.LengthDelimited).fork();
    value(x);
    x.join().join();
  };
  const nested = (depth: number): Uint8Array => {
    // A Struct holding a Struct holding ... `depth` times.
    let inner = new Uint8Array(0);
    for (let i = 0; i < depth; i++) {
      const value = w().tag(5, WireType.LengthDelimited).bytes(inner).finish();
      inner = w()
        .tag(1, WireType.LengthDelimited)
        .fork()
        .tag(1, WireType.LengthDelimited)
        .string("k")
        .tag(2, WireType.LengthDelimited)
        .bytes(value)
        .join()
        .finish();
    }
    return w().tag(7, WireType.LengthDelimited).fork().tag(2, WireType.LengthDelimited).bytes(inner).join().finish();
  };
  const cases: [string, Uint8Array, "decodes" | "defers"][] = [
    ["empty", new Uint8Array(0), "decodes"],
    [
      "negative int32 in ten bytes",
      w().tag(6, WireType.LengthDelimited).fork().tag(3, WireType.Varint).int32(-5).join().finish(),
      "decodes",
    ],
    ["overlong length varint", Uint8Array.from([0x0a, 0x83, 0x00, 0x32, 0x2e, 0x30]), "decodes"],
    ["int32 in a 6-byte varint", Uint8Array.from([0x32, 0x07, 0x18, 0x81, 0x80, 0x80, 0x80, 0x80, 0x10]), "decodes"],
    ["string with a byte-order mark", w().tag(2, WireType.LengthDelimited).string("\uFEFFid").finish(), "decodes"],
    ["field 1 with wire type varint", Uint8Array.from([0x08, 0x01]), "defers"],
    [
      "message field twice (merged by protobuf-es)",
      Uint8Array.from([0x22, 0x02, 0x0a, 0x00, 0x22, 0x02, 0x12, 0x00]),
      "defers",
    ],
    ["unknown group", Uint8Array.from([0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06]), "defers"],
    ["end group at top level", Uint8Array.from([0x0c]), "defers"],
    ["field number 0", Uint8Array.from([0x02, 0x00]), "defers"],
    ["wire type 7", Uint8Array.from([0x0f]), "defers"],
    ["invalid UTF-8", Uint8Array.from([0x0a, 0x02, 0xc3, 0x28]), "defers"],
    ["length past the end", Uint8Array.from([0x0a, 0x05, 0x61]), "defers"],
    ["string crossing the nested message's end", Uint8Array.from([0x22, 0x02, 0x0a, 0x03, 0x61, 0x62, 0x63]), "defers"],
    ["varint of eleven bytes", Uint8Array.from([0x50, ...Array(10).fill(0x80), 0x00]), "defers"],
    [
      "map entry value before key",
      w()
        .tag(16, WireType.LengthDelimited)
        .fork()
        .tag(4, WireType.LengthDelimited)
        .fork()
        .tag(2, WireType.Varint)
        .int32(2)
        .tag(1, WireType.LengthDelimited)
        .string("gpu")
        .join()
        .join()
        .finish(),
      "decodes",
    ],
    [
      "map entry without key or value",
      w().tag(16, WireType.LengthDelimited).fork().tag(4, WireType.LengthDelimited).fork().join().join().finish(),
      "decodes",
    ],
    [
      "map entry with its key twice",
      w()
        .tag(16, WireType.LengthDelimited)
        .fork()
        .tag(4, WireType.LengthDelimited)
        .fork()
        .tag(1, WireType.LengthDelimited)
        .string("a")
        .tag(1, WireType.LengthDelimited)
        .string("b")
        .join()
        .join()
        .finish(),
      "defers",
    ],
    [
      "Struct with a repeated key",
      struct((x) => {
        entry(x, "k", (v) => v.tag(2, WireType.Bit64).double(1));
        entry(x, "j", (v) => v.tag(4, WireType.Varint).bool(true));
        entry(x, "k", (v) => v.tag(3, WireType.LengthDelimited).string("s"));
      }),
      "decodes",
    ],
    [
      "Struct key __proto__",
      struct((x) => entry(x, "__proto__", (v) => v.tag(1, WireType.Varint).int32(0))),
      "decodes",
    ],
    [
      "Struct entry without value",
      struct((x) => x.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string("k").join()),
      "decodes",
    ],
    ["Value with no kind", struct((x) => entry(x, "k", () => {})), "decodes"],
    [
      "Value with two kinds",
      struct((x) =>
        entry(x, "k", (v) => v.tag(2, WireType.Bit64).double(1).tag(3, WireType.LengthDelimited).string("s")),
      ),
      "defers",
    ],
    ["Value with an unknown field", struct((x) => entry(x, "k", (v) => v.tag(9, WireType.Varint).int32(1))), "defers"],
    [
      "bool as a ten-byte varint",
      struct((x) =>
        entry(x, "k", (v) =>
          v.tag(4, WireType.Varint).raw(Uint8Array.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])),
        ),
      ),
      "decodes",
    ],
    ["Struct nested 30 deep", nested(30), "decodes"],
    ["Struct nested 120 deep (protobuf-es's recursion limit)", nested(120), "defers"],
  ];
  it.each(cases)("%s: %s", (what, bytes, outcome) => {
    const fast = decode(bytes);
    expect(fast === undefined ? "defers" : "decodes").toBe(outcome);
    expectSameDecode(RuntimeRequestSchema, fast, bytes, what);
  });

  it("decodeBinary answers every mutated input exactly as with protobuf-es alone", () => {
    const random = seededRandom(99);
    for (let i = 0; i < 500; i++) {
      const bytes = mutate(toBinary(RuntimeRequestSchema, randomMessage(RuntimeRequestSchema, random)), random);
      const result = decodeBinary(RuntimeRequestSchema, bytes, 1 << 20);
      const expected = reference(RuntimeRequestSchema, bytes);
      if (expected === "throws") expect(result.kind, hex(bytes)).toBe("malformed");
      else if (result.kind !== "ok") expect.fail(`case ${i}: protobuf-es decodes ${hex(bytes)}`);
      else expect(exact(result.message)).toBe(exact(expected));
    }
  });
});

/** A copy of `bytes` truncated, with a byte changed, inserted or removed, or a run duplicated. */
function mutate(bytes: Uint8Array, random: Random): Uint8Array {
  const out = Array.from(bytes);
  const at = Math.floor(random() * (out.length + 1));
  switch (pick(random, ["truncate", "change", "insert", "remove", "duplicate"] as const)) {
    case "truncate":
      return Uint8Array.from(out.slice(0, at));
    case "change":
      out[Math.min(at, out.length - 1)] = pick(random, [0x00, 0x01, 0x7f, 0x80, 0xff, Math.floor(random() * 256)]);
      break;
    case "insert":
      out.splice(at, 0, Math.floor(random() * 256));
      break;
    case "remove":
      out.splice(at, 1);
      break;
    case "duplicate":
      out.splice(at, 0, ...out.slice(at, at + 1 + Math.floor(random() * 8)));
      break;
  }
  return Uint8Array.from(out);
}

describe("compiled encoder: ExecutionEnvelope", () => {
  const encoder = envelopeEncoder as NonNullable<typeof envelopeEncoder>;
  const nowMs = Date.parse("2026-06-21T15:32:17.000Z");
  const request = fromJson(RuntimeRequestSchema, freshRequestJson(nowMs));
  const result = admit(request, admissionConfig(defaultConfig), {
    nowMs,
    envelopeId: "env_01M827SFG193WQ3ABACPNCF6PQ",
    traceId: "0123456789abcdef0123456789abcdef",
  });
  if (result.kind !== "admitted") throw new Error("the fixture must be admitted");
  const admitted = result.envelope;

  it("compiles for ExecutionEnvelope", () => {
    expect(envelopeEncoder).toBeDefined();
  });

  it("encodes the fixture's envelope (without its request) exactly as toBinary", () => {
    const rest = { ...admitted, request: undefined };
    expect(hex(encoder.encode(rest) as Uint8Array)).toBe(hex(toBinary(ExecutionEnvelopeSchema, rest)));
  });

  it("splices received bytes as the request field exactly as the transport did before", () => {
    const rest = { ...admitted, request: undefined };
    const received = toBinary(RuntimeRequestSchema, request);
    const before = Buffer.concat([
      toBinary(ExecutionEnvelopeSchema, rest),
      new BinaryWriter().tag(3, WireType.LengthDelimited).bytes(received).finish(),
    ]);
    expect(hex(encoder.encodeWithField(rest, 3, received) as Uint8Array)).toBe(hex(before));
    // The shared buffer is left as it was: the next encode is unaffected.
    expect(hex(encoder.encode(rest) as Uint8Array)).toBe(hex(toBinary(ExecutionEnvelopeSchema, rest)));
  });

  it("encodes an envelope larger than its shared buffer, and a small one after it", () => {
    const warnings = Array.from({ length: 3000 }, (_, i) =>
      create(WarningSchema, { code: "W", field: `f${i}`, message: "é".repeat(i % 200) }),
    );
    const large = { ...admitted, request: undefined, decision: { ...(admitted.decision as Decision), warnings } };
    expect(hex(encoder.encode(large) as Uint8Array)).toBe(hex(toBinary(ExecutionEnvelopeSchema, large)));
    const rest = { ...admitted, request: undefined };
    expect(hex(encoder.encode(rest) as Uint8Array)).toBe(hex(toBinary(ExecutionEnvelopeSchema, rest)));
  });

  it("encodes an envelope whose request holds Structs exactly as toBinary", () => {
    expect(hex(encoder.encode(admitted) as Uint8Array)).toBe(hex(toBinary(ExecutionEnvelopeSchema, admitted)));
  });

  it("encodes 3000 random envelopes (without request) exactly as toBinary, never deferring", () => {
    const random = seededRandom(1122);
    const skip = new Set([ExecutionEnvelopeSchema.field.request]);
    for (let i = 0; i < 3000; i++) {
      const envelope = randomMessage<ExecutionEnvelope>(ExecutionEnvelopeSchema, random, { skip, unknownFields: 0.2 });
      const fast = encoder.encode(envelope);
      if (fast === undefined) expect.fail(`case ${i} deferred`);
      expect(hex(fast), `case ${i}`).toBe(hex(toBinary(ExecutionEnvelopeSchema, envelope)));
    }
  });

  // Values protobuf-es coerces or refuses: the fast encoder must defer (or agree), never differ.
  const odd: [string, (e: Record<string, unknown> & ExecutionEnvelope) => void][] = [
    ["tokens as a string", (e) => Object.assign(e.requested as object, { tokens: "5" })],
    ["tokens fractional", (e) => Object.assign(e.requested as object, { tokens: 1.5 })],
    ["tokens past int32", (e) => Object.assign(e.requested as object, { tokens: 2 ** 31 })],
    ["tokens NaN", (e) => Object.assign(e.requested as object, { tokens: Number.NaN })],
    ["tokens undefined", (e) => Object.assign(e.requested as object, { tokens: undefined })],
    ["cost as a number", (e) => Object.assign(e.requested as object, { costUsdMicros: 5 })],
    ["cost as a string", (e) => Object.assign(e.requested as object, { costUsdMicros: "5" })],
    ["cost past int64", (e) => Object.assign(e.requested as object, { costUsdMicros: 2n ** 63n })],
    ["cost negative", (e) => Object.assign(e.requested as object, { costUsdMicros: -7n })],
    ["envelopeId a number", (e) => Object.assign(e, { envelopeId: 5 })],
    ["envelopeId undefined", (e) => Object.assign(e, { envelopeId: undefined })],
    ["kind a string", (e) => Object.assign(e, { kind: "x" })],
    ["kind negative", (e) => Object.assign(e, { kind: -3 })],
    ["decision of another type", (e) => Object.assign(e.decision as object, { $typeName: "envelope.v1.Warning" })],
    ["resource value a string", (e) => Object.assign(e.requested as object, { resources: { gpu: "2" } })],
    [
      "resource key __proto__",
      (e) => Object.assign(e.requested as object, { resources: JSON.parse('{"__proto__": 3}') }),
    ],
    ["delegationId present but undefined", (e) => Object.assign(e.policyScope as object, { delegationId: undefined })],
    ["delegationId empty", (e) => Object.assign(e.policyScope as object, { delegationId: "" })],
    [
      "delegationId inherited",
      (e) =>
        Object.assign(e, {
          policyScope: Object.create({ delegationId: "d" }, Object.getOwnPropertyDescriptors(e.policyScope)),
        }),
    ],
    [
      "unknown field with a bad number",
      (e) => Object.assign(e, { $unknown: [{ no: 0, wireType: 0, data: new Uint8Array([1]) }] }),
    ],
    ["unknown field with number[] data", (e) => Object.assign(e, { $unknown: [{ no: 99, wireType: 0, data: [1] }] })],
    ["scopes not an array", (e) => Object.assign(e.policyScope as object, { scopes: "a" })],
    ["warning with a non-message item", (e) => Object.assign(e.decision as object, { warnings: [null] })],
    ["traceId with lone surrogates", (e) => Object.assign(e, { traceId: "\uD800x\uDC00" })],
  ];
  it.each(odd)("%s: defers or agrees with toBinary", (_what, change) => {
    const envelope = structuredClone({ ...admitted, request: undefined }) as Record<string, unknown> &
      ExecutionEnvelope;
    change(envelope);
    let expected: string;
    try {
      expected = hex(toBinary(ExecutionEnvelopeSchema, envelope));
    } catch {
      expected = "throws";
    }
    let fast: Uint8Array | undefined;
    expect(() => {
      fast = encoder.encode(envelope);
    }).not.toThrow();
    if (fast !== undefined) expect(hex(fast)).toBe(expected);
  });
});

describe("compiled encoder: RuntimeRequest, Structs included", () => {
  const encoder = compileBinaryEncoder(RuntimeRequestSchema) as NonNullable<
    ReturnType<typeof compileBinaryEncoder<typeof RuntimeRequestSchema>>
  >;
  const fixture = fromJson(RuntimeRequestSchema, freshRequestJson(Date.parse("2026-06-21T15:32:17.000Z")));

  it("encodes 3000 random requests exactly as toBinary, never deferring", () => {
    const random = seededRandom(2211);
    for (let i = 0; i < 3000; i++) {
      const request = randomMessage<RuntimeRequest>(RuntimeRequestSchema, random, { unknownFields: 0.2 });
      const fast = encoder.encode(request);
      if (fast === undefined) expect.fail(`case ${i} deferred`);
      expect(hex(fast), `case ${i}`).toBe(hex(toBinary(RuntimeRequestSchema, request)));
    }
  });

  // JSON as protobuf-es holds it, and values no JSON has: the encoder agrees with toBinary or defers.
  const inputs: [string, unknown][] = [
    ["empty object", {}],
    ["integer-like keys, which Object.keys puts first", JSON.parse('{"b": 1, "10": 2, "a": 3, "2": 4}')],
    ["key __proto__", JSON.parse('{"__proto__": {"x": 1}}')],
    ["-0, NaN and infinities", { z: -0, n: Number.NaN, p: Number.POSITIVE_INFINITY, m: Number.NEGATIVE_INFINITY }],
    ["lone surrogates in keys and values", { "\uD800k": "v\uDC00" }],
    ["null, false, 0 and empty string, each still written", { a: null, b: false, c: 0, d: "" }],
    ["lists in lists, empty ones too", { l: [[], [[1, "x", null]], {}, [{ k: [true] }]] }],
    ["a long string", { s: "é".repeat(5000) }],
    ["deep nesting", JSON.parse(`${'{"a":'.repeat(40)}1${"}".repeat(40)}`)],
    ["undefined inside", { u: undefined }],
    ["undefined in a list", { l: [undefined] }],
    ["a bigint", { b: 5n }],
    ["a function", { f: () => 1 }],
    ["a Date", { d: new Date(0) }],
    ["an array where an object belongs", [1, 2]],
    ["a string where an object belongs", "x"],
    ["null where an object belongs", null],
  ];
  it.each(inputs)("task.input as %s: defers or agrees with toBinary", (_what, input) => {
    const request = { ...fixture, task: { ...(fixture.task as NonNullable<RuntimeRequest["task"]>), input } };
    let expected: string;
    try {
      expected = hex(toBinary(RuntimeRequestSchema, request as RuntimeRequest));
    } catch {
      expected = "throws";
    }
    let fast: Uint8Array | undefined;
    expect(() => {
      fast = encoder.encode(request as RuntimeRequest);
    }).not.toThrow();
    if (fast !== undefined) expect(hex(fast)).toBe(expected);
  });

  it("encodes every plain JSON input above rather than deferring", () => {
    for (const input of inputs.slice(0, 9).map(([, v]) => v)) {
      const request = { ...fixture, task: { ...(fixture.task as NonNullable<RuntimeRequest["task"]>), input } };
      expect(encoder.encode(request as RuntimeRequest)).toBeDefined();
    }
  });
});

/** Every message of the contract's files and their imports, nested ones included. */
function allMessages(): DescMessage[] {
  const files = new Set<DescFile>();
  const visit = (f: DescFile) => {
    if (files.has(f)) return;
    files.add(f);
    for (const d of f.dependencies) visit(d);
  };
  for (const f of contractFiles) visit(f);
  const out: DescMessage[] = [];
  const add = (m: DescMessage) => {
    out.push(m);
    for (const n of m.nestedMessages) add(n);
  };
  for (const f of files) for (const m of f.messages) add(m);
  return out;
}

describe("compiled codec: every message of the contract", () => {
  const messages = allMessages();
  const compiled = messages.filter((m) => compileBinaryDecoder(m) !== undefined);

  it("compiles decoders for the contract's own messages", () => {
    expect(compiled.map((m) => m.typeName)).toEqual(
      expect.arrayContaining([
        "envelope.v1.RuntimeRequest",
        "envelope.v1.ExecutionEnvelope",
        "envelope.v1.ErrorEnvelope",
      ]),
    );
    // Shapes the compiler does not handle leave the type to protobuf-es.
    expect(compiled.map((m) => m.typeName)).not.toContain("google.protobuf.Value");
  });

  it.each(messages.map((m) => [m.typeName, m] as const))("%s: 100 random messages", (_name, desc) => {
    const random = seededRandom(desc.typeName.length * 7919);
    const decode = compileBinaryDecoder(desc);
    const encoder = compileBinaryEncoder(desc);
    for (let i = 0; i < 100; i++) {
      const message = randomMessage(desc, random);
      let bytes: Uint8Array;
      try {
        bytes = toBinary(desc, message);
      } catch {
        continue; // e.g. a proto2 message without its required fields
      }
      if (decode !== undefined)
        expectSameDecode(desc, decode(bytes), bytes, `${desc.typeName} case ${i}: ${hex(bytes)}`);
      const fast = encoder?.encode(message);
      if (fast !== undefined) expect(hex(fast), `${desc.typeName} case ${i}`).toBe(hex(bytes));
    }
  });
});
