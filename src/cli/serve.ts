import { ConfigError, configKeys, envName } from "../config/config.js";
import { startServer } from "../server.js";
import { createLogger } from "../telemetry/log.js";
import { type Command, parseFlags } from "./command.js";
import { configFlagOptions, configFlagsUsage, loadCliConfig } from "./config-flags.js";

const usage = `Usage: envelope serve [options]

Runs the admission service: gRPC on 127.0.0.1:50051, and Connect, gRPC-Web, gRPC and the
/healthz and /readyz routes on 127.0.0.1:8080, unless configured otherwise.

Admitted envelopes are recorded in the ledger before Admit answers: by default a SQLite file
under ./envelope-data (see --data-dir), or PostgreSQL with ledger.store=postgres and
ledger.postgresUrl for several replicas on one database.

Options:
${configFlagsUsage}
  --grpc-listen ADDR   gRPC listen address, host:port (default 127.0.0.1:50051)
  --http-listen ADDR   HTTP listen address, host:port (default 127.0.0.1:8080)
  --ledger STORE       sqlite (default), postgres or none (nothing recorded; no LifecycleService)
  --log-level LEVEL    debug, info, warn or error (default info)
  -h, --help           show this help

Configuration is applied in this order: embedded defaults, the file, environment variables,
flags. Keys and their environment variables:
${configKeys.map((k) => `  ${k.padEnd(34)} ${envName(k)}`).join("\n")}

Caller authentication is per listener (grpc.auth, http.auth): token, jwt or mtls. A listener
without it (auth none, the default) may only listen on loopback, for development, and the server
warns at start; a non-loopback address without authentication refuses to start.
On SIGTERM or SIGINT the server reports NOT_SERVING, waits shutdown.drain, then stops.

With policy.file, the CEL policy bundle is compiled at start (a bad one stops start-up with its
problems) and again on SIGHUP: a good bundle replaces the one in force as a whole, for the next
call, and is logged with its version; a bad one is refused and logged, and the bundle in force
stays. "envelope policy check FILE" checks a bundle offline.
`;

export const runServe: Command = {
  summary: "run the admission service",
  usage,
  async run(args) {
    const flags = parse(args);
    if (typeof flags === "number") return flags;
    const overrides: Record<string, unknown> = {};
    if (flags.values["grpc-listen"] !== undefined) overrides["grpc.listen"] = flags.values["grpc-listen"];
    if (flags.values["http-listen"] !== undefined) overrides["http.listen"] = flags.values["http-listen"];
    if (flags.values["log-level"] !== undefined) overrides["log.level"] = flags.values["log-level"];
    if (flags.values.ledger !== undefined) overrides["ledger.store"] = flags.values.ledger;
    try {
      const config = loadCliConfig(flags.values, overrides);
      const log = createLogger({ level: config.log.level });
      const server = await startServer(config, { log });
      // SIGHUP reloads the policy bundle (the server logs what came of it) instead of ending the process.
      const reload = () => void server.reloadPolicy();
      process.on("SIGHUP", reload);
      await new Promise<void>((resolve) => {
        const stop = (signal: NodeJS.Signals) => {
          process.once(signal, () => process.exit(1)); // a second signal: stop now
          log.info("server.stopping", { signal, drainMs: config.shutdown.drainMs });
          server.setServing(false);
          setTimeout(() => void server.close().then(resolve), config.shutdown.drainMs);
        };
        process.once("SIGTERM", stop);
        process.once("SIGINT", stop);
      });
      process.off("SIGHUP", reload);
      return 0;
    } catch (e) {
      if (e instanceof ConfigError) {
        process.stderr.write(`envelope serve: ${e.message}\n`);
        return 2;
      }
      if ((e as NodeJS.ErrnoException).code === "EADDRINUSE" || /No address added|EADDRINUSE/.test(String(e))) {
        process.stderr.write(`envelope serve: cannot listen: ${(e as Error).message}\n`);
        return 1;
      }
      throw e;
    }
  },
};

function parse(args: string[]) {
  return parseFlags("serve", usage, {
    args,
    strict: true,
    allowPositionals: false,
    options: {
      ...configFlagOptions,
      "grpc-listen": { type: "string" },
      "http-listen": { type: "string" },
      "log-level": { type: "string" },
      ledger: { type: "string" },
    },
  });
}
