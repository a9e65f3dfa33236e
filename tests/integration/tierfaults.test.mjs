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
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { BUILD, startDosqld, tempDir, sleep, within } from './lib/harness.mjs';
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
    assert.ok(sent >= 1 && sent <= 20, `requests during the stop: ${sent}`);
    assert.ok(took < 4000 + 3000, `the stop took ${took} ms`);
    assert.match(d.stderr, /event=uploads_unfinished/);
  } finally {
    await s3.fault('500', { count: 0 });
    await d.cleanup();
  }
});
