// Composition root: builds the admission service from configuration and serves it on the gRPC port
// (grpc-js) and the HTTP port (Connect, gRPC-Web, gRPC, health routes). Nothing else wires things.
import { createHash } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { EnvelopeConfig } from "./config/config.js";
import { ConfigError, isLoopback } from "./config/config.js";
import type { AdmissionConfig } from "./core/admit.js";
import { AdmissionService } from "./gen/envelope/v1/admission_service_pb.js";
import { LifecycleService } from "./gen/envelope/v1/lifecycle_service_pb.js";
import { Health } from "./gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "./gen/grpc/reflection/v1/reflection_pb.js";
import { createLedger } from "./ledger/ledger.js";
import { type Maintenance, startMaintenance } from "./ledger/maintenance.js";
import { openLedgerStore } from "./ledger/open.js";
import { contractFiles } from "./schema.js";
import { createAdmissionService, type EnvelopeRecorder } from "./service/admission-service.js";
import { createLifecycleService } from "./service/lifecycle-service.js";
import type { Logger } from "./telemetry/log.js";
import { createConnectHandlers } from "./transport/connect-routes.js";
import { addLifecycleService } from "./transport/grpc-lifecycle.js";
import { addReflection } from "./transport/grpc-reflection.js";
import { addAdmissionService, transportMaxBytes } from "./transport/grpc-server.js";
import { createHttpHandler, formatHost, listenHttp } from "./transport/http-server.js";

export interface RunningServer {
  /** "host:port" of the gRPC listener. */
  readonly grpcAddress: string;
  /** "host:port" of the HTTP listener. */
  readonly httpAddress: string;
  /** Reports NOT_SERVING (gRPC health, /readyz) after shutdown starts, so load balancers drain first. */
  setServing(serving: boolean): void;
  /** Stops accepting calls, lets in-flight ones finish, and closes both listeners and the ledger. */
  close(): Promise<void>;
  /** The ledger's background work, when there is a ledger. */
  readonly maintenance: Maintenance | undefined;
}

export interface StartOptions {
  readonly log: Logger;
  /** Replaces the ledger as the recorder of admitted envelopes (tests of the recorder seam). */
  readonly recorder?: EnvelopeRecorder;
  /** Defaults to Date.now. */
  readonly now?: () => number;
}

export const features = Object.freeze([
  "transport.grpc",
  "transport.connect",
  "transport.grpc-web",
  "grpc.health.v1",
  "grpc.reflection.v1",
  "http.health",
]);

export async function startServer(config: EnvelopeConfig, options: StartOptions): Promise<RunningServer> {
  refuseUnauthenticatedExposure(config);
  const { log } = options;
  const admission = admissionConfig(config);
  const opened = await openLedgerStore(config.ledger);
  const ledger =
    opened === undefined
      ? undefined
      : createLedger(opened.store, options.now === undefined ? {} : { now: options.now });
  const recorder = options.recorder ?? ledger;
  const service = createAdmissionService({
    config: admission,
    features: ledger === undefined ? features : [...features, ...ledgerFeatures(opened?.store.kind ?? "")],
    ...(recorder === undefined ? {} : { recorder }),
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  const lifecycle = ledger === undefined ? undefined : createLifecycleService({ ledger });
  const maintenance = ledger === undefined ? undefined : startMaintenance(ledger, config.ledger, log);
  const maxMessageBytes = config.limits.maxMessageBytes;

  const grpcServer = new grpc.Server({
    "grpc.max_receive_message_length": transportMaxBytes(maxMessageBytes),
  });
  addAdmissionService(grpcServer, { service, maxMessageBytes, log });
  if (lifecycle !== undefined) addLifecycleService(grpcServer, { service: lifecycle, maxMessageBytes, log });
  const health = new HealthImplementation({ "": "SERVING", [AdmissionService.typeName]: "SERVING" });
  health.addToServer(grpcServer);
  addReflection(
    grpcServer,
    [AdmissionService, ...(lifecycle === undefined ? [] : [LifecycleService]), Health, ServerReflection],
    contractFiles,
  );

  const g = config.grpc.listen;
  const grpcPort = await new Promise<number>((resolve, reject) => {
    grpcServer.bindAsync(`${formatHost(g.host)}:${g.port}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    );
  });

  let serving = true;
  const handlers = createConnectHandlers({
    service,
    ...(lifecycle === undefined ? {} : { lifecycle }),
    maxMessageBytes,
    log,
  });
  let http: Awaited<ReturnType<typeof listenHttp>>;
  try {
    http = await listenHttp(
      createHttpHandler({ handlers, ready: () => serving, log }),
      config.http.listen.host,
      config.http.listen.port,
      log,
    );
  } catch (e) {
    grpcServer.forceShutdown();
    await maintenance?.stop();
    await opened?.store.close();
    throw e;
  }

  const grpcAddress = `${formatHost(g.host)}:${grpcPort}`;
  log.info("server.started", {
    grpc: grpcAddress,
    http: http.address,
    contractVersion: service.capabilities().contractVersion,
    limitsVersion: admission.limitsVersion,
    ledger:
      opened === undefined ? "none" : { store: opened.store.kind, at: opened.location, migrated: opened.migrated },
  });

  const setServing = (value: boolean) => {
    serving = value;
    const status = value ? "SERVING" : "NOT_SERVING";
    health.setStatus("", status);
    health.setStatus(AdmissionService.typeName, status);
  };

  return {
    grpcAddress,
    httpAddress: http.address,
    setServing,
    maintenance,
    async close() {
      setServing(false);
      await Promise.all([
        new Promise<void>((resolve) => {
          // In-flight calls get a few seconds; then the rest are cancelled.
          const timer = setTimeout(() => grpcServer.forceShutdown(), 5_000);
          grpcServer.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        }),
        http.close(),
      ]);
      // Only now, with no call left that could write: every acknowledged write is committed.
      await maintenance?.stop();
      await opened?.store.close();
      log.info("server.stopped");
    },
  };
}

/** Features announced when a ledger is configured. */
function ledgerFeatures(storeKind: string): string[] {
  return ["ledger", `ledger.${storeKind}`, "lifecycle.v1"];
}

/** The admission core's configuration, with a version that names these exact limits. */
export function admissionConfig(config: EnvelopeConfig): AdmissionConfig {
  const fingerprint = createHash("sha256")
    .update(JSON.stringify({ limits: config.limits, kinds: config.executionKinds }))
    .digest("hex")
    .slice(0, 12);
  return {
    limits: config.limits,
    limitsVersion: `static-limits@${fingerprint}`,
    kindRules: config.executionKinds.rules,
    fallbackKind: config.executionKinds.fallback,
    defaultTraceContentMode: config.trace.defaultContentMode,
  };
}

/**
 * Caller authentication does not exist yet, so neither port may listen beyond loopback: an
 * unauthenticated admission port on a network would let anyone be admitted.
 */
function refuseUnauthenticatedExposure(config: EnvelopeConfig): void {
  const problems: string[] = [];
  for (const [key, address] of [
    ["grpc.listen", config.grpc.listen],
    ["http.listen", config.http.listen],
  ] as const) {
    if (!isLoopback(address.host)) {
      problems.push(
        `${key}: refusing to listen on ${address.host}, which is not a loopback address, without caller authentication (not available in this release); use 127.0.0.1 or ::1`,
      );
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
}
