import { readFileSync } from "node:fs";
import { toJsonString } from "@bufbuild/protobuf";
import { ConfigError, loadConfig } from "../config/config.js";
import { admit } from "../core/admit.js";
import type { ErrorEnvelope } from "../gen/envelope/v1/error_pb.js";
import { ErrorEnvelopeSchema } from "../gen/envelope/v1/error_pb.js";
import { ExecutionEnvelopeSchema } from "../gen/envelope/v1/execution_envelope_pb.js";
import { RuntimeRequestSchema } from "../gen/envelope/v1/runtime_request_pb.js";
import type { PolicyBundle } from "../policy/bundle.js";
import { admissionConfig, loadPolicyBundle } from "../server.js";
import { decodeJson } from "../service/decode-request.js";
import { type Command, parseFlags, usageError } from "./command.js";

const usage = `Usage: envelope validate [options] FILE

Checks a RuntimeRequest in the contract's JSON form with exactly the rules Admit applies,
without a server. FILE may be - for standard input.

Options:
  --config FILE   take limits (and policy.file, the CEL policy bundle) from this configuration
                  file (default: embedded defaults, no policy)
  --at TIME       judge times (deadline, clock skew) as of this RFC 3339 time instead of now,
                  e.g. to check a fixture with fixed times
  --json          print the ErrorEnvelope (or the would-be envelope) as JSON
  -h, --help      show this help

Exit status: 0 valid, 1 invalid, 2 usage or configuration error.
`;

export const runValidate: Command = {
  summary: "validate a JSON RuntimeRequest offline",
  usage,
  async run(args) {
    const flags = parse(args);
    if (typeof flags === "number") return flags;
    const [file, ...extra] = flags.positionals;
    if (file === undefined || extra.length > 0) return usageError("validate", "expected exactly one FILE", usage);
    const nowMs = flags.values.at === undefined ? Date.now() : Date.parse(flags.values.at);
    if (Number.isNaN(nowMs)) return usageError("validate", `--at: not an RFC 3339 time: ${flags.values.at}`, usage);

    let bytes: Uint8Array;
    try {
      bytes = readFileSync(file === "-" ? 0 : file);
    } catch (e) {
      process.stderr.write(`envelope validate: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? e}\n`);
      return 2;
    }
    let config: ReturnType<typeof loadConfig>;
    let bundle: PolicyBundle | undefined;
    try {
      config = loadConfig(flags.values.config === undefined ? {} : { file: flags.values.config });
      bundle = config.policy.file === "" ? undefined : loadPolicyBundle(config.policy.file);
    } catch (e) {
      if (e instanceof ConfigError) {
        process.stderr.write(`envelope validate: ${e.message}\n`);
        return 2;
      }
      throw e;
    }

    const decoded = decodeJson(RuntimeRequestSchema, bytes, config.limits.maxMessageBytes);
    const result =
      decoded.kind === "malformed"
        ? ({ kind: "rejected", error: decoded.error } as const)
        : // Offline validation judges the request, not a caller: authorization needs one to judge.
          admit(
            decoded.message,
            { ...admissionConfig(config, bundle === undefined ? undefined : () => bundle), authorization: new Map() },
            {
              nowMs,
              envelopeId: "env_00000000000000000000000000",
              traceId: "00000000000000000000000000000001",
            },
          );
    if (result.kind === "rejected") {
      process.stdout.write(
        flags.values.json
          ? `${toJsonString(ErrorEnvelopeSchema, result.error, { prettySpaces: 2 })}\n`
          : describe(file, result.error),
      );
      return 1;
    }
    if (flags.values.json) {
      process.stdout.write(`${toJsonString(ExecutionEnvelopeSchema, result.envelope, { prettySpaces: 2 })}\n`);
      return 0;
    }
    const { granted, decision } = result.envelope;
    const lines = [`${file}: valid`];
    for (const w of decision?.warnings ?? [])
      lines.push(`  warning ${w.code}${w.field ? ` at ${w.field}` : ""}: ${w.message}`);
    lines.push(
      `  would grant: tokens=${granted?.tokens} costUsdMicros=${granted?.costUsdMicros} steps=${granted?.steps}` +
        Object.entries(granted?.resources ?? {})
          .map(([k, v]) => ` ${k}=${v}`)
          .join(""),
    );
    for (const r of decision?.reasons ?? [])
      lines.push(`  ${r.code}${r.dimension ? ` ${r.dimension}` : ""}: ${r.message}`);
    process.stdout.write(`${lines.join("\n")}\n`);
    return 0;
  },
};

function describe(file: string, error: ErrorEnvelope): string {
  const e = error.error;
  const lines = [`${file}: invalid (${e?.category} ${e?.code}): ${e?.message}`];
  for (const v of e?.violations ?? []) lines.push(`  ${v.field || "(request)"}: ${v.message} [${v.rule}]`);
  return `${lines.join("\n")}\n`;
}

function parse(args: string[]) {
  return parseFlags("validate", usage, {
    args,
    strict: true,
    allowPositionals: true,
    options: { config: { type: "string" }, at: { type: "string" }, json: { type: "boolean" } },
  });
}
