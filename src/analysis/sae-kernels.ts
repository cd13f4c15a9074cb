/**
 * WebAssembly SIMD kernels for the TopK SAE's loops, over a thread's own memory:
 *   axpy(dst, src, a, n): dst[0..n) += a · src[0..n)      dot(a, b, n): Σ a[i] · b[i]
 *   adam(p, g, m, v, n, lr, β1, β2, ε): one fused Adam step in place
 * (pointers are byte offsets, n counts floats). Each active (row, latent) pair is one or two
 * calls over d floats. Measured here: plain JS loops ~5 ns per multiply-add; tfjs' gatherND /
 * scatterND / broadcast kernels ~1 ns per element and pass, with ~10 passes per pair; these
 * f32x4 loops make the sparse work a small fraction of the encoder product.
 *
 * The module is a few hand-assembled bytes (no toolchain needed); its text form is in the comments.
 */

const i32 = 0x7f;
const f32 = 0x7d;
const v128 = 0x7b;

/** Unsigned LEB128. */
function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}
const vec = (items: number[][]): number[] => [...leb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...leb(body.length), ...body];
const str = (s: string): number[] => [...leb(s.length), ...[...s].map((c) => c.charCodeAt(0))];

// Opcodes used below.
const OP = {
  block: [0x02, 0x40], loop: [0x03, 0x40], end: [0x0b], br: (l: number) => [0x0c, l], brIf: (l: number) => [0x0d, l],
  get: (i: number) => [0x20, i], set: (i: number) => [0x21, i], i32c: (v: number) => [0x41, v], // v < 64 only
  i32lt: [0x48], i32eqz: [0x45], i32add: [0x6a], i32sub: [0x6b],
  f32load: [0x2a, 0x02, 0x00], f32store: [0x38, 0x02, 0x00], f32add: [0x92], f32mul: [0x94], f32zero: [0x43, 0, 0, 0, 0],
  vload: [0xfd, 0x00, 0x02, 0x00], vstore: [0xfd, 0x0b, 0x02, 0x00], splat: [0xfd, 0x13],
  vadd: [0xfd, 0xe4, 0x01], vsub: [0xfd, 0xe5, 0x01], vmul: [0xfd, 0xe6, 0x01], vdiv: [0xfd, 0xe7, 0x01], vsqrt: [0xfd, 0xe3, 0x01],
  lane: (l: number) => [0xfd, 0x1f, l], f32sub: [0x93], f32div: [0x95], f32sqrt: [0x91],
};
/** `p += step` for local p. */
const bump = (p: number, step: number) => [...OP.get(p), ...OP.i32c(step), ...OP.i32add, ...OP.set(p)];
const dec = (n: number, step: number) => [...OP.get(n), ...OP.i32c(step), ...OP.i32sub, ...OP.set(n)];

// axpy(dst=0, src=1, a=2, n=3), local 4: v128 splat(a)
//   while (n >= 4) { v128.store(dst, v128.load(dst) + v128.load(src) * a4); dst += 16; src += 16; n -= 4 }
//   while (n != 0) { f32.store(dst, f32.load(dst) + f32.load(src) * a); dst += 4; src += 4; n -= 1 }
const axpyBody = [
  ...vec([[1, v128]]),
  ...OP.get(2), ...OP.splat, ...OP.set(4),
  ...OP.block, ...OP.loop,
  ...OP.get(3), ...OP.i32c(4), ...OP.i32lt, ...OP.brIf(1),
  ...OP.get(0), ...OP.get(0), ...OP.vload, ...OP.get(1), ...OP.vload, ...OP.get(4), ...OP.vmul, ...OP.vadd, ...OP.vstore,
  ...bump(0, 16), ...bump(1, 16), ...dec(3, 4), ...OP.br(0),
  ...OP.end, ...OP.end,
  ...OP.block, ...OP.loop,
  ...OP.get(3), ...OP.i32eqz, ...OP.brIf(1),
  ...OP.get(0), ...OP.get(0), ...OP.f32load, ...OP.get(1), ...OP.f32load, ...OP.get(2), ...OP.f32mul, ...OP.f32add, ...OP.f32store,
  ...bump(0, 4), ...bump(1, 4), ...dec(3, 1), ...OP.br(0),
  ...OP.end, ...OP.end,
  ...OP.end,
];

// dot(a=0, b=1, n=2) -> f32, locals 3: v128 acc, 4: f32 s
//   acc = 0; while (n >= 4) { acc += v128.load(a) * v128.load(b); a += 16; b += 16; n -= 4 }
//   s = acc[0] + acc[1] + acc[2] + acc[3]; while (n != 0) { s += f32.load(a) * f32.load(b); ... } return s
const dotBody = [
  ...vec([[1, v128], [1, f32]]),
  ...OP.f32zero, ...OP.splat, ...OP.set(3),
  ...OP.block, ...OP.loop,
  ...OP.get(2), ...OP.i32c(4), ...OP.i32lt, ...OP.brIf(1),
  ...OP.get(3), ...OP.get(0), ...OP.vload, ...OP.get(1), ...OP.vload, ...OP.vmul, ...OP.vadd, ...OP.set(3),
  ...bump(0, 16), ...bump(1, 16), ...dec(2, 4), ...OP.br(0),
  ...OP.end, ...OP.end,
  ...OP.get(3), ...OP.lane(0), ...OP.get(3), ...OP.lane(1), ...OP.f32add, ...OP.get(3), ...OP.lane(2), ...OP.f32add,
  ...OP.get(3), ...OP.lane(3), ...OP.f32add, ...OP.set(4),
  ...OP.block, ...OP.loop,
  ...OP.get(2), ...OP.i32eqz, ...OP.brIf(1),
  ...OP.get(4), ...OP.get(0), ...OP.f32load, ...OP.get(1), ...OP.f32load, ...OP.f32mul, ...OP.f32add, ...OP.set(4),
  ...bump(0, 4), ...bump(1, 4), ...dec(2, 1), ...OP.br(0),
  ...OP.end, ...OP.end,
  ...OP.get(4),
  ...OP.end,
];

// adam(p=0, g=1, m=2, v=3, n=4, lr=5, b1=6, b2=7, eps=8), locals 9..13: v128 splats of lr, b1, 1−b1, b2, 1−b2; 14: v128 eps
//   m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g²;  p −= lr · m / (√v + eps)   (f32x4, then a scalar tail)
const adamBody = (() => {
  const [P, G, M, V, N, LR, B1, B2, E] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [sLR, sB1, sC1, sB2, sC2, sE] = [9, 10, 11, 12, 13, 14];
  const one = [0x43, 0x00, 0x00, 0x80, 0x3f]; // f32.const 1
  // The update of one element (scalar form), with f32 ops; `ld(x)` loads local pointer x.
  const scalar = [
    // m
    ...OP.get(M), ...OP.get(B1), ...OP.get(M), ...OP.f32load, ...OP.f32mul,
    ...one, ...OP.get(B1), ...OP.f32sub, ...OP.get(G), ...OP.f32load, ...OP.f32mul, ...OP.f32add, ...OP.f32store,
    // v
    ...OP.get(V), ...OP.get(B2), ...OP.get(V), ...OP.f32load, ...OP.f32mul,
    ...one, ...OP.get(B2), ...OP.f32sub, ...OP.get(G), ...OP.f32load, ...OP.get(G), ...OP.f32load, ...OP.f32mul, ...OP.f32mul, ...OP.f32add, ...OP.f32store,
    // p
    ...OP.get(P), ...OP.get(P), ...OP.f32load,
    ...OP.get(LR), ...OP.get(M), ...OP.f32load, ...OP.f32mul,
    ...OP.get(V), ...OP.f32load, ...OP.f32sqrt, ...OP.get(E), ...OP.f32add, ...OP.f32div,
    ...OP.f32sub, ...OP.f32store,
  ];
  const vector = [
    ...OP.get(M), ...OP.get(sB1), ...OP.get(M), ...OP.vload, ...OP.vmul, ...OP.get(sC1), ...OP.get(G), ...OP.vload, ...OP.vmul, ...OP.vadd, ...OP.vstore,
    ...OP.get(V), ...OP.get(sB2), ...OP.get(V), ...OP.vload, ...OP.vmul, ...OP.get(sC2), ...OP.get(G), ...OP.vload, ...OP.get(G), ...OP.vload, ...OP.vmul, ...OP.vmul, ...OP.vadd, ...OP.vstore,
    ...OP.get(P), ...OP.get(P), ...OP.vload,
    ...OP.get(sLR), ...OP.get(M), ...OP.vload, ...OP.vmul,
    ...OP.get(V), ...OP.vload, ...OP.vsqrt, ...OP.get(sE), ...OP.vadd, ...OP.vdiv,
    ...OP.vsub, ...OP.vstore,
  ];
  const bumpAll = (step: number) => [...bump(P, step), ...bump(G, step), ...bump(M, step), ...bump(V, step)];
  return [
    ...vec([[6, v128]]),
    ...OP.get(LR), ...OP.splat, ...OP.set(sLR),
    ...OP.get(B1), ...OP.splat, ...OP.set(sB1),
    ...one, ...OP.get(B1), ...OP.f32sub, ...OP.splat, ...OP.set(sC1),
    ...OP.get(B2), ...OP.splat, ...OP.set(sB2),
    ...one, ...OP.get(B2), ...OP.f32sub, ...OP.splat, ...OP.set(sC2),
    ...OP.get(E), ...OP.splat, ...OP.set(sE),
    ...OP.block, ...OP.loop,
    ...OP.get(N), ...OP.i32c(4), ...OP.i32lt, ...OP.brIf(1),
    ...vector, ...bumpAll(16), ...dec(N, 4), ...OP.br(0),
    ...OP.end, ...OP.end,
    ...OP.block, ...OP.loop,
    ...OP.get(N), ...OP.i32eqz, ...OP.brIf(1),
    ...scalar, ...bumpAll(4), ...dec(N, 1), ...OP.br(0),
    ...OP.end, ...OP.end,
    ...OP.end,
  ];
})();

const MODULE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  ...section(1, vec([
    [0x60, ...vec([[i32], [i32], [f32], [i32]]), 0x00],
    [0x60, ...vec([[i32], [i32], [i32]]), ...vec([[f32]])],
    [0x60, ...vec([[i32], [i32], [i32], [i32], [i32], [f32], [f32], [f32], [f32]]), 0x00],
  ])),
  ...section(2, vec([[...str('e'), ...str('m'), 0x02, 0x00, 0x01]])), // import memory e.m, at least one page
  ...section(3, vec([[0x00], [0x01], [0x02]])),
  ...section(7, vec([[...str('axpy'), 0x00, 0x00], [...str('dot'), 0x00, 0x01], [...str('adam'), 0x00, 0x02]])),
  ...section(10, vec([[...leb(axpyBody.length), ...axpyBody], [...leb(dotBody.length), ...dotBody], [...leb(adamBody.length), ...adamBody]])),
]);

export interface Kernels {
  memory: WebAssembly.Memory;
  /** A Float32Array over the memory (re-read after no grow: the memory is sized once). */
  f32: Float32Array;
  axpy(dst: number, src: number, a: number, n: number): void;
  dot(a: number, b: number, n: number): number;
  /** One Adam step in place over n floats: p, g, m, v are byte offsets; `lr` has the bias correction folded in. */
  adam(p: number, g: number, m: number, v: number, n: number, lr: number, beta1: number, beta2: number, eps: number): void;
}

let compiled: WebAssembly.Module | null = null;

/** Kernels over a fresh memory of at least `floats` floats (this thread's own). */
export function createKernels(floats: number): Kernels {
  compiled ??= new WebAssembly.Module(MODULE);
  const memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil((floats * 4) / 65536)) });
  const inst = new WebAssembly.Instance(compiled, { e: { m: memory } });
  const ex = inst.exports as unknown as Pick<Kernels, 'axpy' | 'dot' | 'adam'>;
  return { memory, f32: new Float32Array(memory.buffer), axpy: ex.axpy, dot: ex.dot, adam: ex.adam };
}
