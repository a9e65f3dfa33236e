// Integration: transactions on a real dosqld — isolation (others wait, never
// see uncommitted rows), savepoints, timeouts, rollback on disconnect, and a
// money-transfer invariant under 50 concurrent clients over 200 databases.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDosqld, sleep, within } from './lib/harness.mjs';
import { query, call, post, WsRpc } from './lib/rpc.mjs';

let d;
before(async () => {
  d = await startDosqld({ conf: '[engine]\ntransaction_timeout = 5s\n' });
});
after(async () => { await d?.cleanup(); });

// Has `p` settled within `ms`?
async function settles(p, ms) {
  let done = false;
  p.then(() => { done = true; }, () => { done = true; });
  await sleep(ms);
  return done;
}

test('a second client waits for an open transaction and never sees its rows', async () => {
  await query(d.port, 'iso', 'CREATE TABLE t(x)');
  const a = await WsRpc.open(d.port, '/v1/db/iso/rpc');
  const { transactionId } = await a.ok('beginTransaction', {});
  assert.match(transactionId, /^[0-9a-f]+$/);
  await a.ok('query', { sql: 'INSERT INTO t VALUES (1), (2)', transactionId });
  const inside = await a.ok('query', { sql: 'SELECT count(*) FROM t', transactionId });
  assert.deepEqual(inside.rows, [[2]], 'the transaction sees its own rows');
  const other = query(d.port, 'iso', 'SELECT count(*) FROM t');
  assert.equal(await settles(other, 300), false, 'the other client waits');
  const { lsn } = await a.ok('commit', { transactionId });
  const seen = await within(5000, other, 'the waiting read');
  assert.deepEqual(seen.rows, [[2]], 'it proceeds after the commit and sees the committed rows');
  assert.equal(seen.lsn, lsn);
  await a.close();
});

test('rollback discards; the waiting client sees nothing of it', async () => {
  await query(d.port, 'rb', 'CREATE TABLE t(x)');
  const a = await WsRpc.open(d.port, '/v1/db/rb/rpc');
  const { transactionId } = await a.ok('beginTransaction', { mode: 'immediate' });
  await a.ok('query', { sql: 'INSERT INTO t VALUES (1)', transactionId });
  const other = query(d.port, 'rb', 'SELECT count(*) FROM t');
  assert.equal(await settles(other, 200), false);
  await a.ok('rollback', { transactionId });
  assert.deepEqual((await other).rows, [[0]]);
  const again = await a.call('commit', { transactionId });
  assert.equal(again.error.code, 'TRANSACTION_NOT_FOUND', 'the id is gone after rollback');
  await a.close();
});

test('transactions hold only their own database', async () => {
  await query(d.port, 'hold1', 'CREATE TABLE t(x)');
  await query(d.port, 'hold2', 'CREATE TABLE t(x)');
  const a = await WsRpc.open(d.port, '/v1/db/hold1/rpc');
  const { transactionId } = await a.ok('beginTransaction', { mode: 'immediate' });
  const r = await within(2000, query(d.port, 'hold2', 'INSERT INTO t VALUES (1)'), 'another database');
  assert.equal(r.rowsAffected, 1);
  await a.ok('rollback', { transactionId });
  await a.close();
});

test('SAVEPOINT, ROLLBACK TO and RELEASE inside a transaction', async () => {
  await query(d.port, 'sp', 'CREATE TABLE t(x)');
  const a = await WsRpc.open(d.port, '/v1/db/sp/rpc');
  const { transactionId } = await a.ok('beginTransaction', {});
  const q = (sql) => a.ok('query', { sql, transactionId });
  await q('INSERT INTO t VALUES (1)');
  await q('SAVEPOINT s1');
  await q('INSERT INTO t VALUES (2)');
  await q('ROLLBACK TO s1');
  await q('INSERT INTO t VALUES (3)');
  await q('RELEASE s1');
  await a.ok('commit', { transactionId });
  assert.deepEqual((await query(d.port, 'sp', 'SELECT x FROM t ORDER BY x')).rows, [[1], [3]]);
  const outside = await query(d.port, 'sp', 'SAVEPOINT s2', undefined, { raw: true });
  assert.equal(outside.json.error.code, 'FORBIDDEN', 'savepoints belong inside a transaction');
  await a.close();
});

test('a statement error inside a transaction undoes that statement only', async () => {
  await query(d.port, 'stmterr', 'CREATE TABLE t(x UNIQUE)');
  const a = await WsRpc.open(d.port, '/v1/db/stmterr/rpc');
  const { transactionId } = await a.ok('beginTransaction', {});
  await a.ok('query', { sql: 'INSERT INTO t VALUES (1)', transactionId });
  const dup = await a.call('query', { sql: 'INSERT INTO t VALUES (2), (1)', transactionId });
  assert.equal(dup.error.code, 'CONSTRAINT_VIOLATION');
  await a.ok('commit', { transactionId });
  assert.deepEqual((await query(d.port, 'stmterr', 'SELECT x FROM t')).rows, [[1]]);
  await a.close();
});

test('an idle transaction past timeoutMs is rolled back and its id is gone', async () => {
  await query(d.port, 'tmo', 'CREATE TABLE t(x)');
  const a = await WsRpc.open(d.port, '/v1/db/tmo/rpc');
  const { transactionId } = await a.ok('beginTransaction', { timeoutMs: 300 });
  await a.ok('query', { sql: 'INSERT INTO t VALUES (1)', transactionId });
  // Another client waits behind it, then proceeds once it expires.
  const t0 = Date.now();
  const other = await within(5000, query(d.port, 'tmo', 'SELECT count(*) FROM t'), 'read behind an expiring transaction');
  assert.deepEqual(other.rows, [[0]]);
  assert.ok(Date.now() - t0 >= 200, 'it waited for the timeout');
  const late = await a.call('query', { sql: 'SELECT 1', transactionId });
  assert.equal(late.error.code, 'TRANSACTION_NOT_FOUND');
  const c = await a.call('commit', { transactionId });
  assert.equal(c.error.code, 'TRANSACTION_NOT_FOUND');
  await a.close();
});

test('a client that disconnects has its transaction rolled back', async () => {
  await query(d.port, 'disc', 'CREATE TABLE t(x)');
  const a = await WsRpc.open(d.port, '/v1/db/disc/rpc');
  const { transactionId } = await a.ok('beginTransaction', {});
  await a.ok('query', { sql: 'INSERT INTO t VALUES (1)', transactionId });
  const other = query(d.port, 'disc', 'SELECT count(*) FROM t');
  assert.equal(await settles(other, 200), false);
  a.ws.terminate(); // no close frame: the TCP connection just ends
  const seen = await within(5000, other, 'read after the disconnect');
  assert.deepEqual(seen.rows, [[0]]);
  const st = (await call(d.port, '/v1/db/disc/rpc', 'getStats', {})).result;
  assert.equal(st.database.transactionOpen, false);
});

test('transactions over HTTP: ids work across requests and connections', async () => {
  await query(d.port, 'httptx', 'CREATE TABLE t(x)');
  const path = '/v1/db/httptx/rpc';
  const { transactionId } = (await call(d.port, path, 'beginTransaction', {})).result;
  await call(d.port, path, 'query', { sql: 'INSERT INTO t VALUES (7)', transactionId });
  const b = await call(d.port, path, 'batch', { transactionId, statements: [{ sql: 'INSERT INTO t VALUES (8)' }] });
  assert.ok(b.result, JSON.stringify(b));
  const c = await call(d.port, path, 'commit', { transactionId });
  assert.equal(typeof c.result.lsn, 'number');
  assert.deepEqual((await query(d.port, 'httptx', 'SELECT x FROM t ORDER BY x')).rows, [[7], [8]]);
  // A batch of JSON-RPC requests can carry a whole transaction's steps only
  // with a known id; an unknown one fails fast instead of waiting.
  const r = await post(d.port, path, { id: 1, method: 'query', params: { sql: 'SELECT 1', transactionId: 'ffffffffffffffff' } });
  assert.equal(r.json.error.code, 'TRANSACTION_NOT_FOUND');
});

// ---- the money-transfer invariant -------------------------------------------

const DBS = 200, ACCOUNTS = 10, START = 100, CLIENTS = 50, TRANSFERS = 40;

function rnd(n) { return Math.floor(Math.random() * n); }

test(`money transfers: ${CLIENTS} clients over ${DBS} databases keep every total`, { timeout: 120000 }, async () => {
  const dbs = Array.from({ length: DBS }, (_, i) => `bank-${i}`);
  await Promise.all(dbs.map((db) => query(d.port, db,
    `CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL CHECK (bal >= 0));
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${ACCOUNTS})
     INSERT INTO acct SELECT i, ${START} FROM n`)));
  const stats = { committed: 0, refused: 0, sumChecks: 0 };

  // Three ways to move money; each is all or nothing.
  async function viaTransaction(ws) {
    const db = dbs[rnd(DBS)], from = 1 + rnd(ACCOUNTS), to = 1 + rnd(ACCOUNTS), amt = 1 + rnd(150);
    const { transactionId } = await ws.ok('beginTransaction', { database: db, mode: 'immediate' });
    const bal = (await ws.ok('query', { database: db, transactionId, sql: 'SELECT bal FROM acct WHERE id = ?', params: [from] })).rows[0][0];
    if (bal < amt || from === to) {
      await ws.ok('rollback', { database: db, transactionId });
      stats.refused++;
      return;
    }
    await ws.ok('query', { database: db, transactionId, sql: 'UPDATE acct SET bal = bal - :a WHERE id = :id', params: { a: amt, id: from } });
    await ws.ok('query', { database: db, transactionId, sql: 'UPDATE acct SET bal = bal + :a WHERE id = :id', params: { a: amt, id: to } });
    await ws.ok('commit', { database: db, transactionId });
    stats.committed++;
  }
  async function viaBatch() {
    const db = dbs[rnd(DBS)], from = 1 + rnd(ACCOUNTS), to = 1 + rnd(ACCOUNTS), amt = 1 + rnd(150);
    const r = await call(d.port, `/v1/db/${db}/rpc`, 'batch', { statements: [
      { sql: 'UPDATE acct SET bal = bal + ? WHERE id = ?', params: [amt, to] },
      { sql: 'UPDATE acct SET bal = bal - ? WHERE id = ?', params: [amt, from] },
    ] });
    if (r.error) {
      assert.equal(r.error.code, 'CONSTRAINT_VIOLATION', JSON.stringify(r.error));
      stats.refused++;
    } else {
      stats.committed++;
    }
  }
  async function viaMultiStatement() {
    const db = dbs[rnd(DBS)], from = 1 + rnd(ACCOUNTS), to = 1 + rnd(ACCOUNTS), amt = 1 + rnd(150);
    const r = await query(d.port, db, 'UPDATE acct SET bal = bal + ?1 WHERE id = ?2; UPDATE acct SET bal = bal - ?1 WHERE id = ?3',
      [amt, to, from], { raw: true });
    if (r.status !== 200) {
      assert.equal(r.json.error.code, 'CONSTRAINT_VIOLATION', r.text);
      stats.refused++;
    } else {
      stats.committed++;
    }
  }
  // Readers: a total seen at any moment is the total.
  async function checkSum() {
    const db = dbs[rnd(DBS)];
    const r = await query(d.port, db, 'SELECT sum(bal), min(bal) FROM acct');
    assert.equal(r.rows[0][0], ACCOUNTS * START, `${db} total mid-run`);
    assert.ok(r.rows[0][1] >= 0);
    stats.sumChecks++;
  }

  const clients = await Promise.all(Array.from({ length: CLIENTS }, async (_, i) => {
    const ws = i % 3 === 0 ? await WsRpc.open(d.port, '/v1/rpc') : null;
    return { i, ws };
  }));
  await Promise.all(clients.map(async ({ i, ws }) => {
    for (let k = 0; k < TRANSFERS; k++) {
      if (ws) await viaTransaction(ws);
      else if (i % 3 === 1) await viaBatch();
      else await viaMultiStatement();
      if (k % 10 === 0) await checkSum();
    }
  }));
  await Promise.all(clients.filter((c) => c.ws).map((c) => c.ws.close()));

  for (const db of dbs) {
    const r = await query(d.port, db, 'SELECT sum(bal), min(bal), count(*) FROM acct');
    assert.deepEqual(r.rows[0].slice(0, 1), [ACCOUNTS * START], `${db} total`);
    assert.ok(r.rows[0][1] >= 0, `${db} has a negative balance`);
    assert.equal(r.rows[0][2], ACCOUNTS);
  }
  assert.equal(stats.committed + stats.refused, CLIENTS * TRANSFERS);
  assert.ok(stats.committed > CLIENTS * TRANSFERS / 4, `too few transfers went through: ${JSON.stringify(stats)}`);
  assert.ok(stats.refused > 0, 'some transfers must hit the CHECK constraint');
});
