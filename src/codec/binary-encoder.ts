// A binary encoder compiled from a message descriptor, writing byte for byte what protobuf-es's
// toBinary writes (fields in number order, the same presence rules, unknown fields last), or
// answering `undefined` when the message holds something it does not write: a field of a shape the
// compiler does not handle (a oneof, a wrapper, ...), or a value protobuf-es would coerce or refuse.
// The caller then encodes with toBinary, which keeps its own results and errors.
//
// google.protobuf.Struct fields, which protobuf-es holds as JSON objects, are written as toBinary
// writes them after converting the JSON to Struct, Value and ListValue messages: entries in
// Object.keys order, every Value's kind written even when zero (a oneof member has presence).
//
// The code is generated per message type for the reasons given in binary-decoder.ts, from the
// descriptor alone.
import { type DescField, type DescMessage, type MessageShape, ScalarType } from "@bufbuild/protobuf";
import {
  implicitPresence,
  isStruct,
  isUnwrapped,
  lengthDelimited,
  littleEndianHost,
  proto3,
  quote as q,
  reachableMessages,
  requireBigint,
  tagOf,
  Unsupported,
  wireTypeOf,
} from "./codegen.js";
import { giveUp } from "./wire-reader.js";
import * as wire from "./wire-writer.js";

export interface FastEncoder<Desc extends DescMessage> {
  /** `toBinary(desc, message)`, or undefined when toBinary must encode this message. */
  encode(message: MessageShape<Desc>): Uint8Array | undefined;
  /**
   * The message followed by the length-delimited field `fieldNo` holding `bytes`: how a message
   * received already encoded is put in an answer without decoding it again.
   */
  encodeWithField(message: MessageShape<Desc>, fieldNo: number, bytes: Uint8Array): Uint8Array | undefined;
}

type MessageEncoder = (w: wire.WriteState, message: object) => void;

/** Compiles the fast encoder of `desc`; undefined on a big-endian host (floats are copied as stored). */
export function compileBinaryEncoder<Desc extends DescMessage>(desc: Desc): FastEncoder<Desc> | undefined {
  if (!littleEndianHost) return undefined;
  const root = compile(desc);
  const run = (message: object): boolean => {
    const w = wire.writer;
    w.pos = 0;
    try {
      root(w, message);
      return true;
    } catch {
      // A value to leave to protobuf-es, or anything unforeseen: either way toBinary decides.
      wire.shrink(w);
      return false;
    }
  };
  return {
    encode(message) {
      if (!run(message)) return undefined;
      const w = wire.writer;
      const out = Buffer.from(w.buf.subarray(0, w.pos));
      wire.shrink(w);
      return out;
    },
    encodeWithField(message, fieldNo, bytes) {
      if (!run(message)) return undefined;
      const w = wire.writer;
      // The field's tag and length go after the message, in the shared buffer, then everything is
      // copied once into the result.
      wire.writeVarint32(w, ((fieldNo << 3) | lengthDelimited) >>> 0);
      wire.writeVarint32(w, bytes.byteLength);
      const out = Buffer.allocUnsafe(w.pos + bytes.byteLength);
      out.set(w.buf.subarray(0, w.pos));
      out.set(bytes, w.pos);
      wire.shrink(w);
      return out;
    },
  };
}

// The tags of google.protobuf.Struct (fields = 1, a map<string, Value>), its map entries (key = 1,
// value = 2), google.protobuf.Value (null_value = 1 ... list_value = 6) and ListValue (values = 1).
const structEntryTag = tagOf(1, lengthDelimited);
const entryKeyTag = tagOf(1, lengthDelimited);
const entryValueTag = tagOf(2, lengthDelimited);
const nullValueTag = tagOf(1, 0);
const numberValueTag = tagOf(2, 1);
const stringValueTag = tagOf(3, lengthDelimited);
const boolValueTag = tagOf(4, 0);
const structValueTag = tagOf(5, lengthDelimited);
const listValueTag = tagOf(6, lengthDelimited);
const listItemTag = tagOf(1, lengthDelimited);

/** A Struct's fields, from the JSON object protobuf-es holds it as. */
function writeStruct(w: wire.WriteState, json: unknown): void {
  // protobuf-es makes an empty Struct of anything but an object; leave such oddities to it.
  if (typeof json !== "object" || json === null || Array.isArray(json)) giveUp();
  const record = json as Record<string, unknown>;
  const keys = Object.keys(record);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string;
    wire.writeVarint32(w, structEntryTag);
    const entry = wire.fork(w);
    wire.writeVarint32(w, entryKeyTag);
    wire.writeString(w, key);
    wire.writeVarint32(w, entryValueTag);
    const value = wire.fork(w);
    writeValue(w, record[key]);
    wire.join(w, value);
    wire.join(w, entry);
  }
}

/** A google.protobuf.Value's kind, from a JSON value. */
function writeValue(w: wire.WriteState, json: unknown): void {
  switch (typeof json) {
    case "number":
      wire.writeVarint32(w, numberValueTag);
      wire.writeDouble(w, json);
      return;
    case "string":
      wire.writeVarint32(w, stringValueTag);
      wire.writeString(w, json);
      return;
    case "boolean":
      wire.writeVarint32(w, boolValueTag);
      wire.writeBool(w, json);
      return;
    case "object": {
      if (json === null) {
        wire.writeVarint32(w, nullValueTag);
        wire.writeVarint32(w, 0);
        return;
      }
      if (Array.isArray(json)) {
        wire.writeVarint32(w, listValueTag);
        const list = wire.fork(w);
        for (let i = 0; i < json.length; i++) {
          wire.writeVarint32(w, listItemTag);
          const item = wire.fork(w);
          writeValue(w, json[i]);
          wire.join(w, item);
        }
        wire.join(w, list);
        return;
      }
      wire.writeVarint32(w, structValueTag);
      const struct = wire.fork(w);
      writeStruct(w, json);
      wire.join(w, struct);
      return;
    }
    default:
      // undefined, bigint, a function...: not JSON; protobuf-es decides what they become.
      giveUp();
  }
}

/** Helpers the generated code calls, as `rt.name`. */
const runtime = {
  ...wire,
  giveUp,
  writeStruct,
  hasOwn: (o: object, key: string) => Object.hasOwn(o, key),
};

function compile(root: DescMessage): MessageEncoder {
  // Types not compiled are given up on wherever a field of theirs is set.
  const { order, index } = reachableMessages(root, (desc) => desc.file.edition === proto3 && !isUnwrapped(desc));
  const encoders: MessageEncoder[] = [];
  for (const desc of order) {
    encoders.push(new Function("rt", "E", messageSource(desc, index))(runtime, encoders) as MessageEncoder);
  }
  return encoders[0] ?? (() => runtime.giveUp());
}

function messageSource(desc: DescMessage, index: ReadonlyMap<DescMessage, number>): string {
  const fields = desc.fields.concat().sort((a, b) => a.number - b.number);
  const lines = fields.map((f) => {
    try {
      return fieldSource(f, index);
    } catch (e) {
      if (!(e instanceof Unsupported)) throw e;
      return `  if (${isSet(f)}) rt.giveUp();`;
    }
  });
  const oneofs = desc.oneofs.map((o) => `  if (m[${q(o.localName)}].case !== undefined) rt.giveUp();`);
  return `return function encode(w, m) {
  if (m.$typeName !== ${q(desc.typeName)}) rt.giveUp();
${oneofs.join("\n")}
${lines.join("\n")}
  if (m.$unknown !== undefined) rt.writeUnknown(w, m.$unknown);
};`;
}

/** Whether toBinary would write the field (for those the encoder gives up on). */
function isSet(f: DescField): string {
  const at = `m[${q(f.localName)}]`;
  switch (f.fieldKind) {
    case "list":
      return `${at}.length > 0`;
    case "map":
      return `Object.keys(${at}).length > 0`;
    default:
      return `${at} !== undefined`;
  }
}

function fieldSource(f: DescField, index: ReadonlyMap<DescMessage, number>): string {
  if (f.oneof !== undefined) throw new Unsupported(f.name);
  const at = `m[${q(f.localName)}]`;
  switch (f.fieldKind) {
    case "scalar":
    case "enum": {
      const type = f.fieldKind === "enum" ? ScalarType.INT32 : f.scalar;
      const write = `rt.writeVarint32(w, ${tagOf(f.number, wireTypeOf(type))}); ${writeCall(type, "v")};`;
      return `  { const v = ${at}; if (${presentCondition(f)}) { ${write} } }`;
    }
    case "message": {
      if (isStruct(f.message) && !f.delimitedEncoding) {
        return `  { const v = ${at}; if (v !== undefined && rt.hasOwn(m, ${q(f.localName)})) { rt.writeVarint32(w, ${tagOf(f.number, lengthDelimited)}); const start = rt.fork(w); rt.writeStruct(w, v); rt.join(w, start); } }`;
      }
      const child = index.get(f.message);
      if (child === undefined || f.delimitedEncoding || isUnwrapped(f.message)) throw new Unsupported(f.name);
      return `  { const v = ${at}; if (v !== undefined && rt.hasOwn(m, ${q(f.localName)})) { ${messageCall(f.number, child)} } }`;
    }
    case "list": {
      if (f.listKind === "message") {
        const child = index.get(f.message);
        if (child === undefined || f.delimitedEncoding || isUnwrapped(f.message)) throw new Unsupported(f.name);
        return `  { const v = ${at}; for (let i = 0; i < v.length; i++) { const item = v[i]; ${messageCall(f.number, child, "item")} } }`;
      }
      const type = f.listKind === "enum" ? ScalarType.INT32 : f.scalar;
      if (f.packed) {
        return `  { const v = ${at}; if (v.length > 0) { rt.writeVarint32(w, ${tagOf(f.number, lengthDelimited)}); const start = rt.fork(w); for (let i = 0; i < v.length; i++) ${writeCall(type, "v[i]")}; rt.join(w, start); } }`;
      }
      return `  { const v = ${at}; for (let i = 0; i < v.length; i++) { rt.writeVarint32(w, ${tagOf(f.number, wireTypeOf(type))}); ${writeCall(type, "v[i]")}; } }`;
    }
    case "map": {
      if (f.mapKey !== ScalarType.STRING || f.mapKind === "message") throw new Unsupported(f.name);
      const type = f.mapKind === "enum" ? ScalarType.INT32 : f.scalar;
      // Key (field 1) and value (field 2) are both always written, in Object.keys order.
      return `  { const v = ${at}; const keys = Object.keys(v); for (let i = 0; i < keys.length; i++) { const key = keys[i]; rt.writeVarint32(w, ${tagOf(f.number, lengthDelimited)}); const start = rt.fork(w); rt.writeVarint32(w, 10); rt.writeString(w, key); rt.writeVarint32(w, ${tagOf(2, wireTypeOf(type))}); ${writeCall(type, "v[key]")}; rt.join(w, start); } }`;
    }
  }
}

function messageCall(no: number, child: number, value = "v"): string {
  return `rt.writeVarint32(w, ${tagOf(no, lengthDelimited)}); const start = rt.fork(w); E[${child}](w, ${value}); rt.join(w, start);`;
}

/** toBinary's test of whether a singular scalar or enum field is written. */
function presentCondition(f: DescField & { fieldKind: "scalar" | "enum" }): string {
  if (f.presence !== implicitPresence) return `v !== undefined && rt.hasOwn(m, ${q(f.localName)})`;
  if (f.fieldKind === "enum") return `v !== ${f.enum.values[0]?.number ?? 0}`;
  switch (f.scalar) {
    case ScalarType.BOOL:
      return "v !== false";
    case ScalarType.STRING:
      return 'v !== ""';
    case ScalarType.BYTES:
      return "!(v instanceof Uint8Array) || v.byteLength > 0";
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return "!Object.is(v, 0)";
    default:
      // Loose comparison, as in protobuf-es: 0, 0n and "0" are all unset.
      return "v != 0";
  }
}

function writeCall(type: ScalarType, value: string): string {
  requireBigint(type);
  const name: Record<ScalarType, string> = {
    [ScalarType.DOUBLE]: "writeDouble",
    [ScalarType.FLOAT]: "writeFloat",
    [ScalarType.INT64]: "writeInt64",
    [ScalarType.UINT64]: "writeUint64",
    [ScalarType.INT32]: "writeInt32",
    [ScalarType.FIXED64]: "writeFixed64",
    [ScalarType.FIXED32]: "writeFixed32",
    [ScalarType.BOOL]: "writeBool",
    [ScalarType.STRING]: "writeString",
    [ScalarType.BYTES]: "writeBytes",
    [ScalarType.UINT32]: "writeUint32",
    [ScalarType.SFIXED32]: "writeSfixed32",
    [ScalarType.SFIXED64]: "writeSfixed64",
    [ScalarType.SINT32]: "writeSint32",
    [ScalarType.SINT64]: "writeSint64",
  };
  return `rt.${name[type]}(w, ${value})`;
}
