// The grant decision: granted = min(requested, every cap that applies), per dimension, with a reason
// for each dimension that was clamped. Caps come from sources (today the static limits; policies and
// budgets add theirs), each under a policy decision that names the version it was made with.
import { create } from "@bufbuild/protobuf";
import type { PolicyDecision } from "../gen/envelope/v1/common_pb.js";
import type { FieldViolation } from "../gen/envelope/v1/error_pb.js";
import { type DecisionReason, DecisionReasonSchema } from "../gen/envelope/v1/execution_envelope_pb.js";
import type { AdmissionLimits } from "./limits.js";
import { violation } from "./validate.js";

/** Requested or granted amounts in accounting units. Cost is integer micro-dollars. */
export interface Amounts {
  readonly tokens: number;
  readonly costUsdMicros: number;
  readonly steps: number;
  readonly resources: Readonly<Record<string, number>>;
}

export type Decided =
  | {
      readonly kind: "granted";
      readonly granted: Amounts;
      readonly reasons: readonly DecisionReason[];
      readonly policyDecisions: readonly PolicyDecision[];
    }
  | {
      readonly kind: "rejected";
      readonly category: string;
      readonly code: string;
      readonly message: string;
      readonly violations: readonly FieldViolation[];
      readonly policyDecisions: readonly PolicyDecision[];
    };

/** Applies the static per-request limits. `decisionId` names this evaluation on the envelope. */
export function decideStatic(
  requested: Amounts,
  limits: AdmissionLimits,
  limitsVersion: string,
  decisionId: string,
): Decided {
  const reasons: DecisionReason[] = [];
  const notOffered: FieldViolation[] = [];

  const clamp = (dimension: string, unit: string, want: number, cap: number): number => {
    if (want <= cap) return want;
    reasons.push(
      create(DecisionReasonSchema, {
        code: "GRANT_CLAMPED",
        dimension,
        policyDecisionId: decisionId,
        message: `requested ${want} ${unit}; the per-request limit is ${cap}`,
      }),
    );
    return cap;
  };

  const resources: Record<string, number> = {};
  for (const [name, want] of Object.entries(requested.resources)) {
    const cap = limits.maxResourcesPerRequest[name];
    if (cap === undefined) {
      notOffered.push(
        violation(`budget.resources[${JSON.stringify(name)}]`, "resource.offered", `resource "${name}" is not offered`),
      );
      continue;
    }
    resources[name] = clamp(`resources.${name}`, name, want, cap);
  }

  const granted: Amounts = {
    tokens: clamp("tokens", "tokens", requested.tokens, limits.maxTokensPerRequest),
    costUsdMicros: clamp("costUsdMicros", "micro-dollars", requested.costUsdMicros, limits.maxCostUsdMicrosPerRequest),
    steps: clamp("steps", "steps", requested.steps, limits.maxStepsPerRequest),
    resources,
  };

  if (notOffered.length > 0) {
    return {
      kind: "rejected",
      category: "policy",
      code: "RESOURCE_NOT_OFFERED",
      message: "the request asks for resources this service does not grant",
      violations: notOffered,
      policyDecisions: [policyDecision(decisionId, "deny", limitsVersion)],
    };
  }
  return {
    kind: "granted",
    granted,
    reasons,
    policyDecisions: [policyDecision(decisionId, reasons.length > 0 ? "cap" : "allow", limitsVersion)],
  };
}

/** A literal rather than create(): one per admission, at a fraction of create()'s cost. */
function policyDecision(decisionId: string, effect: string, policyVersion: string): PolicyDecision {
  return { $typeName: "envelope.v1.PolicyDecision", decisionId, checkpoint: "admission.limits", effect, policyVersion };
}
