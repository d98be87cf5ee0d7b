// The HTTP port: Connect, gRPC-Web and gRPC (via connect-node) plus liveness and readiness routes,
// over HTTP/1.1 and cleartext HTTP/2 on one port. Node's http2 server does not fall back to HTTP/1.1
// without TLS, so each connection's first bytes decide: the HTTP/2 preface ("PRI * HTTP/2.0") goes to
// an http2 server, anything else to an http server; both share one request handler. http2 reads the
// socket's native handle and would miss the bytes already read, so an HTTP/2 connection is handed
// over through a stream that replays them first (see replaying()).
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Duplex } from "node:stream";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { Logger } from "../telemetry/log.js";

export interface HttpTransportOptions {
  readonly handlers: Map<string, UniversalHandler>;
  /** Whether the service should receive traffic (readiness); liveness is the process answering. */
  readonly ready: () => boolean;
  readonly log: Logger;
}

export interface ListeningServer {
  /** "host:port" actually bound (port 0 resolves to the chosen port). */
  readonly address: string;
  readonly port: number;
  /** Stops accepting, then ends open connections once in-flight requests finish. */
  close(): Promise<void>;
}

/** A request listener for both http and http2 servers. */
export type NodeHandlerFn = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

export function createHttpHandler(options: HttpTransportOptions): NodeHandlerFn {
  const { handlers, ready, log } = options;
  return (req, res) => {
    const path = (req.url ?? "").split("?", 1)[0] ?? "";
    if (path === "/healthz" || path === "/readyz") {
      const ok = path === "/healthz" || ready();
      const body = JSON.stringify({ status: ok ? "ok" : "unavailable" });
      res.writeHead(ok ? 200 : 503, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(body);
      return;
    }
    const handler = handlers.get(path);
    if (handler === undefined) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ code: "not_found", message: `no route for ${path}` }));
      return;
    }
    const uReq = universalRequestFromNodeRequest(req, res, undefined, undefined);
    handler(uReq)
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch((cause: unknown) => {
        // The client went away mid-response; nothing is left to answer.
        log.debug("http.response_failed", { path, cause });
      });
  };
}

const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Listens on host:port with HTTP/1.1 and h2c on the same port. */
export async function listenHttp(
  handler: NodeHandlerFn,
  host: string,
  port: number,
  log: Logger,
): Promise<ListeningServer> {
  const h1 = http.createServer(handler as http.RequestListener);
  h1.keepAliveTimeout = 5_000;
  // HTTP/1.1 keep-alive connections would hold a stopping server open: count the requests in
  // flight on each, so close() can end idle connections at once and busy ones when they finish.
  let closing = false;
  const h1InFlight = new Map<net.Socket, number>();
  h1.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    h1InFlight.set(socket, (h1InFlight.get(socket) ?? 0) + 1);
    res.once("close", () => {
      const left = (h1InFlight.get(socket) ?? 1) - 1;
      h1InFlight.set(socket, left);
      if (left === 0 && closing) socket.destroy();
    });
  });
  const h2 = http2.createServer({}, handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
  const sessions = new Set<http2.Http2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  const sockets = new Set<net.Socket>();

  const tcp = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", (cause) => log.debug("http.socket_error", { cause }));
    let seen = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, h2Preface.length);
      const isH2 = seen.subarray(0, n).equals(h2Preface.subarray(0, n));
      if (isH2 && seen.length < h2Preface.length) return; // wait for the whole preface
      socket.off("data", onData);
      if (isH2) {
        h2.emit("connection", replaying(socket, seen));
        return;
      }
      socket.pause();
      socket.unshift(seen);
      h1InFlight.set(socket, 0);
      socket.once("close", () => h1InFlight.delete(socket));
      h1.emit("connection", socket);
      socket.resume();
    };
    socket.on("data", onData);
  });

  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(port, host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });
  const bound = tcp.address() as net.AddressInfo;

  return {
    address: `${formatHost(bound.address)}:${bound.port}`,
    port: bound.port,
    async close() {
      closing = true;
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      for (const session of sessions) session.close();
      for (const [socket, inFlight] of h1InFlight) if (inFlight === 0) socket.destroy();
      // Give in-flight requests a moment, then end whatever is left.
      const timer = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, 2_000);
      await closed;
      clearTimeout(timer);
    },
  };
}

/** A duplex over `socket` whose readable side yields `head` and then whatever the socket receives. */
function replaying(socket: net.Socket, head: Buffer): Duplex {
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      socket.write(chunk, callback);
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(error, callback) {
      socket.destroy(error ?? undefined);
      callback(error);
    },
  });
  duplex.push(head);
  socket.on("data", (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.once("end", () => duplex.push(null));
  socket.once("close", () => duplex.destroy());
  socket.on("error", (error) => duplex.destroy(error));
  return duplex;
}

export function formatHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}
