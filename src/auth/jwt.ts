// Bearer JWTs verified locally with jose: the signature against a JWKS (a file read at start, or a
// URL fetched and cached by jose), then "iss", "aud", "exp" and "nbf" within the clock skew. Each
// failure becomes a stable code; the token itself never appears in a message or a log line.
import { readFileSync } from "node:fs";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from "jose";
import { ConfigError, type JwtConfig } from "../config/config.js";
import { type Caller, createCaller } from "../core/caller.js";
import type { Logger } from "../telemetry/log.js";
import { type Authentication, authenticationError, dependencyError } from "./refusals.js";

/** Signature algorithms accepted: asymmetric only, so a public JWKS can never mint a token. */
const algorithms = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
];

export interface JwtVerifierOptions {
  readonly config: JwtConfig;
  readonly log: Logger;
  readonly now: () => number;
}

export type JwtVerifier = (token: string) => Promise<Authentication>;

export function createJwtVerifier(options: JwtVerifierOptions): JwtVerifier {
  const { config, log, now } = options;
  const remote = config.jwksUrl !== "";
  const keys: JWTVerifyGetKey = remote
    ? createRemoteJWKSet(new URL(config.jwksUrl), { timeoutDuration: 5_000, cooldownDuration: 30_000 })
    : createLocalJWKSet(readJwks(config.jwksFile));
  const verifyOptions = {
    issuer: config.issuer,
    audience: config.audience,
    clockTolerance: config.clockSkewMs / 1000,
    requiredClaims: ["sub", "exp"],
    algorithms,
  };

  return async (token) => {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, { ...verifyOptions, currentDate: new Date(now()) }));
    } catch (cause) {
      const refused = tokenRefusal(cause);
      if (refused !== undefined) return refused;
      if (!remote) throw cause;
      log.warn("auth.jwks_unavailable", { jwksUrl: config.jwksUrl, cause });
      return dependencyError("JWKS_UNAVAILABLE", "the key set that verifies tokens cannot be fetched now; retry");
    }
    return { kind: "authenticated", caller: jwtCaller(payload) };
  };
}

function readJwks(file: string): JSONWebKeySet {
  let jwks: unknown;
  try {
    jwks = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new ConfigError([`jwt.jwksFile: cannot read ${file} as JSON (${(e as NodeJS.ErrnoException).code ?? e})`]);
  }
  if (!Array.isArray((jwks as JSONWebKeySet | null)?.keys)) {
    throw new ConfigError([`jwt.jwksFile: ${file} is not a JWKS (an object with "keys")`]);
  }
  return jwks as JSONWebKeySet;
}

/** The refusal a verification error stands for, or undefined for a failure of the key source. */
function tokenRefusal(cause: unknown): Authentication | undefined {
  if (cause instanceof errors.JWTExpired) return authenticationError("TOKEN_EXPIRED", "the bearer token has expired");
  if (cause instanceof errors.JWTClaimValidationFailed) {
    const problem = cause.reason === "missing" ? "is missing" : "is not accepted";
    return authenticationError("TOKEN_INVALID", `the bearer token's "${cause.claim}" claim ${problem}`);
  }
  if (cause instanceof errors.JWSSignatureVerificationFailed) {
    return authenticationError("TOKEN_INVALID", "the bearer token's signature does not verify");
  }
  if (cause instanceof errors.JWKSNoMatchingKey || cause instanceof errors.JWKSMultipleMatchingKeys) {
    return authenticationError("TOKEN_INVALID", "no single key of the configured key set matches the bearer token");
  }
  if (
    cause instanceof errors.JWSInvalid ||
    cause instanceof errors.JWTInvalid ||
    cause instanceof errors.JOSEAlgNotAllowed ||
    cause instanceof errors.JOSENotSupported
  ) {
    return authenticationError("TOKEN_INVALID", "the bearer token is not a JWT signed with an accepted algorithm");
  }
  return undefined;
}

function jwtCaller(payload: JWTPayload): Caller {
  const scope = payload.scope ?? payload.scp;
  const scopes =
    typeof scope === "string"
      ? scope.split(" ").filter((s) => s !== "")
      : Array.isArray(scope)
        ? scope.filter((s): s is string => typeof s === "string")
        : [];
  return createCaller("jwt", payload.sub ?? "", { issuer: payload.iss ?? "", scopes, claims: payload });
}
