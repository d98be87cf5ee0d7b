// Delegation over real sockets: a request whose actor.delegationId names a parent envelope must fit
// inside it (tenant, state, scopes, tools, budget, deadline), so a sub-agent never widens authority.

import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { RuntimeRequest } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { rejection } from "../helpers/rejection.js";
import { freshRequest } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
let parentId: string;
beforeAll(async () => {
  t = await startTestServer();
  // The parent: scopes case.read and case.write, tool crm.case.update, 4000 tokens, $0.05, 6 steps.
  parentId = (await t.clients["gRPC (grpc-js port)"].admit(freshRequest())).envelopeId;
});
afterAll(async () => {
  await t.close();
});

/** A request delegated from the parent, changed by `edit`. */
function child(edit: (r: RuntimeRequest) => void = () => {}, nowMs = Date.now()): RuntimeRequest {
  const r = freshRequest(nowMs, 30_000);
  (r.actor as NonNullable<typeof r.actor>).delegationId = parentId;
  (r.actor as NonNullable<typeof r.actor>).subject = "agent:sub-planner";
  (r.permissions as NonNullable<typeof r.permissions>).scopes = ["case.read"];
  (r.budget as NonNullable<typeof r.budget>).maxTokens = 1000;
  (r.budget as NonNullable<typeof r.budget>).maxCostUsd = 0.01;
  (r.budget as NonNullable<typeof r.budget>).maxSteps = 2;
  edit(r);
  return r;
}

const grpc = () => t.clients["gRPC (grpc-js port)"];
const connect = () => t.clients["Connect JSON over HTTP/1.1"];

it("admits a delegated request that fits inside its parent", async () => {
  const envelope = await grpc().admit(child());
  expect(envelope.policyScope?.delegationId).toBe(parentId);
  expect(envelope.granted?.tokens).toBe(1000);
});

it("refuses every way a delegated request would widen its parent's authority, at once", async () => {
  const wider = child((r) => {
    (r.permissions as NonNullable<typeof r.permissions>).scopes = ["case.read", "case.delete"];
    (r.permissions as NonNullable<typeof r.permissions>).allowedTools = ["crm.case.update", "crm.case.purge"];
    (r.budget as NonNullable<typeof r.budget>).maxTokens = 5000;
    (r.budget as NonNullable<typeof r.budget>).maxCostUsd = 0.06;
    (r.budget as NonNullable<typeof r.budget>).maxSteps = 7;
  });
  // The parent's deadline is a minute after its request; this one asks for three.
  wider.deadlineUtc = { ...wider.deadlineUtc, seconds: (wider.deadlineUtc?.seconds ?? 0n) + 150n } as never;
  const { error, envelope } = await rejection(connect().admit(wider));
  expect(error.code).toBe(Code.PermissionDenied);
  expect(envelope.error).toMatchObject({ category: "authorization", code: "DELEGATION_NOT_PERMITTED" });
  expect(envelope.error?.violations.map((v) => [v.field, v.rule])).toEqual([
    ["permissions.scopes[1]", "delegation.scope"],
    ["permissions.allowedTools[1]", "delegation.tool"],
    ["budget.maxTokens", "delegation.budget"],
    ["budget.maxCostUsd", "delegation.budget"],
    ["budget.maxSteps", "delegation.budget"],
    ["deadlineUtc", "delegation.deadline"],
  ]);
});

it("refuses a delegation from an envelope that does not exist, belongs to another tenant, or has ended", async () => {
  const missing = await rejection(
    grpc().admit(child((r) => ((r.actor as NonNullable<typeof r.actor>).delegationId = "env_NOPE"))),
  );
  expect(missing.envelope.error?.violations.map((v) => v.rule)).toEqual(["delegation.exists"]);

  const foreign = await rejection(
    grpc().admit(child((r) => ((r.tenant as NonNullable<typeof r.tenant>).id = "tenant-other"))),
  );
  expect(foreign.envelope.error?.violations.map((v) => v.rule)).toEqual(["delegation.exists"]);

  const ended = (await grpc().admit(freshRequest())).envelopeId;
  await t.lifecycle["gRPC (grpc-js port)"].cancel({ envelopeId: ended });
  const fromEnded = await rejection(
    grpc().admit(child((r) => ((r.actor as NonNullable<typeof r.actor>).delegationId = ended))),
  );
  expect(fromEnded.envelope.error?.violations[0]?.message).toContain("is cancelled");
});

it("explains a delegated request with the delegation's reasons", async () => {
  const answer = await grpc().explain({
    request: child((r) => ((r.budget as NonNullable<typeof r.budget>).maxSteps = 9)),
  });
  expect(answer.admissible).toBe(false);
  expect(answer.blockingReasons.map((r) => r.code)).toEqual(["DELEGATION_NOT_PERMITTED"]);
  expect(answer.blockingReasons[0]?.violations.map((v) => v.field)).toEqual(["budget.maxSteps"]);
});

it("refuses a delegation it cannot check on a server without a ledger", async () => {
  const bare = await startTestServer({ config: { ledger: { store: "none" } as never } });
  try {
    const { envelope } = await rejection(bare.clients["gRPC (grpc-js port)"].admit(child()));
    expect(envelope.error?.violations.map((v) => v.rule)).toEqual(["delegation.verifiable"]);
  } finally {
    await bare.close();
  }
});

it("draws delegated budgets from the parent's grant: together they never exceed it", async () => {
  const parent = await grpc().admit(freshRequest()); // 4000 tokens, $0.05, 6 steps
  const from = (tokens: number) =>
    child((r) => {
      (r.actor as NonNullable<typeof r.actor>).delegationId = parent.envelopeId;
      (r.budget as NonNullable<typeof r.budget>).maxTokens = tokens;
      (r.budget as NonNullable<typeof r.budget>).maxSteps = 1;
    });
  const first = await grpc().admit(from(3000));
  expect(first.granted?.tokens).toBe(3000);
  const second = await grpc().admit(from(3000));
  expect(second.granted?.tokens).toBe(1000);
  expect(second.decision?.reasons[0]?.message).toContain("1000 tokens left of the parent envelope's grant");
  const { envelope } = await rejection(grpc().admit(from(3000)));
  expect(envelope.error).toMatchObject({ category: "capacity", code: "BUDGET_EXHAUSTED" });
  expect(envelope.error?.retryAfterUtc).toBeUndefined();
  // Explain sees the same: nothing is left now.
  expect((await grpc().explain({ request: from(10) })).admissible).toBe(false);

  // The first child used 500 of its 3000: the other 2500 go back to the parent's grant.
  await t.lifecycle["gRPC (grpc-js port)"].start({ envelopeId: first.envelopeId });
  await t.lifecycle["gRPC (grpc-js port)"].complete({
    envelopeId: first.envelopeId,
    response: {
      contractVersion: "2.1",
      requestId: first.request?.requestId ?? "",
      status: "completed",
      usage: { promptTokens: 500 },
    },
  });
  expect((await grpc().explain({ request: from(4000) })).bestGrant?.tokens).toBe(2500);
  expect((await grpc().admit(from(4000))).granted?.tokens).toBe(2500);
});
