// The ledger through the service, over real sockets, on both stores (a SQLite file, PostgreSQL): Admit records the
// envelope before answering, idempotency returns the original, the lifecycle RPCs follow the graph,
// and Get, List and Watch show what was recorded.
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorEnvelopeSchema } from "../../src/gen/envelope/v1/error_pb.js";
import { ExecutionKind, LifecycleState as S } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import type { LifecycleEvent, WatchEnvelopesResponse } from "../../src/gen/envelope/v1/lifecycle_service_pb.js";
import { RuntimeResponseSchema } from "../../src/gen/envelope/v1/runtime_response_pb.js";
import { rejection } from "../helpers/rejection.js";
import { freshRequest } from "../helpers/requests.js";
import { type ProtocolName, startTestServer, type TestServer } from "../helpers/server.js";
import { createDatabase } from "../support/postgres.js";

describe.each(["sqlite", "postgres"] as const)("ledger on %s", (store) => {
  let t: TestServer;
  beforeAll(async () => {
    const ledger = { store, expiryGraceMs: 0, sweepIntervalMs: 3_600_000 };
    const postgres = store === "postgres" ? { postgresUrl: await createDatabase() } : {};
    t = await startTestServer({ config: { ledger: { ...ledger, ...postgres } as never } });
  });
  afterAll(async () => {
    await t.close();
  });

  const protocols: ProtocolName[] = ["gRPC (grpc-js port)", "Connect JSON over HTTP/1.1", "gRPC-Web over HTTP/1.1"];

  function response(
    requestId: string,
    usage: { promptTokens: number; outputTokens: number; estimatedCostUsd: number },
  ) {
    return create(RuntimeResponseSchema, {
      contractVersion: "2.0",
      requestId,
      status: "completed",
      usage: { ...usage, steps: 2 },
    });
  }

  describe.each(protocols)("over %s", (protocol) => {
    const admission = () => t.clients[protocol];
    const lifecycle = () => t.lifecycle[protocol];

    it("records the admitted envelope, starts and completes it, and flags usage above the grant", async () => {
      const request = freshRequest();
      const admitted = await admission().admit(request);
      const envelopeId = admitted.envelopeId;

      const started = await lifecycle().start({ envelopeId, reason: "dispatched to worker-7" });
      expect(started.envelope?.state).toBe(S.RUNNING);
      expect(started.event).toMatchObject({ fromState: S.ADMITTED, toState: S.RUNNING, envelopeSequence: 3 });
      expect(started.event?.reason).toBe("dispatched to worker-7");

      // Granted: 4000 tokens, $0.05, 6 steps. Used: 4500 tokens (an overrun), $0.01, 2 steps.
      const completed = await lifecycle().complete({
        envelopeId,
        response: response(request.requestId, { promptTokens: 4000, outputTokens: 500, estimatedCostUsd: 0.01 }),
      });
      expect(completed.envelope?.state).toBe(S.COMPLETED);
      expect(completed.event?.usage).toMatchObject({
        tokens: 4500n,
        costUsdMicros: 10_000n,
        steps: 2n,
        overrunDimensions: ["tokens"],
      });

      const { record } = await lifecycle().getEnvelope({ envelopeId });
      expect(record?.envelope?.state).toBe(S.COMPLETED);
      expect(record?.envelope?.granted).toEqual(admitted.granted);
      expect(record?.envelope?.request?.requestId).toBe(request.requestId);
      expect(record?.events.map((e) => [e.fromState, e.toState])).toEqual([
        [S.UNSPECIFIED, S.RECEIVED],
        [S.RECEIVED, S.ADMITTED],
        [S.ADMITTED, S.RUNNING],
        [S.RUNNING, S.COMPLETED],
      ]);
      expect(record?.events.every((e) => e.caller === "unauthenticated")).toBe(true);
      const times = record?.events.map((e) => Number(e.occurredAt?.seconds) * 1e9 + (e.occurredAt?.nanos ?? 0)) ?? [];
      expect(times).toEqual([...times].sort((a, b) => a - b));
      expect(record?.response?.usage?.promptTokens).toBe(4000);
      expect(record?.usage?.overrunDimensions).toEqual(["tokens"]);
    });

    it("refuses a transition off the graph with the current state, and an unknown envelope", async () => {
      const { envelopeId } = await admission().admit(freshRequest());
      const early = await rejection(
        lifecycle().complete({
          envelopeId,
          response: response(randomUUID(), { promptTokens: 1, outputTokens: 1, estimatedCostUsd: 0 }),
        }),
      );
      expect(early.error.code).toBe(Code.FailedPrecondition);
      expect(early.envelope.error).toMatchObject({ category: "validation.state", code: "TRANSITION_NOT_ALLOWED" });
      expect(early.envelope.error?.message).toContain("the envelope is admitted");

      await lifecycle().cancel({ envelopeId, reason: "user gave up" });
      const late = await rejection(lifecycle().start({ envelopeId }));
      expect(late.envelope.error?.message).toMatch(/cancelled, a final state/);

      const missing = await rejection(lifecycle().start({ envelopeId: "env_NOPE" }));
      expect(missing.error.code).toBe(Code.NotFound);
      expect(missing.envelope.error).toMatchObject({ category: "validation.not-found", code: "ENVELOPE_NOT_FOUND" });

      const invalid = await rejection(lifecycle().start({ envelopeId: "" }));
      expect(invalid.error.code).toBe(Code.InvalidArgument);
      expect(invalid.envelope.error?.violations.map((v) => v.field)).toEqual(["envelopeId"]);
    });

    it("records a failure with its error envelope", async () => {
      const { envelopeId } = await admission().admit(freshRequest());
      const error = create(ErrorEnvelopeSchema, {
        contractVersion: "2.0",
        status: "failed",
        error: { category: "model", code: "MODEL_REFUSED", message: "refused", retryable: false },
      });
      const failed = await lifecycle().fail({ envelopeId, error });
      expect(failed.envelope?.state).toBe(S.FAILED);
      expect(failed.event?.error?.error?.code).toBe("MODEL_REFUSED");
      expect((await lifecycle().getEnvelope({ envelopeId })).record?.error?.error?.code).toBe("MODEL_REFUSED");
    });

    it("answers a repeated request with the original envelope, in its current state", async () => {
      const request = freshRequest();
      const first = await admission().admit(request);
      await lifecycle().start({ envelopeId: first.envelopeId });
      const again = await admission().admit(request);
      expect(again.envelopeId).toBe(first.envelopeId);
      expect(again.state).toBe(S.RUNNING);
      // A retry may draw a new request id; the idempotency key still names the same operation.
      const retried = await admission().admit({ ...request, requestId: randomUUID() });
      expect(retried.envelopeId).toBe(first.envelopeId);
      // ...and may send JSON objects' keys in another order (as Go's maps do): the same request.
      const input = request.task?.input ?? {};
      const reordered = Object.fromEntries(Object.entries(input).reverse());
      expect(Object.keys(reordered)).not.toEqual(Object.keys(input));
      const task = { ...(request.task as NonNullable<typeof request.task>), input: reordered };
      expect((await admission().admit({ ...request, requestId: randomUUID(), task })).envelopeId).toBe(
        first.envelopeId,
      );
    });

    it("refuses a request id reused by another tenant without naming that tenant's envelope", async () => {
      const request = freshRequest();
      const first = await admission().admit(request);
      const other = freshRequest();
      other.requestId = request.requestId;
      (other.tenant as NonNullable<typeof other.tenant>).id = "tenant-elsewhere";
      const conflict = await rejection(admission().admit(other));
      expect(conflict.error.code).toBe(Code.AlreadyExists);
      expect(conflict.envelope.error?.code).toBe("REQUEST_ID_REUSED");
      expect(conflict.envelope.envelopeId).toBe("");
      expect(conflict.envelope.error?.message).not.toContain(first.envelopeId);
    });

    it("refuses an idempotency key reused for a different request", async () => {
      const request = freshRequest();
      const first = await admission().admit(request);
      const changed = {
        ...request,
        requestId: randomUUID(),
        budget: { ...request.budget, maxSteps: 2 },
      } as typeof request;
      const conflict = await rejection(admission().admit(changed));
      expect(conflict.error.code).toBe(Code.AlreadyExists);
      expect(conflict.envelope).toMatchObject({ envelopeId: first.envelopeId });
      expect(conflict.envelope.error).toMatchObject({
        category: "validation.conflict",
        code: "IDEMPOTENCY_KEY_REUSED",
      });
    });
  });

  describe("ListEnvelopes", () => {
    it("pages through a tenant's envelopes newest first, with filters", async () => {
      const tenant = `tenant-${randomUUID()}`;
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const request = freshRequest();
        (request.tenant as NonNullable<typeof request.tenant>).id = tenant;
        ids.push((await t.clients["gRPC (grpc-js port)"].admit(request)).envelopeId);
      }
      await t.lifecycle["gRPC (grpc-js port)"].start({ envelopeId: ids[1] as string });
      const client = t.lifecycle["Connect JSON over HTTP/1.1"];
      const page1 = await client.listEnvelopes({ tenantId: tenant, pageSize: 3 });
      expect(page1.envelopes.map((e) => e.envelopeId)).toEqual(ids.slice().reverse().slice(0, 3));
      const page2 = await client.listEnvelopes({ tenantId: tenant, pageSize: 3, pageToken: page1.nextPageToken });
      expect(page2.envelopes.map((e) => e.envelopeId)).toEqual(ids.slice().reverse().slice(3));
      expect(page2.nextPageToken).toBe("");
      const running = await client.listEnvelopes({ tenantId: tenant, states: [S.RUNNING] });
      expect(running.envelopes.map((e) => [e.envelopeId, e.state])).toEqual([[ids[1], S.RUNNING]]);
      const kinds = await client.listEnvelopes({ tenantId: tenant, kinds: [ExecutionKind.INFERENCE] });
      expect(kinds.envelopes).toEqual([]);
      const window = await client.listEnvelopes({
        tenantId: tenant,
        receivedAfter: timestampFromMs(Date.now() + 60_000),
      });
      expect(window.envelopes).toEqual([]);

      const foreign = await rejection(
        client.listEnvelopes({ tenantId: "tenant-other", pageSize: 3, pageToken: page1.nextPageToken }),
      );
      expect(foreign.envelope.error?.violations.map((v) => v.field)).toEqual(["pageToken"]);
      const tooBig = await rejection(client.listEnvelopes({ pageSize: 5000 }));
      expect(tooBig.envelope.error?.violations.map((v) => v.field)).toEqual(["pageSize"]);
    });
  });

  describe("WatchEnvelopes", () => {
    async function take(stream: AsyncIterable<WatchEnvelopesResponse>, n: number): Promise<LifecycleEvent[]> {
      const out: LifecycleEvent[] = [];
      for await (const { event } of stream) {
        if (event !== undefined) out.push(event);
        if (out.length === n) break;
      }
      return out;
    }

    it.each(["gRPC (grpc-js port)", "Connect binary over h2c"] as ProtocolName[])(
      "streams a tenant's events in commit order and resumes from a cursor without gaps (%s)",
      async (protocol) => {
        const tenant = `tenant-${randomUUID()}`;
        const controller = new AbortController();
        const stream = t.lifecycle[protocol].watchEnvelopes({ tenantId: tenant }, { signal: controller.signal });
        const firstTwo = take(stream, 2);
        // The watch starts "from now": give it a moment to take its starting cursor.
        await new Promise((r) => setTimeout(r, 100));
        const request = freshRequest();
        (request.tenant as NonNullable<typeof request.tenant>).id = tenant;
        const { envelopeId } = await t.clients["gRPC (grpc-js port)"].admit(request);
        // Someone else's envelope must not show up.
        await t.clients["gRPC (grpc-js port)"].admit(freshRequest());
        const seen = await firstTwo;
        controller.abort();
        expect(seen.map((e) => [e.envelopeId, e.toState])).toEqual([
          [envelopeId, S.RECEIVED],
          [envelopeId, S.ADMITTED],
        ]);

        await t.lifecycle[protocol].start({ envelopeId });
        await t.lifecycle[protocol].cancel({ envelopeId });
        const resumed = await take(
          t.lifecycle[protocol].watchEnvelopes({ tenantId: tenant, afterCursor: seen[1]?.cursor ?? "" }),
          2,
        );
        expect(resumed.map((e) => e.toState)).toEqual([S.RUNNING, S.CANCELLED]);
        const all = await take(t.lifecycle[protocol].watchEnvelopes({ tenantId: tenant, fromBeginning: true }), 4);
        expect(all.map((e) => e.cursor)).toEqual([...seen, ...resumed].map((e) => e.cursor));
      },
    );

    it("refuses a cursor that is not one", async () => {
      const { envelope } = await rejection(
        take(t.lifecycle["Connect JSON over HTTP/1.1"].watchEnvelopes({ afterCursor: "yesterday" }), 1),
      );
      expect(envelope.error?.violations.map((v) => v.field)).toEqual(["afterCursor"]);
    });
  });

  describe("deadline sweeper", () => {
    it("expires envelopes past their deadline; after dispatch the outcome is ambiguous and needs review", async () => {
      const admission = t.clients["gRPC (grpc-js port)"];
      const lifecycle = t.lifecycle["gRPC (grpc-js port)"];
      const notStarted = await admission.admit(freshRequest(Date.now(), 1_000));
      const running = await admission.admit(freshRequest(Date.now(), 1_000));
      const later = await admission.admit(freshRequest());
      await lifecycle.start({ envelopeId: running.envelopeId });
      await new Promise((r) => setTimeout(r, 1_100));
      const swept = await t.server.maintenance?.runOnce();
      expect(swept?.expired).toBeGreaterThanOrEqual(2);

      const a = (await lifecycle.getEnvelope({ envelopeId: notStarted.envelopeId })).record;
      expect(a?.envelope?.state).toBe(S.EXPIRED);
      expect(a?.error?.error).toMatchObject({ category: "timeout", code: "EXPIRED_BEFORE_START", retryable: false });

      const b = (await lifecycle.getEnvelope({ envelopeId: running.envelopeId })).record;
      expect(b?.envelope?.state).toBe(S.EXPIRED);
      expect(b?.error?.error).toMatchObject({ code: "EXPIRED_AFTER_DISPATCH", retryable: false });
      expect(b?.error?.humanReview?.state).toBe("required");
      expect(b?.events.at(-1)).toMatchObject({ fromState: S.RUNNING, toState: S.EXPIRED, caller: "envelope" });

      expect((await lifecycle.getEnvelope({ envelopeId: later.envelopeId })).record?.envelope?.state).toBe(S.ADMITTED);
      const tooLate = await rejection(
        lifecycle.complete({
          envelopeId: running.envelopeId,
          response: response(randomUUID(), { promptTokens: 1, outputTokens: 1, estimatedCostUsd: 0 }),
        }),
      );
      expect(tooLate.envelope.error?.message).toMatch(/expired, a final state/);
    });
  });
});
