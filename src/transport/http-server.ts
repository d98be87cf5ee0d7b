// The HTTP port: Connect, gRPC-Web and gRPC (via connect-node) plus liveness and readiness routes,
// over HTTP/1.1 and cleartext HTTP/2 on one port. Node's http2 server does not fall back to HTTP/1.1
// without TLS, so each connection's first bytes decide: the HTTP/2 preface ("PRI * HTTP/2.0") goes to
// an http2 server, anything else to an http server; both share one request handler. http2 reads the
// socket's native handle and would miss the bytes already read, so an HTTP/2 connection is handed
// over through a stream that replays them first (see replaying()). With TLS, ALPN decides instead:
// one http2 secure server that also speaks HTTP/1.1 (allowHTTP1).
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Duplex } from "node:stream";
import type * as tls from "node:tls";
import { createContextValues } from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { Logger } from "../telemetry/log.js";
import { connectionInfo, connectionKey } from "./authentication.js";

export interface HttpTransportOptions {
  readonly handlers: Map<string, UniversalHandler>;
  /** Whether the service should receive traffic (readiness); liveness is the process answering. */
  readonly ready: () => boolean;
  readonly log: Logger;
  /** Hand each request's connection (peer, TLS client certificate) to the handlers, which authenticate. */
  readonly withConnection?: boolean;
}

/** PEM contents of a TLS listener; with clientCa, clients are asked for a certificate signed by it. */
export interface HttpTls {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly clientCa?: Buffer | undefined;
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
  const { handlers, ready, log, withConnection } = options;
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
    let contextValues: ReturnType<typeof createContextValues> | undefined;
    if (withConnection === true) {
      contextValues = createContextValues();
      contextValues.set(connectionKey, connectionInfo(req.socket as Partial<tls.TLSSocket>));
    }
    const uReq = universalRequestFromNodeRequest(req, res, undefined, contextValues);
    handler(uReq)
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch((cause: unknown) => {
        // The client went away mid-response; nothing is left to answer.
        log.debug("http.response_failed", { path, cause });
      });
  };
}

const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Listens on host:port with HTTP/1.1 and HTTP/2 on the same port: h2c, or with `tls` both over TLS. */
export async function listenHttp(
  handler: NodeHandlerFn,
  host: string,
  port: number,
  log: Logger,
  tls?: HttpTls,
): Promise<ListeningServer> {
  const connections = connectionTracker();
  const server =
    tls === undefined ? cleartextServer(handler, log, connections) : secureServer(handler, log, tls, connections);

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address() as net.AddressInfo;

  return {
    address: `${formatHost(bound.address)}:${bound.port}`,
    port: bound.port,
    close: () => connections.close(server),
  };
}

type ConnectionTracker = ReturnType<typeof connectionTracker>;

/**
 * The open connections of a listener, so that close() can end them: HTTP/2 sessions close gracefully;
 * HTTP/1.1 keep-alive connections would hold a stopping server open, so each counts its requests in
 * flight, and close() ends idle connections at once and busy ones when they finish.
 */
function connectionTracker() {
  let closing = false;
  const h1InFlight = new Map<net.Socket, number>();
  const sessions = new Set<http2.Http2Session>();
  const sockets = new Set<net.Socket>();
  return {
    socket(socket: net.Socket) {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    },
    h1Socket(socket: net.Socket) {
      h1InFlight.set(socket, 0);
      socket.once("close", () => h1InFlight.delete(socket));
    },
    h1Request(socket: net.Socket, res: http.ServerResponse | http2.Http2ServerResponse) {
      h1InFlight.set(socket, (h1InFlight.get(socket) ?? 0) + 1);
      res.once("close", () => {
        const left = (h1InFlight.get(socket) ?? 1) - 1;
        h1InFlight.set(socket, left);
        if (left === 0 && closing) socket.destroy();
      });
    },
    session(session: http2.Http2Session) {
      sessions.add(session);
      session.once("close", () => sessions.delete(session));
    },
    async close(server: net.Server) {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
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

/** HTTP/1.1 and h2c on one TCP port, told apart by the connection's first bytes. */
function cleartextServer(handler: NodeHandlerFn, log: Logger, connections: ConnectionTracker): net.Server {
  const h1 = http.createServer(handler as http.RequestListener);
  h1.keepAliveTimeout = 5_000;
  h1.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => connections.h1Request(req.socket, res));
  const h2 = http2.createServer({}, handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
  h2.on("session", (session) => connections.session(session));

  return net.createServer((socket) => {
    connections.socket(socket);
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
      connections.h1Socket(socket);
      h1.emit("connection", socket);
      socket.resume();
    };
    socket.on("data", onData);
  });
}

/**
 * HTTP/2 and HTTP/1.1 over TLS, chosen by ALPN. With a client CA, the handshake asks for a client
 * certificate but does not require one: a request without a verified certificate reaches the
 * handlers, which refuse it with a structured error (and the health routes stay open).
 */
function secureServer(handler: NodeHandlerFn, log: Logger, tls: HttpTls, connections: ConnectionTracker): net.Server {
  const server = http2.createSecureServer(
    {
      cert: tls.cert,
      key: tls.key,
      allowHTTP1: true,
      ...(tls.clientCa === undefined ? {} : { ca: tls.clientCa, requestCert: true, rejectUnauthorized: false }),
    },
    handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
  server.on("connection", (socket: net.Socket) => connections.socket(socket));
  server.on("secureConnection", (socket: tls.TLSSocket) => {
    socket.on("error", (cause) => log.debug("http.socket_error", { cause }));
    if (socket.alpnProtocol !== "h2") connections.h1Socket(socket);
  });
  server.on("tlsClientError", (cause) => log.debug("http.tls_error", { cause }));
  server.on("session", (session) => connections.session(session));
  server.on("request", (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    if (req.httpVersionMajor === 1) connections.h1Request(req.socket as net.Socket, res);
  });
  return server;
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
