#!/usr/bin/env node
// Runs the compiled CLI (npm ci builds it through the prepare script; or run `npm run build`).
import { existsSync } from "node:fs";

const entry = new URL("../dist/cli/run.js", import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write("envelope: dist/ is missing; run `npm run build` (npm ci does it) first\n");
  process.exit(2);
}
await import(entry.href);
