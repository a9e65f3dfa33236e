// An etcd and n dosqld nodes that find each other through it (each
// node's peers names itself alone), for the tests of placement and
// failover on etcd. Every wait bounded; everything stopped by its pid.
//
//     const c = await startEtcdCluster(3, { conf: 'replicas = 3\n' });
//     c.nodes[i]               // startDosqld's handles (n1, n2, ...)
//     await c.assignment(db)   // dbs/<db> as etcd holds it, or null
//     await c.restart(i)       // node i again, with its data
//     await c.cleanup()
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { clusterInfo, freePort, secretFile, startAgain, until } from './cluster.mjs';
import { startEtcd } from './etcd.mjs';
import { FaultProxy } from './proxy.mjs';

export const PREFIX = '/t/';
const b64 = (s) => Buffer.from(s).toString('base64');

// With `etcdProxies`, each node reaches etcd through a FaultProxy of its
// own (c.etcdProxy(i)): a node cut off from etcd alone. With
// `peerProxies`, node i's links listen on 127.0.0.(i + 2) and leave from
// there, and the others reach them through a FaultProxy (advertised in
// etcd): c.isolate(i) cuts node i from every other node (not from etcd),
// c.rejoin(i) heals it.
export async function startEtcdCluster(n, { conf = '', ttl = '2s', etcdProxies = false, peerProxies = false } = {}) {
  const etcd = await startEtcd();
  const proxies = [];
  if (etcdProxies)
    for (let i = 0; i < n; i++) proxies.push(await new FaultProxy(etcd.port).start());
  const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-etcd-cluster-'));
  const secret = secretFile(dir);
  const ports = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  const linkHost = (i) => (peerProxies ? `127.0.0.${i + 2}` : '127.0.0.1');
  const peerProxy = [];
  if (peerProxies)
    for (let i = 0; i < n; i++) peerProxy.push(await new FaultProxy(ports[i], linkHost(i)).start());
  const nodes = [];
  const gone = []; // handles replaced by a restart: their directories hold the new one's data
  const c = { etcd, dir, nodes, ports, gone, etcdProxy: (i) => proxies[i] };
  const etcdUrl = (i) => (etcdProxies ? `http://127.0.0.1:${proxies[i].port}` : etcd.url);
  c.confOf = (i) => `[cluster]\nnode_id = n${i + 1}\npeers = n${i + 1}@${linkHost(i)}:${ports[i]}\nsecret_file = ${secret}\n` +
    (peerProxies ? `advertise = 127.0.0.1:${peerProxy[i].port}\n` : '') +
    `etcd = ${etcdUrl(i)}\netcd_prefix = ${PREFIX}\nnode_ttl = ${ttl}\nheartbeat_interval = 100ms\npeer_timeout = 1s\n${conf}`;
  c.byId = (id) => nodes[Number(id.slice(1)) - 1];
  c.isolate = (i) => {
    peerProxy[i].partition();
    for (let j = 0; j < n; j++) if (j !== i) peerProxy[j].block(linkHost(i));
  };
  c.rejoin = (i) => {
    peerProxy[i].heal();
    for (let j = 0; j < n; j++) if (j !== i) peerProxy[j].unblock(linkHost(i));
  };
  c.assignment = async (db) => {
    const r = await etcd.post('/v3/kv/range', { key: b64(`${PREFIX}dbs/${db}`) });
    const kv = r.kvs?.[0];
    return kv ? JSON.parse(Buffer.from(kv.value, 'base64').toString()) : null;
  };
  // Node i again (after a kill or a stop), with its data directory (the
  // first daemon's, however many times it was restarted).
  c.restart = async (i) => {
    const old = nodes[i];
    if (!old.exited) throw new Error(`node ${i} still runs`);
    gone.push(old);
    nodes[i] = await startAgain({ conf: c.confOf(i), dataDir: old.dataDir });
    return nodes[i];
  };
  // Wait until every running node in `live` links to every other.
  c.linked = async (live = nodes) => {
    for (const d of live)
      await until(async () => {
        const info = (await clusterInfo(d)).body.nodes;
        return live.every((o) => info.some((x) => x.id === `n${nodes.indexOf(o) + 1}` && x.reachable));
      }, 20000, 'every link up');
  };
  c.cleanup = async () => {
    const errs = [];
    for (const d of nodes) {
      try { await d.cleanup(); } catch (e) { errs.push(e); }
    }
    for (const d of gone) rmSync(d.dir, { recursive: true, force: true });
    for (const px of [...proxies, ...peerProxy]) await px.close();
    await etcd.stop();
    rmSync(dir, { recursive: true, force: true });
    if (errs.length) throw errs[0];
  };
  // Every node alive in every node's view of etcd, too: a database placed
  // before that gets fewer copies than `replicas` (a node not seen yet is
  // not chosen), which tests that count copies or kill one took for a bug.
  c.allAlive = async () => {
    for (const d of nodes)
      await until(async () => {
        const ns = (await clusterInfo(d)).body.nodes;
        return ns.length === n && ns.every((x) => x.etcd?.alive);
      }, 20000, 'every node alive in etcd');
  };
  try {
    for (let i = 0; i < n; i++) nodes.push(await startAgain({ conf: c.confOf(i) }));
    await c.linked();
    await c.allAlive();
  } catch (e) {
    await c.cleanup().catch(() => {});
    throw e;
  }
  return c;
}
