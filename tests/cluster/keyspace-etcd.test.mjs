// Keyspaces on a cluster placed through etcd: the shards (and the
// keyspace's coordinator) are placed by the first node a request for them
// reaches; the keyspace works through every node, its shards' calls going
// to wherever etcd placed each one.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { post } from './lib/cluster.mjs';
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
