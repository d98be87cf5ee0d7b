// A policy bundle's verdict in admission's terms: the refusal of a denied request, the grant after
// the caps, the reasons and warnings the decision carries. Pure; the bundle is evaluated by
// src/policy, which knows nothing of envelopes.
import type { Warning } from "../gen/envelope/v1/common_pb.js";
import type { DecisionReason } from "../gen/envelope/v1/execution_envelope_pb.js";
import type { PolicyCap, PolicyVerdict } from "../policy/evaluate.js";
import type { Amounts } from "./decide.js";
import type { ErrorInit } from "./errors.js";
import { violation } from "./validate.js";

/** The policy error of a verdict with denials; undefined when nothing denies. */
export function policyRefusal(verdict: PolicyVerdict, version: string): ErrorInit | undefined {
  const [first] = verdict.denials;
  if (first === undefined) return undefined;
  return {
    category: "policy",
    code: first.code,
    message: first.message,
    violations: verdict.denials.map((d) => violation("", `policy:${d.rule}`, d.message)),
    detailsRef: `policy:${version}`,
  };
}

/** The grant after the verdict's caps: granted = min(granted, cap), a GRANT_CLAMPED reason per lowered dimension. */
export function applyCaps(
  granted: Amounts,
  caps: readonly PolicyCap[],
): { readonly granted: Amounts; readonly reasons: DecisionReason[] } {
  const reasons: DecisionReason[] = [];
  if (caps.length === 0) return { granted, reasons };
  let { tokens, costUsdMicros, steps } = granted;
  let resources = granted.resources;
  for (const cap of caps) {
    const lower = (have: number): number => {
      if (have <= cap.value) return have;
      reasons.push({
        $typeName: "envelope.v1.DecisionReason",
        code: "GRANT_CLAMPED",
        message: `policy rule "${cap.rule}" caps ${cap.dimension} at ${cap.value}: ${cap.message}`,
        dimension: cap.dimension,
        policyDecisionId: cap.decisionId,
      });
      return cap.value;
    };
    if (cap.dimension === "tokens") tokens = lower(tokens);
    else if (cap.dimension === "costUsdMicros") costUsdMicros = lower(costUsdMicros);
    else if (cap.dimension === "steps") steps = lower(steps);
    else {
      const name = cap.dimension.slice("resources.".length);
      const have = resources[name];
      // A cap on a resource the request does not ask for has nothing to lower.
      if (have !== undefined && have > cap.value) resources = { ...resources, [name]: lower(have) };
    }
  }
  return { granted: { tokens, costUsdMicros, steps, resources }, reasons };
}

/** One warning per warn rule that fired. */
export function policyWarnings(verdict: PolicyVerdict): Warning[] {
  return verdict.warnings.map((w) => ({
    $typeName: "envelope.v1.Warning",
    code: "POLICY_WARNING",
    message: `${w.message} (policy rule "${w.rule}")`,
    field: "",
  }));
}

/** One APPROVAL_REQUIRED reason per require_approval rule that fired. */
export function approvalReasons(verdict: PolicyVerdict): DecisionReason[] {
  return verdict.approvals.map((a) => ({
    $typeName: "envelope.v1.DecisionReason",
    code: "APPROVAL_REQUIRED",
    message: `${a.message} (policy rule "${a.rule}")`,
    dimension: "",
    policyDecisionId: a.decisionId,
  }));
}
