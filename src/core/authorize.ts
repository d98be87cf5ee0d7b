// Authorization at admission: which authenticated callers may act for which tenants, assert which
// actors, and ask for which scopes and tools. Pure: the rules come from configuration, the caller
// from the transport's authentication. With no rules configured every caller is unrestricted (the
// development default); once any caller is listed, a caller that is not listed may do nothing.
import type { FieldViolation } from "../gen/envelope/v1/error_pb.js";
import type { RuntimeRequest } from "../gen/envelope/v1/runtime_request_pb.js";
import type { Caller } from "./caller.js";
import { violation } from "./validate.js";

/** What one caller is entitled to. A pattern is exact, or ends in "*" to match a prefix; "*" is anything. */
export interface CallerGrant {
  readonly tenants: readonly string[];
  readonly actors: readonly string[];
  /** Scopes the caller may ask for; absent: any. */
  readonly scopes?: readonly string[];
  /** Tools the caller may allow; absent: any. */
  readonly tools?: readonly string[];
}

/** Grants by caller principal ("token:NAME", "jwt:ISS/SUB", "mtls:..."). Empty: no restriction. */
export type AuthorizationRules = ReadonlyMap<string, CallerGrant>;

export type Authorization =
  | { readonly kind: "permitted" }
  | { readonly kind: "unknown-caller"; readonly message: string }
  | { readonly kind: "not-permitted"; readonly violations: readonly FieldViolation[] };

function matches(pattern: string, value: string): boolean {
  return pattern.endsWith("*") ? value.startsWith(pattern.slice(0, -1)) : pattern === value;
}

const matchesAny = (patterns: readonly string[], value: string) => patterns.some((p) => matches(p, value));

/** The caller's grant, "unrestricted" when no rules are configured, or undefined when it has none. */
export function grantOf(
  caller: Caller | undefined,
  rules: AuthorizationRules,
): CallerGrant | "unrestricted" | undefined {
  if (rules.size === 0) return "unrestricted";
  return caller === undefined ? undefined : rules.get(caller.principal);
}

/** Whether the caller may act for (admit for, see, move the envelopes of) the tenant. */
export function mayActForTenant(caller: Caller | undefined, tenantId: string, rules: AuthorizationRules): boolean {
  const grant = grantOf(caller, rules);
  return grant === "unrestricted" || (grant !== undefined && matchesAny(grant.tenants, tenantId));
}

/** Checks an Admit request against the caller's grant: every violation at once, with its field. */
export function authorizeAdmission(
  caller: Caller | undefined,
  request: RuntimeRequest,
  rules: AuthorizationRules,
): Authorization {
  const grant = grantOf(caller, rules);
  if (grant === "unrestricted") return { kind: "permitted" };
  if (grant === undefined) {
    return {
      kind: "unknown-caller",
      message:
        caller === undefined
          ? "this listener does not authenticate callers, and only authorized callers may admit"
          : `caller ${caller.principal} is not authorized to admit for any tenant`,
    };
  }
  const violations: FieldViolation[] = [];
  const tenant = request.tenant?.id ?? "";
  if (!matchesAny(grant.tenants, tenant)) {
    violations.push(violation("tenant.id", "authorization.tenant", `the caller may not act for tenant "${tenant}"`));
  }
  const actor = request.actor?.subject ?? "";
  if (!matchesAny(grant.actors, actor)) {
    violations.push(violation("actor.subject", "authorization.actor", `the caller may not assert actor "${actor}"`));
  }
  const { scopes, tools } = grant;
  if (scopes !== undefined) {
    request.permissions?.scopes.forEach((scope, i) => {
      if (!matchesAny(scopes, scope)) {
        violations.push(
          violation(`permissions.scopes[${i}]`, "authorization.scope", `the caller may not ask for scope "${scope}"`),
        );
      }
    });
  }
  if (tools !== undefined) {
    request.permissions?.allowedTools.forEach((tool, i) => {
      if (!matchesAny(tools, tool)) {
        violations.push(
          violation(`permissions.allowedTools[${i}]`, "authorization.tool", `the caller may not allow tool "${tool}"`),
        );
      }
    });
  }
  return violations.length === 0 ? { kind: "permitted" } : { kind: "not-permitted", violations };
}
