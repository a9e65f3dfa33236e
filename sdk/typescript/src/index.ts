// @dosqld/client — a typed client for dosqld over Cap'n Web.
export { connect, Client, Transaction, Queryable } from './client.js';
export type {
  ConnectOptions, QueryOptions, QueryResult, RunResult, BatchResult, BatchStatement, Prepared,
  TransactionOptions, BackoffOptions,
} from './client.js';
export { ChangeStream } from './changes.js';
export type { ChangesOptions, ChangeEvent, ChangeOperation } from './changes.js';
export { DosqlError, ConnectionLostError, RETRYABLE_CODES } from './errors.js';
export type { ErrorCode, ServerErrorCode, ClientErrorCode } from './errors.js';
export { sql, Statement, jsonReplacer, isReadOnlySql } from './values.js';
export type { IntMode, IntOf, LsnInput, SqlValue, Params } from './values.js';
export type { WebSocketLike, WebSocketCtor } from './session.js';
