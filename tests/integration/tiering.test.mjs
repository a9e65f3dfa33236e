// Tiering: databases' files go to the object
// store while dosqld runs and when it stops; a node with an empty data
// directory restores every database from the store alone; a dropped
// database's objects go; an object store that is down does not stop
// writes, and what waited goes up once it is back. Against the tests' S3
// server (s3rver behind a SigV4-checking proxy) and against file://.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { BUILD, metric, startDosqld, syncShimPreload, tempDir, sleep, within } from './lib/harness.mjs';
import { call, query } from './lib/rpc.mjs';
import { startS3 } from './lib/s3.mjs';

let s3;
let root;
before(async () => {
  s3 = await startS3();
  root = tempDir('dosqld-tier-');
});
after(async () => {
  await s3?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

// Small chunks, segments and checkpoints, so that a few hundred rows make
// many of each; uploads every 50 ms.
const STORAGE = `[storage]
segment_size = 128K
checkpoint_size = 64K
[object_store]
chunk_size = 64K
upload_interval = 50ms
retries = 2
`;

let seq = 0;
const backends = {
  s3: () => {
    const prefix = `run${++seq}`;
    return {
      conf: `${STORAGE}endpoint = ${s3.endpoint}\naccess_key = ${s3.key}\nsecret_key = ${s3.secret}\n`,
      url: `s3://${s3.bucket}/${prefix}`,
      list: (p) => objcli(['-e', s3.endpoint, '-k', s3.key, '-s', s3.secret, `s3://${s3.bucket}/${prefix}`, 'list', p]),
    };
  },
  file: () => {
    const dir = path.join(root, `store${++seq}`);
    return { conf: STORAGE, url: `file://${dir}`, list: (p) => objcli([`file://${dir}`, 'list', p]) };
  },
};

function objcli(args) {
  const r = spawnSync(path.join(BUILD, 'tests/tools/objcli'), args, { timeout: 30000 });
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout.toString().split('\n').filter(Boolean).map((l) => l.split(' ')[0]);
}

async function start(b, dataDir) {
  return startDosqld({ conf: b.conf, dataDir, args: ['--object-store', b.url] });
}

const stats = async (d, db) => (await call(d.port, `/v1/db/${db}/rpc`, 'getStats', {})).result;

// Until the node has nothing waiting to go up (bounded).
async function uploaded(d, db) {
  await within(20000, (async () => {
    for (;;) {
      const os = (await stats(d, db)).server.objectStore;
      if (os.pending === 0 && os.manifests > 0) return os;
      await sleep(50);
    }
  })(), 'uploads');
  return (await stats(d, db)).server.objectStore;
}

async function fill(port, db, from, to) {
  await query(port, db, 'CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, b BLOB, s TEXT)');
  for (let i = from; i <= to; i += 10) {
    const rows = [];
    for (let k = i; k < i + 10 && k <= to; k++) rows.push(`(${k}, randomblob(700), 'row ${k}')`);
    await query(port, db, `INSERT INTO t VALUES ${rows.join(',')}`);
  }
}

const summary = async (port, db) => (await query(port, db,
  'SELECT count(*), min(n), max(n), sum(length(b)) FROM t')).rows[0];
const digest = async (port, db) => (await query(port, db, 'SELECT n, hex(b), s FROM t ORDER BY n')).rows;

for (const [name, make] of Object.entries(backends)) {
  test(`${name}: a clean stop uploads everything; an empty node restores every database from the store alone`, async () => {
    const b = make();
    const d = await start(b, path.join(root, `a${seq}`));
    await fill(d.port, 'one', 1, 400);       // many segments and checkpoints
    await query(d.port, 'one', 'DELETE FROM t WHERE n % 7 = 0');
    await query(d.port, 'one', "UPDATE t SET s = s || '!' WHERE n % 5 = 0");
    await fill(d.port, 'two', 1, 30);
    await query(d.port, 'three', 'CREATE TABLE k(v)');
    const before = { one: await digest(d.port, 'one'), two: await digest(d.port, 'two') };
    const lsn = (await stats(d, 'one')).database.lsn;
    const st = (await stats(d, 'one')).database.storage;
    assert.ok(st.checkpoints >= 1 || st.logSegments >= 2, JSON.stringify(st));
    assert.deepEqual(await d.stop(), { code: 0, signal: null });
    assert.match(d.stderr, /event=engine_stopped/);
    assert.doesNotMatch(d.stderr, /uploads_unfinished/);

    const fresh = path.join(root, `fresh${seq}`);
    const e = await start(b, fresh);
    try {
      assert.match(e.stderr, /event=databases_restored count=3/);
      const dbs = await (await fetch(`${e.url}/v1/db`)).json();
      assert.deepEqual(dbs.sort(), ['one', 'three', 'two']);
      assert.deepEqual(await digest(e.port, 'one'), before.one);
      assert.deepEqual(await digest(e.port, 'two'), before.two);
      assert.deepEqual((await query(e.port, 'three', 'SELECT count(*) FROM k')).rows, [[0]], 'a small one, kept inside its manifest');
      assert.equal((await stats(e, 'one')).database.lsn, lsn, 'every commit, to the last LSN');
      assert.deepEqual((await query(e.port, 'one', 'PRAGMA integrity_check')).rows, [['ok']]);
      assert.equal((await stats(e, 'one')).server.objectStore.restored, 3);
      // It goes on from there, and its next uploads build on what was restored.
      await fill(e.port, 'one', 401, 420);
      await uploaded(e, 'one');
    } finally {
      await e.cleanup();
    }
  });

  test(`${name}: uploads go on while it runs; after a lost disk, the restored database is a prefix of what was written`, async () => {
    const b = make();
    const d = await start(b, path.join(root, `b${seq}`));
    await fill(d.port, 'live', 1, 600);
    const os = await uploaded(d, 'live');
    assert.ok(os.uploads > 5 && os.uploadedBytes > 300000, JSON.stringify(os));
    assert.equal(os.errors, 0, os.lastError);
    const keys = b.list('db/live/');
    assert.ok(keys.includes('db/live/manifest.json'));
    assert.ok(keys.filter((k) => k.startsWith('db/live/data/')).length > 5);
    // The disk is lost: no clean stop, no data directory.
    await d.stop('SIGKILL');
    const e = await start(b, path.join(root, `b2${seq}`));
    try {
      const [count, min, max] = await summary(e.port, 'live');
      assert.equal(min, 1);
      assert.equal(max, count, 'no row is missing before the last one restored');
      assert.ok(count >= 600 - 120, `at most about a chunk (64 KiB) lost: ${count} of 600`);
      assert.deepEqual((await query(e.port, 'live', 'PRAGMA integrity_check')).rows, [['ok']]);
    } finally {
      await e.cleanup();
    }
  });

  test(`${name}: dropping a database deletes its objects`, async () => {
    const b = make();
    const d = await start(b, path.join(root, `c${seq}`));
    try {
      await fill(d.port, 'gone', 1, 100);
      await fill(d.port, 'kept', 1, 10);
      const del = await fetch(`${d.url}/v1/db/gone`, { method: 'DELETE' });
      assert.equal(del.status, 200, await del.text());
      await uploaded(d, 'kept');
      await d.stop();
      assert.deepEqual(b.list('db/gone/'), []);
      assert.ok(b.list('db/kept/').includes('db/kept/manifest.json'));
    } finally {
      await d.cleanup();
    }
  });
}

// The manifest of the file store at `store` for database db (its JSON).
function manifestOf(store, db) {
  const text = readFileSync(path.join(store, 'db', db, 'manifest.json'), 'utf8');
  return JSON.parse(text.slice(0, text.indexOf('\n')));
}

test('file: a database that opens again and commits keeps its last segment in the store: a lost disk then loses nothing from before its close', async () => {
  // Segments smaller than a chunk (2 MiB): while open, the last segment
  // has no whole chunk to offer.
  const store = path.join(root, 'reopen-store');
  const conf = '[engine]\nidle_timeout = 1s\n[storage]\nsegment_size = 256K\ncheckpoint_size = 64M\n' +
    '[object_store]\nupload_interval = 50ms\n';
  const d = await startDosqld({ conf, dataDir: path.join(root, 'reopen'), args: ['--object-store', `file://${store}`] });
  let closed;
  try {
    await fill(d.port, 'r', 1, 40);
    const lsn = (await stats(d, 'r')).database.lsn;
    // It hibernates: its whole log goes up.
    closed = await within(10000, (async () => {
      for (;;) {
        const m = existsSync(path.join(store, 'db/r/manifest.json')) ? manifestOf(store, 'r') : null;
        const seg = m?.files.find((f) => f.name === 'wal/00000001.seg');
        if (m?.lsn >= lsn && seg) return seg;
        await sleep(50);
      }
    })(), 'the upload at its close');
    // It opens again and commits: what it offers while open keeps the
    // segment as the store has it.
    await fill(d.port, 'r', 41, 41);
    await uploaded(d, 'r');
    const seg = manifestOf(store, 'r').files.find((f) => f.name === 'wal/00000001.seg');
    assert.ok(seg && seg.size >= closed.size, `the segment uploaded at its close is still named: ${JSON.stringify(seg)}`);
  } finally {
    await d.stop('SIGKILL'); // the disk is lost
    rmSync(d.dir, { recursive: true, force: true });
  }
  const r = spawnSync(path.join(BUILD, 'dosqld'), ['--data-dir', path.join(root, 'reopen2'), '--object-store',
    `file://${store}`, '--restore', 'r'], { timeout: 30000 });
  assert.equal(r.status, 0, r.stderr.toString());
  const e = await startDosqld({ dataDir: path.join(root, 'reopen2'), args: ['--object-store', `file://${path.join(root, 'reopen2-store')}`] });
  try {
    const [count, min, max] = await summary(e.port, 'r');
    assert.ok(count >= 40 && min === 1 && max === count, `every row committed before the close: ${count} ${min} ${max}`);
  } finally {
    await e.cleanup();
  }
});

test('s3: while the store is down, writes are acknowledged and uploads wait; then everything goes up', async () => {
  const b = backends.s3();
  const d = await start(b, path.join(root, 'down'));
  try {
    await fill(d.port, 'w', 1, 50);
    await uploaded(d, 'w');
    await s3.fault('down', { delayMs: 2500 });
    const t0 = Date.now();
    await fill(d.port, 'w', 51, 400); // every one acknowledged
    assert.ok(Date.now() - t0 < 20000);
    const during = (await stats(d, 'w')).server.objectStore;
    await within(15000, (async () => {
      for (;;) {
        const os = (await stats(d, 'w')).server.objectStore;
        if (os.errors > 0) return;
        await sleep(100);
      }
    })(), 'an upload error while the store is down');
    const os = await uploaded(d, 'w');
    assert.ok(os.errors >= 1 && os.lastError !== '', JSON.stringify({ during, os }));
    assert.ok(await metric(d.port, 'dosqld_object_store_errors_total') >= 1);
    assert.ok(await metric(d.port, 'dosqld_object_store_uploads_total') >= os.uploads);
    assert.equal(await metric(d.port, 'dosqld_object_store_pending'), 0);
    assert.equal((await d.stop()).code, 0);
    const e = await start(b, path.join(root, 'down2'));
    try {
      assert.deepEqual(await summary(e.port, 'w'), [400, 1, 400, 400 * 700]);
    } finally {
      await e.cleanup();
    }
  } finally {
    await d.cleanup();
  }
});

test('s3: the uploads of different databases go at once', async () => {
  const b = backends.s3();
  const d = await start(b, path.join(root, 'par'));
  for (let i = 0; i < 8; i++) await query(d.port, `p${i}`, `CREATE TABLE t(v); INSERT INTO t VALUES (${i})`);
  await s3.resetStats();
  await s3.fault('slow', { count: 100, delayMs: 300 });
  assert.equal((await d.stop()).code, 0); // each closes and offers itself
  await s3.fault('slow', { count: 0 });
  const st = await s3.stats();
  assert.ok(st.maxInflight >= 2, `requests of several databases at once: ${JSON.stringify(st)}`);
  assert.doesNotMatch(d.stderr, /uploads_unfinished/);
});

test('s3: many databases are restored at once', async () => {
  const b = backends.s3();
  const d = await start(b, path.join(root, 'many'));
  for (let i = 0; i < 60; i++) await query(d.port, `m${i}`, `CREATE TABLE t(v); INSERT INTO t VALUES (${i})`);
  assert.equal((await d.stop()).code, 0);
  const e = await start(b, path.join(root, 'many2'));
  try {
    assert.match(e.stderr, /event=databases_restored count=60/);
    for (const i of [0, 17, 59]) assert.deepEqual((await query(e.port, `m${i}`, 'SELECT v FROM t')).rows, [[i]]);
    assert.equal((await stats(e, 'm0')).server.objectStore.restored, 60);
  } finally {
    await e.cleanup();
  }
});

test('s3: a chunk damaged on the way is fetched again during a restore', async () => {
  const b = backends.s3();
  const d = await start(b, path.join(root, 'dmg'));
  await fill(d.port, 'x', 1, 200);
  const want = await digest(d.port, 'x');
  assert.equal((await d.stop()).code, 0);
  const chunks = b.list('db/x/data/').length;
  assert.ok(chunks >= 2, `${chunks} chunks`);
  // A chunk, then (on another empty node) the manifest, arrive with a byte changed.
  await s3.fault('corrupt', { count: 1, match: 'GET', path: '/data/' });
  const e = await start(b, path.join(root, 'dmg2'));
  try {
    assert.deepEqual(await digest(e.port, 'x'), want);
    assert.match(e.stderr, /event=restore_chunk_damaged db=x key=db\/x\/data\/\S+ reason=crc32 attempt=1/);
  } finally {
    await e.cleanup();
  }
  await s3.fault('corrupt', { count: 2, match: 'GET', path: 'manifest' });
  const g = await start(b, path.join(root, 'dmg3'));
  try {
    assert.deepEqual(await digest(g.port, 'x'), want);
    assert.match(g.stderr, /event=manifest_damaged db=x attempt=2/);
  } finally {
    await g.cleanup();
  }
  // Damaged every time: the start fails and says so.
  await s3.fault('corrupt', { count: 3, match: 'GET', path: 'manifest' });
  const x = spawnSync(path.join(BUILD, 'dosqld'), ['--listen', '127.0.0.1:0', '--data-dir', path.join(root, 'dmg4'),
    '--object-store', b.url], { timeout: 15000, env: { ...process.env, AWS_ENDPOINT_URL: s3.endpoint,
    AWS_ACCESS_KEY_ID: s3.key, AWS_SECRET_ACCESS_KEY: s3.secret } });
  assert.equal(x.status, 1, x.stderr.toString());
  assert.match(x.stderr.toString(), /reason="restoring x: the manifest of x in the object store is damaged"/);
});

test('file: restoring refuses a chunk whose CRC does not match, and starts nothing half-restored', async () => {
  const b = backends.file();
  const d = await start(b, path.join(root, 'crc'));
  await fill(d.port, 'c', 1, 50);
  assert.equal((await d.stop()).code, 0);
  const store = b.url.slice('file://'.length);
  const chunk = objcli([b.url, 'list', 'db/c/data/']).at(-1);
  const f = path.join(store, chunk);
  const r = spawnSync('sh', ['-c', `printf 'X' | dd of='${f}' bs=1 seek=100 conv=notrunc 2>/dev/null`]);
  assert.equal(r.status, 0);
  const dataDir = path.join(root, 'crc2');
  const x = spawnSync(path.join(BUILD, 'dosqld'), ['--listen', '127.0.0.1:0', '--data-dir', dataDir,
    '--object-store', b.url], { timeout: 15000 });
  assert.equal(x.status, 1, x.stderr.toString());
  assert.match(x.stderr.toString(), /event=start_failed reason="restoring c: db\/c\/data\/\S+: the chunk's CRC-32 does not match"/);
  assert.ok(!existsSync(path.join(dataDir, 'db/c')), 'nothing half-restored in place');
});

test('dosqld --restore DB [--as-of LSN|TIME] materializes one database from the store', async () => {
  const b = backends.file();
  const d = await start(b, path.join(root, 'pit'));
  await query(d.port, 'p', 'CREATE TABLE t(n INTEGER PRIMARY KEY, b BLOB)');
  let lsnAt100 = 0;
  let midTime = 0;
  for (let i = 1; i <= 200; i++) {
    const r = await query(d.port, 'p', 'INSERT INTO t VALUES (?, randomblob(900))', [i]);
    if (i === 100) {
      lsnAt100 = r.lsn;
      await sleep(30);
      midTime = Date.now();
      await sleep(30);
    }
  }
  assert.equal((await d.stop()).code, 0);
  const restore = (dir, ...args) => spawnSync(path.join(BUILD, 'dosqld'),
    ['--data-dir', path.join(root, dir), '--object-store', b.url, '--restore', ...args], { timeout: 30000 });
  const count = async (dir) => {
    const e = await startDosqld({ dataDir: path.join(root, dir), args: ['--object-store', `file://${path.join(root, dir, 'own-store')}`] });
    try {
      return (await query(e.port, 'p', 'SELECT count(*), max(n) FROM t')).rows[0];
    } finally {
      await e.cleanup();
    }
  };

  let r = restore('pit-lsn', 'p', '--as-of', String(lsnAt100));
  assert.equal(r.status, 0, r.stderr.toString());
  assert.match(r.stdout.toString(), new RegExp(`^restored p at LSN ${lsnAt100} into `));
  assert.deepEqual(await count('pit-lsn'), [100, 100]);

  r = restore('pit-time', 'p', '--as-of', new Date(midTime).toISOString());
  assert.equal(r.status, 0, r.stderr.toString());
  assert.match(r.stdout.toString(), new RegExp(`^restored p at LSN ${lsnAt100} into `), 'the newest commit before the time');
  assert.deepEqual(await count('pit-time'), [100, 100]);

  r = restore('pit-all', 'p');
  assert.equal(r.status, 0, r.stderr.toString());
  assert.deepEqual(await count('pit-all'), [200, 200]);

  r = restore('pit-all', 'p');
  assert.equal(r.status, 1);
  assert.match(r.stderr.toString(), /exists already; restore into another data directory/);
  r = restore('pit-x', 'p', '--as-of', '99999');
  assert.match(r.stderr.toString(), /LSN 99999 is after the last commit the object store has/);
  r = restore('pit-x', 'p', '--as-of', '1999-01-01T00:00:00Z');
  assert.match(r.stderr.toString(), /no commit at or before that time/);
  r = restore('pit-x', 'p', '--as-of', 'yesterday');
  assert.match(r.stderr.toString(), /neither an LSN nor an RFC 3339 time/);
  r = restore('pit-x', 'nothing');
  assert.match(r.stderr.toString(), /restore nothing: the object store has no such database/);
  r = spawnSync(path.join(BUILD, 'dosqld'), ['--as-of', '5'], { timeout: 10000 });
  assert.equal(r.status, 2);
  assert.match(r.stderr.toString(), /--as-of goes with --restore/);
  assert.ok(!existsSync(path.join(root, 'pit-x/db/p')));
});

test('s3, sync_to_object_store = commit: after a lost disk every acknowledged commit is restored', async () => {
  const b = backends.s3();
  b.conf += '[storage]\nsync_to_object_store = commit\n';
  const d = await start(b, path.join(root, 'commit'));
  await query(d.port, 'c', 'CREATE TABLE t(n INTEGER PRIMARY KEY, b BLOB)');
  let acked = 0;
  for (let i = 1; i <= 150; i++) {
    await query(d.port, 'c', 'INSERT INTO t VALUES (?, randomblob(700))', [i]);
    acked = i;
  }
  assert.ok(b.list('db/c/tail/').length >= 1, 'records go up as tails');
  await d.stop('SIGKILL'); // and the disk is lost
  // A tail damaged on the way every time: the start is refused.
  await s3.fault('corrupt', { count: 3, match: 'GET', path: '/tail/' });
  writeFileSync(path.join(root, 'commit-x.conf'), b.conf);
  const x = spawnSync(path.join(BUILD, 'dosqld'), ['-c', path.join(root, 'commit-x.conf'), '--listen', '127.0.0.1:0',
    '--data-dir', path.join(root, 'commit-x'), '--object-store', b.url], { timeout: 20000 });
  assert.equal(x.status, 1, x.stderr.toString());
  assert.match(x.stderr.toString(), /reason="restoring c: db\/c\/tail\/\S+: its records are damaged"/);
  // Damaged once: fetched again.
  await s3.fault('corrupt', { count: 1, match: 'GET', path: '/tail/' });
  const e = await start(b, path.join(root, 'commit2'));
  try {
    assert.match(e.stderr, /event=restore_tail_damaged db=c key=db\/c\/tail\/\S+ attempt=1/);
    assert.deepEqual(await summary(e.port, 'c'), [acked, 1, acked, acked * 700]);
    assert.deepEqual((await query(e.port, 'c', 'PRAGMA integrity_check')).rows, [['ok']]);
    // A clean stop of this one: its manifest covers the tails, which go.
    await query(e.port, 'c', 'INSERT INTO t VALUES (1000, x\'00\')');
  } finally {
    await e.cleanup();
  }
  assert.deepEqual(b.list('db/c/tail/'), []);
});

test('s3, sync_to_object_store = commit: while the store is down a commit answers TIMEOUT; it goes up later', async () => {
  const b = backends.s3();
  b.conf = b.conf.replace('retries = 2', 'retries = 0\nrequest_timeout = 500ms\nconnect_timeout = 500ms') +
    '[storage]\nsync_to_object_store = commit\n';
  const d = await start(b, path.join(root, 'cdown'));
  try {
    await query(d.port, 'w', 'CREATE TABLE t(n)');
    await query(d.port, 'w', 'INSERT INTO t VALUES (1)');
    await s3.fault('down', { delayMs: 1500 });
    const r = await query(d.port, 'w', 'INSERT INTO t VALUES (2)', undefined, { raw: true });
    assert.equal(r.json?.error?.code, 'TIMEOUT', r.text);
    assert.match(r.json.error.message, /durable on this node but the object store did not take it/);
    await sleep(1800);
    await query(d.port, 'w', 'INSERT INTO t VALUES (3)'); // the store is back: acknowledged
    assert.equal((await d.stop()).code, 0);
    const e = await start(b, path.join(root, 'cdown2'));
    try {
      assert.deepEqual((await query(e.port, 'w', 'SELECT n FROM t ORDER BY n')).rows, [[1], [2], [3]]);
    } finally {
      await e.cleanup();
    }
  } finally {
    await d.cleanup();
  }
});

test('file: the object store\'s disk full (ENOSPC) or failing (EIO): commits go on, uploads fail and are counted, then go up', async () => {
  const trigger = path.join(root, 'full-trigger');
  const storeDir = path.join(root, 'fullstore');
  const d = await startDosqld({
    conf: STORAGE, dataDir: path.join(root, 'full'), args: ['--object-store', `file://${storeDir}`],
    env: { LD_PRELOAD: syncShimPreload(), DSQ_FAILWRITE: trigger, DSQ_FAILWRITE_PATH: '/fullstore/' },
  });
  try {
    await fill(d.port, 'f', 1, 20);
    await uploaded(d, 'f');
    for (const errno of ['ENOSPC', 'EIO']) {
      writeFileSync(trigger, errno);
      const before = (await stats(d, 'f')).server.objectStore.errors;
      await fill(d.port, 'f', 21, 200); // every commit acknowledged
      await within(15000, (async () => {
        for (;;) {
          const os = (await stats(d, 'f')).server.objectStore;
          if (os.errors > before) return;
          await sleep(50);
        }
      })(), `an upload error while writes to the store fail with ${errno}`);
      const os = (await stats(d, 'f')).server.objectStore;
      assert.match(os.lastError, errno === 'ENOSPC' ? /No space left on device/ : /Input\/output error/);
      rmSync(trigger);
      await query(d.port, 'f', 'DELETE FROM t WHERE n > 20'); // back where it was, for the next round
    }
    await fill(d.port, 'f', 21, 200);
    await uploaded(d, 'f'); // the failed offers were tried again
    assert.equal((await d.stop()).code, 0);
    const e = await startDosqld({ dataDir: path.join(root, 'full2'), args: ['--object-store', `file://${storeDir}`] });
    try {
      assert.deepEqual(await summary(e.port, 'f'), [200, 1, 200, 200 * 700]);
    } finally {
      await e.cleanup();
    }
  } finally {
    await d.cleanup();
  }
});
