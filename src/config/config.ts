// Configuration: embedded defaults, overlaid by an optional YAML file, overlaid by ENVELOPE_*
// environment variables. Every key is known: an unknown key or a bad value stops start-up with a
// message naming it, all problems at once.
import { readFileSync } from "node:fs";
import { parseDocument } from "yaml";
import type { CallerGrant } from "../core/authorize.js";
import { type BudgetDefinition, type BudgetScope, type BudgetWindow, budgetWindows } from "../core/budget.js";
import { defaultFallbackKind, defaultKindRules, executionKindNames, type KindRule } from "../core/execution-kind.js";
import { type AdmissionLimits, defaultLimits } from "../core/limits.js";
import type { ExecutionKind } from "../gen/envelope/v1/execution_envelope_pb.js";
import type { LogLevel } from "../telemetry/log.js";

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** How a listener authenticates its callers; "none" is for loopback development only. */
export type AuthMode = "none" | "token" | "jwt" | "mtls";

export interface ListenerConfig {
  readonly listen: ListenAddress;
  readonly auth: AuthMode;
  /** Serve TLS with tls.certFile and tls.keyFile; always on with auth mtls. */
  readonly tls: boolean;
}

export interface EnvelopeConfig {
  readonly grpc: ListenerConfig;
  readonly http: ListenerConfig;
  /** Static API tokens (auth token): a file of "name: sha256:HEX" lines, never the tokens themselves. */
  readonly tokens: { readonly file: string };
  readonly jwt: JwtConfig;
  readonly tls: TlsConfig;
  readonly limits: AdmissionLimits;
  readonly executionKinds: { readonly rules: readonly KindRule[]; readonly fallback: ExecutionKind };
  readonly trace: { readonly defaultContentMode: string };
  readonly log: { readonly level: LogLevel };
  /** How long the server reports NOT_SERVING before it stops accepting calls, on SIGTERM. */
  readonly shutdown: { readonly drainMs: number };
  readonly ledger: LedgerConfig;
  /** Grants by caller principal; empty: every caller may act for every tenant. */
  readonly authorization: { readonly callers: Readonly<Record<string, CallerGrant>> };
  /** Allowances per tenant, actor or session, reserved at Admit and settled at the end. */
  readonly budgets: { readonly definitions: readonly BudgetDefinition[] };
  /** The CEL policy bundle (YAML or JSON), read at start and again on SIGHUP; empty: no policy. */
  readonly policy: { readonly file: string };
}

/** Bearer JWTs (auth jwt), verified locally against a JWKS. */
export interface JwtConfig {
  /** A JWKS document on disk, read at start; or jwksUrl, fetched and cached. Exactly one is set. */
  readonly jwksFile: string;
  readonly jwksUrl: string;
  /** Required "iss" and "aud" values. */
  readonly issuer: string;
  readonly audience: string;
  /** Tolerance on "exp" and "nbf", for clocks that disagree. */
  readonly clockSkewMs: number;
}

/** PEM files of the listeners that serve TLS (grpc.tls, http.tls, or auth mtls). */
export interface TlsConfig {
  readonly certFile: string;
  readonly keyFile: string;
  /** The CA that signs client certificates (auth mtls). */
  readonly clientCaFile: string;
}

export interface LedgerConfig {
  /** "none" runs without a ledger: nothing is recorded and the lifecycle service is off. */
  readonly store: "sqlite" | "postgres" | "none";
  /** Where the SQLite store keeps its file. */
  readonly dataDir: string;
  /** The PostgreSQL store's connection URL. */
  readonly postgresUrl: string;
  /** "process": commits survive the process crashing; "fsync": they also survive power loss. */
  readonly durability: "process" | "fsync";
  /** How long past its deadline an admitted or running envelope is left before it expires. */
  readonly expiryGraceMs: number;
  readonly sweepIntervalMs: number;
  /** Terminal envelopes older than this are deleted; 0 keeps everything. */
  readonly retentionMs: number;
  /**
   * PostgreSQL: how long an admission waits for its budget counters' row locks before each
   * budget's failure policy (onUnavailable) applies.
   */
  readonly budgetLockTimeoutMs: number;
}

export const defaultConfig: EnvelopeConfig = Object.freeze({
  grpc: { listen: { host: "127.0.0.1", port: 50051 }, auth: "none", tls: false } as ListenerConfig,
  http: { listen: { host: "127.0.0.1", port: 8080 }, auth: "none", tls: false } as ListenerConfig,
  tokens: { file: "" },
  jwt: { jwksFile: "", jwksUrl: "", issuer: "", audience: "", clockSkewMs: 30_000 },
  tls: { certFile: "", keyFile: "", clientCaFile: "" },
  limits: defaultLimits,
  executionKinds: { rules: defaultKindRules, fallback: defaultFallbackKind },
  trace: { defaultContentMode: "references-only" },
  log: { level: "info" as LogLevel },
  shutdown: { drainMs: 0 },
  authorization: { callers: {} },
  budgets: { definitions: [] },
  policy: { file: "" },
  ledger: {
    store: "sqlite",
    dataDir: "envelope-data",
    postgresUrl: "",
    durability: "process",
    expiryGraceMs: 30_000,
    sweepIntervalMs: 5_000,
    retentionMs: 0,
    budgetLockTimeoutMs: 1_000,
  } as LedgerConfig,
});

export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

type Parser = (value: unknown) => { ok: true; value: unknown } | { ok: false; expected: string };

interface Leaf {
  readonly parse: Parser;
  /** Where the parsed value goes in EnvelopeConfig. */
  readonly target: readonly string[];
  /** A structured value: its environment variable holds JSON. */
  readonly json?: boolean;
}

const ok = (value: unknown) => ({ ok: true as const, value });
const bad = (expected: string) => ({ ok: false as const, expected });

const listen: Parser = (v) => {
  const parsed = typeof v === "string" ? parseListenAddress(v) : undefined;
  return parsed === undefined ? bad('an address "host:port", e.g. "127.0.0.1:50051" or "[::1]:8080"') : ok(parsed);
};

const integer =
  (min: number, max = Number.MAX_SAFE_INTEGER): Parser =>
  (v) => {
    const n = typeof v === "string" && v.trim() !== "" ? Number(v) : v;
    return typeof n === "number" && Number.isInteger(n) && n >= min && n <= max
      ? ok(n)
      : bad(`an integer from ${min} to ${max}`);
  };

/** A duration of at least one second: shorter limits would refuse every request. */
const durationMs: Parser = (v) => {
  const ms = typeof v === "string" ? parseDuration(v) : undefined;
  return ms === undefined || ms < 1000 ? bad('a duration of at least 1s, such as "30s", "5m" or "24h"') : ok(ms);
};

const drainMs: Parser = (v) => {
  const ms = typeof v === "string" ? parseDuration(v) : undefined;
  return ms === undefined ? bad('a duration such as "0s", "500ms" or "10s"') : ok(ms);
};

const lockTimeoutMs: Parser = (v) => {
  const ms = typeof v === "string" ? parseDuration(v) : undefined;
  return ms === undefined || ms < 10 || ms > 60_000
    ? bad('a duration from 10ms to 60s, such as "200ms" or "1s"')
    : ok(ms);
};

const retentionMs: Parser = (v) => {
  if (v === "forever" || v === "0" || v === 0) return ok(0);
  const ms = typeof v === "string" ? parseDuration(v) : undefined;
  return ms === undefined || ms < 60_000
    ? bad('"forever" or a duration of at least 1m, such as "90d" or "720h"')
    : ok(ms);
};

const nonEmpty =
  (what: string): Parser =>
  (v) =>
    typeof v === "string" && v.trim() !== "" ? ok(v) : bad(what);

const boolean: Parser = (v) =>
  v === true || v === "true" ? ok(true) : v === false || v === "false" ? ok(false) : bad("true or false");

/** A JWKS URL: https, since the keys it serves decide who is admitted; plain http on loopback only. */
const jwksUrl: Parser = (v) => {
  const url = typeof v === "string" && URL.canParse(v) ? new URL(v) : undefined;
  const host = url?.hostname.replace(/^\[(.*)\]$/, "$1") ?? "";
  return url !== undefined && (url.protocol === "https:" || (url.protocol === "http:" && isLoopback(host)))
    ? ok(v)
    : bad('an https URL such as "https://idp.example.com/.well-known/jwks.json" (http on loopback only)');
};

const postgresUrl: Parser = (v) =>
  typeof v === "string" && /^postgres(ql)?:\/\//.test(v)
    ? ok(v)
    : bad('a URL such as "postgres://user:pass@host:5432/db"');

const usdAsMicros: Parser = (v) => {
  const n = typeof v === "string" && v.trim() !== "" ? Number(v) : v;
  return typeof n === "number" && Number.isFinite(n) && n > 0 && Number.isSafeInteger(Math.round(n * 1e6))
    ? ok(Math.round(n * 1e6))
    : bad("a positive amount of US dollars, e.g. 2.5");
};

const oneOf =
  (...values: string[]): Parser =>
  (v) =>
    typeof v === "string" && values.includes(v) ? ok(v) : bad(`one of ${values.join(", ")}`);

const kindName: Parser = (v) => {
  const kind = typeof v === "string" ? executionKindNames[v] : undefined;
  return kind === undefined ? bad(`an execution kind: ${Object.keys(executionKindNames).join(", ")}`) : ok(kind);
};

const resourceCaps: Parser = (v) => {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    return bad("a map of resource name to count, e.g. {gpu: 8}");
  const out: Record<string, number> = {};
  for (const [name, count] of Object.entries(v)) {
    if (!/^[a-z][a-z0-9_.-]{0,63}$/.test(name) || !Number.isInteger(count) || (count as number) < 1) {
      return bad(`a map of resource name (lower case) to a positive integer; "${name}" does not fit`);
    }
    out[name] = count as number;
  }
  return ok(Object.freeze(out));
};

const callerGrants: Parser = (v) => {
  const expected =
    'a map of caller principal ("token:NAME", "jwt:ISSUER/SUBJECT", "mtls:NAME") to {tenants: [...], actors: [...], scopes: [...], tools: [...]}, patterns exact or ending in "*"; tenants required';
  if (typeof v !== "object" || v === null || Array.isArray(v)) return bad(expected);
  const patterns = (x: unknown) =>
    Array.isArray(x) && x.every((p) => typeof p === "string" && p !== "") ? (x as string[]) : undefined;
  const out: Record<string, CallerGrant> = {};
  for (const [principal, grant] of Object.entries(v)) {
    const g = (grant ?? {}) as Record<string, unknown>;
    const tenants = patterns(g.tenants);
    const actors = g.actors === undefined ? ["*"] : patterns(g.actors);
    const scopes = g.scopes === undefined ? undefined : patterns(g.scopes);
    const tools = g.tools === undefined ? undefined : patterns(g.tools);
    const known = Object.keys(g).every((k) => ["tenants", "actors", "scopes", "tools"].includes(k));
    const bads = [g.scopes !== undefined && scopes === undefined, g.tools !== undefined && tools === undefined];
    if (!/^(token|jwt|mtls):.+/.test(principal) || tenants === undefined || tenants.length === 0) return bad(expected);
    if (actors === undefined || !known || bads.some(Boolean)) return bad(expected);
    out[principal] = Object.freeze({
      tenants,
      actors,
      ...(scopes === undefined ? {} : { scopes }),
      ...(tools === undefined ? {} : { tools }),
    });
  }
  return ok(Object.freeze(out));
};

const budgetDefinitions: Parser = (v) => {
  const expected =
    'a list of {name, tenant (an id or "*", default "*"), per (tenant, actor or session; default tenant), window (request, minute, hour, day or month), onUnavailable (closed or open; default closed), and at least one limit: tokens, costUsd, steps, concurrent, resources: {NAME: count}}';
  if (!Array.isArray(v)) return bad(expected);
  const fields = [
    ...["name", "tenant", "per", "window", "onUnavailable"],
    ...["tokens", "costUsd", "steps", "concurrent", "resources"],
  ];
  const positive = (x: unknown) => Number.isSafeInteger(x) && (x as number) > 0;
  const out: BudgetDefinition[] = [];
  for (const item of v) {
    const b = (item ?? {}) as Record<string, unknown>;
    const name = typeof b.name === "string" && /^[A-Za-z0-9_.-]{1,64}$/.test(b.name) ? b.name : undefined;
    const problem = (what: string) => bad(`${expected}; ${what}`);
    if (name === undefined) return problem("each needs a name of letters, digits, '_', '.' or '-'");
    if (out.some((d) => d.name === name)) return problem(`"${name}" is defined twice`);
    const unknown = Object.keys(b).filter((k) => !fields.includes(k));
    if (unknown.length > 0) return problem(`"${name}" has unknown keys ${unknown.join(", ")}`);
    const tenant = b.tenant ?? "*";
    const per = b.per ?? "tenant";
    if (typeof tenant !== "string" || tenant === "") return problem(`"${name}".tenant must be a tenant id or "*"`);
    if (!["tenant", "actor", "session"].includes(per as string))
      return problem(`"${name}".per is not tenant, actor or session`);
    if (!budgetWindows.includes(b.window as BudgetWindow)) return problem(`"${name}".window is missing or unknown`);
    const onUnavailable = b.onUnavailable ?? "closed";
    if (onUnavailable !== "closed" && onUnavailable !== "open") {
      return problem(`"${name}".onUnavailable is not closed or open`);
    }
    const limits: Record<string, number> = {};
    for (const dimension of ["tokens", "steps", "concurrent"]) {
      if (b[dimension] === undefined) continue;
      if (!positive(b[dimension])) return problem(`"${name}".${dimension} must be a positive integer`);
      limits[dimension] = b[dimension] as number;
    }
    if (b.costUsd !== undefined) {
      const micros = usdAsMicros(b.costUsd);
      if (!micros.ok) return problem(`"${name}".costUsd must be a positive amount of US dollars`);
      limits.costUsdMicros = micros.value as number;
    }
    if (b.resources !== undefined) {
      const resources = resourceCaps(b.resources);
      if (!resources.ok) return problem(`"${name}".resources: ${resources.expected}`);
      for (const [resource, count] of Object.entries(resources.value as Record<string, number>)) {
        limits[`resources.${resource}`] = count;
      }
    }
    if (Object.keys(limits).length === 0) return problem(`"${name}" sets no limit`);
    out.push(
      Object.freeze({
        name,
        tenant,
        per: per as BudgetScope,
        window: b.window as BudgetWindow,
        limits,
        ...(onUnavailable === "open" ? { failOpen: true } : {}),
      }),
    );
  }
  return ok(Object.freeze(out));
};

const kindRules: Parser = (v) => {
  const expected = "a list of {taskTypePrefix: string, kind: execution kind}";
  if (!Array.isArray(v)) return bad(expected);
  const rules: KindRule[] = [];
  for (const item of v) {
    const prefix = (item as { taskTypePrefix?: unknown })?.taskTypePrefix;
    const kind = kindName((item as { kind?: unknown })?.kind);
    if (typeof prefix !== "string" || prefix === "" || !kind.ok || Object.keys(item).length !== 2) return bad(expected);
    rules.push({ taskTypePrefix: prefix, kind: kind.value as ExecutionKind });
  }
  // Configured rules come first, then the built-in ones.
  return ok(Object.freeze([...rules, ...defaultKindRules]));
};

/** Every configuration key, by its dotted path in the YAML file. */
const leaves: Readonly<Record<string, Leaf>> = {
  "grpc.listen": { parse: listen, target: ["grpc", "listen"] },
  "grpc.auth": { parse: oneOf("none", "token", "jwt", "mtls"), target: ["grpc", "auth"] },
  "grpc.tls": { parse: boolean, target: ["grpc", "tls"] },
  "http.listen": { parse: listen, target: ["http", "listen"] },
  "http.auth": { parse: oneOf("none", "token", "jwt", "mtls"), target: ["http", "auth"] },
  "http.tls": { parse: boolean, target: ["http", "tls"] },
  "tokens.file": { parse: nonEmpty("a file path"), target: ["tokens", "file"] },
  "jwt.jwksFile": { parse: nonEmpty("a file path"), target: ["jwt", "jwksFile"] },
  "jwt.jwksUrl": { parse: jwksUrl, target: ["jwt", "jwksUrl"] },
  "jwt.issuer": { parse: nonEmpty('the issuer ("iss") the tokens must carry'), target: ["jwt", "issuer"] },
  "jwt.audience": { parse: nonEmpty('the audience ("aud") the tokens must carry'), target: ["jwt", "audience"] },
  "jwt.clockSkew": { parse: drainMs, target: ["jwt", "clockSkewMs"] },
  "tls.certFile": { parse: nonEmpty("a PEM file path"), target: ["tls", "certFile"] },
  "tls.keyFile": { parse: nonEmpty("a PEM file path"), target: ["tls", "keyFile"] },
  "tls.clientCaFile": { parse: nonEmpty("a PEM file path"), target: ["tls", "clientCaFile"] },
  "limits.maxDeadline": { parse: durationMs, target: ["limits", "maxDeadlineMs"] },
  "limits.maxClockSkew": { parse: durationMs, target: ["limits", "maxClockSkewMs"] },
  "limits.maxMessageBytes": { parse: integer(1024, 64 * 1024 * 1024), target: ["limits", "maxMessageBytes"] },
  "limits.maxTaskInputBytes": { parse: integer(2, 64 * 1024 * 1024), target: ["limits", "maxTaskInputBytes"] },
  "limits.maxTokensPerRequest": { parse: integer(1, 2 ** 31 - 1), target: ["limits", "maxTokensPerRequest"] },
  "limits.maxCostUsdPerRequest": { parse: usdAsMicros, target: ["limits", "maxCostUsdMicrosPerRequest"] },
  "limits.maxStepsPerRequest": { parse: integer(1, 2 ** 31 - 1), target: ["limits", "maxStepsPerRequest"] },
  "limits.maxResourcesPerRequest": { parse: resourceCaps, target: ["limits", "maxResourcesPerRequest"], json: true },
  "executionKinds.rules": { parse: kindRules, target: ["executionKinds", "rules"], json: true },
  "executionKinds.fallback": { parse: kindName, target: ["executionKinds", "fallback"] },
  "trace.defaultContentMode": {
    parse: oneOf("references-only", "redacted", "approved-content"),
    target: ["trace", "defaultContentMode"],
  },
  "log.level": { parse: oneOf("debug", "info", "warn", "error"), target: ["log", "level"] },
  "shutdown.drain": { parse: drainMs, target: ["shutdown", "drainMs"] },
  "authorization.callers": { parse: callerGrants, target: ["authorization", "callers"], json: true },
  "budgets.definitions": { parse: budgetDefinitions, target: ["budgets", "definitions"], json: true },
  "policy.file": { parse: nonEmpty("a policy bundle file path (YAML or JSON)"), target: ["policy", "file"] },
  "ledger.store": { parse: oneOf("sqlite", "postgres", "none"), target: ["ledger", "store"] },
  "ledger.dataDir": { parse: nonEmpty("a directory path"), target: ["ledger", "dataDir"] },
  "ledger.postgresUrl": { parse: postgresUrl, target: ["ledger", "postgresUrl"] },
  "ledger.durability": { parse: oneOf("process", "fsync"), target: ["ledger", "durability"] },
  "ledger.expiryGrace": { parse: drainMs, target: ["ledger", "expiryGraceMs"] },
  "ledger.sweepInterval": { parse: durationMs, target: ["ledger", "sweepIntervalMs"] },
  "ledger.retention": { parse: retentionMs, target: ["ledger", "retentionMs"] },
  "ledger.budgetLockTimeout": { parse: lockTimeoutMs, target: ["ledger", "budgetLockTimeoutMs"] },
};

/** The environment variable of a key: "limits.maxDeadline" → ENVELOPE_LIMITS_MAX_DEADLINE. */
export function envName(key: string): string {
  return `ENVELOPE_${key
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/\./g, "_")
    .toUpperCase()}`;
}

/** Variables that are not configuration keys but are read by the CLI. */
const envNonKeys = new Set(["ENVELOPE_CONFIG"]);

/** Short names kept for what operators set most. */
const envAliases: Readonly<Record<string, string>> = { ENVELOPE_DATA_DIR: "ledger.dataDir" };

export const configKeys: readonly string[] = Object.keys(leaves);

export interface LoadOptions {
  /** YAML file path; none means defaults and environment only. */
  readonly file?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Applied last, e.g. from command-line flags. Keys as in the file. */
  readonly overrides?: Readonly<Record<string, unknown>>;
}

export function loadConfig(options: LoadOptions = {}): EnvelopeConfig {
  const problems: string[] = [];
  const values = new Map<string, { value: unknown; source: string }>();

  if (options.file !== undefined) {
    for (const [key, value] of readYaml(options.file, problems)) values.set(key, { value, source: options.file });
  }
  const envKeys = new Map([...configKeys.map((k) => [envName(k), k] as const), ...Object.entries(envAliases)]);
  for (const [name, value] of Object.entries(options.env ?? {})) {
    if (!name.startsWith("ENVELOPE_") || value === undefined || envNonKeys.has(name)) continue;
    const key = envKeys.get(name);
    if (key === undefined)
      problems.push(`${name}: unknown environment variable (known: ${[...envKeys.keys()].join(", ")})`);
    else values.set(key, { value: leaves[key]?.json ? parseJsonish(value) : value, source: name });
  }
  for (const [key, value] of Object.entries(options.overrides ?? {})) values.set(key, { value, source: "flag" });

  const config = structuredClone(defaultConfig) as unknown as Record<string, Record<string, unknown>>;
  for (const [key, { value, source }] of values) {
    const leaf = leaves[key];
    if (leaf === undefined) {
      problems.push(`${key} (${source}): unknown key${suggest(key)}`);
      continue;
    }
    const parsed = leaf.parse(value);
    if (!parsed.ok) {
      problems.push(`${key} (${source}): expected ${parsed.expected}; got ${JSON.stringify(value)}`);
      continue;
    }
    const [section, field] = leaf.target as [string, string];
    (config[section] as Record<string, unknown>)[field] = parsed.value;
  }
  const result = config as unknown as EnvelopeConfig;
  if (
    Object.keys(result.authorization.callers).length > 0 &&
    result.grpc.auth === "none" &&
    result.http.auth === "none"
  ) {
    problems.push("authorization.callers: needs a listener that authenticates callers (grpc.auth or http.auth)");
  }
  if (result.ledger.store === "none" && result.budgets.definitions.some((d) => d.window !== "request")) {
    problems.push(
      "budgets.definitions: budgets other than per-request ones are counted in the ledger; ledger.store is none",
    );
  }
  if (result.ledger.store === "postgres" && result.ledger.postgresUrl === "") {
    problems.push("ledger.postgresUrl: required when ledger.store is postgres");
  }
  if (result.limits.maxTaskInputBytes > result.limits.maxMessageBytes) {
    problems.push("limits.maxTaskInputBytes: must not exceed limits.maxMessageBytes");
  }
  problems.push(...authProblems(result));
  if (problems.length > 0) throw new ConfigError(problems);
  return result;
}

/** What each listener's authentication needs from the other sections. */
function authProblems(config: EnvelopeConfig): string[] {
  const problems: string[] = [];
  const listeners = (["grpc", "http"] as const).map((name) => ({ name, ...config[name] }));
  const using = (mode: AuthMode) =>
    listeners
      .filter((l) => l.auth === mode)
      .map((l) => `${l.name}.auth`)
      .join(" and ");
  if (using("token") !== "" && config.tokens.file === "") {
    problems.push(`tokens.file: required when ${using("token")} is token`);
  }
  if (using("jwt") !== "") {
    const { jwksFile, jwksUrl, issuer, audience } = config.jwt;
    if ((jwksFile === "") === (jwksUrl === "")) {
      problems.push(`jwt.jwksFile or jwt.jwksUrl: exactly one is required when ${using("jwt")} is jwt`);
    }
    if (issuer === "") problems.push(`jwt.issuer: required when ${using("jwt")} is jwt`);
    if (audience === "") problems.push(`jwt.audience: required when ${using("jwt")} is jwt`);
  }
  const serving = listeners.filter((l) => l.tls || l.auth === "mtls").map((l) => `${l.name}.${l.tls ? "tls" : "auth"}`);
  for (const key of ["certFile", "keyFile"] as const) {
    if (serving.length > 0 && config.tls[key] === "") {
      problems.push(`tls.${key}: required to serve TLS (${serving.join(" and ")})`);
    }
  }
  if (using("mtls") !== "" && config.tls.clientCaFile === "") {
    problems.push(`tls.clientCaFile: required when ${using("mtls")} is mtls`);
  }
  return problems;
}

function readYaml(file: string, problems: string[]): [string, unknown][] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    problems.push(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    return [];
  }
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    for (const e of doc.errors) problems.push(`${file}: ${e.message.split("\n")[0]}`);
    return [];
  }
  const root: unknown = doc.toJS();
  if (root === null || root === undefined) return [];
  if (typeof root !== "object" || Array.isArray(root)) {
    problems.push(`${file}: must be a mapping of sections (grpc, http, limits, ...)`);
    return [];
  }
  const out: [string, unknown][] = [];
  for (const [section, body] of Object.entries(root)) {
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      problems.push(`${section} (${file}): must be a mapping`);
      continue;
    }
    for (const [key, value] of Object.entries(body)) out.push([`${section}.${key}`, value]);
  }
  return out;
}

/** Values of structured keys may be given as JSON in the environment. */
function parseJsonish(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function suggest(key: string): string {
  const [section] = key.split(".");
  const near = configKeys.filter((k) => k.startsWith(`${section}.`));
  return near.length > 0
    ? ` (keys of ${section}: ${near.map((k) => k.slice(k.indexOf(".") + 1)).join(", ")})`
    : ` (sections: ${[...new Set(configKeys.map((k) => k.split(".")[0]))].join(", ")})`;
}

export function parseListenAddress(text: string): ListenAddress | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text.trim());
  if (match === null) return undefined;
  const port = Number(match[3]);
  if (port > 65535) return undefined;
  return { host: match[1] ?? match[2] ?? "", port };
}

function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (match === null) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as "ms" | "s" | "m" | "h" | "d"];
  return Math.round(Number(match[1]) * unit);
}

/** Loopback: 127.0.0.0/8, ::1 and localhost. */
export function isLoopback(host: string): boolean {
  const octets = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host)?.slice(1).map(Number);
  return host === "localhost" || host === "::1" || octets?.every((o) => o <= 255) === true;
}
