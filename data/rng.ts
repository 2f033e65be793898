// mulberry32: a small, fast, well-distributed, seedable 32-bit PRNG returning uniforms in [0, 1).
// One idea shared by design (tools/lint.ts lists it as a contract): the data order, model
// initialisation, sampling and the tests all draw from it, so equal seeds give equal streams.
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
