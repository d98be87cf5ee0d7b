// A compiler from the common subset of parsed CEL to plain JS closures, tried before the planner.
//
// @bufbuild/cel's planner converts each variable to CEL values (the request through protobuf
// reflection, ints to bigint, maps to CelMap) and dispatches every operator through its overloads,
// which is most of what a bundle costs per Admit. The expressions rules are made of (field reads,
// comparisons, `in`, string tests, int arithmetic, exists/all) compile here to closures that read
// the plain PolicyValues instead: request fields by their protobuf-es localName, ints as safe
// integers.
//
// A closure never answers differently from the planner. It only ever produces a plain successful
// value; on anything unusual at run time (a missing map key, an int beyond the safe integers,
// division by zero, a requested amount that is not an integer) it answers DEFER and the caller runs
// the planned program for that evaluation, so errors and their messages always come from the
// planner (as src/codec/binary-encoder.ts leaves what it does not write to protobuf-es). Every
// supported expression has a static type, so a type mismatch, including CEL's heterogeneous
// int/double comparisons, is refused here: such an expression is not compiled at all, or, as an
// operand of && or ||, always defers, since the other operand alone may decide the result.
//
// The closures trust the TypeScript types of PolicyValues and of the protobuf-es request (a string
// field holds a string, a repeated field an array); what those types do not say is checked: a
// number that CEL reads as an int must be a safe integer (the planner's BigInt() throws on 1.5).
import type { parse } from "@bufbuild/cel";
import { type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { RuntimeRequestSchema } from "../gen/envelope/v1/runtime_request_pb.js";
import type { PolicyVars } from "./cel.js";

type Expr = ReturnType<typeof parse>["expr"];

/** The answer of a compiled expression that the planner must give instead. */
export const DEFER: unique symbol = Symbol("defer");

/** A compiled expression: a CEL value (bool, int as bigint, double, string), or DEFER. */
export type FastProgram = (vars: PolicyVars) => boolean | bigint | number | string | typeof DEFER;

/** The compiled form of `expr`, or undefined when it uses anything outside the supported subset. */
export function compileFast(expr: Expr): FastProgram | undefined {
  const node = compile(expr, new Map());
  if (node === undefined) return undefined;
  const { run } = node;
  switch (node.type) {
    case "bool":
    case "double":
    case "string":
      return run as FastProgram;
    case "int":
      return (vars) => {
        const v = run(vars);
        return v === DEFER ? DEFER : BigInt(v as number);
      };
    default:
      // A list, map or message: the planner answers with its own objects, which this does not build.
      return undefined;
  }
}

type Scalar = "bool" | "int" | "double" | "string";

/**
 * The static type of a compiled expression. Values at run time: bool, string and double as
 * themselves, int as a safe integer, list as an array, map<string, int> as a plain object (`own`:
 * a protobuf-es map field, whose keys are own properties; `enumerable`: requested.resources, whose
 * keys the planner takes from Object.entries), message as its protobuf-es object or undefined
 * (unset: every field reads as its default), record (requested, caller) as the PolicyValues object.
 */
type Type =
  | Scalar
  | { readonly kind: "list"; readonly of: Scalar }
  | { readonly kind: "map"; readonly keys: "own" | "enumerable" }
  | { readonly kind: "message"; readonly desc: DescMessage }
  | { readonly kind: "record"; readonly fields: ReadonlyMap<string, Field> };

type Run = (vars: PolicyVars) => unknown;

interface Node {
  readonly type: Type;
  readonly run: Run;
  /** Set on literals, so that a list of literals is built once. */
  readonly constant?: { readonly value: unknown };
}

/** A field of a message or a record: its type and how to read it from the (defined) parent. */
interface Field {
  readonly type: Type;
  readonly read: (parent: Readonly<Record<string, unknown>>) => unknown;
}

/** A comprehension variable: the loop stores each element in `value` before running the body. */
interface Local {
  readonly type: Scalar;
  value: unknown;
}

type Scope = ReadonlyMap<string, Local>;

/** Stands in for an unsupported operand of && and ||: the planner decides unless the other operand does. */
const alwaysDefer: Node = { type: "bool", run: () => DEFER };

const emptyList: readonly unknown[] = Object.freeze([]);
const emptyMap: Readonly<Record<string, unknown>> = Object.freeze({});
const hasOwn = (o: object, key: string) => Object.hasOwn(o, key);
const isEnumerable = (o: object, key: string) => Object.prototype.propertyIsEnumerable.call(o, key);
const int = (v: unknown) => (Number.isSafeInteger(v) ? v : DEFER);

const requestedFields = new Map<string, Field>([
  ["tokens", { type: "int", read: (r) => r.tokens }],
  ["costUsdMicros", { type: "int", read: (r) => r.costUsdMicros }],
  ["steps", { type: "int", read: (r) => r.steps }],
  ["resources", { type: { kind: "map", keys: "enumerable" }, read: (r) => r.resources }],
]);

// The planner's caller map: empty strings and an empty list when the listener does not authenticate.
const callerFields = new Map<string, Field>([
  ["principal", { type: "string", read: (c) => c.principal ?? "" }],
  ["subject", { type: "string", read: (c) => c.subject ?? "" }],
  ["scopes", { type: { kind: "list", of: "string" }, read: (c) => c.scopes }],
]);

const noCaller = Object.freeze({ principal: "", subject: "", scopes: emptyList });

const variables = new Map<string, Node>([
  ["kind", { type: "string", run: (vars) => vars.values.kind }],
  ["request", { type: { kind: "message", desc: RuntimeRequestSchema }, run: (vars) => vars.values.request }],
  // The planner converts every amount with BigInt() on first use of `requested`: one that is not an
  // integer makes any use of it an error, and one beyond the safe integers is an int this does not model.
  ["requested", { type: { kind: "record", fields: requestedFields }, run: (vars) => vars.safeRequested() ?? DEFER }],
  [
    "caller",
    {
      type: { kind: "record", fields: callerFields },
      run: (vars) => vars.values.caller ?? noCaller,
    },
  ],
]);

function compile(expr: Expr, scope: Scope): Node | undefined {
  const e = expr.exprKind;
  switch (e.case) {
    case "constExpr":
      return literal(e.value.constantKind);
    case "identExpr": {
      const local = scope.get(e.value.name);
      if (local !== undefined) return { type: local.type, run: () => local.value };
      return variables.get(e.value.name);
    }
    case "selectExpr": {
      if (e.value.testOnly || e.value.operand === undefined) return undefined; // has(): left to the planner
      const operand = compile(e.value.operand, scope);
      return operand === undefined ? undefined : member(operand, e.value.field);
    }
    case "listExpr": {
      if (e.value.optionalIndices.length > 0) return undefined;
      const elements = e.value.elements.map((x) => compile(x, scope));
      const first = elements[0];
      if (first === undefined || !isScalar(first.type)) return undefined; // also []: its element type is unknown
      const of = first.type;
      const runs: Run[] = [];
      for (const x of elements) {
        if (x === undefined || x.type !== of) return undefined;
        runs.push(x.run);
      }
      const type: Type = { kind: "list", of };
      if (elements.every((x) => x?.constant !== undefined)) {
        const value = Object.freeze(elements.map((x) => x?.constant?.value));
        return { type, run: () => value };
      }
      return {
        type,
        run: (vars) => {
          const out: unknown[] = [];
          for (const run of runs) {
            const v = run(vars);
            if (v === DEFER) return DEFER;
            out.push(v);
          }
          return out;
        },
      };
    }
    case "callExpr":
      return call(e.value.function, e.value.target, e.value.args, scope);
    case "comprehensionExpr":
      return comprehension(e.value, scope);
    default:
      return undefined; // struct and map literals
  }
}

function literal(c: Extract<Expr["exprKind"], { case: "constExpr" }>["value"]["constantKind"]): Node | undefined {
  let value: unknown;
  let type: Scalar;
  switch (c.case) {
    case "boolValue":
      [value, type] = [c.value, "bool"];
      break;
    case "stringValue":
      [value, type] = [c.value, "string"];
      break;
    case "doubleValue":
      [value, type] = [c.value, "double"];
      break;
    case "int64Value":
      // Ints are safe integers here; a larger literal leaves the expression to the planner.
      if (c.value > BigInt(Number.MAX_SAFE_INTEGER) || c.value < BigInt(Number.MIN_SAFE_INTEGER)) return undefined;
      [value, type] = [Number(c.value), "int"];
      break;
    default:
      return undefined; // uint, bytes, null
  }
  return { type, run: () => value, constant: { value } };
}

/** `operand.name`, also `operand["name"]`. */
function member(operand: Node, name: string): Node | undefined {
  const t = operand.type;
  if (typeof t === "string") return undefined;
  const run = operand.run;
  switch (t.kind) {
    case "message": {
      const field = messageField(t.desc, name);
      if (field === undefined) return undefined;
      const read = field.read;
      return {
        type: field.type,
        run: (vars) => {
          const m = run(vars);
          if (m === DEFER) return DEFER;
          return read((m ?? emptyMap) as Readonly<Record<string, unknown>>);
        },
      };
    }
    case "record": {
      const field = t.fields.get(name);
      if (field === undefined) return undefined;
      const read = field.read;
      return {
        type: field.type,
        run: (vars) => {
          const r = run(vars);
          return r === DEFER ? DEFER : read(r as Readonly<Record<string, unknown>>);
        },
      };
    }
    case "map":
      return mapGet(operand, { type: "string", run: () => name });
    case "list":
      return undefined;
  }
}

/** The value at `key` of a map<string, int>; a missing key is an error of the planner's. */
function mapGet(map: Node, key: Node): Node | undefined {
  if (key.type !== "string" || typeof map.type === "string" || map.type.kind !== "map") return undefined;
  const has = map.type.keys === "own" ? hasOwn : isEnumerable;
  const [runMap, runKey] = [map.run, key.run];
  return {
    type: "int",
    run: (vars) => {
      const m = runMap(vars);
      if (m === DEFER) return DEFER;
      const k = runKey(vars);
      if (k === DEFER) return DEFER;
      const o = m as Readonly<Record<string, unknown>>;
      return has(o, k as string) ? int(o[k as string]) : DEFER;
    },
  };
}

/**
 * A field of a protobuf message, read as @bufbuild/cel reads it through reflection (by proto name;
 * an unset scalar is its zero value, an unset message an empty one), or undefined for fields this
 * does not model: well-known types (Timestamp, Struct, ...), 64-bit and unsigned ints, bytes, enums
 * (RuntimeRequest has none), oneofs, lists of messages or ints, maps other than map<string, int32>.
 */
function messageField(desc: DescMessage, name: string): Field | undefined {
  const f = desc.fields.find((x) => x.name === name);
  if (f === undefined || f.oneof !== undefined) return undefined;
  const key = f.localName;
  switch (f.fieldKind) {
    case "scalar": {
      const type = scalarType(f.scalar);
      if (type === undefined) return undefined;
      const zero = zeroOf(type);
      return type === "int" ? { type, read: (m) => int(m[key] ?? zero) } : { type, read: (m) => m[key] ?? zero };
    }
    case "list": {
      const of = f.listKind === "scalar" ? scalarType(f.scalar) : undefined;
      // An int element would need a check on every read; RuntimeRequest has no such list.
      if (of === undefined || of === "int") return undefined;
      return { type: { kind: "list", of }, read: (m) => m[key] ?? emptyList };
    }
    case "map":
      if (f.mapKey !== ScalarType.STRING || f.mapKind !== "scalar" || scalarType(f.scalar) !== "int") return undefined;
      return { type: { kind: "map", keys: "own" }, read: (m) => m[key] ?? emptyMap };
    case "message":
      if (f.message.typeName.startsWith("google.protobuf.")) return undefined;
      return { type: { kind: "message", desc: f.message }, read: (m) => m[key] };
    case "enum":
      return undefined;
  }
}

/** The CEL type of a protobuf scalar that protobuf-es holds as a JS boolean, number or string. */
function scalarType(t: ScalarType): Scalar | undefined {
  switch (t) {
    case ScalarType.BOOL:
      return "bool";
    case ScalarType.STRING:
      return "string";
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return "double";
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return "int";
    default:
      return undefined;
  }
}

function zeroOf(t: Scalar): unknown {
  return t === "bool" ? false : t === "string" ? "" : 0;
}

function isScalar(t: Type): t is Scalar {
  return typeof t === "string";
}

function call(name: string, target: Expr | undefined, argExprs: readonly Expr[], scope: Scope): Node | undefined {
  // && and || compile even when an operand does not: the other one may decide.
  if (name === "_&&_" || name === "_||_") {
    if (target !== undefined) return undefined;
    const args = argExprs.map((a) => compile(a, scope));
    if (args.every((a) => a === undefined)) return undefined;
    const operands = args.map((a) => a ?? alwaysDefer);
    if (operands.some((a) => a.type !== "bool")) return undefined;
    return logical(
      name === "_&&_",
      operands.map((a) => a.run),
    );
  }
  const t = target === undefined ? undefined : compile(target, scope);
  if (target !== undefined && t === undefined) return undefined;
  const args: Node[] = [];
  for (const a of argExprs) {
    const n = compile(a, scope);
    if (n === undefined) return undefined;
    args.push(n);
  }
  if (t !== undefined) return method(name, t, args);
  const [a, b, c] = args;
  if (a === undefined) return undefined;
  if (args.length === 1) {
    switch (name) {
      case "!_":
        return a.type === "bool" ? unary(a, "bool", (x) => !x) : undefined;
      case "-_":
        // 0 - x rather than -x for ints: CEL has no negative zero int.
        if (a.type === "int") return unary(a, "int", (x) => 0 - (x as number));
        return a.type === "double" ? unary(a, "double", (x) => -(x as number)) : undefined;
      case "size":
        return size(a);
      default:
        return undefined;
    }
  }
  if (b === undefined) return undefined;
  if (args.length === 3) return name === "_?_:_" && c !== undefined ? conditional(a, b, c) : undefined;
  if (args.length !== 2) return undefined;
  switch (name) {
    case "_[_]": {
      // requested["tokens"] is requested.tokens; a key of a map may be computed.
      const key = b.constant?.value;
      if (typeof a.type !== "string" && a.type.kind === "record") {
        return typeof key === "string" ? member(a, key) : undefined;
      }
      return mapGet(a, b);
    }
    case "@in":
      return membership(a, b);
    case "_==_":
    case "_!=_":
      // Only values of one scalar type: === is CEL's equality for them (NaN is unequal to itself).
      if (!isScalar(a.type) || a.type !== b.type) return undefined;
      return name === "_==_" ? binary(a, b, "bool", (x, y) => x === y) : binary(a, b, "bool", (x, y) => x !== y);
    case "_<_":
    case "_<=_":
    case "_>_":
    case "_>=_":
      // The planner compares two bools, ints, doubles or strings with the same JS operators.
      if (!isScalar(a.type) || a.type !== b.type) return undefined;
      return binary(a, b, "bool", comparisons[name]);
    default:
      return a.type === b.type && isScalar(a.type) ? arithmetic(name, a.type, a, b) : undefined;
  }
}

type Compare = (x: unknown, y: unknown) => boolean;
// The operands are of one scalar type, so the casts only satisfy TypeScript.
const comparisons: Readonly<Record<"_<_" | "_<=_" | "_>_" | "_>=_", Compare>> = {
  "_<_": (x, y) => (x as number) < (y as number),
  "_<=_": (x, y) => (x as number) <= (y as number),
  "_>_": (x, y) => (x as number) > (y as number),
  "_>=_": (x, y) => (x as number) >= (y as number),
};

/**
 * CEL's && and || are commutative over errors: false && error is false whatever the order. So
 * the first decisive operand decides, and otherwise any deferred operand defers the whole.
 */
function logical(and: boolean, runs: readonly Run[]): Node {
  const decisive = !and;
  return {
    type: "bool",
    run: (vars) => {
      let deferred = false;
      for (const run of runs) {
        const v = run(vars);
        if (v === decisive) return decisive;
        if (v === DEFER) deferred = true;
      }
      return deferred ? DEFER : !decisive;
    },
  };
}

function conditional(cond: Node, then: Node, otherwise: Node): Node | undefined {
  if (cond.type !== "bool" || !sameType(then.type, otherwise.type)) return undefined;
  const [c, t, f] = [cond.run, then.run, otherwise.run];
  return {
    type: then.type,
    run: (vars) => {
      const v = c(vars);
      return v === DEFER ? DEFER : v ? t(vars) : f(vars);
    },
  };
}

function sameType(a: Type, b: Type): boolean {
  if (isScalar(a) || isScalar(b)) return a === b;
  return a.kind === "list" && b.kind === "list" && a.of === b.of;
}

function unary(a: Node, type: Type, f: (x: unknown) => unknown): Node {
  const run = a.run;
  return {
    type,
    run: (vars) => {
      const x = run(vars);
      return x === DEFER ? DEFER : f(x);
    },
  };
}

function binary(a: Node, b: Node, type: Type, f: (x: unknown, y: unknown) => unknown): Node {
  const [ra, rb] = [a.run, b.run];
  return {
    type,
    run: (vars) => {
      const x = ra(vars);
      if (x === DEFER) return DEFER;
      const y = rb(vars);
      return y === DEFER ? DEFER : f(x, y);
    },
  };
}

/**
 * + - * / % on two operands of one type. Int results beyond the safe integers defer (CEL's limit
 * is int64, and between the two the planner answers without error); so do / and % by zero.
 */
function arithmetic(name: string, type: Scalar, a: Node, b: Node): Node | undefined {
  if (type === "int") {
    const op = intOps[name];
    return op === undefined ? undefined : binary(a, b, "int", (x, y) => op(x as number, y as number));
  }
  if (type === "double") {
    const op = doubleOps[name];
    return op === undefined ? undefined : binary(a, b, "double", (x, y) => op(x as number, y as number));
  }
  if (type === "string" && name === "_+_") return binary(a, b, "string", (x, y) => (x as string) + (y as string));
  return undefined;
}

const intOps: Readonly<Record<string, (x: number, y: number) => unknown>> = {
  "_+_": (x, y) => int(x + y),
  "_-_": (x, y) => int(x - y),
  // A product beyond 2^53 is inexact but still not a safe integer, so the check holds.
  "_*_": (x, y) => int(x * y),
  // Truncating division, exactly: x - x % y is a multiple of y (% is exact on doubles). + 0 turns
  // a negative zero into the int 0.
  "_/_": (x, y) => (y === 0 ? DEFER : (x - (x % y)) / y + 0),
  "_%_": (x, y) => (y === 0 ? DEFER : (x % y) + 0),
};

const doubleOps: Readonly<Record<string, (x: number, y: number) => number>> = {
  "_+_": (x, y) => x + y,
  "_-_": (x, y) => x - y,
  "_*_": (x, y) => x * y,
  "_/_": (x, y) => x / y,
};

/** `x in list` (CEL equality, here ===) and `key in map`. */
function membership(value: Node, container: Node): Node | undefined {
  const t = container.type;
  if (typeof t === "string" || !isScalar(value.type)) return undefined;
  if (t.kind === "list" && t.of === value.type) {
    return binary(value, container, "bool", (x, list) => {
      for (const y of list as readonly unknown[]) if (y === x) return true;
      return false;
    });
  }
  if (t.kind === "map" && value.type === "string") {
    const has = t.keys === "own" ? hasOwn : isEnumerable;
    return binary(value, container, "bool", (key, map) => has(map as object, key as string));
  }
  return undefined;
}

/** size() of a string (in code points, as the planner counts), a list or a map. */
function size(a: Node): Node | undefined {
  const t = a.type;
  if (t === "string") {
    return unary(a, "int", (s) => {
      let n = 0;
      for (const _ of s as string) n++;
      return n;
    });
  }
  if (typeof t === "string") return undefined;
  if (t.kind === "list") return unary(a, "int", (list) => (list as readonly unknown[]).length);
  // Both kinds of map hold their entries as own enumerable string keys, which Object.keys lists.
  if (t.kind === "map") return unary(a, "int", (map) => Object.keys(map as object).length);
  return undefined;
}

function method(name: string, target: Node, args: readonly Node[]): Node | undefined {
  if (name === "size" && args.length === 0) return size(target);
  const [arg] = args;
  if (target.type !== "string" || args.length !== 1 || arg?.type !== "string") return undefined;
  switch (name) {
    case "startsWith":
      return binary(target, arg, "bool", (s, x) => (s as string).startsWith(x as string));
    case "endsWith":
      return binary(target, arg, "bool", (s, x) => (s as string).endsWith(x as string));
    case "contains":
      return binary(target, arg, "bool", (s, x) => (s as string).includes(x as string));
    default:
      return undefined;
  }
}

type Comprehension = Extract<Expr["exprKind"], { case: "comprehensionExpr" }>["value"];

/**
 * The exists and all macros, recognised by the shape the parser expands them to. Like && and ||
 * (which they fold with), the first decisive element decides whatever the others are, and
 * otherwise any deferred element defers the whole. Other comprehensions are left to the planner.
 */
function comprehension(c: Comprehension, scope: Scope): Node | undefined {
  const { accuVar, accuInit, loopCondition, loopStep, result, iterRange } = c;
  const init = accuInit?.exprKind.case === "constExpr" ? accuInit.exprKind.value.constantKind : undefined;
  const step = loopStep?.exprKind.case === "callExpr" ? loopStep.exprKind.value : undefined;
  if (init?.case !== "boolValue" || step === undefined || iterRange === undefined || c.iterVar2 !== "") {
    return undefined;
  }
  const all = init.value; // all starts true and folds with &&; exists starts false and folds with ||
  const isAccu = (x: Expr | undefined) => x?.exprKind.case === "identExpr" && x.exprKind.value.name === accuVar;
  const condArg = loopCondition?.exprKind.case === "callExpr" ? loopCondition.exprKind.value : undefined;
  const negated = condArg?.args[0]?.exprKind.case === "callExpr" ? condArg.args[0].exprKind.value : undefined;
  const shaped =
    isAccu(result) &&
    condArg?.function === "@not_strictly_false" &&
    condArg.args.length === 1 &&
    (all ? isAccu(condArg.args[0]) : negated?.function === "!_" && isAccu(negated.args[0])) &&
    step.function === (all ? "_&&_" : "_||_") &&
    step.target === undefined &&
    step.args.length === 2 &&
    isAccu(step.args[0]);
  const predicate = step.args[1];
  if (!shaped || predicate === undefined) return undefined;

  const range = compile(iterRange, scope);
  if (range === undefined || typeof range.type === "string") return undefined;
  const rt = range.type;
  if (rt.kind !== "list" && rt.kind !== "map") return undefined;
  // Over a map, the elements are its keys; the order does not matter, as said above.
  const local: Local = { type: rt.kind === "list" ? rt.of : "string", value: undefined };
  const inner = new Map(scope).set(c.iterVar, local);
  const body = compile(predicate, inner);
  if (body === undefined || body.type !== "bool") return undefined;
  const [runRange, runBody, isMap] = [range.run, body.run, rt.kind === "map"];
  const decisive = !all;
  return {
    type: "bool",
    run: (vars) => {
      const r = runRange(vars);
      if (r === DEFER) return DEFER;
      const elements = isMap ? Object.keys(r as object) : (r as readonly unknown[]);
      let deferred = false;
      for (const x of elements) {
        local.value = x;
        const v = runBody(vars);
        if (v === decisive) return decisive;
        if (v === DEFER) deferred = true;
      }
      return deferred ? DEFER : !decisive;
    },
  };
}
