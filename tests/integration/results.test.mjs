// Integration: results and their budgets. A request's results are bounded
// as a whole by max_result_bytes (a batch cannot take the server's memory),
// and a result within the budget arrives whole however slowly the client
// reads it: never cut off under a success status.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { startDosqld, sleep, within } from './lib/harness.mjs';
import { post, WsRpc } from './lib/rpc.mjs';

const servers = [];
after(async () => { for (const d of servers) await d.cleanup(); });

async function start(conf) {
  const d = await startDosqld({ conf });
  servers.push(d);
  return d;
}

// A client that reads slowly: nothing for `pauseMs` after its request,
// then at most `rate` bytes a second, until `complete(chunks, total)`
// says the answer is whole or the connection ends. Chunks are kept in a
// list (joined once), so tens of megabytes cost no repeated copies.
class SlowReader {
  static connect(port) {
    return within(5000, new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      sock.once('connect', () => resolve(new SlowReader(sock)));
      sock.once('error', reject);
    }), 'connect');
  }

  constructor(sock) {
    this.sock = sock;
    this.chunks = [];
    this.total = 0;
    this.ended = false;
    this.error = null;
    sock.on('end', () => { this.ended = true; });
    sock.on('close', () => { this.ended = true; });
    sock.on('error', (e) => { this.error = e; this.ended = true; });
  }

  bytes() {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  // Take the first `n` bytes off (the handshake's answer).
  shift(n) {
    const b = this.bytes();
    this.chunks = [b.subarray(n)];
    this.total -= n;
  }

  // Read until complete(this) or the end, paced as described above.
  read(complete, { pauseMs = 0, rate = Infinity, ms = 60000 } = {}) {
    const sock = this.sock;
    sock.pause();
    return within(ms, new Promise((resolve) => {
      let started = 0;
      let got = 0;
      const check = () => {
        if (complete(this) || this.ended) {
          sock.pause(); // what comes next waits in the socket for the next read
          sock.removeAllListeners('data');
          resolve();
          return true;
        }
        return false;
      };
      sock.on('data', (b) => {
        this.chunks.push(b);
        this.total += b.length;
        got += b.length;
        if (check()) return;
        const due = started + (got / rate) * 1000; // when this much may have been read
        const wait = due - Date.now();
        if (wait > 0) {
          sock.pause();
          setTimeout(() => sock.resume(), Math.min(wait, 1000));
        }
      });
      sock.on('close', check);
      setTimeout(() => {
        started = Date.now();
        if (!check()) sock.resume();
      }, pauseMs);
    }), 'slow read');
  }

  destroy() { this.sock.destroy(); }
}

// The head of an HTTP response in `b`: { status, headers, bodyStart } or null.
function httpHead(b) {
  const end = b.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const lines = b.subarray(0, end).toString('latin1').split('\r\n');
  const headers = {};
  for (const l of lines.slice(1)) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
  return { status: Number(lines[0].split(' ')[1]), headers, bodyStart: end + 4 };
}

// POST `body` to `path` and read the response slowly; resolves to
// { status, headers, body, whole }.
async function slowPost(port, path, body, pace) {
  const r = await SlowReader.connect(port);
  const b = Buffer.from(JSON.stringify(body));
  r.sock.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${b.length}\r\n\r\n`);
  r.sock.write(b);
  let head = null;
  await r.read((s) => {
    if (head === null && s.total >= 4) {
      if (s.chunks.length > 64) s.bytes();
      head = httpHead(s.bytes());
    }
    return head !== null && s.total >= head.bodyStart + Number(head.headers['content-length']);
  }, pace);
  const all = r.bytes();
  r.destroy();
  assert.ok(head, `no response head (read ${all.length} bytes; ${r.error?.code ?? 'closed'})`);
  const n = Number(head.headers['content-length']);
  const got = all.subarray(head.bodyStart, head.bodyStart + n);
  return { status: head.status, headers: head.headers, body: got, whole: got.length === n, read: all.length };
}

// The one string value of a QueryResult in `text`, checked to be `len`
// zeros (hex of a zeroblob) without parsing tens of megabytes twice.
function checkHex(json, len, what) {
  const v = json.rows[0][0];
  assert.equal(typeof v, 'string', what);
  assert.equal(v.length, len, `${what}: the value's length`);
  assert.ok(/^0*$/.test(v), `${what}: the value's bytes`);
}

// ---- results within the budget arrive whole --------------------------------------

test('HTTP: 30 MB and 60 MB results arrive whole to a client that reads slowly', async () => {
  // send_timeout 3 s: the client pauses 2 s, then takes longer than 3 s in
  // all (it reads at 12 MB/s), making progress all along.
  const d = await start('[server]\nsend_timeout = 3s\n[engine]\nmax_result_bytes = 128M\n');
  for (const mb of [30, 60]) {
    const n = mb * 1000000;
    const r = await slowPost(d.port, '/v1/db/big/query', { sql: `select hex(zeroblob(${n / 2})) as h` },
      { pauseMs: 2000, rate: 12e6 });
    assert.equal(r.status, 200);
    assert.ok(r.whole, `${mb} MB: the body is whole (read ${r.read} bytes)`);
    checkHex(JSON.parse(r.body.toString('latin1')), n, `${mb} MB`);
  }
});

// A WebSocket: the handshake, then one masked text frame.
async function wsSlowCall(port, path, msg, pace) {
  const r = await SlowReader.connect(port);
  r.sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n\r\n`);
  let head = null;
  await r.read((s) => (head = httpHead(s.bytes())) !== null, { ms: 5000 });
  assert.equal(head?.status, 101);
  r.shift(head.bodyStart);
  const p = Buffer.from(JSON.stringify(msg));
  const key = crypto.randomBytes(4);
  const masked = Buffer.alloc(p.length);
  for (let i = 0; i < p.length; i++) masked[i] = p[i] ^ key[i % 4];
  const len = p.length < 126 ? [0x80 | p.length] : [0x80 | 126, p.length >> 8, p.length & 0xff];
  r.sock.write(Buffer.concat([Buffer.from([0x81, ...len]), key, masked]));
  // One text frame back; its length is in its first 10 bytes.
  let size = -1;
  await r.read((s) => {
    if (size < 0 && s.total >= 10) {
      const b = s.bytes();
      const l7 = b[1] & 0x7f;
      size = l7 < 126 ? 2 + l7 : l7 === 126 ? 4 + b.readUInt16BE(2) : 10 + Number(b.readBigUInt64BE(2));
    }
    return size >= 0 && s.total >= size;
  }, pace);
  const all = r.bytes();
  r.destroy();
  const whole = size >= 0 && all.length >= size;
  const hl = size < 0 ? 0 : (all[1] & 0x7f) < 126 ? 2 : (all[1] & 0x7f) === 126 ? 4 : 10;
  return { whole, opcode: all[0] & 0x0f, payload: whole ? all.subarray(hl, size) : null, read: all.length, error: r.error };
}

test('WebSocket JSON-RPC: 30 MB and 60 MB results arrive whole to a client that reads slowly', async () => {
  const d = await start('[server]\nsend_timeout = 3s\n[engine]\nmax_result_bytes = 128M\n');
  for (const mb of [30, 60]) {
    const n = mb * 1000000;
    const r = await wsSlowCall(d.port, '/v1/db/big/rpc',
      { id: 1, method: 'query', params: { sql: `select hex(zeroblob(${n / 2})) as h` } },
      { pauseMs: 2000, rate: 12e6 });
    assert.ok(r.whole, `${mb} MB: the message is whole (read ${r.read} bytes; ${r.error?.code ?? ''})`);
    assert.equal(r.opcode, 1);
    const m = JSON.parse(r.payload.toString('latin1'));
    assert.equal(m.id, 1);
    checkHex(m.result, n, `${mb} MB`);
  }
});

test('a client that reads nothing at all for send_timeout is still cut off', async () => {
  const d = await start('[server]\nsend_timeout = 1s\n[engine]\nmax_result_bytes = 128M\n');
  const t0 = Date.now();
  const r = await slowPost(d.port, '/v1/db/big/query', { sql: 'select hex(zeroblob(15000000)) as h' },
    { pauseMs: 4000, ms: 15000 });
  assert.ok(!r.whole, 'a peer silent past send_timeout does not get the whole body');
  assert.ok(Date.now() - t0 < 12000);
});

// ---- one budget per request ------------------------------------------------------------

// The daemon's resident memory in bytes.
function rss(d) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${d.proc.pid}/status`, 'utf8'));
  return Number(m[1]) * 1024;
}

// Sample rss(d) every 10 ms until `promise` settles; resolves to
// [its value, the highest sample].
async function peakDuring(d, promise) {
  let peak = rss(d);
  const timer = setInterval(() => { try { peak = Math.max(peak, rss(d)); } catch { /* exited */ } }, 10);
  try {
    return [await promise, peak];
  } finally {
    clearInterval(timer);
  }
}

// While `promise` runs: `select 1` on another database, timed (ms).
async function selectOneDuring(port, promise) {
  await sleep(30);
  const t0 = Date.now();
  const r = await post(port, '/v1/db/other/query', { sql: 'select 1 as one' });
  const ms = Date.now() - t0;
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.rows, [[1]]);
  await promise;
  return ms;
}

const ZB = 'select zeroblob(5000000) as z';
const BUDGET_CONF = '[engine]\nmax_result_bytes = 8M\n';
const MiB = 1 << 20;

// A reply array of n: the first holds the 5 MB blob, every later one is
// RESOURCE_EXHAUSTED naming max_result_bytes.
function checkBatchReplies(replies, n) {
  assert.ok(Array.isArray(replies), 'a batch reply');
  assert.equal(replies.length, n);
  assert.equal(replies[0].id, 0);
  assert.ok(replies[0].result, `the first call fits: ${JSON.stringify(replies[0]).slice(0, 200)}`);
  assert.equal(Buffer.from(replies[0].result.rows[0][0].$bytes, 'base64').length, 5000000);
  for (let i = 1; i < n; i++) {
    assert.equal(replies[i].id, i);
    assert.equal(replies[i].error?.code, 'RESOURCE_EXHAUSTED', `call ${i}: ${JSON.stringify(replies[i]).slice(0, 200)}`);
    assert.match(replies[i].error.message, /max_result_bytes/);
  }
}

test('HTTP JSON-RPC: a batch of 200 x zeroblob(5000000) has one 8 MiB budget; memory stays low', async () => {
  const d = await start(BUDGET_CONF);
  await post(d.port, '/v1/db/other/query', { sql: 'select 1' }); // both databases open first
  await post(d.port, '/v1/db/zb/query', { sql: 'select 1' });
  const before = rss(d);
  const batch = Array.from({ length: 200 }, (_, i) => ({ id: i, method: 'query', params: { sql: ZB } }));
  const req = post(d.port, '/v1/db/zb/rpc', batch);
  const [[r, oneMs], peak] = await peakDuring(d, Promise.all([req, selectOneDuring(d.port, req)]));
  assert.equal(r.status, 200);
  checkBatchReplies(r.json, 200);
  assert.ok(oneMs < 2000, `select 1 on another database took ${oneMs} ms`);
  assert.ok(peak - before < 150 * MiB, `RSS grew by ${((peak - before) / MiB).toFixed(0)} MiB`);
  // The budget is the request's: the next request has its own.
  const again = await post(d.port, '/v1/db/zb/query', { sql: ZB });
  assert.equal(again.status, 200);
});

test('WebSocket JSON-RPC: a batch message has one budget too', async () => {
  const d = await start(BUDGET_CONF);
  const ws = await WsRpc.open(d.port, '/v1/db/zb/rpc');
  const batch = Array.from({ length: 200 }, (_, i) => ({ id: i, method: 'query', params: { sql: ZB } }));
  const got = new Promise((resolve) => ws.ws.once('message', (m) => resolve(JSON.parse(m.toString()))));
  ws.ws.send(JSON.stringify(batch));
  const [replies, peak] = await peakDuring(d, within(20000, got, 'batch reply'));
  checkBatchReplies(replies, 200);
  assert.ok(peak < 400 * MiB, `RSS ${((peak) / MiB).toFixed(0)} MiB`);
  // The connection goes on, with a fresh budget per message.
  const r = await ws.call('query', { sql: ZB });
  assert.ok(r.result, JSON.stringify(r).slice(0, 200));
  await ws.close();
});

test('Cap\'n Web HTTP batch: its pushes share one budget', async () => {
  const d = await start(BUDGET_CONF);
  const lines = [];
  for (let i = 1; i <= 200; i++) lines.push(`["push",["pipeline",0,["query"],[{"sql":"${ZB}"}]]]`, `["pull",${i}]`);
  const r = await within(20000, fetch(`${d.url}/v1/db/zb/capnweb`, { method: 'POST', body: lines.join('\n') }), 'batch');
  assert.equal(r.status, 200);
  const out = (await r.text()).split('\n').map((l) => JSON.parse(l));
  assert.equal(out.length, 200);
  assert.equal(out[0][0], 'resolve', JSON.stringify(out[0]).slice(0, 200));
  for (const m of out.slice(1)) {
    assert.equal(m[0], 'reject', JSON.stringify(m).slice(0, 200));
    assert.equal(m[2][4].code, 'RESOURCE_EXHAUSTED');
  }
});


test('Cap\'n Web WebSocket: the results a session holds share one budget; released ones give it back', async () => {
  const d = await start(BUDGET_CONF);
  const { default: WebSocket } = await import('ws');
  const ws = new WebSocket(`ws://127.0.0.1:${d.port}/v1/db/zb/capnweb`);
  await within(5000, new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); }), 'open');
  const answers = new Map();
  let wake = () => {};
  ws.on('message', (m) => {
    const msg = JSON.parse(m.toString());
    if (msg[0] === 'resolve' || msg[0] === 'reject') answers.set(msg[1], msg);
    wake();
  });
  const answer = (id) => within(20000, new Promise((resolve) => {
    const check = () => (answers.has(id) ? resolve(answers.get(id)) : (wake = check));
    check();
  }), `answer ${id}`);
  const push = `["push",["pipeline",0,["query"],[{"sql":"${ZB}"}]]]`;
  // 20 pushes pipelined, none released: the first fits, the rest do not.
  for (let i = 1; i <= 20; i++) { ws.send(push); ws.send(`["pull",${i}]`); }
  assert.equal((await answer(1))[0], 'resolve');
  for (let i = 2; i <= 20; i++) {
    const a = await answer(i);
    assert.equal(a[0], 'reject', JSON.stringify(a).slice(0, 200));
    assert.equal(a[2][4].code, 'RESOURCE_EXHAUSTED');
  }
  // Releasing the result gives its bytes back: the next push runs.
  ws.send('["release",1,1]');
  ws.send(push);
  ws.send('["pull",21]');
  assert.equal((await answer(21))[0], 'resolve');
  ws.close();
});


// ---- a client that does not read holds back its own requests ------------------------------

// A client text frame (masked).
function textFrame(text) {
  const p = Buffer.from(text);
  const key = crypto.randomBytes(4);
  const masked = Buffer.alloc(p.length);
  for (let k = 0; k < p.length; k++) masked[k] = p[k] ^ key[k % 4];
  const len = p.length < 126 ? [0x80 | p.length] : [0x80 | 126, p.length >> 8, p.length & 0xff];
  return Buffer.concat([Buffer.from([0x81, ...len]), key, masked]);
}

// Open a WebSocket on a SlowReader (nothing read past the 101).
async function wsSlowOpen(port, path) {
  const r = await SlowReader.connect(port);
  r.sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n\r\n`);
  let head = null;
  await r.read((s) => (head = httpHead(s.bytes())) !== null, { ms: 5000 });
  assert.equal(head?.status, 101);
  r.shift(head.bodyStart);
  return r;
}

// Read text messages until `n` came; resolves to them, parsed.
async function wsReadMessages(r, n) {
  const got = [];
  await r.read((s) => {
    const b = s.bytes();
    let off = 0;
    while (b.length - off >= 2) {
      const l7 = b[off + 1] & 0x7f;
      const hl = l7 < 126 ? 2 : l7 === 126 ? 4 : 10;
      if (b.length - off < hl) break;
      const len = l7 < 126 ? l7 : l7 === 126 ? b.readUInt16BE(off + 2) : Number(b.readBigUInt64BE(off + 2));
      if (b.length - off < hl + len) break;
      if ((b[off] & 0x0f) === 1) got.push(JSON.parse(b.subarray(off + hl, off + hl + len).toString('latin1')));
      off += hl + len;
    }
    if (off > 0) { s.chunks = [b.subarray(off)]; s.total -= off; }
    return got.length >= n;
  }, { ms: 60000 }).catch((e) => { throw new Error(`${e.message}: ${got.length} of ${n} messages`); });
  return got;
}

const HEX2M = 'select hex(zeroblob(1000000)) as h'; // a 2 MB text

test('WebSocket JSON-RPC: a client that stops reading stops its requests from running, then gets every reply', async () => {
  const d = await start('[server]\nmax_pipeline = 2\n');
  const r = await wsSlowOpen(d.port, '/v1/db/bp/rpc');
  const before = rss(d);
  // 100 requests of 2 MB each in one write: 200 MB of replies owed.
  r.sock.write(Buffer.concat(Array.from({ length: 100 }, (_, i) =>
    textFrame(JSON.stringify({ id: i, method: 'query', params: { sql: HEX2M } })))));
  // Read nothing for 3 s: the replies owed must not pile up in the server.
  const [, peak] = await peakDuring(d, sleep(3000));
  assert.ok(peak - before < 100 * MiB, `RSS grew by ${((peak - before) / MiB).toFixed(0)} MiB while the client did not read`);
  // Then every reply comes, whole and in order.
  const got = await wsReadMessages(r, 100);
  r.destroy();
  got.forEach((m, i) => {
    assert.equal(m.id, i);
    assert.equal(m.result?.rows?.[0]?.[0]?.length, 2000000, `reply ${i}`);
  });
});

test('Cap\'n Web WebSocket: the same for pushes pulled and released at once', async () => {
  const d = await start('[server]\nmax_pipeline = 2\n');
  const r = await wsSlowOpen(d.port, '/v1/db/bp/capnweb');
  const before = rss(d);
  const msgs = [];
  for (let i = 1; i <= 100; i++) {
    msgs.push(textFrame(`["push",["pipeline",0,["query"],[{"sql":"${HEX2M}"}]]]`),
      textFrame(`["pull",${i}]`), textFrame(`["release",${i},1]`));
  }
  r.sock.write(Buffer.concat(msgs));
  const [, peak] = await peakDuring(d, sleep(3000));
  assert.ok(peak - before < 100 * MiB, `RSS grew by ${((peak - before) / MiB).toFixed(0)} MiB while the client did not read`);
  const got = await wsReadMessages(r, 100);
  r.destroy();
  got.forEach((m, i) => {
    assert.deepEqual(m.slice(0, 2), ['resolve', i + 1]);
    assert.ok(JSON.stringify(m).length > 2000000, `resolution ${i + 1}`);
  });
});
