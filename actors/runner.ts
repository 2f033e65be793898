// The contract between the worker shell (NATS, rendezvous, heartbeats) and what runs a step.
// A RunnerFactory opens the rank's data-plane listener before rendezvous (its address goes in
// the table), then builds the StepRunner from the welcome (peers, secret, epoch, config).
// "train" is the real model (actors/train_runner.ts); "toy" is a trivial, deterministic step
// used by the runtime's own tests (rendezvous, heartbeats, faults) so they don't need a model.
import type { Logger } from "pino";
import type { Config } from "../configs/index.ts";
import type { PeerInfo, StepMetrics } from "./protocol.ts";

export interface WorkerContext {
  job: string;
  rank: number;
  worldSize: number;
  epoch: number;
  /** per-job secret for the data-plane handshake (HMAC key). */
  secret: string;
  peers: PeerInfo[];
  config: Config;
  logger: Logger;
  /** compute threads for this process (0: decide from the cores). */
  threads: number;
  /** a committed checkpoint folder to resume from (the coordinator resolved load_checkpoint_path), or null. */
  resumeFrom: string | null;
}

export interface StepRunner {
  /** optimizer steps this rank's data allows (the coordinator runs the minimum over ranks). */
  readonly totalSteps: number;
  /** optimizer steps already done when built (resumed from a checkpoint), 0 for a fresh start. */
  readonly startStep: number;
  /** Run optimizer step `step` (0-based) completely: micro-batches, reductions, optimizer. */
  runStep(step: number): Promise<StepMetrics>;
  /** The checkpoint actor: save the state after `done` steps, its files named with `epoch` (the
   *  worker's epoch when the save is commanded: a rank adopted by a new coordinator saves under the
   *  new epoch). Resolves once the state is staged (training may go on); the inner promise when this
   *  rank's files are durable (its report). */
  checkpoint?(done: number, epoch: number): Promise<{ durable: Promise<unknown> }>;
  close(): Promise<void>;
}

export interface RunnerFactory {
  /** Open the data-plane listener of `rank`; returns its advertised "host:port". `logger` hears its
   *  refusals (bad secret, wrong job or epoch, garbage), rate limited, with the peer's address. */
  listen(rank: number, host: string, portRange: [number, number], logger?: Logger): Promise<string>;
  build(ctx: WorkerContext): Promise<StepRunner>;
}

export function peakRssMb(): number {
  // maxRSS is in KiB (getrusage).
  return process.resourceUsage().maxRSS / 1024;
}

/**
 * Toy step: rank r fits a scalar w to y = 3x on its own deterministic samples with SGD. Loss is
 * summed over `tokens` samples per step; the work is chunked with yields so heartbeats keep
 * flowing, and lasts about `train.micro_batch_size` ms of busy compute per chunk.
 */
export const toyRunner: RunnerFactory = {
  async listen(_rank, host) {
    return `${host}:0`; // no data plane
  },
  async build(ctx) {
    let w = 0;
    const tokens = 64;
    const maxSteps = ctx.config.train.max_steps ?? 5;
    const busyMs = ctx.config.train.micro_batch_size;
    return {
      totalSteps: maxSteps,
      startStep: 0,
      async runStep(step) {
        const t0 = performance.now();
        let lossSum = 0;
        let grad = 0;
        for (let chunk = 0; chunk < 4; chunk++) {
          const until = performance.now() + busyMs / 4;
          while (performance.now() < until) {} // deliberate busy compute: a step that takes time
          for (let i = chunk * 16; i < (chunk + 1) * 16; i++) {
            const x = ((ctx.rank * 131 + step * 17 + i) % 32) / 32;
            const err = w * x - 3 * x;
            lossSum += err * err;
            grad += 2 * err * x;
          }
          await new Promise((r) => setImmediate(r)); // let NATS and timers run between chunks
        }
        const lr = ctx.config.train.lr;
        w -= (lr * grad) / tokens;
        return {
          lossSum,
          validTokens: tokens,
          tokens,
          gradNorm: Math.abs(grad / tokens),
          lr,
          stepTimeS: (performance.now() - t0) / 1000,
          peakRssMb: peakRssMb(),
          flops: 0,
          peakFlops: 0,
        };
      },
      async close() {},
    };
  },
};
