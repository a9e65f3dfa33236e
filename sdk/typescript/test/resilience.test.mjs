// @dosqld/client when connections drop: calls in flight, reconnection
// with backoff, open transactions, retries, idempotency keys. The drops
// come from the tests' TCP fault proxy (tests/cluster/lib/proxy.mjs)
// between the client and a real dosqld, or from a WebSocket that loses a
// reply on purpose.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, DosqlError, ConnectionLostError } from '../dist/index.js';
import { startServer, FaultProxy, tapWebSocket, sleep, WRITE_TOKEN } from './lib.mjs';

let d, proxy;
const open = [];
function client(db, o = {}) {
  const c = connect(`http://127.0.0.1:${proxy.port}`, { database: db, token: WRITE_TOKEN, ...o });
  open.push(c);
  return c;
}
// A read that takes a while (a few hundred ms), to be in flight at a drop.
const SLOW = 'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT count(*) AS c FROM n';

before(async () => {
  d = await startServer();
  proxy = await new FaultProxy(d.port).start();
});
after(async () => {
  await Promise.all(open.map((c) => c.close()));
  await proxy?.close();
  await d?.cleanup();
});

test('a call in flight at a drop fails with a retryable CONNECTION_LOST; the next call reconnects', async () => {
  const db = client('drop');
  await db.query('SELECT 1');
  const accepted = proxy.stats.accepted;
  const slow = db.query(SLOW);
  await sleep(80);
  proxy.cut();
  const e = await slow.catch((x) => x);
  assert.ok(e instanceof ConnectionLostError, String(e));
  assert.ok(e instanceof DosqlError);
  assert.equal(e.name, 'ConnectionLostError');
  assert.equal(e.code, 'CONNECTION_LOST');
  assert.equal(e.retryable, true);
  assert.deepEqual((await db.query('SELECT 2 AS two')).rows, [{ two: 2 }]);
  assert.equal(proxy.stats.accepted, accepted + 1, 'one new connection');
  // Calls made together after a drop share one new connection.
  proxy.cut();
  await sleep(100);
  const rs = await Promise.all([1, 2, 3].map((i) => db.query('SELECT ? AS i', [i])));
  assert.deepEqual(rs.map((r) => r.rows[0].i), [1, 2, 3]);
  assert.equal(proxy.stats.accepted, accepted + 2);
});

test('reconnection backs off between failed attempts, gives up after `attempts`, and recovers', async () => {
  const db = client('backoff', { reconnect: { attempts: 4, backoffMs: 40, maxBackoffMs: 80 } });
  await db.query('SELECT 1');
  proxy.partition();
  await sleep(100); // the client sees the drop
  try {
    const refused = proxy.stats.refused;
    const t0 = Date.now();
    const e = await db.query('SELECT 1').catch((x) => x);
    const took = Date.now() - t0;
    assert.equal(e.code, 'CONNECTION_LOST');
    assert.equal(e.retryable, true);
    assert.equal(proxy.stats.refused - refused, 4, 'four attempts');
    // Waits of at least half of 40, 80, 80 ms (jitter), no more than them.
    assert.ok(took >= 90, `backed off (${took} ms)`);
    assert.ok(took < 2000, `bounded (${took} ms)`);
  } finally {
    proxy.heal();
  }
  assert.deepEqual((await db.query('SELECT 3 AS three')).rows, [{ three: 3 }]);
});

test('an open transaction whose connection drops fails with TRANSACTION_ABORTED and is rolled back', async () => {
  const db = client('txdrop');
  await db.query('CREATE TABLE t(x)');
  // A call of the transaction after the drop.
  const e1 = await db.transaction(async (tx) => {
    await tx.query('INSERT INTO t VALUES (1)');
    proxy.cut();
    await sleep(100);
    await tx.query('INSERT INTO t VALUES (2)');
  }).catch((x) => x);
  assert.ok(e1 instanceof DosqlError);
  assert.equal(e1.code, 'TRANSACTION_ABORTED');
  assert.equal(e1.retryable, false);
  assert.match(e1.message, /rolled it back/);
  // The callback finishes after the drop: the commit is not sent.
  const e2 = await db.transaction(async (tx) => {
    await tx.query('INSERT INTO t VALUES (3)');
    proxy.cut();
    await sleep(100);
  }).catch((x) => x);
  assert.equal(e2.code, 'TRANSACTION_ABORTED');
  // A call in flight at the drop.
  const e3 = await db.transaction(async (tx) => {
    await tx.query('INSERT INTO t VALUES (4)');
    const slow = tx.query(SLOW);
    await sleep(80);
    proxy.cut();
    await slow;
  }).catch((x) => x);
  assert.equal(e3.code, 'TRANSACTION_ABORTED');
  assert.deepEqual((await db.query('SELECT count(*) AS n FROM t')).rows, [{ n: 0 }], 'none of it committed');
  // The client goes on.
  await db.transaction(async (tx) => { await tx.query('INSERT INTO t VALUES (5)'); });
  assert.deepEqual((await db.query('SELECT x FROM t')).rows, [{ x: 5 }]);
});

test('with retry on, a read in flight at a drop is sent again and answers', async () => {
  const tap = tapWebSocket();
  const db = client('retryread', { retry: { attempts: 3, backoffMs: 20 }, WebSocket: tap.WebSocket });
  await db.query('SELECT 1');
  const slow = db.query(SLOW);
  await sleep(80);
  proxy.cut();
  assert.deepEqual((await slow).rows, [{ c: 3000000 }]);
  const sends = tap.sent.filter((m) => m.includes('RECURSIVE'));
  assert.equal(sends.length, 2, 'sent twice');
  assert.ok(sends.every((m) => !m.includes('idempotencyKey')), 'a read carries no idempotency key');
  // Without retry, nothing is sent twice and no key goes.
  const plain = client('retryread', { WebSocket: tap.WebSocket });
  tap.sent.length = 0;
  await plain.query('CREATE TABLE IF NOT EXISTS t(x)');
  assert.ok(!tap.sent.some((m) => m.includes('idempotencyKey')));
});

test('retryable codes', () => {
  for (const c of ['CONNECTION_LOST', 'NOT_PRIMARY', 'SERIALIZATION_FAILURE', 'DEADLOCK_DETECTED', 'RESOURCE_EXHAUSTED'])
    assert.equal(new DosqlError(c, 'x').retryable, true, c);
  for (const c of ['CONSTRAINT_VIOLATION', 'SYNTAX_ERROR', 'TRANSACTION_ABORTED', 'UNAUTHORIZED', 'TIMEOUT'])
    assert.equal(new DosqlError(c, 'x').retryable, false, c);
});

test('with retry on, a write whose reply was lost is sent again with the same idempotency key and runs once', async () => {
  const tap = tapWebSocket();
  const db = client('retrywrite', { retry: { attempts: 3, backoffMs: 20 }, WebSocket: tap.WebSocket });
  await db.query('CREATE TABLE t(x)');
  tap.sent.length = 0;
  tap.loseNextReplyTo(/INSERT INTO t VALUES \(1\)/);
  const r = await db.query('INSERT INTO t VALUES (1)');
  assert.equal(r.rowsAffected, 1);
  const sends = tap.sent.filter((m) => m.includes('INSERT INTO t VALUES (1)'));
  assert.equal(sends.length, 2, 'sent twice');
  const keys = sends.map((m) => /"idempotencyKey":"([^"]+)"/.exec(m)?.[1]);
  assert.ok(keys[0], 'with a key');
  assert.equal(keys[0], keys[1], 'the same key both times');
  assert.deepEqual((await db.query('SELECT count(*) AS n FROM t')).rows, [{ n: 1 }], 'ran once');
  // Another logical write gets another key.
  await db.query('INSERT INTO t VALUES (2)');
  const k2 = /"idempotencyKey":"([^"]+)"/.exec(tap.sent.find((m) => m.includes('VALUES (2)')))[1];
  assert.notEqual(k2, keys[0]);
  // A batch, and a commit whose reply was lost.
  tap.loseNextReplyTo(/"statements"/);
  await db.batch(['INSERT INTO t VALUES (3)', 'INSERT INTO t VALUES (4)']);
  await db.transaction(async (tx) => {
    await tx.query('INSERT INTO t VALUES (5)');
    tap.loseNextReplyTo(/"commit"/);
  });
  assert.deepEqual((await db.query('SELECT x FROM t ORDER BY x')).rows.map((r) => r.x), [1, 2, 3, 4, 5]);
});
