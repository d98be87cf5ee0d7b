// Process entry of the `envelope` command.
import { main } from "./main.js";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`envelope: unexpected failure: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exitCode = 70;
  },
);
