// Static admission limits: what every request is validated and granted against until policies and
// budgets (which will narrow grants further) take part. Units are in the names.

/** Admission limits. All durations in milliseconds, sizes in bytes, cost in micro-dollars. */
export interface AdmissionLimits {
  /** Latest deadline a request may ask for, relative to now. */
  readonly maxDeadlineMs: number;
  /** How far occurredAtUtc may differ from the server's clock, either way. */
  readonly maxClockSkewMs: number;
  /** Largest encoded request accepted (binary or JSON bytes as received). */
  readonly maxMessageBytes: number;
  /** Largest task.input accepted, measured as its compact JSON encoding in UTF-8 (the same for every wire format). */
  readonly maxTaskInputBytes: number;
  /** Per-request grant caps: granted = min(requested, cap). */
  readonly maxTokensPerRequest: number;
  readonly maxCostUsdMicrosPerRequest: number;
  readonly maxStepsPerRequest: number;
  /** Per-request caps of named resources (e.g. gpu). A resource not listed cannot be requested. */
  readonly maxResourcesPerRequest: Readonly<Record<string, number>>;
}

export const defaultLimits: AdmissionLimits = Object.freeze({
  maxDeadlineMs: 24 * 60 * 60 * 1000,
  maxClockSkewMs: 5 * 60 * 1000,
  maxMessageBytes: 1024 * 1024,
  maxTaskInputBytes: 256 * 1024,
  maxTokensPerRequest: 128_000,
  maxCostUsdMicrosPerRequest: 50_000_000,
  maxStepsPerRequest: 100,
  maxResourcesPerRequest: Object.freeze({ gpu: 8 }),
});
