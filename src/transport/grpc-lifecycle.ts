// envelope.v1.LifecycleService on the grpc-js port. Requests arrive as raw bytes and go through the
// shared decoder, like Admit's, so malformed input gets the contract's structured error; answers
// and refusals come from the transport-neutral service (src/service/lifecycle-service.ts).
import { type DescMethod, type DescService, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { LifecycleService } from "../gen/envelope/v1/lifecycle_service_pb.js";
import { decodeBinary } from "../service/decode-request.js";
import type { Answer, LifecycleService as Service } from "../service/lifecycle-service.js";
import type { Logger } from "../telemetry/log.js";
import { reportUnexpected } from "./call-failure.js";
import { callContext, rawUnaryMethod } from "./grpc-server.js";
import { toGrpcStatus } from "./wire-errors.js";

export interface GrpcLifecycleOptions {
  readonly service: Service;
  readonly maxMessageBytes: number;
  readonly log: Logger;
}

type Handler = (request: never, call: Parameters<Service["start"]>[1]) => Promise<Answer<unknown>>;

/** Registers envelope.v1.LifecycleService on a grpc-js server. */
export function addLifecycleService(server: grpc.Server, options: GrpcLifecycleOptions): void {
  const { service, maxMessageBytes, log } = options;
  const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  const implementation: grpc.UntypedServiceImplementation = {};

  for (const method of (LifecycleService as DescService).methods) {
    const path = `/${LifecycleService.typeName}/${method.name}`;
    const handler = (service[method.localName as keyof Service] as Handler).bind(service);
    if (method.methodKind === "server_streaming") {
      definition[method.name] = { ...rawUnaryMethod(path), responseStream: true };
      implementation[method.name] = (call: grpc.ServerWritableStream<Buffer, Buffer>) =>
        serveStream(call, method, handler, maxMessageBytes, log);
      continue;
    }
    definition[method.name] = rawUnaryMethod(path);
    implementation[method.name] = (
      call: grpc.ServerUnaryCall<Buffer, Buffer>,
      callback: grpc.sendUnaryData<Buffer>,
    ) => {
      const decoded = decodeBinary(method.input, call.request, maxMessageBytes);
      if (decoded.kind === "malformed") {
        callback(toGrpcStatus(decoded.error));
        return;
      }
      handler(decoded.message as never, callContext(call, decoded.warnings)).then(
        (answer) => {
          if (answer.kind === "error") callback(toGrpcStatus(answer.error));
          else callback(null, asBuffer(toBinary(method.output, answer.message as never)));
        },
        (cause: unknown) => callback(toGrpcStatus(reportUnexpected(log, method.name, cause))),
      );
    };
  }
  server.addService(definition, implementation);
}

async function serveStream(
  call: grpc.ServerWritableStream<Buffer, Buffer>,
  method: DescMethod,
  handler: Handler,
  maxMessageBytes: number,
  log: Logger,
): Promise<void> {
  const decoded = decodeBinary(method.input, call.request, maxMessageBytes);
  if (decoded.kind === "malformed") {
    call.emit("error", toGrpcStatus(decoded.error));
    return;
  }
  const context = callContext(call as unknown as grpc.ServerUnaryCall<Buffer, unknown>, decoded.warnings);
  try {
    const answer = await handler(decoded.message as never, context);
    if (answer.kind === "error") {
      call.emit("error", toGrpcStatus(answer.error));
      return;
    }
    for await (const message of answer.message as AsyncIterable<unknown>) {
      if (call.cancelled) break;
      // Respect the client's flow control: a slow reader slows the stream, not the server's memory.
      if (!call.write(asBuffer(toBinary(method.output, message as never)))) {
        await new Promise((resolve) => {
          call.once("drain", resolve);
          call.once("cancelled", resolve);
        });
      }
    }
    if (!call.cancelled) call.end();
  } catch (cause) {
    if (!call.cancelled) call.emit("error", toGrpcStatus(reportUnexpected(log, method.name, cause)));
  }
}

const asBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
