// Contract-version negotiation, per the runtime contract's evolution rules: any minor of a supported
// major is accepted (a newer minor than ours with a warning, since its additions are not understood);
// an unknown major is rejected, naming what is supported.

/** The contract version this server implements. */
export const serverContractVersion = "2.1";
const server = parse(serverContractVersion) as ContractVersion;

/** Majors accepted; each accepts every minor. */
const supportedMajors: readonly number[] = Object.freeze([server.major]);

/** Human-readable list of accepted versions, e.g. "2.x". */
export const supportedVersionsText: readonly string[] = Object.freeze(supportedMajors.map((m) => `${m}.x`));

export interface ContractVersion {
  readonly major: number;
  readonly minor: number;
}

export type VersionNegotiation =
  | { readonly kind: "accepted"; readonly newerMinor: boolean }
  | { readonly kind: "malformed" }
  | { readonly kind: "unsupported"; readonly major: number };

export function parse(text: string): ContractVersion | undefined {
  const match = /^(\d{1,6})\.(\d{1,6})$/.exec(text);
  if (match === null) return undefined;
  return { major: Number(match[1]), minor: Number(match[2]) };
}

export function negotiate(text: string): VersionNegotiation {
  const version = parse(text);
  if (version === undefined) return { kind: "malformed" };
  if (!supportedMajors.includes(version.major)) return { kind: "unsupported", major: version.major };
  return { kind: "accepted", newerMinor: version.major === server.major && version.minor > server.minor };
}
