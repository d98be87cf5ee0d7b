import { randomUUID } from "node:crypto";
import type { ErrorEnvelope } from "../gen/envelope/v1/error_pb.js";
import type { Logger } from "../telemetry/log.js";
import { internalError } from "./wire-errors.js";

/**
 * Logs an unexpected failure of a call with a fresh reference and returns the internal error the
 * caller gets: the reference, never the failure's text.
 */
export function reportUnexpected(log: Logger, method: string, cause: unknown, requestId = ""): ErrorEnvelope {
  const reference = randomUUID();
  log.error("call.failed", { method, reference, requestId, cause });
  return internalError(reference, requestId);
}
