// Idempotency keys: a write sent again with its idempotencyKey, after its
// answer was lost, runs once and gets the first answer, byte for byte —
// over JSON-RPC (HTTP and WebSocket), the query route and /v1/rpc; a key
// reused for another request is refused; a failure records nothing; an
// atomic batch and a transaction's commit are kept alike; the key outlives
// a restart; it expires with idempotency_window (0: keys are forgotten);
// keyspaces refuse it. The point of it all: a connection cut after the
// commit and before the answer (a proxy that swallows the answer and cuts,
// and a client that sends and hangs up at once), then the retry on a new
// connection — the row is there once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  Raw, metric, parseResponse, sleep, startDosqld, tempDir, within, wsFrame, wsRaw,
} from './lib/harness.mjs';
import { post, query, WsRpc } from './lib/rpc.mjs';

let d, root;
before(async () => {
  root = tempDir('dosqld-idem-');
  d = await startDosqld({ dataDir: path.join(root, 'data') });
});
after(async () => {
  await d?.cleanup();
  if (root) rmSync(root, { recursive: true, force: true });
});

const rpc = (db, method, params, id = 1) => post(d.port, `/v1/db/${db}/rpc`, { jsonrpc: '2.0', id, method, params });
const count = async (db, table = 't') => (await query(d.port, db, `SELECT count(*) FROM ${table}`)).rows[0][0];
const INSERT = "INSERT INTO t(v) VALUES (?) RETURNING id, v, 'x' || v AS w";

async function table(db) {
  await query(d.port, db, 'CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT UNIQUE)');
}

test('a retried INSERT with the same key inserts once and answers the same bytes, on every route', async () => {
  await table('once');
  const before = await metric(d.port, 'dosqld_idempotent_replays_total');
  const params = { sql: INSERT, params: ['a'], idempotencyKey: 'once-1' };
  const first = await rpc('once', 'query', params);
  assert.equal(first.status, 200);
  assert.deepEqual(first.json.result.rows, [[1, 'a', 'xa']]);
  const again = await rpc('once', 'query', params);
  assert.equal(again.text, first.text, 'the retry is answered with the first answer, identical');
  // /v1/rpc with "database", the query route and WebSocket: the same record.
  const unbound = await post(d.port, '/v1/rpc', { jsonrpc: '2.0', id: 1, method: 'query', params: { ...params, database: 'once' } });
  assert.deepEqual(unbound.json.result, first.json.result);
  const route = await post(d.port, '/v1/db/once/query', params);
  assert.equal(route.status, 200);
  assert.deepEqual(route.json, first.json.result);
  const ws = await WsRpc.open(d.port, '/v1/db/once/rpc');
  assert.deepEqual(await ws.ok('query', params), first.json.result);
  await ws.close();
  assert.equal(await count('once'), 1, 'inserted once');
  assert.equal(await metric(d.port, 'dosqld_idempotent_replays_total'), before + 4);
  // Another key, or none: it runs (and here trips the UNIQUE constraint).
  const other = await rpc('once', 'query', { ...params, idempotencyKey: 'once-2' });
  assert.equal(other.json.error.code, 'CONSTRAINT_VIOLATION');
});

test('the same key for a different request is refused; invalid keys and members are refused', async () => {
  await table('diff');
  const ok = await rpc('diff', 'query', { sql: INSERT, params: ['a'], idempotencyKey: 'k' });
  assert.ok(ok.json.result, ok.text);
  for (const p of [{ sql: INSERT, params: ['b'] }, { sql: 'INSERT INTO t(v) VALUES (?)', params: ['a'] }]) {
    const r = await rpc('diff', 'query', { ...p, idempotencyKey: 'k' });
    assert.equal(r.json.error?.code, 'INVALID_REQUEST', r.text);
    assert.match(r.json.error.message, /idempotencyKey "k" was used for a different request/);
  }
  const batch = await rpc('diff', 'batch', { statements: [{ sql: INSERT, params: ['a'] }], idempotencyKey: 'k' });
  assert.match(batch.json.error?.message ?? '', /was used for a different request/);
  assert.equal(await count('diff'), 1);
  for (const key of ['', 'x'.repeat(129), 7, null, ['k'], { k: 1 }]) {
    const r = await rpc('diff', 'query', { sql: INSERT, params: ['z'], idempotencyKey: key });
    assert.equal(r.json.error?.code, 'INVALID_REQUEST', `${JSON.stringify(key)}: ${r.text}`);
    assert.match(r.json.error.message, /"idempotencyKey" must be a string of 1 to 128 bytes/);
  }
  const longest = await rpc('diff', 'query', { sql: 'INSERT INTO t(v) VALUES (?)', params: ['y'], idempotencyKey: 'é'.repeat(64) });
  assert.ok(longest.json.result, `128 bytes is a key: ${longest.text}`);
  for (const [method, p] of [['ping', {}], ['getSchema', {}], ['rollback', { transactionId: 'x' }], ['queryStream', { sql: 'SELECT 1' }]]) {
    const r = await rpc('diff', method, { ...p, idempotencyKey: 'k' });
    assert.match(r.json.error?.message ?? '', new RegExp(`unknown field "idempotencyKey" in ${method}`), r.text);
  }
  const na = await rpc('diff', 'batch', { statements: [{ sql: "INSERT INTO t(v) VALUES ('n')" }], atomic: false, idempotencyKey: 'na' });
  assert.equal(na.json.error?.code, 'INVALID_REQUEST');
  assert.match(na.json.error.message, /idempotencyKey needs an atomic batch/);
  assert.equal(await count('diff'), 2);
});

test('a failed write records nothing: the retry runs it; a read runs every time', async () => {
  await table('fail');
  await query(d.port, 'fail', "INSERT INTO t(v) VALUES ('dup')");
  const params = { sql: INSERT, params: ['dup'], idempotencyKey: 'f' };
  const first = await rpc('fail', 'query', params);
  assert.equal(first.json.error?.code, 'CONSTRAINT_VIOLATION', first.text);
  await query(d.port, 'fail', 'DELETE FROM t');
  const retry = await rpc('fail', 'query', params);
  assert.deepEqual(retry.json.result?.rows?.[0]?.slice(1), ['dup', 'xdup'], retry.text);
  assert.equal(await count('fail'), 1);
  // A read with a key: run each time (nothing to record), answering now.
  const r1 = await rpc('fail', 'query', { sql: 'SELECT count(*) FROM t', idempotencyKey: 'read' });
  await query(d.port, 'fail', "INSERT INTO t(v) VALUES ('more')");
  const r2 = await rpc('fail', 'query', { sql: 'SELECT count(*) FROM t', idempotencyKey: 'read' });
  assert.deepEqual([r1.json.result.rows, r2.json.result.rows], [[[1]], [[2]]]);
});

test('an atomic batch and the commit of a transaction: retried, they answer as the first time', async () => {
  await table('tx');
  const statements = [{ sql: INSERT, params: ['b1'] }, { sql: 'SELECT id, v FROM t ORDER BY id' }];
  const b1 = await rpc('tx', 'batch', { statements, idempotencyKey: 'batch-1' });
  assert.ok(b1.json.result, b1.text);
  const b2 = await rpc('tx', 'batch', { statements, idempotencyKey: 'batch-1' });
  assert.equal(b2.text, b1.text);
  assert.equal(await count('tx'), 1);
  // A transaction over WebSocket, its commit's answer lost with the
  // connection: the commit sent again on another connection.
  const ws = await WsRpc.open(d.port, '/v1/db/tx/rpc');
  const { transactionId } = await ws.ok('beginTransaction', {});
  await ws.ok('query', { sql: "INSERT INTO t(v) VALUES ('in-txn')", transactionId });
  const c1 = await ws.ok('commit', { transactionId, idempotencyKey: 'commit-1' });
  await ws.close();
  const ws2 = await WsRpc.open(d.port, '/v1/db/tx/rpc');
  const c2 = await ws2.ok('commit', { transactionId, idempotencyKey: 'commit-1' });
  assert.deepEqual(c2, c1, 'the retried commit answers with the first one\'s LSN');
  const gone = await ws2.call('commit', { transactionId });
  assert.equal(gone.error?.code, 'TRANSACTION_NOT_FOUND', 'without its key the transaction is gone');
  const other = await ws2.call('commit', { transactionId: 'f'.repeat(32), idempotencyKey: 'commit-1' });
  assert.match(other.error?.message ?? '', /was used for a different request/);
  await ws2.close();
  assert.equal(await count('tx'), 2);
});

test('keyspaces refuse idempotencyKey', async () => {
  const dir = tempDir('dosqld-idem-ks-');
  const vs = path.join(dir, 'vschema.json');
  writeFileSync(vs, JSON.stringify({
    keyspaces: { ks: { shards: ['ks-0', 'ks-1'], vindexes: { h: { type: 'hash' } }, tables: { t: { column: 'id', vindex: 'h' } } } },
  }));
  const k = await startDosqld({ conf: `[sharding]\nvschema = ${vs}\n` });
  try {
    const r = await post(k.port, '/v1/ks/ks/query', { sql: 'SELECT 1', idempotencyKey: 'k' });
    assert.equal(r.json.error?.code, 'INVALID_REQUEST', r.text);
    assert.equal(r.json.error.message, 'idempotencyKey is not supported on keyspaces');
    for (const [method, p] of [['batch', { statements: [{ sql: 'SELECT 1' }] }], ['commit', { transactionId: 'x' }]]) {
      const b = await post(k.port, '/v1/ks/ks/rpc', { jsonrpc: '2.0', id: 1, method, params: { ...p, idempotencyKey: 'k' } });
      assert.equal(b.json.error?.message, 'idempotencyKey is not supported on keyspaces', b.text);
    }
  } finally {
    await k.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the key survives a restart of the daemon', async () => {
  await table('restart');
  const params = { sql: INSERT, params: ['r'], idempotencyKey: 'restart-1' };
  const first = await rpc('restart', 'query', params);
  assert.ok(first.json.result, first.text);
  const e = await d.stop();
  assert.equal(e.code, 0);
  d = await startDosqld({ dataDir: path.join(root, 'data') });
  const again = await rpc('restart', 'query', params);
  assert.equal(again.text, first.text);
  assert.equal(await count('restart'), 1);
});

test('keys expire with idempotency_window; 0 remembers none', async () => {
  const w = await startDosqld({ conf: '[engine]\nidempotency_window = 1s\n' });
  const z = await startDosqld({ conf: '[engine]\nidempotency_window = 0\n' });
  try {
    for (const s of [w, z]) await query(s.port, 'exp', 'CREATE TABLE t(v)');
    const params = { sql: 'INSERT INTO t VALUES (1)', idempotencyKey: 'e' };
    const send = (s) => post(s.port, '/v1/db/exp/query', params);
    const first = await send(w);
    assert.equal((await send(w)).text, first.text, 'within the window: a replay');
    await sleep(1300);
    const late = await send(w);
    assert.equal(late.status, 200);
    assert.notEqual(late.json.lsn, first.json.lsn, 'past the window: it runs again');
    assert.deepEqual((await query(w.port, 'exp', 'SELECT count(*) FROM t')).rows, [[2]]);
    await send(z);
    await send(z);
    assert.deepEqual((await query(z.port, 'exp', 'SELECT count(*) FROM t')).rows, [[2]], 'window 0: no replay');
  } finally {
    await w.cleanup();
    await z.cleanup();
  }
});

// A proxy that passes requests on and swallows the first answer: as it
// arrives it is kept (for the test to compare) and both connections are
// cut, so the client never sees it. The write committed: the answer left
// only after its commit.
class AnswerEater {
  constructor(target) { this.target = target; this.lost = Buffer.alloc(0); this.cut = false; }

  start() {
    this.server = net.createServer((client) => {
      const up = net.connect({ host: '127.0.0.1', port: this.target });
      client.on('data', (b) => up.write(b));
      up.on('data', (b) => {
        this.lost = Buffer.concat([this.lost, b]);
        if (parseResponse(this.lost) !== null) {
          this.cut = true;
          client.destroy();
          up.destroy();
        }
      });
      const end = () => { client.destroy(); up.destroy(); };
      client.on('error', end);
      up.on('error', end);
      client.on('close', end);
      up.on('close', end);
    });
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => {
      this.port = this.server.address().port;
      resolve(this);
    }));
  }

  close() { return new Promise((resolve) => this.server.close(() => resolve())); }
}

function httpPost(target, body) {
  const b = Buffer.from(JSON.stringify(body));
  return `POST ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n\r\n${b}`;
}

test('a connection cut between the commit and its answer: the retry on a new connection finds the row once', async () => {
  await table('cut');
  const params = { sql: INSERT, params: ['c'], idempotencyKey: 'cut-1' };
  const body = { jsonrpc: '2.0', id: 7, method: 'query', params };
  // The answer is lost on the way: the client sees the connection cut.
  const eater = await new AnswerEater(d.port).start();
  try {
    const c = await Raw.connect(eater.port);
    c.write(httpPost('/v1/db/cut/rpc', body));
    const left = await c.readClose(10000);
    assert.equal(left.length, 0, 'the client saw no answer');
    assert.ok(eater.cut);
  } finally {
    await eater.close();
  }
  const lost = parseResponse(eater.lost);
  assert.equal(lost.status, 200);
  assert.deepEqual(lost.json.result.rows, [[1, 'c', 'xc']], 'the write ran before its answer was lost');
  // The client does not know: it sends the write again, same key.
  const retry = await post(d.port, '/v1/db/cut/rpc', body);
  assert.equal(retry.text, lost.text, 'the retry gets the lost answer, byte for byte');
  assert.equal(await count('cut'), 1, 'and the row is there once');

  // A client that sends its write over WebSocket and hangs up at once:
  // whether the write ran or not, the retry leaves the row there once and
  // answers as a replay does.
  for (let i = 0; i < 5; i++) {
    const hang = { id: 1, method: 'query', params: { sql: INSERT, params: [`h${i}`], idempotencyKey: `hang-${i}` } };
    const ws = await wsRaw(d.port, '/v1/db/cut/rpc');
    ws.write(wsFrame(1, JSON.stringify(hang)));
    ws.destroy();
    const again = await within(10000, (async () => {
      const w2 = await WsRpc.open(d.port, '/v1/db/cut/rpc');
      try {
        return [await w2.call('query', hang.params), await w2.call('query', hang.params)];
      } finally {
        await w2.close();
      }
    })(), 'retry');
    assert.ok(again[0].result, JSON.stringify(again[0]));
    assert.deepEqual(again[1].result, again[0].result, 'a replay answers as the retry did');
    const n = (await query(d.port, 'cut', 'SELECT count(*) FROM t WHERE v = ?', [`h${i}`])).rows[0][0];
    assert.equal(n, 1, `h${i} is there once`);
  }
});
