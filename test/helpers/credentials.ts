// Credentials made for a test in a temp directory: a tokens file, a JWKS with its signing key, and
// certificates from two CAs (openssl), so that no secret is committed.
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from "jose";
import { createToken, tokenLine } from "../../src/auth/tokens.js";

export function writeTokensFile(
  dir: string,
  names: readonly string[],
): { file: string; tokens: Record<string, string> } {
  const tokens = Object.fromEntries(names.map((name) => [name, createToken()]));
  const file = join(dir, "tokens.yaml");
  writeFileSync(file, `# test tokens\n${names.map((n) => tokenLine(n, tokens[n] as string)).join("\n")}\n`);
  return { file, tokens };
}

export interface JwtIssuer {
  readonly jwksFile: string;
  /** Signs a token with the key in the JWKS (or, with `foreign`, with a key it does not hold). */
  sign(claims: JWTPayload, options?: { foreign?: boolean }): Promise<string>;
}

export async function writeJwks(dir: string): Promise<JwtIssuer> {
  const trusted = await generateKeyPair("ES256");
  const foreign = await generateKeyPair("ES256");
  const jwk = { ...(await exportJWK(trusted.publicKey)), kid: "test-1", alg: "ES256", use: "sig" };
  const jwksFile = join(dir, "jwks.json");
  writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));
  return {
    jwksFile,
    sign: (claims, options = {}) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: "ES256", kid: "test-1" })
        .sign(options.foreign ? foreign.privateKey : trusted.privateKey),
  };
}

export interface Pem {
  readonly cert: Buffer;
  readonly key: Buffer;
}

export interface Certificates {
  readonly dir: string;
  /** The server's certificate (SAN 127.0.0.1, localhost), issued by the CA. */
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  readonly caFile: string;
  readonly ca: Buffer;
  /** A client certificate from the CA: URI SAN spiffe://envelope.test/ci, CN ci. */
  readonly client: Pem;
  /** A client certificate from the CA with a CN only. */
  readonly clientCnOnly: Pem;
  /** A client certificate from another CA, with the same names as `client`. */
  readonly stranger: Pem;
}

const openssl = (dir: string, args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });

/** openssl req arguments for a new P-256 key, unencrypted, in NAME.key. */
const newKey = (name: string) => [
  "-newkey",
  "ec",
  "-pkeyopt",
  "ec_paramgen_curve:P-256",
  "-nodes",
  "-keyout",
  `${name}.key`,
];

function issue(dir: string, name: string, ca: string, subject: string, san: string | undefined): Pem {
  openssl(dir, ["req", ...newKey(name), "-out", `${name}.csr`, "-subj", subject]);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(
    ext,
    san === undefined ? "basicConstraints=CA:FALSE\n" : `basicConstraints=CA:FALSE\nsubjectAltName=${san}\n`,
  );
  openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    `${ca}.crt`,
    "-CAkey",
    `${ca}.key`,
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    ext,
    "-out",
    `${name}.crt`,
  ]);
  return { cert: openssl(dir, ["x509", "-in", `${name}.crt`]), key: openssl(dir, ["pkey", "-in", `${name}.key`]) };
}

function authority(dir: string, name: string): void {
  openssl(dir, ["req", "-x509", ...newKey(name), "-out", `${name}.crt`, "-subj", `/CN=${name}`, "-days", "2"]);
}

export function writeCertificates(dir: string): Certificates {
  authority(dir, "test-ca");
  authority(dir, "other-ca");
  issue(dir, "server", "test-ca", "/CN=envelope-test-server", "IP:127.0.0.1,DNS:localhost");
  return {
    dir,
    serverCertFile: join(dir, "server.crt"),
    serverKeyFile: join(dir, "server.key"),
    caFile: join(dir, "test-ca.crt"),
    ca: openssl(dir, ["x509", "-in", "test-ca.crt"]),
    client: issue(dir, "client", "test-ca", "/CN=ci", "URI:spiffe://envelope.test/ci"),
    clientCnOnly: issue(dir, "client-cn", "test-ca", "/CN=batch-runner", undefined),
    stranger: issue(dir, "stranger", "other-ca", "/CN=ci", "URI:spiffe://envelope.test/ci"),
  };
}
