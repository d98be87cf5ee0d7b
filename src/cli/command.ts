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
