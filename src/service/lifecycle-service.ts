// The transport-neutral lifecycle service: what the gRPC and Connect transports call for
// envelope.v1.LifecycleService. It validates each request against its proto rules, calls the
// ledger, and answers with a message or an ErrorEnvelope; transports only map the latter to wire
// errors (src/transport/wire-errors.ts).
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import { invalidMessage } from "../core/admit.js";
import { type AuthorizationRules, grantOf, mayActForTenant } from "../core/authorize.js";
import { serverContractVersion } from "../core/contract-version.js";
import { createErrorEnvelope } from "../core/errors.js";
import { jsonFieldPath } from "../core/field-path.js";
import { timestampMs, violation } from "../core/validate.js";
import type { ErrorEnvelope, FieldViolation } from "../gen/envelope/v1/error_pb.js";
import { LifecycleState } from "../gen/envelope/v1/execution_envelope_pb.js";
import {
  type ApproveRequest,
  ApproveRequestSchema,
  type ApproveResponse,
  ApproveResponseSchema,
  type CancelRequest,
  CancelRequestSchema,
  type CancelResponse,
  CancelResponseSchema,
  type CompleteRequest,
  CompleteRequestSchema,
  type CompleteResponse,
  CompleteResponseSchema,
  type DenyRequest,
  DenyRequestSchema,
  type DenyResponse,
  DenyResponseSchema,
  type FailRequest,
  FailRequestSchema,
  type FailResponse,
  FailResponseSchema,
  type GetEnvelopeRequest,
  GetEnvelopeRequestSchema,
  type GetEnvelopeResponse,
  GetEnvelopeResponseSchema,
  type ListEnvelopesRequest,
  ListEnvelopesRequestSchema,
  type ListEnvelopesResponse,
  ListEnvelopesResponseSchema,
  type ReviewExpiredRequest,
  ReviewExpiredRequestSchema,
  type ReviewExpiredResponse,
  ReviewExpiredResponseSchema,
  type StartRequest,
  StartRequestSchema,
  type StartResponse,
  StartResponseSchema,
  type WatchEnvelopesRequest,
  WatchEnvelopesRequestSchema,
  type WatchEnvelopesResponse,
  WatchEnvelopesResponseSchema,
} from "../gen/envelope/v1/lifecycle_service_pb.js";
import {
  envelopeNotFound,
  type Ledger,
  ledgerUnavailable,
  parseCursor,
  unauthenticatedCaller,
} from "../ledger/ledger.js";
import { LedgerUnavailableError, type ListFilter } from "../ledger/store.js";
import type { CallContext } from "./admission-service.js";

/** A request the service turned down, with the error the caller gets. */
export type Refusal = { readonly kind: "error"; readonly error: ErrorEnvelope };
export type Answer<T> = { readonly kind: "ok"; readonly message: T } | Refusal;

export interface LifecycleService {
  start(request: StartRequest, call: CallContext): Promise<Answer<StartResponse>>;
  complete(request: CompleteRequest, call: CallContext): Promise<Answer<CompleteResponse>>;
  fail(request: FailRequest, call: CallContext): Promise<Answer<FailResponse>>;
  cancel(request: CancelRequest, call: CallContext): Promise<Answer<CancelResponse>>;
  /** A reviewer's finding on an expired envelope: settles its reservation; the state stays expired. */
  reviewExpired(request: ReviewExpiredRequest, call: CallContext): Promise<Answer<ReviewExpiredResponse>>;
  /** pending_approval → admitted; the event's caller is the approver. */
  approve(request: ApproveRequest, call: CallContext): Promise<Answer<ApproveResponse>>;
  /** pending_approval → rejected, with an APPROVAL_DENIED error recorded. */
  deny(request: DenyRequest, call: CallContext): Promise<Answer<DenyResponse>>;
  getEnvelope(request: GetEnvelopeRequest, call: CallContext): Promise<Answer<GetEnvelopeResponse>>;
  listEnvelopes(request: ListEnvelopesRequest, call: CallContext): Promise<Answer<ListEnvelopesResponse>>;
  /** A stream of events, or the error that prevents it from starting. */
  watchEnvelopes(
    request: WatchEnvelopesRequest,
    call: CallContext,
  ): Promise<Answer<AsyncIterable<WatchEnvelopesResponse>>>;
}

export interface LifecycleServiceOptions {
  readonly ledger: Ledger;
  /** Which callers may see and move which tenants' envelopes; empty: every caller, every tenant. */
  readonly authorization?: AuthorizationRules;
  /** How often a Watch with nothing new looks for events committed by other replicas. */
  readonly watchPollMs?: number;
}

const defaultPageSize = 100;
const watchBatch = 500;
const validator = createValidator();

export function createLifecycleService(options: LifecycleServiceOptions): LifecycleService {
  const { ledger } = options;
  const pollMs = options.watchPollMs ?? 250;
  const rules: AuthorizationRules = options.authorization ?? new Map();

  /**
   * Whether the caller may see and move this envelope. An envelope of a tenant the caller may not
   * act for is answered as not found: its existence is not the caller's to know.
   */
  const visible = async (envelopeId: string, call: CallContext): Promise<boolean> => {
    if (rules.size === 0) return true;
    const row = await ledger.store.get(envelopeId);
    return row !== undefined && mayActForTenant(call.caller, row.tenantId, rules);
  };

  /**
   * Separation of duties: the authenticated caller that made a request held for approval may not
   * approve it itself (it may still withdraw it, with Deny or Cancel). Unset when it may approve.
   */
  const approvingOwnRequest = async (envelopeId: string, call: CallContext): Promise<Refusal | undefined> => {
    if (call.caller === undefined || envelopeId === "") return undefined;
    const events = await ledger.store.events(envelopeId);
    if (events[0]?.caller !== call.caller.principal) return undefined;
    return {
      kind: "error",
      error: createErrorEnvelope(serverContractVersion, {
        category: "authorization",
        code: "APPROVER_IS_REQUESTER",
        message: "the caller that made a request held for approval cannot approve it; another approver must",
        envelopeId,
      }),
    };
  };

  const transition = async <
    Desc extends DescMessage,
    R extends MessageShape<DescMessage> & { envelopeId: string; reason: string },
  >(
    responseSchema: Desc,
    request: R,
    requestSchema: DescMessage,
    to: LifecycleState,
    call: CallContext,
    extra: Pick<Parameters<Ledger["transition"]>[0], "response" | "error" | "usage" | "review"> = {},
  ): Promise<Answer<MessageShape<Desc>>> => {
    const invalid = validate(requestSchema, request);
    if (invalid !== undefined) return invalid;
    if (!(await visible(request.envelopeId, call)))
      return { kind: "error", error: envelopeNotFound(request.envelopeId) };
    const result = await ledger.transition({
      envelopeId: request.envelopeId,
      to,
      caller: call.caller?.principal ?? unauthenticatedCaller,
      reason: request.reason,
      ...extra,
    });
    if (result.kind === "refused") return { kind: "error", error: result.error };
    return { kind: "ok", message: create(responseSchema, { envelope: result.envelope, event: result.event } as never) };
  };

  return {
    start: (r, call) =>
      guard(() => transition(StartResponseSchema, r, StartRequestSchema, LifecycleState.RUNNING, call)),
    complete: (r, call) =>
      guard(() =>
        transition(CompleteResponseSchema, r, CompleteRequestSchema, LifecycleState.COMPLETED, call, {
          ...(r.response === undefined ? {} : { response: r.response }),
        }),
      ),
    fail: (r, call) =>
      guard(() =>
        transition(FailResponseSchema, r, FailRequestSchema, LifecycleState.FAILED, call, {
          ...(r.error === undefined ? {} : { error: r.error }),
          usage: r.usage,
        }),
      ),
    cancel: (r, call) =>
      guard(() =>
        transition(CancelResponseSchema, r, CancelRequestSchema, LifecycleState.CANCELLED, call, { usage: r.usage }),
      ),
    // Only pending_approval leads to admitted or rejected once an envelope is recorded (the
    // lifecycle graph), so the store's state check is what limits these to envelopes held for approval.
    approve: (r, call) =>
      guard(async () => {
        const own = await approvingOwnRequest(r.envelopeId, call);
        if (own !== undefined) return own;
        return transition(ApproveResponseSchema, r, ApproveRequestSchema, LifecycleState.ADMITTED, call);
      }),
    reviewExpired: (r, call) =>
      guard(() =>
        transition(ReviewExpiredResponseSchema, r, ReviewExpiredRequestSchema, LifecycleState.EXPIRED, call, {
          usage: r.usage,
          review: true,
        }),
      ),
    deny: (r, call) =>
      guard(() =>
        transition(DenyResponseSchema, r, DenyRequestSchema, LifecycleState.REJECTED, call, {
          error: createErrorEnvelope(serverContractVersion, {
            category: "policy",
            code: "APPROVAL_DENIED",
            message:
              r.reason === "" ? "the approver denied the request" : `the approver denied the request: ${r.reason}`,
            envelopeId: r.envelopeId,
          }),
        }),
      ),

    getEnvelope: (r, call) =>
      guard<GetEnvelopeResponse>(async () => {
        const invalid = validate(GetEnvelopeRequestSchema, r);
        if (invalid !== undefined) return invalid;
        const record = await ledger.get(r.envelopeId);
        if (
          record === undefined ||
          !mayActForTenant(call.caller, record.envelope?.policyScope?.tenantId ?? "", rules)
        ) {
          return { kind: "error", error: envelopeNotFound(r.envelopeId) };
        }
        return { kind: "ok", message: create(GetEnvelopeResponseSchema, { record }) };
      }),

    listEnvelopes: (r, call) =>
      guard<ListEnvelopesResponse>(async () => {
        const invalid = validate(ListEnvelopesRequestSchema, r) ?? tenantScope(call, r.tenantId, rules);
        if (invalid !== undefined) return invalid;
        const filter = listFilter(r);
        const fingerprint = filterFingerprint(filter);
        let beforeEnvelopeId: string | undefined;
        if (r.pageToken !== "") {
          const token = parsePageToken(r.pageToken);
          if (token === undefined || token.filter !== fingerprint) {
            return validationError([
              violation(
                "pageToken",
                "page_token.valid",
                "is not a next_page_token of a listing with these same filters",
              ),
            ]);
          }
          beforeEnvelopeId = token.before;
        }
        const limit = r.pageSize === 0 ? defaultPageSize : r.pageSize;
        // One more than asked tells whether another page follows without a second query.
        const rows = await ledger.list({
          ...filter,
          ...(beforeEnvelopeId === undefined ? {} : { beforeEnvelopeId }),
          limit: limit + 1,
        });
        const page = rows.slice(0, limit);
        const last = page.at(-1);
        const nextPageToken =
          rows.length > limit && last !== undefined ? pageToken({ before: last.envelopeId, filter: fingerprint }) : "";
        return { kind: "ok", message: create(ListEnvelopesResponseSchema, { envelopes: page, nextPageToken }) };
      }),

    watchEnvelopes: (r, call) =>
      guard<AsyncIterable<WatchEnvelopesResponse>>(async () => {
        const invalid = validate(WatchEnvelopesRequestSchema, r) ?? tenantScope(call, r.tenantId, rules);
        if (invalid !== undefined) return invalid;
        try {
          parseCursor(r.afterCursor);
        } catch {
          return validationError([
            violation("afterCursor", "cursor.valid", "is not a cursor of an event from this ledger"),
          ]);
        }
        const start = r.afterCursor !== "" ? r.afterCursor : r.fromBeginning ? "" : await ledger.latestCursor();
        const tenantId = r.tenantId === "" ? undefined : r.tenantId;
        return { kind: "ok", message: watch(ledger, start, tenantId, call.signal, pollMs) };
      }),
  };
}

async function* watch(
  ledger: Ledger,
  start: string,
  tenantId: string | undefined,
  signal: AbortSignal,
  pollMs: number,
): AsyncIterable<WatchEnvelopesResponse> {
  let cursor = start;
  while (!signal.aborted) {
    const events = await ledger.eventsAfter(cursor, tenantId, watchBatch);
    for (const event of events) {
      yield create(WatchEnvelopesResponseSchema, { event });
      cursor = event.cursor;
    }
    if (events.length < watchBatch) await ledger.nextCommit(signal, pollMs);
  }
}

/**
 * Refuses a listing or a watch the caller may not see all of: one of the caller's tenants must be
 * named, unless the caller may act for every tenant.
 */
function tenantScope(call: CallContext, tenantId: string, rules: AuthorizationRules): Refusal | undefined {
  const grant = grantOf(call.caller, rules);
  if (grant === "unrestricted") return undefined;
  if (grant === undefined) {
    return {
      kind: "error",
      error: createErrorEnvelope(serverContractVersion, {
        category: "authorization",
        code: "CALLER_NOT_AUTHORIZED",
        message:
          call.caller === undefined
            ? "this listener does not authenticate callers, and only authorized callers may read the ledger"
            : `caller ${call.caller.principal} is not authorized for any tenant`,
      }),
    };
  }
  if (tenantId === "" ? grant.tenants.includes("*") : mayActForTenant(call.caller, tenantId, rules)) return undefined;
  const message =
    tenantId === ""
      ? `must name a tenant the caller may act for: ${grant.tenants.join(", ")}`
      : `the caller may not act for tenant "${tenantId}"`;
  return {
    kind: "error",
    error: createErrorEnvelope(serverContractVersion, {
      category: "authorization",
      code: "TENANT_NOT_PERMITTED",
      message,
      violations: [violation("tenantId", "authorization.tenant", message)],
    }),
  };
}

function validate(schema: DescMessage, message: MessageShape<DescMessage>): Refusal | undefined {
  const result = validator.validate(schema, message);
  if (result.kind === "valid") return undefined;
  if (result.kind === "error") throw result.error;
  return validationError(result.error.violations.map((v) => violation(jsonFieldPath(v.field), v.ruleId, v.message)));
}

function validationError(violations: FieldViolation[]): Refusal {
  return {
    kind: "error",
    error: createErrorEnvelope(serverContractVersion, {
      category: "validation",
      code: "REQUEST_INVALID",
      message: invalidMessage(violations.length),
      violations,
    }),
  };
}

/** An unreachable ledger is a dependency failure the caller may retry; anything else propagates. */
async function guard<T>(work: () => Promise<Answer<T>>): Promise<Answer<T>> {
  try {
    return await work();
  } catch (cause) {
    if (!(cause instanceof LedgerUnavailableError)) throw cause;
    return { kind: "error", error: ledgerUnavailable() };
  }
}

function listFilter(r: ListEnvelopesRequest): Omit<ListFilter, "limit"> {
  const after = timestampMs(r.receivedAfter);
  const before = timestampMs(r.receivedBefore);
  return {
    ...(r.tenantId === "" ? {} : { tenantId: r.tenantId }),
    ...(r.actorSubject === "" ? {} : { actorSubject: r.actorSubject }),
    ...(r.states.length === 0 ? {} : { states: [...r.states] }),
    ...(r.kinds.length === 0 ? {} : { kinds: [...r.kinds] }),
    ...(after === undefined ? {} : { receivedAfterMs: after }),
    ...(before === undefined ? {} : { receivedBeforeMs: before }),
  };
}

function filterFingerprint(filter: Omit<ListFilter, "limit">): string {
  return JSON.stringify(filter);
}

interface PageToken {
  readonly before: string;
  readonly filter: string;
}

function pageToken(token: PageToken): string {
  return Buffer.from(JSON.stringify(token)).toString("base64url");
}

function parsePageToken(text: string): PageToken | undefined {
  try {
    const token = JSON.parse(Buffer.from(text, "base64url").toString()) as Partial<PageToken>;
    return typeof token.before === "string" && typeof token.filter === "string"
      ? { before: token.before, filter: token.filter }
      : undefined;
  } catch {
    return undefined;
  }
}
