// The machine's CPU time as Linux counts it (/proc/stat), for what a benchmark slice cannot see
// from inside its processes: time the hypervisor gave to other guests while ours waited.
import { readFileSync } from "node:fs";

export interface MachineCpuTicks {
  /** All vCPU time so far, in clock ticks. */
  readonly total: number;
  /** Of it, time stolen by the hypervisor. */
  readonly steal: number;
}

/** The machine's CPU time so far; zeros where /proc/stat is not there (the share is then left out). */
export function machineCpuTicks(): MachineCpuTicks {
  let line: string;
  try {
    line = readFileSync("/proc/stat", "latin1").slice(0, 512).split("\n", 1)[0] ?? "";
  } catch {
    return { total: 0, steal: 0 };
  }
  // "cpu  user nice system idle iowait irq softirq steal guest guest_nice": guest time is already
  // counted in user and nice, so the total stops at steal.
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (ticks.length < 8 || ticks.some((t) => !Number.isFinite(t))) return { total: 0, steal: 0 };
  return { total: ticks.reduce((a, b) => a + b, 0), steal: ticks[7] as number };
}
