/**
 * Reservoir sampling (Vitter's algorithm R) of samples per layer: after n samples have been
 * offered, each one is held with probability capacity / n, so a shard is a uniform sample of its
 * whole interval, not just its first batches, and memory never exceeds `capacity` samples.
 */

/** Where each offered sample goes: a slot index, or -1 when it is not kept. */
export class Reservoir {
  /** Samples offered since the last reset. */
  seen = 0;
  /** True when the last offer only filled free slots, so its slots are consecutive. */
  lastFilled = false;
  constructor(
    readonly capacity: number,
    private readonly random: () => number,
  ) {}

  /** Decides slots for `count` new samples. */
  offer(count: number): Int32Array {
    const slots = new Int32Array(count);
    this.lastFilled = this.seen + count <= this.capacity;
    for (let i = 0; i < count; i++) {
      const n = this.seen++;
      if (n < this.capacity) slots[i] = n;
      else {
        const j = Math.floor(this.random() * (n + 1));
        slots[i] = j < this.capacity ? j : -1;
      }
    }
    return slots;
  }
}
