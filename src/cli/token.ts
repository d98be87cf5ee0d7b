// `envelope token create NAME` makes a static API token and the line that admits it; `envelope token
// hash NAME` makes the line for a token read from standard input. The tokens file holds only the
// lines: the token itself is printed once and stored nowhere.
import { appendFileSync, readFileSync } from "node:fs";
import { createToken, isTokenName, tokenLine } from "../auth/tokens.js";
import { type Command, parseFlags, usageError } from "./command.js";

const usage = `Usage: envelope token create NAME [--file FILE]
       envelope token hash NAME < TOKEN

Static API tokens authenticate callers on a port with auth token (grpc.auth, http.auth). The
tokens file (tokens.file) holds one line per token, "NAME: sha256:HEX": the SHA-256 of the token,
never the token. A caller sends "authorization: Bearer TOKEN" and is recorded as token:NAME.

create prints a new random token (256 bits) on standard output, once, and the line for the
tokens file on standard error; with --file, appends the line to FILE instead (created mode 0600).
hash reads a token (at least 32 characters) from standard input and prints its line.
A running server reads the tokens file at start: restart it after a change.

Options:
  --file FILE   create: append the line to this tokens file
  -h, --help    show this help

Exit status: 0 done, 2 usage error.
`;

export const runToken: Command = {
  summary: "create a static API token, or hash one, for the tokens file",
  usage,
  async run(args) {
    const flags = parseFlags("token", usage, {
      args,
      strict: true,
      allowPositionals: true,
      options: { file: { type: "string" } },
    });
    if (typeof flags === "number") return flags;
    const [action, name, ...extra] = flags.positionals;
    if ((action !== "create" && action !== "hash") || name === undefined || extra.length > 0) {
      return usageError("token", "expected: create NAME, or hash NAME", usage);
    }
    if (!isTokenName(name)) {
      return usageError("token", `NAME must be letters, digits and "_.@-", at most 64: ${JSON.stringify(name)}`, usage);
    }
    if (action === "hash") {
      if (flags.values.file !== undefined) return usageError("token", "--file goes with create", usage);
      const token = readFileSync(0, "utf8").trim();
      if (token.length < 32 || /\s/.test(token)) {
        return usageError("token", "standard input must hold one token of at least 32 characters", usage);
      }
      process.stdout.write(`${tokenLine(name, token)}\n`);
      return 0;
    }
    const token = createToken();
    const line = tokenLine(name, token);
    if (flags.values.file !== undefined) {
      appendFileSync(flags.values.file, `${line}\n`, { mode: 0o600 });
      process.stderr.write(`envelope token: ${name} added to ${flags.values.file}; restart the server to use it\n`);
    } else {
      process.stderr.write(`envelope token: add this line to the tokens file (tokens.file):\n${line}\n`);
    }
    process.stdout.write(`${token}\n`);
    return 0;
  },
};
