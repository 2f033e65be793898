// Process logging: pino JSON lines to output_dir/logs/<process>.log, and human-readable lines on
// a terminal (stderr). Library code takes a logger as a parameter; only entry points make one.
// Streams are in-thread and the file is written synchronously: logs are a few lines per step,
// and a line must be on disk before a crash or process.exit, not in a transport thread's queue.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import pino, { type Logger } from "pino";
import pretty from "pino-pretty";

export type { Logger };

export function makeLogger(processName: string, outputDir?: string | null, level: string = Bun.env.VEOMNI_LOG_LEVEL ?? "info"): Logger {
  const streams: pino.StreamEntry[] = [];
  if (outputDir) {
    mkdirSync(join(outputDir, "logs"), { recursive: true });
    streams.push({ level: level as pino.Level, stream: pino.destination({ dest: join(outputDir, "logs", `${processName}.log`), sync: true }) });
  }
  // Pretty on a terminal; JSON on stderr otherwise (CI, pipes, child processes).
  const stderr = process.stderr.isTTY
    ? pretty({ destination: 2, colorize: true, ignore: "pid,hostname,proc", sync: true })
    : pino.destination({ dest: 2, sync: true });
  streams.push({ level: level as pino.Level, stream: stderr });
  return pino({ name: processName, level, base: { proc: processName } }, pino.multistream(streams));
}
