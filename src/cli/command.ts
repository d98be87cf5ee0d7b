import { type ParseArgsConfig, parseArgs } from "node:util";

/** One `envelope` subcommand. */
export interface Command {
  readonly summary: string;
  /** Printed for --help and after usage errors. */
  readonly usage: string;
  /** Returns the exit status. */
  run(args: string[]): Promise<number>;
}

/** Reports a usage error with the command's usage; exit status 2. */
export function usageError(command: string, message: string, commandUsage: string): number {
  process.stderr.write(`envelope ${command}: ${message}\n\n${commandUsage}`);
  return 2;
}

/** Parses a command's flags strictly; a bad flag is a usage error (its exit status is returned). */
export function parseFlags<const C extends ParseArgsConfig>(
  command: string,
  commandUsage: string,
  config: C,
): ReturnType<typeof parseArgs<C>> | number {
  try {
    return parseArgs(config);
  } catch (e) {
    return usageError(command, (e as Error).message, commandUsage);
  }
}
