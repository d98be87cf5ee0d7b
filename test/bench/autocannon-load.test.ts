// The autocannon driver accounts for every call it makes: answers by status, losses by kind, each
// request with a fresh body, latencies in microseconds. Against a tiny HTTP server on a real socket.
import * as http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runAutocannonClosedLoop } from "../../src/bench/autocannon-load.js";

let server: http.Server;
let base = "";
/** Bodies the server received on /mixed, and how it answered. */
const received: string[] = [];
const answered = { ok: 0, failed: 0 };

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      if (req.url === "/mixed") {
        received.push(body);
        // Every fourth request fails, by the number its body carries.
        const failing = Number(body) % 4 === 0;
        answered[failing ? "failed" : "ok"]++;
        res.writeHead(failing ? 503 : 200).end("answer");
      } else if (req.url === "/slow") {
        setTimeout(() => res.end("late"), 20);
      } else if (req.url === "/reset") {
        req.socket.resetAndDestroy();
      } else if (req.url === "/close") {
        req.socket.destroy();
      }
      // "/hang" never answers.
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(() => {
  server.closeAllConnections();
  server.close();
});

const connections = 4;
const load = (path: string, durationMs: number, body: () => Buffer = () => Buffer.from("x")) =>
  runAutocannonClosedLoop({ url: `${base}${path}`, contentType: "text/plain", body, connections, durationMs });

describe("autocannon driver", () => {
  it("counts every answer, by status, and builds each request with a fresh body", async () => {
    let n = 0;
    const r = await load("/mixed", 400, () => Buffer.from(String(++n)));

    // A fresh body for every request sent.
    expect(new Set(received).size).toBe(received.length);
    expect(received.length).toBeGreaterThan(50);
    // Every answer the server gave is counted, but for those in flight when the run stopped.
    const failed = r.errorsByCategory.http_503 ?? 0;
    expect(Object.keys(r.errorsByCategory).filter((k) => k !== "http_503")).toEqual([]);
    expect(answered.ok - r.completed).toBeGreaterThanOrEqual(0);
    expect(answered.failed - failed).toBeGreaterThanOrEqual(0);
    expect(answered.ok + answered.failed - (r.completed + failed)).toBeLessThanOrEqual(connections);
    expect(failed).toBeGreaterThan(0);
    expect(r.errors).toBe(failed);
    // Latencies of completed calls only, TTFT and E2E alike.
    expect(r.e2e.totalCount).toBe(r.completed);
    expect(r.ttft.totalCount).toBe(r.completed);
  });

  it("records latency in microseconds, TTFT no later than E2E", async () => {
    const r = await load("/slow", 300);
    expect(r.completed).toBeGreaterThan(0);
    expect(r.errors).toBe(0);
    // The server waits 20 ms before answering.
    expect(r.e2e.minNonZeroValue).toBeGreaterThanOrEqual(19_000);
    expect(r.e2e.getValueAtPercentile(50)).toBeLessThan(500_000);
    expect(r.ttft.getValueAtPercentile(50)).toBeLessThanOrEqual(r.e2e.getValueAtPercentile(50));
    expect(r.elapsedSeconds).toBeGreaterThanOrEqual(0.3);
    expect(r.elapsedSeconds).toBeLessThan(1);
  });

  it("counts reset connections, and connections closed without an answer, as network errors", async () => {
    for (const path of ["/reset", "/close"]) {
      const r = await load(path, 150);
      expect(r.completed).toBe(0);
      expect(Object.keys(r.errorsByCategory)).toEqual(["network"]);
      expect(r.errors).toBeGreaterThan(connections);
    }
  });

  it("counts requests unanswered past the timeout as timeouts", async () => {
    const r = await runAutocannonClosedLoop({
      url: `${base}/hang`,
      contentType: "text/plain",
      body: () => Buffer.from("x"),
      connections: 2,
      durationMs: 1300,
      timeoutMs: 1000,
    });
    expect(r.completed).toBe(0);
    // One per connection; the second requests were still in flight at the end.
    expect(r.errorsByCategory).toEqual({ timeout: 2 });
  });
});
