// Caller authentication over real sockets, per listener and mode: static tokens, JWTs against a
// local JWKS, and mTLS with certificates made for the test. Each mode admits a valid credential and
// records its principal on the ledger's events, and refuses a missing or bad one with the
// structured authentication error; health stays open; no credential reaches a log line.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { get as httpsGet } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, defaultConfig, type EnvelopeConfig } from "../../src/config/config.js";
import { AdmissionService } from "../../src/gen/envelope/v1/admission_service_pb.js";
import { LifecycleService } from "../../src/gen/envelope/v1/lifecycle_service_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { startServer } from "../../src/server.js";
import { silentLogger } from "../../src/telemetry/log.js";
import {
  type Certificates,
  type JwtIssuer,
  type Pem,
  writeCertificates,
  writeJwks,
  writeTokensFile,
} from "../helpers/credentials.js";
import { rejection } from "../helpers/rejection.js";
import { freshRequest } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const dir = mkdtempSync(join(tmpdir(), "envelope-auth-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// openssl takes most of a second for the lot: made once, for the tests that need them.
let pki: Certificates | undefined;
const certificates = () => {
  pki ??= writeCertificates(mkdtempSync(join(dir, "pki-")));
  return pki;
};

type Port = "gRPC (grpc-js port)" | "Connect JSON (HTTP port, HTTP/1.1)" | "gRPC-Web (HTTP port, HTTP/1.1)";
const ports: readonly Port[] = ["gRPC (grpc-js port)", "Connect JSON (HTTP port, HTTP/1.1)"];

/** Admission and lifecycle clients on one port, with TLS options when the port serves TLS. */
function clients(t: TestServer, port: Port, tls?: { ca: Buffer; client?: Pem }) {
  const nodeOptions = tls === undefined ? {} : { nodeOptions: { ca: tls.ca, ...tls.client } };
  const transport: Transport =
    port === "gRPC (grpc-js port)"
      ? createGrpcTransport({ baseUrl: t.grpcUrl, ...nodeOptions })
      : port === "gRPC-Web (HTTP port, HTTP/1.1)"
        ? createGrpcWebTransport({ baseUrl: t.httpUrl, httpVersion: "1.1", ...nodeOptions })
        : createConnectTransport({ baseUrl: t.httpUrl, httpVersion: "1.1", ...nodeOptions });
  return { admission: createClient(AdmissionService, transport), lifecycle: createClient(LifecycleService, transport) };
}

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** Admits a fresh request with these call options and returns the principal on each of its events. */
async function recordedCallers(c: ReturnType<typeof clients>, options: object): Promise<string[]> {
  const { envelopeId } = await c.admission.admit(freshRequest(), options);
  const { record } = await c.lifecycle.getEnvelope({ envelopeId }, options);
  return record?.events.map((e) => e.caller) ?? [];
}

async function refused(call: Promise<unknown>, code: string) {
  const { error, envelope } = await rejection(call);
  expect(error.code).toBe(Code.Unauthenticated);
  expect(envelope.error).toMatchObject({ category: "authentication", code, retryable: false, userSafe: true });
  return envelope.error?.message ?? "";
}

describe("static tokens", () => {
  let t: TestServer;
  let tokens: Record<string, string>;
  beforeAll(async () => {
    const written = writeTokensFile(dir, ["ci", "ops"]);
    tokens = written.tokens;
    t = await startTestServer({
      config: { grpc: { auth: "token" }, http: { auth: "token" }, tokens: { file: written.file } },
    });
  });
  afterAll(() => t.close());

  // gRPC-Web too: its framing gets its own placeholder body when a call is refused.
  describe.each([...ports, "gRPC-Web (HTTP port, HTTP/1.1)" as const])("on the %s", (port) => {
    it("admits a caller with a valid token and records token:NAME on every event it causes", async () => {
      const c = clients(t, port);
      expect(await recordedCallers(c, bearer(tokens.ci as string))).toEqual(["token:ci", "token:ci"]);
      const { envelopeId } = await c.admission.admit(freshRequest(), bearer(tokens.ci as string));
      const started = await c.lifecycle.start({ envelopeId }, bearer(tokens.ops as string));
      expect(started.event?.caller).toBe("token:ops");
    });

    it.each([
      ["no authorization header", undefined, "CREDENTIALS_MISSING"],
      ["an unknown token", "Bearer envl_unknownTokenThatIsLongEnough0123456789", "TOKEN_INVALID"],
      ["another scheme", "Basic Y2k6c2VjcmV0", "TOKEN_INVALID"],
      ["a bare token", "envl_bareTokenWithoutTheBearerScheme0123456789", "TOKEN_INVALID"],
    ])("refuses %s with the structured error, echoing nothing", async (_, authorization, code) => {
      const c = clients(t, port);
      const options = authorization === undefined ? {} : { headers: { authorization } };
      const message = await refused(c.admission.admit(freshRequest(), options), code);
      if (authorization !== undefined) expect(message).not.toContain(authorization.split(" ").pop());
    });

    it("guards every method: capabilities and the lifecycle service too", async () => {
      const c = clients(t, port);
      await refused(c.admission.getCapabilities({}), "CREDENTIALS_MISSING");
      await refused(c.lifecycle.getEnvelope({ envelopeId: "env_01M827SFG193WQ3ABACPNCF6PQ" }), "CREDENTIALS_MISSING");
      const stream = c.lifecycle.watchEnvelopes({ fromBeginning: true });
      await refused(stream[Symbol.asyncIterator]().next(), "CREDENTIALS_MISSING");
      const capabilities = await c.admission.getCapabilities({}, bearer(tokens.ci as string));
      expect(capabilities.contractVersion).toBe("2.1");
    });
  });

  it("refuses before decoding: a malformed body without a token is unauthenticated, not invalid", async () => {
    const response = await fetch(new URL("/envelope.v1.AdmissionService/Admit", t.httpUrl), {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: new Uint8Array([0xff, 0xff, 0xff]),
    });
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ code: "unauthenticated" });
  });

  it("leaves health open: gRPC health on the gRPC port, /healthz and /readyz on the HTTP port", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: t.grpcUrl }));
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    for (const path of ["/healthz", "/readyz"]) expect((await fetch(new URL(path, t.httpUrl))).status).toBe(200);
  });

  it("logs each refusal with its code, and never a credential", async () => {
    const rejected = "envl_thisTokenMustNeverBeLogged0123456789abcdef";
    for (const port of ports) {
      await refused(clients(t, port).admission.admit(freshRequest(), bearer(rejected)), "TOKEN_INVALID");
    }
    const lines = t.logs.map((l) => JSON.stringify(l));
    expect(lines.filter((l) => l.includes(rejected))).toEqual([]);
    for (const token of Object.values(tokens)) expect(lines.filter((l) => l.includes(token))).toEqual([]);
    const refusals = t.logs.filter((l) => l.event === "call.unauthenticated");
    expect(refusals).toContainEqual(expect.objectContaining({ port: "grpc", code: "TOKEN_INVALID" }));
    expect(refusals).toContainEqual(expect.objectContaining({ port: "http", code: "TOKEN_INVALID" }));
  });

  it("does not warn of development mode when every listener authenticates", () => {
    expect(t.logs.filter((l) => l.event === "server.unauthenticated")).toEqual([]);
  });
});

describe("JWT against a local JWKS", () => {
  const issuer = "https://idp.envelope.test";
  const audience = "envelope";
  let t: TestServer;
  let idp: JwtIssuer;
  const nowS = () => Math.floor(Date.now() / 1000);
  const claims = (extra: Record<string, unknown> = {}) => ({
    iss: issuer,
    aud: audience,
    sub: "svc-a",
    iat: nowS(),
    exp: nowS() + 300,
    scope: "admit read",
    ...extra,
  });
  beforeAll(async () => {
    idp = await writeJwks(dir);
    t = await startTestServer({
      config: {
        grpc: { auth: "jwt" },
        http: { auth: "jwt" },
        jwt: { jwksFile: idp.jwksFile, jwksUrl: "", issuer, audience, clockSkewMs: 30_000 },
      },
    });
  });
  afterAll(() => t.close());

  describe.each(ports)("on the %s", (port) => {
    it("admits a valid token and records jwt:ISSUER/SUBJECT", async () => {
      const token = await idp.sign(claims());
      expect(await recordedCallers(clients(t, port), bearer(token))).toEqual([
        "jwt:https://idp.envelope.test/svc-a",
        "jwt:https://idp.envelope.test/svc-a",
      ]);
    });

    it("accepts a token that expired within the clock skew", async () => {
      const token = await idp.sign(claims({ exp: nowS() - 10 }));
      await expect(clients(t, port).admission.admit(freshRequest(), bearer(token))).resolves.toBeDefined();
    });

    it.each([
      ["expired beyond the clock skew", { exp: -120 }, "TOKEN_EXPIRED", /expired/],
      ["for another audience", { aud: "someone-else" }, "TOKEN_INVALID", /"aud"/],
      ["from another issuer", { iss: "https://evil.example" }, "TOKEN_INVALID", /"iss"/],
      ["not yet valid beyond the clock skew", { nbf: 120 }, "TOKEN_INVALID", /"nbf"/],
      ["without a subject", { sub: undefined }, "TOKEN_INVALID", /"sub" claim is missing/],
      ["without an expiry", { exp: undefined }, "TOKEN_INVALID", /"exp" claim is missing/],
    ])("refuses a token %s", async (_, change, code, message) => {
      const relative = Object.fromEntries(
        Object.entries(change).map(([k, v]) => [
          k,
          (k === "exp" || k === "nbf") && typeof v === "number" ? nowS() + v : v,
        ]),
      );
      const token = await idp.sign(claims(relative));
      expect(await refused(clients(t, port).admission.admit(freshRequest(), bearer(token)), code)).toMatch(message);
    });

    it("refuses a token signed by a key outside the JWKS, and one that is not a JWT", async () => {
      const forged = await idp.sign(claims(), { foreign: true });
      const c = clients(t, port);
      expect(await refused(c.admission.admit(freshRequest(), bearer(forged)), "TOKEN_INVALID")).toMatch(/signature/);
      await refused(c.admission.admit(freshRequest(), bearer("not.a.jwt")), "TOKEN_INVALID");
      await refused(c.admission.admit(freshRequest()), "CREDENTIALS_MISSING");
    });
  });
});

describe("mTLS", () => {
  let t: TestServer;
  let certs: Certificates;
  beforeAll(async () => {
    certs = certificates();
    t = await startTestServer({
      config: {
        grpc: { auth: "mtls" },
        http: { auth: "mtls" },
        tls: { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile, clientCaFile: certs.caFile },
      },
    });
  });
  afterAll(() => t.close());

  describe.each(ports)("on the %s", (port) => {
    it("admits a client certificate from the client CA and records mtls:URI-SAN, else mtls:CN", async () => {
      const c = clients(t, port, { ca: certs.ca, client: certs.client });
      expect(await recordedCallers(c, {})).toEqual([
        "mtls:spiffe://envelope.test/ci",
        "mtls:spiffe://envelope.test/ci",
      ]);
      const cnOnly = clients(t, port, { ca: certs.ca, client: certs.clientCnOnly });
      expect(await recordedCallers(cnOnly, {})).toEqual(["mtls:batch-runner", "mtls:batch-runner"]);
    });

    it("refuses a client without a certificate, and one with a certificate from another CA", async () => {
      await refused(clients(t, port, { ca: certs.ca }).admission.admit(freshRequest()), "CERTIFICATE_REJECTED");
      const stranger = clients(t, port, { ca: certs.ca, client: certs.stranger });
      await refused(stranger.admission.admit(freshRequest()), "CERTIFICATE_REJECTED");
    });
  });

  it("tells on the HTTP port why a certificate was refused", async () => {
    const none = clients(t, "Connect JSON (HTTP port, HTTP/1.1)", { ca: certs.ca });
    expect(await refused(none.admission.admit(freshRequest()), "CERTIFICATE_REJECTED")).toMatch(/presented no/);
    const stranger = clients(t, "Connect JSON (HTTP port, HTTP/1.1)", { ca: certs.ca, client: certs.stranger });
    expect(await refused(stranger.admission.admit(freshRequest()), "CERTIFICATE_REJECTED")).toMatch(/not accepted/);
  });

  it("serves Connect over HTTP/2 with TLS (ALPN) as well as HTTP/1.1", async () => {
    const transport = createConnectTransport({
      baseUrl: t.httpUrl,
      httpVersion: "2",
      useBinaryFormat: true,
      nodeOptions: { ca: certs.ca, ...certs.client },
    });
    const admitted = await createClient(AdmissionService, transport).admit(freshRequest());
    expect(admitted.envelopeId).toMatch(/^env_/);
  });

  it("leaves health open to clients without a certificate", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: t.grpcUrl, nodeOptions: { ca: certs.ca } }));
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const status = await new Promise<number | undefined>((resolve, reject) =>
      httpsGet(new URL("/readyz", t.httpUrl), { ca: certs.ca }, (res) => {
        res.resume();
        resolve(res.statusCode);
      }).on("error", reject),
    );
    expect(status).toBe(200);
  });
});

describe("start-up", () => {
  const base = (overrides: Partial<EnvelopeConfig>): EnvelopeConfig => ({
    ...defaultConfig,
    grpc: { ...defaultConfig.grpc, listen: { host: "127.0.0.1", port: 0 } },
    http: { ...defaultConfig.http, listen: { host: "127.0.0.1", port: 0 } },
    ledger: { ...defaultConfig.ledger, store: "none" },
    ...overrides,
  });

  it("on loopback without authentication, warns of unauthenticated development mode", async () => {
    const t = await startTestServer({ config: { ledger: { ...defaultConfig.ledger, store: "none" } } });
    await t.close();
    const warning = t.logs.find((l) => l.event === "server.unauthenticated");
    expect(warning).toMatchObject({
      level: "warn",
      message: expect.stringMatching(/^unauthenticated development mode/),
    });
    expect(warning?.listeners).toHaveLength(2);
  });

  it("listens beyond loopback when the listener authenticates; refuses the other listener without", async () => {
    const { file } = writeTokensFile(mkdtempSync(join(dir, "tokens-")), ["ci"]);
    const exposed = { listen: { host: "0.0.0.0", port: 0 }, auth: "token" as const, tls: false };
    const server = await startServer(base({ grpc: exposed, http: exposed, tokens: { file } }), { log: silentLogger });
    await server.close();
    const half = startServer(base({ grpc: exposed, http: { ...exposed, auth: "none" }, tokens: { file } }), {
      log: silentLogger,
    });
    await expect(half).rejects.toThrow(/http\.listen: refusing to listen on 0\.0\.0\.0.*set http\.auth/);
  });

  it("serves token authentication over TLS when the listener's tls is on", async () => {
    const certs = certificates();
    const { file, tokens } = writeTokensFile(mkdtempSync(join(dir, "tokens-")), ["ci"]);
    const t = await startTestServer({
      config: {
        grpc: { auth: "token", tls: true },
        tokens: { file },
        tls: { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile, clientCaFile: "" },
      },
    });
    try {
      const c = clients(t, "gRPC (grpc-js port)", { ca: certs.ca });
      expect(await recordedCallers(c, bearer(tokens.ci as string))).toEqual(["token:ci", "token:ci"]);
    } finally {
      await t.close();
    }
  });

  it.each([
    [
      "an unreadable tokens file",
      "token",
      (d: string) => ({ tokens: { file: join(d, "missing") } }),
      /tokens\.file: cannot read/,
    ],
    [
      "a tokens file holding a plaintext token",
      "token",
      (d: string) => {
        writeFileSync(join(d, "plain.yaml"), "ci: envl_plaintextTokenIsNotAHash\n");
        return { tokens: { file: join(d, "plain.yaml") } };
      },
      /token ci must map to "sha256:"/,
    ],
    [
      "a JWKS file that is not JSON",
      "jwt",
      (d: string) => {
        writeFileSync(join(d, "jwks.txt"), "keys");
        return { jwt: { ...defaultConfig.jwt, jwksFile: join(d, "jwks.txt"), issuer: "i", audience: "a" } };
      },
      /jwt\.jwksFile: cannot read/,
    ],
    [
      "a certificate that is not PEM",
      "mtls",
      (d: string) => {
        writeFileSync(join(d, "bad.pem"), "not a certificate");
        const pem = join(d, "bad.pem");
        return { tls: { certFile: pem, keyFile: pem, clientCaFile: pem } };
      },
      /tls: the certificate, key or client CA is not usable/,
    ],
  ] as const)("refuses to start with %s, naming the key", async (_, auth, config, message) => {
    const d = mkdtempSync(join(dir, "bad-"));
    const listener = { ...defaultConfig.grpc, listen: { host: "127.0.0.1", port: 0 }, auth };
    const start = startServer(base({ grpc: listener, ...config(d) }), { log: silentLogger });
    await expect(start).rejects.toBeInstanceOf(ConfigError);
    await expect(start).rejects.toThrow(message);
  });
});
