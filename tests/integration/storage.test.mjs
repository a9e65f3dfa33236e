// Integration: dosqld's own storage — LSNs from the log, time travel with
// asOf (by LSN and by time, across checkpoints and restarts), the
// retention window, and what a database directory holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, openSync, readSync, writeSync, closeSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import { startDosqld, sleep, tempDir, syncShimPreload } from './lib/harness.mjs';
import { post, query, untilHibernated } from './lib/rpc.mjs';

const asOf = (port, db, sql, at) => post(port, `/v1/db/${db}/query`, { sql, asOf: at });

// Kill d with SIGKILL, start a daemon on its data directory alone (with
// `conf`), run fn on it, and stop it.
async function afterKill(d, fn, conf = '') {
  await d.stop('SIGKILL');
  const d2 = await startDosqld({ conf, dataDir: path.join(d.dir, 'data') });
  try {
    await fn(d2);
  } finally {
    await d2.cleanup();
  }
}

// Run fn(d, trigger) on a daemon under tests/tools/syncshim.c, its
// environment env(trigger): a fault holds while the file `trigger` exists
// (written with `initial` at the start when given). Cleans up.
async function withShim(env, conf, fn, initial) {
  const dir = tempDir('dosqld-shim-');
  const trigger = path.join(dir, 'fail');
  if (initial !== undefined) writeFileSync(trigger, initial);
  const d = await startDosqld({ conf, env: { LD_PRELOAD: syncShimPreload(), ...env(trigger) } });
  try {
    await fn(d, trigger);
  } finally {
    await d.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

// Writes to files whose path holds `where` fail while `trigger` exists
// (EIO, or what it says).
const withFailingWrites = (where, conf, fn, initial) =>
  withShim((trigger) => ({ DSQ_FAILWRITE: trigger, DSQ_FAILWRITE_PATH: where }), conf, fn, initial);

test('asOf reads the database as it was at each LSN and time, before and after a restart', async () => {
  // Small checkpoints, so that history spans checkpoints and log.
  const d = await startDosqld({ conf: '[storage]\ncheckpoint_size = 64K\n' });
  try {
    const first = await query(d.port, 'tt', 'CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)');
    const states = [];
    for (let i = 1; i <= 60; i++) {
      const r = await query(d.port, 'tt', 'INSERT INTO t VALUES (?, hex(randomblob(1500)))', [i]);
      assert.equal(r.lsn, first.lsn + i + (i > 30 ? 1 : 0), 'one LSN per commit');
      states.push({ lsn: r.lsn, rows: i, time: Date.now() });
      if (i === 30) await query(d.port, 'tt', 'DELETE FROM t WHERE k <= 10');
      if (i % 20 === 0) await sleep(5); // distinct commit times around here
    }
    const dir = path.join(d.dir, 'data', 'db', 'tt');
    assert.ok(readdirSync(path.join(dir, 'ckpt')).some((f) => f.endsWith('.ckpt')), 'checkpoints were written');
    const check = async (label) => {
      for (const s of states.filter((_, i) => i % 7 === 0 || i === 29 || i === 30)) {
        const r = await asOf(d.port, 'tt', 'SELECT count(*), max(k) FROM t', { lsn: s.lsn });
        assert.equal(r.status, 200, `${label}: ${r.text}`);
        const want = s.rows <= 30 ? s.rows : s.rows - 10;
        assert.deepEqual(r.json.rows, [[want, s.rows]], `${label}: at LSN ${s.lsn}`);
        assert.equal(r.json.lsn, s.lsn, 'the result names the LSN it reflects');
      }
      // By time: the newest commit at or before it.
      const s = states[19];
      const byTime = await asOf(d.port, 'tt', 'SELECT max(k) FROM t', { timestamp: new Date(s.time).toISOString() });
      assert.equal(byTime.status, 200, byTime.text);
      assert.ok(byTime.json.rows[0][0] >= 20 && byTime.json.lsn >= s.lsn, `${label}: ${byTime.text}`);
      const byMs = await asOf(d.port, 'tt', 'SELECT count(*) FROM sqlite_schema', { timestamp: 0 });
      assert.equal(byMs.status, 200, byMs.text);
      assert.equal(byMs.json.lsn, 0, 'before the first commit: the empty database');
    };
    await check('live');
    // The past is read-only, and not part of a transaction.
    let r = await asOf(d.port, 'tt', 'DELETE FROM t', { lsn: states[0].lsn });
    assert.equal(r.json.error.code, 'INVALID_REQUEST', r.text);
    assert.match(r.json.error.message, /only reads/);
    r = await asOf(d.port, 'tt', 'SELECT 1', { lsn: states.at(-1).lsn + 100 });
    assert.equal(r.json.error.code, 'INVALID_LSN');
    // A kill -9 and a restart: the same history, and LSNs go on from it.
    await afterKill(d, async (d2) => {
      d.port = d2.port; // check() reads d.port
      await check('after kill -9');
      const w = await query(d2.port, 'tt', 'INSERT INTO t VALUES (1000, 1)');
      assert.equal(w.lsn, states.at(-1).lsn + 1);
    }, '[storage]\ncheckpoint_size = 64K\n');
  } finally {
    await d.cleanup();
  }
});

test('history_retention: older history goes, with a clear error naming the oldest LSN', async () => {
  const d = await startDosqld({ conf: '[storage]\ncheckpoint_size = 64K\nsegment_size = 64K\nhistory_retention = 0\n' });
  try {
    const first = await query(d.port, 'ret', 'CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)');
    for (let i = 1; i <= 80; i++) await query(d.port, 'ret', 'INSERT INTO t VALUES (?, randomblob(3000))', [i]);
    const r = await asOf(d.port, 'ret', 'SELECT count(*) FROM t', { lsn: first.lsn });
    assert.equal(r.json?.error?.code, 'INVALID_LSN', r.text);
    assert.match(r.json.error.message, /oldest available is \d+/);
    const wal = readdirSync(path.join(d.dir, 'data', 'db', 'ret', 'wal'));
    assert.ok(wal.length < 5, `old segments were deleted: ${wal}`);
    const now = await query(d.port, 'ret', 'SELECT count(*) FROM t');
    assert.deepEqual(now.rows, [[80]]);
  } finally {
    await d.cleanup();
  }
});

// The server's journal statistics once `ok` holds of them (or after 5 s:
// the journal's thread works in its own time).
async function journalWhen(d, ok) {
  let j;
  for (let i = 0; i < 50; i++) {
    j = (await post(d.port, '/v1/db/z/rpc', { id: 1, method: 'getStats' })).json.result.server.journal;
    if (ok(j)) break;
    await sleep(100);
  }
  return j;
}

// 1.5 MB of incompressible commits to database z: zeroing begins, the
// logs are asked to write (and push) and a syncfs runs; every row is back.
async function fillJournal(d) {
  for (let i = 0; i < 30; i++)
    await query(d.port, 'z', 'INSERT INTO t VALUES (randomblob(50000))');
  const r = await query(d.port, 'z', 'SELECT count(*), sum(length(b)) FROM t');
  assert.deepEqual(r.rows, [[30, 1500000]]);
}

test('the journal zeroes its new file ahead of the appends and runs a syncfs each MiB', async () => {
  const d = await startDosqld();
  try {
    await query(d.port, 'z', 'CREATE TABLE t(b)');
    let j = await journalWhen(d, () => true);
    assert.equal(j.zeroedBytes, 0, 'a journal used lightly is not zeroed: ' + JSON.stringify(j));
    await fillJournal(d);
    j = await journalWhen(d, (j) => j.zeroedBytes >= 1 << 20 && j.bulkSyncs >= 1);
    assert.ok(j.zeroedBytes >= 1 << 20 && j.bulkSyncs >= 1 && Number.isInteger(j.zeroWaits), JSON.stringify(j));
  } finally {
    await d.stop();
  }
});

test('a failing sync_file_range costs the journal its zeroing and the logs their pushes, not a commit', () =>
  withShim((trigger) => ({ DSQ_FAILSFR: trigger }), '', async (d, trigger) => {
    await query(d.port, 'z', 'CREATE TABLE t(b)');
    await fillJournal(d);
    const j = await journalWhen(d, (j) => j.bulkSyncs >= 1 && /event=journal_zeroing_failed/.test(d.stderr));
    assert.match(d.stderr, /level=warn event=journal_zeroing_failed .*reason="?Input\/output error/);
    assert.equal(j.zeroedBytes, 0, JSON.stringify(j));
    assert.ok(j.bulkSyncs >= 1, JSON.stringify(j));
    // Gone: the commits after it are as they were.
    rmSync(trigger);
    await query(d.port, 'z', 'INSERT INTO t VALUES (1)');
    assert.deepEqual((await query(d.port, 'z', 'PRAGMA integrity_check')).rows, [['ok']]);
  }, ''));

test('a database directory: format, log segments, checkpoints; nothing of SQLite\'s own', async () => {
  const d = await startDosqld();
  try {
    await query(d.port, 'files', 'CREATE TABLE t(x); INSERT INTO t VALUES (1)');
    const dir = path.join(d.dir, 'data', 'db', 'files');
    assert.deepEqual(readdirSync(dir).sort(), ['ckpt', 'format', 'wal']);
    assert.ok(existsSync(path.join(dir, 'wal', '00000001.seg')));
    const r = await query(d.port, 'files', 'PRAGMA journal_mode');
    assert.deepEqual(r.rows, [['memory']]);
    const st = (await post(d.port, '/v1/db/files/rpc', { id: 1, method: 'getStats' })).json.result;
    assert.equal(st.database.storage.logSegments, 1);
    assert.ok(st.database.storage.logBytes > 64);
    assert.equal(st.database.storage.durableLsn, st.database.lsn, 'replied, so durable');
    assert.equal(st.database.storage.oldestLsn, 0);
    assert.ok(st.server.logSyncs >= 1 && st.server.gatedReplies >= 1, JSON.stringify(st.server));
    const j = st.server.journal;
    assert.ok(j.syncs >= 1 && j.bytes > 0 && j.files === 2 && j.liveFiles === 1, JSON.stringify(j));
    assert.equal(j.held, 0, 'replied, so synced: the records are in the log file too');
    assert.deepEqual(readdirSync(path.join(d.dir, 'data', 'journal')).sort(), ['00.jnl', '01.jnl']);
    const srv = (await post(d.port, '/v1/rpc', { id: 1, method: 'getStats' })).json.result;
    assert.deepEqual(Object.keys(srv), ['server']);
    assert.equal(srv.server.journal.files, 2, JSON.stringify(srv));
    const m = await (await fetch(`${d.url}/metrics`)).text();
    assert.match(m, /^dosqld_log_syncs_total [1-9]/m);
    assert.match(m, /^dosqld_journal_syncs_total [1-9]/m);
    assert.match(m, /^dosqld_journal_bytes_total [1-9]/m);
  } finally {
    await d.cleanup();
  }
});

test('a failed fsync fails the replies behind it; the database restarts from its last durable commit', async () => {
  const dir = tempDir('dosqld-failsync-');
  const trigger = path.join(dir, 'fail');
  const d = await startDosqld({ env: { LD_PRELOAD: syncShimPreload(), DSQ_FAILSYNC: trigger } });
  try {
    const ok = await query(d.port, 'fs', 'CREATE TABLE t(x); INSERT INTO t VALUES (1)');
    writeFileSync(trigger, '');
    const bad = await query(d.port, 'fs', 'INSERT INTO t VALUES (2)', undefined, { raw: true });
    assert.equal(bad.status, 500, bad.text);
    assert.equal(bad.json.error.code, 'INTERNAL_ERROR');
    assert.match(bad.json.error.message, /could not be made durable/);
    rmSync(trigger);
    const r = await query(d.port, 'fs', 'SELECT x FROM t');
    assert.deepEqual(r.rows, [[1]], 'the commit that was never durable is gone');
    assert.equal(r.lsn, ok.lsn);
    const w = await query(d.port, 'fs', 'INSERT INTO t VALUES (3)');
    assert.equal(w.lsn, ok.lsn + 1, 'LSNs go on from the last durable commit');
    assert.match(d.stderr, /event=log_sync_failed/);
    assert.match(d.stderr, /event=database_restarted/);
  } finally {
    await d.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a damaged record in the middle of a log keeps that database offline; the others serve', async () => {
  const dir = tempDir('dosqld-damage-');
  const dataDir = path.join(dir, 'data');
  let d = await startDosqld({ dataDir });
  try {
    await query(d.port, 'good', 'CREATE TABLE t(x); INSERT INTO t VALUES (1)');
    await query(d.port, 'bad', 'CREATE TABLE t(x)');
    for (let i = 0; i < 5; i++) await query(d.port, 'bad', 'INSERT INTO t VALUES (?)', [i]);
    await d.stop();
    // Flip a byte inside the second record of bad's log.
    const seg = path.join(dataDir, 'db', 'bad', 'wal', '00000001.seg');
    const fd = openSync(seg, 'r+');
    const h = Buffer.alloc(48);
    readSync(fd, h, 0, 48, 64);
    const second = 64 + h.readUInt32LE(8);
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, second + 60);
    b[0] ^= 0xff;
    writeSync(fd, b, 0, 1, second + 60);
    closeSync(fd);
    d = await startDosqld({ dataDir });
    const r = await query(d.port, 'bad', 'SELECT count(*) FROM t', undefined, { raw: true });
    assert.equal(r.status, 500, r.text);
    assert.equal(r.json.error.code, 'INTERNAL_ERROR');
    // The reason names the segment's file: the log has it, the client a
    // generic message.
    assert.match(r.json.error.message, /cannot open database bad's storage/);
    assert.ok(!r.text.includes(dataDir), r.text);
    assert.deepEqual((await query(d.port, 'good', 'SELECT x FROM t')).rows, [[1]]);
    assert.match(d.stderr, /event=database_open_failed db=bad reason=.*damaged and the log goes on after it/);
  } finally {
    await d.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});

// With the journal, a small commit's record reaches its log later, in bulk
// (docs/storage.md): a log that cannot be written fails no small commit (it
// is durable in the journal) but keeps the journal's file live until the
// write succeeds; a record too large for the journal is written to the log
// first, and that commit gets the clean error.
test('EIO and ENOSPC on log writes: commits go on through the journal, the log catches up, a large record gets a clean error', () => withFailingWrites('/wal/', '[storage]\njournal_size = 1M\n', async (d, trigger) => {
  // (journal_size 1M: records over 128 KiB are not copied into the journal)
  const held = async () => (await post(d.port, '/v1/rpc', { id: 1, method: 'getStats' })).json.result.server.journal.held;
  let last = await query(d.port, 'fw', 'CREATE TABLE t(x); INSERT INTO t VALUES (1)');
  const want = [[1]];
  for (const [errno, code, msg] of [['EIO', 'INTERNAL_ERROR', /I\/O/], ['ENOSPC', 'RESOURCE_EXHAUSTED', /full/]]) {
    writeFileSync(trigger, errno);
    const small = await query(d.port, 'fw', 'INSERT INTO t VALUES (2)');
    assert.equal(small.lsn, last.lsn + 1, `${errno}: durable in the journal, acknowledged`);
    want.push([2]);
    const big = await query(d.port, 'fw', 'INSERT INTO t VALUES (randomblob(300000))', undefined, { raw: true });
    assert.equal(big.json?.error?.code, code, `${errno}: ${big.text}`);
    assert.match(big.json.error.message, msg);
    assert.deepEqual((await query(d.port, 'fw', 'SELECT x FROM t WHERE typeof(x) = \'integer\'')).rows, want,
      'reads go on while the fault lasts');
    assert.ok(await held() > 0, 'the records wait in memory, their journal file held');
    rmSync(trigger);
    last = small;
  }
  assert.match(d.stderr, /event=log_write_failed/);
  for (let i = 0; i < 50 && await held() > 0; i++) await sleep(100); // the journal's thread asks every second
  assert.equal(await held(), 0, 'written once the fault cleared');
  const w = await query(d.port, 'fw', 'INSERT INTO t VALUES (3)');
  assert.equal(w.lsn, last.lsn + 1, 'the failed commits took no LSN');
  want.push([3]);
  assert.deepEqual((await query(d.port, 'fw', 'SELECT x FROM t')).rows, want);
  assert.deepEqual((await query(d.port, 'fw', 'PRAGMA integrity_check')).rows, [['ok']]);
  await afterKill(d, async (d2) => {
    const r = await query(d2.port, 'fw', 'SELECT x FROM t');
    assert.deepEqual(r.rows, want);
    assert.equal(r.lsn, w.lsn);
  });
}));

test('a log that cannot be written keeps at most 4 MiB in memory: past that its commits fail cleanly, then go on', () => withFailingWrites('/wal/', '', async (d, trigger) => {
  await query(d.port, 'cap', 'CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)');
  writeFileSync(trigger, 'EIO');
  let ok = 0;
  let bad;
  for (let i = 0; i < 80 && !bad; i++) { // ~200 KB records (the pages and the row change): past 4 MiB at ~20
    const r = await query(d.port, 'cap', 'INSERT INTO t(v) VALUES (randomblob(100000))', undefined, { raw: true });
    if (r.status === 200) ok++;
    else bad = r;
  }
  assert.ok(bad, `a commit failed once the log kept 4 MiB (${ok} went)`);
  assert.ok(ok >= 10 && ok <= 42, `the ones before went: ${ok}`);
  assert.equal(bad.json.error.code, 'INTERNAL_ERROR', bad.text);
  assert.match(bad.json.error.message, /I\/O|Input\/output/);
  rmSync(trigger);
  const w = await query(d.port, 'cap', 'INSERT INTO t(v) VALUES (x\'01\')');
  assert.deepEqual((await query(d.port, 'cap', 'SELECT count(*) FROM t')).rows, [[ok + 1]]);
  await afterKill(d, async (d2) => {
    const r = await query(d2.port, 'cap', 'SELECT count(*), max(k) FROM t');
    assert.deepEqual(r.rows[0][0], ok + 1);
    assert.equal(r.lsn, w.lsn);
  });
}));

test('EIO and ENOSPC on journal writes: a clean error to that commit, nothing damaged, writes resume', () => withFailingWrites('/journal/', '', async (d, trigger) => {
  const ok = await query(d.port, 'fw', 'CREATE TABLE t(x); INSERT INTO t VALUES (1)');
  for (const [errno, code, msg] of [['EIO', 'INTERNAL_ERROR', /I\/O/], ['ENOSPC', 'RESOURCE_EXHAUSTED', /full/]]) {
    writeFileSync(trigger, errno);
    const bad = await query(d.port, 'fw', 'INSERT INTO t VALUES (2)', undefined, { raw: true });
    assert.equal(bad.json?.error?.code, code, `${errno}: ${bad.text}`);
    assert.match(bad.json.error.message, msg);
    // Reads go on while the fault lasts.
    assert.deepEqual((await query(d.port, 'fw', 'SELECT x FROM t')).rows, [[1]]);
    rmSync(trigger);
  }
  const w = await query(d.port, 'fw', 'INSERT INTO t VALUES (3)');
  assert.equal(w.lsn, ok.lsn + 1, 'the failed commits took no LSN');
  assert.deepEqual((await query(d.port, 'fw', 'SELECT x FROM t')).rows, [[1], [3]]);
  assert.deepEqual((await query(d.port, 'fw', 'PRAGMA integrity_check')).rows, [['ok']]);
  // And from the files alone, after a kill.
  await afterKill(d, async (d2) => {
    const r = await query(d2.port, 'fw', 'SELECT x FROM t');
    assert.deepEqual(r.rows, [[1], [3]]);
    assert.equal(r.lsn, w.lsn);
  });
}));

test('asOf across schema changes: each LSN sees the schema it had', async () => {
  const d = await startDosqld();
  try {
    const a = await query(d.port, 'sch', 'CREATE TABLE t(a); INSERT INTO t VALUES (1)');
    const b = await query(d.port, 'sch', 'ALTER TABLE t ADD COLUMN b DEFAULT 7');
    const c = await query(d.port, 'sch', 'CREATE TABLE u(x); DROP TABLE t');
    const cols = (lsn) => asOf(d.port, 'sch', "SELECT group_concat(name) FROM pragma_table_info('t')", { lsn });
    assert.deepEqual((await cols(a.lsn)).json.rows, [['a']]);
    assert.deepEqual((await cols(b.lsn)).json.rows, [['a,b']]);
    assert.deepEqual((await asOf(d.port, 'sch', 'SELECT * FROM t', { lsn: b.lsn })).json.rows, [[1, 7]]);
    const gone = await asOf(d.port, 'sch', 'SELECT * FROM t', { lsn: c.lsn });
    assert.equal(gone.json.error.code, 'TABLE_NOT_FOUND', gone.text);
    const before = await asOf(d.port, 'sch', 'SELECT * FROM u', { lsn: b.lsn });
    assert.equal(before.json.error.code, 'TABLE_NOT_FOUND', before.text);
    assert.deepEqual((await asOf(d.port, 'sch', 'SELECT count(*) FROM u', { lsn: c.lsn })).json.rows, [[0]]);
  } finally {
    await d.cleanup();
  }
});

test('hibernation: a checkpoint first when much log is unchecked, and no fsync to wake again', async () => {
  const dir = tempDir('dosqld-hib-');
  const synclog = path.join(dir, 'synclog');
  const d = await startDosqld({
    conf: '[engine]\nidle_timeout = 300ms\n',
    env: { LD_PRELOAD: syncShimPreload(), DSQ_SYNCLOG: synclog },
  });
  try {
    await query(d.port, 'hib', 'CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)');
    for (let i = 0; i < 40; i++) await query(d.port, 'hib', 'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30) INSERT INTO t SELECT NULL, randomblob(1000) FROM n');
    const ckdir = path.join(d.dir, 'data', 'db', 'hib', 'ckpt');
    assert.equal(readdirSync(ckdir).length, 0, 'under checkpoint_size: no checkpoint yet');
    const st = await untilHibernated(d.port);
    assert.equal(st.actorsOpen, 0, 'hibernated');
    assert.equal(readdirSync(ckdir).filter((f) => f.endsWith('.ckpt')).length, 1, 'a checkpoint before closing');
    const syncsBefore = readFileSync(synclog, 'utf8').split('\n')
      .filter((l) => l.startsWith('s ') && l.includes('/db/hib/wal/')).length;
    const r = await query(d.port, 'hib', 'SELECT count(*) FROM t');
    assert.deepEqual(r.rows, [[1200]]);
    const syncsAfter = readFileSync(synclog, 'utf8').split('\n')
      .filter((l) => l.startsWith('s ') && l.includes('/db/hib/wal/')).length;
    assert.equal(syncsAfter, syncsBefore, 'waking a database closed durable in this process syncs nothing');
  } finally {
    await d.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('history that ages out while a database is quiet goes when it hibernates', async () => {
  const d = await startDosqld({ conf: '[engine]\nidle_timeout = 1500ms\n[storage]\ncheckpoint_size = 64K\nhistory_retention = 1s\n' });
  try {
    const first = await query(d.port, 'quiet', 'CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)');
    for (let i = 0; i < 30; i++) await query(d.port, 'quiet', 'INSERT INTO t VALUES (NULL, randomblob(5000))');
    const ok = await asOf(d.port, 'quiet', 'SELECT count(*) FROM t', { lsn: first.lsn });
    assert.equal(ok.status, 200, `within the window: ${ok.text}`);
    const st = await untilHibernated(d.port);
    assert.equal(st.actorsOpen, 0, 'hibernated');
    const gone = await asOf(d.port, 'quiet', 'SELECT count(*) FROM t', { lsn: first.lsn });
    assert.equal(gone.json?.error?.code, 'INVALID_LSN', gone.text);
    assert.deepEqual((await query(d.port, 'quiet', 'SELECT count(*) FROM t')).rows, [[30]]);
  } finally {
    await d.cleanup();
  }
});

test('a checkpoint that cannot be written: commits go on from the log, the next checkpoint succeeds', () =>
  withFailingWrites('/ckpt/', '[storage]\ncheckpoint_size = 64K\n', async (d, trigger) => {
    await query(d.port, 'ck', 'CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)');
    for (let i = 0; i < 40; i++) await query(d.port, 'ck', 'INSERT INTO t VALUES (NULL, randomblob(4000))');
    const ckdir = path.join(d.dir, 'data', 'db', 'ck', 'ckpt');
    assert.deepEqual(readdirSync(ckdir), [], 'no checkpoint, and no temporary file left behind');
    assert.equal(d.stderr.match(/event=checkpoint_failed db=ck/g)?.length, 1, 'tried once, not at every commit');
    rmSync(trigger);
    await sleep(5100); /* the retry waits 5 s */
    for (let i = 0; i < 40; i++) await query(d.port, 'ck', 'INSERT INTO t VALUES (NULL, randomblob(4000))');
    assert.ok(readdirSync(ckdir).some((f) => f.endsWith('.ckpt')), 'a checkpoint once the disk takes it');
    await afterKill(d, async (d2) => {
      const r = await query(d2.port, 'ck', 'SELECT count(*) FROM t');
      assert.deepEqual(r.rows, [[80]]);
      assert.deepEqual((await query(d2.port, 'ck', 'PRAGMA integrity_check')).rows, [['ok']]);
    });
  }, 'ENOSPC'));

test('clients that hang up while their commits wait for the disk: the commits stand, the daemon goes on', async () => {
  const d = await startDosqld();
  try {
    await query(d.port, 'gone', 'CREATE TABLE t(x)');
    for (let round = 0; round < 5; round++) {
      const ws = new WebSocket(`ws://127.0.0.1:${d.port}/v1/db/gone/rpc`);
      await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
      for (let i = 0; i < 50; i++) ws.send(JSON.stringify({ id: i, method: 'query', params: { sql: 'INSERT INTO t VALUES (?)', params: [i] } }));
      ws.terminate(); // no close frame: the replies parked at the gate have nowhere to go
      // And over HTTP: a write, then the socket closes before the reply.
      const s = net.connect(d.port, '127.0.0.1');
      await new Promise((res) => s.once('connect', res));
      const body = '{"sql":"INSERT INTO t VALUES (-1)"}';
      s.end(`POST /v1/db/gone/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      s.destroy();
    }
    await sleep(200);
    const r = await query(d.port, 'gone', 'SELECT count(*), count(DISTINCT x) FROM t');
    assert.ok(r.rows[0][0] <= 255, JSON.stringify(r.rows));
    assert.deepEqual((await query(d.port, 'gone', 'PRAGMA integrity_check')).rows, [['ok']]);
    const w = await query(d.port, 'gone', 'INSERT INTO t VALUES (1000)');
    assert.equal(w.lsn, r.lsn + 1, 'every commit that happened has its LSN, and they go on');
    assert.equal((await fetch(`${d.url}/healthz`)).status, 200);
  } finally {
    await d.cleanup();
  }
});

test('the journal and a dropped database: a new one under the name gets none of the old one\'s commits', async () => {
  const d = await startDosqld();
  try {
    await query(d.port, 'dj', 'CREATE TABLE old(x); INSERT INTO old VALUES (1), (2)');
    for (let i = 0; i < 5; i++) await query(d.port, 'dj', 'INSERT INTO old VALUES (?)', [i]);
    const drop = await fetch(`${d.url}/v1/db/dj`, { method: 'DELETE' });
    assert.equal(drop.status, 200);
    const fresh = await query(d.port, 'dj', 'CREATE TABLE new(y); INSERT INTO new VALUES (42)');
    assert.equal(fresh.lsn, 1, 'a new database starts at LSN 1');
    // Killed before any flush of the journal: the restart replays it.
    await afterKill(d, async (d2) => {
      const t = await query(d2.port, 'dj', "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name");
      assert.deepEqual(t.rows, [['new']]);
      assert.deepEqual((await query(d2.port, 'dj', 'SELECT y FROM new')).rows, [[42]]);
      assert.equal(t.lsn, 1);
      assert.deepEqual((await query(d2.port, 'dj', 'PRAGMA integrity_check')).rows, [['ok']]);
    });
  } finally {
    await d.cleanup();
  }
});

test('syncfs failing: the journal keeps every file live up to 64, then commits fail; once it works, all is flushed and kept', { timeout: 120000 }, async () => {
  const dir = tempDir('dosqld-failsyncfs-');
  const trigger = path.join(dir, 'fail');
  const d = await startDosqld({
    conf: '[storage]\njournal_size = 1M\n',
    env: { LD_PRELOAD: syncShimPreload(), DSQ_FAILSYNCFS: trigger },
  });
  try {
    await query(d.port, 'fs', 'CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)');
    writeFileSync(trigger, '');
    // ~85 KB records (the blob's pages and its row change), copied into
    // the journal (under an eighth of it): about twelve to a 1 MiB file.
    let acked = 0, refused = null;
    for (let i = 0; i < 1500 && !refused; i++) {
      const r = await query(d.port, 'fs', 'INSERT INTO t VALUES (?, randomblob(40000))', [i], { raw: true });
      if (r.status === 200) acked++;
      else refused = r;
    }
    assert.ok(refused, 'the journal filled up');
    assert.equal(refused.json.error.code, 'RESOURCE_EXHAUSTED', refused.text);
    assert.ok(acked > 600, `${acked} commits before the journal filled`);
    assert.match(d.stderr, /event=journal_flush_failed/);
    let j = (await post(d.port, '/v1/rpc', { id: 1, method: 'getStats', params: {} })).json.result.server.journal;
    assert.equal(j.files, 64, JSON.stringify(j));
    assert.equal(j.liveFiles, 64, JSON.stringify(j));
    // Reads go on meanwhile.
    assert.deepEqual((await query(d.port, 'fs', 'SELECT count(*) FROM t')).rows, [[acked]]);
    rmSync(trigger);
    for (let i = 0; i < 50 && j.liveFiles > 1; i++) { // the flush is retried every second
      await sleep(100);
      j = (await post(d.port, '/v1/rpc', { id: 1, method: 'getStats', params: {} })).json.result.server.journal;
    }
    assert.equal(j.liveFiles, 1, JSON.stringify(j));
    const more = await query(d.port, 'fs', 'INSERT INTO t VALUES (?, randomblob(40000))', [5000]);
    assert.ok(more.lsn > 0);
    await afterKill(d, async (d2) => {
      assert.deepEqual((await query(d2.port, 'fs', 'SELECT count(*) FROM t')).rows, [[acked + 1]]);
      assert.deepEqual((await query(d2.port, 'fs', 'PRAGMA integrity_check')).rows, [['ok']]);
    });
  } finally {
    await d.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});
