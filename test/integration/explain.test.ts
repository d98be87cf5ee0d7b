// Explain over real sockets: Admit's judgement without admitting. Every blocking reason, in Admit's
// order, and the best grant possible now; nothing reaches the ledger.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DecisionOutcome } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import { freshRequest } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t.close();
});

describe.each(["gRPC (grpc-js port)", "Connect JSON over HTTP/1.1"] as const)("over %s", (protocol) => {
  it("gives the best grant now and why it is smaller, and records nothing", async () => {
    const request = freshRequest();
    const tenant = `tenant-${randomUUID()}`;
    (request.tenant as NonNullable<typeof request.tenant>).id = tenant;
    (request.budget as NonNullable<typeof request.budget>).maxTokens = 1_000_000;
    const answer = await t.clients[protocol].explain({ request });
    expect(answer.admissible).toBe(true);
    expect(answer.outcome).toBe(DecisionOutcome.ADMITTED_PARTIAL);
    expect(answer.blockingReasons).toEqual([]);
    expect(answer.bestGrant).toMatchObject({ tokens: 128_000, costUsdMicros: 50_000n, steps: 6 });
    expect(answer.bestGrant?.deadline).toEqual(request.deadlineUtc);
    expect(answer.grantReasons.map((r) => [r.code, r.dimension])).toEqual([["GRANT_CLAMPED", "tokens"]]);
    const listed = await t.lifecycle[protocol].listEnvelopes({ tenantId: tenant });
    expect(listed.envelopes).toEqual([]);
    // Explaining does not use up the request: Admit still admits it.
    expect((await t.clients[protocol].admit(request)).policyScope?.tenantId).toBe(tenant);
  });

  it("lists every blocking reason: all validation violations at once", async () => {
    const request = freshRequest();
    (request.risk as NonNullable<typeof request.risk>).level = "severe";
    (request.budget as NonNullable<typeof request.budget>).maxSteps = 0;
    const answer = await t.clients[protocol].explain({ request });
    expect(answer.admissible).toBe(false);
    expect(answer.outcome).toBe(DecisionOutcome.REJECTED);
    expect(answer.blockingReasons.map((r) => [r.category, r.code])).toEqual([["validation", "REQUEST_INVALID"]]);
    expect(answer.blockingReasons[0]?.violations.map((v) => v.field).sort()).toEqual(["budget.maxSteps", "risk.level"]);
    expect(answer.bestGrant).toBeUndefined();
  });

  it("reports a policy refusal of a valid request", async () => {
    const request = freshRequest();
    // gpu is offered by default; tpu is not.
    (request.budget as NonNullable<typeof request.budget>).resources = { tpu: 1 };
    const answer = await t.clients[protocol].explain({ request });
    expect(answer.admissible).toBe(false);
    expect(answer.blockingReasons.map((r) => [r.category, r.code])).toEqual([["policy", "RESOURCE_NOT_OFFERED"]]);
  });
});
