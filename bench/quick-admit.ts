// The standard benchmark from the TypeScript sources, without a build: `envelope bench run` with
// the disclosure on standard output unless --out is given. The servers then run through tsx too;
// `npm run bench` runs the compiled command instead, which is what committed disclosures record.
import { main } from "../src/cli/main.js";

const args = process.argv.slice(2);
process.exitCode = await main([
  "bench",
  "run",
  ...(args.some((a) => a === "--out" || a.startsWith("--out=")) ? [] : ["--out", "-"]),
  ...args,
]);
