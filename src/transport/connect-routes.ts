// Connect (JSON and binary, HTTP/1.1 and h2c), gRPC-Web and gRPC on the HTTP port, through
// connect-node's router. connect-es parses request bodies itself and answers a body it cannot parse
// with a bare error (binary ones even as INTERNAL), so Admit's handler is wrapped: the wrapper
// decodes the body with the shared decoder first and hands the outcome to the implementation through
// a context value, with an empty body in place of the original. Every protocol then answers bad input
// with the same structured ErrorEnvelope, serialized by connect-es in that protocol's own format.
// When the port authenticates, the same wrapper authenticates the caller first, before reading the
// body; a refused call reaches connect-es with an empty body and an interceptor answers it with the
// refusal.
import { gunzipSync } from "node:zlib";
import type { DescMessage, JsonValue, MessageShape } from "@bufbuild/protobuf";
import {
  type ConnectRouter,
  createConnectRouter,
  createContextKey,
  createContextValues,
  type HandlerContext,
  type Interceptor,
  type ServiceImpl,
} from "@connectrpc/connect";
import {
  createAsyncIterable,
  readAllBytes,
  type UniversalHandler,
  type UniversalServerRequest,
} from "@connectrpc/connect/protocol";
import { compressionGzip } from "@connectrpc/connect-node";
import type { Authenticator } from "../auth/authenticator.js";
import type { Caller } from "../core/caller.js";
import { AdmissionService } from "../gen/envelope/v1/admission_service_pb.js";
import type { ErrorEnvelope } from "../gen/envelope/v1/error_pb.js";
import { LifecycleService, type WatchEnvelopesResponse } from "../gen/envelope/v1/lifecycle_service_pb.js";
import type { RuntimeRequest } from "../gen/envelope/v1/runtime_request_pb.js";
import type { CallContext, AdmissionService as Service } from "../service/admission-service.js";
import { type Decoded, decodeBinary, decodeJson } from "../service/decode-request.js";
import type { LifecycleService as Lifecycle } from "../service/lifecycle-service.js";
import type { Logger } from "../telemetry/log.js";
import { connectionKey, logRefusal } from "./authentication.js";
import { reportUnexpected } from "./call-failure.js";
import { transportMaxBytes } from "./grpc-server.js";
import { toConnectError } from "./wire-errors.js";

export interface ConnectAdmissionOptions {
  readonly service: Service;
  /** Served when the server has a ledger. */
  readonly lifecycle?: Lifecycle;
  readonly maxMessageBytes: number;
  readonly log: Logger;
  /** Authenticates every call before its body is read; none on a port without authentication. */
  readonly authenticator?: Authenticator | undefined;
}

/** The router's handlers by request path ("/envelope.v1.AdmissionService/Admit"). */
export function createConnectHandlers(options: ConnectAdmissionOptions): Map<string, UniversalHandler> {
  const { service, lifecycle, maxMessageBytes, log, authenticator } = options;
  const router: ConnectRouter = createConnectRouter({
    acceptCompression: [compressionGzip],
    readMaxBytes: transportMaxBytes(maxMessageBytes),
    ...(authenticator === undefined ? {} : { interceptors: [refuseUnauthenticated] }),
  });
  router.service(AdmissionService, {
    async admit(parsed, ctx) {
      const request: RuntimeRequest = decodedRequest(parsed, ctx);
      let result: Awaited<ReturnType<Service["admit"]>>;
      try {
        result = await service.admit(request, callContext(ctx, decodeWarnings(ctx)));
      } catch (cause) {
        throw toConnectError(reportUnexpected(log, "Admit", cause, request.requestId));
      }
      if (result.kind === "rejected") throw toConnectError(result.error);
      return result.envelope;
    },
    async explain(parsed, ctx) {
      const request = decodedRequest(parsed, ctx);
      try {
        return await service.explain(request, callContext(ctx, decodeWarnings(ctx)));
      } catch (cause) {
        throw toConnectError(reportUnexpected(log, "Explain", cause, request.request?.requestId));
      }
    },
    getCapabilities: () => service.capabilities(),
  });
  if (lifecycle !== undefined) router.service(LifecycleService, lifecycleImplementation(lifecycle, log));
  const paths = new Map<string, UniversalHandler>();
  for (const handler of router.handlers) {
    // Every method that takes a request body decodes it with the shared decoder first.
    const schema = handler.method !== AdmissionService.method.getCapabilities ? handler.method.input : undefined;
    const auth = authenticator === undefined ? undefined : { authenticator, log };
    paths.set(handler.requestPath, prepare(handler, schema, maxMessageBytes, auth));
  }
  return paths;
}

/** The request the wrapper decoded, when it did, else the one connect-es parsed. */
function decodedRequest<T>(parsed: T, ctx: HandlerContext): T {
  const pre = ctx.values.get(preDecodedRequest) as Decoded<T> | undefined;
  if (pre?.kind === "malformed") throw toConnectError(pre.error);
  return pre?.message ?? parsed;
}

function lifecycleImplementation(lifecycle: Lifecycle, log: Logger): ServiceImpl<typeof LifecycleService> {
  const unary =
    <M extends keyof Lifecycle>(name: M) =>
    async (parsed: Parameters<Lifecycle[M]>[0], ctx: HandlerContext) => {
      const request = decodedRequest(parsed, ctx);
      let answer: Awaited<ReturnType<Lifecycle[M]>>;
      try {
        answer = (await (lifecycle[name] as (r: unknown, c: CallContext) => Promise<unknown>)(
          request,
          callContext(ctx, decodeWarnings(ctx)),
        )) as Awaited<ReturnType<Lifecycle[M]>>;
      } catch (cause) {
        throw toConnectError(reportUnexpected(log, name, cause));
      }
      if (answer.kind === "error") throw toConnectError(answer.error);
      return answer.message as never;
    };
  return {
    start: unary("start"),
    complete: unary("complete"),
    fail: unary("fail"),
    cancel: unary("cancel"),
    approve: unary("approve"),
    deny: unary("deny"),
    reviewExpired: unary("reviewExpired"),
    getEnvelope: unary("getEnvelope"),
    listEnvelopes: unary("listEnvelopes"),
    async *watchEnvelopes(parsed, ctx) {
      const stream = (await unary("watchEnvelopes")(parsed, ctx)) as AsyncIterable<WatchEnvelopesResponse>;
      try {
        yield* stream;
      } catch (cause) {
        throw toConnectError(reportUnexpected(log, "watchEnvelopes", cause));
      }
    },
  };
}

function decodeWarnings(ctx: HandlerContext): CallContext["decodeWarnings"] {
  const pre = ctx.values.get(preDecodedRequest);
  return pre?.kind === "ok" ? pre.warnings : [];
}

function callContext(ctx: HandlerContext, warnings: CallContext["decodeWarnings"] = []): CallContext {
  const remaining = ctx.timeoutMs();
  const traceparent = ctx.requestHeader.get("traceparent");
  return {
    signal: ctx.signal,
    deadlineMs: remaining === undefined ? undefined : Date.now() + remaining,
    traceparent: traceparent ?? undefined,
    decodeWarnings: warnings,
    caller: ctx.values.get(authenticatedCaller),
  };
}

const authenticatedCaller = createContextKey<Caller | undefined>(undefined, {
  description: "the authenticated caller",
});
const authenticationRefusal = createContextKey<ErrorEnvelope | undefined>(undefined, {
  description: "why the caller was not authenticated",
});

/** Answers a call whose caller the wrapper refused with the refusal, before any implementation runs. */
const refuseUnauthenticated: Interceptor = (next) => async (req) => {
  const refusal = req.contextValues.get(authenticationRefusal);
  if (refusal !== undefined) throw toConnectError(refusal);
  return next(req);
};

const preDecodedRequest = createContextKey<Decoded<unknown> | undefined>(undefined, {
  description: "request decoded by the Admit wrapper",
});

type BodyFormat =
  | { readonly framing: "unary"; readonly binary: boolean }
  | { readonly framing: "enveloped"; readonly binary: boolean };

/** The body format of the request content types connect-node accepts for unary methods. */
function bodyFormat(contentType: string | null): BodyFormat | undefined {
  const match = /^application\/(json|proto|grpc-web|grpc)(?:\+(proto|json))?\s*(?:;.*)?$/i.exec(contentType ?? "");
  if (match === null) return undefined;
  const [, base = "", sub] = match;
  const kind = base.toLowerCase();
  if (kind === "json" || kind === "proto")
    return sub === undefined ? { framing: "unary", binary: kind === "proto" } : undefined;
  return { framing: "enveloped", binary: sub?.toLowerCase() !== "json" };
}

// Placeholder bodies that connect-es parses to an empty message, in each format.
const emptyBinaryFrame = new Uint8Array(5);
const emptyJsonFrame = new Uint8Array([0, 0, 0, 0, 2, 0x7b, 0x7d]); // one frame holding "{}"

/**
 * The handler behind the wrapper: authentication first (when the port has it), then the body decoded
 * with the shared decoder (for methods that take one: `schema`).
 */
function prepare(
  handler: UniversalHandler,
  schema: DescMessage | undefined,
  maxBytes: number,
  auth: { readonly authenticator: Authenticator; readonly log: Logger } | undefined,
): UniversalHandler {
  const next = schema === undefined ? handler : predecode(handler, schema, maxBytes);
  if (auth === undefined) return next;
  const wrapped = async (req: UniversalServerRequest) => {
    const connection = req.contextValues?.get(connectionKey);
    const result = await auth.authenticator.authenticate({
      authorization: req.header.get("authorization") ?? undefined,
      certificate: connection?.certificate,
      certificateProblem: connection?.certificateProblem,
    });
    const contextValues = req.contextValues ?? createContextValues();
    const header = new Headers(req.header);
    // Nothing past this point sees the credential.
    header.delete("authorization");
    if (result.kind === "authenticated") {
      contextValues.set(authenticatedCaller, result.caller);
      return next({ ...req, header, contextValues });
    }
    logRefusal(auth.log, "http", handler.requestPath, connection?.peer ?? "", result.error);
    contextValues.set(authenticationRefusal, result.error);
    header.delete("content-length");
    header.delete("content-encoding");
    const format = bodyFormat(req.header.get("content-type"));
    const body = format === undefined ? createAsyncIterable([]) : placeholderBody(format);
    return handler({ ...req, header, body, contextValues });
  };
  return Object.assign(wrapped, handler);
}

function predecode<Desc extends DescMessage>(
  handler: UniversalHandler,
  schema: Desc,
  maxBytes: number,
): UniversalHandler {
  const wrapped = async (req: UniversalServerRequest) => {
    const format = bodyFormat(req.header.get("content-type"));
    if (format === undefined || req.method !== "POST" || !isByteStream(req.body)) return handler(req);

    let body: Uint8Array;
    try {
      body = await readAllBytes(req.body, transportMaxBytes(maxBytes));
    } catch {
      // Over the transport limit: decode an over-limit length so the decoder reports it.
      body = new Uint8Array(transportMaxBytes(maxBytes) + 1);
    }
    const payload = unwrap(req, format, body, transportMaxBytes(maxBytes));
    if (payload === undefined) {
      // Framing or compression that only connect-es understands: let it answer as it does.
      return handler({ ...req, body: createAsyncIterable([body]) });
    }
    const decoded: Decoded<MessageShape<Desc>> = format.binary
      ? decodeBinary(schema, payload, maxBytes)
      : decodeJson(schema, payload, maxBytes);

    const contextValues = req.contextValues ?? createContextValues();
    contextValues.set(preDecodedRequest, decoded as Decoded<unknown>);
    const header = new Headers(req.header);
    header.delete("content-length");
    header.delete("content-encoding");
    return handler({ ...req, header, body: placeholderBody(format), contextValues });
  };
  return Object.assign(wrapped, handler);
}

/** A body that connect-es parses to an empty message, in the request's format. */
function placeholderBody(format: BodyFormat): AsyncIterable<Uint8Array> | JsonValue {
  if (format.framing === "enveloped") return createAsyncIterable([format.binary ? emptyBinaryFrame : emptyJsonFrame]);
  return format.binary ? createAsyncIterable([]) : {};
}

/** The message bytes inside a body, or undefined when this wrapper does not handle its framing. */
function unwrap(
  req: UniversalServerRequest,
  format: BodyFormat,
  body: Uint8Array,
  maxBytes: number,
): Uint8Array | undefined {
  if (format.framing === "unary") {
    const encoding = req.header.get("content-encoding") ?? "identity";
    return encoding === "identity" ? body : encoding === "gzip" ? gunzipOrUndefined(body, maxBytes) : undefined;
  }
  // One length-prefixed frame: flags (bit 0: compressed), 4-byte big-endian length, message.
  if (body.byteLength < 5) return undefined;
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const flags = view.getUint8(0);
  const length = view.getUint32(1);
  if (body.byteLength !== 5 + length || (flags & 0b1111_1110) !== 0) return undefined;
  const message = body.subarray(5);
  if ((flags & 1) === 0) return message;
  const encoding = req.header.get("grpc-encoding");
  return encoding === "gzip" ? gunzipOrUndefined(message, maxBytes) : undefined;
}

/** Inflates a gzip body, never past maxBytes. */
function gunzipOrUndefined(bytes: Uint8Array, maxBytes: number): Uint8Array | undefined {
  try {
    return gunzipSync(bytes, { maxOutputLength: maxBytes });
  } catch (e) {
    // Inflated past the limit: an over-limit length makes the decoder answer REQUEST_TOO_LARGE.
    return (e as { code?: string }).code === "ERR_BUFFER_TOO_LARGE" ? new Uint8Array(maxBytes + 1) : undefined;
  }
}

function isByteStream(body: UniversalServerRequest["body"]): body is AsyncIterable<Uint8Array> {
  return typeof body === "object" && body !== null && Symbol.asyncIterator in body;
}
