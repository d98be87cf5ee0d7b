// Admit and GetCapabilities over real sockets, for every protocol a client may use.
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DecisionOutcome, ExecutionKind, LifecycleState } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import { RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { rejection } from "../helpers/rejection.js";
import { freshRequest } from "../helpers/requests.js";
import { protocolNames, startTestServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t.close();
});

describe.each(protocolNames)("over %s", (protocol) => {
  const client = () => t.clients[protocol];

  it("admits the sample request and answers requested and granted side by side", async () => {
    const request = freshRequest();
    const envelope = await client().admit(request);
    expect(envelope.envelopeId).toMatch(/^env_[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(envelope.state).toBe(LifecycleState.ADMITTED);
    expect(envelope.decision?.outcome).toBe(DecisionOutcome.ADMITTED);
    expect(envelope.request?.requestId).toBe(request.requestId);
    expect(envelope.kind).toBe(ExecutionKind.AGENT_WORKFLOW);
    expect(envelope.requested).toMatchObject({ tokens: 4000, costUsdMicros: 50_000n, steps: 6 });
    expect(envelope.granted).toMatchObject({ tokens: 4000, costUsdMicros: 50_000n, steps: 6 });
    expect(envelope.granted?.deadline).toEqual(request.deadlineUtc);
    expect(envelope.decision?.policyDecisions[0]?.policyVersion).toMatch(/^static-limits@[0-9a-f]{12}$/);
    expect(envelope.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(envelope.policyScope).toMatchObject({ tenantId: "tenant-acme", riskLevel: "medium" });
  });

  it("grants less than requested when a limit applies, and says why", async () => {
    const request = freshRequest();
    (request.budget as NonNullable<typeof request.budget>).maxTokens = 1_000_000;
    const envelope = await client().admit(request);
    expect(envelope.decision?.outcome).toBe(DecisionOutcome.ADMITTED_PARTIAL);
    expect(envelope.requested?.tokens).toBe(1_000_000);
    expect(envelope.granted?.tokens).toBe(128_000);
    expect(envelope.decision?.reasons).toEqual([
      expect.objectContaining({ code: "GRANT_CLAMPED", dimension: "tokens" }),
    ]);
  });

  it("rejects an unsupported contract major, naming the supported versions", async () => {
    const request = freshRequest();
    request.contractVersion = "3.0";
    const { error, envelope } = await rejection(client().admit(request));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(envelope.error).toMatchObject({
      category: "validation",
      code: "CONTRACT_VERSION_UNSUPPORTED",
      retryable: false,
    });
    expect(envelope.error?.message).toContain("2.x");
    expect(envelope.error?.violations.map((v) => v.field)).toEqual(["contractVersion"]);
    expect(envelope.requestId).toBe(request.requestId);
  });

  it("accepts a newer minor of a supported major with a warning", async () => {
    const request = freshRequest();
    request.contractVersion = "2.9";
    const envelope = await client().admit(request);
    expect(envelope.decision?.warnings.map((w) => [w.code, w.field])).toEqual([
      ["CONTRACT_VERSION_NEWER_MINOR", "contractVersion"],
    ]);
  });

  it("reports every violation at once with its field path", async () => {
    const request = create(RuntimeRequestSchema, {
      ...freshRequest(Date.now(), -1000),
      actor: undefined,
      requestId: "not-a-uuid",
    });
    const { error, envelope } = await rejection(client().admit(request));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(envelope.error?.code).toBe("REQUEST_INVALID");
    expect(envelope.error?.violations.map((v) => [v.field, v.rule])).toEqual(
      expect.arrayContaining([
        ["requestId", "string.uuid"],
        ["actor", "required"],
        ["deadlineUtc", "deadline.future"],
      ]),
    );
  });

  it("rejects a resource that is not offered as a policy error", async () => {
    const request = freshRequest();
    (request.budget as NonNullable<typeof request.budget>).resources = { tpu: 1 };
    const { error, envelope } = await rejection(client().admit(request));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(envelope.error).toMatchObject({ category: "policy", code: "RESOURCE_NOT_OFFERED" });
    expect(envelope.error?.violations[0]?.field).toBe('budget.resources["tpu"]');
  });

  it("uses the caller's W3C trace id", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const envelope = await client().admit(freshRequest(), {
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    });
    expect(envelope.traceId).toBe(traceId);
  });

  it("answers GetCapabilities with versions, limits, features and the error table", async () => {
    const caps = await client().getCapabilities({});
    expect(caps.contractVersion).toBe("2.1");
    expect(caps.supportedContractVersions).toEqual(["2.x"]);
    expect(caps.limits?.maxTokensPerRequest).toBe(128_000);
    expect(caps.limits?.maxMessageBytes).toBe(1024 * 1024);
    expect(caps.features).toContain("grpc.reflection.v1");
    expect(caps.features).toContain("admission.explain");
    expect(caps.errorCategories.find((c) => c.category === "capacity")).toMatchObject({
      grpcCode: "RESOURCE_EXHAUSTED",
      retryable: true,
    });
  });
});

it("gives every protocol the same decision for the same request", async () => {
  const request = freshRequest();
  (request.budget as NonNullable<typeof request.budget>).maxSteps = 1000;
  const answers = await Promise.all(
    // Each its own operation: a fresh request id and idempotency key, or the ledger would answer
    // every call after the first with the first envelope.
    protocolNames.map((p) =>
      t.clients[p].admit({
        ...request,
        requestId: crypto.randomUUID(),
        task: { ...(request.task as NonNullable<typeof request.task>), idempotencyKey: crypto.randomUUID() },
      }),
    ),
  );
  const comparable = answers.map((e) => ({
    kind: e.kind,
    requested: e.requested,
    granted: e.granted,
    outcome: e.decision?.outcome,
    reasons: e.decision?.reasons.map((r) => [r.code, r.dimension, r.message]),
  }));
  for (const c of comparable) expect(c).toEqual(comparable[0]);
  expect(new Set(answers.map((e) => e.envelopeId)).size).toBe(answers.length);
});
