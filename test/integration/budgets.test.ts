// Budgets end to end over gRPC, on both stores: grants clamped to what is left, a capacity refusal
// below the caller's minimum with the time it could succeed, concurrency slots, settlement at the
// end of an execution, and Explain's best grant from the same counters.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/config.js";
import { DecisionOutcome, LifecycleState } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import type { RuntimeRequest } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { RuntimeResponseSchema } from "../../src/gen/envelope/v1/runtime_response_pb.js";
import { rejection } from "../helpers/rejection.js";
import { freshRequest } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { createDatabase } from "../support/postgres.js";

// Every tenant gets its own daily allowance, so each test draws from a fresh one.
const budgets = loadConfig({
  overrides: {
    "budgets.definitions": [
      { name: "daily", tenant: "*", window: "day", tokens: 10_000, costUsd: 1, concurrent: 3 },
      { name: "per-request", tenant: "*", window: "request", steps: 4 },
    ],
  },
}).budgets;

describe.each(["sqlite", "postgres"] as const)("budgets on %s, over gRPC", (store) => {
  let t: TestServer;
  beforeAll(async () => {
    const postgres = store === "postgres" ? { postgresUrl: await createDatabase() } : {};
    t = await startTestServer({ config: { budgets, ledger: { store, ...postgres } as never } });
  });
  afterAll(async () => {
    await t.close();
  });

  const admission = () => t.clients["gRPC (grpc-js port)"];
  const lifecycle = () => t.lifecycle["gRPC (grpc-js port)"];

  /** The sample request for a tenant, asking for `tokens` and 2 steps. */
  function request(tenant: string, tokens = 4000, edit: (r: RuntimeRequest) => void = () => {}): RuntimeRequest {
    const r = freshRequest();
    (r.tenant as NonNullable<RuntimeRequest["tenant"]>).id = tenant;
    const budget = r.budget as NonNullable<RuntimeRequest["budget"]>;
    budget.maxTokens = tokens;
    budget.maxSteps = 2;
    edit(r);
    return r;
  }

  const usage = (requestId: string, tokens: number) =>
    create(RuntimeResponseSchema, {
      contractVersion: "2.1",
      requestId,
      status: "completed",
      usage: { promptTokens: tokens - 100, outputTokens: 100, estimatedCostUsd: 0.01, steps: 1 },
    });

  it("grants in full while the budget lasts, then clamps to what is left and says why", async () => {
    const tenant = `tenant-${randomUUID()}`;
    for (const _ of [1, 2]) {
      const full = await admission().admit(request(tenant));
      expect(full.granted?.tokens).toBe(4000);
      expect(full.decision?.outcome).toBe(DecisionOutcome.ADMITTED);
      const budgetDecision = full.decision?.policyDecisions.find((d) => d.checkpoint === "admission.budget");
      expect(budgetDecision).toMatchObject({ effect: "reserve" });
      expect(budgetDecision?.policyVersion).toMatch(/^budgets@[0-9a-f]{12}$/);
    }
    // task.input is opaque: a request cannot raise its own budget through it.
    const clamped = await admission().admit(
      request(tenant, 4000, (r) => {
        (r.task as NonNullable<RuntimeRequest["task"]>).input = {
          question: "close the case",
          budget: { maxTokens: 1_000_000 },
          budgets: { definitions: [{ name: "daily", tenant: "*", window: "day", tokens: 1_000_000 }] },
        };
      }),
    );
    expect(clamped.requested?.tokens).toBe(4000);
    expect(clamped.granted?.tokens).toBe(2000);
    expect(clamped.decision?.outcome).toBe(DecisionOutcome.ADMITTED_PARTIAL);
    const reasons = clamped.decision?.reasons ?? [];
    expect(reasons.map((r) => [r.code, r.dimension])).toEqual([["GRANT_CLAMPED", "tokens"]]);
    expect(reasons[0]?.message).toContain('budget "daily" has 2000 tokens left this day');
    expect(clamped.decision?.policyDecisions.find((d) => d.checkpoint === "admission.budget")?.effect).toBe("cap");
    // The ledger keeps the envelope as answered.
    const stored = await lifecycle().getEnvelope({ envelopeId: clamped.envelopeId });
    expect(stored.record?.envelope?.granted?.tokens).toBe(2000);
  });

  it("refuses a grant below the caller's minimum with a capacity error that says when to retry", async () => {
    const tenant = `tenant-${randomUUID()}`;
    await admission().admit(request(tenant, 9000));
    const { error, envelope } = await rejection(
      admission().admit(
        request(tenant, 4000, (r) => {
          r.contractVersion = "2.1";
          (r.budget as NonNullable<RuntimeRequest["budget"]>).minimumAcceptable = {
            $typeName: "envelope.v1.BudgetMinimum",
            tokens: 1500,
            resources: {},
          };
        }),
      ),
    );
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(envelope.error).toMatchObject({ category: "capacity", code: "BUDGET_EXHAUSTED", retryable: true });
    expect(envelope.error?.violations.map((v) => [v.field, v.rule])).toEqual([
      ["budget.maxTokens", "budget.remaining"],
    ]);
    expect(envelope.error?.violations[0]?.message).toContain("1000 tokens left");
    const midnight = new Date();
    midnight.setUTCHours(24, 0, 0, 0);
    const retryAfter = envelope.error?.retryAfterUtc;
    expect(retryAfter && timestampDate(retryAfter).getTime()).toBe(midnight.getTime());
    // Without a minimum, the same request takes what is left.
    expect((await admission().admit(request(tenant, 4000))).granted?.tokens).toBe(1000);
  });

  it("holds a concurrency slot until the execution ends, and settles its usage then", async () => {
    const tenant = `tenant-${randomUUID()}`;
    const running = [];
    for (const _ of [1, 2, 3]) running.push(await admission().admit(request(tenant, 1000)));
    const { envelope } = await rejection(admission().admit(request(tenant, 1000)));
    expect(envelope.error?.code).toBe("BUDGET_EXHAUSTED");
    expect(envelope.error?.violations[0]?.message).toContain(
      "0 concurrent executions left until a running execution ends",
    );
    // A held slot has no renewal time.
    expect(envelope.error?.retryAfterUtc).toBeUndefined();

    const [a, b, c] = running.map((e) => e.envelopeId) as [string, string, string];
    await lifecycle().start({ envelopeId: a });
    const done = await lifecycle().complete({
      envelopeId: a,
      response: usage(running[0]?.request?.requestId ?? "", 600),
    });
    expect(done.envelope?.state).toBe(LifecycleState.COMPLETED);
    await lifecycle().fail({
      envelopeId: b,
      error: { contractVersion: "2.1", status: "failed", error: { category: "model", code: "X", message: "m" } },
      usage: { promptTokens: 200, outputTokens: 100 },
    });
    await lifecycle().cancel({ envelopeId: c });

    // 600 + 300 tokens spent; the rest of the 3000 reserved is back. Explain sees the same counters.
    const explained = await admission().explain({ request: request(tenant, 10_000) });
    expect(explained.admissible).toBe(true);
    expect(explained.bestGrant?.tokens).toBe(10_000 - 900);
    expect(explained.grantReasons.map((r) => r.dimension)).toEqual(["tokens"]);
    expect((await admission().admit(request(tenant, 1000))).granted?.tokens).toBe(1000);
  });

  it("caps steps per request, and refuses a minimum above that cap as a policy error", async () => {
    const tenant = `tenant-${randomUUID()}`;
    const capped = await admission().admit(
      request(tenant, 1000, (r) => {
        (r.budget as NonNullable<RuntimeRequest["budget"]>).maxSteps = 6;
      }),
    );
    expect(capped.granted?.steps).toBe(4);
    expect(capped.decision?.reasons.map((r) => r.dimension)).toEqual(["steps"]);
    const { error, envelope } = await rejection(
      admission().admit(
        request(tenant, 1000, (r) => {
          const budget = r.budget as NonNullable<RuntimeRequest["budget"]>;
          budget.maxSteps = 6;
          budget.minimumAcceptable = { $typeName: "envelope.v1.BudgetMinimum", steps: 5, resources: {} };
        }),
      ),
    );
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(envelope.error).toMatchObject({ category: "policy", code: "GRANT_BELOW_MINIMUM", retryable: false });
    expect(envelope.error?.violations.map((v) => v.field)).toEqual(["budget.minimumAcceptable.steps"]);
  });

  it("takes a contract 2.0 request, which has no minimum, unchanged", async () => {
    const envelope = await admission().admit(
      request(`tenant-${randomUUID()}`, 1000, (r) => {
        r.contractVersion = "2.0";
      }),
    );
    expect(envelope.decision?.warnings).toEqual([]);
    expect(envelope.granted?.tokens).toBe(1000);
  });
});

describe("budgets with a policy bundle, over gRPC on SQLite", () => {
  let t: TestServer;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "envelope-policy-"));
    const file = join(dir, "policy.yaml");
    writeFileSync(
      file,
      [
        'version: "budgets-test-1"',
        "rules:",
        "  - name: big-needs-approval",
        "    expression: requested.tokens <= 5000",
        "    message: more than 5000 tokens needs a reviewer",
        "    effect: require_approval",
        "  - name: high-risk-cap",
        '    match: request.risk.level == "high"',
        "    cap: { dimension: tokens, value: 3000 }",
        "    message: high risk gets at most 3000 tokens",
        "    effect: cap",
        "",
      ].join("\n"),
    );
    t = await startTestServer({ config: { budgets, policy: { file } } });
  });
  afterAll(async () => {
    await t.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const ask = (tenant: string, tokens: number, risk = "medium") => {
    const r = freshRequest();
    (r.tenant as NonNullable<RuntimeRequest["tenant"]>).id = tenant;
    (r.risk as NonNullable<RuntimeRequest["risk"]>).level = risk;
    const budget = r.budget as NonNullable<RuntimeRequest["budget"]>;
    budget.maxTokens = tokens;
    budget.maxSteps = 2;
    return r;
  };

  it("reserves for an envelope held for approval, and Deny gives the reservation back", async () => {
    const tenant = `tenant-${randomUUID()}`;
    const admission = t.clients["gRPC (grpc-js port)"];
    const held = await admission.admit(ask(tenant, 8000));
    expect(held.state).toBe(LifecycleState.PENDING_APPROVAL);
    expect(held.granted?.tokens).toBe(8000);
    // 2000 of the day's 10000 are left while the held one waits.
    const next = await admission.admit(ask(tenant, 4000));
    expect(next.granted?.tokens).toBe(2000);
    await t.lifecycle["gRPC (grpc-js port)"].deny({ envelopeId: held.envelopeId, reason: "too big" });
    expect((await admission.admit(ask(tenant, 4000))).granted?.tokens).toBe(4000);
  });

  it("budgets grant from what the policy's cap leaves, never more", async () => {
    const tenant = `tenant-${randomUUID()}`;
    const capped = await t.clients["gRPC (grpc-js port)"].admit(ask(tenant, 4000, "high"));
    expect(capped.granted?.tokens).toBe(3000);
    const decisions = capped.decision?.policyDecisions.map((d) => [d.checkpoint, d.policyVersion.split("@")[0]]);
    expect(decisions).toEqual(
      expect.arrayContaining([
        ["admission.policy", "budgets-test-1"],
        ["admission.budget", "budgets"],
      ]),
    );
    // 10000 - 3000 reserved: a request for 8000 (held for approval) gets the 7000 left.
    const held = await t.clients["gRPC (grpc-js port)"].admit(ask(tenant, 8000));
    expect([held.state, held.granted?.tokens, held.decision?.outcome]).toEqual([
      LifecycleState.PENDING_APPROVAL,
      7000,
      DecisionOutcome.PENDING_APPROVAL,
    ]);
  });
});

describe("an expired envelope's reservation, over gRPC on SQLite", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({
      // The helper's fresh data directory stays: only the sweeper's timing changes.
      config: { budgets, ledger: { expiryGraceMs: 0, sweepIntervalMs: 100 } as never },
    });
  });
  afterAll(async () => {
    await t.close();
  });

  it("is kept until a reviewer settles it with what the execution consumed", async () => {
    const tenant = `tenant-${randomUUID()}`;
    const admission = t.clients["gRPC (grpc-js port)"];
    const lifecycle = t.lifecycle["gRPC (grpc-js port)"];
    const request = freshRequest(Date.now(), 1500);
    (request.tenant as NonNullable<RuntimeRequest["tenant"]>).id = tenant;
    (request.budget as NonNullable<RuntimeRequest["budget"]>).maxTokens = 6000;
    const admitted = await admission.admit(request);
    await lifecycle.start({ envelopeId: admitted.envelopeId });
    await expect
      .poll(async () => (await lifecycle.getEnvelope({ envelopeId: admitted.envelopeId })).record?.envelope?.state, {
        timeout: 10_000,
        interval: 100,
      })
      .toBe(LifecycleState.EXPIRED);
    const explainFor = async (tokens: number) => {
      const r = freshRequest();
      (r.tenant as NonNullable<RuntimeRequest["tenant"]>).id = tenant;
      (r.budget as NonNullable<RuntimeRequest["budget"]>).maxTokens = tokens;
      return (await admission.explain({ request: r })).bestGrant?.tokens;
    };
    // Expired after dispatch: what it consumed is unknown, so its 6000 stay reserved.
    expect(await explainFor(10_000)).toBe(4000);
    const reviewed = await lifecycle.reviewExpired({
      envelopeId: admitted.envelopeId,
      usage: { promptTokens: 700, outputTokens: 300 },
      reason: "the provider's log shows one call",
    });
    expect(reviewed.envelope?.state).toBe(LifecycleState.EXPIRED);
    expect([reviewed.event?.fromState, reviewed.event?.toState, reviewed.event?.reason]).toEqual([
      LifecycleState.EXPIRED,
      LifecycleState.EXPIRED,
      "the provider's log shows one call",
    ]);
    expect(await explainFor(10_000)).toBe(9000);
    // A live envelope is not reviewed.
    const live = await admission.admit(freshRequest());
    const { error } = await rejection(lifecycle.reviewExpired({ envelopeId: live.envelopeId }));
    expect(error.code).toBe(Code.FailedPrecondition);
  });
});
