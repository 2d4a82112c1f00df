/**
 * How a process group fails: one error type for every collective and for the rendezvous, naming the rank at
 * fault when it is known (the launcher and the training command name it to the user).
 */

/** Failure of the process group. `rank` names the rank at fault when known. */
export class DistError extends Error {
  readonly rank: number | null;
  readonly reason: DistFailure;
  /** Rank that detected the failure (differs from this process's rank when the error was relayed). */
  detectedBy: number | null = null;
  constructor(message: string, rank: number | null, reason: DistFailure) {
    super(message);
    this.name = 'DistError';
    this.rank = rank;
    this.reason = reason;
  }
}

export type DistFailure = 'timeout' | 'disconnect' | 'protocol' | 'closed' | 'rendezvous';

export function isDistError(e: unknown): e is DistError {
  return e instanceof DistError;
}
