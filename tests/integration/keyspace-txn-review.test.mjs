// Review of interactive transactions on keyspaces: failures found.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir, sleep, within } from './lib/harness.mjs';
import { post, WsRpc } from './lib/rpc.mjs';

const ADMIN = 'admin-token-0123456789';
const SHARDS = ['rv-0', 'rv-1'];
let root, d;

const auth = { authorization: `Bearer ${ADMIN}` };
const rpc = async (method, params) => (await post(d.port, '/v1/ks/bank/rpc', { id: 1, method, params }, auth)).json;
const ok = async (method, params) => {
  const r = await rpc(method, params);
  assert.ok(r.result !== undefined, `${method}: ${JSON.stringify(r.error)}`);
  return r.result;
};
const dbRpc = async (db, method, params) => (await post(d.port, `/v1/db/${db}/rpc`, { id: 1, method, params }, auth)).json;
let A, shardA;

before(async () => {
  root = tempDir('dosqld-kstx-rv-');
  const vsPath = path.join(root, 'vschema.json');
  writeFileSync(vsPath, JSON.stringify({
    keyspaces: { bank: { shards: SHARDS, vindexes: { h: { type: 'hash' } }, tables: { accounts: { column: 'id', vindex: 'h' } } } },
  }));
  d = await startDosqld({
    conf: `[sharding]\nvschema = ${vsPath}\n[engine]\nwrite_wait_timeout = 5s\n[auth]\ntoken = ${ADMIN} admin\n`,
    dataDir: path.join(root, 'data'),
  });
  await ok('query', { sql: 'CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)' });
  await ok('query', { sql: 'INSERT INTO accounts VALUES (1, 100), (2, 100), (3, 100), (4, 100)' });
  A = 1;
  for (let s = 0; s < SHARDS.length; s++) {
    const r = await post(d.port, `/v1/db/${SHARDS[s]}/query`, { sql: `SELECT count(*) FROM accounts WHERE id = ${A}` }, auth);
    if (r.json.rows[0][0] > 0) shardA = SHARDS[s];
  }
  assert.ok(shardA);
});

after(async () => {
  if (d) await d.cleanup(); // fails on a sanitizer report
  if (root) rmSync(root, { recursive: true, force: true });
});

// Hold every shard's write lock with a plain transaction for `ms`, then roll them back.
async function holdShards(ms) {
  const txs = [];
  for (const s of SHARDS) {
    const b = await dbRpc(s, 'beginTransaction', { mode: 'immediate' });
    assert.ok(b.result, JSON.stringify(b));
    txs.push([s, b.result.transactionId]);
  }
  // (in an object: an async function's returned promise would be awaited)
  return { released: (async () => {
    await sleep(ms);
    for (const [s, tx] of txs) await dbRpc(s, 'rollback', { transactionId: tx });
  })() };
}

test('an idle timeout counts from the end of the last statement, not its start', async () => {
  const { transactionId: tx } = await ok('beginTransaction', { timeoutMs: 1000 });
  const { released } = await holdShards(2000); // the statement waits ~2 s for the shard
  const r = await rpc('query', { sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = ?', params: [A], transactionId: tx });
  assert.ok(r.result, JSON.stringify(r));
  await released;
  await sleep(400); // idle 0.4 s of the 1 s it may
  const r2 = await rpc('query', { sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = ?', params: [A], transactionId: tx });
  assert.ok(r2.result, `expired although idle only 0.4 s: ${JSON.stringify(r2.error)}`);
  await ok('rollback', { transactionId: tx });
});
