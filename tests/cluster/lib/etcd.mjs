// etcd — one etcd member (/usr/bin/etcd) for the cluster tests, on two
// free loopback ports (client and peer) with a data directory of its
// own, as tests/unit/support/etcd.h runs it: a 10 ms heartbeat and a
// 100 ms election timeout (it elects itself in ~100 ms; its shortest
// lease is 1 s). Every wait bounded; stopped by its pid.
//
//     const etcd = await startEtcd();   // etcd.url: "http://127.0.0.1:PORT"
//     await etcd.post('/v3/auth/user/add', { name: 'root', password: 'pw' });  // its JSON gateway
//     ...
//     await etcd.stop();                // SIGTERM, SIGKILL after a bound; its directory removed
//     await etcd.kill(); await etcd.restart();   // killed, then back with its ports and data
//
// With `tls` (PEM paths: cert and key, the member's; ca, the CA whose
// client certificates it accepts; clientCert and clientKey, the ones
// this helper presents), the member serves https on its client URL and
// asks every client for a certificate (--client-cert-auth); etcd.url is
// then "https://127.0.0.1:PORT".
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { freePort, sleep } from './cluster.mjs';

const ETCD = process.env.ETCD ?? '/usr/bin/etcd';
const START_MS = 10000;  // from spawn to a healthy member
const STOP_MS = 3000;    // from SIGTERM to SIGKILL
const REQUEST_MS = 2000; // one request of this helper's

// One request to the member: { status, text }. A fresh connection each
// time (agent: false), so nothing is left open when etcd stops.
function request(e, method, route, body, token) {
  const mod = e.url.startsWith('https:') ? https : http;
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = token; // (etcd takes the token as is: no "Bearer")
  return new Promise((resolve, reject) => {
    const req = mod.request(`${e.url}${route}`, { method, headers, agent: false, ...e.tlsOptions }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.setTimeout(REQUEST_MS, () => req.destroy(new Error(`${method} ${route}: no answer in ${REQUEST_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

export async function startEtcd({ tls } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-etcd-'));
  const [port, peerPort] = [await freePort(), await freePort()];
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`, peer = `http://127.0.0.1:${peerPort}`;
  const logPath = path.join(dir, 'etcd.log');
  const tlsArgs = tls
    ? ['--cert-file', tls.cert, '--key-file', tls.key, '--trusted-ca-file', tls.ca, '--client-cert-auth']
    : [];
  const args = ['--name', 'default', '--data-dir', path.join(dir, 'data'),
    '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `default=${peer}`, '--heartbeat-interval', '10', '--election-timeout', '100', ...tlsArgs];
  const e = { dir, url, port, exited: null };
  // (Re)start the member with the same ports and data directory.
  const launch = () => {
    const log = openSync(logPath, 'a');
    const proc = spawn(ETCD, args, { stdio: ['ignore', log, log] });
    closeSync(log);
    e.proc = proc;
    e.exited = null;
    e.exit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve(e.exited = { code, signal })));
  };
  launch();
  e.tlsOptions = tls
    ? { ca: readFileSync(tls.ca), cert: readFileSync(tls.clientCert), key: readFileSync(tls.clientKey) }
    : {};
  e.log = () => { try { return readFileSync(logPath, 'utf8'); } catch { return ''; } };
  // POST a JSON body to the gateway (token: with auth on); its answer,
  // parsed. Throws unless etcd answers 200.
  e.post = async (route, body, token) => {
    const r = await request(e, 'POST', route, JSON.stringify(body), token);
    if (r.status !== 200) throw new Error(`etcd ${route}: ${r.status} ${r.text}`);
    return JSON.parse(r.text);
  };
  e.stop = async () => {
    if (!e.exited) e.proc.kill('SIGTERM');
    const timer = setTimeout(() => { if (!e.exited) e.proc.kill('SIGKILL'); }, STOP_MS);
    await e.exit;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  };
  // Killed (SIGKILL), its data kept; e.restart() starts it again.
  e.kill = async () => {
    if (!e.exited) e.proc.kill('SIGKILL');
    await e.exit;
  };
  const healthy = async () => {
    const end = Date.now() + START_MS;
    for (;;) {
      if (e.exited) {
        const text = e.log();
        rmSync(dir, { recursive: true, force: true });
        throw new Error(`etcd exited (${JSON.stringify(e.exited)}) before it was healthy:\n${text.slice(-2000)}`);
      }
      try {
        const r = await request(e, 'GET', '/health');
        if (r.status === 200 && JSON.parse(r.text).health === 'true') return e;
      } catch { /* not up yet */ }
      if (Date.now() >= end) {
        const text = e.log();
        await e.stop();
        throw new Error(`etcd at ${url} was not healthy within ${START_MS} ms:\n${text.slice(-2000)}`);
      }
      await sleep(20);
    }
  };
  e.restart = async () => {
    if (!e.exited) throw new Error('etcd still runs');
    launch();
    return healthy();
  };
  return healthy();
}
