// The loader's position as data, and how it moves to a different number of ranks.
//
// A rank reads, per epoch, a *stream* of positions of that epoch's global order (order.ts):
// first an explicit `pending` list, then `tail, tail+stride, tail+2*stride, ...` below N.
// At start rank r of D reads {pending: [], tail: r, stride: D}: the ranks' streams partition
// [0, N). The state is: the epoch and how far into its stream the rank has read (`cursor`),
// non-default streams of later epochs, and the buffer (positions read but not yet emitted).
// Restoring on the same D is verbatim, so a resumed run is bit-identical. Restoring on D' takes
// every rank's state, collects per epoch the positions nobody has consumed (pending rests,
// buffers, tail positions below the furthest tail M) and deals them out again: the sorted
// leftovers round-robin, then tails M + r' stepping by D'. Nothing is skipped or repeated; a set
// of states that does not partition an epoch is refused, naming both sizes.

export interface Stream { epoch: number; pending: number[]; tail: number; stride: number }
export interface BufRef { epoch: number; pos: number }

export interface LoaderState {
  version: 1;
  dpRank: number;
  dpSize: number;
  /** Dataset fingerprint: a state only restores onto the same data and seed. */
  seed: number;
  total: number;
  units: number;
  /** Next optimizer step to produce. */
  step: number;
  /** Epoch being read and how many elements of its stream have been read. */
  epoch: number;
  cursor: number;
  /** Streams that differ from the default, for epochs >= epoch. */
  streams: Stream[];
  /** Samples read but not yet packed, in buffer order. */
  buffer: BufRef[];
  /** Bad samples skipped so far (on_bad_sample: skip). */
  skipped: number;
}

export function defaultStream(epoch: number, rank: number, size: number): Stream {
  return { epoch, pending: [], tail: rank, stride: size };
}

export function streamFor(s: LoaderState, epoch: number): Stream {
  return s.streams.find((x) => x.epoch === epoch) ?? defaultStream(epoch, s.dpRank, s.dpSize);
}

/** Element k of a stream, or -1 past its end. */
export function streamAt(st: Stream, k: number, total: number): number {
  if (k < st.pending.length) return st.pending[k];
  const p = st.tail + st.stride * (k - st.pending.length);
  return p < total ? p : -1;
}

/** First position of the stream's tail class at or after `total` (its end). */
function tailEnd(st: Stream, total: number): number {
  return st.tail >= total ? st.tail : st.tail + st.stride * Math.ceil((total - st.tail) / st.stride);
}

/** All ranks' states (saved on D ranks) -> the states of D' ranks. Same D: returned unchanged. */
export function reshardStates(states: LoaderState[], newSize: number): LoaderState[] {
  if (states.length === 0) throw new Error("loader state: no rank states to restore from");
  const D = states[0].dpSize;
  const refuse = (why: string) => new Error(`loader state saved on ${D} data-parallel ranks cannot be restored exactly on ${newSize}: ${why}`);
  if (states.length !== D) throw refuse(`${states.length} of ${D} rank states given (all are needed)`);
  const sorted = [...states].sort((a, b) => a.dpRank - b.dpRank);
  sorted.forEach((s, r) => {
    if (s.dpRank !== r || s.dpSize !== D) throw refuse(`rank states are not ranks 0..${D - 1} of ${D}`);
    for (const k of ["seed", "total", "units", "step"] as const)
      if (s[k] !== sorted[0][k]) throw refuse(`${k} differs between rank 0 (${sorted[0][k]}) and rank ${r} (${s[k]})`);
  });
  if (newSize === D) return sorted;
  const total = sorted[0].total;
  const epochs = sorted.flatMap((s) => [s.epoch, ...s.streams.map((x) => x.epoch), ...s.buffer.map((b) => b.epoch)]);
  const E0 = Math.min(...epochs), E1 = Math.max(...epochs);
  const streams: Stream[][] = Array.from({ length: newSize }, () => []);
  for (let e = E0; e <= E1; e++) {
    const left: number[] = [];
    const tails: { next: number; st: Stream }[] = [];
    for (const s of sorted) {
      const st = streamFor(s, e);
      let next: number;
      if (s.epoch > e) next = tailEnd(st, total); // finished its share of e
      else {
        const k = s.epoch === e ? s.cursor : 0;
        for (let i = k; i < st.pending.length; i++) left.push(st.pending[i]);
        next = st.tail + st.stride * Math.max(0, k - st.pending.length);
      }
      tails.push({ next, st });
      for (const b of s.buffer) if (b.epoch === e) left.push(b.pos);
    }
    // the tails must be one stride-D partition of a suffix: same stride, distinct residues, no gap
    const stride = tails[0].st.stride;
    const residues = new Set(tails.map((t) => t.st.tail % stride));
    const t0 = Math.min(...tails.map((t) => t.st.tail)), t1 = Math.max(...tails.map((t) => t.st.tail));
    if (tails.some((t) => t.st.stride !== stride) || residues.size !== tails.length || stride !== tails.length || t1 - t0 >= stride)
      throw refuse(`epoch ${e}: the rank streams do not partition the epoch`);
    const M = Math.max(...tails.map((t) => t.next));
    for (const t of tails) for (let p = t.next; p < Math.min(M, total); p += stride) left.push(p);
    left.sort((a, b) => a - b);
    for (let i = 1; i < left.length; i++) if (left[i] === left[i - 1]) throw refuse(`epoch ${e}: position ${left[i]} is pending twice`);
    for (let r = 0; r < newSize; r++) {
      streams[r].push({ epoch: e, pending: left.filter((_, i) => i % newSize === r), tail: M + r, stride: newSize });
    }
  }
  const base = sorted[0];
  return streams.map((st, r) => ({
    version: 1, dpRank: r, dpSize: newSize, seed: base.seed, total, units: base.units, step: base.step,
    epoch: E0, cursor: 0, streams: st, buffer: [],
    skipped: r === 0 ? sorted.reduce((a, s) => a + s.skipped, 0) : 0,
  }));
}
