// Evaluates a compiled bundle against one request: pure, no I/O. Every rule whose match holds is
// judged; an error while evaluating any rule (a missing key, a non-bool result, a bad cap) fails
// closed, as a denial naming the rule.
import { isCelError, isCelUint } from "@bufbuild/cel";
import type { PolicyDecision } from "../gen/envelope/v1/common_pb.js";
import type { CapDimension, PolicyBundle, PolicyRule } from "./bundle.js";
import { type PolicyValues, PolicyVars, type Program } from "./cel.js";

/** The checkpoint of the decisions this module makes. */
export const policyCheckpoint = "admission.policy";

/** What a bundle is evaluated on: the values of its variables, and where its decisions go. */
export interface PolicyInput extends PolicyValues {
  /** Prefix of the decision ids, e.g. "<envelopeId>/policy"; each rule's is "<prefix>/<rule name>". */
  readonly decisionId: string;
}

export interface PolicyFinding {
  readonly rule: string;
  readonly message: string;
  readonly decisionId: string;
}

export interface PolicyDenial extends PolicyFinding {
  /** POLICY_EVALUATION_FAILED when the rule could not be evaluated (fail closed). */
  readonly code: "POLICY_DENIED" | "POLICY_EVALUATION_FAILED";
}

export interface PolicyCap extends PolicyFinding {
  readonly dimension: CapDimension;
  /** The highest grant, in the dimension's accounting unit (micro-dollars for cost). */
  readonly value: number;
}

export interface PolicyVerdict {
  /** In bundle order; any denial rejects the request. */
  readonly denials: readonly PolicyDenial[];
  readonly warnings: readonly PolicyFinding[];
  /** Rules that require a person's approval before the envelope is admitted. */
  readonly approvals: readonly PolicyFinding[];
  /** The lowest cap per dimension, in the order the dimensions were first capped. */
  readonly caps: readonly PolicyCap[];
  /**
   * One decision per rule that fired (its match held, and for deny, warn and require_approval its
   * expression was false), each with the bundle's version; a single "allow" when none fired.
   */
  readonly decisions: readonly PolicyDecision[];
}

export function evaluatePolicy(bundle: PolicyBundle, input: PolicyInput): PolicyVerdict {
  const denials: PolicyDenial[] = [];
  const warnings: PolicyFinding[] = [];
  const approvals: PolicyFinding[] = [];
  const caps = new Map<CapDimension, PolicyCap>();
  const decisions: PolicyDecision[] = [];
  const vars = new PolicyVars(input);
  const decide = (rule: PolicyRule, effect: string) => {
    const decisionId = `${input.decisionId}/${rule.name}`;
    decisions.push(policyDecision(decisionId, effect, bundle.version));
    return decisionId;
  };
  const failed = (rule: PolicyRule, what: string, problem: string) =>
    denials.push({
      rule: rule.name,
      code: "POLICY_EVALUATION_FAILED",
      message: `policy rule "${rule.name}" could not be evaluated (${what}: ${problem}); the request is refused until it can be`,
      decisionId: decide(rule, "deny"),
    });

  for (const rule of bundle.rules) {
    if (rule.match !== undefined) {
      const matched = evalBool(rule.match, vars);
      if (typeof matched === "string") {
        failed(rule, "match", matched);
        continue;
      }
      if (!matched) continue;
    }
    if (rule.cap !== undefined) {
      const value = evalCap(rule.cap.value, vars);
      if (typeof value === "string") {
        failed(rule, "cap.value", value);
        continue;
      }
      const { dimension } = rule.cap;
      const finding = { rule: rule.name, message: rule.message, decisionId: decide(rule, "cap"), dimension, value };
      const lowest = caps.get(dimension);
      if (lowest === undefined || value < lowest.value) caps.set(dimension, finding);
      continue;
    }
    const holds = evalBool(rule.expression as Program, vars);
    if (typeof holds === "string") {
      failed(rule, "expression", holds);
      continue;
    }
    if (holds) continue;
    switch (rule.effect) {
      case "deny":
        denials.push({
          rule: rule.name,
          code: "POLICY_DENIED",
          message: rule.message,
          decisionId: decide(rule, "deny"),
        });
        break;
      case "warn":
        warnings.push({ rule: rule.name, message: rule.message, decisionId: decide(rule, "warn") });
        break;
      case "require_approval":
        approvals.push({ rule: rule.name, message: rule.message, decisionId: decide(rule, "require-approval") });
        break;
    }
  }
  if (decisions.length === 0) decisions.push(policyDecision(input.decisionId, "allow", bundle.version));
  return { denials, warnings, approvals, caps: [...caps.values()], decisions };
}

/** true or false, or what went wrong. */
function evalBool(program: Program, vars: PolicyVars): boolean | string {
  const result = program(vars);
  if (isCelError(result)) return result.message;
  return typeof result === "boolean" ? result : `the result is not a bool`;
}

/** A cap of at least 1, or what went wrong. */
function evalCap(program: Program, vars: PolicyVars): number | string {
  const result = program(vars);
  if (isCelError(result)) return result.message;
  const value = typeof result === "bigint" ? result : isCelUint(result) ? result.value : undefined;
  if (value === undefined) return "the result is not an int";
  if (value < 1n) return `the cap is ${value}; a cap is at least 1 (use a deny rule to refuse)`;
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
}

/** A literal rather than create(), as in core/decide. */
function policyDecision(decisionId: string, effect: string, policyVersion: string): PolicyDecision {
  return { $typeName: "envelope.v1.PolicyDecision", decisionId, checkpoint: policyCheckpoint, effect, policyVersion };
}
