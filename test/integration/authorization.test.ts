// Authorization over real sockets: authenticated callers act only for the tenants, actors, scopes and
// tools they are granted, and never see or move another tenant's envelopes.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config/config.js";
import { writeTokensFile } from "../helpers/credentials.js";
import { rejection } from "../helpers/rejection.js";
import { freshRequest } from "../helpers/requests.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const dir = mkdtempSync(join(tmpdir(), "envelope-authz-"));
let t: TestServer;
let tokens: Record<string, string>;
beforeAll(async () => {
  const written = writeTokensFile(dir, ["acme-backend", "other-backend", "auditor", "stranger"]);
  tokens = written.tokens;
  t = await startTestServer({
    config: {
      grpc: { auth: "token" },
      http: { auth: "token" },
      tokens: { file: written.file },
      authorization: {
        callers: {
          "token:acme-backend": {
            tenants: ["tenant-acme"],
            actors: ["user:*"],
            scopes: ["case.*"],
            tools: ["crm.case.update"],
          },
          "token:other-backend": { tenants: ["tenant-other"], actors: ["*"] },
          "token:auditor": { tenants: ["*"], actors: ["*"] },
        },
      },
    } as never,
  });
});
afterAll(async () => {
  await t?.close();
  rmSync(dir, { recursive: true, force: true });
});

const as = (name: string) => ({ headers: { authorization: `Bearer ${tokens[name]}` } });

describe.each(["gRPC (grpc-js port)", "Connect JSON over HTTP/1.1"] as const)("over %s", (port) => {
  const admission = () => t.clients[port];
  const lifecycle = () => t.lifecycle[port];

  it("admits for a granted tenant and actor, within the granted scopes and tools", async () => {
    const envelope = await admission().admit(freshRequest(), as("acme-backend"));
    expect(envelope.policyScope?.tenantId).toBe("tenant-acme");
  });

  it("refuses every field the caller is not entitled to, at once", async () => {
    const request = freshRequest();
    (request.tenant as NonNullable<typeof request.tenant>).id = "tenant-other";
    (request.actor as NonNullable<typeof request.actor>).subject = "service:batch";
    (request.permissions as NonNullable<typeof request.permissions>).scopes = ["case.read", "billing.write"];
    (request.permissions as NonNullable<typeof request.permissions>).allowedTools = ["shell.exec"];
    const { error, envelope } = await rejection(admission().admit(request, as("acme-backend")));
    expect(error.code).toBe(Code.PermissionDenied);
    expect(envelope.error).toMatchObject({
      category: "authorization",
      code: "REQUEST_NOT_PERMITTED",
      retryable: false,
    });
    expect(envelope.error?.violations.map((v) => [v.field, v.rule])).toEqual([
      ["tenant.id", "authorization.tenant"],
      ["actor.subject", "authorization.actor"],
      ["permissions.scopes[1]", "authorization.scope"],
      ["permissions.allowedTools[0]", "authorization.tool"],
    ]);
  });

  it("explains every blocking reason in Admit's order: validation, then authorization", async () => {
    const request = freshRequest();
    (request.tenant as NonNullable<typeof request.tenant>).id = "tenant-other";
    (request.risk as NonNullable<typeof request.risk>).level = "severe";
    const answer = await admission().explain({ request }, as("acme-backend"));
    expect(answer.admissible).toBe(false);
    expect(answer.blockingReasons.map((r) => [r.category, r.code])).toEqual([
      ["validation", "REQUEST_INVALID"],
      ["authorization", "REQUEST_NOT_PERMITTED"],
    ]);
    expect(answer.blockingReasons[1]?.violations.map((v) => v.field)).toEqual(["tenant.id"]);
  });

  it("refuses an authenticated caller that has no grant", async () => {
    const { error, envelope } = await rejection(admission().admit(freshRequest(), as("stranger")));
    expect(error.code).toBe(Code.PermissionDenied);
    expect(envelope.error?.code).toBe("CALLER_NOT_AUTHORIZED");
  });

  it("hides another tenant's envelopes: Get and transitions answer not found", async () => {
    const { envelopeId } = await admission().admit(freshRequest(), as("acme-backend"));
    // One at a time: a refusal made before it is awaited would be an unhandled rejection.
    for (const call of [
      () => lifecycle().getEnvelope({ envelopeId }, as("other-backend")),
      () => lifecycle().start({ envelopeId }, as("other-backend")),
      () => lifecycle().cancel({ envelopeId }, as("other-backend")),
    ]) {
      const { error, envelope } = await rejection(call());
      expect(error.code).toBe(Code.NotFound);
      expect(envelope.error?.code).toBe("ENVELOPE_NOT_FOUND");
    }
    // Nothing moved, and the owner and an auditor still see it.
    expect((await lifecycle().getEnvelope({ envelopeId }, as("acme-backend"))).record?.events).toHaveLength(2);
    expect((await lifecycle().start({ envelopeId }, as("acme-backend"))).event?.caller).toBe("token:acme-backend");
    expect((await lifecycle().getEnvelope({ envelopeId }, as("auditor"))).record?.envelope?.envelopeId).toBe(
      envelopeId,
    );
  });

  it("lists and watches only tenants the caller may act for", async () => {
    await admission().admit(freshRequest(), as("acme-backend"));
    const own = await lifecycle().listEnvelopes({ tenantId: "tenant-acme" }, as("acme-backend"));
    expect(own.envelopes.length).toBeGreaterThan(0);
    expect(own.envelopes.every((e) => e.policyScope?.tenantId === "tenant-acme")).toBe(true);

    const foreign = await rejection(lifecycle().listEnvelopes({ tenantId: "tenant-acme" }, as("other-backend")));
    expect(foreign.error.code).toBe(Code.PermissionDenied);
    expect(foreign.envelope.error).toMatchObject({ category: "authorization", code: "TENANT_NOT_PERMITTED" });
    const unnamed = await rejection(lifecycle().listEnvelopes({}, as("acme-backend")));
    expect(unnamed.envelope.error?.violations.map((v) => v.field)).toEqual(["tenantId"]);
    expect(unnamed.envelope.error?.message).toContain("tenant-acme");

    const watch = lifecycle().watchEnvelopes({ fromBeginning: true }, as("other-backend"));
    const refused = await rejection(
      (async () => {
        for await (const _ of watch) break;
      })(),
    );
    expect(refused.envelope.error?.code).toBe("TENANT_NOT_PERMITTED");

    const all = await lifecycle().listEnvelopes({ pageSize: 5 }, as("auditor"));
    expect(all.envelopes.length).toBeGreaterThan(0);
  });
});

it("refuses authorization rules on a server that authenticates no caller", () => {
  expect(() =>
    loadConfig({
      overrides: { "authorization.callers": { "token:ci": { tenants: ["tenant-acme"] } } },
    }),
  ).toThrow(ConfigError);
  expect(() =>
    loadConfig({ env: { ENVELOPE_AUTHORIZATION_CALLERS: '{"ci": {"tenants": ["a"]}}', ENVELOPE_GRPC_AUTH: "token" } }),
  ).toThrow(/authorization.callers/);
});
