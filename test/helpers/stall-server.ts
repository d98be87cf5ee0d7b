// A gRPC server that answers at once but freezes its event loop for STALL_MS every PERIOD_MS, as a
// server does under a long GC pause or a blocking call. Prints "listening <port>".
import * as grpc from "@grpc/grpc-js";
import { rawUnaryMethod } from "../../src/transport/grpc-server.js";

const stallMs = Number(process.env.STALL_MS ?? 150);
const periodMs = Number(process.env.PERIOD_MS ?? 500);
const server = new grpc.Server();
server.addService(
  { Ping: rawUnaryMethod("/bench.Stall/Ping") },
  {
    Ping: (_call: unknown, callback: grpc.sendUnaryData<Buffer>) => callback(null, Buffer.alloc(0)),
  },
);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  process.stdout.write(`listening ${port}\n`);
  setInterval(() => {
    const until = Date.now() + stallMs;
    while (Date.now() < until) {
      // busy: nothing else runs in this process meanwhile
    }
  }, periodMs);
});
