// A keyspace's CDC across two nodes (one copy of each database): a remote
// part (server/rcdc.c) goes on after a batch larger than 2 MiB (it waits
// on the link's own limit, which wakes it again); `tables: []` means no
// table on remote shards as on local ones; a stream resumed from a
// position catches up on a node that holds no copy of the system
// database.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';

import { clusterInfo, post, until } from './lib/cluster.mjs';
import { startKeyspaceCluster } from './lib/keyspace.mjs';

const SHARDS = ['ks-0', 'ks-1', 'ks-2', 'ks-3'];
let k, c;
const ks = (d, sql, params) => k.ks(d, sql, params);
const ok = (p) => k.ok(p);
const primaryOf = (db) => k.primaryOf(db);

before(async () => {
  k = await startKeyspaceCluster(2, { name: 'shop', shards: SHARDS, tables: { big: { column: 'k', vindex: 'h' }, t: { column: 'k', vindex: 'h' } }, conf: 'replicas = 1\n' });
  c = k.c;
});

after(async () => { await k?.cleanup(); });

test('a remote shard\'s CDC part goes on after a batch bigger than 2 MiB', async () => {
  const home = await primaryOf('_dsq_2pc.shop');
  const h = Number(home.slice(1)) - 1;
  let remote = null;
  for (const s of SHARDS) if ((await primaryOf(s)) !== home) remote = s;
  assert.ok(remote, 'a shard whose primary is not the home');
  const r = Number((await primaryOf(remote)).slice(1)) - 1;
  await ok(ks(c.nodes[h], 'CREATE TABLE big(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)'));
  // One commit of ~3 MiB straight into the remote shard.
  await ok(post(c.nodes[r], `/v1/db/${remote}/query`, {
    sql: 'WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000) ' +
         'INSERT INTO big SELECT x, 0, hex(randomblob(500)) FROM n',
  }));
  const ws = new WebSocket(`ws://127.0.0.1:${c.nodes[h].port}/v1/ks/shop/rpc`);
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const ev = [];
  let answered;
  const answer = new Promise((resolve) => { answered = resolve; });
  ws.on('message', (m) => {
    for (const one of [].concat(JSON.parse(m.toString()))) {
      if (one.id === 1) answered(one);
      else if (one.method === 'cdc' && one.params.shard === remote) ev.push(one.params); else if (process.env.DBG) console.log(JSON.stringify(one).slice(0, 300));
    }
  });
  const from = Object.fromEntries(SHARDS.map((s) => [s, 0]));
  ws.send(JSON.stringify({ id: 1, method: 'subscribeCDC', params: { fromPosition: from, tables: ['big'] } }));
  const a = await answer;
  assert.ok(a.result, JSON.stringify(a));
  await until(async () => ev.length >= 3000, 15000, 'the big commit streamed').catch((e) => { throw new Error(e.message + ' got ' + ev.length); });
  await ok(post(c.nodes[r], `/v1/db/${remote}/query`, { sql: 'INSERT INTO big VALUES (5000, 0, \'after\')' }));
  await until(async () => ev.some((e) => e.after?.id === 5000), 8000, 'the row after the big commit streamed');
  ws.close();
});

test('tables: [] streams the same from a remote shard as from a local one (nothing)', async () => {
  const home = await primaryOf('_dsq_2pc.shop');
  const h = Number(home.slice(1)) - 1;
  const ws = new WebSocket(`ws://127.0.0.1:${c.nodes[h].port}/v1/ks/shop/rpc`);
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const ev = [];
  let answered;
  const answer = new Promise((resolve) => { answered = resolve; });
  ws.on('message', (m) => {
    for (const one of [].concat(JSON.parse(m.toString()))) {
      if (one.id === 1) answered(one);
      else if (one.method === 'cdc') ev.push(one.params);
    }
  });
  ws.send(JSON.stringify({ id: 1, method: 'subscribeCDC', params: { tables: [] } }));
  const a = await answer;
  assert.ok(a.result, JSON.stringify(a));
  const rows = Array.from({ length: 16 }, (_, i) => [9000 + i, i, 'x']);
  await ok(ks(c.nodes[h], `INSERT INTO big VALUES ${rows.map(() => '(?, ?, ?)').join(', ')}`, rows.flat()));
  await new Promise((r) => setTimeout(r, 1000));
  ws.close();
  assert.deepEqual([...new Set(ev.map((e) => e.shard))], [], 'events from some shards only');
});

// (below) a CDC subscription's catch-up reads of the log after its first
// (cdcsub.c: dsq_engine_submit_system with target_db) run on the system
// actor, whose own placement refuses them (exec.c refused(): role
// ELSEWHERE for ".system") on every node that holds no copy of .system:
// a keyspace's stream from a position ends at once with NOT_PRIMARY "this
// node holds no copy of database .system".
test('a keyspace\'s stream from a position catches up on nodes without a copy of .system', async () => {
  const home = await primaryOf('_dsq_2pc.shop');
  const h = Number(home.slice(1)) - 1;
  await ok(ks(c.nodes[h], 'CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)'));
  // More than one log read's worth (256 KiB of changes) on every shard.
  const N = 400;
  for (let i = 0; i < N; i += 20) {
    const rows = Array.from({ length: 20 }, (_, j) => [i + j, i + j, 'x'.repeat(4000)]);
    await ok(ks(c.nodes[h], `INSERT INTO t VALUES ${rows.map(() => '(?, ?, ?)').join(', ')}`, rows.flat()));
  }
  const ws = new WebSocket(`ws://127.0.0.1:${c.nodes[h].port}/v1/ks/shop/rpc`);
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const ev = [], ends = [];
  let answered;
  const answer = new Promise((resolve) => { answered = resolve; });
  ws.on('message', (m) => {
    for (const one of [].concat(JSON.parse(m.toString()))) {
      if (one.id === 1) answered(one);
      else if (one.method === 'cdc') ev.push(one.params);
      else if (one.method === 'cdc.end') ends.push(one.params);
    }
  });
  const from = Object.fromEntries(SHARDS.map((s) => [s, 0]));
  ws.send(JSON.stringify({ id: 1, method: 'subscribeCDC', params: { fromPosition: from, tables: ['t'] } }));
  const a = await answer;
  assert.ok(a.result, JSON.stringify(a));
  await until(async () => ev.length >= N || ends.length > 0, 10000, 'the inserts streamed');
  assert.deepEqual(ends, []);
  assert.equal(ev.length, N);
  ws.close();
});
