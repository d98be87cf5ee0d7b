import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { type AddressInfo, createServer } from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { LifecycleState as S } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import { migratePostgres, openPostgresStore, postgresSchemaVersion } from "../../src/ledger/postgres-store.js";
import { type LedgerStore, LedgerUnavailableError } from "../../src/ledger/store.js";
import { createDatabase } from "../support/postgres.js";
import { describeStoreConformance, entry } from "./store-conformance.js";

/** Runs SQL on its own connection, outside any store. */
async function sql(url: string, text: string): Promise<pg.QueryResultRow[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

const noExpiry = { deadlineBeforeMs: 0, nowMs: 0, limit: 1, errors: new Map(), reasons: new Map() };

let conformanceUrl = "";
describeStoreConformance("postgres", {
  async fresh() {
    conformanceUrl = await createDatabase();
    return openPostgresStore({ url: conformanceUrl, durability: "process" });
  },
  reopen: () => openPostgresStore({ url: conformanceUrl, durability: "fsync" }),
});

describe("postgres store: two replicas on one database", () => {
  let url: string;
  let a: LedgerStore & { migrated: number[] };
  let b: LedgerStore & { migrated: number[] };
  beforeAll(async () => {
    url = await createDatabase();
    [a, b] = await Promise.all([
      openPostgresStore({ url, durability: "process", poolSize: 4 }),
      openPostgresStore({ url, durability: "fsync", poolSize: 4 }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
  });

  it("applies each migration once when both open at once", async () => {
    const every = Array.from({ length: postgresSchemaVersion }, (_, i) => i + 1);
    expect([...a.migrated, ...b.migrated].sort()).toEqual(every);
    expect(await migratePostgres(url)).toEqual([]);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const { rows } = await client.query("SELECT version FROM schema_migrations ORDER BY version");
    await client.end();
    expect(rows.map((r) => r.version)).toEqual(every);
  });

  it("inserts exactly one of many admissions racing on one idempotency key", async () => {
    const racers = Array.from({ length: 20 }, () => entry({ idempotencyKey: `race-${randomUUID()}` }));
    const key = racers[0]?.row.idempotencyKey ?? "";
    const same = racers.map((r) => ({ ...r, row: { ...r.row, idempotencyKey: key } }));
    const outcomes = (await Promise.all(same.map((r, i) => (i % 2 === 0 ? a : b).admit([r])))).flat();
    expect(outcomes.filter((o) => o.kind === "inserted")).toHaveLength(1);
    const winner = same[outcomes.findIndex((o) => o.kind === "inserted")]?.row.envelopeId;
    for (const o of outcomes) if (o.kind === "existing") expect(o.row.envelopeId).toBe(winner);
    expect((await a.list({ tenantId: "tenant-a", limit: 100 })).filter((r) => r.idempotencyKey === key)).toHaveLength(
      1,
    );
  });

  it("lets exactly one of two replicas racing on each envelope move it", async () => {
    const entries = Array.from({ length: 40 }, () => entry({}));
    await a.admit(entries);
    const ids = entries.map((e) => e.row.envelopeId);
    const to = (toState: S) => ({ toState, atMs: 2_000_000, caller: "test", reason: "" });
    await Promise.all(ids.map((envelopeId) => a.transition({ envelopeId, event: to(S.RUNNING) })));
    // Opposite orders, so that batches on the two replicas want the same rows the other way round.
    const [onA, onB] = await Promise.all([
      Promise.all(ids.map((envelopeId) => a.transition({ envelopeId, event: to(S.CANCELLED) }))),
      Promise.all([...ids].reverse().map((envelopeId) => b.transition({ envelopeId, event: to(S.COMPLETED) }))),
    ]);
    onB.reverse();
    ids.forEach((id, i) => {
      expect([onA[i]?.kind, onB[i]?.kind].sort(), id).toEqual(["done", "not-allowed"]);
    });
    for (const id of ids) expect((await b.events(id)).length).toBe(4);
  });

  it("gives a cursor paging from 0 every event exactly once, in seq order, while both write", async () => {
    // Some transactions sleep between drawing their events' seqs and committing: without the
    // store's ordering, events with later seqs would commit meanwhile and the cursor would pass them.
    await sql(
      url,
      `CREATE FUNCTION slow_event() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.reason = 'slow' THEN PERFORM pg_sleep(0.1); END IF; RETURN NEW; END $$;
       CREATE TRIGGER slow_event AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION slow_event()`,
    );
    const tenantId = `tenant-watch-${randomUUID()}`;
    const seen: number[] = [];
    let cursor = 0;
    let writing = true;
    const page = async () => {
      const events = await a.eventsAfter(cursor, tenantId, 37);
      for (const e of events) seen.push(e.seq);
      cursor = events.at(-1)?.seq ?? cursor;
      return events.length;
    };
    const watcher = (async () => {
      while (writing) await page();
      while ((await page()) > 0);
    })();
    try {
      await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const e = entry({ tenantId });
          await (i % 2 === 0 ? a : b).admit([e]);
          if (i % 3 !== 0) return;
          await (i % 4 === 0 ? b : a).transition({
            envelopeId: e.row.envelopeId,
            event: { toState: S.RUNNING, atMs: 2_000_000, caller: "test", reason: i % 60 === 0 ? "slow" : "" },
          });
        }),
      );
    } finally {
      writing = false;
      await watcher;
      await sql(url, "DROP TRIGGER slow_event ON events; DROP FUNCTION slow_event()");
    }
    const all = await b.eventsAfter(0, tenantId, 10_000);
    expect(all).toHaveLength(200 * 2 + 67);
    expect(seen).toEqual(all.map((e) => e.seq));
    expect(seen).toEqual([...new Set(seen)].sort((x, y) => x - y));
  });

  it("expires each due envelope once when both sweep at once", async () => {
    const tenantId = `tenant-sweep-${randomUUID()}`;
    const due = Array.from({ length: 40 }, () => entry({ tenantId, deadlineMs: 1_000 }));
    await a.admit(due);
    const input = { deadlineBeforeMs: 2_000, nowMs: 3_000_000, limit: 15, errors: new Map(), reasons: new Map() };
    const swept: string[] = [];
    await Promise.all(
      [a, b].map(async (store) => {
        for (;;) {
          const events = (await store.expire(input)).filter((e) => e.tenantId === tenantId);
          if (events.length === 0) break;
          swept.push(...events.map((e) => e.envelopeId));
        }
      }),
    );
    expect(swept.sort()).toEqual(due.map((e) => e.row.envelopeId).sort());
    for (const e of due) expect((await b.get(e.row.envelopeId))?.state).toBe(S.EXPIRED);
  });
});

describe("postgres store: rows, errors and schema", () => {
  let url: string;
  let store: LedgerStore;
  beforeAll(async () => {
    url = await createDatabase();
    store = await openPostgresStore({ url, durability: "process" });
  });
  afterAll(async () => {
    await store?.close();
  });

  it("returns the same JS types as the SQLite store", async () => {
    const e = entry({ deadlineMs: 123 });
    await store.admit([e]);
    const row = await store.get(e.row.envelopeId);
    expect(row).toMatchObject({ idempotencyKey: "", receivedAtMs: 1_000_000, deadlineMs: 123, response: null });
    expect(typeof row?.lastEventMs).toBe("number");
    expect(row?.envelope).toBeInstanceOf(Uint8Array);
    const [first] = await store.events(e.row.envelopeId);
    expect(typeof first?.seq).toBe("number");
    expect(typeof first?.atMs).toBe("number");
    expect(typeof (await store.latestSeq())).toBe("number");
  });

  it("fails only the admission that the database refuses, not the rest of its batch", async () => {
    const good = Array.from({ length: 5 }, () => entry({}));
    const bad = entry({ tenantId: "nul\u0000tenant" });
    const outcomes = await Promise.allSettled([...good, bad].map((e) => store.admit([e])));
    expect(outcomes.slice(0, 5).map((o) => o.status)).toEqual(Array(5).fill("fulfilled"));
    expect(outcomes[5]).toMatchObject({ status: "rejected", reason: expect.any(LedgerUnavailableError) });
    for (const e of good) expect(await store.get(e.row.envelopeId)).toBeDefined();
  });

  it("reports an unreachable database without its password", async () => {
    // A port that was free a moment ago: nothing listens there.
    const server = createServer().listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    server.close();
    const unreachable = `postgres://envelope:hunter2-secret@127.0.0.1:${port}/nowhere`;
    const failure = await openPostgresStore({ url: unreachable, durability: "process" }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(LedgerUnavailableError);
    expect(String((failure as Error).message)).toMatch(/cannot open the ledger at postgres:\/\/envelope@127\.0\.0\.1/);
    expect(String((failure as Error).message)).not.toContain("hunter2");
    const wrongPassword = new URL(url);
    wrongPassword.password = "hunter2-secret";
    const refused = await migratePostgres(wrongPassword.toString()).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(LedgerUnavailableError);
    expect(String((refused as Error).message)).toMatch(/password authentication failed/);
    expect(String((refused as Error).message)).not.toContain("hunter2");
  });

  it("reports a database it cannot reach as LedgerUnavailableError, and recovers when it can", async () => {
    await store.admit([entry({})]);
    // As an outage would: the database takes no connections and every open one is cut.
    const database = pg.escapeIdentifier(new URL(url).pathname.slice(1));
    const admin = inject("postgresAdminUrl");
    await sql(admin, `ALTER DATABASE ${database} WITH ALLOW_CONNECTIONS false`);
    try {
      await sql(
        admin,
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${database.slice(1, -1)}'`,
      );
      await new Promise((r) => setTimeout(r, 50));
      const during = await Promise.allSettled([store.admit([entry({})]), store.latestSeq(), store.expire(noExpiry)]);
      for (const o of during) {
        expect(o).toMatchObject({ status: "rejected", reason: expect.any(LedgerUnavailableError) });
        expect(String((o as PromiseRejectedResult).reason.message)).toMatch(/not currently accepting connections/);
      }
    } finally {
      await sql(admin, `ALTER DATABASE ${database} WITH ALLOW_CONNECTIONS true`);
    }
    const e = entry({});
    expect(await store.admit([e])).toEqual([{ kind: "inserted" }]);
    expect((await store.get(e.row.envelopeId))?.state).toBe(S.ADMITTED);
  });

  it("refuses a schema newer than it knows", async () => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES (99, 0)");
    await client.end();
    await expect(openPostgresStore({ url, durability: "process" })).rejects.toThrow(
      new RegExp(
        `schema is version 99, newer than this release knows \\(${postgresSchemaVersion}\\); upgrade Envelope`,
      ),
    );
  });
});
