// A CallFn for one HTTP/1.1 POST over keep-alive connections: Connect unary calls and plain JSON
// endpoints alike. Timed in microseconds by the load models (autocannon only resolves milliseconds).
import * as http from "node:http";
import type { CallFn } from "./load.js";

export interface HttpCallOptions {
  /** e.g. "http://127.0.0.1:8080/envelope.v1.AdmissionService/Admit". */
  readonly url: string;
  readonly contentType: string;
  readonly body: () => Buffer;
  /** Keep-alive connections to open at most; set it to the load's concurrency. */
  readonly connections: number;
  /** Per-call deadline. Default 30 s. */
  readonly timeoutMs?: number;
}

/** Calls that answer 2xx complete; others fail with the category "http_<status>" or "network". */
export function httpPostCall(options: HttpCallOptions): { call: CallFn; close(): void } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.connections });
  const url = new URL(options.url);
  const call: CallFn = (events) => {
    const body = options.body();
    // A failing socket may report more than once; a call ends once.
    let ended = false;
    const done = (category?: string) => {
      if (ended) return;
      ended = true;
      events.done(category);
    };
    const req = http.request(
      url,
      {
        method: "POST",
        agent,
        timeout: options.timeoutMs ?? 30_000,
        headers: { "content-type": options.contentType, "content-length": body.byteLength },
      },
      (res) => {
        events.headers();
        res.on("data", () => {});
        res.on("end", () => {
          const status = res.statusCode ?? 0;
          done(status >= 200 && status < 300 ? undefined : `http_${status}`);
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => done("network"));
    req.end(body);
  };
  return { call, close: () => agent.destroy() };
}
