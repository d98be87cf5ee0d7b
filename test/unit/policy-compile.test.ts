// The CEL compiler (src/policy/compile.ts) against the planner: every expression of the example
// bundle and a battery covering each supported construct, on seeded random inputs, must give the
// same result through the compiled path (falling back to the planner when it defers) as through the
// planner alone, errors included with their messages. And the compiled path must actually be taken:
// the example bundle compiles and does not defer on the sample request.
import { readFileSync } from "node:fs";
import { type CelResult, isCelError, parse, plan } from "@bufbuild/cel";
import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { seededRandom } from "../../src/bench/load.js";
import { RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { compileExpression, type PolicyValues, PolicyVars, policyEnv, type Want } from "../../src/policy/cel.js";
import { compileFast, DEFER } from "../../src/policy/compile.js";
import { loadPolicyFile } from "../../src/policy/load.js";
import { freshRequest, readFixture } from "../helpers/requests.js";

interface ExampleRule {
  readonly match?: string;
  readonly expression?: string;
  readonly cap?: { readonly value: string | number };
}

const exampleRules = (
  parseYaml(readFileSync(new URL("../../examples/policy.yaml", import.meta.url), "utf8")) as { rules: ExampleRule[] }
).rules;

/** Every expression of the example bundle: match, expression and cap value. */
const examples: [string, Want][] = exampleRules.flatMap((rule): [string, Want][] => [
  ...(rule.match === undefined ? [] : [[rule.match, "bool"] as [string, Want]]),
  ...(rule.expression === undefined ? [] : [[rule.expression, "bool"] as [string, Want]]),
  ...(rule.cap === undefined ? [] : [[String(rule.cap.value), "int"] as [string, Want]]),
]);

/** Expressions the compiler handles (some only in part), one construct or edge case or more each. */
const compiled: [string, Want][] = [
  ["true", "bool"],
  ["42", "int"],
  ["-7", "int"],
  ['kind == "deploy_model"', "bool"],
  ['kind != "" && kind < "f"', "bool"],
  ['request.risk.level == "high"', "bool"],
  ['request.risk.level < "m"', "bool"],
  ['!(request.risk.level in ["high", "critical"])', "bool"],
  ['request.trace.content_mode in ["", "references-only"]', "bool"],
  ['"payment-card" in request.risk.data_classes', "bool"],
  ['request.risk.data_classes.exists(c, c.endsWith("-pii"))', "bool"],
  ["request.risk.data_classes.all(c, c.size() > 3)", "bool"],
  ['request.risk.data_classes.exists(c, c.contains("ï") || c.startsWith("😀"))', "bool"],
  // The iteration variable shadows a variable; a nested comprehension reads the outer one.
  ['request.risk.data_classes.exists(kind, kind == "pii")', "bool"],
  ["request.risk.data_classes.exists(c, caller.scopes.all(s, s != c))", "bool"],
  ["size(request.risk.data_classes) > 1", "bool"],
  ["request.risk.data_classes.size()", "int"],
  ['request.tenant.id.startsWith("trial-") && requested.tokens > 8000', "bool"],
  ["request.tenant.id.size()", "int"],
  ['kind + "/" + request.tenant.id == "evaluation/trial-x"', "bool"],
  ['kind.endsWith("_model") != kind.startsWith("deploy")', "bool"],
  ['request.risk.purpose.endsWith("") && request.risk.purpose.contains("")', "bool"],
  // Unset optional scalars and unset messages read as their defaults.
  ["request.trace.enabled", "bool"],
  ["request.trace.enabled == false || request.output.stream", "bool"],
  ["request.trace.enabled < request.output.stream", "bool"],
  ['request.actor.delegation_id == ""', "bool"],
  ["request.session.state_version >= 0", "bool"],
  ["request.session.state_version * 3", "int"],
  ['request.session.id != "" && request.session.thread_id.startsWith("thread")', "bool"],
  ["request.budget.minimum_acceptable.tokens == 0", "bool"],
  ["request.budget.minimum_acceptable.resources.size() == 0", "bool"],
  ["request.budget.max_tokens * 2 <= requested.tokens", "bool"],
  ["request.budget.max_cost_usd < 0.5", "bool"],
  ["request.budget.max_cost_usd * 1000000.0 >= 50000.0", "bool"],
  ["request.budget.max_cost_usd == request.budget.minimum_acceptable.cost_usd", "bool"],
  ["-request.budget.max_cost_usd < -0.1 || 1.5 / 0.0 > 1.0", "bool"],
  ["request.budget.max_cost_usd - request.budget.max_cost_usd == 0.0", "bool"],
  // NaN (a random max_cost_usd) is not equal to itself, in a list either.
  ["request.budget.max_cost_usd in [request.budget.max_cost_usd, 1.0]", "bool"],
  // A map field: a missing key is the planner's error.
  ['"gpu" in request.budget.resources && request.budget.resources["gpu"] > 1', "bool"],
  ["request.budget.resources.gpu", "int"],
  ["request.budget.resources.exists(k, k.size() == 3)", "bool"],
  // Keys that plain objects inherit are not map keys.
  ['"toString" in request.budget.resources || "constructor" in requested.resources', "bool"],
  ['!("constructor" in requested.resources) || requested.resources["constructor"] > 0', "bool"],
  // requested: ints, a map with or without gpu.
  ["requested.resources.gpu > 2", "bool"],
  ['requested.resources["gpu"] >= 1', "bool"],
  ['"gpu" in requested.resources || requested.steps == 0', "bool"],
  ["requested.resources.exists(k, requested.resources[k] > 4)", "bool"],
  ["requested.resources.all(k, k in request.budget.resources)", "bool"],
  ["requested.resources.size()", "int"],
  ['requested["tokens"] > 10', "bool"],
  ["requested.tokens + requested.costUsdMicros", "int"],
  ["requested.tokens + 9007199254740991 > 0", "bool"],
  ["requested.tokens * requested.tokens * requested.tokens", "int"],
  ["requested.tokens / requested.steps", "int"],
  ["requested.tokens % (requested.steps - 6)", "int"],
  ["-requested.tokens", "int"],
  ["-(requested.tokens - requested.steps) * 3 < requested.costUsdMicros", "bool"],
  ["requested.costUsdMicros / 1000 % 7 == 3", "bool"],
  ["requested.steps > 1 ? requested.steps - 1 : 1", "int"],
  ["[requested.tokens, requested.steps].exists(x, x > 100)", "bool"],
  ["requested.tokens in [0, 4000, 8000]", "bool"],
  // caller: empty values when unauthenticated.
  ['caller.principal == "" ? 0 : size(caller.principal)', "int"],
  ['caller.subject.contains("ci") || caller.scopes.size() > 2', "bool"],
  ['caller.scopes.all(s, s.startsWith("admit"))', "bool"],
  ['caller["principal"] == "token:ci"', "bool"],
  ["request.permissions.scopes.exists(s, s in caller.scopes)", "bool"],
  // An unsupported operand of && or ||: decided by the other one, or deferred.
  ['kind == "evaluation" && request.task.input.priority == "high"', "bool"],
  ['request.task.input.priority == "high" || kind != "evaluation"', "bool"],
  ['kind == "evaluation" && request.task.input.priority', "bool"],
];

/** Expressions outside the subset: the planner alone answers them. */
const notCompiled: [string, Want][] = [
  ['request.task.input.priority == "high"', "bool"],
  ["request.deadline_utc > request.occurred_at_utc", "bool"],
  ["has(request.session)", "bool"],
  ["1u == 1u", "bool"],
  ["requested.tokens == 4000.0", "bool"],
  ["requested.tokens > 9223372036854775807", "bool"],
  ['request.risk.level.matches("^h")', "bool"],
  ['request.tenant.id.lowerAscii() == "trial-x"', "bool"],
  ["request.risk.data_classes.exists_one(c, c == 'pii')", "bool"],
  ["request.risk.data_classes == []", "bool"],
  ['requested["gpu"] > 0', "bool"],
];

const pick = <T>(random: () => number, values: readonly T[]): T => values[Math.floor(random() * values.length)] as T;
const subset = <T>(random: () => number, values: readonly T[]): T[] => values.filter(() => random() < 0.35);
/** A value of `normal` most of the time, of `unusual` otherwise. */
const mostly = <T>(random: () => number, normal: readonly T[], unusual: readonly T[]): T =>
  random() < 0.8 ? pick(random, normal) : pick(random, unusual);

const huge = [2 ** 53, 2 ** 63, 2 ** 70, Number.MAX_SAFE_INTEGER, 1.5, -1, Number.NaN, Number.POSITIVE_INFINITY];

function randomValues(random: () => number): PolicyValues {
  const json = readFixture("runtime-request.json") as Record<string, JsonObject>;
  const set = (object: string, key: string, value: unknown) => {
    const o = json[object];
    if (o === undefined) return;
    if (value === undefined) delete o[key];
    else o[key] = value as JsonObject[string];
  };
  set("tenant", "id", pick(random, ["tenant-acme", "trial-x", "trial-", "trial-ünïcode-😀", "Trial-x", "x-trial-"]));
  set("risk", "level", pick(random, ["low", "medium", "high", "critical", ""]));
  set(
    "risk",
    "dataClasses",
    subset(random, ["payment-card", "customer-pii", "employee-pii", "pii", "public", "naïve-pii", "😀-pii", "-pii"]),
  );
  set("trace", "contentMode", pick(random, ["", "references-only", "redacted", "approved-content"]));
  set("trace", "enabled", pick(random, [true, false, undefined]));
  set("output", "stream", pick(random, [true, false, undefined]));
  set("actor", "delegationId", pick(random, [undefined, "", "grant-1"]));
  set("session", "stateVersion", pick(random, [undefined, 0, 11, -5]));
  set("permissions", "scopes", subset(random, ["case.read", "case.write", "admit", "admin"]));
  set("task", "input", pick(random, [{ caseId: "c" }, { priority: "high" }, { priority: "low" }, { priority: 3 }]));
  set("budget", "maxTokens", pick(random, [1, 4000, 2147483647]));
  set("budget", "maxCostUsd", pick(random, [0.05, 0.5, 1e-9, 1e6, "NaN", "-Infinity"]));
  set("budget", "resources", pick(random, [undefined, { gpu: 1 }, { gpu: 4, cpu: 2 }, { cpu: 8, abc: 1 }]));
  set("budget", "minimumAcceptable", pick(random, [undefined, { tokens: 100, costUsd: 0.05, resources: { gpu: 1 } }]));
  // Unset messages: every field reads as its default.
  for (const message of ["risk", "trace", "session", "budget", "output"]) if (random() < 0.08) delete json[message];

  return {
    request: fromJson(RuntimeRequestSchema, json as JsonObject),
    kind: pick(random, [
      "deploy_model",
      "inference",
      "evaluation",
      "data_movement",
      "agent_workflow",
      "",
      "Évaluation",
    ]),
    requested: {
      tokens: mostly(random, [0, 1, 4000, 8000, 8001, 2 ** 31], huge),
      costUsdMicros: mostly(random, [0, 50_000, 500_000, 5_000_000, 5_000_001], huge),
      steps: mostly(random, [0, 1, 6, 7, 50, 51], huge),
      resources: mostly(
        random,
        [{}, { gpu: 0 }, { gpu: 1 }, { gpu: 2 }, { gpu: 7 }, { cpu: 4 }, { gpu: 3, cpu: 1 }],
        [{ gpu: 2 ** 52 }, { gpu: 2 ** 60 }, { gpu: 1.5 }, { cpu: Number.NaN }],
      ),
    },
    caller: pick(random, [
      undefined,
      { principal: "token:ci", subject: "ci", scopes: ["admit"] },
      { principal: "", subject: "", scopes: [] },
      { principal: "oidc:ü", subject: "alice", scopes: ["admit", "admin", "case.read"] },
    ]),
  };
}

/** The bench's and the fixture's typical input: the sample request, an agent workflow within limits. */
function sampleValues(overrides: Partial<PolicyValues> = {}): PolicyValues {
  return {
    request: freshRequest(),
    kind: "agent_workflow",
    requested: { tokens: 4000, costUsdMicros: 50_000, steps: 6, resources: {} },
    caller: undefined,
    ...overrides,
  };
}

function program(source: string, want: Want) {
  const compiledExpression = compileExpression(source, want);
  if (compiledExpression.kind !== "ok") throw new Error(`${source}: ${compiledExpression.problem}`);
  return compiledExpression.program;
}

function fast(source: string) {
  const f = compileFast(parse(source).expr);
  if (f === undefined) throw new Error(`${source} does not compile`);
  return f;
}

const show = (r: CelResult) =>
  isCelError(r) ? `error "${r.message}"` : typeof r === "bigint" ? `${r}n` : `${typeof r} ${String(r)}`;

function sameResult(a: CelResult, b: CelResult): boolean {
  if (isCelError(a) || isCelError(b)) return isCelError(a) && isCelError(b) && a.message === b.message;
  return Object.is(a, b);
}

describe("the compiled path", () => {
  it("compiles every expression of the example bundle, and the battery, and not what is outside the subset", () => {
    for (const [source] of [...examples, ...compiled]) expect(compileFast(parse(source).expr), source).toBeDefined();
    for (const [source] of notCompiled) expect(compileFast(parse(source).expr), source).toBeUndefined();
    expect(examples.length).toBe(13);
  });

  it("does not defer on the sample request, whatever the kind, with or without a caller or a GPU", () => {
    const kinds = ["agent_workflow", "deploy_model", "evaluation", "inference"];
    const callers = [undefined, { principal: "token:ci", subject: "ci", scopes: ["admit"] }];
    const resources = [{}, { gpu: 4 }];
    for (const kind of kinds) {
      for (const caller of callers) {
        for (const r of resources) {
          const values = sampleValues({ kind, caller, requested: { ...sampleValues().requested, resources: r } });
          // As evaluatePolicy runs them: a rule's expression or cap only when its match holds.
          for (const rule of exampleRules) {
            const vars = new PolicyVars(values);
            const matched = rule.match === undefined ? true : fast(rule.match)(vars);
            expect(matched, `${rule.match} (${kind})`).not.toBe(DEFER);
            if (matched !== true) continue;
            const check = rule.expression ?? String(rule.cap?.value);
            expect(fast(check)(vars), `${check} (${kind})`).not.toBe(DEFER);
          }
        }
      }
    }
  });

  it("runs the example bundle on the sample request without building the planner's bindings", () => {
    class NoPlanner extends PolicyVars {
      override get cel(): never {
        throw new Error("the planner ran");
      }
    }
    const loaded = loadPolicyFile("examples/policy.yaml");
    if (loaded.kind !== "ok") throw new Error("examples/policy.yaml does not load");
    for (const kind of ["agent_workflow", "deploy_model", "evaluation"]) {
      const vars = new NoPlanner(
        sampleValues({ kind, requested: { tokens: 4000, costUsdMicros: 1, steps: 6, resources: { gpu: 3 } } }),
      );
      for (const rule of loaded.bundle.rules) {
        for (const p of [rule.match, rule.expression, rule.cap?.value]) {
          if (p !== undefined) expect(isCelError(p(vars)), rule.name).toBe(false);
        }
      }
    }
    // And it does build them when an expression is outside the subset.
    expect(() => program("request.task.input.caseId == 'c'", "bool")(new NoPlanner(sampleValues()))).toThrow(
      "the planner ran",
    );
  });

  it("defers what the planner must decide: errors, ints beyond the safe integers, unsupported operands", () => {
    const cases: [string, Partial<PolicyValues>][] = [
      ["requested.resources.gpu > 1", {}],
      ["request.budget.resources.gpu > 1", {}],
      ["requested.tokens / (requested.steps - 6) > 0", {}],
      ["requested.tokens % (requested.steps - 6) > 0", {}],
      [
        "requested.tokens * requested.tokens * requested.tokens > 0",
        { requested: { tokens: 2 ** 20, costUsdMicros: 0, steps: 1, resources: {} } },
      ],
      ["requested.tokens > 0", { requested: { tokens: 1.5, costUsdMicros: 0, steps: 1, resources: {} } }],
      ["requested.steps > 0", { requested: { tokens: 1, costUsdMicros: 0, steps: 1, resources: { gpu: 2 ** 53 } } }],
      ['request.task.input.priority == "high" || kind == "x"', {}],
      ['kind == "agent_workflow" && request.task.input.priority == "high"', {}],
    ];
    for (const [source, overrides] of cases) {
      expect(fast(source)(new PolicyVars(sampleValues(overrides))), source).toBe(DEFER);
    }
    // An int32 field holding what protobuf-es would never decode (the planner's BigInt() throws).
    const odd = sampleValues();
    if (odd.request.budget !== undefined) odd.request.budget.maxTokens = 1.5;
    expect(fast("request.budget.max_tokens > 0")(new PolicyVars(odd))).toBe(DEFER);
    expect(isCelError(program("request.budget.max_tokens > 0", "bool")(new PolicyVars(odd)))).toBe(true);
    // ...but an unsupported operand does not defer when the other operand decides.
    expect(fast('kind == "x" && request.task.input.priority == "high"')(new PolicyVars(sampleValues()))).toBe(false);
    expect(fast('request.task.input.priority == "high" || kind != "x"')(new PolicyVars(sampleValues()))).toBe(true);
  });

  it("answers as the planner alone on seeded random inputs, errors and their messages included", () => {
    const random = seededRandom(20261201);
    const all = [...examples, ...compiled, ...notCompiled].map(([source, want]) => ({
      source,
      planned: plan(policyEnv, parse(source)),
      combined: program(source, want),
      compiled: compileFast(parse(source).expr),
      fast: 0,
    }));
    const mismatches: string[] = [];
    let errors = 0;
    let deferred = 0;
    const runs = 400;
    for (let i = 0; i < runs; i++) {
      const values = randomValues(random);
      for (const e of all) {
        const expected = e.planned(new PolicyVars(values).cel);
        const actual = e.combined(new PolicyVars(values));
        if (!sameResult(expected, actual)) {
          mismatches.push(`${e.source} on input #${i}: planner ${show(expected)}, compiled ${show(actual)}`);
        }
        if (isCelError(expected)) errors++;
        if (e.compiled !== undefined) {
          if (e.compiled(new PolicyVars(values)) === DEFER) deferred++;
          else e.fast++;
        }
      }
    }
    expect(mismatches.slice(0, 20)).toEqual([]);
    // The battery exercises both paths: errors and deferrals happen, and every compiled expression
    // answers itself on some inputs (on most, for the example bundle's).
    expect(errors).toBeGreaterThan(500);
    expect(deferred).toBeGreaterThan(500);
    for (const e of all) {
      if (e.compiled === undefined) continue;
      const share = examples.some(([source]) => source === e.source) ? 0.25 : 0.05;
      expect(e.fast, e.source).toBeGreaterThan(runs * share);
    }
  });
});
