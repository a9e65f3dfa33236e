// Crash tests (DESIGN section 4): writers commit atomic groups of rows into
// several databases while dosqld is killed with SIGKILL at a random moment,
// over and over; and a second variant that also loses everything written
// after the last fsync (a power cut): every log segment and journal file
// loses what was written to it after its last fsync or syncfs returned
// (tests/tools/syncshim.so logs writes and syncs). After every restart:
//   - every acknowledged group is present, whole;
//   - no group is half-present (3 rows or none);
//   - PRAGMA integrity_check is ok;
//   - the LSN is at least every acknowledged one, and goes on increasing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  appendFileSync, closeSync, existsSync, openSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeSync,
} from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir, sleep, within, syncShimPreload } from '../integration/lib/harness.mjs';
import { post } from '../integration/lib/rpc.mjs';

const DBS = ['c0', 'c1', 'c2', 'c3'];
const WRITERS = 6;

// Random from a seed printed with each failure, so a run can be repeated.
const seed = Number(process.env.DSQ_CRASH_SEED ?? Date.now() % 100000);
let rnd = seed;
const random = () => ((rnd = (rnd * 1103515245 + 12345) % 2147483648) / 2147483648);

async function verify(d, acked, maxLsn, label) {
  for (const db of DBS) {
    const r = await post(d.port, `/v1/db/${db}/query`, { sql: 'SELECT grp, count(*) FROM g GROUP BY grp' });
    assert.equal(r.status, 200, `${label} ${db}: ${r.text}\n${d.stderr.slice(-3000)}`);
    const present = new Map(r.json.rows.map(([g, n]) => [g, n]));
    for (const [g, n] of present) assert.equal(n, 3, `${label} ${db}: group ${g} is half-present (${n} rows)`);
    for (const g of acked[db]) assert.ok(present.has(g), `${label} ${db}: acknowledged group ${g} is gone`);
    const ic = await post(d.port, `/v1/db/${db}/query`, { sql: 'PRAGMA integrity_check' });
    assert.deepEqual(ic.json.rows, [['ok']], `${label} ${db}: ${ic.text}`);
    assert.ok(r.json.lsn >= maxLsn[db], `${label} ${db}: LSN ${r.json.lsn} is behind an acknowledged ${maxLsn[db]}`);
    const w = await post(d.port, `/v1/db/${db}/query`, { sql: 'INSERT INTO probe VALUES (1)' });
    assert.equal(w.status, 200, w.text);
    assert.equal(w.json.lsn, r.json.lsn + 1, `${label} ${db}: LSNs go on from the last`);
    maxLsn[db] = w.json.lsn;
  }
}

// Writers until the daemon dies (or `stop`); each group is an atomic batch.
// With `big`, every 7th group carries 3 x 60 KB of random bytes (records
// larger than a small journal copies).
function writeLoad(d, acked, maxLsn, cycle, big) {
  const state = { stop: false, count: 0 };
  const one = async (w) => {
    for (let n = 0; !state.stop && n < 100000; n++) {
      const db = DBS[(w + n) % DBS.length];
      const grp = cycle * 10000000 + w * 100000 + n;
      const size = big && n % 7 === 3 ? 60000 : 300;
      const statements = [0, 1, 2].map((part) => ({ sql: 'INSERT INTO g VALUES (?, ?, randomblob(?))', params: [grp, part, size] }));
      let r;
      try {
        r = await post(d.port, `/v1/db/${db}/rpc`, { id: 1, method: 'batch', params: { statements } });
      } catch {
        return; // the daemon is gone
      }
      if (r.status !== 200 || !r.json?.result) return;
      acked[db].add(grp);
      maxLsn[db] = Math.max(maxLsn[db], r.json.result.lsn);
      state.count++;
    }
  };
  state.done = Promise.all(Array.from({ length: WRITERS }, (_, w) => one(w)));
  return state;
}

// Play a power cut on the logs (DATA/db/*/wal/*) and the node journal
// (DATA/journal/*) from the synclog: each file keeps the size it had at its
// last sync and loses every write logged after that sync (zeroed where it
// overwrote older bytes); a file never synced goes. Then the log is told
// that what is left is durable, so that the next cut starts from it.
function powerCut(dataDir, synclog) {
  const synced = new Map(), pending = new Map();
  if (existsSync(synclog)) {
    for (const line of readFileSync(synclog, 'utf8').split('\n')) {
      let m;
      if ((m = line.match(/^s (\d+) (.+)$/))) {
        synced.set(m[2], Number(m[1]));
        pending.set(m[2], []);
      } else if ((m = line.match(/^w (\d+) (\d+) (.+)$/))) {
        if (!pending.has(m[3])) pending.set(m[3], []);
        pending.get(m[3]).push([Number(m[1]), Number(m[2])]);
      }
    }
  }
  const files = [];
  for (const db of readdirSync(path.join(dataDir, 'db'))) {
    const wal = path.join(dataDir, 'db', db, 'wal');
    if (existsSync(wal)) for (const f of readdirSync(wal)) files.push(path.join(wal, f));
  }
  const jdir = path.join(dataDir, 'journal');
  if (existsSync(jdir)) for (const f of readdirSync(jdir)) files.push(path.join(jdir, f));
  let cut = 0;
  const after = [];
  for (const p of files) {
    const size = statSync(p).size;
    if (!synced.has(p)) {
      rmSync(p);
      cut += size;
      continue;
    }
    const keep = synced.get(p);
    if (size > keep) {
      truncateSync(p, keep);
      cut += size - keep;
    }
    const fd = openSync(p, 'r+');
    for (const [off, len] of pending.get(p) ?? []) {
      const end = Math.min(off + len, keep);
      if (off < end) {
        writeSync(fd, Buffer.alloc(end - off), 0, end - off, off);
        cut += end - off;
      }
    }
    closeSync(fd);
    after.push(`s ${Math.min(size, keep)} ${p}\n`);
  }
  appendFileSync(synclog, after.join(''));
  return cut;
}

async function crashLoop(t, { cycles, power, storage = '', big = false }) {
  const dir = tempDir('dosqld-crash-');
  const dataDir = path.join(dir, 'data');
  const synclog = path.join(dir, 'synclog');
  const env = power ? { LD_PRELOAD: syncShimPreload(), DSQ_SYNCLOG: synclog } : {};
  const conf = `[storage]\ncheckpoint_size = 256K\nsegment_size = 256K\n${storage}`;
  const acked = Object.fromEntries(DBS.map((db) => [db, new Set()]));
  const maxLsn = Object.fromEntries(DBS.map((db) => [db, 0]));
  let d = await startDosqld({ conf, dataDir, env });
  let total = 0, lost = 0;
  try {
    for (const db of DBS) {
      const r = await post(d.port, `/v1/db/${db}/query`, {
        sql: 'CREATE TABLE g(grp INTEGER, part INTEGER, v BLOB, PRIMARY KEY (grp, part)); CREATE TABLE probe(x)',
      });
      assert.equal(r.status, 200, r.text);
      maxLsn[db] = r.json.lsn;
    }
    for (let cycle = 1; cycle <= cycles; cycle++) {
      const load = writeLoad(d, acked, maxLsn, cycle, big);
      await sleep(80 + Math.floor(random() * 400));
      d.proc.kill('SIGKILL');
      await within(10000, d.exit, 'dosqld exit');
      load.stop = true;
      await within(20000, load.done, 'writers');
      total += load.count;
      if (power) lost += powerCut(dataDir, synclog);
      d = await startDosqld({ conf, dataDir, env });
      await verify(d, acked, maxLsn, `seed ${seed} cycle ${cycle}`);
    }
    t.diagnostic(`${cycles} kills, ${total} acknowledged groups, all present` +
      (power ? `; ${lost} unsynced bytes dropped` : ''));
  } finally {
    await d.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

test('SIGKILL at random moments under a write load loses no acknowledged commit', async (t) => {
  await crashLoop(t, { cycles: 12, power: false });
});

test('a power cut (everything after the last fsync lost) loses no acknowledged commit', async (t) => {
  await crashLoop(t, { cycles: 10, power: true });
});

test('a power cut with a small journal: many files, and records too large to copy into it', async (t) => {
  await crashLoop(t, { cycles: 8, power: true, storage: 'journal_size = 1M\n', big: true });
});

test('a power cut without the journal (each log synced itself)', async (t) => {
  await crashLoop(t, { cycles: 6, power: true, storage: 'journal = no\n' });
});
