// The one place where the contract's ErrorEnvelope becomes a wire error. gRPC (grpc-js) and Connect
// / gRPC-Web (connect-node) both carry the same thing: the category's status code, the user-safe
// message, and the ErrorEnvelope as a google.rpc.Status detail (grpc-status-details-bin), which
// Connect's JSON errors also show readably under details[].debug.
import { toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { type Code, ConnectError } from "@connectrpc/connect";
import { status as GrpcStatus, Metadata, type StatusObject } from "@grpc/grpc-js";
import { serverContractVersion } from "../core/contract-version.js";
import { categoryRule, createErrorEnvelope, type GrpcCodeName } from "../core/errors.js";
import { type ErrorEnvelope, ErrorEnvelopeSchema } from "../gen/envelope/v1/error_pb.js";

const grpcCodes: Record<GrpcCodeName, GrpcStatus> = {
  INVALID_ARGUMENT: GrpcStatus.INVALID_ARGUMENT,
  UNAUTHENTICATED: GrpcStatus.UNAUTHENTICATED,
  PERMISSION_DENIED: GrpcStatus.PERMISSION_DENIED,
  NOT_FOUND: GrpcStatus.NOT_FOUND,
  ALREADY_EXISTS: GrpcStatus.ALREADY_EXISTS,
  FAILED_PRECONDITION: GrpcStatus.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: GrpcStatus.RESOURCE_EXHAUSTED,
  UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  ABORTED: GrpcStatus.ABORTED,
  UNKNOWN: GrpcStatus.UNKNOWN,
  DEADLINE_EXCEEDED: GrpcStatus.DEADLINE_EXCEEDED,
  CANCELLED: GrpcStatus.CANCELLED,
  INTERNAL: GrpcStatus.INTERNAL,
};

// Connect's codes are numerically gRPC's.
const connectCodes: Record<GrpcCodeName, Code> = grpcCodes as unknown as Record<GrpcCodeName, Code>;

const errorEnvelopeTypeUrl = `type.googleapis.com/${ErrorEnvelopeSchema.typeName}`;

/** google.rpc.Status { code, message, details: [Any(ErrorEnvelope)] }, encoded by hand to avoid a dependency. */
function encodeStatusDetails(code: number, envelope: ErrorEnvelope): Uint8Array {
  const w = new BinaryWriter();
  if (code !== 0) w.tag(1, WireType.Varint).int32(code);
  const message = envelope.error?.message ?? "";
  if (message !== "") w.tag(2, WireType.LengthDelimited).string(message);
  w.tag(3, WireType.LengthDelimited).fork();
  w.tag(1, WireType.LengthDelimited).string(errorEnvelopeTypeUrl);
  w.tag(2, WireType.LengthDelimited).bytes(toBinary(ErrorEnvelopeSchema, envelope));
  w.join();
  return w.finish();
}

function codeName(envelope: ErrorEnvelope): GrpcCodeName {
  return categoryRule(envelope.error?.category ?? "internal").grpcCode;
}

/** The grpc-js status of an ErrorEnvelope. */
export function toGrpcStatus(envelope: ErrorEnvelope): StatusObject {
  const code = grpcCodes[codeName(envelope)];
  const metadata = new Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(encodeStatusDetails(code, envelope)));
  return { code, details: envelope.error?.message ?? "", metadata };
}

/** The ConnectError of an ErrorEnvelope, for connect-node's Connect and gRPC-Web protocols. */
export function toConnectError(envelope: ErrorEnvelope): ConnectError {
  return new ConnectError(envelope.error?.message ?? "", connectCodes[codeName(envelope)], undefined, [
    { desc: ErrorEnvelopeSchema, value: envelope },
  ]);
}

/**
 * An unexpected failure, as the caller sees it: category internal with a reference to the server's
 * log entry, never the thrown value's text.
 */
export function internalError(reference: string, requestId = ""): ErrorEnvelope {
  return createErrorEnvelope(serverContractVersion, {
    category: "internal",
    code: "INTERNAL",
    message: `internal error; reference ${reference}`,
    requestId,
    detailsRef: `urn:envelope:log:${reference}`,
  });
}
