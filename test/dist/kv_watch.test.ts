// liveWatch (actors/kv_watch.ts) on a real nats-server: each value reaches onEntry once, in order,
// across restarts of a quiet watch (which repeat the last values); a direct read passes on what
// the watch has not delivered yet; a read the server cannot answer says "unanswered".
import { afterAll, expect, test } from "bun:test";
import { Writable } from "node:stream";
import pino from "pino";
import { startNatsServer, type NatsServer } from "../../actors/embedded.ts";
import { liveWatch } from "../../actors/kv_watch.ts";
import { kvClient } from "./actors_harness.ts";

let server: NatsServer | null = null;
afterAll(async () => {
  await server?.stop();
});

test("liveWatch: once per value across quiet restarts; confirm passes on the newest value; unanswered when NATS is gone", async () => {
  server = await startNatsServer();
  const { nc, kv } = await kvClient(server.url, server.token);
  // log lines as events: each "starting it over" resolves the next waiter
  const restarts: Array<() => void> = [];
  const log = pino(
    { level: "info" },
    new Writable({
      write(chunk, _enc, cb) {
        if (String(chunk).includes("starting it over")) restarts.shift()?.();
        cb();
      },
    }),
  );
  const nextRestart = () => new Promise<void>((r) => restarts.push(r));
  const got: string[] = [];
  const waiters = new Map<string, () => void>();
  const delivered = (v: string) => new Promise<void>((r) => (got.includes(v) ? r() : waiters.set(v, r)));
  const w = liveWatch(kv, {
    what: "test watch",
    key: "lw.>",
    quietMs: 300,
    maxQuietMs: 1200,
    onEntry: (e) => {
      const v = e.string();
      got.push(v);
      waiters.get(v)?.();
    },
    closed: () => nc.isClosed(),
    log,
  });
  try {
    await kv.put("lw.a", "1");
    await delivered("1");
    await nextRestart(); // 300 ms of nothing new: started over (it repeats "1": dropped)
    await kv.put("lw.a", "2");
    await delivered("2");
    await nextRestart(); // (the quiet allowed was reset to 300 ms by "2")
    await kv.put("lw.b", "3");
    await delivered("3"); // (the restarted watch repeats "2" before "3": dropped)
    expect(got).toEqual(["1", "2", "3"]);
    expect(w.revision("lw.a")).toBeGreaterThan(0);

    expect(await w.confirm("lw.a")).toBe("same");
    expect(await w.confirm("lw.none")).toBe("same");
    // A write then a direct read: whichever of the watch and the read brings it first passes it on,
    // once; when confirm resolves it has been passed on either way.
    await kv.put("lw.a", "4");
    expect(["newer", "same"]).toContain(await w.confirm("lw.a"));
    expect(got).toEqual(["1", "2", "3", "4"]);

    await server.stop();
    server = null;
    expect(await w.confirm("lw.a")).toBe("unanswered");
  } finally {
    w.stop();
    await nc.close();
  }
}, 60_000);
