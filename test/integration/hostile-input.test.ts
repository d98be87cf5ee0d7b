// Hostile input over gRPC, on both stores: each attempt gets its stable error category and, once the
// caller is authenticated, is recorded as a rejected envelope that the tenant's reviewers can read.
// A caller that cannot be authenticated is refused before anything of its request is read, and
// nothing of it is recorded (only a log line): the ledger is not writable by strangers.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/config.js";
import { DecisionOutcome, LifecycleState } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import type { RuntimeRequest } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { writeTokensFile } from "../helpers/credentials.js";
import { rejection } from "../helpers/rejection.js";
import { freshRequest } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { createDatabase } from "../support/postgres.js";

describe.each(["sqlite", "postgres"] as const)("hostile input on %s", (store) => {
  const dir = mkdtempSync(join(tmpdir(), "envelope-hostile-"));
  let t: TestServer;
  let tokens: Record<string, string>;
  beforeAll(async () => {
    const written = writeTokensFile(dir, ["acme-backend", "acme-auditor"]);
    tokens = written.tokens;
    const policy = join(dir, "policy.yaml");
    writeFileSync(
      policy,
      [
        'version: "hostile-1"',
        "rules:",
        "  - name: no-critical",
        '    expression: request.risk.level != "critical"',
        "    message: critical-risk requests are not admitted",
        "    effect: deny",
        "",
      ].join("\n"),
    );
    const { budgets } = loadConfig({
      overrides: { "budgets.definitions": [{ name: "daily", tenant: "tenant-acme", window: "day", tokens: 5000 }] },
    });
    const postgres = store === "postgres" ? { postgresUrl: await createDatabase() } : {};
    t = await startTestServer({
      config: {
        grpc: { auth: "token" },
        http: { auth: "token" },
        tokens: { file: written.file },
        authorization: {
          callers: {
            "token:acme-backend": { tenants: ["tenant-acme"], actors: ["user:*"], scopes: ["case.*"] },
            "token:acme-auditor": { tenants: ["tenant-acme"] },
          },
        },
        policy: { file: policy },
        budgets,
        ledger: { store, ...postgres },
      } as never,
    });
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const admission = () => t.clients["gRPC (grpc-js port)"];
  const lifecycle = () => t.lifecycle["gRPC (grpc-js port)"];
  const as = (name: string) => ({ headers: { authorization: `Bearer ${tokens[name] ?? name}` } });
  const request = (edit: (r: RuntimeRequest) => void = () => {}) => {
    const r = freshRequest();
    (r.budget as NonNullable<RuntimeRequest["budget"]>).maxTokens = 1000;
    edit(r);
    return r;
  };

  /** The refusal of `r`, and the rejected envelope it was recorded as, read by the tenant's auditor. */
  async function refusedAndRecorded(r: RuntimeRequest, category: string, code: string, grpcCode: Code) {
    const { error, envelope } = await rejection(admission().admit(r, as("acme-backend")));
    expect(error.code).toBe(grpcCode);
    expect([envelope.error?.category, envelope.error?.code]).toEqual([category, code]);
    expect(envelope.envelopeId).not.toBe("");
    const { record } = await lifecycle().getEnvelope({ envelopeId: envelope.envelopeId }, as("acme-auditor"));
    expect(record?.envelope?.state).toBe(LifecycleState.REJECTED);
    expect(record?.envelope?.decision?.outcome).toBe(DecisionOutcome.REJECTED);
    expect(record?.envelope?.granted).toBeUndefined();
    expect(record?.envelope?.request?.requestId).toBe(r.requestId);
    expect(record?.error?.error?.code).toBe(code);
    expect(record?.events.map((e) => [e.toState, e.caller])).toEqual([
      [LifecycleState.RECEIVED, "token:acme-backend"],
      [LifecycleState.REJECTED, "token:acme-backend"],
    ]);
    expect(record?.events[1]?.reason).toBe(`${category} ${code}`);
    return envelope;
  }

  it("a spoofed actor: authorization, recorded", async () => {
    await refusedAndRecorded(
      request((r) => {
        (r.actor as NonNullable<RuntimeRequest["actor"]>).subject = "service:payroll";
      }),
      "authorization",
      "REQUEST_NOT_PERMITTED",
      Code.PermissionDenied,
    );
  });

  it("a scope beyond the caller's grant: authorization, recorded", async () => {
    await refusedAndRecorded(
      request((r) => {
        (r.permissions as NonNullable<RuntimeRequest["permissions"]>).scopes = ["billing.write"];
      }),
      "authorization",
      "REQUEST_NOT_PERMITTED",
      Code.PermissionDenied,
    );
  });

  it("a widened delegation: authorization, recorded", async () => {
    const parent = await admission().admit(request(), as("acme-backend"));
    await refusedAndRecorded(
      request((r) => {
        (r.actor as NonNullable<RuntimeRequest["actor"]>).delegationId = parent.envelopeId;
        (r.budget as NonNullable<RuntimeRequest["budget"]>).maxTokens = 2000;
      }),
      "authorization",
      "DELEGATION_NOT_PERMITTED",
      Code.PermissionDenied,
    );
  });

  it("a request a policy denies, whatever its task.input says about policy: policy, recorded", async () => {
    await refusedAndRecorded(
      request((r) => {
        (r.risk as NonNullable<RuntimeRequest["risk"]>).level = "critical";
        (r.task as NonNullable<RuntimeRequest["task"]>).input = { policy: { rules: [] }, budget: { tokens: 1e9 } };
      }),
      "policy",
      "POLICY_DENIED",
      Code.FailedPrecondition,
    );
  });

  it("an invalid request: validation, recorded", async () => {
    await refusedAndRecorded(
      request((r) => {
        (r.budget as NonNullable<RuntimeRequest["budget"]>).maxSteps = -1;
      }),
      "validation",
      "REQUEST_INVALID",
      Code.InvalidArgument,
    );
  });

  it("more than the budget leaves, with a minimum: capacity, recorded; a corrected retry is admitted", async () => {
    const r = request((x) => {
      const budget = x.budget as NonNullable<RuntimeRequest["budget"]>;
      budget.maxTokens = 6000;
      budget.minimumAcceptable = { $typeName: "envelope.v1.BudgetMinimum", tokens: 5500, resources: {} };
    });
    await refusedAndRecorded(r, "capacity", "BUDGET_EXHAUSTED", Code.ResourceExhausted);
    // The refusal took no idempotency slot: the same request id, asking for less, is admitted.
    (r.budget as NonNullable<RuntimeRequest["budget"]>).minimumAcceptable = undefined;
    (r.budget as NonNullable<RuntimeRequest["budget"]>).maxTokens = 500;
    expect((await admission().admit(r, as("acme-backend"))).state).toBe(LifecycleState.ADMITTED);
  });

  it("the auditor lists the tenant's refusals", async () => {
    const { envelopes } = await lifecycle().listEnvelopes(
      { tenantId: "tenant-acme", states: [LifecycleState.REJECTED] },
      as("acme-auditor"),
    );
    expect(envelopes.length).toBeGreaterThanOrEqual(6);
    expect(envelopes.every((e) => e.state === LifecycleState.REJECTED)).toBe(true);
  });

  it("an unknown or missing token: authentication, refused before the request is read, not recorded", async () => {
    const before = await lifecycle().listEnvelopes({ tenantId: "tenant-acme" }, as("acme-auditor"));
    for (const options of [as(`forged-${randomUUID()}`), {}]) {
      const { error, envelope } = await rejection(admission().admit(request(), options));
      expect(error.code).toBe(Code.Unauthenticated);
      expect(envelope.error?.category).toBe("authentication");
      expect(envelope.envelopeId).toBe("");
    }
    const after = await lifecycle().listEnvelopes({ tenantId: "tenant-acme" }, as("acme-auditor"));
    expect(after.envelopes.map((e) => e.envelopeId)).toEqual(before.envelopes.map((e) => e.envelopeId));
    expect(t.logs.filter((l) => l.event === "call.unauthenticated").length).toBeGreaterThanOrEqual(2);
  });
});
