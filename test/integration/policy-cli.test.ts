// The policy commands as users run them: `envelope policy check FILE`, a server refusing to start
// with a bad bundle, and SIGHUP reloading a bundle atomically (a bad one refused, the previous kept).
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { repositoryRoot, runEnvelope } from "../helpers/cli.js";
import { freshRequestJson } from "../helpers/requests.js";

const dir = mkdtempSync(join(tmpdir(), "envelope-policy-cli-"));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

function envelope(args: string[], env: Record<string, string> = {}) {
  return runEnvelope(args, { dir, env, children });
}

function file(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

const denyAcme = `version: "reload-1"
rules:
  - name: no-acme
    expression: request.tenant.id != "tenant-acme"
    message: tenant-acme is paused
    effect: deny
`;
const warnAcme = `version: "reload-2"
rules:
  - name: acme-watched
    expression: request.tenant.id != "tenant-acme"
    message: tenant-acme is watched
    effect: warn
`;
const broken = `version: "reload-3"
rules:
  - name: typo
    expression: request.tenant.idd != "tenant-acme"
    message: never loaded
    effect: deny
`;

describe("envelope policy check", () => {
  it("prints the version and the rule count of a valid bundle", async () => {
    const out = await envelope(["policy", "check", file("good.yaml", denyAcme)]);
    expect(out.stderr).toBe("");
    expect(out.stdout).toBe(`${join(dir, "good.yaml")}: valid, version "reload-1", 1 rule\n`);
    expect(out.code).toBe(0);
  });

  it("checks the committed example bundle", async () => {
    const out = await envelope(["policy", "check", "examples/policy.yaml"]);
    expect(out.stdout).toMatch(/^examples\/policy\.yaml: valid, version "[^"]+", \d+ rules\n$/);
    expect(out.code).toBe(0);
  });

  it("lists every problem of an invalid bundle, with status 1", async () => {
    const bad = file(
      "bad.json",
      JSON.stringify({
        version: "b1",
        rules: [
          { name: "r", effect: "deny", expression: "request.tenant.idd == ''", message: "m" },
          { name: "r", effect: "warn", expression: "true", message: "m" },
        ],
      }),
    );
    const out = await envelope(["policy", "check", bad]);
    expect(out.code).toBe(1);
    expect(out.stdout).toBe(
      [
        `${bad}: invalid, 2 problems`,
        '  rules[0] (r): expression: request.tenant has no field "idd" (Tenant fields, by their proto names: id, region)',
        "  rules[1] (r): duplicate name; rules[0] has it already",
        "",
      ].join("\n"),
    );
  });

  it("refuses an oversized bundle with its size", async () => {
    const out = await envelope(["policy", "check", file("big.yaml", `version: v\nrules: []\n#${"x".repeat(1 << 20)}`)]);
    expect(out.code).toBe(1);
    expect(out.stdout).toContain("at most 1048576 bytes (1 MiB) are accepted");
  });

  it("answers usage errors and unreadable files with status 2, and explains itself", async () => {
    const [usage, missing, help, commands] = await Promise.all([
      envelope(["policy", "lint", "x.yaml"]),
      envelope(["policy", "check", join(dir, "missing.yaml")]),
      envelope(["policy", "--help"]),
      envelope(["--help"]),
    ]);
    expect(usage.code).toBe(2);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("ENOENT");
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("Usage: envelope policy check FILE");
    expect(commands.stdout).toMatch(/policy\s+check a CEL policy bundle offline/);
  });
});

describe("envelope validate with policy.file", () => {
  it("judges the request with the configuration's bundle too", async () => {
    const config = file("validate.yaml", `policy:\n  file: ${file("validate-policy.yaml", denyAcme)}\n`);
    const request = file("request.json", JSON.stringify(freshRequestJson()));
    const out = await envelope(["validate", "--config", config, request]);
    expect(out.code).toBe(1);
    expect(out.stdout).toContain("invalid (policy POLICY_DENIED): tenant-acme is paused");
    expect(out.stdout).toContain("[policy:no-acme]");
  });
});

describe("envelope serve with policy.file", () => {
  it("refuses to start with a bad bundle, naming its problems", async () => {
    const out = await envelope(["serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"], {
      ENVELOPE_POLICY_FILE: file("broken.yaml", broken),
    });
    expect(out.code).toBe(2);
    expect(out.stderr).toContain(`policy.file (${join(dir, "broken.yaml")}): rules[0] (typo): expression:`);
  });

  it("reloads on SIGHUP: a good bundle replaces the one in force, a bad one is refused and the previous stays", async () => {
    const policyFile = file("live.yaml", denyAcme);
    const child = spawn(
      process.execPath,
      [
        ...["--import", "tsx", "src/cli/run.ts", "serve", "--ledger", "none"],
        ...["--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
      ],
      { cwd: repositoryRoot, env: { ...process.env, ENVELOPE_POLICY_FILE: policyFile } },
    );
    children.push(child);
    let stderr = "";
    const waiters: { event: string; seen: number; resolve: (line: Record<string, unknown>) => void }[] = [];
    const lines = () => stderr.split("\n").filter((l) => l.startsWith("{"));
    const check = () => {
      for (const w of [...waiters]) {
        const matching = lines().filter((l) => JSON.parse(l).event === w.event);
        if (matching.length > w.seen) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(JSON.parse(matching[w.seen] as string));
        }
      }
    };
    child.stderr.on("data", (d) => {
      stderr += d;
      check();
    });
    /** The next log line of this event, after the `seen` ones already there. */
    const next = (event: string) => {
      const seen = lines().filter((l) => JSON.parse(l).event === event).length;
      return new Promise<Record<string, unknown>>((resolve) => {
        waiters.push({ event, seen, resolve });
      });
    };
    const started = await new Promise<Record<string, unknown>>((resolve, reject) => {
      waiters.push({ event: "server.started", seen: 0, resolve });
      child.once("exit", () => reject(new Error(`exited early: ${stderr}`)));
    });
    expect(started.policy).toMatchObject({ version: "reload-1", rules: 1 });
    const admit = async () => {
      const answer = await fetch(`http://${started.http}/envelope.v1.AdmissionService/Admit`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(freshRequestJson()),
      });
      return { status: answer.status, body: (await answer.json()) as Record<string, unknown> };
    };

    const first = await admit();
    expect(first.status).toBe(400);
    expect(JSON.stringify(first.body)).toContain("tenant-acme is paused");

    writeFileSync(policyFile, warnAcme);
    const reloaded = next("policy.reloaded");
    child.kill("SIGHUP");
    expect(await reloaded).toMatchObject({ version: "reload-2", rules: 1 });
    const second = await admit();
    expect(second.status).toBe(200);
    const decision = second.body.decision as { policyDecisions: { policyVersion: string }[]; warnings: unknown[] };
    expect(decision.policyDecisions.map((d) => d.policyVersion)).toContain("reload-2");

    writeFileSync(policyFile, broken);
    const refused = next("policy.reload.refused");
    child.kill("SIGHUP");
    const refusal = await refused;
    expect(refusal.inForce).toBe("reload-2");
    expect(JSON.stringify(refusal.problems)).toContain('has no field \\"idd\\"');
    // The previous bundle is still in force, whole.
    const third = await admit();
    expect(third.status).toBe(200);
    const kept = third.body.decision as { policyDecisions: { policyVersion: string }[] };
    expect(kept.policyDecisions.map((d) => d.policyVersion)).toContain("reload-2");

    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  }, 30_000);
});
