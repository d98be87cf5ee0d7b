// What operators and tools rely on: gRPC health and reflection, the HTTP health routes, draining on
// shutdown, refusing to expose an unauthenticated port, and internal failures that leak nothing.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, defaultConfig } from "../../src/config/config.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { startServer } from "../../src/server.js";
import { silentLogger } from "../../src/telemetry/log.js";
import { freshRequest, freshRequestJson } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const run = promisify(execFile);
const buf = new URL("../../node_modules/.bin/buf", import.meta.url).pathname;

describe("health and reflection", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t.close();
  });

  it("answers grpc.health.v1 Check, and turns NOT_SERVING (and /readyz 503) when draining", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: t.grpcUrl }));
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect((await health.check({ service: "envelope.v1.AdmissionService" })).status).toBe(
      HealthCheckResponse_ServingStatus.SERVING,
    );
    expect((await fetch(new URL("/readyz", t.httpUrl))).status).toBe(200);

    t.server.setServing(false);
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
    expect((await fetch(new URL("/readyz", t.httpUrl))).status).toBe(503);
    // Liveness stays up: the process is fine, it is only leaving the pool.
    expect((await fetch(new URL("/healthz", t.httpUrl))).status).toBe(200);
    t.server.setServing(true);
  });

  it("lets buf curl list the services through reflection", async () => {
    const { stdout } = await run(buf, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "--list-services",
      t.grpcUrl,
    ]);
    expect(stdout.trim().split("\n")).toEqual(
      expect.arrayContaining(["envelope.v1.AdmissionService", "grpc.health.v1.Health"]),
    );
  });

  it("lets buf curl call Admit with nothing but reflection", async () => {
    const { stdout } = await run(buf, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-d",
      JSON.stringify(freshRequestJson()),
      `${t.grpcUrl}/envelope.v1.AdmissionService/Admit`,
    ]);
    const envelope = JSON.parse(stdout);
    expect(envelope.granted).toMatchObject({ tokens: 4000, steps: 6 });
    expect(envelope.state).toBe("LIFECYCLE_STATE_ADMITTED");
  });

  it("answers unknown HTTP routes with 404", async () => {
    expect((await fetch(new URL("/nope", t.httpUrl))).status).toBe(404);
  });
});

describe("security by default", () => {
  it.each([
    ["grpc", "0.0.0.0"],
    ["http", "0.0.0.0"],
    ["grpc", "::"],
  ] as const)("refuses to listen on a non-loopback %s address (%s) without authentication", async (which, host) => {
    const config = {
      ...defaultConfig,
      grpc: { ...defaultConfig.grpc, listen: { host: "127.0.0.1", port: 0 } },
      http: { ...defaultConfig.http, listen: { host: "127.0.0.1", port: 0 } },
      [which]: { ...defaultConfig[which], listen: { host, port: 0 } },
    };
    const start = startServer(config, { log: silentLogger });
    await expect(start).rejects.toBeInstanceOf(ConfigError);
    await expect(start).rejects.toThrow(/not a loopback address/);
  });
});

describe("unexpected failures", () => {
  it("answer INTERNAL with a log reference and never the failure's text", async () => {
    const t = await startTestServer({
      recorder: {
        async record() {
          throw new Error("disk on fire at /var/secret/path");
        },
      },
    });
    try {
      for (const client of [t.clients["gRPC (grpc-js port)"], t.clients["Connect JSON over HTTP/1.1"]]) {
        const error = await client.admit(freshRequest()).then(
          () => expect.fail("expected failure"),
          (e: unknown) => ConnectError.from(e),
        );
        expect(error.code).toBe(Code.Internal);
        expect(error.rawMessage).toMatch(/^internal error; reference [0-9a-f-]{36}$/);
        expect(error.rawMessage).not.toContain("secret");
        const reference = error.rawMessage.split(" ").pop();
        expect(t.logs).toContainEqual(expect.objectContaining({ event: "call.failed", reference }));
      }
    } finally {
      await t.close();
    }
  });
});
