// Integration: WebSocket framing, limits, keep-alive and backpressure on a
// real dosqld, with the `ws` client and with raw frames.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import {
  startDosqld, Raw, request, metric, wsRaw, wsFrame, wsParse, wsReadUntil, closeCode, within, sleep,
} from './lib/harness.mjs';
import { WsRpc } from './lib/rpc.mjs';

let d;
before(async () => {
  d = await startDosqld({
    conf: `[server]
send_queue_limit = 64K
send_timeout = 1s
[websocket]
max_message = 1K
ping_interval = 300ms
`,
  });
});
after(async () => { await d?.cleanup(); });

function open(path = '/v1/rpc', opts = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${d.port}${path}`, opts);
  ws.messages = [];
  ws.on('message', (data, isBinary) => ws.messages.push({ data: data.toString(), isBinary }));
  ws.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  return within(5000, new Promise((resolve, reject) => {
    ws.on('open', () => resolve(ws));
    ws.on('error', reject);
  }), 'WebSocket open');
}

async function nextMessage(ws, ms = 5000) {
  const n = ws.messages.length;
  await within(ms, new Promise((resolve) => {
    const check = () => (ws.messages.length > n ? resolve() : setTimeout(check, 5));
    check();
  }), 'WebSocket message');
  return ws.messages[n];
}

test('JSON-RPC over WebSocket: ping, batch, errors', async () => {
  const ws = await open();
  ws.send(JSON.stringify({ id: 1, method: 'ping' }));
  let m = JSON.parse((await nextMessage(ws)).data);
  assert.equal(m.id, 1);
  assert.equal(m.result.pong, true);
  ws.send(JSON.stringify([{ id: 'a', method: 'ping' }, { id: 'b', method: 'query' }]));
  m = JSON.parse((await nextMessage(ws)).data);
  assert.equal(m.length, 2);
  assert.equal(m[1].error.code, 'INVALID_REQUEST');
  ws.send('{not json');
  m = JSON.parse((await nextMessage(ws)).data);
  assert.equal(m.error.code, 'INVALID_REQUEST');
  ws.send(Buffer.from('{"id":1,"method":"ping"}'), { binary: true });
  m = JSON.parse((await nextMessage(ws)).data);
  assert.equal(m.error.code, 'INVALID_REQUEST', 'binary frames are refused, the session goes on');
  ws.send(JSON.stringify({ id: 2, method: 'ping' }));
  m = JSON.parse((await nextMessage(ws)).data);
  assert.equal(m.id, 2);
  ws.close(1000);
  const c = await ws.closed;
  assert.equal(c.code, 1000);
});

test('a fragmented message is delivered whole, with a ping between fragments', async () => {
  const c = await wsRaw(d.port);
  assert.equal(c.upgrade.status, 101);
  const msg = Buffer.from('{"id":"frag","method":"ping"}');
  c.write(Buffer.concat([
    wsFrame(0x1, msg.subarray(0, 7), { fin: false }),
    wsFrame(0x9, Buffer.from('hi')),
    wsFrame(0x0, msg.subarray(7, 15), { fin: false }),
    wsFrame(0x0, msg.subarray(15), { fin: true }),
  ]));
  const frames = await wsReadUntil(c, (f) => f.some((x) => x.opcode === 0x1));
  const pong = frames.find((x) => x.opcode === 0xA);
  assert.ok(pong, 'the ping was answered');
  assert.equal(pong.payload.toString(), 'hi');
  const text = frames.find((x) => x.opcode === 0x1);
  assert.equal(JSON.parse(text.payload.toString()).id, 'frag');
  c.destroy();
});

test('invalid UTF-8 in a text message closes with 1007', async () => {
  const c = await wsRaw(d.port);
  c.write(wsFrame(0x1, Buffer.from([0x7b, 0xc0, 0xaf, 0x7d])));
  const frames = await wsReadUntil(c, (f) => f.some((x) => x.opcode === 0x8));
  assert.equal(closeCode(frames.find((x) => x.opcode === 0x8)), 1007);
  c.write(wsFrame(0x8, Buffer.from([0x03, 0xef])));
  await c.readClose();
});

test('a message over max_message closes with 1009', async () => {
  const ws = await open();
  ws.send('x'.repeat(2000));
  const closed = await within(5000, ws.closed, 'close');
  assert.equal(closed.code, 1009);
});

test('an unmasked client frame closes with 1002', async () => {
  const c = await wsRaw(d.port);
  c.write(wsFrame(0x1, Buffer.from('{"id":1,"method":"ping"}'), { mask: false }));
  const frames = await wsReadUntil(c, (f) => f.some((x) => x.opcode === 0x8));
  assert.equal(closeCode(frames.find((x) => x.opcode === 0x8)), 1002);
  assert.equal(frames.filter((x) => x.opcode === 0x1).length, 0, 'the request was not answered');
  c.destroy();
});

test('close handshake: the client\'s code is echoed and the connection ends', async () => {
  const c = await wsRaw(d.port);
  c.write(wsFrame(0x8, Buffer.concat([Buffer.from([0x0f, 0xa0]), Buffer.from('bye')])));
  const frames = await wsReadUntil(c, (f) => f.some((x) => x.opcode === 0x8));
  assert.equal(closeCode(frames.find((x) => x.opcode === 0x8)), 4000);
  await c.readClose();
});

test('an upgrade with ?x=<n chars>, n from 1 to 300: each gets 101', async () => {
  const failed = [];
  for (let n = 1; n <= 300; n++) {
    const c = await wsRaw(d.port, `/v1/rpc?x=${'x'.repeat(n)}`);
    if (c.upgrade.status !== 101) failed.push(`${n}: ${c.upgrade.status} ${c.upgrade.text}`);
    c.destroy();
  }
  assert.deepEqual(failed, []);
});

// A masked frame header alone (no payload bytes follow), declaring `len`.
function frameHeader(opcode, len, { fin = true } = {}) {
  const head = [(fin ? 0x80 : 0) | opcode];
  if (len < 126) head.push(0x80 | len);
  else if (len < 65536) head.push(0x80 | 126, len >> 8, len & 0xff);
  else {
    head.push(0x80 | 127);
    for (let i = 7; i >= 0; i--) head.push(Number((BigInt(len) >> BigInt(8 * i)) & 0xffn));
  }
  return Buffer.concat([Buffer.from(head), Buffer.from([1, 2, 3, 4])]);
}

async function closeAnswer(c, ms = 2000) {
  const frames = await wsReadUntil(c, (f) => f.some((x) => x.opcode === 0x8), ms);
  const close = frames.find((x) => x.opcode === 0x8);
  assert.ok(close, 'a close frame came back');
  return close;
}

test('a close frame with a 1-byte payload is answered with close 1002', async () => {
  const c = await wsRaw(d.port);
  c.write(wsFrame(0x8, Buffer.from([0x03])));
  assert.equal(closeCode(await closeAnswer(c)), 1002);
  await c.readClose();
});

for (const code of [0, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000, 65535]) {
  test(`a close frame with the invalid code ${code} is answered with close 1002`, async () => {
    const c = await wsRaw(d.port);
    const p = Buffer.alloc(2);
    p.writeUInt16BE(code);
    c.write(wsFrame(0x8, p));
    assert.equal(closeCode(await closeAnswer(c)), 1002);
    await c.readClose();
  });
}

test('a close frame whose reason is not UTF-8 is answered with close 1007', async () => {
  const c = await wsRaw(d.port);
  c.write(wsFrame(0x8, Buffer.from([0x03, 0xe8, 0x62, 0x79, 0xc0, 0xaf])));
  assert.equal(closeCode(await closeAnswer(c)), 1007);
  await c.readClose();
});

test('a close frame with a valid code and UTF-8 reason is echoed', async () => {
  const c = await wsRaw(d.port);
  c.write(wsFrame(0x8, Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from('fin é')])));
  const close = await closeAnswer(c);
  assert.equal(closeCode(close), 1000);
  await c.readClose();
});

test('a frame header declaring more than max_message is refused with 1009 before its payload', async () => {
  for (const len of [1025, 70000, 2 ** 40]) {
    const c = await wsRaw(d.port);
    c.write(frameHeader(0x2, len)); // and not one payload byte
    const close = await closeAnswer(c, 1500);
    assert.equal(closeCode(close), 1009, `declared ${len}`);
    await c.readClose(2000);
  }
});

test('a continuation header taking the message past max_message is refused with 1009 at once', async () => {
  const c = await wsRaw(d.port);
  c.write(wsFrame(0x1, Buffer.from('"'.repeat(600)), { fin: false }));
  c.write(frameHeader(0x0, 600));
  assert.equal(closeCode(await closeAnswer(c, 1500)), 1009);
  await c.readClose(2000);
});

test('a message of exactly max_message in fragments is delivered', async () => {
  const c = await wsRaw(d.port);
  const base = '{"id":7,"method":"ping","params":{},"x":""}';
  const msg = base.replace('""', `"${'a'.repeat(1024 - base.length)}"`);
  assert.equal(msg.length, 1024);
  c.write(wsFrame(0x1, Buffer.from(msg.slice(0, 500)), { fin: false }));
  c.write(wsFrame(0x0, Buffer.from(msg.slice(500)), { fin: true }));
  const frames = await wsReadUntil(c, (f) => f.some((x) => x.opcode === 0x1 || x.opcode === 0x8));
  const m = frames.find((x) => x.opcode === 0x1 || x.opcode === 0x8);
  assert.equal(m.opcode, 0x1, `answered, not closed: ${m.payload}`);
  c.destroy();
});

test('the server pings; a peer that answers stays, a silent one is dropped', async () => {
  const ws = await open();
  let pings = 0;
  ws.on('ping', () => { pings++; });
  const silent = await wsRaw(d.port);
  const before = await metric(d.port, 'dosqld_connections_closed_total{reason="ping_timeout"}');
  await sleep(1500);
  assert.ok(pings >= 3, `got ${pings} pings in 1.5 s at a 300 ms interval`);
  assert.equal(ws.readyState, WebSocket.OPEN, 'the answering client is still connected');
  const frames = await wsReadUntil(silent, () => false, 3000).catch(() => null);
  await silent.readClose(3000);
  assert.ok(await metric(d.port, 'dosqld_connections_closed_total{reason="ping_timeout"}') > before);
  void frames;
  ws.close();
});

test('a client that never reads is cut off without harming other clients', async () => {
  const stallsBefore = await metric(d.port, 'dosqld_connections_closed_total{reason="send_stall"}');
  const c = await wsRaw(d.port);
  c.sock.pause(); // never read again
  let writeError = null;
  c.sock.on('error', (e) => { writeError = e; });
  const ping = wsFrame(0x9, Buffer.alloc(125, 0x61));
  const batch = Buffer.concat(Array(1000).fill(ping)); // 1,000 pings: 125 KiB of pongs owed
  const other = await open();
  let otherOk = 0;
  // Bounded: at most 200 batches (25 MB) or 20 s.
  const deadline = Date.now() + 20000;
  let stalls = stallsBefore;
  for (let i = 0; i < 200 && Date.now() < deadline; i++) {
    if (!c.sock.destroyed && c.sock.writableLength < 8 << 20) c.write(batch);
    other.send(JSON.stringify({ id: i, method: 'ping' }));
    const m = JSON.parse((await nextMessage(other)).data);
    if (m.id === i) otherOk++;
    stalls = await metric(d.port, 'dosqld_connections_closed_total{reason="send_stall"}');
    if (stalls > stallsBefore) break;
    await sleep(50);
  }
  assert.ok(stalls > stallsBefore, 'the stalled client was cut off');
  assert.ok(otherOk > 0 && other.readyState === WebSocket.OPEN, 'the other client kept being served');
  const r = await request(d.port, 'GET', '/healthz');
  assert.equal(r.status, 200);
  other.close();
  c.destroy();
  void writeError;
});

test('flow control: 20,000 pings in one write get 20,000 pongs', async () => {
  const c = await wsRaw(d.port);
  const ping = wsFrame(0x9, Buffer.alloc(100, 0x62));
  c.write(Buffer.concat(Array(20000).fill(ping))); // ~2.5 MB: reading pauses and resumes many times
  let pongs = 0;
  await c.waitFor(() => {
    const r = wsParse(c.buf);
    pongs += r.frames.filter((f) => f.opcode === 0xA && f.payload.length === 100).length;
    c.buf = Buffer.from(r.rest);
    return pongs >= 20000 || c.closed;
  }, 20000, '20,000 pongs');
  assert.equal(pongs, 20000);
  assert.equal(c.closed, false);
  c.destroy();
});

test('an upgrade on a route without WebSocket support gets an error, not 101', async () => {
  const c = await wsRaw(d.port, '/v1/db/app/cdc');
  assert.equal(c.upgrade.status, 400);
  c.destroy();
});

test('a bad handshake is refused', async () => {
  const upgrade = (version, key) => 'GET /v1/rpc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n' +
    `Connection: Upgrade\r\nSec-WebSocket-Version: ${version}\r\nSec-WebSocket-Key: ${key}\r\n\r\n`;
  let c = await Raw.connect(d.port);
  c.write(upgrade(8, 'dGhlIHNhbXBsZSBub25jZQ=='));
  const r = await c.readResponse();
  assert.equal(r.status, 426);
  assert.equal(r.headers['sec-websocket-version'], '13');
  await c.readClose();
  c = await Raw.connect(d.port);
  c.write(upgrade(13, 'tooshort'));
  const r2 = await c.readResponse();
  assert.equal(r2.status, 400);
  assert.match(r2.json.error.message, /Sec-WebSocket-Key/);
  await c.readClose();
});

test('websocket metrics', async () => {
  const ws = await open();
  ws.send(JSON.stringify({ id: 1, method: 'ping' }));
  await nextMessage(ws);
  assert.ok(await metric(d.port, 'dosqld_websocket_connections') >= 1);
  assert.ok(await metric(d.port, 'dosqld_websocket_messages_received_total') >= 1);
  assert.ok(await metric(d.port, 'dosqld_websocket_messages_sent_total') >= 1);
  ws.close();
});

// permessage-deflate (RFC 7692), on with [websocket] compression: the `ws`
// client offers it by default. Large messages travel compressed both ways
// and arrive whole; a CDC batch sent alike to several subscribers is the
// same compressed frame for each. Off (the default), no extension is agreed.
test('permessage-deflate: negotiated when on, large messages compressed both ways, CDC batches too', async () => {
  const z = await startDosqld({
    conf: '[websocket]\ncompression = yes\ncompression_min = 1K\n[cdc]\ncoalesce_cpu = 0\ncoalesce_interval = 100ms\n',
  });
  try {
    const raw = await wsRaw(z.port, '/v1/rpc', {
      headers: { 'Sec-WebSocket-Extensions': 'permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits' },
    });
    assert.equal(raw.upgrade.status, 101);
    assert.equal(raw.upgrade.headers['sec-websocket-extensions'], 'permessage-deflate; server_no_context_takeover',
      'the second offer taken (no 8-bit window), our context never taken over');
    raw.destroy();

    const ws = await new Promise((resolve, reject) => {
      const w = new WebSocket(`ws://127.0.0.1:${z.port}/v1/db/zz/rpc`);
      w.on('open', () => resolve(w));
      w.on('error', reject);
    });
    assert.equal(ws.extensions, 'permessage-deflate');
    const replies = [];
    ws.on('message', (data) => replies.push(JSON.parse(data.toString())));
    const rpc = async (id, method, params) => {
      ws.send(JSON.stringify({ id, method, params }));
      return within(5000, new Promise((resolve) => {
        const check = () => { const r = replies.find((m) => m.id === id); r ? resolve(r) : setTimeout(check, 5); };
        check();
      }), method);
    };
    const big = 'dosqld '.repeat(4000); // 28,000 bytes: the client sends it compressed
    assert.ok((await rpc(1, 'query', { sql: 'CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)' })).result);
    assert.ok((await rpc(2, 'query', { sql: 'INSERT INTO t VALUES (1, ?)', params: [big] })).result);
    const before = ws._socket.bytesRead;
    const r = await rpc(3, 'query', { sql: 'SELECT v FROM t' });
    assert.equal(r.result.rows[0][0], big, 'inflated whole');
    const wire = ws._socket.bytesRead - before;
    assert.ok(wire < 2000, `a 28 KB reply took ${wire} bytes on the wire`);
    ws.close();

    // Two subscribers with the same id (each the first of its connection)
    // share each batch: the same compressed frames. The next row is written
    // once both have the last one: a round of calls to a feed's subscribers
    // yields to the loop after 50 us (feed.c), far less than a compressed
    // send takes under a sanitizer or on a loaded machine, and a commit
    // made durable between two slices would join the second subscriber's
    // batch only — other bytes, from the server doing what it should.
    const subs = [];
    for (let i = 0; i < 2; i++) {
      const c = await WsRpc.open(z.port, '/v1/db/zz/rpc');
      await c.ok('subscribeCDC', { tables: ['t'] });
      c.frames = [];
      c.ws._socket.on('data', (b) => c.frames.push(b));
      subs.push(c);
    }
    const w = await WsRpc.open(z.port, '/v1/db/zz/rpc');
    const lsns = [];
    const has = (c, lsn) => c.notes.some((n) => n.method === 'cdc' && n.params.lsn === lsn);
    for (let i = 2; i <= 41; i++) {
      const lsn = (await w.ok('query', { sql: 'INSERT INTO t VALUES (?, ?)', params: [i, `row ${i} `.repeat(200)] })).lsn;
      lsns.push(lsn);
      await within(5000, new Promise((resolve) => {
        const check = () => (subs.every((c) => has(c, lsn)) ? resolve() : setTimeout(check, 2));
        check();
      }), `the event of LSN ${lsn} at both subscribers`);
    }
    for (const c of subs) {
      await within(5000, new Promise((resolve) => {
        const check = () => (c.notes.filter((n) => n.method === 'cdc').length >= 40 ? resolve() : setTimeout(check, 10));
        check();
      }), '40 events');
      assert.deepEqual(c.notes.filter((n) => n.method === 'cdc').map((n) => n.params.lsn), lsns, 'every event once, in order');
    }
    await sleep(200);
    const bytes = (c) => Buffer.concat(c.frames);
    assert.ok(bytes(subs[0]).length < 40 * 1500 / 4, `40 events of over 1,500 bytes in ${bytes(subs[0]).length} bytes`);
    assert.equal(bytes(subs[0])[0], 0xc1, 'FIN, RSV1 (compressed), text');
    assert.ok(bytes(subs[0]).equals(bytes(subs[1])), 'alike subscribers: the same bytes');
    for (const c of [...subs, w]) c.ws.close();
  } finally {
    await z.cleanup();
  }
  // Off by default: the offer is declined.
  const plain = await new Promise((resolve, reject) => {
    const w = new WebSocket(`ws://127.0.0.1:${d.port}/v1/rpc`);
    w.on('open', () => resolve(w));
    w.on('error', reject);
  });
  assert.equal(plain.extensions, '');
  plain.close();
});
