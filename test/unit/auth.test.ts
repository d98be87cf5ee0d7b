// The authenticators without a server: the tokens file, bearer headers, certificate identities,
// and a JWKS fetched from a URL (served here on loopback), including one out of reach.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PeerCertificate } from "node:tls";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, describe, expect, it } from "vitest";
import { type Authentication, createAuthenticator } from "../../src/auth/authenticator.js";
import { createToken, hashToken, parseTokensFile, tokenLine } from "../../src/auth/tokens.js";
import { ConfigError, defaultConfig, type EnvelopeConfig } from "../../src/config/config.js";
import { silentLogger } from "../../src/telemetry/log.js";

const dir = mkdtempSync(join(tmpdir(), "envelope-auth-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const noCertificate = { certificate: undefined };

function refusal(result: Authentication) {
  if (result.kind !== "refused") throw new Error(`expected a refusal, got ${result.caller.principal}`);
  return result.error.error;
}

describe("tokens", () => {
  it("are 256 random bits with a recognizable prefix, stored as their SHA-256", () => {
    const token = createToken();
    expect(token).toMatch(/^envl_[A-Za-z0-9_-]{43}$/);
    expect(createToken()).not.toBe(token);
    expect(hashToken(token)).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(tokenLine("ci", token)).toBe(`ci: ${hashToken(token)}`);
    expect(tokenLine("ci", token)).not.toContain(token.slice(5));
  });

  it("parses a tokens file of name: sha256:HEX lines, with comments", () => {
    const [a, b] = [createToken(), createToken()];
    const parsed = parseTokensFile(`# tokens\n${tokenLine("ci", a)}\n${tokenLine("ops.team", b)}\n`, "tokens.yaml");
    expect(parsed.ok && [...parsed.names.values()]).toEqual(["ci", "ops.team"]);
  });

  it.each([
    ["ci: envl_plaintext\n", /token ci must map to "sha256:"/],
    [`"bad name": ${hashToken("x")}\n`, /token name "bad name"/],
    [`a: ${hashToken("x")}\nb: ${hashToken("x")}\n`, /tokens a and b have the same hash/],
    [`a: ${hashToken("x")}\na: ${hashToken("y")}\n`, /unique/i],
    ["", /holds no tokens/],
    ["- a\n- b\n", /must be lines of/],
  ])("refuses %j", (text, problem) => {
    const parsed = parseTokensFile(text, "tokens.yaml");
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.problems.join("\n")).toMatch(problem);
  });

  it("authenticate by the bearer header; the lookup is by hash", async () => {
    const token = createToken();
    const file = join(dir, "tokens.yaml");
    writeFileSync(file, `${tokenLine("ci", token)}\n`);
    const config: EnvelopeConfig = { ...defaultConfig, tokens: { file } };
    const auth = createAuthenticator("token", config, { log: silentLogger });
    const ok = await auth?.authenticate({ authorization: `Bearer ${token}`, ...noCertificate });
    expect(ok).toMatchObject({
      kind: "authenticated",
      caller: { kind: "token", principal: "token:ci", subject: "ci" },
    });
    const lower = await auth?.authenticate({ authorization: `bearer  ${token}`, ...noCertificate });
    expect(lower?.kind).toBe("authenticated");
    for (const [authorization, code] of [
      [undefined, "CREDENTIALS_MISSING"],
      ["  ", "CREDENTIALS_MISSING"],
      [`Bearer ${token}x`, "TOKEN_INVALID"],
      [`Bearer ${token} ${token}`, "TOKEN_INVALID"],
      [`Token ${token}`, "TOKEN_INVALID"],
    ] as const) {
      const refused = refusal((await auth?.authenticate({ authorization, ...noCertificate })) as Authentication);
      expect(refused).toMatchObject({ category: "authentication", code });
      expect(refused?.message).not.toContain(token);
    }
  });

  it("an unreadable tokens file is a ConfigError naming tokens.file", () => {
    const config = { ...defaultConfig, tokens: { file: join(dir, "absent") } };
    expect(() => createAuthenticator("token", config, { log: silentLogger })).toThrow(ConfigError);
    expect(() => createAuthenticator("token", config, { log: silentLogger })).toThrow(/tokens\.file/);
  });
});

describe("client certificates", () => {
  const mtls = createAuthenticator("mtls", defaultConfig, { log: silentLogger });
  const cert = (fields: Partial<PeerCertificate>) => ({ fingerprint256: "AA:BB", ...fields }) as PeerCertificate;

  it.each([
    [
      { subject: { CN: "ci" } as PeerCertificate["subject"], subjectaltname: "URI:spiffe://t/ci, DNS:ci.local" },
      "mtls:spiffe://t/ci",
    ],
    [{ subject: { CN: "batch" } as PeerCertificate["subject"], subjectaltname: "DNS:batch.local" }, "mtls:batch"],
    [{ subject: { CN: ["first", "second"] } as unknown as PeerCertificate["subject"] }, "mtls:first"],
  ])("name the caller by URI SAN, else CN: %j", async (fields, principal) => {
    const result = await mtls?.authenticate({ authorization: undefined, certificate: cert(fields) });
    expect(result).toMatchObject({ kind: "authenticated", caller: { kind: "mtls", principal } });
  });

  it("refuse a certificate that names no subject, and a connection without a verified one", async () => {
    const empty = await mtls?.authenticate({ authorization: undefined, certificate: cert({ subject: {} as never }) });
    expect(refusal(empty as Authentication)).toMatchObject({ code: "CERTIFICATE_REJECTED" });
    const none = await mtls?.authenticate({
      authorization: "Bearer x",
      certificate: undefined,
      certificateProblem: "it expired",
    });
    expect(refusal(none as Authentication)?.message).toContain("it expired");
  });
});

describe("JWT from a JWKS URL", () => {
  const servers: Server[] = [];
  afterAll(() => Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve)))));

  async function serveJwks(body: string): Promise<string> {
    const server = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(body);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  }

  const jwtConfig = (jwksUrl: string): EnvelopeConfig => ({
    ...defaultConfig,
    jwt: { jwksFile: "", jwksUrl, issuer: "https://idp.test", audience: "envelope", clockSkewMs: 0 },
  });

  it("fetches the key set and verifies against it, with scopes and claims on the caller", async () => {
    const { publicKey, privateKey } = await generateKeyPair("EdDSA");
    const url = await serveJwks(
      JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "EdDSA" }] }),
    );
    const auth = createAuthenticator("jwt", jwtConfig(url), { log: silentLogger });
    const token = await new SignJWT({ scope: "admit watch", tenant: "acme" })
      .setProtectedHeader({ alg: "EdDSA", kid: "k1" })
      .setIssuer("https://idp.test")
      .setAudience("envelope")
      .setSubject("svc-b")
      .setExpirationTime("5m")
      .sign(privateKey);
    const result = await auth?.authenticate({ authorization: `Bearer ${token}`, ...noCertificate });
    expect(result).toMatchObject({
      kind: "authenticated",
      caller: {
        kind: "jwt",
        principal: "jwt:https://idp.test/svc-b",
        subject: "svc-b",
        issuer: "https://idp.test",
        scopes: ["admit", "watch"],
        claims: { tenant: "acme" },
      },
    });
  });

  it("judges expiry by the server's clock", async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const url = await serveJwks(
      JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256" }] }),
    );
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: "ES256", kid: "k1" })
      .setIssuer("https://idp.test")
      .setAudience("envelope")
      .setSubject("svc")
      .setExpirationTime(Math.floor(Date.now() / 1000) + 60)
      .sign(privateKey);
    const later = createAuthenticator("jwt", jwtConfig(url), { log: silentLogger, now: () => Date.now() + 120_000 });
    const result = await later?.authenticate({ authorization: `Bearer ${token}`, ...noCertificate });
    expect(refusal(result as Authentication)).toMatchObject({ code: "TOKEN_EXPIRED" });
  });

  it("answers a key set out of reach with a retryable dependency error", async () => {
    const url = await serveJwks("not json");
    const auth = createAuthenticator("jwt", jwtConfig(url), { log: silentLogger });
    const token = await new SignJWT({ sub: "s" })
      .setProtectedHeader({ alg: "ES256", kid: "k1" })
      .sign((await generateKeyPair("ES256")).privateKey);
    const result = await auth?.authenticate({ authorization: `Bearer ${token}`, ...noCertificate });
    expect(refusal(result as Authentication)).toMatchObject({
      category: "dependency.unavailable",
      code: "JWKS_UNAVAILABLE",
      retryable: true,
    });
  });
});
