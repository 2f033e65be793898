// Several hosts on one machine: each worker in its own network namespace, joined to the others by
// a veth pair on one bridge, with its own address (10.231.X.1y/24); a standalone nats-server and
// the coordinator in the root namespace, on the bridge's address. Each namespace has its own
// loopback, so a worker that advertised 127.0.0.1 would send its peer to the peer itself: the
// ranks' rings only form over the veth addresses. Workers are started with no --host: they must
// find their namespace address themselves (actors/host_addr.ts). The losses equal one process's.
// Needs root (CAP_NET_ADMIN) and iproute2; elsewhere (a CI container without them) the test is
// skipped with the reason in its name; so is a host whose firewall drops bridged traffic (checked
// with a TCP connection from each namespace first). Namespaces and the bridge are removed however
// it ends.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { startNatsServer, type NatsServer } from "../../actors/embedded.ts";
import { runJob } from "../../actors/coordinator.ts";
import { COORD_ENTRY, WORKER_MAIN, alive, childPids, fileLogger, kvClient, readMetrics, readRank, textOf } from "./actors_harness.ts";
import { tempDir, testEnv } from "../harness/tmp.ts";
import { close, tinyTrainConfig } from "./actors_parity_setup.ts";

const TAG = String(process.pid % 100000); // interface names are at most 15 characters
const BRIDGE = `vbr${TAG}`;
// a /24 no interface of this host uses yet (another run of this test may hold one)
const SUBNET = (() => {
  const used = Bun.which("ip") ? Bun.spawnSync(["ip", "-4", "addr"]).stdout.toString() : "";
  for (let k = 0; k < 250; k++) {
    const s = `10.231.${(process.pid + k) % 250}`;
    if (!used.includes(`${s}.`)) return s;
  }
  return `10.231.${process.pid % 250}`;
})();
const WORLD = 2;
const nsName = (i: number) => `veomni${TAG}-${i}`;

function run(args: string[]): { ok: boolean; out: string } {
  const r = Bun.spawnSync(args, { stdout: "pipe", stderr: "pipe" });
  return { ok: r.exitCode === 0, out: `${r.stdout.toString()}${r.stderr.toString()}`.trim() };
}

function ip(...args: string[]): string {
  const r = run(["ip", ...args]);
  if (!r.ok) throw new Error(`ip ${args.join(" ")}: ${r.out}`);
  return r.out;
}

/** Builds the namespaces (setup) and checks that each reaches the bridge's address over TCP;
 *  returns why not (everything removed again), or null and the namespaces' addresses. */
function prepare(): { why: string | null; addrs: string[] } {
  if (process.platform !== "linux") return { why: "network namespaces are Linux only", addrs: [] };
  if (!Bun.which("ip")) return { why: "the ip command (iproute2) is not installed; node tools/setup.mjs installs it", addrs: [] };
  let addrs: string[];
  try {
    addrs = setup();
  } catch (e) {
    teardown();
    return { why: `network namespaces, veth or bridges are not permitted here (${(e as Error).message})`, addrs: [] };
  }
  // the kernel completes a TCP handshake with a listening socket even while this thread blocks
  const probe = Bun.listen({ hostname: `${SUBNET}.1`, port: 0, socket: { data() {} } });
  try {
    for (let i = 0; i < WORLD; i++) {
      const r = Bun.spawnSync(["ip", "netns", "exec", nsName(i), process.execPath, "-e", `const s = require("node:net").connect(${probe.port}, "${SUBNET}.1", () => process.exit(0)); s.on("error", (e) => { console.error(e.message); process.exit(1); }); setTimeout(() => { console.error("timed out"); process.exit(1); }, 5000);`], { stdout: "pipe", stderr: "pipe" });
      if (r.exitCode !== 0) {
        teardown();
        return { why: `namespace ${i} cannot reach the bridge's address (${r.stderr.toString().trim() || `exit ${r.exitCode}`}): bridged traffic is blocked or ip netns exec is not permitted here`, addrs: [] };
      }
    }
  } finally {
    probe.stop(true);
  }
  return { why: null, addrs };
}

/** Removes this run's namespaces (killing what runs in them) and bridge; safe to call twice. */
function teardown(): void {
  for (let i = 0; i < WORLD; i++) {
    const pids = run(["ip", "netns", "pids", nsName(i)]);
    if (pids.ok) for (const p of pids.out.split(/\s+/).filter(Boolean)) try { process.kill(Number(p), "SIGKILL"); } catch { /* already gone */ }
    run(["ip", "netns", "del", nsName(i)]); // deletes its veth end, and with it the bridge's end
  }
  run(["ip", "link", "del", BRIDGE]);
}

/** The bridge on SUBNET.1 in this namespace; namespace i with veth address SUBNET.(10 + i). */
function setup(): string[] {
  teardown(); // leftovers of a run of this pid
  ip("link", "add", BRIDGE, "type", "bridge");
  ip("addr", "add", `${SUBNET}.1/24`, "dev", BRIDGE);
  ip("link", "set", BRIDGE, "up");
  const addrs: string[] = [];
  for (let i = 0; i < WORLD; i++) {
    const ns = nsName(i), host = `vh${TAG}${i}`, inner = `vn${TAG}${i}`;
    ip("netns", "add", ns);
    ip("link", "add", host, "type", "veth", "peer", "name", inner);
    ip("link", "set", host, "master", BRIDGE);
    ip("link", "set", host, "up");
    ip("link", "set", inner, "netns", ns);
    ip("-n", ns, "addr", "add", `${SUBNET}.${10 + i}/24`, "dev", inner);
    ip("-n", ns, "link", "set", inner, "up");
    ip("-n", ns, "link", "set", "lo", "up");
    addrs.push(`${SUBNET}.${10 + i}`);
  }
  return addrs;
}

const { why, addrs } = prepare();
let server: NatsServer | null = null;
process.on("exit", () => { if (!why) teardown(); }); // a crashed run leaves nothing either
afterAll(async () => {
  await server?.stop();
  if (!why) teardown();
  expect(childPids()).toEqual([]);
});

test.skipIf(why !== null)(`workers in their own network namespaces (veth + bridge), standalone nats-server: rings over the veth addresses, losses equal one process${why ? ` [skipped: ${why}]` : ""}`, async () => {
  try {
    server = await startNatsServer({ host: `${SUBNET}.1` });
    const dir = tempDir("netns");
    const out = join(dir, "out2");
    const cfg = tinyTrainConfig(dir, out, {}, { max_steps: 4, save_hf_weights: false });
    const config = { ...cfg, launch: { ...cfg.launch, nats: server.url, nats_token: server.token, local_workers: 0, world_size: WORLD, job_id: "netns1", collective_timeout_s: 30, dead_after_s: 60 } }; // a loaded host stalls processes for seconds
    const coord = Bun.spawn([process.execPath, COORD_ENTRY, JSON.stringify(config), "train"], { env: testEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
    const coordErr = textOf(coord.stderr);
    // no --host: each worker must advertise its namespace's address, found on its route to NATS
    const workers = addrs.map((_, i) => Bun.spawn(["ip", "netns", "exec", nsName(i), process.execPath, WORKER_MAIN, "--rank", String(i), "--nats", server!.url], {
      env: { ...process.env, VEOMNI_NATS_TOKEN: server!.token }, stdin: "ignore", stdout: "ignore", stderr: "pipe",
    }));
    const workerErr = workers.map((w) => textOf(w.stderr));
    const [cc, ...wc] = await Promise.all([coord.exited, ...workers.map((w) => w.exited)]);
    if (cc !== 0 || wc.some((c) => c !== 0))
      throw new Error(`coordinator exit ${cc}, workers ${wc.join(", ")}: ${(await coordErr).slice(-1500)}\n${(await Promise.all(workerErr)).map((e) => e.slice(-800)).join("\n")}`);
    const { nc, kv } = await kvClient(server.url, server.token);
    for (let r = 0; r < WORLD; r++) expect((await readRank(kv, "netns1", r))!.addr).toStartWith(`${addrs[r]}:`);
    await nc.close();
    // the same job in one process
    const one = join(dir, "out1");
    expect(await runJob(tinyTrainConfig(dir, one, { world_size: 1 }, { max_steps: 4, save_hf_weights: false }), fileLogger(dir, "c1").logger)).toBe(0);
    const [a, b] = [readMetrics(one), readMetrics(out)];
    expect(b.map((m) => m.step)).toEqual([1, 2, 3, 4]);
    close(a.map((m) => m.loss as number), b.map((m) => m.loss as number), 1e-5, "losses");
    close(a.map((m) => m.grad_norm as number), b.map((m) => m.grad_norm as number), 1e-4, "grad norms");
    for (const w of workers) expect(alive(w.pid)).toBe(false);
  } finally {
    await server?.stop();
    server = null;
    teardown();
  }
  // nothing of this run is left
  expect(run(["ip", "netns", "list"]).out).not.toContain(`veomni${TAG}-`);
  expect(run(["ip", "link", "show", BRIDGE]).ok).toBe(false);
}, 90_000);
