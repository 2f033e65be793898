// Fields the schema accepts (VeOmni v0.1 names) that VeOmni-TS does not act on, or not for every
// value. One table: each entry says when it applies (by default: the value differs from the
// schema's default), whether the run is refused or warned, and why. Checked once at start, before
// anything is launched. A field that gets implemented is deleted from the table (docs/config.md
// says what every field does).
import { ConfigSchema, type Config, type Group } from "./schema.ts";

export type SupportAction = "refuse" | "warn";

export interface SupportRule {
  /** dotted key, e.g. "train.tensor_parallel_size" */
  key: string;
  action: SupportAction;
  why: string;
  /** applies to this value (default: any value other than the schema default). */
  when?: (value: unknown, config: Config) => boolean;
}

const NOT_YET = "not implemented yet";
const NO_PLAN = `${NOT_YET} (plans: ddp, fsdp1/fsdp2, hsdp, ulysses); expected 1`;

export const SUPPORT: SupportRule[] = [
  // model
  { key: "model.encoders", action: "refuse", why: `${NOT_YET} (multimodal encoders)` },
  { key: "model.decoders", action: "refuse", why: `${NOT_YET} (multimodal decoders)` },
  { key: "model.input_encoder", action: "refuse", why: `${NOT_YET} (multimodal encoders)` },
  { key: "model.output_encoder", action: "refuse", why: `${NOT_YET} (multimodal decoders)` },
  { key: "model.encode_target", action: "refuse", why: `${NOT_YET} (multimodal decoders)` },
  { key: "model.attn_implementation", action: "warn", why: "has no effect: one exact attention kernel (varlen, flash-style) serves eager, sdpa and flash_attention_2 alike" },
  { key: "model.moe_implementation", action: "warn", why: "has no effect: MoE layers have one implementation (a grouped GEMM per expert)" },
  { key: "model.basic_modules", action: "warn", why: "has no effect: FSDP and activation checkpointing wrap every decoder layer as one unit" },
  // data
  { key: "data.datasets_type", action: "warn", why: "has no effect: mapping and iterable datasets are both read as streamed units in a seeded order" },
  { key: "data.data_name", action: "warn", why: "has no effect: the data is named by data.train_path" },
  { key: "data.data_tag", action: "refuse", why: `${NOT_YET} (multimodal tags)` },
  { key: "data.num_workers", action: "warn", why: "has no effect: each rank has one dataloader thread that prefetches data.prefetch_factor steps" },
  { key: "data.pin_memory", action: "warn", why: "has no effect: no pinned host memory on the CPU and WebGPU backends" },
  // train
  { key: "train.optimizer", action: "warn", why: "anyprecision_adamw is AdamW with float32 states here, the same as adamw" },
  { key: "train.rmpad", action: "warn", why: "has no effect: batches are always packed without padding (the loss is the same)" },
  { key: "train.use_doptim", action: "warn", why: "has no effect: fsdp1/fsdp2 already shard the optimizer state" },
  { key: "train.enable_full_determinism", action: "warn", why: "has no effect: runs are always deterministic here (seeded data order and init, fixed reduction order, thread-count-independent kernels)" },
  { key: "train.enable_reentrant", action: "warn", why: "has no effect: activation checkpointing recomputes units directly, without autograd re-entry" },
  { key: "train.enable_fsdp_offload", action: "refuse", why: NOT_YET },
  { key: "train.enable_activation_offload", action: "refuse", why: NOT_YET },
  { key: "train.activation_gpu_limit", action: "refuse", why: `${NOT_YET} (activation offload)` },
  { key: "train.enable_manual_eager", action: "warn", why: "has no effect: there is no graph compiler to opt out of" },
  { key: "train.empty_cache_steps", action: "warn", why: "has no effect: buffers are allocated once, there is no allocator cache to empty" },
  { key: "train.ckpt_manager", action: "warn", why: "has no effect: checkpoints are always sharded safetensors with a metadata.json commit" },
  { key: "train.data_parallel_mode", action: "refuse", why: `${NOT_YET}; use ddp, fsdp1 or fsdp2`, when: (v) => v === "fsdp2-vescale" },
  // the plan builder refuses these too, from this table (parallelRefusals, parallel/plan.ts)
  { key: "train.tensor_parallel_size", action: "refuse", why: NO_PLAN },
  { key: "train.pipeline_parallel_size", action: "refuse", why: NO_PLAN },
  { key: "train.context_parallel_size", action: "refuse", why: NO_PLAN },
  { key: "train.profile_with_stack", action: "warn", why: "has no effect: traces record spans, not JavaScript stacks", when: (v, c) => v === true && c.train.enable_profiling },
  { key: "train.profile_record_shapes", action: "warn", why: "has no effect: step spans always carry their micro-batch count and tokens", when: (v, c) => v === false && c.train.enable_profiling },
  { key: "train.wandb_project", action: "warn", why: "has no effect: there is no Weights & Biases client for JavaScript (see train.use_wandb)" },
  { key: "train.wandb_name", action: "warn", why: "has no effect: there is no Weights & Biases client for JavaScript (see train.use_wandb)" },
  // use_wandb is true by default in VeOmni: say it once whenever it is on.
  {
    key: "train.use_wandb", action: "warn", when: (v) => v === true,
    why: "there is no Weights & Biases client for JavaScript; the scalars go to OUTPUT_DIR/tensorboard/ (TensorBoard), OUTPUT_DIR/metrics.jsonl and OUTPUT_DIR/plots/*.png (set train.use_wandb false to silence this)",
  },
];

const DEFAULTS = ConfigSchema.parse({}) as unknown as Record<Group, Record<string, unknown>>;

function valueOf(c: Config, key: string): unknown {
  const [g, f] = key.split(".") as [Group, string];
  return (c[g] as Record<string, unknown>)[f];
}

/** The rules that apply to this configuration, each as "key = value: why" (only the rules that
 *  `only` keeps, when given). */
export function supportProblems(c: Config, only: (r: SupportRule) => boolean = () => true): { refused: string[]; warned: string[] } {
  const refused: string[] = [];
  const warned: string[] = [];
  for (const r of SUPPORT) {
    if (!only(r)) continue;
    const v = valueOf(c, r.key);
    const [g, f] = r.key.split(".") as [Group, string];
    const applies = r.when ? r.when(v, c) : JSON.stringify(v) !== JSON.stringify(DEFAULTS[g][f]);
    if (!applies) continue;
    (r.action === "refuse" ? refused : warned).push(`${r.key} = ${JSON.stringify(v)}: ${r.why}`);
  }
  return { refused, warned };
}

/** The refused parallel layouts of a train section (the *_parallel_size fields and
 *  data_parallel_mode): what the plan builder (parallel/plan.ts) refuses, from this one table. */
export function parallelRefusals(t: Config["train"]): string[] {
  const parallel = (r: SupportRule) => r.action === "refuse" && /^train\.(\w+_parallel_size|data_parallel_mode)$/.test(r.key);
  return supportProblems({ ...DEFAULTS, train: t } as unknown as Config, parallel).refused;
}
