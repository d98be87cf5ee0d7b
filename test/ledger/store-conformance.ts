// One conformance suite for every ledger store: each store's test file calls it with a way to open a
// fresh, empty store on real storage. What a store must do is defined here once.
import { randomUUID } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BudgetLine } from "../../src/core/budget.js";
import {
  DecisionOutcome,
  ExecutionEnvelopeSchema,
  LifecycleState as S,
} from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import type { AdmitEntry, LedgerStore, NewEvent } from "../../src/ledger/store.js";

export interface StoreFactory {
  /** A store on empty storage. */
  fresh(): Promise<LedgerStore>;
  /** The store reopened on the storage of the last fresh() (after close). */
  reopen(): Promise<LedgerStore>;
}

let idCounter = 0;
/** Ids that sort in creation order, like the ULIDs the service makes. */
const nextEnvelopeId = () => `env_${String(++idCounter).padStart(10, "0")}${randomUUID().slice(0, 8)}`;

export function entry(init: {
  tenantId?: string;
  idempotencyKey?: string;
  requestId?: string;
  deadlineMs?: number;
  atMs?: number;
  actorSubject?: string;
  kind?: number;
  requestHash?: string;
}): AdmitEntry {
  const atMs = init.atMs ?? 1_000_000;
  const envelopeId = nextEnvelopeId();
  const events: NewEvent[] = [
    { toState: S.RECEIVED, atMs, caller: "test", reason: "" },
    { toState: S.ADMITTED, atMs, caller: "test", reason: "within limits" },
  ];
  return {
    row: {
      envelopeId,
      tenantId: init.tenantId ?? "tenant-a",
      actorSubject: init.actorSubject ?? "user:alice",
      kind: init.kind ?? 2,
      state: S.ADMITTED,
      requestId: init.requestId ?? randomUUID(),
      idempotencyKey: init.idempotencyKey ?? "",
      requestHash: init.requestHash ?? "hash-1",
      receivedAtMs: atMs,
      deadlineMs: init.deadlineMs ?? 0,
      envelope: new TextEncoder().encode(envelopeId),
      response: null,
      error: null,
      usage: null,
    },
    events,
  };
}

/** A tenant's daily budget lines (window 1 day from epoch day 1), one per limit. */
function dailyLines(tenantId: string, limits: Record<string, number>): BudgetLine[] {
  return Object.entries(limits).map(([dimension, limit]) => {
    const held = dimension === "concurrent";
    return {
      budget: "daily",
      key: `daily/tenant:${tenantId}`,
      dimension,
      limit,
      windowStartMs: held ? 0 : 86_400_000,
      windowEndMs: held ? 0 : 172_800_000,
      window: "day",
    };
  });
}

/** An admission wanting `tokens` from the budget lines, with a real envelope the store can re-grant. */
function budgetEntry(
  tenantId: string,
  lines: readonly BudgetLine[],
  tokens: number,
  deadlineMs = 0,
  state = S.ADMITTED,
): AdmitEntry {
  const entered = entry({ tenantId, deadlineMs });
  const base = {
    row: { ...entered.row, state },
    events: [entered.events[0] as NewEvent, { ...(entered.events[1] as NewEvent), toState: state }],
  };
  const envelope = create(ExecutionEnvelopeSchema, {
    envelopeId: base.row.envelopeId,
    granted: { tokens, costUsdMicros: 1000n, steps: 3 },
    decision: {
      outcome: DecisionOutcome.ADMITTED,
      policyDecisions: [
        { decisionId: `${base.row.envelopeId}/budgets`, checkpoint: "admission.budget", effect: "reserve" },
      ],
    },
    state,
  });
  return {
    ...base,
    row: { ...base.row, envelope: toBinary(ExecutionEnvelopeSchema, envelope) },
    budget: { lines, wanted: { tokens, concurrent: 1 }, minimum: {} },
  };
}

const event = (toState: S, atMs = 2_000_000, extra: Partial<NewEvent> = {}): NewEvent => ({
  toState,
  atMs,
  caller: "test",
  reason: `to ${S[toState]}`,
  ...extra,
});

export function describeStoreConformance(name: string, factory: StoreFactory): void {
  describe(`ledger store conformance: ${name}`, () => {
    let store: LedgerStore;
    beforeAll(async () => {
      store = await factory.fresh();
    });
    afterAll(async () => {
      await store?.close();
    });

    it("admits an envelope with its first events, in order", async () => {
      const e = entry({});
      expect(await store.admit([e])).toEqual([{ kind: "inserted" }]);
      const row = await store.get(e.row.envelopeId);
      expect(row?.state).toBe(S.ADMITTED);
      expect(row?.eventCount).toBe(2);
      expect(Buffer.from(row?.envelope ?? []).toString()).toBe(e.row.envelopeId);
      const events = await store.events(e.row.envelopeId);
      expect(events.map((x) => [x.envelopeSequence, x.fromState, x.toState])).toEqual([
        [1, S.UNSPECIFIED, S.RECEIVED],
        [2, S.RECEIVED, S.ADMITTED],
      ]);
      expect((events[1]?.seq ?? 0) > (events[0]?.seq ?? 0)).toBe(true);
      expect(await store.get("env_missing")).toBeUndefined();
    });

    it("returns the stored envelope for a repeated request id or tenant+idempotency key", async () => {
      const first = entry({ idempotencyKey: "key-1" });
      await store.admit([first]);
      const sameRequestId = entry({ requestId: first.row.requestId });
      const sameKey = entry({ idempotencyKey: "key-1" });
      const otherTenant = entry({ idempotencyKey: "key-1", tenantId: "tenant-b" });
      const outcomes = await store.admit([sameRequestId, sameKey, otherTenant]);
      expect(outcomes[0]).toMatchObject({ kind: "existing", row: { envelopeId: first.row.envelopeId } });
      expect(outcomes[1]).toMatchObject({ kind: "existing", row: { envelopeId: first.row.envelopeId } });
      expect(outcomes[2]).toEqual({ kind: "inserted" });
      expect(await store.get(sameKey.row.envelopeId)).toBeUndefined();
      expect(await store.events(sameKey.row.envelopeId)).toEqual([]);
    });

    it("deduplicates within one batch and across concurrent batches", async () => {
      const a = entry({ idempotencyKey: "key-race" });
      const b = entry({ idempotencyKey: "key-race" });
      const [inBatch] = [await store.admit([a, b])];
      expect(inBatch.map((o) => o.kind)).toEqual(["inserted", "existing"]);
      const racers = Array.from({ length: 20 }, () => entry({ idempotencyKey: "key-race-2" }));
      const outcomes = (await Promise.all(racers.map((r) => store.admit([r])))).flat();
      expect(outcomes.filter((o) => o.kind === "inserted")).toHaveLength(1);
      const winner = racers[outcomes.findIndex((o) => o.kind === "inserted")]?.row.envelopeId;
      for (const o of outcomes) if (o.kind === "existing") expect(o.row.envelopeId).toBe(winner);
    });

    it("moves along the lifecycle graph, storing the response and usage", async () => {
      const e = entry({});
      await store.admit([e]);
      const id = e.row.envelopeId;
      const started = await store.transition({ envelopeId: id, event: event(S.RUNNING) });
      expect(started).toMatchObject({ kind: "done", row: { state: S.RUNNING, eventCount: 3 } });
      const response = new Uint8Array([1, 2, 3]);
      const usage = new Uint8Array([4, 5]);
      const completed = await store.transition({
        envelopeId: id,
        event: event(S.COMPLETED, 2_000_100, { usage }),
        response,
        usage,
      });
      expect(completed.kind).toBe("done");
      if (completed.kind !== "done") return;
      expect(completed.row.state).toBe(S.COMPLETED);
      expect([...(completed.row.response ?? [])]).toEqual([1, 2, 3]);
      expect([...(completed.row.usage ?? [])]).toEqual([4, 5]);
      expect(completed.event).toMatchObject({ fromState: S.RUNNING, toState: S.COMPLETED, envelopeSequence: 4 });
      expect([...(completed.event.usage ?? [])]).toEqual([4, 5]);
      const events = await store.events(id);
      expect(events.map((x) => x.toState)).toEqual([S.RECEIVED, S.ADMITTED, S.RUNNING, S.COMPLETED]);
      expect(events[3]?.reason).toBe("to COMPLETED");
    });

    it("refuses transitions off the graph, naming the current state, and keeps terminal states final", async () => {
      const e = entry({});
      await store.admit([e]);
      const id = e.row.envelopeId;
      expect(await store.transition({ envelopeId: id, event: event(S.COMPLETED) })).toMatchObject({
        kind: "not-allowed",
        current: S.ADMITTED,
      });
      await store.transition({ envelopeId: id, event: event(S.CANCELLED) });
      for (const to of [S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED]) {
        const outcome = await store.transition({ envelopeId: id, event: event(to) });
        expect(outcome).toMatchObject({ kind: "not-allowed", current: S.CANCELLED });
      }
      expect((await store.events(id)).length).toBe(3);
      expect(await store.transition({ envelopeId: "env_missing", event: event(S.RUNNING) })).toEqual({
        kind: "not-found",
      });
    });

    it("lets exactly one of two racing terminal transitions win", async () => {
      const entries = Array.from({ length: 10 }, () => entry({}));
      await store.admit(entries);
      for (const e of entries) {
        await store.transition({ envelopeId: e.row.envelopeId, event: event(S.RUNNING) });
      }
      const outcomes = await Promise.all(
        entries.flatMap((e) => [
          store.transition({ envelopeId: e.row.envelopeId, event: event(S.COMPLETED) }),
          store.transition({ envelopeId: e.row.envelopeId, event: event(S.CANCELLED) }),
        ]),
      );
      for (let i = 0; i < entries.length; i++) {
        const pair = outcomes.slice(2 * i, 2 * i + 2).map((o) => o.kind);
        expect(pair.sort()).toEqual(["done", "not-allowed"]);
      }
    });

    it("keeps each envelope's event times monotonic whatever the clock says", async () => {
      const e = entry({ atMs: 5_000_000 });
      await store.admit([e]);
      const outcome = await store.transition({ envelopeId: e.row.envelopeId, event: event(S.RUNNING, 4_000_000) });
      expect(outcome).toMatchObject({ kind: "done", event: { atMs: 5_000_000 }, row: { lastEventMs: 5_000_000 } });
    });

    it("lists newest first with filters and keyset pages", async () => {
      const tenantId = `tenant-list-${randomUUID()}`;
      const entries = Array.from({ length: 7 }, (_, i) =>
        entry({ tenantId, atMs: 10_000 + i, actorSubject: i % 2 === 0 ? "user:even" : "user:odd", kind: 1 + (i % 3) }),
      );
      await store.admit(entries);
      await store.transition({ envelopeId: entries[0]?.row.envelopeId ?? "", event: event(S.RUNNING) });
      const ids = entries.map((e) => e.row.envelopeId).reverse();
      const page1 = await store.list({ tenantId, limit: 3 });
      expect(page1.map((r) => r.envelopeId)).toEqual(ids.slice(0, 3));
      const page2 = await store.list({ tenantId, limit: 3, beforeEnvelopeId: page1.at(-1)?.envelopeId ?? "" });
      expect(page2.map((r) => r.envelopeId)).toEqual(ids.slice(3, 6));
      expect((await store.list({ tenantId, actorSubject: "user:odd", limit: 10 })).length).toBe(3);
      expect((await store.list({ tenantId, states: [S.RUNNING], limit: 10 })).map((r) => r.envelopeId)).toEqual([
        entries[0]?.row.envelopeId,
      ]);
      expect((await store.list({ tenantId, kinds: [1], limit: 10 })).length).toBe(3);
      const window = await store.list({ tenantId, receivedAfterMs: 10_002, receivedBeforeMs: 10_004, limit: 10 });
      expect(window.map((r) => r.receivedAtMs).sort()).toEqual([10_002, 10_003]);
      expect(await store.list({ tenantId: "tenant-nobody", limit: 10 })).toEqual([]);
    });

    it("gives events after a cursor in commit order, per tenant, from the latest seq", async () => {
      const before = await store.latestSeq();
      const tenantId = `tenant-watch-${randomUUID()}`;
      const a = entry({ tenantId });
      const b = entry({});
      await store.admit([a, b]);
      await store.transition({ envelopeId: a.row.envelopeId, event: event(S.RUNNING) });
      const after = await store.eventsAfter(before, undefined, 100);
      expect(after.map((x) => x.seq)).toEqual([...after.map((x) => x.seq)].sort((x, y) => x - y));
      expect(after).toHaveLength(5);
      expect(await store.latestSeq()).toBe(after.at(-1)?.seq);
      const mine = await store.eventsAfter(before, tenantId, 100);
      expect(mine.map((x) => [x.envelopeId, x.toState])).toEqual([
        [a.row.envelopeId, S.RECEIVED],
        [a.row.envelopeId, S.ADMITTED],
        [a.row.envelopeId, S.RUNNING],
      ]);
      const resumed = await store.eventsAfter(mine[0]?.seq ?? 0, tenantId, 1);
      expect(resumed.map((x) => x.seq)).toEqual([mine[1]?.seq]);
    });

    it("expires admitted and running envelopes past their deadline, recording the error per state", async () => {
      const tenantId = `tenant-expiry-${randomUUID()}`;
      const due = entry({ tenantId, deadlineMs: 50_000 });
      const running = entry({ tenantId, deadlineMs: 50_000 });
      const later = entry({ tenantId, deadlineMs: 90_000_000_000 });
      const none = entry({ tenantId });
      const done = entry({ tenantId, deadlineMs: 50_000 });
      await store.admit([due, running, later, none, done]);
      await store.transition({ envelopeId: running.row.envelopeId, event: event(S.RUNNING) });
      await store.transition({ envelopeId: done.row.envelopeId, event: event(S.CANCELLED) });
      const errors = new Map([
        [S.ADMITTED, new Uint8Array([1])],
        [S.RUNNING, new Uint8Array([2])],
      ]);
      const reasons = new Map([
        [S.ADMITTED, "not started"],
        [S.RUNNING, "after dispatch"],
      ]);
      const expired = await store.expire({ deadlineBeforeMs: 60_000, nowMs: 3_000_000, limit: 1000, errors, reasons });
      const mine = expired.filter((x) => x.tenantId === tenantId);
      expect(mine.map((x) => x.envelopeId).sort()).toEqual([due.row.envelopeId, running.row.envelopeId].sort());
      const runningExpiry = mine.find((x) => x.envelopeId === running.row.envelopeId);
      expect(runningExpiry).toMatchObject({ fromState: S.RUNNING, toState: S.EXPIRED, caller: "envelope" });
      expect(runningExpiry?.reason).toBe("after dispatch");
      expect([...(runningExpiry?.error ?? [])]).toEqual([2]);
      expect([...((await store.get(due.row.envelopeId))?.error ?? [])]).toEqual([1]);
      expect((await store.get(later.row.envelopeId))?.state).toBe(S.ADMITTED);
      expect((await store.get(none.row.envelopeId))?.state).toBe(S.ADMITTED);
      expect((await store.get(done.row.envelopeId))?.state).toBe(S.CANCELLED);
      const again = await store.expire({ deadlineBeforeMs: 60_000, nowMs: 3_000_000, limit: 1000, errors, reasons });
      expect(again.filter((x) => x.tenantId === tenantId)).toEqual([]);
    });

    it("compacts old terminal envelopes and never a live one", async () => {
      const tenantId = `tenant-compact-${randomUUID()}`;
      const old = entry({ tenantId, atMs: 100 });
      const live = entry({ tenantId, atMs: 100 });
      await store.admit([old, live]);
      await store.transition({ envelopeId: old.row.envelopeId, event: event(S.CANCELLED, 200) });
      const removed = await store.compact(1_000, 10_000);
      expect(removed).toBeGreaterThanOrEqual(1);
      expect(await store.get(old.row.envelopeId)).toBeUndefined();
      expect(await store.events(old.row.envelopeId)).toEqual([]);
      expect((await store.get(live.row.envelopeId))?.state).toBe(S.ADMITTED);
    });

    it("reserves from budgets: the grant lowered to what is left, nothing inserted below the minimum", async () => {
      const tenantId = `tenant-budget-${randomUUID()}`;
      const lines = dailyLines(tenantId, { tokens: 1000, concurrent: 2 });
      const first = budgetEntry(tenantId, lines, 600);
      expect(await store.admit([first])).toEqual([{ kind: "inserted" }]);
      expect(await store.budgetUsage(lines)).toEqual([600, 1]);

      const second = budgetEntry(tenantId, lines, 600);
      const [clamped] = await store.admit([second]);
      expect(clamped?.kind).toBe("inserted");
      const stored = fromBinary(
        ExecutionEnvelopeSchema,
        (await store.get(second.row.envelopeId))?.envelope ?? new Uint8Array(),
      );
      expect(stored.granted?.tokens).toBe(400);
      expect(stored.decision?.outcome).toBe(DecisionOutcome.ADMITTED_PARTIAL);
      expect(stored.decision?.reasons.map((r) => [r.code, r.dimension])).toEqual([["GRANT_CLAMPED", "tokens"]]);
      expect(clamped?.kind === "inserted" && [...(clamped.envelope ?? [])]).toEqual([
        ...toBinary(ExecutionEnvelopeSchema, stored),
      ]);
      expect(await store.budgetUsage(lines)).toEqual([1000, 2]);

      const third = budgetEntry(tenantId, lines, 600);
      const [short] = await store.admit([third]);
      expect(short?.kind).toBe("short");
      if (short?.kind !== "short") return;
      expect(short.shortfalls.map((x) => [x.line.dimension, x.remaining]).sort()).toEqual([
        ["concurrent", 0],
        ["tokens", 0],
      ]);
      expect(await store.get(third.row.envelopeId)).toBeUndefined();
      expect(await store.events(third.row.envelopeId)).toEqual([]);
      expect(await store.budgetUsage(lines)).toEqual([1000, 2]);
      // A repeat of an admitted request reserves nothing more.
      expect(
        (
          await store.admit([{ ...budgetEntry(tenantId, lines, 600), row: { ...first.row, envelopeId: "env_repeat" } }])
        )[0]?.kind,
      ).toBe("existing");
      expect(await store.budgetUsage(lines)).toEqual([1000, 2]);
    });

    it("settles a reservation when the envelope ends: usage spent, the rest given back; expiry keeps it", async () => {
      const tenantId = `tenant-settle-${randomUUID()}`;
      const lines = dailyLines(tenantId, { tokens: 1000, concurrent: 5 });
      const [completed, expired, cancelled] = [600, 300, 100].map((t) => budgetEntry(tenantId, lines, t, 50_000));
      for (const e of [completed, expired, cancelled]) await store.admit([e as AdmitEntry]);
      expect(await store.budgetUsage(lines)).toEqual([1000, 3]);

      const id = (e: AdmitEntry | undefined) => e?.row.envelopeId ?? "";
      await store.transition({ envelopeId: id(completed), event: event(S.RUNNING) });
      await store.transition({ envelopeId: id(completed), event: event(S.COMPLETED), spent: { tokens: 250 } });
      expect(await store.budgetUsage(lines)).toEqual([650, 2]);

      await store.transition({ envelopeId: id(cancelled), event: event(S.CANCELLED) });
      expect(await store.budgetUsage(lines)).toEqual([550, 1]);

      // One more awaits approval when the deadline passes: it never ran, so its reservation goes back.
      const pending = budgetEntry(tenantId, lines, 50, 50_000, S.PENDING_APPROVAL);
      await store.admit([pending]);
      expect(await store.budgetUsage(lines)).toEqual([600, 2]);

      const errors = new Map([
        [S.ADMITTED, new Uint8Array([1])],
        [S.PENDING_APPROVAL, new Uint8Array([2])],
      ]);
      await store.expire({ deadlineBeforeMs: 60_000, nowMs: 3_000_000, limit: 1000, errors, reasons: new Map() });
      expect((await store.get(id(expired)))?.state).toBe(S.EXPIRED);
      expect((await store.get(pending.row.envelopeId))?.state).toBe(S.EXPIRED);
      expect(await store.budgetUsage(lines)).toEqual([550, 1]);
      // Compaction keeps an expired envelope whose reservation waits for review.
      await store.compact(Number.MAX_SAFE_INTEGER, 10_000);
      expect(await store.get(id(completed))).toBeUndefined();
      expect((await store.get(id(expired)))?.state).toBe(S.EXPIRED);

      // Only an expired envelope is reviewed; the review settles its reservation with what it found.
      const live = budgetEntry(tenantId, lines, 10);
      await store.admit([live]);
      const notExpired = await store.transition({ envelopeId: id(live), event: event(S.EXPIRED), review: true });
      expect(notExpired).toMatchObject({ kind: "not-allowed", current: S.ADMITTED });
      await store.transition({ envelopeId: id(live), event: event(S.CANCELLED) });
      const review = { envelopeId: id(expired), event: event(S.EXPIRED), spent: { tokens: 120 }, review: true };
      const reviewed = await store.transition(review);
      expect(reviewed.kind === "done" && [reviewed.event.fromState, reviewed.event.toState]).toEqual([
        S.EXPIRED,
        S.EXPIRED,
      ]);
      expect(await store.budgetUsage(lines)).toEqual([370, 0]);
      // A second review records its finding and settles nothing more.
      expect((await store.transition(review)).kind).toBe("done");
      expect(await store.budgetUsage(lines)).toEqual([370, 0]);
      await store.compact(Number.MAX_SAFE_INTEGER, 10_000);
      expect(await store.get(id(expired))).toBeUndefined();
    });

    it("never grants more than a budget to concurrent admissions", async () => {
      const tenantId = `tenant-race-${randomUUID()}`;
      const lines = dailyLines(tenantId, { tokens: 1000 });
      const racers = Array.from({ length: 30 }, () => budgetEntry(tenantId, lines, 100));
      const outcomes = (await Promise.all(racers.map((e) => store.admit([e])))).flat();
      expect(outcomes.filter((o) => o.kind === "inserted")).toHaveLength(10);
      expect(outcomes.filter((o) => o.kind === "short")).toHaveLength(20);
      expect(await store.budgetUsage(lines)).toEqual([1000]);
    });

    it("takes many concurrent admissions and transitions", async () => {
      const entries = Array.from({ length: 300 }, () => entry({ idempotencyKey: randomUUID() }));
      const outcomes = await Promise.all(entries.map((e) => store.admit([e])));
      expect(outcomes.flat().every((o) => o.kind === "inserted")).toBe(true);
      const started = await Promise.all(
        entries.map((e) => store.transition({ envelopeId: e.row.envelopeId, event: event(S.RUNNING) })),
      );
      expect(started.every((o) => o.kind === "done")).toBe(true);
    });

    it("keeps everything committed across close and reopen", async () => {
      const e = entry({ idempotencyKey: "durable" });
      await store.admit([e]);
      await store.transition({ envelopeId: e.row.envelopeId, event: event(S.RUNNING) });
      const latest = await store.latestSeq();
      await store.close();
      store = await factory.reopen();
      expect((await store.get(e.row.envelopeId))?.state).toBe(S.RUNNING);
      expect(await store.latestSeq()).toBe(latest);
      expect((await store.admit([entry({ idempotencyKey: "durable" })]))[0]).toMatchObject({ kind: "existing" });
    });
  });
}
