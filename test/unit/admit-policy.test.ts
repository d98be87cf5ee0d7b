// The policy bundle in the admission core: Admit and Explain apply its denials, warnings, caps and
// approvals after authorization and the static limits, and record the bundle's version.
import { describe, expect, it } from "vitest";
import { defaultConfig } from "../../src/config/config.js";
import { type AdmissionConfig, type AdmissionResult, admit, explain } from "../../src/core/admit.js";
import { createCaller } from "../../src/core/caller.js";
import { DecisionOutcome, LifecycleState } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import { type PolicyBundle, parsePolicyBundle } from "../../src/policy/bundle.js";
import { loadPolicyFile } from "../../src/policy/load.js";
import { admissionConfig } from "../../src/server.js";
import { freshRequest } from "../helpers/requests.js";

const version = "unit-1";

function bundleOf(...rules: Record<string, unknown>[]): PolicyBundle {
  const result = parsePolicyBundle(JSON.stringify({ version, rules }));
  if (result.kind !== "ok") throw new Error(result.problems.join("; "));
  return result.bundle;
}

const withPolicy = (bundle: PolicyBundle | undefined): AdmissionConfig => admissionConfig(defaultConfig, () => bundle);
const ids = { envelopeId: "env_01J1ZK3R5V8X2Q7M4N6P9T0WAB", traceId: "9af7fb945f56466a9fef4d456317ce30" };

function admitWith(bundle: PolicyBundle | undefined, edit: (r: ReturnType<typeof freshRequest>) => void = () => {}) {
  const nowMs = Date.now();
  const request = freshRequest(nowMs);
  edit(request);
  return admit(request, withPolicy(bundle), { nowMs, ...ids, caller: createCaller("token", "ci") });
}

function envelopeOf(result: AdmissionResult) {
  if (result.kind !== "admitted")
    throw new Error(`rejected: ${result.error.error?.code} ${result.error.error?.message}`);
  return result.envelope;
}

const deny = {
  name: "low-risk-only",
  effect: "deny",
  expression: "request.risk.level == 'low'",
  message: "only low risk",
};
const warn = { name: "big", effect: "warn", expression: "requested.tokens < 1000", message: "over 1000 tokens" };
const cap = { name: "tokens-3000", effect: "cap", cap: { dimension: "tokens", value: 3000 }, message: "3000 at most" };
const approval = {
  name: "pii",
  effect: "require_approval",
  expression: "request.risk.data_classes.size() == 0",
  message: "PII",
};

describe("admit with a policy bundle", () => {
  it("without a bundle (or with none in force) decides exactly as before", () => {
    const none = envelopeOf(admitWith(undefined));
    expect(none.decision?.policyDecisions.map((d) => d.checkpoint)).toEqual(["admission.limits"]);
    expect(none.state).toBe(LifecycleState.ADMITTED);
  });

  it("records an allow decision with the version when no rule fires", () => {
    const envelope = envelopeOf(admitWith(bundleOf({ ...deny, expression: "true" })));
    expect(envelope.decision?.outcome).toBe(DecisionOutcome.ADMITTED);
    expect(envelope.decision?.policyDecisions.map((d) => [d.checkpoint, d.effect, d.decisionId])).toEqual([
      ["admission.limits", "allow", `${ids.envelopeId}/limits`],
      ["admission.policy", "allow", `${ids.envelopeId}/policy`],
    ]);
    expect(envelope.decision?.policyDecisions[1]?.policyVersion).toBe(version);
  });

  it("rejects a denied request with a policy error naming each denying rule", () => {
    const result = admitWith(
      bundleOf(deny, {
        ...deny,
        name: "acme-too",
        expression: "request.tenant.id != 'tenant-acme'",
        message: "not acme",
      }),
    );
    if (result.kind !== "rejected") expect.fail("expected a rejection");
    expect(result.error.error).toMatchObject({
      category: "policy",
      code: "POLICY_DENIED",
      message: "only low risk",
      retryable: false,
      detailsRef: `policy:${version}`,
    });
    expect(result.error.error?.violations.map((v) => [v.field, v.rule, v.message])).toEqual([
      ["", "policy:low-risk-only", "only low risk"],
      ["", "policy:acme-too", "not acme"],
    ]);
  });

  it("fails closed on an evaluation error", () => {
    const result = admitWith(bundleOf({ ...warn, expression: "request.task.input.priority == 'high'" }));
    if (result.kind !== "rejected") expect.fail("expected a rejection");
    expect(result.error.error?.code).toBe("POLICY_EVALUATION_FAILED");
    expect(result.error.error?.violations[0]?.rule).toBe("policy:big");
  });

  it("warns on the decision", () => {
    const envelope = envelopeOf(admitWith(bundleOf(warn)));
    expect(envelope.decision?.outcome).toBe(DecisionOutcome.ADMITTED);
    expect(envelope.decision?.warnings).toEqual([
      expect.objectContaining({ code: "POLICY_WARNING", message: 'over 1000 tokens (policy rule "big")' }),
    ]);
  });

  it("caps the grant below the request: GRANT_CLAMPED, ADMITTED_PARTIAL, the cap's decision", () => {
    const envelope = envelopeOf(admitWith(bundleOf(cap)));
    expect(envelope.requested?.tokens).toBe(4000);
    expect(envelope.granted?.tokens).toBe(3000);
    expect(envelope.decision?.outcome).toBe(DecisionOutcome.ADMITTED_PARTIAL);
    expect(envelope.decision?.reasons).toEqual([
      expect.objectContaining({
        code: "GRANT_CLAMPED",
        dimension: "tokens",
        policyDecisionId: `${ids.envelopeId}/policy/tokens-3000`,
        message: 'policy rule "tokens-3000" caps tokens at 3000: 3000 at most',
      }),
    ]);
    expect(envelope.decision?.policyDecisions[1]).toMatchObject({ effect: "cap", policyVersion: version });
  });

  it("caps after the static limits, and a resource only when it is asked for", () => {
    const gpu = { name: "gpu", effect: "cap", cap: { dimension: "resources.gpu", value: 1 }, message: "one" };
    const envelope = envelopeOf(
      admitWith(bundleOf({ ...cap, cap: { dimension: "tokens", value: 200_000 } }, gpu), (r) => {
        (r.budget as NonNullable<typeof r.budget>).maxTokens = 500_000;
        (r.budget as NonNullable<typeof r.budget>).resources = { gpu: 4 };
      }),
    );
    // The static limit (128000) is lower than the policy cap: only the limit clamps tokens.
    expect(envelope.granted?.tokens).toBe(128_000);
    expect(envelope.granted?.resources).toEqual({ gpu: 1 });
    expect(envelope.decision?.reasons.map((r) => [r.dimension, r.policyDecisionId])).toEqual([
      ["tokens", `${ids.envelopeId}/limits`],
      ["resources.gpu", `${ids.envelopeId}/policy/gpu`],
    ]);
    expect(envelopeOf(admitWith(bundleOf(gpu))).granted?.resources).toEqual({});
  });

  it("holds the envelope for approval: pending_approval, PENDING_APPROVAL, an APPROVAL_REQUIRED reason", () => {
    const envelope = envelopeOf(admitWith(bundleOf(approval, cap)));
    expect(envelope.state).toBe(LifecycleState.PENDING_APPROVAL);
    expect(envelope.decision?.outcome).toBe(DecisionOutcome.PENDING_APPROVAL);
    expect(envelope.granted?.tokens).toBe(3000);
    expect(envelope.decision?.reasons.map((r) => r.code)).toEqual(["GRANT_CLAMPED", "APPROVAL_REQUIRED"]);
    expect(envelope.decision?.policyDecisions.map((d) => d.effect)).toEqual(["allow", "require-approval", "cap"]);
  });

  it("sees the caller", () => {
    const onlyCi = { ...deny, expression: "caller.principal == 'token:ci'", message: "ci only" };
    expect(admitWith(bundleOf(onlyCi)).kind).toBe("admitted");
    const nowMs = Date.now();
    expect(admit(freshRequest(nowMs), withPolicy(bundleOf(onlyCi)), { nowMs, ...ids }).kind).toBe("rejected");
  });

  it("reads the bundle in force at each call", () => {
    let current: PolicyBundle | undefined = bundleOf(deny);
    const config = admissionConfig(defaultConfig, () => current);
    const nowMs = Date.now();
    expect(admit(freshRequest(nowMs), config, { nowMs, ...ids }).kind).toBe("rejected");
    current = bundleOf(warn);
    expect(admit(freshRequest(nowMs), config, { nowMs, ...ids }).kind).toBe("admitted");
  });
});

describe("explain with a policy bundle", () => {
  const explainWith = (bundle: PolicyBundle, edit: (r: ReturnType<typeof freshRequest>) => void = () => {}) => {
    const nowMs = Date.now();
    const request = freshRequest(nowMs);
    edit(request);
    return explain(request, withPolicy(bundle), { nowMs, caller: undefined });
  };

  it("lists policy denials after the limits' refusal, in Admit's order", () => {
    const answer = explainWith(bundleOf(deny), (r) => {
      (r.budget as NonNullable<typeof r.budget>).resources = { tpu: 1 };
    });
    expect(answer.outcome).toBe(DecisionOutcome.REJECTED);
    expect(answer.blocking.map((b) => [b.category, b.code])).toEqual([
      ["policy", "RESOURCE_NOT_OFFERED"],
      ["policy", "POLICY_DENIED"],
    ]);
  });

  it("lists a policy denial after authorization's", () => {
    const config: AdmissionConfig = {
      ...withPolicy(bundleOf(deny)),
      authorization: new Map([["token:other", { tenants: ["tenant-other"], actors: ["*"] }]]),
    };
    const nowMs = Date.now();
    const answer = explain(freshRequest(nowMs), config, { nowMs, caller: createCaller("token", "other") });
    expect(answer.blocking.map((b) => b.code)).toEqual(["REQUEST_NOT_PERMITTED", "POLICY_DENIED"]);
  });

  it("gives the best grant after the caps, and the outcome of an approval", () => {
    const capped = explainWith(bundleOf(cap));
    expect(capped.outcome).toBe(DecisionOutcome.ADMITTED_PARTIAL);
    expect(capped.bestGrant?.tokens).toBe(3000);
    expect(capped.grantReasons.map((r) => r.policyDecisionId)).toEqual(["explain/policy/tokens-3000"]);
    const pending = explainWith(bundleOf(approval));
    expect(pending.outcome).toBe(DecisionOutcome.PENDING_APPROVAL);
    expect(pending.blocking).toEqual([]);
  });
});

describe("the example bundle (examples/policy.yaml)", () => {
  const example = loadPolicyFile(new URL("../../examples/policy.yaml", import.meta.url).pathname);
  if (example.kind !== "ok") throw new Error(`examples/policy.yaml: ${example.problems.join("; ")}`);

  it("admits the sample request, and holds it for approval at high risk", () => {
    const plain = envelopeOf(admitWith(example.bundle));
    expect(plain.decision?.policyDecisions[1]).toMatchObject({
      effect: "allow",
      policyVersion: example.bundle.version,
    });
    const high = envelopeOf(
      admitWith(example.bundle, (r) => {
        (r.risk as NonNullable<typeof r.risk>).level = "high";
      }),
    );
    expect(high.state).toBe(LifecycleState.PENDING_APPROVAL);
  });

  it("caps a trial tenant and halves an evaluation's GPUs", () => {
    const trial = envelopeOf(
      admitWith(example.bundle, (r) => {
        (r.tenant as NonNullable<typeof r.tenant>).id = "trial-42";
        (r.budget as NonNullable<typeof r.budget>).maxTokens = 20_000;
        (r.budget as NonNullable<typeof r.budget>).maxCostUsd = 2;
      }),
    );
    expect([trial.granted?.tokens, trial.granted?.costUsdMicros]).toEqual([8000, 500_000n]);
    const evaluation = envelopeOf(
      admitWith(example.bundle, (r) => {
        (r.task as NonNullable<typeof r.task>).kind = "evaluation";
        (r.budget as NonNullable<typeof r.budget>).resources = { gpu: 6 };
      }),
    );
    expect(evaluation.granted?.resources).toEqual({ gpu: 3 });
  });
});
