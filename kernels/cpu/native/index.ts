// The native library (vec.c: element-wise loops; attn.c: attention's flash loop nest): compiled at first use with the machine's gcc
// (-O3 -march=native -fopenmp) into a cache directory, then loaded through bun:ffi. The build is
// keyed by a hash of the source, the flags and the CPU's feature flags, so a changed file or a
// different CPU gets its own .so. Without gcc (or when the build fails) `loadNative` returns the
// reason and the fast path keeps its TypeScript loops.

import { dlopen, ptr, type Pointer } from "bun:ffi";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { dirname, join } from "node:path";
import { cpuInfo } from "../fast/cpu_features.ts";
import { ompPassiveBeforeLoad } from "../fast/omp_env.ts";

const SRCS = ["vec.c", "attn.c"].map((f) => join(import.meta.dir, f));
const HEADERS = ["vt_math.h"].map((f) => join(import.meta.dir, f));
const FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno"];
/** Where built libraries go (the repository's .cache/, gitignored). */
export const NATIVE_CACHE = join(import.meta.dir, "..", "..", "..", ".cache", "native");

const SYMBOLS = {
  vt_set_threads: { args: ["i32"], returns: "void" },
  vt_get_threads: { args: [], returns: "i32" },
  vt_cast_bf16: { args: ["ptr", "i64", "i64", "i64", "ptr"], returns: "void" },
  vt_round_bf16: { args: ["ptr", "i64", "i64", "i64", "ptr"], returns: "void" },
  vt_widen_bf16: { args: ["ptr", "i64", "ptr"], returns: "void" },
  vt_swiglu_fwd: { args: ["ptr", "ptr", "ptr", "i64"], returns: "void" },
  vt_swiglu_bwd: { args: ["ptr", "ptr", "ptr", "ptr", "ptr", "i64"], returns: "void" },
  vt_rmsnorm_fwd: { args: ["ptr", "ptr", "ptr", "ptr", "i64", "i64", "f32"], returns: "void" },
  vt_rmsnorm_bwd: { args: ["ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "i64", "i64"], returns: "void" },
  vt_rope: { args: ["ptr", "ptr", "ptr", "ptr", "ptr", "i64", "i64", "i64", "i32"], returns: "void" },
  vt_ce_rows: { args: ["ptr", "ptr", "i64", "i64", "f32", "i32", "ptr"], returns: "void" },
  vt_attn_fwd_block: { args: ["ptr", "ptr", "ptr", "ptr", "i64", "i64", "i64", "i64", "i64", "i32"], returns: "void" },
  vt_attn_bwd_block: { args: ["ptr", "ptr", "ptr", "ptr", "i64", "i64", "i64", "i64", "i64", "i32", "i32"], returns: "void" },
  vt_sumsq: { args: ["ptr", "i64"], returns: "f64" },
  vt_attn_init: { args: ["ptr"], returns: "i32" },
  vt_attn_fwd: { args: ["ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "i64", "i64", "i64", "i64", "f32", "i32", "i32", "i64", "i64"], returns: "i32" },
  vt_attn_bwd: {
    args: ["ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "i64", "i64", "i64", "i64", "i64", "f32", "i32", "i32", "i64", "i64"],
    returns: "i32",
  },
  vt_peak_f32: { args: ["i64"], returns: "f64" },
  vt_peak_bf16: { args: ["i64"], returns: "f64" },
  vt_adamw: { args: ["ptr", "ptr", "ptr", "ptr", "i64", "f64", "f64", "f64", "f64", "f64", "f64", "f64"], returns: "void" },
} as const;

export type NativeSymbols = ReturnType<typeof dlopen<typeof SYMBOLS>>["symbols"];

export interface Native {
  readonly path: string;
  readonly sym: NativeSymbols;
}

/** A pointer to element `off` of a typed array (taken inside each call: JSC may move small
 *  arrays); null for an empty array (bun:ffi has no pointer to zero bytes; C never reads it). */
export function at(a: Float32Array | Int32Array | Uint16Array | Float64Array, off = 0): Pointer | null {
  return a.length === 0 ? null : ptr(a, off * a.BYTES_PER_ELEMENT);
}

let cached: { native: Native | null; reason: string } | null = null;

/** Build (once per source/CPU) and load the library; `native` is null with `reason` when unavailable. */
export function loadNative(): { native: Native | null; reason: string } {
  if (cached) return cached;
  cached = build();
  return cached;
}

function build(): { native: Native | null; reason: string } {
  const hash = createHash("sha256");
  for (const f of [...SRCS, ...HEADERS]) hash.update(readFileSync(f));
  const key = hash.update(FLAGS.join(" ")).update(cpuInfo().flags.join(" ")).digest("hex").slice(0, 16);
  const so = join(NATIVE_CACHE, `vec-${key}.so`);
  if (!existsSync(so)) {
    const gcc = spawnSync("gcc", ["--version"], { encoding: "utf8" });
    if (gcc.status !== 0) return { native: null, reason: "gcc not found (TypeScript element-wise loops)" };
    // build to a private name, then rename: concurrent processes never load a half-written file
    const tmp = `${so}.${process.pid}.tmp`;
    try {
      mkdirSync(dirname(so), { recursive: true });
    } catch (e) {
      return { native: null, reason: `cannot create ${dirname(so)}: ${(e as Error).message} (TypeScript element-wise loops)` };
    }
    const r = spawnSync("gcc", [...FLAGS, "-o", tmp, ...SRCS, "-lm", "-ldl"], { encoding: "utf8" });
    if (r.status !== 0) return { native: null, reason: `gcc failed on ${SRCS.join(" ")}: ${(r.stderr || r.stdout).split("\n")[0]} (TypeScript element-wise loops)` };
    renameSync(tmp, so);
  }
  try {
    ompPassiveBeforeLoad();
    const lib = dlopen(so, SYMBOLS);
    return { native: { path: so, sym: lib.symbols }, reason: `native loops ${so}` };
  } catch (e) {
    return { native: null, reason: `cannot load ${so}: ${(e as Error).message}` };
  }
}
