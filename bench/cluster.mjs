// bench/cluster.mjs — the measuring half of bench/cluster (which runs it
// on the clients' CPU, parses its figures and writes the summary): dosqld
// nodes on etcd, all started here, on 127.0.0.1, in $TMP.
//
//   1. failover: the primary's node of one database SIGKILLed KILLS times
//      while a probe writes through the other nodes every 50 ms; the time
//      to the first acknowledged write, how much of it etcd took to name
//      a new primary, against a static cluster (no etcd) whose follower
//      is promoted by hand at once;
//   2. routing: point reads (and writes) sent to the primary's node and to
//      a fourth node that holds no copy and passes them on;
//   3. placement: DBS new databases created through the 3 nodes, against
//      one node without etcd;
//   4. etcd traffic at rest: bytes, connections and requests of each node
//      to etcd, through a counting proxy per node, with SMALL databases
//      and again with DBS more.
//
//   node bench/cluster.mjs            (parameters from the environment:
//       DOSQLD WSLOAD TMP FIGURES KILLS DBS SMALL IDLE SECS ROUNDS
//       PIN_SERVER HZ ETCD)
//   node bench/cluster.mjs proxy ETCD_PORT N
//       (the counting proxies: bench/cluster.mjs starts this itself)
//
// Prints what it measures as it goes; the figures, as KEY=VALUE lines, go
// to FIGURES. Every wait is bounded; every process it started is stopped
// by its pid (SIGTERM, then SIGKILL), also when it fails.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { freePort } from '../tests/cluster/lib/cluster.mjs'; // (a port below the ephemeral range: a restarted node gets its own again)

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const b64 = (s) => Buffer.from(s).toString('base64');
const unb64 = (s) => Buffer.from(s, 'base64').toString();

// ---- The counting proxies (a process of their own) ----
// One listener per node, each passing bytes to etcd's client port and
// counting, from when it started: connections accepted and open, bytes
// node → etcd (up) and etcd → node (down), and HTTP requests ("POST
// /v3/...") in the up stream, by path. GET /stats on the control port
// answers them as JSON.
async function proxies(etcdPort, n) {
  const stats = [];
  const ports = [];
  for (let i = 0; i < n; i++) {
    const s = { accepted: 0, open: 0, up: 0, down: 0, requests: 0, paths: {} };
    stats.push(s);
    const server = net.createServer((client) => {
      s.accepted++;
      s.open++;
      client.setNoDelay(true);
      const up = net.connect({ host: '127.0.0.1', port: etcdPort });
      up.setNoDelay(true);
      let carry = '';
      client.on('data', (b) => {
        s.up += b.length;
        // A request line counts where it ends: in this chunk (one split
        // between two chunks is found whole with the carry).
        const text = carry + b.toString('latin1');
        for (const m of text.matchAll(/POST (\/v3\/[A-Za-z0-9_/]*) HTTP/g)) {
          if (m.index + m[0].length <= carry.length) continue;
          s.requests++;
          s.paths[m[1]] = (s.paths[m[1]] ?? 0) + 1;
        }
        carry = text.slice(-128);
        up.write(b);
      });
      up.on('data', (b) => {
        s.down += b.length;
        client.write(b);
      });
      let closed = false;
      const end = () => {
        if (closed) return;
        closed = true;
        s.open--;
        client.destroy();
        up.destroy();
      };
      for (const x of [client, up]) {
        x.on('close', end);
        x.on('error', end);
      }
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    ports.push(server.address().port);
  }
  const ctl = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats));
  });
  await new Promise((resolve) => ctl.listen(0, '127.0.0.1', resolve));
  console.log(JSON.stringify({ ports, ctl: ctl.address().port }));
  process.on('SIGTERM', () => process.exit(0));
}

if (process.argv[2] === 'proxy') {
  await proxies(Number(process.argv[3]), Number(process.argv[4]));
} else {
  await main();
}

// ---- Processes ----
function env(name, dflt) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (dflt === undefined) throw new Error(`bench/cluster.mjs: ${name} not set`);
    return dflt;
  }
  return v;
}

async function main() {
  const DOSQLD = env('DOSQLD');
  const WSLOAD = env('WSLOAD');
  const TMP = env('TMP');
  const FIGURES = env('FIGURES');
  const KILLS = Number(env('KILLS', '20'));
  const DBS = Number(env('DBS', '10000'));
  const SMALL = Number(env('SMALL', '100'));
  const IDLE = Number(env('IDLE', '30'));
  const SECS = Number(env('SECS', '5'));
  const ROUNDS = Number(env('ROUNDS', '3'));
  const HZ = Number(env('HZ', '100'));
  const ETCD = env('ETCD', '/usr/bin/etcd');
  const PIN = env('PIN_SERVER', '').split(' ').filter(Boolean);
  const SELF = fileURLToPath(import.meta.url);
  const GOAL_MS = 5000; // docs/cluster.md: writes resume within 5 s of the primary's death (node_ttl 3s)
  const PROBE_MS = 50;
  const PROBE_TIMEOUT_MS = 1000;
  const POLL_MS = 20;
  const CREATORS = 64; // requests in flight placing databases
  const KEYS = 10000;

  // The machine's 1-minute load average (other work on a shared machine
  // shows there), every 10 s: printed with each part and at the end.
  const load = () => Number(fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  const loads = [load()];
  setInterval(() => loads.push(load()), 10000).unref();
  const loadNote = () => `load average ${load().toFixed(2)}`;
  const children = new Set();
  const figures = [];
  const fig = (k, v) => figures.push(`${k}=${v}`);
  const say = (s) => console.log(s);
  let problems = 0;
  const problem = (s) => {
    problems++;
    console.error(`cluster: ${s}`);
  };

  // Killed at once if this process ends some other way (an exception).
  process.on('exit', () => {
    for (const c of children) try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
  });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(1));

  // A server process, pinned with the others; its output in LOG (appended).
  function launch(cmd, args, log, pipeOut = false) {
    const fd = fs.openSync(log, 'a');
    const argv = [...PIN, cmd, ...args];
    const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', pipeOut ? 'pipe' : fd, fd] });
    fs.closeSync(fd);
    const c = { proc, pid: proc.pid, exited: null };
    c.exit = new Promise((resolve) => proc.on('exit', (code, signal) => {
      c.exited = { code, signal };
      children.delete(c);
      resolve(c.exited);
    }));
    children.add(c);
    return c;
  }
  async function stop(c, ms = 15000) {
    if (!c || c.exited) return c?.exited;
    try { process.kill(c.pid, 'SIGTERM'); } catch { /* gone */ }
    const t = setTimeout(() => { try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ } }, ms);
    const e = await c.exit;
    clearTimeout(t);
    return e;
  }


  // One HTTP request on a connection of its own: { status, text, json, ms }
  // (status 0 when it did not get through or timed out).
  function request(port, method, route, body, timeoutMs = 15000, agent = false) {
    const t0 = now();
    return new Promise((resolve) => {
      const data = body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body));
      const headers = data === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) };
      const req = http.request({ host: '127.0.0.1', port, method, path: route, agent, headers }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { text += d; });
        res.on('end', () => {
          let json = null;
          try { json = JSON.parse(text); } catch { /* not JSON */ }
          resolve({ status: res.statusCode, text, json, ms: now() - t0 });
        });
        res.on('error', (e) => resolve({ status: 0, text: e.message, json: null, ms: now() - t0 }));
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
      req.on('error', (e) => resolve({ status: 0, text: e.message, json: null, ms: now() - t0 }));
      req.end(data);
    });
  }
  async function until(pred, ms, what) {
    const end = Date.now() + ms;
    let last = '';
    while (Date.now() < end) {
      try {
        if (await pred()) return;
      } catch (e) { last = e.message; }
      await sleep(50);
    }
    throw new Error(`waited ${ms} ms for ${what} in vain${last ? `: ${last}` : ''}`);
  }

  // ---- etcd: one member, its defaults but for its addresses ----
  const etcdDir = path.join(TMP, 'etcd');
  fs.mkdirSync(etcdDir, { recursive: true });
  const etcdPort = await freePort();
  const etcdPeer = await freePort();
  const etcdUrl = `http://127.0.0.1:${etcdPort}`;
  const etcd = launch(ETCD, ['--name', 'default', '--data-dir', path.join(etcdDir, 'data'),
    '--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl,
    '--listen-peer-urls', `http://127.0.0.1:${etcdPeer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${etcdPeer}`,
    '--initial-cluster', `default=http://127.0.0.1:${etcdPeer}`], path.join(etcdDir, 'log'));
  const etcdAgent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  const etcdPost = async (route, body) => {
    const r = await request(etcdPort, 'POST', route, body, 5000, etcdAgent);
    if (r.status !== 200 || !r.json) throw new Error(`etcd ${route}: ${r.status} ${r.text.slice(0, 200)}`);
    return r.json;
  };
  await until(async () => {
    if (etcd.exited) throw new Error(`etcd exited: ${fs.readFileSync(path.join(etcdDir, 'log'), 'utf8').slice(-1000)}`);
    const r = await request(etcdPort, 'GET', '/health', undefined, 1000);
    return r.status === 200 && r.json?.health === 'true';
  }, 20000, 'etcd healthy');
  const etcdVersion = (await request(etcdPort, 'GET', '/version', undefined, 2000)).json?.etcdserver ?? '?';
  const PREFIX = '/dosqld/';
  const prefixEnd = (p) => p.slice(0, -1) + String.fromCharCode(p.charCodeAt(p.length - 1) + 1);
  async function assignment(db) {
    const r = await etcdPost('/v3/kv/range', { key: b64(`${PREFIX}dbs/${db}`) });
    return r.kvs?.[0] ? JSON.parse(unb64(r.kvs[0].value)) : null;
  }
  async function countKeys(sub) {
    const p = `${PREFIX}${sub}`;
    const r = await etcdPost('/v3/kv/range', { key: b64(p), range_end: b64(prefixEnd(p)), count_only: true });
    return Number(r.count ?? 0);
  }
  async function aliveInEtcd() {
    const p = `${PREFIX}nodes/`;
    const r = await etcdPost('/v3/kv/range', { key: b64(p), range_end: b64(prefixEnd(p)), keys_only: true });
    return (r.kvs ?? []).map((kv) => unb64(kv.key).slice(p.length)).sort();
  }

  // ---- The counting proxies, one per etcd node (the 4th: n4's) ----
  const px = launch(process.execPath, [SELF, 'proxy', String(etcdPort), '4'], path.join(TMP, 'proxy.log'), true);
  const pxInfo = await Promise.race([
    new Promise((resolve, reject) => {
      let out = '';
      px.proc.stdout.on('data', (b) => {
        out += b;
        const nl = out.indexOf('\n');
        if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
      });
      px.exit.then(() => reject(new Error('the proxy process exited')));
    }),
    sleep(10000).then(() => { throw new Error('the proxy process did not start'); }),
  ]);
  const pxStats = async () => {
    const r = await request(pxInfo.ctl, 'GET', '/stats', undefined, 5000);
    if (r.status !== 200) throw new Error(`proxy stats: ${r.status}`);
    return r.json;
  };

  // ---- dosqld nodes ----
  const secret = path.join(TMP, 'cluster.secret');
  fs.writeFileSync(secret, `${crypto.randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  // A node: its directory, configuration, and a process started with its data.
  function makeNode(id, dir, conf) {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'dosqld.conf'), conf);
    return { id, dir, log: path.join(dir, 'log'), c: null, port: 0 };
  }
  async function startNode(n) {
    const from = fs.existsSync(n.log) ? fs.statSync(n.log).size : 0;
    n.c = launch(DOSQLD, ['-c', path.join(n.dir, 'dosqld.conf'), '--listen', '127.0.0.1:0',
      '--data-dir', path.join(n.dir, 'data'), '--log-level', 'info'], n.log);
    n.port = 0;
    await until(async () => {
      if (n.c.exited) throw new Error(`${n.id} exited: ${fs.readFileSync(n.log, 'utf8').slice(from).slice(-1500)}`);
      const m = /event=listening addr=127\.0\.0\.1:(\d+)/.exec(fs.readFileSync(n.log, 'utf8').slice(from));
      if (m) n.port = Number(m[1]);
      return n.port > 0;
    }, 20000, `${n.id} listening`);
    return n;
  }
  const killNode = async (n) => {
    process.kill(n.c.pid, 'SIGKILL');
    await n.c.exit;
  };
  const logSince = (n, from) => fs.readFileSync(n.log, 'utf8').slice(from);
  const logSize = (n) => fs.statSync(n.log).size;
  // Every node in LIVE lists all of them reachable over the links.
  async function linked(live, ms = 30000) {
    await until(async () => {
      for (const n of live) {
        const r = await request(n.port, 'GET', '/v1/cluster', undefined, 2000);
        const seen = r.json?.nodes ?? [];
        if (!live.every((o) => seen.some((x) => x.id === o.id && x.reachable))) return false;
      }
      return true;
    }, ms, `${live.map((n) => n.id).join(',')} linked`);
  }
  const query = (n, db, body, ms = 15000) => request(n.port, 'POST', `/v1/db/${db}/query`, body, ms);
  async function mustQuery(n, db, sql) {
    const r = await query(n, db, { sql });
    if (r.status !== 200) throw new Error(`${n.id} ${db}: ${sql.slice(0, 60)}: ${r.status} ${r.text.slice(0, 300)}`);
    return r.json;
  }

  const peersConf = (id, peers, extra) => `[cluster]\nnode_id = ${id}\npeers = ${peers}\nsecret_file = ${secret}\nreplicas = 3\n${extra}`;
  // The cluster on etcd: n1..n3 (n4 later), each reaching etcd through its proxy.
  const E = [];
  for (let i = 0; i < 4; i++) {
    const id = `n${i + 1}`;
    E.push(makeNode(id, path.join(TMP, id), peersConf(id, `${id}@127.0.0.1:${await freePort()}`,
      `etcd = http://127.0.0.1:${pxInfo.ports[i]}\n`)));
  }
  // The static cluster: s1..s3 listing each other in peers, no etcd.
  const sPorts = [await freePort(), await freePort(), await freePort()];
  const sPeers = sPorts.map((p, i) => `s${i + 1}@127.0.0.1:${p}`).join(', ');
  const S = [0, 1, 2].map((i) => makeNode(`s${i + 1}`, path.join(TMP, `s${i + 1}`), peersConf(`s${i + 1}`, sPeers, '')));
  const E3 = E.slice(0, 3);
  for (const n of [...E3, ...S]) await startNode(n);
  await until(async () => (await aliveInEtcd()).join() === 'n1,n2,n3', 30000, 'n1..n3 registered in etcd');
  await linked(E3);
  await linked(S);
  const dver = (/event=starting version=(\S+)/.exec(fs.readFileSync(E[0].log, 'utf8')) ?? [])[1] ?? '?';
  say(`cluster: etcd ${etcdVersion} (one member, its defaults), dosqld ${dver}: n1..n3 on etcd (node_ttl, peer_timeout`);
  say('  and heartbeat_interval at their defaults: 3s, 3s, 250ms; replicas = 3, commit_ack = quorum), each reaching etcd');
  say(`  through a counting proxy of its own; a static cluster s1..s3 alike without etcd; ${PIN.length ? 'servers (etcd, the proxies, dosqld) on CPU 1, clients on CPU 0' : 'unpinned'}`);

  // ---- 1. Failover ----
  const FO = 'fo';
  await mustQuery(E[0], FO, 'CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)');
  await mustQuery(S[0], FO, 'CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)');
  const f0 = (x) => (Number.isFinite(x) ? x.toFixed(0) : '-');
  const pct = (arr, p) => {
    if (!arr.length) return NaN;
    const s = [...arr].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  };
  // Writes every PROBE_MS through the nodes via() names, in turn, each with
  // a PROBE_TIMEOUT_MS timeout, whatever the previous one's fate.
  function probe(via, db) {
    const recs = [];
    const pending = new Set();
    let stopped = false;
    const t0 = now();
    const loop = (async () => {
      for (let k = 0; !stopped; k++) {
        const nodes = via();
        const n = nodes[k % nodes.length];
        const rec = { sent: now(), done: 0, ok: false, status: 0 };
        recs.push(rec);
        const p = query(n, db, { sql: 'INSERT INTO t(x) VALUES (1)' }, PROBE_TIMEOUT_MS).then((r) => {
          rec.done = now();
          rec.ok = r.status === 200;
          rec.status = r.status;
          rec.text = r.text;
          pending.delete(p);
        });
        pending.add(p);
        const wait = t0 + (k + 1) * PROBE_MS - now();
        if (wait > 0) await sleep(wait);
      }
    })();
    return {
      recs,
      firstAckAfter: (t) => recs.filter((r) => r.ok && r.sent >= t).reduce((a, r) => (a && a.done <= r.done ? a : r), null),
      stop: async () => {
        stopped = true;
        await loop;
        await Promise.all([...pending]);
      },
    };
  }
  // The node's own figure for its promotion: promoted ... lease_wait_ms=N.
  const leaseWait = (n, from, db) => {
    const m = [...logSince(n, from).matchAll(new RegExp(`event=promoted db=${db} epoch=\\d+ .*lease_wait_ms=(\\d+)`, 'g'))];
    return m.length ? Number(m[m.length - 1][1]) : NaN;
  };
  // Restarted with its data: linked to the others and holding the last write.
  async function rejoin(victim, all, primary, waitEtcd) {
    await startNode(victim);
    if (waitEtcd) await until(async () => (await aliveInEtcd()).join() === all.map((n) => n.id).join(), 30000, `${victim.id} back in etcd`);
    await linked(all);
    const w = await mustQuery(primary, FO, 'INSERT INTO t(x) VALUES (2)');
    await until(async () => {
      const r = await query(victim, FO, { sql: 'SELECT count(*) FROM t', consistency: 'replica', minLSN: w.lsn }, 12000);
      return r.status === 200;
    }, 30000, `${victim.id} caught up to lsn ${w.lsn}`);
  }
  // One kill on etcd: the assignment's primary's node.
  async function etcdKill(k) {
    const a = await assignment(FO);
    const victim = E3.find((n) => n.id === a.primary);
    const others = E3.filter((n) => n !== victim);
    const p = probe(() => others, FO);
    await until(async () => p.recs.filter((r) => r.ok).length >= 5, 10000, 'probe writes before the kill');
    const from = others.map(logSize);
    let detected = null;
    let polling = true;
    const poller = (async () => {
      const t0 = now();
      for (let i = 1; polling; i++) {
        const x = await assignment(FO).catch(() => null);
        if (x && x.epoch > a.epoch && x.primary !== victim.id) {
          detected = { at: now(), a: x };
          return;
        }
        const wait = t0 + i * POLL_MS - now();
        if (wait > 0) await sleep(wait);
      }
    })();
    // What etcd says of the victim's lease meanwhile (its remaining TTL,
    // -1 once revoked), every 250 ms: printed when etcd took long.
    const lease = (await etcdPost('/v3/kv/range', { key: b64(`${PREFIX}nodes/${victim.id}`) })).kvs?.[0]?.lease;
    const ttls = [];
    let tKill = now();
    const ttlSampler = (async () => {
      while (polling) {
        const t = await etcdPost('/v3/lease/timetolive', { ID: lease }).catch(() => null);
        ttls.push(`${(now() - tKill).toFixed(0)}:${t?.TTL ?? '?'}`);
        await sleep(250);
      }
    })();
    tKill = now();
    await killNode(victim);
    await until(async () => p.firstAckAfter(tKill) && detected, 30000, 'a write acknowledged after the kill, and a new primary in etcd')
      .catch((e) => problem(`etcd kill ${k}: ${e.message}`));
    polling = false;
    await poller;
    await ttlSampler;
    if (!detected || detected.at - tKill > 4000) say(`    etcd took ${detected ? f0(detected.at - tKill) : 'more than 30000'} ms: ${victim.id}'s lease ${lease} after the kill (ms:TTL s) ${ttls.join(' ')}`);
    await sleep(300);
    await p.stop();
    const ack = p.firstAckAfter(tKill);
    const failed = p.recs.filter((r) => r.sent >= tKill && !r.ok && (!ack || r.sent < ack.sent)).length;
    const np = detected ? E3.find((n) => n.id === detected.a.primary) : null;
    const lw = np ? leaseWait(np, from[others.indexOf(np)], FO) : NaN;
    const res = { victim: victim.id, to: np?.id ?? '?', ms: ack ? ack.done - tKill : NaN, det: detected ? detected.at - tKill : NaN, lease: lw, failed };
    await rejoin(victim, E3, np ?? others[0], true);
    return res;
  }
  // The primary of FO in the static cluster: the highest epoch any node reports.
  async function staticPrimary(live) {
    let best = null;
    for (const n of live) {
      const r = await request(n.port, 'GET', `/v1/cluster?database=${FO}`, undefined, 2000);
      const d = r.json?.database;
      if (d && (!best || d.epoch > best.epoch)) best = d;
    }
    return best;
  }
  async function staticKill(k) {
    const d = await staticPrimary(S);
    const victim = S.find((n) => n.id === d.primary);
    const others = S.filter((n) => n !== victim);
    const target = others[k % 2];
    const p = probe(() => others, FO);
    await until(async () => p.recs.filter((r) => r.ok).length >= 5, 10000, 'probe writes before the kill');
    const from = logSize(target);
    const tKill = now();
    await killNode(victim);
    const pr = await request(target.port, 'POST', '/v1/admin/promote', { database: FO }, 15000);
    const promoteMs = now() - tKill;
    if (pr.status !== 200) problem(`static kill ${k}: promote on ${target.id}: ${pr.status} ${pr.text.slice(0, 200)}`);
    await until(async () => p.firstAckAfter(tKill), 30000, 'a write acknowledged after the kill')
      .catch((e) => problem(`static kill ${k}: ${e.message}`));
    await sleep(300);
    await p.stop();
    const ack = p.firstAckAfter(tKill);
    const failed = p.recs.filter((r) => r.sent >= tKill && !r.ok && (!ack || r.sent < ack.sent)).length;
    const res = { victim: victim.id, to: target.id, ms: ack ? ack.done - tKill : NaN, promote: promoteMs, lease: leaseWait(target, from, FO), failed };
    await rejoin(victim, S, target, false);
    return res;
  }
  say('');
  say(`1. failover: SIGKILL of ${FO}'s primary's node, a probe writing through the two others every ${PROBE_MS} ms (${loadNote()})`);
  say(`   (${PROBE_TIMEOUT_MS} ms timeout each); the killed node restarted with its data and caught up before the next kill`);
  const ek = [];
  const sk = [];
  for (let k = 1; k <= KILLS; k++) {
    let e, s;
    if (k % 2) {
      e = await etcdKill(k);
      s = await staticKill(k);
    } else {
      s = await staticKill(k);
      e = await etcdKill(k);
    }
    ek.push(e);
    sk.push(s);
    const meets = e.ms <= GOAL_MS ? 'yes' : 'NO';
    say(`  kill ${String(k).padStart(2)} etcd ${e.victim}->${e.to}: writes after ${f0(e.ms)} ms (etcd named ${e.to} after ${f0(e.det)}, ` +
      `lease wait ${f0(e.lease)}, ${e.failed} writes failed) within 5 s: ${meets}; static ${s.victim}->${s.to} by hand: ${f0(s.ms)} ms ` +
      `(promote answered ${f0(s.promote)}, lease wait ${f0(s.lease)})`);
  }
  const ems = ek.map((x) => x.ms).filter(Number.isFinite);
  const dets = ek.map((x) => x.det).filter(Number.isFinite);
  const proms = ek.filter((x) => Number.isFinite(x.ms) && Number.isFinite(x.det)).map((x) => x.ms - x.det);
  const sms = sk.map((x) => x.ms).filter(Number.isFinite);
  const eLease = ek.map((x) => x.lease).filter(Number.isFinite);
  const sLease = sk.map((x) => x.lease).filter(Number.isFinite);
  const met = ek.filter((x) => x.ms <= GOAL_MS).length;
  fig('kills', KILLS);
  fig('kills_measured', ems.length);
  fig('met_5s', met);
  for (const [name, arr] of [['fo', ems], ['det', dets], ['prom', proms], ['st', sms], ['fo_lease', eLease], ['st_lease', sLease]])
    for (const [q, p] of [['p50', 0.5], ['p90', 0.9], ['p99', 0.99], ['max', 1]]) fig(`${name}_${q}`, f0(pct(arr, p)));
  fig('fo_min', f0(pct(ems, 0)));
  fig('det_min', f0(pct(dets, 0)));
  fig('st_min', f0(pct(sms, 0)));
  fig('fo_failed_writes_p50', f0(pct(ek.map((x) => x.failed), 0.5)));
  const row = (label, arr) => say(`  ${label.padEnd(46)} ${['p50', 'p90', 'p99', 'max'].map((q, i) => `${q} ${f0(pct(arr, [0.5, 0.9, 0.99, 1][i]))}`).join('  ')} ms`);
  say(`  over ${ems.length} kills (p99 of ${ems.length}: the largest but ${Math.floor(ems.length * 0.01)}):`);
  row('etcd: kill -> first acknowledged write', ems);
  row('  of which detection (kill -> etcd names one)', dets);
  row('  the rest: promotion, lease, first write', proms);
  row('  (the new primary\'s lease wait, its log)', eLease);
  row('static, promoted by hand at once', sms);
  row('  (its lease wait, its log)', sLease);
  const det35 = dets.filter((x) => x <= 3500).length;
  fig('det_within_3500', det35);
  say(`  writes again within 5 s of the kill (the goal, node_ttl 3s): ${met} of ${KILLS} kills${met === KILLS ? '' : ' — GOAL MISSED'};`);
  say(`  etcd named a new primary within 3.5 s (docs/cluster.md: the key goes 2 to 3.5 s after the death): ${det35} of ${dets.length}`);
  if (ems.length < KILLS) problem(`${KILLS - ems.length} etcd kills had no write acknowledged after them`);
  for (const n of S) await stop(n.c);

  // ---- 2. Routing through a node without a copy ----
  const RT = 'bench';
  const rtPrimaryId = await (async () => {
    await mustQuery(E[0], RT, 'CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)');
    await mustQuery(E[0], RT, 'CREATE TABLE c(k INTEGER PRIMARY KEY, v INTEGER)');
    await mustQuery(E[0], RT, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ${KEYS}) INSERT INTO kv SELECT i, printf('v%08d', i) FROM n`);
    return (await assignment(RT)).primary;
  })();
  const n4 = E[3];
  await startNode(n4);
  await until(async () => (await aliveInEtcd()).join() === 'n1,n2,n3,n4', 30000, 'n4 registered in etcd');
  await linked(E);
  const rtA = await assignment(RT);
  if (rtA.copies.includes('n4')) throw new Error(`${RT}'s copies include n4: ${JSON.stringify(rtA)}`);
  const rtP = E.find((n) => n.id === rtPrimaryId);
  const ticks = (pid) => {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    return Number(f[11]) + Number(f[12]);
  };
  const metric = async (n, name) => {
    const r = await request(n.port, 'GET', '/metrics', undefined, 5000);
    const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(r.text);
    return m ? Number(m[1]) : NaN;
  };
  const run = (cmd, args, extraEnv = {}) => new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b) => { out += b; });
    p.stderr.on('data', (b) => { out += b; });
    const t = setTimeout(() => p.kill('SIGKILL'), (SECS + 30) * 1000);
    p.on('exit', () => { clearTimeout(t); resolve(out); });
  });
  const POINT = '{"id":{{id}},"method":"query","params":{"sql":"SELECT v FROM kv WHERE k = ?","params":[{{key}}]}}';
  const INSERT = '{"id":{{id}},"method":"query","params":{"sql":"INSERT INTO c(v) VALUES (?)","params":[{{key}}]}}';
  const field = (k, s) => {
    const m = new RegExp(`(?:^|\\s)${k}=([0-9.]+)`).exec(s);
    return m ? Number(m[1]) : NaN;
  };
  // One workload run against PORT → { rps, p50, p99 } (µs).
  async function wl(kind, c, port) {
    if (kind === 'http') {
      const out = await run('wrk', ['-t1', `-c${c}`, `-d${SECS}s`, '--latency', '-s', 'bench/point_select.lua', `http://127.0.0.1:${port}`],
        { KEYS: String(KEYS) });
      const rps = Number((/Requests\/sec:\s+([0-9.]+)/.exec(out) ?? [])[1]);
      const bad = field('non200', out);
      const sock = /Socket errors: (.*)/.exec(out);
      if (!(rps > 0) || bad !== 0) problem(`wrk -c${c} :${port}: ${out.replace(/\s+/g, ' ').slice(0, 400)}`);
      return { rps, p50: field('p50_us', out), p99: field('p99_us', out), note: sock ? sock[1] : '' };
    }
    const out = await run(WSLOAD, ['-p', String(port), '-P', `/v1/db/${RT}/rpc`, '-c', String(c), '-d', '1', '-t', String(SECS),
      '-k', String(KEYS), '-m', kind === 'wsw' ? INSERT : POINT]);
    const line = (/^requests=.*$/m.exec(out) ?? [''])[0];
    if (!line || field('errors', line) !== 0 || field('conn_lost', line) !== 0) problem(`wsload ${kind} -c ${c} :${port}: ${out.replace(/\s+/g, ' ').slice(0, 400)}`);
    return { rps: field('rps', line), p50: field('p50_us', line), p99: field('p99_us', line), note: '' };
  }
  const WLS = [['wsr', 1, 'point read, WebSocket, 1 client'], ['wsr', 16, 'point read, WebSocket, 16 clients'],
    ['http', 1, 'point read, HTTP POST /query, 1 client'], ['http', 16, 'point read, HTTP POST /query, 16 clients'],
    ['wsw', 16, 'INSERT, WebSocket, 16 clients']];
  say('');
  say(`2. routing: ${RT} on ${rtA.copies.join(',')} (primary ${rtPrimaryId}); n4 started, holding no copy (${loadNote()}): requests to`);
  say(`   ${rtPrimaryId}'s port (direct) and to n4's (passed on to ${rtPrimaryId}); ${SECS} s runs, ${ROUNDS} round(s), the order`);
  say('   reversed in even rounds');
  for (const [kind, c] of WLS) await wl(kind, c, n4.port); // warm-up: connections, pages
  const rt = {};
  for (let r = 1; r <= ROUNDS; r++) {
    for (const [kind, c, label] of WLS) {
      const key = `${kind}${c}`;
      rt[key] ??= { d: [], f: [], cpu: [] };
      const fwd = async () => {
        const fw0 = await metric(n4, 'dosqld_forwarded_connections_total');
        const t0 = ticks(n4.c.pid);
        const x = await wl(kind, c, n4.port);
        const t1 = ticks(n4.c.pid);
        const fw1 = await metric(n4, 'dosqld_forwarded_connections_total');
        if (!(fw1 > fw0)) problem(`${label}: n4 passed no connection on (${fw0} -> ${fw1})`);
        x.cpu = x.rps > 0 ? ((t1 - t0) / HZ) * 1e6 / (x.rps * SECS) : NaN;
        return x;
      };
      let d, f;
      if (r % 2) {
        d = await wl(kind, c, rtP.port);
        f = await fwd();
      } else {
        f = await fwd();
        d = await wl(kind, c, rtP.port);
      }
      rt[key].d.push(d);
      rt[key].f.push(f);
      say(`  round ${r} ${label.padEnd(40)} direct ${d.rps.toFixed(0).padStart(6)}/s p50 ${d.p50} p99 ${d.p99} us;` +
        ` via n4 ${f.rps.toFixed(0).padStart(6)}/s p50 ${f.p50} p99 ${f.p99} us (n4: ${f.cpu.toFixed(1)} us CPU a request)${f.note ? ` [wrk: ${f.note}]` : ''}`);
    }
  }
  const med = (arr) => pct(arr, 0.5);
  const medLow = (arr) => { // the median (the mean of the middle two when even)
    const s = [...arr].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  say(`  medians (${ROUNDS} round(s))                                 direct                    via n4            via : direct`);
  for (const [kind, c, label] of WLS) {
    const x = rt[`${kind}${c}`];
    const m = (side, k) => medLow(x[side].map((y) => y[k]));
    const spread = (arr) => { const md = medLow(arr); return md > 0 ? ((Math.max(...arr) - Math.min(...arr)) / md * 100).toFixed(0) : '0'; };
    for (const side of ['d', 'f']) for (const k of ['rps', 'p50', 'p99']) fig(`rt_${kind}${c}_${side}_${k}`, m(side, k).toFixed(1));
    fig(`rt_${kind}${c}_f_cpu`, medLow(x.f.map((y) => y.cpu)).toFixed(1));
    fig(`rt_${kind}${c}_spread`, spread(x.f.map((y) => (c === 1 ? y.p50 : y.rps))));
    say(`  ${label.padEnd(42)} ${m('d', 'rps').toFixed(0).padStart(6)}/s ${m('d', 'p50').toFixed(0).padStart(5)} / ${m('d', 'p99').toFixed(0).padStart(5)} us` +
      `   ${m('f', 'rps').toFixed(0).padStart(6)}/s ${m('f', 'p50').toFixed(0).padStart(5)} / ${m('f', 'p99').toFixed(0).padStart(5)} us` +
      `   ${(m('f', 'rps') / m('d', 'rps')).toFixed(2)}x rate, ${(m('f', 'p50') / m('d', 'p50')).toFixed(2)}x p50`);
  }
  await stop(n4.c);
  await until(async () => (await aliveInEtcd()).join() === 'n1,n2,n3', 15000, 'n4 gone from etcd');

  // ---- 4 (first half). etcd traffic at rest, SMALL databases ----
  const CREATE = 'CREATE TABLE t(x)';
  // N databases NAMEi through NODES in turn, CREATORS requests in flight;
  // → { s, rate, p50, p99 (ms), retries, errors: { CODE: count } }. A
  // request that failed is an error of the run (counted by its code) and
  // is sent again (IF NOT EXISTS: a TIMEOUT's commit may have been made).
  async function place(nodes, prefix, n) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: CREATORS });
    const lat = [];
    const errors = {};
    let next = 0;
    let retries = 0;
    const t0 = now();
    await Promise.all(Array.from({ length: CREATORS }, async () => {
      for (let i = next++; i < n; i = next++) {
        const node = nodes[i % nodes.length];
        for (let tries = 0; ; tries++) {
          const sql = tries ? 'CREATE TABLE IF NOT EXISTS t(x)' : CREATE;
          const r = await request(node.port, 'POST', `/v1/db/${prefix}${i}/query`, { sql }, 30000, agent);
          if (r.status === 200) {
            lat.push(r.ms);
            break;
          }
          if (tries >= 5) throw new Error(`${prefix}${i} via ${node.id}: ${r.status} ${r.text.slice(0, 300)}`);
          const code = r.json?.error?.code ?? `HTTP_${r.status}`;
          errors[code] = (errors[code] ?? 0) + 1;
          if (retries++ < 3) console.error(`  ${prefix}${i} via ${node.id}: ${r.status} ${r.text.slice(0, 300)} after ${r.ms.toFixed(0)} ms`);
          await sleep(100);
        }
      }
    }));
    const s = (now() - t0) / 1000;
    agent.destroy();
    if (retries) problem(`placing ${n} databases: ${retries} requests failed (${Object.entries(errors).map(([k, v]) => `${k} ${v}`).join(', ')}) and were sent again`);
    return { s, rate: n / s, p50: pct(lat, 0.5), p99: pct(lat, 0.99), retries, errors };
  }
  const SETTLE = 5;
  async function atRest(label) {
    const dbs = await countKeys('dbs/');
    await sleep(SETTLE * 1000);
    const s0 = await pxStats();
    const t0 = now();
    await sleep(IDLE * 1000);
    const s1 = await pxStats();
    const secs = (now() - t0) / 1000;
    const per = [0, 1, 2].map((i) => {
      const paths = {};
      for (const [k, v] of Object.entries(s1[i].paths)) if (v - (s0[i].paths[k] ?? 0) > 0) paths[k] = v - (s0[i].paths[k] ?? 0);
      return {
        req: (s1[i].requests - s0[i].requests) / secs,
        up: (s1[i].up - s0[i].up) / secs,
        down: (s1[i].down - s0[i].down) / secs,
        conns: s1[i].accepted - s0[i].accepted,
        open: s1[i].open,
        paths,
      };
    });
    say(`  ${label}: ${dbs} databases in etcd, ${IDLE} s at rest (after ${SETTLE} s):`);
    for (const [i, x] of per.entries())
      say(`    n${i + 1}: ${x.req.toFixed(2)} requests/s, ${x.up.toFixed(0)} B/s to etcd, ${x.down.toFixed(0)} B/s from it; ` +
        `${x.conns} connections opened, ${x.open} open; ${Object.entries(x.paths).map(([k, v]) => `${k} ${v}`).join(', ') || 'no requests'}`);
    return { dbs, per };
  }
  say('');
  say(`4. etcd traffic at rest (bytes both ways through each node's proxy; requests: "POST /v3/..." sent; ${loadNote()})`);
  await place(E3, 's', Math.max(0, SMALL - await countKeys('dbs/')));
  const small = await atRest('small');

  // ---- 3. Placing DBS new databases ----
  say('');
  say(`3. placing ${DBS} new databases: CREATE TABLE t(x) on each new name, ${CREATORS} in flight, sent to n1, n2, n3 in turn (${loadNote()})`);
  const pl = await place(E3, 'p', DBS);
  const p = `${PREFIX}dbs/p`;
  const all = await etcdPost('/v3/kv/range', { key: b64(p), range_end: b64(prefixEnd(p)) });
  const prim = { n1: 0, n2: 0, n3: 0 };
  for (const kv of all.kvs ?? []) prim[JSON.parse(unb64(kv.value)).primary]++;
  say(`  3 nodes on etcd: ${DBS} in ${pl.s.toFixed(1)} s, ${pl.rate.toFixed(0)} databases/s, p50 ${pl.p50.toFixed(1)} / p99 ${pl.p99.toFixed(1)} ms a request` +
    ` (${pl.retries} failed and were sent again${pl.retries ? `: ${Object.entries(pl.errors).map(([k, v]) => `${k} ${v}`).join(', ')}` : ''}); primaries n1 ${prim.n1}, n2 ${prim.n2}, n3 ${prim.n3}`);
  fig('pl_n', DBS);
  fig('pl_s', pl.s.toFixed(2));
  fig('pl_rate', pl.rate.toFixed(1));
  fig('pl_p50', pl.p50.toFixed(2));
  fig('pl_p99', pl.p99.toFixed(2));
  fig('pl_retries', pl.retries);
  for (const k of ['n1', 'n2', 'n3']) fig(`pl_prim_${k}`, prim[k]);
  if ((all.kvs ?? []).length !== DBS) problem(`etcd holds ${(all.kvs ?? []).length} dbs/p* keys, not ${DBS}`);

  // ---- 4 (second half). At rest with DBS more ----
  say('');
  const big = await atRest('large');
  const indep = [0, 1, 2].every((i) => {
    const a = small.per[i], b = big.per[i];
    return b.req <= a.req * 1.25 + 0.1 && b.up <= a.up * 1.25 + 50 && b.down <= a.down * 1.25 + 50;
  });
  const avg = (set, k) => set.per.reduce((s, x) => s + x[k], 0) / 3;
  fig('idle_small_dbs', small.dbs);
  fig('idle_big_dbs', big.dbs);
  for (const [name, set] of [['small', small], ['big', big]]) {
    fig(`idle_${name}_req`, avg(set, 'req').toFixed(2));
    fig(`idle_${name}_up`, avg(set, 'up').toFixed(0));
    fig(`idle_${name}_down`, avg(set, 'down').toFixed(0));
    fig(`idle_${name}_conns`, set.per.reduce((s, x) => s + x.conns, 0));
  }
  fig('idle_independent', indep ? 'yes' : 'no');
  const others = [...new Set([small, big].flatMap((set) => set.per.flatMap((x) => Object.keys(x.paths))))].filter((k) => k !== '/v3/lease/keepalive');
  fig('idle_only_renewals', others.length ? 'no' : 'yes');
  say(`  per node (mean of 3): ${avg(small, 'req').toFixed(2)} requests/s, ${avg(small, 'up').toFixed(0)} + ${avg(small, 'down').toFixed(0)} B/s` +
    ` with ${small.dbs} databases; ${avg(big, 'req').toFixed(2)} requests/s, ${avg(big, 'up').toFixed(0)} + ${avg(big, 'down').toFixed(0)} B/s with ${big.dbs}`);
  say(`  independent of the number of databases (each node's figures with ${big.dbs} within 1.25x of ${small.dbs}'s): ${indep ? 'yes' : 'NO'}`);
  say(`  requests at rest other than lease renewals (/v3/lease/keepalive): ${others.length ? others.join(', ') : 'none'}`);
  if (!indep) problem('etcd traffic at rest grows with the number of databases');

  // ---- 3 (peer). One node without etcd ----
  const singleLoad = loadNote();
  const one = makeNode('single', path.join(TMP, 'single'), '');
  await startNode(one);
  const sp = await place([one], 'p', DBS);
  await stop(one.c);
  say('');
  say(`3. (peer) one node without etcd: ${DBS} in ${sp.s.toFixed(1)} s, ${sp.rate.toFixed(0)} databases/s, p50 ${sp.p50.toFixed(1)} / p99 ${sp.p99.toFixed(1)} ms a request` +
    ` (${sp.retries} failed and were sent again; ${singleLoad})`);
  fig('single_retries', sp.retries);
  fig('single_s', sp.s.toFixed(2));
  fig('single_rate', sp.rate.toFixed(1));
  fig('single_p50', sp.p50.toFixed(2));
  fig('single_p99', sp.p99.toFixed(2));

  // ---- The end: every node still up; what they logged ----
  for (const n of E3) if (n.c.exited) problem(`${n.id} died: ${JSON.stringify(n.c.exited)}`);
  const events = {};
  for (const n of [...E, ...S, one]) {
    for (const m of fs.readFileSync(n.log, 'utf8').matchAll(/level=(warn|error) event=(\S+)/g)) events[`${m[1]}:${m[2]}`] = (events[`${m[1]}:${m[2]}`] ?? 0) + 1;
  }
  say('');
  say(`  warnings and errors the nodes logged (all nodes, all parts): ${Object.entries(events).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`);
  loads.push(load());
  say(`  the machine's load average (1 min) every 10 s: at the start ${loads[0].toFixed(2)}, median ${pct(loads, 0.5).toFixed(2)}, max ${Math.max(...loads).toFixed(2)}, at the end ${loads[loads.length - 1].toFixed(2)}`);
  fig('load_start', loads[0].toFixed(2));
  fig('load_median', pct(loads, 0.5).toFixed(2));
  fig('load_max', Math.max(...loads).toFixed(2));
  fig('problems', problems);
  fs.writeFileSync(FIGURES, `${figures.join('\n')}\n`);
  // (All at once: one stopped after the others would try to take over
  // their databases first.)
  await Promise.all(E3.map((n) => stop(n.c)));
  await stop(px);
  await stop(etcd);
  etcdAgent.destroy();
  process.exit(problems ? 1 : 0);
}
