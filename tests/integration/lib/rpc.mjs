// rpc — small DoSQL clients for tests: HTTP (fetch, keep-alive) and
// JSON-RPC over WebSocket (the `ws` package), with every wait bounded.
import WebSocket from 'ws';
import { within } from './harness.mjs';

// POST a JSON body (object or raw string); resolves to { status, json, text, headers }.
export async function post(port, path, body, headers = {}) {
  const r = await within(30000, fetch(`http://127.0.0.1:${port}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  }), `POST ${path}`);
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: r.status, json, text, headers: r.headers };
}

// POST /v1/db/{db}/query; throws on an error body unless `raw`.
export async function query(port, db, sql, params, { raw = false, headers } = {}) {
  const body = { sql };
  if (params !== undefined) body.params = params;
  const r = await post(port, `/v1/db/${db}/query`, body, headers);
  if (raw) return r;
  if (r.status !== 200) throw new Error(`${sql}: ${r.status} ${r.text}`);
  return r.json;
}

// One JSON-RPC call over HTTP; resolves to the reply object.
export async function call(port, path, method, params, id = 1) {
  const r = await post(port, path, { id, method, params });
  return r.json;
}

// JSON-RPC over WebSocket: call() resolves to the reply ({result} or
// {error}); notifications collect in `notes`.
export class WsRpc {
  static async open(port, path, opts = {}) {
    const c = new WsRpc();
    c.ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, opts);
    c.pending = new Map();
    c.notes = [];
    c.nextId = 1;
    c.closed = new Promise((resolve) => c.ws.on('close', (code) => resolve(code)));
    c.ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      for (const one of Array.isArray(m) ? m : [m]) {
        if (one.id !== undefined && c.pending.has(one.id)) {
          c.pending.get(one.id)(one);
          c.pending.delete(one.id);
        } else {
          c.notes.push(one);
        }
      }
    });
    await within(5000, new Promise((resolve, reject) => {
      c.ws.on('open', resolve);
      c.ws.on('error', reject);
    }), 'WebSocket open');
    return c;
  }

  // Send a request; resolves to its reply. `ms` bounds the wait.
  call(method, params, ms = 10000) {
    const id = this.nextId++;
    const p = new Promise((resolve) => this.pending.set(id, resolve));
    this.ws.send(JSON.stringify({ id, method, params }));
    return within(ms, p, `${method} reply`);
  }

  // Like call(), but resolves to the result and throws on an error.
  async ok(method, params, ms) {
    const r = await this.call(method, params, ms);
    if (r.error) throw new Error(`${method}: ${r.error.code}: ${r.error.message}`);
    return r.result;
  }

  // Send raw text; resolves to the next message that is not a pending reply.
  raw(text, ms = 5000) {
    const n = this.notes.length;
    this.ws.send(text);
    return within(ms, new Promise((resolve) => {
      const check = () => (this.notes.length > n ? resolve(this.notes[n]) : setTimeout(check, 5));
      check();
    }), 'raw reply');
  }

  close() {
    this.ws.close();
    return within(5000, this.closed, 'WebSocket close');
  }
}

// Wait until no database is open (all hibernated), polling getStats every
// 100 ms for at most `ms`; resolves to the last server stats.
export async function untilHibernated(port, ms = 6000) {
  let st;
  for (let waited = 0; waited < ms; waited += 100) {
    await new Promise((r) => setTimeout(r, 100));
    st = (await call(port, '/v1/rpc', 'getStats', {})).result.server;
    if (st.actorsOpen === 0) break;
  }
  return st;
}
