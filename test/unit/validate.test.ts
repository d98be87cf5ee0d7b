// checkRequest (validation against the contract and the limits) and admit (the decision and the
// envelope), both with a fixed clock.
import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { defaultConfig } from "../../src/config/config.js";
import { type AdmissionConfig, type AdmissionResult, admit } from "../../src/core/admit.js";
import type { AdmissionLimits } from "../../src/core/limits.js";
import { checkRequest, type RequestCheck } from "../../src/core/validate.js";
import type { ErrorEnvelope } from "../../src/gen/envelope/v1/error_pb.js";
import {
  DecisionOutcome,
  type ExecutionEnvelope,
  ExecutionKind,
  GrantedResourcesSchema,
  LifecycleState,
  RequestedResourcesSchema,
} from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import { type RuntimeRequest, RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { admissionConfig } from "../../src/server.js";
import { readFixture, withField } from "../helpers/requests.js";

const nowMs = Date.parse("2026-06-21T15:32:17.000Z");
const second = 1000;
const limits: AdmissionLimits = defaultConfig.limits;

/** The contract's sample request with occurredAtUtc and deadlineUtc set relative to the fixed clock. */
function requestJson(occurredMs = nowMs, deadlineMs = nowMs + 60 * second): JsonObject {
  const json = readFixture("runtime-request.json");
  json.occurredAtUtc = new Date(occurredMs).toISOString();
  json.deadlineUtc = new Date(deadlineMs).toISOString();
  return json;
}

function request(occurredMs = nowMs, deadlineMs = nowMs + 60 * second): RuntimeRequest {
  return fromJson(RuntimeRequestSchema, requestJson(occurredMs, deadlineMs));
}

/** A request edited in place by `edit` (on the decoded message, so non-JSON values like NaN fit). */
function edited(edit: (r: RuntimeRequest) => void, base: RuntimeRequest = request()): RuntimeRequest {
  edit(base);
  return base;
}

function budgetOf(r: RuntimeRequest): NonNullable<RuntimeRequest["budget"]> {
  if (r.budget === undefined) throw new Error("the fixture has a budget");
  return r.budget;
}

function violations(check: RequestCheck): [field: string, rule: string][] {
  if (check.kind === "invalid") return check.violations.map((v) => [v.field, v.rule]);
  if (check.kind === "unsupported-version") return [[check.violation.field, check.violation.rule]];
  return [];
}

function rulesAt(check: RequestCheck, field: string): string[] {
  return violations(check)
    .filter(([f]) => f === field)
    .map(([, rule]) => rule);
}

describe("checkRequest: contract version negotiation", () => {
  it('"2.0" is accepted with no warning', () => {
    expect(checkRequest(request(), limits, nowMs)).toEqual({ kind: "valid", warnings: [] });
  });

  it('"2.7" (a newer minor) is accepted with a CONTRACT_VERSION_NEWER_MINOR warning on contractVersion', () => {
    const check = checkRequest(
      edited((r) => {
        r.contractVersion = "2.7";
      }),
      limits,
      nowMs,
    );
    expect(check.kind).toBe("valid");
    if (check.kind !== "valid") return;
    expect(check.warnings.map((w) => [w.code, w.field])).toEqual([["CONTRACT_VERSION_NEWER_MINOR", "contractVersion"]]);
    expect(check.warnings[0]?.message).toContain("2.7");
  });

  it.each(["3.0", "1.0"])('"%s" (another major) is rejected as unsupported, naming "2.x"', (version) => {
    const check = checkRequest(
      edited((r) => {
        r.contractVersion = version;
      }),
      limits,
      nowMs,
    );
    expect(check.kind).toBe("unsupported-version");
    if (check.kind !== "unsupported-version") return;
    expect(check.violation.field).toBe("contractVersion");
    expect(check.violation.message).toContain("2.x");
    expect(check.violation.message).toContain(version);
  });

  it("an unsupported major is the one violation, even when other fields are broken", () => {
    const check = checkRequest(
      edited((r) => {
        r.contractVersion = "3.0";
        budgetOf(r).maxTokens = 0;
      }),
      limits,
      nowMs,
    );
    expect(violations(check)).toHaveLength(1);
    expect(violations(check)[0]?.[0]).toBe("contractVersion");
  });

  it.each(["2", "v2.0", "", "2.0.1", " 2.0"])("%j is invalid on contractVersion", (version) => {
    const check = checkRequest(
      edited((r) => {
        r.contractVersion = version;
      }),
      limits,
      nowMs,
    );
    expect(check.kind).toBe("invalid");
    expect(violations(check).map(([f]) => f)).toEqual(["contractVersion"]);
  });
});

describe("checkRequest: every violation at once", () => {
  it("reports 4 broken fields as 4 violations with their paths", () => {
    const check = checkRequest(
      edited((r) => {
        r.requestId = "not-a-uuid";
        if (r.actor) r.actor.subject = "";
        if (r.risk) r.risk.level = "extreme";
        budgetOf(r).maxSteps = 0;
      }),
      limits,
      nowMs,
    );
    expect(check.kind).toBe("invalid");
    expect(
      violations(check)
        .map(([f]) => f)
        .sort(),
    ).toEqual(["actor.subject", "budget.maxSteps", "requestId", "risk.level"]);
  });

  it("mixes schema rules with clock and size checks in one answer", () => {
    const check = checkRequest(
      edited(
        (r) => {
          r.requestId = "nope";
        },
        request(nowMs - limits.maxClockSkewMs - second, nowMs - second),
      ),
      { ...limits, maxTaskInputBytes: 2 },
      nowMs,
    );
    const fields = violations(check).map(([f, rule]) => `${f}:${rule}`);
    expect(fields).toContain("occurredAtUtc:clock_skew");
    expect(fields).toContain("deadlineUtc:deadline.future");
    expect(fields).toContain("task.input:size.max");
    expect(fields.some((f) => f.startsWith("requestId:"))).toBe(true);
  });
});

describe("checkRequest: clock skew", () => {
  const skew = limits.maxClockSkewMs;
  // The deadline lies after both now and occurredAt, so only the skew check can fire.
  const farDeadline = nowMs + skew + 60 * second;

  it.each([
    ["in the past", -(skew + 1)],
    ["in the future", skew + 1],
  ])("occurredAtUtc beyond the skew %s is rule clock_skew", (_label, offset) => {
    const check = checkRequest(request(nowMs + offset, farDeadline), limits, nowMs);
    expect(violations(check)).toEqual([["occurredAtUtc", "clock_skew"]]);
  });

  it.each([
    ["in the past", -skew],
    ["in the future", skew],
    ["now", 0],
  ])("occurredAtUtc within the skew (%s, boundary included) is accepted", (_label, offset) => {
    expect(checkRequest(request(nowMs + offset, farDeadline), limits, nowMs).kind).toBe("valid");
  });

  it("follows the configured skew, not a built-in one", () => {
    const tight = { ...limits, maxClockSkewMs: 10 * second };
    const r = request(nowMs - 11 * second);
    expect(checkRequest(r, limits, nowMs).kind).toBe("valid");
    expect(violations(checkRequest(r, tight, nowMs))).toEqual([["occurredAtUtc", "clock_skew"]]);
  });
});

describe("checkRequest: deadline", () => {
  // occurredAt a minute ago, so a deadline at or just before now is still after occurredAt.
  const occurred = nowMs - 60 * second;

  it("in the past is rejected (deadline.future)", () => {
    expect(violations(checkRequest(request(occurred, nowMs - second), limits, nowMs))).toEqual([
      ["deadlineUtc", "deadline.future"],
    ]);
  });

  it("equal to now is rejected (deadline.future)", () => {
    expect(violations(checkRequest(request(occurred, nowMs), limits, nowMs))).toEqual([
      ["deadlineUtc", "deadline.future"],
    ]);
  });

  it("one millisecond after now is accepted", () => {
    expect(checkRequest(request(occurred, nowMs + 1), limits, nowMs).kind).toBe("valid");
  });

  it("beyond maxDeadlineMs is rejected (deadline.max); exactly at it is accepted", () => {
    expect(violations(checkRequest(request(nowMs, nowMs + limits.maxDeadlineMs + 1), limits, nowMs))).toEqual([
      ["deadlineUtc", "deadline.max"],
    ]);
    expect(checkRequest(request(nowMs, nowMs + limits.maxDeadlineMs), limits, nowMs).kind).toBe("valid");
  });

  it("before occurredAtUtc is rejected (deadline.after_occurred), even when it is in the future", () => {
    // occurredAt 60 s ahead (within skew); deadline 30 s ahead: future, but before the request was made.
    expect(violations(checkRequest(request(nowMs + 60 * second, nowMs + 30 * second), limits, nowMs))).toEqual([
      ["deadlineUtc", "deadline.after_occurred"],
    ]);
  });

  it("equal to occurredAtUtc is rejected (deadline.after_occurred)", () => {
    const t = nowMs + 60 * second;
    expect(rulesAt(checkRequest(request(t, t), limits, nowMs), "deadlineUtc")).toEqual(["deadline.after_occurred"]);
  });
});

describe("checkRequest: budget", () => {
  it.each([0, -1])("maxTokens %d is rejected on budget.maxTokens", (n) => {
    const check = checkRequest(
      edited((r) => {
        budgetOf(r).maxTokens = n;
      }),
      limits,
      nowMs,
    );
    expect(violations(check).map(([f]) => f)).toEqual(["budget.maxTokens"]);
  });

  it.each([0, -1])("maxSteps %d is rejected on budget.maxSteps", (n) => {
    const check = checkRequest(
      edited((r) => {
        budgetOf(r).maxSteps = n;
      }),
      limits,
      nowMs,
    );
    expect(violations(check).map(([f]) => f)).toEqual(["budget.maxSteps"]);
  });

  it.each([0, -0.01, -1, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])(
    "maxCostUsd %d is rejected on budget.maxCostUsd",
    (cost) => {
      const check = checkRequest(
        edited((r) => {
          budgetOf(r).maxCostUsd = cost;
        }),
        limits,
        nowMs,
      );
      expect(check.kind).toBe("invalid");
      expect(new Set(violations(check).map(([f]) => f))).toEqual(new Set(["budget.maxCostUsd"]));
    },
  );

  it.each([1e-7, 4e-7, 5e-7, 9.99e-7])(
    "maxCostUsd %d (below one micro-dollar) is rejected on budget.maxCostUsd",
    (cost) => {
      const check = checkRequest(
        edited((r) => {
          budgetOf(r).maxCostUsd = cost;
        }),
        limits,
        nowMs,
      );
      expect(violations(check).map(([f]) => f)).toEqual(["budget.maxCostUsd"]);
    },
  );

  it("maxCostUsd of exactly one micro-dollar is accepted", () => {
    const check = checkRequest(
      edited((r) => {
        budgetOf(r).maxCostUsd = 0.000001;
      }),
      limits,
      nowMs,
    );
    expect(check.kind).toBe("valid");
  });

  it.each([
    ["gpu", 0, 'budget.resources["gpu"]'],
    ["gpu", -2, 'budget.resources["gpu"]'],
    ["GPU", 1, 'budget.resources["GPU"]'],
    ["1gpu", 1, 'budget.resources["1gpu"]'],
    ["g pu", 1, 'budget.resources["g pu"]'],
    ["x".repeat(65), 1, `budget.resources["${"x".repeat(65)}"]`],
  ])("budget.resources {%j: %d} is rejected at %s", (name, count, path) => {
    const check = checkRequest(
      edited((r) => {
        budgetOf(r).resources = { [name]: count };
      }),
      limits,
      nowMs,
    );
    expect(violations(check).map(([f]) => f)).toEqual([path]);
  });

  it.each([
    ["gpu", 1],
    ["nvidia.a100-80g_x", 3],
    ["x".repeat(64), 1],
  ])("budget.resources {%j: %d} passes validation", (name, count) => {
    const check = checkRequest(
      edited((r) => {
        budgetOf(r).resources = { [name]: count };
      }),
      limits,
      nowMs,
    );
    expect(check.kind).toBe("valid");
  });
});

describe("checkRequest: identifiers and sizes", () => {
  it.each(["not-a-uuid", "70d82541c0474bc39b588e46b65036d0x", "70d82541-c047-4bc3-9b58-8e46b65036dz"])(
    "requestId %j is rejected on requestId",
    (id) => {
      const check = checkRequest(
        edited((r) => {
          r.requestId = id;
        }),
        limits,
        nowMs,
      );
      expect(violations(check).map(([f]) => f)).toEqual(["requestId"]);
    },
  );

  // task.input is measured as compact JSON in UTF-8: {"s":"…"} is 8 bytes plus the string's bytes.
  const input = (s: string): JsonObject => ({ s });
  const withInput = (s: string) =>
    fromJson(RuntimeRequestSchema, withField(requestJson(), "task.input", input(s)) as JsonObject);

  it("task.input over maxTaskInputBytes is rejected on task.input", () => {
    const small = { ...limits, maxTaskInputBytes: 64 };
    const check = checkRequest(withInput("a".repeat(57)), small, nowMs); // 65 bytes
    expect(violations(check)).toEqual([["task.input", "size.max"]]);
  });

  it("task.input exactly at maxTaskInputBytes is accepted", () => {
    const small = { ...limits, maxTaskInputBytes: 64 };
    expect(checkRequest(withInput("a".repeat(56)), small, nowMs).kind).toBe("valid"); // 64 bytes
  });

  it("task.input size counts UTF-8 bytes, not characters", () => {
    const small = { ...limits, maxTaskInputBytes: 28 };
    expect(checkRequest(withInput("é".repeat(10)), small, nowMs).kind).toBe("valid"); // 8 + 20 bytes
    expect(violations(checkRequest(withInput("é".repeat(11)), small, nowMs))).toEqual([["task.input", "size.max"]]);
  });
});

// --- admit -------------------------------------------------------------------------------------

const config: AdmissionConfig = admissionConfig(defaultConfig);
const ids = { envelopeId: "env_01J1ZK3R5V8X2Q7M4N6P9T0WAB", traceId: "9af7fb945f56466a9fef4d456317ce30" };

function admitted(result: AdmissionResult): ExecutionEnvelope {
  if (result.kind !== "admitted") {
    throw new Error(`expected admission, got ${result.error.error?.code}: ${result.error.error?.message}`);
  }
  return result.envelope;
}

function rejected(result: AdmissionResult): ErrorEnvelope {
  if (result.kind !== "rejected") throw new Error("expected a rejection");
  return result.error;
}

function admitBudget(
  budget: { tokens: number; costUsd: number; steps: number; resources?: Record<string, number> },
  cfg: AdmissionConfig = config,
): AdmissionResult {
  const r = edited((req) => {
    const b = budgetOf(req);
    b.maxTokens = budget.tokens;
    b.maxCostUsd = budget.costUsd;
    b.maxSteps = budget.steps;
    b.resources = budget.resources ?? {};
  });
  return admit(r, cfg, { nowMs, ...ids });
}

describe("admit: the grant", () => {
  const lim = config.limits;

  it("nothing clamped: ADMITTED, granted equals requested, no reasons", () => {
    const env = admitted(admitBudget({ tokens: 4000, costUsd: 0.05, steps: 6, resources: { gpu: 1 } }));
    expect(env.decision?.outcome).toBe(DecisionOutcome.ADMITTED);
    expect(env.decision?.reasons).toEqual([]);
    expect(env.state).toBe(LifecycleState.ADMITTED);
    expect(env.granted?.tokens).toBe(4000);
    expect(env.granted?.costUsdMicros).toBe(50_000n);
    expect(env.granted?.steps).toBe(6);
    expect(env.granted?.resources).toEqual({ gpu: 1 });
  });

  it("each over-limit dimension is clamped to the limit with one GRANT_CLAMPED reason naming it", () => {
    const env = admitted(
      admitBudget({
        tokens: lim.maxTokensPerRequest + 1,
        costUsd: lim.maxCostUsdMicrosPerRequest / 1e6 + 1,
        steps: lim.maxStepsPerRequest * 2,
        resources: { gpu: (lim.maxResourcesPerRequest.gpu ?? 0) + 5 },
      }),
    );
    expect(env.decision?.outcome).toBe(DecisionOutcome.ADMITTED_PARTIAL);
    expect(env.granted?.tokens).toBe(lim.maxTokensPerRequest);
    expect(env.granted?.costUsdMicros).toBe(BigInt(lim.maxCostUsdMicrosPerRequest));
    expect(env.granted?.steps).toBe(lim.maxStepsPerRequest);
    expect(env.granted?.resources).toEqual({ gpu: lim.maxResourcesPerRequest.gpu });
    const reasons = env.decision?.reasons ?? [];
    expect(reasons.every((r) => r.code === "GRANT_CLAMPED")).toBe(true);
    expect(reasons.map((r) => r.dimension).sort()).toEqual(["costUsdMicros", "resources.gpu", "steps", "tokens"]);
  });

  it("only the clamped dimension gets a reason", () => {
    const env = admitted(admitBudget({ tokens: lim.maxTokensPerRequest + 1, costUsd: 0.05, steps: 6 }));
    expect(env.decision?.outcome).toBe(DecisionOutcome.ADMITTED_PARTIAL);
    expect(env.decision?.reasons.map((r) => [r.code, r.dimension])).toEqual([["GRANT_CLAMPED", "tokens"]]);
    expect(env.granted?.steps).toBe(6);
    expect(env.granted?.costUsdMicros).toBe(50_000n);
  });

  it("a request exactly at every limit is ADMITTED, not partial", () => {
    const env = admitted(
      admitBudget({
        tokens: lim.maxTokensPerRequest,
        costUsd: lim.maxCostUsdMicrosPerRequest / 1e6,
        steps: lim.maxStepsPerRequest,
        resources: { gpu: lim.maxResourcesPerRequest.gpu ?? 0 },
      }),
    );
    expect(env.decision?.outcome).toBe(DecisionOutcome.ADMITTED);
    expect(env.decision?.reasons).toEqual([]);
  });

  it("granted = min(requested, limit) and never exceeds requested, over random budgets", () => {
    // mulberry32: a small seeded PRNG, so a failure reproduces.
    let seed = 0x5eed_1234;
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const between = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
    const gpuCap = lim.maxResourcesPerRequest.gpu ?? 0;

    for (let i = 0; i < 300; i++) {
      const tokens = between(1, lim.maxTokensPerRequest * 2);
      const costMicros = between(1, lim.maxCostUsdMicrosPerRequest * 2);
      const steps = between(1, lim.maxStepsPerRequest * 2);
      const gpu = random() < 0.5 ? undefined : between(1, gpuCap * 2);
      const env = admitted(
        admitBudget({
          tokens,
          costUsd: costMicros / 1e6,
          steps,
          ...(gpu === undefined ? {} : { resources: { gpu } }),
        }),
      );
      const req = env.requested;
      const got = env.granted;
      const c = { i, tokens, costMicros, steps, gpu };
      expect({ ...c, requested: [req?.tokens, req?.costUsdMicros, req?.steps, req?.resources.gpu] }).toEqual({
        ...c,
        requested: [tokens, BigInt(costMicros), steps, gpu],
      });
      expect({ ...c, granted: [got?.tokens, got?.costUsdMicros, got?.steps, got?.resources.gpu] }).toEqual({
        ...c,
        granted: [
          Math.min(tokens, lim.maxTokensPerRequest),
          BigInt(Math.min(costMicros, lim.maxCostUsdMicrosPerRequest)),
          Math.min(steps, lim.maxStepsPerRequest),
          gpu === undefined ? undefined : Math.min(gpu, gpuCap),
        ],
      });
      // Never more than requested, in any dimension.
      expect((got?.tokens ?? Infinity) <= tokens).toBe(true);
      expect((got?.costUsdMicros ?? BigInt(Number.MAX_SAFE_INTEGER)) <= BigInt(costMicros)).toBe(true);
      expect((got?.steps ?? Infinity) <= steps).toBe(true);
      for (const [name, n] of Object.entries(got?.resources ?? {})) {
        expect(n).toBeLessThanOrEqual(req?.resources[name] ?? 0);
      }
      const clamped =
        Number(tokens > lim.maxTokensPerRequest) +
        Number(costMicros > lim.maxCostUsdMicrosPerRequest) +
        Number(steps > lim.maxStepsPerRequest) +
        Number(gpu !== undefined && gpu > gpuCap);
      expect({ ...c, reasons: env.decision?.reasons.length }).toEqual({ ...c, reasons: clamped });
      expect(env.decision?.outcome).toBe(clamped > 0 ? DecisionOutcome.ADMITTED_PARTIAL : DecisionOutcome.ADMITTED);
    }
  });

  it("a fractional micro-dollar budget is never rounded up into a larger grant", () => {
    // The caller's maxCostUsd is a ceiling: granting $0.000002 against a ceiling of $0.0000015 would
    // let the execution spend more than the caller authorised.
    for (const costUsd of [0.0000015, 0.0123456789, 1.0000005]) {
      const env = admitted(admitBudget({ tokens: 10, costUsd, steps: 1 }));
      const granted = Number(env.granted?.costUsdMicros ?? 0n) / 1e6;
      const requested = Number(env.requested?.costUsdMicros ?? 0n) / 1e6;
      expect({ costUsd, granted: granted <= costUsd, requested: requested <= costUsd }).toEqual({
        costUsd,
        granted: true,
        requested: true,
      });
    }
  });

  it("a resource not in maxResourcesPerRequest is rejected: policy, RESOURCE_NOT_OFFERED, at its path", () => {
    const err = rejected(admitBudget({ tokens: 10, costUsd: 0.05, steps: 1, resources: { gpu: 1, tpu: 1 } }));
    expect(err.error?.category).toBe("policy");
    expect(err.error?.code).toBe("RESOURCE_NOT_OFFERED");
    expect(err.error?.violations.map((v) => v.field)).toEqual(['budget.resources["tpu"]']);
    expect(err.status).toBe("failed");
  });

  it("an offered resource becomes requestable when the limits list it", () => {
    const withTpu: AdmissionConfig = {
      ...config,
      limits: { ...config.limits, maxResourcesPerRequest: { ...config.limits.maxResourcesPerRequest, tpu: 2 } },
    };
    const env = admitted(admitBudget({ tokens: 10, costUsd: 0.05, steps: 1, resources: { tpu: 3 } }, withTpu));
    expect(env.granted?.resources).toEqual({ tpu: 2 });
    expect(env.decision?.reasons.map((r) => r.dimension)).toEqual(["resources.tpu"]);
  });
});

describe("admit: the envelope", () => {
  it("carries requested and granted as separate messages", () => {
    const env = admitted(admitBudget({ tokens: 1_000_000, costUsd: 0.05, steps: 6, resources: { gpu: 20 } }));
    expect(env.requested?.$typeName).toBe(RequestedResourcesSchema.typeName);
    expect(env.granted?.$typeName).toBe(GrantedResourcesSchema.typeName);
    expect(env.requested?.tokens).toBe(1_000_000);
    expect(env.granted?.tokens).toBe(config.limits.maxTokensPerRequest);
    expect(env.requested?.resources).toEqual({ gpu: 20 });
    expect(env.granted?.resources).toEqual({ gpu: config.limits.maxResourcesPerRequest.gpu });
    // Not aliases: changing the grant leaves the request's record alone.
    if (env.granted) env.granted.resources.gpu = 1;
    expect(env.requested?.resources).toEqual({ gpu: 20 });
    expect(env.requested?.deadline).toEqual(env.request?.deadlineUtc);
    expect(env.granted?.deadline).toEqual(env.request?.deadlineUtc);
  });

  it("the policy decision carries the limitsVersion as policyVersion", () => {
    const env = admitted(admitBudget({ tokens: 10, costUsd: 0.05, steps: 1 }));
    const decisions = env.decision?.policyDecisions ?? [];
    expect(decisions.length).toBeGreaterThan(0);
    expect(decisions.map((d) => d.policyVersion)).toEqual(decisions.map(() => config.limitsVersion));
    expect(config.limitsVersion).not.toBe("");
    for (const reason of env.decision?.reasons ?? []) {
      expect(decisions.map((d) => d.decisionId)).toContain(reason.policyDecisionId);
    }
  });

  it("the limitsVersion changes when the limits do", () => {
    const other = admissionConfig({ ...defaultConfig, limits: { ...defaultConfig.limits, maxStepsPerRequest: 7 } });
    expect(other.limitsVersion).not.toBe(config.limitsVersion);
  });

  it("carries ids, the server's contract version, times and the newer-minor warning", () => {
    const r = request();
    r.contractVersion = "2.7";
    const env = admitted(admit(r, config, { nowMs, receivedAtMs: nowMs - 5, ...ids }));
    expect(env.envelopeId).toBe(ids.envelopeId);
    expect(env.traceId).toBe(ids.traceId);
    expect(env.contractVersion).toBe("2.1");
    expect(env.request?.requestId).toBe(r.requestId);
    expect(Number(env.decidedAt?.seconds) * 1000 + Math.floor((env.decidedAt?.nanos ?? 0) / 1e6)).toBe(nowMs);
    expect(Number(env.receivedAt?.seconds) * 1000 + Math.floor((env.receivedAt?.nanos ?? 0) / 1e6)).toBe(nowMs - 5);
    expect(env.decision?.warnings.map((w) => w.code)).toContain("CONTRACT_VERSION_NEWER_MINOR");
  });

  it("an invalid request is rejected with category validation and every violation", () => {
    const r = edited((req) => {
      req.requestId = "x";
      budgetOf(req).maxTokens = 0;
    });
    const err = rejected(admit(r, config, { nowMs, ...ids }));
    expect(err.error?.category).toBe("validation");
    expect(err.error?.code).toBe("REQUEST_INVALID");
    expect(err.error?.retryable).toBe(false);
    expect(err.error?.violations.map((v) => v.field).sort()).toEqual(["budget.maxTokens", "requestId"]);
  });

  it("an unsupported major is rejected with CONTRACT_VERSION_UNSUPPORTED", () => {
    const r = edited((req) => {
      req.contractVersion = "3.0";
    });
    const err = rejected(admit(r, config, { nowMs, ...ids }));
    expect(err.error?.category).toBe("validation");
    expect(err.error?.code).toBe("CONTRACT_VERSION_UNSUPPORTED");
    expect(err.error?.message).toContain("2.x");
  });
});

describe("admit: normalization", () => {
  it('trace.contentMode "" is set to the configured default', () => {
    for (const mode of ["references-only", "redacted"]) {
      const cfg: AdmissionConfig = { ...config, defaultTraceContentMode: mode };
      const r = edited((req) => {
        if (req.trace) req.trace.contentMode = "";
      });
      const env = admitted(admit(r, cfg, { nowMs, ...ids }));
      expect(env.request?.trace?.contentMode).toBe(mode);
      expect(env.policyScope?.traceContentMode).toBe(mode);
    }
  });

  it("an explicit trace.contentMode is kept", () => {
    const cfg: AdmissionConfig = { ...config, defaultTraceContentMode: "references-only" };
    const r = edited((req) => {
      if (req.trace) req.trace.contentMode = "approved-content";
    });
    expect(admitted(admit(r, cfg, { nowMs, ...ids })).request?.trace?.contentMode).toBe("approved-content");
  });

  it("duplicate scopes are removed, in first-seen order, without touching the caller's request", () => {
    const r = edited((req) => {
      if (req.permissions) req.permissions.scopes = ["case.write", "case.read", "case.write", "case.read"];
    });
    const env = admitted(admit(r, config, { nowMs, ...ids }));
    expect(env.request?.permissions?.scopes).toEqual(["case.write", "case.read"]);
    expect(env.policyScope?.scopes).toEqual(["case.write", "case.read"]);
    expect(r.permissions?.scopes).toEqual(["case.write", "case.read", "case.write", "case.read"]);
  });
});

describe("admit: execution kind", () => {
  // A fallback no default rule produces, so that "fell back" is distinguishable from "matched".
  const cfg: AdmissionConfig = { ...config, fallbackKind: ExecutionKind.EVALUATION };
  const kindOf = (type: string, kind = "", c: AdmissionConfig = cfg) =>
    admitted(
      admit(
        edited((req) => {
          if (req.task) {
            req.task.type = type;
            req.task.kind = kind;
          }
        }),
        c,
        { nowMs, ...ids },
      ),
    ).kind;

  it("an explicit task.kind wins over the task type", () => {
    expect(kindOf("serving.deploy_model", "inference")).toBe(ExecutionKind.INFERENCE);
    expect(kindOf("support.case.resolve", "data_movement")).toBe(ExecutionKind.DATA_MOVEMENT);
  });

  it('"serving.deploy_model" and its dotted continuations are DEPLOY_MODEL', () => {
    expect(kindOf("serving.deploy_model")).toBe(ExecutionKind.DEPLOY_MODEL);
    expect(kindOf("serving.deploy_model.v2")).toBe(ExecutionKind.DEPLOY_MODEL);
  });

  it('"serving.deploy_modelx" does not match the "serving.deploy_model" prefix', () => {
    expect(kindOf("serving.deploy_modelx")).not.toBe(ExecutionKind.DEPLOY_MODEL);
    expect(kindOf("serving.deploy_modelx")).toBe(cfg.fallbackKind);
  });

  it("an unknown task type gets the configured fallback", () => {
    expect(kindOf("support.case.resolve")).toBe(ExecutionKind.EVALUATION);
    expect(kindOf("support.case.resolve", "", { ...config, fallbackKind: ExecutionKind.INFERENCE })).toBe(
      ExecutionKind.INFERENCE,
    );
  });

  it("the default configuration falls back to AGENT_WORKFLOW", () => {
    expect(kindOf("support.case.resolve", "", config)).toBe(ExecutionKind.AGENT_WORKFLOW);
  });
});
