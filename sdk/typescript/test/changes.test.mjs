// @dosqld/client's change streams against a real dosqld: events, filters,
// and a stream that survives connections cut by the tests' fault proxy
// and a restart of the server, resuming without losing or repeating an
// event, half-delivered commits included.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { connect, DosqlError } from '../dist/index.js';
import { startServer, FaultProxy, sleep, until, within, WRITE_TOKEN } from './lib.mjs';

let d, proxy;
const stopped = [];
const open = [];
function client(db, o = {}) {
  const c = connect(`http://127.0.0.1:${proxy.port}`, { database: db, token: WRITE_TOKEN, ...o });
  open.push(c);
  return c;
}

before(async () => {
  d = await startServer();
  proxy = await new FaultProxy(d.port).start();
});
after(async () => {
  await Promise.all(open.map((c) => c.close()));
  await proxy?.close();
  await d?.cleanup();
  for (const s of stopped) rmSync(s.dir, { recursive: true, force: true });
});

// Read `n` events from an iterator, within a time limit.
async function take(it, n, ms = 5000) {
  const got = [];
  await within(ms, (async () => {
    while (got.length < n) {
      const r = await it.next();
      if (r.done) break;
      got.push(r.value);
    }
  })(), `${n} events`);
  return got;
}

test('changes(): events in order, typed, from an LSN, filtered; break ends the subscription', async () => {
  const db = client('cdc');
  const created = await db.query('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
  await db.query('CREATE TABLE other(x)');
  await db.query("INSERT INTO t VALUES (1, 'a'), (2, 'b')");
  await db.query('INSERT INTO other VALUES (1)');
  await db.query("UPDATE t SET v = 'c' WHERE id = 2");
  await db.query('DELETE FROM t WHERE id = 1');
  const got = [];
  for await (const ev of db.changes({ fromLSN: created.lsn, tables: ['t'] })) {
    got.push(ev);
    if (got.length === 4) break;
  }
  assert.deepEqual(got.map((e) => [e.operation, e.table, e.rowid]), [['INSERT', 't', 1], ['INSERT', 't', 2], ['UPDATE', 't', 2], ['DELETE', 't', 1]]);
  assert.equal(got[0].lsn, created.lsn + 2);
  assert.equal(got[0].lsn, got[1].lsn, 'events of one commit share its LSN');
  assert.equal(typeof got[0].lsn, 'number');
  assert.ok(got[0].timestamp instanceof Date);
  assert.deepEqual(got[0].after, { id: 1, v: 'a' });
  assert.deepEqual([got[2].before, got[2].after], [{ id: 2, v: 'b' }, { id: 2, v: 'c' }]);
  assert.deepEqual(got[3].before, { id: 1, v: 'a' });
  // DDL events, from the start.
  const ddlStream = db.changes({ fromLSN: 0, operations: ['DDL'] });
  const ddl = await take(ddlStream, 2);
  await ddlStream.close();
  assert.deepEqual(ddl.map((e) => e.operation), ['DDL', 'DDL']);
  assert.match(ddl[0].sql, /CREATE TABLE t/);
  // Without fromLSN: only what comes after.
  const live = db.changes({ tables: ['t'] });
  const first = live.next();
  await sleep(100);
  await db.query("INSERT INTO t VALUES (9, 'new')");
  const ev = await within(5000, first, 'live event');
  assert.equal(ev.value.rowid, 9);
  await live.return();
  // The server's subscriptions end with the iterators.
  await until(async () => (await db.getStats()).server.subscriptions === 0, 5000, 'subscriptions ended');
});

test('changes(): intMode bigint, an LSN outside the log, close()', async () => {
  const db = client('cdc2', { intMode: 'bigint' });
  const w = await db.query('CREATE TABLE t(i INTEGER)');
  await db.query('INSERT INTO t VALUES (?)', [9007199254740993n]);
  const s = db.changes({ fromLSN: w.lsn });
  const [ev] = await take(s, 1);
  assert.equal(typeof ev.lsn, 'bigint');
  assert.equal(ev.after.i, 9007199254740993n);
  assert.equal(s.lastWholeLSN, w.lsn, 'the commit of the event is not known whole until a later one comes');
  await s.close();
  assert.deepEqual(await s.next(), { value: undefined, done: true });
  const bad = db.changes({ fromLSN: 10n ** 9n });
  const e = await bad.next().catch((x) => x);
  assert.ok(e instanceof DosqlError);
  assert.equal(e.code, 'INVALID_LSN');
  // The client's close() ends its streams.
  const s2 = db.changes({});
  const pending = s2.next();
  await sleep(50);
  await db.close();
  assert.deepEqual(await within(2000, pending, 'end'), { value: undefined, done: true });
});

// Commits of PER rows each (one INSERT event per row), numbered from `from`.
async function writeCommits(db, from, commits, per) {
  for (let c = 0; c < commits; c++) {
    const lo = from + c * per;
    await db.query(`WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?) INSERT INTO t(id) SELECT i FROM n`, [lo, lo + per - 1]);
  }
}

test('changes(): survives cut connections, a refusing server and a restart, resuming without loss or duplication', async () => {
  const PER = 40;
  const writer = client('resume');
  const created = await writer.query('CREATE TABLE t(id INTEGER PRIMARY KEY)');
  await writeCommits(writer, 1, 10, PER); // ids 1..400
  // A consumer that holds few events: the server's callbacks wait on it,
  // so a cut lands in the middle of a commit.
  const reader = client('resume', { intMode: 'bigint' });
  const s = reader.changes({ fromLSN: created.lsn, highWaterMark: 4, reconnect: { attempts: 30, backoffMs: 20, maxBackoffMs: 200 } });
  const got = [];
  got.push(...await take(s, 50));
  const last = got[got.length - 1];
  assert.ok(s.lastWholeLSN < last.lsn, 'the commit of the last event delivered is not known whole');
  assert.ok(got.filter((e) => e.lsn === last.lsn).length < PER, 'a commit half delivered');
  proxy.cut();
  got.push(...await take(s, 60));
  // A server that refuses for a while: the stream backs off and comes back.
  proxy.partition();
  await sleep(300);
  proxy.heal();
  got.push(...await take(s, 90));
  // Restart the server on the same data; the proxy points at the new port.
  await d.stop();
  stopped.push(d);
  d = await startServer({ dataDir: d.dataDir });
  proxy.targetPort = d.port;
  proxy.cut();
  await writeCommits(writer, 401, 5, PER); // ids 401..600, after the restart
  got.push(...await take(s, 600 - got.length, 15000));
  const ids = got.map((e) => Number(e.after.id));
  assert.deepEqual(ids, Array.from({ length: 600 }, (_, i) => i + 1), 'every event once, in order');
  for (let i = 1; i < got.length; i++) assert.ok(got[i].lsn >= got[i - 1].lsn);
  assert.ok(s.reconnects >= 3, `subscribed again after each drop (${s.reconnects})`);
  await s.close();
});
