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
