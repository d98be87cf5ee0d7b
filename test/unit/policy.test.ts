// Policy bundles: parsing, compilation and its checks, the limits, and evaluation of every effect.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type PolicyBundle, parsePolicyBundle, policyLimits } from "../../src/policy/bundle.js";
import { evaluatePolicy, type PolicyInput } from "../../src/policy/evaluate.js";
import { loadPolicyFile } from "../../src/policy/load.js";
import { freshRequest } from "../helpers/requests.js";

const dir = mkdtempSync(join(tmpdir(), "envelope-policy-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function bundle(text: string): PolicyBundle {
  const result = parsePolicyBundle(text);
  if (result.kind !== "ok") expect.fail(`expected a valid bundle: ${result.problems.join("; ")}`);
  return result.bundle;
}

function problems(text: string): readonly string[] {
  const result = parsePolicyBundle(text);
  if (result.kind === "ok") expect.fail("expected the bundle to be refused");
  return result.problems;
}

/** A bundle of one rule, in JSON (a bundle may be YAML or JSON). */
const oneRule = (rule: Record<string, unknown>) => JSON.stringify({ version: "v1", rules: [rule] });

function input(overrides: Partial<PolicyInput> = {}): PolicyInput {
  return {
    request: freshRequest(),
    kind: "agent_workflow",
    requested: { tokens: 4000, costUsdMicros: 50_000, steps: 6, resources: { gpu: 2 } },
    caller: { principal: "token:ci", subject: "ci", scopes: ["admit"] },
    decisionId: "env_1/policy",
    ...overrides,
  };
}

describe("parsing and compilation", () => {
  it("compiles a YAML bundle with every effect", () => {
    const b = bundle(`
version: "2026-12-01.1"
rules:
  - name: no-critical
    expression: request.risk.level != "critical"
    message: critical-risk requests are not admitted
    effect: deny
  - name: big-requests
    match: kind == "agent_workflow"
    expression: requested.tokens <= 100000
    message: a large agent workflow
    effect: warn
  - name: pii-needs-approval
    expression: '!("customer-pii" in request.risk.data_classes)'
    message: customer PII needs a person's approval
    effect: require_approval
  - name: trial-tokens
    match: request.tenant.id.startsWith("trial-")
    effect: cap
    cap: { dimension: tokens, value: 8000 }
    message: trial tenants get at most 8000 tokens
  - name: gpu
    effect: cap
    cap: { dimension: resources.gpu, value: "requested.resources.gpu / 2" }
    message: half the GPUs asked for
`);
    expect(b.version).toBe("2026-12-01.1");
    expect(b.rules.map((r) => [r.name, r.effect])).toEqual([
      ["no-critical", "deny"],
      ["big-requests", "warn"],
      ["pii-needs-approval", "require_approval"],
      ["trial-tokens", "cap"],
      ["gpu", "cap"],
    ]);
    expect(b.rules[3]?.cap?.dimension).toBe("tokens");
    expect(Object.isFrozen(b)).toBe(true);
  });

  it("accepts a bundle without rules", () => {
    expect(bundle('{"version": "empty", "rules": []}').rules).toEqual([]);
  });

  it("refuses unknown keys, a missing or numeric version, and a bundle that is not a mapping", () => {
    expect(problems('{"version": "v1", "rules": [], "rulez": []}')).toEqual([
      'unknown key "rulez" (keys: version, rules)',
    ]);
    expect(problems("version: 1.5\nrules: []")).toEqual(['version: must be a string; quote it ("1.5")']);
    expect(problems("rules: []")[0]).toMatch(/^version: required/);
    expect(problems("version: v1")).toEqual(["rules: required, a list of rules (it may be empty)"]);
    expect(problems("- 1\n- 2")).toEqual(["the bundle must be a mapping with keys version and rules"]);
    expect(problems("version: [unclosed")[0]).toMatch(/^not valid YAML or JSON/);
    expect(problems("version: a\nversion: b\nrules: []")[0]).toMatch(/^not valid YAML or JSON: .*unique/i);
  });

  it("names the rule and the problem: unknown keys, missing fields, bad effects, duplicates", () => {
    const text = JSON.stringify({
      version: "v1",
      rules: [
        { name: "a", effect: "deny", expression: "true", message: "m", severity: "high" },
        { name: "b", effect: "block", expression: "true", message: "m" },
        { name: "c", effect: "deny", message: "m" },
        { name: "d", effect: "warn", expression: "true" },
        { name: "a", effect: "warn", expression: "true", message: "again" },
        { effect: "deny", expression: "true", message: "m" },
        "not a rule",
      ],
    });
    expect(problems(text)).toEqual([
      'rules[0] (a): unknown key "severity" (keys: name, effect, message, match, expression, cap)',
      "rules[1] (b): effect: required, one of deny, warn, require_approval, cap",
      "rules[2] (c): expression: required, a CEL bool expression that must hold (the effect applies when it is false)",
      "rules[3] (d): message: required, a non-empty string",
      "rules[4] (a): duplicate name; rules[0] has it already",
      expect.stringMatching(/^rules\[5\]: name: required/),
      "rules[6]: must be a mapping with name, effect, message and expression or cap",
    ]);
  });

  it("refuses syntax errors, unknown variables, fields, keys and functions at load", () => {
    const refused = (expression: string) => problems(oneRule({ name: "r", effect: "deny", expression, message: "m" }));
    expect(refused("1 +")).toEqual([
      "rules[0] (r): expression: syntax error at 1:3: found + but expecting end of input",
    ]);
    expect(refused("tenant == 'x'")).toEqual([
      'rules[0] (r): expression: unknown variable "tenant" (variables: request, kind, requested, caller)',
    ]);
    expect(refused("request.budget.maxTokens > 1")[0]).toContain(
      'request.budget has no field "maxTokens" (Budget fields, by their proto names: max_tokens, max_cost_usd, max_steps, resources, minimum_acceptable)',
    );
    expect(refused("requested.cost > 1")[0]).toContain(
      'requested has no key "cost" (keys: tokens, costUsdMicros, steps, resources)',
    );
    expect(refused("caller.name == ''")[0]).toContain('caller has no key "name" (keys: principal, subject, scopes)');
    expect(refused("isAdmin(caller.principal)")[0]).toContain('unknown function "isAdmin"');
    expect(refused("kind.region == 'eu'")[0]).toContain('kind is a string, which has no field "region"');
    // Comprehension variables are in scope inside the comprehension only.
    expect(refused("request.permissions.scopes.all(s, s != 'admin') && s == 'x'")[0]).toContain('unknown variable "s"');
  });

  it("refuses expressions that cannot be a bool, and cap values that cannot be an int", () => {
    expect(problems(oneRule({ name: "r", effect: "warn", expression: "requested.tokens * 2", message: "m" }))).toEqual([
      "rules[0] (r): expression: must be a bool expression; this one is one of int, uint, double",
    ]);
    expect(problems(oneRule({ name: "r", effect: "warn", match: "kind", expression: "true", message: "m" }))).toEqual([
      "rules[0] (r): match: must be a bool expression; this one is a string",
    ]);
    const cap = (value: unknown, dimension = "tokens") =>
      oneRule({ name: "r", effect: "cap", cap: { dimension, value }, message: "m" });
    expect(problems(cap("'8000'"))).toEqual([
      "rules[0] (r): cap.value: must be an int expression; this one is a string",
    ]);
    expect(problems(cap(8000, "gpus"))[0]).toMatch(/cap\.dimension: "gpus" is not a grant dimension/);
    expect(problems(cap(8000, "resources.GPU"))[0]).toMatch(/cap\.dimension/);
    expect(bundle(cap(8000, "resources.gpu")).rules[0]?.cap?.dimension).toBe("resources.gpu");
    expect(bundle(cap("request.budget.max_steps - 1", "steps")).rules).toHaveLength(1);
  });

  it("keeps expression, cap and effect consistent", () => {
    expect(
      problems(
        oneRule({ name: "r", effect: "cap", expression: "true", cap: { dimension: "steps", value: 1 }, message: "m" }),
      ),
    ).toEqual([
      "rules[0] (r): expression: a cap rule has none; it applies whenever match holds (put the condition in match)",
    ]);
    expect(
      problems(
        oneRule({ name: "r", effect: "deny", expression: "true", cap: { dimension: "steps", value: 1 }, message: "m" }),
      ),
    ).toEqual(["rules[0] (r): cap: only a rule with effect cap has one"]);
    expect(problems(oneRule({ name: "r", effect: "cap", message: "m" }))[0]).toMatch(
      /^rules\[0\] \(r\): cap: required/,
    );
  });

  it("enforces the limits: bundle size, rule count, expression length", () => {
    const big = `version: v1\nrules: []\n# ${"x".repeat(policyLimits.maxBundleBytes)}`;
    expect(problems(big)).toEqual([
      `the bundle is ${Buffer.byteLength(big)} bytes; at most 1048576 bytes (1 MiB) are accepted`,
    ]);
    const many = JSON.stringify({
      version: "v1",
      rules: Array.from({ length: 1001 }, (_, i) => ({
        name: `r${i}`,
        effect: "warn",
        expression: "true",
        message: "m",
      })),
    });
    expect(problems(many)).toEqual(["rules: 1001 rules; a bundle holds at most 1000"]);
    const long = `true && ${"true && ".repeat(600)}true`;
    expect(problems(oneRule({ name: "r", effect: "deny", expression: long, message: "m" }))).toEqual([
      `rules[0] (r): expression: ${long.length} characters; an expression has at most 4096`,
    ]);
  });
});

describe("loading a file", () => {
  it("loads a bundle file, and refuses an oversized one before compiling it", () => {
    const good = join(dir, "good.yaml");
    writeFileSync(good, 'version: "f1"\nrules: []\n');
    expect(loadPolicyFile(good)).toMatchObject({ kind: "ok", bundle: { version: "f1" } });
    const big = join(dir, "big.yaml");
    writeFileSync(big, Buffer.alloc(policyLimits.maxBundleBytes + 10, 0x20));
    expect(loadPolicyFile(big)).toEqual({
      kind: "invalid",
      problems: ["the bundle is 1048586 bytes; at most 1048576 bytes (1 MiB) are accepted"],
    });
    expect(loadPolicyFile(join(dir, "missing.yaml"))).toEqual({
      kind: "unreadable",
      problems: [`cannot read ${join(dir, "missing.yaml")} (ENOENT)`],
    });
  });
});

describe("evaluation", () => {
  const version = "2026-12-01.1";
  const rules = (...r: Record<string, unknown>[]) => bundle(JSON.stringify({ version, rules: r }));

  it("denies when an expression is false, naming the rule; records the version in its decision", () => {
    const b = rules(
      { name: "medium-only", effect: "deny", expression: "request.risk.level == 'low'", message: "low risk only" },
      { name: "holds", effect: "deny", expression: "request.tenant.id == 'tenant-acme'", message: "acme only" },
    );
    const verdict = evaluatePolicy(b, input());
    expect(verdict.denials).toEqual([
      { rule: "medium-only", code: "POLICY_DENIED", message: "low risk only", decisionId: "env_1/policy/medium-only" },
    ]);
    expect(verdict.decisions).toEqual([
      expect.objectContaining({
        decisionId: "env_1/policy/medium-only",
        checkpoint: "admission.policy",
        effect: "deny",
        policyVersion: version,
      }),
    ]);
  });

  it("applies a rule only when its match holds", () => {
    const b = rules({
      name: "deploys",
      match: "kind == 'deploy_model'",
      effect: "deny",
      expression: "false",
      message: "no deploys",
    });
    expect(evaluatePolicy(b, input()).denials).toEqual([]);
    expect(evaluatePolicy(b, input({ kind: "deploy_model" })).denials.map((d) => d.rule)).toEqual(["deploys"]);
  });

  it("warns, and requires approval, with a decision per fired rule", () => {
    const b = rules(
      { name: "w", effect: "warn", expression: "requested.tokens < 1000", message: "more than 1000 tokens" },
      { name: "a", effect: "require_approval", expression: "request.risk.data_classes.size() == 0", message: "data" },
    );
    const verdict = evaluatePolicy(b, input());
    expect(verdict.warnings).toEqual([{ rule: "w", message: "more than 1000 tokens", decisionId: "env_1/policy/w" }]);
    expect(verdict.approvals).toEqual([{ rule: "a", message: "data", decisionId: "env_1/policy/a" }]);
    expect(verdict.decisions.map((d) => [d.decisionId, d.effect, d.policyVersion])).toEqual([
      ["env_1/policy/w", "warn", version],
      ["env_1/policy/a", "require-approval", version],
    ]);
  });

  it("keeps the lowest cap per dimension", () => {
    const b = rules(
      { name: "t1", effect: "cap", cap: { dimension: "tokens", value: 3000 }, message: "3000" },
      { name: "t2", effect: "cap", cap: { dimension: "tokens", value: "requested.tokens / 2" }, message: "half" },
      { name: "g", effect: "cap", cap: { dimension: "resources.gpu", value: 1 }, message: "one gpu" },
      { name: "off", match: "false", effect: "cap", cap: { dimension: "steps", value: 1 }, message: "never" },
    );
    const verdict = evaluatePolicy(b, input());
    expect(verdict.caps.map((c) => [c.dimension, c.value, c.rule])).toEqual([
      ["tokens", 2000, "t2"],
      ["resources.gpu", 1, "g"],
    ]);
    expect(verdict.decisions.map((d) => [d.decisionId, d.effect])).toEqual([
      ["env_1/policy/t1", "cap"],
      ["env_1/policy/t2", "cap"],
      ["env_1/policy/g", "cap"],
    ]);
  });

  it("records one allow decision with the version when no rule fires", () => {
    const b = rules({ name: "fine", effect: "deny", expression: "true", message: "never" });
    const verdict = evaluatePolicy(b, input());
    expect(verdict.denials).toEqual([]);
    expect(verdict.decisions).toEqual([
      {
        $typeName: "envelope.v1.PolicyDecision",
        decisionId: "env_1/policy",
        checkpoint: "admission.policy",
        effect: "allow",
        policyVersion: version,
      },
    ]);
  });

  it("fails closed: an evaluation error is a denial naming the rule, whatever the effect", () => {
    const b = rules(
      { name: "missing-key", effect: "warn", expression: "request.task.input.priority == 'high'", message: "m" },
      { name: "not-bool", effect: "warn", match: "request.task.input.caseId", expression: "true", message: "m" },
      { name: "bad-cap", effect: "cap", cap: { dimension: "tokens", value: "requested.tokens - 5000" }, message: "m" },
      { name: "div", effect: "cap", cap: { dimension: "steps", value: "requested.steps / 0" }, message: "m" },
    );
    const verdict = evaluatePolicy(b, input());
    expect(verdict.denials.map((d) => [d.rule, d.code])).toEqual([
      ["missing-key", "POLICY_EVALUATION_FAILED"],
      ["not-bool", "POLICY_EVALUATION_FAILED"],
      ["bad-cap", "POLICY_EVALUATION_FAILED"],
      ["div", "POLICY_EVALUATION_FAILED"],
    ]);
    expect(verdict.denials[0]?.message).toBe(
      'policy rule "missing-key" could not be evaluated (expression: field not found: priority); the request is refused until it can be',
    );
    expect(verdict.denials[1]?.message).toContain("(match: the result is not a bool)");
    expect(verdict.denials[2]?.message).toContain("(cap.value: the cap is -1000; a cap is at least 1");
    expect(verdict.warnings).toEqual([]);
    expect(verdict.caps).toEqual([]);
    expect(verdict.decisions.every((d) => d.effect === "deny" && d.policyVersion === version)).toBe(true);
  });

  it("sees the caller, with empty values when unauthenticated", () => {
    const b = rules({
      name: "ci-only",
      effect: "deny",
      expression: "caller.principal == 'token:ci' && 'admit' in caller.scopes && caller.subject == 'ci'",
      message: "ci only",
    });
    expect(evaluatePolicy(b, input()).denials).toEqual([]);
    expect(evaluatePolicy(b, input({ caller: undefined })).denials.map((d) => d.rule)).toEqual(["ci-only"]);
  });

  it("reads the request as its protobuf message, task.input as a map, with the strings extension", () => {
    const b = rules({
      name: "shape",
      effect: "deny",
      expression: [
        "request.budget.max_tokens == 4000",
        "request.task.input.caseId == 'case-44'",
        "has(request.task.input.question) && !has(request.task.input.policy)",
        "request.deadline_utc > request.occurred_at_utc",
        "request.permissions.scopes.exists(s, s.startsWith('case.'))",
        "request.tenant.id.upperAscii() == 'TENANT-ACME'",
        "'gpu' in requested.resources && requested.resources.gpu == 2",
        "requested.costUsdMicros == 50000",
      ].join(" && "),
      message: "the request is not what the test expects",
    });
    expect(evaluatePolicy(b, input()).denials).toEqual([]);
  });
});
