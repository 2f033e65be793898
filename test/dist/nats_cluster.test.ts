// A NATS cluster as the control plane: three clustered nats-servers on loopback, the job bucket
// replicated (R3). The server leading the bucket's stream is killed with -9 while the job runs,
// under the default heartbeat deadlines: the job finishes every step with the losses of an
// uninterrupted run, and its record stays readable through the other two.
import { afterAll, expect, test } from "bun:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { startNatsServer, type NatsServer } from "../../actors/embedded.ts";
import { BUCKET, keys, type JobState } from "../../actors/nats.ts";
import { toyRunner, type WorkerContext } from "../../actors/runner.ts";
import { mergeStep } from "../../actors/metrics.ts";
import { ConfigSchema, type Config } from "../../configs/index.ts";
import { COORD_ENTRY, childPids, kvClient, readMetrics, readState, textOf } from "./actors_harness.ts";
import { tempDir, testEnv } from "../harness/tmp.ts";

const servers: NatsServer[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  expect(childPids()).toEqual([]);
});

/** Free loopback TCP ports (bound, read, released) for the cluster routes, which must be known up front. */
function freePorts(n: number): number[] {
  const ls = Array.from({ length: n }, () => Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } }));
  const ports = ls.map((l) => l.port);
  for (const l of ls) l.stop(true);
  return ports;
}

const STEPS = 150;

/** The same toy job run in this process, uninterrupted: each step's merged loss and rank 0's grad norm. */
async function reference(config: Config): Promise<Array<{ step: number; loss: number; grad_norm: number }>> {
  const fast = { ...config, train: { ...config.train, micro_batch_size: 0 } }; // (the toy's busy ms: no effect on values)
  const ranks = await Promise.all([0, 1].map((rank) => toyRunner.build({ rank, worldSize: 2, config: fast } as WorkerContext)));
  const out = [];
  for (let step = 0; step < STEPS; step++) {
    const m = mergeStep(step, await Promise.all(ranks.map((r) => r.runStep(step))), 0);
    out.push({ step: m.step, loss: m.loss, grad_norm: m.grad_norm });
  }
  return out;
}

test("three clustered nats-servers, bucket R3: a job keeps running when the bucket's leader server is killed", async () => {
  const routes = freePorts(3);
  const token = "cluster-test-token";
  for (let i = 0; i < 3; i++) {
    servers.push(
      await startNatsServer({
        token,
        name: `n${i}`,
        cluster: { name: "veomni", port: routes[i], routes: routes.filter((_, j) => j !== i).map((p) => `nats-route://127.0.0.1:${p}`) },
      }),
    );
  }
  const urls = servers.map((s) => s.url).join(",");
  const out = tempDir("cluster");
  const config = {
    train: { output_dir: out, lr: 0.5, max_steps: STEPS, micro_batch_size: 50 },
    // >= 7.5 s of steps (the toy step busy-waits micro_batch_size ms), so the kill lands mid-job even
    // when the test's own client needs seconds to find the cluster's JetStream leader.
    // The heartbeat deadlines are the defaults (dead_after_s, coordinator_grace_s): the KV watches
    // stall while the stream leader changes, and liveness must not be judged from them (kv_watch.ts).
    launch: { nats: urls, nats_token: token, local_workers: 2, world_size: 2, job_id: "cl1" },
  };
  const coord = Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify(config), "toy"], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  const coordErr = textOf(coord.stderr);
  const early = coord.exited.then(async (c) => {
    throw new Error(`coordinator exited (${c}) before the kill: ${(await coordErr).slice(-2000)}`);
  });

  const { nc, kv } = await kvClient(urls, token);
  try {
    const w = await kv.watch({ key: keys.state("cl1") });
    const running = (async () => {
      for await (const e of w) if (e.operation === "PUT" && e.json<JobState>().step >= 3) break;
    })();
    await Promise.race([running, early]);
    early.catch(() => {}); // the coordinator ends later, normally
    w.stop();
    const info = await (await jetstreamManager(nc)).streams.info(`KV_${BUCKET}`);
    expect((await readState(kv, "cl1"))?.phase).toBe("running"); // the kill lands mid-job
    expect(info.config.num_replicas).toBe(3);
    const leader = info.cluster!.leader!;
    const victim = servers.find((_, i) => `n${i}` === leader);
    if (!victim) throw new Error(`stream leader ${leader} is none of n0..n2`);
    victim.proc.kill("SIGKILL");
    await victim.proc.exited;
    const cc = await coord.exited;
    if (cc !== 0) throw new Error(`coordinator exit ${cc}: ${(await coordErr).slice(-2000)}`);
    const got = readMetrics(out).map((m) => ({ step: m.step, loss: m.loss, grad_norm: m.grad_norm }));
    expect(got).toEqual(await reference(ConfigSchema.parse(config))); // every step once, same values
    expect(await readState(kv, "cl1")).toMatchObject({ phase: "done", step: STEPS, error: null });
  } finally {
    coord.kill("SIGKILL"); // (already gone unless the test failed)
    await nc.close();
  }
}, 180_000);
