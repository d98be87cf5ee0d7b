// Starts a real server on ephemeral loopback ports, with clients for every protocol.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client, Transport } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { defaultConfig, type EnvelopeConfig, type ListenerConfig } from "../../src/config/config.js";
import { AdmissionService } from "../../src/gen/envelope/v1/admission_service_pb.js";
import { LifecycleService } from "../../src/gen/envelope/v1/lifecycle_service_pb.js";
import { type RunningServer, type StartOptions, startServer } from "../../src/server.js";
import { createLogger, type Logger } from "../../src/telemetry/log.js";

export type AdmissionClient = Client<typeof AdmissionService>;

export interface TestServer {
  readonly server: RunningServer;
  readonly grpcUrl: string;
  readonly httpUrl: string;
  /** Log lines the server wrote, parsed. */
  readonly logs: Record<string, unknown>[];
  /** One client per protocol, named as the tests report them. */
  readonly clients: Readonly<Record<ProtocolName, AdmissionClient>>;
  /** Lifecycle clients per protocol (the server has a ledger unless the config says none). */
  readonly lifecycle: Readonly<Record<ProtocolName, LifecycleClient>>;
  /** The SQLite ledger's directory, removed on close. */
  readonly dataDir: string;
  close(): Promise<void>;
}

export type LifecycleClient = Client<typeof LifecycleService>;

export type ProtocolName =
  | "gRPC (grpc-js port)"
  | "gRPC (HTTP port, h2c)"
  | "Connect JSON over HTTP/1.1"
  | "Connect binary over h2c"
  | "gRPC-Web over HTTP/1.1";

export interface TestServerOptions extends Partial<Omit<StartOptions, "log">> {
  readonly config?: Partial<Omit<EnvelopeConfig, "grpc" | "http">> & {
    readonly grpc?: Partial<ListenerConfig>;
    readonly http?: Partial<ListenerConfig>;
  };
}

export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const logs: Record<string, unknown>[] = [];
  const log: Logger = createLogger({ level: "debug", write: (line) => logs.push(JSON.parse(line)) });
  const dataDir = mkdtempSync(join(tmpdir(), "envelope-test-"));
  const loopback = { host: "127.0.0.1", port: 0 };
  const config: EnvelopeConfig = {
    ...defaultConfig,
    ...options.config,
    grpc: { ...defaultConfig.grpc, listen: loopback, ...options.config?.grpc },
    http: { ...defaultConfig.http, listen: loopback, ...options.config?.http },
    // A real SQLite ledger in a fresh directory unless the test sets its own.
    ledger: { ...defaultConfig.ledger, dataDir, ...options.config?.ledger },
  };
  const { config: _omit, ...start } = options;
  const server = await startServer(config, { ...start, log }).catch((e: unknown) => {
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  });
  const scheme = (l: ListenerConfig) => (l.tls || l.auth === "mtls" ? "https" : "http");
  const grpcUrl = `${scheme(config.grpc)}://${server.grpcAddress}`;
  const httpUrl = `${scheme(config.http)}://${server.httpAddress}`;
  const transports: Record<ProtocolName, Transport> = {
    "gRPC (grpc-js port)": createGrpcTransport({ baseUrl: grpcUrl }),
    "gRPC (HTTP port, h2c)": createGrpcTransport({ baseUrl: httpUrl }),
    "Connect JSON over HTTP/1.1": createConnectTransport({
      baseUrl: httpUrl,
      httpVersion: "1.1",
      useBinaryFormat: false,
    }),
    "Connect binary over h2c": createConnectTransport({ baseUrl: httpUrl, httpVersion: "2", useBinaryFormat: true }),
    "gRPC-Web over HTTP/1.1": createGrpcWebTransport({ baseUrl: httpUrl, httpVersion: "1.1" }),
  };
  const clients = Object.fromEntries(
    Object.entries(transports).map(([name, t]) => [name, createClient(AdmissionService, t)]),
  ) as Record<ProtocolName, AdmissionClient>;
  const lifecycle = Object.fromEntries(
    Object.entries(transports).map(([name, t]) => [name, createClient(LifecycleService, t)]),
  ) as Record<ProtocolName, LifecycleClient>;
  return {
    server,
    grpcUrl,
    httpUrl,
    logs,
    clients,
    lifecycle,
    dataDir,
    async close() {
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export const protocolNames: readonly ProtocolName[] = [
  "gRPC (grpc-js port)",
  "gRPC (HTTP port, h2c)",
  "Connect JSON over HTTP/1.1",
  "Connect binary over h2c",
  "gRPC-Web over HTTP/1.1",
];
