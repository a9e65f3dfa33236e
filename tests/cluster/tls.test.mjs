// TLS between nodes (cluster.tls): three nodes link over mutual TLS and
// replicate a write to every copy; a node whose certificate another CA
// signed never links; bad TLS settings refuse to start, naming the key.
// Certificates are made with the openssl command, as an operator would.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { runDosqld } from '../integration/lib/harness.mjs';
import { clusterInfo, freePort, secretFile, startCluster, until } from './lib/cluster.mjs';

let dir;
const f = (name) => path.join(dir, name);
const openssl = (...args) => execFileSync('openssl', args, { stdio: 'ignore' });
const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function makeCA(name) {
  openssl('req', '-x509', ...EC, '-keyout', f(`${name}.key`), '-out', f(`${name}.pem`), '-days', '1',
    '-subj', `/CN=${name}`);
}

// A node's certificate as docs/replication.md asks: its id as a DNS
// subjectAltName, usable as a TLS server's and a client's.
function makeNodeCert(file, id, ca) {
  writeFileSync(f(`${file}.ext`), `subjectAltName=DNS:${id}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  openssl('req', '-new', ...EC, '-keyout', f(`${file}.key`), '-out', f(`${file}.csr`), '-subj', `/CN=${id}`);
  openssl('x509', '-req', '-in', f(`${file}.csr`), '-CA', f(`${ca}.pem`), '-CAkey', f(`${ca}.key`),
    '-set_serial', String(1000 + Math.floor(Math.random() * 1e6)), '-days', '1', '-out', f(`${file}.pem`),
    '-extfile', f(`${file}.ext`));
}

const tlsConf = (file, ca) => `tls = yes\ntls_cert = ${f(`${file}.pem`)}\ntls_key = ${f(`${file}.key`)}\ntls_ca = ${f(`${ca}.pem`)}\n`;

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'dosqld-peertls-'));
  makeCA('ca');
  makeCA('other');
  for (const id of ['n1', 'n2', 'n3']) makeNodeCert(id, id, 'ca');
  makeNodeCert('x3', 'n3', 'other');
});
after(() => rmSync(dir, { recursive: true, force: true }));

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
  r = await run(tlsConf('n1', 'ca'));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /configuration ok/);
});
