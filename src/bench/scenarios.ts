// The standard benchmark's scenarios: Admit on each of Envelope's transports, the floors it is
// measured against (the same stacks answering an empty call, or Admit-sized bytes without work),
// and the peer baseline a team would otherwise build. Each names the server to start as a child
// process and the driver of its calls: @grpc/grpc-js for gRPC; for Connect and JSON over HTTP/1.1,
// autocannon in the closed loop and the project's own keep-alive driver in the open loop.
import { randomUUID } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromJson, type JsonObject, toBinary, toJsonString } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { RuntimeRequestSchema } from "../gen/envelope/v1/runtime_request_pb.js";
import { loadAutocannon, runAutocannonClosedLoop } from "./autocannon-load.js";
import { grpcUnaryCall } from "./grpc-call.js";
import { httpPostCall } from "./http-call.js";
import { type CallFn, type LoadResult, runClosedLoop } from "./load.js";

/** How one scenario's calls are made against its server. */
export interface Driver {
  /** Closed loop: `concurrency` calls in flight for `durationMs`, timed from each actual send. */
  closedLoop(concurrency: number, durationMs: number): Promise<LoadResult>;
  /** One call, for load.ts's open loop, which times each call from its intended send. */
  readonly call: CallFn;
  close(): void;
}

export interface Scenario {
  readonly name: string;
  readonly description: string;
  readonly transport: string;
  /** Arguments of `node` that start the server. */
  readonly server: readonly string[];
  /** Matches the server's line that says it listens; group 1 is the port. */
  readonly ready: RegExp;
  /** Packages beyond the runtime dependencies (development ones): missing, the scenario is skipped. */
  readonly needs: readonly string[];
  /** The driver of calls to the server on `port`, ready to measure. */
  readonly driver: (port: number) => Promise<Driver>;
}

/** Request bodies, encoded ahead so the client spends its time on the wire, not on building requests. */
export interface RequestPool {
  /** The sample Admit request, binary protobuf, with fresh ids and a live deadline each time. */
  readonly admitBinary: () => Buffer;
  /** The same request in the proto3 JSON mapping. */
  readonly admitJson: () => Buffer;
}

/**
 * Requests from the fixture, `size` encoded bodies of each form handed out in turn. Each body gets a
 * new requestId and idempotency key as it is handed out, written over the old ones in place (a UUID
 * is always 36 ASCII bytes), so every call is a new admission however long the run: a repeated id
 * would be answered as an idempotent replay, a lookup instead of an admission. `size` must exceed
 * the calls ever in flight, since a body is rewritten when its turn comes again.
 */
export function createRequestPool(fixture: JsonObject, size: number): RequestPool {
  const now = Date.now();
  const sample = fromJson(RuntimeRequestSchema, fixture);
  sample.occurredAtUtc = timestampFromMs(now);
  sample.deadlineUtc = timestampFromMs(now + 30 * 60_000);
  const task = sample.task as NonNullable<typeof sample.task>;
  sample.requestId = randomUUID();
  task.idempotencyKey = randomUUID();
  const ids = [sample.requestId, task.idempotencyKey];
  const stamped = (encoded: Uint8Array) => {
    const bodies = Array.from({ length: size }, () => Buffer.from(encoded));
    const offsets = ids.map((id) => bodies[0]?.indexOf(id, 0, "latin1") ?? -1);
    if (offsets.some((o) => o < 0)) throw new Error("the request fixture's ids are not where the pool can stamp them");
    let next = 0;
    return () => {
      const body = bodies[next++ % size] as Buffer;
      for (const offset of offsets) body.write(randomUUID(), offset, "latin1");
      return body;
    };
  };
  return {
    admitBinary: stamped(toBinary(RuntimeRequestSchema, sample)),
    admitJson: stamped(Buffer.from(toJsonString(RuntimeRequestSchema, sample))),
  };
}

/** Which of `packages` cannot be loaded from here. */
export function missingPackages(packages: readonly string[]): string[] {
  const require = createRequire(import.meta.url);
  return packages.filter((name) => {
    try {
      require.resolve(name);
      return false;
    } catch {
      return true;
    }
  });
}

/**
 * Whether the harness runs from the TypeScript sources (through tsx) rather than from dist/. The
 * servers run from the same tree as the harness.
 */
export const runsFromSource = import.meta.url.endsWith(".ts");
const script = (relative: string) => [
  ...(runsFromSource ? ["--import", "tsx"] : []),
  fileURLToPath(new URL(`${relative}${runsFromSource ? ".ts" : ".js"}`, import.meta.url)),
];

const grpcDriver =
  (path: string, body: () => Buffer) =>
  async (port: number): Promise<Driver> => {
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const call = grpcUnaryCall(client, path, body);
    return {
      call,
      closedLoop: (concurrency, durationMs) => runClosedLoop({ concurrency, durationMs, call }),
      close: () => client.close(),
    };
  };

const httpDriver =
  (path: string, contentType: string, body: () => Buffer, connections: number) =>
  async (port: number): Promise<Driver> => {
    await loadAutocannon();
    const url = `http://127.0.0.1:${port}${path}`;
    const own = httpPostCall({ url, contentType, body, connections });
    return {
      call: own.call,
      closedLoop: (concurrency, durationMs) =>
        runAutocannonClosedLoop({ url, contentType, body, connections: concurrency, durationMs }),
      close: own.close,
    };
  };

const capabilities = "/envelope.v1.AdmissionService/GetCapabilities";
const admit = "/envelope.v1.AdmissionService/Admit";
const json = "application/json";
const proto = "application/proto";
const emptyBody = () => Buffer.alloc(0);
const emptyJson = () => Buffer.from("{}");
const listening = /listening (\d+)/;
const envelopeGrpc = /"grpc":"127\.0\.0\.1:(\d+)"/;
const envelopeHttp = /"http":"127\.0\.0\.1:(\d+)"/;
const autocannon = ["autocannon"];

/** The example policy bundle, beside src/ and dist/ alike. */
const examplePolicy = fileURLToPath(new URL("../../examples/policy.yaml", import.meta.url));

/**
 * A configuration with the example policy bundle and a daily budget for every tenant, written under
 * `dataRoot`: large enough that a run never exhausts it, so every Admit reserves and none is refused.
 */
function governedConfig(dataRoot: string): string {
  const file = join(dataRoot, "governed.yaml");
  // Scenario names are listed without a data root: nothing runs then, so nothing to write.
  if (dataRoot === "") return file;
  mkdirSync(dataRoot, { recursive: true });
  const budget = { name: "bench-daily", tenant: "*", window: "day", tokens: 1e15, costUsd: 1e9 };
  writeFileSync(
    file,
    `policy:\n  file: ${JSON.stringify(examplePolicy)}\nbudgets:\n  definitions: ${JSON.stringify([budget])}\n`,
  );
  return file;
}

/**
 * Every scenario of the standard run; HTTP/1.1 ones keep up to `inflight` connections. Envelope's
 * servers keep their SQLite ledgers in directories under `dataRoot`, one per scenario.
 */
export function standardScenarios(pool: RequestPool, inflight: number, dataRoot: string): Scenario[] {
  const floor = (kind: string) => script(`./floor-server`).concat(kind);
  const serve = script("../cli/run").concat("serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0");
  const envelope = (scenario: string) => serve.concat("--data-dir", join(dataRoot, scenario));
  const http = (path: string, contentType: string, body: () => Buffer) => httpDriver(path, contentType, body, inflight);
  return [
    {
      name: "floor-grpc-js",
      description: "empty unary on a bare @grpc/grpc-js server",
      transport: "grpc",
      server: floor("grpc-js"),
      ready: listening,
      needs: [],
      driver: grpcDriver(capabilities, emptyBody),
    },
    {
      name: "floor-grpc-js-payload",
      description:
        "bare @grpc/grpc-js server answering Admit's request bytes with 940 fixed bytes: Admit's payload, no work",
      transport: "grpc",
      server: floor("grpc-js-payload"),
      ready: listening,
      needs: [],
      driver: grpcDriver(capabilities, pool.admitBinary),
    },
    {
      name: "floor-connect-node",
      description: "empty unary on a bare connect-node HTTP/2 server (gRPC protocol)",
      transport: "grpc",
      server: floor("connect-node"),
      ready: listening,
      needs: [],
      driver: grpcDriver(capabilities, emptyBody),
    },
    {
      name: "admit-grpc-port",
      description:
        "Admit with the sample request on Envelope's gRPC port (@grpc/grpc-js), recorded in the default SQLite ledger before each answer",
      transport: "grpc",
      server: envelope("admit-grpc-port"),
      ready: envelopeGrpc,
      needs: [],
      driver: grpcDriver(admit, pool.admitBinary),
    },
    {
      name: "admit-grpc-port-governed",
      description:
        "Admit as admit-grpc-port, with governance: the example policy bundle (examples/policy.yaml, 7 CEL rules) and a tenant budget reserved in the ledger's transaction (tokens, cost)",
      transport: "grpc",
      server: envelope("admit-grpc-port-governed").concat("--config", governedConfig(dataRoot)),
      ready: envelopeGrpc,
      needs: [],
      driver: grpcDriver(admit, pool.admitBinary),
    },
    {
      name: "admit-grpc-port-no-ledger",
      description:
        "Admit with the sample request on Envelope's gRPC port with no ledger (ledger.store none): the admission decision alone",
      transport: "grpc",
      server: serve.concat("--ledger", "none"),
      ready: envelopeGrpc,
      needs: [],
      driver: grpcDriver(admit, pool.admitBinary),
    },
    {
      name: "health-grpc-port",
      description: "grpc.health.v1 Check on Envelope's gRPC port: the service's own cheapest call",
      transport: "grpc",
      server: envelope("health-grpc-port"),
      ready: envelopeGrpc,
      needs: [],
      driver: grpcDriver("/grpc.health.v1.Health/Check", emptyBody),
    },
    {
      name: "admit-http-port-grpc",
      description: "Admit with the sample request over gRPC on Envelope's HTTP port (connect-node)",
      transport: "grpc-h2c-http-port",
      server: envelope("admit-http-port-grpc"),
      ready: envelopeHttp,
      needs: [],
      driver: grpcDriver(admit, pool.admitBinary),
    },
    {
      name: "floor-connect-json-http1",
      description: "empty Connect unary with a JSON body over HTTP/1.1 on a bare connect-node server",
      transport: "connect-json-http1",
      server: floor("connect-node-http1"),
      ready: listening,
      needs: autocannon,
      driver: http(capabilities, json, emptyJson),
    },
    {
      name: "admit-connect-json-http1",
      description: "Admit with the sample request as Connect JSON over HTTP/1.1 on Envelope's HTTP port",
      transport: "connect-json-http1",
      server: envelope("admit-connect-json-http1"),
      ready: envelopeHttp,
      needs: autocannon,
      driver: http(admit, json, pool.admitJson),
    },
    {
      name: "capabilities-connect-json-http1",
      description:
        "GetCapabilities as Connect JSON over HTTP/1.1 on Envelope's HTTP port: the service's own cheapest Connect call (the health check's counterpart)",
      transport: "connect-json-http1",
      server: envelope("capabilities-connect-json-http1"),
      ready: envelopeHttp,
      needs: autocannon,
      driver: http(capabilities, json, emptyJson),
    },
    {
      name: "floor-connect-proto-http1",
      description:
        "empty Connect unary with a binary (application/proto) body over HTTP/1.1 on a bare connect-node server",
      transport: "connect-proto-http1",
      server: floor("connect-node-http1"),
      ready: listening,
      needs: autocannon,
      driver: http(capabilities, proto, emptyBody),
    },
    {
      name: "admit-connect-proto-http1",
      description:
        "Admit with the sample request as Connect binary (application/proto) over HTTP/1.1 on Envelope's HTTP port",
      transport: "connect-proto-http1",
      server: envelope("admit-connect-proto-http1"),
      ready: envelopeHttp,
      needs: autocannon,
      driver: http(admit, proto, pool.admitBinary),
    },
    {
      name: "peer-fastify-ajv-http1",
      description:
        "the peer baseline: fastify validating the contract's JSON Schema with ajv and answering, JSON over HTTP/1.1",
      transport: "json-http1",
      server: script("./peer-server"),
      ready: listening,
      needs: [...autocannon, "fastify", "ajv", "ajv-formats"],
      driver: http("/admit", json, pool.admitJson),
    },
  ];
}

/** The names of the standard scenarios, in the order they run. */
export const standardScenarioNames: readonly string[] = standardScenarios(
  { admitBinary: emptyBody, admitJson: emptyJson },
  1,
  "",
).map((s) => s.name);
