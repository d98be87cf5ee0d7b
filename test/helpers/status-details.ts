// Reads the ErrorEnvelope out of a grpc-status-details-bin value (google.rpc.Status) the way any
// gRPC client would, without Envelope's own code.
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { type ErrorEnvelope, ErrorEnvelopeSchema } from "../../src/gen/envelope/v1/error_pb.js";

export function errorEnvelopeFromStatus(bytes: Uint8Array): { code: number; envelope: ErrorEnvelope | undefined } {
  const reader = new BinaryReader(bytes);
  let code = 0;
  let envelope: ErrorEnvelope | undefined;
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.Varint) code = reader.int32();
    else if (field === 3 && wireType === WireType.LengthDelimited) {
      const any = new BinaryReader(reader.bytes());
      let typeUrl = "";
      let value: Uint8Array = new Uint8Array();
      while (any.pos < any.len) {
        const [f, w] = any.tag();
        if (f === 1) typeUrl = any.string();
        else if (f === 2) value = any.bytes();
        else any.skip(w);
      }
      if (typeUrl.endsWith("/envelope.v1.ErrorEnvelope")) envelope = fromBinary(ErrorEnvelopeSchema, value);
    } else reader.skip(wireType);
  }
  return { code, envelope };
}
