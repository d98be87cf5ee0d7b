// Floor servers for the standard benchmark: an empty unary method (empty request, empty response) on a
// bare @grpc/grpc-js server or on a connect-node HTTP/2 server, i.e. what each stack costs before any
// admission work; and "grpc-js-payload", which answers any request with a fixed response as large as
// Admit's, so that a run can tell the cost of carrying Admit's bytes from the cost of deciding.
// "connect-node-http1" is the empty Connect unary over HTTP/1.1, the floor of Connect calls with
// JSON or binary bodies alike.
// Prints "listening <port>" on stdout. Usage: floor-server.ts grpc-js|grpc-js-payload|connect-node|connect-node-http1
import * as http from "node:http";
import * as http2 from "node:http2";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { AdmissionService } from "../gen/envelope/v1/admission_service_pb.js";
import { rawUnaryMethod } from "../transport/grpc-server.js";

const kind = process.argv[2];
const path = `/${AdmissionService.typeName}/GetCapabilities`;
const empty = Buffer.alloc(0);
/** About the size of Admit's answer to the sample request. */
const admitSizedAnswer = Buffer.alloc(940, 0x2a);

if (kind === "grpc-js" || kind === "grpc-js-payload") {
  const answer = kind === "grpc-js" ? empty : admitSizedAnswer;
  const server = new grpc.Server();
  server.addService(
    { GetCapabilities: rawUnaryMethod(path) },
    { GetCapabilities: (_call: unknown, callback: grpc.sendUnaryData<Buffer>) => callback(null, answer) },
  );
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err;
    process.stdout.write(`listening ${port}\n`);
  });
} else if (kind === "connect-node" || kind === "connect-node-http1") {
  const handler = connectNodeAdapter({
    routes: (router) =>
      router.service(AdmissionService, {
        getCapabilities: () => ({}),
        admit: () => {
          throw new Error("not part of the floor");
        },
      }),
  });
  const server = kind === "connect-node" ? http2.createServer(handler) : http.createServer(handler);
  server.listen(0, "127.0.0.1", () => {
    process.stdout.write(`listening ${(server.address() as { port: number }).port}\n`);
  });
} else {
  process.stderr.write("usage: floor-server.ts grpc-js|grpc-js-payload|connect-node|connect-node-http1\n");
  process.exit(2);
}
