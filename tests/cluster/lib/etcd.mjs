// etcd — one etcd member (/usr/bin/etcd) for the cluster tests, on two
// free loopback ports (client and peer) with a data directory of its
// own, as tests/unit/support/etcd.h runs it: a 10 ms heartbeat and a
// 100 ms election timeout (it elects itself in ~100 ms; its shortest
// lease is 1 s). Every wait bounded; stopped by its pid.
//
//     const etcd = await startEtcd();   // etcd.url: "http://127.0.0.1:PORT"
//     ...
//     await etcd.stop();                // SIGTERM, SIGKILL after a bound; its directory removed
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { freePort, sleep } from './cluster.mjs';

const ETCD = process.env.ETCD ?? '/usr/bin/etcd';
const START_MS = 10000; // from spawn to a healthy member
const STOP_MS = 3000;   // from SIGTERM to SIGKILL

export async function startEtcd() {
  const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-etcd-'));
  const [port, peerPort] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${port}`, peer = `http://127.0.0.1:${peerPort}`;
  const logPath = path.join(dir, 'etcd.log');
  const log = openSync(logPath, 'a');
  const proc = spawn(ETCD, ['--name', 'default', '--data-dir', path.join(dir, 'data'),
    '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `default=${peer}`, '--heartbeat-interval', '10', '--election-timeout', '100'],
  { stdio: ['ignore', log, log] });
  closeSync(log);
  const e = { proc, dir, url, port, exited: null };
  e.exit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve(e.exited = { code, signal })));
  e.log = () => { try { return readFileSync(logPath, 'utf8'); } catch { return ''; } };
  e.stop = async () => {
    if (!e.exited) proc.kill('SIGTERM');
    const timer = setTimeout(() => { if (!e.exited) proc.kill('SIGKILL'); }, STOP_MS);
    await e.exit;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  };
  const end = Date.now() + START_MS;
  for (;;) {
    if (e.exited) {
      const text = e.log();
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`etcd exited (${JSON.stringify(e.exited)}) before it was healthy:\n${text.slice(-2000)}`);
    }
    try {
      const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
      if (r.status === 200 && (await r.json()).health === 'true') return e;
    } catch { /* not up yet */ }
    if (Date.now() >= end) {
      const text = e.log();
      await e.stop();
      throw new Error(`etcd at ${url} was not healthy within ${START_MS} ms:\n${text.slice(-2000)}`);
    }
    await sleep(20);
  }
}
