// Cross-shard transactions (two-phase commit) under kill -9: a bank of
// accounts sharded over four databases; transfers move money between
// accounts on different shards in one statement. dosqld is killed
// (SIGKILL, DOSQLD_TEST_2PC_CRASH) after every participant prepared, after
// the decision, and after one participant committed; after each restart,
// recovery finishes or undoes the transfer, the total never changes, and
// every shard takes writes again (nothing stays locked). Concurrent
// transfers in every order never wait for each other for long, and a
// transfer one shard refuses (a CHECK) changes nothing anywhere.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir, sleep, within } from '../integration/lib/harness.mjs';
import { post } from '../integration/lib/rpc.mjs';

const SHARDS = ['bank-0', 'bank-1', 'bank-2', 'bank-3'];
const ACCOUNTS = 16;
let root, dataDir, vsPath, d;

const conf = () => `[sharding]\nvschema = ${vsPath}\n`;
const ks = (port, sql, params) => post(port, '/v1/ks/bank/query', params ? { sql, params } : { sql });
const TRANSFER = 'UPDATE accounts SET balance = balance + CASE id WHEN ?1 THEN -?3 ELSE ?3 END WHERE id IN (?1, ?2)';

async function ok(p) {
  const r = await p;
  assert.equal(r.status, 200, r.text);
  return r.json;
}

async function balances(port) {
  return new Map((await ok(ks(port, 'SELECT id, balance FROM accounts'))).rows.map(([id, b]) => [id, b]));
}

async function shardOf(port, id) {
  for (let s = 0; s < SHARDS.length; s++)
    if ((await ok(post(port, `/v1/db/${SHARDS[s]}/query`, { sql: 'SELECT count(*) FROM accounts WHERE id = ?', params: [id] }))).rows[0][0] > 0)
      return s;
  return -1;
}

// Every shard takes a write: no record of a prepared transaction is left.
async function unlocked(port) {
  await within(15000, (async () => {
    for (;;) {
      let all = true;
      for (const s of SHARDS) {
        const r = await post(port, `/v1/db/${s}/query`, { sql: 'INSERT INTO probe VALUES (1)' });
        if (r.status !== 200) {
          all = false;
          assert.equal(r.json.error.code, 'SERIALIZATION_FAILURE', r.text);
        }
      }
      if (all) return;
      await sleep(100);
    }
  })(), 'every shard takes writes again');
}

before(async () => {
  root = tempDir('dosqld-2pc-');
  dataDir = path.join(root, 'data');
  vsPath = path.join(root, 'vschema.json');
  writeFileSync(vsPath, JSON.stringify({
    keyspaces: { bank: { shards: SHARDS, vindexes: { h: { type: 'hash' } }, tables: { accounts: { column: 'id', vindex: 'h' } } } },
  }));
  d = await startDosqld({ conf: conf(), dataDir });
  await ok(ks(d.port, 'CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))'));
  for (const s of SHARDS) await ok(post(d.port, `/v1/db/${s}/query`, { sql: 'CREATE TABLE probe(x)' }));
  // One INSERT for every account: itself a cross-shard transaction.
  const rows = Array.from({ length: ACCOUNTS }, (_, i) => [i + 1, 1000]);
  await ok(ks(d.port, `INSERT INTO accounts VALUES ${rows.map(() => '(?, ?)').join(', ')}`, rows.flat()));
});

after(async () => {
  if (d) await d.cleanup();
  if (root) rmSync(root, { recursive: true, force: true });
});

test('a transfer one shard refuses changes nothing anywhere', async () => {
  const b0 = await balances(d.port);
  let other = 2;
  while ((await shardOf(d.port, other)) === (await shardOf(d.port, 1))) other++;
  const r = await ks(d.port, TRANSFER, [1, other, 5000]); // account 1 would go below 0
  assert.equal(r.status, 409, r.text);
  assert.match(r.json.error.message, /CHECK constraint failed.*rolled back/);
  assert.deepEqual(await balances(d.port), b0);
  await unlocked(d.port);
});

test('concurrent transfers in every order: all commit, the total holds', async () => {
  let x = 7;
  const rand = (n) => ((x = (x * 1103515245 + 12345) % 2147483648) % n);
  const pairs = [];
  for (let i = 0; i < 60; i++) {
    const a = 1 + rand(ACCOUNTS);
    let b = 1 + rand(ACCOUNTS);
    if (b === a) b = (a % ACCOUNTS) + 1;
    pairs.push([a, b]);
  }
  const results = await Promise.all(pairs.map(([a, b]) => ks(d.port, TRANSFER, [a, b, 1])));
  for (const r of results) assert.equal(r.status, 200, r.text);
  const total = [...(await balances(d.port)).values()].reduce((s, v) => s + v, 0);
  assert.equal(total, ACCOUNTS * 1000);
});

for (const step of ['prepared', 'decided', 'committed_one']) {
  test(`kill -9 ${step === 'prepared' ? 'before' : 'after'} the decision (${step}): recovery ${step === 'prepared' ? 'undoes' : 'finishes'} the transfer`, async () => {
    const b0 = await balances(d.port);
    const a = 3;
    let b = 4;
    while ((await shardOf(d.port, b)) === (await shardOf(d.port, a))) b++;
    await d.stop();
    d = await startDosqld({ conf: conf(), dataDir, env: { DOSQLD_TEST_2PC_CRASH: step } });
    const r = await ks(d.port, TRANSFER, [a, b, 10]).catch((e) => ({ status: 0, text: String(e) }));
    assert.equal(r.status, 0, `the daemon answered: ${r.text}`);
    const e = await d.exit;
    assert.equal(e.signal, 'SIGKILL');
    assert.match(d.stderr, new RegExp(`event=test_crash step=${step}`));
    d = await startDosqld({ conf: conf(), dataDir });
    await unlocked(d.port);
    const want = new Map(b0);
    if (step !== 'prepared') {
      want.set(a, b0.get(a) - 10);
      want.set(b, b0.get(b) + 10);
    }
    assert.deepEqual(await balances(d.port), want);
    // The coordinator's row goes last (a moment after the shards' records).
    await within(10000, (async () => {
      while (!/dosqld_cross_shard_recovered_total [1-9]/.test(await (await fetch(`${d.url}/metrics`)).text())) await sleep(100);
    })(), 'recovery counted');
    // The bank works on: one more transfer through the same shards.
    await ok(ks(d.port, TRANSFER, [b, a, 10]));
  });
}

test('kill -9 after one participant of a batch committed: recovery redoes the others, statement by statement', async () => {
  const b0 = await balances(d.port);
  const a = 5;
  let b = 6;
  while ((await shardOf(d.port, b)) === (await shardOf(d.port, a))) b++;
  const statements = [
    { sql: 'UPDATE accounts SET balance = balance - ? WHERE id = ?', params: [3, a] },
    { sql: 'UPDATE accounts SET balance = balance + ? WHERE id = ?', params: [2, b] },
    { sql: 'UPDATE accounts SET balance = balance + ? WHERE id = ?', params: [1, b] },
  ];
  await d.stop();
  d = await startDosqld({ conf: conf(), dataDir, env: { DOSQLD_TEST_2PC_CRASH: 'committed_one' } });
  const r = await post(d.port, '/v1/ks/bank/rpc', { id: 1, method: 'batch', params: { statements } }).catch((e) => ({ status: 0, text: String(e) }));
  assert.equal(r.status, 0, `the daemon answered: ${r.text}`);
  await d.exit;
  d = await startDosqld({ conf: conf(), dataDir });
  await unlocked(d.port);
  const want = new Map(b0);
  want.set(a, b0.get(a) - 3);
  want.set(b, b0.get(b) + 3);
  assert.deepEqual(await balances(d.port), want);
});

// An interactive transaction (beginTransaction on the keyspace) whose
// statements each went to one shard: its commit is the same two-phase
// commit, so the same kill -9 points hold — and a kill while it is still
// open (before commit) leaves nothing and no lock.
for (const step of ['open', 'prepared', 'decided', 'committed_one']) {
  test(`an interactive transfer, kill -9 ${step === 'open' ? 'before its commit' : `at ${step}`}: recovery ${step === 'open' || step === 'prepared' ? 'undoes' : 'finishes'} it`, async () => {
    const b0 = await balances(d.port);
    const a = 7;
    let b = 8;
    while ((await shardOf(d.port, b)) === (await shardOf(d.port, a))) b++;
    await d.stop();
    d = await startDosqld({ conf: conf(), dataDir, env: step === 'open' ? {} : { DOSQLD_TEST_2PC_CRASH: step } });
    const call = async (method, params) => {
      const r = await post(d.port, '/v1/ks/bank/rpc', { id: 1, method, params });
      assert.ok(r.json?.result, `${method}: ${r.text}`);
      return r.json.result;
    };
    const { transactionId } = await call('beginTransaction', {});
    await call('query', { sql: 'UPDATE accounts SET balance = balance - 10 WHERE id = ?', params: [a], transactionId });
    await call('query', { sql: 'UPDATE accounts SET balance = balance + 10 WHERE id = ?', params: [b], transactionId });
    if (step === 'open') {
      d.proc.kill('SIGKILL');
    } else {
      const r = await post(d.port, '/v1/ks/bank/rpc', { id: 2, method: 'commit', params: { transactionId } })
        .catch((e) => ({ status: 0, text: String(e) }));
      assert.equal(r.status, 0, `the daemon answered: ${r.text}`);
    }
    const e = await d.exit;
    assert.equal(e.signal, 'SIGKILL');
    d = await startDosqld({ conf: conf(), dataDir });
    await unlocked(d.port);
    const want = new Map(b0);
    if (step === 'decided' || step === 'committed_one') {
      want.set(a, b0.get(a) - 10);
      want.set(b, b0.get(b) + 10);
    }
    assert.deepEqual(await balances(d.port), want);
    await ok(ks(d.port, TRANSFER, [b, a, 1]));
  });
}
