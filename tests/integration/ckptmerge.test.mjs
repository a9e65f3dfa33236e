// Old checkpoints are merged at the end of history_retention even when
// some of them were evicted to the object store: a database closed,
// evicted and opened again keeps a bounded number of checkpoint files
// (in memory too), every row reads back, and the store's copy restores.
// Without this a database evicted once kept every checkpoint it made from
// then on.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir, sleep, within } from './lib/harness.mjs';
import { call, query } from './lib/rpc.mjs';

let root;
before(() => {
  root = tempDir('dosqld-merge-');
});
after(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

// Checkpoints every ~64 KiB of log, a second of history, a hot budget far
// below the database: closed, it is evicted whole.
const conf = `[engine]
idle_timeout = 1s
[storage]
checkpoint_size = 64K
history_retention = 1s
hot_tier_max_bytes = 20K
warm_cache_bytes = 1M
[object_store]
chunk_size = 64K
upload_interval = 50ms
`;

const ckptDir = (dataDir) => path.join(dataDir, 'db/m/ckpt');
const ckpts = (dataDir) => readdirSync(ckptDir(dataDir)).filter((f) => f.endsWith('.ckpt')).sort();
const cold = (dataDir) => ckpts(dataDir).filter((f) => existsSync(path.join(ckptDir(dataDir), `${f}.cold`)));
const serverStats = async (d) => (await call(d.port, '/v1/db/probe/rpc', 'getStats', {})).result.server;
const digest = async (port) => (await query(port, 'm', 'SELECT n, hex(b) FROM t ORDER BY n')).rows;

let next = 1;
// About one checkpoint per two calls: 50 rows of 700 random bytes each.
async function write(port, calls) {
  for (let c = 0; c < calls; c++) {
    const rows = [];
    for (let k = 0; k < 50; k++, next++) rows.push(`(${next}, randomblob(700))`);
    await query(port, 'm', `INSERT INTO t VALUES ${rows.join(',')}`);
    // Rewrite old rows too, so that older checkpoints' pages are superseded.
    await query(port, 'm', 'UPDATE t SET b = randomblob(700) WHERE n % 97 = ?', [c % 97]);
  }
}

// Closed (idle) and every checkpoint evicted.
async function closeAndEvict(d, dataDir) {
  await within(30000, (async () => {
    for (;;) {
      const all = ckpts(dataDir);
      if (all.length > 0 && cold(dataDir).length === all.length) return;
      await sleep(100);
    }
  })(), `eviction: ${readdirSync(ckptDir(dataDir)).join(' ')}`);
}

test('evicted checkpoints are merged: their number stays bounded, every row reads back, the store restores', { timeout: 300000 }, async () => {
  const store = path.join(root, 'store');
  const dataDir = path.join(root, 'data');
  const args = ['--object-store', `file://${store}`];
  const d = await startDosqld({ conf, dataDir, args });
  let all;
  try {
    await query(d.port, 'm', 'CREATE TABLE t(n INTEGER PRIMARY KEY, b BLOB)');
    await write(d.port, 8);
    await closeAndEvict(d, dataDir);
    const base = cold(dataDir).length;
    assert.ok(base >= 1, `evicted checkpoints: ${base}`);

    // Open all along, many checkpoints: the local ones above the evicted
    // ones are merged among themselves; the evicted ones stay as they are.
    for (let round = 0; round < 6; round++) {
      await write(d.port, 8);
      await sleep(300);
    }
    // Past the window, still open (idle_timeout is 1 s: a read now and
    // then keeps it so; were it closed, more would be evicted).
    for (const t = Date.now(); Date.now() - t < 1200;) {
      await query(d.port, 'm', 'SELECT 1');
      await sleep(200);
    }
    await write(d.port, 4); // a checkpoint after the window: retention and the merge
    const open = ckpts(dataDir).length;
    assert.ok(open <= base + 12, `checkpoints while open: ${open} (evicted ${base})`);
    assert.ok(cold(dataDir).length <= base, `the evicted ones stay as they are: ${cold(dataDir).length} (${base})`);
    const st = (await call(d.port, '/v1/db/m/rpc', 'getStats', {})).result.database.storage;
    assert.equal(st.checkpoints, open, JSON.stringify(st));

    // Closed, evicted and opened again, over and over: once enough lie
    // before the window, all are merged into one, the evicted ones' pages
    // fetched through the warm cache (the first try fetches, a later one
    // merges).
    for (let cycle = 0; cycle < 5; cycle++) {
      await closeAndEvict(d, dataDir);
      await write(d.port, 6);
      await sleep(1100);
      await write(d.port, 4);
    }
    // Once the window has passed them: the first try fetches what it
    // needs (and keeps it), a later one merges.
    for (let i = 0; i < 10 && cold(dataDir).length > 0; i++) {
      await sleep(1100);
      await write(d.port, 2);
    }
    const left = ckpts(dataDir).length;
    // At most MERGE_AT (8) before the window, plus those in it.
    assert.ok(left <= 16, `checkpoints: ${ckpts(dataDir).join(' ')}`);
    assert.equal(cold(dataDir).length, 0, 'the evicted ones were merged');
    assert.ok((await serverStats(d)).objectStore.warmCache.fetches > 0);

    all = await digest(d.port);
    assert.equal(all.length, next - 1);
    // The oldest point reachable reads.
    const oldest = (await call(d.port, '/v1/db/m/rpc', 'getStats', {})).result.database.storage.oldestLsn;
    const r = await call(d.port, '/v1/db/m/rpc', 'query', { sql: 'SELECT count(*) AS c FROM t', asOf: { lsn: oldest } });
    assert.ok(r.result.rows[0].c > 0 || r.result.rows[0][0] > 0, JSON.stringify(r));
    await within(20000, (async () => {
      while ((await serverStats(d)).objectStore.pending > 0) await sleep(50);
    })(), 'uploads');
    assert.equal((await d.stop()).code, 0);
    assert.doesNotMatch(d.stderr, /level=error|event=cold_/);
  } finally {
    await d.cleanup();
  }
  // A restart reads the same rows; so does a fresh disk from the store.
  const e = await startDosqld({ conf, dataDir, args });
  try {
    assert.deepEqual(await digest(e.port), all);
  } finally {
    await e.cleanup();
  }
  const f = await startDosqld({ conf, dataDir: path.join(root, 'fresh'), args });
  try {
    assert.match(f.stderr, /event=database_restored db=m/);
    assert.deepEqual(await digest(f.port), all);
  } finally {
    await f.cleanup();
  }
});
