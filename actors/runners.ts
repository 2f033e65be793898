// The step implementations a worker can build, by the name the job record gives.
import type { RunnerFactory } from "./runner.ts";
import { toyRunner } from "./runner.ts";
import { makeTrainRunner } from "./train_runner.ts";

export const RUNNERS: Record<string, RunnerFactory> = {
  toy: toyRunner,
  train: makeTrainRunner(),
};
