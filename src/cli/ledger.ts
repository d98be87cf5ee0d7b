// Ledger commands: `envelope migrate` applies the ledger's schema migrations (serve applies them
// on start too; run this first when several replicas start at once, or to see what would change),
// and `envelope export ID` writes one envelope's full record as JSON for review.
import { writeFileSync } from "node:fs";
import { toJsonString } from "@bufbuild/protobuf";
import { ConfigError } from "../config/config.js";
import { EnvelopeRecordSchema } from "../gen/envelope/v1/lifecycle_service_pb.js";
import { createLedger } from "../ledger/ledger.js";
import { openLedgerStore } from "../ledger/open.js";
import { LedgerUnavailableError } from "../ledger/store.js";
import { type Command, parseFlags, usageError } from "./command.js";
import { configFlagOptions, configFlagsUsage, loadCliConfig } from "./config-flags.js";

const migrateUsage = `Usage: envelope migrate [options]

Applies the ledger's pending schema migrations to the configured store (SQLite under the data
directory, or PostgreSQL with ledger.store=postgres) and reports the versions applied. Safe to
run more than once and alongside running replicas.

Options:
${configFlagsUsage}
  -h, --help           show this help
`;

const exportUsage = `Usage: envelope export [options] ENVELOPE_ID

Writes everything the ledger holds about one envelope as JSON (the envelope.v1.EnvelopeRecord
message in the proto3 JSON mapping): the request, the decision and grant, every lifecycle event,
and the response or error. Exit status 1 when the ledger has no such envelope.

Options:
${configFlagsUsage}
  --out FILE           write there instead of standard output
  -h, --help           show this help
`;

export const runMigrate: Command = {
  summary: "apply the ledger's schema migrations",
  usage: migrateUsage,
  async run(args) {
    const flags = parseFlags("migrate", migrateUsage, {
      args,
      strict: true,
      allowPositionals: false,
      options: { ...configFlagOptions },
    });
    if (typeof flags === "number") return flags;
    return withStore("migrate", flags.values, async (opened) => {
      const applied = opened.migrated.length === 0 ? "none pending" : `applied ${opened.migrated.join(", ")}`;
      process.stdout.write(`ledger ${opened.store.kind} at ${opened.location}: migrations ${applied}\n`);
      return 0;
    });
  },
};

export const runExport: Command = {
  summary: "write one envelope's full record as JSON",
  usage: exportUsage,
  async run(args) {
    const flags = parseFlags("export", exportUsage, {
      args,
      strict: true,
      allowPositionals: true,
      options: { ...configFlagOptions, out: { type: "string" } },
    });
    if (typeof flags === "number") return flags;
    const [envelopeId, ...extra] = flags.positionals;
    if (envelopeId === undefined || extra.length > 0) {
      return usageError("export", "expected exactly one ENVELOPE_ID", exportUsage);
    }
    return withStore("export", flags.values, async (opened) => {
      const record = await createLedger(opened.store).get(envelopeId);
      if (record === undefined) {
        process.stderr.write(`envelope export: the ledger at ${opened.location} has no envelope ${envelopeId}\n`);
        return 1;
      }
      const json = `${toJsonString(EnvelopeRecordSchema, record, { prettySpaces: 2 })}\n`;
      if (flags.values.out === undefined) process.stdout.write(json);
      else writeFileSync(flags.values.out, json);
      return 0;
    });
  },
};

async function withStore(
  command: string,
  values: { config?: string | undefined; "data-dir"?: string | undefined },
  work: (opened: NonNullable<Awaited<ReturnType<typeof openLedgerStore>>>) => Promise<number>,
): Promise<number> {
  let opened: Awaited<ReturnType<typeof openLedgerStore>>;
  try {
    const config = loadCliConfig(values);
    opened = await openLedgerStore(config.ledger);
  } catch (e) {
    if (e instanceof ConfigError || e instanceof LedgerUnavailableError) {
      process.stderr.write(`envelope ${command}: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (opened === undefined) {
    process.stderr.write(`envelope ${command}: no ledger is configured (ledger.store is none)\n`);
    return 2;
  }
  try {
    return await work(opened);
  } finally {
    await opened.store.close();
  }
}
