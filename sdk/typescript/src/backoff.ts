// Exponential backoff with jitter, shared by retries, reconnection and
// change streams.

/** Exponential backoff: the first wait is `backoffMs`, each next one twice the last, at most `maxBackoffMs`. */
export interface BackoffOptions {
  /** Tries in all, the first included. */
  attempts?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The wait before try i + 2 (i from 0): between half and all of min(max, base·2^i). */
export function backoffDelay(i: number, o: Required<BackoffOptions>): number {
  const d = Math.min(o.maxBackoffMs, o.backoffMs * 2 ** Math.min(i, 30));
  return d / 2 + (Math.random() * d) / 2;
}

export function withDefaults(o: BackoffOptions | undefined, dflt: Required<BackoffOptions>): Required<BackoffOptions> {
  return {
    attempts: Math.max(1, o?.attempts ?? dflt.attempts),
    backoffMs: Math.max(0, o?.backoffMs ?? dflt.backoffMs),
    maxBackoffMs: Math.max(0, o?.maxBackoffMs ?? dflt.maxBackoffMs),
  };
}
