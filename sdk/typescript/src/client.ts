// The client: queries with typed rows, the sql tag, prepared statements,
// batches, transactions, replica reads with bookmarks, retries of writes
// with idempotency keys, and reconnection of its WebSocket session.
import { DosqlError, toDosqlError } from './errors.js';
import { WsSession, callError, httpBatchStub, type WebSocketCtor } from './session.js';
import {
  Statement, encodeParams, intField, isReadOnlySql, rowArrays, rowObjects, sql as statement, toBigLsn,
  type IntMode, type IntOf, type LsnInput, type Params, type SqlValue,
} from './values.js';
import { ChangeStream, type ChangesOptions } from './changes.js';
import { backoffDelay, sleep, withDefaults as backoff, type BackoffOptions } from './backoff.js';

export type { BackoffOptions };

export interface ConnectOptions<M extends IntMode = 'number'> {
  /** A bearer token (docs/protocol.md, "Authentication"). */
  token?: string;
  /** The database, when the URL does not name it (`/v1/db/{db}`). */
  database?: string;
  /** `'websocket'` (default): one session, reconnected when it drops. `'http'`: each call is one HTTP batch. */
  transport?: 'websocket' | 'http';
  /** How integers come back (see {@link IntMode}); default `'number'`. */
  intMode?: M;
  /**
   * Retry calls that fail with a retryable error (connection lost,
   * NOT_PRIMARY, ...). Writes then carry an `idempotencyKey` (one per
   * logical write, the same on every resend), which the server must take.
   * Off by default: nothing is sent twice.
   */
  retry?: BackoffOptions;
  /** Reconnecting the WebSocket session: default 5 attempts from 100 ms, at most 5 s apart. */
  reconnect?: BackoffOptions;
  /** Where reads go by default: `'primary'` (default) or `'replica'` (a follower copy may answer). */
  consistency?: 'primary' | 'replica';
  /**
   * `'auto'` (default): a read sent with consistency `'replica'` and no
   * `minLSN` carries the LSN of this client's last write as `minLSN`, so it
   * sees that write. `'off'`: never.
   */
  bookmarks?: 'auto' | 'off';
  /** How long opening a WebSocket may take; default 10 s. */
  connectTimeoutMs?: number;
  /** A WebSocket class to use instead of the global one (or the `ws` package). */
  WebSocket?: WebSocketCtor;
}

export interface QueryOptions {
  /** `'replica'`: a follower copy may answer. */
  consistency?: 'primary' | 'replica';
  /** Answer once the copy has this commit (a bookmark). */
  minLSN?: LsnInput;
  /** Read the database as it was at a commit, or at a time. */
  asOf?: { lsn: LsnInput } | { timestamp: Date | number | string };
  /** Send this key instead of a generated one (with retries on). */
  idempotencyKey?: string;
}

export interface QueryResult<Row = Record<string, unknown>, M extends IntMode = 'number'> {
  /** The rows, as objects keyed by column name (of duplicate names the first column's value). */
  rows: Row[];
  columns: string[];
  /** Declared types (null for expressions). */
  columnTypes: (string | null)[];
  /** The rows as arrays, in column order. */
  rawRows: unknown[][];
  rowsAffected: number;
  lastInsertRowId: IntOf<M>;
  /** The database's commit counter after the request. */
  lsn: IntOf<M>;
}

export type RunResult<M extends IntMode = 'number'> = Pick<QueryResult<unknown, M>, 'rowsAffected' | 'lastInsertRowId' | 'lsn'>;

export interface BatchResult<R, M extends IntMode = 'number'> {
  results: R[];
  lsn: IntOf<M>;
}

export type BatchStatement = string | Statement | { sql: string; params?: Params };

/** A statement prepared on the client: its text is kept and sent with each call (the server caches compiled statements). */
export interface Prepared<Row, M extends IntMode = 'number'> {
  readonly sql: string;
  query(params?: Params): Promise<QueryResult<Row, M>>;
  all(params?: Params): Promise<Row[]>;
  first(params?: Params): Promise<Row | undefined>;
  run(params?: Params): Promise<RunResult<M>>;
}

export interface TransactionOptions {
  /** `'deferred'` (default) or `'immediate'`. */
  mode?: 'deferred' | 'immediate';
  /** A snapshot: reads only. */
  readOnly?: boolean;
  /** Rolled back when idle this long. */
  timeoutMs?: number;
}

function clean(o: Record<string, unknown>): Record<string, unknown> {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

function statementOf(s: BatchStatement): { sql: string; params?: Params } {
  if (typeof s === 'string') return { sql: s };
  return { sql: s.sql, params: s.params };
}

function mapResult<Row, M extends IntMode>(r: any, m: M): QueryResult<Row, M> {
  const columns: string[] = r.columns ?? [];
  const raw = rowArrays(r.rows ?? [], m);
  return {
    rows: rowObjects(columns, raw) as Row[],
    columns,
    columnTypes: r.columnTypes ?? [],
    rawRows: raw,
    rowsAffected: Number(r.rowsAffected ?? 0),
    lastInsertRowId: intField(r.lastInsertRowid ?? 0, m),
    lsn: intField(r.lsn, m),
  };
}

/** What a client and a transaction have in common: the ways to run SQL. */
export abstract class Queryable<M extends IntMode = 'number'> {
  protected abstract readonly intMode: M;
  /** Send one DoSQL call; `read`: the request only reads. */
  protected abstract call(method: string, req: Record<string, unknown>, read: boolean): Promise<any>;
  /** Options that go into a query request (consistency, bookmarks): the client's. */
  protected queryOptions(_read: boolean, _o: QueryOptions | undefined): Record<string, unknown> {
    return {};
  }

  /** Run SQL (one statement or several: the result is the last one's). */
  query<Row = Record<string, unknown>>(stmt: Statement, options?: QueryOptions): Promise<QueryResult<Row, M>>;
  query<Row = Record<string, unknown>>(sql: string, params?: Params, options?: QueryOptions): Promise<QueryResult<Row, M>>;
  async query<Row = Record<string, unknown>>(a: string | Statement, b?: Params | QueryOptions, c?: QueryOptions): Promise<QueryResult<Row, M>> {
    let text: string, params: Params | undefined, options: QueryOptions | undefined;
    if (a instanceof Statement) {
      text = a.sql;
      params = a.params;
      options = b as QueryOptions | undefined;
    } else if (typeof a === 'string') {
      text = a;
      params = b as Params | undefined;
      options = c;
    } else throw new TypeError('query takes SQL text or a Statement (the sql tag)');
    const read = isReadOnlySql(text) || options?.asOf !== undefined || options?.consistency === 'replica';
    const req: Record<string, unknown> = { sql: text, params: encodeParams(params), ...this.queryOptions(read, options) };
    if (options?.asOf) {
      const as = options.asOf as { lsn?: LsnInput; timestamp?: Date | number | string };
      req.asOf = as.lsn !== undefined ? { lsn: toBigLsn(as.lsn) } : { timestamp: as.timestamp };
    }
    if (options?.idempotencyKey !== undefined) req.idempotencyKey = options.idempotencyKey;
    const r = await this.call('query', clean(req), read);
    return mapResult<Row, M>(r, this.intMode);
  }

  /** The tagged-template form: every `${value}` is bound as a parameter. */
  sql<Row = Record<string, unknown>>(strings: TemplateStringsArray, ...values: (SqlValue | Statement)[]): Promise<QueryResult<Row, M>> {
    return this.query<Row>(statement(strings, ...values));
  }

  /** A prepared statement (on the client: see {@link Prepared}). */
  prepare<Row = Record<string, unknown>>(text: string): Prepared<Row, M> {
    return {
      sql: text,
      query: (params?: Params) => this.query<Row>(text, params),
      all: async (params?: Params) => (await this.query<Row>(text, params)).rows,
      first: async (params?: Params) => (await this.query<Row>(text, params)).rows[0],
      run: async (params?: Params) => {
        const r = await this.query<Row>(text, params);
        return { rowsAffected: r.rowsAffected, lastInsertRowId: r.lastInsertRowId, lsn: r.lsn };
      },
    };
  }

  /**
   * Several statements in one request. Atomic by default: all or none,
   * the first failure rejects the whole. With `atomic: false` each
   * statement runs on its own and a failed one's slot is its DosqlError.
   */
  batch(statements: readonly BatchStatement[], options?: { atomic?: true }): Promise<BatchResult<QueryResult<Record<string, unknown>, M>, M>>;
  batch(statements: readonly BatchStatement[], options: { atomic: false }): Promise<BatchResult<QueryResult<Record<string, unknown>, M> | DosqlError, M>>;
  async batch(statements: readonly BatchStatement[], options: { atomic?: boolean; idempotencyKey?: string } = {}): Promise<BatchResult<any, M>> {
    const stmts = statements.map(statementOf);
    const read = stmts.every((s) => isReadOnlySql(s.sql));
    const req: Record<string, unknown> = {
      statements: stmts.map((s) => clean({ sql: s.sql, params: encodeParams(s.params) })),
      atomic: options.atomic ?? true,
    };
    if (options.idempotencyKey !== undefined) req.idempotencyKey = options.idempotencyKey;
    const r = await this.call('batch', req, read);
    return {
      results: (r.results as any[]).map((x) => (x && x.error ? new DosqlError(x.error.code, x.error.message) : mapResult(x, this.intMode))),
      lsn: intField(r.lsn, this.intMode),
    };
  }
}

/** The handle a transaction's callback gets: the same methods, inside the transaction. */
export class Transaction<M extends IntMode = 'number'> extends Queryable<M> {
  readonly transactionId: string;
  protected readonly intMode: M;
  #client: Client<M>;
  #session: WsSession;
  #state: 'open' | 'committing' | 'done' | 'aborted' = 'open';
  #abortCause: DosqlError | undefined;

  /** @internal */
  constructor(client: Client<M>, session: WsSession, id: string, intMode: M) {
    super();
    this.#client = client;
    this.#session = session;
    this.transactionId = id;
    this.intMode = intMode;
  }

  #aborted(cause?: DosqlError): DosqlError {
    this.#state = 'aborted';
    this.#abortCause ??= cause;
    return new DosqlError('TRANSACTION_ABORTED',
      'the connection of the transaction was lost: the server rolled it back' + (this.#abortCause ? ` (${this.#abortCause.message})` : ''),
      { retryable: false, cause: this.#abortCause });
  }

  #stub(): any {
    if (this.#session.isClosed) throw this.#aborted(this.#session.error);
    return this.#session.stub;
  }

  protected async call(method: string, req: Record<string, unknown>): Promise<any> {
    if (this.#state === 'aborted') throw this.#aborted();
    if (this.#state !== 'open') throw new DosqlError('TRANSACTION_NOT_FOUND', 'the transaction has ended', { retryable: false });
    req.transactionId = this.transactionId;
    const stub = this.#stub();
    try {
      return await stub[method](req);
    } catch (e) {
      const err = callError(e, this.#session);
      if (err.code === 'CONNECTION_LOST') throw this.#aborted(err);
      throw err;
    }
  }

  /** @internal */
  async _commit(readOnly: boolean): Promise<void> {
    if (this.#state === 'aborted') throw this.#aborted();
    this.#state = 'committing';
    const retry = this.#client._retry;
    const req: Record<string, unknown> = { transactionId: this.transactionId };
    if (retry && !readOnly) req.idempotencyKey = crypto.randomUUID();
    const stub = this.#stub(); // TRANSACTION_ABORTED if the connection is gone already
    let res: any;
    try {
      res = await stub.commit(req);
    } catch (e) {
      let err = callError(e, this.#session);
      if (err.code !== 'CONNECTION_LOST') {
        this.#state = 'done';
        throw err;
      }
      if (!retry || readOnly) {
        this.#state = 'aborted';
        throw new DosqlError('COMMIT_OUTCOME_UNKNOWN',
          `the connection was lost while the commit was on its way: it may or may not have committed (${err.message}); retries with idempotency keys would tell`,
          { retryable: false, cause: err });
      }
      // Resend the commit with the same key: the first result if it ran,
      // TRANSACTION_NOT_FOUND if the drop rolled the transaction back.
      for (let i = 1; ; i++) {
        await sleep(backoffDelay(i - 1, retry));
        try {
          res = await this.#client._call('commit', req, false, 1);
          break;
        } catch (e2) {
          err = toDosqlError(e2);
          if (err.code === 'TRANSACTION_NOT_FOUND') throw this.#aborted(err);
          if (!err.retryable || i + 1 >= retry.attempts) {
            this.#state = 'aborted';
            throw new DosqlError('COMMIT_OUTCOME_UNKNOWN', `the commit could not be confirmed: ${err.message}`, { retryable: false, cause: err });
          }
        }
      }
    }
    this.#state = 'done';
    if (!readOnly) this.#client._noteWrite(res.lsn);
  }

  /** @internal */
  async _rollback(): Promise<void> {
    const was = this.#state;
    this.#state = 'done';
    if (was === 'aborted' || this.#session.isClosed) return; // the server rolled it back
    try {
      await this.#stub().rollback({ transactionId: this.transactionId });
    } catch {
      // Gone already (timed out, connection dropped): rolled back either way.
    }
  }
}

interface Endpoints {
  ws: string;
  http: string;
  database: string;
}

function endpoints(url: string, database: string | undefined): Endpoints {
  const u = new URL(url);
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) throw new TypeError(`unsupported URL scheme ${u.protocol} (http, https, ws, wss)`);
  let prefix = u.pathname.replace(/\/+$/, '');
  let db = database;
  const m = /^(.*)\/v1\/db\/([^/]+)(?:\/capnweb)?$/.exec(prefix);
  if (m) {
    const named = decodeURIComponent(m[2]!);
    if (db !== undefined && db !== named) throw new TypeError(`the URL names database '${named}' and options.database '${db}'`);
    db = named;
    prefix = m[1]!;
  }
  if (!db) throw new TypeError('no database: give options.database or a URL ending in /v1/db/{name}');
  const path = `${prefix}/v1/db/${encodeURIComponent(db)}/capnweb`;
  return {
    ws: `${secure ? 'wss' : 'ws'}://${u.host}${path}`,
    http: `${secure ? 'https' : 'http'}://${u.host}${path}`,
    database: db,
  };
}

const RECONNECT_DEFAULT: Required<BackoffOptions> = { attempts: 5, backoffMs: 100, maxBackoffMs: 5000 };
const RETRY_DEFAULT: Required<BackoffOptions> = { attempts: 3, backoffMs: 100, maxBackoffMs: 2000 };

export class Client<M extends IntMode = 'number'> extends Queryable<M> {
  /** The database this client works on. */
  readonly database: string;
  protected readonly intMode: M;
  #ep: Endpoints;
  #o: ConnectOptions<M>;
  #reconnect: Required<BackoffOptions>;
  /** @internal */
  readonly _retry: Required<BackoffOptions> | undefined;
  #session: WsSession | null = null;
  #opening: Promise<WsSession> | null = null;
  #failures = 0;
  #closed = false;
  #lastWrite: bigint | undefined;
  #streams = new Set<ChangeStream<M>>();

  /** @internal (use {@link connect}) */
  constructor(url: string, options: ConnectOptions<M> = {}) {
    super();
    this.#ep = endpoints(url, options.database);
    this.database = this.#ep.database;
    this.#o = options;
    this.intMode = (options.intMode ?? 'number') as M;
    if (!['number', 'bigint', 'string'].includes(this.intMode)) throw new TypeError(`intMode is 'number', 'bigint' or 'string'`);
    this.#reconnect = backoff(options.reconnect, RECONNECT_DEFAULT);
    this._retry = options.retry ? backoff(options.retry, RETRY_DEFAULT) : undefined;
  }

  /** The LSN of this client's last write (its commit), if any: the bookmark auto mode sends. */
  get bookmark(): IntOf<M> | undefined {
    return this.#lastWrite === undefined ? undefined : intField(this.#lastWrite, this.intMode);
  }

  /** @internal */
  _noteWrite(lsn: unknown) {
    if (typeof lsn !== 'bigint' && typeof lsn !== 'number') return;
    const l = BigInt(lsn);
    if (this.#lastWrite === undefined || l > this.#lastWrite) this.#lastWrite = l;
  }

  /** @internal */
  _httpStub(): any {
    return httpBatchStub(this.#ep.http, this.#o.token);
  }

  /** @internal: the WebSocket session, opened (again) if need be, with backoff between failed attempts. */
  async _session(): Promise<WsSession> {
    if (this.#closed) throw new DosqlError('CLIENT_CLOSED', 'the client was closed', { retryable: false });
    if (this.#session && !this.#session.isClosed) return this.#session;
    this.#opening ??= this.#open().finally(() => { this.#opening = null; });
    return this.#opening;
  }

  async #open(): Promise<WsSession> {
    for (let i = 0; ; i++) {
      if (this.#failures > 0) await sleep(backoffDelay(this.#failures - 1, this.#reconnect));
      if (this.#closed) throw new DosqlError('CLIENT_CLOSED', 'the client was closed', { retryable: false });
      try {
        const s = await WsSession.open(this.#ep.ws, { token: this.#o.token, timeoutMs: this.#o.connectTimeoutMs ?? 10000, WebSocket: this.#o.WebSocket });
        this.#failures = 0;
        if (this.#closed) {
          s.close();
          throw new DosqlError('CLIENT_CLOSED', 'the client was closed', { retryable: false });
        }
        this.#session = s;
        return s;
      } catch (e) {
        const err = toDosqlError(e);
        if (!err.retryable) throw err;
        this.#failures++;
        if (i + 1 >= this.#reconnect.attempts) throw err;
      }
    }
  }

  /** @internal: one call, retried (when retries are on) after retryable failures. */
  async _call(method: string, req: Record<string, unknown>, read: boolean, attempts?: number): Promise<any> {
    const retry = this._retry;
    if (retry && !read && req.idempotencyKey === undefined && method !== 'beginTransaction') req.idempotencyKey = crypto.randomUUID();
    const n = attempts ?? retry?.attempts ?? 1;
    for (let i = 0; ; i++) {
      let session: WsSession | null = null;
      try {
        let stub: any;
        if (this.#o.transport === 'http') stub = this._httpStub();
        else {
          session = await this._session();
          stub = session.stub;
        }
        return await stub[method](req);
      } catch (e) {
        let err = callError(e, session);
        if (err.code === 'INVALID_REQUEST' && req.idempotencyKey !== undefined && /idempotencyKey/.test(err.message)) {
          err = new DosqlError('INVALID_REQUEST',
            `this dosqld does not take idempotencyKey, which retries of writes need (turn retry off, or update the server): ${err.message}`,
            { retryable: false, cause: err });
        }
        if (!err.retryable || i + 1 >= n) throw err;
        await sleep(backoffDelay(i, retry ?? RETRY_DEFAULT));
      }
    }
  }

  protected async call(method: string, req: Record<string, unknown>, read: boolean): Promise<any> {
    const r = await this._call(method, req, read);
    if (!read && (method === 'query' || method === 'batch')) this._noteWrite(r?.lsn);
    return r;
  }

  protected override queryOptions(read: boolean, o: QueryOptions | undefined): Record<string, unknown> {
    const consistency = o?.consistency ?? (read ? this.#o.consistency : undefined);
    const out: Record<string, unknown> = {};
    if (consistency !== undefined) out.consistency = consistency;
    if (o?.minLSN !== undefined) out.minLSN = toBigLsn(o.minLSN);
    else if (consistency === 'replica' && (this.#o.bookmarks ?? 'auto') === 'auto' && this.#lastWrite !== undefined) out.minLSN = this.#lastWrite;
    return out;
  }

  /**
   * Run `fn` in a transaction: commit when it resolves, roll back when it
   * throws (and rethrow). Over WebSocket the transaction lives on the
   * session: if the connection drops, the server rolls it back and the
   * handle's calls (and the commit) fail with TRANSACTION_ABORTED.
   */
  async transaction<T>(fn: (tx: Transaction<M>) => Promise<T> | T, options: TransactionOptions = {}): Promise<T> {
    const req = clean({ mode: options.mode, readOnly: options.readOnly, timeoutMs: options.timeoutMs });
    // On the WebSocket session whatever the transport: an HTTP batch's
    // transaction ends with its batch. Retried like a read: nothing is
    // begun until it answers.
    let session: WsSession | undefined;
    let begun: any;
    const n = this._retry?.attempts ?? 1;
    for (let i = 0; ; i++) {
      session = undefined;
      try {
        session = await this._session();
        begun = await session.stub.beginTransaction(req);
        break;
      } catch (e) {
        const err = callError(e, session);
        if (!err.retryable || i + 1 >= n) throw err;
        await sleep(backoffDelay(i, this._retry ?? RETRY_DEFAULT));
      }
    }
    const tx = new Transaction<M>(this, session!, String(begun.transactionId), this.intMode);
    let result: T;
    try {
      result = await fn(tx);
    } catch (e) {
      await tx._rollback();
      throw e;
    }
    await tx._commit(options.readOnly === true);
    return result;
  }

  /**
   * The database's changes as an async iterator (over its own WebSocket):
   * reconnects with backoff when the connection drops and resumes after
   * the last whole commit it delivered, without losing or repeating an
   * event.
   */
  changes(options: ChangesOptions = {}): ChangeStream<M> {
    if (this.#closed) throw new DosqlError('CLIENT_CLOSED', 'the client was closed', { retryable: false });
    const s = new ChangeStream<M>({
      url: this.#ep.ws,
      token: this.#o.token,
      timeoutMs: this.#o.connectTimeoutMs ?? 10000,
      WebSocket: this.#o.WebSocket,
      intMode: this.intMode,
      reconnect: backoff(options.reconnect, { attempts: 10, backoffMs: 100, maxBackoffMs: 5000 }),
      onClose: () => this.#streams.delete(s),
    }, options);
    this.#streams.add(s);
    return s;
  }

  /** `{pong: true, lsn, time}` */
  async ping(): Promise<{ pong: boolean; lsn: IntOf<M>; time: unknown }> {
    const r = await this._call('ping', {}, true);
    return { ...r, lsn: intField(r.lsn, this.intMode) };
  }

  /** Tables, indexes, views and triggers (docs/protocol.md, getSchema). */
  async getSchema(): Promise<{ tables: any[]; indexes: any[]; views: any[]; triggers: any[] }> {
    return this._call('getSchema', {}, true);
  }

  /** The database's and the server's counters (docs/protocol.md, getStats); integers as capnweb gives them. */
  async getStats(): Promise<{ database: Record<string, any>; server: Record<string, any> }> {
    return this._call('getStats', {}, true);
  }

  /** Close the session and every change stream; calls in flight fail with CLIENT_CLOSED. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#session?.close();
    this.#session = null;
    await Promise.all([...this.#streams].map((s) => s.close()));
  }
}

/**
 * A client for one database. `url` is the server (`http://host:8787`, with
 * `options.database`) or the database's (`ws://host:8787/v1/db/app`). The
 * WebSocket opens on the first call.
 */
export function connect<M extends IntMode = 'number'>(url: string, options: ConnectOptions<M> = {}): Client<M> {
  return new Client<M>(url, options);
}
