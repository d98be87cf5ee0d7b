// What the compiled decoder and encoder both need to know about descriptors while generating code.
import { type DescMessage, protoInt64, ScalarType } from "@bufbuild/protobuf";

/** Thrown during compilation for a shape the compiler does not handle. */
export class Unsupported extends Error {}

/** protobuf-es's Edition.EDITION_PROTO3: the only syntax compiled (no defaults, no prototypes). */
export const proto3 = 999;
/** FeatureSet.FieldPresence.IMPLICIT: the field is unset when it holds its zero value. */
export const implicitPresence = 2;

/** Floats are read and written as the host stores them, so only little-endian hosts compile. */
export const littleEndianHost = new Uint8Array(new Float64Array([-0]).buffer)[7] === 0x80;

/** A string as a JavaScript literal, for property names in generated code. */
export const quote = (s: string): string => JSON.stringify(s);

export function tagOf(no: number, wireType: number): number {
  return ((no << 3) | wireType) >>> 0;
}

export const lengthDelimited = 2;

export function wireTypeOf(type: ScalarType): number {
  switch (type) {
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return lengthDelimited;
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return 1;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return 5;
    default:
      return 0;
  }
}

/**
 * Refuses 64-bit integer types when protobuf-es holds them as strings (BUF_BIGINT_DISABLE=1): the
 * compiled code reads and writes bigints only.
 */
export function requireBigint(type: ScalarType): void {
  const is64 =
    type === ScalarType.INT64 ||
    type === ScalarType.UINT64 ||
    type === ScalarType.SINT64 ||
    type === ScalarType.FIXED64 ||
    type === ScalarType.SFIXED64;
  if (is64 && !protoInt64.supported) throw new Unsupported("64-bit integers as strings");
}

/**
 * Types protobuf-es holds as something other than the message in a field: wrappers (their scalar),
 * Struct (a JSON object); and Value and ListValue, which the compilers leave to protobuf-es too.
 */
export function isUnwrapped(desc: DescMessage): boolean {
  return desc.typeName.startsWith("google.protobuf.") && /(Value|Struct)$/.test(desc.typeName);
}

export function isStruct(desc: DescMessage): boolean {
  return desc.typeName === "google.protobuf.Struct";
}

/**
 * `root` and the message types reachable from it through message and list fields, as far as
 * `include` accepts them, numbered in the order visited: generated functions call each other by
 * these numbers, so recursive types need no special case.
 */
export function reachableMessages(
  root: DescMessage,
  include: (desc: DescMessage) => boolean,
): { readonly order: readonly DescMessage[]; readonly index: ReadonlyMap<DescMessage, number> } {
  const order: DescMessage[] = [];
  const index = new Map<DescMessage, number>();
  const visit = (desc: DescMessage) => {
    if (index.has(desc) || !include(desc)) return;
    index.set(desc, order.length);
    order.push(desc);
    for (const f of desc.fields) {
      if ((f.fieldKind === "message" || f.fieldKind === "list") && f.message !== undefined) visit(f.message);
    }
  };
  visit(root);
  return { order, index };
}
