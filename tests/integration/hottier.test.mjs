// The hot tier: a database larger than
// hot_tier_max_bytes has its uploaded checkpoints evicted once it is
// closed, and every row reads back through the warm cache (queries,
// streams, explicit transactions, batches, asOf), with the cold fetches
// counted; a warm cache smaller than what one query reads does not stop it.
// When the object store is slow or down, cold reads end with TIMEOUT or
// INTERNAL_ERROR after a bounded wait while hot databases keep serving; a
// full warm-cache disk fails them with the reason; a file system that
// cannot punch holes evicts nothing; a client that hangs up mid-wait
// leaves nothing behind.
// Against the tests' S3 server (s3rver behind a SigV4-checking proxy) and
// against file://.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { metric, startDosqld, syncShimPreload, tempDir, sleep, within } from './lib/harness.mjs';
import { call, query, post, WsRpc } from './lib/rpc.mjs';
import { startS3 } from './lib/s3.mjs';

let s3;
let root;
before(async () => {
  s3 = await startS3();
  root = tempDir('dosqld-hot-');
});
after(async () => {
  await s3?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

// Small checkpoints, segments and chunks; a budget far below the
// database's size; a warm cache (1 MiB, the least allowed) smaller than
// the table; an hour of history, whose log segments are evicted too.
const conf = (objectStore) => `[engine]
idle_timeout = 1s
[storage]
segment_size = 128K
checkpoint_size = 256K
history_retention = 1h
hot_tier_max_bytes = 300K
warm_cache_bytes = 1M
cold_read_timeout = 1500ms
[object_store]
chunk_size = 64K
upload_interval = 50ms
retries = 1
${objectStore}`;

let seq = 0;
const backends = {
  s3: () => ({
    conf: conf(`endpoint = ${s3.endpoint}\naccess_key = ${s3.key}\nsecret_key = ${s3.secret}\n`),
    url: `s3://${s3.bucket}/hot${++seq}`,
  }),
  file: () => ({ conf: conf(''), url: `file://${path.join(root, `store${++seq}`)}` }),
};

const start = (b, dataDir) => startDosqld({ conf: b.conf, dataDir, args: ['--object-store', b.url] });
// Stats through another database, so that the one evicted stays closed.
const serverStats = async (d) => (await call(d.port, '/v1/db/probe/rpc', 'getStats', {})).result.server;

const ROWS = 3000;
async function fill(port, db) {
  await query(port, db, 'CREATE TABLE t(n INTEGER PRIMARY KEY, b BLOB, s TEXT)');
  for (let i = 1; i <= ROWS; i += 50) {
    const rows = [];
    for (let k = i; k < i + 50; k++) rows.push(`(${k}, randomblob(700), 'row ${k}')`);
    await query(port, db, `INSERT INTO t VALUES ${rows.join(',')}`);
  }
}
const digest = async (port, db) => (await query(port, db, 'SELECT n, hex(b), s FROM t ORDER BY n')).rows;

async function evicted(d, dataDir, db) {
  const hot = await within(20000, (async () => {
    for (;;) {
      const os = (await serverStats(d)).objectStore;
      if (os.hotTier.coldFiles > 0 && os.hotTier.evictedBytes > 500000) return os.hotTier;
      await sleep(100);
    }
  })(), 'eviction');
  const ckpt = path.join(dataDir, 'db', db, 'ckpt');
  const cold = readdirSync(ckpt).filter((f) => f.endsWith('.ckpt.cold'));
  assert.ok(cold.length > 0, readdirSync(ckpt).join(' '));
  for (const f of cold) assert.ok(existsSync(path.join(ckpt, f.replace(/\.cold$/, ''))), 'the file stays, its bytes go');
  const wal = path.join(dataDir, 'db', db, 'wal');
  await within(10000, (async () => {
    while (!readdirSync(wal).some((f) => f.endsWith('.seg.cold'))) await sleep(100);
  })(), `log segments evicted: ${readdirSync(wal).join(' ')}`);
  return hot;
}

for (const [name, make] of Object.entries(backends)) {
  test(`${name}: a database larger than the hot budget is evicted, and every row reads back`, async () => {
    const b = make();
    const dataDir = path.join(root, `a${seq}`);
    let d = await start(b, dataDir);
    try {
      await fill(d.port, 'big');
      const all = await digest(d.port, 'big');
      assert.equal(all.length, ROWS);
      const lsn = (await call(d.port, '/v1/db/big/rpc', 'ping', {})).result.lsn;
      const hot = await evicted(d, dataDir, 'big');
      assert.ok(hot.localBytes < hot.evictedBytes / 5, `local bytes after eviction: ${JSON.stringify(hot)}`);
      assert.ok(await metric(d.port, 'dosqld_hot_tier_evictions_total') >= 1);

      // A whole scan: more pages than the warm cache holds.
      assert.deepEqual(await digest(d.port, 'big'), all);
      let w = (await serverStats(d)).objectStore.warmCache;
      assert.ok(w.fetches >= 10 && w.misses >= 10, JSON.stringify(w));
      assert.equal(w.errors, 0);
      assert.ok(await metric(d.port, 'dosqld_cold_reads_total') >= w.fetches);
      for (const n of [1, 777, 1500, ROWS]) {
        const r = await query(d.port, 'big', 'SELECT n, hex(b), s FROM t WHERE n = ?', [n]);
        assert.deepEqual(r.rows, [all[n - 1]]);
      }

      // A fresh start empties the warm cache: every kind of read is cold.
      await d.stop();
      d = await start(b, dataDir);
      const ws = await WsRpc.open(d.port, '/v1/db/big/rpc');
      const res = await ws.ok('queryStream', { sql: 'SELECT n, hex(b), s FROM t ORDER BY n', chunkSize: 200 }, 60000);
      assert.equal(res.rowCount, ROWS);
      const rows = ws.notes.filter((m) => m.method === 'stream.chunk').flatMap((m) => m.params.rows);
      assert.deepEqual(rows, all, 'a stream: every row once, in order');
      await ws.close();

      await d.stop();
      d = await start(b, dataDir);
      const tx = await WsRpc.open(d.port, '/v1/db/big/rpc');
      const { transactionId } = await tx.ok('beginTransaction', {});
      const inTx = await tx.ok('query', { transactionId, sql: "INSERT INTO t VALUES (0, x'00', 'zero'); SELECT count(*), sum(length(b)) FROM t" }, 30000);
      assert.deepEqual(inTx.rows, [[ROWS + 1, ROWS * 700 + 1]], 'inside an explicit transaction');
      await tx.ok('commit', { transactionId });
      await tx.close();
      assert.deepEqual((await query(d.port, 'big', 'SELECT count(*) FROM t')).rows, [[ROWS + 1]], 'the insert ran once');

      const batch = await call(d.port, '/v1/db/big/rpc', 'batch', { atomic: false, statements: [
        { sql: 'SELECT s FROM t WHERE n = 10' },
        { sql: 'SELECT s FROM t WHERE n = 2999' },
        { sql: 'SELECT count(*) FROM t WHERE s LIKE ?', params: ['row 1%'] },
      ] });
      assert.deepEqual(batch.result.results.map((r) => r.rows), [[['row 10']], [['row 2999']], [[1111]]]);
      const asOf = await post(d.port, '/v1/db/big/query', { sql: 'SELECT count(*) FROM t', asOf: { lsn } });
      assert.deepEqual(asOf.json.rows, [[ROWS]], JSON.stringify(asOf.json));
      // History in evicted log segments: time travel and CDC from LSN 1.
      const past = await post(d.port, '/v1/db/big/query', { sql: 'SELECT count(*) FROM t', asOf: { lsn: 31 } });
      assert.deepEqual(past.json.rows, [[1500]], JSON.stringify(past.json));
      const sse = await fetch(`${d.url}/v1/db/big/cdc?from=1`, { signal: AbortSignal.timeout(30000) });
      const reader = sse.body.getReader();
      let text = '';
      while (!/"lsn":3,/.test(text)) {
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
      }
      await reader.cancel();
      const firstRows = [...text.matchAll(/"lsn":2,[^\n]*?"n":(\d+)/g)].map((m) => Number(m[1]));
      assert.deepEqual(firstRows.slice(0, 3), [1, 2, 3], 'CDC from the evicted log');
      assert.deepEqual((await query(d.port, 'big', 'PRAGMA integrity_check')).rows, [['ok']]);
      w = (await serverStats(d)).objectStore.warmCache;
      assert.ok(w.fetches > 0, JSON.stringify(w));
    } finally {
      await d.cleanup();
    }
  });
}

test('s3: cold reads fail with TIMEOUT or INTERNAL_ERROR when the store is slow or down; hot data keeps serving', async () => {
  const b = backends.s3();
  const dataDir = path.join(root, 'faults');
  let d = await start(b, dataDir);
  try {
    await fill(d.port, 'big');
    await evicted(d, dataDir, 'big');
    await d.stop();
    d = await start(b, dataDir); // an empty warm cache
    await query(d.port, 'hot', 'CREATE TABLE k(v)');

    await s3.fault('slow', { count: 1000, delayMs: 4000, match: 'GET', path: '/data/' });
    let t0 = Date.now();
    const pending = query(d.port, 'big', 'SELECT sum(length(b)) FROM t', undefined, { raw: true }).then((r) => r.json);
    // Meanwhile a database with its pages here answers at once.
    for (let i = 0; i < 20; i++) await query(d.port, 'hot', 'INSERT INTO k VALUES (?)', [i]);
    assert.deepEqual((await query(d.port, 'hot', 'SELECT count(*) FROM k')).rows, [[20]]);
    const hotMs = Date.now() - t0;
    const slow = await pending;
    const took = Date.now() - t0;
    assert.equal(slow.error?.code, 'TIMEOUT', JSON.stringify(slow));
    assert.match(slow.error.message, /object store/);
    assert.ok(took >= 1400 && took < 4000, `cold_read_timeout (1.5 s), not the store's: ${took} ms`);
    assert.ok(hotMs < 1400, `the hot database did not wait: ${hotMs} ms`);
    let w = (await serverStats(d)).objectStore.warmCache;
    assert.ok(w.timeouts >= 1, JSON.stringify(w));
    await s3.fault('slow', { count: 0 });
    await sleep(4500); // the slow GETs end

    await s3.fault('down', { delayMs: 3000 });
    // CDC from history in evicted log segments fails with the reason (as
    // the answer, or as the stream's end once it began), bounded.
    const sse = await fetch(`${d.url}/v1/db/big/cdc?from=1`, { signal: AbortSignal.timeout(15000) });
    const text = await sse.text();
    assert.match(text, /"code":"(INTERNAL_ERROR|TIMEOUT)","message":"[^"]*object store/, text.slice(0, 500));
    t0 = Date.now();
    const down = (await query(d.port, 'big', 'SELECT sum(length(b)) FROM t', undefined, { raw: true })).json;
    assert.ok(['INTERNAL_ERROR', 'TIMEOUT'].includes(down.error?.code), JSON.stringify(down));
    assert.ok(Date.now() - t0 < 4000);
    await sleep(3000);
    const back = await within(20000, (async () => {
      for (;;) {
        const r = (await query(d.port, 'big', 'SELECT count(*), sum(length(b)) FROM t', undefined, { raw: true })).json;
        if (!r.error) return r.rows;
        await sleep(200);
      }
    })(), 'cold reads after the store is back');
    assert.deepEqual(back, [[ROWS, ROWS * 700]]);
    w = (await serverStats(d)).objectStore.warmCache;
    assert.ok(w.errors >= 1 || w.timeouts >= 2, JSON.stringify(w));
  } finally {
    await d.cleanup();
  }
});

test('file: hot_tier_max_age evicts what has not been touched for that long, whatever the budget', async () => {
  const b = {
    conf: conf('').replace('hot_tier_max_bytes = 300K', 'hot_tier_max_bytes = 0\nhot_tier_max_age = 2s'),
    url: `file://${path.join(root, 'age-store')}`,
  };
  const dataDir = path.join(root, 'age');
  const d = await start(b, dataDir);
  try {
    await fill(d.port, 'old');
    await query(d.port, 'young', 'CREATE TABLE k(v)');
    const t0 = Date.now();
    const hot = await evicted(d, dataDir, 'old');
    assert.ok(Date.now() - t0 >= 2000, 'not before it is 2 s old');
    assert.ok(hot.evictions > 0);
    assert.equal((await query(d.port, 'old', 'SELECT count(*) FROM t')).rows[0][0], ROWS);
  } finally {
    await d.cleanup();
  }
});

test('file: an evicted last log segment stays in the manifest when its database opens again and commits; the store\'s copy restores', async () => {
  // Segments smaller than a chunk, all covered by the checkpoint taken at
  // the close (more than 1 MiB of log): the close uploads them and the
  // budget evicts them, the last one included.
  const store = path.join(root, 'lastseg-store');
  const dataDir = path.join(root, 'lastseg');
  const lconf = '[engine]\nidle_timeout = 1s\n[storage]\nsegment_size = 4M\ncheckpoint_size = 64M\n' +
    'history_retention = 1h\nhot_tier_max_bytes = 100K\n[object_store]\nchunk_size = 8M\nupload_interval = 50ms\n';
  const d = await startDosqld({ conf: lconf, dataDir, args: ['--object-store', `file://${store}`] });
  const manifest = () => {
    const text = readFileSync(path.join(store, 'db/big/manifest.json'), 'utf8');
    return JSON.parse(text.slice(0, text.indexOf('\n')));
  };
  let all;
  try {
    await fill(d.port, 'big');
    const wal = path.join(dataDir, 'db/big/wal');
    const segs = () => readdirSync(wal).filter((f) => f.endsWith('.seg')).sort();
    await within(20000, (async () => {
      while (!segs().every((f) => existsSync(path.join(wal, `${f}.cold`)))) await sleep(100);
    })(), `every segment evicted: ${readdirSync(wal).join(' ')}`);
    const evicted = segs().map((f) => `wal/${f}`);
    // Open again, commit: appends go to a new segment, and what is
    // offered while open still names the evicted ones.
    await query(d.port, 'big', "INSERT INTO t VALUES (0, x'00', 'zero')");
    await within(10000, (async () => {
      while ((await serverStats(d)).objectStore.pending > 0) await sleep(50);
    })(), 'uploads');
    const named = manifest().files.map((f) => f.name);
    for (const f of evicted) assert.ok(named.includes(f), `evicted ${f} is named: ${named.join(' ')}`);
    all = await digest(d.port, 'big');
    assert.equal(all.length, ROWS + 1);
    assert.equal((await d.stop()).code, 0);
    assert.doesNotMatch(d.stderr, /cold_file_unknown/);
  } finally {
    await d.cleanup();
  }
  // The disk is lost: the store's copy is whole.
  const fresh = path.join(root, 'lastseg2');
  const e = await startDosqld({ conf: lconf, dataDir: fresh, args: ['--object-store', `file://${store}`] });
  try {
    assert.match(e.stderr, /event=database_restored db=big/);
    assert.deepEqual(await digest(e.port, 'big'), all);
  } finally {
    await e.cleanup();
  }
});

test('file: a file system that cannot punch holes evicts nothing, and says so; the files stay whole', async () => {
  const trigger = path.join(root, 'nopunch');
  writeFileSync(trigger, '');
  const b = backends.file();
  const dataDir = path.join(root, 'nopunch-data');
  const d = await startDosqld({ conf: b.conf, dataDir, args: ['--object-store', b.url],
    env: { LD_PRELOAD: syncShimPreload(), DSQ_FAILPUNCH: trigger } });
  try {
    await fill(d.port, 'big');
    const hot = await within(20000, (async () => {
      for (;;) {
        const os = (await serverStats(d)).objectStore;
        if (os.hotTier.errors > 0) return os.hotTier;
        await sleep(100);
      }
    })(), 'an eviction error');
    assert.equal(hot.evictions, 0);
    assert.equal(hot.coldFiles, 0);
    for (const sub of ['ckpt', 'wal'])
      assert.deepEqual(readdirSync(path.join(dataDir, 'db', 'big', sub)).filter((f) => f.endsWith('.cold')), [],
        'the sidecar of a file that could not be evicted is gone');
    assert.match(d.stderr, /event=evict_failed .*cannot punch a hole: Operation not supported/);
    assert.deepEqual((await query(d.port, 'big', 'SELECT count(*), sum(length(b)) FROM t')).rows, [[ROWS, ROWS * 700]]);
    assert.equal((await serverStats(d)).objectStore.warmCache.fetches, 0, 'every page read locally');
  } finally {
    await d.cleanup();
  }
});

test('file: a warm cache whose disk is full fails the cold read with the reason; with room again it reads', async () => {
  const trigger = path.join(root, 'warmfull');
  const b = backends.file();
  const dataDir = path.join(root, 'warmfull-data');
  const env = { LD_PRELOAD: syncShimPreload(), DSQ_FAILWRITE: trigger, DSQ_FAILWRITE_PATH: '/warm/' };
  let d = await startDosqld({ conf: b.conf, dataDir, args: ['--object-store', b.url], env });
  try {
    await fill(d.port, 'big');
    await evicted(d, dataDir, 'big');
    await d.stop();
    d = await startDosqld({ conf: b.conf, dataDir, args: ['--object-store', b.url], env });
    writeFileSync(trigger, 'ENOSPC');
    const r = (await query(d.port, 'big', 'SELECT sum(length(b)) FROM t', undefined, { raw: true })).json;
    assert.equal(r.error?.code, 'INTERNAL_ERROR', JSON.stringify(r));
    assert.match(r.error.message, /cannot keep .* in the warm cache: No space left on device/);
    assert.ok((await serverStats(d)).objectStore.warmCache.errors >= 1);
    rmSync(trigger);
    assert.deepEqual((await query(d.port, 'big', 'SELECT count(*), sum(length(b)) FROM t')).rows, [[ROWS, ROWS * 700]]);
  } finally {
    rmSync(trigger, { force: true });
    await d.cleanup();
  }
});

test('s3: a client that hangs up while its request waits for a cold page: the request ends, the server goes on', async () => {
  const b = backends.s3();
  const dataDir = path.join(root, 'hangup');
  let d = await start(b, dataDir);
  try {
    await fill(d.port, 'big');
    await evicted(d, dataDir, 'big');
    await d.stop();
    d = await start(b, dataDir);
    await s3.fault('slow', { count: 1000, delayMs: 1000, match: 'GET', path: '/data/' });
    for (let i = 0; i < 5; i++) {
      const ac = new AbortController();
      const p = fetch(`${d.url}/v1/db/big/query`, { method: 'POST', body: JSON.stringify({ sql: 'SELECT sum(length(b)) FROM t' }), signal: ac.signal });
      await sleep(100);
      ac.abort();
      await assert.rejects(p);
    }
    await s3.fault('slow', { count: 0 });
    assert.deepEqual((await query(d.port, 'big', 'SELECT count(*), sum(length(b)) FROM t')).rows, [[ROWS, ROWS * 700]]);
    assert.deepEqual((await query(d.port, 'other', 'SELECT 1')).rows, [[1]]);
    assert.deepEqual(await d.stop(), { code: 0, signal: null }, 'a clean stop after it');
  } finally {
    await d.cleanup();
  }
});

// A read beside another client's open transaction runs on a connection of
// its own (a view of the last commit); when its page does not come from
// the object store it fails, bounded, as any read does — a batch of
// independent statements too — and does not wait again and again, holding
// up the transaction's own requests.
test('s3: a non-atomic batch beside a transaction whose page does not come fails, bounded; the transaction goes on', async () => {
  const b = backends.s3();
  const dataDir = path.join(root, 'beside');
  let d = await start(b, dataDir);
  let tx;
  try {
    await fill(d.port, 'big');
    await evicted(d, dataDir, 'big');
    await d.stop();
    d = await start(b, dataDir); // an empty warm cache
    tx = await WsRpc.open(d.port, '/v1/db/big/rpc');
    const { transactionId } = await tx.ok('beginTransaction', {});
    await tx.ok('query', { transactionId, sql: "INSERT INTO t VALUES (0, x'00', 'zero')" }, 30000);
    await s3.fault('500', { count: 100000, match: 'GET', path: '/data/' });
    const t0 = Date.now();
    const r = await within(10000, call(d.port, '/v1/db/big/rpc', 'batch', { atomic: false, statements: [
      { sql: 'SELECT 1' },
      { sql: 'SELECT sum(length(b)) FROM t' },
    ] }), 'the batch beside the transaction');
    // As outside a transaction: that statement fails, the others run.
    assert.deepEqual(r.result?.results?.[0]?.rows, [[1]], JSON.stringify(r));
    const err = r.result.results[1].error;
    assert.ok(['INTERNAL_ERROR', 'TIMEOUT'].includes(err?.code), JSON.stringify(r));
    assert.match(err.message, /object store/);
    assert.ok(Date.now() - t0 < 10000);
    await s3.fault('500', { count: 0 });
    await tx.ok('commit', { transactionId }, 30000);
    assert.deepEqual((await query(d.port, 'big', 'SELECT count(*) FROM t')).rows, [[ROWS + 1]]);
  } finally {
    await s3.fault('500', { count: 0 }).catch(() => {});
    await tx?.close().catch(() => {});
    await d.cleanup();
  }
});
