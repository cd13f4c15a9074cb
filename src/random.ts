/**
 * The one seeded pseudo-random generator of mechint, for everything that must give the same
 * result for the same seed (synthetic data, reservoir sampling, k-means++, SAE init, fuzzing). The core is xoshiro128**
 * (32-bit state words, so it runs on plain JS integers), seeded through a SplitMix32-style hash
 * so that nearby seeds (0, 1, 2) give unrelated streams.
 */

export interface Rng {
  /** A uniform 32-bit unsigned integer. */
  nextUint32(): number;
  /** A uniform float in [0, 1) with 32 random bits. */
  uniform(): number;
  /** A standard normal sample (Box–Muller; the second value of each pair is kept for the next call). */
  normal(): number;
  /** A uniform integer in [0, n). */
  int(n: number): number;
  /** A Poisson draw with the given mean (multiplication method; normal approximation above 40). */
  poisson(mean: number): number;
  /** Fisher–Yates shuffle in place; returns the same array. */
  shuffle<T extends { length: number; [i: number]: unknown }>(a: T): T;
}

/** Turns any number (or string) into a 32-bit seed. */
function seedWord(seed: number | string): number {
  if (typeof seed === 'string') {
    // FNV-1a over the UTF-16 code units: good enough to spread a name into 32 bits.
    let h = 0x811c9dc5;
    for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 0x01000193);
    return h >>> 0;
  }
  if (!Number.isFinite(seed)) return 0;
  // Fold the high bits of large or fractional seeds in, so 2**32 + 1 differs from 1.
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 4294967296) >>> 0;
  return (lo ^ Math.imul(hi, 0x9e3779b1)) >>> 0;
}

/** Creates a generator; the same seed always gives the same sequence. */
export function createRng(seed: number | string = 0): Rng {
  let x = seedWord(seed);
  // SplitMix32-style expansion of one word into four state words (never all zero).
  const expand = (): number => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let s0 = expand();
  let s1 = expand();
  let s2 = expand();
  let s3 = expand();
  if ((s0 | s1 | s2 | s3) === 0) s0 = 1;

  const nextUint32 = (): number => {
    const t = s1 << 9;
    let r = Math.imul(s1, 5);
    r = Math.imul((r << 7) | (r >>> 25), 9);
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    return r >>> 0;
  };
  const uniform = (): number => nextUint32() / 4294967296;

  let spare: number | null = null;
  const normal = (): number => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    // 1 - u lies in (0, 1], so the log is finite.
    const r = Math.sqrt(-2 * Math.log(1 - uniform()));
    const theta = 2 * Math.PI * uniform();
    spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  };

  const int = (n: number): number => Math.floor(uniform() * n);

  const shuffle = <T extends { length: number; [i: number]: unknown }>(a: T): T => {
    for (let i = a.length - 1; i > 0; i--) {
      const j = int(i + 1);
      const tmp = a[i];
      a[i] = a[j];
      a[j] = tmp;
    }
    return a;
  };

  const poisson = (mean: number): number => {
    if (!(mean > 0)) return 0;
    if (mean > 40) return Math.max(0, Math.round(mean + Math.sqrt(mean) * normal()));
    const limit = Math.exp(-mean);
    let k = 0;
    let p = uniform();
    while (p > limit) {
      k++;
      p *= uniform();
    }
    return k;
  };

  return { nextUint32, uniform, normal, int, shuffle, poisson };
}
