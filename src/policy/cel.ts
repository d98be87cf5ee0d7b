// The CEL environment of policy rules and a static check of each expression against it. @bufbuild/cel
// 0.6 parses and plans but has no public type checker (its internal one does not handle calls yet),
// so an unknown variable, field or function would otherwise surface only when a request reaches the
// rule. This check walks the parsed expression once, at load: every identifier must be declared,
// every field selected from `request` must exist in the RuntimeRequest schema (and every key of
// `requested` and `caller` in their documented shapes), every function must exist, and the result
// must be able to be of the type the rule needs. What it cannot know (values inside task.input, a
// Struct) is checked at evaluation, where an error fails closed.
//
// Each expression is also compiled to plain closures when it stays within a common subset
// (compile.ts); a program runs those first and the planned expression whenever they defer.
import { type CelResult, CelScalar, celEnv, celList, celMap, mapType, objectType, parse, plan } from "@bufbuild/cel";
import { strings } from "@bufbuild/cel/ext";
import { createRegistry, type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { reflect } from "@bufbuild/protobuf/reflect";
import {
  file_envelope_v1_runtime_request,
  type RuntimeRequest,
  RuntimeRequestSchema,
} from "../gen/envelope/v1/runtime_request_pb.js";
import { compileFast, DEFER } from "./compile.js";

/** The variables every rule may use; the documentation (README "Policy") describes each. */
export const policyVariables = Object.freeze({
  request: objectType(RuntimeRequestSchema),
  kind: CelScalar.STRING,
  requested: mapType(CelScalar.STRING, CelScalar.DYN),
  caller: mapType(CelScalar.STRING, CelScalar.DYN),
});

/** One environment for the process: the standard library, the strings extension, the contract's types. */
export const policyEnv = celEnv({
  registry: createRegistry(file_envelope_v1_runtime_request),
  funcs: strings,
  variables: policyVariables,
});

/** The values of the variables of one evaluation. */
export interface PolicyValues {
  /** The normalized request. */
  readonly request: RuntimeRequest;
  /** The execution kind in lower snake case, e.g. "deploy_model". */
  readonly kind: string;
  /** The request's amounts in accounting units (cost in micro-dollars). */
  readonly requested: {
    readonly tokens: number;
    readonly costUsdMicros: number;
    readonly steps: number;
    readonly resources: Readonly<Record<string, number>>;
  };
  /** The authenticated caller; undefined on a listener that does not authenticate. */
  readonly caller:
    | { readonly principal: string; readonly subject: string; readonly scopes: readonly string[] }
    | undefined;
}

/** A compiled expression: call it with the variables of one evaluation. */
export type Program = (vars: PolicyVars) => CelResult;

type Planned = ReturnType<typeof plan<typeof policyVariables>>;
type Bindings = Parameters<Planned>[0];

/**
 * The variables of one evaluation, shared by every rule of a bundle: the plain values, which
 * compiled expressions read, and the planner's bindings, built only when a planned expression runs.
 */
export class PolicyVars {
  private bindings: PolicyBindings | undefined;
  private requestedIsSafe: boolean | undefined;

  constructor(readonly values: PolicyValues) {}

  /** What the planner is called with. */
  get cel(): Bindings {
    this.bindings ??= new PolicyBindings(this.values);
    return this.bindings;
  }

  /** `requested`, when each of its amounts is a safe integer; compiled expressions defer otherwise. */
  safeRequested(): PolicyValues["requested"] | undefined {
    const r = this.values.requested;
    this.requestedIsSafe ??=
      Number.isSafeInteger(r.tokens) &&
      Number.isSafeInteger(r.costUsdMicros) &&
      Number.isSafeInteger(r.steps) &&
      Object.values(r.resources).every((v) => Number.isSafeInteger(v));
    return this.requestedIsSafe ? r : undefined;
  }
}

/**
 * The planner's variables. Each is converted for CEL once, when a rule first reads it, and shared
 * by every rule of the bundle: the request as a protobuf message (no copy), the maps built on demand.
 */
class PolicyBindings {
  private reflected: ReturnType<typeof reflect> | undefined;
  private requestedMap: ReturnType<typeof celMap> | undefined;
  private callerMap: ReturnType<typeof celMap> | undefined;
  readonly kind: string;

  constructor(private readonly input: PolicyValues) {
    this.kind = input.kind;
  }

  get request(): ReturnType<typeof reflect> {
    this.reflected ??= reflect(RuntimeRequestSchema, this.input.request);
    return this.reflected;
  }

  get requested(): ReturnType<typeof celMap> {
    const r = this.input.requested;
    this.requestedMap ??= celMap(
      new Map<string, bigint | ReturnType<typeof celMap>>([
        ["tokens", BigInt(r.tokens)],
        ["costUsdMicros", BigInt(r.costUsdMicros)],
        ["steps", BigInt(r.steps)],
        ["resources", celMap(new Map(Object.entries(r.resources).map(([k, v]) => [k, BigInt(v)])))],
      ]),
    );
    return this.requestedMap;
  }

  get caller(): ReturnType<typeof celMap> {
    const c = this.input.caller;
    this.callerMap ??= celMap(
      new Map<string, string | ReturnType<typeof celList>>([
        ["principal", c?.principal ?? ""],
        ["subject", c?.subject ?? ""],
        ["scopes", celList(c === undefined ? [] : [...c.scopes])],
      ]),
    );
    return this.callerMap;
  }
}

/** The result type a rule needs of an expression. */
export type Want = "bool" | "int";

export type Compiled =
  | { readonly kind: "ok"; readonly program: Program }
  | { readonly kind: "error"; readonly problem: string };

/** Parses, checks and plans one expression; `want` is the type its result must be able to have. */
export function compileExpression(source: string, want: Want): Compiled {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(source);
  } catch (e) {
    return { kind: "error", problem: `syntax error ${(e as Error).message.replace(/^<input>:/, "at ")}` };
  }
  const problems: string[] = [];
  const type = infer(parsed.expr, new Map(), problems);
  if (problems.length > 0) return { kind: "error", problem: problems.join("; ") };
  if (!mayBe(type, want)) {
    return {
      kind: "error",
      problem: `must be a${want === "int" ? "n" : ""} ${want} expression; this one is ${describe(type)}`,
    };
  }
  let planned: Planned;
  try {
    planned = plan(policyEnv, parsed);
  } catch (e) {
    return { kind: "error", problem: (e as Error).message };
  }
  const fast = compileFast(parsed.expr);
  if (fast === undefined) return { kind: "ok", program: (vars) => planned(vars.cel) };
  return {
    kind: "ok",
    program: (vars) => {
      let result: ReturnType<typeof fast>;
      try {
        result = fast(vars);
      } catch {
        // Nothing in the compiled closures should throw; if anything does, the planner decides.
        result = DEFER;
      }
      return result === DEFER ? planned(vars.cel) : result;
    },
  };
}

type Expr = ReturnType<typeof parse>["expr"];

/**
 * What an expression may evaluate to: a set of CEL type names, "dyn" when anything is possible.
 * `record` is a map whose keys are known (requested, caller); `message` carries its schema.
 */
type Inferred =
  | { readonly kind: "dyn" }
  | { readonly kind: "one-of"; readonly names: readonly string[] }
  | { readonly kind: "message"; readonly desc: DescMessage }
  | { readonly kind: "record"; readonly name: string; readonly keys: ReadonlyMap<string, Inferred> };

const dyn: Inferred = { kind: "dyn" };
const scalar = (name: string): Inferred => ({ kind: "one-of", names: [name] });
const bool = scalar("bool");
const int = scalar("int");
const string = scalar("string");
const list = scalar("list");
const map = scalar("map");

const variableTypes: ReadonlyMap<string, Inferred> = new Map<string, Inferred>([
  ["request", { kind: "message", desc: RuntimeRequestSchema }],
  ["kind", string],
  [
    "requested",
    {
      kind: "record",
      name: "requested",
      keys: new Map([
        ["tokens", int],
        ["costUsdMicros", int],
        ["steps", int],
        ["resources", map],
      ]),
    },
  ],
  [
    "caller",
    {
      kind: "record",
      name: "caller",
      keys: new Map([
        ["principal", string],
        ["subject", string],
        ["scopes", list],
      ]),
    },
  ],
]);

/** Type names usable as values, e.g. in `type(x) == string`. */
const typeNames = new Set([
  "bool",
  "int",
  "uint",
  "double",
  "string",
  "bytes",
  "list",
  "map",
  "null_type",
  "type",
  "dyn",
]);

function mayBe(type: Inferred, want: Want): boolean {
  return type.kind === "dyn" || (type.kind === "one-of" && type.names.some((n) => n === want || n === "dyn"));
}

function describe(type: Inferred): string {
  switch (type.kind) {
    case "dyn":
      return "dyn";
    case "one-of":
      return type.names.length === 1 ? `a ${type.names[0]}` : `one of ${type.names.join(", ")}`;
    case "message":
      return `a ${type.desc.typeName} message`;
    case "record":
      return "a map";
  }
}

/** The inferred type of `expr`, adding a problem for each unknown name; `scope` holds comprehension variables. */
function infer(expr: Expr, scope: ReadonlyMap<string, Inferred>, problems: string[]): Inferred {
  const e = expr.exprKind;
  switch (e.case) {
    case "constExpr":
      return constType(e.value.constantKind.case);
    case "identExpr": {
      const name = e.value.name;
      const known = scope.get(name) ?? variableTypes.get(name);
      if (known !== undefined) return known;
      if (typeNames.has(name)) return scalar("type");
      problems.push(`unknown variable "${name}" (variables: ${[...variableTypes.keys()].join(", ")})`);
      return dyn;
    }
    case "selectExpr": {
      const operand = e.value.operand;
      if (operand === undefined) return dyn;
      const field = select(infer(operand, scope, problems), e.value.field, problems, () => path(operand));
      return e.value.testOnly ? bool : field;
    }
    case "callExpr": {
      const { function: name, args } = e.value;
      const target = e.value.target === undefined ? undefined : infer(e.value.target, scope, problems);
      const argTypes = args.map((a) => infer(a, scope, problems));
      return callType(name, target, argTypes, problems);
    }
    case "listExpr":
      for (const element of e.value.elements) infer(element, scope, problems);
      return list;
    case "structExpr":
      for (const entry of e.value.entries) {
        if (entry.keyKind.case === "mapKey") infer(entry.keyKind.value, scope, problems);
        if (entry.value !== undefined) infer(entry.value, scope, problems);
      }
      return e.value.messageName === "" ? map : dyn;
    case "comprehensionExpr": {
      const c = e.value;
      if (c.iterRange !== undefined) infer(c.iterRange, scope, problems);
      const accu = c.accuInit === undefined ? dyn : infer(c.accuInit, scope, problems);
      const inner = new Map(scope);
      inner.set(c.iterVar, dyn);
      if (c.iterVar2 !== "") inner.set(c.iterVar2, dyn);
      inner.set(c.accuVar, accu);
      if (c.loopCondition !== undefined) infer(c.loopCondition, inner, problems);
      if (c.loopStep !== undefined) infer(c.loopStep, inner, problems);
      const outer = new Map(scope);
      outer.set(c.accuVar, accu);
      return c.result === undefined ? dyn : infer(c.result, outer, problems);
    }
    default:
      problems.push("an expression of an unknown kind");
      return dyn;
  }
}

function constType(kind: string | undefined): Inferred {
  switch (kind) {
    case "boolValue":
      return bool;
    case "int64Value":
      return int;
    case "uint64Value":
      return scalar("uint");
    case "doubleValue":
      return scalar("double");
    case "stringValue":
      return string;
    case "bytesValue":
      return scalar("bytes");
    case "nullValue":
      return scalar("null_type");
    default:
      return dyn;
  }
}

/** The type of `operand.field`, with a problem when the operand's shape is known not to have it. */
function select(operand: Inferred, field: string, problems: string[], where: () => string): Inferred {
  switch (operand.kind) {
    case "message": {
      const f = operand.desc.fields.find((x) => x.name === field);
      if (f === undefined) {
        problems.push(
          `${where()} has no field "${field}" (${operand.desc.name} fields, by their proto names: ${operand.desc.fields.map((x) => x.name).join(", ")})`,
        );
        return dyn;
      }
      return fieldType(f);
    }
    case "record": {
      const t = operand.keys.get(field);
      if (t === undefined) {
        problems.push(`${operand.name} has no key "${field}" (keys: ${[...operand.keys.keys()].join(", ")})`);
        return dyn;
      }
      return t;
    }
    case "one-of":
      if (operand.names.every((n) => n !== "map" && n !== "dyn")) {
        problems.push(`${where()} is ${describe(operand)}, which has no field "${field}"`);
      }
      return dyn;
    case "dyn":
      return dyn;
  }
}

/** How CEL sees a protobuf field: lists, maps, well-known types as their CEL values. */
function fieldType(field: DescField): Inferred {
  switch (field.fieldKind) {
    case "list":
      return list;
    case "map":
      return map;
    case "enum":
      return int;
    case "scalar":
      return scalarFieldType(field.scalar);
    case "message":
      switch (field.message.typeName) {
        case "google.protobuf.Timestamp":
          return scalar("google.protobuf.Timestamp");
        case "google.protobuf.Duration":
          return scalar("google.protobuf.Duration");
        case "google.protobuf.Struct":
          return map;
        case "google.protobuf.ListValue":
          return list;
        case "google.protobuf.Value":
          return dyn;
        default:
          return { kind: "message", desc: field.message };
      }
  }
}

function scalarFieldType(type: ScalarType): Inferred {
  switch (type) {
    case ScalarType.BOOL:
      return bool;
    case ScalarType.STRING:
      return string;
    case ScalarType.BYTES:
      return scalar("bytes");
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return scalar("double");
    case ScalarType.UINT32:
    case ScalarType.UINT64:
    case ScalarType.FIXED32:
    case ScalarType.FIXED64:
      return scalar("uint");
    default:
      return int;
  }
}

/** Operators the planner implements itself rather than as library functions. */
const builtinCalls: Readonly<Record<string, (args: readonly Inferred[]) => Inferred>> = {
  "_&&_": () => bool,
  "_||_": () => bool,
  "!_": () => bool,
  "@not_strictly_false": () => bool,
  "_?_:_": ([, a, b]) => union(a ?? dyn, b ?? dyn),
  "_[_]": () => dyn,
  "_[?_]": () => dyn,
  "_?._": () => dyn,
};

function callType(name: string, target: Inferred | undefined, args: readonly Inferred[], problems: string[]): Inferred {
  const builtin = builtinCalls[name];
  if (builtin !== undefined) return builtin(target === undefined ? args : [target, ...args]);
  const group = policyEnv.funcs.find(name);
  if (group === undefined) {
    problems.push(`unknown function "${name}"`);
    return dyn;
  }
  const results = new Set<string>();
  for (const overload of group) results.add(String(overload.result));
  // Library results name their parameters ("list(dyn)"): the family is what a rule can rely on.
  const names = [...results].map((r) => r.replace(/\(.*$/, ""));
  return names.includes("dyn") ? dyn : { kind: "one-of", names: [...new Set(names)] };
}

function union(a: Inferred, b: Inferred): Inferred {
  if (a.kind !== "one-of" || b.kind !== "one-of") return a === b ? a : dyn;
  return { kind: "one-of", names: [...new Set([...a.names, ...b.names])] };
}

/** The source-like path of a select chain, for messages: "request.budget". */
function path(expr: Expr): string {
  const e = expr.exprKind;
  if (e.case === "identExpr") return e.value.name;
  if (e.case === "selectExpr" && e.value.operand !== undefined) return `${path(e.value.operand)}.${e.value.field}`;
  return "the value";
}
