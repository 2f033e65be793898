// TensorBoard event files (output_dir/tensorboard/events.out.tfevents.<time>.<host>): the scalars
// of each step, readable by TensorBoard without TensorFlow. No maintained npm writer exists, so
// this is the format itself, small enough to keep here:
//   file   = record*      record = u64le length, u32le masked_crc32c(length bytes),
//                                   data, u32le masked_crc32c(data)
//   masked_crc32c(x) = rotr(crc32c(x), 15) + 0xa282ead8 (mod 2^32)
//   data   = an Event protobuf: wall_time (1, double), step (2, int64), file_version (3, string,
//            "brain.Event:2", first record only) or summary (5, Summary)
//   Summary = repeated Value value (1); Value = tag (1, string), simple_value (2, float)
// Read back by test/harness/read_tfevents.py, written from the same description.
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { crc32c } from "@node-rs/crc32";

function masked(b: Uint8Array): number {
  const c = crc32c(b) >>> 0;
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** Protobuf wire encoding of the few fields an Event needs. */
class Proto {
  private parts: number[] = [];
  private varint(v: bigint): void {
    let x = BigInt.asUintN(64, v);
    while (x >= 0x80n) {
      this.parts.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.parts.push(Number(x));
  }
  private key(field: number, wire: number): void {
    this.varint(BigInt((field << 3) | wire));
  }
  double(field: number, v: number): this {
    this.key(field, 1);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    this.parts.push(...b);
    return this;
  }
  float(field: number, v: number): this {
    this.key(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.parts.push(...b);
    return this;
  }
  int64(field: number, v: number): this {
    this.key(field, 0);
    this.varint(BigInt(Math.trunc(v)));
    return this;
  }
  bytes(field: number, b: Uint8Array): this {
    this.key(field, 2);
    this.varint(BigInt(b.length));
    this.parts.push(...b);
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }
  done(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

/** One framed record around `data`. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length + 4);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, masked(out.subarray(0, 8)), true);
  out.set(data, 12);
  dv.setUint32(12 + data.length, masked(data), true);
  return out;
}

/** Appends scalar events to one event file; every write goes straight to the file. */
export class TensorBoardWriter {
  readonly path: string;
  private fd: number;

  constructor(dir: string, now = Date.now()) {
    mkdirSync(dir, { recursive: true });
    this.path = join(dir, `events.out.tfevents.${Math.floor(now / 1000)}.${hostname()}.${process.pid}`);
    this.fd = openSync(this.path, "a");
    this.write(new Proto().double(1, now / 1000).string(3, "brain.Event:2").done());
  }

  /** One event at `step` with a scalar per tag (e.g. {"train/loss": 2.31}); non-finite values are skipped. */
  scalars(step: number, values: Record<string, number | null | undefined>, wallTime = Date.now() / 1000): void {
    const summary = new Proto();
    for (const [tag, v] of Object.entries(values)) {
      if (typeof v !== "number" || !Number.isFinite(v)) continue;
      summary.bytes(1, new Proto().string(1, tag).float(2, v).done());
    }
    this.write(new Proto().double(1, wallTime).int64(2, step).bytes(5, summary.done()).done());
  }

  close(): void {
    closeSync(this.fd);
  }

  private write(event: Uint8Array): void {
    writeSync(this.fd, tfRecord(event));
  }
}
