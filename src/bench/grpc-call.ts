// A CallFn for one unary gRPC method on @grpc/grpc-js, with raw bytes in and out.
import * as grpc from "@grpc/grpc-js";
import type { CallFn } from "./load.js";

const passThrough = (b: Buffer): Buffer => b;

/**
 * Calls `path` with `body()` for each call. Every call has a deadline (`deadlineMs`, default 30 s),
 * so a run against a server that stops answering still ends; a failure is reported by its status name.
 */
export function grpcUnaryCall(client: grpc.Client, path: string, body: () => Buffer, deadlineMs = 30_000): CallFn {
  return (events) => {
    const call = client.makeUnaryRequest(
      path,
      passThrough,
      passThrough,
      body(),
      new grpc.Metadata(),
      { deadline: Date.now() + deadlineMs },
      (error) => events.done(error ? (grpc.status[error.code] ?? "UNKNOWN") : undefined),
    );
    // Response headers: the first byte of the answer.
    call.on("metadata", () => events.headers());
  };
}
