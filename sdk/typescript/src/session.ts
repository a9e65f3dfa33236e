// Cap'n Web sessions on our own transports: one WebSocket connection
// (WsSession), or one HTTP batch per call (httpBatchStub). Our transports,
// not capnweb's, so that a dropped connection is seen at once (every call
// in flight rejects with a retryable CONNECTION_LOST), an upgrade or batch
// refused by the server gives its code, and Node 20 needs no global
// WebSocket (the `ws` package stands in).
import { RpcSession } from 'capnweb';
import { DosqlError, connectionLost, toDosqlError } from './errors.js';

/** What the client needs of a WebSocket class (the WHATWG one, or `ws`'s). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (ev: any) => void): void;
}
export type WebSocketCtor = new (url: string, protocolsOrOptions?: any, options?: any) => WebSocketLike;

let wsModule: Promise<WebSocketCtor> | undefined;

/** The WebSocket class: the one given, the global one, or the `ws` package's. */
export async function webSocketClass(given?: WebSocketCtor): Promise<{ ctor: WebSocketCtor; headers: boolean }> {
  if (given) return { ctor: given, headers: false };
  const g = (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
  if (g) return { ctor: g, headers: false };
  // A specifier in a variable: bundlers for browsers leave it alone.
  const name = 'ws';
  wsModule ??= import(name).then((m: any) => (m.default ?? m.WebSocket) as WebSocketCtor).catch((e: unknown) => {
    wsModule = undefined;
    throw new DosqlError('UNKNOWN', "no WebSocket class: this runtime has no global WebSocket and the 'ws' package is not installed", { cause: e, retryable: false });
  });
  return { ctor: await wsModule, headers: true };
}

class WsTransport {
  #ws: WebSocketLike;
  #queue: string[] = [];
  #waiter: { resolve: (m: string) => void; reject: (e: unknown) => void } | undefined;
  error: DosqlError | undefined;

  constructor(ws: WebSocketLike) {
    this.#ws = ws;
  }

  deliver(msg: string) {
    if (this.error) return;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.resolve(msg);
    } else this.#queue.push(msg);
  }

  fail(err: DosqlError) {
    if (this.error) return;
    this.error = err;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.reject(err);
    }
  }

  send(message: string): void {
    if (this.error) return;
    this.#ws.send(message);
  }

  receive(): Promise<string> {
    if (this.#queue.length > 0) return Promise.resolve(this.#queue.shift()!);
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  abort(reason: unknown): void {
    let msg = reason instanceof Error ? reason.message : String(reason);
    if (new TextEncoder().encode(msg).length > 120) msg = msg.slice(0, 40);
    try {
      this.#ws.close(3000, msg);
    } catch {
      this.#ws.close();
    }
    this.fail(connectionLost(`session aborted: ${msg}`));
  }
}

export interface OpenOptions {
  token?: string;
  timeoutMs: number;
  WebSocket?: WebSocketCtor;
}

/** The status in an upgrade refusal, when the error says it (ws: "Unexpected server response: 401"). */
function refusalStatus(ev: any): number | undefined {
  const text = String(ev?.message ?? ev?.error?.message ?? '');
  const m = /Unexpected server response: (\d{3})/.exec(text);
  return m ? Number(m[1]) : undefined;
}

function statusError(status: number, what: string): DosqlError {
  const code = status === 401 ? 'UNAUTHORIZED' : status === 403 ? 'FORBIDDEN' : status === 404 || status === 400 ? 'INVALID_REQUEST'
    : status === 503 ? 'RESOURCE_EXHAUSTED' : status === 429 ? 'QUOTA_EXCEEDED' : 'UNKNOWN';
  return new DosqlError(code, `${what}: HTTP ${status}`, { retryable: status === 503 || status === 502 || status === 504 });
}

/** One WebSocket connection and the Cap'n Web session on it. */
export class WsSession {
  readonly stub: any;
  readonly closed: Promise<DosqlError>;
  #ws: WebSocketLike;
  #transport: WsTransport;
  #closeResolve!: (e: DosqlError) => void;
  #error: DosqlError | undefined;

  private constructor(ws: WebSocketLike, transport: WsTransport) {
    this.#ws = ws;
    this.#transport = transport;
    this.closed = new Promise((r) => { this.#closeResolve = r; });
    this.stub = new RpcSession(transport as any).getRemoteMain();
  }

  get isClosed(): boolean {
    return this.#error !== undefined || this.#transport.error !== undefined;
  }

  /** Why it closed (once it has). */
  get error(): DosqlError | undefined {
    return this.#error ?? this.#transport.error;
  }

  #fail(err: DosqlError) {
    if (this.#error) return;
    this.#error = err;
    this.#transport.fail(err);
    this.#closeResolve(err);
  }

  /** Open a connection to `url` (ws: or wss:) and wait until it is open. */
  static async open(url: string, o: OpenOptions): Promise<WsSession> {
    const { ctor, headers } = await webSocketClass(o.WebSocket);
    let target = url;
    let ws: WebSocketLike;
    if (o.token && headers) {
      ws = new ctor(target, { headers: { Authorization: `Bearer ${o.token}` } });
    } else {
      if (o.token) target += (target.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(o.token);
      ws = new ctor(target);
    }
    const pending: string[] = [];
    let session: WsSession | undefined;
    let lost: DosqlError | undefined;
    await new Promise<void>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        try { ws.close(); } catch { /* not open yet */ }
        reject(connectionLost(`no connection to ${url} within ${o.timeoutMs} ms`));
      }, o.timeoutMs);
      ws.addEventListener('open', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve();
      });
      ws.addEventListener('message', (ev: any) => {
        const data = typeof ev.data === 'string' ? ev.data : new TextDecoder().decode(ev.data);
        if (session) session.#transport.deliver(data);
        else pending.push(data);
      });
      const down = (detail: string, ev?: any) => {
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          const st = refusalStatus(ev);
          reject(st !== undefined ? statusError(st, `WebSocket upgrade to ${url} refused`) : connectionLost(`cannot connect to ${url}: ${detail}`));
          return;
        }
        const err = connectionLost(detail);
        if (session) session.#fail(err);
        else lost ??= err;
      };
      ws.addEventListener('error', (ev: any) => down(`WebSocket error${ev?.message ? `: ${ev.message}` : ''}`, ev));
      ws.addEventListener('close', (ev: any) => down(`WebSocket closed (${ev?.code ?? '?'}${ev?.reason ? ` ${ev.reason}` : ''})`));
    });
    const t = new WsTransport(ws);
    session = new WsSession(ws, t);
    for (const m of pending) t.deliver(m);
    if (lost) session.#fail(lost);
    return session;
  }

  /** Close the connection; calls in flight fail with `err`. */
  close(err: DosqlError = new DosqlError('CLIENT_CLOSED', 'the client was closed', { retryable: false })) {
    this.#fail(err);
    try {
      this.#ws.close(1000);
    } catch {
      /* already closing */
    }
  }
}

class BatchTransport {
  #out: string[] | null = [];
  #in: string[] | null = null;
  #ready: Promise<void>;
  #aborted: unknown;

  constructor(send: (batch: string[]) => Promise<string[]>) {
    this.#ready = (async () => {
      // Calls made in the same turn go in the same batch.
      await new Promise((r) => setTimeout(r, 0));
      if (this.#aborted !== undefined) throw this.#aborted;
      const batch = this.#out!;
      this.#out = null;
      this.#in = await send(batch);
    })();
    this.#ready.catch(() => {});
  }

  send(message: string) {
    this.#out?.push(message);
  }

  async receive(): Promise<string> {
    if (!this.#in) await this.#ready;
    const m = this.#in!.shift();
    if (m === undefined) throw connectionLost('the HTTP batch ended');
    return m;
  }

  abort(reason: unknown) {
    this.#aborted = reason;
  }
}

/** A stub for one HTTP batch to `url` (http: or https:): the calls made on it in one turn go in one POST. */
export function httpBatchStub(url: string, token: string | undefined): any {
  const send = async (batch: string[]): Promise<string[]> => {
    let res: Response;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        body: batch.join('\n'),
      });
    } catch (e) {
      throw connectionLost(`cannot reach ${url}: ${(e as Error)?.cause ?? (e as Error)?.message ?? e}`, e);
    }
    let body: string;
    try {
      body = await res.text();
    } catch (e) {
      throw connectionLost(`the answer from ${url} was cut: ${(e as Error)?.message}`, e);
    }
    if (!res.ok) {
      try {
        const j = JSON.parse(body);
        if (j?.error?.code) throw new DosqlError(j.error.code, j.error.message ?? `HTTP ${res.status}`);
      } catch (e) {
        if (e instanceof DosqlError) throw e;
      }
      throw statusError(res.status, `HTTP batch to ${url} refused`);
    }
    return body === '' ? [] : body.split('\n');
  };
  return new RpcSession(new BatchTransport(send) as any).getRemoteMain();
}

/**
 * The error of a call made on `session`: the server's when it gave one
 * (an abort of the session included); else, when the connection is gone,
 * why it went (CONNECTION_LOST).
 */
export function callError(e: unknown, session: WsSession | null | undefined): DosqlError {
  const err = toDosqlError(e);
  if (err.code === 'UNKNOWN' && session?.isClosed && session.error) return session.error;
  return err;
}
