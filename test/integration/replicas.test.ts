// Several replicas on one PostgreSQL behave as one service: two servers, each with its own
// connections, over real sockets. Idempotency, lifecycle transitions and Watch hold across them.
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, expect, it } from "vitest";
import { loadConfig } from "../../src/config/config.js";
import { LifecycleState as S } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import type { LifecycleEvent, WatchEnvelopesResponse } from "../../src/gen/envelope/v1/lifecycle_service_pb.js";
import { rejection } from "../helpers/rejection.js";
import { freshRequest } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { createDatabase } from "../support/postgres.js";

let a: TestServer;
let b: TestServer;
let postgresUrl: string;
const dailyTokens = 50_000;
// One tenant (fresh in each database) has a daily allowance; the other tests' tenant has none.
const raceTenant = "tenant-race";
const budgets = loadConfig({
  overrides: { "budgets.definitions": [{ name: "daily", tenant: raceTenant, window: "day", tokens: dailyTokens }] },
}).budgets;
beforeAll(async () => {
  postgresUrl = await createDatabase();
  const ledger = { store: "postgres", postgresUrl, expiryGraceMs: 0, sweepIntervalMs: 3_600_000 } as const;
  // Both start at once, as replicas behind a load balancer would: migrations must not race.
  [a, b] = await Promise.all([
    startTestServer({ config: { budgets, ledger: ledger as never } }),
    startTestServer({ config: { budgets, ledger: ledger as never } }),
  ]);
});
afterAll(async () => {
  await Promise.all([a?.close(), b?.close()]);
});

const grpc = "gRPC (grpc-js port)" as const;

it("announces the PostgreSQL ledger", async () => {
  const capabilities = await a.clients[grpc].getCapabilities({});
  expect(capabilities.features).toEqual(expect.arrayContaining(["ledger", "ledger.postgres", "lifecycle.v1"]));
});

it("admits a request once, whichever replica each retry reaches", async () => {
  const request = freshRequest();
  const answers = await Promise.all(
    Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).clients[grpc].admit(request)),
  );
  expect(new Set(answers.map((e) => e.envelopeId)).size).toBe(1);
  const reused = await rejection(
    b.clients[grpc].admit({ ...request, requestId: randomUUID(), budget: { ...request.budget, maxSteps: 1 } } as never),
  );
  expect(reused.error.code).toBe(Code.AlreadyExists);
});

it("moves an envelope on one replica and shows it on the other; racing ends let exactly one win", async () => {
  const { envelopeId } = await a.clients[grpc].admit(freshRequest());
  await b.lifecycle[grpc].start({ envelopeId });
  expect((await a.lifecycle[grpc].getEnvelope({ envelopeId })).record?.envelope?.state).toBe(S.RUNNING);

  const outcomes = await Promise.allSettled([
    a.lifecycle[grpc].cancel({ envelopeId, reason: "from a" }),
    b.lifecycle[grpc].cancel({ envelopeId, reason: "from b" }),
  ]);
  expect(outcomes.map((o) => o.status).sort()).toEqual(["fulfilled", "rejected"]);
  const { record } = await b.lifecycle[grpc].getEnvelope({ envelopeId });
  expect(record?.events.map((e) => e.toState)).toEqual([S.RECEIVED, S.ADMITTED, S.RUNNING, S.CANCELLED]);
});

it("streams, from either replica, every event committed through both, in one order without gaps", async () => {
  const tenant = `tenant-${randomUUID()}`;
  const request = () => {
    const r = freshRequest();
    (r.tenant as NonNullable<typeof r.tenant>).id = tenant;
    return r;
  };
  const admitted = await Promise.all(
    Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).clients[grpc].admit(request())),
  );
  await Promise.all(admitted.map((e, i) => (i % 2 === 0 ? b : a).lifecycle[grpc].start({ envelopeId: e.envelopeId })));

  const take = async (stream: AsyncIterable<WatchEnvelopesResponse>, n: number) => {
    const out: LifecycleEvent[] = [];
    for await (const { event } of stream) {
      if (event !== undefined) out.push(event);
      if (out.length === n) break;
    }
    return out;
  };
  const expected = admitted.length * 3; // received, admitted, running
  const fromA = await take(a.lifecycle[grpc].watchEnvelopes({ tenantId: tenant, fromBeginning: true }), expected);
  const fromB = await take(
    b.lifecycle["Connect binary over h2c"].watchEnvelopes({ tenantId: tenant, fromBeginning: true }),
    expected,
  );
  expect(fromA.map((e) => e.cursor)).toEqual(fromB.map((e) => e.cursor));
  const cursors = fromA.map((e) => Number(e.cursor));
  expect(cursors).toEqual([...cursors].sort((x, y) => x - y));
  expect(new Set(fromA.map((e) => `${e.envelopeId}/${e.envelopeSequence}`)).size).toBe(expected);

  // A live watch on one replica sees an event committed through the other.
  const controller = new AbortController();
  const live = take(
    a.lifecycle[grpc].watchEnvelopes(
      { tenantId: tenant, afterCursor: fromA.at(-1)?.cursor ?? "" },
      { signal: controller.signal },
    ),
    1,
  );
  await b.lifecycle[grpc].cancel({ envelopeId: admitted[0]?.envelopeId ?? "" });
  const [event] = await live;
  controller.abort();
  expect(event).toMatchObject({ envelopeId: admitted[0]?.envelopeId, toState: S.CANCELLED });
});

it("sweeps expired envelopes from either replica exactly once", async () => {
  const short = await Promise.all(
    Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? a : b).clients[grpc].admit(freshRequest(Date.now(), 1_000))),
  );
  await new Promise((r) => setTimeout(r, 1_100));
  const [fromA, fromB] = await Promise.all([a.server.maintenance?.runOnce(), b.server.maintenance?.runOnce()]);
  expect((fromA?.expired ?? 0) + (fromB?.expired ?? 0)).toBeGreaterThanOrEqual(short.length);
  for (const e of short) {
    const { record } = await a.lifecycle[grpc].getEnvelope({ envelopeId: e.envelopeId });
    expect(record?.events.filter((x) => x.toState === S.EXPIRED)).toHaveLength(1);
  }
});

it("never grants more than a tenant's budget to many clients racing through both replicas, and settles to the usage", async () => {
  const tenant = raceTenant;
  // 80 clients ask for 1,000 to 3,000 tokens each: about three times the budget in all.
  const asks = Array.from({ length: 80 }, (_, i) => 1000 + ((i * 739) % 2001));
  const ask = (tokens: number) => {
    const request = freshRequest();
    (request.tenant as NonNullable<typeof request.tenant>).id = tenant;
    (request.budget as NonNullable<typeof request.budget>).maxTokens = tokens;
    return request;
  };
  // One admission first, so that the counters exist and the racers do not queue on creating them.
  const first = await a.clients[grpc].admit(ask(1000));
  const answers = await Promise.allSettled(
    asks.map((tokens, i) => {
      return (i % 2 === 0 ? a : b).clients[grpc].admit(ask(tokens));
    }),
  );
  const admitted = [first, ...answers.flatMap((x) => (x.status === "fulfilled" ? [x.value] : []))];
  const refused = answers.flatMap((x) => (x.status === "rejected" ? [ConnectError.from(x.reason)] : []));
  expect(refused.every((e) => e.code === Code.ResourceExhausted)).toBe(true);
  const granted = admitted.reduce((sum, e) => sum + (e.granted?.tokens ?? 0), 0);
  // Demand exceeds the budget, so it is used up exactly, never exceeded.
  expect(granted).toBe(dailyTokens);
  expect(refused.length).toBeGreaterThan(0);

  // Each execution reports some usage, one of them above its grant; each replica settles half.
  const used = admitted.map((e, i) =>
    i === 0 ? (e.granted?.tokens ?? 0) + 50 : Math.floor((e.granted?.tokens ?? 0) / 3),
  );
  await Promise.all(
    admitted.map(async (e, i) => {
      const replica = i % 2 === 0 ? b : a;
      await replica.lifecycle[grpc].start({ envelopeId: e.envelopeId });
      await replica.lifecycle[grpc].complete({
        envelopeId: e.envelopeId,
        response: {
          contractVersion: "2.1",
          requestId: e.request?.requestId ?? "",
          status: "completed",
          usage: { promptTokens: used[i] ?? 0, outputTokens: 0 },
        },
      });
    }),
  );
  const client = new pg.Client({ connectionString: postgresUrl });
  await client.connect();
  const { rows } = await client.query(
    "SELECT reserved::int, spent::int FROM budget_counters WHERE budget_key = $1 AND dimension = 'tokens'",
    [`daily/tenant:${tenant}`],
  );
  await client.end();
  expect(rows).toEqual([{ reserved: 0, spent: used.reduce((x, y) => x + y, 0) }]);
});
