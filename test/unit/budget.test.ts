// The budgets' pure arithmetic (windows, lines, allocation, refusals), their configuration, and the
// contract 2.1 fields that carry the caller's minimum: everything short of a store.
import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config/config.js";
import { admit } from "../../src/core/admit.js";
import {
  allocate,
  type BudgetClaim,
  type BudgetDefinition,
  budgetLines,
  budgetRefusal,
  windowBounds,
} from "../../src/core/budget.js";
import { checkRequest } from "../../src/core/validate.js";
import { RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { admissionConfig } from "../../src/server.js";
import { freshRequest, readFixture } from "../helpers/requests.js";

const at = Date.UTC(2026, 10, 22, 13, 45, 30);

describe("budget windows", () => {
  it("are UTC calendar windows containing the time", () => {
    expect(windowBounds("minute", at)).toEqual({
      startMs: Date.UTC(2026, 10, 22, 13, 45),
      endMs: Date.UTC(2026, 10, 22, 13, 46),
    });
    expect(windowBounds("hour", at)).toEqual({
      startMs: Date.UTC(2026, 10, 22, 13),
      endMs: Date.UTC(2026, 10, 22, 14),
    });
    expect(windowBounds("day", at)).toEqual({ startMs: Date.UTC(2026, 10, 22), endMs: Date.UTC(2026, 10, 23) });
    expect(windowBounds("month", at)).toEqual({ startMs: Date.UTC(2026, 10, 1), endMs: Date.UTC(2026, 11, 1) });
    // December's month ends with the year.
    expect(windowBounds("month", Date.UTC(2026, 11, 31, 23)).endMs).toBe(Date.UTC(2027, 0, 1));
  });
});

describe("budget lines", () => {
  const definitions: BudgetDefinition[] = [
    { name: "acme", tenant: "acme", per: "tenant", window: "day", limits: { tokens: 100, concurrent: 2 } },
    { name: "everyone", tenant: "*", per: "actor", window: "hour", limits: { costUsdMicros: 5 } },
    { name: "chat", tenant: "*", per: "session", window: "minute", limits: { steps: 3 } },
    { name: "small", tenant: "*", per: "tenant", window: "request", limits: { tokens: 10 } },
  ];

  it("apply to the tenant named or to every tenant, each with its own key; held dimensions have no window", () => {
    const lines = budgetLines(definitions, { tenantId: "acme", actorSubject: "user:a", sessionId: "s1" }, at);
    expect(lines.map((l) => [l.key, l.dimension, l.windowStartMs])).toEqual([
      ["acme/tenant:acme", "tokens", Date.UTC(2026, 10, 22)],
      ["acme/tenant:acme", "concurrent", 0],
      ["everyone/tenant:acme/actor:user:a", "costUsdMicros", Date.UTC(2026, 10, 22, 13)],
      ["chat/tenant:acme/session:s1", "steps", Date.UTC(2026, 10, 22, 13, 45)],
    ]);
  });

  it("skip per-session budgets for a request without a session, and other tenants' budgets", () => {
    const lines = budgetLines(definitions, { tenantId: "globex", actorSubject: "user:b", sessionId: "" }, at);
    expect(lines.map((l) => l.key)).toEqual(["everyone/tenant:globex/actor:user:b"]);
  });
});

describe("allocate", () => {
  const line = (dimension: string, limit: number, windowEndMs = 1000) => ({
    budget: "b",
    key: "b/tenant:t",
    dimension,
    limit,
    windowStartMs: windowEndMs === 0 ? 0 : 1,
    windowEndMs,
    window: "day" as const,
  });
  const claim = (minimum: Record<string, number> = {}): BudgetClaim => ({
    lines: [line("tokens", 1000), line("concurrent", 2, 0)],
    wanted: { tokens: 600, steps: 3, concurrent: 1 },
    minimum,
  });

  it("grants what is wanted when every budget has it, reserving it from each", () => {
    const a = allocate(claim(), () => 0);
    expect(a).toMatchObject({ kind: "granted", granted: { tokens: 600, steps: 3, concurrent: 1 }, clamped: [] });
    expect(a.kind === "granted" && a.reservations.map((r) => [r.dimension, r.amount])).toEqual([
      ["tokens", 600],
      ["concurrent", 1],
    ]);
  });

  it("grants what is left when less than wanted, down to the minimum (default one unit)", () => {
    const a = allocate(claim(), (l) => (l.dimension === "tokens" ? 700 : 0));
    expect(a).toMatchObject({ kind: "granted", granted: { tokens: 300 } });
    expect(a.kind === "granted" && a.clamped.map((c) => [c.line.dimension, c.remaining])).toEqual([["tokens", 300]]);
    expect(allocate(claim({ tokens: 301 }), (l) => (l.dimension === "tokens" ? 700 : 0)).kind).toBe("short");
    expect(allocate(claim(), (l) => (l.dimension === "tokens" ? 1000 : 0)).kind).toBe("short");
  });

  it("treats an overspent budget (usage above the grant) as empty", () => {
    const a = allocate(claim(), (l) => (l.dimension === "tokens" ? 1200 : 0));
    expect(a.kind === "short" && a.shortfalls.map((s) => [s.line.dimension, s.remaining])).toEqual([["tokens", -200]]);
  });
});

describe("budgetRefusal", () => {
  const short = (windowEndMs: number, dimension = "tokens") => ({
    line: { budget: "b", key: "k", dimension, limit: 10, windowStartMs: 1, windowEndMs, window: "day" as const },
    remaining: 0,
    wanted: 5,
    minimum: 1,
  });

  it("is a retryable capacity error naming the field, retryable after the last window renews", () => {
    const refusal = budgetRefusal([short(5000), short(9000, "costUsdMicros")]);
    expect(refusal).toMatchObject({
      category: "capacity",
      code: "BUDGET_EXHAUSTED",
      retryable: true,
      retryAfterMs: 9000,
    });
    expect(refusal.violations?.map((v) => v.field)).toEqual(["budget.maxTokens", "budget.maxCostUsd"]);
  });

  it("gives no retry time when a held dimension (freed when an execution ends) is short", () => {
    expect(budgetRefusal([short(5000), short(0, "concurrent")]).retryAfterMs).toBeUndefined();
  });
});

describe("budgets.definitions configuration", () => {
  const load = (definitions: unknown) => loadConfig({ overrides: { "budgets.definitions": definitions } });

  it("reads limits into accounting units (cost in micro-dollars, resources by name)", () => {
    const config = load([
      { name: "d", tenant: "acme", window: "day", costUsd: 2.5, tokens: 10, resources: { gpu: 4 } },
    ]);
    expect(config.budgets.definitions).toEqual([
      {
        name: "d",
        tenant: "acme",
        per: "tenant",
        window: "day",
        limits: { tokens: 10, costUsdMicros: 2_500_000, "resources.gpu": 4 },
      },
    ]);
  });

  it.each([
    [[{ window: "day", tokens: 1 }], "each needs a name"],
    [[{ name: "d", window: "week", tokens: 1 }], '"d".window is missing or unknown'],
    [[{ name: "d", window: "day" }], '"d" sets no limit'],
    [[{ name: "d", window: "day", tokens: -1 }], '"d".tokens must be a positive integer'],
    [[{ name: "d", window: "day", tokens: 1, per: "team" }], '"d".per is not tenant, actor or session'],
    [[{ name: "d", window: "day", tokens: 1, onUnavailable: "maybe" }], '"d".onUnavailable is not closed or open'],
    [[{ name: "d", window: "day", tokens: 1, limit: 3 }], '"d" has unknown keys limit'],
    [
      [
        { name: "d", window: "day", tokens: 1 },
        { name: "d", window: "hour", tokens: 1 },
      ],
      '"d" is defined twice',
    ],
  ])("refuses %j, saying why", (definitions, why) => {
    expect(() => load(definitions)).toThrow(ConfigError);
    expect(() => load(definitions)).toThrow(why);
  });

  it("fails closed unless a budget says onUnavailable: open, which its counter lines carry", () => {
    const config = load([
      { name: "rate", window: "minute", tokens: 10, onUnavailable: "open" },
      { name: "spend", window: "day", costUsd: 1 },
    ]);
    expect(config.budgets.definitions.map((d) => [d.name, d.failOpen === true])).toEqual([
      ["rate", true],
      ["spend", false],
    ]);
    const lines = budgetLines(config.budgets.definitions, { tenantId: "t", actorSubject: "a", sessionId: "" }, at);
    expect(lines.map((l) => [l.budget, l.failOpen === true])).toEqual([
      ["rate", true],
      ["spend", false],
    ]);
  });

  it("refuses windowed budgets without a ledger to count them in", () => {
    expect(() =>
      loadConfig({
        overrides: { "ledger.store": "none", "budgets.definitions": [{ name: "d", window: "day", tokens: 1 }] },
      }),
    ).toThrow("budgets other than per-request ones are counted in the ledger");
  });
});

describe("contract 2.1: budget.minimumAcceptable", () => {
  const parse = (json: JsonObject) => fromJson(RuntimeRequestSchema, json);

  it("the 2.0 and 2.1 fixtures both parse; 2.1 is this server's version, accepted with no warning", () => {
    const now = Date.parse("2026-06-21T15:32:20.000Z");
    for (const name of ["runtime-request.json", "runtime-request-2.1.json"]) {
      const check = checkRequest(parse(readFixture(name)), admissionConfig(loadConfig()).limits, now);
      expect(check).toEqual({ kind: "valid", warnings: [] });
    }
    expect(parse(readFixture("runtime-request-2.1.json")).budget?.minimumAcceptable?.tokens).toBe(1000);
  });

  it("a minimum above what is requested of it is invalid, field by field", () => {
    const r = freshRequest();
    const budget = r.budget as NonNullable<typeof r.budget>;
    budget.resources = { gpu: 1 };
    budget.minimumAcceptable = {
      $typeName: "envelope.v1.BudgetMinimum",
      tokens: 5000,
      costUsd: 1,
      steps: 7,
      resources: { gpu: 2, tpu: 1 },
    };
    const check = checkRequest(r, admissionConfig(loadConfig()).limits, Date.now());
    expect(check.kind === "invalid" && check.violations.map((v) => [v.field, v.rule])).toEqual([
      ["budget.minimumAcceptable.tokens", "minimum.lte_max"],
      ["budget.minimumAcceptable.costUsd", "minimum.lte_max"],
      ["budget.minimumAcceptable.steps", "minimum.lte_max"],
      ['budget.minimumAcceptable.resources["gpu"]', "minimum.lte_max"],
      ['budget.minimumAcceptable.resources["tpu"]', "minimum.requested"],
    ]);
  });

  it("a minimum above the per-request limit is refused by the core as a policy error", () => {
    const config = admissionConfig(loadConfig({ overrides: { "limits.maxTokensPerRequest": 1000 } }));
    const r = freshRequest();
    (r.budget as NonNullable<typeof r.budget>).minimumAcceptable = {
      $typeName: "envelope.v1.BudgetMinimum",
      tokens: 2000,
      resources: {},
    };
    const result = admit(r, config, { nowMs: Date.now(), envelopeId: "env_1", traceId: "t" });
    expect(result.kind === "rejected" && [result.error.error?.category, result.error.error?.code]).toEqual([
      "policy",
      "GRANT_BELOW_MINIMUM",
    ]);
  });
});
