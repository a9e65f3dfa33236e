// Placement through etcd: three nodes that find each other in etcd, three
// copies of each database. A database is placed by the first node a
// request for it reaches (its assignment created in etcd by
// compare-and-swap), every node follows that assignment, and its commits
// reach every copy; three nodes placing one new database at once agree on
// one assignment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { startDosqld } from '../integration/lib/harness.mjs';
import { clusterInfo, freePort, query, secretFile, until } from './lib/cluster.mjs';
import { startEtcd } from './lib/etcd.mjs';

const PREFIX = '/t/';
const b64 = (s) => Buffer.from(s).toString('base64');

// The assignment of db as etcd holds it, or null.
async function assignment(etcd, db) {
  const r = await etcd.post('/v3/kv/range', { key: b64(`${PREFIX}dbs/${db}`) });
  const kv = r.kvs?.[0];
  return kv ? JSON.parse(Buffer.from(kv.value, 'base64').toString()) : null;
}

async function startNodes(etcd, dir, n) {
  const secret = secretFile(dir);
  const ports = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  const nodes = [];
  for (let i = 0; i < n; i++)
    nodes.push(await startDosqld({
      conf: `[cluster]\nnode_id = n${i + 1}\npeers = n${i + 1}@127.0.0.1:${ports[i]}\nsecret_file = ${secret}\n` +
        `etcd = ${etcd.url}\netcd_prefix = ${PREFIX}\nnode_ttl = 2s\nheartbeat_interval = 100ms\npeer_timeout = 1s\n` +
        'replicas = 3\ncommit_timeout = 3s\n',
    }));
  const linked = async (d) => (await clusterInfo(d)).body.nodes.filter((x) => x.reachable).length === n;
  for (const d of nodes) await until(() => linked(d), 15000, 'every link up');
  return nodes;
}

test('databases placed through etcd: one assignment each, followed by every node, commits on every copy', async () => {
  const etcd = await startEtcd();
  const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-placement-'));
  const nodes = [];
  try {
    nodes.push(...(await startNodes(etcd, dir, 3)));
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
      const a = await assignment(etcd, db);
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
  } finally {
    for (const d of nodes) await d.cleanup().catch(() => {});
    await etcd.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('three nodes placing one new database at once agree on one assignment', async () => {
  const etcd = await startEtcd();
  const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-placement-'));
  const nodes = [];
  try {
    nodes.push(...(await startNodes(etcd, dir, 3)));
    for (let round = 0; round < 5; round++) {
      const db = `race${round}`;
      const rs = await Promise.all(nodes.map((d, i) => query(d, db, `SELECT ${i}`)));
      for (const r of rs) assert.equal(r.status, 200, JSON.stringify(r.body));
      const a = await assignment(etcd, db);
      for (const d of nodes) {
        const info = (await clusterInfo(d, `?database=${db}`)).body.database;
        assert.equal(info.primary, a.primary);
      }
    }
  } finally {
    for (const d of nodes) await d.cleanup().catch(() => {});
    await etcd.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
