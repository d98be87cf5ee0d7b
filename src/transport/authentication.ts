// Caller authentication at the transports, before any request byte is decoded. On the gRPC port a
// grpc-js server interceptor checks every call's metadata (and the connection's client certificate)
// before the handler runs; gRPC health stays open for load balancers and orchestrators. On the
// HTTP port the Connect handlers are wrapped (connect-routes.ts); the health routes never reach
// them. A refusal is the call's ErrorEnvelope through wire-errors; the credential is never logged.
import type { TLSSocket } from "node:tls";
import { createContextKey } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import type { Authenticator, Credentials } from "../auth/authenticator.js";
import type { Caller } from "../core/caller.js";
import type { ErrorEnvelope } from "../gen/envelope/v1/error_pb.js";
import type { Logger } from "../telemetry/log.js";
import { reportUnexpected } from "./call-failure.js";
import { toGrpcStatus } from "./wire-errors.js";

/** Services any client may call without credentials: health, for load balancers and orchestrators. */
const openGrpcServices = ["/grpc.health.v1.Health/"];

// The caller of each authenticated gRPC call, by the metadata object grpc-js hands to the handler.
const grpcCallers = new WeakMap<grpc.Metadata, Caller>();

/** The authenticated caller of a gRPC call, when the port authenticates. */
export function grpcCaller(metadata: grpc.Metadata): Caller | undefined {
  return grpcCallers.get(metadata);
}

/** A grpc-js server interceptor that admits a call to its handler only once its caller is authenticated. */
export function grpcAuthentication(authenticator: Authenticator, log: Logger): grpc.ServerInterceptor {
  return (method, call) => {
    if (openGrpcServices.some((prefix) => method.path.startsWith(prefix))) return new grpc.ServerInterceptingCall(call);
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const credentials: Credentials = {
          authorization: first(metadata.get("authorization")),
          certificate: authenticator.mode === "mtls" ? call.getAuthContext().sslPeerCertificate : undefined,
        };
        // Nothing past this point sees the credential.
        metadata.remove("authorization");
        authenticator.authenticate(credentials).then(
          (result) => {
            if (result.kind === "refused") {
              logRefusal(log, "grpc", method.path, call.getPeer(), result.error);
              call.sendStatus(toGrpcStatus(result.error));
              return;
            }
            grpcCallers.set(metadata, result.caller);
            next(metadata);
          },
          (cause: unknown) => call.sendStatus(toGrpcStatus(reportUnexpected(log, method.path, cause))),
        );
      })
      .build();
    return new grpc.ServerInterceptingCall(
      call,
      new grpc.ResponderBuilder().withStart((next) => next(listener)).build(),
    );
  };
}

const first = (values: grpc.MetadataValue[]): string | undefined =>
  typeof values[0] === "string" ? values[0] : undefined;

/** What the HTTP port knows of a request's connection: its peer, and its client certificate (TLS). */
export interface ConnectionInfo extends Pick<Credentials, "certificate" | "certificateProblem"> {
  readonly peer: string;
}

/** The request's connection, set by the HTTP port's request handler when the port authenticates. */
export const connectionKey = createContextKey<ConnectionInfo | undefined>(undefined, {
  description: "the request's connection",
});

/** A connection's peer and, on TLS, the client certificate the handshake verified against the client CA. */
export function connectionInfo(socket: Partial<TLSSocket>): ConnectionInfo {
  const peer = `${socket.remoteAddress ?? ""}:${socket.remotePort ?? ""}`;
  if (typeof socket.getPeerCertificate !== "function") return { peer, certificate: undefined };
  if (socket.authorized === true) return { peer, certificate: socket.getPeerCertificate() };
  const presented = socket.getPeerCertificate()?.raw !== undefined;
  return {
    peer,
    certificate: undefined,
    certificateProblem: presented
      ? `the connection's certificate was not accepted (${String(socket.authorizationError)})`
      : "the connection presented no certificate",
  };
}

/** One line per refused call: where, which code, never the credential. */
export function logRefusal(log: Logger, port: "grpc" | "http", method: string, peer: string, error: ErrorEnvelope) {
  log.info("call.unauthenticated", { port, method, peer, code: error.error?.code ?? "" });
}
