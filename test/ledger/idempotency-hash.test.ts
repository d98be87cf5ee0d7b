// The idempotency hash is stored with every envelope and compared when a request comes again, possibly
// to a later release: its bytes must not change. These cases pin it for the sample request, and check
// what it ignores (request id, time of occurrence, the order of JSON object keys).
import { create, fromJson, type JsonObject } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ExecutionEnvelopeSchema } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import { RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { createLedger } from "../../src/ledger/ledger.js";
import type { AdmitEntry, LedgerStore } from "../../src/ledger/store.js";
import { readFixture } from "../helpers/requests.js";

/** The hash the ledger hands its store when recording this request. */
async function storedHash(json: JsonObject): Promise<string> {
  const admitted: AdmitEntry[] = [];
  const store = {
    kind: "capture",
    admit: async (entries: readonly AdmitEntry[]) => {
      admitted.push(...entries);
      return entries.map(() => ({ kind: "inserted" as const }));
    },
  } as unknown as LedgerStore;
  const request = fromJson(RuntimeRequestSchema, json);
  const envelope = create(ExecutionEnvelopeSchema, { envelopeId: "env-1", request });
  const outcome = await createLedger(store).record(envelope, {});
  expect(outcome.kind).toBe("recorded");
  return admitted[0]?.row.requestHash ?? "";
}

/** The sample request with its keys, at every depth, in reverse order. */
function reversedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reversedKeys);
  if (typeof value !== "object" || value === null) return value;
  return Object.fromEntries(
    Object.entries(value)
      .reverse()
      .map(([k, v]) => [k, reversedKeys(v)]),
  );
}

describe("the idempotency hash", () => {
  const sample = readFixture("runtime-request.json");

  it("is the same as earlier releases stored for the sample request", async () => {
    expect(await storedHash(sample)).toBe("bb72db5020dbe3fff1d5443e391007068f83b38517d1a114bea8623e9ba09a70");
  });

  it("ignores the request id, the time of occurrence and the order of object keys", async () => {
    const retried = reversedKeys(sample) as JsonObject;
    retried.requestId = "0b9e1f0e-2a4e-4c55-9a8e-6f1d2c3b4a59";
    retried.occurredAtUtc = "2030-01-01T00:00:00Z";
    expect(retried).not.toEqual(sample);
    expect(await storedHash(retried)).toBe(await storedHash(sample));
  });

  it("changes with anything else", async () => {
    const other = structuredClone(sample);
    (other.task as JsonObject).type = `${(other.task as JsonObject).type}-other`;
    expect(await storedHash(other)).not.toBe(await storedHash(sample));
  });
});
