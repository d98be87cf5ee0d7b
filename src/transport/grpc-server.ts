// gRPC over HTTP/2 on @grpc/grpc-js: the hot path for backends. grpc-js carries protobuf-es messages
// through per-method serializers; the request arrives as raw bytes so that decoding failures get the
// contract's structured error rather than grpc-js's generic one.
import { toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type * as grpc from "@grpc/grpc-js";
import { compileBinaryEncoder } from "../codec/binary-encoder.js";
import {
  AdmissionService,
  ExplainRequestSchema,
  ExplainResponseSchema,
  GetCapabilitiesResponseSchema,
} from "../gen/envelope/v1/admission_service_pb.js";
import { type ExecutionEnvelope, ExecutionEnvelopeSchema } from "../gen/envelope/v1/execution_envelope_pb.js";
import { type RuntimeRequest, RuntimeRequestSchema } from "../gen/envelope/v1/runtime_request_pb.js";
import type { CallContext, AdmissionService as Service } from "../service/admission-service.js";
import { decodeBinary } from "../service/decode-request.js";
import type { Logger } from "../telemetry/log.js";
import { grpcCaller } from "./authentication.js";
import { reportUnexpected } from "./call-failure.js";
import { toGrpcStatus } from "./wire-errors.js";

export interface GrpcAdmissionOptions {
  readonly service: Service;
  /** Requests above this get a structured REQUEST_TOO_LARGE (see transportMaxBytes). */
  readonly maxMessageBytes: number;
  readonly log: Logger;
}

/**
 * The transport's own receive limit: requests up to this size reach the decoder and get a structured
 * error when over maxMessageBytes; larger ones are refused by grpc-js with RESOURCE_EXHAUSTED before
 * they are buffered further.
 */
export function transportMaxBytes(maxMessageBytes: number): number {
  return maxMessageBytes * 4;
}

const passThrough = (bytes: Buffer): Buffer => bytes;

/**
 * A unary method whose handler sees the request bytes and returns response bytes: encoding and
 * decoding stay in our hands (grpc-js would answer a deserializer's exception with a bare error).
 */
export function rawUnaryMethod(path: string): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: passThrough,
    requestDeserialize: passThrough,
    responseSerialize: passThrough,
    responseDeserialize: passThrough,
  };
}
const asBuffer = (bytes: Uint8Array): Buffer =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/** Registers envelope.v1.AdmissionService on a grpc-js server. */
export function addAdmissionService(server: grpc.Server, options: GrpcAdmissionOptions): void {
  const { service, maxMessageBytes, log } = options;
  const method = (name: keyof typeof AdmissionService.method) =>
    `/${AdmissionService.typeName}/${AdmissionService.method[name].name}`;
  // Capabilities are fixed for the server's life: encode them once.
  const capabilities = asBuffer(toBinary(GetCapabilitiesResponseSchema, service.capabilities()));

  const definition: grpc.ServiceDefinition = {
    Admit: rawUnaryMethod(method("admit")),
    Explain: rawUnaryMethod(method("explain")),
    GetCapabilities: rawUnaryMethod(method("getCapabilities")),
  };

  const admit: grpc.handleUnaryCall<Buffer, Buffer> = (call, callback) => {
    const decoded = decodeBinary(RuntimeRequestSchema, call.request, maxMessageBytes);
    if (decoded.kind === "malformed") {
      callback(toGrpcStatus(decoded.error));
      return;
    }
    const request = decoded.message;
    const encode = (envelope: ExecutionEnvelope) => encodeEnvelope(envelope, request, call.request);
    service.admit(request, callContext(call, decoded.warnings, encode)).then(
      (result) => {
        if (result.kind === "admitted") callback(null, asBuffer(result.encoded ?? encode(result.envelope)));
        else callback(toGrpcStatus(result.error));
      },
      (cause: unknown) => callback(toGrpcStatus(reportUnexpected(log, "Admit", cause, request.requestId))),
    );
  };

  const explain: grpc.handleUnaryCall<Buffer, Buffer> = (call, callback) => {
    const decoded = decodeBinary(ExplainRequestSchema, call.request, maxMessageBytes);
    if (decoded.kind === "malformed") {
      callback(toGrpcStatus(decoded.error));
      return;
    }
    service.explain(decoded.message, callContext(call, decoded.warnings)).then(
      (answer) => callback(null, asBuffer(toBinary(ExplainResponseSchema, answer))),
      (cause: unknown) =>
        callback(toGrpcStatus(reportUnexpected(log, "Explain", cause, decoded.message.request?.requestId))),
    );
  };

  const getCapabilities: grpc.handleUnaryCall<Buffer, Buffer> = (_call, callback) => {
    callback(null, capabilities);
  };

  server.addService(definition, { Admit: admit, Explain: explain, GetCapabilities: getCapabilities });
}

// toBinary's bytes for the envelopes it handles (all but those with an uncompiled field set, such as
// a oneof), several times faster; toBinary for the others.
const envelopeEncoder = compileBinaryEncoder(ExecutionEnvelopeSchema);

/**
 * The envelope in the binary format. When the envelope carries the very request that was decoded
 * (normalization changed nothing), the received bytes are written as its request field instead of
 * encoding the request again: the same message on the wire, for a good share less work per call.
 */
function encodeEnvelope(envelope: ExecutionEnvelope, decoded: RuntimeRequest, received: Buffer): Buffer {
  if (envelope.request !== decoded) {
    return asBuffer(envelopeEncoder?.encode(envelope) ?? toBinary(ExecutionEnvelopeSchema, envelope));
  }
  // A spread alone, then the assignment (docs/ARCHITECTURE.md: hot-path literals).
  const rest = { ...envelope };
  rest.request = undefined;
  const requestField = ExecutionEnvelopeSchema.field.request.number;
  const spliced = envelopeEncoder?.encodeWithField(rest, requestField, received);
  if (spliced !== undefined) return asBuffer(spliced);
  const w = new BinaryWriter();
  w.tag(requestField, WireType.LengthDelimited).bytes(received);
  return Buffer.concat([toBinary(ExecutionEnvelopeSchema, rest), w.finish()]);
}

/**
 * The call's context. Its signal is made on first use: most admissions finish without waiting on
 * anything, and an AbortController plus a listener per call is a measurable share of a call's cost.
 * So never spread the context into another object: that reads, and so makes, the signal.
 */
export function callContext(
  call: grpc.ServerUnaryCall<Buffer, unknown>,
  warnings: CallContext["decodeWarnings"],
  encodeEnvelope?: CallContext["encodeEnvelope"],
): CallContext {
  return new GrpcCallContext(call, warnings, encodeEnvelope);
}

// A class, not a literal with a getter and a conditional spread (docs/ARCHITECTURE.md: hot-path
// literals).
class GrpcCallContext implements CallContext {
  readonly deadlineMs: number | undefined;
  readonly traceparent: string | undefined;
  readonly caller: CallContext["caller"];
  private controller: AbortController | undefined;

  constructor(
    private readonly call: grpc.ServerUnaryCall<Buffer, unknown>,
    readonly decodeWarnings: CallContext["decodeWarnings"],
    readonly encodeEnvelope: CallContext["encodeEnvelope"],
  ) {
    const deadline = call.getDeadline();
    this.deadlineMs = deadline instanceof Date ? deadline.getTime() : Number.isFinite(deadline) ? deadline : undefined;
    const traceparent = call.metadata.get("traceparent")[0];
    this.traceparent = typeof traceparent === "string" ? traceparent : undefined;
    this.caller = grpcCaller(call.metadata);
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      const c = new AbortController();
      this.controller = c;
      // grpc-js emits "cancelled" both when the client cancels and when the deadline passes.
      if (this.call.cancelled) c.abort(this.abortReason());
      else this.call.once("cancelled", () => c.abort(this.abortReason()));
    }
    return this.controller.signal;
  }

  private abortReason(): DOMException {
    return this.deadlineMs !== undefined && Date.now() >= this.deadlineMs
      ? new DOMException("call deadline exceeded", "TimeoutError")
      : new DOMException("call cancelled", "AbortError");
  }
}
