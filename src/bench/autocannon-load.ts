// Closed-loop HTTP/1.1 load driven by autocannon: N keep-alive connections, one request in flight
// on each, every request built with a fresh body. Calls land in the same tally as the project's own
// load models, so the figures are comparable field for field.
//
// What is measured: E2E is autocannon's own per-response time (process.hrtime from queuing the
// request on its socket to the parsed end of the response), converted from fractional
// milliseconds to microseconds. autocannon reports no time to first byte, so TTFT is taken from
// hooks on its client: from the client's "request" event (just before the write) to its "headers"
// event; for an answer that arrives in one read, the two coincide. Both are timed from the actual
// send: this is a closed loop, not coordinated-omission safe. autocannon's own rate limiting
// (overallRate) paces per second and does not time calls from their intended send, so open-loop
// figures come from load.ts's runOpenLoop instead.
import type { EventEmitter } from "node:events";
import type autocannon from "autocannon";
import { createTally, type LoadResult, nowUs } from "./load.js";

export interface AutocannonLoadOptions {
  /** e.g. "http://127.0.0.1:8080/envelope.v1.AdmissionService/Admit". */
  readonly url: string;
  readonly contentType: string;
  /** The body of each request, called once per request. */
  readonly body: () => Buffer;
  /** Connections, each with one request in flight: the closed loop's concurrency. */
  readonly connections: number;
  readonly durationMs: number;
  /** Per-request deadline, after which autocannon counts a timeout; 1 s at least. Default 30 s. */
  readonly timeoutMs?: number;
}

let loaded: Promise<typeof autocannon> | undefined;

/**
 * Loads autocannon, once. It is a development dependency, loaded on demand so that the CLI, which
 * imports this module, starts without it; load it before measuring, or the first run pays for it.
 */
export function loadAutocannon(): Promise<typeof autocannon> {
  loaded ??= import("autocannon").then((m) => m.default);
  return loaded;
}

/**
 * Runs autocannon for `durationMs`. 2xx answers complete; other answers fail as "http_<status>",
 * requests that timed out as "timeout", and requests lost otherwise (a connection error, or a
 * connection closed without an answer, which autocannon itself silently retries) as "network".
 * Requests still in flight when the run stops are dropped uncounted, as autocannon does.
 */
export async function runAutocannonClosedLoop(options: AutocannonLoadOptions): Promise<LoadResult> {
  const run = await loadAutocannon();
  const tally = createTally();
  const request: autocannon.Request = {
    method: "POST",
    path: new URL(options.url).pathname,
    headers: { "content-type": options.contentType },
    setupRequest: (built) => ({ ...built, body: options.body() }),
  };
  // Every request sent ends answered, lost, or in flight at the end (at most one per connection):
  // losses are counted as what remains, since autocannon reports only some of them as errors.
  let sent = 0;
  let answered = 0;
  let timeouts = 0;
  const connections: { outstanding: boolean }[] = [];
  const start = nowUs();
  await new Promise<void>((resolve, reject) => {
    const instance = run(
      {
        url: options.url,
        connections: options.connections,
        pipelining: 1,
        duration: options.durationMs / 1000,
        timeout: Math.max(1, (options.timeoutMs ?? 30_000) / 1000),
        // autocannon stops at its first sample after the duration: sample often so a run ends on time.
        sampleInt: 10,
        requests: [request],
        setupClient: (client) => {
          const connection = { outstanding: false };
          connections.push(connection);
          let sentAt = 0;
          let headersAt = 0;
          (client as EventEmitter).on("request", () => {
            sent++;
            connection.outstanding = true;
            sentAt = nowUs();
            headersAt = 0;
          });
          client.on("headers", () => {
            headersAt = nowUs();
          });
          client.on("response", (status, _bytes, responseTimeMs) => {
            answered++;
            connection.outstanding = false;
            if (status < 200 || status >= 300) return tally.failed(`http_${status}`);
            const e2eUs = responseTimeMs * 1000;
            // "request" fires before autocannon builds the request and starts its own clock, so the
            // headers can seem to come after the end by that build time: never report TTFT > E2E.
            tally.succeeded(headersAt > sentAt ? Math.min(headersAt - sentAt, e2eUs) : e2eUs, e2eUs);
          });
        },
      },
      (error) => (error ? reject(error) : resolve()),
    );
    instance.on("reqError", (error: unknown) => {
      if (error instanceof Error && error.message === "request timed out") timeouts++;
    });
  });
  const lost = sent - answered - connections.filter((c) => c.outstanding).length;
  const timedOut = Math.min(timeouts, lost);
  if (timedOut > 0) tally.failed("timeout", timedOut);
  if (lost > timedOut) tally.failed("network", lost - timedOut);
  return tally.result((nowUs() - start) / 1e6, 0, 0);
}
