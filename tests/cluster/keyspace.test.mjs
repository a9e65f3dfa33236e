// Keyspaces in a cluster: the shards of a keyspace are databases placed
// over three nodes (their primaries on different nodes); the keyspace is
// served by the node holding its coordinator's primary (its home), which
// reaches each shard on the node of its primary; a client may use any
// node (its /v1/ks requests are passed on). Reads scattered over nodes,
// writes and transactions across them, getSchema; the same answers
// through every node; a keyspace stub on a node that is not its home
// refused with the home named.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';

import { clusterInfo, post, startAgain, until } from './lib/cluster.mjs';
import { startKeyspaceCluster } from './lib/keyspace.mjs';

const SHARDS = ['ks-0', 'ks-1', 'ks-2', 'ks-3', 'ks-4', 'ks-5'];
let k, c;
const ks = (d, sql, params) => k.ks(d, sql, params);
const rpc = (d, method, params) => k.rpc(d, method, params);
const ok = (p) => k.ok(p);
const primaryOf = (db) => k.primaryOf(db);

before(async () => {
  k = await startKeyspaceCluster(3, {
    name: 'shop',
    shards: SHARDS,
    tables: { orders: { column: 'customer', vindex: 'h' }, countries: { type: 'reference' } },
    conf: 'replicas = 2\ncommit_timeout = 3s\n',
  });
  c = k.c;
});

after(async () => { await k?.cleanup(); });

test('shards on three nodes: DDL, writes across them, scattered reads, the same through every node', async () => {
  const primaries = new Set();
  for (const s of SHARDS) primaries.add(await primaryOf(s));
  assert.ok(primaries.size >= 2, `the shards' primaries are all on ${[...primaries]}`);
  const [n1, n2, n3] = c.nodes;
  await ok(ks(n1, 'CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER NOT NULL, amount INTEGER)'));
  await ok(ks(n2, 'CREATE TABLE countries(code TEXT PRIMARY KEY, name TEXT)'));
  await ok(ks(n3, "INSERT INTO countries VALUES ('fr', 'France'), ('jp', 'Japan')"));
  const rows = [];
  for (let i = 1; i <= 60; i++) rows.push([i, i % 12, i * 10]);
  // One statement, every shard: a cross-shard transaction over three nodes.
  const ins = await ok(ks(n2, `INSERT INTO orders VALUES ${rows.map(() => '(?, ?, ?)').join(', ')}`, rows.flat()));
  assert.equal(ins.rowsAffected, 60);
  // Each shard's rows are on its primary's node (read there directly).
  let total = 0;
  for (const s of SHARDS) {
    const owner = c.nodes[Number((await primaryOf(s)).slice(1)) - 1];
    const r = await ok(post(owner, `/v1/db/${s}/query`, { sql: 'SELECT count(*) FROM orders' }));
    total += r.rows[0][0];
  }
  assert.equal(total, 60);
  for (const d of c.nodes) {
    assert.deepEqual((await ok(ks(d, 'SELECT count(*), sum(amount) FROM orders'))).rows, [[60, 18300]]);
    assert.deepEqual((await ok(ks(d, 'SELECT customer, count(*) FROM orders GROUP BY customer ORDER BY customer LIMIT 3'))).rows,
      [[0, 5], [1, 5], [2, 5]]);
    assert.deepEqual((await ok(ks(d, 'SELECT id FROM orders ORDER BY amount DESC LIMIT 2'))).rows, [[60], [59]]);
    assert.deepEqual((await ok(ks(d, 'SELECT amount FROM orders WHERE customer = 5 ORDER BY id'))).rows,
      [[50], [170], [290], [410], [530]]);
    assert.deepEqual((await ok(ks(d, "SELECT o.id, c.name FROM orders o JOIN countries c ON c.code = 'jp' WHERE o.customer = 3 ORDER BY o.id"))).rows,
      [[3, 'Japan'], [15, 'Japan'], [27, 'Japan'], [39, 'Japan'], [51, 'Japan']]);
  }
  const upd = await ok(ks(n3, 'UPDATE orders SET amount = amount + 1 WHERE customer IN (1, 2, 3)'));
  assert.equal(upd.rowsAffected, 15);
  assert.deepEqual((await ok(ks(n1, 'SELECT sum(amount) FROM orders'))).rows, [[18315]]);
  const schema = await ok(rpc(n3, 'getSchema', {}));
  assert.ok(schema.result.tables.some((t) => t.name === 'orders'), JSON.stringify(schema));
  // The home sent calls to the other nodes, and they ran them.
  const counts = async (d) => {
    const m = await (await fetch(`${d.url}/metrics`)).text();
    return ['out', 'in'].map((dir) => Number(new RegExp(`dosqld_remote_calls_total\\{direction="${dir}"\\} (\\d+)`).exec(m)[1]));
  };
  const home = c.nodes[Number((await primaryOf('_dsq_2pc.shop')).slice(1)) - 1];
  assert.ok((await counts(home))[0] > 0);
  let ran = 0;
  for (const d of c.nodes) if (d !== home) ran += (await counts(d))[1];
  assert.ok(ran > 0);
});

test('a transaction across shards on different nodes, through any node: seen inside only, then committed', async () => {
  // Two customers whose shards' primaries are on different nodes.
  const shardOf = async (cust) => {
    for (const s of SHARDS) {
      const owner = c.nodes[Number((await primaryOf(s)).slice(1)) - 1];
      const r = await ok(post(owner, `/v1/db/${s}/query`, { sql: 'SELECT count(*) FROM orders WHERE customer = ?', params: [cust] }));
      if (r.rows[0][0] > 0) return s;
    }
    return null;
  };
  let a = 1, b = 2;
  while ((await primaryOf(await shardOf(b))) === (await primaryOf(await shardOf(a)))) b++;
  const d = c.nodes[2];
  const { result: { transactionId } } = await ok(rpc(d, 'beginTransaction', {}));
  await ok(rpc(d, 'query', { sql: 'UPDATE orders SET amount = 0 WHERE customer = ?', params: [a], transactionId }));
  await ok(rpc(d, 'query', { sql: 'UPDATE orders SET amount = 0 WHERE customer = ?', params: [b], transactionId }));
  const inside = await ok(rpc(d, 'query', { sql: 'SELECT sum(amount) FROM orders WHERE customer = ?', params: [a], transactionId }));
  assert.deepEqual(inside.result.rows, [[0]]);
  assert.notDeepEqual((await ok(ks(c.nodes[0], 'SELECT sum(amount) FROM orders WHERE customer = ?', [a]))).rows, [[0]]);
  await ok(rpc(c.nodes[1], 'commit', { transactionId })); // (HTTP: it belongs to no connection)
  for (const n of c.nodes) {
    assert.deepEqual((await ok(ks(n, 'SELECT sum(amount) FROM orders WHERE customer IN (?, ?)', [a, b]))).rows, [[0]]);
  }
  // Every shard takes a write again: no lock or record left anywhere.
  await ok(ks(c.nodes[0], 'UPDATE orders SET amount = amount'));
});

test('WebSocket JSON-RPC through a node that is not the home; a Cap\'n Web stub there is refused naming the home', async () => {
  const home = await primaryOf('_dsq_2pc.shop');
  const away = c.nodes.find((_, i) => `n${i + 1}` !== home);
  const ws = new WebSocket(`ws://127.0.0.1:${away.port}/v1/ks/shop/rpc`);
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const reply = new Promise((resolve) => ws.once('message', (m) => resolve(JSON.parse(m.toString()))));
  ws.send(JSON.stringify({ id: 7, method: 'query', params: { sql: 'SELECT count(*) FROM orders' } }));
  const r = await reply;
  assert.deepEqual(r.result.rows, [[60]], JSON.stringify(r));
  ws.close();
  const cw = await post(away, '/v1/rpc', { id: 1, method: 'ping', params: {} });
  assert.equal(cw.status, 200);
  // The keyspace stub of /v1/capnweb's main object runs where it is asked:
  // away from the home it is refused, naming it (a Cap'n Web HTTP batch).
  const batch = [
    '["push",["pipeline",0,["keyspace"],["shop"]]]',
    '["push",["pipeline",1,["query"],[{"sql":"SELECT 1"}]]]',
    '["pull",2]',
  ].join('\n');
  const res = await fetch(`${away.url}/v1/capnweb`, { method: 'POST', body: batch });
  const text = await res.text();
  assert.match(text, new RegExp(`served by node ${home}`), text);
});

test('the keyspace\'s CDC with shards on three nodes: one stream, every shard\'s events, resumed from its position', async () => {
  const away = c.nodes[0];
  const ws = new WebSocket(`ws://127.0.0.1:${away.port}/v1/ks/shop/rpc`);
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const notes = [];
  const replies = new Map();
  ws.on('message', (m) => {
    for (const one of [].concat(JSON.parse(m.toString()))) {
      if (one.id !== undefined) replies.get(one.id)?.(one);
      else notes.push(one);
    }
  });
  const call = (id, method, params) => new Promise((resolve) => { replies.set(id, resolve); ws.send(JSON.stringify({ id, method, params })); });
  const sub = await call(1, 'subscribeCDC', { tables: ['orders'] });
  assert.ok(sub.result?.subscriptionId, JSON.stringify(sub));
  const start = sub.result.position;
  assert.deepEqual(Object.keys(start).sort(), SHARDS);
  // Rows for every customer: every shard (every node) has some.
  const rows = Array.from({ length: 24 }, (_, i) => [1000 + i, i % 12, 1]);
  await ok(ks(c.nodes[1], `INSERT INTO orders VALUES ${rows.map(() => '(?, ?, ?)').join(', ')}`, rows.flat()));
  await until(async () => notes.filter((n) => n.method === 'cdc').length >= 24, 10000, 'every insert streamed');
  const events = notes.filter((n) => n.method === 'cdc').map((n) => n.params);
  assert.deepEqual(events.map((e) => e.after?.id ?? e.after?.[0]).filter((x) => x !== undefined).length, 24);
  const shards = new Set(events.map((e) => e.shard));
  assert.ok(shards.size >= 4, `events from ${[...shards]}`);
  const position = events.filter((e) => e.position).at(-1).position;
  ws.close();
  // Resumed from the start position: the same 24 inserts again, then only
  // from the last position: none of them.
  const again = async (from) => {
    const w = new WebSocket(`ws://127.0.0.1:${c.nodes[2].port}/v1/ks/shop/rpc`);
    await new Promise((resolve, reject) => { w.on('open', resolve); w.on('error', reject); });
    const got = [];
    let answered;
    const answer = new Promise((resolve) => { answered = resolve; });
    w.on('message', (m) => {
      for (const one of [].concat(JSON.parse(m.toString()))) {
        if (one.id === 2) answered(one);
        else if (one.method === 'cdc') got.push(one.params);
      }
    });
    w.send(JSON.stringify({ id: 2, method: 'subscribeCDC', params: { tables: ['orders'], fromPosition: from } }));
    const a = await answer;
    assert.ok(a.result, JSON.stringify(a));
    return { w, got };
  };
  const r1 = await again(start);
  await until(async () => r1.got.length >= 24, 10000, 'the inserts again from the start position');
  r1.w.close();
  const r2 = await again(position);
  await ok(ks(c.nodes[0], 'INSERT INTO orders VALUES (2000, 7, 1)'));
  await until(async () => r2.got.length >= 1, 10000, 'the new insert');
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(r2.got.map((e) => e.operation), ['INSERT']);
  r2.w.close();
  await ok(ks(c.nodes[0], 'DELETE FROM orders WHERE id >= 1000'));
});

test('the link to a shard\'s node going down ends the keyspace\'s CDC with its position; resumed once it is back', async () => {
  const home = await primaryOf('_dsq_2pc.shop');
  const h = Number(home.slice(1)) - 1;
  // A node other than the home holding a shard's primary.
  let victim = -1;
  for (const s of SHARDS) {
    const n = Number((await primaryOf(s)).slice(1)) - 1;
    if (n !== h) victim = n;
  }
  assert.ok(victim >= 0);
  const ws = new WebSocket(`ws://127.0.0.1:${c.nodes[h].port}/v1/ks/shop/rpc`);
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const notes = [];
  let answered;
  const answer = new Promise((resolve) => { answered = resolve; });
  ws.on('message', (m) => {
    for (const one of [].concat(JSON.parse(m.toString()))) {
      if (one.id === 1) answered(one);
      else notes.push(one);
    }
  });
  ws.send(JSON.stringify({ id: 1, method: 'subscribeCDC', params: {} }));
  const sub = await answer;
  assert.ok(sub.result, JSON.stringify(sub));
  const old = c.nodes[victim];
  old.proc.kill('SIGKILL');
  await old.exit;
  k.gone.push(old);
  await until(async () => notes.some((n) => n.method === 'cdc.end'), 10000, 'the stream ended');
  const end = notes.find((n) => n.method === 'cdc.end').params;
  assert.equal(end.error.code, 'NOT_PRIMARY');
  assert.deepEqual(Object.keys(end.position).sort(), SHARDS);
  ws.close();
  c.nodes[victim] = await startAgain({ conf: c.confOf(victim), dataDir: old.dataDir });
  for (const d of c.nodes)
    await until(async () => (await clusterInfo(d)).body.nodes.every((n) => n.reachable), 10000, 'every link up again');
  // Resumed from the position: the stream goes on.
  await until(async () => {
    const r = await new Promise((resolve) => {
      const w = new WebSocket(`ws://127.0.0.1:${c.nodes[h].port}/v1/ks/shop/rpc`);
      w.on('error', () => resolve(null));
      w.on('open', () => w.send(JSON.stringify({ id: 3, method: 'subscribeCDC', params: { fromPosition: end.position } })));
      w.on('message', (m) => {
        const one = JSON.parse(m.toString());
        if (one.id === 3) {
          w.close();
          resolve(one);
        }
      });
    });
    return r?.result?.subscriptionId !== undefined;
  }, 10000, 'subscribed again from the position');
});

test('one VSchema for every node: applied on one, the others take it; a node down meanwhile takes it when it is back', async () => {
  const get = async (d) => (await ok(post(d, '/v1/rpc', { id: 1, method: 'getVSchema', params: {} }))).result;
  const apply = async (d, vs) => (await ok(post(d, '/v1/rpc', { id: 1, method: 'applyVSchema', params: { vschema: vs } }))).result;
  const base = (await get(c.nodes[0])).vschema;
  const v1 = structuredClone(base);
  v1.keyspaces.extra = { shards: ['x-0', 'x-1'], vindexes: { h: { type: 'hash' } }, tables: { t: { column: 'k', vindex: 'h' } } };
  const { version } = await apply(c.nodes[1], v1);
  for (const d of c.nodes)
    await until(async () => (await get(d)).version === version, 5000, 'every node has the new VSchema');
  for (const d of c.nodes) assert.deepEqual(Object.keys((await get(d)).vschema.keyspaces).sort(), ['extra', 'shop']);
  // n3 stopped; a newer one applied on n1; n3 back: it takes it.
  const old = c.nodes[2];
  await old.stop();
  k.gone.push(old);
  const v2 = structuredClone(v1);
  delete v2.keyspaces.extra;
  const second = await apply(c.nodes[0], v2);
  assert.equal(second.version, version + 1);
  c.nodes[2] = await startAgain({ conf: c.confOf(2), dataDir: old.dataDir });
  await until(async () => (await get(c.nodes[2])).version === version + 1, 10000, 'the restarted node has the newer VSchema');
  assert.deepEqual(Object.keys((await get(c.nodes[2])).vschema.keyspaces), ['shop']);
  // A VSchema the others refuse changes nothing anywhere.
  const bad = await post(c.nodes[0], '/v1/rpc', { id: 1, method: 'applyVSchema', params: { vschema: { keyspaces: { z: { shards: [] } } } } });
  assert.ok(bad.body.error, JSON.stringify(bad.body));
  for (const d of c.nodes) assert.equal((await get(d)).version, version + 1);
});
