// `envelope token` in process: --file, and usage errors (the command itself runs as a child process
// in test/integration/cli.test.ts).
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { hashToken } from "../../src/auth/tokens.js";
import { runToken } from "../../src/cli/token.js";

const dir = mkdtempSync(join(tmpdir(), "envelope-token-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
    stdout += String(chunk);
    return true;
  });
  vi.spyOn(process.stderr, "write").mockImplementation((chunk) => {
    stderr += String(chunk);
    return true;
  });
  const code = await runToken.run(args);
  vi.restoreAllMocks();
  return { code, stdout, stderr };
}

describe("envelope token", () => {
  it("has a usage for --help that says the file holds hashes, never tokens", () => {
    expect(runToken.usage).toContain("Usage: envelope token create NAME [--file FILE]");
    expect(runToken.usage).toContain("never the token");
  });

  it("create --file appends the line to the tokens file (mode 0600), never the token", async () => {
    const file = join(dir, "tokens.yaml");
    const first = await run(["create", "ci", "--file", file]);
    const second = await run(["create", "ops", "--file", file]);
    expect(first.code).toBe(0);
    expect(first.stderr).toContain(`ci added to ${file}`);
    const [a, b] = [first.stdout.trim(), second.stdout.trim()];
    expect(readFileSync(file, "utf8")).toBe(`ci: ${hashToken(a)}\nops: ${hashToken(b)}\n`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it.each([
    [[], "expected: create NAME, or hash NAME"],
    [["rotate", "ci"], "expected: create NAME, or hash NAME"],
    [["create"], "expected: create NAME, or hash NAME"],
    [["create", "bad name"], 'NAME must be letters, digits and "_.@-", at most 64: "bad name"'],
    [["hash", "ci", "--file", "x"], "--file goes with create"],
    [["create", "ci", "--bogus"], "Unknown option '--bogus'"],
  ])("refuses %j with status 2 and the usage", async (args, message) => {
    const out = await run(args);
    expect(out.code).toBe(2);
    expect(out.stderr).toContain(message);
    expect(out.stderr).toContain("Usage: envelope token create NAME");
    expect(out.stdout).toBe("");
  });
});
