// The ledger's background work on every replica: the deadline sweeper moves envelopes past their
// deadline (plus a grace period) to expired, and retention compaction deletes old terminal
// envelopes. Runs are serialized; on several replicas the stores' row locks keep sweeps apart.
import type { Logger } from "../telemetry/log.js";
import type { Ledger } from "./ledger.js";

export interface MaintenanceOptions {
  readonly expiryGraceMs: number;
  readonly sweepIntervalMs: number;
  /** 0 keeps everything. */
  readonly retentionMs: number;
}

export interface Maintenance {
  /** One sweep (and compaction) now; what the timer runs. */
  runOnce(): Promise<{ expired: number; compacted: number }>;
  stop(): Promise<void>;
}

export function startMaintenance(ledger: Ledger, options: MaintenanceOptions, log: Logger): Maintenance {
  let running: Promise<unknown> = Promise.resolve();
  const runOnce = async () => {
    let expired = 0;
    // Sweep in pages until nothing is left, so a backlog after downtime clears in one run.
    for (;;) {
      const events = await ledger.expireDue(options.expiryGraceMs, 1000);
      expired += events.length;
      if (events.length < 1000) break;
    }
    const compacted = options.retentionMs > 0 ? await ledger.compact(options.retentionMs) : 0;
    if (expired > 0 || compacted > 0) log.info("ledger.maintenance", { expired, compacted });
    return { expired, compacted };
  };
  const tick = () => {
    running = running.then(runOnce).catch((cause: unknown) => log.error("ledger.maintenance.failed", { cause }));
  };
  const timer = setInterval(tick, options.sweepIntervalMs);
  timer.unref();
  return {
    runOnce: () => {
      const run = running.then(runOnce);
      running = run.catch(() => undefined);
      return run;
    },
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
