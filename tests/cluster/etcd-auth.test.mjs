// Getting into an etcd that does not let everyone in: nodes with
// [cluster] etcd_user and etcd_password_file register and link up
// through an etcd with auth on, and a node with a wrong password does
// not get in; then an etcd that serves https only and asks for client
// certificates (etcd_ca, etcd_cert, etcd_key).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { startDosqld } from '../integration/lib/harness.mjs';
import { Certs } from './lib/certs.mjs';
import { clusterInfo, freePort, secretFile, sleep, until } from './lib/cluster.mjs';
import { startEtcd } from './lib/etcd.mjs';

const PREFIX = '/t/';

// "n1:true n2:true": every node this one lists, by id.
const reach = async (d) => (await clusterInfo(d)).body.nodes.map((n) => `${n.id}:${n.reachable}`).sort().join(' ');

const b64 = (s) => Buffer.from(s).toString('base64');

// Auth on, as an operator sets it up: root (etcd wants it before auth
// goes on), and `user` whose role may read and write below PREFIX only
// ("/t/" to "/t0", the key after every key with that prefix).
async function enableAuth(etcd, user, password) {
  await etcd.post('/v3/auth/user/add', { name: 'root', password: 'root-pw' });
  await etcd.post('/v3/auth/role/add', { name: 'root' });
  await etcd.post('/v3/auth/user/grant', { user: 'root', role: 'root' });
  await etcd.post('/v3/auth/user/add', { name: user, password });
  await etcd.post('/v3/auth/role/add', { name: 'dosqld-rw' });
  await etcd.post('/v3/auth/role/grant',
    { name: 'dosqld-rw', perm: { permType: 'READWRITE', key: b64(PREFIX), range_end: b64('/t0') } });
  await etcd.post('/v3/auth/user/grant', { user, role: 'dosqld-rw' });
  await etcd.post('/v3/auth/enable', {});
}

// Nodes n1..nN over one etcd, each with `etcdConf(i)` added to its
// [cluster] section; stopped, with etcd and dir, by run's end.
async function run(etcd, dir, body) {
  const nodes = [];
  const secret = secretFile(dir);
  const confOf = async (i, etcdConf) => `[cluster]\nnode_id = n${i + 1}\npeers = n${i + 1}@127.0.0.1:${await freePort()}\n` +
    `secret_file = ${secret}\netcd = ${etcd.url}\netcd_prefix = ${PREFIX}\nnode_ttl = 2s\n` +
    `heartbeat_interval = 100ms\npeer_timeout = 1s\n${etcdConf}`;
  const start = async (i, etcdConf) => {
    const d = await startDosqld({ conf: await confOf(i, etcdConf) });
    nodes.push(d);
    return d;
  };
  try {
    await body(start);
  } finally {
    const errs = [];
    for (const d of nodes) {
      try { await d.cleanup(); } catch (e) { errs.push(e); }
    }
    await etcd.stop();
    rmSync(dir, { recursive: true, force: true });
    if (errs.length) throw errs[0];
  }
}

test('with etcd auth on: nodes with the password link up, one with a wrong password does not get in', async () => {
  const etcd = await startEtcd();
  const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-etcd-auth-'));
  await run(etcd, dir, async (start) => {
    await enableAuth(etcd, 'dosqld', 'dosqld-pw');
    const good = secretFile(dir, 'dosqld-pw');
    const bad = secretFile(dir, 'not-the-pw');
    const n1 = await start(0, `etcd_user = dosqld\netcd_password_file = ${good}\n`);
    const n2 = await start(1, `etcd_user = dosqld\netcd_password_file = ${good}\n`);
    const n3 = await start(2, `etcd_user = dosqld\netcd_password_file = ${bad}\n`);
    for (const d of [n1, n2])
      await until(async () => (await reach(d)) === 'n1:true n2:true', 10000, 'n1 and n2 linked');
    assert.match(n1.stderr, /event=topo_registered node=n1/);
    // (Whichever of its etcd clients is told first: the node's registration
    // or the assignments'. etcd checks a password slowly, bcrypt, so under
    // load a first attempt may time out instead.)
    await until(() => /event=(topo|assign)_etcd_down [^\n]*reason="[^"]*authentication failed/.test(n3.stderr), 15000,
      'n3 to say etcd refused it');
    assert.doesNotMatch(n3.stderr, /event=topo_registered/);
    assert.doesNotMatch(n3.stderr, /dosqld-pw|not-the-pw/, 'no password in the log');
    assert.doesNotMatch(n1.stderr, /dosqld-pw/, 'no password in the log');
    // n3 never made it into etcd: the others do not list it
    await sleep(500);
    assert.equal(await reach(n1), 'n1:true n2:true');
    assert.equal(await reach(n3), 'n3:true');
  });
});

test('etcd over https with client certificates: nodes with etcd_ca, etcd_cert and etcd_key link up', async () => {
  const certs = new Certs();
  try {
    certs.ca('ca');
    certs.node('etcd', 'etcd', 'ca', 'IP:127.0.0.1');
    certs.node('client', 'dosqld', 'ca');
    const etcd = await startEtcd({ tls: { cert: certs.path('etcd.pem'), key: certs.path('etcd.key'),
      ca: certs.path('ca.pem'), clientCert: certs.path('client.pem'), clientKey: certs.path('client.key') } });
    assert.match(etcd.url, /^https:/);
    const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-etcd-tls-'));
    await run(etcd, dir, async (start) => {
      const tls = `etcd_ca = ${certs.path('ca.pem')}\netcd_cert = ${certs.path('client.pem')}\n` +
        `etcd_key = ${certs.path('client.key')}\n`;
      const n1 = await start(0, tls);
      const n2 = await start(1, tls);
      // without a client certificate, etcd does not let it in
      const n3 = await start(2, `etcd_ca = ${certs.path('ca.pem')}\n`);
      for (const d of [n1, n2])
        await until(async () => (await reach(d)) === 'n1:true n2:true', 10000, 'n1 and n2 linked');
      await until(() => /event=topo_etcd_down node=n3/.test(n3.stderr), 5000, 'n3 to say it cannot reach etcd');
      assert.doesNotMatch(n3.stderr, /event=topo_registered/);
      assert.equal(await reach(n1), 'n1:true n2:true');
    });
  } finally {
    certs.cleanup();
  }
});
