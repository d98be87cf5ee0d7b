// Each budget's failure policy, over gRPC on PostgreSQL: when an admission cannot have its budget
// counters' row locks within ledger.budgetLockTimeout (a stuck session holds them), a budget that
// fails open lets it in without reserving, marked degraded with the reason; one that fails closed
// refuses it with a retryable dependency error. SQLite has one writer, so nothing there waits.
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, expect, it } from "vitest";
import { loadConfig } from "../../src/config/config.js";
import type { RuntimeRequest } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { rejection } from "../helpers/rejection.js";
import { freshRequest } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { createDatabase } from "../support/postgres.js";

let t: TestServer;
let postgresUrl: string;
beforeAll(async () => {
  postgresUrl = await createDatabase();
  const { budgets } = loadConfig({
    overrides: {
      "budgets.definitions": [
        // A rate limit: better to admit unmetered for a moment than to stop the tenant.
        { name: "rate", tenant: "*", window: "minute", tokens: 1_000_000, onUnavailable: "open" },
        // Spend: never admitted unmetered.
        { name: "spend", tenant: "tenant-strict", window: "day", costUsd: 100 },
      ],
    },
  });
  t = await startTestServer({
    config: { budgets, ledger: { store: "postgres", postgresUrl, budgetLockTimeoutMs: 200 } as never },
  });
});
afterAll(async () => {
  await t?.close();
});

const admit = (tenant: string) => {
  const r = freshRequest();
  (r.tenant as NonNullable<RuntimeRequest["tenant"]>).id = tenant;
  return t.clients["gRPC (grpc-js port)"].admit(r);
};

it("admits fail-open budgets degraded and refuses fail-closed ones while the counters are held", async () => {
  // The counters exist once each tenant has been admitted.
  for (const tenant of ["tenant-lenient", "tenant-strict"]) {
    const first = await admit(tenant);
    expect(first.decision?.warnings).toEqual([]);
  }
  const stuck = new pg.Client({ connectionString: postgresUrl });
  await stuck.connect();
  try {
    await stuck.query("BEGIN");
    await stuck.query("SELECT * FROM budget_counters FOR UPDATE");

    const degraded = await admit("tenant-lenient");
    expect(degraded.granted?.tokens).toBe(4000);
    expect(degraded.decision?.warnings.map((w) => w.code)).toEqual(["DEGRADED"]);
    expect(degraded.decision?.warnings[0]?.message).toContain('budget "rate"');
    expect(degraded.decision?.policyDecisions.find((d) => d.checkpoint === "admission.budget")?.effect).toBe(
      "degraded",
    );
    // The ledger keeps the mark with the envelope.
    const { record } = await t.lifecycle["gRPC (grpc-js port)"].getEnvelope({ envelopeId: degraded.envelopeId });
    expect(record?.envelope?.decision?.warnings.map((w) => w.code)).toEqual(["DEGRADED"]);

    const { error, envelope } = await rejection(admit("tenant-strict"));
    expect(error.code).toBe(Code.Unavailable);
    expect(envelope.error).toMatchObject({
      category: "dependency.unavailable",
      code: "BUDGET_UNAVAILABLE",
      retryable: true,
    });
    expect(envelope.error?.message).toContain('budget "spend"');
  } finally {
    await stuck.query("ROLLBACK");
    await stuck.end();
  }

  // Once the counters are free, admissions reserve again; the degraded one reserved nothing.
  const normal = await admit("tenant-lenient");
  expect(normal.decision?.warnings).toEqual([]);
  const check = new pg.Client({ connectionString: postgresUrl });
  await check.connect();
  // Summed over windows: the test may straddle a minute, and the "rate" budget's window is one.
  const { rows } = await check.query(
    "SELECT sum(reserved)::int AS reserved FROM budget_counters WHERE budget_key = 'rate/tenant:tenant-lenient' AND dimension = 'tokens'",
  );
  await check.end();
  expect(rows).toEqual([{ reserved: 8000 }]);
});
