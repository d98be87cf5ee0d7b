// A real non-Node peer: Python's gRPC C-core client (Debian's python3-grpcio, installed by
// scripts/install-test-deps.sh, which `npm test` runs first) calls Admit and must get the same
// envelope as the TypeScript client for the same request.

import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { fromJson, type JsonObject, toJson } from "@bufbuild/protobuf";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ErrorEnvelopeSchema } from "../../src/gen/envelope/v1/error_pb.js";
import { ExecutionEnvelopeSchema } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import { RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { descriptorSet } from "../../src/schema.js";
import { freshRequestJson, withField } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const run = promisify(execFile);
const python = "/usr/bin/python3";
const client = new URL("../polyglot/admit_client.py", import.meta.url).pathname;

let t: TestServer;
let dir: string;
let descriptorSetFile: string;

beforeAll(async () => {
  const probe = await run(python, ["-c", "import grpc, google.protobuf"]).then(
    () => "ok",
    (e: Error) => e.message,
  );
  if (probe !== "ok") {
    throw new Error(`Python gRPC is missing (${probe}); run scripts/install-test-deps.sh (npm test does)`);
  }
  t = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), "envelope-polyglot-"));
  descriptorSetFile = join(dir, "envelope.binpb");
  writeFileSync(descriptorSetFile, descriptorSet());
});
afterAll(async () => {
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function pythonAdmit(request: JsonObject) {
  const file = join(dir, `${request.requestId}.json`);
  writeFileSync(file, JSON.stringify(request));
  const { stdout } = await run(python, [
    client,
    "--target",
    t.server.grpcAddress,
    "--descriptor-set",
    descriptorSetFile,
    "--request",
    file,
  ]);
  return JSON.parse(stdout) as { ok: boolean; response?: JsonObject; code?: string; errorEnvelope?: JsonObject };
}

/**
 * What must be equal for the same request: everything but the per-call identity and clock (the
 * envelope id, which policy decision ids also carry, the times, and the trace id).
 */
function decisionOf(envelopeJson: JsonObject) {
  // Through the TypeScript message and back, so both sides use one JSON spelling (Python's writes
  // Struct numbers as 8.0 and drops zero fractions of timestamps; the values are the same).
  const json = toJson(ExecutionEnvelopeSchema, fromJson(ExecutionEnvelopeSchema, envelopeJson)) as JsonObject;
  const { envelopeId, receivedAt, decidedAt, traceId, ...rest } = json;
  // The two calls are separate operations (their own request ids and idempotency keys).
  const request = rest.request as { requestId?: string; task?: { idempotencyKey?: string } };
  delete request.requestId;
  delete request.task?.idempotencyKey;
  return { rest: JSON.parse(JSON.stringify(rest).replaceAll(String(envelopeId), "<envelope>")), envelopeId };
}

it("Python gRPC gets the same envelope as the TypeScript client", async () => {
  const request = withField(freshRequestJson(), "budget.maxTokens", 500_000);
  const fromPython = await pythonAdmit(request);
  expect(fromPython.ok).toBe(true);
  const fromTs = await t.clients["gRPC (grpc-js port)"].admit(
    fromJson(
      RuntimeRequestSchema,
      withField(withField(request, "requestId", randomUUID()), "task.idempotencyKey", randomUUID()),
    ),
  );

  const py = decisionOf(fromPython.response as JsonObject);
  const ts = decisionOf(toJson(ExecutionEnvelopeSchema, fromTs) as JsonObject);
  expect(py.rest).toEqual(ts.rest);
  expect(py.rest.granted).toMatchObject({ tokens: 128000 });
  expect(py.envelopeId).not.toEqual(ts.envelopeId);
});

it("Python gRPC gets the structured error for a bad request", async () => {
  const request = withField(withField(freshRequestJson(), "contractVersion", "3.0"), "budget.maxSteps", 0);
  const answer = await pythonAdmit(request);
  expect(answer.ok).toBe(false);
  expect(answer.code).toBe("INVALID_ARGUMENT");
  const envelope = fromJson(ErrorEnvelopeSchema, answer.errorEnvelope as JsonObject);
  expect(envelope.error).toMatchObject({ category: "validation", code: "CONTRACT_VERSION_UNSUPPORTED" });
  expect(envelope.error?.violations.map((v) => v.field)).toEqual(["contractVersion"]);
});
