// `bun run bench chaos [--minutes 3] [--ranks 4] [--kills 5] [--seed N] [--steps S] [--save-steps 3]`:
// a chaos soak. One FSDP job of a tiny Qwen2 over `--ranks` workers started as `bun run worker`
// (this driver is their launcher: it starts a rank again when its process ends before the job),
// a checkpoint every `--save-steps` steps, while SIGKILL lands on random workers and once on the
// coordinator at random moments (seeded: the seed and the plan are printed; `--seed` replays it).
// The coordinator restarts the ranks from the last commit (launch.max_restarts = kills + 2); the
// killed coordinator is resumed with `bun run coordinator --resume JOB`, which adopts the live
// ranks. The same job runs uninterrupted first (the reference), on the same nats-server.
// Without --steps, a 4-step probe of the same job sizes the run to about --minutes.
// Reports kills survived, restarts, adoptions, steps redone, bytes of committed state lost, and
// whether the final parameters (every tensor of the exported safetensors) and every step's loss
// equal the reference's bit for bit. Last line: one JSON object with every figure.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { startNatsServer } from "../../actors/embedded.ts";
import { SafetensorsFile } from "../../checkpoint/safetensors.ts";
import { chaosConfig, writeChaosModel } from "../chaos/job.ts";
import { describeKill, planKills, soak, type SoakResult } from "../chaos/soak.ts";

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}
function num(args: string[], name: string, dflt: string, min: number): number {
  const v = Number(arg(args, name, dflt));
  if (!Number.isFinite(v) || v < min) {
    console.error(`bench chaos: --${name} ${arg(args, name, dflt)}: expected a number >= ${min}`);
    process.exit(2);
  }
  return v;
}

/** Every tensor's bytes of two exports equal? The first difference named, else null. */
export function weightsDiffer(a: string, b: string): string | null {
  const [x, y] = [new SafetensorsFile(a), new SafetensorsFile(b)];
  try {
    const names = [...x.tensors.keys()].sort();
    if (names.join() !== [...y.tensors.keys()].sort().join()) return "different tensor names";
    for (const n of names) if (!Buffer.from(x.readRaw(n)).equals(Buffer.from(y.readRaw(n)))) return `${n} differs`;
    return null;
  } finally {
    x.close();
    y.close();
  }
}

const losses = (out: string) => readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { step: number; loss: number; grad_norm: number; step_time_s: number });

export async function main(args: string[]): Promise<void> {
  const minutes = num(args, "minutes", "3", 0.1);
  const ranks = num(args, "ranks", "4", 1);
  const kills = num(args, "kills", "5", 0);
  const saveSteps = num(args, "save-steps", "3", 1);
  const seed = args.includes("--seed") ? num(args, "seed", "0", 0) : Math.floor(Math.random() * 2 ** 31);
  const dir = mkdtempSync(join(tmpdir(), "veomni-bench-chaos-"));
  const server = await startNatsServer();
  const say = (l: string) => console.log(l);
  try {
    say(`chaos soak: seed ${seed}, ${ranks} ranks, ${kills} kills (one of the coordinator), save every ${saveSteps} steps; ${cpus()[0]?.model ?? "?"} x ${cpus().length}; work dir ${dir}`);
    const run = (tag: string, steps: number, plan: ReturnType<typeof planKills>, model: ReturnType<typeof writeChaosModel>): Promise<SoakResult> =>
      soak({
        config: chaosConfig({ model, out: join(dir, `out-${tag}`), jobId: `chaos-${tag}`, ranks, steps, saveSteps, natsUrl: server.url, natsToken: server.token, maxRestarts: kills + 2 }),
        natsToken: server.token, kills: plan, logDir: join(dir, "logs"), log: (l) => say(`  ${l}`),
      });

    let steps = args.includes("--steps") ? num(args, "steps", "0", 4) : 0;
    let stepS = 1;
    if (!steps) {
      const probe = await run("probe", 4, [], writeChaosModel(join(dir, "model-probe"), 64));
      if (!probe.ok) throw new Error(`probe run failed: ${probe.error}`);
      const times = losses(join(dir, "out-probe")).map((m) => m.step_time_s).slice(1);
      stepS = times.sort((a, b) => a - b)[Math.floor(times.length / 2)] ?? 1;
      const startS = probe.wallS - 4 * stepS;
      // the soak's time: its steps, one start, and per kill a restart (a start) and a few steps redone
      steps = Math.max(4 * kills + 8, Math.floor((minutes * 60 - startS * (1 + kills)) / (stepS * 1.3)));
      say(`probe: ${stepS.toFixed(2)} s/step, ${startS.toFixed(1)} s to start the job: ${steps} steps for about ${minutes} min`);
    }
    const model = writeChaosModel(join(dir, "model"), steps * ranks * 2 + 64);
    const plan = planKills(seed, kills, steps, ranks, Math.max(200, Math.round(stepS * 2000)));
    say(`plan (seed ${seed}): ${plan.map(describeKill).join("; ") || "no kills"}`);

    say(`reference: ${steps} steps uninterrupted`);
    const ref = await run("ref", steps, [], model);
    if (!ref.ok) throw new Error(`reference run failed: ${ref.error}`);
    say(`  done in ${ref.wallS.toFixed(1)} s`);
    say(`chaos: ${steps} steps under ${kills} kills`);
    const ch = await run("chaos", steps, plan, model);

    const hf = (tag: string) => join(dir, `out-${tag}`, "checkpoints", `global_step_${steps}`, "hf_ckpt", "model.safetensors");
    const diff = ch.ok ? weightsDiffer(hf("chaos"), hf("ref")) : "the chaos run did not finish";
    const [lc, lr] = ch.ok ? [losses(join(dir, "out-chaos")), losses(join(dir, "out-ref"))] : [[], []];
    const lossesEqual = ch.ok && lc.length === lr.length && lc.every((m, i) => m.step === lr[i].step && m.loss === lr[i].loss && m.grad_norm === lr[i].grad_norm);
    say(`result: ${ch.ok ? "job done" : `job FAILED: ${ch.error}`} at step ${ch.finalStep}/${steps} in ${ch.wallS.toFixed(1)} s (reference ${ref.wallS.toFixed(1)} s)`);
    for (const k of ch.kills) say(`  kill at step ${k.atStep} (epoch ${k.epoch}) of ${k.kill.target === "coordinator" ? "the coordinator" : `rank ${k.kill.target.rank}`} pid ${k.pid}: ${k.outcome}`);
    say(`  kills ${ch.kills.length}/${kills} done, ${ch.survived} survived; restarts ${ch.restarts}, adoptions ${ch.adoptions}, steps redone ${ch.stepsRedone}`);
    say(`  commits ${ch.commits} (${ch.committedBytes} bytes), committed bytes lost ${ch.committedBytesLost}${ch.lostDetail.length ? `: ${ch.lostDetail.join("; ")}` : ""}`);
    say(`  worker processes started ${ch.workerStarts}, coordinators started ${ch.coordinatorStarts}`);
    say(`  final parameters bitwise equal to the reference: ${diff === null ? "yes" : `NO (${diff})`}; every step's loss and grad norm equal: ${lossesEqual ? "yes" : "NO"}`);
    const pass = ch.ok && ch.survived === kills && ch.committedBytesLost === 0 && diff === null && lossesEqual;
    say(`target (every kill survived, 0 bytes lost, bitwise equal): ${pass ? "met" : "NOT met"}`);
    console.log(JSON.stringify({
      bench: "chaos", seed, ranks, steps, save_steps: saveSteps, minutes, kills_planned: kills, plan: plan.map(describeKill),
      kills_done: ch.kills.length, kills_survived: ch.survived, restarts: ch.restarts, adoptions: ch.adoptions, steps_redone: ch.stepsRedone,
      commits: ch.commits, committed_bytes: ch.committedBytes, committed_bytes_lost: ch.committedBytesLost, bitwise_equal: diff === null, losses_equal: lossesEqual,
      outcomes: ch.kills.map((k) => k.outcome), worker_starts: ch.workerStarts, coordinator_starts: ch.coordinatorStarts,
      wall_s: Math.round(ch.wallS * 10) / 10, reference_wall_s: Math.round(ref.wallS * 10) / 10, error: ch.error, target_met: pass,
    }));
    if (pass) rmSync(dir, { recursive: true, force: true });
    else say(`logs kept in ${dir}/logs`);
    process.exitCode = pass ? 0 : 1;
  } catch (e) {
    // the probe or reference run failed (or anything else threw): its logs are what to read
    console.error(`bench chaos: ${(e as Error).message}; logs kept in ${join(dir, "logs")}`);
    throw e;
  } finally {
    await server.stop();
  }
}

if (import.meta.main) await main(process.argv.slice(2));
