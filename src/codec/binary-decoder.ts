// A binary decoder compiled from a message descriptor, producing exactly what protobuf-es's
// fromBinary produces (same $typeName, defaults, presence, Struct as JSON, `$unknown`) for the
// common shapes of input, and `undefined` for anything else, so that the caller decodes those bytes
// with protobuf-es: errors and edge cases keep protobuf-es's semantics.
//
// Why generate code: protobuf-es reads every field through closures shared by all message types, so
// each property store is a megamorphic keyed store, and every tag read allocates. One function per
// message type, with its object literal and a switch over its tags, lets the engine give each store
// and each created object a single shape. The source is built only from the descriptor (field
// numbers, and names quoted with JSON.stringify), never from input.
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
import * as wire from "./wire-reader.js";

/** Decodes `bytes`, or returns undefined when protobuf-es must decode them instead. */
export type FastDecode<Desc extends DescMessage> = (bytes: Uint8Array) => MessageShape<Desc> | undefined;

/**
 * Compiles the fast decoder of `desc`, or returns undefined when the message (or one it contains)
 * uses a shape the compiler does not handle: proto2 or editions files, oneofs, closed enums, groups,
 * wrapper types, maps keyed by anything but strings or holding messages, lists of Structs.
 */
export function compileBinaryDecoder<Desc extends DescMessage>(desc: Desc): FastDecode<Desc> | undefined {
  if (!littleEndianHost) return undefined;
  let root: MessageDecoder;
  try {
    root = compile(desc);
  } catch (e) {
    if (e instanceof Unsupported) return undefined;
    throw e;
  }
  return (bytes) => {
    const st = wire.readState(bytes);
    try {
      return root(st, bytes.length, 1) as MessageShape<Desc>;
    } catch {
      // GiveUp, or anything unforeseen: either way protobuf-es has the last word.
      return undefined;
    }
  };
}

/** Reads one message whose bytes end at `end`, `depth` messages deep. */
type MessageDecoder = (st: wire.ReadState, end: number, depth: number) => object;

/** Helpers the generated code calls, as `rt.name`. */
const runtime = {
  ...wire,
  readStruct,
};

function compile(root: DescMessage): MessageDecoder {
  // Struct fields are read by readStruct, not by a decoder of their own.
  const { order, index } = reachableMessages(root, (desc) => !isStruct(desc));
  const decoders: MessageDecoder[] = [];
  for (const desc of order) {
    decoders.push(new Function("rt", "D", messageSource(desc, index))(runtime, decoders) as MessageDecoder);
  }
  const decoder = decoders[0];
  if (decoder === undefined) throw new Unsupported(root.typeName);
  return decoder;
}

function messageSource(desc: DescMessage, index: ReadonlyMap<DescMessage, number>): string {
  if (desc.file.edition !== proto3) throw new Unsupported(`${desc.typeName}: not proto3`);
  if (desc.oneofs.length > 0) throw new Unsupported(`${desc.typeName}: oneof`);
  // The object literal: what create() sets, in the same order (implicit-presence scalars and enums
  // at their zero value, lists and maps empty); other fields are added as they are read.
  const init: string[] = [`$typeName: ${q(desc.typeName)}`];
  for (const f of desc.fields) {
    const zero = initialValue(f);
    if (zero !== undefined) init.push(`${q(f.localName)}: ${zero}`);
  }
  const cases: string[] = [];
  for (const f of desc.fields) cases.push(...fieldCases(f, index));
  const known = desc.fields.map((f) => `no === ${f.number}`).join(" || ") || "false";
  return `return function decode(st, end, depth) {
  if (depth > rt.maxDepth) rt.giveUp();
  const m = { ${init.join(", ")} };
  let unknown;
  while (st.pos < end) {
    const tag = rt.readTag(st, end);
    switch (tag) {
${cases.join("\n")}
      default: {
        // A known field with another wire type means something else to protobuf-es.
        const no = tag >>> 3;
        if (${known}) rt.giveUp();
        (unknown ??= []).push(rt.readUnknown(st, end, tag));
      }
    }
  }
  if (unknown !== undefined) m.$unknown = unknown;
  return m;
};`;
}

function initialValue(f: DescField): string | undefined {
  switch (f.fieldKind) {
    case "list":
      return "[]";
    case "map":
      return "{}";
    case "message":
      return undefined;
    case "enum":
      if (f.getDefaultValue() !== undefined) throw new Unsupported(f.name);
      return f.presence === implicitPresence ? String(f.enum.values[0]?.number ?? 0) : undefined;
    case "scalar":
      if (f.getDefaultValue() !== undefined) throw new Unsupported(f.name);
      return f.presence === implicitPresence ? scalarZero(f.scalar, f.longAsString) : undefined;
  }
}

function scalarZero(type: ScalarType, longAsString: boolean): string {
  requireBigint(type);
  switch (type) {
    case ScalarType.STRING:
      return '""';
    case ScalarType.BOOL:
      return "false";
    case ScalarType.BYTES:
      return "new Uint8Array(0)";
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return longAsString ? '"0"' : "0n";
    default:
      return "0";
  }
}

/** The expression reading one value of `type` from `st`, bounded by the variable named `end`. */
function readExpression(type: ScalarType, strictUtf8: boolean, longAsString: boolean, end = "end"): string {
  requireBigint(type);
  const read = (() => {
    switch (type) {
      case ScalarType.STRING:
        return `rt.readString(st, ${end}, ${strictUtf8})`;
      case ScalarType.BYTES:
        return `rt.readBytes(st, ${end})`;
      case ScalarType.BOOL:
        return `rt.readBool(st, ${end})`;
      case ScalarType.DOUBLE:
        return `rt.readDouble(st, ${end})`;
      case ScalarType.FLOAT:
        return `rt.readFloat(st, ${end})`;
      case ScalarType.INT32:
        return `(rt.readVarint32(st, ${end}) | 0)`;
      case ScalarType.UINT32:
        return `rt.readVarint32(st, ${end})`;
      case ScalarType.SINT32:
        return `rt.zigzag32(rt.readVarint32(st, ${end}))`;
      case ScalarType.FIXED32:
        return `rt.readFixed32(st, ${end})`;
      case ScalarType.SFIXED32:
        return `rt.readSfixed32(st, ${end})`;
      case ScalarType.INT64:
        return `rt.readInt64(st, ${end})`;
      case ScalarType.UINT64:
        return `rt.readUint64(st, ${end})`;
      case ScalarType.SINT64:
        return `rt.readSint64(st, ${end})`;
      case ScalarType.FIXED64:
        return `rt.readFixed64(st, ${end})`;
      case ScalarType.SFIXED64:
        return `rt.readSfixed64(st, ${end})`;
    }
  })();
  return longAsString ? `String(${read})` : read;
}

/** The `case` clauses of one field: one per wire type protobuf-es reads it with. */
function fieldCases(f: DescField, index: ReadonlyMap<DescMessage, number>): string[] {
  const name = q(f.localName);
  const at = `m[${name}]`;
  switch (f.fieldKind) {
    case "scalar":
      return [
        `      case ${tagOf(f.number, wireTypeOf(f.scalar))}: ${at} = ${readExpression(f.scalar, f.utf8Validation, f.longAsString)}; break;`,
      ];
    case "enum":
      if (!f.enum.open) throw new Unsupported(`${f.name}: closed enum`);
      return [`      case ${tagOf(f.number, 0)}: ${at} = rt.readVarint32(st, end) | 0; break;`];
    case "message": {
      if (f.delimitedEncoding) throw new Unsupported(`${f.name}: group`);
      if (isUnwrapped(f.message) && !isStruct(f.message)) throw new Unsupported(`${f.name}: ${f.message.typeName}`);
      // A message field sent twice is merged by protobuf-es: rare, and left to it.
      const read = isStruct(f.message)
        ? "rt.readStruct(st, rt.readEnd(st, end), depth + 1)"
        : `D[${index.get(f.message)}](st, rt.readEnd(st, end), depth + 1)`;
      return [
        `      case ${tagOf(f.number, lengthDelimited)}: if (${at} !== undefined) rt.giveUp(); ${at} = ${read}; break;`,
      ];
    }
    case "list": {
      if (f.listKind === "message") {
        if (f.delimitedEncoding) throw new Unsupported(`${f.name}: group`);
        if (isUnwrapped(f.message)) throw new Unsupported(`${f.name}: list of ${f.message.typeName}`);
        return [
          `      case ${tagOf(f.number, lengthDelimited)}: ${at}.push(D[${index.get(f.message)}](st, rt.readEnd(st, end), depth + 1)); break;`,
        ];
      }
      if (f.listKind === "enum" && !f.enum.open) throw new Unsupported(`${f.name}: closed enum`);
      const type = f.listKind === "enum" ? ScalarType.INT32 : f.scalar;
      const longAsString = f.listKind === "scalar" && f.longAsString;
      const one = `      case ${tagOf(f.number, wireTypeOf(type))}: ${at}.push(${readExpression(type, f.utf8Validation, longAsString)}); break;`;
      if (type === ScalarType.STRING || type === ScalarType.BYTES) return [one];
      // Numbers may come packed (one length-delimited run) whatever the field's declared encoding.
      const packed = `      case ${tagOf(f.number, lengthDelimited)}: { const list = ${at}; const stop = rt.readEnd(st, end); while (st.pos < stop) list.push(${readExpression(type, false, longAsString, "stop")}); break; }`;
      return [one, packed];
    }
    case "map": {
      if (f.mapKey !== ScalarType.STRING) throw new Unsupported(`${f.name}: map key`);
      if (f.mapKind === "message") throw new Unsupported(`${f.name}: map of messages`);
      if (f.mapKind === "enum" && !f.enum.open) throw new Unsupported(`${f.name}: closed enum`);
      const valueType = f.mapKind === "enum" ? ScalarType.INT32 : f.scalar;
      const zero = f.mapKind === "enum" ? String(f.enum.values[0]?.number ?? 0) : scalarZero(valueType, false);
      // An entry is its key (field 1) and value (field 2), each at most once; a missing one takes
      // the zero value, as in protobuf-es. Anything else in an entry is left to protobuf-es.
      return [
        `      case ${tagOf(f.number, lengthDelimited)}: {
        const stop = rt.readEnd(st, end);
        let key = "";
        let value = ${zero};
        let seen = 0;
        while (st.pos < stop) {
          const t = rt.readTag(st, stop);
          if (t === 10 && (seen & 1) === 0) { key = rt.readString(st, stop, ${f.utf8Validation}); seen |= 1; }
          else if (t === ${tagOf(2, wireTypeOf(valueType))} && (seen & 2) === 0) { value = ${readExpression(valueType, f.utf8Validation, false, "stop")}; seen |= 2; }
          else rt.giveUp();
        }
        rt.setOwn(${at}, key, value);
        break;
      }`,
      ];
    }
  }
}

// --- google.protobuf.Struct, read straight into the JSON object protobuf-es gives a Struct field ---

/**
 * A Struct as a JSON object. protobuf-es decodes the Struct message and converts it; for canonical
 * bytes (each entry one key and at most one value, each Value at most one kind) the result is the
 * same, and anything else gives up.
 */
function readStruct(st: wire.ReadState, end: number, depth: number): Record<string, unknown> {
  if (depth > wire.maxDepth) wire.giveUp();
  const object: Record<string, unknown> = {};
  while (st.pos < end) {
    if (wire.readTag(st, end) !== 10) wire.giveUp();
    const stop = wire.readEnd(st, end);
    let key = "";
    let value: unknown = null;
    let seen = 0;
    while (st.pos < stop) {
      const tag = wire.readTag(st, stop);
      if (tag === 10 && (seen & 1) === 0) {
        key = wire.readString(st, stop, true);
        seen |= 1;
      } else if (tag === 18 && (seen & 2) === 0) {
        value = readValue(st, wire.readEnd(st, stop), depth + 1);
        seen |= 2;
      } else {
        wire.giveUp();
      }
    }
    wire.setOwn(object, key, value);
  }
  return object;
}

/** A google.protobuf.Value as JSON: an empty Value and any null_value are null. */
function readValue(st: wire.ReadState, end: number, depth: number): unknown {
  if (depth > wire.maxDepth) wire.giveUp();
  if (st.pos === end) return null;
  let value: unknown;
  switch (wire.readTag(st, end)) {
    case 8: // null_value
      wire.readVarint32(st, end);
      value = null;
      break;
    case 17: // number_value
      value = wire.readDouble(st, end);
      break;
    case 26: // string_value
      value = wire.readString(st, end, true);
      break;
    case 32: // bool_value
      value = wire.readBool(st, end);
      break;
    case 42: // struct_value
      value = readStruct(st, wire.readEnd(st, end), depth + 1);
      break;
    case 50: // list_value
      value = readList(st, wire.readEnd(st, end), depth + 1);
      break;
    default:
      wire.giveUp();
  }
  // A second kind in one Value would replace or merge into the first: left to protobuf-es.
  if (st.pos !== end) wire.giveUp();
  return value;
}

function readList(st: wire.ReadState, end: number, depth: number): unknown[] {
  if (depth > wire.maxDepth) wire.giveUp();
  const list: unknown[] = [];
  while (st.pos < end) {
    if (wire.readTag(st, end) !== 10) wire.giveUp();
    list.push(readValue(st, wire.readEnd(st, end), depth + 1));
  }
  return list;
}
