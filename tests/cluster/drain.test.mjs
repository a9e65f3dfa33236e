// Draining a node on etcd: every database it is the primary of moves to
// another copy while writes go on through every node; no acknowledged
// write is lost, and a write that fails fails with a code that says try
// again. New databases are not given a draining node as primary.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { runDosqld } from '../integration/lib/harness.mjs';
import { clusterInfo, post, sleep, until } from './lib/cluster.mjs';
import { startEtcdCluster } from './lib/etcdcluster.mjs';

const conf = 'replicas = 3\ncommit_timeout = 2s\npromote_timeout = 5s\n';
const RETRYABLE = new Set(['NOT_PRIMARY', 'RESOURCE_EXHAUSTED', 'SERIALIZATION_FAILURE', 'TIMEOUT', 'NETWORK']);

test('drain under writes: the primaries move away, nothing acknowledged is lost, failures are retryable', async () => {
  const c = await startEtcdCluster(3, { conf });
  try {
    const dbs = ['d0', 'd1', 'd2', 'd3', 'd4', 'd5'];
    for (const db of dbs)
      assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    // The node that is the primary of the most of them drains.
    const count = new Map();
    for (const db of dbs) {
      const p = (await c.assignment(db)).primary;
      count.set(p, (count.get(p) ?? 0) + 1);
    }
    const [nodeId] = [...count.entries()].sort((a, b) => b[1] - a[1])[0];
    const node = c.byId(nodeId);
    const acked = new Map(dbs.map((db) => [db, []]));
    const failures = [];
    let stop = false;
    let next = 1;
    const writer = async (w) => {
      for (let k = w; !stop; k++) {
        const db = dbs[k % dbs.length];
        const d = c.nodes[k % 3];
        const id = next++;
        const r = await post(d, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (?)', params: [id] }, 5000);
        if (r.status === 200) acked.get(db).push(id);
        else {
          failures.push(r.body?.error?.code ?? String(r.status));
          await sleep(20);
        }
      }
    };
    const writers = [writer(0), writer(1), writer(2)];
    await sleep(1000);
    // Asked through another node (dosqld cluster drain finds the node's
    // address there), waiting until it is the primary of none.
    const other = c.nodes.find((d) => d !== node);
    const cli = await runDosqld(['cluster', 'drain', nodeId, '--url', other.url, '--wait', '30'], { timeoutMs: 40000 });
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, new RegExp(`node ${nodeId}: draining, primary of 0 databases`));
    const info = (await clusterInfo(other)).body.nodes.find((x) => x.id === nodeId);
    assert.equal(info.etcd.draining, true);
    assert.equal(info.etcd.primaries, 0);
    await until(async () => {
      for (const db of dbs) if ((await c.assignment(db)).primary === nodeId) return false;
      return true;
    }, 20000, `no assignment naming ${nodeId} as primary`);
    for (const db of dbs)
      await until(async () => (await clusterInfo(node, `?database=${db}`)).body.database.primary !== nodeId,
        10000, `${nodeId} to follow for ${db}`);
    await sleep(1000); // (writes go on after the hand-over)
    stop = true;
    await Promise.all(writers);
    for (const code of failures) assert.ok(RETRYABLE.has(code), `a write failed with ${code}`);
    for (const db of dbs) {
      const r = await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'SELECT id FROM t ORDER BY id' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const have = r.body.rows.map((x) => x[0]);
      assert.equal(new Set(have).size, have.length, `${db}: an id twice`);
      for (const id of acked.get(db)) assert.ok(have.includes(id), `${db}: acknowledged id ${id} missing`);
    }
    // A new database is not given the draining node as primary.
    for (let i = 0; i < 6; i++) {
      assert.equal((await post(c.nodes[i % 3], `/v1/db/new${i}/query`, { sql: 'SELECT 1' })).status, 200);
      assert.notEqual((await c.assignment(`new${i}`)).primary, nodeId);
    }
    // Asked of a node that is not the one named: refused, naming where.
    const wrong = await post(other, '/v1/admin/drain', { node: nodeId });
    assert.equal(wrong.status, 400);
    assert.match(wrong.body.error.message, new RegExp(`ask node ${nodeId} itself`));
    // Undone: its key no longer says draining.
    const undo = await runDosqld(['cluster', 'drain', nodeId, '--url', other.url, '--undo']);
    assert.equal(undo.code, 0, undo.stderr);
    await until(async () => (await clusterInfo(other)).body.nodes.find((x) => x.id === nodeId).etcd.draining === false,
      10000, 'the drain undone');
    const total = [...acked.values()].reduce((s, v) => s + v.length, 0);
    console.log(`# drained ${nodeId} (${count.get(nodeId)} primaries) under writes: ${total} acknowledged, ${failures.length} retryable failures (${[...new Set(failures)].join(', ')})`);
  } finally {
    await c.cleanup();
  }
});
