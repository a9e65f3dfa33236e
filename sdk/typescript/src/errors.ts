// DosqlError: every failure the client reports, with the server's code
// (docs/protocol.md, "Errors") or one of the client's own.

/** The codes dosqld answers with. */
export type ServerErrorCode =
  | 'INVALID_REQUEST'
  | 'SYNTAX_ERROR'
  | 'COLUMN_NOT_FOUND'
  | 'TYPE_MISMATCH'
  | 'INVALID_LSN'
  | 'SUBSCRIPTION_ERROR'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'TABLE_NOT_FOUND'
  | 'TRANSACTION_NOT_FOUND'
  | 'TIMEOUT'
  | 'CONSTRAINT_VIOLATION'
  | 'DEADLOCK_DETECTED'
  | 'SERIALIZATION_FAILURE'
  | 'BUFFER_OVERFLOW'
  | 'QUOTA_EXCEEDED'
  | 'UNKNOWN'
  | 'INTERNAL_ERROR'
  | 'NOT_PRIMARY'
  | 'RESOURCE_EXHAUSTED';

/**
 * The client's own codes:
 * - `CONNECTION_LOST`: the connection dropped (or could not be made) before
 *   the answer came; retryable.
 * - `TRANSACTION_ABORTED`: the connection of an open transaction dropped;
 *   the server rolled it back. Not retryable as a call: run the
 *   transaction again.
 * - `COMMIT_OUTCOME_UNKNOWN`: the connection dropped while a commit was on
 *   its way, without retries (and idempotency keys) to find out whether it
 *   happened.
 * - `CLIENT_CLOSED`: the client was closed.
 */
export type ClientErrorCode = 'CONNECTION_LOST' | 'TRANSACTION_ABORTED' | 'COMMIT_OUTCOME_UNKNOWN' | 'CLIENT_CLOSED';

export type ErrorCode = ServerErrorCode | ClientErrorCode;

/** Codes worth retrying: the same request may succeed later. */
export const RETRYABLE_CODES: ReadonlySet<string> = new Set([
  'CONNECTION_LOST',
  'NOT_PRIMARY',
  'SERIALIZATION_FAILURE',
  'DEADLOCK_DETECTED',
  'RESOURCE_EXHAUSTED',
]);

export class DosqlError extends Error {
  /** The server's code, or one of the client's ({@link ClientErrorCode}). */
  readonly code: ErrorCode;
  /** Whether sending the same request again may succeed. */
  readonly retryable: boolean;
  /** For a CDC stream that ended (`BUFFER_OVERFLOW`): the last commit it delivered whole. */
  readonly lastLsn?: bigint;

  constructor(code: ErrorCode, message: string, options: { retryable?: boolean; cause?: unknown; lastLsn?: bigint } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DosqlError';
    this.code = code;
    this.retryable = options.retryable ?? RETRYABLE_CODES.has(code);
    if (options.lastLsn !== undefined) this.lastLsn = options.lastLsn;
  }
}

/** Any rejection from capnweb, fetch or the transport, as a DosqlError. */
export function toDosqlError(e: unknown): DosqlError {
  if (e instanceof DosqlError) return e;
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[A-Z_]+$/.test(code)) return new DosqlError(code as ErrorCode, e.message, { cause: e });
    return new DosqlError('UNKNOWN', e.message, { cause: e });
  }
  return new DosqlError('UNKNOWN', String(e), { cause: e });
}

/**
 * The connection dropped, or could not be made, before the answer came:
 * code `CONNECTION_LOST`, always retryable.
 */
export class ConnectionLostError extends DosqlError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('CONNECTION_LOST', message, { retryable: true, cause: options.cause });
    this.name = 'ConnectionLostError';
  }
}

export function connectionLost(detail: string, cause?: unknown): ConnectionLostError {
  return new ConnectionLostError(`connection lost: ${detail}`, { cause });
}
