// Integration: many databases on a real dosqld — hibernation and wake-up,
// the open-actor bound, 10,000 databases (2,000 under a sanitizer), and a restart that keeps every
// committed row.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, existsSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir, sleep, Raw, metric } from './lib/harness.mjs';
import { query, call, untilHibernated } from './lib/rpc.mjs';

let d;
before(async () => {
  d = await startDosqld({ conf: '[engine]\nidle_timeout = 200ms\nmax_open_actors = 50\n' });
});
after(async () => { await d?.cleanup(); });

async function serverStats() {
  return (await call(d.port, '/v1/rpc', 'getStats', {})).result.server;
}

test('idle databases hibernate and wake with their data', async () => {
  await query(d.port, 'sleepy', 'CREATE TABLE t(x); INSERT INTO t VALUES (42)');
  const s = await untilHibernated(d.port);
  assert.equal(s.actorsOpen, 0, `still open: ${JSON.stringify(s)}`);
  assert.ok(s.actorsHibernated >= 1);
  const r = await query(d.port, 'sleepy', 'SELECT x FROM t');
  assert.deepEqual(r.rows, [[42]], 'woken with its data');
  const st = (await call(d.port, '/v1/db/sleepy/rpc', 'getStats', {})).result;
  assert.ok(st.database.lsn >= 1);
});

test('no more than max_open_actors databases are open at once', async () => {
  const names = Array.from({ length: 200 }, (_, i) => `lru-${i}`);
  for (let i = 0; i < names.length; i += 20) {
    await Promise.all(names.slice(i, i + 20).map((n) => query(d.port, n, 'CREATE TABLE t(x); INSERT INTO t VALUES (1)')));
  }
  const s = await serverStats();
  assert.ok(s.actorsOpen <= 50, `open: ${s.actorsOpen}`);
  const back = await Promise.all(names.map((n) => query(d.port, n, 'SELECT count(*) FROM t')));
  for (const r of back) assert.deepEqual(r.rows, [[1]]);
});

// 4,000 on the plain build (eighty times max_open_actors; `make bench`'s
// scale runs 10,000 and more, timed). A sanitizer build (SANITIZE, from
// make test) is several times slower per request: it does 1,500, still
// thirty times max_open_actors, so every path — creation, eviction,
// hibernation, wake-up — runs a thousand times and more either way.
const MANY = process.env.SANITIZE ? 1500 : 4000;

test(`${MANY.toLocaleString('en-US')} databases, each created and queried`, { timeout: 300000 }, async () => {
  const N = MANY, CONC = 32;
  let next = 0;
  const t0 = Date.now();
  async function worker(fn) {
    for (;;) {
      const i = next++;
      if (i >= N) return;
      await fn(i);
    }
  }
  await Promise.all(Array.from({ length: CONC }, () => worker((i) => query(d.port, `many-${i}`, `CREATE TABLE t(x); INSERT INTO t VALUES (${i})`))));
  const created = Date.now() - t0;
  next = 0;
  await Promise.all(Array.from({ length: CONC }, () => worker(async (i) => {
    const r = await query(d.port, `many-${i}`, 'SELECT x FROM t');
    assert.deepEqual(r.rows, [[i]], `many-${i}`);
  })));
  const list = await (await fetch(`http://127.0.0.1:${d.port}/v1/db`)).json();
  assert.ok(list.length >= N);
  // Past max_open_actors the least recently used close as others open;
  // one still busy closes once its last call is done (under load, a
  // moment after the replies): read again for up to 5 s.
  let s = await serverStats();
  for (let i = 0; i < 50 && s.actorsOpen > 50; i++) {
    await sleep(100);
    s = await serverStats();
  }
  assert.ok(s.actorsOpen <= 50, `${s.actorsOpen} databases open; max_open_actors is 50`);
  console.log(`# ${N} databases: created in ${created} ms, queried in ${Date.now() - t0 - created} ms; ${JSON.stringify(s)}`);
});

test('a restart keeps everything committed', { timeout: 60000 }, async () => {
  const dataDir = tempDir('dosqld-restart-');
  try {
    let e = await startDosqld({ dataDir });
    await query(e.port, 'keep', 'CREATE TABLE t(x TEXT)');
    for (let i = 0; i < 50; i++) await query(e.port, 'keep', 'INSERT INTO t VALUES (?)', [`row ${i}`]);
    await Promise.all(Array.from({ length: 20 }, (_, i) => query(e.port, `keep-${i}`, 'CREATE TABLE t(x); INSERT INTO t VALUES (?)', [i])));
    const before = await query(e.port, 'keep', 'SELECT count(*) FROM t');
    await e.cleanup(); // SIGTERM; must exit 0
    assert.ok(existsSync(path.join(dataDir, 'db', 'keep')));
    e = await startDosqld({ dataDir });
    const r = await query(e.port, 'keep', 'SELECT count(*) FROM t');
    assert.deepEqual(r.rows, [[50]]);
    assert.equal(r.lsn, before.lsn, 'the LSN survives too');
    for (let i = 0; i < 20; i++) assert.deepEqual((await query(e.port, `keep-${i}`, 'SELECT x FROM t')).rows, [[i]]);
    // The next commit continues the sequence.
    const w = await query(e.port, 'keep', 'INSERT INTO t VALUES (1)');
    assert.equal(w.lsn, before.lsn + 1);
    // kill -9: SQLite's WAL with synchronous=FULL keeps what was acknowledged.
    await query(e.port, 'keep', 'INSERT INTO t VALUES (2)');
    e.proc.kill('SIGKILL');
    await e.exit;
    e = await startDosqld({ dataDir });
    assert.deepEqual((await query(e.port, 'keep', 'SELECT count(*) FROM t')).rows, [[52]]);
    await e.cleanup();
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('pipelined queries past max_pipeline are all answered, in order', async () => {
  const e = await startDosqld({ conf: '[server]\nmax_pipeline = 4\n' });
  try {
    await query(e.port, 'pipe', 'CREATE TABLE t(x)');
    const c = await Raw.connect(e.port);
    let all = '';
    const N = 64;
    for (let i = 0; i < N; i++) {
      // Alternate two databases so answers are ready out of order.
      const db = i % 2 ? 'pipe' : `pipe-${i}`;
      const body = JSON.stringify({ sql: `SELECT ${i} AS i` });
      all += `POST /v1/db/${db}/query HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    }
    c.write(all);
    for (let i = 0; i < N; i++) {
      const r = await c.readResponse();
      assert.equal(r.status, 200);
      assert.deepEqual(r.json.rows, [[i]]);
    }
    c.destroy();
    assert.ok(await metric(e.port, 'dosqld_actors') >= 33);
    assert.ok(await metric(e.port, 'dosqld_engine_calls_total') >= 65);
  } finally {
    await e.cleanup();
  }
});

test('no room for the node journal: dosqld refuses to start, and says why', async (t) => {
  const { execFileSync } = await import('node:child_process');
  const dir = tempDir('dosqld-nojournal-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'ignore' });
  } catch {
    rmSync(dir, { recursive: true, force: true });
    t.skip('needs root to mount a 1 MiB tmpfs');
    return;
  }
  try {
    await assert.rejects(startDosqld({ dataDir: path.join(dir, 'data') }),
      /event=start_failed reason="cannot allocate .*journal\/0\d\.jnl: No space left on device"/);
  } finally {
    try { execFileSync('umount', [dir], { stdio: 'ignore' }); } catch { /* already gone */ }
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a full disk: writes fail with RESOURCE_EXHAUSTED, reads and the daemon go on', async (t) => {
  const { execFileSync } = await import('node:child_process');
  const dir = tempDir('dosqld-full-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', dir], { stdio: 'ignore' });
  } catch {
    rmSync(dir, { recursive: true, force: true });
    t.skip('needs root to mount an 8 MiB tmpfs');
    return;
  }
  let e;
  try {
    // The node journal is allocated at start (2 x 1 MiB here); the rest fills.
    e = await startDosqld({ dataDir: path.join(dir, 'data'), conf: '[storage]\njournal_size = 1M\n' });
    await query(e.port, 'full', 'CREATE TABLE t(x BLOB); INSERT INTO t VALUES (1)');
    let failed = null;
    for (let i = 0; i < 200 && !failed; i++) {
      const r = await query(e.port, 'full', 'INSERT INTO t VALUES (randomblob(65536))', undefined, { raw: true });
      if (r.status !== 200) failed = r;
    }
    assert.ok(failed, 'the disk filled up');
    assert.equal(failed.json.error.code, 'RESOURCE_EXHAUSTED', failed.text);
    assert.match(failed.json.error.message, /full/);
    // What was committed is still there, and the daemon answers.
    const r = await query(e.port, 'full', 'SELECT count(*) >= 1 FROM t');
    assert.deepEqual(r.rows, [[1]]);
    assert.equal((await fetch(`${e.url}/healthz`)).status, 200);
    await e.cleanup();
    e = null;
  } finally {
    if (e) await e.stop('SIGKILL');
    try { execFileSync('umount', [dir], { stdio: 'ignore' }); } catch { /* already gone */ }
    rmSync(dir, { recursive: true, force: true });
  }
});
