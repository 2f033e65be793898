// mulberry32: a small, fast, well-distributed, seedable 32-bit PRNG returning uniforms in [0, 1).
// One idea shared by design (tools/lint.ts lists it as a contract): the data order, model
// initialisation, sampling and the tests all draw from it, so equal seeds give equal streams.
//
// Its state after k draws is seed + k * 0x6d2b79f5 (mod 2^32): `skip` jumps over k draws in O(1),
// so a rank can draw the values of any slice of a stream without drawing those before it.
export function mulberry32(seed: number, skip = 0): () => number {
  let a = (seed + Math.imul(skip, 0x6d2b79f5)) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
