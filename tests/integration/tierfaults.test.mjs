// The object store failing around the databases' lives: a stop while the
// store fails backs off instead of hammering it; a drop is durable once
// answered, whatever the store does, and a dropped database never comes
// back from the store; dropping a name that does not exist is 404; a node
// whose store is unreachable at start serves its local databases and
// catches up with the store once it is back. Against the tests' S3 server
// (lib/s3server.mjs: its faults make it answer 500 or refuse connections).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { BUILD, startDosqld, syncShimPreload, tempDir, sleep, within } from './lib/harness.mjs';
import { call, query } from './lib/rpc.mjs';
import { startS3 } from './lib/s3.mjs';

let s3;
let root;
before(async () => {
  s3 = await startS3();
  root = tempDir('dosqld-tierfaults-');
});
after(async () => {
  await s3?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

let seq = 0;
function backend({ retries = 2, extra = '' } = {}) {
  const prefix = `tf${++seq}`;
  const url = `s3://${s3.bucket}/${prefix}`;
  return {
    url,
    conf: `${extra}[object_store]\nchunk_size = 64K\nupload_interval = 50ms\nretries = ${retries}\n` +
      `connect_timeout = 1s\nendpoint = ${s3.endpoint}\naccess_key = ${s3.key}\nsecret_key = ${s3.secret}\n`,
    list: (p) => {
      const r = spawnSync(path.join(BUILD, 'tests/tools/objcli'),
        ['-e', s3.endpoint, '-k', s3.key, '-s', s3.secret, url, 'list', p], { timeout: 30000 });
      assert.equal(r.status, 0, r.stderr.toString());
      return r.stdout.toString().split('\n').filter(Boolean).map((l) => l.split(' ')[0]);
    },
  };
}

const start = (b, dataDir) => startDosqld({ conf: b.conf, dataDir, args: ['--object-store', b.url] });
const stats = async (d, db) => (await call(d.port, `/v1/db/${db}/rpc`, 'getStats', {})).result;

async function until(ms, what, fn) {
  return within(ms, (async () => {
    for (;;) {
      const v = await fn();
      if (v) return v;
      await sleep(100);
    }
  })(), what);
}

const uploaded = (d, db) => until(20000, `uploads of ${db}`, async () => {
  const os = (await stats(d, db)).server.objectStore;
  return os.pending === 0 && os.manifests > 0 ? os : null;
});

async function fill(port, db, n) {
  await query(port, db, 'CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, b BLOB)');
  for (let i = 0; i < n; i += 10) {
    await query(port, db, `INSERT INTO t(b) VALUES ${Array(10).fill('(randomblob(500))').join(',')}`);
  }
}

const count = async (port, db) => (await query(port, db, 'SELECT count(*) FROM t')).rows[0][0];

test('a stop while the store answers 500 to everything backs off: a few requests, not a loop', async () => {
  const b = backend({ retries: 0, extra: '[server]\nshutdown_timeout = 4s\n' });
  const d = await start(b, path.join(root, 'stop500'));
  try {
    await fill(d.port, 'w', 50);
    await uploaded(d, 'w');
    await s3.fault('500', { count: 1000000 });
    await fill(d.port, 'w', 50); // acknowledged; its uploads fail
    await s3.resetStats();
    const before = (await s3.stats()).requests;
    const t0 = Date.now();
    assert.deepEqual(await d.stop(), { code: 0, signal: null });
    const took = Date.now() - t0;
    const sent = (await s3.stats()).requests - before;
    // One database: a try at the stop, then ones after a backoff of up to
    // 1, 2 s: within the 4 s a handful of requests (a loop sent thousands).
    assert.ok(sent >= 1 && sent <= 40, `requests during the stop: ${sent}`);
    assert.ok(took < 4000 + 3000, `the stop took ${took} ms`);
    assert.match(d.stderr, /event=uploads_unfinished/);
  } finally {
    await s3.fault('500', { count: 0 });
    await d.cleanup();
  }
});

const drop = async (d, db) => {
  const r = await fetch(`${d.url}/v1/db/${db}`, { method: 'DELETE' });
  return { status: r.status, body: await r.json() };
};
const names = async (d) => (await (await fetch(`${d.url}/v1/db`)).json()).sort();
const tables = async (port, db) => (await query(port, db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"))
  .rows.map((r) => r[0]);

test('a drop answered while the store fails stays a drop after a restart; its objects go once the store is back', async () => {
  const b = backend({ retries: 1, extra: '[server]\nshutdown_timeout = 2s\n' });
  const dataDir = path.join(root, 'drop-down');
  const d = await start(b, dataDir);
  let e;
  try {
    await fill(d.port, 'victim', 100);
    await fill(d.port, 'kept', 10);
    await uploaded(d, 'victim');
    await uploaded(d, 'kept');
    assert.ok(b.list('db/victim/').includes('db/victim/manifest.json'));

    await s3.fault('500', { count: 1000000 }); // every request fails
    assert.deepEqual(await drop(d, 'victim'), { status: 200, body: { dropped: true, database: 'victim' } });
    assert.ok(existsSync(path.join(dataDir, 'dropped', 'victim')), 'the drop is recorded before it is answered');
    assert.equal((await d.stop()).code, 0);

    await s3.fault('500', { count: 0 }); // the store is back
    e = await start(b, dataDir);
    assert.deepEqual(await names(e), ['kept'], 'the dropped database did not come back');
    assert.equal(await count(e.port, 'kept'), 10);
    await until(30000, 'the tombstone goes', async () => !existsSync(path.join(dataDir, 'dropped', 'victim')));
    assert.deepEqual(b.list('db/victim/'), [], 'its objects are gone');
    // The name again: a new, empty database.
    assert.deepEqual(await tables(e.port, 'victim'), []);
    assert.equal((await e.stop()).code, 0);
    const f = await start(b, path.join(root, 'drop-down-fresh'));
    try {
      assert.deepEqual(await names(f), ['kept', 'victim']);
      assert.deepEqual(await tables(f.port, 'victim'), []);
    } finally {
      await f.cleanup();
    }
  } finally {
    await s3.fault('500', { count: 0 });
    await d.cleanup();
    await e?.cleanup();
  }
});

test('a database made again under a dropped name while the old one\'s objects wait: the new one survives, the old one goes', async () => {
  const b = backend({ retries: 1, extra: '[server]\nshutdown_timeout = 2s\n' });
  const dataDir = path.join(root, 'again');
  const d = await start(b, dataDir);
  let e;
  try {
    await fill(d.port, 'victim', 100);
    await uploaded(d, 'victim');
    const oldKeys = b.list('db/victim/');
    await s3.fault('500', { count: 1000000 });
    assert.equal((await drop(d, 'victim')).status, 200);
    await query(d.port, 'victim', 'CREATE TABLE fresh(x); INSERT INTO fresh VALUES (1)');
    assert.equal((await d.stop()).code, 0);

    await s3.fault('500', { count: 0 });
    e = await start(b, dataDir);
    assert.deepEqual(await tables(e.port, 'victim'), ['fresh']);
    await until(30000, 'the tombstone goes', async () => !existsSync(path.join(dataDir, 'dropped', 'victim')));
    await uploaded(e, 'victim');
    assert.deepEqual(b.list('db/victim/').filter((k) => k !== 'db/victim/manifest.json' && oldKeys.includes(k)), [],
      'none of the dropped database\'s chunks is left');
    assert.equal((await e.stop()).code, 0);
    const f = await start(b, path.join(root, 'again-fresh'));
    try {
      assert.deepEqual(await tables(f.port, 'victim'), ['fresh']);
      assert.deepEqual((await query(f.port, 'victim', 'SELECT x FROM fresh')).rows, [[1]]);
    } finally {
      await f.cleanup();
    }
  } finally {
    await s3.fault('500', { count: 0 });
    await d.cleanup();
    await e?.cleanup();
  }
});

test('a drop whose tombstone cannot be written fails, and the next start finishes it', async () => {
  const b = backend({ retries: 0, extra: '[server]\nshutdown_timeout = 2s\n' });
  const dataDir = path.join(root, 'tomb-eio');
  const trigger = path.join(root, 'tomb-eio-trigger');
  const d = await startDosqld({
    conf: b.conf, dataDir, args: ['--object-store', b.url],
    env: { LD_PRELOAD: syncShimPreload(), DSQ_FAILWRITE: trigger, DSQ_FAILWRITE_PATH: '/dropped/' },
  });
  let e;
  try {
    await fill(d.port, 'victim', 30);
    await uploaded(d, 'victim');
    await s3.fault('500', { count: 1000000 });
    writeFileSync(trigger, 'EIO');
    const r = await drop(d, 'victim');
    assert.equal(r.status, 500, JSON.stringify(r));
    assert.equal(r.body.error.code, 'INTERNAL_ERROR');
    assert.equal((await d.stop()).code, 0);
    rmSync(trigger);
    await s3.fault('500', { count: 0 });
    e = await start(b, dataDir);
    assert.deepEqual(await names(e), [], 'not restored from the store');
    assert.match(e.stderr, /event=drop_finished_at_start db=victim/);
    await until(30000, 'its objects go', async () => b.list('db/victim/').length === 0);
  } finally {
    await s3.fault('500', { count: 0 });
    rmSync(trigger, { force: true });
    await d.cleanup();
    await e?.cleanup();
  }
});

test('dropping a name that does not exist is 404; a database only the store has can be dropped', async () => {
  const b = backend({ retries: 1 });
  const a = await start(b, path.join(root, 'only-a'));
  try {
    await fill(a.port, 'cold', 20);
    assert.equal((await a.stop()).code, 0);
  } finally {
    await a.cleanup();
  }
  // A node whose listing of the store fails (so nothing is restored) while
  // the store answers every other request.
  const bucketOnly = `^/${s3.bucket}/?$`;
  await s3.fault('500', { count: 1000000, path: bucketOnly });
  const d = await start(b, path.join(root, 'only-b'));
  try {
    assert.match(d.stderr, /event=object_store_unreachable/);
    const none = await drop(d, 'never-existed');
    assert.equal(none.status, 404);
    assert.equal(none.body.error.code, 'INVALID_REQUEST');
    assert.match(none.body.error.message, /no such database: never-existed/);
    assert.deepEqual(await names(d), []);
    assert.deepEqual(await drop(d, 'cold'), { status: 200, body: { dropped: true, database: 'cold' } });
    await s3.fault('500', { count: 0 });
    await until(30000, 'the dropped database\'s objects go', async () => b.list('db/cold/').length === 0);
    await until(30000, 'the catch-up', async () => /event=object_store_caught_up/.test(d.stderr));
    assert.deepEqual(await names(d), [], 'the catch-up did not bring it back');
    assert.equal((await drop(d, 'cold')).status, 404, 'dropped already');
  } finally {
    await s3.fault('500', { count: 0 });
    await d.cleanup();
  }
  // Without an object store too; and a drop of nothing costs nothing
  // (it used to move the node journal to its next file each time).
  const n = await startDosqld({ args: ['--object-store', 'none'] });
  try {
    await query(n.port, 'here', 'CREATE TABLE t(x)');
    const journal = async () => (await stats(n, 'here')).server.journal;
    const j0 = await journal();
    for (let i = 0; i < 10; i++) {
      await query(n.port, 'here', 'INSERT INTO t VALUES (1)');
      assert.equal((await drop(n, `nothing${i}`)).status, 404);
    }
    const j1 = await journal();
    assert.ok(j1.files === j0.files && j1.flushes - j0.flushes < 5, JSON.stringify({ j0, j1 }));
    assert.equal((await drop(n, 'here')).status, 200);
    assert.deepEqual(await names(n), []);
  } finally {
    await n.cleanup();
  }
});

test('the store unreachable at start: local databases are served and written; the store\'s databases come once it answers, and uploads resume', async () => {
  const b = backend({ retries: 1 });
  const dataDir = path.join(root, 'unreach');
  // "local" here (and in the store); "remote" only in the store (made on
  // another node afterwards).
  const a = await start(b, dataDir);
  try {
    await fill(a.port, 'local', 50);
    assert.equal((await a.stop()).code, 0);
  } finally {
    await a.cleanup();
  }
  const other = await start(b, path.join(root, 'unreach-other'));
  try {
    await fill(other.port, 'remote', 30);
    assert.equal((await other.stop()).code, 0);
  } finally {
    await other.cleanup();
  }

  await s3.fault('down', { delayMs: 6000 }); // connections refused for 6 s
  const t0 = Date.now();
  const d = await start(b, dataDir);
  try {
    assert.match(d.stderr, /event=object_store_unreachable reason="cannot list the object store/);
    assert.equal(await count(d.port, 'local'), 50);
    await fill(d.port, 'local', 20); // acknowledged: the log is local
    assert.equal(await count(d.port, 'local'), 70);
    const r = await query(d.port, 'remote', 'SELECT count(*) FROM t', undefined, { raw: true });
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.error.code, 'RESOURCE_EXHAUSTED');
    assert.match(r.json.error.message, /object store/);
    assert.ok(Date.now() - t0 < 6000, 'all that while the store was down');

    await until(40000, 'the store\'s database', async () => {
      const q = await query(d.port, 'remote', 'SELECT count(*) FROM t', undefined, { raw: true });
      return q.status === 200 ? q : null;
    });
    assert.equal(await count(d.port, 'remote'), 30);
    assert.match(d.stderr, /event=object_store_caught_up restored=1/);
    await until(30000, 'the uploads of local', async () => {
      const m = await stats(d, 'local');
      return m.server.objectStore.pending === 0 && m.server.objectStore.manifests > 0;
    });
    assert.equal((await d.stop()).code, 0);
  } finally {
    await d.cleanup();
  }
  const f = await start(b, path.join(root, 'unreach-fresh'));
  try {
    assert.equal(await count(f.port, 'local'), 70, 'what was written while the store was down went up');
    assert.equal(await count(f.port, 'remote'), 30);
  } finally {
    await f.cleanup();
  }
});

test('the hot tier backs off a store that fails: not a manifest request per file every second', async () => {
  const small = '[storage]\nsegment_size = 128K\ncheckpoint_size = 64K\nhistory_retention = 1h\n';
  const b = backend({ retries: 0, extra: small });
  const dataDir = path.join(root, 'evict');
  const a = await start(b, dataDir);
  try {
    for (let i = 0; i < 6; i++) await fill(a.port, `h${i}`, 200); // checkpoints and segments to evict
    assert.equal((await a.stop()).code, 0);
  } finally {
    await a.cleanup();
  }
  // Restarted (no manifest read yet) with a budget below what is here,
  // while the store fails every request.
  await s3.fault('500', { count: 1000000 });
  const hot = backend({ retries: 0, extra: `${small}hot_tier_max_bytes = 1K\n` });
  hot.url = b.url;
  const d = await start(hot, dataDir);
  try {
    await s3.resetStats();
    const before = (await s3.stats()).requests;
    await sleep(6000);
    const sent = (await s3.stats()).requests - before;
    // The catch-up's listings and the evictor's looks, each after a
    // backoff (a look per second asked for every candidate file's
    // manifest: over a hundred).
    assert.ok(sent <= 40, `requests in 6 s: ${sent}`);
    assert.equal(await count(d.port, 'h0'), 200, 'the databases here are served');
  } finally {
    await s3.fault('500', { count: 0 });
    await d.cleanup();
  }
});
