// libgomp (OpenMP, shared by oneDNN and the native loops) reads OMP_WAIT_POLICY once, when it is
// loaded. Its default spins idle threads between parallel regions; on a machine whose cores are
// shared (other processes, or our own comm/data threads) the spinning thread steals the core the
// working one needs, and a 2-thread step measured 6.8x the CPU time of a 1-thread one. PASSIVE
// (what tuned PyTorch runs with) makes idle threads sleep. Set through libc before the first
// dlopen of anything that loads libgomp; a value the user exported is kept (overwrite = 0).

import { dlopen, ptr } from "bun:ffi";

let done = false;

export function ompPassiveBeforeLoad(): void {
  if (done) return;
  done = true;
  try {
    const libc = dlopen("libc.so.6", { setenv: { args: ["ptr", "ptr", "i32"], returns: "i32" } });
    const c = (s: string) => ptr(new TextEncoder().encode(`${s}\0`));
    libc.symbols.setenv(c("OMP_WAIT_POLICY"), c("PASSIVE"), 0);
    libc.close();
  } catch {
    // not glibc: OpenMP keeps its default wait policy
  }
}
