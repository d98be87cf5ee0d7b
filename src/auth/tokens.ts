// Static API tokens, for development and simple deployments. The tokens file maps a name to the
// SHA-256 of a token ("ci: sha256:HEX" lines), so the file never holds a usable credential. Tokens
// are 256 random bits: a plain hash is enough, and verification is one hash and one lookup.
import { createHash, randomBytes } from "node:crypto";
import { parseDocument } from "yaml";

/** Token names: what the caller's principal ("token:NAME") and the ledger show. */
const namePattern = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/;
const hashPattern = /^sha256:[0-9a-f]{64}$/;

/** A token's line in the tokens file: "NAME: sha256:HEX". */
export function tokenLine(name: string, token: string): string {
  return `${name}: ${hashToken(token)}`;
}

export function hashToken(token: string): string {
  return `sha256:${createHash("sha256").update(token, "utf8").digest("hex")}`;
}

/** A fresh token: a recognizable prefix (for secret scanners) and 32 random bytes, base64url. */
export function createToken(): string {
  return `envl_${randomBytes(32).toString("base64url")}`;
}

export function isTokenName(name: string): boolean {
  return namePattern.test(name);
}

/** The tokens file's entries as hash → name, or the problems found (naming lines, never hashes). */
export function parseTokensFile(
  text: string,
  file: string,
): { readonly ok: true; readonly names: ReadonlyMap<string, string> } | { readonly ok: false; problems: string[] } {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) {
    return { ok: false, problems: doc.errors.map((e) => `${file}: ${e.message.split("\n")[0]}`) };
  }
  const root: unknown = doc.toJS();
  if (root === null || root === undefined) return { ok: false, problems: [`${file}: holds no tokens`] };
  if (typeof root !== "object" || Array.isArray(root)) {
    return { ok: false, problems: [`${file}: must be lines of "NAME: sha256:HEX" (see envelope token --help)`] };
  }
  const problems: string[] = [];
  const names = new Map<string, string>();
  for (const [name, hash] of Object.entries(root)) {
    if (!namePattern.test(name)) {
      problems.push(`${file}: token name ${JSON.stringify(name)} must be letters, digits, "_.@-", at most 64`);
    } else if (typeof hash !== "string" || !hashPattern.test(hash)) {
      problems.push(`${file}: token ${name} must map to "sha256:" and 64 lower-case hex digits`);
    } else if (names.has(hash)) {
      problems.push(`${file}: tokens ${names.get(hash)} and ${name} have the same hash`);
    } else {
      names.set(hash, name);
    }
  }
  if (problems.length === 0 && names.size === 0) problems.push(`${file}: holds no tokens`);
  return problems.length > 0 ? { ok: false, problems } : { ok: true, names };
}
