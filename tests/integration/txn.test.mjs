// Integration: transactions on a real dosqld — isolation (readers never wait
// and never see uncommitted rows; writers wait), read-only transactions,
// savepoints, timeouts, rollback on disconnect, and a money-transfer
// invariant under 50 concurrent clients over 200 databases.
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

test('a reader does not wait for an open transaction and never sees its rows; a writer waits', async () => {
  const before = await query(d.port, 'iso', 'CREATE TABLE t(x)');
  const a = await WsRpc.open(d.port, '/v1/db/iso/rpc');
  const { transactionId } = await a.ok('beginTransaction', {});
  assert.match(transactionId, /^[0-9a-f]+$/);
  await a.ok('query', { sql: 'INSERT INTO t VALUES (1), (2)', transactionId });
  const inside = await a.ok('query', { sql: 'SELECT count(*) FROM t', transactionId });
  assert.deepEqual(inside.rows, [[2]], 'the transaction sees its own rows');
  const read = await within(2000, query(d.port, 'iso', 'SELECT count(*) FROM t'), 'a read beside the transaction');
  assert.deepEqual(read.rows, [[0]], 'the reader sees the last commit');
  assert.equal(read.lsn, before.lsn);
  const writer = query(d.port, 'iso', 'INSERT INTO t VALUES (3)');
  assert.equal(await settles(writer, 300), false, 'the other writer waits');
  // Reads keep running while the writer waits.
  const batch = await within(2000, call(d.port, '/v1/db/iso/rpc', 'batch',
    { statements: [{ sql: 'SELECT count(*) FROM t' }, { sql: 'SELECT 42' }] }), 'a read-only batch');
  assert.deepEqual(batch.result.results.map((r) => r.rows), [[[0]], [[42]]]);
  const schema = await within(2000, call(d.port, '/v1/db/iso/rpc', 'getSchema', {}), 'getSchema');
  assert.ok(schema.result.tables.some((t) => t.name === 't'));
  const { lsn } = await a.ok('commit', { transactionId });
  const w = await within(5000, writer, 'the waiting writer');
  assert.equal(w.rowsAffected, 1);
  assert.ok(w.lsn > lsn, 'the writer committed after the transaction');
  const seen = await query(d.port, 'iso', 'SELECT count(*) FROM t');
  assert.deepEqual(seen.rows, [[3]]);
  await a.close();
});

test('uncommitted DDL stays invisible to readers beside the transaction', async () => {
  await query(d.port, 'isoddl', 'CREATE TABLE t(x)');
  const a = await WsRpc.open(d.port, '/v1/db/isoddl/rpc');
  const { transactionId } = await a.ok('beginTransaction', {});
  await a.ok('query', { sql: 'CREATE TABLE u(y)', transactionId });
  const schema = await within(2000, call(d.port, '/v1/db/isoddl/rpc', 'getSchema', {}), 'getSchema');
  assert.deepEqual(schema.result.tables.map((t) => t.name), ['t']);
  const r = await query(d.port, 'isoddl', 'SELECT * FROM u', undefined, { raw: true });
  assert.equal(r.json.error.code, 'TABLE_NOT_FOUND', r.text);
  await a.ok('commit', { transactionId });
  assert.deepEqual((await query(d.port, 'isoddl', 'SELECT count(*) FROM u')).rows, [[0]]);
  await a.close();
});

test('a request that reads and writes waits whole; one connection\'s requests keep their order', async () => {
  await query(d.port, 'isoord', 'CREATE TABLE t(x)');
  const a = await WsRpc.open(d.port, '/v1/db/isoord/rpc');
  const { transactionId } = await a.ok('beginTransaction', {});
  await a.ok('query', { sql: 'INSERT INTO t VALUES (1)', transactionId });
  const b = await WsRpc.open(d.port, '/v1/db/isoord/rpc');
  // Sent back to back on one connection: the read after the write must see it.
  const mixed = b.call('query', { sql: 'SELECT count(*) FROM t; INSERT INTO t VALUES (2)' });
  const after = b.call('query', { sql: 'SELECT count(*) FROM t' });
  assert.equal(await settles(after, 300), false, 'the read waits behind its connection\'s write');
  assert.equal(await settles(mixed, 0), false);
  // Another connection's read does not wait.
  const c = await within(2000, query(d.port, 'isoord', 'SELECT count(*) FROM t'), 'another connection');
  assert.deepEqual(c.rows, [[0]]);
  await a.ok('commit', { transactionId });
  const m = await within(5000, mixed, 'the mixed request');
  assert.equal(m.result.rowsAffected, 1, JSON.stringify(m));
  const r = await within(5000, after, 'the read after it');
  assert.deepEqual(r.result.rows, [[2]], 'it ran after its connection\'s write');
  await a.close();
  await b.close();
});

test('a read-only transaction reads one snapshot and holds back no one', async () => {
  await query(d.port, 'ro', 'CREATE TABLE t(x); INSERT INTO t VALUES (1)');
  const a = await WsRpc.open(d.port, '/v1/db/ro/rpc');
  const begun = await a.ok('beginTransaction', { readOnly: true });
  const { transactionId } = begun;
  const w = await within(2000, query(d.port, 'ro', 'INSERT INTO t VALUES (2)'), 'a writer beside a read-only transaction');
  assert.equal(w.rowsAffected, 1);
  const seen = await a.ok('query', { sql: 'SELECT count(*) FROM t', transactionId });
  assert.deepEqual(seen.rows, [[1]], 'it reads the database as of its start');
  assert.equal(seen.lsn, begun.lsn);
  const b = await a.ok('batch', { transactionId, statements: [{ sql: 'SELECT max(x) FROM t' }] });
  assert.deepEqual(b.results[0].rows, [[1]]);
  const ins = await a.call('query', { sql: 'INSERT INTO t VALUES (3)', transactionId });
  assert.equal(ins.error.code, 'INVALID_REQUEST');
  assert.match(ins.error.message, /read-only/);
  // A write transaction may open beside it, and both end independently.
  const t2 = (await call(d.port, '/v1/db/ro/rpc', 'beginTransaction', {})).result.transactionId;
  assert.deepEqual((await a.ok('query', { sql: 'SELECT count(*) FROM t', transactionId })).rows, [[1]]);
  await call(d.port, '/v1/db/ro/rpc', 'rollback', { transactionId: t2 });
  const done = await a.ok('commit', { transactionId });
  assert.equal(done.lsn, begun.lsn);
  const gone = await a.call('query', { sql: 'SELECT 1', transactionId });
  assert.equal(gone.error.code, 'TRANSACTION_NOT_FOUND');
  const bad = await a.call('beginTransaction', { readOnly: true, mode: 'immediate' });
  assert.equal(bad.error.code, 'INVALID_REQUEST');
  await a.close();
});

test('a read-only transaction ends when idle past its timeout or when its client goes', async () => {
  await query(d.port, 'roend', 'CREATE TABLE t(x)');
  const a = await WsRpc.open(d.port, '/v1/db/roend/rpc');
  const { transactionId } = await a.ok('beginTransaction', { readOnly: true, timeoutMs: 300 });
  await sleep(1500);
  const late = await a.call('query', { sql: 'SELECT 1', transactionId });
  assert.equal(late.error.code, 'TRANSACTION_NOT_FOUND');
  const b = await WsRpc.open(d.port, '/v1/db/roend/rpc');
  await b.ok('beginTransaction', { readOnly: true });
  const open = (await call(d.port, '/v1/db/roend/rpc', 'getStats', {})).result;
  assert.equal(open.server.transactionsOpen, 1, JSON.stringify(open.server));
  b.ws.terminate();
  let st;
  for (let i = 0; i < 50; i++) {
    st = (await call(d.port, '/v1/db/roend/rpc', 'getStats', {})).result;
    if (st.server.transactionsOpen === 0) break;
    await sleep(100);
  }
  assert.equal(st.server.transactionsOpen, 0, 'the disconnected client\'s transaction ended');
  await a.close();
});

// A client that goes while its beginTransaction runs: the close looks
// for the session's transactions before the new one is there, so the
// transaction's own answer must end it (it lived until its timeout). A
// long log after the last checkpoint makes a read-only begin slow (its
// view reads that log), so that the close comes while it runs.
test('a transaction that begins as its client goes ends at once', async () => {
  const s = await startDosqld({ conf: '[engine]\ntransaction_timeout = 60s\n[storage]\ncheckpoint_size = 1G\n' });
  try {
    await query(s.port, 'robegin', 'CREATE TABLE t(x)');
    for (let i = 0; i < 1500; i++) await query(s.port, 'robegin', 'INSERT INTO t VALUES (?)', [i]);
    for (let i = 0; i < 60; i++) {
      const c = await WsRpc.open(s.port, '/v1/db/robegin/rpc');
      c.ws.send(JSON.stringify({ id: 1, method: 'beginTransaction', params: { readOnly: i % 4 !== 3 } }));
      await sleep(i % 5);
      c.ws.terminate();
    }
    let st;
    for (let i = 0; i < 30; i++) {
      st = (await call(s.port, '/v1/db/robegin/rpc', 'getStats', {})).result;
      if (st.server.transactionsOpen === 0) break;
      await sleep(100);
    }
    assert.equal(st.server.transactionsOpen, 0, 'every transaction of a client that went ended');
    await within(3000, query(s.port, 'robegin', 'INSERT INTO t VALUES (1)'), 'a write');
  } finally {
    await s.cleanup();
  }
});

test('rollback discards; the waiting client sees nothing of it', async () => {
  await query(d.port, 'rb', 'CREATE TABLE t(x)');
  const a = await WsRpc.open(d.port, '/v1/db/rb/rpc');
  const { transactionId } = await a.ok('beginTransaction', { mode: 'immediate' });
  await a.ok('query', { sql: 'INSERT INTO t VALUES (1)', transactionId });
  const other = query(d.port, 'rb', 'INSERT INTO t VALUES (5)');
  assert.equal(await settles(other, 200), false);
  await a.ok('rollback', { transactionId });
  await other;
  assert.deepEqual((await query(d.port, 'rb', 'SELECT x FROM t')).rows, [[5]]);
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
  // Nor beside another client's transaction (it ran, as a no-op, on the
  // connection such reads use), nor in a read-only transaction.
  const other = await a.ok('beginTransaction', {});
  await a.ok('query', { sql: 'INSERT INTO t VALUES (4)', transactionId: other.transactionId });
  const beside = await query(d.port, 'sp', 'SAVEPOINT s3', undefined, { raw: true });
  assert.equal(beside.json.error?.code, 'FORBIDDEN', JSON.stringify(beside.json));
  const b = await WsRpc.open(d.port, '/v1/db/sp/rpc');
  const ro = await b.ok('beginTransaction', { readOnly: true });
  const inRo = await b.call('query', { sql: 'SAVEPOINT s4', transactionId: ro.transactionId });
  assert.equal(inRo.error?.code, 'FORBIDDEN', JSON.stringify(inRo));
  await b.ok('rollback', { transactionId: ro.transactionId });
  await a.ok('rollback', { transactionId: other.transactionId });
  await b.close();
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
  // Another writer waits behind it, then proceeds once it expires.
  const t0 = Date.now();
  const other = await within(5000, query(d.port, 'tmo', 'INSERT INTO t VALUES (2)'), 'write behind an expiring transaction');
  assert.equal(other.rowsAffected, 1);
  assert.ok(Date.now() - t0 >= 200, 'it waited for the timeout');
  assert.deepEqual((await query(d.port, 'tmo', 'SELECT x FROM t')).rows, [[2]]);
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
  const other = query(d.port, 'disc', 'INSERT INTO t VALUES (2)');
  assert.equal(await settles(other, 200), false);
  a.ws.terminate(); // no close frame: the TCP connection just ends
  await within(5000, other, 'write after the disconnect');
  const seen = await query(d.port, 'disc', 'SELECT x FROM t');
  assert.deepEqual(seen.rows, [[2]]);
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

test('a stream runs beside an open transaction on the last commit; max_snapshots bounds snapshots', async () => {
  const s = await startDosqld({ conf: '[engine]\nmax_snapshots = 2\n' });
  try {
    await query(s.port, 'ss', 'CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)');
    const a = await WsRpc.open(s.port, '/v1/db/ss/rpc');
    const { transactionId } = await a.ok('beginTransaction', {});
    await a.ok('query', { sql: 'DELETE FROM t', transactionId });
    // Another client's stream reads the last commit, not the open transaction.
    const b = await WsRpc.open(s.port, '/v1/db/ss/rpc');
    const r = await within(2000, b.ok('queryStream', { sql: 'SELECT x FROM t ORDER BY x', chunkSize: 2 }), 'a stream beside');
    assert.equal(r.rowCount, 3);
    // The transaction's own stream sees its own writes.
    const own = await a.ok('queryStream', { sql: 'SELECT x FROM t', transactionId });
    assert.equal(own.rowCount, 0);
    await a.ok('rollback', { transactionId });
    // A read-only transaction's stream reads its snapshot.
    const ro = await b.ok('beginTransaction', { readOnly: true });
    await query(s.port, 'ss', 'INSERT INTO t VALUES (4)');
    const inRo = await b.ok('queryStream', { sql: 'SELECT x FROM t', transactionId: ro.transactionId });
    assert.equal(inRo.rowCount, 3);
    // Two snapshots at most: a second read-only transaction fills the
    // bound, and a third snapshot is refused.
    const ro2 = await b.ok('beginTransaction', { readOnly: true });
    const third = await b.call('beginTransaction', { readOnly: true });
    assert.equal(third.error.code, 'RESOURCE_EXHAUSTED', JSON.stringify(third));
    const st = await b.call('queryStream', { sql: 'SELECT 1' });
    assert.equal(st.error.code, 'RESOURCE_EXHAUSTED');
    assert.match(st.error.message, /max_snapshots/);
    await b.ok('commit', { transactionId: ro.transactionId });
    await b.ok('commit', { transactionId: ro2.transactionId });
    assert.equal((await b.ok('queryStream', { sql: 'SELECT x FROM t' })).rowCount, 4);
    await a.close();
    await b.close();
  } finally {
    await s.cleanup();
  }
});
