/**
 * Computations given in pieces: a generator that pauses (`yield`) between pieces and returns its result
 * (MambaOut.forwardSteps). Its driver may let other work run at the pauses (src/train/ddp.ts); everyone else runs it
 * straight through.
 */
export type Steps<T> = Generator<void, T, void>;

/** Run `steps` to its end without pausing; its result. */
export function runSteps<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}
