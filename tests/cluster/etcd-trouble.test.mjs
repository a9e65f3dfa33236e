// etcd in trouble. etcd killed: databases placed already keep taking
// reads and writes through every node (replication does not need etcd), a
// new database cannot be placed (503, to retry), no failover happens; etcd
// back: placing works again, and nobody's lease was lost for it. A
// primary's node cut off from etcd alone (still linked to the others): a
// survivor takes over; the cut-off node never acknowledges a write the new
// primary does not have, and it follows once it reaches etcd again.
// Clients that hang up while their request waits for etcd to place its
// database leave nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { clusterInfo, post, sleep, until } from './lib/cluster.mjs';
import { startEtcdCluster } from './lib/etcdcluster.mjs';

const conf = 'replicas = 3\ncommit_timeout = 2s\npromote_timeout = 5s\n';
const q = (d, db, sql, params, ms = 5000) => post(d, `/v1/db/${db}/query`, { sql, params }, ms);

test('etcd killed: placed databases keep working everywhere, new ones wait for it, nothing fails over', async () => {
  const c = await startEtcdCluster(3, { conf });
  try {
    assert.equal((await q(c.nodes[0], 'kept', 'CREATE TABLE t(x)')).status, 200);
    const a1 = await c.assignment('kept');
    await c.etcd.kill();
    await until(() => c.nodes.every((d) => /event=cluster_etcd_down/.test(d.stderr)), 10000, 'every node to see etcd down');
    // Reads and writes through each node, for longer than node_ttl (2 s).
    for (let round = 0; round < 3; round++) {
      for (const [i, d] of c.nodes.entries()) {
        const w = await q(d, 'kept', 'INSERT INTO t VALUES (?)', [round * 10 + i]);
        assert.equal(w.status, 200, `write through n${i + 1} with etcd down: ${JSON.stringify(w.body)}`);
      }
      await sleep(1000);
    }
    const r = await q(c.nodes[2], 'kept', 'SELECT count(*) FROM t');
    assert.deepEqual(r.body.rows, [[9]]);
    // A database no node placed yet: refused, to be tried again.
    const n = await q(c.nodes[1], 'fresh', 'SELECT 1');
    assert.equal(n.status, 503, JSON.stringify(n.body));
    assert.equal(n.body.error.code, 'RESOURCE_EXHAUSTED');
    assert.match(n.body.error.message, /cannot place database fresh now/);
    // etcd back: its leases were kept, so nothing failed over.
    await c.etcd.restart();
    await until(async () => (await q(c.nodes[1], 'fresh', 'SELECT 1')).status === 200, 15000, 'placing again');
    await sleep(3000); // (past node_ttl: a lease lost would show now)
    assert.deepEqual(await c.assignment('kept'), a1, 'the assignment did not change');
    for (const d of c.nodes) assert.doesNotMatch(d.stderr, /event=failover_candidate/);
    assert.equal((await q(c.nodes[0], 'kept', 'INSERT INTO t VALUES (100)')).status, 200);
  } finally {
    await c.cleanup();
  }
});

test("the primary's node cut off from etcd alone: a survivor takes over, the cut-off node acknowledges nothing the new one lacks", async () => {
  const c = await startEtcdCluster(3, { conf, etcdProxies: true });
  try {
    const db = 'cut';
    assert.equal((await q(c.nodes[0], db, 'CREATE TABLE t(id INTEGER PRIMARY KEY)')).status, 200);
    const a1 = await c.assignment(db);
    const pi = c.nodes.indexOf(c.byId(a1.primary));
    const old = c.nodes[pi];
    const acked = [];
    let next = 1;
    const write = async (d) => {
      const id = next++;
      const r = await q(d, db, 'INSERT INTO t(id) VALUES (?)', [id], 4000);
      if (r.status === 200) acked.push(id);
      return r.status;
    };
    for (let k = 0; k < 10; k++) assert.equal(await write(c.nodes[(pi + 1) % 3]), 200);
    c.etcdProxy(pi).partition();
    // The others see its key go, and one of them takes over.
    await until(async () => (await c.assignment(db)).epoch >= 2, 15000, 'a new primary in etcd');
    const a2 = await c.assignment(db);
    assert.notEqual(a2.primary, a1.primary);
    const fresh = c.byId(a2.primary);
    // Writes go on through the survivors, and through the cut-off node (it
    // passes them on, or refuses them: it is fenced by the new epoch).
    const deadline = Date.now() + 4000;
    let viaOld = 0;
    while (Date.now() < deadline) {
      await write(fresh);
      if ((await write(old)) === 200) viaOld++;
    }
    c.etcdProxy(pi).heal();
    await until(async () => (await clusterInfo(old, `?database=${db}`)).body.database.primary === a2.primary,
      15000, 'the cut-off node to follow the new primary');
    const r = await q(fresh, db, 'SELECT id FROM t ORDER BY id');
    const have = new Set(r.body.rows.map((x) => x[0]));
    assert.equal(have.size, r.body.rows.length);
    for (const id of acked) assert.ok(have.has(id), `acknowledged id ${id} is not on the new primary`);
    console.log(`# writes acknowledged through the cut-off node after the failover: ${viaOld}`);
  } finally {
    for (let i = 0; i < 3; i++) c.etcdProxy(i)?.heal();
    await c.cleanup();
  }
});

// The node cut off from etcd still reads the old assignments (its copy of
// them cannot be refreshed), which name it primary of a database whose
// primary moved; it must not act on them. Were it to promote its copy
// again (it reaches the other copies, which accept the higher epoch), the
// primary etcd names would do the same in turn, and so on every sweep
// for as long as the cut lasts: a promotion war, each turn failing the
// writes under way.
test("a primary cut off from etcd does not take its database back while cut off", async () => {
  const c = await startEtcdCluster(3, { conf, etcdProxies: true });
  try {
    const db = 'war';
    assert.equal((await q(c.nodes[0], db, 'CREATE TABLE t(x)')).status, 200);
    const a1 = await c.assignment(db);
    const pi = c.nodes.indexOf(c.byId(a1.primary));
    const old = c.nodes[pi];
    c.etcdProxy(pi).partition();
    await until(async () => (await c.assignment(db)).epoch >= 2, 15000, 'a new primary in etcd');
    const a2 = await c.assignment(db);
    const from = old.stderr.length;
    await sleep(3000); // (the failover sweeps every 500 ms)
    const a3 = await c.assignment(db);
    c.etcdProxy(pi).heal();
    const promotions = old.stderr.slice(from).split('\n').filter((l) => /event=promot/.test(l));
    assert.deepEqual(promotions, [], 'the cut-off node promoted its copy');
    assert.deepEqual(a3, a2, 'the assignment did not stay');
    await until(async () => (await clusterInfo(old, `?database=${db}`)).body.database.primary === a2.primary,
      15000, 'the cut-off node to follow the new primary');
    assert.deepEqual(await c.assignment(db), a2, 'healing changed the assignment');
  } finally {
    for (let i = 0; i < 3; i++) c.etcdProxy(i)?.heal();
    await c.cleanup();
  }
});

// A request for a database not placed yet waits while its node asks etcd
// (here etcd is slow: 0.6 s each way through the node's proxy). Clients
// that hang up meanwhile leave nothing behind: the node places the
// database once etcd answers, serves it, and exits cleanly (a sanitizer
// build reports any leak or use after free at that exit).
test('clients that hang up while their request waits for placement: the node goes on and exits cleanly', async () => {
  const c = await startEtcdCluster(3, { conf, etcdProxies: true });
  try {
    const d = c.nodes[0];
    c.etcdProxy(0).delayMs = 600;
    const gone = await Promise.all(['slow1', 'slow1', 'slow2'].map((db) => q(d, db, 'SELECT 1', undefined, 300)));
    for (const r of gone) assert.equal(r.status, 0, `hung up before an answer: ${JSON.stringify(r)}`);
    c.etcdProxy(0).delayMs = 0;
    for (const db of ['slow1', 'slow2'])
      await until(async () => (await q(d, db, 'CREATE TABLE IF NOT EXISTS t(x)')).status === 200, 20000, `${db} placed`);
    assert.equal((await q(c.nodes[1], 'slow1', 'INSERT INTO t VALUES (1)')).status, 200);
    assert.ok((await c.assignment('slow2')) !== null);
  } finally {
    await c.cleanup();
  }
});
