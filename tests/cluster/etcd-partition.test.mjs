// Partitions between the nodes of a cluster on etcd (each node's links
// reached through a proxy of its own, advertised in etcd with
// cluster.advertise; its links leave from an address of its own, so that
// the other nodes' proxies can refuse it alone):
//
//   - a primary cut off from its peers but not from etcd keeps its key, so
//     nothing fails over: its writes wait (none acknowledged: no follower
//     holds them) and go on once the partition heals, nothing lost;
//   - a primary cut off from its peers and from etcd: its key goes, a
//     copy on the majority side takes over and serves, the old primary
//     acknowledges nothing meanwhile, and after healing it follows.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { clusterInfo, post, sleep, until } from './lib/cluster.mjs';
import { startEtcdCluster } from './lib/etcdcluster.mjs';

const conf = 'replicas = 3\ncommit_timeout = 2s\npromote_timeout = 5s\nnode_dead_after = 0\n';

async function ids(d, db) {
  const r = await post(d, `/v1/db/${db}/query`, { sql: 'SELECT id FROM t ORDER BY id' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.rows.map((x) => x[0]);
}

test('a primary cut off from its peers only: nothing fails over, its writes wait and none is acknowledged, then go on', async () => {
  const c = await startEtcdCluster(3, { conf, peerProxies: true });
  try {
    await c.linked();
    const db = 'peercut';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    const pi = Number(a1.primary.slice(1)) - 1;
    const primary = c.nodes[pi];
    for (let i = 1; i <= 5; i++)
      assert.equal((await post(primary, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (?)', params: [i] })).status, 200);
    c.isolate(pi);
    // Its followers are gone from its view: a write is not acknowledged.
    await until(async () => !(await clusterInfo(primary)).body.nodes.some((x) => x.id !== a1.primary && x.reachable),
      10000, 'the primary to lose its links');
    const r = await post(primary, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (100)' }, 8000);
    assert.notEqual(r.status, 200, 'no write acknowledged without a follower');
    await sleep(3000); // (past node_ttl: the key stays, so nothing moves)
    assert.equal((await c.assignment(db)).epoch, a1.epoch, 'no failover: etcd still sees the primary');
    c.rejoin(pi);
    await c.linked();
    let w;
    await until(async () => {
      w = await post(c.nodes[(pi + 1) % 3], `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (6)' });
      return w.status === 200;
    }, 20000, 'writes after healing');
    const have = await ids(primary, db);
    for (const id of [1, 2, 3, 4, 5, 6]) assert.ok(have.includes(id), `id ${id} missing`);
    assert.equal(new Set(have).size, have.length);
  } finally {
    for (let i = 0; i < 3; i++) c.rejoin?.(i);
    await c.cleanup();
  }
});

test('a primary cut off from its peers and from etcd: the others fail over, it acknowledges nothing, then follows', async () => {
  const c = await startEtcdCluster(3, { conf, peerProxies: true, etcdProxies: true });
  try {
    await c.linked();
    const db = 'bothcut';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    const pi = Number(a1.primary.slice(1)) - 1;
    const primary = c.nodes[pi];
    const others = c.nodes.filter((d) => d !== primary);
    for (let i = 1; i <= 5; i++)
      assert.equal((await post(primary, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (?)', params: [i] })).status, 200);
    c.isolate(pi);
    c.etcdProxy(pi).partition();
    // The old primary, alone: whatever it is sent is not acknowledged.
    const stale = post(primary, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (-1)' }, 8000);
    await until(async () => (await c.assignment(db)).primary !== a1.primary, 20000, 'a failover on the majority side');
    let w;
    await until(async () => {
      w = await post(others[0], `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (6)' });
      return w.status === 200;
    }, 20000, 'writes on the new primary');
    assert.notEqual((await stale).status, 200, 'the isolated primary acknowledged a write');
    c.rejoin(pi);
    c.etcdProxy(pi).heal();
    const a2 = await c.assignment(db);
    await until(async () => (await clusterInfo(primary, `?database=${db}`)).body.database.primary === a2.primary,
      20000, 'the old primary to follow the new one');
    const have = await ids(c.byId(a2.primary), db);
    assert.deepEqual(have, [1, 2, 3, 4, 5, 6]);
    await until(async () => {
      const r = await post(primary, `/v1/db/${db}/query`, { sql: 'SELECT count(*) FROM t', consistency: 'replica' });
      return r.status === 200 && r.body.rows[0][0] === 6;
    }, 20000, 'the old primary to catch up');
  } finally {
    for (let i = 0; i < 3; i++) {
      c.rejoin?.(i);
      c.etcdProxy(i)?.heal();
    }
    await c.cleanup();
  }
});
