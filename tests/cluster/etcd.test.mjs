// Membership through etcd: nodes whose cluster.peers names only
// themselves find each other in etcd and link up; a node killed and
// started again links again. (Removing a node that stays gone comes in a
// later step: for now a node that leaves etcd stays known to the links.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { startDosqld } from '../integration/lib/harness.mjs';
import { clusterInfo, freePort, secretFile, until } from './lib/cluster.mjs';
import { startEtcd } from './lib/etcd.mjs';

// "n1:true n2:true n3:true": every node this one lists, by id.
const reach = async (d) => (await clusterInfo(d)).body.nodes.map((n) => `${n.id}:${n.reachable}`).sort().join(' ');

test('three nodes found through etcd link up; a killed node started again links again', async () => {
  const etcd = await startEtcd();
  const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-etcd-cluster-'));
  const nodes = [];
  try {
    const secret = secretFile(dir);
    const ports = [];
    for (let i = 0; i < 3; i++) ports.push(await freePort());
    const confOf = (i) => `[cluster]\nnode_id = n${i + 1}\npeers = n${i + 1}@127.0.0.1:${ports[i]}\n` +
      `secret_file = ${secret}\netcd = ${etcd.url}\netcd_prefix = /t/\nnode_ttl = 2s\n` +
      'heartbeat_interval = 100ms\npeer_timeout = 1s\n';
    for (let i = 0; i < 3; i++) nodes.push(await startDosqld({ conf: confOf(i) }));
    for (const d of nodes)
      await until(async () => (await reach(d)) === 'n1:true n2:true n3:true', 15000, 'every link up');
    const info = await clusterInfo(nodes[0]);
    assert.equal(info.status, 200);
    assert.deepEqual(info.body.nodes.map((n) => [n.id, n.address, n.self]).sort(),
      [['n1', `127.0.0.1:${ports[0]}`, true], ['n2', `127.0.0.1:${ports[1]}`, false],
       ['n3', `127.0.0.1:${ports[2]}`, false]]);
    assert.match(nodes[0].stderr, /event=cluster_node_added node="?n2"?/);
    const m = await (await fetch(`${nodes[0].url}/metrics`)).text();
    assert.match(m, /\ndosqld_cluster_links_up 2\n/);

    // n3 dies; the others see its link down (it stays listed: no removal yet)
    await nodes[2].stop('SIGKILL');
    for (const d of nodes.slice(0, 2))
      await until(async () => (await reach(d)) === 'n1:true n2:true n3:false', 15000, 'n3 unreachable');
    await until(() => /event=cluster_node_down node="?n3"?/.test(nodes[0].stderr), 15000, 'n1 to see n3 leave etcd');
    // started again at the same peer address (a new process: etcd may
    // still hold its old key until the old lease runs out)
    const old = nodes[2];
    nodes[2] = await startDosqld({ conf: confOf(2) });
    await old.cleanup().catch(() => {});
    for (const d of nodes)
      await until(async () => (await reach(d)) === 'n1:true n2:true n3:true', 20000, 'n3 linked again');
  } finally {
    const errs = [];
    for (const d of nodes) {
      try { await d.cleanup(); } catch (e) { errs.push(e); }
    }
    await etcd.stop();
    rmSync(dir, { recursive: true, force: true });
    if (errs.length) throw errs[0];
  }
});
