import { describe, expect, it } from "vitest";
import { createGroupCommit } from "../../src/ledger/group-commit.js";

describe("group commit", () => {
  it("sends calls of one turn together, and calls made during a commit in the next batch", async () => {
    const batches: number[][] = [];
    let release: () => void = () => undefined;
    const group = createGroupCommit<number, number>(
      async (items) => {
        batches.push([...items]);
        if (batches.length === 1) await new Promise<void>((r) => (release = r));
        return items.map((value) => ({ status: "fulfilled", value: value * 10 }));
      },
      { maxBatch: 3 },
    );
    const first = [1, 2].map((n) => group.submit(n));
    await new Promise((r) => setImmediate(r));
    const waiting = [3, 4, 5, 6].map((n) => group.submit(n));
    release();
    expect(await Promise.all([...first, ...waiting])).toEqual([10, 20, 30, 40, 50, 60]);
    expect(batches).toEqual([[1, 2], [3, 4, 5], [6]]);
  });

  it("fails an item alone when the batch says so, and every item when the batch throws", async () => {
    let fail = false;
    const group = createGroupCommit<number, number>(
      async (items) => {
        if (fail) throw new Error("connection lost");
        return items.map((value) =>
          value < 0 ? { status: "rejected", reason: new Error("negative") } : { status: "fulfilled", value },
        );
      },
      { maxBatch: 10 },
    );
    const outcomes = await Promise.allSettled([group.submit(1), group.submit(-1), group.submit(2)]);
    expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    fail = true;
    const failed = await Promise.allSettled([group.submit(3), group.submit(4)]);
    expect(failed.map((o) => (o.status === "rejected" ? (o.reason as Error).message : ""))).toEqual([
      "connection lost",
      "connection lost",
    ]);
  });

  it("drains: resolves once everything submitted has settled", async () => {
    const settled: number[] = [];
    const group = createGroupCommit<number, number>(
      async (items) => {
        await new Promise((r) => setTimeout(r, 5));
        return items.map((value) => ({ status: "fulfilled", value }));
      },
      { maxBatch: 1 },
    );
    for (const n of [1, 2, 3]) void group.submit(n).then((v) => settled.push(v));
    await group.drain();
    await new Promise((r) => setImmediate(r));
    expect(settled).toEqual([1, 2, 3]);
  });
});
