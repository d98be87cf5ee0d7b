// Caller authentication, per listener: one Authenticator for the listener's mode (token, jwt or
// mtls), built at start from the configuration (files are read then: a bad one stops start-up).
// Transports gather the credentials of a call (the authorization header, the connection's verified
// client certificate) and refuse the call with the Authentication's error before decoding anything.
import { readFileSync } from "node:fs";
import type { PeerCertificate } from "node:tls";
import { type AuthMode, ConfigError, type EnvelopeConfig } from "../config/config.js";
import { type Caller, createCaller } from "../core/caller.js";
import type { Logger } from "../telemetry/log.js";
import { createJwtVerifier } from "./jwt.js";
import { type Authentication, authenticationError } from "./refusals.js";
import { hashToken, parseTokensFile } from "./tokens.js";

export type { Authentication } from "./refusals.js";

/** What a transport knows of a call's credentials. */
export interface Credentials {
  /** The authorization header ("Bearer TOKEN"). */
  readonly authorization: string | undefined;
  /** The connection's client certificate, only when the TLS handshake verified it against the client CA. */
  readonly certificate: PeerCertificate | undefined;
  /** Why the connection has no verified client certificate, when the transport can tell. */
  readonly certificateProblem?: string | undefined;
}

export interface Authenticator {
  readonly mode: Exclude<AuthMode, "none">;
  authenticate(credentials: Credentials): Promise<Authentication>;
}

export interface AuthenticatorOptions {
  readonly log: Logger;
  /** The clock that judges token expiry; defaults to Date.now. */
  readonly now?: () => number;
}

/** The listener's authenticator, or undefined for auth none. Throws ConfigError for unusable files. */
export function createAuthenticator(
  mode: AuthMode,
  config: EnvelopeConfig,
  options: AuthenticatorOptions,
): Authenticator | undefined {
  switch (mode) {
    case "none":
      return undefined;
    case "token":
      return tokenAuthenticator(config.tokens.file);
    case "jwt": {
      const verify = createJwtVerifier({ config: config.jwt, log: options.log, now: options.now ?? Date.now });
      return {
        mode,
        authenticate: async (credentials) => {
          const token = bearer(credentials.authorization);
          return typeof token === "string" ? verify(token) : token;
        },
      };
    }
    case "mtls":
      return { mode, authenticate: async (credentials) => certificateCaller(credentials) };
  }
}

function tokenAuthenticator(file: string): Authenticator {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigError([`tokens.file: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? e})`]);
  }
  const parsed = parseTokensFile(text, file);
  if (!parsed.ok) throw new ConfigError(parsed.problems.map((p) => `tokens.file: ${p}`));
  const callers = new Map([...parsed.names].map(([hash, name]) => [hash, createCaller("token", name)]));
  const unknown = authenticationError("TOKEN_INVALID", "the bearer token is not one this server accepts");
  return {
    mode: "token",
    async authenticate(credentials) {
      const token = bearer(credentials.authorization);
      if (typeof token !== "string") return token;
      // The lookup is by the token's hash: its timing says nothing about any stored token.
      const caller = callers.get(hashToken(token));
      return caller === undefined ? unknown : { kind: "authenticated", caller };
    },
  };
}

const missingToken = authenticationError(
  "CREDENTIALS_MISSING",
  'this port requires a bearer token: send the header "authorization: Bearer TOKEN"',
);
const notBearer = authenticationError(
  "TOKEN_INVALID",
  'the authorization header must be "Bearer TOKEN" (scheme Bearer, one token)',
);

/** The bearer token of an authorization header, or the refusal when there is none. */
function bearer(header: string | undefined): string | Authentication {
  if (header === undefined || header.trim() === "") return missingToken;
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  return match?.[1] ?? notBearer;
}

function certificateCaller(credentials: Credentials): Authentication {
  const certificate = credentials.certificate;
  if (certificate === undefined) {
    return authenticationError(
      "CERTIFICATE_REJECTED",
      credentials.certificateProblem === undefined
        ? "this port requires a client certificate signed by its client CA; the connection presented none that is"
        : `this port requires a client certificate signed by its client CA: ${credentials.certificateProblem}`,
    );
  }
  const uris = subjectAltNames(certificate.subjectaltname, "URI");
  const cn = [certificate.subject?.CN ?? []].flat()[0];
  const subject = uris[0] ?? cn;
  if (subject === undefined || subject === "") {
    return authenticationError("CERTIFICATE_REJECTED", "the client certificate names no subject (no URI SAN, no CN)");
  }
  const claims = {
    cn: cn ?? "",
    uris,
    dnsNames: subjectAltNames(certificate.subjectaltname, "DNS"),
    fingerprint256: certificate.fingerprint256,
  };
  const caller: Caller = createCaller("mtls", subject, { claims });
  return { kind: "authenticated", caller };
}

/** Values of one type from Node's subjectaltname ("URI:spiffe://a/b, DNS:x.example"). */
function subjectAltNames(text: string | undefined, type: "URI" | "DNS"): string[] {
  if (text === undefined) return [];
  const prefix = `${type}:`;
  return text
    .split(", ")
    .filter((entry) => entry.startsWith(prefix))
    .map((entry) => entry.slice(prefix.length).replace(/^"(.*)"$/, "$1"));
}
