// Reading the protobuf binary format for the compiled decoders, with protobuf-es's semantics for
// every value it accepts, and stricter than protobuf-es everywhere else: any read that would cross
// the end of the enclosing message, any varint or tag protobuf-es would refuse, and any form whose
// meaning depends on merge rules (a group, a message field sent twice) stops the fast path with
// `GiveUp`. The caller then decodes the same bytes with protobuf-es, so inputs off the common path
// keep protobuf-es's answer, errors included.
import { protoInt64 } from "@bufbuild/protobuf";

/** Thrown (never as an Error: no stack is captured) when the fast path must defer to protobuf-es. */
export const GiveUp: unique symbol = Symbol("defer to protobuf-es");

export function giveUp(): never {
  throw GiveUp;
}

/** The bytes being read and the read position; one per decode. */
export interface ReadState {
  readonly buf: Uint8Array;
  pos: number;
}

export function readState(buf: Uint8Array): ReadState {
  return { buf, pos: 0 };
}

/**
 * Deepest message nesting the fast path reads. protobuf-es stops at 100 with an error; deferring
 * well before that leaves the error and its message to protobuf-es.
 */
export const maxDepth = 64;

// Doubles and floats are read through one shared buffer: no DataView per decode.
const scratch64 = new Float64Array(1);
const scratch32 = new Float32Array(1);
const scratch64Bytes = new Uint8Array(scratch64.buffer);
const scratch32Bytes = new Uint8Array(scratch32.buffer);

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const lenientUtf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * A varint as protobuf-es's uint32 reader takes it: up to ten bytes, bits past 32 dropped. Ends past
 * `end`, and varints longer than ten bytes (an error in protobuf-es), give up.
 */
export function readVarint32(st: ReadState, end: number): number {
  const buf = st.buf;
  let pos = st.pos;
  if (pos >= end) giveUp();
  let b = buf[pos++] as number;
  if (b < 0x80) {
    st.pos = pos;
    return b;
  }
  let result = b & 0x7f;
  for (let shift = 7; shift < 28; shift += 7) {
    if (pos >= end) giveUp();
    b = buf[pos++] as number;
    result |= (b & 0x7f) << shift;
    if (b < 0x80) {
      st.pos = pos;
      return result;
    }
  }
  if (pos >= end) giveUp();
  b = buf[pos++] as number;
  result |= (b & 0x0f) << 28;
  for (let read = 5; b >= 0x80; read++) {
    if (read === 10 || pos >= end) giveUp();
    b = buf[pos++] as number;
  }
  st.pos = pos;
  return result >>> 0;
}

/** A tag (field number << 3 | wire type), refused as protobuf-es refuses it, or when it is a group's. */
export function readTag(st: ReadState, end: number): number {
  const start = st.pos;
  const tag = readVarint32(st, end);
  const size = st.pos - start;
  if (size > 5 || (size === 5 && (st.buf[st.pos - 1] as number) > 0x0f)) giveUp();
  const wireType = tag & 7;
  if (tag >>> 3 === 0 || wireType === 3 || wireType === 4 || wireType > 5) giveUp();
  return tag;
}

/** sint32's zigzag decoding of a uint32 varint. */
export function zigzag32(n: number): number {
  return (n >>> 1) ^ -(n & 1);
}

/** Reads a length prefix and returns where the length-delimited value ends. */
export function readEnd(st: ReadState, end: number): number {
  const len = readVarint32(st, end);
  const stop = st.pos + len;
  if (stop > end) giveUp();
  return stop;
}

// The 64-bit varint of protobuf-es (varint64read), as its two 32-bit halves.
let varintLo = 0;
let varintHi = 0;

function readVarint64(st: ReadState, end: number): void {
  const buf = st.buf;
  let pos = st.pos;
  let lo = 0;
  let hi = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    if (pos >= end) giveUp();
    const b = buf[pos++] as number;
    lo |= (b & 0x7f) << shift;
    if (b < 0x80) {
      st.pos = pos;
      varintLo = lo;
      varintHi = hi;
      return;
    }
  }
  if (pos >= end) giveUp();
  const middle = buf[pos++] as number;
  lo |= (middle & 0x0f) << 28;
  hi = (middle & 0x70) >> 4;
  if (middle < 0x80) {
    st.pos = pos;
    varintLo = lo;
    varintHi = hi;
    return;
  }
  for (let shift = 3; shift <= 31; shift += 7) {
    if (pos >= end) giveUp();
    const b = buf[pos++] as number;
    hi |= (b & 0x7f) << shift;
    if (b < 0x80) {
      st.pos = pos;
      varintLo = lo;
      varintHi = hi;
      return;
    }
  }
  giveUp();
}

/** Signed 64 bits from two halves, as protobuf-es returns it; small values skip the DataView. */
function signed64(lo: number, hi: number): bigint {
  return hi === 0 && lo >= 0 ? BigInt(lo) : (protoInt64.dec(lo, hi) as bigint);
}

function unsigned64(lo: number, hi: number): bigint {
  return hi === 0 && lo >= 0 ? BigInt(lo) : (protoInt64.uDec(lo, hi) as bigint);
}

export function readInt64(st: ReadState, end: number): bigint {
  readVarint64(st, end);
  return signed64(varintLo, varintHi);
}

export function readUint64(st: ReadState, end: number): bigint {
  readVarint64(st, end);
  return unsigned64(varintLo, varintHi);
}

export function readSint64(st: ReadState, end: number): bigint {
  readVarint64(st, end);
  const sign = -(varintLo & 1);
  const lo = ((varintLo >>> 1) | ((varintHi & 1) << 31)) ^ sign;
  const hi = (varintHi >>> 1) ^ sign;
  return signed64(lo, hi);
}

export function readBool(st: ReadState, end: number): boolean {
  if (st.pos < end) {
    const b = st.buf[st.pos] as number;
    if (b < 0x80) {
      st.pos++;
      return b !== 0;
    }
  }
  readVarint64(st, end);
  return varintLo !== 0 || varintHi !== 0;
}

function fixedStart(st: ReadState, end: number, size: number): number {
  const start = st.pos;
  if (start + size > end) giveUp();
  st.pos = start + size;
  return start;
}

function int32At(buf: Uint8Array, i: number): number {
  return (
    (buf[i] as number) | ((buf[i + 1] as number) << 8) | ((buf[i + 2] as number) << 16) | ((buf[i + 3] as number) << 24)
  );
}

export function readFixed32(st: ReadState, end: number): number {
  return int32At(st.buf, fixedStart(st, end, 4)) >>> 0;
}

export function readSfixed32(st: ReadState, end: number): number {
  return int32At(st.buf, fixedStart(st, end, 4));
}

export function readFixed64(st: ReadState, end: number): bigint {
  const start = fixedStart(st, end, 8);
  return unsigned64(int32At(st.buf, start), int32At(st.buf, start + 4));
}

export function readSfixed64(st: ReadState, end: number): bigint {
  const start = fixedStart(st, end, 8);
  return signed64(int32At(st.buf, start), int32At(st.buf, start + 4));
}

export function readDouble(st: ReadState, end: number): number {
  const start = fixedStart(st, end, 8);
  const buf = st.buf;
  for (let i = 0; i < 8; i++) scratch64Bytes[i] = buf[start + i] as number;
  return scratch64[0] as number;
}

export function readFloat(st: ReadState, end: number): number {
  const start = fixedStart(st, end, 4);
  const buf = st.buf;
  for (let i = 0; i < 4; i++) scratch32Bytes[i] = buf[start + i] as number;
  return scratch32[0] as number;
}

/** A view of the bytes, as protobuf-es returns them (no copy). */
export function readBytes(st: ReadState, end: number): Uint8Array {
  const stop = readEnd(st, end);
  const start = st.pos;
  st.pos = stop;
  return st.buf.subarray(start, stop);
}

/**
 * A string. Short ASCII, the common case, is built from its char codes as protobuf-es builds it;
 * anything else goes through the same TextDecoder settings as protobuf-es (a leading U+FEFF kept),
 * and invalid UTF-8 under `strict` gives up so that protobuf-es raises its own error. Each string is
 * a fresh one: none is a slice of a larger string that it would keep alive.
 */
export function readString(st: ReadState, end: number, strict: boolean): string {
  const stop = readEnd(st, end);
  const start = st.pos;
  st.pos = stop;
  const buf = st.buf;
  const length = stop - start;
  if (length <= shortString) {
    const codes = new Array<number>(length);
    for (let i = 0; i < length; i++) {
      const byte = buf[start + i] as number;
      if (byte >= 0x80) return decodeUtf8(buf.subarray(start, stop), strict);
      codes[i] = byte;
    }
    return String.fromCharCode.apply(String, codes);
  }
  return decodeUtf8(buf.subarray(start, stop), strict);
}

/** Longest string built from char codes; longer ones are decoded natively. */
const shortString = 32;

function decodeUtf8(bytes: Uint8Array, strict: boolean): string {
  if (!strict) return lenientUtf8.decode(bytes);
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return giveUp();
  }
}

/** An unknown field's record as protobuf-es keeps it in `$unknown`. */
export interface UnknownField {
  no: number;
  wireType: number;
  data: Uint8Array;
}

/** Skips the value of an unknown field and returns its record: the bytes after the tag. */
export function readUnknown(st: ReadState, end: number, tag: number): UnknownField {
  const wireType = tag & 7;
  const start = st.pos;
  switch (wireType) {
    case 0: {
      // protobuf-es skips a varint of any length here.
      const buf = st.buf;
      let pos = start;
      for (;;) {
        if (pos >= end) giveUp();
        if ((buf[pos++] as number) < 0x80) break;
      }
      st.pos = pos;
      break;
    }
    case 1:
      fixedStart(st, end, 8);
      break;
    case 2:
      st.pos = readEnd(st, end);
      break;
    case 5:
      fixedStart(st, end, 4);
      break;
    default:
      giveUp();
  }
  return { no: tag >>> 3, wireType, data: st.buf.subarray(start, st.pos) };
}

/** Sets a map entry or JSON property as protobuf-es does: "__proto__" becomes an own property. */
export function setOwn(record: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__") {
    Object.defineProperty(record, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    record[key] = value;
  }
}
