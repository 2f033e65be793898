// The configuration schema: VeOmni v0.1 groups `model`, `data`, `train`, `infer` with their field
// names, types and defaults (../shared/seed/veomni-config-v0.1.md), plus our `launch` and
// `kernels`. Every object is strict: an unknown key is an error, never silently ignored.
// Fields VeOmni-TS adds where VeOmni has none are marked "ours".
import { z } from "zod";

const int = () => z.number().int();
const posInt = () => z.number().int().positive();

export const ModelSchema = z.strictObject({
  config_path: z.string().nullable().default(null),
  model_path: z.string().nullable().default(null),
  tokenizer_path: z.string().nullable().default(null),
  encoders: z.partialRecord(z.literal("image"), z.record(z.string(), z.string())).default({}),
  decoders: z.partialRecord(z.literal("image"), z.record(z.string(), z.string())).default({}),
  input_encoder: z.enum(["encoder", "decoder"]).default("encoder"),
  output_encoder: z.enum(["encoder", "decoder"]).default("decoder"),
  encode_target: z.boolean().default(false),
  attn_implementation: z.enum(["eager", "sdpa", "flash_attention_2"]).nullable().default("flash_attention_2"),
  moe_implementation: z.enum(["eager", "fused"]).nullable().default(null),
  basic_modules: z.array(z.string()).default([]),
});

export const DataSchema = z.strictObject({
  train_path: z.string().nullable().default(null), // required for training (checked per command)
  train_size: posInt().default(10_000_000),
  data_type: z.enum(["plaintext", "conversation"]).default("conversation"),
  dataloader_type: z.enum(["native"]).default("native"),
  datasets_type: z.enum(["mapping", "iterable"]).default("mapping"),
  data_name: z.string().nullable().default(null),
  data_tag: z.enum(["default", "mmtag"]).default("default"),
  text_keys: z.string().nullable().default(null),
  image_keys: z.string().default("images"),
  chat_template: z.string().default("default"),
  max_seq_len: posInt().default(2048),
  num_workers: int().nonnegative().default(2),
  prefetch_factor: posInt().default(2),
  drop_last: z.boolean().default(true),
  pin_memory: z.boolean().default(true),
  /** ours: what a malformed sample does: stop with an error naming file and line, or count and skip it. */
  on_bad_sample: z.enum(["error", "skip"]).default("error"),
});

export const TrainSchema = z.strictObject({
  output_dir: z.string().nullable().default(null), // required for training (checked per command)
  lr: z.number().positive().default(5e-5),
  lr_min: z.number().nonnegative().default(1e-7),
  lr_start: z.number().nonnegative().default(0.0),
  weight_decay: z.number().nonnegative().default(0),
  optimizer: z.enum(["adamw", "anyprecision_adamw"]).default("adamw"),
  max_grad_norm: z.number().nonnegative().default(1.0),
  micro_batch_size: posInt().default(1),
  global_batch_size: posInt().nullable().default(null),
  num_train_epochs: posInt().default(1),
  rmpad: z.boolean().default(true),
  rmpad_with_pos_ids: z.boolean().default(false),
  dyn_bsz: z.boolean().default(true),
  dyn_bsz_margin: int().nonnegative().default(0),
  dyn_bsz_buffer_size: posInt().default(200),
  bsz_warmup_ratio: z.number().min(0).max(1).default(0),
  bsz_warmup_init_mbtoken: posInt().default(200),
  lr_warmup_ratio: z.number().min(0).max(1).default(0),
  lr_decay_style: z.enum(["constant", "linear", "cosine"]).default("constant"),
  lr_decay_ratio: z.number().min(0).max(1).default(1.0),
  use_doptim: z.boolean().default(false),
  enable_mixed_precision: z.boolean().default(true),
  enable_gradient_checkpointing: z.boolean().default(true),
  enable_reentrant: z.boolean().default(false),
  enable_full_shard: z.boolean().default(true),
  enable_forward_prefetch: z.boolean().default(true),
  enable_fsdp_offload: z.boolean().default(false),
  enable_activation_offload: z.boolean().default(false),
  activation_gpu_limit: z.number().nonnegative().default(0.0),
  enable_manual_eager: z.boolean().default(false),
  /** accepted for VeOmni configs; every value behaves as "meta": each rank builds only its shard (models/weights.ts). */
  init_device: z.enum(["cpu", "cuda", "meta"]).default("cuda"),
  enable_full_determinism: z.boolean().default(false),
  empty_cache_steps: posInt().default(500),
  data_parallel_mode: z.enum(["ddp", "fsdp1", "fsdp2", "fsdp2-vescale"]).default("ddp"),
  /** ours (VeOmni later releases): HSDP replicas; the FSDP shard group is the rest of the dp size. */
  data_parallel_replicate_size: posInt().default(1),
  tensor_parallel_size: posInt().default(1),
  expert_parallel_size: posInt().default(1),
  pipeline_parallel_size: posInt().default(1),
  ulysses_parallel_size: posInt().default(1),
  /** ours: async Ulysses, overlapping the q/k/v projections (and their dgrads) with the all-to-alls. */
  ulysses_async: z.boolean().default(false),
  context_parallel_size: posInt().default(1),
  ckpt_manager: z.enum(["bytecheckpoint", "dcp"]).default("bytecheckpoint"),
  load_checkpoint_path: z.string().nullable().default(null),
  /** ours (HF TrainingArguments' name): start over in an output_dir that holds an earlier run
   *  (its metrics.jsonl and checkpoints/ are removed); without it such a folder is refused unless resumed. */
  overwrite_output_dir: z.boolean().default(false),
  save_steps: int().nonnegative().default(0),
  save_epochs: int().nonnegative().default(1),
  save_hf_weights: z.boolean().default(true),
  seed: int().default(42),
  use_wandb: z.boolean().default(true),
  wandb_project: z.string().default("VeOmni"),
  wandb_name: z.string().nullable().default(null),
  enable_profiling: z.boolean().default(false),
  profile_start_step: int().nonnegative().default(1),
  profile_end_step: int().nonnegative().default(2),
  profile_trace_dir: z.string().default("./trace"),
  profile_record_shapes: z.boolean().default(true),
  profile_profile_memory: z.boolean().default(true),
  profile_with_stack: z.boolean().default(true),
  max_steps: posInt().nullable().default(null),
  /** ours (VeOmni's VL recipes): vision-language models keep the vision tower fixed (forward only, no optimizer state). */
  freeze_vit: z.boolean().default(false),
  /** ours: peak learning rate of the vision tower (same schedule shape as train.lr); null: train.lr. */
  vit_lr: z.number().positive().nullable().default(null),
});

export const InferSchema = z.strictObject({
  model_path: z.string().nullable().default(null), // required for inference (checked per command)
  tokenizer_path: z.string().nullable().default(null),
  seed: int().default(42),
  do_sample: z.boolean().default(true),
  temperature: z.number().nonnegative().default(1.0),
  top_p: z.number().gt(0).max(1).default(1.0),
  /** VeOmni: 1024; ours 128, which answers in seconds on a CPU (raise it for long answers). */
  max_tokens: posInt().default(128),
  /** ours: wrap the prompt as a user message in the tokenizer's chat template (SFT models). */
  chat: z.boolean().default(false),
  /** ours: the prompt as text (needs a tokenizer) ... */
  prompt: z.string().nullable().default(null),
  /** ours: ... or as token ids. */
  input_ids: z.array(int().nonnegative()).nullable().default(null),
  /** ours: image files for a vision-language model (comma-separated on the CLI): with `prompt`
   *  the Qwen2-VL chat template is applied (images first unless the prompt holds "<image>"
   *  placeholders); with `input_ids` each run of image_token_id (one token, or already n long)
   *  takes the next image. */
  images: z.array(z.string()).nullable().default(null),
  /** ours: write {input_ids, logits, prompt_loss, generated} JSON to this file. */
  dump_logits: z.string().nullable().default(null),
});

/** ours: where the job's processes run and how they find each other. */
export const LaunchSchema = z.strictObject({
  /** NATS URL (nats://host:4222). Absent: the coordinator starts an embedded nats-server. */
  nats: z.string().nullable().default(null),
  /** Auth token for `nats` (the embedded server makes its own). */
  nats_token: z.string().nullable().default(null),
  world_size: posInt().default(1),
  /** Workers the coordinator spawns itself. null: all of them when NATS is embedded, none otherwise. */
  local_workers: int().nonnegative().nullable().default(null),
  /** Address the data-plane listeners bind to (and advertise). */
  host: z.string().default("127.0.0.1"),
  /** Data-plane ports [first, last]; [0, 0] picks free ephemeral ports. */
  port_range: z.tuple([int().min(0).max(65535), int().min(0).max(65535)]).default([0, 0]),
  heartbeat_s: z.number().positive().default(1),
  /** A rank whose heartbeat is older than this is declared dead. */
  dead_after_s: z.number().positive().default(15),
  /** ours: how long a worker started apart from the coordinator (`bun run worker`) keeps its state
   *  and waits when the coordinator goes silent, for `coordinator --resume` to adopt it; then it
   *  exits (code 5). Counted from the coordinator's last touch of the job record. */
  coordinator_grace_s: z.number().positive().default(300),
  /** Deadline of every receive on the data plane. */
  collective_timeout_s: z.number().positive().default(60),
  /** Restarts from the last committed checkpoint before the job fails. */
  max_restarts: int().nonnegative().default(0),
  /** Job name in the KV store; default: derived from output_dir and time. */
  job_id: z.string().regex(/^[A-Za-z0-9_-]+$/, "letters, digits, '_' or '-' (it is a NATS subject token)").nullable().default(null),
});

/** ours: the compute backend, chosen once at start (never a silent per-op fallback). */
export const KernelsSchema = z.strictObject({
  backend: z.enum(["auto", "cpu", "webgpu"]).default("auto"),
  /** Compute threads per process (OpenBLAS); 0 = one per core divided among local workers. */
  threads: int().nonnegative().default(0),
});

export const ConfigSchema = z.strictObject({
  model: ModelSchema.default(ModelSchema.parse({})),
  data: DataSchema.default(DataSchema.parse({})),
  train: TrainSchema.default(TrainSchema.parse({})),
  infer: InferSchema.default(InferSchema.parse({})),
  launch: LaunchSchema.default(LaunchSchema.parse({})),
  kernels: KernelsSchema.default(KernelsSchema.parse({})),
});

export type Config = z.infer<typeof ConfigSchema>;
export type ModelArgs = Config["model"];
export type DataArgs = Config["data"];
export type TrainArgs = Config["train"];
export type InferArgs = Config["infer"];
export type LaunchArgs = Config["launch"];
export type KernelsArgs = Config["kernels"];
export type Group = keyof Config;
export const GROUPS = Object.keys(ConfigSchema.shape) as Group[];
