// CDC as an async iterator over subscribeCDC, on a WebSocket of its own,
// that survives dropped connections.
//
// The server marks no commit ends over Cap'n Web: the events of one commit
// share its LSN, and a commit is known whole once an event of a later one
// arrives. So the stream keeps two things: `whole`, the last LSN it has
// all of, and how many events of the commit after it (`cur`) it has
// delivered. After a drop it subscribes again from `whole` and skips the
// first that-many events of `cur` (a commit's events come in the same
// order every time): nothing is lost and nothing comes twice, and events
// never wait for the next commit to be delivered.
import { DosqlError, connectionLost } from './errors.js';
import { WsSession, callError, type WebSocketCtor } from './session.js';
import { intField, toBigLsn, valueObject, type IntMode, type IntOf, type LsnInput } from './values.js';
import { backoffDelay, sleep, type BackoffOptions } from './backoff.js';

export type ChangeOperation = 'INSERT' | 'UPDATE' | 'DELETE' | 'DDL';

export interface ChangesOptions {
  /** Deliver every change of the commits after this LSN (default: only commits from now on). */
  fromLSN?: LsnInput;
  /** Row events of these tables only (DDL events then only if `operations` names 'DDL'). */
  tables?: string[];
  /** Only these kinds. */
  operations?: ChangeOperation[];
  /** Reconnecting after a drop: default 10 attempts from 100 ms, at most 5 s apart. */
  reconnect?: BackoffOptions;
  /** Events held for a slow consumer before the server is made to wait; default 256. */
  highWaterMark?: number;
}

export interface ChangeEvent<M extends IntMode = 'number'> {
  /** The commit's LSN (shared by its events). */
  lsn: IntOf<M>;
  /** The commit time. */
  timestamp: Date;
  operation: ChangeOperation;
  /** The table (row events). */
  table?: string;
  /** The row's rowid (not for WITHOUT ROWID tables). */
  rowid?: IntOf<M>;
  /** An UPDATE that moved the row: its old rowid. */
  previousRowid?: IntOf<M>;
  /** A WITHOUT ROWID table's key columns. */
  primaryKey?: Record<string, unknown>;
  /** UPDATE and DELETE: the row before. */
  before?: Record<string, unknown>;
  /** INSERT and UPDATE: the row after. */
  after?: Record<string, unknown>;
  /** DDL: the statement. */
  sql?: string;
}

/** @internal */
export interface StreamConfig<M extends IntMode> {
  url: string;
  token: string | undefined;
  timeoutMs: number;
  WebSocket: WebSocketCtor | undefined;
  intMode: M;
  reconnect: Required<BackoffOptions>;
  onClose: () => void;
}

export class ChangeStream<M extends IntMode = 'number'> implements AsyncIterableIterator<ChangeEvent<M>> {
  #c: StreamConfig<M>;
  #o: ChangesOptions;
  #hwm: number;
  #queue: ChangeEvent<M>[] = [];
  #failure: Error | undefined;
  #done = false;
  #waiters: (() => void)[] = [];
  #drained: { promise: Promise<void>; resolve: () => void } | undefined;
  #started = false;
  #session: WsSession | undefined;
  #sub: any;
  #whole: bigint | undefined;
  #cur: bigint | undefined;
  #curCount = 0;
  #skip = 0;
  #reconnects = 0;

  /** @internal (use client.changes()) */
  constructor(c: StreamConfig<M>, o: ChangesOptions) {
    this.#c = c;
    this.#o = o;
    this.#hwm = Math.max(1, o.highWaterMark ?? 256);
    if (o.fromLSN !== undefined) this.#whole = toBigLsn(o.fromLSN);
  }

  /**
   * Where the stream would resume: the last LSN it delivered whole (or
   * the one it started after). Keep it to resume a later stream with
   * `fromLSN`. Undefined before the stream has started.
   */
  get lastWholeLSN(): IntOf<M> | undefined {
    return this.#whole === undefined ? undefined : intField(this.#whole, this.#c.intMode);
  }

  /** Times the stream has subscribed again after a dropped connection. */
  get reconnects(): number {
    return this.#reconnects;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<ChangeEvent<M>>> {
    if (!this.#started) {
      this.#started = true;
      void this.#run();
    }
    for (;;) {
      if (this.#queue.length > 0) {
        const ev = this.#queue.shift()!;
        if (this.#queue.length < this.#hwm && this.#drained) {
          const d = this.#drained;
          this.#drained = undefined;
          d.resolve();
        }
        return { value: ev, done: false };
      }
      if (this.#failure) {
        const f = this.#failure;
        await this.close();
        throw f;
      }
      if (this.#done) return { value: undefined, done: true };
      await new Promise<void>((r) => { this.#waiters.push(r); });
    }
  }

  async return(): Promise<IteratorResult<ChangeEvent<M>>> {
    await this.close();
    return { value: undefined, done: true };
  }

  /** End the stream: unsubscribe and close its connection. */
  async close(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.#queue.length = 0;
    this.#kick();
    this.#drained?.resolve();
    const sub = this.#sub, session = this.#session;
    this.#sub = undefined;
    this.#session = undefined;
    if (sub && session && !session.isClosed) {
      try {
        await Promise.race([sub.unsubscribe(), sleep(1000)]);
      } catch {
        /* gone already */
      }
      try {
        const dispose = (Symbol as { dispose?: symbol }).dispose;
        if (dispose) sub[dispose]?.();
      } catch {
        /* released with the session */
      }
    }
    session?.close();
    this.#c.onClose();
  }

  #kick() {
    const ws = this.#waiters;
    this.#waiters = [];
    for (const w of ws) w();
  }

  #fail(err: Error) {
    if (this.#done || this.#failure) return;
    this.#failure = err;
    this.#kick();
  }

  async #run() {
    let failures = 0;
    while (!this.#done && !this.#failure) {
      let session: WsSession | undefined;
      try {
        session = await WsSession.open(this.#c.url, { token: this.#c.token, timeoutMs: this.#c.timeoutMs, WebSocket: this.#c.WebSocket });
        if (this.#done) {
          session.close();
          return;
        }
        this.#session = session;
        if (this.#whole === undefined) {
          // Anchor "from now on" at an LSN, so that a drop before the first
          // event resumes from there too.
          const p = await session.stub.ping({});
          this.#whole = BigInt(p.lsn);
        }
        this.#skip = this.#cur !== undefined ? this.#curCount : 0;
        const req: Record<string, unknown> = { fromLSN: this.#whole };
        if (this.#o.tables) req.tables = this.#o.tables;
        if (this.#o.operations) req.operations = this.#o.operations;
        this.#sub = await session.stub.subscribeCDC(req, (ev: any) => this.#event(ev));
        failures = 0;
        await session.closed;
      } catch (e) {
        const err = callError(e, session);
        if (!err.retryable) {
          this.#fail(err);
          break;
        }
      } finally {
        this.#sub = undefined;
        session?.close(connectionLost('the change stream reconnects'));
      }
      if (this.#done || this.#failure) break;
      failures++;
      if (failures >= this.#c.reconnect.attempts) {
        this.#fail(connectionLost(`the change stream could not subscribe again after ${failures} attempts`));
        break;
      }
      await sleep(backoffDelay(failures - 1, this.#c.reconnect));
      this.#reconnects++;
    }
  }

  #convert(lsn: bigint, ev: any): ChangeEvent<M> {
    const m = this.#c.intMode;
    const out: ChangeEvent<M> = { lsn: intField(lsn, m), timestamp: ev.timestamp, operation: ev.operation };
    if (ev.table !== undefined) out.table = ev.table;
    if (ev.rowid !== undefined) out.rowid = intField(ev.rowid, m);
    if (ev.previousRowid !== undefined) out.previousRowid = intField(ev.previousRowid, m);
    if (ev.primaryKey !== undefined) out.primaryKey = valueObject(ev.primaryKey, m);
    if (ev.before !== undefined) out.before = valueObject(ev.before, m);
    if (ev.after !== undefined) out.after = valueObject(ev.after, m);
    if (ev.sql !== undefined) out.sql = ev.sql;
    return out;
  }

  #event(ev: any): Promise<void> | undefined {
    if (this.#done || this.#failure) return undefined;
    if (ev && ev.end === true) {
      const last = ev.lastLsn === undefined ? undefined : BigInt(ev.lastLsn);
      this.#fail(new DosqlError(ev.error?.code ?? 'BUFFER_OVERFLOW', ev.error?.message ?? 'the change stream ended', { retryable: false, lastLsn: last }));
      return undefined;
    }
    const lsn = BigInt(ev.lsn);
    if (this.#whole !== undefined && lsn <= this.#whole) return undefined; // had it whole
    if (lsn === this.#cur) {
      if (this.#skip > 0) {
        this.#skip--;
        return undefined; // delivered before the drop
      }
      this.#curCount++;
    } else {
      if (this.#cur !== undefined && lsn > this.#cur) this.#whole = this.#cur;
      this.#cur = lsn;
      this.#curCount = 1;
      this.#skip = 0;
    }
    let out: ChangeEvent<M>;
    try {
      out = this.#convert(lsn, ev);
    } catch (e) {
      // An integer this intMode cannot hold: the consumer hears it.
      this.#fail(e as Error);
      return undefined;
    }
    this.#queue.push(out);
    this.#kick();
    if (this.#queue.length >= this.#hwm) {
      // Hold the server's callback until the consumer catches up: it sends
      // at most 32 unanswered events, so memory stays bounded.
      if (!this.#drained) {
        let resolve!: () => void;
        const promise = new Promise<void>((r) => { resolve = r; });
        this.#drained = { promise, resolve };
      }
      return this.#drained.promise;
    }
    return undefined;
  }
}
