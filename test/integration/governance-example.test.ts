// The README's governance walk-through, run against examples/governance.yaml as committed: two
// tenants, a clamped grant, a refusal below the caller's minimum, an approval by a reviewer, and a
// tenant that cannot reach the other's envelopes.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, it } from "vitest";
import { loadConfig } from "../../src/config/config.js";
import { DecisionOutcome, LifecycleState } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import type { RuntimeRequest } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { writeTokensFile } from "../helpers/credentials.js";
import { rejection } from "../helpers/rejection.js";
import { freshRequest } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const root = new URL("../../", import.meta.url);
const dir = mkdtempSync(join(tmpdir(), "envelope-governance-"));
let t: TestServer;
let tokens: Record<string, string>;
beforeAll(async () => {
  const written = writeTokensFile(dir, ["acme-backend", "acme-reviewer", "globex-backend"]);
  tokens = written.tokens;
  // The example as committed; only the files it names are put where this test keeps them.
  const config = loadConfig({
    file: fileURLToPath(new URL("examples/governance.yaml", root)),
    overrides: { "tokens.file": written.file, "policy.file": fileURLToPath(new URL("examples/policy.yaml", root)) },
  });
  const { grpc: _g, http: _h, ledger: _l, ...rest } = config;
  t = await startTestServer({ config: { ...rest, grpc: { auth: "token" }, http: { auth: "token" } } });
});
afterAll(async () => {
  await t?.close();
  rmSync(dir, { recursive: true, force: true });
});

const as = (name: string) => ({ headers: { authorization: `Bearer ${tokens[name]}` } });
const admission = () => t.clients["gRPC (grpc-js port)"];
const lifecycle = () => t.lifecycle["gRPC (grpc-js port)"];
/** The sample request (tenant-acme, user:alice, medium risk, customer PII) asking for `tokens`. */
const ask = (tokens: number, edit: (r: RuntimeRequest) => void = () => {}) => {
  const r = freshRequest();
  (r.budget as NonNullable<RuntimeRequest["budget"]>).maxTokens = tokens;
  edit(r);
  return r;
};

it("grants alice in full while her hourly allowance lasts, then clamps to what is left", async () => {
  expect((await admission().admit(ask(15_000), as("acme-backend"))).granted?.tokens).toBe(15_000);
  const clamped = await admission().admit(ask(8000), as("acme-backend"));
  expect(clamped.granted?.tokens).toBe(5000);
  expect(clamped.decision?.outcome).toBe(DecisionOutcome.ADMITTED_PARTIAL);
  expect(clamped.decision?.reasons[0]?.message).toContain('budget "acme-per-user" has 5000 tokens left this hour');
});

it("refuses alice below her minimum once the hour's tokens are reserved, saying when to retry", async () => {
  const { error, envelope } = await rejection(
    admission().admit(
      ask(4000, (r) => {
        (r.budget as NonNullable<RuntimeRequest["budget"]>).minimumAcceptable = {
          $typeName: "envelope.v1.BudgetMinimum",
          tokens: 1000,
          resources: {},
        };
      }),
      as("acme-backend"),
    ),
  );
  expect(error.code).toBe(Code.ResourceExhausted);
  expect(envelope.error?.code).toBe("BUDGET_EXHAUSTED");
  expect(envelope.error?.retryAfterUtc).toBeDefined();
  // Another user of the tenant has an allowance of their own.
  const bob = await admission().admit(
    ask(4000, (r) => {
      (r.actor as NonNullable<RuntimeRequest["actor"]>).subject = "user:bob@example.test";
    }),
    as("acme-backend"),
  );
  expect(bob.granted?.tokens).toBe(4000);
});

it("holds a high-risk PII request for approval; the requester cannot approve it, the reviewer does", async () => {
  const held = await admission().admit(
    ask(1000, (r) => {
      (r.actor as NonNullable<RuntimeRequest["actor"]>).subject = "user:carol@example.test";
      (r.risk as NonNullable<RuntimeRequest["risk"]>).level = "high";
    }),
    as("acme-backend"),
  );
  expect(held.state).toBe(LifecycleState.PENDING_APPROVAL);
  // Separation of duties: the backend that made the request cannot approve it itself.
  const own = await rejection(lifecycle().approve({ envelopeId: held.envelopeId }, as("acme-backend")));
  expect(own.error.code).toBe(Code.PermissionDenied);
  expect(own.envelope.error?.code).toBe("APPROVER_IS_REQUESTER");
  const approved = await lifecycle().approve(
    { envelopeId: held.envelopeId, reason: "case reviewed" },
    as("acme-reviewer"),
  );
  expect(approved.envelope?.state).toBe(LifecycleState.ADMITTED);
  expect(approved.event?.caller).toBe("token:acme-reviewer");
});

it("keeps the tenants apart: globex can neither admit for acme nor see its envelopes", async () => {
  const acme = await admission().admit(
    ask(10, (r) => {
      (r.actor as NonNullable<RuntimeRequest["actor"]>).subject = "user:dave@example.test";
    }),
    as("acme-backend"),
  );
  const refused = await rejection(admission().admit(ask(10), as("globex-backend")));
  expect(refused.error.code).toBe(Code.PermissionDenied);
  const hidden = await rejection(lifecycle().getEnvelope({ envelopeId: acme.envelopeId }, as("globex-backend")));
  expect(hidden.error.code).toBe(Code.NotFound);
});
