// Any node serves any database: a connection that reaches a node that is
// not its database's primary (a follower, or a node without a copy) is
// passed on whole to the primary's node — HTTP /query, JSON-RPC over
// WebSocket, the official capnweb client with pipelining, and libSQL's
// client (Hrana over HTTP, its batons living on the primary's node, and
// over WebSocket).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import WebSocket from 'ws';
import { newWebSocketRpcSession, newHttpBatchRpcSession } from 'capnweb';
import { clusterInfo, startCluster, until } from '../cluster/lib/cluster.mjs';

globalThis.WebSocket = WebSocket;

let c;
let P, F, N; // a database's primary, its follower, a node without a copy
const db = 'fwd';
before(async () => {
  c = await startCluster(3, { conf: () => 'replicas = 2\n' });
  const info = (await clusterInfo(c.nodes[0], `?database=${db}`)).body.database;
  const byId = (id) => c.nodes[Number(id.slice(1)) - 1];
  P = byId(info.primary);
  F = byId(info.copies.find((x) => x.role === 'follower').node);
  N = c.nodes.find((d) => d !== P && d !== F);
  // Every node knows the others' client addresses once the links are up.
  for (const d of c.nodes)
    await until(async () => (await clusterInfo(d)).body.nodes.every((n) => n.reachable), 10000, 'links');
});
after(async () => { await c?.cleanup(); });

async function query(d, body) {
  const r = await fetch(`${d.url}/v1/db/${db}/query`, { method: 'POST', body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}

// A node's own metrics, on a connection of their own (a pooled connection
// that was passed on answers from the other node).
function metricsOf(d) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: d.port, path: '/metrics', agent: false }, (res) => {
      let body = '';
      res.on('data', (b) => { body += b; });
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}
const forwarded = async (d) => Number(/\ndosqld_forwarded_connections_total (\d+)/.exec(await metricsOf(d))[1]);

test('HTTP /query through a follower and a node without a copy', async () => {
  const f0 = await forwarded(F), n0 = await forwarded(N);
  assert.equal((await query(N, { sql: 'CREATE TABLE t(x)' })).status, 200);
  const w = await query(F, { sql: 'INSERT INTO t VALUES (1), (2)' });
  assert.equal(w.status, 200, JSON.stringify(w.body));
  const r = await query(N, { sql: 'SELECT count(*) FROM t' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.rows[0][0], 2);
  assert.ok(await forwarded(F) > f0 && await forwarded(N) > n0, 'both passed the connection on');
  // One request is passed on, not the client's connection for good: the
  // next request on it (fetch keeps connections) is the node's own again.
  for (const d of [F, N]) {
    assert.equal((await query(d, { sql: 'SELECT 1' })).status, 200);
    const me = (await (await fetch(`${d.url}/v1/cluster`)).json()).nodes.find((x) => x.self);
    assert.equal(`127.0.0.1:${c.peerPorts[Number(me.id.slice(1)) - 1]}`, me.address);
    assert.equal(c.nodes[Number(me.id.slice(1)) - 1], d, 'answered by the node asked');
  }
  // A follower's own answer when asked for one (with a bookmark).
  const rep = await query(F, { sql: 'SELECT count(*) FROM t', consistency: 'replica', minLSN: w.body.lsn });
  assert.equal(rep.status, 200, JSON.stringify(rep.body));
  assert.equal(rep.body.rows[0][0], 2);
});

function rpc(url) {
  const sock = new WebSocket(url);
  let id = 0;
  const waiting = new Map();
  sock.on('message', (m) => {
    const msg = JSON.parse(m.toString());
    waiting.get(msg.id)?.(msg);
  });
  const opened = new Promise((resolve, reject) => { sock.once('open', resolve); sock.once('error', reject); });
  return {
    opened,
    call: (method, params) => new Promise((resolve) => {
      const n = ++id;
      waiting.set(n, resolve);
      sock.send(JSON.stringify({ jsonrpc: '2.0', id: n, method, params }));
    }),
    close: () => sock.close(),
  };
}

test('JSON-RPC over WebSocket through a node without a copy: a transaction', async () => {
  const s = rpc(`ws://127.0.0.1:${N.port}/v1/db/${db}/rpc`);
  await s.opened;
  try {
    await s.call('query', { sql: 'CREATE TABLE IF NOT EXISTS w(x)' });
    const b = await s.call('beginTransaction', {});
    assert.ok(b.result?.transactionId, JSON.stringify(b));
    const q = await s.call('query', { sql: 'INSERT INTO w VALUES (7)', transactionId: b.result.transactionId });
    assert.equal(q.result?.rowsAffected, 1, JSON.stringify(q));
    const cm = await s.call('commit', { transactionId: b.result.transactionId });
    assert.ok(cm.result?.lsn, JSON.stringify(cm));
  } finally {
    s.close();
  }
  const r = await query(P, { sql: 'SELECT x FROM w' });
  assert.deepEqual(r.body.rows, [[7]]);
});

test('the capnweb client through a follower: WebSocket with pipelining, and HTTP batch', async () => {
  const api = newWebSocketRpcSession(`ws://127.0.0.1:${F.port}/v1/db/${db}/capnweb`);
  try {
    await api.query({ sql: 'CREATE TABLE IF NOT EXISTS cw(x)' });
    const tx = api.beginTransaction({});
    const ins = api.query({ sql: 'INSERT INTO cw VALUES (1), (2), (3)', transactionId: tx.transactionId });
    const cnt = api.query({ sql: 'SELECT count(*) FROM cw', transactionId: tx.transactionId });
    const cm = api.commit({ transactionId: tx.transactionId });
    const [i, n] = await Promise.all([ins, cnt, cm]);
    assert.equal(i.rowsAffected, 3);
    assert.deepEqual(n.rows, [[3]]);
  } finally {
    api[Symbol.dispose]();
  }
  const b = newHttpBatchRpcSession(`http://127.0.0.1:${N.port}/v1/db/${db}/capnweb`);
  assert.deepEqual((await b.query({ sql: 'SELECT sum(x) FROM cw' })).rows, [[6]]);
});

test('libSQL clients through a follower and a node without a copy (HTTP batons and WebSocket)', async () => {
  const { createClient } = await import('@libsql/client');
  const name = 'fwdlibsql';
  for (const [i, scheme] of ['http', 'ws'].entries()) {
    const via = i === 0 ? N : F;
    const cl = createClient({ url: `${scheme}://127.0.0.1:${via.port}/v1/db/${name}/` });
    try {
      await cl.execute('CREATE TABLE IF NOT EXISTS t (x)');
      // An interactive transaction: over HTTP its stream lives on the
      // primary's node, and every pipeline of it is passed on there.
      const tx = await cl.transaction('write');
      await tx.execute({ sql: 'INSERT INTO t VALUES (?)', args: [10 * i + 1] });
      await tx.execute({ sql: 'INSERT INTO t VALUES (?)', args: [10 * i + 2] });
      await tx.commit();
      const r = await cl.execute('SELECT count(*) AS n FROM t');
      assert.equal(r.rows[0].n, 2 * (i + 1), `${scheme} through ${via === N ? 'a node without a copy' : 'a follower'}`);
    } finally {
      cl.close();
    }
  }
});
