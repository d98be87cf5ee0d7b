// A CallFn for one unary gRPC method on @grpc/grpc-js, with raw bytes in and out.
import type * as grpc from "@grpc/grpc-js";
import type { CallFn } from "./load.js";

const passThrough = (b: Buffer): Buffer => b;

export function grpcUnaryCall(client: grpc.Client, path: string, body: () => Buffer): CallFn {
  return (events) => {
    const call = client.makeUnaryRequest(path, passThrough, passThrough, body(), (error) => {
      events.done(error ?? undefined);
    });
    // Response headers: the first byte of the answer.
    call.on("metadata", () => events.headers());
  };
}
