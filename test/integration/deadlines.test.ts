// The caller's deadline and cancellation reach the handler: a recorder that waits (as a slow ledger
// would) sees its signal abort with the right reason, and the caller gets the matching status.
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EnvelopeRecorder } from "../../src/service/admission-service.js";
import { freshRequest } from "../helpers/requests.js";
import { type ProtocolName, startTestServer, type TestServer } from "../helpers/server.js";

interface Seen {
  readonly reason: string;
  /** The code, when the reason is a ConnectError. */
  readonly code: Code | undefined;
}

let t: TestServer;
const seen: Seen[] = [];
let waiting: (() => void) | undefined;

/** Never finishes by itself: resolves only through its signal, recording why and when. */
const stalledRecorder: EnvelopeRecorder = {
  record(_envelope, { signal }) {
    return new Promise<never>((_resolve, reject) => {
      waiting?.();
      signal.addEventListener("abort", () => {
        const reason = signal.reason as Error;
        seen.push({ reason: reason.name, code: reason instanceof ConnectError ? reason.code : undefined });
        reject(signal.reason);
      });
    });
  },
};

beforeAll(async () => {
  t = await startTestServer({ recorder: stalledRecorder });
});
afterAll(async () => {
  await t.close();
});

async function failure(call: Promise<unknown>): Promise<ConnectError> {
  return call.then(
    () => expect.fail("expected the call to fail"),
    (e: unknown) => ConnectError.from(e),
  );
}

const protocols: ProtocolName[] = ["gRPC (grpc-js port)", "Connect JSON over HTTP/1.1", "gRPC-Web over HTTP/1.1"];

describe.each(protocols)("over %s", (protocol) => {
  it("aborts the handler when the call's deadline passes", async () => {
    seen.length = 0;
    // Long enough that the call reaches the recorder before its deadline even on a loaded machine
    // (a call that arrives already expired is answered without reaching it).
    const error = await failure(t.clients[protocol].admit(freshRequest(), { timeoutMs: 1_000 }));
    expect(error.code).toBe(Code.DeadlineExceeded);
    // Without the abort the recorder would wait forever.
    await expect.poll(() => seen.length, { timeout: 5_000 }).toBe(1);
    // The server's own deadline timer and the client giving up at the same instant race (over
    // HTTP/1.1, connect-node may report the closed request as a ConnectError); either way the
    // handler is told to stop, for the deadline or the client going away.
    const stopped = seen[0];
    if (stopped?.reason === "ConnectError") expect([Code.DeadlineExceeded, Code.Canceled]).toContain(stopped.code);
    else expect(["TimeoutError", "AbortError"]).toContain(stopped?.reason);
  });

  it("aborts the handler with AbortError when the client cancels", async () => {
    seen.length = 0;
    const controller = new AbortController();
    const started = new Promise<void>((resolve) => {
      waiting = resolve;
    });
    const call = failure(t.clients[protocol].admit(freshRequest(), { signal: controller.signal }));
    await started;
    controller.abort();
    const error = await call;
    expect(error.code).toBe(Code.Canceled);
    await expect.poll(() => seen.length, { timeout: 5_000 }).toBe(1);
    expect(seen[0]?.reason).toBe("AbortError");
    waiting = undefined;
  });
});

it("logs no failure for calls the caller stopped", async () => {
  expect(t.logs.filter((l) => l.event === "call.failed")).toEqual([]);
});
