// Device mesh: named axes over the flat world of ranks, outermost first (row-major), as in
// torchtitan's ParallelDims / VeOmni's parallel_state:
//   training mesh  [pp, dp_replicate, dp_shard, ulysses, tp]   (tp innermost: neighbours)
//   expert mesh    [ep_fsdp, ep]                               (ep innermost)
// A process group is the set of ranks that differ only along some axes; e.g. VeOmni's FSDP
// group is the flattened `dp_shard x ulysses` set. Pure logic: no sockets here.

export const TRAIN_AXES = ["pp", "dp_replicate", "dp_shard", "ulysses", "tp"] as const;
export type TrainAxis = (typeof TRAIN_AXES)[number];
export const EXPERT_AXES = ["ep_fsdp", "ep"] as const;
export type ExpertAxis = (typeof EXPERT_AXES)[number];

/** A row-major mesh of named axes over ranks 0..worldSize-1. */
export class Mesh<A extends string> {
  readonly worldSize: number;
  /** stride[i]: rank distance between neighbours along axis i. */
  private readonly stride: number[];

  constructor(readonly axes: readonly A[], readonly sizes: readonly number[], worldSize: number) {
    if (axes.length !== sizes.length) throw new Error(`mesh: ${axes.length} axes but ${sizes.length} sizes`);
    for (let i = 0; i < axes.length; i++) {
      if (!Number.isInteger(sizes[i]) || sizes[i] < 1) {
        throw new Error(`mesh: axis ${axes[i]} has size ${sizes[i]}, expected a positive integer`);
      }
    }
    const product = sizes.reduce((a, b) => a * b, 1);
    if (product !== worldSize) {
      // Every factor named, e.g. "dp_shard(2) * ulysses(2) * tp(1) != world_size(8)".
      const factors = axes.map((a, i) => `${a}(${sizes[i]})`).join(" * ");
      throw new Error(`mesh: ${factors} != world_size(${worldSize})`);
    }
    this.worldSize = worldSize;
    this.stride = new Array(axes.length);
    let s = 1;
    for (let i = axes.length - 1; i >= 0; i--) {
      this.stride[i] = s;
      s *= sizes[i];
    }
  }

  size(axis: A): number {
    return this.sizes[this.index(axis)];
  }

  /** Coordinates of `rank`, one per axis, outermost first. */
  coords(rank: number): number[] {
    this.checkRank(rank);
    return this.sizes.map((n, i) => Math.floor(rank / this.stride[i]) % n);
  }

  /** Coordinates of `rank` by axis name. */
  coordsOf(rank: number): Record<A, number> {
    const c = this.coords(rank);
    return Object.fromEntries(this.axes.map((a, i) => [a, c[i]])) as Record<A, number>;
  }

  rankAt(coords: readonly number[]): number {
    if (coords.length !== this.axes.length) throw new Error(`mesh: ${coords.length} coordinates for ${this.axes.length} axes`);
    let r = 0;
    for (let i = 0; i < coords.length; i++) {
      if (!Number.isInteger(coords[i]) || coords[i] < 0 || coords[i] >= this.sizes[i]) {
        throw new Error(`mesh: coordinate ${this.axes[i]}=${coords[i]} outside [0, ${this.sizes[i]})`);
      }
      r += coords[i] * this.stride[i];
    }
    return r;
  }

  /**
   * The group of `rank` over the flattened `axes`: all ranks equal to `rank` on every other
   * axis, ordered row-major over `axes` in mesh order (so the ring follows the mesh).
   */
  groupOf(rank: number, axes: readonly A[]): number[] {
    const base = this.coords(rank);
    const idx = this.axisSet(axes);
    const out: number[] = [];
    const cur = base.slice();
    const walk = (k: number): void => {
      if (k === idx.length) {
        out.push(this.rankAt(cur));
        return;
      }
      for (let v = 0; v < this.sizes[idx[k]]; v++) {
        cur[idx[k]] = v;
        walk(k + 1);
      }
    };
    walk(0);
    return out;
  }

  /** Every group over `axes`, each once, ordered by their smallest rank. */
  groups(axes: readonly A[]): number[][] {
    const seen = new Set<number>();
    const out: number[][] = [];
    for (let r = 0; r < this.worldSize; r++) {
      if (seen.has(r)) continue;
      const g = this.groupOf(r, axes);
      for (const x of g) seen.add(x);
      out.push(g);
    }
    return out;
  }

  /** A stable name for `rank`'s group over `axes`, e.g. "dp_shard+ulysses@0.1.4.5". */
  groupName(rank: number, axes: readonly A[]): string {
    const names = this.axisSet(axes).map((i) => this.axes[i]);
    return `${names.join("+")}@${this.groupOf(rank, axes).join(".")}`;
  }

  private index(axis: A): number {
    const i = this.axes.indexOf(axis);
    if (i < 0) throw new Error(`mesh: unknown axis ${axis}, axes are ${this.axes.join(", ")}`);
    return i;
  }

  private axisSet(axes: readonly A[]): number[] {
    const idx = axes.map((a) => this.index(a));
    if (new Set(idx).size !== idx.length) throw new Error(`mesh: axis repeated in ${axes.join(", ")}`);
    return idx.sort((a, b) => a - b); // mesh order, whatever order the caller named them in
  }

  private checkRank(rank: number): void {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.worldSize) {
      throw new Error(`mesh: rank ${rank} outside [0, ${this.worldSize})`);
    }
  }
}

export type TrainDims = Record<TrainAxis, number>;

/** The training mesh; missing axes default to 1. */
export function deviceMesh(dims: Partial<TrainDims>, worldSize: number): Mesh<TrainAxis> {
  return new Mesh(TRAIN_AXES, TRAIN_AXES.map((a) => dims[a] ?? 1), worldSize);
}

/** The expert mesh [ep_fsdp, ep] over the same world: ep_fsdp = world / ep must be whole. */
export function expertMesh(ep: number, worldSize: number, epFsdp = Math.floor(worldSize / ep)): Mesh<ExpertAxis> {
  return new Mesh(EXPERT_AXES, [epFsdp, ep], worldSize);
}
