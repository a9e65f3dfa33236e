// cluster — start several dosqld nodes on loopback, each with its own
// data directory, client port and peer port, sharing one secret; every
// wait bounded. Stop what was started by its pid (cleanup).
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';

import { sleep, startDosqld } from '../../integration/lib/harness.mjs';
import { FaultProxy } from './proxy.mjs';

export { sleep };

// The ports the kernel hands out as the source ports of connections.
function ephemeralRange() {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (lo > 0 && hi >= lo) return [lo, hi];
  } catch { /* not Linux: its default */ }
  return [32768, 60999];
}

// Ports this process reserved (see freePort), released when it exits.
const RESERVED = path.join(tmpdir(), 'dosqld-test-ports');
const mine = new Set();
process.on('exit', () => {
  for (const p of mine) try { rmSync(path.join(RESERVED, String(p)), { force: true }); } catch { /* gone */ }
});

// Reserve `port` for this process across the test files that run at the
// same time: a file named after it holds our pid. One whose process is
// gone is taken over.
function reserve(port) {
  mkdirSync(RESERVED, { recursive: true });
  const f = path.join(RESERVED, String(port));
  for (let i = 0; i < 2; i++) {
    try {
      writeFileSync(f, String(process.pid), { flag: 'wx' });
      mine.add(port);
      return true;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    let owner = 0;
    try { owner = Number(readFileSync(f, 'utf8')); } catch { /* removed meanwhile */ }
    try {
      if (owner > 0) { process.kill(owner, 0); return false; }
    } catch (e) {
      if (e.code === 'EPERM') return false;
    }
    rmSync(f, { force: true }); /* its owner is gone */
  }
  return false;
}

// A loopback port free now, for a node's peer listener, which a node
// restarted by a test must get again: so not one of the kernel's
// ephemeral ports (any outgoing connection could take that as its source
// port while the node is down), but one below them, tried until one
// binds (at most 100 tries). It stays reserved for this process until it
// exits, so another test file running meanwhile never picks it while a
// node of ours is down or not listening yet.
export async function freePort() {
  const [lo] = ephemeralRange();
  const base = 10000, span = Math.max(1000, lo - base);
  for (let i = 0; i < 100; i++) {
    const port = base + crypto.randomInt(span);
    if (mine.has(port) || !reserve(port)) continue;
    const ok = await new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free loopback port below the ephemeral range after 100 tries');
}

// Write a secret file readable by its owner only; returns its path.
export function secretFile(dir, secret = crypto.randomBytes(32).toString('hex')) {
  const p = path.join(dir, `secret-${crypto.randomBytes(4).toString('hex')}`);
  writeFileSync(p, `${secret}\n`);
  chmodSync(p, 0o600);
  return p;
}

// Start `n` nodes n1..nN. `conf(i)` adds text to node i's config (after
// its [cluster] section's keys, so it may add more of them); `secrets`
// gives a node another secret file. With `proxies`, every link goes
// through a FaultProxy (proxy.mjs): c.proxy(i, j) is the one between
// nodes i and j (0-based), c.isolate(i) / c.rejoin(i) partition a node
// from all the others and heal it.
// A port we checked free can still be taken by a process outside these
// tests before the node binds it: a start that fails so is tried again,
// with fresh ports when `fresh` says how to get them (a first start), or
// after a pause on the same ones (a restart, whose port the others know).
export function portTaken(e) {
  return /address already in use/.test(String(e?.message ?? e));
}

export async function startAgain(opts, tries = 5) {
  for (let k = 1; ; k++) {
    try {
      return await startDosqld(opts);
    } catch (e) {
      if (k >= tries || !portTaken(e)) throw e;
      await sleep(1000);
    }
  }
}

export async function startCluster(n, opts = {}) {
  for (let k = 1; ; k++) {
    try {
      return await startClusterOnce(n, opts);
    } catch (e) {
      if (k >= 3 || !portTaken(e)) throw e;
    }
  }
}

async function startClusterOnce(n, { conf = () => '', secretFor = {}, proxies = false } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-cluster-'));
  const secret = secretFile(dir);
  const ports = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  const peers = ports.map((p, i) => `n${i + 1}@127.0.0.1:${p}`).join(', ');
  // The node with the smaller id dials: node i reaches node j > i through
  // the proxy of the pair.
  const pairs = new Map();
  if (proxies)
    for (let i = 0; i < n; i++)
      for (let j = i + 1; j < n; j++) pairs.set(`${i},${j}`, await new FaultProxy(ports[j]).start());
  const peersOf = (i) => ports.map((p, j) => {
    const px = j > i ? pairs.get(`${i},${j}`) : undefined;
    return `n${j + 1}@127.0.0.1:${px ? px.port : p}`;
  }).join(', ');
  const nodes = [];
  const c = { dir, secret, peers, peerPorts: ports, nodes };
  c.confOf = (i) => `[cluster]\nnode_id = n${i + 1}\npeers = ${proxies ? peersOf(i) : peers}\nsecret_file = ${secretFor[i] ?? secret}\n` +
    `heartbeat_interval = 100ms\npeer_timeout = 1s\n${conf(i)}`;
  c.proxy = (i, j) => pairs.get(i < j ? `${i},${j}` : `${j},${i}`);
  c.isolate = (i) => { for (let j = 0; j < n; j++) if (j !== i) c.proxy(i, j).partition(); };
  c.rejoin = (i) => { for (let j = 0; j < n; j++) if (j !== i) c.proxy(i, j).heal(); };
  try {
    for (let i = 0; i < n; i++) nodes.push(await startDosqld({ conf: c.confOf(i) }));
  } catch (e) {
    await Promise.all(nodes.map((d) => d.stop('SIGKILL')));
    for (const px of pairs.values()) await px.close();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  c.cleanup = async () => {
    const errs = [];
    for (const d of nodes) {
      try { await d.cleanup(); } catch (e) { errs.push(e); }
    }
    for (const px of pairs.values()) await px.close();
    rmSync(dir, { recursive: true, force: true });
    if (errs.length) throw errs[0];
  };
  return c;
}

export async function clusterInfo(d, query = '') {
  const r = await fetch(`${d.url}/v1/cluster${query}`);
  return { status: r.status, body: await r.json() };
}

// Poll `pred` (async) every 50 ms until true, for at most `ms`.
export async function until(pred, ms = 10000, what = 'condition') {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      if (await pred()) return;
    } catch (e) { last = e; }
    await sleep(50);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

// POST a JSON body; { status, body } (status 0 and a NETWORK error when
// the request did not get through).
export async function post(d, route, body, ms = 15000) {
  try {
    const r = await fetch(`${d.url}${route}`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(ms) });
    return { status: r.status, body: await r.json() };
  } catch (e) {
    return { status: 0, body: { error: { code: 'NETWORK', message: String(e) } } };
  }
}

// /v1/db/{db}/query with `extra` members (consistency, minLSN).
export const query = (d, db, sql, params, extra = {}) => post(d, `/v1/db/${db}/query`, { sql, params, ...extra });

// Writers: two loops inserting unique ids (from `from` up) into db's table
// t through the nodes `via()` names, round robin, until the function
// returned is awaited; onAck(id) for each id whose reply was 200. A
// failure waits 20 ms.
export function writers(via, db, onAck, from, timeout = 2000) {
  let stop = false;
  let next = from;
  let turn = 0;
  const run = async () => {
    while (!stop) {
      const nodes = via();
      const id = next++;
      const r = await post(nodes[turn++ % nodes.length], `/v1/db/${db}/query`,
        { sql: 'INSERT INTO t(id) VALUES (?)', params: [id] }, timeout);
      if (r.status === 200) onAck(id);
      else await sleep(20);
    }
  };
  const all = [run(), run()];
  return async () => { stop = true; await Promise.all(all); };
}
