// The checkpoint writer thread (a Bun Worker): takes a staged shard in shared memory and
// writes it durably (rank_writer.writeRank) while the training thread goes on.
// Protocol: {type:"write"} in; {type:"done"|"error"|"paused"} out, one job at a time.

import { type RankLayout, type RankReport, writeRank } from "./rank_writer.ts";

export type WriterRequest = {
  type: "write";
  id: number;
  dir: string;
  layout: RankLayout;
  staging: SharedArrayBuffer;
  extraText: string;
  pauseAfterBytes?: number;
};
export type WriterReply =
  | { type: "done"; id: number; report: RankReport }
  | { type: "error"; id: number; message: string }
  | { type: "paused"; id: number };

declare const self: Worker;

self.onmessage = (ev: MessageEvent<WriterRequest>) => {
  const m = ev.data;
  switch (m.type) {
    case "write": {
      try {
        const report = writeRank(m.dir, m.layout, new Uint8Array(m.staging, 0, m.layout.stagingBytes), m.extraText, {
          pauseAfterBytes: m.pauseAfterBytes,
          onPause: () => self.postMessage({ type: "paused", id: m.id } satisfies WriterReply),
        });
        self.postMessage({ type: "done", id: m.id, report } satisfies WriterReply);
      } catch (e) {
        self.postMessage({ type: "error", id: m.id, message: (e as Error).message } satisfies WriterReply);
      }
      break;
    }
    default: {
      const never: never = m.type;
      throw new Error(`writer_worker: unknown message ${JSON.stringify(never)}`);
    }
  }
};
