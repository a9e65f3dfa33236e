// Interactive transactions on a keyspace: beginTransaction, statements
// that reach several shards, commit (one shard: its commit; several: the
// two-phase commit) and rollback; what the transaction wrote is seen
// inside it and nowhere else until it commits; the failures that leave it
// only able to roll back; a closed connection and an idle timeout roll it
// back; reads over several shards inside it; and the refusals (DDL,
// lookups, read-only, read scope, unknown ids, a timeout above the cap).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir, sleep, within } from './lib/harness.mjs';
import { post, WsRpc } from './lib/rpc.mjs';

const ADMIN = 'admin-token-0123456789';
const READ = 'read-token-0123456789ab';
const SHARDS = ['tx-0', 'tx-1', 'tx-2', 'tx-3'];
let root, d;

const auth = (t) => ({ authorization: `Bearer ${t}` });
const rpc = async (method, params, token = ADMIN) => (await post(d.port, '/v1/ks/bank/rpc', { id: 1, method, params }, auth(token))).json;
const ok = async (method, params) => {
  const r = await rpc(method, params);
  assert.ok(r.result !== undefined, `${method}: ${JSON.stringify(r.error)}`);
  return r.result;
};
const refused = async (method, params, code, words, token) => {
  const r = await rpc(method, params, token);
  assert.ok(r.error, `${method} was not refused: ${JSON.stringify(r.result)}`);
  assert.equal(r.error.code, code, r.error.message);
  if (words) assert.match(r.error.message, words);
  return r.error;
};
const rows = async (sql, params) => (await ok('query', params ? { sql, params } : { sql })).rows;
const shardRows = async (s, sql) => {
  const r = await post(d.port, `/v1/db/${s}/query`, { sql }, auth(ADMIN));
  assert.equal(r.status, 200, r.text);
  return r.json.rows;
};
const balance = async (id) => (await rows('SELECT balance FROM accounts WHERE id = ?', [id]))[0]?.[0];
const total = async () => (await rows('SELECT sum(balance) FROM accounts'))[0][0];

// Accounts on two different shards.
let A, B;
async function shardOf(id) {
  for (let s = 0; s < SHARDS.length; s++)
    if ((await shardRows(SHARDS[s], `SELECT count(*) FROM accounts WHERE id = ${id}`))[0][0] > 0) return s;
  return -1;
}

// Every shard takes a plain write again: no transaction holds one, and no
// record of a prepared one is left.
async function unlocked() {
  await within(15000, (async () => {
    for (;;) {
      let all = true;
      for (const s of SHARDS) {
        const r = await post(d.port, `/v1/db/${s}/query`, { sql: 'INSERT INTO probe VALUES (1)' }, auth(ADMIN));
        if (r.status !== 200) all = false;
      }
      if (all) return;
      await sleep(100);
    }
  })(), 'every shard takes writes');
}

before(async () => {
  root = tempDir('dosqld-kstx-');
  const vsPath = path.join(root, 'vschema.json');
  writeFileSync(vsPath, JSON.stringify({
    keyspaces: {
      bank: {
        shards: SHARDS,
        vindexes: { h: { type: 'hash' }, by_email: { type: 'lookup_unique', table: 'owner_email', from: 'email', to: 'owner_id' } },
        tables: {
          accounts: { column: 'id', vindex: 'h' },
          owners: { column: 'id', vindex: 'h', lookups: [{ column: 'email', vindex: 'by_email' }] },
          owner_email: { column: 'email', vindex: 'h' },
          rates: { type: 'reference' },
        },
      },
    },
  }));
  d = await startDosqld({
    conf: `[sharding]\nvschema = ${vsPath}\n[engine]\nwrite_wait_timeout = 2s\n[auth]\ntoken = ${ADMIN} admin\ntoken = ${READ} read\n`,
    dataDir: path.join(root, 'data'),
  });
  await ok('query', { sql: 'CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))' });
  await ok('query', { sql: 'CREATE TABLE owners(id INTEGER PRIMARY KEY, email TEXT)' });
  await ok('query', { sql: 'CREATE TABLE owner_email(email TEXT PRIMARY KEY, owner_id INTEGER)' });
  await ok('query', { sql: 'CREATE TABLE rates(k TEXT PRIMARY KEY, v REAL)' });
  for (const s of SHARDS) await shardRows(s, 'CREATE TABLE probe(x)');
  const accts = Array.from({ length: 16 }, (_, i) => [i + 1, 1000]);
  await ok('query', { sql: `INSERT INTO accounts VALUES ${accts.map(() => '(?, ?)').join(', ')}`, params: accts.flat() });
  await ok('query', { sql: "INSERT INTO owners VALUES (1, 'ann@example.com')" });
  A = 1;
  B = 2;
  while ((await shardOf(B)) === (await shardOf(A))) B++;
});

after(async () => {
  if (d) await d.cleanup();
  if (root) rmSync(root, { recursive: true, force: true });
});

test('a transfer across two shards: seen inside, not outside, until the commit', async () => {
  const t0 = await total();
  const { transactionId: tx, lsn } = await ok('beginTransaction', {});
  assert.match(tx, /^[0-9a-f]{32}$/);
  assert.equal(lsn, 0);
  await ok('query', { sql: 'UPDATE accounts SET balance = balance - 100 WHERE id = ?', params: [A], transactionId: tx });
  // A read over several shards inside sees the transaction's writes on each.
  const mid = await ok('query', { sql: 'SELECT sum(balance), count(*) FROM accounts WHERE id IN (?, ?)', params: [A, B], transactionId: tx });
  assert.deepEqual(mid.rows, [[1900, 2]]);
  assert.deepEqual(await rows('SELECT sum(balance) FROM accounts WHERE id IN (?, ?)', [A, B]), [[2000]]);
  await ok('query', { sql: 'UPDATE accounts SET balance = balance + 100 WHERE id = ?', params: [B], transactionId: tx });
  const all = await ok('query', { sql: 'SELECT sum(balance) FROM accounts', transactionId: tx });
  assert.deepEqual(all.rows, [[t0]]);
  const top = await ok('query', { sql: 'SELECT id, balance FROM accounts ORDER BY balance DESC, id LIMIT 1', transactionId: tx });
  assert.deepEqual(top.rows, [[B, 1100]]);
  // Inside: its own writes.
  const inA = await ok('query', { sql: 'SELECT balance FROM accounts WHERE id = ?', params: [A], transactionId: tx });
  assert.deepEqual(inA.rows, [[900]]);
  // Outside: the last commit (reads do not wait for the transaction).
  assert.equal(await balance(A), 1000);
  assert.equal(await balance(B), 1000);
  assert.deepEqual(await ok('commit', { transactionId: tx }), { lsn: 0 });
  assert.equal(await balance(A), 900);
  assert.equal(await balance(B), 1100);
  assert.equal(await total(), t0);
  // Ended: the id is gone.
  await refused('commit', { transactionId: tx }, 'TRANSACTION_NOT_FOUND', /no transaction/);
  await unlocked();
  // Back again.
  const t2 = (await ok('beginTransaction', {})).transactionId;
  await ok('batch', {
    transactionId: t2,
    statements: [
      { sql: 'UPDATE accounts SET balance = balance + 100 WHERE id = ?', params: [A] },
      { sql: 'UPDATE accounts SET balance = balance - 100 WHERE id = ?', params: [B] },
    ],
  });
  await ok('commit', { transactionId: t2 });
  assert.equal(await balance(A), 1000);
  assert.equal(await balance(B), 1000);
});

test('rollback leaves nothing on any shard and unlocks them', async () => {
  const { transactionId: tx } = await ok('beginTransaction', { mode: 'immediate' });
  await ok('query', { sql: 'INSERT INTO accounts VALUES (?, 5), (?, 5)', params: [100, 101], transactionId: tx });
  await ok('query', { sql: "INSERT INTO rates VALUES ('eur', 1.1)", transactionId: tx }); // every shard
  assert.deepEqual(await rows('SELECT count(*) FROM accounts WHERE id IN (100, 101)'), [[0]]);
  await ok('rollback', { transactionId: tx });
  assert.deepEqual(await rows('SELECT count(*) FROM accounts WHERE id IN (100, 101)'), [[0]]);
  assert.deepEqual(await rows('SELECT count(*) FROM rates'), [[0]]);
  for (const s of SHARDS) assert.deepEqual(await shardRows(s, 'SELECT count(*) FROM rates'), [[0]]);
  await unlocked();
});

test('a transaction on one shard commits there alone; a failed statement undoes only itself', async () => {
  const { transactionId: tx } = await ok('beginTransaction', {});
  await ok('query', { sql: 'UPDATE accounts SET balance = balance - 1 WHERE id = ?', params: [A], transactionId: tx });
  // The CHECK refuses this one; the transaction goes on.
  const e = await refused('query', { sql: 'UPDATE accounts SET balance = balance - 5000 WHERE id = ?', params: [A], transactionId: tx }, 'CONSTRAINT_VIOLATION');
  assert.match(e.message, /CHECK constraint failed/);
  await ok('query', { sql: 'UPDATE accounts SET balance = balance - 1 WHERE id = ?', params: [A], transactionId: tx });
  await ok('commit', { transactionId: tx });
  assert.equal(await balance(A), 998);
  await ok('query', { sql: 'UPDATE accounts SET balance = 1000 WHERE id = ?', params: [A] });
  await unlocked();
});

test('a statement that fails on one of its shards after others ran: the transaction only rolls back', async () => {
  const t0 = await total();
  const { transactionId: tx } = await ok('beginTransaction', {});
  await ok('query', { sql: 'UPDATE accounts SET balance = balance + 7 WHERE id = ?', params: [A], transactionId: tx });
  // Every account on every shard: the last shard (its pieces run in
  // shard order), where one account is at 0, refuses the debit after the
  // shards before it took theirs.
  let victim = 1;
  while ((await shardOf(victim)) !== SHARDS.length - 1) victim++;
  await ok('query', { sql: 'UPDATE accounts SET balance = 0 WHERE id = ?', params: [victim] });
  const e = await refused('query', { sql: 'UPDATE accounts SET balance = balance - 1', transactionId: tx }, 'CONSTRAINT_VIOLATION');
  assert.match(e.message, /CHECK constraint failed/);
  await refused('query', { sql: 'SELECT balance FROM accounts WHERE id = ?', params: [A], transactionId: tx }, 'INVALID_REQUEST', /can only be rolled back/);
  await refused('commit', { transactionId: tx }, 'INVALID_REQUEST', /rolled back/);
  assert.equal(await balance(A), 1000);
  await ok('query', { sql: 'UPDATE accounts SET balance = 1000 WHERE id = ?', params: [victim] });
  assert.equal(await total(), t0);
  await unlocked();
  // An atomic batch whose second statement fails: the same.
  const t2 = (await ok('beginTransaction', {})).transactionId;
  const b = await refused('batch', {
    transactionId: t2,
    statements: [
      { sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = ?', params: [A] },
      { sql: 'UPDATE accounts SET balance = balance - 5000 WHERE id = ?', params: [B] },
    ],
  }, 'CONSTRAINT_VIOLATION');
  assert.match(b.message, /^statements\[1\]: .*can only be rolled back now/);
  await refused('commit', { transactionId: t2 }, 'INVALID_REQUEST', /rolled back/);
  // Not atomic: the failed statement's slot holds its error; the rest stay.
  const t3 = (await ok('beginTransaction', {})).transactionId;
  const r = await ok('batch', {
    transactionId: t3,
    atomic: false,
    statements: [
      { sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = ?', params: [A] },
      { sql: 'UPDATE accounts SET balance = balance - 5000 WHERE id = ?', params: [B] },
      { sql: 'UPDATE accounts SET balance = balance - 1 WHERE id = ?', params: [B] },
    ],
  });
  assert.equal(r.results[1].error.code, 'CONSTRAINT_VIOLATION');
  await ok('commit', { transactionId: t3 });
  assert.equal(await balance(A), 1001);
  assert.equal(await balance(B), 999);
  assert.equal(await total(), t0);
  await ok('query', { sql: 'UPDATE accounts SET balance = 1000 WHERE id IN (?, ?)', params: [A, B] });
  await unlocked();
});

test('a closed WebSocket and an idle timeout roll the transaction back', async () => {
  const c = await WsRpc.open(d.port, '/v1/ks/bank/rpc', { headers: auth(ADMIN) });
  const { transactionId: tx } = await c.ok('beginTransaction', {});
  await c.ok('query', { sql: 'UPDATE accounts SET balance = 0 WHERE id = ?', params: [A], transactionId: tx });
  await c.ok('query', { sql: 'UPDATE accounts SET balance = 0 WHERE id = ?', params: [B], transactionId: tx });
  await c.close();
  await unlocked();
  assert.equal(await balance(A), 1000);
  assert.equal(await balance(B), 1000);
  await refused('commit', { transactionId: tx }, 'TRANSACTION_NOT_FOUND');
  // Idle past its timeout (over HTTP: it belongs to no connection).
  const t2 = (await ok('beginTransaction', { timeoutMs: 300 })).transactionId;
  await ok('query', { sql: 'UPDATE accounts SET balance = 0 WHERE id = ?', params: [A], transactionId: t2 });
  await ok('query', { sql: 'UPDATE accounts SET balance = 0 WHERE id = ?', params: [B], transactionId: t2 });
  // (each statement in it restarts its clock: look once a second)
  await within(10000, (async () => {
    do await sleep(1000);
    while ((await rpc('query', { sql: 'SELECT 1 FROM accounts WHERE id = 1', transactionId: t2 })).error?.code !== 'TRANSACTION_NOT_FOUND');
  })(), 'the transaction expired');
  await unlocked();
  assert.equal(await balance(A), 1000);
  assert.equal(await balance(B), 1000);
  assert.match(d.stderr, /event=keyspace_transaction_expired keyspace=bank/);
});

test('what a transaction on a keyspace refuses', async () => {
  const { transactionId: tx } = await ok('beginTransaction', {});
  await refused('query', { sql: 'CREATE TABLE z(x)', transactionId: tx }, 'INVALID_REQUEST', /reads or writes rows/);
  await refused('query', { sql: "SELECT id FROM owners WHERE email = 'ann@example.com'", transactionId: tx }, 'INVALID_REQUEST', /lookup vindex/);
  await refused('getSchema', { transactionId: tx }, 'INVALID_REQUEST', /transactionId.*not supported by this method/);
  await refused('query', { sql: 'SELECT 1', transactionId: 'f'.repeat(32) }, 'TRANSACTION_NOT_FOUND');
  // Still usable after refusals.
  await ok('query', { sql: 'UPDATE accounts SET balance = balance WHERE id = ?', params: [A], transactionId: tx });
  await ok('rollback', { transactionId: tx });
  await refused('beginTransaction', { readOnly: true }, 'INVALID_REQUEST', /read-only transactions are not supported on a keyspace/);
  await refused('beginTransaction', {}, 'FORBIDDEN', /write scope/, READ);
  await refused('beginTransaction', { timeoutMs: 3600000 }, 'INVALID_REQUEST', /above max_transaction_timeout/);
  await refused('beginTransaction', { mode: 'eager' }, 'INVALID_REQUEST', /"mode"/);
  await refused('commit', {}, 'INVALID_REQUEST', /"transactionId" is required/);
  await unlocked();
});

test('two transactions wanting each other\'s shard: one waits, then times out; the other commits', async () => {
  const t1 = (await ok('beginTransaction', {})).transactionId;
  const t2 = (await ok('beginTransaction', {})).transactionId;
  await ok('query', { sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = ?', params: [A], transactionId: t1 });
  await ok('query', { sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = ?', params: [B], transactionId: t2 });
  // t1 wants B's shard (t2 holds it): it waits at most write_wait_timeout.
  const r = await rpc('query', { sql: 'UPDATE accounts SET balance = balance - 1 WHERE id = ?', params: [B], transactionId: t1 });
  assert.equal(r.error?.code, 'TIMEOUT', JSON.stringify(r));
  await ok('rollback', { transactionId: t1 });
  await ok('query', { sql: 'UPDATE accounts SET balance = balance - 1 WHERE id = ?', params: [A], transactionId: t2 });
  await ok('commit', { transactionId: t2 });
  assert.equal(await balance(A), 999);
  assert.equal(await balance(B), 1001);
  await ok('query', { sql: 'UPDATE accounts SET balance = 1000 WHERE id IN (?, ?)', params: [A, B] });
  await unlocked();
});
