// Load models for the benchmark harness, independent of any protocol: a call is a function that
// reports its response headers (time to first byte) and its completion.
//
// Open loop sends at a target rate whatever the server does, and measures each call from its
// *intended* send time: a stall in the server shows in the latency of every call scheduled during
// it (coordinated omission is avoided by the schedule, not corrected afterwards). Closed loop keeps a
// fixed number of calls in flight and measures from the actual send: it finds saturation
// throughput, but a stall delays only the calls in flight and hides in the percentiles.
import * as hdr from "hdr-histogram-js";

/**
 * Starts one call; `headers` when response headers (or the first message) arrive, then `done`,
 * with the error's category (e.g. a gRPC status name) when the call failed.
 */
export type CallFn = (events: { headers(): void; done(errorCategory?: string): void }) => void;

export interface LoadResult {
  /** Time to response headers, in microseconds. */
  readonly ttft: hdr.Histogram;
  /** Time to the complete response, in microseconds. */
  readonly e2e: hdr.Histogram;
  readonly completed: number;
  readonly errors: number;
  /** Failed calls by category: errors never drop out of the figures. */
  readonly errorsByCategory: Readonly<Record<string, number>>;
  readonly elapsedSeconds: number;
  /** Open loop only: calls scheduled, and how many were sent more than 1 ms after their time. */
  readonly scheduled: number;
  readonly lateSends: number;
}

export interface OpenLoopOptions {
  /** Target arrivals per second. */
  readonly rate: number;
  readonly durationMs: number;
  /** "constant": evenly spaced; "poisson": exponential gaps from a seeded generator. */
  readonly arrival: "constant" | "poisson";
  /** Seed of the Poisson schedule, so that a run can be repeated. Default 1. */
  readonly seed?: number;
  readonly call: CallFn;
}

export interface ClosedLoopOptions {
  readonly concurrency: number;
  readonly durationMs: number;
  readonly call: CallFn;
}

/** Histograms of microseconds from 1 µs to 10 minutes, 3 significant digits. */
export function latencyHistogram(): hdr.Histogram {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 600_000_000,
    numberOfSignificantValueDigits: 3,
  });
}

/** A monotonic clock in microseconds, the load models' time base. */
export const nowUs = (): number => Number(process.hrtime.bigint() / 1000n);

/** A seeded PRNG (mulberry32) for reproducible arrival schedules. */
export function seededRandom(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The intended send times (µs from the start) of a run. */
export function arrivalSchedule(options: Pick<OpenLoopOptions, "rate" | "durationMs" | "arrival" | "seed">): number[] {
  const gapUs = 1e6 / options.rate;
  const endUs = options.durationMs * 1000;
  const random = seededRandom(options.seed ?? 1);
  const times: number[] = [];
  for (let t = 0; t < endUs; ) {
    times.push(t);
    t += options.arrival === "constant" ? gapUs : -Math.log(1 - random()) * gapUs;
  }
  return times;
}

/** Node's timers fire on whole milliseconds: the open loop sends what falls due within one. */
const timerGranularityUs = 1000;

export async function runOpenLoop(options: OpenLoopOptions): Promise<LoadResult> {
  const schedule = arrivalSchedule(options);
  const tally = createTally();
  let lateSends = 0;
  let next = 0;
  let outstanding = 0;
  const start = nowUs();

  await new Promise<void>((resolve) => {
    const finishIfDone = () => {
      if (next === schedule.length && outstanding === 0) resolve();
    };
    const tick = () => {
      // Send everything due before the next timer could fire. A late timer sends a burst, each call
      // timed from its intended time; a call sent early is timed from its actual send.
      const horizon = nowUs() - start + timerGranularityUs;
      while (next < schedule.length && (schedule[next] as number) <= horizon) {
        const due = schedule[next] as number;
        const sentAt = nowUs() - start;
        if (sentAt - due > 1000) lateSends++;
        next++;
        outstanding++;
        tally.start(options.call, start + Math.max(due, sentAt), () => {
          outstanding--;
          finishIfDone();
        });
      }
      if (next < schedule.length) {
        // Sleep on a timer, never spin: a spinning driver would take a core from the server it
        // measures (on two cores, most of the machine the server's threads share).
        const waitUs = (schedule[next] as number) - timerGranularityUs - (nowUs() - start);
        setTimeout(tick, Math.max(1, Math.floor(waitUs / 1000)));
      } else {
        finishIfDone();
      }
    };
    tick();
  });
  return tally.result((nowUs() - start) / 1e6, schedule.length, lateSends);
}

export async function runClosedLoop(options: ClosedLoopOptions): Promise<LoadResult> {
  const tally = createTally();
  const start = nowUs();
  const endUs = start + options.durationMs * 1000;
  const worker = () =>
    new Promise<void>((resolve) => {
      const one = () => {
        if (nowUs() >= endUs) return resolve();
        tally.start(options.call, nowUs(), one);
      };
      one();
    });
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  return tally.result((nowUs() - start) / 1e6, 0, 0);
}

/** What a run accumulates: latencies of completed calls, failures by category. */
export interface Tally {
  /** Starts one call, timed from `fromUs` (a `nowUs()` instant); `after` runs when it ends. */
  start(call: CallFn, fromUs: number, after: () => void): void;
  /** A completed call, for drivers that time calls themselves. */
  succeeded(ttftUs: number, e2eUs: number): void;
  /** `count` failed calls (default 1) of a category. */
  failed(errorCategory: string, count?: number): void;
  result(elapsedSeconds: number, scheduled: number, lateSends: number): LoadResult;
}

/** A tally for one run; drivers other than the load models above (autocannon) share it. */
export function createTally(): Tally {
  const ttft = latencyHistogram();
  const e2e = latencyHistogram();
  const errorsByCategory: Record<string, number> = {};
  let completed = 0;
  const succeeded = (ttftUs: number, e2eUs: number) => {
    completed++;
    e2e.recordValue(Math.max(1, Math.round(e2eUs)));
    ttft.recordValue(Math.max(1, Math.round(ttftUs)));
  };
  const failed = (errorCategory: string, count = 1) => {
    errorsByCategory[errorCategory] = (errorsByCategory[errorCategory] ?? 0) + count;
  };
  return {
    start(call, fromUs, after) {
      let headersAt = 0;
      call({
        headers: () => {
          if (headersAt === 0) headersAt = nowUs();
        },
        done: (errorCategory) => {
          const end = nowUs();
          if (errorCategory === undefined) succeeded((headersAt || end) - fromUs, end - fromUs);
          else failed(errorCategory);
          after();
        },
      });
    },
    succeeded,
    failed,
    result(elapsedSeconds, scheduled, lateSends) {
      const errors = Object.values(errorsByCategory).reduce((a, b) => a + b, 0);
      return { ttft, e2e, completed, errors, errorsByCategory, elapsedSeconds, scheduled, lateSends };
    },
  };
}
