// a CDC subscription's catch-up reads of the log after its first
// (cdcsub.c: dsq_engine_submit_system with target_db) run on the system
// actor, whose own placement refuses them (exec.c refused(): role
// ELSEWHERE for ".system") on every node that holds no copy of .system:
// a keyspace's stream from a position ends at once with NOT_PRIMARY "this
// node holds no copy of database .system".
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';

import { clusterInfo, post, startCluster, until } from './lib/cluster.mjs';

const SHARDS = ['ks-0', 'ks-1', 'ks-2', 'ks-3'];
let c, dir;
const ks = (d, sql, params) => post(d, '/v1/ks/shop/query', params ? { sql, params } : { sql });
async function ok(p) {
  const r = await p;
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}
const primaryOf = async (db) => (await clusterInfo(c.nodes[0], `?database=${db}`)).body.database.primary;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'dosqld-r3s-'));
  const vs = path.join(dir, 'vschema.json');
  writeFileSync(vs, JSON.stringify({
    keyspaces: { shop: { shards: SHARDS, vindexes: { h: { type: 'hash' } }, tables: { t: { column: 'k', vindex: 'h' } } } },
  }));
  c = await startCluster(2, { conf: () => `replicas = 1\n[sharding]\nvschema = ${vs}\n` });
  for (const d of c.nodes)
    await until(async () => (await clusterInfo(d)).body.nodes.every((n) => n.reachable), 10000, 'every link up');
});

after(async () => {
  await c?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

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
