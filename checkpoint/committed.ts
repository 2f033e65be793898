// The one definition of "committed", used by every reader and writer: a `global_step_N` folder
// whose metadata.json exists, is valid (format, version, fields) and says step N. A folder
// without it is an interrupted save; one with damaged metadata is not a commit either (it cannot
// be loaded), and whoever skips or overwrites it says so.
import { existsSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { METADATA_FILE, type Metadata, parseMetadata, parseStepDir } from "./format.ts";

export type CommitState = { committed: true; meta: Metadata } | { committed: false; why: string };

export function commitState(dir: string): CommitState {
  const mp = join(dir, METADATA_FILE);
  if (!existsSync(mp)) return { committed: false, why: `no ${METADATA_FILE}` };
  let meta: Metadata;
  try {
    meta = parseMetadata(readFileSync(mp, "utf8"), mp);
  } catch (e) {
    return { committed: false, why: (e as Error).message };
  }
  const step = parseStepDir(basename(dir));
  if (step !== null && meta.step !== step) return { committed: false, why: `${mp} says step ${meta.step}, the folder is step ${step}` };
  return { committed: true, meta };
}
