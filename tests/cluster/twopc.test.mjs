// Cross-shard transactions across nodes under kill -9: a bank keyspace
// whose four shards have their primaries on three nodes (one copy each).
// The keyspace's home — the node of its coordinator's primary — is killed
// at each step of a transfer between accounts on two other nodes' shards
// (DOSQLD_TEST_2PC_CRASH: after every participant prepared, after the
// decision, after one participant committed). The participants' nodes
// see the link go down and roll back what the dead home had open there
// (their records stay); once the home is back, its recovery undoes or
// finishes the transfer, the total holds and every shard takes writes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { clusterInfo, post, startAgain, until } from './lib/cluster.mjs';
import { startKeyspaceCluster } from './lib/keyspace.mjs';

const SHARDS = ['bk-0', 'bk-1', 'bk-2', 'bk-3', 'bk-4', 'bk-5'];
const ACCOUNTS = 24;
const TRANSFER = 'UPDATE accounts SET balance = balance + CASE id WHEN ?1 THEN -?3 ELSE ?3 END WHERE id IN (?1, ?2)';
let k, c;

const idx = (id) => Number(id.slice(1)) - 1;
const primaryOf = (db) => k.primaryOf(db);
const ks = (d, sql, params) => k.ks(d, sql, params);
const ok = (p) => k.ok(p);
const balances = async (d) => new Map((await ok(ks(d, 'SELECT id, balance FROM accounts'))).rows.map(([i, b]) => [i, b]));

async function shardOf(d, id) {
  for (const s of SHARDS) {
    const owner = c.nodes[idx(await primaryOf(s))];
    const r = await ok(post(owner, `/v1/db/${s}/query`, { sql: 'SELECT count(*) FROM accounts WHERE id = ?', params: [id] }));
    if (r.rows[0][0] > 0) return s;
  }
  return null;
}

// Every shard takes a plain write on its primary's node: no transaction
// or record of one is left anywhere.
async function unlocked() {
  await until(async () => {
    for (const s of SHARDS) {
      const owner = c.nodes[idx(await primaryOf(s))];
      const r = await post(owner, `/v1/db/${s}/query`, { sql: 'INSERT INTO probe VALUES (1)' }, 3000);
      if (r.status !== 200) return false;
    }
    return true;
  }, 20000, 'every shard takes writes');
}

before(async () => {
  k = await startKeyspaceCluster(3, {
    name: 'bank', shards: SHARDS, tables: { accounts: { column: 'id', vindex: 'h' } },
    conf: 'replicas = 1\n[engine]\nwrite_wait_timeout = 2s\n',
  });
  c = k.c;
  await ok(ks(c.nodes[0], 'CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))'));
  await ok(ks(c.nodes[0], 'CREATE TABLE probe(x)'));
  const rows = Array.from({ length: ACCOUNTS }, (_, i) => [i + 1, 1000]);
  await ok(ks(c.nodes[1], `INSERT INTO accounts VALUES ${rows.map(() => '(?, ?)').join(', ')}`, rows.flat()));
});

after(async () => { await k?.cleanup(); });

for (const step of ['prepared', 'decided', 'committed_one']) {
  test(`the home killed ${step === 'prepared' ? 'before' : 'after'} the decision (${step}): ${step === 'prepared' ? 'undone' : 'finished'} once it is back`, async () => {
    const home = await primaryOf('_dsq_2pc.bank');
    const h = idx(home);
    // Two accounts on shards of two nodes other than the home (or, with
    // fewer such shards, of any nodes but on different shards).
    const other = [];
    for (let id = 1; id <= ACCOUNTS && other.length < 2; id++) {
      const s = await shardOf(c.nodes[0], id);
      const n = await primaryOf(s);
      if (n !== home && !other.some((o) => o.node === n)) other.push({ id, s, node: n });
    }
    assert.equal(other.length, 2, 'no two accounts on two nodes other than the home');
    const [a, b] = other.map((o) => o.id);
    const b0 = await balances(c.nodes[h]);
    const old = c.nodes[h];
    await old.stop();
    k.gone.push(old);
    c.nodes[h] = await startAgain({ conf: c.confOf(h), dataDir: old.dataDir, env: { DOSQLD_TEST_2PC_CRASH: step } });
    await until(async () => (await clusterInfo(c.nodes[h])).body.nodes.every((n) => n.reachable), 10000, 'links up');
    const r = await ks(c.nodes[h], TRANSFER, [a, b, 10]);
    assert.equal(r.status, 0, `the home answered: ${JSON.stringify(r.body)}`);
    const e = await c.nodes[h].exit;
    assert.equal(e.signal, 'SIGKILL');
    k.gone.push(c.nodes[h]);
    c.nodes[h] = await startAgain({ conf: c.confOf(h), dataDir: old.dataDir });
    await unlocked();
    const want = new Map(b0);
    if (step !== 'prepared') {
      want.set(a, b0.get(a) - 10);
      want.set(b, b0.get(b) + 10);
    }
    assert.deepEqual(await balances(c.nodes[(h + 1) % 3]), want);
    // The bank works on, through every node.
    for (const d of c.nodes) await ok(ks(d, TRANSFER, [b, a, 1]));
  });
}
