// The compiled precheck must give protovalidate's answer (valid or not) for every request: a request
// it calls valid skips protovalidate, so one it wrongly passed would be admitted unchecked.
import { clone, create, type DescMessage, fromJson } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import { describe, expect, it } from "vitest";
import { compilePrecheck } from "../../src/core/rule-precheck.js";
import {
  ActorSchema,
  type RuntimeRequest,
  RuntimeRequestSchema,
  SessionSchema,
  TenantSchema,
} from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { readFixture } from "../helpers/requests.js";

const pattern = (source: string) => {
  const re = new RegExp(source, "u");
  return (value: string) => re.test(value);
};
const validator = createValidator({ regexMatch: (p, v) => new RegExp(p, "u").test(v) });
const precheck = compilePrecheck(RuntimeRequestSchema, pattern);
const base = fromJson(RuntimeRequestSchema, readFixture("runtime-request.json"));

/** A small deterministic PRNG (mulberry32), so a failure reproduces. */
function prng(seed: number) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const long = (n: number, c = "x") => c.repeat(n);
const uuid = "70d82541-c047-4bc3-9b58-8e46b65036d0";
type R = RuntimeRequest & Record<string, unknown>;
type Mutation = (r: R, pick: <T>(xs: readonly T[]) => T) => void;

// Each mutation sets one field to a value picked from boundary and ordinary cases.
const mutations: Mutation[] = [
  (r, p) => {
    r.contractVersion = p(["2.0", "2.7", "3.1", "", "2", "x.y", "02.0", "2.0 "]);
  },
  (r, p) => {
    r.requestId = p([uuid, uuid.toUpperCase(), "", "not-a-uuid", `{${uuid}}`, uuid.replaceAll("-", "")]);
  },
  (r, p) => {
    const actor = create(ActorSchema, r.actor);
    r.actor = p([
      undefined,
      { ...actor, subject: "" },
      { ...actor, subject: long(256) },
      { ...actor, subject: long(257) },
    ]);
  },
  (r, p) => {
    if (r.actor) r.actor.subject = p(["a", long(128, "😀"), long(257, "é"), long(256, "😀"), long(129, "😀")]);
  },
  (r, p) => {
    if (r.actor) r.actor.delegationId = p([undefined, "", "d-1", long(256), long(257)]);
  },
  (r, p) => {
    const tenant = create(TenantSchema, r.tenant);
    r.tenant = p([undefined, { ...tenant, id: "" }, { ...tenant, id: long(128) }, { ...tenant, id: long(129) }]);
  },
  (r, p) => {
    if (r.tenant) r.tenant.region = p([undefined, "", long(64), long(65)]);
  },
  (r, p) => {
    const session = create(SessionSchema, r.session);
    r.session = p([undefined, session, { ...session, id: long(257) }]);
  },
  (r, p) => {
    if (r.task) r.task.type = p(["", "t", long(128), long(129)]);
  },
  (r, p) => {
    if (r.task) r.task.kind = p(["", "deploy_model", "tool_invocation", "DEPLOY_MODEL", "other"]);
  },
  (r, p) => {
    if (r.task) r.task.idempotencyKey = p([undefined, "", "k", long(256), long(257)]);
  },
  (r, p) => {
    if (r.task) r.task.input = p([undefined, {}, { a: 1 }]) as never;
  },
  (r, p) => {
    r.task = p([undefined, r.task]);
  },
  (r, p) => {
    if (r.risk) r.risk.level = p(["low", "medium", "high", "critical", "", "LOW", "extreme"]);
  },
  (r, p) => {
    if (r.risk) r.risk.dataClasses = p([[], ["pii"], [""], Array(64).fill("c"), Array(65).fill("c"), [long(129)]]);
  },
  (r, p) => {
    if (r.permissions) r.permissions.scopes = p([[], ["a"], [""], Array(256).fill("s"), Array(257).fill("s")]);
  },
  (r, p) => {
    if (r.permissions) r.permissions.allowedTools = p([[], ["t"], ["t", ""], [long(257)]]);
  },
  (r, p) => {
    if (r.output) r.output.schemaId = p(["", "s", long(256), long(257)]);
  },
  (r, p) => {
    if (r.trace) r.trace.contentMode = p(["", "references-only", "redacted", "approved-content", "full"]);
  },
  (r, p) => {
    if (r.budget) r.budget.maxTokens = p([undefined, 0, -1, 1, 2147483647]);
  },
  (r, p) => {
    if (r.budget) r.budget.maxCostUsd = p([undefined, 0, -0.1, 1e-9, 0.05, Number.NaN, Number.POSITIVE_INFINITY]);
  },
  (r, p) => {
    if (r.budget) r.budget.maxSteps = p([undefined, 0, -3, 1, 6]);
  },
  (r, p) => {
    const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`r${i}`, 1]));
    if (r.budget)
      r.budget.resources = p([
        {},
        { gpu: 1 },
        { GPU: 1 },
        { gpu: 0 },
        { [`a${long(63)}`]: 1 },
        { [`a${long(64)}`]: 1 },
        many,
      ]);
  },
  (r, p) => {
    const field = p([
      "actor",
      "tenant",
      "risk",
      "permissions",
      "output",
      "trace",
      "budget",
      "occurredAtUtc",
      "deadlineUtc",
    ]);
    r[field] = undefined;
  },
];

function validity(schema: DescMessage, message: RuntimeRequest): boolean {
  return validator.validate(schema as typeof RuntimeRequestSchema, message).kind === "valid";
}

describe("compiled precheck", () => {
  it("compiles for RuntimeRequest (every rule it uses has a compiled form)", () => {
    expect(precheck).toBeDefined();
  });

  it("agrees with protovalidate on the sample request", () => {
    expect(precheck?.(base)).toBe(true);
    expect(validity(RuntimeRequestSchema, base)).toBe(true);
  });

  it("agrees with protovalidate on 4000 generated requests", () => {
    const random = prng(20261122);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
    let valid = 0;
    for (let i = 0; i < 4000; i++) {
      const request = clone(RuntimeRequestSchema, base) as R;
      const count = 1 + Math.floor(random() * 3);
      for (let j = 0; j < count; j++) pick(mutations)(request, pick);
      const expected = validity(RuntimeRequestSchema, request);
      if (precheck?.(request) !== expected) {
        expect.fail(
          `case ${i}: precheck says ${!expected}, protovalidate ${expected}: ${JSON.stringify(request, (_k, v) => (typeof v === "bigint" ? String(v) : v)).slice(0, 600)}`,
        );
      }
      if (expected) valid++;
    }
    // Both answers must be well represented, or the agreement would prove little.
    expect(valid).toBeGreaterThan(400);
    expect(valid).toBeLessThan(3600);
  });
});
