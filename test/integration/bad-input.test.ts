// Bad input on the wire, sent as raw bytes the typed clients would never produce. Every case must
// get the contract's structured error (category, code, field path), never a crash or INTERNAL.
import { request as httpRequest } from "node:http";
import { gzipSync } from "node:zlib";
import { toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RuntimeRequestSchema } from "../../src/gen/envelope/v1/runtime_request_pb.js";
import { freshRequest, freshRequestJson, withField } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { errorEnvelopeFromStatus } from "../helpers/status-details.js";

const maxMessageBytes = 8 * 1024;
let t: TestServer;
let grpcClient: grpc.Client;

beforeAll(async () => {
  t = await startTestServer({
    config: {
      limits: {
        ...(await import("../../src/core/limits.js")).defaultLimits,
        maxMessageBytes,
        maxTaskInputBytes: 4 * 1024,
      },
    },
  });
  grpcClient = new grpc.Client(t.server.grpcAddress, grpc.credentials.createInsecure());
});
afterAll(async () => {
  grpcClient.close();
  await t.close();
});

const admitPath = "/envelope.v1.AdmissionService/Admit";

/** A raw grpc-js unary call with bytes of our choosing. */
function grpcRaw(body: Uint8Array): Promise<{ code: number; details: Uint8Array | undefined }> {
  return new Promise((resolve) => {
    grpcClient.makeUnaryRequest(
      admitPath,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(body),
      (err) => {
        const details = err?.metadata?.get("grpc-status-details-bin")[0];
        resolve({ code: err?.code ?? 0, details: details instanceof Buffer ? details : undefined });
      },
    );
  });
}

interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A raw HTTP/1.1 POST to the HTTP port. */
function post(
  contentType: string,
  body: Uint8Array | string,
  headers: Record<string, string> = {},
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const url = new URL(admitPath, t.httpUrl);
    const req = httpRequest(url, { method: "POST", headers: { "content-type": contentType, ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

interface ConnectErrorJson {
  code: string;
  details?: {
    type: string;
    debug?: { error?: { category: string; code: string; violations?: { field: string; rule: string }[] } };
  }[];
}

async function connectJsonError(body: Uint8Array | string, contentType = "application/json", headers = {}) {
  const answer = await post(contentType, body, headers);
  const json = JSON.parse(answer.body.toString()) as ConnectErrorJson;
  const detail = json.details?.find((d) => d.type === "envelope.v1.ErrorEnvelope")?.debug?.error;
  return { status: answer.status, code: json.code, error: detail, fields: detail?.violations?.map((v) => v.field) };
}

describe("gRPC (grpc-js port) with raw bytes", () => {
  it("answers malformed protobuf with INVALID_ARGUMENT and a structured error", async () => {
    const { code, details } = await grpcRaw(new Uint8Array([0x0a, 0xff, 0xff, 0xff]));
    expect(code).toBe(grpc.status.INVALID_ARGUMENT);
    const { envelope } = errorEnvelopeFromStatus(details ?? new Uint8Array());
    expect(envelope?.error).toMatchObject({ category: "validation", code: "REQUEST_MALFORMED" });
    expect(envelope?.error?.violations[0]).toMatchObject({ field: "", rule: "wire.malformed" });
  });

  it("answers an oversized message with REQUEST_TOO_LARGE", async () => {
    const request = freshRequest();
    (request.task as NonNullable<typeof request.task>).input = { blob: "x".repeat(maxMessageBytes) };
    const { code, details } = await grpcRaw(toBinary(RuntimeRequestSchema, request));
    expect(code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(errorEnvelopeFromStatus(details ?? new Uint8Array()).envelope?.error?.code).toBe("REQUEST_TOO_LARGE");
  });

  it("lets grpc-js refuse a message beyond the transport limit (4x) with RESOURCE_EXHAUSTED", async () => {
    const { code } = await grpcRaw(new Uint8Array(maxMessageBytes * 4 + 10));
    expect(code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  });

  it("rejects an oversized task.input with its field path", async () => {
    const request = freshRequest();
    (request.task as NonNullable<typeof request.task>).input = { blob: "x".repeat(5 * 1024) };
    const { details } = await grpcRaw(toBinary(RuntimeRequestSchema, request));
    const { envelope } = errorEnvelopeFromStatus(details ?? new Uint8Array());
    expect(envelope?.error?.violations.map((v) => [v.field, v.rule])).toEqual([["task.input", "size.max"]]);
  });

  it("rejects an empty message with every required field named", async () => {
    const { code, details } = await grpcRaw(new Uint8Array());
    expect(code).toBe(grpc.status.INVALID_ARGUMENT);
    const fields = errorEnvelopeFromStatus(details ?? new Uint8Array()).envelope?.error?.violations.map((v) => v.field);
    expect(fields).toEqual(
      expect.arrayContaining(["contractVersion", "requestId", "actor", "tenant", "budget", "deadlineUtc"]),
    );
  });
});

describe("Connect JSON over HTTP/1.1 with raw bodies", () => {
  it("reports wrong JSON types with their field paths, all at once", async () => {
    const body = withField(withField(freshRequestJson(), "budget.maxTokens", "lots"), "output.stream", "yes");
    const answer = await connectJsonError(JSON.stringify(body));
    expect(answer.status).toBe(400);
    expect(answer.code).toBe("invalid_argument");
    expect(answer.error).toMatchObject({ category: "validation", code: "REQUEST_INVALID" });
    expect(answer.fields).toEqual(["output.stream", "budget.maxTokens"]);
  });

  it("rejects unknown fields instead of ignoring them", async () => {
    const answer = await connectJsonError(JSON.stringify(withField(freshRequestJson(), "budget.maxTokenz", 5)));
    expect(answer.error?.violations).toEqual([
      { field: "budget.maxTokenz", rule: "json.unknown_field", message: expect.any(String) },
    ]);
  });

  it("rejects an unknown enum value with the allowed values", async () => {
    const answer = await connectJsonError(JSON.stringify(withField(freshRequestJson(), "risk.level", "extreme")));
    expect(answer.error?.violations).toEqual([
      { field: "risk.level", rule: "string.in", message: expect.stringContaining("low, medium, high, critical") },
    ]);
  });

  it("rejects a missing required field", async () => {
    const answer = await connectJsonError(JSON.stringify(withField(freshRequestJson(), "tenant", undefined)));
    expect(answer.error?.violations).toEqual([{ field: "tenant", rule: "required", message: expect.any(String) }]);
  });

  it("rejects a body that is not JSON", async () => {
    const answer = await connectJsonError("{not json");
    expect(answer.status).toBe(400);
    // The root's path is the empty string, which proto3 JSON leaves out.
    expect(answer.error).toMatchObject({ code: "REQUEST_MALFORMED", violations: [{ rule: "json.syntax" }] });
    expect(answer.error?.violations?.[0]?.field).toBeUndefined();
  });

  it("rejects an oversized body", async () => {
    const body = withField(freshRequestJson(), "task.input", { blob: "x".repeat(maxMessageBytes) });
    const answer = await connectJsonError(JSON.stringify(body));
    expect(answer.error?.code).toBe("REQUEST_TOO_LARGE");
  });

  it("decodes gzip bodies before judging them", async () => {
    const body = gzipSync(JSON.stringify(withField(freshRequestJson(), "budget.maxSteps", -2)));
    const answer = await connectJsonError(body, "application/json", { "content-encoding": "gzip" });
    expect(answer.error?.violations?.map((v) => [v.field, v.rule])).toEqual([["budget.maxSteps", "int32.gt"]]);
  });

  it("names the version, not the shape, for a request of another major", async () => {
    const body = withField(withField(freshRequestJson(), "contractVersion", "3.0"), "brandNewField", true);
    const answer = await connectJsonError(JSON.stringify(body));
    expect(answer.error?.code).toBe("CONTRACT_VERSION_UNSUPPORTED");
  });

  it("admits a valid JSON body posted with curl's headers", async () => {
    const answer = await post("application/json", JSON.stringify(freshRequestJson()));
    expect(answer.status).toBe(200);
    const envelope = JSON.parse(answer.body.toString());
    expect(envelope.granted).toMatchObject({ tokens: 4000, costUsdMicros: "50000", steps: 6 });
    expect(envelope.state).toBe("LIFECYCLE_STATE_ADMITTED");
  });
});

describe("Connect binary with raw bodies", () => {
  it("answers malformed protobuf with invalid_argument, not internal", async () => {
    const answer = await connectJsonError(new Uint8Array([0x0a, 0xff, 0xff]), "application/proto");
    expect(answer.status).toBe(400);
    expect(answer.code).toBe("invalid_argument");
    expect(answer.error?.code).toBe("REQUEST_MALFORMED");
  });
});

describe("gRPC-Web with raw bodies", () => {
  function frame(message: Uint8Array): Uint8Array {
    const out = new Uint8Array(5 + message.byteLength);
    new DataView(out.buffer).setUint32(1, message.byteLength);
    out.set(message, 5);
    return out;
  }

  function trailers(body: Buffer): Record<string, string> {
    // The last frame has flag 0x80 and carries the trailers as HTTP header lines.
    let offset = 0;
    let text = "";
    while (offset + 5 <= body.length) {
      const length = body.readUInt32BE(offset + 1);
      if ((body[offset] as number) & 0x80) text = body.subarray(offset + 5, offset + 5 + length).toString();
      offset += 5 + length;
    }
    return Object.fromEntries(
      text
        .split("\r\n")
        .filter(Boolean)
        .map((line) => [line.slice(0, line.indexOf(":")).toLowerCase(), line.slice(line.indexOf(":") + 1).trim()]),
    );
  }

  it("answers malformed protobuf with grpc-status 3 and the ErrorEnvelope in the trailers", async () => {
    const answer = await post("application/grpc-web+proto", frame(new Uint8Array([0x12, 0x80])));
    expect(answer.status).toBe(200);
    const t2 = { ...answer.headers, ...trailers(answer.body) } as Record<string, string>;
    expect(t2["grpc-status"]).toBe("3");
    const details = Buffer.from(t2["grpc-status-details-bin"] ?? "", "base64");
    expect(errorEnvelopeFromStatus(details).envelope?.error?.code).toBe("REQUEST_MALFORMED");
  });

  it("reports JSON field paths for application/grpc-web+json", async () => {
    const body = new TextEncoder().encode(JSON.stringify(withField(freshRequestJson(), "tenant.id", 7)));
    const answer = await post("application/grpc-web+json", frame(body));
    const t2 = { ...answer.headers, ...trailers(answer.body) } as Record<string, string>;
    expect(t2["grpc-status"]).toBe("3");
    const details = Buffer.from(t2["grpc-status-details-bin"] ?? "", "base64");
    expect(errorEnvelopeFromStatus(details).envelope?.error?.violations.map((v) => v.field)).toEqual(["tenant.id"]);
  });
});
