// The lake in a cluster: every node runs a lake writer, and only the node
// holding a database's primary copy feeds that database's changes to the
// lake (a follower's copy would make a second lake of the same changes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { clusterInfo, post, startCluster, until } from './lib/cluster.mjs';

const conf = () => 'replicas = 3\ncommit_timeout = 1500ms\n[lake]\ndatabases = shop\nflush_interval = 1h\ncurrent_state = no\n';

test('only the primary\'s node feeds a database to the lake', async () => {
  const c = await startCluster(3, { conf });
  try {
    await until(async () => (await post(c.nodes[0], '/v1/db/shop/query', { sql: 'CREATE TABLE IF NOT EXISTS t(x)' })).status === 200,
      15000, 'the first write');
    const info = (await clusterInfo(c.nodes[0], '?database=shop')).body.database;
    const primary = c.nodes[Number(info.primary.slice(1)) - 1];
    for (let i = 0; i < 5; i++) assert.equal((await post(primary, '/v1/db/shop/query', { sql: `INSERT INTO t VALUES (${i})` })).status, 200);
    for (const d of c.nodes) {
      const r = await post(d, '/v1/admin/lake', {});
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.errors, 0, r.body.lastError);
      const lake = path.join(d.dataDir, 'objects', 'lake', 'shop');
      if (d === primary) {
        assert.equal(r.body.commits, 1, 'the primary\'s node committed the changes');
        assert.ok(existsSync(path.join(lake, 't_changelog', 'metadata', 'v1.metadata.json')));
      } else {
        assert.equal(r.body.commits, 0, 'a follower\'s node wrote nothing');
        assert.ok(!existsSync(lake), 'no lake of its own');
      }
    }
  } finally {
    await c.cleanup();
  }
});
