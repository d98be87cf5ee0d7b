// Structured logs: one JSON object per line on stderr. Callers pass identifiers and outcomes only;
// request content and credentials never reach a log line (the trace content mode governs content).

export type LogLevel = "debug" | "info" | "warn" | "error";

export interface Logger {
  debug(event: string, fields?: Record<string, unknown>): void;
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LoggerOptions {
  /** Lowest level written. Default "info". */
  readonly level?: LogLevel;
  /** Default process.stderr. */
  readonly write?: (line: string) => void;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const min = rank[options.level ?? "info"];
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const emit = (level: LogLevel) => (event: string, fields?: Record<string, unknown>) => {
    if (rank[level] < min) return;
    write(`${JSON.stringify({ time: new Date().toISOString(), level, event, ...fields }, errorFields)}\n`);
  };
  return { debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") };
}

/** Logs errors with their name, message and stack (server-side only). */
function errorFields(_key: string, value: unknown): unknown {
  return value instanceof Error ? { name: value.name, message: value.message, stack: value.stack } : value;
}

export const silentLogger: Logger = createLogger({ write: () => {} });
