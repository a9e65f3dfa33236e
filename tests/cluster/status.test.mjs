// Seeing the cluster on etcd: GET /v1/cluster's etcd parts (each node
// alive in etcd, its load, copies and primaries, lag; this node's state
// in etcd and the failovers it made), the metrics that go with them, and
// `dosqld cluster status`, the daemon's binary asking a running node.
// Three nodes, three copies of one database; then its primary's node is
// killed and the survivor that took over lists the failover.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { runDosqld } from '../integration/lib/harness.mjs';
import { clusterInfo, freePort, post, until } from './lib/cluster.mjs';
import { startEtcdCluster } from './lib/etcdcluster.mjs';

const conf = 'replicas = 3\ncommit_timeout = 2s\npromote_timeout = 5s\n';

async function metrics(d) {
  const r = await fetch(`${d.url}/metrics`);
  assert.equal(r.status, 200);
  return r.text();
}

// The value of one sample line ("name{labels} value"), or undefined.
function sample(text, series) {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('GET /v1/cluster, /metrics and dosqld cluster status show etcd, the nodes and a failover', async () => {
  const c = await startEtcdCluster(3, { conf });
  try {
    const db = 'seen';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    assert.equal(a1.copies.length, 3);

    // Every node: all three alive in etcd, the copies summing to 3 and one
    // primary, once each node read the assignment (the watch may lag the
    // write by a moment on the nodes that did not make it).
    for (const d of c.nodes) {
      await until(async () => {
        const b = (await clusterInfo(d)).body;
        return b.etcd?.assignments >= 1 && b.nodes.reduce((s, n) => s + n.etcd.copies, 0) === 3;
      }, 10000, 'the assignment known on every node');
      const { status, body } = await clusterInfo(d);
      assert.equal(status, 200);
      assert.deepEqual(body.nodes.map((n) => n.id).sort(), ['n1', 'n2', 'n3']);
      for (const n of body.nodes) {
        assert.equal(n.etcd.alive, true, `${n.id} alive in etcd`);
        assert.equal(typeof n.etcd.load.dbs, 'number');
        assert.equal(typeof n.etcd.load.bytes, 'number');
        assert.equal(typeof n.lagLSN, 'number');
        assert.equal(typeof n.lagMs, 'number');
      }
      assert.equal(body.nodes.reduce((s, n) => s + n.etcd.primaries, 0), 1);
      assert.equal(body.nodes.find((n) => n.id === a1.primary).etcd.primaries, 1);
      const e = body.etcd;
      assert.equal(e.up, true);
      assert.equal(e.registered, true);
      assert.equal(e.viewWhole, true);
      assert.equal(e.assignmentsLoaded, true);
      assert.ok(e.assignments >= 1);
      for (const k of ['attempts', 'won', 'lost', 'promoted', 'failed']) assert.equal(e.failover[k], 0, k);
      assert.deepEqual(body.failovers, []);
      // what was there before, unchanged
      const info = (await clusterInfo(d, `?database=${db}`)).body.database;
      assert.equal(info.primary, a1.primary);
      assert.equal(info.epoch, 1);
      assert.equal(info.copies.length, 3);
    }

    const m = await metrics(c.nodes[0]);
    assert.equal(sample(m, 'dosqld_cluster_etcd_up'), 1);
    assert.equal(sample(m, 'dosqld_cluster_registered'), 1);
    assert.ok(sample(m, 'dosqld_cluster_assignments') >= 1);
    assert.equal(sample(m, 'dosqld_cluster_failover_attempts_total'), 0);
    for (const r of ['won', 'lost', 'promoted', 'failed', 'replaced'])
      assert.equal(sample(m, `dosqld_cluster_failovers_total{result="${r}"}`), 0, r);
    for (const id of ['n1', 'n2', 'n3']) {
      assert.equal(sample(m, `dosqld_cluster_node_alive{node="${id}"}`), 1, id);
      assert.equal(sample(m, `dosqld_cluster_node_copies{node="${id}"}`), 1, id);
      assert.equal(sample(m, `dosqld_cluster_node_primaries{node="${id}"}`), id === a1.primary ? 1 : 0, id);
    }
    assert.match(m, /# TYPE dosqld_cluster_failovers_total counter\n/);
    assert.match(m, /# TYPE dosqld_cluster_node_alive gauge\n/);

    // The command line, against the first node.
    const url = c.nodes[0].url;
    const st = await runDosqld(['cluster', 'status', '--url', url, '--database', db]);
    assert.equal(st.code, 0, st.stderr);
    for (const id of ['n1', 'n2', 'n3']) assert.match(st.stdout, new RegExp(`^  ${id} `, 'm'), st.stdout);
    assert.match(st.stdout, /^3 nodes, as n1 sees them:$/m);
    assert.match(st.stdout, /^etcd: up, registered, every node seen, 1 assignment$/m);
    assert.match(st.stdout, new RegExp(`^database ${db}: primary ${a1.primary}, epoch 1$`, 'm'));
    // -c: the node's address from the file's listen
    const confPath = path.join(c.dir, 'status.conf');
    writeFileSync(confPath, `[server]\nlisten = 127.0.0.1:${c.nodes[1].port}\n`);
    const byConf = await runDosqld(['cluster', 'status', '-c', confPath]);
    assert.equal(byConf.code, 0, byConf.stderr);
    assert.match(byConf.stdout, /^3 nodes, as n2 sees them:$/m);
    const js = await runDosqld(['cluster', 'status', '--url', url, '--json']);
    assert.equal(js.code, 0, js.stderr);
    assert.equal(JSON.parse(js.stdout).etcd.up, true);
    const closed = await freePort();
    const down = await runDosqld(['cluster', 'status', '--url', `http://127.0.0.1:${closed}`]);
    assert.equal(down.code, 1);
    assert.equal(down.stdout, '');
    assert.match(down.stderr, new RegExp(`cannot reach http://127\\.0\\.0\\.1:${closed}/v1/cluster`));
    const usage = await runDosqld(['cluster', 'statuz']);
    assert.equal(usage.code, 2);
    assert.match((await runDosqld(['--help'])).stdout, /dosqld cluster status/);

    // The primary's node dies: a survivor takes over and lists it.
    const primary = c.byId(a1.primary);
    const survivors = c.nodes.filter((d) => d !== primary);
    primary.proc.kill('SIGKILL');
    let fo;
    await until(async () => {
      for (const d of survivors) {
        const b = (await clusterInfo(d)).body;
        fo = b.failovers.find((f) => f.database === db);
        if (fo) return b.nodes.find((n) => n.id === a1.primary).etcd.alive === false;
      }
      return false;
    }, 15000, 'a survivor listing the failover');
    assert.equal(fo.from, a1.primary);
    assert.ok(survivors.some((d) => `n${c.nodes.indexOf(d) + 1}` === fo.to));
    assert.ok(fo.epoch >= 2);
    assert.ok(Math.abs(Date.parse(fo.at) - Date.now()) < 60000, fo.at);
    assert.match(fo.at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(typeof fo.tookMs, 'number');
    const winner = c.byId(fo.to);
    const wm = await metrics(winner);
    assert.ok(sample(wm, 'dosqld_cluster_failovers_total{result="won"}') >= 1);
    assert.equal(sample(wm, `dosqld_cluster_node_alive{node="${a1.primary}"}`), 0);
    const after = await runDosqld(['cluster', 'status', '--url', winner.url]);
    assert.equal(after.code, 0, after.stderr);
    assert.match(after.stdout, new RegExp(`  ${db}  ${a1.primary} -> ${fo.to}  epoch ${fo.epoch}  took \\d+ ms`));
  } finally {
    await c.cleanup();
  }
});
