// The reference op set: plain loops (see dense.ts, attention.ts, loss_optim.ts, moe.ts, norm_act.ts).
import type { HostOps } from "../host_ops.ts";
import * as dense from "./dense.ts";
import * as attn from "./attention.ts";
import * as lo from "./loss_optim.ts";
import * as moe from "./moe.ts";
import * as na from "./norm_act.ts";

export const referenceOps: HostOps = { name: "reference", ...dense, ...attn, ...lo, ...moe, ...na };
