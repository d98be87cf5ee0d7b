// The standard run's inputs: requests that Admit accepts, each one new, in binary and JSON alike;
// and the check that lets a run skip what needs a package that is not installed.
import { fromBinary, fromJson, type JsonObject } from "@bufbuild/protobuf";
import { expect, it } from "vitest";
import { createRequestPool, missingPackages, standardScenarioNames } from "../../src/bench/scenarios.js";
import { RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { readFixture } from "../helpers/requests.js";

it("hands out distinct requests, the same in binary and in JSON, with a live deadline", () => {
  const pool = createRequestPool(readFixture("runtime-request.json"), 3);
  const binary = [1, 2, 3].map(() => fromBinary(RuntimeRequestSchema, pool.admitBinary()));
  const json = [1, 2, 3].map(() =>
    fromJson(RuntimeRequestSchema, JSON.parse(pool.admitJson().toString()) as JsonObject),
  );
  expect(new Set(binary.map((r) => r.requestId)).size).toBe(3);
  // Each its own operation for the ledger, which answers a repeated idempotency key with the first.
  expect(new Set(binary.map((r) => r.task?.idempotencyKey)).size).toBe(3);
  expect(json.map((r) => r.requestId).sort()).toEqual(binary.map((r) => r.requestId).sort());
  for (const r of binary) expect(Number(r.deadlineUtc?.seconds) * 1000).toBeGreaterThan(Date.now() + 60_000);
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
