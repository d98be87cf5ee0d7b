// The transport-neutral admission service: what every transport calls. It reads the clock, draws
// ids, runs the pure core, and hands admitted envelopes to the recorder (the ledger's seam) before
// answering. Transports own decoding, deadlines and cancellation signals, and the wire errors.
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type AdmissionConfig, admit, explain, rejectedEnvelope } from "../core/admit.js";
import {
  type BudgetClaim,
  type BudgetLine,
  budgetLines,
  budgetSubject,
  counterId,
  parentLines,
} from "../core/budget.js";
import type { Caller } from "../core/caller.js";
import { serverContractVersion, supportedVersionsText } from "../core/contract-version.js";
import type { DelegationParent } from "../core/delegation.js";
import { createErrorEnvelope, errorCategories } from "../core/errors.js";
import {
  type ExplainRequest,
  type ExplainResponse,
  ExplainResponseSchema,
  type GetCapabilitiesResponse,
  GetCapabilitiesResponseSchema,
} from "../gen/envelope/v1/admission_service_pb.js";
import type { Warning } from "../gen/envelope/v1/common_pb.js";
import type { ErrorDetail, ErrorEnvelope } from "../gen/envelope/v1/error_pb.js";
import { DecisionOutcome, type ExecutionEnvelope } from "../gen/envelope/v1/execution_envelope_pb.js";
import { type RuntimeRequest, RuntimeRequestSchema } from "../gen/envelope/v1/runtime_request_pb.js";
import { ledgerUnavailable, type RecordOutcome } from "../ledger/ledger.js";
import { LedgerUnavailableError } from "../ledger/store.js";
import { newEnvelopeId, newTraceId, traceIdFromTraceparent } from "./ids.js";

/** What a transport knows about one call. */
export interface CallContext {
  /** Aborted when the caller cancels, disconnects or its deadline passes, or the server shuts down. */
  readonly signal: AbortSignal;
  /** The call's deadline (epoch milliseconds), when the caller set one. */
  readonly deadlineMs: number | undefined;
  /** The W3C traceparent header, when the caller sent one. */
  readonly traceparent: string | undefined;
  /** Warnings the transport found while decoding. */
  readonly decodeWarnings: readonly Warning[];
  /**
   * The authenticated caller, its principal recorded with every event it causes; unset on a port
   * without authentication (loopback development), recorded as "unauthenticated".
   */
  readonly caller?: Caller | undefined;
  /**
   * How this transport encodes an envelope for its answer, when it answers in the binary format:
   * the service encodes an admitted envelope once, and the ledger stores the very bytes the caller
   * gets (the gRPC port splices in the request bytes it received).
   */
  readonly encodeEnvelope?: ((envelope: ExecutionEnvelope) => Uint8Array) | undefined;
}

/**
 * Where admitted envelopes go before Admit answers: the durable ledger. An Admit is acknowledged
 * only after `record` resolves, with the envelope it returns (the original one when the request was
 * admitted before). A recorder that waits on anything but its own commit must honour `signal`.
 */
export interface EnvelopeRecorder {
  /** `encoded` is the envelope in the binary format, when the transport already has it. */
  record(
    envelope: ExecutionEnvelope,
    call: CallContext,
    encoded: Uint8Array | undefined,
    budget: BudgetClaim | undefined,
  ): Promise<RecordOutcome>;
  /** Records a refused request (state rejected) before the refusal is answered. */
  recordRejection?(envelope: ExecutionEnvelope, error: ErrorEnvelope, call: CallContext): Promise<void>;
}

/**
 * What Admit answers: the core's result, with the admitted envelope's binary encoding when the
 * service already made it for the ledger (the transport then sends those bytes).
 */
export type AdmitAnswer =
  | { readonly kind: "admitted"; readonly envelope: ExecutionEnvelope; readonly encoded: Uint8Array | undefined }
  | { readonly kind: "rejected"; readonly error: ErrorEnvelope };

export interface AdmissionService {
  admit(request: RuntimeRequest, call: CallContext): Promise<AdmitAnswer>;
  /** Admit's judgement without admitting: nothing is recorded or reserved. */
  explain(request: ExplainRequest, call: CallContext): Promise<ExplainResponse>;
  capabilities(): GetCapabilitiesResponse;
}

export interface AdmissionServiceOptions {
  readonly config: AdmissionConfig;
  /** Features announced by GetCapabilities, e.g. "transport.grpc". */
  readonly features: readonly string[];
  /** Defaults to nothing recorded (no ledger configured). */
  readonly recorder?: EnvelopeRecorder;
  /** Looks an envelope up in the ledger, in its current state: the parents of delegated requests. */
  readonly envelopes?: (envelopeId: string) => Promise<ExecutionEnvelope | undefined>;
  /** Reads the budgets' counters (reserved plus spent), for Explain's best grant right now. */
  readonly budgetUsage?: (lines: readonly BudgetLine[]) => Promise<number[]>;
  /** Defaults to Date.now. */
  readonly now?: () => number;
}

export const serverVersion = "envelope/0.1.0";

export function createAdmissionService(options: AdmissionServiceOptions): AdmissionService {
  const { config, recorder, envelopes } = options;
  /** The parent a delegated request names, as the ledger has it; unset when nothing is delegated. */
  const delegationParent = async (request: RuntimeRequest): Promise<DelegationParent | undefined> => {
    const id = request.actor?.delegationId;
    if (!id) return undefined;
    if (envelopes === undefined) return { kind: "no-ledger" };
    const envelope = await envelopes(id);
    return envelope === undefined ? { kind: "not-found" } : { kind: "found", envelope };
  };
  const now = options.now ?? Date.now;
  const capabilities = buildCapabilities(config, options.features);

  /**
   * A refusal, recorded first as an envelope in state rejected (its id goes into the error) so that
   * refusals are reviewed with admissions. An idempotency conflict is about an envelope recorded
   * already, and is not recorded again. If the ledger cannot take the record, the refusal is
   * answered anyway: it reserves and starts nothing.
   */
  const refusal = async (
    error: ErrorEnvelope,
    request: RuntimeRequest,
    nowMs: number,
    traceId: string,
    call: CallContext,
  ): Promise<AdmitAnswer> => {
    if (recorder?.recordRejection === undefined || error.error?.category === "validation.conflict") {
      return { kind: "rejected", error };
    }
    const envelopeId = newEnvelopeId(nowMs);
    const recordedError = { ...error, envelopeId };
    const envelope = rejectedEnvelope(request, recordedError, config, { nowMs, envelopeId, traceId });
    try {
      await recorder.recordRejection(envelope, recordedError, call);
    } catch (cause) {
      if (cause instanceof LedgerUnavailableError) return { kind: "rejected", error };
      throw cause;
    }
    return { kind: "rejected", error: recordedError };
  };

  return {
    capabilities: () => capabilities,

    async explain(request, call) {
      const runtimeRequest = request.request ?? create(RuntimeRequestSchema);
      const nowMs = now();
      let parent: DelegationParent | undefined;
      let usage: Map<string, number> | undefined;
      try {
        parent = await delegationParent(runtimeRequest);
        const delegated = parent?.kind === "found" ? parentLines(parent.envelope) : [];
        if (options.budgetUsage !== undefined && (config.budgets.length > 0 || delegated.length > 0)) {
          const lines = [...budgetLines(config.budgets, budgetSubject(runtimeRequest), nowMs), ...delegated];
          const counters = await options.budgetUsage(lines);
          usage = new Map(lines.map((l, i) => [counterName(l), counters[i] ?? 0]));
        }
      } catch (cause) {
        if (!(cause instanceof LedgerUnavailableError)) throw cause;
        // The request cannot be judged now: that is the one reason to give.
        return create(ExplainResponseSchema, {
          admissible: false,
          outcome: DecisionOutcome.REJECTED,
          blockingReasons: [ledgerUnavailable(runtimeRequest.requestId).error as ErrorDetail],
        });
      }
      const explanation = explain(runtimeRequest, config, {
        nowMs,
        caller: call.caller,
        delegationParent: parent,
        // The core derives the same lines from the same request and time.
        budgetUsage: usage === undefined ? undefined : (line) => usage.get(counterName(line)) ?? 0,
      });
      return create(ExplainResponseSchema, {
        admissible: explanation.blocking.length === 0,
        outcome: explanation.outcome,
        blockingReasons: [...explanation.blocking],
        ...(explanation.bestGrant === undefined ? {} : { bestGrant: explanation.bestGrant }),
        grantReasons: [...explanation.grantReasons],
      });
    },

    async admit(request, call) {
      const nowMs = now();
      const traceId = traceIdFromTraceparent(call.traceparent) ?? newTraceId();
      // Only the deadline is checked up front; the signal is read where there is something to wait
      // for, so transports that make it lazily pay for it only then.
      if (call.deadlineMs !== undefined && call.deadlineMs <= nowMs) {
        return stoppedBefore(call, nowMs, request.requestId, traceId, "admission started") as AdmitAnswer;
      }
      // Only a delegated request waits for the ledger here; the others go on without an await.
      let parent: DelegationParent | undefined;
      if (request.actor?.delegationId) {
        try {
          parent = await delegationParent(request);
        } catch (cause) {
          if (cause instanceof LedgerUnavailableError) {
            return { kind: "rejected", error: ledgerUnavailable(request.requestId) };
          }
          throw cause;
        }
      }
      const result = admit(request, config, {
        nowMs,
        envelopeId: newEnvelopeId(nowMs),
        traceId,
        decodeWarnings: call.decodeWarnings,
        caller: call.caller,
        delegationParent: parent,
      });
      if (result.kind !== "admitted") return refusal(result.error, request, nowMs, traceId, call);
      if (recorder === undefined) return { ...result, encoded: undefined };
      const encoded = call.encodeEnvelope?.(result.envelope);
      let recorded: RecordOutcome;
      try {
        recorded = await recorder.record(result.envelope, call, encoded, result.budget);
      } catch (cause) {
        // A recorder stopped by the caller's cancellation or deadline is not a fault of ours.
        const stopped = stoppedBefore(call, now(), request.requestId, traceId, "the envelope was recorded");
        if (stopped !== undefined) return stopped;
        if (cause instanceof LedgerUnavailableError) {
          return { kind: "rejected", error: ledgerUnavailable(request.requestId) };
        }
        throw cause;
      }
      if (recorded.kind === "refused") return refusal(recorded.error, request, nowMs, traceId, call);
      // An envelope admitted before is answered as stored now, in its current state; one whose grant
      // the budgets lowered, as stored too.
      if (recorded.kind === "existing") return { kind: "admitted", envelope: recorded.envelope, encoded: undefined };
      return {
        kind: "admitted",
        envelope: recorded.envelope,
        encoded: recorded.regranted === undefined ? encoded : recorded.regranted.encoded,
      };
    },
  };
}

function counterName(line: BudgetLine): string {
  return counterId(line.key, line.windowStartMs, line.dimension);
}

/**
 * The error of a call whose caller gave up (cancelled, or its deadline passed) before `stage`, or
 * undefined while it has not. Nothing was acknowledged, so a retry is safe.
 */
function stoppedBefore(
  call: CallContext,
  nowMs: number,
  requestId: string,
  traceId: string,
  stage: string,
): AdmitAnswer | undefined {
  const expired = call.deadlineMs !== undefined && call.deadlineMs <= nowMs;
  if (!expired && !call.signal.aborted) return undefined;
  const timedOut = expired || (call.signal.reason as Error | undefined)?.name === "TimeoutError";
  return {
    kind: "rejected",
    error: createErrorEnvelope(serverContractVersion, {
      category: timedOut ? "timeout" : "cancellation",
      code: timedOut ? "CALL_DEADLINE_EXCEEDED" : "CALL_CANCELLED",
      message: timedOut
        ? `the call's deadline passed before ${stage}; nothing was admitted`
        : `the call was cancelled before ${stage}; nothing was admitted`,
      requestId,
      traceId,
      retryable: true,
    }),
  };
}

function buildCapabilities(config: AdmissionConfig, features: readonly string[]): GetCapabilitiesResponse {
  const l = config.limits;
  return create(GetCapabilitiesResponseSchema, {
    contractVersion: serverContractVersion,
    supportedContractVersions: [...supportedVersionsText],
    serverVersion,
    features: [...features],
    limits: {
      maxDeadline: durationFromMs(l.maxDeadlineMs),
      maxClockSkew: durationFromMs(l.maxClockSkewMs),
      maxMessageBytes: l.maxMessageBytes,
      maxTaskInputBytes: l.maxTaskInputBytes,
      maxTokensPerRequest: l.maxTokensPerRequest,
      maxCostUsdMicrosPerRequest: BigInt(l.maxCostUsdMicrosPerRequest),
      maxStepsPerRequest: l.maxStepsPerRequest,
      maxResourcesPerRequest: { ...l.maxResourcesPerRequest },
    },
    errorCategories: errorCategories.map((c) => ({ ...c })),
  });
}
