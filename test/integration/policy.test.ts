// CEL policy over real sockets, on both ledger stores: deny, warn, cap and require_approval from a
// bundle file, the approval flow (Approve, Deny) with the approver recorded, tenant isolation of
// approvals, and task.input that tries to change policy or budget.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DecisionOutcome, LifecycleState as S } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import type { RuntimeRequest } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { writeTokensFile } from "../helpers/credentials.js";
import { rejection } from "../helpers/rejection.js";
import { freshRequest } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { createDatabase } from "../support/postgres.js";

const bundle = `
version: "itest-1"
rules:
  - name: blocked-tenant
    expression: request.tenant.id != "tenant-blocked"
    message: tenant-blocked may not run anything
    effect: deny
  - name: noisy-tenant
    expression: request.tenant.id != "tenant-noisy"
    message: tenant-noisy is being watched
    effect: warn
  - name: trial-tokens
    match: request.tenant.id.startsWith("tenant-trial")
    effect: cap
    cap: { dimension: tokens, value: 1000 }
    message: trial tenants get at most 1000 tokens
  - name: high-risk-approval
    expression: request.risk.level != "high"
    message: high-risk requests need a person's approval
    effect: require_approval
`;

/** The sample request for a tenant, optionally high-risk (held for approval). */
function request(tenant: string, edit: (r: RuntimeRequest) => void = () => {}): RuntimeRequest {
  const r = freshRequest();
  (r.tenant as NonNullable<RuntimeRequest["tenant"]>).id = tenant;
  edit(r);
  return r;
}
const highRisk = (r: RuntimeRequest) => {
  (r.risk as NonNullable<RuntimeRequest["risk"]>).level = "high";
};

describe.each(["sqlite", "postgres"] as const)("policy with the ledger on %s", (store) => {
  const dir = mkdtempSync(join(tmpdir(), "envelope-policy-it-"));
  let t: TestServer;
  let tokens: Record<string, string>;
  beforeAll(async () => {
    const written = writeTokensFile(dir, ["backend", "approver", "other"]);
    tokens = written.tokens;
    const policyFile = join(dir, "policy.yaml");
    writeFileSync(policyFile, bundle);
    const postgres = store === "postgres" ? { postgresUrl: await createDatabase() } : {};
    t = await startTestServer({
      config: {
        grpc: { auth: "token" },
        http: { auth: "token" },
        tokens: { file: written.file },
        authorization: {
          callers: {
            "token:backend": { tenants: ["tenant-*"], actors: ["*"] },
            "token:approver": { tenants: ["tenant-*"], actors: ["*"] },
            "token:other": { tenants: ["other-*"], actors: ["*"] },
          },
        },
        policy: { file: policyFile },
        ledger: { store, ...postgres },
      } as never,
    });
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const as = (name: string) => ({ headers: { authorization: `Bearer ${tokens[name]}` } });

  describe.each(["gRPC (grpc-js port)", "Connect JSON over HTTP/1.1"] as const)("over %s", (port) => {
    const admission = () => t.clients[port];
    const lifecycle = () => t.lifecycle[port];

    it("announces policy.cel", async () => {
      expect((await admission().getCapabilities({}, as("backend"))).features).toContain("policy.cel");
    });

    it("denies with a policy error naming the rule; Explain lists the denial", async () => {
      const denied = request("tenant-blocked");
      const { error, envelope } = await rejection(admission().admit(denied, as("backend")));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(envelope.error).toMatchObject({
        category: "policy",
        code: "POLICY_DENIED",
        message: "tenant-blocked may not run anything",
        retryable: false,
        detailsRef: "policy:itest-1",
      });
      expect(envelope.error?.violations.map((v) => v.rule)).toEqual(["policy:blocked-tenant"]);
      const explained = await admission().explain({ request: denied }, as("backend"));
      expect(explained.admissible).toBe(false);
      expect(explained.blockingReasons.map((r) => [r.category, r.code])).toEqual([["policy", "POLICY_DENIED"]]);
    });

    it("warns on the decision, with the bundle's version on the policy decision", async () => {
      const envelope = await admission().admit(request("tenant-noisy"), as("backend"));
      expect(envelope.state).toBe(S.ADMITTED);
      expect(envelope.decision?.warnings.map((w) => [w.code, w.message])).toEqual([
        ["POLICY_WARNING", 'tenant-noisy is being watched (policy rule "noisy-tenant")'],
      ]);
      expect(envelope.decision?.policyDecisions.find((d) => d.checkpoint === "admission.policy")).toMatchObject({
        decisionId: `${envelope.envelopeId}/policy/noisy-tenant`,
        effect: "warn",
        policyVersion: "itest-1",
      });
    });

    it("caps a dimension: granted below requested, ADMITTED_PARTIAL, the cap's reason and version", async () => {
      const envelope = await admission().admit(request("tenant-trial-7"), as("backend"));
      expect(envelope.requested?.tokens).toBe(4000);
      expect(envelope.granted?.tokens).toBe(1000);
      expect(envelope.decision?.outcome).toBe(DecisionOutcome.ADMITTED_PARTIAL);
      expect(envelope.decision?.reasons.map((r) => [r.code, r.dimension, r.policyDecisionId])).toEqual([
        ["GRANT_CLAMPED", "tokens", `${envelope.envelopeId}/policy/trial-tokens`],
      ]);
      expect(envelope.decision?.policyDecisions.map((d) => [d.checkpoint, d.effect, d.policyVersion])).toEqual([
        ["admission.limits", "allow", expect.stringMatching(/^static-limits@/)],
        ["admission.policy", "cap", "itest-1"],
      ]);
      // The ledger keeps the grant as decided.
      const { record } = await lifecycle().getEnvelope({ envelopeId: envelope.envelopeId }, as("backend"));
      expect(record?.envelope?.granted?.tokens).toBe(1000);
    });

    it("ignores task.input that tries to change policy or budget", async () => {
      const hostile = {
        policy: { version: "attacker", rules: [], file: "/dev/null" },
        budget: { maxTokens: 1_000_000, tokens: 1_000_000 },
        "policy.file": "/tmp/attacker.yaml",
        caps: [{ dimension: "tokens", value: 1_000_000 }],
      };
      const withInput = (r: RuntimeRequest) => {
        (r.task as NonNullable<RuntimeRequest["task"]>).input = hostile;
      };
      const denied = await rejection(admission().admit(request("tenant-blocked", withInput), as("backend")));
      expect(denied.envelope.error).toMatchObject({ code: "POLICY_DENIED", detailsRef: "policy:itest-1" });

      const plain = await admission().admit(request("tenant-trial-input"), as("backend"));
      const tried = await admission().admit(request("tenant-trial-input", withInput), as("backend"));
      expect(tried.request?.task?.input).toEqual(hostile);
      expect(tried.requested).toEqual({ ...plain.requested, deadline: tried.requested?.deadline });
      expect(tried.granted?.tokens).toBe(1000);
      expect(tried.granted?.tokens).toBe(plain.granted?.tokens);
      expect(tried.decision?.reasons.map((r) => r.code)).toEqual(plain.decision?.reasons.map((r) => r.code));
      expect(tried.decision?.policyDecisions.map((d) => [d.effect, d.policyVersion])).toEqual(
        plain.decision?.policyDecisions.map((d) => [d.effect, d.policyVersion]),
      );
      // ...and the next caller still meets the same bundle.
      const after = await rejection(admission().admit(request("tenant-blocked"), as("backend")));
      expect(after.envelope.error?.code).toBe("POLICY_DENIED");
    });

    it("holds a request for approval; Approve admits it and records the approver", async () => {
      const held = await admission().admit(request("tenant-acme", highRisk), as("backend"));
      expect(held.state).toBe(S.PENDING_APPROVAL);
      expect(held.decision?.outcome).toBe(DecisionOutcome.PENDING_APPROVAL);
      expect(held.decision?.reasons.map((r) => r.code)).toEqual(["APPROVAL_REQUIRED"]);
      expect(held.decision?.policyDecisions[1]).toMatchObject({ effect: "require-approval", policyVersion: "itest-1" });
      const envelopeId = held.envelopeId;

      // Held: it cannot start before someone approves it.
      const early = await rejection(lifecycle().start({ envelopeId }, as("backend")));
      expect(early.error.code).toBe(Code.FailedPrecondition);
      expect(early.envelope.error?.message).toContain("the envelope is pending_approval");

      const approved = await lifecycle().approve({ envelopeId, reason: "reviewed by on-call" }, as("approver"));
      expect(approved.envelope?.state).toBe(S.ADMITTED);
      expect(approved.event).toMatchObject({
        fromState: S.PENDING_APPROVAL,
        toState: S.ADMITTED,
        caller: "token:approver",
        reason: "reviewed by on-call",
      });
      await lifecycle().start({ envelopeId, reason: "dispatched" }, as("backend"));

      const { record } = await lifecycle().getEnvelope({ envelopeId }, as("backend"));
      expect(record?.events.map((e) => [e.toState, e.caller])).toEqual([
        [S.RECEIVED, "token:backend"],
        [S.PENDING_APPROVAL, "token:backend"],
        [S.ADMITTED, "token:approver"],
        [S.RUNNING, "token:backend"],
      ]);
      expect(record?.events[1]?.reason).toBe("APPROVAL_REQUIRED");

      // Approving again: the envelope is no longer pending; the error names its state.
      const again = await rejection(lifecycle().approve({ envelopeId }, as("approver")));
      expect(again.error.code).toBe(Code.FailedPrecondition);
      expect(again.envelope.error).toMatchObject({ category: "validation.state", code: "TRANSITION_NOT_ALLOWED" });
      expect(again.envelope.error?.message).toContain("the envelope is running");
    });

    it("Deny rejects a held request, recording the approver, the reason and the error", async () => {
      const { envelopeId } = await admission().admit(request("tenant-acme", highRisk), as("backend"));
      const denied = await lifecycle().deny({ envelopeId, reason: "not this quarter" }, as("approver"));
      expect(denied.envelope?.state).toBe(S.REJECTED);
      expect(denied.event).toMatchObject({ toState: S.REJECTED, caller: "token:approver", reason: "not this quarter" });
      expect(denied.event?.error?.error).toMatchObject({
        category: "policy",
        code: "APPROVAL_DENIED",
        message: "the approver denied the request: not this quarter",
      });
      const { record } = await lifecycle().getEnvelope({ envelopeId }, as("backend"));
      expect(record?.envelope?.state).toBe(S.REJECTED);
      expect(record?.error?.error?.code).toBe("APPROVAL_DENIED");
      // Rejected is final.
      const late = await rejection(lifecycle().approve({ envelopeId }, as("approver")));
      expect(late.envelope.error?.message).toContain("rejected, a final state");
    });

    it("refuses Approve and Deny of an envelope that is not pending approval, naming its state", async () => {
      const { envelopeId } = await admission().admit(request("tenant-acme"), as("backend"));
      const calls = [
        () => lifecycle().approve({ envelopeId }, as("approver")),
        () => lifecycle().deny({ envelopeId }, as("approver")),
      ];
      for (const call of calls) {
        const { error, envelope } = await rejection(call());
        expect(error.code).toBe(Code.FailedPrecondition);
        expect(envelope.error?.code).toBe("TRANSITION_NOT_ALLOWED");
        expect(envelope.error?.message).toContain("the envelope is admitted");
        expect(envelope.error?.detailsRef).toBe("state:admitted");
      }
      const invalid = await rejection(lifecycle().approve({ envelopeId: "" }, as("approver")));
      expect(invalid.error.code).toBe(Code.InvalidArgument);
    });

    it("keeps approvals within the caller's tenants: another tenant's envelope is not found", async () => {
      const { envelopeId } = await admission().admit(request("tenant-acme", highRisk), as("backend"));
      const calls = [
        () => lifecycle().approve({ envelopeId }, as("other")),
        () => lifecycle().deny({ envelopeId }, as("other")),
      ];
      for (const call of calls) {
        const { error, envelope } = await rejection(call());
        expect(error.code).toBe(Code.NotFound);
        expect(envelope.error?.code).toBe("ENVELOPE_NOT_FOUND");
      }
      const { record } = await lifecycle().getEnvelope({ envelopeId }, as("backend"));
      expect(record?.envelope?.state).toBe(S.PENDING_APPROVAL);
    });
  });
});
