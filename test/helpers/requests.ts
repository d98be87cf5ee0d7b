// Test requests: the contract's sample request (a copy of shared/fixtures/runtime-request.json) with
// fresh ids and times, since its fixed times lie in the past.
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import { type RuntimeRequest, RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";

export const fixturesDir = new URL("../fixtures/", import.meta.url);

export function readFixture(name: string): JsonObject {
  return JSON.parse(readFileSync(new URL(name, fixturesDir), "utf8")) as JsonObject;
}

/**
 * The sample request as JSON with a new requestId and idempotency key (a new operation, as far as
 * the ledger can tell), occurredAtUtc = now and a deadline one minute on.
 */
export function freshRequestJson(nowMs = Date.now(), deadlineInMs = 60_000): JsonObject {
  const json = readFixture("runtime-request.json");
  json.requestId = randomUUID();
  (json.task as JsonObject).idempotencyKey = `case-44-resolve-${randomUUID()}`;
  json.occurredAtUtc = new Date(nowMs).toISOString();
  json.deadlineUtc = new Date(nowMs + deadlineInMs).toISOString();
  return json;
}

export function freshRequest(nowMs = Date.now(), deadlineInMs = 60_000): RuntimeRequest {
  return fromJson(RuntimeRequestSchema, freshRequestJson(nowMs, deadlineInMs));
}

/** Sets a value at a dotted JSON path, creating objects on the way. */
export function withField(json: JsonObject, path: string, value: unknown): JsonObject {
  const copy = structuredClone(json) as Record<string, unknown>;
  const keys = path.split(".");
  let node = copy;
  for (const key of keys.slice(0, -1)) {
    node[key] ??= {};
    node = node[key] as Record<string, unknown>;
  }
  const last = keys[keys.length - 1] as string;
  if (value === undefined) delete node[last];
  else node[last] = value;
  return copy as JsonObject;
}
