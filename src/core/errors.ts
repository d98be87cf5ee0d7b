// The contract's error vocabulary: categories, their status codes and retry defaults, and the
// constructors of ErrorEnvelope. Pure data and functions; the transports turn an ErrorEnvelope into
// their wire error in one place (src/transport/wire-errors.ts).
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type ErrorEnvelope, ErrorEnvelopeSchema, type FieldViolation } from "../gen/envelope/v1/error_pb.js";

/** gRPC status code names used by the table (Connect uses the matching code). */
export type GrpcCodeName =
  | "INVALID_ARGUMENT"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "FAILED_PRECONDITION"
  | "RESOURCE_EXHAUSTED"
  | "UNAVAILABLE"
  | "ABORTED"
  | "UNKNOWN"
  | "DEADLINE_EXCEEDED"
  | "CANCELLED"
  | "INTERNAL";

export interface ErrorCategoryRule {
  readonly category: string;
  readonly grpcCode: GrpcCodeName;
  readonly retryable: boolean;
  readonly description: string;
}

/**
 * How each category maps to a status code and a default retryable flag. A subcategory
 * ("dependency.unavailable") takes its family's row unless it has a row of its own.
 * docs and GetCapabilities publish this table; tests hold the two to it.
 */
export const errorCategories: readonly ErrorCategoryRule[] = Object.freeze([
  rule("validation", "INVALID_ARGUMENT", false, "The request breaks the contract; fix it before sending again."),
  rule(
    "validation.not-found",
    "NOT_FOUND",
    false,
    "The request names an envelope the ledger does not have (or the caller may not see).",
  ),
  rule(
    "validation.conflict",
    "ALREADY_EXISTS",
    false,
    "An idempotency key or request id was already used for a different request.",
  ),
  rule(
    "validation.state",
    "FAILED_PRECONDITION",
    false,
    "The envelope's current state does not allow this transition; the error names the state.",
  ),
  rule("authentication", "UNAUTHENTICATED", false, "The caller could not be identified."),
  rule("authorization", "PERMISSION_DENIED", false, "The caller may not do this for this tenant or actor."),
  rule("policy", "FAILED_PRECONDITION", false, "A policy denies the request as it stands."),
  rule("capacity", "RESOURCE_EXHAUSTED", true, "Not enough budget or capacity now; may succeed later."),
  rule("dependency", "UNAVAILABLE", true, "A dependency is unreachable; safe to retry."),
  rule("model", "ABORTED", false, "The model failed or refused; retry only with a changed request."),
  rule("tool", "ABORTED", false, "A tool failed with a known outcome."),
  rule(
    "tool.ambiguous-outcome",
    "UNKNOWN",
    false,
    "A side effect may or may not have happened; check the authoritative state before any retry.",
  ),
  rule(
    "timeout",
    "DEADLINE_EXCEEDED",
    false,
    "The deadline passed; after dispatch this is not automatically retryable.",
  ),
  rule("cancellation", "CANCELLED", false, "The caller cancelled."),
  rule("internal", "INTERNAL", false, "A fault inside Envelope; details are kept server-side."),
]);

function rule(category: string, grpcCode: GrpcCodeName, retryable: boolean, description: string): ErrorCategoryRule {
  return Object.freeze({ category, grpcCode, retryable, description });
}

const rulesByCategory = new Map(errorCategories.map((r) => [r.category, r]));
const internalRule = rulesByCategory.get("internal") as ErrorCategoryRule;

/** The table row of a category, falling back to its family's row and then to internal. */
export function categoryRule(category: string): ErrorCategoryRule {
  const exact = rulesByCategory.get(category);
  if (exact !== undefined) return exact;
  const dot = category.indexOf(".");
  return (dot > 0 ? rulesByCategory.get(category.slice(0, dot)) : undefined) ?? internalRule;
}

export interface ErrorInit {
  readonly category: string;
  readonly code: string;
  readonly message: string;
  readonly violations?: readonly FieldViolation[];
  readonly requestId?: string;
  readonly traceId?: string;
  readonly envelopeId?: string;
  /** Overrides the category's default. */
  readonly retryable?: boolean;
  /** Reference to details kept server-side. */
  readonly detailsRef?: string;
  /** The earliest time a retry could succeed, when known (epoch milliseconds). */
  readonly retryAfterMs?: number | undefined;
}

/** Builds an ErrorEnvelope with the category's default retryable flag. Messages must be user-safe. */
export function createErrorEnvelope(contractVersion: string, init: ErrorInit): ErrorEnvelope {
  return create(ErrorEnvelopeSchema, {
    contractVersion,
    requestId: init.requestId ?? "",
    status: "failed",
    traceId: init.traceId ?? "",
    envelopeId: init.envelopeId ?? "",
    error: {
      category: init.category,
      code: init.code,
      message: init.message,
      retryable: init.retryable ?? categoryRule(init.category).retryable,
      userSafe: true,
      detailsRef: init.detailsRef ?? "",
      violations: init.violations ? [...init.violations] : [],
      ...(init.retryAfterMs === undefined ? {} : { retryAfterUtc: timestampFromMs(init.retryAfterMs) }),
    },
  });
}
