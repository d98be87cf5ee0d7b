// What both stores do with budgets besides their SQL: rewriting a stored envelope, inside the
// transaction that reserved for it, when the budgets changed what it was granted or marked it.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Allocation, degradeEnvelope, regrantEnvelope } from "../core/budget.js";
import { type ExecutionEnvelope, ExecutionEnvelopeSchema } from "../gen/envelope/v1/execution_envelope_pb.js";

function rewritten(envelope: Uint8Array, change: (decoded: ExecutionEnvelope) => void): Uint8Array {
  const decoded = fromBinary(ExecutionEnvelopeSchema, envelope);
  change(decoded);
  return toBinary(ExecutionEnvelopeSchema, decoded);
}

/** The stored envelope with the allocated grant; undefined when the allocation changed nothing. */
export function regrantedBytes(
  envelope: Uint8Array,
  allocation: Extract<Allocation, { kind: "granted" }>,
): Uint8Array | undefined {
  if (allocation.clamped.length === 0) return undefined;
  return rewritten(envelope, (e) => regrantEnvelope(e, allocation));
}

/** The stored envelope marked degraded: admitted without reserving from these (fail-open) budgets. */
export function degradedBytes(envelope: Uint8Array, budgets: readonly string[]): Uint8Array {
  return rewritten(envelope, (e) => degradeEnvelope(e, budgets));
}
