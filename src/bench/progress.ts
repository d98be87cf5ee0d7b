// Progress of a long benchmark run on stderr. On a terminal, one bar rewritten in place (and kept
// ticking, so a slow step still shows time passing); elsewhere, one line per step, so that CI logs
// stay readable. The estimate scales the plan by how far behind the steps done so far ran.

/** Where progress is written: process.stderr, or a stand-in in tests. */
export interface ProgressStream {
  readonly isTTY?: boolean;
  readonly columns?: number;
  write(text: string): unknown;
}

export interface ProgressOptions {
  /** Seconds of load the whole run plans: the sum of its steps' planned seconds. */
  readonly plannedSeconds: number;
  /** Default process.stderr. */
  readonly stream?: ProgressStream;
  /** Milliseconds of a monotonic clock. Default performance.now. */
  readonly now?: () => number;
}

export interface Progress {
  /** A step starts: what it runs (a scenario and phase), its round of how many, its planned seconds. */
  step(label: string, round: number, rounds: number, plannedSeconds: number): void;
  /** The run is over: the bar gives way to a last line. */
  finish(): void;
}

const barWidth = 24;

export function createProgress(options: ProgressOptions): Progress {
  const stream = options.stream ?? process.stderr;
  const now = options.now ?? (() => performance.now());
  const started = now();
  let plannedDone = 0;
  let current: { label: string; round: number; rounds: number; planned: number } | undefined;
  let ticker: NodeJS.Timeout | undefined;

  const elapsedSeconds = () => (now() - started) / 1000;
  const estimatedTotalSeconds = () => {
    // Overheads (connecting, starting servers) stretch every step alike; until a step is done, trust the plan.
    const pace = plannedDone > 0 ? Math.max(1, elapsedSeconds() / plannedDone) : 1;
    return Math.max(elapsedSeconds(), options.plannedSeconds * pace);
  };
  const line = () => {
    if (current === undefined) return "";
    return `${current.label} round ${current.round}/${current.rounds}  ${clock(elapsedSeconds())} / ~${clock(estimatedTotalSeconds())}`;
  };
  const render = () => {
    const share = Math.min(1, elapsedSeconds() / estimatedTotalSeconds());
    const filled = Math.round(share * barWidth);
    const text = `[${"#".repeat(filled)}${"-".repeat(barWidth - filled)}] ${String(Math.floor(share * 100)).padStart(3)}% ${line()}`;
    // Never wrap: a wrapped line cannot be rewritten in place.
    stream.write(`\r\x1b[K${text.slice(0, Math.max(20, (stream.columns ?? 80) - 1))}`);
  };

  return {
    step(label, round, rounds, plannedSeconds) {
      if (current !== undefined) plannedDone += current.planned;
      current = { label, round, rounds, planned: plannedSeconds };
      if (!stream.isTTY) {
        stream.write(`${line()}\n`);
        return;
      }
      render();
      if (ticker === undefined) {
        ticker = setInterval(render, 500);
        ticker.unref();
      }
    },
    finish() {
      if (ticker !== undefined) clearInterval(ticker);
      const done = `done in ${clock(elapsedSeconds())}\n`;
      stream.write(stream.isTTY ? `\r\x1b[K${done}` : done);
    },
  };
}

/** "1m05s", or "42s" under a minute. */
function clock(seconds: number): string {
  const s = Math.round(seconds);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}
