// The structured error of a call that must fail: its ConnectError and the ErrorEnvelope it carries.
import { ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import { ErrorEnvelopeSchema } from "../../src/gen/envelope/v1/error_pb.js";

export async function rejection(call: Promise<unknown>) {
  const error = await call.then(
    () => expect.fail("expected the call to fail"),
    (e: unknown) => ConnectError.from(e),
  );
  const [envelope] = error.findDetails(ErrorEnvelopeSchema);
  if (envelope === undefined) expect.fail(`no ErrorEnvelope in the error details: ${error.message}`);
  return { error, envelope };
}
