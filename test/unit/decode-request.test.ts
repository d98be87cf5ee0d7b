// Decoding untrusted bodies: every problem is answered with a validation ErrorEnvelope whose
// violations name the offending JSON field, never with an exception or a path-less message.
import { equals, type JsonObject, type JsonValue, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import type { ErrorDetail } from "../../src/gen/envelope/v1/error_pb.js";
import { type RuntimeRequest, RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { type Decoded, decodeBinary, decodeJson } from "../../src/service/decode-request.js";
import { freshRequest, freshRequestJson, withField } from "../helpers/requests.js";

const nowMs = Date.parse("2026-06-21T15:32:17.000Z");
const maxBytes = 1024 * 1024;
const utf8 = (text: string) => new TextEncoder().encode(text);

/** The error of a rejected decode; every decode error is a validation error. */
function failure(result: Decoded<RuntimeRequest>): ErrorDetail {
  if (result.kind !== "malformed") throw new Error("expected the body to be rejected");
  const detail = result.error.error;
  if (detail === undefined) throw new Error("an ErrorEnvelope without its error");
  expect(detail.category).toBe("validation");
  expect(result.error.status).toBe("failed");
  return detail;
}

function paths(result: Decoded<RuntimeRequest>): string[] {
  return failure(result).violations.map((v) => v.field);
}

function ok(result: Decoded<RuntimeRequest>): RuntimeRequest {
  if (result.kind !== "ok") {
    throw new Error(`expected the body to decode: ${JSON.stringify(result.error.error?.violations ?? [])}`);
  }
  return result.message;
}

const base = freshRequestJson(nowMs);

describe("decodeJson: wrong JSON types name the field", () => {
  it.each<[string, JsonValue]>([
    ["budget.maxTokens", "abc"],
    ["budget.maxTokens", 1.5],
    ["budget.maxTokens", 2 ** 31],
    ["budget.maxTokens", true],
    ["budget.maxCostUsd", "cheap"],
    ["risk.level", 5],
    ["actor", "x"],
    ["actor", []],
    ["permissions.scopes", "a"],
    ["occurredAtUtc", "yesterday"],
    ["occurredAtUtc", 1750519937],
    ["deadlineUtc", "2026-06-21"],
    ["task.input", [1]],
    ["task.input", "{}"],
    ["output.stream", "true"],
    ["session.stateVersion", "eleven"],
  ])("%s = %j", (path, value) => {
    const result = decodeJson(RuntimeRequestSchema, withField(base, path, value), maxBytes);
    expect(paths(result)).toEqual([path]);
    expect(failure(result).code).toBe("REQUEST_INVALID");
  });

  it("a wrong list item names its index", () => {
    expect(paths(decodeJson(RuntimeRequestSchema, withField(base, "permissions.scopes", [1]), maxBytes))).toEqual([
      "permissions.scopes[0]",
    ]);
    expect(
      paths(decodeJson(RuntimeRequestSchema, withField(base, "permissions.scopes", ["ok", "ok", null]), maxBytes)),
    ).toEqual(["permissions.scopes[2]"]);
  });

  it("a wrong map value names its key", () => {
    const result = decodeJson(RuntimeRequestSchema, withField(base, "budget.resources", { gpu: "two" }), maxBytes);
    expect(paths(result)).toEqual(['budget.resources["gpu"]']);
  });

  it("JSON null means unset and is not a type error", () => {
    const message = ok(decodeJson(RuntimeRequestSchema, withField(base, "session", null), maxBytes));
    expect(message.session).toBeUndefined();
  });
});

describe("decodeJson: unknown fields", () => {
  it("at the top level: json.unknown_field at its name", () => {
    const v = failure(decodeJson(RuntimeRequestSchema, withField(base, "bogus", 1), maxBytes)).violations;
    expect(v.map((x) => [x.field, x.rule])).toEqual([["bogus", "json.unknown_field"]]);
  });

  it("nested: json.unknown_field at its dotted path", () => {
    const v = failure(decodeJson(RuntimeRequestSchema, withField(base, "tenant.bogus", "x"), maxBytes)).violations;
    expect(v.map((x) => [x.field, x.rule])).toEqual([["tenant.bogus", "json.unknown_field"]]);
  });

  it("inside task.input (a Struct) any key is data, not an unknown field", () => {
    const message = ok(
      decodeJson(RuntimeRequestSchema, withField(base, "task.input", { bogus: { x: [1] } }), maxBytes),
    );
    expect(message.task?.input).toEqual({ bogus: { x: [1] } });
  });
});

describe("decodeJson: several problems at once", () => {
  it("reports each problem with its path", () => {
    let json = withField(base, "bogus", 1);
    json = withField(json, "tenant.bogus", 2);
    json = withField(json, "budget.maxTokens", "abc");
    json = withField(json, "risk.level", 5);
    const detail = failure(decodeJson(RuntimeRequestSchema, json, maxBytes));
    expect(detail.code).toBe("REQUEST_INVALID");
    expect(detail.violations.map((v) => v.field).sort()).toEqual([
      "bogus",
      "budget.maxTokens",
      "risk.level",
      "tenant.bogus",
    ]);
    expect(detail.message).toContain("4");
  });
});

describe("decodeJson: bodies that are not a request object", () => {
  it("not JSON: REQUEST_MALFORMED, rule json.syntax", () => {
    const detail = failure(decodeJson(RuntimeRequestSchema, utf8('{"contractVersion": "2.0",'), maxBytes));
    expect(detail.code).toBe("REQUEST_MALFORMED");
    expect(detail.violations.map((v) => [v.field, v.rule])).toEqual([["", "json.syntax"]]);
  });

  it.each(["[1,2]", "[]", '"text"', "42", "null"])("%s: an error at the root", (body) => {
    const detail = failure(decodeJson(RuntimeRequestSchema, utf8(body), maxBytes));
    expect(detail.violations.map((v) => v.field)).toEqual([""]);
  });

  it("oversize: REQUEST_TOO_LARGE; exactly at the limit is accepted", () => {
    const body = utf8(JSON.stringify(base));
    const detail = failure(decodeJson(RuntimeRequestSchema, body, body.byteLength - 1));
    expect(detail.code).toBe("REQUEST_TOO_LARGE");
    expect(detail.violations).toHaveLength(1);
    ok(decodeJson(RuntimeRequestSchema, body, body.byteLength));
  });

  it("oversize is measured in bytes, not characters", () => {
    const body = utf8(JSON.stringify(withField(base, "task.input", { q: "é".repeat(100) })));
    const chars = new TextDecoder().decode(body).length;
    expect(body.byteLength).toBeGreaterThan(chars);
    expect(failure(decodeJson(RuntimeRequestSchema, body, chars)).code).toBe("REQUEST_TOO_LARGE");
  });
});

describe("decodeJson: contract version first", () => {
  it('a "3.0" request with unknown fields is answered with CONTRACT_VERSION_UNSUPPORTED, not field noise', () => {
    let json = withField(base, "contractVersion", "3.0");
    json = withField(json, "newTopLevel", { a: 1 });
    json = withField(json, "budget.tokens", 10);
    json = withField(json, "risk.level", 2);
    const detail = failure(decodeJson(RuntimeRequestSchema, json, maxBytes));
    expect(detail.code).toBe("CONTRACT_VERSION_UNSUPPORTED");
    expect(detail.violations.map((v) => v.field)).toEqual(["contractVersion"]);
    expect(detail.message).toContain("2.x");
  });

  it("a 2.x request with the same problems gets the field violations", () => {
    const json = withField(withField(base, "newTopLevel", { a: 1 }), "contractVersion", "2.9");
    const detail = failure(decodeJson(RuntimeRequestSchema, json, maxBytes));
    expect(detail.code).toBe("REQUEST_INVALID");
    expect(detail.violations.map((v) => v.field)).toEqual(["newTopLevel"]);
  });
});

describe("decodeJson: proto3 JSON names", () => {
  it("accepts the proto field names (snake_case) as keys", () => {
    const json = structuredClone(base) as JsonObject;
    const requestId = json.requestId;
    delete json.requestId;
    json.request_id = requestId ?? null;
    json.occurred_at_utc = json.occurredAtUtc ?? null;
    delete json.occurredAtUtc;
    json.budget = { max_tokens: 10, max_cost_usd: 0.5, max_steps: 2 };
    const message = ok(decodeJson(RuntimeRequestSchema, json, maxBytes));
    expect(message.requestId).toBe(requestId);
    expect(message.occurredAtUtc).toEqual(ok(decodeJson(RuntimeRequestSchema, base, maxBytes)).occurredAtUtc);
    expect([message.budget?.maxTokens, message.budget?.maxCostUsd, message.budget?.maxSteps]).toEqual([10, 0.5, 2]);
  });

  it("reports a snake_case key's problem at its camelCase path", () => {
    const json = withField(base, "budget", { max_tokens: "abc", max_cost_usd: 0.5, max_steps: 2 });
    expect(paths(decodeJson(RuntimeRequestSchema, json, maxBytes))).toEqual(["budget.maxTokens"]);
  });
});

describe("decodeJson: values the shape check lets through but the proto3 JSON decoder refuses", () => {
  // These are rejected either way; the point is that the answer still names the field, as every
  // other decode error does, instead of a root-level message quoting protobuf internals.
  it.each<[string, string, string]>([
    [
      "an int32 string with surrounding space",
      '"budget":{"maxTokens":" 12","maxCostUsd":0.05,"maxSteps":6}',
      "budget.maxTokens",
    ],
    ["a double out of range", '"budget":{"maxTokens":12,"maxCostUsd":1e400,"maxSteps":6}', "budget.maxCostUsd"],
    ["a timestamp before year 1", '"deadlineUtc":"0000-01-01T00:00:00Z"', "deadlineUtc"],
  ])("%s", (_label, replacement, path) => {
    const key = replacement.slice(1, replacement.indexOf('"', 1));
    const json = structuredClone(base) as Record<string, unknown>;
    delete json[key];
    const text = JSON.stringify(json).replace(/^\{/, `{${replacement},`);
    const detail = failure(decodeJson(RuntimeRequestSchema, utf8(text), maxBytes));
    expect(detail.violations.map((v) => v.field)).toEqual([path]);
  });

  it("the same field under both its JSON and its proto name", () => {
    const json = { ...base, request_id: base.requestId ?? null };
    const detail = failure(decodeJson(RuntimeRequestSchema, json, maxBytes));
    expect(detail.violations.map((v) => v.field)).toEqual(["requestId"]);
  });
});

describe("decodeBinary", () => {
  const message = freshRequest(nowMs);
  const bytes = toBinary(RuntimeRequestSchema, message);

  it("a valid encoding round-trips, with no warnings", () => {
    const result = decodeBinary(RuntimeRequestSchema, bytes, maxBytes);
    expect(result.kind).toBe("ok");
    if (result.kind !== "ok") return;
    expect(equals(RuntimeRequestSchema, result.message, message)).toBe(true);
    expect(toBinary(RuntimeRequestSchema, result.message)).toEqual(bytes);
    expect(result.warnings).toEqual([]);
  });

  it.each([
    ["a truncated length-delimited field", [0x0a, 0xff, 0xff]],
    ["an invalid wire type", [0x0f]],
    ["a varint that never ends", [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]],
  ])("malformed bytes (%s): REQUEST_MALFORMED, rule wire.malformed", (_label, raw) => {
    const detail = failure(decodeBinary(RuntimeRequestSchema, new Uint8Array(raw), maxBytes));
    expect(detail.code).toBe("REQUEST_MALFORMED");
    expect(detail.violations.map((v) => v.rule)).toEqual(["wire.malformed"]);
  });

  it("oversize: REQUEST_TOO_LARGE; exactly at the limit is accepted", () => {
    expect(failure(decodeBinary(RuntimeRequestSchema, bytes, bytes.byteLength - 1)).code).toBe("REQUEST_TOO_LARGE");
    expect(decodeBinary(RuntimeRequestSchema, bytes, bytes.byteLength).kind).toBe("ok");
  });

  it("an unknown field number is kept and warned about with UNKNOWN_FIELDS_IGNORED", () => {
    const extra = new BinaryWriter().tag(99, WireType.Varint).int32(7).finish();
    const result = decodeBinary(RuntimeRequestSchema, new Uint8Array([...bytes, ...extra]), maxBytes);
    expect(result.kind).toBe("ok");
    if (result.kind !== "ok") return;
    expect(result.warnings.map((w) => w.code)).toEqual(["UNKNOWN_FIELDS_IGNORED"]);
    expect(equals(RuntimeRequestSchema, result.message, message)).toBe(true);
    // Forward compatibility: re-encoding keeps the field.
    expect(toBinary(RuntimeRequestSchema, result.message)).toEqual(new Uint8Array([...bytes, ...extra]));
  });

  it("an unknown field inside a sub-message is warned about at that message's path", () => {
    // A second occurrence of field 16 (budget) merges into the first; it carries unknown field 99.
    const inner = new BinaryWriter().tag(99, WireType.Varint).int32(1).finish();
    const extra = new BinaryWriter().tag(16, WireType.LengthDelimited).bytes(inner).finish();
    const result = decodeBinary(RuntimeRequestSchema, new Uint8Array([...bytes, ...extra]), maxBytes);
    expect(result.kind).toBe("ok");
    if (result.kind !== "ok") return;
    expect(result.warnings.map((w) => [w.code, w.field])).toEqual([["UNKNOWN_FIELDS_IGNORED", "budget"]]);
    expect(result.message.budget?.maxTokens).toBe(message.budget?.maxTokens);
  });
});
