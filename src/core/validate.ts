// Request validation: everything checked before any side effect, every violation reported at once
// with its JSON field path. Schema rules come from the proto (protovalidate); the checks that need the
// clock or configuration (version negotiation, clock skew, deadline window, sizes) are here.
import { create } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { createValidator } from "@bufbuild/protovalidate";
import { type Warning, WarningSchema } from "../gen/envelope/v1/common_pb.js";
import { type FieldViolation, FieldViolationSchema } from "../gen/envelope/v1/error_pb.js";
import { type RuntimeRequest, RuntimeRequestSchema } from "../gen/envelope/v1/runtime_request_pb.js";
import { negotiate, serverContractVersion, supportedVersionsText } from "./contract-version.js";
import { jsonFieldPath } from "./field-path.js";
import type { AdmissionLimits } from "./limits.js";
import { compilePrecheck } from "./rule-precheck.js";

// One validator for the process: protovalidate compiles each message's rules once and caches them.
// Its regular expressions are the schema's own (fixed, linear patterns), so the platform RegExp
// serves them, measurably faster on the hot path than the RE2 engine meant for untrusted patterns.
// The precheck must match with the very same engine, so both share one cache.
const patterns = new Map<string, RegExp>();
function compiledPattern(source: string): RegExp {
  let re = patterns.get(source);
  if (re === undefined) {
    re = new RegExp(source, "u");
    patterns.set(source, re);
  }
  return re;
}
const validator = createValidator({ regexMatch: (pattern, value) => compiledPattern(pattern).test(value) });
// Valid requests are answered by the compiled precheck; protovalidate reports what is wrong.
const precheck = compilePrecheck(RuntimeRequestSchema, (source) => {
  const re = compiledPattern(source);
  return (value) => re.test(value);
});

const microsPerUsd = 1_000_000;

/**
 * US dollars as whole micro-dollars, rounded down so a grant never exceeds what the caller
 * authorized. The small epsilon absorbs binary floating point (3e-6 * 1e6 is 2.9999999999999996).
 */
export function usdToMicros(usd: number): number {
  return Math.floor(usd * microsPerUsd + 1e-6);
}

export type RequestCheck =
  | { readonly kind: "valid"; readonly warnings: readonly Warning[] }
  | { readonly kind: "invalid"; readonly violations: readonly FieldViolation[] }
  | { readonly kind: "unsupported-version"; readonly violation: FieldViolation };

export function violation(field: string, rule: string, message: string): FieldViolation {
  return create(FieldViolationSchema, { field, rule, message });
}

/** Validates a decoded request against the contract and the limits, as of `nowMs`. */
export function checkRequest(request: RuntimeRequest, limits: AdmissionLimits, nowMs: number): RequestCheck {
  const version = negotiate(request.contractVersion);
  if (version.kind === "unsupported") {
    // A request of another major has another shape: judging it by this major's rules would only
    // add noise, so the version is the one violation reported.
    return { kind: "unsupported-version", violation: unsupportedVersion(request.contractVersion) };
  }

  const violations: FieldViolation[] = [];
  const result =
    precheck?.(request) === true ? { kind: "valid" as const } : validator.validate(RuntimeRequestSchema, request);
  if (result.kind === "invalid") {
    for (const v of result.error.violations) violations.push(violation(jsonFieldPath(v.field), v.ruleId, v.message));
  } else if (result.kind === "error") {
    // A rule that cannot be evaluated is a defect of ours, not the caller's: fail loudly.
    throw result.error;
  }

  const occurredAt = timestampMs(request.occurredAtUtc);
  if (occurredAt !== undefined && Math.abs(occurredAt - nowMs) > limits.maxClockSkewMs) {
    violations.push(
      violation(
        "occurredAtUtc",
        "clock_skew",
        `must be within ${seconds(limits.maxClockSkewMs)} of the server's clock (${new Date(nowMs).toISOString()})`,
      ),
    );
  }

  const deadline = timestampMs(request.deadlineUtc);
  if (deadline !== undefined) {
    if (deadline <= nowMs) {
      violations.push(violation("deadlineUtc", "deadline.future", "must be in the future"));
    } else if (deadline - nowMs > limits.maxDeadlineMs) {
      violations.push(
        violation("deadlineUtc", "deadline.max", `must be at most ${seconds(limits.maxDeadlineMs)} from now`),
      );
    }
    if (occurredAt !== undefined && deadline <= occurredAt) {
      violations.push(violation("deadlineUtc", "deadline.after_occurred", "must be later than occurredAtUtc"));
    }
  }

  const costUsd = request.budget?.maxCostUsd;
  if (costUsd !== undefined && Number.isFinite(costUsd) && costUsd > 0) {
    const micros = usdToMicros(costUsd);
    if (micros < 1) {
      violations.push(
        violation("budget.maxCostUsd", "cost.min_micros", "must be at least 0.000001 (one micro-dollar)"),
      );
    } else if (!Number.isSafeInteger(micros)) {
      violations.push(violation("budget.maxCostUsd", "cost.max", "is too large to account for exactly"));
    }
  }

  violations.push(...minimumViolations(request.budget));

  const input = request.task?.input;
  if (input !== undefined) {
    const inputBytes = Buffer.byteLength(JSON.stringify(input));
    if (inputBytes > limits.maxTaskInputBytes) {
      violations.push(
        violation(
          "task.input",
          "size.max",
          `is ${inputBytes} bytes as compact JSON; the limit is ${limits.maxTaskInputBytes}`,
        ),
      );
    }
  }

  if (violations.length > 0) return { kind: "invalid", violations };
  const warnings =
    version.kind === "accepted" && version.newerMinor
      ? [
          create(WarningSchema, {
            code: "CONTRACT_VERSION_NEWER_MINOR",
            field: "contractVersion",
            message: `this server implements contract ${serverContractVersion}; additions of ${request.contractVersion} are not understood`,
          }),
        ]
      : [];
  return { kind: "valid", warnings };
}

/** Each minimum acceptable amount must lie within what is requested of it. */
function minimumViolations(budget: RuntimeRequest["budget"]): FieldViolation[] {
  const minimum = budget?.minimumAcceptable;
  if (budget === undefined || minimum === undefined) return [];
  const out: FieldViolation[] = [];
  const atMost = (field: string, min: number | undefined, max: number | undefined, maxField: string) => {
    if (min !== undefined && max !== undefined && min > max) {
      out.push(violation(`budget.minimumAcceptable.${field}`, "minimum.lte_max", `must not exceed budget.${maxField}`));
    }
  };
  atMost("tokens", minimum.tokens, budget.maxTokens, "maxTokens");
  atMost("costUsd", minimum.costUsd, budget.maxCostUsd, "maxCostUsd");
  atMost("steps", minimum.steps, budget.maxSteps, "maxSteps");
  for (const [name, count] of Object.entries(minimum.resources)) {
    const field = `resources[${JSON.stringify(name)}]`;
    const requested = budget.resources[name];
    if (requested === undefined) {
      out.push(
        violation(`budget.minimumAcceptable.${field}`, "minimum.requested", `resource "${name}" is not requested`),
      );
    } else atMost(field, count, requested, field);
  }
  return out;
}

export function unsupportedVersion(requested: string): FieldViolation {
  return violation(
    "contractVersion",
    "contract_version.supported",
    `contract version "${requested}" is not supported; supported versions: ${supportedVersionsText.join(", ")} (this server implements ${serverContractVersion})`,
  );
}

/** A timestamp as epoch milliseconds, rounded down; undefined when unset. */
export function timestampMs(ts: Timestamp | undefined): number | undefined {
  return ts === undefined ? undefined : Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1_000_000);
}

function seconds(ms: number): string {
  return `${ms / 1000}s`;
}
