// A fast "is this message valid?" check compiled from the same protovalidate rules as the proto.
//
// protovalidate evaluates rules generically through reflection, building a field path for every
// field it visits; on the Admit hot path that is the largest single cost per call. Valid requests
// are the common case, so the rules of each message are compiled once into plain closures that only
// answer valid or not, allocating nothing. When they answer "not valid", protovalidate runs and
// reports the violations: it stays the one source of every message, rule id and path.
//
// Only the rules this schema uses are compiled. A message with any other rule (CEL, message or oneof
// rules, ignore, other types) gets no precheck, and protovalidate alone decides, as before. A test
// holds the two to the same answer over many generated requests.
import {
  type DescField,
  type DescMessage,
  getOption,
  hasOption,
  isFieldSet,
  type Message,
  ScalarType,
} from "@bufbuild/protobuf";
import {
  DoubleRulesSchema,
  type FieldRules,
  field as fieldRulesExt,
  Ignore,
  Int32RulesSchema,
  MapRulesSchema,
  message as messageRulesExt,
  oneof as oneofRulesExt,
  RepeatedRulesSchema,
  type StringRules,
  StringRulesSchema,
} from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

type Check = (value: unknown) => boolean;

/** Thrown inside compilation when a rule has no compiled form; the message then has no precheck. */
class Unsupported extends Error {}

const uuidPattern = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/**
 * Compiles a validity check for `desc`, or returns undefined when its rules need protovalidate.
 * `pattern` must match protovalidate's own regular-expression matcher.
 */
export function compilePrecheck(
  desc: DescMessage,
  pattern: (source: string) => (value: string) => boolean,
): ((message: Message) => boolean) | undefined {
  try {
    const check = compileMessage(desc, pattern, new Map());
    return check as (message: Message) => boolean;
  } catch (e) {
    if (e instanceof Unsupported) return undefined;
    throw e;
  }
}

function compileMessage(
  desc: DescMessage,
  pattern: (source: string) => (value: string) => boolean,
  seen: Map<DescMessage, Check>,
): Check {
  const known = seen.get(desc);
  if (known !== undefined) return known;
  if (hasOption(desc, messageRulesExt)) throw new Unsupported(desc.typeName);
  for (const o of desc.oneofs) if (hasOption(o, oneofRulesExt)) throw new Unsupported(o.name);

  const checks: Check[] = [];
  // Registered before the fields so that recursive types terminate.
  const self: Check = (m) => {
    for (const c of checks) if (!c(m)) return false;
    return true;
  };
  seen.set(desc, self);
  for (const field of desc.fields) {
    const check = compileField(field, pattern, seen);
    if (check !== undefined) checks.push(check);
  }
  return self;
}

/** Whether protovalidate treats the field as present when it holds this value. */
function hasPresence(field: DescField): boolean {
  return field.fieldKind === "message" || field.presence !== 2; /* IMPLICIT */
}

function compileField(
  field: DescField,
  pattern: (source: string) => (value: string) => boolean,
  seen: Map<DescMessage, Check>,
): Check | undefined {
  const name = field.localName;
  const rules: FieldRules | undefined = hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
  if (
    rules !== undefined &&
    (rules.cel.length > 0 || rules.celExpression.length > 0 || rules.ignore !== Ignore.UNSPECIFIED)
  ) {
    throw new Unsupported(field.name);
  }
  const required = rules?.required === true;
  // "required" on a field without presence means "not the zero value": not compiled.
  if (required && !hasPresence(field) && field.fieldKind !== "list" && field.fieldKind !== "map") unsupported(field);

  let valueCheck: Check | undefined;
  switch (field.fieldKind) {
    case "message": {
      const nested = field.message.typeName.startsWith("google.protobuf.")
        ? undefined
        : compileMessage(field.message, pattern, seen);
      valueCheck = rules?.type.case === undefined ? nested : unsupported(field);
      break;
    }
    case "scalar":
    case "enum":
      valueCheck = compileScalar(field, rules, pattern);
      break;
    case "list": {
      const r = rules?.type.case === "repeated" ? rules.type.value : undefined;
      if (rules?.type.case !== undefined && r === undefined) unsupported(field);
      if (r !== undefined) onlySet(r, RepeatedRulesSchema, ["maxItems", "minItems", "items"]);
      const item = r?.items === undefined ? undefined : compileItem(field, r.items, pattern);
      const max = r === undefined ? undefined : setNumber(r, RepeatedRulesSchema.field.maxItems);
      const min = r === undefined ? undefined : setNumber(r, RepeatedRulesSchema.field.minItems);
      const nested =
        field.listKind === "message" && !field.message.typeName.startsWith("google.protobuf.")
          ? compileMessage(field.message, pattern, seen)
          : undefined;
      if (max === undefined && min === undefined && item === undefined && nested === undefined) break;
      valueCheck = (v) => {
        const list = v as unknown[];
        if (max !== undefined && list.length > max) return false;
        if (min !== undefined && list.length < min) return false;
        for (const x of list)
          if ((item !== undefined && !item(x)) || (nested !== undefined && !nested(x))) return false;
        return true;
      };
      break;
    }
    case "map": {
      const r = rules?.type.case === "map" ? rules.type.value : undefined;
      if (rules?.type.case !== undefined && r === undefined) unsupported(field);
      if (r !== undefined) onlySet(r, MapRulesSchema, ["maxPairs", "minPairs", "keys", "values"]);
      if (field.mapKind === "message") unsupported(field);
      const key = r?.keys === undefined ? undefined : compileItem(field, r.keys, pattern, field.mapKey);
      const value = r?.values === undefined ? undefined : compileItem(field, r.values, pattern);
      const max = r === undefined ? undefined : setNumber(r, MapRulesSchema.field.maxPairs);
      const min = r === undefined ? undefined : setNumber(r, MapRulesSchema.field.minPairs);
      if (max === undefined && min === undefined && key === undefined && value === undefined) break;
      valueCheck = (v) => {
        const entries = Object.entries(v as Record<string, unknown>);
        if (max !== undefined && entries.length > max) return false;
        if (min !== undefined && entries.length < min) return false;
        for (const [k, x] of entries)
          if ((key !== undefined && !key(k)) || (value !== undefined && !value(x))) return false;
        return true;
      };
      break;
    }
  }

  const isList = field.fieldKind === "list";
  const isMap = field.fieldKind === "map";
  const presence = hasPresence(field);
  if (!required && valueCheck === undefined) return undefined;
  return (m) => {
    const v = (m as Record<string, unknown>)[name];
    const set = isList
      ? (v as unknown[]).length > 0
      : isMap
        ? Object.keys(v as object).length > 0
        : presence
          ? v !== undefined
          : true;
    if (!set) {
      if (required) return false;
      // Absent fields with presence are not evaluated; repeated and map rules still apply to empty.
      if (presence && !isList && !isMap) return true;
    }
    return valueCheck === undefined || valueCheck(v);
  };
}

function compileScalar(
  field: DescField,
  rules: FieldRules | undefined,
  pattern: (source: string) => (value: string) => boolean,
): Check | undefined {
  const t = rules?.type;
  if (t?.case === undefined) return undefined;
  return compileTyped(field, t, pattern);
}

/** Rules of list items, map keys and map values: the same typed rules, on each element. */
function compileItem(
  field: DescField,
  rules: FieldRules,
  pattern: (source: string) => (value: string) => boolean,
  keyType: ScalarType = ScalarType.STRING,
): Check | undefined {
  const plain = rules.cel.length === 0 && rules.celExpression.length === 0 && rules.ignore === Ignore.UNSPECIFIED;
  // Map keys other than strings arrive as strings in protobuf-es records: not compiled.
  if (!plain || rules.required || keyType !== ScalarType.STRING) unsupported(field);
  return rules.type.case === undefined ? undefined : compileTyped(field, rules.type, pattern);
}

function compileTyped(
  field: DescField,
  t: FieldRules["type"],
  pattern: (source: string) => (value: string) => boolean,
): Check | undefined {
  switch (t.case) {
    case "string":
      return compileString(t.value, pattern);
    case "int32": {
      const r = t.value;
      onlySet(r, Int32RulesSchema, ["greaterThan", "lessThan"]);
      return numeric(r.greaterThan, r.lessThan);
    }
    case "double": {
      const r = t.value;
      onlySet(r, DoubleRulesSchema, ["greaterThan", "lessThan", "finite"]);
      const range = numeric(r.greaterThan, r.lessThan);
      const finite = r.finite;
      return (v) => (!finite || Number.isFinite(v as number)) && (range === undefined || range(v));
    }
    default:
      return unsupported(field);
  }
}

function numeric(
  greater: { case: "gt" | "gte"; value: number } | { case: undefined; value?: undefined },
  less: { case: "lt" | "lte"; value: number } | { case: undefined; value?: undefined },
): Check | undefined {
  const g = greater.case;
  const gv = greater.value as number;
  const l = less.case;
  const lv = less.value as number;
  if (g === undefined && l === undefined) return undefined;
  // Comparisons with NaN are false, so NaN fails any bound, as in protovalidate.
  return (v) => {
    const n = v as number;
    if (g === "gt" && !(n > gv)) return false;
    if (g === "gte" && !(n >= gv)) return false;
    if (l === "lt" && !(n < lv)) return false;
    if (l === "lte" && !(n <= lv)) return false;
    return true;
  };
}

function compileString(r: StringRules, pattern: (source: string) => (value: string) => boolean): Check {
  onlySet(r, StringRulesSchema, ["minLen", "maxLen", "pattern", "in", "wellKnown"]);
  if (r.wellKnown.case !== undefined && r.wellKnown.case !== "uuid") throw new Unsupported(r.wellKnown.case);
  const uuid = r.wellKnown.case === "uuid" && r.wellKnown.value;
  const min = setNumber(r, StringRulesSchema.field.minLen);
  const max = setNumber(r, StringRulesSchema.field.maxLen);
  const matches = isFieldSet(r, StringRulesSchema.field.pattern) ? pattern(r.pattern) : undefined;
  const allowed = r.in.length > 0 ? new Set(r.in) : undefined;
  return (v) => {
    const s = v as string;
    // Lengths count code points, which lie between half the UTF-16 length and the UTF-16 length,
    // so most strings are judged without counting.
    if (max !== undefined && s.length > max && codepoints(s) > max) return false;
    if (min !== undefined && (s.length < min || (s.length < 2 * min && codepoints(s) < min))) return false;
    if (matches !== undefined && !matches(s)) return false;
    if (uuid && !uuidPattern.test(s)) return false;
    if (allowed !== undefined && !allowed.has(s)) return false;
    return true;
  };
}

/**
 * The value of an optional (proto2) rule field, or undefined when unset: such fields read as their
 * default (0) when unset, which must not be taken for a bound.
 */
function setNumber(rules: Message, field: DescField): number | undefined {
  return isFieldSet(rules, field) ? Number((rules as unknown as Record<string, bigint>)[field.localName]) : undefined;
}

function codepoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** Fails compilation when a rules message sets anything but the supported fields (or extensions). */
function onlySet(rules: Message, schema: DescMessage, supported: readonly string[]): void {
  if ((rules.$unknown?.length ?? 0) > 0) throw new Unsupported(`${schema.typeName} extensions`);
  for (const f of schema.fields) {
    const inSupportedOneof = f.oneof !== undefined && supported.includes(f.oneof.localName);
    if (!supported.includes(f.localName) && !inSupportedOneof && isFieldSet(rules, f)) {
      throw new Unsupported(`${schema.typeName}.${f.name}`);
    }
  }
}

function unsupported(field: DescField): never {
  throw new Unsupported(field.name);
}
