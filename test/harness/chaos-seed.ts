/**
 * A small seeded PRNG (mulberry32): the same seed gives the same chaos schedule, so a failing
 * run can be replayed with SHARDLINE_CHAOS_SEED=<seed>.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** The seed from SHARDLINE_CHAOS_SEED, else a fresh one. */
export function chaosSeed(): number {
  const given = process.env.SHARDLINE_CHAOS_SEED;
  if (given !== undefined && given !== "") {
    const seed = Number(given);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new Error(`SHARDLINE_CHAOS_SEED=${given}: expected an integer from 0 to 4294967295`);
    return seed;
  }
  return Math.floor(Math.random() * 0xffffffff);
}
