// The authenticated caller: the backend service that called Envelope, as the transport's
// authentication established it. Pure data: authorization (which caller may act for which tenant)
// will decide on these fields, and the ledger records the principal with every event.

/** How the caller proved who it is. */
export type CallerKind = "token" | "jwt" | "mtls";

export interface Caller {
  readonly kind: CallerKind;
  /**
   * Stable and unique across kinds, recorded with every ledger event the call causes:
   * "token:NAME", "jwt:ISSUER/SUBJECT", "mtls:URI-SAN-or-CN".
   */
  readonly principal: string;
  /** Who within the kind: the token's name, the JWT's "sub", the certificate's URI SAN or CN. */
  readonly subject: string;
  /** The JWT's "iss"; empty for the other kinds. */
  readonly issuer: string;
  /** Scopes the credential grants (the JWT's "scope" or "scp"); empty for the other kinds. */
  readonly scopes: readonly string[];
  /** The verified JWT claims, or the certificate's subject and SANs; empty for tokens. */
  readonly claims: Readonly<Record<string, unknown>>;
}

export function createCaller(
  kind: CallerKind,
  subject: string,
  extra: { issuer?: string; scopes?: readonly string[]; claims?: Readonly<Record<string, unknown>> } = {},
): Caller {
  const issuer = extra.issuer ?? "";
  return Object.freeze({
    kind,
    principal: kind === "jwt" ? `jwt:${issuer}/${subject}` : `${kind}:${subject}`,
    subject,
    issuer,
    scopes: Object.freeze([...(extra.scopes ?? [])]),
    claims: Object.freeze({ ...extra.claims }),
  });
}
