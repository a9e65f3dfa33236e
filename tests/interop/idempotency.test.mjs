// Interop: the official capnweb client sends a write with idempotencyKey
// again (as a client does after losing the answer): it runs once, and the
// retry resolves to the first answer — over WebSocket, over an HTTP
// batch, and through a database(name) stub.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { newWebSocketRpcSession, newHttpBatchRpcSession } from 'capnweb';
import { startDosqld } from '../integration/lib/harness.mjs';

// capnweb uses the global WebSocket, which Node 20 does not have.
globalThis.WebSocket = WebSocket;

let d;
before(async () => {
  d = await startDosqld();
});
after(async () => { await d?.cleanup(); });

test('a retried query with idempotencyKey runs once and resolves to the first answer', async () => {
  const api = newWebSocketRpcSession(`ws://127.0.0.1:${d.port}/v1/db/idem/capnweb`);
  try {
    await api.query({ sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)' });
    const req = { sql: 'INSERT INTO t(v) VALUES (?) RETURNING id, v', params: ['once'], idempotencyKey: 'cw-1' };
    const first = await api.query(req);
    assert.deepEqual(first.rows, [[1, 'once']]);
    assert.equal(typeof first.lsn, 'bigint');
    const again = await api.query(req);
    assert.deepEqual(again, first, 'the retry resolves to the first answer, LSN included');
    // A new session (the first one's answer lost with it), over an HTTP batch.
    const batch = newHttpBatchRpcSession(`http://127.0.0.1:${d.port}/v1/db/idem/capnweb`);
    assert.deepEqual(await batch.query(req), first);
    const unbound = newWebSocketRpcSession(`ws://127.0.0.1:${d.port}/v1/capnweb`);
    try {
      assert.deepEqual(await unbound.database('idem').query(req), first);
      // The key of another request: refused with its code.
      const e = await unbound.database('idem').query({ ...req, params: ['other'] }).then(() => null, (err) => err);
      assert.ok(e instanceof Error);
      assert.equal(e.code, 'INVALID_REQUEST');
      assert.match(e.message, /was used for a different request/);
    } finally {
      unbound[Symbol.dispose]();
    }
    const n = await api.query({ sql: 'SELECT count(*) FROM t' });
    assert.deepEqual(n.rows, [[1]], 'the row was inserted once');
  } finally {
    api[Symbol.dispose]();
  }
});

test('batch and commit take idempotencyKey too', async () => {
  const api = newWebSocketRpcSession(`ws://127.0.0.1:${d.port}/v1/db/idem2/capnweb`);
  try {
    await api.query({ sql: 'CREATE TABLE t(v)' });
    const b = { statements: [{ sql: "INSERT INTO t VALUES ('b')" }, { sql: 'SELECT count(*) FROM t' }], idempotencyKey: 'cw-b' };
    const b1 = await api.batch(b);
    assert.deepEqual(await api.batch(b), b1);
    const { transactionId } = await api.beginTransaction({});
    await api.query({ sql: "INSERT INTO t VALUES ('c')", transactionId });
    const c1 = await api.commit({ transactionId, idempotencyKey: 'cw-c' });
    assert.deepEqual(await api.commit({ transactionId, idempotencyKey: 'cw-c' }), c1);
    assert.deepEqual((await api.query({ sql: 'SELECT count(*) FROM t' })).rows, [[2]]);
  } finally {
    api[Symbol.dispose]();
  }
});
