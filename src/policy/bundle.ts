// Policy bundles: a versioned list of rules in YAML or JSON, in the style of Kubernetes'
// ValidatingAdmissionPolicy. Parsing compiles every expression once; a bundle with any problem is
// refused as a whole, with every problem named, so that a bundle in force is always complete.
import { parseDocument } from "yaml";
import { compileExpression, type Program } from "./cel.js";

/** What a rule does when it fires. */
export type PolicyEffect = "deny" | "warn" | "require_approval" | "cap";

/** The grant dimensions a cap rule may lower, in the envelope's field names. */
export type CapDimension = "tokens" | "costUsdMicros" | "steps" | `resources.${string}`;

export interface PolicyRule {
  readonly name: string;
  readonly effect: PolicyEffect;
  readonly message: string;
  /** Whether the rule applies; undefined: always. */
  readonly match: Program | undefined;
  /** deny, warn, require_approval: what must hold; the effect applies when it evaluates to false. */
  readonly expression: Program | undefined;
  /** cap: the dimension and its highest grant, applied when the rule matches. */
  readonly cap: { readonly dimension: CapDimension; readonly value: Program } | undefined;
}

/** A compiled bundle: immutable, safe to share between calls and to replace as a whole. */
export interface PolicyBundle {
  /** Recorded as policyVersion in every policy decision made with this bundle. */
  readonly version: string;
  readonly rules: readonly PolicyRule[];
}

export type PolicyBundleResult =
  | { readonly kind: "ok"; readonly bundle: PolicyBundle }
  | { readonly kind: "invalid"; readonly problems: readonly string[] };

/** Limits on a bundle, so that an oversized one is refused with a clear message rather than loaded. */
export const policyLimits = Object.freeze({
  /** Bytes of the bundle file. */
  maxBundleBytes: 1024 * 1024,
  maxRules: 1000,
  /** Characters of one CEL expression (match, expression, cap.value). */
  maxExpressionChars: 4096,
  maxMessageChars: 1024,
  maxVersionChars: 128,
});

const ruleName = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const resourceName = /^[a-z][a-z0-9_.-]{0,63}$/;
const effects: readonly PolicyEffect[] = ["deny", "warn", "require_approval", "cap"];
const ruleKeys = new Set(["name", "effect", "message", "match", "expression", "cap"]);

/** Parses and compiles a bundle from its text (YAML, or JSON, which YAML includes). */
export function parsePolicyBundle(text: string): PolicyBundleResult {
  const bytes = Buffer.byteLength(text);
  if (bytes > policyLimits.maxBundleBytes) return invalid([oversized(bytes)]);
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0)
    return invalid(doc.errors.map((e) => `not valid YAML or JSON: ${e.message.split("\n")[0]}`));
  const root: unknown = doc.toJS({ maxAliasCount: 100 });
  if (!isObject(root)) return invalid(["the bundle must be a mapping with keys version and rules"]);

  const problems: string[] = [];
  for (const key of Object.keys(root)) {
    if (key !== "version" && key !== "rules") problems.push(`unknown key "${key}" (keys: version, rules)`);
  }
  const version = root.version;
  if (typeof version !== "string" || version.trim() === "") {
    problems.push(
      typeof version === "number"
        ? `version: must be a string; quote it ("${version}")`
        : "version: required, a non-empty string (recorded as policyVersion in every decision)",
    );
  } else if (version.length > policyLimits.maxVersionChars) {
    problems.push(`version: at most ${policyLimits.maxVersionChars} characters`);
  }
  const items = root.rules;
  if (!Array.isArray(items)) {
    problems.push("rules: required, a list of rules (it may be empty)");
    return invalid(problems);
  }
  if (items.length > policyLimits.maxRules) {
    problems.push(`rules: ${items.length} rules; a bundle holds at most ${policyLimits.maxRules}`);
    return invalid(problems);
  }
  const rules: PolicyRule[] = [];
  const seen = new Map<string, number>();
  items.forEach((item, index) => {
    const name = isObject(item) && typeof item.name === "string" ? item.name : undefined;
    const first = name === undefined ? undefined : seen.get(name);
    if (first !== undefined) {
      problems.push(`rules[${index}] (${name}): duplicate name; rules[${first}] has it already`);
      return;
    }
    if (name !== undefined) seen.set(name, index);
    const rule = compileRule(item, index, problems);
    if (rule !== undefined) rules.push(rule);
  });
  if (problems.length > 0) return invalid(problems);
  return { kind: "ok", bundle: Object.freeze({ version: version as string, rules: Object.freeze(rules) }) };
}

/** The refusal of a bundle over the size limit. */
export function oversized(bytes: number): string {
  return `the bundle is ${bytes} bytes; at most ${policyLimits.maxBundleBytes} bytes (1 MiB) are accepted`;
}

function compileRule(item: unknown, index: number, problems: string[]): PolicyRule | undefined {
  const at = (name: unknown) => `rules[${index}]${typeof name === "string" && name !== "" ? ` (${name})` : ""}`;
  if (!isObject(item)) {
    problems.push(`${at(undefined)}: must be a mapping with name, effect, message and expression or cap`);
    return undefined;
  }
  const where = at(item.name);
  const before = problems.length;
  const problem = (text: string) => problems.push(`${where}: ${text}`);

  for (const key of Object.keys(item)) {
    if (!ruleKeys.has(key)) problem(`unknown key "${key}" (keys: ${[...ruleKeys].join(", ")})`);
  }
  const { name, effect, message } = item;
  if (typeof name !== "string" || !ruleName.test(name)) {
    problem(
      'name: required, letters, digits and "_.-", starting with a letter or digit, at most 128 characters, unique in the bundle',
    );
  }
  if (typeof effect !== "string" || !effects.includes(effect as PolicyEffect)) {
    problem(`effect: required, one of ${effects.join(", ")}`);
  }
  if (typeof message !== "string" || message.trim() === "") problem("message: required, a non-empty string");
  else if (message.length > policyLimits.maxMessageChars) {
    problem(`message: at most ${policyLimits.maxMessageChars} characters`);
  }

  const expression = (key: string, source: unknown, want: "bool" | "int"): Program | undefined => {
    const text = typeof source === "number" && want === "int" && Number.isSafeInteger(source) ? String(source) : source;
    if (typeof text !== "string" || text.trim() === "") {
      problem(`${key}: must be a CEL expression (a string)`);
      return undefined;
    }
    if (text.length > policyLimits.maxExpressionChars) {
      problem(`${key}: ${text.length} characters; an expression has at most ${policyLimits.maxExpressionChars}`);
      return undefined;
    }
    const compiled = compileExpression(text, want);
    if (compiled.kind === "error") {
      problem(`${key}: ${compiled.problem}`);
      return undefined;
    }
    return compiled.program;
  };

  const match = item.match === undefined ? undefined : expression("match", item.match, "bool");
  let check: Program | undefined;
  let cap: PolicyRule["cap"];
  if (effect === "cap") {
    if (item.expression !== undefined) {
      problem("expression: a cap rule has none; it applies whenever match holds (put the condition in match)");
    }
    cap = compileCap(item.cap, problem, expression);
  } else if (typeof effect === "string") {
    if (item.cap !== undefined) problem(`cap: only a rule with effect cap has one`);
    if (item.expression === undefined) {
      problem("expression: required, a CEL bool expression that must hold (the effect applies when it is false)");
    } else {
      check = expression("expression", item.expression, "bool");
    }
  }
  if (problems.length > before) return undefined;
  return Object.freeze({
    name: name as string,
    effect: effect as PolicyEffect,
    message: message as string,
    match,
    expression: check,
    cap,
  });
}

function compileCap(
  value: unknown,
  problem: (text: string) => void,
  expression: (key: string, source: unknown, want: "int") => Program | undefined,
): PolicyRule["cap"] {
  const shape =
    'cap: required for effect cap, {dimension: tokens | costUsdMicros | steps | "resources.<name>", value: <CEL int expression>}';
  if (!isObject(value)) {
    problem(shape);
    return undefined;
  }
  for (const key of Object.keys(value)) {
    if (key !== "dimension" && key !== "value") problem(`cap: unknown key "${key}" (keys: dimension, value)`);
  }
  const { dimension } = value;
  const known =
    dimension === "tokens" ||
    dimension === "costUsdMicros" ||
    dimension === "steps" ||
    (typeof dimension === "string" &&
      dimension.startsWith("resources.") &&
      resourceName.test(dimension.slice("resources.".length)));
  if (!known) {
    problem(
      `cap.dimension: ${JSON.stringify(dimension)} is not a grant dimension; one of tokens, costUsdMicros, steps, "resources.<name>" (a resource name in lower case)`,
    );
  }
  if (value.value === undefined) {
    problem(`${shape}: value is missing`);
    return undefined;
  }
  const program = expression("cap.value", value.value, "int");
  return known && program !== undefined ? { dimension: dimension as CapDimension, value: program } : undefined;
}

function invalid(problems: readonly string[]): PolicyBundleResult {
  return { kind: "invalid", problems };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
