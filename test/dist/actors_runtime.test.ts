// Pure pieces of the actor runtime: mailbox ordering and failure, the protocol codec, supervision.
import { describe as group, expect, test } from "bun:test";
import { Actor } from "../../actors/mailbox.ts";
import { PROTOCOL_VERSION, decodeToCoordinator, decodeToWorker, encode } from "../../actors/protocol.ts";
import { decide, describe } from "../../actors/supervision.ts";
import { mergeStep } from "../../actors/metrics.ts";
import { Packr } from "msgpackr";

group("mailbox", () => {
  test("handles one message at a time, in order", async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const seen: number[] = [];
    const a = new Actor<number, number>("t", async (n) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await Promise.resolve();
      seen.push(n);
      inFlight--;
      return n * 2;
    });
    const rs = await Promise.all([1, 2, 3, 4].map((n) => a.ask(n)));
    expect(rs).toEqual([2, 4, 6, 8]);
    expect(seen).toEqual([1, 2, 3, 4]);
    expect(maxInFlight).toBe(1);
  });

  test("a failing handler fails the actor: supervisor told, queued and later messages rejected", async () => {
    const failures: string[] = [];
    const a = new Actor<number, void>("stage", (n) => {
      if (n === 2) throw new Error("boom at 2");
    }, (name, err) => failures.push(`${name}: ${err.message}`));
    const p1 = a.ask(1);
    const p2 = a.ask(2);
    const p3 = a.ask(3);
    await p1;
    await expect(p2).rejects.toThrow("actor stage: boom at 2");
    await expect(p3).rejects.toThrow("boom at 2");
    await expect(a.ask(4)).rejects.toThrow("boom at 2");
    expect(failures).toEqual(["stage: actor stage: boom at 2"]);
  });
});

group("protocol", () => {
  test("round trip and refusal of other versions and kinds", () => {
    const m = { v: PROTOCOL_VERSION, kind: "step" as const, job: "j", epoch: 3, step: 7, save: false };
    expect(decodeToWorker(encode(m))).toEqual(m);
    const p = new Packr({ useRecords: false });
    expect(() => decodeToWorker(p.pack({ ...m, v: 99 }))).toThrow(`protocol version 99, expected ${PROTOCOL_VERSION}`);
    expect(() => decodeToCoordinator(encode(m))).toThrow("unknown kind step");
    expect(() => decodeToCoordinator(p.pack(5))).toThrow("expected a msgpack map");
  });
});

group("supervision", () => {
  const h = { restarts: 0, maxRestarts: 2, lastCheckpoint: null };
  test("a dead rank stops the job with its rank named", () => {
    const d = decide({ kind: "silent", rank: 3, silentS: 4.2, deadlineS: 3 }, { ...h, maxRestarts: 0 });
    expect(d).toEqual({ action: "stop", exitCode: 1, reason: "rank 3 is dead: no heartbeat for 4.2 s (launch.dead_after_s = 3)" });
    const e = decide({ kind: "exited", rank: 1, pid: 42, code: null, signal: "SIGKILL", stderrTail: "" }, { ...h, maxRestarts: 0 });
    expect(e.reason).toBe("rank 1 (pid 42) was killed by SIGKILL before the job ended");
  });
  test("restart while restarts are left (from the last commit, else from step 0); Ctrl-C never restarts", () => {
    const f = { kind: "reported" as const, rank: 0, step: 5, error: "collective timeout" };
    expect(decide(f, { ...h, lastCheckpoint: "checkpoints/global_step_4" })).toMatchObject({ action: "restart", fromCheckpoint: "checkpoints/global_step_4" });
    expect(decide(f, h)).toMatchObject({ action: "restart", fromCheckpoint: null });
    expect(decide(f, { ...h, maxRestarts: 0 })).toEqual({ action: "stop", exitCode: 1, reason: "rank 0 failed at step 5: collective timeout" });
    expect(decide(f, { restarts: 2, maxRestarts: 2, lastCheckpoint: "c" })).toMatchObject({ action: "stop", exitCode: 1 });
    expect(decide({ kind: "interrupted", signal: "SIGINT" }, { ...h, lastCheckpoint: "c" })).toMatchObject({ action: "stop", exitCode: 130 });
    expect(describe(f)).toBe("rank 0 failed at step 5: collective timeout");
  });
});

test("metrics merge: token-mean loss over ranks, max rss and each rank's", () => {
  const base = { gradNorm: 1.5, lr: 1e-3, stepTimeS: 0.1, flops: 1e9, peakFlops: 1e10 };
  const m = mergeStep(0, [
    { ...base, lossSum: 30, validTokens: 10, tokens: 12, peakRssMb: 100 },
    { ...base, lossSum: 10, validTokens: 30, tokens: 32, peakRssMb: 120 },
  ], 0.5);
  expect(m).toMatchObject({ step: 1, loss: 1, tokens: 44, valid_tokens: 40, tokens_per_s: 88, peak_rss_mb: 120, peak_rss_mb_ranks: [100, 120], grad_norm: 1.5 });
  expect(m.mfu).toBeCloseTo(0.2, 10);
});
