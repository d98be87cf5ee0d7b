// The `envelope` command as users run it: a child process, its exit status, stdout and stderr.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { hashToken } from "../../src/auth/tokens.js";
import { repositoryRoot, runEnvelope } from "../helpers/cli.js";
import { freshRequest, freshRequestJson, readFixture, withField } from "../helpers/requests.js";
import { startTestServer } from "../helpers/server.js";

const dir = mkdtempSync(join(tmpdir(), "envelope-cli-"));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill("SIGKILL");
});

function envelope(args: string[], options: { env?: Record<string, string>; stdin?: string } = {}) {
  return runEnvelope(args, { dir, ...options });
}

function file(name: string, content: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content));
  return path;
}

describe("help", () => {
  it("lists the commands", async () => {
    const out = await envelope(["--help"]);
    expect(out.code).toBe(0);
    expect(out.stdout).toMatch(/serve\s+run the admission service/);
    expect(out.stdout).toMatch(/validate\s+validate a JSON RuntimeRequest offline/);
    expect(out.stdout).toMatch(/token\s+create a static API token/);
  });

  it.each(["serve", "validate"])("explains %s", async (command) => {
    const out = await envelope([command, "--help"]);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain(`Usage: envelope ${command}`);
  });

  it("lists every configuration key with its environment variable", async () => {
    const out = await envelope(["serve", "--help"]);
    expect(out.stdout).toContain("limits.maxDeadline");
    expect(out.stdout).toContain("ENVELOPE_LIMITS_MAX_DEADLINE");
  });

  it("rejects an unknown command with status 2", async () => {
    const out = await envelope(["launch"]);
    expect(out.code).toBe(2);
    expect(out.stderr).toContain('unknown command "launch"');
  });
});

describe("validate", () => {
  const fixture = readFixture("runtime-request.json");

  it("accepts the sample request as of its own time and shows the would-be grant", async () => {
    const out = await envelope([
      "validate",
      "--at",
      String(fixture.occurredAtUtc),
      "test/fixtures/runtime-request.json",
    ]);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain("test/fixtures/runtime-request.json: valid");
    expect(out.stdout).toContain("would grant: tokens=4000 costUsdMicros=50000 steps=6");
  });

  it("rejects the sample request today, since its deadline has passed", async () => {
    const out = await envelope(["validate", "test/fixtures/runtime-request.json"]);
    expect(out.code).toBe(1);
    expect(out.stdout).toMatch(/deadlineUtc: must be in the future \[deadline\.future\]/);
  });

  it("lists every violation with its field path", async () => {
    const bad = withField(withField(freshRequestJson(), "risk.level", "severe"), "budget.maxTokens", 0);
    const out = await envelope(["validate", file("bad.json", bad)]);
    expect(out.code).toBe(1);
    expect(out.stdout).toContain("invalid (validation REQUEST_INVALID)");
    expect(out.stdout).toMatch(/risk\.level: .*\[string\.in\]/);
    expect(out.stdout).toMatch(/budget\.maxTokens: .*\[int32\.gt\]/);
  });

  it("prints the ErrorEnvelope with --json and reads standard input", async () => {
    const out = await envelope(["validate", "--json", "-"], { stdin: "[1, 2]" });
    expect(out.code).toBe(1);
    const envelopeJson = JSON.parse(out.stdout);
    expect(envelopeJson.error).toMatchObject({ category: "validation", code: "REQUEST_INVALID" });
  });

  it("names a file it cannot read, with status 2", async () => {
    const out = await envelope(["validate", join(dir, "missing.json")]);
    expect(out.code).toBe(2);
    expect(out.stderr).toContain("ENOENT");
  });

  it("judges with the limits of a configuration file", async () => {
    const config = file("tight.yaml", "limits:\n  maxTokensPerRequest: 100\n");
    const out = await envelope(["validate", "--config", config, file("ok.json", freshRequestJson())]);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain("would grant: tokens=100");
    expect(out.stdout).toContain("GRANT_CLAMPED tokens");
  });
});

describe("disclosure verify", () => {
  it("verifies the committed disclosure, and names what a tampered one gets wrong", async () => {
    const committed = "disclosures/2026-11-22-quick-admit.json";
    const ok = await envelope(["disclosure", "verify", "--max-age-days", "3650", committed]);
    expect(ok.stdout).toContain("verified");
    expect(ok.code).toBe(0);

    const json = JSON.parse(readFileSync(new URL(committed, new URL("../../", import.meta.url)), "utf8"));
    json.results[0].e2eUs.p99 += 1;
    const out = await envelope(["disclosure", "verify", "--max-age-days", "3650", file("tampered.json", json)]);
    expect(out.code).toBe(1);
    expect(out.stdout).toMatch(/e2e p99 is reported as \d+, the histogram gives \d+/);
  });
});

describe("bench compare", () => {
  const committed = "disclosures/2026-11-22-quick-admit.json";

  it("finds no regression between a run and itself", async () => {
    const out = await envelope(["bench", "compare", committed, committed]);
    expect(out.code).toBe(0);
    expect(out.stdout).toMatch(/^ok\s+admit-grpc-port/m);
  });

  it("gates on a run whose Admit is a third slower", async () => {
    const json = JSON.parse(readFileSync(new URL(committed, new URL("../../", import.meta.url)), "utf8"));
    for (const r of json.results) if (r.scenario === "admit-grpc-port") r.achievedRate *= 0.66;
    const out = await envelope(["bench", "compare", committed, file("slower.json", json)]);
    expect(out.code).toBe(1);
    expect(out.stdout).toMatch(/^REGRESSION admit-grpc-port/m);
    expect(out.stdout).toMatch(/^ok\s+floor-grpc-js /m);
  });
});

describe("bench run", () => {
  it("explains its options", async () => {
    const out = await envelope(["bench", "run", "--help"]);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain("Usage: envelope bench run [options]");
    for (const flag of ["--out", "--seconds", "--rounds", "--warmup", "--inflight", "--only"]) {
      expect(out.stdout).toContain(flag);
    }
  });

  it("refuses a scenario it does not have, naming those it has", async () => {
    const out = await envelope(["bench", "run", "--only", "admit-smtp"]);
    expect(out.code).toBe(2);
    expect(out.stderr).toContain("no scenario admit-smtp; scenarios: floor-grpc-js,");
  });

  it("runs a short benchmark into a disclosure that verifies, and its report", async () => {
    const out = join(dir, "run.json");
    const only = "floor-grpc-js,admit-grpc-port,admit-connect-proto-http1";
    const run = await envelope([
      "bench",
      "run",
      "--seconds",
      "0.2",
      "--rounds",
      "1",
      "--warmup",
      "0.2",
      "--inflight",
      "4",
      "--only",
      only,
      "--out",
      out,
    ]);
    expect(run.stderr).toMatch(/^admit-connect-proto-http1 round 1\/1 {2}\d+s \/ ~\d+s$/m);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`${out}: written\n${join(dir, "run.html")}: written\n`);

    const disclosure = JSON.parse(readFileSync(out, "utf8"));
    const summaries = disclosure.results.filter((r: { repetition?: number }) => r.repetition === undefined);
    expect(summaries.map((r: { scenario: string }) => r.scenario)).toEqual([
      "floor-grpc-js@warmup",
      "admit-grpc-port@warmup",
      "admit-connect-proto-http1@warmup",
      "floor-grpc-js",
      "admit-grpc-port",
      "admit-connect-proto-http1",
      "floor-grpc-js@open-warmup",
      "admit-grpc-port@open-warmup",
      "floor-grpc-js@open",
      "admit-grpc-port@open",
      "floor-grpc-js@overload",
    ]);
    for (const r of summaries) {
      expect(r.completed).toBeGreaterThan(0);
      expect(r.clientCpuShare).toBeGreaterThan(0);
      // On Linux, the share of the machine's CPU time the hypervisor took during the scenario.
      if (existsSync("/proc/stat")) expect(r.stealShare).toBeGreaterThanOrEqual(0);
    }
    expect(disclosure.method.command).toContain(`--only ${only}`);
    expect(disclosure.notes).toContain(
      "open loop floor-connect-json-http1 vs admit-connect-json-http1 left out: not every scenario of the pair ran",
    );
    expect(readFileSync(join(dir, "run.html"), "utf8")).toContain("client cores");

    // The run is from this work tree, which may hold uncommitted changes while tests run.
    const verified = await envelope(["disclosure", "verify", "--allow-dirty", out]);
    expect(verified.stdout).toBe(`${out}: verified\n`);
    expect(verified.code).toBe(0);
  }, 90_000);
});

describe("serve", () => {
  it("stops at start-up on an unknown configuration key, naming it", async () => {
    const config = file("typo.yaml", "limits:\n  maxTokensPerReqest: 5\n");
    const out = await envelope(["serve", "--config", config]);
    expect(out.code).toBe(2);
    expect(out.stderr).toContain("limits.maxTokensPerReqest");
    expect(out.stderr).toContain("unknown key");
  });

  it("stops at start-up on a bad value, naming the key and the expected form", async () => {
    const out = await envelope(["serve"], { env: { ENVELOPE_LIMITS_MAX_DEADLINE: "forever" } });
    expect(out.code).toBe(2);
    expect(out.stderr).toContain("limits.maxDeadline (ENVELOPE_LIMITS_MAX_DEADLINE)");
    expect(out.stderr).toContain("expected a duration");
  });

  it("refuses a non-loopback address", async () => {
    const out = await envelope(["serve", "--grpc-listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0"]);
    expect(out.code).toBe(2);
    expect(out.stderr).toContain("not a loopback address");
  });

  it("serves, admits over HTTP, and stops cleanly on SIGTERM", async () => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "src/cli/run.ts", "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
      { cwd: repositoryRoot, env: { ...process.env, ENVELOPE_DATA_DIR: join(dir, "ledger-sigterm") } },
    );
    children.push(child);
    let stderr = "";
    const started = new Promise<{ http: string }>((resolve, reject) => {
      child.stderr.on("data", (d) => {
        stderr += d;
        const line = stderr.split("\n").find((l) => l.includes('"server.started"'));
        if (line) resolve(JSON.parse(line));
      });
      child.once("exit", () => reject(new Error(`exited early: ${stderr}`)));
    });
    const { http } = await started;
    const answer = await fetch(`http://${http}/envelope.v1.AdmissionService/Admit`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(freshRequestJson()),
    });
    expect(answer.status).toBe(200);
    expect(((await answer.json()) as { state: string }).state).toBe("LIFECYCLE_STATE_ADMITTED");

    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(stderr).toContain('"server.stopped"');
    // Request content never reaches the log.
    expect(stderr).not.toContain("alice@example.test");
  });
});

describe("migrate and export", () => {
  it("applies the ledger's migrations once", async () => {
    const dataDir = join(dir, "ledger-migrate");
    const first = await envelope(["migrate", "--data-dir", dataDir]);
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/ledger sqlite at .*ledger-migrate: migrations applied 1/);
    const again = await envelope(["migrate"], { env: { ENVELOPE_DATA_DIR: dataDir } });
    expect(again.stdout).toContain("migrations none pending");
  });

  it("writes an envelope's full record as JSON while the server runs", async () => {
    const t = await startTestServer();
    try {
      const request = freshRequest();
      const { envelopeId } = await t.clients["gRPC (grpc-js port)"].admit(request);
      await t.lifecycle["gRPC (grpc-js port)"].start({ envelopeId, reason: "dispatched" });
      const out = await envelope(["export", "--data-dir", t.dataDir, envelopeId]);
      expect(out.code).toBe(0);
      const record = JSON.parse(out.stdout);
      expect(record.envelope).toMatchObject({ envelopeId, state: "LIFECYCLE_STATE_RUNNING" });
      expect(record.envelope.request.requestId).toBe(request.requestId);
      expect(record.events.map((e: { toState: string }) => e.toState)).toEqual([
        "LIFECYCLE_STATE_RECEIVED",
        "LIFECYCLE_STATE_ADMITTED",
        "LIFECYCLE_STATE_RUNNING",
      ]);

      const missing = await envelope(["export", "--data-dir", t.dataDir, "env_NOPE"]);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain("has no envelope env_NOPE");
      const usage = await envelope(["export", "--data-dir", t.dataDir]);
      expect(usage.code).toBe(2);
      expect(usage.stderr).toContain("expected exactly one ENVELOPE_ID");
    } finally {
      await t.close();
    }
  });
});

describe("token", () => {
  // More cases run in process: test/unit/token-command.test.ts.
  it("create prints a new token on stdout and its tokens-file line on stderr; hash reads one from stdin", async () => {
    const token = "a-token-made-elsewhere-0123456789abcdef";
    const [created, hashed] = await Promise.all([
      envelope(["token", "create", "ci"]),
      envelope(["token", "hash", "legacy"], { stdin: `${token}\n` }),
    ]);
    expect(created.code).toBe(0);
    const fresh = created.stdout.trim();
    expect(fresh).toMatch(/^envl_[A-Za-z0-9_-]{43}$/);
    expect(created.stderr).toContain(`ci: ${hashToken(fresh)}`);
    expect(created.stderr).not.toContain(fresh);
    expect(hashed).toMatchObject({ code: 0, stdout: `legacy: ${hashToken(token)}\n` });
  });
});
