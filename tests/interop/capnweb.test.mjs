// Interop: the official capnweb client (npm, pinned in package-lock.json)
// against a real dosqld, over WebSocket and HTTP batch.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { newWebSocketRpcSession, newHttpBatchRpcSession } from 'capnweb';
import { startDosqld, metric, sleep, within, wsRaw, wsFrame, wsParse, wsReadUntil } from '../integration/lib/harness.mjs';

// capnweb uses the global WebSocket, which Node 20 does not have.
globalThis.WebSocket = WebSocket;

let d;
before(async () => {
  d = await startDosqld();
});
after(async () => { await d?.cleanup(); });

const wsUrl = (path) => `ws://127.0.0.1:${d.port}${path}`;
const httpUrl = (path) => `http://127.0.0.1:${d.port}${path}`;

// A WebSocket session, disposed by the caller.
function ws(path) {
  return newWebSocketRpcSession(wsUrl(path));
}

// Count the HTTP requests a block makes, from dosqld's own metrics.
async function capnwebRequests() {
  return await metric(d.port, 'dosqld_http_requests_total{route="db_capnweb",status="200"}') +
    await metric(d.port, 'dosqld_http_requests_total{route="capnweb",status="200"}');
}

test('queries with every value type, both ways, over WebSocket and HTTP batch', async () => {
  const api = ws('/v1/db/types/capnweb');
  try {
    await api.query({ sql: 'CREATE TABLE t(i INTEGER, r REAL, s TEXT, b BLOB, n)' });
    const ins = await api.query({
      sql: 'INSERT INTO t VALUES (?, ?, ?, ?, ?), (:i, :r, :s, :b, :n)',
      params: [9007199254740993n, 2.5, 'héllo € 😀', new Uint8Array([0, 1, 255]), null],
    }).catch((e) => e);
    assert.ok(ins instanceof Error, 'mixing positional and named parameters is refused');
    assert.equal(ins.code, 'INVALID_REQUEST');
    const r1 = await api.query({ sql: 'INSERT INTO t VALUES (?, ?, ?, ?, ?)', params: [9007199254740993n, 2.5, 'héllo € 😀', new Uint8Array([0, 1, 255]), null] });
    assert.equal(r1.rowsAffected, 1);
    assert.equal(typeof r1.lsn, 'bigint', 'LSNs are BigInts');
    await api.query({ sql: 'INSERT INTO t VALUES (:i, :r, :s, :b, :n)', params: { i: -5, r: -0.125, s: '', b: new Uint8Array([]), n: 7 } });
    const r = await api.query({ sql: 'SELECT i, r, s, b, n, 1e308 * 10 AS inf FROM t ORDER BY rowid' });
    assert.deepEqual(r.columns, ['i', 'r', 's', 'b', 'n', 'inf']);
    assert.deepEqual(r.columnTypes, ['INTEGER', 'REAL', 'TEXT', 'BLOB', null, null]);
    assert.equal(r.rows[0][0], 9007199254740993n, 'integers beyond 2^53 are BigInts');
    assert.equal(r.rows[0][1], 2.5);
    assert.equal(r.rows[0][2], 'héllo € 😀');
    assert.ok(r.rows[0][3] instanceof Uint8Array, 'BLOBs are Uint8Array');
    assert.deepEqual([...r.rows[0][3]], [0, 1, 255]);
    assert.equal(r.rows[0][4], null);
    assert.equal(r.rows[0][5], Infinity);
    assert.equal(r.rows[1][0], -5, 'small integers are numbers');
    assert.deepEqual([...r.rows[1][3]], []);
    // Short byte arrays travel as unpadded base64.
    const bb = await api.query({ sql: 'SELECT ? AS one, ? AS two, length(?) AS n', params: [new Uint8Array([7]), new Uint8Array([1, 2]), new Uint8Array([9, 9, 9, 9, 9])] });
    assert.deepEqual([...bb.rows[0][0]], [7]);
    assert.deepEqual([...bb.rows[0][1]], [1, 2]);
    assert.equal(bb.rows[0][2], 5);
  } finally {
    api[Symbol.dispose]();
  }
  const b = newHttpBatchRpcSession(httpUrl('/v1/db/types/capnweb'));
  const r = await b.query({ sql: 'SELECT i, b FROM t ORDER BY rowid LIMIT 1' });
  assert.equal(r.rows[0][0], 9007199254740993n);
  assert.deepEqual([...r.rows[0][1]], [0, 1, 255]);
});

test('errors reject with the message and a code property', async () => {
  const api = ws('/v1/db/errs/capnweb');
  try {
    const cases = [
      [{ sql: 'SELEC 1' }, 'SYNTAX_ERROR', /syntax error/],
      [{ sql: 'SELECT * FROM nope' }, 'TABLE_NOT_FOUND', /no such table/],
      [{ sql: "ATTACH 'x' AS y" }, 'FORBIDDEN', /ATTACH/],
      [{}, 'INVALID_REQUEST', /"sql" is required/],
      [{ sql: 'SELECT ?', params: [[1]] }, 'INVALID_REQUEST', /array/],
      [{ sql: 'SELECT ?', params: [Infinity] }, 'INVALID_REQUEST', /param/],
      [{ sql: 'SELECT 1', asOf: { lsn: 1000000000n } }, 'INVALID_LSN', /after the last commit/],
      [{ sql: 'SELECT 1', asOf: { lsn: 0n }, transactionId: 'x' }, 'INVALID_REQUEST', /transaction/],
    ];
    for (const [req, code, msg] of cases) {
      const e = await api.query(req).then(() => null, (err) => err);
      assert.ok(e instanceof Error, `${JSON.stringify(req, (k, v) => typeof v === 'bigint' ? String(v) : v)} did not fail`);
      assert.equal(e.code, code, e.message);
      assert.match(e.message, msg);
    }
    const e = await api.nope({}).then(() => null, (err) => err);
    assert.match(e.message, /no method 'nope'/);
    // The session goes on.
    assert.deepEqual((await api.query({ sql: 'SELECT 1 AS one' })).rows, [[1]]);
  } finally {
    api[Symbol.dispose]();
  }
});

test('a transaction pipelined through one HTTP batch: one round trip', async () => {
  const setup = ws('/v1/db/ptx/capnweb');
  await setup.query({ sql: 'CREATE TABLE t(x)' });
  setup[Symbol.dispose]();
  const before = await capnwebRequests();
  const b = newHttpBatchRpcSession(httpUrl('/v1/db/ptx/capnweb'));
  const tx = b.beginTransaction({ mode: 'immediate' });
  const q1 = b.query({ sql: 'INSERT INTO t VALUES (1), (2)', transactionId: tx.transactionId });
  const q2 = b.query({ sql: 'SELECT count(*) AS n FROM t', transactionId: tx.transactionId });
  const c = b.commit({ transactionId: tx.transactionId });
  const [r1, r2, rc] = await Promise.all([q1, q2, c]);
  assert.equal(r1.rowsAffected, 1 + 1);
  assert.deepEqual(r2.rows, [[2]]);
  assert.equal(typeof rc.lsn, 'bigint');
  assert.equal(await capnwebRequests(), before + 1, 'all of it in one HTTP request');
  const check = newHttpBatchRpcSession(httpUrl('/v1/db/ptx/capnweb'));
  assert.deepEqual((await check.query({ sql: 'SELECT count(*) FROM t' })).rows, [[2]]);
});

test('a pipelined transaction over WebSocket, and its rollback', async () => {
  const api = ws('/v1/db/wtx/capnweb');
  try {
    await api.query({ sql: 'CREATE TABLE t(x)' });
    const tx = api.beginTransaction({});
    const ins = api.query({ sql: 'INSERT INTO t VALUES (1)', transactionId: tx.transactionId });
    const rb = api.rollback({ transactionId: tx.transactionId });
    await Promise.all([ins, rb]);
    assert.deepEqual((await api.query({ sql: 'SELECT count(*) FROM t' })).rows, [[0]]);
    const gone = await api.commit({ transactionId: (await tx).transactionId }).then(() => null, (e) => e);
    assert.equal(gone.code, 'TRANSACTION_NOT_FOUND');
  } finally {
    api[Symbol.dispose]();
  }
});

// `using tx = api.beginTransaction(...)` (Node 20 has no `using`: the same
// dispose by hand): the client releases the promise while beginTransaction
// still runs, after a call that pipelines on it was sent. A slow query on
// the same database first keeps beginTransaction pending until the release
// has arrived.
test('a call pipelined on a promise disposed before it resolves still runs', async () => {
  const api = ws('/v1/db/wdispose/capnweb');
  try {
    await api.query({ sql: 'CREATE TABLE t(x)' });
    const slow = api.query({ sql: 'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) SELECT count(*) AS c FROM n' });
    const tx = api.beginTransaction({});
    const ins = api.query({ sql: 'INSERT INTO t VALUES (1) RETURNING x', transactionId: tx.transactionId });
    tx[Symbol.dispose]();
    const r = await ins;
    assert.deepEqual(r.rows, [[1]]);
    assert.deepEqual((await slow).rows, [[1000000]]);
    assert.deepEqual((await api.query({ sql: 'SELECT 2 AS two' })).rows, [[2]], 'the session goes on');
  } finally {
    api[Symbol.dispose]();
  }
});

test('database(name) returns a stub; calls on it pipeline', async () => {
  const before = await capnwebRequests();
  const b = newHttpBatchRpcSession(httpUrl('/v1/capnweb'));
  const r = await b.database('stubbed').query({ sql: 'SELECT 41 + 1 AS answer' });
  assert.deepEqual(r.rows, [[42]]);
  assert.equal(await capnwebRequests(), before + 1, 'one round trip');
  const api = ws('/v1/capnweb');
  try {
    const db = api.database('stubbed');
    await db.query({ sql: 'CREATE TABLE t(x)' });
    await db.query({ sql: 'INSERT INTO t VALUES (5)' });
    assert.deepEqual((await db.query({ sql: 'SELECT x FROM t' })).rows, [[5]]);
    const s = await db.getSchema({});
    assert.deepEqual(s.tables.map((t) => t.name), ['t']);
    const bad = await api.database('.hidden').query({ sql: 'SELECT 1' }).then(() => null, (e) => e);
    assert.equal(bad.code, 'INVALID_REQUEST');
    const nomethod = await api.query({ sql: 'SELECT 1' }).then(() => null, (e) => e);
    assert.match(nomethod.message, /database\(name\)/);
  } finally {
    api[Symbol.dispose]();
  }
});

test('.map() over rows runs a query per row on the server, in one round trip', async () => {
  const api = ws('/v1/db/mapped/capnweb');
  await api.query({ sql: "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'ann'), (2, 'bob'), (3, 'cy')" });
  await api.query({ sql: 'CREATE TABLE orders(user INTEGER, total INTEGER); INSERT INTO orders VALUES (1, 10), (1, 5), (3, 7)' });
  api[Symbol.dispose]();
  const before = await capnwebRequests();
  const b = newHttpBatchRpcSession(httpUrl('/v1/db/mapped/capnweb'));
  const totals = await b.query({ sql: 'SELECT id FROM users ORDER BY id' }).rows.map((row) =>
    b.query({ sql: 'SELECT coalesce(sum(total), 0) AS t FROM orders WHERE user = ?', params: [row[0]] }).rows);
  assert.deepEqual(totals, [[[15]], [[0]], [[7]]]);
  assert.equal(await capnwebRequests(), before + 1, 'one HTTP request for the query and the three per-row queries');
  // Over WebSocket, mapping to plain values too.
  const w = ws('/v1/db/mapped/capnweb');
  try {
    const names = await w.query({ sql: 'SELECT id, name FROM users ORDER BY id' }).rows.map((row) => row[1]);
    assert.deepEqual(names, ['ann', 'bob', 'cy']);
  } finally {
    w[Symbol.dispose]();
  }
});

test('the server calls back into the client: queryStream(request, callback)', async () => {
  const api = ws('/v1/db/cb/capnweb');
  try {
    await api.query({ sql: 'CREATE TABLE t(i); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 250) INSERT INTO t SELECT i FROM n' });
    const chunks = [];
    let inFlight = 0, maxInFlight = 0;
    const res = await api.queryStream({ sql: 'SELECT i FROM t ORDER BY i', chunkSize: 100 }, async (chunk) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      chunks.push(chunk);
      await sleep(20);
      inFlight--;
      return chunk.rows.length;
    });
    assert.equal(res.rowCount, 250);
    assert.equal(typeof res.lsn, 'bigint');
    assert.deepEqual(chunks.map((c) => c.seq), [0, 1, 2]);
    assert.deepEqual(chunks[0].columns, ['i']);
    assert.deepEqual(chunks.flatMap((c) => c.rows.map((r) => r[0])), Array.from({ length: 250 }, (_, i) => i + 1));
    assert.equal(maxInFlight, 1, 'the next chunk waits for the callback to return');
    // A callback that throws ends the stream with its error.
    const e = await api.queryStream({ sql: 'SELECT i FROM t', chunkSize: 10 }, () => { throw new Error('enough'); })
      .then(() => null, (err) => err);
    assert.ok(e instanceof Error);
    // The database is not held after it.
    assert.deepEqual((await api.query({ sql: 'SELECT count(*) FROM t' })).rows, [[250]]);
  } finally {
    api[Symbol.dispose]();
  }
});

test('CDC: subscribeCDC(request, callback) calls the client back with each change; unsubscribe() ends it', async () => {
  const api = ws('/v1/db/cdc/capnweb');
  try {
    const created = await api.query({ sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY, v, b BLOB)' });
    const got = [];
    let inFlight = 0, maxInFlight = 0;
    const sub = await api.subscribeCDC({ fromLSN: created.lsn }, async (ev) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      got.push(ev);
      await sleep(1);
      inFlight--;
    });
    const w1 = await api.query({ sql: 'INSERT INTO t VALUES (1, ?, ?)', params: [9007199254740993n, new Uint8Array([7, 8])] });
    const w2 = await api.query({ sql: "UPDATE t SET v = 'x' WHERE id = 1" });
    for (let i = 2; i <= 100; i++) await api.query({ sql: 'INSERT INTO t(id, v) VALUES (?, ?)', params: [i, i] });
    await within(5000, (async () => { while (got.length < 101) await sleep(10); })(), 'events');
    assert.equal(got[0].lsn, w1.lsn);
    assert.equal(typeof got[0].lsn, 'bigint', 'LSNs are BigInts');
    assert.ok(got[0].timestamp instanceof Date, 'the commit time is a Date');
    assert.equal(got[0].operation, 'INSERT');
    assert.equal(got[0].table, 't');
    assert.deepEqual([got[0].after.id, got[0].after.v, [...got[0].after.b]], [1, 9007199254740993n, [7, 8]]);
    assert.equal(got[1].lsn, w2.lsn);
    assert.deepEqual([got[1].operation, got[1].before.v, got[1].after.v], ['UPDATE', 9007199254740993n, 'x']);
    assert.deepEqual(got.slice(2).map((e) => e.after.id), Array.from({ length: 99 }, (_, i) => i + 2));
    assert.ok(maxInFlight > 1, 'several callbacks may run at once (a window, not one at a time)');
    const un = await sub.unsubscribe();
    assert.equal(un.unsubscribed, true);
    assert.equal(typeof un.lastLsn, 'bigint');
    const n = got.length;
    await api.query({ sql: 'INSERT INTO t(id) VALUES (1000)' });
    await sleep(200);
    assert.equal(got.length, n, 'nothing after unsubscribe()');
    // Refusals: no callback, a bad request, an LSN outside the log.
    await assert.rejects(async () => { await api.subscribeCDC({}); }, /callback/);
    await assert.rejects(async () => { await api.subscribeCDC({ operations: ['MERGE'] }, () => {}); }, /operations/);
    await assert.rejects(async () => { await api.subscribeCDC({ fromLSN: 10n ** 9n }, () => {}); }, /after the last commit/);
    // Over an HTTP batch there is no one to call back.
    const batch = newHttpBatchRpcSession(httpUrl('/v1/db/cdc/capnweb'));
    await assert.rejects(async () => { await batch.subscribeCDC({}, () => {}); }, /WebSocket/);
  } finally {
    api[Symbol.dispose]();
  }
});

test('CDC: a session that ends ends its subscriptions', async () => {
  const api = ws('/v1/db/cdc2/capnweb');
  await api.query({ sql: 'CREATE TABLE t(x)' });
  const got = [];
  await api.subscribeCDC({}, (ev) => { got.push(ev); });
  await api.query({ sql: 'INSERT INTO t VALUES (1)' });
  await within(5000, (async () => { while (got.length < 1) await sleep(10); })(), 'event');
  api[Symbol.dispose]();
  for (let i = 0; i < 100 && await metric(d.port, 'dosqld_capnweb_entries') > 0; i++) await sleep(50);
  const stats = await fetch(httpUrl('/v1/rpc'), { method: 'POST', body: JSON.stringify({ id: 1, method: 'getStats', params: {} }) }).then((r) => r.json());
  assert.equal(stats.result.server.subscriptions, 0);
});

test('release and disposal: the server\'s tables shrink back', async () => {
  // Earlier tests' sessions close asynchronously: start from none.
  for (let i = 0; i < 100 && await metric(d.port, 'dosqld_capnweb_entries') > 0; i++) await sleep(50);
  const base = await metric(d.port, 'dosqld_capnweb_entries');
  assert.equal(base, 0);
  const api = ws('/v1/capnweb');
  const stubs = [];
  for (let i = 0; i < 20; i++) stubs.push(api.database(`rel-${i}`));
  await Promise.all(stubs.map((s) => s.query({ sql: 'SELECT 1' })));
  const grown = await metric(d.port, 'dosqld_capnweb_entries');
  assert.ok(grown > base, `entries ${base} -> ${grown}`);
  for (const s of stubs) s[Symbol.dispose]();
  await sleep(100);
  const mid = await metric(d.port, 'dosqld_capnweb_entries');
  assert.ok(mid < grown, `released stubs are gone: ${grown} -> ${mid}`);
  api[Symbol.dispose]();
  for (let i = 0; i < 50 && await metric(d.port, 'dosqld_capnweb_entries') > base; i++) await sleep(50);
  assert.equal(await metric(d.port, 'dosqld_capnweb_entries'), base, 'a closed session leaves nothing');
});

test('many concurrent sessions', async () => {
  const N = 40;
  const sessions = Array.from({ length: N }, (_, i) => ws(`/v1/db/conc-${i % 8}/capnweb`));
  try {
    await Promise.all(sessions.slice(0, 8).map((s) => s.query({ sql: 'CREATE TABLE IF NOT EXISTS t(x)' })));
    await Promise.all(sessions.map(async (s, i) => {
      for (let k = 0; k < 10; k++) await s.query({ sql: 'INSERT INTO t VALUES (?)', params: [i * 100 + k] });
    }));
    let total = 0;
    for (let i = 0; i < 8; i++) total += Number((await sessions[i].query({ sql: 'SELECT count(*) FROM t' })).rows[0][0]);
    assert.equal(total, N * 10);
  } finally {
    for (const s of sessions) s[Symbol.dispose]();
  }
});

test('malformed messages abort the session, not the daemon', async () => {
  const bad = [
    '["bogus"]',
    '["push"]',
    '["pull", 999]',
    '["release", 12345, 1]',
    '["resolve", 77, null]',
    '{"not": "an array"}',
    '["push", ["pipeline", 0, ["query"], [{"sql": "SELECT 1"}], "extra"]]',
    `["push", ${'[['.repeat(100)}1${']]'.repeat(100)}]`,
    '["push", ["bigint", "' + '9'.repeat(100) + '"]]',
    'not json',
  ];
  for (const msg of bad) {
    const c = await wsRaw(d.port, '/v1/db/bad/capnweb');
    assert.equal(c.upgrade.status, 101);
    c.write(wsFrame(1, Buffer.from(msg)));
    const frames = await wsReadUntil(c, (fs) => fs.some((f) => f.opcode === 8) || fs.some((f) => f.opcode === 1));
    const text = frames.find((f) => f.opcode === 1);
    if (text) {
      const m = JSON.parse(text.payload.toString());
      assert.ok(m[0] === 'abort' || m[0] === 'reject' || m[0] === 'resolve', `${msg}: ${text.payload}`);
      if (m[0] === 'abort') assert.equal(m[1][0], 'error');
    }
    c.destroy();
  }
  // The daemon still serves.
  const api = ws('/v1/db/bad/capnweb');
  try {
    assert.deepEqual((await api.query({ sql: 'SELECT 2 AS two' })).rows, [[2]]);
  } finally {
    api[Symbol.dispose]();
  }
});

test('a pipe is refused with a clear error, not a crash', async () => {
  const c = await wsRaw(d.port, '/v1/db/pipe/capnweb');
  c.write(wsFrame(1, Buffer.from('["pipe"]')));
  c.write(wsFrame(1, Buffer.from('["pull", 1]')));
  const frames = await wsReadUntil(c, (fs) => fs.some((f) => f.opcode === 1));
  const m = JSON.parse(frames.find((f) => f.opcode === 1).payload.toString());
  assert.equal(m[0], 'reject');
  assert.match(m[2][2], /not supported/);
  c.destroy();
});

test('an HTTP batch with a bad line answers what came before and an abort', async () => {
  const body = '["push",["pipeline",0,["query"],[{"sql":"SELECT 1 AS one"}]]]\n["pull",1]\n["bogus"]\n["push",["pipeline",0,["ping"],[{}]]]';
  const r = await fetch(httpUrl('/v1/db/badbatch/capnweb'), { method: 'POST', body });
  assert.equal(r.status, 200);
  const lines = (await r.text()).split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.at(-1)[0], 'abort');
  assert.match(lines.at(-1)[1][2], /bogus/);
  // An empty batch is answered with an empty body.
  const e = await fetch(httpUrl('/v1/db/badbatch/capnweb'), { method: 'POST', body: '' });
  assert.equal(e.status, 200);
  assert.equal(await e.text(), '');
});

test('an HTTP batch cannot stream to a callback: refused, and nothing leaks', async () => {
  // A daemon of its own, so that its exit (and, in a sanitizer build, the
  // leak check that runs then) is this test's.
  const own = await startDosqld();
  try {
    for (let i = 0; i < 3; i++) {
      const b = newHttpBatchRpcSession(`http://127.0.0.1:${own.port}/v1/db/leak/capnweb`);
      const e = await b.queryStream({ sql: 'SELECT 1', chunkSize: 10 }, () => {}).then(() => null, (err) => err);
      assert.ok(e instanceof Error, 'refused');
      assert.equal(e.code, 'INVALID_REQUEST');
      assert.match(e.message, /WebSocket/);
    }
  } finally {
    await own.cleanup(); // throws on a sanitizer report or an unclean exit
  }
});

test('ping and getStats on a database answer for that database, as JSON-RPC does on its route', async () => {
  const name = 'pingstats';
  const rpc = async (method) => {
    const r = await fetch(httpUrl(`/v1/db/${name}/rpc`), { method: 'POST', body: JSON.stringify({ id: 1, method, params: {} }) });
    return (await r.json()).result;
  };
  // The shape of a value: its members and their types (BigInts are the
  // numbers of JSON).
  const shape = (v) => {
    if (typeof v === 'bigint') return 'number';
    if (v === null) return 'null';
    if (Array.isArray(v)) return v.map(shape);
    if (typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)]).sort());
    return typeof v;
  };
  const created = await fetch(httpUrl(`/v1/db/${name}/query`), { method: 'POST', body: JSON.stringify({ sql: 'CREATE TABLE t(x)' }) }).then((r) => r.json());
  const wantPing = await rpc('ping');
  const wantStats = await rpc('getStats');
  assert.equal(wantPing.lsn, created.lsn);
  assert.equal(wantStats.database.name, name);
  const bound = ws(`/v1/db/${name}/capnweb`);
  const unbound = ws('/v1/capnweb');
  try {
    const batch = newHttpBatchRpcSession(httpUrl('/v1/capnweb'));
    const batchPing = await batch.database(name).ping();
    for (const [how, api] of [['/v1/db/{db}/capnweb', bound], ['database(name) on /v1/capnweb', unbound.database(name)]]) {
      const p = await api.ping();
      assert.deepEqual(shape(p), shape(wantPing), `${how}: ping`);
      assert.equal(p.lsn, BigInt(created.lsn), `${how}: the database's LSN`);
      const s = await api.getStats();
      assert.deepEqual(Object.keys(s).sort(), Object.keys(wantStats).sort(), `${how}: getStats`);
      assert.deepEqual(shape(s.database), shape(wantStats.database), `${how}: getStats database`);
      assert.equal(s.database.name, name);
      assert.equal(s.database.lsn, BigInt(created.lsn));
    }
    assert.equal(batchPing.lsn, BigInt(created.lsn), 'HTTP batch: the database\'s ping');
  } finally {
    bound[Symbol.dispose]();
    unbound[Symbol.dispose]();
  }
});

test('an unknown request field rejects with INVALID_REQUEST naming it, for every method', async () => {
  const setup = ws('/v1/db/ufcw/capnweb');
  await setup.query({ sql: 'CREATE TABLE t(x)' });
  setup[Symbol.dispose]();
  // Each method with a request it takes plus `branch`; a function for
  // the methods that call back.
  const cases = [
    ['query', { sql: 'INSERT INTO t VALUES (1)' }],
    ['queryStream', { sql: 'SELECT x FROM t' }, () => {}],
    ['beginTransaction', { mode: 'immediate' }],
    ['commit', { transactionId: 'abc' }],
    ['rollback', { transactionId: 'abc' }],
    ['batch', { statements: [{ sql: 'INSERT INTO t VALUES (2)' }] }],
    ['subscribeCDC', {}, () => {}],
    ['getSchema', {}],
    ['ping', {}],
    ['getStats', {}],
  ];
  const bound = ws('/v1/db/ufcw/capnweb');
  const unbound = ws('/v1/capnweb');
  try {
    for (const [how, api] of [['/v1/db/{db}/capnweb', bound], ['database(name)', unbound.database('ufcw')]]) {
      for (const [method, req, cb] of cases) {
        const args = cb ? [{ ...req, branch: 'x' }, cb] : [{ ...req, branch: 'x' }];
        const e = await api[method](...args).then(() => null, (err) => err);
        assert.ok(e instanceof Error, `${how} ${method}: refused`);
        assert.equal(e.code, 'INVALID_REQUEST', `${how} ${method}: ${e.message}`);
        assert.match(e.message, new RegExp(`unknown field "branch" in ${method}\\b`), `${how} ${method}`);
      }
    }
    // Fields a client might expect to be honoured, and a batch's statement.
    let e = await bound.query({ sql: 'select 1', branch: 'x' }).then(() => null, (err) => err);
    assert.match(e?.message ?? '', /unknown field "branch" in query/);
    e = await bound.beginTransaction({ isolation: 'serializable', readOnly: true }).then(() => null, (err) => err);
    assert.equal(e?.code, 'INVALID_REQUEST');
    assert.match(e.message, /unknown field "isolation" in beginTransaction/);
    // readOnly is honoured: a snapshot transaction.
    const ro = await bound.beginTransaction({ readOnly: true });
    assert.match(ro.transactionId, /^[0-9a-f]{32}$/);
    await bound.rollback({ transactionId: ro.transactionId });
    e = await bound.batch({ statements: [{ sql: 'SELECT 1', branch: 'x' }] }).then(() => null, (err) => err);
    assert.match(e?.message ?? '', /unknown field "branch" in batch statements\[0\]/);
    e = await unbound.database('ufcw').query({ sql: 'SELECT 1', database: 'other' }).then(() => null, (err) => err);
    assert.match(e?.message ?? '', /"database" differs/, 'a stub\'s calls run on its database, not another');
    // Arguments beyond those a method takes are refused the same way.
    e = await bound.query({ sql: 'INSERT INTO t VALUES (5)' }, { branch: 'x' }).then(() => null, (err) => err);
    assert.equal(e?.code, 'INVALID_REQUEST');
    assert.match(e.message, /query takes one request object, not 2 arguments/);
    e = await bound.queryStream({ sql: 'SELECT 1' }, () => {}, 'x').then(() => null, (err) => err);
    assert.match(e?.message ?? '', /queryStream takes a request object and a callback, not 3 arguments/);
    e = await unbound.database('ufcw', 'branch-x').ping().then(() => null, (err) => err);
    assert.match(e?.message ?? '', /database\(name\) takes one argument/);
    // Over an HTTP batch too, even where the call is refused for more.
    const b = newHttpBatchRpcSession(httpUrl('/v1/db/ufcw/capnweb'));
    const [q, s] = await Promise.allSettled([
      b.query({ sql: 'INSERT INTO t VALUES (3)', branch: 'x' }),
      b.queryStream({ sql: 'SELECT 1', branch: 'x' }, () => {}),
    ]);
    assert.match(q.reason?.message ?? '', /unknown field "branch" in query/);
    assert.match(s.reason?.message ?? '', /unknown field "branch" in queryStream/);
    // Nothing was written, and the session goes on.
    assert.deepEqual((await bound.query({ sql: 'SELECT count(*) FROM t' })).rows, [[0]]);
  } finally {
    bound[Symbol.dispose]();
    unbound[Symbol.dispose]();
  }
});

test('debug logs name the messages but never the values of parameters or rows', async () => {
  const own = await startDosqld({ args: ['--log-level', 'debug'] });
  const url = (p) => `http://127.0.0.1:${own.port}${p}`;
  const secrets = ['s3cret-cw-positional', 's3cret-cw-named', 's3cret-cw-batch', 's3cret-cw-http', 's3cret-rpc-http', 's3cret-rpc-ws'];
  const blob = new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0x5e, 0xc7]);
  const blob64 = Buffer.from(blob).toString('base64').replace(/=+$/, '');
  try {
    const api = newWebSocketRpcSession(`ws://127.0.0.1:${own.port}/v1/db/logs/capnweb`);
    try {
      await api.query({ sql: 'CREATE TABLE t(v, b BLOB)' });
      const got = [];
      const sub = await api.subscribeCDC({}, (ev) => { got.push(ev); });
      const r = await api.query({ sql: 'INSERT INTO t VALUES (?, ?) RETURNING v', params: [secrets[0], blob] });
      assert.deepEqual(r.rows, [[secrets[0]]]);
      await api.query({ sql: 'SELECT :v AS v', params: { v: secrets[1] } });
      await api.batch({ statements: [{ sql: 'SELECT ? AS v', params: [secrets[2]] }] });
      const chunks = [];
      await api.queryStream({ sql: 'SELECT v, b FROM t' }, (c) => { chunks.push(c); });
      assert.equal(chunks[0].rows[0][0], secrets[0]);
      await within(5000, (async () => { while (got.length < 1) await sleep(10); })(), 'CDC event');
      assert.equal(got[0].after.v, secrets[0]);
      await sub.unsubscribe();
    } finally {
      api[Symbol.dispose]();
    }
    const b = newHttpBatchRpcSession(url('/v1/db/logs/capnweb'));
    assert.deepEqual((await b.query({ sql: 'SELECT ? AS v', params: [secrets[3]] })).rows, [[secrets[3]]]);
    const rpc = await fetch(url('/v1/db/logs/rpc'), { method: 'POST', body: JSON.stringify({ id: 1, method: 'query', params: { sql: 'SELECT ? AS v', params: [secrets[4]] } }) }).then((x) => x.json());
    assert.deepEqual(rpc.result.rows, [[secrets[4]]]);
    const sock = new WebSocket(`ws://127.0.0.1:${own.port}/v1/db/logs/rpc`);
    await within(5000, new Promise((resolve, reject) => { sock.on('open', resolve); sock.on('error', reject); }), 'WebSocket open');
    const reply = within(5000, new Promise((resolve) => sock.once('message', (m) => resolve(JSON.parse(m.toString())))), 'reply');
    sock.send(JSON.stringify({ id: 1, method: 'query', params: { sql: 'SELECT ? AS v', params: [secrets[5]] } }));
    assert.deepEqual((await reply).result.rows, [[secrets[5]]]);
    sock.close();
  } finally {
    await own.cleanup();
  }
  // The messages were logged (the SQL text with them), their values not.
  assert.match(own.stderr, /event=capnweb_in .*INSERT INTO t VALUES \(\?, \?\) RETURNING v/);
  assert.match(own.stderr, /event=capnweb_out /);
  for (const s of [...secrets, blob64]) assert.ok(!own.stderr.includes(s), `${s} is in the log:\n${own.stderr.split('\n').filter((l) => l.includes(s)).join('\n')}`);
});
