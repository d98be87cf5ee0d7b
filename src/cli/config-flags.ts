// The configuration flags every command that reads the service's configuration shares, and the
// loading of that configuration in the documented order: defaults, file, environment, flags.
import { type EnvelopeConfig, loadConfig } from "../config/config.js";

/** parseArgs options of the shared flags. */
export const configFlagOptions = {
  config: { type: "string" },
  "data-dir": { type: "string" },
} as const;

export const configFlagsUsage = `  --config FILE        YAML configuration file (or ENVELOPE_CONFIG)
  --data-dir DIR       where the SQLite ledger keeps its file (or ENVELOPE_DATA_DIR; default
                       ./envelope-data)`;

export function loadCliConfig(
  values: { config?: string | undefined; "data-dir"?: string | undefined },
  overrides: Record<string, unknown> = {},
): EnvelopeConfig {
  const file = values.config ?? process.env.ENVELOPE_CONFIG;
  return loadConfig({
    ...(file === undefined ? {} : { file }),
    env: process.env,
    overrides: { ...overrides, ...(values["data-dir"] === undefined ? {} : { "ledger.dataDir": values["data-dir"] }) },
  });
}
