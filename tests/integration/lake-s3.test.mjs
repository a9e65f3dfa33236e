// The lake writer on an S3 object store (s3rver behind the tests' proxy)
// that fails and is slow: a round whose uploads fail commits nothing and
// holds the database's position back; the next round, once the store
// answers again, takes every change — none dropped, none twice; a slow
// store makes rounds slow, not wrong. What is committed is read back
// through the daemon's own catalog (from the store).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDosqld } from './lib/harness.mjs';
import { startS3 } from './lib/s3.mjs';

let s3;
before(async () => { s3 = await startS3(); });
after(async () => { await s3?.stop(); });

async function post(d, url, body) {
  const r = await fetch(`${d.url}${url}`, { method: 'POST', body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}
async function sql(d, text) {
  const r = await post(d, '/v1/db/shop/query', { sql: text });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}
const flush = async (d) => (await post(d, '/v1/admin/lake')).body;
async function table(d, name) {
  const r = await fetch(`${d.url}/v1/iceberg/v1/namespaces/shop/tables/${name}`);
  return { status: r.status, body: await r.json() };
}
const current = (md) => md.snapshots.find((s) => s['snapshot-id'] === md['current-snapshot-id']);

test('a store that fails holds the lake back; once it answers, every change is there once; a slow one only slows it', async () => {
  const conf = `[object_store]\nretries = 1\nrequest_timeout = 10s\nendpoint = ${s3.endpoint}\n` +
    `access_key = ${s3.key}\nsecret_key = ${s3.secret}\n` +
    '[lake]\ndatabases = shop\nflush_interval = 1h\ncurrent_state_interval = 0\n';
  const d = await startDosqld({ conf, args: ['--object-store', `s3://${s3.bucket}/lk`] });
  try {
    await sql(d, 'CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)');
    for (let i = 0; i < 10; i++) await sql(d, `INSERT INTO t(v) VALUES (${i})`);
    // Every upload under lake/ fails (500, after the retry too).
    await s3.fault('500', { count: 1000000, match: 'PUT', path: '/lake/' });
    let st = await flush(d);
    assert.ok(st.errors >= 1, JSON.stringify(st));
    assert.match(st.lastError, /shop: cannot write lake\/shop\/t_changelog\/.* to the object store/);
    assert.equal(st.commits, 0);
    assert.match(d.stderr, /event=lake_failed db=shop/);
    assert.equal((await table(d, 't_changelog')).status, 404, 'nothing committed');
    for (let i = 10; i < 20; i++) await sql(d, `UPDATE t SET v = v + 100 WHERE id = ${i - 9}`);
    // The store answers again, slowly for a while: the next round takes
    // everything that waited.
    await s3.fault('500', { count: 0 });
    await s3.fault('slow', { count: 5, delayMs: 1500, match: 'PUT', path: '/lake/' });
    st = await flush(d);
    assert.equal(st.commits, 2, JSON.stringify(st));
    assert.match(d.stderr, /event=lake_recovered db=shop/);
    const last = (await sql(d, 'SELECT 1')).lsn;
    const cl = await table(d, 't_changelog');
    assert.equal(cl.status, 200, JSON.stringify(cl.body));
    const snap = current(cl.body.metadata);
    assert.equal(snap.summary['dosqld.lsn'], String(last));
    assert.equal(snap.summary['total-records'], '20', '10 inserts and 10 updates, each once');
    assert.match(cl.body['metadata-location'], new RegExp(`^s3://${s3.bucket}/lk/lake/shop/t_changelog/metadata/v1\\.metadata\\.json$`));
    const cur = await table(d, 't');
    assert.equal(current(cur.body.metadata).summary['total-records'], '10');
    // A round with nothing new writes nothing.
    const n = (await s3.stats()).byMethod.PUT ?? 0;
    st = await flush(d);
    assert.equal(st.commits, 2);
    assert.equal((await s3.stats()).byMethod.PUT ?? 0, n, 'no upload');
  } finally {
    await s3.fault('500', { count: 0 });
    await d.cleanup();
  }
});

// The store stops answering in the middle of a round and the daemon is
// told to stop: the writer gives up its wait, the daemon exits cleanly and
// soon (the request left at the store is freed when the store closes), and
// the lake holds nothing half-made.
test('a daemon stopped while the lake waits on a store that does not answer exits cleanly', async () => {
  const conf = `[object_store]\nretries = 0\nrequest_timeout = 60s\nendpoint = ${s3.endpoint}\n` +
    `access_key = ${s3.key}\nsecret_key = ${s3.secret}\n` +
    '[lake]\ndatabases = shop\nflush_interval = 1h\n';
  const d = await startDosqld({ conf, args: ['--object-store', `s3://${s3.bucket}/stop`] });
  let stopped = false;
  try {
    await sql(d, 'CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
    for (let i = 0; i < 20; i++) await sql(d, `INSERT INTO t(v) VALUES ('${'x'.repeat(200)}${i}')`);
    await s3.fault('slow', { count: 1000, delayMs: 30000, match: 'PUT', path: '/lake/' });
    const before = (await s3.stats()).byMethod.PUT ?? 0;
    fetch(`${d.url}/v1/admin/lake`, { method: 'POST' }).catch(() => {});
    // Until the writer's first upload reached the store.
    const end = Date.now() + 10000;
    while (((await s3.stats()).byMethod.PUT ?? 0) === before) {
      assert.ok(Date.now() < end, 'no upload reached the store');
      await new Promise((r) => setTimeout(r, 50));
    }
    const t0 = Date.now();
    await d.cleanup(); // SIGTERM; exit status 0 and no sanitizer report, or it throws
    stopped = true;
    assert.ok(Date.now() - t0 < 15000, `stopped in ${Date.now() - t0} ms`);
  } finally {
    await s3.fault('slow', { count: 0 });
    if (!stopped) await d.stop('SIGKILL');
  }
});
