// The load models measure what users feel: an open-loop run, timed from each call's intended send
// time, shows a stalling server in its p99; a closed-loop run against the same server hides it.
import { type ChildProcess, spawn } from "node:child_process";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { grpcUnaryCall } from "../../src/bench/grpc-call.js";
import { arrivalSchedule, type CallFn, nowUs, runClosedLoop, runOpenLoop } from "../../src/bench/load.js";

describe("arrival schedules", () => {
  it("spaces constant arrivals evenly at the rate", () => {
    const times = arrivalSchedule({ rate: 200, durationMs: 1000, arrival: "constant" });
    expect(times).toHaveLength(200);
    expect(times[1]).toBeCloseTo(5000, 6);
  });

  it("draws Poisson arrivals reproducibly from the seed, at the rate on average", () => {
    const a = arrivalSchedule({ rate: 1000, durationMs: 10_000, arrival: "poisson", seed: 7 });
    const b = arrivalSchedule({ rate: 1000, durationMs: 10_000, arrival: "poisson", seed: 7 });
    const c = arrivalSchedule({ rate: 1000, durationMs: 10_000, arrival: "poisson", seed: 8 });
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    // 10,000 expected; a Poisson count's standard deviation is 100.
    expect(Math.abs(a.length - 10_000)).toBeLessThan(500);
  });
});

describe("the open loop's own footprint", () => {
  it("sleeps between sends, and sends no call before its time less a timer's granularity", async () => {
    // A call that ends at once: the run's CPU is then the driver's own. A driver that polled for the
    // next send time would take a whole core, which on a small machine is the server's.
    const sentAt: number[] = [];
    const call: CallFn = (events) => {
      sentAt.push(nowUs());
      events.headers();
      events.done();
    };
    const cpu0 = process.cpuUsage();
    const started = nowUs();
    const r = await runOpenLoop({ rate: 1500, durationMs: 1000, arrival: "poisson", seed: 5, call });
    const cpu = process.cpuUsage(cpu0);
    const elapsedUs = nowUs() - started;

    expect(r.completed).toBe(r.scheduled);
    expect((cpu.user + cpu.system) / elapsedUs).toBeLessThan(0.5);
    // Each call went out within a timer's granularity of its intended time or after it (late sends
    // are counted, and timed from the intended time).
    const schedule = arrivalSchedule({ rate: 1500, durationMs: 1000, arrival: "poisson", seed: 5 });
    const early = sentAt.filter((t, i) => t - started < (schedule[i] as number) - 1000);
    expect(early).toEqual([]);
  });
});

describe("against a server that stalls 150 ms every 500 ms", () => {
  let server: ChildProcess;
  let client: grpc.Client;

  beforeAll(async () => {
    server = spawn(process.execPath, ["--import", "tsx", "test/helpers/stall-server.ts"], {
      cwd: new URL("../../", import.meta.url).pathname,
    });
    const port = await new Promise<number>((resolve, reject) => {
      server.stdout?.on("data", (d: Buffer) => {
        const m = /listening (\d+)/.exec(String(d));
        if (m) resolve(Number(m[1]));
      });
      server.once("exit", (code) => reject(new Error(`stall server exited ${code}`)));
    });
    client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });
  afterAll(() => {
    client?.close();
    server?.kill("SIGKILL");
  });

  it("open loop shows the stalls in p99 where closed loop hides them", async () => {
    const call = grpcUnaryCall(client, "/bench.Stall/Ping", () => Buffer.alloc(0));
    const closed = await runClosedLoop({ concurrency: 1, durationMs: 2000, call });
    const open = await runOpenLoop({ rate: 500, durationMs: 2000, arrival: "constant", call });

    expect(closed.errors).toBe(0);
    expect(open.errors).toBe(0);
    expect(open.completed).toBe(open.scheduled);
    // Both runs met the stalls: the closed loop's slowest call waited one out...
    expect(closed.e2e.maxValue).toBeGreaterThan(100_000);
    // ...but only a handful of its calls did, so its p99 stays fast;
    expect(closed.e2e.getValueAtPercentile(99)).toBeLessThan(50_000);
    // while every call scheduled during a stall counts against the open loop's p99.
    expect(open.e2e.getValueAtPercentile(99)).toBeGreaterThan(100_000);
    // Time to first byte is part of the whole, and recorded for every call.
    expect(open.ttft.totalCount).toBe(open.completed);
    expect(open.ttft.getValueAtPercentile(50)).toBeLessThanOrEqual(open.e2e.getValueAtPercentile(50));
  });

  it("counts failed calls by category, apart from the latencies", async () => {
    const call = grpcUnaryCall(client, "/bench.Stall/Missing", () => Buffer.alloc(0));
    const r = await runOpenLoop({ rate: 200, durationMs: 250, arrival: "poisson", seed: 3, call });
    expect(r.completed).toBe(0);
    expect(r.errorsByCategory).toEqual({ UNIMPLEMENTED: r.scheduled });
    expect(r.errors).toBe(r.scheduled);
    expect(r.e2e.totalCount).toBe(0);
  });
});
