// Composition root: builds the admission service from configuration and serves it on the gRPC port
// (grpc-js) and the HTTP port (Connect, gRPC-Web, gRPC, health routes). Nothing else wires things.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { type Authenticator, createAuthenticator } from "./auth/authenticator.js";
import type { AuthMode, EnvelopeConfig, ListenerConfig } from "./config/config.js";
import { ConfigError, isLoopback } from "./config/config.js";
import type { AdmissionConfig } from "./core/admit.js";
import { AdmissionService } from "./gen/envelope/v1/admission_service_pb.js";
import { LifecycleService } from "./gen/envelope/v1/lifecycle_service_pb.js";
import { Health } from "./gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "./gen/grpc/reflection/v1/reflection_pb.js";
import { createLedger } from "./ledger/ledger.js";
import { type Maintenance, startMaintenance } from "./ledger/maintenance.js";
import { openLedgerStore } from "./ledger/open.js";
import type { PolicyBundle } from "./policy/bundle.js";
import { loadPolicyFile } from "./policy/load.js";
import { contractFiles } from "./schema.js";
import { createAdmissionService, type EnvelopeRecorder } from "./service/admission-service.js";
import { createLifecycleService } from "./service/lifecycle-service.js";
import type { Logger } from "./telemetry/log.js";
import { grpcAuthentication } from "./transport/authentication.js";
import { createConnectHandlers } from "./transport/connect-routes.js";
import { addLifecycleService } from "./transport/grpc-lifecycle.js";
import { addReflection } from "./transport/grpc-reflection.js";
import { addAdmissionService, transportMaxBytes } from "./transport/grpc-server.js";
import { createHttpHandler, formatHost, type HttpTls, listenHttp } from "./transport/http-server.js";

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
  /**
   * Reads policy.file again (on SIGHUP) and puts the new bundle in force for the next call, as a
   * whole; a bad one is refused and logged, and the bundle in force stays.
   */
  reloadPolicy(): PolicyReload;
}

export type PolicyReload =
  | { readonly kind: "loaded"; readonly version: string; readonly rules: number }
  /** The new bundle's problems; the bundle in force (its version) stays. */
  | { readonly kind: "refused"; readonly problems: readonly string[]; readonly inForce: string | undefined }
  /** No policy.file is configured: nothing to reload. */
  | { readonly kind: "none" };

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
  "admission.explain",
]);

/** Announced when a policy bundle is configured (policy.file). */
export const policyFeature = "policy.cel";

export async function startServer(config: EnvelopeConfig, options: StartOptions): Promise<RunningServer> {
  const { log } = options;
  refuseUnauthenticatedExposure(config, log);
  // Files (tokens, JWKS, certificates) are read now: a bad one stops start-up, before the ledger opens.
  const auth = listenerAuthenticators(config, options);
  const grpcTls = listenerTls(config, config.grpc);
  const httpTls = listenerTls(config, config.http);
  // The bundle is compiled now: a bad one stops start-up with its problems, before the ledger opens.
  const policyFile = config.policy.file;
  let bundle = policyFile === "" ? undefined : loadPolicyBundle(policyFile);
  const admission = admissionConfig(config, policyFile === "" ? undefined : () => bundle);
  const opened = await openLedgerStore(config.ledger, log);
  const ledger =
    opened === undefined
      ? undefined
      : createLedger(opened.store, options.now === undefined ? {} : { now: options.now });
  const recorder = options.recorder ?? ledger;
  const service = createAdmissionService({
    config: admission,
    features: [
      ...features,
      ...(ledger === undefined ? [] : ledgerFeatures(opened?.store.kind ?? "")),
      ...(policyFile === "" ? [] : [policyFeature]),
    ],
    ...(recorder === undefined ? {} : { recorder }),
    ...(ledger === undefined ? {} : { envelopes: ledger.envelope, budgetUsage: ledger.store.budgetUsage }),
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  const lifecycle =
    ledger === undefined ? undefined : createLifecycleService({ ledger, authorization: admission.authorization });
  const maintenance = ledger === undefined ? undefined : startMaintenance(ledger, config.ledger, log);
  const maxMessageBytes = config.limits.maxMessageBytes;

  const grpcServer = new grpc.Server({
    "grpc.max_receive_message_length": transportMaxBytes(maxMessageBytes),
    ...(auth.grpc === undefined ? {} : { interceptors: [grpcAuthentication(auth.grpc, log)] }),
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
    grpcServer.bindAsync(`${formatHost(g.host)}:${g.port}`, grpcCredentials(grpcTls), (err, port) =>
      err ? reject(err) : resolve(port),
    );
  });

  let serving = true;
  const handlers = createConnectHandlers({
    service,
    ...(lifecycle === undefined ? {} : { lifecycle }),
    maxMessageBytes,
    log,
    authenticator: auth.http,
  });
  let http: Awaited<ReturnType<typeof listenHttp>>;
  try {
    http = await listenHttp(
      createHttpHandler({ handlers, ready: () => serving, log, withConnection: auth.http !== undefined }),
      config.http.listen.host,
      config.http.listen.port,
      log,
      httpTls,
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
    ...(bundle === undefined
      ? {}
      : { policy: { file: policyFile, version: bundle.version, rules: bundle.rules.length } }),
    auth: { grpc: listenerSecurity(config.grpc), http: listenerSecurity(config.http) },
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
    reloadPolicy() {
      if (policyFile === "") {
        log.warn("policy.reload.skipped", { message: "no policy.file is configured: nothing to reload" });
        return { kind: "none" };
      }
      const loaded = loadPolicyFile(policyFile);
      if (loaded.kind !== "ok") {
        log.error("policy.reload.refused", { file: policyFile, problems: loaded.problems, inForce: bundle?.version });
        return { kind: "refused", problems: loaded.problems, inForce: bundle?.version };
      }
      // One assignment: a call reads the bundle once, so it sees the old one or the new one, whole.
      bundle = loaded.bundle;
      log.info("policy.reloaded", { file: policyFile, version: bundle.version, rules: bundle.rules.length });
      return { kind: "loaded", version: bundle.version, rules: bundle.rules.length };
    },
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

/**
 * The admission core's configuration, with a version that names these exact limits; `policy` gives
 * the bundle in force at each call.
 */
export function admissionConfig(config: EnvelopeConfig, policy?: () => PolicyBundle | undefined): AdmissionConfig {
  return {
    limits: config.limits,
    limitsVersion: `static-limits@${fingerprintOf({ limits: config.limits, kinds: config.executionKinds })}`,
    kindRules: config.executionKinds.rules,
    fallbackKind: config.executionKinds.fallback,
    defaultTraceContentMode: config.trace.defaultContentMode,
    authorization: new Map(Object.entries(config.authorization.callers)),
    budgets: config.budgets.definitions,
    budgetsVersion: `budgets@${fingerprintOf(config.budgets.definitions)}`,
    ...(policy === undefined ? {} : { policy }),
  };
}

/** A short hash naming a piece of configuration in policy decisions. */
function fingerprintOf(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("hex").slice(0, 12);
}

/** The bundle of policy.file, or a ConfigError with its problems. */
export function loadPolicyBundle(file: string): PolicyBundle {
  const loaded = loadPolicyFile(file);
  if (loaded.kind !== "ok") throw new ConfigError(loaded.problems.map((p) => `policy.file (${file}): ${p}`));
  return loaded.bundle;
}

/**
 * An admission port without caller authentication lets anyone who reaches it be admitted, so it may
 * only listen on loopback, for development, and says so at start.
 */
function refuseUnauthenticatedExposure(config: EnvelopeConfig, log: Logger): void {
  const problems: string[] = [];
  const open: string[] = [];
  for (const name of ["grpc", "http"] as const) {
    const { listen, auth } = config[name];
    if (auth !== "none") continue;
    if (isLoopback(listen.host)) {
      open.push(`${name}.listen ${formatHost(listen.host)}:${listen.port}`);
      continue;
    }
    problems.push(
      `${name}.listen: refusing to listen on ${listen.host}, which is not a loopback address, without caller authentication; set ${name}.auth to token, jwt or mtls, or use 127.0.0.1 or ::1`,
    );
  }
  if (problems.length > 0) throw new ConfigError(problems);
  if (open.length > 0) {
    log.warn("server.unauthenticated", {
      message: `unauthenticated development mode: ${open.join(" and ")} accept calls from any local process without credentials`,
      listeners: open,
    });
  }
}

/** One authenticator per listener that authenticates; listeners with the same mode share it. */
function listenerAuthenticators(
  config: EnvelopeConfig,
  options: StartOptions,
): { grpc: Authenticator | undefined; http: Authenticator | undefined } {
  const byMode = new Map<AuthMode, Authenticator | undefined>();
  const of = (mode: AuthMode) => {
    if (!byMode.has(mode)) {
      byMode.set(
        mode,
        createAuthenticator(mode, config, { log: options.log, ...(options.now ? { now: options.now } : {}) }),
      );
    }
    return byMode.get(mode);
  };
  return { grpc: of(config.grpc.auth), http: of(config.http.auth) };
}

/** The listener's TLS files, read and checked, when it serves TLS (tls: true, or auth mtls). */
function listenerTls(config: EnvelopeConfig, listener: ListenerConfig): HttpTls | undefined {
  if (!listener.tls && listener.auth !== "mtls") return undefined;
  const problems: string[] = [];
  const read = (key: "certFile" | "keyFile" | "clientCaFile") => {
    try {
      return readFileSync(config.tls[key]);
    } catch (e) {
      problems.push(`tls.${key}: cannot read ${config.tls[key]} (${(e as NodeJS.ErrnoException).code ?? e})`);
      return Buffer.alloc(0);
    }
  };
  const files = {
    cert: read("certFile"),
    key: read("keyFile"),
    clientCa: listener.auth === "mtls" ? read("clientCaFile") : undefined,
  };
  if (problems.length === 0) {
    try {
      createSecureContext({ cert: files.cert, key: files.key, ...(files.clientCa ? { ca: files.clientCa } : {}) });
    } catch (e) {
      problems.push(`tls: the certificate, key or client CA is not usable (${(e as Error).message})`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return files;
}

/**
 * The gRPC port's credentials. With a client CA (auth mtls) the handshake asks for a client
 * certificate but does not require one, as on the HTTP port: the authentication interceptor refuses
 * a call without a verified certificate with a structured error, and health stays open. grpc-js
 * offers that only through its certificate-provider credentials (in `experimental`).
 */
function grpcCredentials(tls: HttpTls | undefined): grpc.ServerCredentials {
  if (tls === undefined) return grpc.ServerCredentials.createInsecure();
  const identity = { certificate: tls.cert, privateKey: tls.key };
  if (tls.clientCa === undefined)
    return grpc.ServerCredentials.createSsl(null, [{ private_key: tls.key, cert_chain: tls.cert }]);
  const ca = { caCertificate: tls.clientCa };
  // Listeners are called after they are added, as grpc-js's own file-watching provider does: the
  // credentials register the server's watcher only after adding their listeners.
  const fixed: grpc.experimental.CertificateProvider = {
    addCaCertificateListener: (listener) => queueMicrotask(() => listener(ca)),
    removeCaCertificateListener: () => {},
    addIdentityCertificateListener: (listener) => queueMicrotask(() => listener(identity)),
    removeIdentityCertificateListener: () => {},
  };
  return grpc.experimental.createCertificateProviderServerCredentials(fixed, fixed, false);
}

/** How a listener authenticates, for the start-up log line. */
function listenerSecurity(listener: ListenerConfig): string {
  return listener.tls && listener.auth !== "mtls" ? `${listener.auth}+tls` : listener.auth;
}
