// Process logs: JSON lines in output_dir/logs/<process>.log, on disk when the call returns.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { makeLogger } from "../../configs/index.ts";
import { tempDir } from "../harness/tmp.ts";

test("a process logs JSON lines to output_dir/logs/<process>.log", () => {
  const out = tempDir("log");
  const log = makeLogger("worker-3", out, "info");
  log.debug("not at info level");
  log.info({ step: 7, loss: 2.5 }, "step done");
  const text = readFileSync(join(out, "logs", "worker-3.log"), "utf8");
  const lines = text.trim().split("\n").map((l) => JSON.parse(l));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatchObject({ level: 30, proc: "worker-3", step: 7, loss: 2.5, msg: "step done" });
});
