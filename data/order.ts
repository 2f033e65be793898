// The seeded, deterministic order of one epoch, independent of the number of ranks.
// Position p in [0, N) of epoch e names one sample: units are shuffled (seed, e), their samples
// laid end to end, and the rows inside each unit shuffled (seed, e, unit). A two-level shuffle
// keeps reads local (a rank decodes one unit at a time) while every sample moves.
// Ranks then take positions by stride (state.ts), so the epoch's order is the same for any
// data-parallel size: that is what lets a checkpoint move to a different number of ranks.
import { mulberry32 } from "./rng.ts";

/** Mixes integers into a 32-bit seed (murmur3 finaliser per word). */
export function mix32(...xs: number[]): number {
  let h = 0x9e3779b9;
  for (const x of xs) {
    let k = Math.imul(x | 0, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
    h = Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64;
  }
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b); h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35); h ^= h >>> 16;
  return h >>> 0;
}


/** (n) a seeded Fisher-Yates permutation of 0..n-1. */
export function permutation(n: number, seed: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const r = mulberry32(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    const t = p[i]; p[i] = p[j]; p[j] = t;
  }
  return p;
}

/** Maps (epoch, position) -> (unit index, row within unit) for a fixed list of unit sizes. */
export class EpochOrder {
  readonly total: number;
  private epoch = -1;
  private unitPerm: Int32Array = new Int32Array(0);
  private starts = new Float64Array(0); // (U+1) start position of the k-th unit in shuffled order
  private rowPerms = new Map<number, Int32Array>(); // unit -> row permutation, this epoch only

  constructor(private counts: number[], private seed: number, private shuffle = true) {
    this.total = counts.reduce((a, b) => a + b, 0);
  }

  private setEpoch(e: number) {
    if (e === this.epoch) return;
    this.epoch = e;
    const U = this.counts.length;
    this.unitPerm = this.shuffle ? permutation(U, mix32(this.seed, e, 0x756e6974)) : permutation(U, 0).map((_, i) => i);
    this.starts = new Float64Array(U + 1);
    for (let k = 0; k < U; k++) this.starts[k + 1] = this.starts[k] + this.counts[this.unitPerm[k]];
    this.rowPerms.clear();
  }

  locate(epoch: number, pos: number): { unit: number; row: number } {
    if (pos < 0 || pos >= this.total) throw new Error(`data order: position ${pos} outside [0, ${this.total})`);
    this.setEpoch(epoch);
    // binary search the unit holding pos
    let lo = 0, hi = this.counts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= pos) lo = mid; else hi = mid - 1;
    }
    const unit = this.unitPerm[lo];
    const off = pos - this.starts[lo];
    if (!this.shuffle) return { unit, row: off };
    let rp = this.rowPerms.get(unit);
    if (!rp) {
      if (this.rowPerms.size > 64) this.rowPerms.clear();
      rp = permutation(this.counts[unit], mix32(this.seed, epoch, unit));
      this.rowPerms.set(unit, rp);
    }
    return { unit, row: rp[off] };
  }
}
