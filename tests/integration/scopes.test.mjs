// Integration: what a read-scope token may do (nothing that commits or
// holds a lock), transactions of Cap'n Web HTTP batches ending with their
// batch, and max_transaction_timeout.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDosqld, within } from './lib/harness.mjs';
import { post } from './lib/rpc.mjs';

const READ = 'read-token-scopes-0123456';
const WRITE = 'write-token-scopes-012345';
const bearer = (t) => ({ Authorization: `Bearer ${t}` });

let d;
before(async () => {
  d = await startDosqld({
    conf: `[auth]
token = ${READ} read
token = ${WRITE} write
[engine]
transaction_timeout = 10s
max_transaction_timeout = 20s
`,
  });
});
after(async () => { await d?.cleanup(); });

async function rpc(db, method, params, token) {
  const r = await post(d.port, `/v1/db/${db}/rpc`, { id: 1, method, params }, bearer(token));
  return r.json;
}

async function sql(db, text, token = WRITE) {
  return post(d.port, `/v1/db/${db}/query`, { sql: text }, bearer(token));
}

async function lsn(db) {
  const r = await rpc(db, 'ping', {}, READ);
  assert.ok(r.result, JSON.stringify(r));
  return r.result.lsn;
}

// A Cap'n Web HTTP batch: newline-separated messages; the answer's lines.
async function capnweb(db, lines, token) {
  const r = await within(15000, fetch(`http://127.0.0.1:${d.port}/v1/db/${db}/capnweb`, {
    method: 'POST', headers: bearer(token), body: lines.map((l) => JSON.stringify(l)).join('\n'),
  }), 'capnweb batch');
  assert.equal(r.status, 200);
  const text = await r.text();
  return text === '' ? [] : text.split('\n').map((l) => JSON.parse(l));
}

test('a read token cannot begin a transaction (JSON-RPC over HTTP)', async () => {
  await sql('rtx', 'CREATE TABLE t(x)');
  for (const params of [{}, { timeoutMs: 86400000 }, { mode: 'deferred' }, { mode: 'immediate' }]) {
    const r = await rpc('rtx', 'beginTransaction', params, READ);
    assert.equal(r.error?.code, 'FORBIDDEN', JSON.stringify(r));
  }
  // A writer is not held up by anything the read token did.
  const w = await within(5000, sql('rtx', 'INSERT INTO t VALUES (1)'), 'the writer');
  assert.equal(w.status, 200, w.text);
});

test('a read token cannot begin a transaction (Cap\'n Web HTTP batch)', async () => {
  await sql('rtxcw', 'CREATE TABLE t(x)');
  const lines = await capnweb('rtxcw', [
    ['push', ['pipeline', 0, ['beginTransaction'], [{ timeoutMs: 86400000 }]]],
    ['pull', 1],
  ], READ);
  const m = lines.find((l) => l[0] === 'reject');
  assert.ok(m, JSON.stringify(lines));
  assert.equal(m[2][4].code, 'FORBIDDEN');
  const w = await within(5000, sql('rtxcw', 'INSERT INTO t VALUES (1)'), 'the writer');
  assert.equal(w.status, 200, w.text);
});

test('a read token commits nothing: REINDEX, ANALYZE, PRAGMA optimize, VACUUM, writes', async () => {
  // (PRAGMA optimize analyzes the tables whose indexes the planner used.)
  await sql('rcommit', 'CREATE TABLE t(x); CREATE INDEX ti ON t(x); ' +
    'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO t SELECT i FROM n');
  await sql('rcommit', 'SELECT count(*) FROM t WHERE x = 5', READ);
  const before = await lsn('rcommit');
  for (const text of [
    'REINDEX', 'REINDEX t', 'REINDEX ti', 'ANALYZE', 'ANALYZE t', 'PRAGMA optimize',
    'PRAGMA optimize=0x10002', 'PRAGMA main.optimize(0x10002)', 'VACUUM', 'INSERT INTO t VALUES (4)',
    'PRAGMA user_version = 7', 'SELECT 1; REINDEX', 'CREATE TABLE u(y)',
  ]) {
    const r = await sql('rcommit', text, READ);
    assert.equal(r.status, 403, `${text}: ${r.text}`);
    assert.equal(r.json.error.code, 'FORBIDDEN', text);
  }
  assert.equal(await lsn('rcommit'), before, 'nothing committed');
  const stat = await sql('rcommit', "SELECT count(*) AS n FROM sqlite_schema WHERE name = 'sqlite_stat1'", READ);
  assert.deepEqual(stat.json.rows, [[0]]);
  // What only reads still works with the read token.
  for (const text of ['SELECT count(*) FROM t', 'PRAGMA integrity_check', 'PRAGMA table_info(t)', 'PRAGMA user_version']) {
    const r = await sql('rcommit', text, READ);
    assert.equal(r.status, 200, `${text}: ${r.text}`);
  }
  // And the write token may do them.
  for (const text of ['REINDEX', 'ANALYZE', 'PRAGMA optimize']) {
    const r = await sql('rcommit', text, WRITE);
    assert.equal(r.status, 200, `${text}: ${r.text}`);
  }
});

test('a read token commits nothing in a batch either', async () => {
  await sql('rbatch', 'CREATE TABLE t(x); CREATE INDEX ti ON t(x); ' +
    'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO t SELECT i FROM n');
  await sql('rbatch', 'SELECT count(*) FROM t WHERE x = 5', READ);
  const before = await lsn('rbatch');
  for (const atomic of [true, false]) {
    const r = await rpc('rbatch', 'batch', { atomic, statements: [{ sql: 'SELECT 1' }, { sql: 'PRAGMA optimize=0x10002' }, { sql: 'REINDEX' }] }, READ);
    if (atomic) {
      assert.equal(r.error?.code, 'FORBIDDEN', JSON.stringify(r));
    } else {
      assert.equal(r.result.results[1].error?.code, 'FORBIDDEN', JSON.stringify(r));
      assert.equal(r.result.results[2].error?.code, 'FORBIDDEN', JSON.stringify(r));
    }
  }
  assert.equal(await lsn('rbatch'), before);
});

test('a transaction a Cap\'n Web HTTP batch left open ends with the batch', async () => {
  await sql('cwtx', 'CREATE TABLE t(x)');
  const lines = await capnweb('cwtx', [
    ['push', ['pipeline', 0, ['beginTransaction'], [{ mode: 'immediate', timeoutMs: 20000 }]]],
    ['pull', 1],
  ], WRITE);
  assert.equal(lines[0][0], 'resolve', JSON.stringify(lines));
  // The batch is over: its transaction does not hold the writer.
  const w = await within(5000, sql('cwtx', 'INSERT INTO t VALUES (1)'), 'the writer after the batch');
  assert.equal(w.status, 200, w.text);
  // Also when the batch did not even pull its result.
  await capnweb('cwtx', [['push', ['pipeline', 0, ['beginTransaction'], [{ mode: 'immediate', timeoutMs: 20000 }]]]], WRITE);
  const w2 = await within(5000, sql('cwtx', 'INSERT INTO t VALUES (2)'), 'the writer after an unpulled begin');
  assert.equal(w2.status, 200, w2.text);
});

test('timeoutMs above max_transaction_timeout is refused', async () => {
  await sql('cap', 'CREATE TABLE t(x)');
  let r = await rpc('cap', 'beginTransaction', { timeoutMs: 20001 }, WRITE);
  assert.equal(r.error?.code, 'INVALID_REQUEST', JSON.stringify(r));
  assert.match(r.error.message, /max_transaction_timeout/);
  r = await rpc('cap', 'beginTransaction', { timeoutMs: 86400000 }, WRITE);
  assert.equal(r.error?.code, 'INVALID_REQUEST', JSON.stringify(r));
  // Nothing was left open: a writer goes through.
  const w = await within(5000, sql('cap', 'INSERT INTO t VALUES (1)'), 'the writer');
  assert.equal(w.status, 200, w.text);
  // At the cap it is fine.
  r = await rpc('cap', 'beginTransaction', { timeoutMs: 20000 }, WRITE);
  assert.ok(r.result?.transactionId, JSON.stringify(r));
  r = await rpc('cap', 'rollback', { transactionId: r.result.transactionId }, WRITE);
  assert.ok(r.result, JSON.stringify(r));
});
