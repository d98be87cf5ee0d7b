// In-process cost of evaluating a policy bundle on the sample request: the whole bundle, then each
// rule alone, in microseconds per evaluation (median of rounds after a warm-up).
//
//   tsx bench/policy-eval.ts [FILE]   (default: examples/policy.yaml)
import { evaluatePolicy } from "../src/policy/evaluate.js";
import { loadPolicyFile } from "../src/policy/load.js";
import { freshRequest } from "../test/helpers/requests.js";

const file = process.argv[2] ?? "examples/policy.yaml";
const loaded = loadPolicyFile(file);
if (loaded.kind !== "ok") throw new Error(`${file}: ${loaded.problems.join("; ")}`);
const bundle = loaded.bundle;
const input = {
  request: freshRequest(),
  kind: "agent_workflow",
  requested: { tokens: 4000, costUsdMicros: 50_000, steps: 6, resources: {} },
  caller: undefined,
  decisionId: "env/policy",
};

/** Median microseconds per evaluation of `b` over 5 rounds of `n`. */
function measure(b: typeof bundle, n = 50_000): number {
  for (let i = 0; i < n / 5; i++) evaluatePolicy(b, input);
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) evaluatePolicy(b, input);
    rounds.push(Number(process.hrtime.bigint() - t0) / n / 1000);
  }
  return rounds.sort((x, y) => x - y)[2] as number;
}

process.stdout.write(`${file} (version ${bundle.version}, ${bundle.rules.length} rules), node ${process.version}\n`);
process.stdout.write(`whole bundle ${measure(bundle).toFixed(2)} us/evaluation\n`);
for (const rule of bundle.rules) {
  process.stdout.write(`  ${rule.name.padEnd(28)} ${measure({ ...bundle, rules: [rule] }).toFixed(2)} us\n`);
}
