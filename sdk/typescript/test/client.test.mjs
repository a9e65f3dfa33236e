// @dosqld/client against a real dosqld: queries and typed rows, the sql
// tag, prepared statements, batches, transactions, integers, errors,
// tokens, HTTP batch, replica reads with bookmarks.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, sql, DosqlError, jsonReplacer, isReadOnlySql, Statement } from '../dist/index.js';
import { startServer, tapWebSocket, sleep, metric, WRITE_TOKEN, READ_TOKEN } from './lib.mjs';

let d;
const open = [];
function client(db, o = {}) {
  const c = connect(d.url, { database: db, token: WRITE_TOKEN, ...o });
  open.push(c);
  return c;
}

before(async () => { d = await startServer(); });
after(async () => {
  await Promise.all(open.map((c) => c.close()));
  await d?.cleanup();
});

test('Node 20 needs no shim: no global WebSocket is set, the ws package stands in', async () => {
  if (Number(process.versions.node.split('.')[0]) < 22) assert.equal(globalThis.WebSocket, undefined);
  const db = client('shim');
  assert.deepEqual((await db.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
  assert.equal(globalThis.WebSocket === undefined, Number(process.versions.node.split('.')[0]) < 22, 'the client set no global');
});

test('query: rows as objects keyed by column, columns, rowsAffected, lastInsertRowId, lsn', async () => {
  const db = client('q');
  const created = await db.query('CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, avatar BLOB)');
  assert.equal(typeof created.lsn, 'number');
  const ins = await db.query('INSERT INTO users(name, score, avatar) VALUES (?, ?, ?), (?, ?, ?)', ['ann', 1.5, new Uint8Array([1, 2, 3]), 'bob', null, null]);
  assert.equal(ins.rowsAffected, 2);
  assert.equal(ins.lastInsertRowId, 2);
  assert.equal(ins.lsn, created.lsn + 1);
  const r = await db.query('SELECT id, name, score, avatar FROM users ORDER BY id');
  assert.deepEqual(r.columns, ['id', 'name', 'score', 'avatar']);
  assert.deepEqual(r.columnTypes, ['INTEGER', 'TEXT', 'REAL', 'BLOB']);
  assert.equal(r.rows.length, 2);
  assert.deepEqual({ ...r.rows[0], avatar: [...r.rows[0].avatar] }, { id: 1, name: 'ann', score: 1.5, avatar: [1, 2, 3] });
  assert.deepEqual(r.rows[1], { id: 2, name: 'bob', score: null, avatar: null });
  assert.deepEqual(r.rawRows[1], [2, 'bob', null, null]);
  // Booleans bind as 1/0, a Date as its milliseconds, an ArrayBuffer as a BLOB.
  const kinds = await db.query('SELECT ? AS t, ? AS f, ? AS d, length(?) AS ab', [true, false, new Date(1000), new ArrayBuffer(3)]);
  assert.deepEqual(kinds.rows, [{ t: 1, f: 0, d: 1000, ab: 3 }]);
  await assert.rejects(() => db.query('SELECT ?', [NaN]), RangeError);
  // Named parameters, with or without the prefix.
  const named = await db.query('SELECT name FROM users WHERE id = :id', { id: 2 });
  assert.deepEqual(named.rows, [{ name: 'bob' }]);
  // Duplicate column names: the first one's value.
  const dup = await db.query('SELECT 1 AS x, 2 AS x, 3 AS y');
  assert.deepEqual(dup.rows, [{ x: 1, y: 3 }]);
  assert.deepEqual(dup.rawRows, [[1, 2, 3]]);
  // A column named __proto__ is a plain key, not a prototype.
  const proto = await db.query('SELECT 1 AS "__proto__"');
  assert.equal(Object.getPrototypeOf(proto.rows[0]), Object.prototype);
  assert.deepEqual(Object.keys(proto.rows[0]), ['__proto__']);
  // The URL may name the database itself.
  const byUrl = connect(`${d.url}/v1/db/q`, { token: WRITE_TOKEN });
  open.push(byUrl);
  assert.equal(byUrl.database, 'q');
  assert.deepEqual((await byUrl.query('SELECT count(*) AS n FROM users')).rows, [{ n: 2 }]);
  assert.throws(() => connect(d.url), /no database/);
  assert.throws(() => connect(`${d.url}/v1/db/a`, { database: 'b' }), /names database/);
});

test('the sql tag binds every interpolation as a parameter', async () => {
  const db = client('tag');
  await db.query('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
  const hostile = "x'); DROP TABLE t; --";
  await db.sql`INSERT INTO t(id, v) VALUES (${1}, ${hostile})`;
  const r = await db.sql`SELECT v FROM t WHERE id = ${1}`;
  assert.deepEqual(r.rows, [{ v: hostile }], 'the value arrived as it was, as a value');
  assert.deepEqual((await db.query("SELECT name FROM sqlite_schema WHERE type = 'table'")).rows, [{ name: 't' }]);
  // The statement the tag builds: placeholders only.
  const s = sql`SELECT * FROM t WHERE id = ${7} AND v = ${hostile}`;
  assert.ok(s instanceof Statement);
  assert.equal(s.sql, 'SELECT * FROM t WHERE id = ? AND v = ?');
  assert.deepEqual(s.params, [7, hostile]);
  // Fragments compose, with their own parameters in order.
  const where = sql`v = ${hostile}`;
  const composed = sql`SELECT id FROM t WHERE id >= ${0} AND ${where} LIMIT ${10}`;
  assert.equal(composed.sql, 'SELECT id FROM t WHERE id >= ? AND v = ? LIMIT ?');
  assert.deepEqual((await db.query(composed)).rows, [{ id: 1 }]);
  assert.deepEqual((await db.sql`SELECT id FROM t WHERE ${where}`).rows, [{ id: 1 }]);
  // undefined binds as NULL.
  assert.deepEqual((await db.sql`SELECT ${undefined} AS u`).rows, [{ u: null }]);
});

test('prepared statements: all, first, run', async () => {
  const db = client('prep');
  await db.query('CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)');
  const put = db.prepare('INSERT INTO kv VALUES (?, ?)');
  const get = db.prepare('SELECT k, v FROM kv WHERE k = ?');
  const all = db.prepare('SELECT k, v FROM kv WHERE v >= :min ORDER BY k');
  const r1 = await put.run(['a', 1]);
  assert.equal(r1.rowsAffected, 1);
  assert.equal(typeof r1.lsn, 'number');
  await put.run(['b', 2]);
  await put.run(['c', 3]);
  assert.deepEqual(await get.first(['b']), { k: 'b', v: 2 });
  assert.equal(await get.first(['zz']), undefined);
  assert.deepEqual(await all.all({ min: 2 }), [{ k: 'b', v: 2 }, { k: 'c', v: 3 }]);
  assert.equal(put.sql, 'INSERT INTO kv VALUES (?, ?)');
  const e = await put.run(['a', 9]).catch((x) => x);
  assert.ok(e instanceof DosqlError);
  assert.equal(e.code, 'CONSTRAINT_VIOLATION');
});

test('intMode: number (default) refuses what it cannot hold, bigint and string keep it; JSON-safe forms', async () => {
  const big = 9007199254740993n;
  const dbn = client('ints');
  await dbn.query('CREATE TABLE t(i INTEGER)');
  await dbn.query('INSERT INTO t VALUES (?), (?)', [big, 42]);
  const e = await dbn.query('SELECT i FROM t').catch((x) => x);
  assert.ok(e instanceof RangeError);
  assert.match(e.message, /intMode/);
  const small = await dbn.query('SELECT i FROM t WHERE i = 42');
  assert.deepEqual(JSON.parse(JSON.stringify(small)).rows, [{ i: 42 }], 'number mode is JSON.stringify-safe');
  assert.equal(typeof small.lsn, 'number');

  const dbb = client('ints', { intMode: 'bigint' });
  const rb = await dbb.query('SELECT i FROM t ORDER BY rowid');
  assert.deepEqual(rb.rows, [{ i: big }, { i: 42 }]);
  assert.equal(typeof rb.lsn, 'bigint');
  assert.equal(typeof rb.lastInsertRowId, 'bigint');
  assert.throws(() => JSON.stringify(rb), /BigInt/);
  const json = JSON.parse(JSON.stringify(rb, jsonReplacer));
  assert.equal(json.rows[0].i, '9007199254740993');
  assert.equal(json.lsn, String(rb.lsn));

  const dbs = client('ints', { intMode: 'string' });
  const rs = await dbs.query('SELECT i FROM t ORDER BY rowid');
  assert.deepEqual(rs.rows, [{ i: '9007199254740993' }, { i: 42 }]);
  assert.equal(typeof rs.lsn, 'string');
  assert.equal(JSON.parse(JSON.stringify(rs)).rows[0].i, '9007199254740993');
  // LSNs are taken in any form.
  const asOf = await dbs.query('SELECT count(*) AS n FROM t', [], { asOf: { lsn: rs.lsn } });
  assert.deepEqual(asOf.rows, [{ n: 2 }]);
  assert.throws(() => connect(d.url, { database: 'x', intMode: 'float' }), /intMode/);
});

test('errors: DosqlError with the server\'s code and retryable', async () => {
  const db = client('errs');
  const cases = [
    ['SELEC 1', 'SYNTAX_ERROR'],
    ['SELECT * FROM nope', 'TABLE_NOT_FOUND'],
    ["ATTACH 'x' AS y", 'FORBIDDEN'],
  ];
  for (const [q, code] of cases) {
    const e = await db.query(q).catch((x) => x);
    assert.ok(e instanceof DosqlError, q);
    assert.ok(e instanceof Error);
    assert.equal(e.name, 'DosqlError');
    assert.equal(e.code, code, q);
    assert.equal(e.retryable, false);
    assert.ok(e.message.length > 0);
  }
  // A wrong token: the upgrade is refused with UNAUTHORIZED, not retried.
  const bad = connect(d.url, { database: 'errs', token: 'not-a-token-0123456789' });
  open.push(bad);
  const u = await bad.query('SELECT 1').catch((x) => x);
  assert.equal(u.code, 'UNAUTHORIZED');
  assert.equal(u.retryable, false);
  const badHttp = connect(d.url, { database: 'errs', token: 'not-a-token-0123456789', transport: 'http' });
  assert.equal((await badHttp.query('SELECT 1').catch((x) => x)).code, 'UNAUTHORIZED');
  // A read token may read, not write.
  const ro = client('errs', { token: READ_TOKEN });
  assert.deepEqual((await ro.query('SELECT 2 AS two')).rows, [{ two: 2 }]);
  assert.equal((await ro.query('CREATE TABLE t(x)').catch((x) => x)).code, 'FORBIDDEN');
});

test('batch: atomic by default; atomic: false reports each statement', async () => {
  const db = client('batch');
  await db.query('CREATE TABLE t(id INTEGER PRIMARY KEY, v)');
  const ok = await db.batch([
    'INSERT INTO t VALUES (1, 1)',
    sql`INSERT INTO t VALUES (${2}, ${'two'})`,
    { sql: 'SELECT count(*) AS n FROM t' },
  ]);
  assert.equal(ok.results.length, 3);
  assert.deepEqual(ok.results[2].rows, [{ n: 2 }]);
  assert.equal(typeof ok.lsn, 'number');
  const e = await db.batch(['INSERT INTO t VALUES (3, 3)', 'INSERT INTO t VALUES (1, 1)']).catch((x) => x);
  assert.equal(e.code, 'CONSTRAINT_VIOLATION');
  assert.match(e.message, /statement 1/);
  assert.deepEqual((await db.query('SELECT count(*) AS n FROM t')).rows, [{ n: 2 }], 'nothing of the failed batch stayed');
  const loose = await db.batch(['INSERT INTO t VALUES (3, 3)', 'INSERT INTO t VALUES (1, 1)', 'SELECT max(id) AS m FROM t'], { atomic: false });
  assert.equal(loose.results[0].rowsAffected, 1);
  assert.ok(loose.results[1] instanceof DosqlError);
  assert.equal(loose.results[1].code, 'CONSTRAINT_VIOLATION');
  assert.deepEqual(loose.results[2].rows, [{ m: 3 }]);
});

test('transaction: commits when the callback resolves, rolls back and rethrows when it throws', async () => {
  const db = client('tx');
  await db.query('CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL CHECK (bal >= 0))');
  await db.query('INSERT INTO acct VALUES (1, 100), (2, 0)');
  const moved = await db.transaction(async (tx) => {
    assert.match(tx.transactionId, /./);
    await tx.sql`UPDATE acct SET bal = bal - ${30} WHERE id = ${1}`;
    await tx.query('UPDATE acct SET bal = bal + ? WHERE id = ?', [30, 2]);
    const inside = await tx.prepare('SELECT bal FROM acct WHERE id = ?').first([2]);
    assert.deepEqual(inside, { bal: 30 }, 'the transaction sees its own writes');
    const outside = await db.query('SELECT bal FROM acct WHERE id = 2');
    assert.deepEqual(outside.rows, [{ bal: 0 }], 'others do not, before the commit');
    const b = await tx.batch(['SELECT sum(bal) AS s FROM acct']);
    assert.deepEqual(b.results[0].rows, [{ s: 100 }]);
    return 30;
  }, { mode: 'immediate' });
  assert.equal(moved, 30);
  assert.deepEqual((await db.query('SELECT bal FROM acct ORDER BY id')).rows, [{ bal: 70 }, { bal: 30 }]);

  // The callback throws: rolled back, the same error rethrown.
  const boom = new Error('changed my mind');
  let handle;
  const e = await db.transaction(async (tx) => {
    handle = tx;
    await tx.query('UPDATE acct SET bal = 0');
    await tx.query('INSERT INTO acct VALUES (3, 5)');
    throw boom;
  }).catch((x) => x);
  assert.equal(e, boom);
  assert.deepEqual((await db.query('SELECT id, bal FROM acct ORDER BY id')).rows, [{ id: 1, bal: 70 }, { id: 2, bal: 30 }]);
  // A write after it does not wait for a transaction left open.
  await db.query('INSERT INTO acct VALUES (4, 1)');
  // The handle is spent.
  assert.equal((await handle.query('SELECT 1').catch((x) => x)).code, 'TRANSACTION_NOT_FOUND');
  // A statement that fails inside: the callback sees the DosqlError; not caught, it rolls back.
  const c = await db.transaction(async (tx) => {
    await tx.query('INSERT INTO acct VALUES (5, 5)');
    await tx.query('UPDATE acct SET bal = -1 WHERE id = 1');
  }).catch((x) => x);
  assert.equal(c.code, 'CONSTRAINT_VIOLATION');
  assert.deepEqual((await db.query('SELECT count(*) AS n FROM acct WHERE id = 5')).rows, [{ n: 0 }]);
  // A read-only transaction reads a snapshot.
  const n = await db.transaction(async (tx) => {
    const before = (await tx.query('SELECT count(*) AS n FROM acct')).rows[0].n;
    await db.query('INSERT INTO acct VALUES (6, 6)');
    const again = (await tx.query('SELECT count(*) AS n FROM acct')).rows[0].n;
    assert.equal(again, before, 'a snapshot');
    return before;
  }, { readOnly: true });
  assert.equal(n, 3);
});

test('HTTP batch transport: one-shot calls, batches and transactions', async () => {
  const posts = () => metric(d.port, 'dosqld_http_requests_total{route="db_capnweb",status="200"}', { Authorization: `Bearer ${READ_TOKEN}` });
  const db = client('http', { transport: 'http' });
  const p0 = await posts();
  await db.query('CREATE TABLE t(x)');
  assert.equal(await posts(), p0 + 1, 'one HTTP request for the call');
  await db.batch(['INSERT INTO t VALUES (1)', 'INSERT INTO t VALUES (2)']);
  const r = await db.transaction(async (tx) => {
    await tx.query('INSERT INTO t VALUES (3)');
    return (await tx.query('SELECT count(*) AS n FROM t')).rows[0].n;
  });
  assert.equal(r, 3, 'a transaction runs on a WebSocket (an HTTP batch\'s would end with the batch)');
  await db.transaction(async (tx) => { await tx.query('INSERT INTO t VALUES (4)'); throw new Error('no'); }).catch(() => {});
  assert.deepEqual((await db.sql`SELECT count(*) AS n FROM t WHERE x <= ${10}`).rows, [{ n: 3 }]);
  assert.equal((await db.ping()).pong, true);
  assert.deepEqual((await db.getSchema()).tables.map((t) => t.name), ['t']);
});

test('ping, getSchema, getStats', async () => {
  const db = client('meta');
  await db.query('CREATE TABLE t(a INTEGER PRIMARY KEY)');
  const p = await db.ping();
  assert.equal(p.pong, true);
  assert.equal(typeof p.lsn, 'number');
  const s = await db.getSchema();
  assert.equal(s.tables[0].name, 't');
  const st = await db.getStats();
  assert.equal(st.database.name, 'meta');
});

test('replica reads: consistency and minLSN are sent; the bookmark of the last write rides along in auto mode', async () => {
  const tap = tapWebSocket();
  const db = client('rep', { WebSocket: tap.WebSocket, consistency: 'replica' });
  await db.query('CREATE TABLE t(x)');
  const w = await db.query('INSERT INTO t VALUES (1)');
  assert.equal(db.bookmark, w.lsn, 'the bookmark is the last write\'s LSN');
  tap.sent.length = 0;
  const r = await db.query('SELECT count(*) AS n FROM t');
  assert.deepEqual(r.rows, [{ n: 1 }]);
  const sent = tap.sent.find((m) => m.includes('count(*)'));
  assert.match(sent, /"consistency":"replica"/);
  assert.match(sent, new RegExp(`"minLSN":\\["bigint","${w.lsn}"\\]`));
  // Writes never go as replica reads.
  tap.sent.length = 0;
  await db.query('INSERT INTO t VALUES (2)');
  assert.doesNotMatch(tap.sent.find((m) => m.includes('INSERT')), /consistency|minLSN/);
  // bookmarks: 'off' sends no minLSN; an explicit one is sent as given.
  const off = client('rep', { WebSocket: tap.WebSocket, consistency: 'replica', bookmarks: 'off' });
  await off.query('INSERT INTO t VALUES (3)');
  tap.sent.length = 0;
  await off.query('SELECT 1');
  assert.doesNotMatch(tap.sent.find((m) => m.includes('SELECT 1')), /minLSN/);
  const plain = client('rep');
  const cur = (await plain.ping()).lsn;
  const explicit = await plain.query('SELECT count(*) AS n FROM t', [], { consistency: 'replica', minLSN: cur });
  assert.deepEqual(explicit.rows, [{ n: 3 }]);
  // A bookmark ahead of the database waits for that commit...
  const waiting = plain.query('SELECT count(*) AS n FROM t', [], { consistency: 'replica', minLSN: BigInt(cur + 1) });
  await sleep(100);
  await client('rep').query('INSERT INTO t VALUES (4)');
  assert.deepEqual((await waiting).rows, [{ n: 4 }], 'answered once the commit was there');
  // ...and gives up with TIMEOUT (write_wait_timeout on a node without [cluster]).
  const late = await plain.query('SELECT 1', [], { consistency: 'replica', minLSN: cur + 100 }).catch((x) => x);
  assert.equal(late.code, 'TIMEOUT');
});

test('isReadOnlySql: one read statement, or a write', () => {
  assert.equal(isReadOnlySql('SELECT 1'), true);
  assert.equal(isReadOnlySql('  -- c\n /* x */ select * from t;'), true);
  assert.equal(isReadOnlySql("SELECT ';INSERT' FROM t"), true);
  assert.equal(isReadOnlySql('VALUES (1)'), true);
  assert.equal(isReadOnlySql('SELECT 1; INSERT INTO t VALUES (1)'), false);
  assert.equal(isReadOnlySql('INSERT INTO t VALUES (1)'), false);
  assert.equal(isReadOnlySql('WITH x AS (SELECT 1) DELETE FROM t'), false);
  assert.equal(isReadOnlySql('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT * FROM n'), true);
  assert.equal(isReadOnlySql('with a as (select 1), "b" as materialized (values (2)) insert into t select * from a'), false);
  assert.equal(isReadOnlySql('SELECT 1;;  -- done'), true);
  assert.equal(isReadOnlySql("SELECT ')' FROM t; DELETE FROM t"), false);
  assert.equal(isReadOnlySql('PRAGMA user_version = 3'), false);
});
