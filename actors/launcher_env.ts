// A worker's rank (and world size, where the launcher says it) from the environment of the
// engines users start workers with, so `srun bun run worker ...`, `torchrun`-style wrappers,
// `mpirun` and a Kubernetes indexed Job need no per-rank command line. `--rank` wins over all.
//
//   torchrun / torch.distributed  RANK, WORLD_SIZE
//   Slurm (srun)                  SLURM_PROCID, SLURM_NTASKS
//   Open MPI (mpirun)             OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE
//   Kubernetes indexed Job        JOB_COMPLETION_INDEX (the world is the Job's completions: no variable)
//
// Checked in that order: the first launcher whose rank variable is set decides (a torchrun inside
// an srun allocation sets both RANK and SLURM_PROCID; RANK is the finer one).

export interface LaunchRank {
  rank: number;
  /** world size the launcher reports; null when it has none (Kubernetes, or --rank alone). */
  world: number | null;
  /** where the rank came from, for logs and errors: "--rank", "RANK", "SLURM_PROCID", ... */
  source: string;
}

const LAUNCHERS: ReadonlyArray<{ rank: string; world: string | null }> = [
  { rank: "RANK", world: "WORLD_SIZE" },
  { rank: "SLURM_PROCID", world: "SLURM_NTASKS" },
  { rank: "OMPI_COMM_WORLD_RANK", world: "OMPI_COMM_WORLD_SIZE" },
  { rank: "JOB_COMPLETION_INDEX", world: null },
];

export const RANK_VARIABLES = LAUNCHERS.map((l) => l.rank);

function nonNegInt(name: string, v: string): number {
  if (!/^\d+$/.test(v.trim())) throw new Error(`${name}=${JSON.stringify(v)}: expected a non-negative integer`);
  return Number(v.trim());
}

/**
 * The rank from `--rank` (as given, or undefined) or else the launcher environment; null when
 * neither says. Throws a one-line error naming the variable on a malformed value, or a rank
 * outside the world size the same launcher reports.
 */
export function launchRank(flag: string | undefined, env: Record<string, string | undefined>): LaunchRank | null {
  if (flag !== undefined) return { rank: nonNegInt("--rank", flag), world: null, source: "--rank" };
  for (const l of LAUNCHERS) {
    const r = env[l.rank];
    if (r === undefined || r === "") continue;
    const rank = nonNegInt(l.rank, r);
    const w = l.world === null ? undefined : env[l.world];
    if (w === undefined || w === "") return { rank, world: null, source: l.rank };
    const world = nonNegInt(l.world!, w);
    if (world < 1 || rank >= world) throw new Error(`${l.rank}=${rank} is outside ${l.world}=${world} (expected 0..${world - 1})`);
    return { rank, world, source: l.rank };
  }
  return null;
}
