// Configuration (defaults < YAML file < ENVELOPE_* environment < flags) and the error-category table.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  ConfigError,
  configKeys,
  defaultConfig,
  envName,
  isLoopback,
  type LoadOptions,
  loadConfig,
  parseListenAddress,
} from "../../src/config/config.js";
import { categoryRule, createErrorEnvelope, errorCategories } from "../../src/core/errors.js";
import { ExecutionKind } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import { readFixture } from "../helpers/requests.js";

const dir = mkdtempSync(join(tmpdir(), "envelope-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let fileCount = 0;
function yamlFile(text: string): string {
  const file = join(dir, `config-${++fileCount}.yaml`);
  writeFileSync(file, text);
  return file;
}

/** The ConfigError thrown by loadConfig, or a failure when it does not throw one. */
function configError(options: LoadOptions): ConfigError {
  try {
    loadConfig(options);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig: defaults", () => {
  it("with no file, env or flags, is the default configuration", () => {
    expect(loadConfig()).toEqual(defaultConfig);
    expect(loadConfig({ env: {}, overrides: {} })).toEqual(defaultConfig);
  });

  it("listens on loopback only by default", () => {
    const c = loadConfig();
    expect(isLoopback(c.grpc.listen.host)).toBe(true);
    expect(isLoopback(c.http.listen.host)).toBe(true);
  });

  it("ignores variables outside the ENVELOPE_ prefix, and ENVELOPE_CONFIG (read by the CLI)", () => {
    expect(loadConfig({ env: { PATH: "/bin", HOME: "/root", ENVELOPE_CONFIG: "/x.yaml" } })).toEqual(defaultConfig);
  });

  it("returns a configuration independent of the defaults", () => {
    const c = loadConfig({ overrides: { "limits.maxStepsPerRequest": 3 } });
    expect(c.limits.maxStepsPerRequest).toBe(3);
    expect(defaultConfig.limits.maxStepsPerRequest).not.toBe(3);
    expect(loadConfig().limits.maxStepsPerRequest).toBe(defaultConfig.limits.maxStepsPerRequest);
  });
});

describe("loadConfig: YAML file", () => {
  it("overrides limits (durations, dollars → micro-dollars, resources) and listen addresses", () => {
    const file = yamlFile(
      [
        "grpc:",
        '  listen: "[::1]:0"',
        "http:",
        "  listen: 127.0.0.1:0",
        "limits:",
        "  maxDeadline: 5m",
        "  maxClockSkew: 30s",
        "  maxCostUsdPerRequest: 2.5",
        "  maxTokensPerRequest: 1000",
        "  maxResourcesPerRequest:",
        "    gpu: 2",
        "    tpu: 4",
        "trace:",
        "  defaultContentMode: redacted",
        "executionKinds:",
        "  fallback: inference",
        "shutdown:",
        "  drain: 1500ms",
        "",
      ].join("\n"),
    );
    const c = loadConfig({ file });
    expect(c.grpc.listen).toEqual({ host: "::1", port: 0 });
    expect(c.http.listen).toEqual({ host: "127.0.0.1", port: 0 });
    expect(c.limits.maxDeadlineMs).toBe(5 * 60 * 1000);
    expect(c.limits.maxClockSkewMs).toBe(30 * 1000);
    expect(c.limits.maxCostUsdMicrosPerRequest).toBe(2_500_000);
    expect(c.limits.maxTokensPerRequest).toBe(1000);
    expect(c.limits.maxResourcesPerRequest).toEqual({ gpu: 2, tpu: 4 });
    expect(c.trace.defaultContentMode).toBe("redacted");
    expect(c.executionKinds.fallback).toBe(ExecutionKind.INFERENCE);
    expect(c.shutdown.drainMs).toBe(1500);
    // Untouched keys keep their defaults.
    expect(c.limits.maxStepsPerRequest).toBe(defaultConfig.limits.maxStepsPerRequest);
    expect(c.limits.maxMessageBytes).toBe(defaultConfig.limits.maxMessageBytes);
  });

  it.each([
    ["1000ms", 1000],
    ["30s", 30_000],
    ["1.5s", 1500],
    ["5m", 300_000],
    ["24h", 86_400_000],
  ])("duration %s is %d ms", (text, ms) => {
    expect(loadConfig({ file: yamlFile(`limits:\n  maxDeadline: ${text}\n`) }).limits.maxDeadlineMs).toBe(ms);
  });

  it.each(["0s", "500ms"])(
    "refuses a limit duration under one second (%s), which would refuse every request",
    (text) => {
      expect(() => loadConfig({ file: yamlFile(`limits:\n  maxDeadline: ${text}\n`) })).toThrow(
        /limits\.maxDeadline.*at least 1s/,
      );
    },
  );

  it("an empty file is the defaults", () => {
    expect(loadConfig({ file: yamlFile("") })).toEqual(defaultConfig);
  });

  it("an unknown key is a ConfigError naming the key", () => {
    const e = configError({ file: yamlFile("limits:\n  maxDedline: 5m\n") });
    expect(e.message).toContain("limits.maxDedline");
    expect(e.message).toContain("unknown key");
    expect(e.message).toContain("maxDeadline"); // the near miss is suggested
  });

  it("an unknown section is a ConfigError naming it", () => {
    expect(configError({ file: yamlFile("limitz:\n  maxDeadline: 5m\n") }).message).toContain("limitz.maxDeadline");
  });

  it.each([
    ["limits:\n  maxDeadline: five\n", "limits.maxDeadline", "duration"],
    ["limits:\n  maxStepsPerRequest: 0\n", "limits.maxStepsPerRequest", "integer"],
    ["limits:\n  maxCostUsdPerRequest: -1\n", "limits.maxCostUsdPerRequest", "dollars"],
    ["grpc:\n  listen: localhost\n", "grpc.listen", "host:port"],
    ["log:\n  level: loud\n", "log.level", "one of"],
    ["limits:\n  maxResourcesPerRequest:\n    GPU: 1\n", "limits.maxResourcesPerRequest", "resource name"],
  ])("a bad value names the key and the expected form: %j", (text, key, expected) => {
    const e = configError({ file: yamlFile(text) });
    expect(e.message).toContain(key);
    expect(e.message).toContain(expected);
  });

  it("reports every problem at once", () => {
    const e = configError({ file: yamlFile("limits:\n  maxDeadline: five\n  bogus: 1\nlog:\n  level: loud\n") });
    expect(e.problems).toHaveLength(3);
    expect(e.message).toContain("limits.maxDeadline");
    expect(e.message).toContain("limits.bogus");
    expect(e.message).toContain("log.level");
  });

  it("a missing file is a ConfigError naming it", () => {
    const file = join(dir, "does-not-exist.yaml");
    expect(configError({ file }).message).toContain(file);
  });

  it("a YAML syntax error or a duplicate key is a ConfigError", () => {
    expect(configError({ file: yamlFile("limits: [\n") })).toBeInstanceOf(ConfigError);
    expect(configError({ file: yamlFile("limits:\n  maxDeadline: 5m\n  maxDeadline: 6m\n") })).toBeInstanceOf(
      ConfigError,
    );
  });
});

describe("loadConfig: environment and flags", () => {
  it("envName maps a key to its variable", () => {
    expect(envName("limits.maxDeadline")).toBe("ENVELOPE_LIMITS_MAX_DEADLINE");
    expect(envName("grpc.listen")).toBe("ENVELOPE_GRPC_LISTEN");
    expect(envName("limits.maxCostUsdPerRequest")).toBe("ENVELOPE_LIMITS_MAX_COST_USD_PER_REQUEST");
  });

  it("every key's variable is accepted", () => {
    // Names are unique, so no two keys share a variable.
    expect(new Set(configKeys.map(envName)).size).toBe(configKeys.length);
    expect(loadConfig({ env: { [envName("log.level")]: "debug" } }).log.level).toBe("debug");
  });

  it("an unknown ENVELOPE_ variable is an error naming it", () => {
    const e = configError({ env: { ENVELOPE_LIMITS_MAX_DEADLNE: "5m" } });
    expect(e.message).toContain("ENVELOPE_LIMITS_MAX_DEADLNE");
  });

  it("a bad value in the environment names the variable", () => {
    const e = configError({ env: { ENVELOPE_LIMITS_MAX_DEADLINE: "soon" } });
    expect(e.message).toContain("ENVELOPE_LIMITS_MAX_DEADLINE");
    expect(e.message).toContain("limits.maxDeadline");
  });

  it("the environment overrides the file", () => {
    const file = yamlFile("limits:\n  maxStepsPerRequest: 5\n  maxTokensPerRequest: 50\n");
    const c = loadConfig({ file, env: { ENVELOPE_LIMITS_MAX_STEPS_PER_REQUEST: "7" } });
    expect(c.limits.maxStepsPerRequest).toBe(7);
    expect(c.limits.maxTokensPerRequest).toBe(50);
  });

  it("overrides (flags) override the environment and the file", () => {
    const file = yamlFile("limits:\n  maxStepsPerRequest: 5\n");
    const c = loadConfig({
      file,
      env: { ENVELOPE_LIMITS_MAX_STEPS_PER_REQUEST: "7", ENVELOPE_HTTP_LISTEN: "127.0.0.1:9000" },
      overrides: { "limits.maxStepsPerRequest": 9, "http.listen": "[::1]:0" },
    });
    expect(c.limits.maxStepsPerRequest).toBe(9);
    expect(c.http.listen).toEqual({ host: "::1", port: 0 });
  });

  it("an unknown override key is an error naming it", () => {
    expect(configError({ overrides: { "limits.nope": 1 } }).message).toContain("limits.nope");
  });

  it("limits.maxResourcesPerRequest takes JSON in the environment", () => {
    const c = loadConfig({ env: { ENVELOPE_LIMITS_MAX_RESOURCES_PER_REQUEST: '{"gpu":3,"tpu":1}' } });
    expect(c.limits.maxResourcesPerRequest).toEqual({ gpu: 3, tpu: 1 });
  });

  it("limits.maxResourcesPerRequest that is not a JSON map is an error naming the variable", () => {
    const e = configError({ env: { ENVELOPE_LIMITS_MAX_RESOURCES_PER_REQUEST: "gpu=3" } });
    expect(e.message).toContain("ENVELOPE_LIMITS_MAX_RESOURCES_PER_REQUEST");
  });

  it("cost from the environment is dollars, converted to micro-dollars", () => {
    const c = loadConfig({ env: { ENVELOPE_LIMITS_MAX_COST_USD_PER_REQUEST: "0.25" } });
    expect(c.limits.maxCostUsdMicrosPerRequest).toBe(250_000);
  });

  it("maxTaskInputBytes greater than maxMessageBytes is rejected; equal is accepted", () => {
    const e = configError({ overrides: { "limits.maxTaskInputBytes": 4096, "limits.maxMessageBytes": 2048 } });
    expect(e.message).toContain("limits.maxTaskInputBytes");
    expect(e.message).toContain("limits.maxMessageBytes");
    // Raising only the task input above the default message size is caught too.
    const over = defaultConfig.limits.maxMessageBytes + 1;
    expect(configError({ env: { ENVELOPE_LIMITS_MAX_TASK_INPUT_BYTES: String(over) } })).toBeInstanceOf(ConfigError);
    const c = loadConfig({ overrides: { "limits.maxTaskInputBytes": 2048, "limits.maxMessageBytes": 2048 } });
    expect(c.limits.maxTaskInputBytes).toBe(2048);
  });
});

describe("parseListenAddress", () => {
  it.each([
    ["127.0.0.1:50051", { host: "127.0.0.1", port: 50051 }],
    ["[::1]:0", { host: "::1", port: 0 }],
    ["[::1]:8080", { host: "::1", port: 8080 }],
    ["localhost:8080", { host: "localhost", port: 8080 }],
    ["0.0.0.0:65535", { host: "0.0.0.0", port: 65535 }],
  ])("%s", (text, expected) => {
    expect(parseListenAddress(text)).toEqual(expected);
  });

  it.each(["::1:80", "[::1]", "127.0.0.1", "host:65536", "host:-1", ":80", "a b:1", "host:", "[]:80", ""])(
    "%j is not an address",
    (text) => {
      expect(parseListenAddress(text)).toBeUndefined();
    },
  );
});

describe("isLoopback", () => {
  it.each(["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "localhost"])("%s is loopback", (host) => {
    expect(isLoopback(host)).toBe(true);
  });

  it.each(["0.0.0.0", "::", "", "128.0.0.1", "10.0.0.1", "127.0.0.1.nip.io", "localhost.example.com", "1127.0.0.1"])(
    "%j is not loopback",
    (host) => {
      expect(isLoopback(host)).toBe(false);
    },
  );
});

// --- The error-category table ------------------------------------------------------------------

/** The families the runtime contract lists ("Stable categories separate validation, ..."). */
const contractFamilies = [
  "validation",
  "authentication",
  "authorization",
  "policy",
  "capacity",
  "dependency",
  "model",
  "tool",
  "timeout",
  "cancellation",
  "internal",
];

describe("error categories", () => {
  it.each(contractFamilies)("%s has its own row", (family) => {
    const row = errorCategories.find((r) => r.category === family);
    expect(row).toBeDefined();
    expect(categoryRule(family)).toBe(row);
    expect(row?.grpcCode).toMatch(/^[A-Z_]+$/);
    expect(row?.description).not.toBe("");
  });

  it("has one row per category", () => {
    const names = errorCategories.map((r) => r.category);
    expect(new Set(names).size).toBe(names.length);
  });

  it('"tool.ambiguous-outcome" is UNKNOWN and not retryable', () => {
    const row = categoryRule("tool.ambiguous-outcome");
    expect(row.category).toBe("tool.ambiguous-outcome");
    expect(row.grpcCode).toBe("UNKNOWN");
    expect(row.retryable).toBe(false);
  });

  it("a timeout is not automatically retryable (the contract: side effects may have happened)", () => {
    expect(categoryRule("timeout").retryable).toBe(false);
  });

  it('"dependency.unavailable" falls back to the dependency row', () => {
    expect(categoryRule("dependency.unavailable")).toBe(categoryRule("dependency"));
    expect(categoryRule("dependency.unavailable").category).toBe("dependency");
  });

  it.each(["bogus", "bogus.sub", "", ".validation", "validationx", "Validation"])(
    "%j falls back to internal",
    (category) => {
      expect(categoryRule(category).category).toBe("internal");
    },
  );

  it("validation is INVALID_ARGUMENT and not retryable; capacity and dependency are retryable", () => {
    expect(categoryRule("validation")).toMatchObject({ grpcCode: "INVALID_ARGUMENT", retryable: false });
    expect(categoryRule("capacity").retryable).toBe(true);
    expect(categoryRule("dependency").retryable).toBe(true);
  });

  it("createErrorEnvelope takes retryable from the table unless told otherwise", () => {
    const fromTable = createErrorEnvelope("2.0", { category: "dependency.unavailable", code: "X", message: "m" });
    expect(fromTable.status).toBe("failed");
    expect(fromTable.error?.retryable).toBe(true);
    const overridden = createErrorEnvelope("2.0", {
      category: "dependency.unavailable",
      code: "X",
      message: "m",
      retryable: false,
    });
    expect(overridden.error?.retryable).toBe(false);
  });

  it("agrees with the contract's sample error envelope", () => {
    const sample = readFixture("seed/error-envelope.json");
    const error = sample.error as { category: string; retryable: boolean };
    expect(categoryRule(error.category).category).toBe(error.category);
    expect(categoryRule(error.category).retryable).toBe(error.retryable);
  });
});

describe("loadConfig: ledger", () => {
  it("defaults to a SQLite ledger under ./envelope-data that survives a process crash", () => {
    expect(loadConfig().ledger).toMatchObject({ store: "sqlite", dataDir: "envelope-data", durability: "process" });
  });

  it("takes the data directory from ENVELOPE_DATA_DIR, and the flag over it", () => {
    expect(loadConfig({ env: { ENVELOPE_DATA_DIR: "/var/lib/envelope" } }).ledger.dataDir).toBe("/var/lib/envelope");
    const c = loadConfig({ env: { ENVELOPE_DATA_DIR: "/a" }, overrides: { "ledger.dataDir": "/b" } });
    expect(c.ledger.dataDir).toBe("/b");
  });

  it("requires a PostgreSQL URL for the postgres store, and a postgres: URL at that", () => {
    expect(configError({ env: { ENVELOPE_LEDGER_STORE: "postgres" } }).message).toContain(
      "ledger.postgresUrl: required when ledger.store is postgres",
    );
    expect(configError({ env: { ENVELOPE_LEDGER_POSTGRES_URL: "mysql://x" } }).message).toContain(
      "ENVELOPE_LEDGER_POSTGRES_URL",
    );
    const c = loadConfig({
      env: { ENVELOPE_LEDGER_STORE: "postgres", ENVELOPE_LEDGER_POSTGRES_URL: "postgres://u:p@127.0.0.1/db" },
    });
    expect(c.ledger.postgresUrl).toBe("postgres://u:p@127.0.0.1/db");
  });

  it("reads retention in days, or forever, and refuses less than a minute", () => {
    expect(loadConfig({ overrides: { "ledger.retention": "90d" } }).ledger.retentionMs).toBe(90 * 86_400_000);
    expect(loadConfig({ overrides: { "ledger.retention": "forever" } }).ledger.retentionMs).toBe(0);
    expect(configError({ overrides: { "ledger.retention": "5s" } }).message).toContain("ledger.retention");
  });
});

describe("loadConfig: caller authentication", () => {
  it("leaves both listeners unauthenticated and without TLS by default", () => {
    const c = loadConfig();
    expect(c.grpc).toMatchObject({ auth: "none", tls: false });
    expect(c.http).toMatchObject({ auth: "none", tls: false });
    expect(c.jwt.clockSkewMs).toBe(30_000);
  });

  it("reads each listener's mode and the sections it needs from the file", () => {
    const file = yamlFile(
      [
        "grpc:",
        "  listen: 0.0.0.0:50051",
        "  auth: jwt",
        "  tls: true",
        "http:",
        "  auth: mtls",
        "jwt:",
        "  jwksUrl: https://idp.example.com/.well-known/jwks.json",
        "  issuer: https://idp.example.com/",
        "  audience: envelope",
        "  clockSkew: 10s",
        "tls:",
        "  certFile: /etc/envelope/server.crt",
        "  keyFile: /etc/envelope/server.key",
        "  clientCaFile: /etc/envelope/clients-ca.crt",
        "",
      ].join("\n"),
    );
    const c = loadConfig({ file });
    expect(c.grpc).toEqual({ listen: { host: "0.0.0.0", port: 50051 }, auth: "jwt", tls: true });
    expect(c.http).toMatchObject({ auth: "mtls", tls: false });
    expect(c.jwt).toEqual({
      jwksFile: "",
      jwksUrl: "https://idp.example.com/.well-known/jwks.json",
      issuer: "https://idp.example.com/",
      audience: "envelope",
      clockSkewMs: 10_000,
    });
    expect(c.tls.clientCaFile).toBe("/etc/envelope/clients-ca.crt");
  });

  it("takes every key from its environment variable", () => {
    const c = loadConfig({
      env: {
        ENVELOPE_GRPC_AUTH: "token",
        ENVELOPE_HTTP_AUTH: "token",
        ENVELOPE_HTTP_TLS: "true",
        ENVELOPE_TOKENS_FILE: "/run/secrets/tokens",
        ENVELOPE_TLS_CERT_FILE: "/c.pem",
        ENVELOPE_TLS_KEY_FILE: "/k.pem",
      },
    });
    expect(c.grpc.auth).toBe("token");
    expect(c.http).toMatchObject({ auth: "token", tls: true });
    expect(c.tokens.file).toBe("/run/secrets/tokens");
    expect(envName("tls.clientCaFile")).toBe("ENVELOPE_TLS_CLIENT_CA_FILE");
    expect(envName("jwt.jwksUrl")).toBe("ENVELOPE_JWT_JWKS_URL");
  });

  it.each([
    [{ "grpc.auth": "basic" }, "grpc.auth", "one of none, token, jwt, mtls"],
    [{ "http.tls": "yes" }, "http.tls", "true or false"],
    [{ "jwt.jwksUrl": "ftp://idp/jwks" }, "jwt.jwksUrl", "an https URL"],
    [{ "jwt.jwksUrl": "http://idp.example.com/jwks" }, "jwt.jwksUrl", "http on loopback only"],
    [{ "jwt.clockSkew": "a while" }, "jwt.clockSkew", "duration"],
  ])("a bad value is named: %j", (overrides, key, expected) => {
    const e = configError({ overrides });
    expect(e.message).toContain(key);
    expect(e.message).toContain(expected);
  });

  it("requires what each mode needs, naming the listener that needs it", () => {
    expect(configError({ overrides: { "grpc.auth": "token" } }).problems).toEqual([
      "tokens.file: required when grpc.auth is token",
    ]);
    expect(configError({ overrides: { "grpc.auth": "jwt", "http.auth": "jwt" } }).problems).toEqual([
      "jwt.jwksFile or jwt.jwksUrl: exactly one is required when grpc.auth and http.auth is jwt",
      "jwt.issuer: required when grpc.auth and http.auth is jwt",
      "jwt.audience: required when grpc.auth and http.auth is jwt",
    ]);
    const both = {
      "jwt.jwksFile": "/j.json",
      "jwt.jwksUrl": "https://idp/jwks",
      "jwt.issuer": "i",
      "jwt.audience": "a",
    };
    expect(configError({ overrides: { "http.auth": "jwt", ...both } }).problems).toEqual([
      "jwt.jwksFile or jwt.jwksUrl: exactly one is required when http.auth is jwt",
    ]);
    expect(configError({ overrides: { "http.auth": "mtls" } }).problems).toEqual([
      "tls.certFile: required to serve TLS (http.auth)",
      "tls.keyFile: required to serve TLS (http.auth)",
      "tls.clientCaFile: required when http.auth is mtls",
    ]);
    expect(configError({ overrides: { "grpc.tls": true } }).problems).toEqual([
      "tls.certFile: required to serve TLS (grpc.tls)",
      "tls.keyFile: required to serve TLS (grpc.tls)",
    ]);
  });

  it("takes a JWKS over plain http from loopback only", () => {
    for (const url of ["http://127.0.0.1:8000/jwks.json", "http://[::1]:8000/jwks.json", "http://localhost/jwks"]) {
      expect(loadConfig({ overrides: { "jwt.jwksUrl": url } }).jwt.jwksUrl).toBe(url);
    }
  });

  it("does not ask for the files of modes no listener uses", () => {
    const c = loadConfig({
      overrides: { "grpc.auth": "jwt", "jwt.jwksFile": "/j.json", "jwt.issuer": "i", "jwt.audience": "a" },
    });
    expect(c.grpc.auth).toBe("jwt");
    expect(c.http.auth).toBe("none");
  });
});

describe("loadConfig: authorization", () => {
  const withToken = { [envName("grpc.auth")]: "token", [envName("tokens.file")]: "/dev/null" };

  it("reads grants by principal, actors defaulting to any", () => {
    const c = loadConfig({
      env: withToken,
      overrides: { "authorization.callers": { "token:ci": { tenants: ["tenant-*"], scopes: ["case.read"] } } },
    });
    expect(c.authorization.callers["token:ci"]).toEqual({
      tenants: ["tenant-*"],
      actors: ["*"],
      scopes: ["case.read"],
    });
  });

  it.each([
    ["a principal without its kind", { ci: { tenants: ["a"] } }],
    ["a grant without tenants", { "token:ci": { actors: ["*"] } }],
    ["an unknown field", { "token:ci": { tenants: ["a"], tenant: "b" } }],
    ["a pattern that is not a string", { "token:ci": { tenants: ["a"], tools: [1] } }],
  ])("refuses %s, naming the key", (_, callers) => {
    expect(configError({ env: withToken, overrides: { "authorization.callers": callers } }).message).toContain(
      "authorization.callers (flag): expected a map of caller principal",
    );
  });
});
