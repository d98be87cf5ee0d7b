// Decoding of untrusted request bytes, shared by every transport. It never throws: a body that
// cannot become the message yields a validation ErrorEnvelope whose violations name each offending
// JSON field, so a wrong type or an unknown field gets the same stable answer over gRPC, Connect and
// gRPC-Web. Decoding with protobuf-es alone would stop at the first problem with no field path.
import {
  create,
  type DescField,
  type DescMessage,
  fromBinary,
  fromJson,
  type JsonValue,
  type Message,
  type MessageShape,
  ScalarType,
} from "@bufbuild/protobuf";
import { compileBinaryDecoder, type FastDecode } from "../codec/binary-decoder.js";
import { invalidMessage } from "../core/admit.js";
import { negotiate, serverContractVersion } from "../core/contract-version.js";
import { createErrorEnvelope } from "../core/errors.js";
import { unsupportedVersion, violation } from "../core/validate.js";
import { type Warning, WarningSchema } from "../gen/envelope/v1/common_pb.js";
import type { ErrorEnvelope, FieldViolation } from "../gen/envelope/v1/error_pb.js";

export type Decoded<T> =
  | { readonly kind: "ok"; readonly message: T; readonly warnings: readonly Warning[] }
  | { readonly kind: "malformed"; readonly error: ErrorEnvelope };

/**
 * Decodes the protobuf binary format. Unknown fields are kept (forward compatibility) and warned about.
 * The compiled decoder reads the common shapes of input; whatever it leaves (malformed bytes
 * included) is decoded by protobuf-es, so both give one and the same answer.
 */
export function decodeBinary<Desc extends DescMessage>(
  schema: Desc,
  bytes: Uint8Array,
  maxBytes: number,
): Decoded<MessageShape<Desc>> {
  if (bytes.byteLength > maxBytes) return tooLarge(bytes.byteLength, maxBytes);
  let message = fastDecoder(schema)?.(bytes);
  if (message === undefined) {
    try {
      message = fromBinary(schema, bytes);
    } catch {
      return malformed("REQUEST_MALFORMED", [
        violation("", "wire.malformed", `the body is not a valid ${schema.typeName} in the protobuf binary format`),
      ]);
    }
  }
  const unknown: string[] = [];
  collectUnknownFields(schema, message, "", unknown);
  const warnings =
    unknown.length === 0
      ? []
      : [
          create(WarningSchema, {
            code: "UNKNOWN_FIELDS_IGNORED",
            field: unknown[0] ?? "",
            message: `fields unknown to contract ${serverContractVersion} were ignored at: ${unknown.map((p) => p || "(root)").join(", ")}`,
          }),
        ];
  return { kind: "ok", message, warnings };
}

/** Decodes the proto3 JSON mapping from bytes (or from an already parsed value). */
export function decodeJson<Desc extends DescMessage>(
  schema: Desc,
  body: Uint8Array | JsonValue,
  maxBytes: number,
): Decoded<MessageShape<Desc>> {
  let json: JsonValue;
  if (body instanceof Uint8Array) {
    if (body.byteLength > maxBytes) return tooLarge(body.byteLength, maxBytes);
    try {
      json = JSON.parse(new TextDecoder().decode(body)) as JsonValue;
    } catch {
      return malformed("REQUEST_MALFORMED", [violation("", "json.syntax", "the body is not valid JSON")]);
    }
  } else {
    json = body;
  }
  const violations: FieldViolation[] = [];
  checkMessage(schema, json, "", violations);
  if (violations.length === 0) {
    try {
      return { kind: "ok", message: fromJson(schema, json), warnings: [] };
    } catch (e) {
      // The shape check mirrors fromJson's rules; anything it lets through is reported at the root.
      violations.push(violation("", "json.invalid", e instanceof Error ? e.message : String(e)));
    }
  }
  const version = (json as { contractVersion?: unknown } | null)?.contractVersion;
  if (typeof version === "string" && negotiate(version).kind === "unsupported") {
    // A client of another major sends another shape; name the version, not the shape.
    return malformed("CONTRACT_VERSION_UNSUPPORTED", [unsupportedVersion(version)]);
  }
  return malformed("REQUEST_INVALID", violations);
}

// Compiled on first use per message type; null when the type has no compiled decoder.
const fastDecoders = new WeakMap<DescMessage, FastDecode<DescMessage> | null>();

function fastDecoder<Desc extends DescMessage>(schema: Desc): FastDecode<Desc> | undefined {
  let decode = fastDecoders.get(schema);
  if (decode === undefined) {
    decode = compileBinaryDecoder(schema) ?? null;
    fastDecoders.set(schema, decode);
  }
  return (decode ?? undefined) as FastDecode<Desc> | undefined;
}

function tooLarge(size: number, max: number): Decoded<never> {
  return malformed("REQUEST_TOO_LARGE", [violation("", "size.max", `the body is ${size} bytes; the limit is ${max}`)]);
}

function malformed(code: string, violations: FieldViolation[]): Decoded<never> {
  const message =
    code === "REQUEST_INVALID" ? invalidMessage(violations.length) : (violations[0]?.message ?? "invalid request");
  return {
    kind: "malformed",
    error: createErrorEnvelope(serverContractVersion, { category: "validation", code, message, violations }),
  };
}

function join(path: string, name: string): string {
  return path === "" ? name : `${path}.${name}`;
}

function collectUnknownFields(desc: DescMessage, message: Message, path: string, out: string[]): void {
  if ((message.$unknown?.length ?? 0) > 0) out.push(path);
  for (const field of nestedMessageFields(desc)) {
    const value = (message as unknown as Record<string, unknown>)[field.localName];
    if (value !== undefined) collectUnknownFields(field.message, value as Message, join(path, field.jsonName), out);
  }
}

type MessageField = DescField & { fieldKind: "message" };
const messageFieldsOf = new WeakMap<DescMessage, readonly MessageField[]>();

/** The singular message fields whose unknown fields are looked for (not the well-known types'). */
function nestedMessageFields(desc: DescMessage): readonly MessageField[] {
  let fields = messageFieldsOf.get(desc);
  if (fields === undefined) {
    fields = desc.fields.filter((f): f is MessageField => f.fieldKind === "message" && !isWellKnown(f.message));
    messageFieldsOf.set(desc, fields);
  }
  return fields;
}

function isWellKnown(desc: DescMessage): boolean {
  return desc.typeName.startsWith("google.protobuf.");
}

// --- The proto3 JSON shape check -------------------------------------------------------------

const fieldsByJsonKey = new WeakMap<DescMessage, Map<string, DescField>>();

function fieldIndex(desc: DescMessage): Map<string, DescField> {
  let index = fieldsByJsonKey.get(desc);
  if (index === undefined) {
    index = new Map();
    for (const f of desc.fields) {
      index.set(f.name, f);
      index.set(f.jsonName, f);
    }
    fieldsByJsonKey.set(desc, index);
  }
  return index;
}

function isObject(v: JsonValue): v is { [k: string]: JsonValue } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkMessage(desc: DescMessage, json: JsonValue, path: string, out: FieldViolation[]): void {
  if (checkWellKnown(desc, json, path, out)) return;
  if (!isObject(json)) {
    out.push(violation(path, "json.type", "must be a JSON object"));
    return;
  }
  const index = fieldIndex(desc);
  const seen = new Set<DescField>();
  for (const [key, value] of Object.entries(json)) {
    const field = index.get(key);
    const fieldPath = join(path, field?.jsonName ?? key);
    if (field === undefined) {
      out.push(violation(fieldPath, "json.unknown_field", `is not a field of ${desc.typeName}`));
      continue;
    }
    if (seen.has(field)) {
      out.push(
        violation(fieldPath, "json.duplicate_field", `is set twice (as "${field.jsonName}" and "${field.name}")`),
      );
    }
    seen.add(field);
    if (value !== null) checkField(field, value, fieldPath, out);
  }
}

function checkField(field: DescField, value: JsonValue, path: string, out: FieldViolation[]): void {
  switch (field.fieldKind) {
    case "list":
      if (!Array.isArray(value)) {
        out.push(violation(path, "json.type", "must be a JSON array"));
        return;
      }
      value.forEach((item, i) => {
        checkSingular(field.listKind, field, item, `${path}[${i}]`, out);
      });
      return;
    case "map":
      if (!isObject(value)) {
        out.push(violation(path, "json.type", "must be a JSON object"));
        return;
      }
      for (const [key, item] of Object.entries(value)) {
        const itemPath = `${path}[${JSON.stringify(key)}]`;
        if (field.mapKey !== ScalarType.STRING && scalarProblem(field.mapKey, key) !== undefined) {
          out.push(violation(itemPath, "json.map_key", `key ${scalarProblem(field.mapKey, key)}`));
        }
        checkSingular(field.mapKind, field, item, itemPath, out);
      }
      return;
    default:
      checkSingular(field.fieldKind, field, value, path, out);
  }
}

function checkSingular(
  kind: "scalar" | "enum" | "message",
  field: DescField,
  value: JsonValue,
  path: string,
  out: FieldViolation[],
): void {
  if (kind === "message" && field.message !== undefined) {
    if (value === null && field.message.typeName !== "google.protobuf.Value") return;
    checkMessage(field.message, value, path, out);
    return;
  }
  if (kind === "enum" && field.enum !== undefined) {
    const ok =
      (typeof value === "string" && field.enum.values.some((v) => v.name === value)) ||
      (typeof value === "number" && Number.isInteger(value));
    if (!ok) {
      const names = field.enum.values.map((v) => v.name).join(", ");
      out.push(violation(path, "json.enum", `must be one of ${names}`));
    }
    return;
  }
  if (field.scalar !== undefined) {
    const problem = scalarProblem(field.scalar, value);
    if (problem !== undefined) out.push(violation(path, "json.type", problem));
  }
}

const int32Range = { min: -2147483648, max: 2147483647 };
const uint32Range = { min: 0, max: 4294967295 };

/** Why `value` cannot be the JSON of a scalar of `type`, or undefined when it can. */
function scalarProblem(type: ScalarType, value: JsonValue): string | undefined {
  switch (type) {
    case ScalarType.STRING:
      return typeof value === "string" ? undefined : "must be a string";
    case ScalarType.BOOL:
      return typeof value === "boolean" ? undefined : "must be a boolean";
    case ScalarType.BYTES:
      return typeof value === "string" && /^[A-Za-z0-9+/_-]*={0,2}$/.test(value) ? undefined : "must be base64 text";
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT: {
      // NaN and the infinities travel as strings; a JSON number too large for a double is an error.
      if (typeof value === "string" && /^(NaN|-?Infinity)$/.test(value)) return undefined;
      const n =
        typeof value === "number" ? value : typeof value === "string" && isNumericText(value) ? Number(value) : NaN;
      const max = type === ScalarType.FLOAT ? 3.4028234663852886e38 : Number.MAX_VALUE;
      return Number.isFinite(n) && Math.abs(n) <= max ? undefined : "must be a finite number";
    }
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return integerProblem(value, int32Range, "a 32-bit integer");
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return integerProblem(value, uint32Range, "an unsigned 32-bit integer");
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return integerProblem(value, { min: 0, max: Number.POSITIVE_INFINITY }, "an unsigned 64-bit integer");
    default:
      return integerProblem(
        value,
        { min: Number.NEGATIVE_INFINITY, max: Number.POSITIVE_INFINITY },
        "a 64-bit integer",
      );
  }
}

/** A number written as a JSON string, as the proto3 JSON mapping allows: no spaces, no hex. */
function isNumericText(s: string): boolean {
  return /^-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(s);
}

function integerProblem(value: JsonValue, range: { min: number; max: number }, what: string): string | undefined {
  const n = typeof value === "number" ? value : typeof value === "string" && isNumericText(value) ? Number(value) : NaN;
  return Number.isInteger(n) && n >= range.min && n <= range.max ? undefined : `must be ${what}`;
}

// Timestamp's range is 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
const rfc3339 = /^(?!0000)\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

/** Checks the JSON forms of well-known types; returns false for ordinary messages. */
function checkWellKnown(desc: DescMessage, json: JsonValue, path: string, out: FieldViolation[]): boolean {
  switch (desc.typeName) {
    case "google.protobuf.Timestamp":
      if (typeof json !== "string" || !rfc3339.test(json) || Number.isNaN(Date.parse(json))) {
        out.push(violation(path, "json.timestamp", "must be an RFC 3339 date-time, e.g. 2026-06-21T15:32:17Z"));
      }
      return true;
    case "google.protobuf.Duration":
      if (typeof json !== "string" || !/^-?\d+(\.\d{1,9})?s$/.test(json)) {
        out.push(violation(path, "json.duration", 'must be a duration in seconds, e.g. "1.5s"'));
      }
      return true;
    case "google.protobuf.Struct":
      if (!isObject(json)) out.push(violation(path, "json.type", "must be a JSON object"));
      return true;
    case "google.protobuf.ListValue":
      if (!Array.isArray(json)) out.push(violation(path, "json.type", "must be a JSON array"));
      return true;
    case "google.protobuf.Value":
      return true;
    default:
      if (desc.typeName.startsWith("google.protobuf.") && desc.typeName.endsWith("Value")) {
        const inner = desc.fields[0];
        if (inner?.scalar !== undefined) {
          const problem = scalarProblem(inner.scalar, json);
          if (problem !== undefined) out.push(violation(path, "json.type", problem));
        }
        return true;
      }
      return false;
  }
}
