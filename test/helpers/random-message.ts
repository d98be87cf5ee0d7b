// Random messages of any schema, for differential tests: every field kind, with the values where
// codecs go wrong (unicode and lone surrogates, empty and long strings, negative and extreme
// integers, -0 and NaN, "__proto__" keys, nested Struct JSON) and unknown fields at any level.
import { create, type DescField, type DescMessage, type JsonValue, type Message, ScalarType } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";

export type Random = () => number;

const texts = [
  "",
  "a",
  "2.0",
  "tenant-acme",
  "70d82541-c047-4bc3-9b58-8e46b65036d0",
  "é",
  "naïve café",
  "日本語のテキスト",
  "😀 emoji 🚀",
  "\uFEFFleading byte-order mark",
  "lone \uD800 surrogate",
  "nul\u0000inside",
  "a".repeat(31),
  "b".repeat(32),
  "c".repeat(33),
  "d".repeat(127),
  "e".repeat(128),
  "f".repeat(300),
  `${"é".repeat(70)}x`,
  "__proto__",
  "constructor",
  "10",
  "1",
];

const int32s = [0, 1, -1, 127, 128, 300, 16383, 16384, 2 ** 31 - 1, -(2 ** 31), -129, 123456789];
const int64s = [
  0n,
  1n,
  -1n,
  2n ** 32n,
  2n ** 31n,
  2n ** 53n + 1n,
  2n ** 63n - 1n,
  -(2n ** 63n),
  -62135596800n,
  1782052337n,
];
const doubles = [
  0,
  -0,
  1.5,
  -2.25,
  0.05,
  1e-300,
  1e300,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  -Number.MAX_VALUE,
  5e-324,
];

export function pick<T>(random: Random, xs: readonly T[]): T {
  return xs[Math.floor(random() * xs.length)] as T;
}

function int(random: Random, max: number): number {
  return Math.floor(random() * max);
}

function randomText(random: Random): string {
  if (random() < 0.15) {
    // Random code units, surrogates included.
    return String.fromCharCode(...Array.from({ length: int(random, 12) }, () => int(random, 0x10000)));
  }
  return pick(random, texts);
}

function randomScalar(random: Random, type: ScalarType): unknown {
  switch (type) {
    case ScalarType.STRING:
      return randomText(random);
    case ScalarType.BYTES:
      return Uint8Array.from({ length: int(random, 40) }, () => int(random, 256));
    case ScalarType.BOOL:
      return random() < 0.5;
    case ScalarType.DOUBLE:
      return random() < 0.5 ? pick(random, doubles) : (random() - 0.5) * 10 ** int(random, 20);
    case ScalarType.FLOAT:
      return Math.fround(random() < 0.5 ? pick(random, doubles) : (random() - 0.5) * 1000);
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return random() < 0.5 ? pick(random, int32s) : int(random, 2 ** 32) - 2 ** 31;
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return random() < 0.5 ? Math.abs(pick(random, int32s)) : int(random, 2 ** 32);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return random() < 0.5 ? BigInt.asUintN(64, pick(random, int64s)) : BigInt(int(random, 2 ** 53));
    default:
      return random() < 0.5 ? pick(random, int64s) : BigInt(int(random, 2 ** 53)) - 2n ** 52n;
  }
}

/** A JSON object like a Struct carries: numbers, strings, booleans, null, lists and objects. */
export function randomJsonObject(random: Random, depth = 0): { [key: string]: JsonValue } {
  const object: { [key: string]: JsonValue } = {};
  const size = int(random, depth > 2 ? 2 : 5);
  for (let i = 0; i < size; i++) {
    const key = randomText(random);
    const value = randomJson(random, depth + 1);
    // Assigning "__proto__" would set the prototype; protobuf-es makes it an own property.
    Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
  }
  return object;
}

function randomJson(random: Random, depth: number): JsonValue {
  switch (int(random, depth > 3 ? 4 : 6)) {
    case 0:
      return null;
    case 1: {
      // JSON numbers are finite; -0 survives the binary format.
      const n = randomScalar(random, ScalarType.DOUBLE) as number;
      return Number.isFinite(n) ? n : 0.5;
    }
    case 2:
      return randomText(random);
    case 3:
      return random() < 0.5;
    case 4:
      return Array.from({ length: int(random, 4) }, () => randomJson(random, depth + 1));
    default:
      return randomJsonObject(random, depth + 1);
  }
}

export interface RandomMessageOptions {
  /** Chance that a message gets unknown fields. Default 0.1. */
  readonly unknownFields?: number;
  /** Fields never set (e.g. the envelope's request). */
  readonly skip?: ReadonlySet<DescField>;
}

/** A random message of `desc`, every field set with some probability. */
export function randomMessage<T extends Message>(
  desc: DescMessage,
  random: Random,
  options: RandomMessageOptions = {},
  depth = 0,
): T {
  const init: Record<string, unknown> = {};
  for (const f of desc.fields) {
    if (options.skip?.has(f) || random() < 0.25) continue;
    const value = randomField(f, random, options, depth);
    if (value !== undefined) {
      if (f.oneof === undefined) init[f.localName] = value;
      else if (init[f.oneof.localName] === undefined) init[f.oneof.localName] = { case: f.localName, value };
    }
  }
  const message = create(desc, init) as unknown as T;
  if (random() < (options.unknownFields ?? 0.1)) message.$unknown = randomUnknownFields(desc, random);
  return message;
}

function randomField(f: DescField, random: Random, options: RandomMessageOptions, depth: number): unknown {
  switch (f.fieldKind) {
    case "scalar":
      return randomScalar(random, f.scalar);
    case "enum":
      // Open enums take any int32, named or not.
      return random() < 0.8 ? pick(random, f.enum.values).number : pick(random, [99, -1, 2 ** 31 - 1]);
    case "message":
      return randomChild(f.message, random, options, depth);
    case "list": {
      const length = int(random, 4);
      const item = () =>
        f.listKind === "message"
          ? randomChild(f.message, random, options, depth)
          : f.listKind === "enum"
            ? pick(random, f.enum.values).number
            : randomScalar(random, f.scalar);
      return Array.from({ length }, item).filter((x) => x !== undefined);
    }
    case "map": {
      const record: Record<string, unknown> = {};
      for (let i = int(random, 4); i > 0; i--) {
        const key = f.mapKey === ScalarType.STRING ? randomText(random) : String(int(random, 100));
        const value =
          f.mapKind === "message"
            ? randomChild(f.message, random, options, depth)
            : f.mapKind === "enum"
              ? pick(random, f.enum.values).number
              : randomScalar(random, f.scalar);
        Object.defineProperty(record, key, { value, writable: true, enumerable: true, configurable: true });
      }
      return record;
    }
  }
}

function randomChild(desc: DescMessage, random: Random, options: RandomMessageOptions, depth: number): unknown {
  if (desc.typeName === "google.protobuf.Struct") return randomJsonObject(random);
  if (depth > 4) return undefined;
  return randomMessage(desc, random, options, depth + 1);
}

/** Unknown fields of every wire type but groups, numbered past the message's own fields. */
export function randomUnknownFields(
  desc: DescMessage,
  random: Random,
): { no: number; wireType: WireType; data: Uint8Array }[] {
  const top = Math.max(0, ...desc.fields.map((f) => f.number));
  return Array.from({ length: 1 + int(random, 3) }, () => {
    const no = random() < 0.1 ? 536870911 : top + 1 + int(random, 2000);
    const w = new BinaryWriter();
    const wireType = pick(random, [WireType.Varint, WireType.Bit64, WireType.LengthDelimited, WireType.Bit32]);
    switch (wireType) {
      case WireType.Varint:
        w.int64(pick(random, int64s));
        break;
      case WireType.Bit64:
        w.fixed64(BigInt(int(random, 2 ** 53)));
        break;
      case WireType.LengthDelimited:
        w.string(randomText(random));
        break;
      default:
        w.fixed32(int(random, 2 ** 32));
    }
    return { no, wireType, data: w.finish() };
  });
}
