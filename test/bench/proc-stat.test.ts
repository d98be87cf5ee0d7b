// The machine's CPU time, from which a run reports how much of it the hypervisor took.
import { existsSync } from "node:fs";
import { expect, it } from "vitest";
import { machineCpuTicks } from "../../src/bench/proc-stat.js";

it.runIf(existsSync("/proc/stat"))("counts the machine's CPU time as it passes, steal within it", async () => {
  const before = machineCpuTicks();
  // Long enough for several clock ticks (100 per second) on every vCPU.
  await new Promise((resolve) => setTimeout(resolve, 200));
  const after = machineCpuTicks();
  expect(after.total).toBeGreaterThan(before.total);
  expect(after.steal).toBeGreaterThanOrEqual(before.steal);
  expect(after.steal - before.steal).toBeLessThanOrEqual(after.total - before.total);
});
