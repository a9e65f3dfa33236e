// Integration: file descriptors — what a database holds stays bounded
// however much history it keeps, the start-up check of the descriptor
// limit, and what clients see when the process runs out: RESOURCE_EXHAUSTED,
// never a path of the server's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { startDosqld } from './lib/harness.mjs';
import { post, query } from './lib/rpc.mjs';

// Descriptors of process `pid` open on files under `dir`.
function fdsUnder(pid, dir) {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target;
    try { target = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    if (target.startsWith(dir + '/')) n++;
  }
  return n;
}

test('a database written for long holds at most max_open_files_per_database + 4 descriptors; asOf reaches all its history', async () => {
  const d = await startDosqld({
    conf: '[storage]\nsegment_size = 64K\ncheckpoint_size = 64K\nmax_open_files_per_database = 4\n',
  });
  try {
    const dbDir = path.join(d.dir, 'data', 'db', 'long');
    await query(d.port, 'long', 'CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)');
    // 120 commits of 4 rows of 4 KB of noise: about 2 MB of log, a
    // checkpoint and a segment every 64 KB.
    const rowsAt = new Map();
    let rows = 0, most = 0;
    for (let i = 0; i < 120; i++) {
      const r = await query(d.port, 'long',
        'INSERT INTO t(b) SELECT randomblob(4000) FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4)');
      rows += 4;
      rowsAt.set(r.lsn, rows);
      most = Math.max(most, fdsUnder(d.proc.pid, dbDir));
    }
    const files = (sub, ext) => readdirSync(path.join(dbDir, sub)).filter((f) => f.endsWith(ext)).length;
    assert.ok(files('ckpt', '.ckpt') >= 20, `checkpoints: ${files('ckpt', '.ckpt')}`);
    assert.ok(files('wal', '.seg') >= 20, `segments: ${files('wal', '.seg')}`);
    assert.ok(most <= 8, `while written: ${most} descriptors`);
    // Time travel to old commits reads old checkpoints and segments.
    const lsns = [...rowsAt.keys()];
    for (const lsn of [lsns[0], lsns[7], lsns[33], lsns[60], lsns[99], lsns[lsns.length - 1]]) {
      const r = await post(d.port, '/v1/db/long/query', { sql: 'SELECT count(*), sum(length(b)) FROM t', asOf: { lsn } });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json.rows, [[rowsAt.get(lsn), rowsAt.get(lsn) * 4000]], `as of ${lsn}`);
      assert.ok(fdsUnder(d.proc.pid, dbDir) <= 8, `after asOf ${lsn}: ${fdsUnder(d.proc.pid, dbDir)} descriptors`);
    }
    const all = await query(d.port, 'long', 'SELECT count(*) FROM t WHERE length(b) = 4000');
    assert.deepEqual(all.rows, [[rows]]);
    assert.ok(fdsUnder(d.proc.pid, dbDir) <= 8, `${fdsUnder(d.proc.pid, dbDir)} descriptors`);
  } finally {
    await d.cleanup();
  }
});

test('a descriptor limit below what the configuration needs: a warning at start with the numbers', async () => {
  const low = await startDosqld({ nofile: 128 });
  try {
    // 10000 connections + 1000 databases x (16 + 4) + 16 object store requests + 128.
    assert.match(low.stderr,
      /level=warn event=fd_limit_low limit=128 needed=30144 max_connections=10000 max_open_actors=1000 max_open_files_per_database=16 /);
    assert.doesNotMatch(low.stderr, /event=fd_limit_raised/, 'soft = hard: nothing to raise');
  } finally {
    await low.cleanup();
  }
  const ok = await startDosqld({
    nofile: 1024,
    conf: '[server]\nmax_connections = 100\n[engine]\nmax_open_actors = 10\n',
  });
  try {
    assert.doesNotMatch(ok.stderr, /event=fd_limit_low/, '100 + 10 x 20 + 16 + 128 = 444 fit in 1024');
  } finally {
    await ok.cleanup();
  }
});

test('out of descriptors: new databases get RESOURCE_EXHAUSTED (503), and no response shows a server path', async () => {
  const d = await startDosqld({ nofile: 128 });
  try {
    const dataDir = path.join(d.dir, 'data');
    const seen = [];
    let exhausted = 0;
    // One keep-alive connection (fetch's pool), databases opened one by
    // one until several could not be: each holds its newest segment.
    for (let i = 0; i < 300 && exhausted < 5; i++) {
      const r = await post(d.port, `/v1/db/many${i}/query`, { sql: 'CREATE TABLE IF NOT EXISTS t(x)' });
      seen.push(r);
      if (r.status !== 200) {
        assert.equal(r.status, 503, r.text);
        assert.equal(r.json?.error?.code, 'RESOURCE_EXHAUSTED', r.text);
        assert.match(r.json.error.message, /too many open files/);
        exhausted++;
      }
    }
    assert.ok(exhausted >= 5, `no database failed to open under 128 descriptors (${seen.length} opened)`);
    // The same over JSON-RPC.
    const rpc = await post(d.port, '/v1/db/onemore/rpc', { id: 1, method: 'query', params: { sql: 'SELECT 1' } });
    seen.push(rpc);
    assert.equal(rpc.json?.error?.code, 'RESOURCE_EXHAUSTED', rpc.text);
    for (const r of seen) {
      assert.ok(!r.text.includes(dataDir) && !r.text.includes(d.dir), `a response names a server path: ${r.text}`);
    }
    // The log has the details, path included.
    assert.match(d.stderr, /Too many open files/);
    // Still serving, on the connection it has (a new one may not be
    // accepted while the process is at its limit).
    const again = await query(d.port, 'many0', 'SELECT count(*) FROM t');
    assert.deepEqual(again.rows, [[0]]);
  } finally {
    await d.cleanup();
  }
});
