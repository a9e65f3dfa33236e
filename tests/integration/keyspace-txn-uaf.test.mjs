// A commit (or rollback) held behind a statement of its transaction on a
// WebSocket (max_pipeline 1) runs from inside that statement's reply; when
// the statement's BEGIN on its shard failed, no shard is begun and the end
// frees the transaction there and then: ktxn_stmt_done then reads k->ending
// from freed memory (router.c, ktxn_stmt_done). Run on the sanitizer build:
//   DSQ_BUILD=../build-address-undefined node --test integration/keyspace-txn-uaf.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir, sleep } from './lib/harness.mjs';
import { post, WsRpc } from './lib/rpc.mjs';

const ADMIN = 'admin-token-0123456789';
const SHARDS = ['u-0', 'u-1'];
const auth = { authorization: `Bearer ${ADMIN}` };
let root, d;

before(async () => {
  root = tempDir('dosqld-kstx-uaf-');
  const vsPath = path.join(root, 'vschema.json');
  writeFileSync(vsPath, JSON.stringify({ keyspaces: { bank: { shards: SHARDS, vindexes: { h: { type: 'hash' } }, tables: { accounts: { column: 'id', vindex: 'h' } } } } }));
  d = await startDosqld({
    conf: `[server]\nmax_pipeline = 1\n[sharding]\nvschema = ${vsPath}\n[engine]\nwrite_wait_timeout = 2s\n[auth]\ntoken = ${ADMIN} admin\n`,
    dataDir: path.join(root, 'data'),
  });
  const r = await post(d.port, '/v1/ks/bank/rpc', { id: 1, method: 'query', params: { sql: 'CREATE TABLE accounts(id INTEGER PRIMARY KEY, b INT)' } }, auth);
  assert.ok(r.json.result, r.text);
});

after(async () => {
  if (d) await d.cleanup(); // fails on the sanitizer's report
  if (root) rmSync(root, { recursive: true, force: true });
});

test('a commit pipelined behind a statement whose shard BEGIN fails', async () => {
  const c = await WsRpc.open(d.port, '/v1/ks/bank/rpc', { headers: auth });
  const { transactionId: tx } = await c.ok('beginTransaction', {});
  // Every shard's write lock held by a plain transaction past write_wait_timeout.
  const held = [];
  for (const s of SHARDS)
    held.push([s, (await post(d.port, `/v1/db/${s}/rpc`, { id: 1, method: 'beginTransaction', params: { mode: 'immediate' } }, auth)).json.result.transactionId]);
  const q = c.call('query', { sql: 'INSERT INTO accounts VALUES (1, 1)', transactionId: tx }, 20000);
  const cm = c.call('commit', { transactionId: tx }, 20000); // held until q's reply
  const qr = await q;
  const cr = await cm;
  for (const [s, t] of held) await post(d.port, `/v1/db/${s}/rpc`, { id: 1, method: 'rollback', params: { transactionId: t } }, auth);
  assert.equal(qr.error?.code, 'TIMEOUT', JSON.stringify(qr));
  assert.ok(cr.result, JSON.stringify(cr));
  await c.close();
  await sleep(200);
  assert.equal(d.exited, null, `dosqld died:\n${d.stderr.slice(-3000)}`);
});
