// Temp folders for tests. A `bun test` run keeps everything it writes under one root of its own,
// /tmp/veomni-test-XXXXXX (made here, loaded first by bunfig.toml's [test] preload), with one
// folder per test file under it; a file's folder is removed once its tests are over (before the
// next file's first test; the last one with the root at the end of the run). TMPDIR points at
// the root, so what the code under test puts in os.tmpdir() (nats-server stores, resume configs)
// lands there too, and so do the child processes started with `env: testEnv(...)`.
// Two runs sharing a machine never touch each other's folders: a run removes only its own root.
import { afterAll, beforeEach } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";

// Evaluated once per `bun test` process (the preload, and every later import, share the module).
// A child `bun test` run started by a test makes its own root under this one.
const root = mkdtempSync(join(tmpdir(), "veomni-test-"));
process.env.TMPDIR = root;

/** The folder of each test file that asked for one (Bun.main is the running test file). */
const fileDirs = new Map<string, string>();

function removeFileDirs(keep: string | null): void {
  for (const [file, dir] of fileDirs) {
    if (file === keep) continue;
    rmSync(dir, { recursive: true, force: true });
    fileDirs.delete(file);
  }
}

// Global hooks (this module is the preload): a new file's first test ends the previous files' folders.
beforeEach(() => removeFileDirs(Bun.main));
afterAll(() => {
  removeFileDirs(null);
  rmSync(root, { recursive: true, force: true });
});

/** A new empty folder `<tag>-XXXXXX` for the running test file, removed when the file's tests are over. */
export function tempDir(tag: string): string {
  let fileDir = fileDirs.get(Bun.main);
  if (!fileDir) {
    fileDir = mkdtempSync(join(root, `${basename(Bun.main).replace(/\.test\.ts$/, "")}-`)); // unique: two files may share a name
    fileDirs.set(Bun.main, fileDir);
  }
  return mkdtempSync(join(fileDir, `${tag}-`));
}

/** The environment for a child process: this process's (TMPDIR = the run's root) plus `extra`.
 *  Bun.spawn without `env` passes the environment the test process started with, not process.env. */
export function testEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { ...(process.env as Record<string, string>), ...extra };
}
