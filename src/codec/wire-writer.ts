// Writing the protobuf binary format for the compiled encoders: the bytes protobuf-es's
// BinaryWriter writes for every value it writes without complaint. A value protobuf-es would coerce
// (a number as a string, a truthy non-boolean) or refuse gives up, and the caller encodes the
// message with protobuf-es, which coerces or throws as it always has.
import { protoInt64 } from "@bufbuild/protobuf";
import { giveUp } from "./wire-reader.js";

/**
 * Where an encoding is written: one buffer for the process, grown when a message needs more, so
 * that an encode allocates only its result. Encoding is synchronous, so it is never shared.
 */
export interface WriteState {
  buf: Uint8Array;
  pos: number;
}

export const writer: WriteState = { buf: new Uint8Array(4096), pos: 0 };

/** Called after each encode: a buffer grown past 64 KiB for one large message is not kept. */
export function shrink(w: WriteState): void {
  if (w.buf.length > 64 * 1024) w.buf = new Uint8Array(4096);
  w.pos = 0;
}

/** Makes room for `size` more bytes. */
export function reserve(w: WriteState, size: number): void {
  const needed = w.pos + size;
  if (needed <= w.buf.length) return;
  let length = w.buf.length * 2;
  while (length < needed) length *= 2;
  const grown = new Uint8Array(length);
  grown.set(w.buf.subarray(0, w.pos));
  w.buf = grown;
}

export function varint32Size(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x200000) return 3;
  if (value < 0x10000000) return 4;
  return 5;
}

/** An unsigned 32-bit varint; `value` must be an integer in [0, 2^32). */
export function writeVarint32(w: WriteState, value: number): void {
  reserve(w, 5);
  const buf = w.buf;
  let pos = w.pos;
  while (value > 0x7f) {
    buf[pos++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  buf[pos++] = value;
  w.pos = pos;
}

/** A 64-bit varint from its two halves (protobuf-es's writeVarint64). */
function writeVarint64(w: WriteState, lo: number, hi: number): void {
  reserve(w, 10);
  const buf = w.buf;
  let pos = w.pos;
  for (let i = 0; i < 28; i += 7) {
    const shift = lo >>> i;
    const more = !(shift >>> 7 === 0 && hi === 0);
    buf[pos++] = (more ? shift | 0x80 : shift) & 0xff;
    if (!more) {
      w.pos = pos;
      return;
    }
  }
  const split = ((lo >>> 28) & 0x0f) | ((hi & 0x07) << 4);
  const moreHi = !(hi >> 3 === 0);
  buf[pos++] = (moreHi ? split | 0x80 : split) & 0xff;
  if (moreHi) {
    for (let i = 3; i < 31; i += 7) {
      const shift = hi >>> i;
      const more = !(shift >>> 7 === 0);
      buf[pos++] = (more ? shift | 0x80 : shift) & 0xff;
      if (!more) {
        w.pos = pos;
        return;
      }
    }
    buf[pos++] = (hi >>> 31) & 0x01;
  }
  w.pos = pos;
}

const int32Min = -0x80000000;
const int32Max = 0x7fffffff;
const uint32Max = 0xffffffff;
const int64Min = -(2n ** 63n);
const int64Max = 2n ** 63n - 1n;
const uint64Max = 2n ** 64n - 1n;

function isInt32(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= int32Min && v <= int32Max;
}

function isUint32(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= uint32Max;
}

export function writeInt32(w: WriteState, v: unknown): void {
  if (!isInt32(v)) giveUp();
  // A negative int32 is sign-extended to ten bytes.
  if (v >= 0) writeVarint32(w, v);
  else writeVarint64(w, v, -1);
}

export function writeUint32(w: WriteState, v: unknown): void {
  if (!isUint32(v)) giveUp();
  writeVarint32(w, v);
}

export function writeSint32(w: WriteState, v: unknown): void {
  if (!isInt32(v)) giveUp();
  writeVarint32(w, ((v << 1) ^ (v >> 31)) >>> 0);
}

function int64Halves(v: unknown, min: bigint, max: bigint): { lo: number; hi: number } {
  if (typeof v !== "bigint" || v < min || v > max) giveUp();
  return min < 0n ? protoInt64.enc(v) : protoInt64.uEnc(v);
}

export function writeInt64(w: WriteState, v: unknown): void {
  // Most values fit 32 bits: no DataView round trip for them.
  if (typeof v === "bigint" && v >= 0n && v <= 0xffffffffn) {
    writeVarint32(w, Number(v));
    return;
  }
  const { lo, hi } = int64Halves(v, int64Min, int64Max);
  writeVarint64(w, lo, hi);
}

export function writeUint64(w: WriteState, v: unknown): void {
  if (typeof v === "bigint" && v >= 0n && v <= 0xffffffffn) {
    writeVarint32(w, Number(v));
    return;
  }
  const { lo, hi } = int64Halves(v, 0n, uint64Max);
  writeVarint64(w, lo, hi);
}

export function writeSint64(w: WriteState, v: unknown): void {
  const { lo, hi } = int64Halves(v, int64Min, int64Max);
  const sign = hi >> 31;
  writeVarint64(w, (lo << 1) ^ sign, ((hi << 1) | (lo >>> 31)) ^ sign);
}

function writeInt32At(w: WriteState, v: number): void {
  reserve(w, 4);
  const buf = w.buf;
  const pos = w.pos;
  buf[pos] = v & 0xff;
  buf[pos + 1] = (v >>> 8) & 0xff;
  buf[pos + 2] = (v >>> 16) & 0xff;
  buf[pos + 3] = (v >>> 24) & 0xff;
  w.pos = pos + 4;
}

export function writeFixed32(w: WriteState, v: unknown): void {
  if (!isUint32(v)) giveUp();
  writeInt32At(w, v);
}

export function writeSfixed32(w: WriteState, v: unknown): void {
  if (!isInt32(v)) giveUp();
  writeInt32At(w, v);
}

export function writeFixed64(w: WriteState, v: unknown): void {
  const { lo, hi } = int64Halves(v, 0n, uint64Max);
  writeInt32At(w, lo);
  writeInt32At(w, hi);
}

export function writeSfixed64(w: WriteState, v: unknown): void {
  const { lo, hi } = int64Halves(v, int64Min, int64Max);
  writeInt32At(w, lo);
  writeInt32At(w, hi);
}

const float64 = new Float64Array(1);
const float64Bytes = new Uint8Array(float64.buffer);
const float32 = new Float32Array(1);
const float32Bytes = new Uint8Array(float32.buffer);

export function writeDouble(w: WriteState, v: unknown): void {
  if (typeof v !== "number") giveUp();
  float64[0] = v;
  reserve(w, 8);
  w.buf.set(float64Bytes, w.pos);
  w.pos += 8;
}

export function writeFloat(w: WriteState, v: unknown): void {
  // protobuf-es refuses a finite value that is infinite as a float32.
  if (typeof v !== "number" || (Number.isFinite(v) && !Number.isFinite(Math.fround(v)))) giveUp();
  float32[0] = v;
  reserve(w, 4);
  w.buf.set(float32Bytes, w.pos);
  w.pos += 4;
}

export function writeBool(w: WriteState, v: unknown): void {
  if (typeof v !== "boolean") giveUp();
  reserve(w, 1);
  w.buf[w.pos++] = v ? 1 : 0;
}

export function writeBytes(w: WriteState, v: unknown): void {
  if (!(v instanceof Uint8Array)) giveUp();
  writeVarint32(w, v.byteLength);
  reserve(w, v.byteLength);
  w.buf.set(v, w.pos);
  w.pos += v.byteLength;
}

const utf8 = new TextEncoder();

/**
 * A string as UTF-8, lone surrogates as U+FFFD like TextEncoder (protobuf-es's encoder). ASCII is
 * copied char by char behind a length prefix sized for it; other text is encoded natively and the
 * prefix widened when the guess was short.
 */
export function writeString(w: WriteState, v: unknown): void {
  if (typeof v !== "string") giveUp();
  const length = v.length;
  reserve(w, length * 3 + 5);
  const buf = w.buf;
  const start = w.pos;
  const guess = varint32Size(length);
  let pos = start + guess;
  let i = 0;
  for (; i < length; i++) {
    const code = v.charCodeAt(i);
    if (code >= 0x80) break;
    buf[pos++] = code;
  }
  const written = i === length ? length : utf8.encodeInto(v, buf.subarray(start + guess)).written;
  const prefix = varint32Size(written);
  if (prefix !== guess) buf.copyWithin(start + prefix, start + guess, start + guess + written);
  w.pos = start;
  writeVarint32(w, written);
  w.pos += written;
}

/** Starts a length-delimited value with a one-byte length placeholder; returns where it starts. */
export function fork(w: WriteState): number {
  reserve(w, 1);
  return w.pos++;
}

/** Ends the value begun by `fork` at `start`: fills in its length, widening the prefix if needed. */
export function join(w: WriteState, start: number): void {
  const length = w.pos - start - 1;
  if (length < 0x80) {
    w.buf[start] = length;
    return;
  }
  const prefix = varint32Size(length);
  reserve(w, prefix - 1);
  w.buf.copyWithin(start + prefix, start + 1, w.pos);
  w.pos = start;
  writeVarint32(w, length);
  w.pos += length;
}

/** The message's unknown fields, written back as protobuf-es writes them: tag, then the raw bytes. */
export function writeUnknown(w: WriteState, fields: unknown): void {
  if (!Array.isArray(fields)) giveUp();
  for (const field of fields as { no: unknown; wireType: unknown; data: unknown }[]) {
    const { no, wireType, data } = field;
    if (typeof no !== "number" || !Number.isInteger(no) || no < 1 || no > 0x1fffffff) giveUp();
    if (typeof wireType !== "number" || !Number.isInteger(wireType) || wireType < 0 || wireType > 5) giveUp();
    if (!(data instanceof Uint8Array)) giveUp();
    writeVarint32(w, ((no << 3) | wireType) >>> 0);
    reserve(w, data.byteLength);
    w.buf.set(data, w.pos);
    w.pos += data.byteLength;
  }
}
