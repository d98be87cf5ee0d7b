// The standard run's inputs: requests that Admit accepts, each one new, in binary and JSON alike;
// and the check that lets a run skip what needs a package that is not installed.
import { fromBinary, fromJson, type JsonObject } from "@bufbuild/protobuf";
import { expect, it } from "vitest";
import { createRequestPool, missingPackages, standardScenarioNames } from "../../src/bench/scenarios.js";
import { RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { readFixture } from "../helpers/requests.js";

it("hands out a new admission every call, past the pool's size, in binary and in JSON alike", () => {
  const fixture = readFixture("runtime-request.json");
  const pool = createRequestPool(fixture, 3);
  const binary = Array.from({ length: 10 }, () => fromBinary(RuntimeRequestSchema, pool.admitBinary()));
  const json = Array.from({ length: 10 }, () =>
    fromJson(RuntimeRequestSchema, JSON.parse(pool.admitJson().toString()) as JsonObject),
  );
  const all = [...binary, ...json];
  // Each its own operation for the ledger, which answers a repeated id or key with the first envelope.
  expect(new Set(all.map((r) => r.requestId)).size).toBe(20);
  expect(new Set(all.map((r) => r.task?.idempotencyKey)).size).toBe(20);
  const sample = fromJson(RuntimeRequestSchema, fixture);
  for (const r of all) {
    expect(Number(r.deadlineUtc?.seconds) * 1000).toBeGreaterThan(Date.now() + 60_000);
    // Only the ids and the times differ from the fixture.
    r.requestId = sample.requestId;
    (r.task as NonNullable<typeof r.task>).idempotencyKey = sample.task?.idempotencyKey ?? "";
    r.occurredAtUtc = sample.occurredAtUtc;
    r.deadlineUtc = sample.deadlineUtc;
    expect(r).toEqual(sample);
  }
});

it("names the packages that cannot be loaded", () => {
  expect(missingPackages(["autocannon", "@grpc/grpc-js", "envelope-no-such-package"])).toEqual([
    "envelope-no-such-package",
  ]);
});

it("has Connect binary scenarios beside the JSON ones", () => {
  expect(standardScenarioNames).toEqual(
    expect.arrayContaining([
      "floor-connect-json-http1",
      "admit-connect-json-http1",
      "floor-connect-proto-http1",
      "admit-connect-proto-http1",
    ]),
  );
});
