// Crash safety of the ledger on both stores, as users run it: `envelope serve` in its own process takes
// concurrent Admit and Start calls, is killed with SIGKILL mid-load, and is started again on the
// same data directory. Everything a client saw acknowledged must be there, in that state or a later
// one, and every stored envelope must be whole: events numbered without gaps, state = last event.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, expect, it } from "vitest";
import { AdmissionService } from "../../src/gen/envelope/v1/admission_service_pb.js";
import { LifecycleState as S } from "../../src/gen/envelope/v1/execution_envelope_pb.js";
import { LifecycleService } from "../../src/gen/envelope/v1/lifecycle_service_pb.js";
import { freshRequest } from "../helpers/requests.js";
import { createDatabase } from "../support/postgres.js";

const root = new URL("../../", import.meta.url).pathname;
const dataDir = mkdtempSync(join(tmpdir(), "envelope-crash-"));
/** The ledger's environment, per store: SQLite under dataDir, or a fresh PostgreSQL database. */
const ledgerEnv = {
  sqlite: async (): Promise<Record<string, string>> => ({ ENVELOPE_DATA_DIR: dataDir }),
  postgres: async (): Promise<Record<string, string>> => ({
    ENVELOPE_LEDGER_STORE: "postgres",
    ENVELOPE_LEDGER_POSTGRES_URL: await createDatabase(),
  }),
};
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(dataDir, { recursive: true, force: true });
});

/** Starts `envelope serve` on ephemeral ports over dataDir; resolves with its gRPC address. */
function serve(env: Record<string, string>): Promise<{ child: ChildProcess; address: string }> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "src/cli/run.ts", "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
    { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] },
  );
  children.push(child);
  return new Promise((resolve, reject) => {
    let log = "";
    child.stderr?.on("data", (chunk) => {
      log += chunk;
      const address = /"grpc":"(127\.0\.0\.1:\d+)"/.exec(log)?.[1];
      if (address !== undefined) resolve({ child, address });
    });
    child.on("exit", (code) => reject(new Error(`serve exited with ${code}: ${log}`)));
  });
}

const order = [S.ADMITTED, S.RUNNING];

it.each(["sqlite", "postgres"] as const)(
  "keeps every acknowledged envelope, whole, across SIGKILL under load (%s)",
  { timeout: 60_000 },
  async (store) => {
    const env = await ledgerEnv[store]();
    const first = await serve(env);
    const transport = createGrpcTransport({ baseUrl: `http://${first.address}` });
    const admission = createClient(AdmissionService, transport);
    const lifecycle = createClient(LifecycleService, transport);

    /** The latest state each envelope was acknowledged in. */
    const acknowledged = new Map<string, S>();
    let stop = false;
    const worker = async () => {
      while (!stop) {
        try {
          const { envelopeId } = await admission.admit(freshRequest());
          acknowledged.set(envelopeId, S.ADMITTED);
          if (acknowledged.size % 2 === 0) {
            await lifecycle.start({ envelopeId });
            acknowledged.set(envelopeId, S.RUNNING);
          }
        } catch {
          return; // the server is gone
        }
      }
    };
    const workers = Array.from({ length: 32 }, worker);
    await new Promise((r) => setTimeout(r, 1_500));
    first.child.kill("SIGKILL");
    stop = true;
    await Promise.all(workers);
    expect(acknowledged.size).toBeGreaterThan(50);

    const second = await serve(env);
    const after = createClient(LifecycleService, createGrpcTransport({ baseUrl: `http://${second.address}` }));
    for (const [envelopeId, state] of acknowledged) {
      const { record } = await after.getEnvelope({ envelopeId });
      const stored = record?.envelope?.state ?? S.UNSPECIFIED;
      // A call in flight at the kill may have committed without its answer arriving: later is fine.
      expect(
        order.indexOf(stored),
        `${envelopeId} acknowledged ${S[state]}, stored ${S[stored]}`,
      ).toBeGreaterThanOrEqual(order.indexOf(state));
    }

    // Nothing half-written: every stored envelope, acknowledged or not, is whole.
    let pageToken = "";
    let stored = 0;
    do {
      const page = await after.listEnvelopes({ pageSize: 1000, pageToken });
      for (const envelope of page.envelopes) {
        const { record } = await after.getEnvelope({ envelopeId: envelope.envelopeId });
        const events = record?.events ?? [];
        expect(events.map((e) => e.envelopeSequence)).toEqual(events.map((_, i) => i + 1));
        expect(events.at(-1)?.toState).toBe(envelope.state);
        expect(record?.envelope?.request?.requestId).not.toBe("");
        stored++;
      }
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(stored).toBeGreaterThanOrEqual(acknowledged.size);
    second.child.kill("SIGTERM");
  },
);
