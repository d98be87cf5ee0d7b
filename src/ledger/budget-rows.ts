// What both stores do with budgets besides their SQL: re-encoding an envelope whose grant the
// budgets lowered, inside the transaction that reserved it.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Allocation, degradeEnvelope, regrantEnvelope } from "../core/budget.js";
import { ExecutionEnvelopeSchema } from "../gen/envelope/v1/execution_envelope_pb.js";

/** The stored envelope with the allocated grant; undefined when the allocation changed nothing. */
export function regrantedBytes(
  envelope: Uint8Array,
  allocation: Extract<Allocation, { kind: "granted" }>,
): Uint8Array | undefined {
  if (allocation.clamped.length === 0) return undefined;
  const decoded = fromBinary(ExecutionEnvelopeSchema, envelope);
  regrantEnvelope(decoded, allocation);
  return toBinary(ExecutionEnvelopeSchema, decoded);
}

/** The stored envelope marked degraded: admitted without reserving from these (fail-open) budgets. */
export function degradedBytes(envelope: Uint8Array, budgets: readonly string[]): Uint8Array {
  const decoded = fromBinary(ExecutionEnvelopeSchema, envelope);
  degradeEnvelope(decoded, budgets);
  return toBinary(ExecutionEnvelopeSchema, decoded);
}
