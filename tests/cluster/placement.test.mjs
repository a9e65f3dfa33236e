// Placement through etcd: three nodes that find each other in etcd, three
// copies of each database. A database is placed by the first node a
// request for it reaches (its assignment created in etcd by
// compare-and-swap), every node follows that assignment, and its commits
// reach every copy; three nodes placing one new database at once agree on
// one assignment. (One cluster for both tests.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { clusterInfo, query, until } from './lib/cluster.mjs';
import { startEtcdCluster } from './lib/etcdcluster.mjs';

let c, nodes;
const assignment = (db) => c.assignment(db);
before(async () => {
  c = await startEtcdCluster(3, { conf: 'replicas = 3\ncommit_timeout = 3s\n' });
  nodes = c.nodes;
});
after(async () => { await c?.cleanup(); });

test('databases placed through etcd: one assignment each, followed by every node, commits on every copy', async () => {
  {
    const dbs = ['p0', 'p1', 'p2', 'p3', 'p4', 'p5'];
    for (const [i, db] of dbs.entries()) {
      const via = nodes[i % 3];
      const c = await query(via, db, 'CREATE TABLE t(x)');
      assert.equal(c.status, 200, JSON.stringify(c.body));
      const w = await query(via, db, 'INSERT INTO t VALUES (?)', [i]);
      assert.equal(w.status, 200, JSON.stringify(w.body));
    }
    const primaries = new Set();
    for (const [i, db] of dbs.entries()) {
      const a = await assignment(db);
      assert.ok(a, `no assignment for ${db} in etcd`);
      assert.equal(a.epoch, 1);
      assert.deepEqual([...a.copies].sort(), ['n1', 'n2', 'n3']);
      assert.equal(a.primary, a.copies[0]);
      primaries.add(a.primary);
      for (const d of nodes) {
        const info = (await clusterInfo(d, `?database=${db}`)).body.database;
        assert.equal(info.primary, a.primary, `${db} as ${d.url} sees it`);
        assert.deepEqual(info.copies.map((x) => x.node).sort(), ['n1', 'n2', 'n3']);
      }
      // The commit is on every copy (a follower's reads are its own).
      for (const d of nodes)
        await until(async () => {
          const r = await query(d, db, 'SELECT x FROM t', [], { consistency: 'replica' });
          return r.status === 200 && JSON.stringify(r.body.rows) === JSON.stringify([[i]]);
        }, 10000, `${db}'s row on every copy`);
    }
    assert.ok(primaries.size >= 2, `six databases, one primary node: ${[...primaries]}`);
  }
});

test('three nodes placing one new database at once agree on one assignment', async () => {
  {
    for (let round = 0; round < 5; round++) {
      const db = `race${round}`;
      const rs = await Promise.all(nodes.map((d, i) => query(d, db, `SELECT ${i}`)));
      for (const r of rs) assert.equal(r.status, 200, JSON.stringify(r.body));
      const a = await assignment(db);
      for (const d of nodes) {
        const info = (await clusterInfo(d, `?database=${db}`)).body.database;
        assert.equal(info.primary, a.primary);
      }
    }
  }
});
