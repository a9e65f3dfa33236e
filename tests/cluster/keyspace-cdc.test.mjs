// a remote CDC part (server/rcdc.c) whose link queue holds more
// than QUEUE_LIMIT (2 MiB) after one batch, but never reaches the peer
// link's send_limit (8 MiB), must not stall: nothing ever calls
// dsq_cdcsub_writable() again (on_writable only fires after send_limit).
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
  dir = mkdtempSync(path.join(tmpdir(), 'dosqld-r3-'));
  const vs = path.join(dir, 'vschema.json');
  writeFileSync(vs, JSON.stringify({
    keyspaces: { shop: { shards: SHARDS, vindexes: { h: { type: 'hash' } }, tables: { big: { column: 'k', vindex: 'h' } } } },
  }));
  c = await startCluster(2, { conf: () => `replicas = 2\n[sharding]\nvschema = ${vs}\n` });
  for (const d of c.nodes)
    await until(async () => (await clusterInfo(d)).body.nodes.every((n) => n.reachable), 10000, 'every link up');
});

after(async () => {
  await c?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

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
