// Identifier generation: envelope ids that sort by time, and W3C trace ids.
import { randomFillSync } from "node:crypto";

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const hex = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

// Random bytes are drawn in blocks: one syscall per 4 KiB instead of one per id.
const pool = new Uint8Array(4096);
let poolOffset = pool.length;

function randomBytes(n: number): Uint8Array {
  if (poolOffset + n > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const out = pool.subarray(poolOffset, poolOffset + n);
  poolOffset += n;
  return out;
}

/**
 * A ULID (48-bit millisecond time, 80 random bits, Crockford base32) prefixed "env_". Ids sort by
 * admission time across replicas without coordination.
 */
export function newEnvelopeId(nowMs: number): string {
  let time = "";
  let t = nowMs;
  for (let i = 0; i < 10; i++) {
    time = crockford.charAt(t % 32) + time;
    t = Math.floor(t / 32);
  }
  const r = randomBytes(10);
  let random = "";
  // 80 bits = 16 base32 digits: take 5 bits at a time from the 10 bytes.
  let acc = 0;
  let bits = 0;
  for (const byte of r) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      random += crockford.charAt((acc >> bits) & 31);
    }
    acc &= (1 << bits) - 1;
  }
  return `env_${time}${random}`;
}

/** A random W3C trace id: 32 lowercase hex digits, not all zero. */
export function newTraceId(): string {
  let s = "";
  for (const b of randomBytes(16)) s += hex[b];
  return s === "00000000000000000000000000000000" ? newTraceId() : s;
}

const traceparentPattern = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}/;

/** The trace id of a W3C traceparent header, or undefined when absent or invalid. */
export function traceIdFromTraceparent(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const id = traceparentPattern.exec(header)?.[1];
  return id === undefined || id === "00000000000000000000000000000000" ? undefined : id;
}
