// Crash tests (DESIGN section 4): writers commit atomic groups of rows into
// several databases while dosqld is killed with SIGKILL at a random moment,
// over and over; and a second variant that also loses everything written
// after the last fsync (a power cut), by cutting every log segment back to
// the size it had when its last fsync returned (tests/tools/syncshim.so
// records them). After every restart:
//   - every acknowledged group is present, whole;
//   - no group is half-present (3 rows or none);
//   - PRAGMA integrity_check is ok;
//   - the LSN is at least every acknowledged one, and goes on increasing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, truncateSync } from 'node:fs';
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
    assert.equal(r.status, 200, `${label} ${db}: ${r.text}`);
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
function writeLoad(d, acked, maxLsn, cycle) {
  const state = { stop: false, count: 0 };
  const one = async (w) => {
    for (let n = 0; !state.stop && n < 100000; n++) {
      const db = DBS[(w + n) % DBS.length];
      const grp = cycle * 10000000 + w * 100000 + n;
      const statements = [0, 1, 2].map((part) => ({ sql: 'INSERT INTO g VALUES (?, ?, randomblob(300))', params: [grp, part] }));
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

// Cut every log segment back to its last synced size (the newest record
// for it in the synclog, across runs); remove any never synced.
function powerCut(dataDir, synclog) {
  const synced = new Map();
  if (existsSync(synclog)) {
    for (const line of readFileSync(synclog, 'utf8').split('\n')) {
      const m = line.match(/^(\d+) (.+)$/);
      if (m) synced.set(m[2], Number(m[1]));
    }
  }
  let cut = 0;
  for (const db of readdirSync(path.join(dataDir, 'db'))) {
    const wal = path.join(dataDir, 'db', db, 'wal');
    if (!existsSync(wal)) continue;
    for (const f of readdirSync(wal)) {
      const p = path.join(wal, f);
      const size = statSync(p).size;
      if (!synced.has(p)) {
        rmSync(p);
        cut += size;
      } else if (size > synced.get(p)) {
        truncateSync(p, synced.get(p));
        cut += size - synced.get(p);
      }
    }
  }
  return cut; /* the log stays: files synced in earlier runs are still durable */
}

async function crashLoop(t, { cycles, power }) {
  const dir = tempDir('dosqld-crash-');
  const dataDir = path.join(dir, 'data');
  const synclog = path.join(dir, 'synclog');
  const env = power ? { LD_PRELOAD: syncShimPreload(), DSQ_SYNCLOG: synclog } : {};
  const conf = '[storage]\ncheckpoint_size = 256K\nsegment_size = 256K\n';
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
      const load = writeLoad(d, acked, maxLsn, cycle);
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
