// Keyspaces on a cluster placed through etcd: the shards (and the
// keyspace's coordinator) are placed by the first node a request for them
// reaches; the keyspace works through every node, its shards' calls going
// to wherever etcd placed each one.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { clusterInfo, post, until } from './lib/cluster.mjs';
import { startEtcdCluster } from './lib/etcdcluster.mjs';

const SHARDS = ['e-0', 'e-1', 'e-2', 'e-3'];
let c, dir;
const ks = (d, sql, params) => post(d, '/v1/ks/lake/query', params ? { sql, params } : { sql });
async function ok(p) {
  const r = await p;
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'dosqld-ks-etcd-'));
  const vs = path.join(dir, 'vschema.json');
  writeFileSync(vs, JSON.stringify({
    keyspaces: { lake: { shards: SHARDS, vindexes: { h: { type: 'hash' } }, tables: { ev: { column: 'k', vindex: 'h' } } } },
  }));
  c = await startEtcdCluster(3, { conf: `replicas = 1\ncommit_timeout = 3s\n[sharding]\nvschema = ${vs}\n` });
});
after(async () => {
  await c?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('a keyspace whose shards etcd placed: DDL, a write across them, reads through every node', async () => {
  await ok(ks(c.nodes[1], 'CREATE TABLE ev(k INTEGER PRIMARY KEY, v TEXT)'));
  const rows = Array.from({ length: 40 }, (_, i) => [i + 1, `v${i + 1}`]);
  await ok(ks(c.nodes[2], `INSERT INTO ev VALUES ${rows.map(() => '(?, ?)').join(', ')}`, rows.flat()));
  const placed = new Set();
  for (const s of [...SHARDS, '_dsq_2pc.lake']) {
    const a = await c.assignment(s);
    assert.ok(a, `${s} has no assignment in etcd`);
    placed.add(a.primary);
  }
  for (const d of c.nodes) {
    assert.deepEqual((await ok(ks(d, 'SELECT count(*), min(k), max(k) FROM ev'))).rows, [[40, 1, 40]]);
    assert.deepEqual((await ok(ks(d, 'SELECT v FROM ev WHERE k = 17'))).rows, [['v17']]);
  }
  await ok(ks(c.nodes[0], "UPDATE ev SET v = 'x' WHERE k IN (1, 2, 3, 4, 5, 6)"));
  assert.deepEqual((await ok(ks(c.nodes[1], "SELECT count(*) FROM ev WHERE v = 'x'"))).rows, [[6]]);
  assert.ok(placed.size >= 1);
});

test('the home dies with a transaction open across shards: the coordinator fails over, the new home clears what it left, the keyspace goes on', async () => {
  const SH = ['h-0', 'h-1', 'h-2', 'h-3'];
  const vs = path.join(dir, 'vschema-home.json');
  writeFileSync(vs, JSON.stringify({
    keyspaces: { bank: { shards: SH, vindexes: { h: { type: 'hash' } }, tables: { accounts: { column: 'id', vindex: 'h' } } } },
  }));
  const e = await startEtcdCluster(3, { conf: `replicas = 3\ncommit_timeout = 2s\npromote_timeout = 5s\n[sharding]\nvschema = ${vs}\n` });
  try {
    const bank = (d, sql, params) => post(d, '/v1/ks/bank/query', params ? { sql, params } : { sql });
    // Every node alive in every node's view of etcd first: a database
    // placed before gets fewer than three copies (and one node's death
    // then takes its quorum).
    for (const d of e.nodes)
      await until(async () => {
        const ns = (await clusterInfo(d)).body.nodes;
        return ns.length === 3 && ns.every((n) => n.etcd?.alive);
      }, 20000, 'every node alive in etcd');
    await ok(bank(e.nodes[0], 'CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)'));
    for (const s of [...SH, '_dsq_2pc.bank'])
      assert.equal((await e.assignment(s)).copies.length, 3, `${s}: three copies`);
    await ok(bank(e.nodes[0], 'CREATE TABLE probe(x)'));
    const rows = Array.from({ length: 16 }, (_, i) => [i + 1, 100]);
    await ok(bank(e.nodes[1], `INSERT INTO accounts VALUES ${rows.map(() => '(?, ?)').join(', ')}`, rows.flat()));
    const a1 = await e.assignment('_dsq_2pc.bank');
    const home = e.byId(a1.primary);
    const rpc = (d, method, params) => post(d, '/v1/ks/bank/rpc', { id: 1, method, params });
    // A transaction open on every shard (a write to each), never committed.
    const { body: { result: { transactionId } } } = await rpc(home, 'beginTransaction', {});
    const w = await rpc(home, 'query', { sql: 'UPDATE accounts SET balance = 0', transactionId });
    assert.ok(w.body.result, JSON.stringify(w.body));
    home.proc.kill('SIGKILL');
    await home.exit;
    await until(async () => (await e.assignment('_dsq_2pc.bank'))?.epoch >= 2, 20000, 'the coordinator on another node');
    const survivors = e.nodes.filter((d) => d !== home);
    // Every shard takes a plain write again (through a survivor, passed on
    // to its primary): no record of the dead home's transaction is left.
    let last = '';
    try {
      await until(async () => {
        for (const s of SH) {
          const r = await post(survivors[0], `/v1/db/${s}/query`, { sql: 'INSERT INTO probe VALUES (1)' }, 5000);
          if (r.status !== 200) {
            last = `${s}: ${r.status} ${JSON.stringify(r.body)}`;
            return false;
          }
        }
        return true;
      }, 90000, 'every shard takes writes');
    } catch (err) { /* what the nodes said, for the post-mortem */
      console.log(`last refusal: ${last}`);
      for (const [s, a] of await Promise.all(SH.concat('_dsq_2pc.bank').map(async (x) => [x, await e.assignment(x)])))
        console.log(`${s}: ${JSON.stringify(a)}`);
      for (const d of survivors)
        console.log(d.stderr.split('\n').filter((l) => /failover|promot|recover|prepared|error|warn/.test(l)).slice(-25).join('\n'));
      throw err;
    }
    for (const d of survivors) {
      assert.deepEqual((await ok(bank(d, 'SELECT count(*), sum(balance) FROM accounts'))).rows, [[16, 1600]]);
      await ok(bank(d, 'UPDATE accounts SET balance = balance + CASE id WHEN 1 THEN -1 ELSE 1 END WHERE id IN (1, 2)'));
    }
    assert.deepEqual((await ok(bank(survivors[1], 'SELECT sum(balance) FROM accounts'))).rows, [[1600]]);
  } finally {
    await e.cleanup();
  }
});
