// What authenticating a call comes to, and the errors of a refusal: category authentication
// (UNAUTHENTICATED) with a stable code and a message that names what is wrong, never the credential.
import type { Caller } from "../core/caller.js";
import { serverContractVersion } from "../core/contract-version.js";
import { createErrorEnvelope } from "../core/errors.js";
import type { ErrorEnvelope } from "../gen/envelope/v1/error_pb.js";

export type Authentication =
  | { readonly kind: "authenticated"; readonly caller: Caller }
  | { readonly kind: "refused"; readonly error: ErrorEnvelope };

/** Codes: CREDENTIALS_MISSING, TOKEN_INVALID, TOKEN_EXPIRED, CERTIFICATE_REJECTED. */
export function authenticationError(code: string, message: string): Authentication {
  return {
    kind: "refused",
    error: createErrorEnvelope(serverContractVersion, { category: "authentication", code, message }),
  };
}

/** The credential could not be checked now (a key set out of reach): retryable. */
export function dependencyError(code: string, message: string): Authentication {
  return {
    kind: "refused",
    error: createErrorEnvelope(serverContractVersion, { category: "dependency.unavailable", code, message }),
  };
}
