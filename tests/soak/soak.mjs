// tests/soak/soak.mjs — mixed load against one dosqld for a while, watching
// its resident memory and descriptors.
//
//   node tests/soak/soak.mjs [SECONDS] [OUT_DIR]      (make soak: 1800 s on an ASan build)
//
// The load, all at once, every loop bounded by the deadline:
//   - HTTP writers (INSERTs with a 200-byte blob, trimming old rows) and
//     readers (aggregates, read-only batches, asOf reads) over DBS databases;
//   - WebSocket clients running transactions (commit or rollback at
//     random) and read-only transactions;
//   - streams (queryStream), some abandoned by closing the socket mid-way;
//   - CDC subscribers that resubscribe from their last LSN now and then,
//     checking that LSNs only go up;
//   - clients that disconnect mid-request (a WebSocket closed while its
//     runaway query runs, an HTTP request dropped);
//   - hibernation (idle_timeout 2 s) and eviction (max_open_actors 12,
//     hot_tier_max_bytes 2 MiB) all along; the warm cache is 2 MiB, so
//     that it is full (and its bookkeeping at its size) after the warm-up:
//     at 16 MiB it was still filling at the end of a 30-minute run, its
//     chunks' bookkeeping growing with it. The report gives its fill after
//     the warm-up and at the end.
// Every SAMPLE seconds: VmRSS and the number of open descriptors of the
// daemon (/proc), and the heap's bytes in use (getStats: the allocator's
// own count, AddressSanitizer's on its build). AddressSanitizer keeps
// freed memory mapped at its high-water mark unless asked to give it back:
// the daemon runs with allocator_release_to_os_interval_ms, so that its
// resident memory follows what it uses. After a warm-up (the first third of the run) the mean
// of the last tenth must be within 5 % of the mean of the tenth after the
// warm-up, for both. Any error other than the expected ones (TIMEOUT from
// cancels and waits, TRANSACTION_NOT_FOUND after an expiry), any 5xx, a
// warn/error line in the daemon's log other than the expected events, a
// sanitizer report or an unclean exit fails the run.
//
// As a module: soak({ seconds, dosqld, conf, checkGrowth, log }) resolves
// to the report (tests/integration/soak.test.mjs runs a short one).
import { readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { startDosqld, sleep, within } from '../integration/lib/harness.mjs';
import { WsRpc } from '../integration/lib/rpc.mjs';

const DBS = 24;
const CDC_DBS = 3;
const EXPECTED = new Set(['TIMEOUT', 'TRANSACTION_NOT_FOUND']);
// Log events that the load provokes on purpose.
const EXPECTED_LOG = /event=(transaction_rolled_back|auth_disabled|client_gone|request_cancelled)/;
const RUNAWAY = 'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c';

export const SOAK_CONF = `[server]
max_connections = 1000
[engine]
idle_timeout = 2s
max_open_actors = 12
transaction_timeout = 5s
query_timeout = 5s
write_wait_timeout = 5s
[storage]
checkpoint_size = 256K
segment_size = 256K
hot_tier_max_bytes = 2M
history_retention = 30s
warm_cache_bytes = 2M
`;

const rnd = (n) => Math.floor(Math.random() * n);
const db = (i) => `soak-${i}`;

function rssKb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}
function fds(pid) { return readdirSync(`/proc/${pid}/fd`).length; }

// POST JSON with node:http (a fresh connection each time, closed after).
function postJson(port, p, body, ms = 15000) {
  return within(ms, new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: p, agent: false,
      headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, json, text });
      });
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  }), `POST ${p}`);
}

export async function soak({ seconds = 60, conf = SOAK_CONF, sample = 0, checkGrowth = seconds >= 300,
  outDir = null, log = console.log } = {}) {
  const asan = process.env.ASAN_OPTIONS ? `${process.env.ASAN_OPTIONS}:` : '';
  const d = await startDosqld({ conf, env: { ASAN_OPTIONS: `${asan}allocator_release_to_os_interval_ms=1000` } });
  const pid = d.proc.pid;
  const t0 = Date.now();
  const end = t0 + seconds * 1000;
  const live = () => Date.now() < end && !d.exited;
  const stats = { ops: 0, errors: {}, unexpected: [], events: 0, streams: 0, txns: 0, disconnects: 0 };
  const samples = [];
  const every = sample || Math.max(1, Math.min(15, Math.floor(seconds / 20)));

  function record(what, r) {
    stats.ops++;
    const code = r?.json?.error?.code ?? r?.error?.code;
    if (r?.status >= 500 && code === undefined) {
      stats.unexpected.push(`${what}: HTTP ${r.status} ${String(r.text).slice(0, 200)}`);
      return false;
    }
    if (code === undefined) return true;
    stats.errors[code] = (stats.errors[code] ?? 0) + 1;
    if (!EXPECTED.has(code) && stats.unexpected.length < 50) {
      stats.unexpected.push(`${what}: ${code} ${(r.json?.error ?? r.error).message}`);
    }
    return false;
  }
  const failed = (what, err) => {
    if (live() && stats.unexpected.length < 50) stats.unexpected.push(`${what}: ${err.message}`);
  };
  const q = (i, sql, params) => postJson(d.port, `/v1/db/${db(i)}/query`, params ? { sql, params } : { sql });

  for (let i = 0; i < DBS; i++) {
    const r = await q(i, 'CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)');
    record('create', r);
  }

  const writer = async () => {
    while (live()) {
      const i = rnd(DBS);
      try {
        record('insert', await q(i, 'INSERT INTO t(v, pad) VALUES (?, randomblob(200))', [rnd(1e6)]));
        if (rnd(20) === 0) record('trim', await q(i, 'DELETE FROM t WHERE id < (SELECT max(id) - 300 FROM t)'));
      } catch (e) { failed('writer', e); }
    }
  };
  const reader = async () => {
    while (live()) {
      const i = rnd(DBS);
      try {
        const r = await q(i, 'SELECT count(*), sum(length(pad)) FROM t');
        if (record('select', r) && rnd(4) === 0 && r.json.lsn > 1) {
          record('asOf', await postJson(d.port, `/v1/db/${db(i)}/query`,
            { sql: 'SELECT count(*) FROM t', asOf: { lsn: r.json.lsn - 1 } }));
        }
        record('batch', await postJson(d.port, `/v1/db/${db(i)}/rpc`, { id: 1, method: 'batch',
          params: { statements: [{ sql: 'SELECT max(id) FROM t' }, { sql: 'SELECT 1' }] } }));
      } catch (e) { failed('reader', e); }
    }
  };
  const transactions = async () => {
    while (live()) {
      let ws;
      try {
        ws = await WsRpc.open(d.port, '/v1/rpc');
        for (let k = 0; k < 20 && live(); k++) {
          const database = db(rnd(DBS));
          const readOnly = rnd(4) === 0;
          const b = await ws.call('beginTransaction', { database, readOnly });
          if (!record('begin', b)) continue;
          const transactionId = b.result.transactionId;
          stats.txns++;
          if (!readOnly) {
            for (let j = 0; j < 3; j++) {
              record('txn insert', await ws.call('query', { database, transactionId,
                sql: 'INSERT INTO t(v, pad) VALUES (?, zeroblob(100))', params: [j] }));
            }
          }
          record('txn select', await ws.call('query', { database, transactionId, sql: 'SELECT count(*) FROM t' }));
          record('txn end', await ws.call(rnd(3) === 0 ? 'rollback' : 'commit', { database, transactionId }));
        }
      } catch (e) { failed('transactions', e); }
      ws?.ws.terminate();
    }
  };
  const streams = async () => {
    while (live()) {
      let ws;
      try {
        const i = rnd(DBS);
        ws = await WsRpc.open(d.port, `/v1/db/${db(i)}/rpc`);
        const abandon = rnd(3) === 0;
        const p = ws.call('queryStream', { sql: 'SELECT id, v FROM t', chunkSize: 50 }, 15000);
        if (abandon) {
          await sleep(rnd(20));
          ws.ws.terminate();
          stats.disconnects++;
          p.catch(() => {});
          continue;
        }
        record('stream', await p);
        stats.streams++;
      } catch (e) { failed('streams', e); }
      ws?.ws.terminate();
    }
  };
  const subscriber = async (i) => {
    let from;
    while (live()) {
      let ws;
      try {
        ws = await WsRpc.open(d.port, `/v1/db/${db(i)}/rpc`);
        const r = await ws.call('subscribeCDC', from === undefined ? {} : { fromLSN: from });
        if (!record('subscribe', r)) { await sleep(200); continue; }
        const until = Math.min(end, Date.now() + 2000 + rnd(8000));
        while (Date.now() < until && !d.exited) {
          await sleep(100);
          for (const n of ws.notes.splice(0)) {
            if (n.method === 'cdc') {
              if (from !== undefined && n.params.lsn < from) {
                stats.unexpected.push(`cdc ${db(i)}: lsn ${n.params.lsn} after ${from}`);
              }
              from = n.params.lsn;
              stats.events++;
            } else if (n.method === 'cdc.end') {
              stats.unexpected.push(`cdc ${db(i)} ended: ${JSON.stringify(n.params.error)}`);
            }
          }
        }
        // Resume from the last commit seen whole: its events all came in
        // one message, so `from` is whole once no more are pending.
      } catch (e) { failed('subscriber', e); }
      ws?.ws.terminate();
    }
  };
  const disconnecter = async () => {
    while (live()) {
      try {
        const i = rnd(DBS);
        if (rnd(2) === 0) {
          const ws = await WsRpc.open(d.port, `/v1/db/${db(i)}/rpc`);
          ws.ws.send(JSON.stringify({ id: 1, method: 'query', params: { sql: RUNAWAY } }));
          await sleep(20 + rnd(200));
          ws.ws.terminate();
        } else {
          const req = http.request({ host: '127.0.0.1', port: d.port, method: 'POST', agent: false,
            path: `/v1/db/${db(i)}/query`, headers: { 'content-type': 'application/json' } });
          req.on('error', () => {});
          req.end(JSON.stringify({ sql: RUNAWAY }));
          await sleep(20 + rnd(200));
          req.destroy();
        }
        stats.disconnects++;
        await sleep(100);
      } catch (e) { failed('disconnecter', e); }
    }
  };
  const sampler = async () => {
    while (live()) {
      try {
        const st = await postJson(d.port, '/v1/db/soak-0/rpc', { jsonrpc: '2.0', id: 1, method: 'getStats', params: {} });
        const srv = st.json?.result?.server;
        const heap = Math.round((srv?.heap?.inUse ?? NaN) / 1024);
        const warmCache = srv?.objectStore?.warmCache;
        samples.push({ t: Math.round((Date.now() - t0) / 1000), rss: rssKb(pid), fds: fds(pid), heap, ops: stats.ops,
          warmKb: Math.round((warmCache?.bytes ?? NaN) / 1024), warmChunks: warmCache?.chunks ?? NaN });
      } catch { /* it exited: the run fails below */ }
      await sleep(every * 1000);
    }
  };

  const tasks = [sampler(), writer(), writer(), writer(), reader(), reader(), transactions(), transactions(),
    streams(), disconnecter()];
  for (let i = 0; i < CDC_DBS; i++) tasks.push(subscriber(i));
  await Promise.all(tasks);

  const crashed = d.exited;
  let cleanup = null;
  try { await d.cleanup(); } catch (e) { cleanup = e.message; }
  const logged = d.stderr.split('\n').filter((l) => /level=(warn|error)/.test(l) && !EXPECTED_LOG.test(l));

  // Growth: the tenth after the warm-up against the last tenth.
  const mean = (xs, k) => xs.reduce((s, x) => s + x[k], 0) / Math.max(1, xs.length);
  const warm = seconds / 3, tenth = seconds / 10;
  const base = samples.filter((s) => s.t >= warm && s.t < warm + tenth);
  const last = samples.filter((s) => s.t >= seconds - tenth);
  const growth = {
    rss: base.length && last.length ? mean(last, 'rss') / mean(base, 'rss') - 1 : NaN,
    fds: base.length && last.length ? mean(last, 'fds') / mean(base, 'fds') - 1 : NaN,
    heap: base.length && last.length ? mean(last, 'heap') / mean(base, 'heap') - 1 : NaN,
  };
  const report = {
    seconds, ops: stats.ops, opsPerSecond: Math.round(stats.ops / seconds), txns: stats.txns,
    streams: stats.streams, cdcEvents: stats.events, disconnects: stats.disconnects, errors: stats.errors,
    unexpected: stats.unexpected, logged: logged.slice(0, 20), crashed, cleanup,
    rssKb: { first: samples[0]?.rss, afterWarmup: Math.round(mean(base, 'rss')), last: Math.round(mean(last, 'rss')),
      max: Math.max(...samples.map((s) => s.rss)) },
    fds: { first: samples[0]?.fds, afterWarmup: Math.round(mean(base, 'fds')), last: Math.round(mean(last, 'fds')),
      max: Math.max(...samples.map((s) => s.fds)) },
    heapKb: { first: samples[0]?.heap, afterWarmup: Math.round(mean(base, 'heap')), last: Math.round(mean(last, 'heap')),
      max: Math.max(...samples.map((s) => s.heap)) },
    // The warm cache fills up to warm_cache_bytes and then stays there:
    // whether it was full after the warm-up tells growth from filling.
    warmCache: { afterWarmup: { kb: Math.round(mean(base, 'warmKb')), chunks: Math.round(mean(base, 'warmChunks')) },
      last: { kb: Math.round(mean(last, 'warmKb')), chunks: Math.round(mean(last, 'warmChunks')) } },
    growth,
  };
  const problems = [];
  if (crashed) problems.push(`dosqld exited during the run: ${JSON.stringify(crashed)}`);
  if (cleanup) problems.push(`unclean stop: ${cleanup.slice(0, 500)}`);
  if (stats.unexpected.length) problems.push(`${stats.unexpected.length} unexpected errors`);
  if (logged.length) problems.push(`${logged.length} warn/error log lines`);
  if (checkGrowth && !(growth.rss < 0.05)) problems.push(`resident memory grew ${(growth.rss * 100).toFixed(1)} %`);
  if (checkGrowth && !(growth.fds < 0.05)) problems.push(`descriptors grew ${(growth.fds * 100).toFixed(1)} %`);
  report.problems = problems;
  if (outDir) {
    mkdirSync(outDir, { recursive: true });
    writeFileSync(path.join(outDir, 'samples.csv'),
      'seconds,rss_kb,fds,heap_kb,ops,warm_kb,warm_chunks\n' +
      samples.map((s) => `${s.t},${s.rss},${s.fds},${s.heap},${s.ops},${s.warmKb},${s.warmChunks}`).join('\n') + '\n');
    writeFileSync(path.join(outDir, 'report.json'), JSON.stringify(report, null, 2) + '\n');
  }
  log(JSON.stringify(report, null, 2));
  return report;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const seconds = Number(process.argv[2] ?? 1800);
  const outDir = process.argv[3] ?? null;
  const r = await soak({ seconds, outDir });
  if (r.problems.length) {
    console.error(`soak: FAILED: ${r.problems.join('; ')}`);
    process.exit(1);
  }
  console.log(`soak: passed (${seconds} s, ${r.ops} requests; RSS ${(r.growth.rss * 100).toFixed(1)} %, ` +
    `descriptors ${(r.growth.fds * 100).toFixed(1)} % after warm-up)`);
}
