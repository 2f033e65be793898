// Process logging: pino JSON lines to output_dir/logs/<process>.log, and human-readable lines on
// a terminal (stderr). Library code takes a logger as a parameter; only entry points make one.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import pino, { type Logger } from "pino";

export type { Logger };

export function makeLogger(processName: string, outputDir?: string | null, level: string = Bun.env.VEOMNI_LOG_LEVEL ?? "info"): Logger {
  const targets: pino.TransportTargetOptions[] = [];
  if (outputDir) {
    mkdirSync(join(outputDir, "logs"), { recursive: true });
    targets.push({ target: "pino/file", level, options: { destination: join(outputDir, "logs", `${processName}.log`), mkdir: true } });
  }
  // Human-readable on a terminal; plain JSON on stderr otherwise (CI, pipes, child processes).
  if (process.stderr.isTTY) targets.push({ target: "pino-pretty", level, options: { destination: 2, colorize: true, ignore: "pid,hostname" } });
  else targets.push({ target: "pino/file", level, options: { destination: 2 } });
  return pino({ name: processName, level, base: { proc: processName } }, pino.transport({ targets }));
}
