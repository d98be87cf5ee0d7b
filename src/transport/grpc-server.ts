// gRPC over HTTP/2 on @grpc/grpc-js: the hot path for backends. grpc-js carries protobuf-es messages
// through per-method serializers; the request arrives as raw bytes so that decoding failures get the
// contract's structured error rather than grpc-js's generic one.
import { toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { AdmissionService, GetCapabilitiesResponseSchema } from "../gen/envelope/v1/admission_service_pb.js";
import { ExecutionEnvelopeSchema } from "../gen/envelope/v1/execution_envelope_pb.js";
import { RuntimeRequestSchema } from "../gen/envelope/v1/runtime_request_pb.js";
import type { CallContext, AdmissionService as Service } from "../service/admission-service.js";
import { decodeBinary } from "../service/decode-request.js";
import type { Logger } from "../telemetry/log.js";
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
const asBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/** Registers envelope.v1.AdmissionService on a grpc-js server. */
export function addAdmissionService(server: grpc.Server, options: GrpcAdmissionOptions): void {
  const { service, maxMessageBytes, log } = options;
  const method = (name: keyof typeof AdmissionService.method) =>
    `/${AdmissionService.typeName}/${AdmissionService.method[name].name}`;
  // Capabilities are fixed for the server's life: encode them once.
  const capabilities = asBuffer(toBinary(GetCapabilitiesResponseSchema, service.capabilities()));

  const definition: grpc.ServiceDefinition = {
    Admit: {
      path: method("admit"),
      requestStream: false,
      responseStream: false,
      requestDeserialize: passThrough,
      requestSerialize: passThrough,
      responseSerialize: (m: Parameters<typeof toBinary<typeof ExecutionEnvelopeSchema>>[1]) =>
        asBuffer(toBinary(ExecutionEnvelopeSchema, m)),
      responseDeserialize: passThrough,
    },
    GetCapabilities: {
      path: method("getCapabilities"),
      requestStream: false,
      responseStream: false,
      requestDeserialize: passThrough,
      requestSerialize: passThrough,
      responseSerialize: passThrough,
      responseDeserialize: passThrough,
    },
  };

  const admit: grpc.handleUnaryCall<Buffer, unknown> = (call, callback) => {
    const decoded = decodeBinary(RuntimeRequestSchema, call.request, maxMessageBytes);
    if (decoded.kind === "malformed") {
      callback(toGrpcStatus(decoded.error));
      return;
    }
    const request = decoded.message;
    service.admit(request, callContext(call, decoded.warnings)).then(
      (result) => {
        if (result.kind === "admitted") callback(null, result.envelope);
        else callback(toGrpcStatus(result.error));
      },
      (cause: unknown) => callback(toGrpcStatus(reportUnexpected(log, "Admit", cause, request.requestId))),
    );
  };

  const getCapabilities: grpc.handleUnaryCall<Buffer, Buffer> = (_call, callback) => {
    callback(null, capabilities);
  };

  server.addService(definition, { Admit: admit, GetCapabilities: getCapabilities });
}

function callContext(
  call: grpc.ServerUnaryCall<Buffer, unknown>,
  warnings: CallContext["decodeWarnings"],
): CallContext {
  const controller = new AbortController();
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : Number.isFinite(deadline) ? deadline : undefined;
  // grpc-js emits "cancelled" both when the client cancels and when the deadline passes.
  call.once("cancelled", () => {
    const timedOut = deadlineMs !== undefined && Date.now() >= deadlineMs;
    controller.abort(
      timedOut
        ? new DOMException("call deadline exceeded", "TimeoutError")
        : new DOMException("call cancelled", "AbortError"),
    );
  });
  const traceparent = call.metadata.get("traceparent")[0];
  return {
    signal: controller.signal,
    ...(deadlineMs === undefined ? {} : { deadlineMs }),
    ...(typeof traceparent === "string" ? { traceparent } : {}),
    ...(warnings === undefined || warnings.length === 0 ? {} : { decodeWarnings: warnings }),
  };
}
