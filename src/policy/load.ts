// The one edge of the policy module that touches the disk: read a bundle file, refusing an oversized
// one before reading it, and compile it.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { oversized, type PolicyBundleResult, parsePolicyBundle, policyLimits } from "./bundle.js";

export type PolicyFileResult =
  | PolicyBundleResult
  | { readonly kind: "unreadable"; readonly problems: readonly string[] };

/** Reads and compiles the bundle at `path`; never throws for a bad or missing file. */
export function loadPolicyFile(path: string): PolicyFileResult {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    return { kind: "unreadable", problems: [`cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? e})`] };
  }
  try {
    const size = fstatSync(fd).size;
    if (size > policyLimits.maxBundleBytes) return { kind: "invalid", problems: [oversized(size)] };
    // One byte more than the limit tells a file that grew since fstat from one that did not.
    const buffer = Buffer.alloc(policyLimits.maxBundleBytes + 1);
    let length = 0;
    for (;;) {
      const read = readSync(fd, buffer, length, buffer.length - length, null);
      if (read === 0) break;
      length += read;
      if (length === buffer.length) return { kind: "invalid", problems: [oversized(length)] };
    }
    return parsePolicyBundle(buffer.toString("utf8", 0, length));
  } catch (e) {
    return { kind: "unreadable", problems: [`cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? e})`] };
  } finally {
    closeSync(fd);
  }
}
