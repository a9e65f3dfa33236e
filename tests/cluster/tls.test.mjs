// TLS between nodes (cluster.tls): three nodes link over mutual TLS and
// replicate a write to every copy; the client connections a node passes
// on to a database's primary go over mutual TLS too, to a listener of the
// primary's node that refuses anything else; a node whose certificate
// another CA signed never links; bad TLS settings refuse to start, naming
// the key. Certificates are made with the openssl command, as an operator
// would.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';

import { Raw, metric as metricOf, runDosqld, wsFrame, wsRaw, wsReadUntil } from '../integration/lib/harness.mjs';
import { clusterInfo, freePort, secretFile, startCluster, until } from './lib/cluster.mjs';
import { Certs } from './lib/certs.mjs';

let certs, dir;
const f = (name) => certs.path(name);
const tlsConf = (file, ca) => certs.conf(file, ca);

before(() => {
  certs = new Certs();
  dir = certs.dir;
  certs.ca('ca');
  certs.ca('other');
  for (const id of ['n1', 'n2', 'n3']) certs.node(id, id, 'ca');
  certs.node('x3', 'n3', 'other');
  certs.node('intruder', 'intruder', 'ca'); // the cluster's CA, but no node's name
});
after(() => certs.cleanup());

async function query(d, db, sql, params, extra = {}) {
  const r = await fetch(`${d.url}/v1/db/${db}/query`, {
    method: 'POST', body: JSON.stringify({ sql, params, ...extra }), signal: AbortSignal.timeout(10000),
  });
  return { status: r.status, body: await r.json() };
}

const reach = async (d) => (await clusterInfo(d)).body.nodes.map((n) => `${n.id}:${n.reachable}`).join(' ');
const metric = (text, name) => Number(new RegExp(`\\n${name} (\\d+)`).exec(text)[1]);

test('three nodes over TLS replicate a write to every copy', async () => {
  const c = await startCluster(3, { conf: (i) => `replicas = 3\n${tlsConf(`n${i + 1}`, 'ca')}` });
  try {
    for (const d of c.nodes) {
      assert.match(d.stderr, /event=peers_listening node=n\d \S+ nodes=3 tls=yes/);
      await until(async () => (await reach(d)) === 'n1:true n2:true n3:true', 10000, 'every link up');
    }
    const info = (await clusterInfo(c.nodes[0], '?database=tlsdb')).body.database;
    assert.equal(info.copies.length, 3);
    const primary = c.nodes[Number(info.primary.slice(1)) - 1];
    assert.equal((await query(primary, 'tlsdb', 'CREATE TABLE t(x INTEGER PRIMARY KEY, s TEXT)')).status, 200);
    // A value larger than a TLS record (16 KiB), random so that its log
    // record stays that large compressed: its message spans several records.
    const w = await query(primary, 'tlsdb', 'INSERT INTO t VALUES (1, hex(randomblob(60000)))');
    assert.equal(w.status, 200, JSON.stringify(w.body));
    const lsn = w.body.lsn;
    const big = (await query(primary, 'tlsdb', 'SELECT s FROM t WHERE x = 1')).body.rows[0][0];
    assert.equal(big.length, 120000);
    // Every copy holds it: the primary's view of their durable LSNs, and
    // each follower's own answer.
    await until(async () => {
      const copies = (await clusterInfo(primary, '?database=tlsdb')).body.database.copies;
      return copies.length === 3 && copies.every((x) => x.durableLSN >= lsn);
    }, 10000, 'every copy durable at the write');
    for (const d of c.nodes) {
      await until(async () => {
        const r = await query(d, 'tlsdb', 'SELECT s FROM t WHERE x = 1', undefined, { consistency: 'replica' });
        return r.status === 200 && r.body.rows[0]?.[0] === big;
      }, 10000, 'the row on every copy');
    }
    const m = await (await fetch(`${primary.url}/metrics`)).text();
    assert.equal(metric(m, 'dosqld_cluster_links_up'), 2);
    assert.equal(metric(m, 'dosqld_cluster_auth_failures_total'), 0);
    assert.ok(metric(m, 'dosqld_cluster_sent_bytes_total') >= 2 * 60000);
  } finally {
    await c.cleanup();
  }
});

// A JSON-RPC session over a raw WebSocket: call() sends one request and
// waits for its reply (the n-th text frame).
async function rpcSession(port, route) {
  const w = await wsRaw(port, route);
  assert.equal(w.upgrade.status, 101, w.upgrade.text ?? '');
  let id = 0;
  return {
    call: async (method, params) => {
      const n = ++id;
      w.write(wsFrame(0x1, Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: n, method, params }))));
      const frames = (await wsReadUntil(w, (f) => f.filter((x) => x.opcode === 0x1).length >= n, 10000))
        .filter((x) => x.opcode === 0x1);
      assert.ok(frames.length >= n, 'the session ended before its reply');
      return JSON.parse(frames[n - 1].payload.toString());
    },
    close: () => w.destroy(),
  };
}

// Where a node takes the connections other nodes pass on, as it logged.
const forwardAddr = (d) => {
  const m = /event=forward_listening addr=(\S+) advertised=(\S+) tls=yes/.exec(d.stderr);
  assert.ok(m, `no forward_listening in:\n${d.stderr}`);
  return { bound: m[1], port: Number(m[2].slice(m[2].lastIndexOf(':') + 1)), advertised: m[2] };
};

test('connections passed on to the primary\'s node go over mutual TLS', async () => {
  // n1's listener for passed-on connections on a port of the
  // configuration's; n2's and n3's on ports the system picks.
  const fixed = await freePort();
  const conf = (i) => `replicas = 2\n${tlsConf(`n${i + 1}`, 'ca')}${i === 0 ? `forward_listen = 127.0.0.1:${fixed}\n` : ''}`;
  const c = await startCluster(3, { conf });
  try {
    for (const d of c.nodes)
      await until(async () => (await reach(d)) === 'n1:true n2:true n3:true', 10000, 'every link up');
    const fwd = c.nodes.map(forwardAddr);
    assert.equal(fwd[0].bound, `127.0.0.1:${fixed}`);
    assert.equal(fwd[0].advertised, `127.0.0.1:${fixed}`);
    for (const f of fwd.slice(1)) assert.match(f.advertised, /^127\.0\.0\.1:\d+$/);
    const byId = (id) => c.nodes[Number(id.slice(1)) - 1];
    // A database whose primary is n1 (the configured port) and one whose
    // primary is another node (a port the system picked).
    const place = async (want) => {
      for (let k = 0; k < 100; k++) {
        const info = (await clusterInfo(c.nodes[0], `?database=fw${k}`)).body.database;
        if (want(info.primary)) {
          const P = byId(info.primary);
          const F = byId(info.copies.find((x) => x.role === 'follower').node);
          return { db: `fw${k}`, P, F, N: c.nodes.find((d) => d !== P && d !== F) };
        }
      }
      throw new Error('no such database name');
    };
    const counts = async () => Promise.all(c.nodes.map(async (d) => ({
      out: await metricOf(d.port, 'dosqld_forwarded_connections_total'),
      in: await metricOf(d.port, 'dosqld_forwarded_in_connections_total'),
      refused: await metricOf(d.port, 'dosqld_forwarded_in_refused_total'),
    })));
    for (const want of [(p) => p === 'n1', (p) => p !== 'n1']) {
      const { db, P, F, N } = await place(want);
      const before = await counts();
      // HTTP through the follower and through the node without a copy.
      let r = await query(N, db, 'CREATE TABLE t(x INTEGER PRIMARY KEY, s TEXT)');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      // A request larger than a TLS record, and an answer too.
      r = await query(F, db, 'INSERT INTO t VALUES (1, ?), (2, ?)', ['a'.repeat(40000), 'b']);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      r = await query(N, db, 'SELECT x, length(s), s FROM t ORDER BY x');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body.rows.map((x) => x.slice(0, 2)), [[1, 40000], [2, 1]]);
      assert.equal(r.body.rows[0][2], 'a'.repeat(40000));
      // A JSON-RPC session over WebSocket through the follower: a transaction.
      const s = await rpcSession(F.port, `/v1/db/${db}/rpc`);
      try {
        const b = await s.call('beginTransaction', {});
        assert.ok(b.result?.transactionId, JSON.stringify(b));
        const q = await s.call('query', { sql: 'INSERT INTO t VALUES (3, ?)', params: ['c'], transactionId: b.result.transactionId });
        assert.equal(q.result?.rowsAffected, 1, JSON.stringify(q));
        const cm = await s.call('commit', { transactionId: b.result.transactionId });
        assert.ok(cm.result?.lsn, JSON.stringify(cm));
        const cnt = await s.call('query', { sql: 'SELECT count(*) FROM t' });
        assert.deepEqual(cnt.result?.rows, [[3]], JSON.stringify(cnt));
      } finally {
        s.close();
      }
      assert.deepEqual((await query(P, db, 'SELECT s FROM t WHERE x = 3')).body.rows, [['c']]);
      // The upgrade and the first message in one write, through the node
      // without a copy: both wait for the TLS handshake with the primary's
      // node, then go in order.
      const raw = await Raw.connect(N.port);
      raw.write(Buffer.concat([
        Buffer.from(`GET /v1/db/${db}/rpc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n\r\n`),
        wsFrame(0x1, Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'query', params: { sql: 'SELECT count(*) FROM t' } }))),
      ]));
      assert.equal((await raw.readResponse({ ms: 10000 })).status, 101);
      const first = (await wsReadUntil(raw, (fr) => fr.some((x) => x.opcode === 0x1), 10000)).find((x) => x.opcode === 0x1);
      assert.deepEqual(JSON.parse(first.payload.toString()).result?.rows, [[3]], first.payload.toString());
      raw.destroy();
      // Five connections passed on (three requests, two sessions): each
      // arrived at the primary's node on its TLS listener, none refused.
      const after = await counts();
      const iP = c.nodes.indexOf(P), iF = c.nodes.indexOf(F), iN = c.nodes.indexOf(N);
      assert.equal(after[iF].out - before[iF].out, 2, 'the follower passed on its request and its session');
      assert.equal(after[iN].out - before[iN].out, 3, 'the node without a copy passed on its three');
      assert.equal(after[iP].out - before[iP].out, 0);
      assert.equal(after[iP].in - before[iP].in, 5, 'the primary\'s node took them over TLS');
      assert.equal(after[iP].refused, before[iP].refused);
      for (const i of [iF, iN]) assert.equal(after[i].in, before[i].in);
    }

    // The listener takes nothing else: not plain TCP, not a certificate
    // of another CA, none at all, nor one of the cluster's CA that names
    // no node. Nothing is answered; each is refused and counted.
    const P = c.nodes[0];
    const port = fwd[0].port;
    const refused0 = await metricOf(P.port, 'dosqld_forwarded_in_refused_total');
    const request = 'POST /v1/db/fw/query HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{"sql":"S 1"}';
    const attempts = [
      ['plain TCP', {}],
      ['no certificate', { secure: true }],
      ['another CA', { secure: true, tlsOptions: { cert: readFileSync(f('x3.pem')), key: readFileSync(f('x3.key')) } }],
      ['no node named', { secure: true, tlsOptions: { cert: readFileSync(f('intruder.pem')), key: readFileSync(f('intruder.key')) } }],
    ];
    for (const [what, opts] of attempts) {
      let got = Buffer.alloc(0);
      try {
        const raw = await Raw.connect(port, opts);
        raw.sock.on('error', () => {});
        raw.write(request);
        got = await raw.readClose(5000);
        raw.destroy();
      } catch (e) {
        if (!/ECONNRESET|alert|handshake|socket hang up|certificate/i.test(String(e))) throw e; // refused in the handshake
      }
      assert.ok(!got.toString('latin1').includes('HTTP/1.1'), `${what}: answered ${JSON.stringify(got.toString('latin1'))}`);
    }
    await until(async () => (await metricOf(P.port, 'dosqld_forwarded_in_refused_total')) === refused0 + attempts.length,
      5000, 'each attempt refused and counted');
    for (const why of [/its certificate names no other node of cluster\.peers/, /http request|wrong version number/,
      /peer did not return a certificate/, /certificate verify failed|unknown ca/]) {
      const re = new RegExp(`event=forward_refused \\S+ reason="[^"]*(${why.source})`);
      await until(() => re.test(P.stderr), 5000, `forward_refused for ${why}`);
    }
    // A node's certificate is taken there: after TLS it is a client
    // connection as any.
    const raw = await Raw.connect(port, { secure: true, tlsOptions: { cert: readFileSync(f('n2.pem')), key: readFileSync(f('n2.key')) } });
    raw.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await raw.readResponse()).status, 200);
    raw.destroy();
  } finally {
    await c.cleanup();
  }
});

test('a node whose certificate another CA signed never links', async () => {
  // n3's certificate names it, but the other CA signed it (and n3 trusts
  // only that one): the other nodes refuse it and it refuses them.
  const conf = (i) => `replicas = 1\n${i === 2 ? tlsConf('x3', 'other') : tlsConf(`n${i + 1}`, 'ca')}`;
  const c = await startCluster(3, { conf });
  try {
    const [n1, n2, n3] = c.nodes;
    await until(async () => (await reach(n1)) === 'n1:true n2:true n3:false', 10000, 'n1-n2 up, n3 out');
    await until(() => /event=peer_auth_failed node=n3 \S+ reason="TLS: [^"]*certificate verify failed/.test(n1.stderr),
      10000, 'n1 to log why');
    await until(() => /event=peer_auth_failed node=\S+ \S+ reason="TLS: [^"]*/.test(n2.stderr), 10000, 'n2 to log it');
    assert.equal(await reach(n3), 'n1:false n2:false n3:true');
    const m = await (await fetch(`${n1.url}/metrics`)).text();
    assert.equal(metric(m, 'dosqld_cluster_links_up'), 1);
    assert.ok(metric(m, 'dosqld_cluster_auth_failures_total') >= 1);
  } finally {
    await c.cleanup();
  }
});

test('bad TLS settings are refused at start, naming the key', async () => {
  const secret = secretFile(dir);
  const [p1, p2] = [await freePort(), await freePort()];
  const base = `[cluster]\nnode_id = n1\npeers = n1@127.0.0.1:${p1}, n2@127.0.0.1:${p2}\nsecret_file = ${secret}\n`;
  const run = (extra) => {
    const file = f(`c${Math.random()}.conf`);
    writeFileSync(file, base + extra);
    return runDosqld(['-c', file, '--data-dir', f('data'), '--listen', '127.0.0.1:0', '--check-config']);
  };
  let r = await run('tls = yes\n');
  assert.notEqual(r.code, 0);
  for (const key of ['tls_cert', 'tls_key', 'tls_ca'])
    assert.match(r.stderr, new RegExp(`cluster\\.tls = yes needs cluster\\.${key}`));
  r = await run(`tls_cert = ${f('n1.pem')}\n`);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /cluster\.tls_cert is set but cluster\.tls = no/);
  r = await run(tlsConf('n2', 'ca'));
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /cluster\.tls_cert: it does not name n1/);
  r = await run(tlsConf('n1', 'other'));
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /cluster\.tls_cert: it does not verify against tls_ca/);
  r = await run(`tls = yes\ntls_cert = ${f('n1.pem')}\ntls_key = ${f('n1.key')}\ntls_ca = ${f('none.pem')}\n`);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /cluster\.tls_ca: \S*none\.pem/);
  r = await run(`forward_listen = 127.0.0.1:${p2 + 1}\n`);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /cluster\.forward_listen is set but cluster\.tls = no/);
  r = await run(`${tlsConf('n1', 'ca')}forward_listen = nohost\n`);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /cluster\.forward_listen: 'nohost' is not HOST:PORT/);
  r = await run(`${tlsConf('n1', 'ca')}forward_listen = 0.0.0.0:${p2 + 1}\n`);
  assert.equal(r.code, 0, r.stderr);
  r = await run(tlsConf('n1', 'ca'));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /configuration ok/);
});
