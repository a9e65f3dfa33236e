// The links between nodes: they come up, a paused node is seen
// unreachable and comes back, a node with another secret never links,
// and bad [cluster] settings refuse to start with a clear message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';

import { runDosqld } from '../integration/lib/harness.mjs';
import { clusterInfo, freePort, secretFile, startCluster, until } from './lib/cluster.mjs';

const reach = async (d) => (await clusterInfo(d)).body.nodes.map((n) => `${n.id}:${n.reachable}`).join(' ');

test('three nodes link up; a paused node is unreachable, then back', async () => {
  const c = await startCluster(3);
  try {
    const [n1, n2, n3] = c.nodes;
    for (const d of c.nodes)
      await until(async () => (await reach(d)) === 'n1:true n2:true n3:true', 10000, 'every link up');
    const info = await clusterInfo(n1);
    assert.equal(info.status, 200);
    assert.deepEqual(info.body.nodes.map((n) => [n.id, n.address, n.self]),
      [['n1', `127.0.0.1:${c.peerPorts[0]}`, true], ['n2', `127.0.0.1:${c.peerPorts[1]}`, false],
       ['n3', `127.0.0.1:${c.peerPorts[2]}`, false]]);
    n2.proc.kill('SIGSTOP');
    try {
      await until(async () => (await reach(n1)) === 'n1:true n2:false n3:true', 10000, 'n1 to see n2 gone');
      await until(async () => (await reach(n3)) === 'n1:true n2:false n3:true', 10000, 'n3 to see n2 gone');
    } finally {
      n2.proc.kill('SIGCONT');
    }
    for (const d of c.nodes)
      await until(async () => (await reach(d)) === 'n1:true n2:true n3:true', 10000, 'n2 back');
  } finally {
    await c.cleanup();
  }
});

test('a node with another secret never links', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-secret-'));
  const other = secretFile(dir, 'x'.repeat(40));
  const c = await startCluster(3, { secretFor: { 2: other } });
  try {
    const [n1, , n3] = c.nodes;
    await until(async () => (await reach(n1)) === 'n1:true n2:true n3:false', 10000, 'n1-n2 up, n3 out');
    await until(() => /event=peer_auth_failed node=n3/.test(n1.stderr), 10000, 'n1 to log the failure');
    assert.equal(await reach(n3), 'n1:false n2:false n3:true');
    const m = await (await fetch(`${n1.url}/metrics`)).text();
    assert.match(m, /\ndosqld_cluster_links_up 1\n/);
    assert.ok(Number(/\ndosqld_cluster_auth_failures_total (\d+)/.exec(m)[1]) >= 1);
  } finally {
    await c.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad [cluster] settings are refused at start', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-badcluster-'));
  try {
    const secret = secretFile(dir);
    const [p1, p2] = [await freePort(), await freePort()];
    const peers = `n1@127.0.0.1:${p1}, n2@127.0.0.1:${p2}`;
    const run = (conf) => {
      const f = path.join(dir, `c${Math.random()}.conf`);
      writeFileSync(f, conf);
      return runDosqld(['-c', f, '--data-dir', path.join(dir, 'data'), '--listen', '127.0.0.1:0']);
    };
    let r = await run(`[cluster]\nnode_id = n9\npeers = ${peers}\nsecret_file = ${secret}\n`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cluster\.node_id n9 is not in cluster\.peers/);
    r = await run(`[cluster]\nnode_id = n1\npeers = ${peers}\n`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /needs cluster\.secret_file/);
    r = await run(`[cluster]\nnode_id = n1\npeers = n1@127.0.0.1:${p1}, n1@127.0.0.1:${p2}\nsecret_file = ${secret}\n`);
    assert.match(r.stderr, /names node n1 twice/);
    r = await run(`[cluster]\nnode_id = n1\npeers = n1@nowhere, n2@127.0.0.1:${p2}\nsecret_file = ${secret}\n`);
    assert.match(r.stderr, /is not ID@HOST:PORT|is not HOST:PORT/);
    const short = path.join(dir, 'short');
    writeFileSync(short, 'too short\n');
    chmodSync(short, 0o600);
    r = await run(`[cluster]\nnode_id = n1\npeers = ${peers}\nsecret_file = ${short}\n`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /must have 32 to 512 characters/);
    chmodSync(secret, 0o644);
    r = await run(`[cluster]\nnode_id = n1\npeers = ${peers}\nsecret_file = ${secret}\n`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /readable by every user/);
    chmodSync(secret, 0o600);
    // Its peer port taken: it says so and exits, never "listening" first
    // (a script waiting for that line would take a dead node for a live one).
    const blocker = net.createServer();
    await new Promise((resolve) => blocker.listen(p1, '127.0.0.1', resolve));
    try {
      r = await run(`[cluster]\nnode_id = n1\npeers = ${peers}\nsecret_file = ${secret}\n`);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /event=start_failed reason="cannot listen for the other nodes on 127\.0\.0\.1:\d+ \(cluster\.peers, node n1\): address already in use"/);
    assert.doesNotMatch(r.stderr, /event=listening/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
