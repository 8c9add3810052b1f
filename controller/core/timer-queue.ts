/** What a core timer is for. Stale entries are recognised by their owner when they pop. */
export type TimerKind =
  | { kind: "fire"; job: string; token: number; fireTime: number }
  | { kind: "lease"; agent: string; incarnation: number }
  | { kind: "retry"; job: string; shard: number }
  | { kind: "startup-grace" }
  /** A replaced process's lease ends: its shards go to the process that took its id over. */
  | { kind: "inherited"; agent: string; incarnation: number }
  /** An unknown run's disconnect grace ends: lost, unless its agent reported it meanwhile. */
  | { kind: "unknown-run"; executionId: string }
  /** A rollout's pause by duration ends (rollouts.ts). */
  | { kind: "rollout"; job: string };

interface Entry {
  at: number;
  seq: number;
  timer: TimerKind;
}

/**
 * A binary min-heap of timers ordered by (at, insertion order), so timers due at the same
 * instant run in the order they were armed: the core stays deterministic.
 */
export class TimerQueue {
  private readonly heap: Entry[] = [];
  private seq = 0;

  get size(): number {
    return this.heap.length;
  }

  /** The earliest deadline, if any. */
  peek(): number | undefined {
    return this.heap[0]?.at;
  }

  push(at: number, timer: TimerKind): void {
    this.heap.push({ at, seq: this.seq++, timer });
    this.up(this.heap.length - 1);
  }

  /** Removes and returns the earliest timer due at or before `now`. */
  popDue(now: number): TimerKind | undefined {
    const top = this.heap[0];
    if (top === undefined || top.at > now) return undefined;
    const last = this.heap.pop()!;
    if (this.heap.length > 0) {
      this.heap[0] = last;
      this.down(0);
    }
    return top.timer;
  }

  private less(a: number, b: number): boolean {
    const x = this.heap[a]!;
    const y = this.heap[b]!;
    return x.at < y.at || (x.at === y.at && x.seq < y.seq);
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const n = this.heap.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.less(l, m)) m = l;
      if (r < n && this.less(r, m)) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(a: number, b: number): void {
    const t = this.heap[a]!;
    this.heap[a] = this.heap[b]!;
    this.heap[b] = t;
  }
}
