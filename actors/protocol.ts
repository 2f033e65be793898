// The control-plane protocol between the coordinator and the workers (NATS subjects, msgpackr).
// Every message carries the protocol version `v` and, once a worker has joined, the job's
// generation `epoch`: a message from an older generation is refused, never acted on.
// Tensors never travel here: only commands, rendezvous tables and per-step metrics.
import { Packr } from "msgpackr";

export const PROTOCOL_VERSION = 1;

/** One rank's entry in the rendezvous table handed out by the coordinator. */
export interface PeerInfo {
  rank: number;
  host: string;
  pid: number;
  /** data-plane listen address "host:port" (the mesh's TCP rings connect here). */
  addr: string;
}

/** Per-step figures a worker reports at the end of a step (summed/merged by the coordinator). */
export interface StepMetrics {
  /** this rank's summed token loss (nats) over the step's micro-batches; the global loss is sum over ranks / globalValidTokens. */
  lossSum: number;
  /** valid (loss-carrying) tokens of this rank in the step. */
  validTokens: number;
  /** all tokens this rank processed in the step (incl. -100 labels). */
  tokens: number;
  /** global gradient norm after the step's reduction (identical on every rank). */
  gradNorm: number;
  lr: number;
  /** wall seconds of the step on this rank. */
  stepTimeS: number;
  peakRssMb: number;
  /** resident set at the step's end (MiB): the steady state, unlike the peak that includes start-up. */
  rssMb?: number;
  /** bytes of model state this rank holds (params, grads, AdamW, FSDP gather slots), MiB. */
  stateMb?: number;
  /** forward+backward FLOPs this rank did in the step (for MFU), 0 if unknown. */
  flops: number;
  /** the backend's peak FLOP/s for this rank (MFU denominator), 0 if unknown. */
  peakFlops: number;
  /** MoE models: this rank's sum over its micro-batches of (valid_mb / global valid) * aux_mb (null
   *  for a family without the aux loss), the
   *  objective's coefficient of it (router_aux_loss_coef, or 0 without output_router_logits), and
   *  tokens routed to each expert per sparse layer ([layer][expert]). */
  moe?: { auxSum: number | null; auxCoef: number; expertLoad: number[][] };
  /** last step only: per unit [sum, sum of squares, index-weighted sum] of the parameters this
   *  rank owns uniquely (zeros on replicas), so the coordinator's sum over ranks describes the
   *  whole model whatever the sharding (parity checks across world sizes). */
  paramStats?: number[];
}

// ---- worker -> coordinator ----
export type ToCoordinator =
  | { v: number; kind: "register"; job: string; rank: number; epoch: number; host: string; pid: number; addr: string }
  /** the rank built its stages and connected its data plane; `totalSteps` is what its data allows;
   *  `startStep` the steps already done (resumed from a checkpoint); `canSave`: has a checkpoint actor. */
  | { v: number; kind: "ready"; job: string; rank: number; epoch: number; totalSteps: number; startStep: number; canSave: boolean }
  /** this rank's part of checkpoint `step` is durable (report: checkpoint/ RankReport). */
  | { v: number; kind: "ckpt_done"; job: string; rank: number; epoch: number; step: number; report: unknown }
  | { v: number; kind: "ckpt_failed"; job: string; rank: number; epoch: number; step: number; error: string }
  | { v: number; kind: "step_done"; job: string; rank: number; epoch: number; step: number; metrics: StepMetrics }
  | { v: number; kind: "failed"; job: string; rank: number; epoch: number; step: number; error: string }
  /** answer to `adopt`: this rank now runs under `epoch` (was `from`). Its position: `lastDone` the
   *  last finished step, `running` the step it is computing (-1: idle), `firstStep` the first step
   *  this process ran or will run (lastDone < firstStep: none yet); `totalSteps` and `canSave` as in ready; `saves` its checkpoints of the last few save steps, durable (`report`),
   *  failed (`error`) or still being written (neither), which the new coordinator may not have committed. */
  | {
      v: number; kind: "adopted"; job: string; rank: number; epoch: number; from: number; host: string; pid: number;
      lastDone: number; running: number; firstStep: number; totalSteps: number; canSave: boolean; saves: AdoptedSave[];
    };

/** One checkpoint save a rank made under the coordinator it outlived (see `adopted`). */
export interface AdoptedSave {
  step: number;
  report?: unknown;
  error?: string;
}

// ---- coordinator -> worker ----
export type ToWorker =
  /** `runner` picks the step implementation ("train": the real model; "toy": a trivial step for runtime tests). */
  | { v: number; kind: "welcome"; job: string; rank: number; epoch: number; secret: string; peers: PeerInfo[]; config: unknown; runner: string; resumeFrom: string | null }
  | { v: number; kind: "refused"; job: string; rank: number; reason: string }
  /** run optimizer step `step` (0-based); with `save`, then checkpoint the state after it (step + 1 done). */
  | { v: number; kind: "step"; job: string; epoch: number; step: number; save: boolean }
  | { v: number; kind: "stop"; job: string; epoch: number; reason: string }
  /** a coordinator taking over (`--resume`): ranks of epoch `from` keep their process and state and
   *  switch to `epoch` (from then on they act on its commands only), then answer `adopted`. */
  | { v: number; kind: "adopt"; job: string; epoch: number; from: number };

export function assertNever(x: never, what = "message"): never {
  throw new Error(`unhandled ${what}: ${JSON.stringify(x)}`);
}

// msgpackr with plain structures (no record extension) so any msgpack client can read them.
const packr = new Packr({ useRecords: false });

export function encode(msg: ToCoordinator | ToWorker): Uint8Array {
  return packr.pack(msg);
}

const COORD_KINDS = new Set(["register", "ready", "step_done", "failed", "ckpt_done", "ckpt_failed", "adopted"]);
const WORKER_KINDS = new Set(["welcome", "refused", "step", "stop", "adopt"]);

function decodeChecked(data: Uint8Array, kinds: Set<string>, side: string): unknown {
  const m = packr.unpack(data) as { v?: unknown; kind?: unknown };
  if (typeof m !== "object" || m === null) throw new Error(`${side}: expected a msgpack map, got ${typeof m}`);
  if (m.v !== PROTOCOL_VERSION) throw new Error(`${side}: protocol version ${String(m.v)}, expected ${PROTOCOL_VERSION}`);
  if (typeof m.kind !== "string" || !kinds.has(m.kind)) throw new Error(`${side}: unknown kind ${String(m.kind)}, expected one of ${[...kinds].join(", ")}`);
  return m;
}

export function decodeToCoordinator(data: Uint8Array): ToCoordinator {
  return decodeChecked(data, COORD_KINDS, "coordinator inbox") as ToCoordinator;
}

export function decodeToWorker(data: Uint8Array): ToWorker {
  return decodeChecked(data, WORKER_KINDS, "worker inbox") as ToWorker;
}

/** NATS subjects of one job. */
export function subjects(job: string) {
  return {
    /** request/reply: a worker asks to join; the reply is welcome or refused. */
    register: `veomni.${job}.register`,
    /** coordinator -> all workers (step, stop, adopt). */
    cmd: `veomni.${job}.cmd`,
    /** workers -> coordinator (step_done, failed). */
    report: `veomni.${job}.report`,
  };
}
