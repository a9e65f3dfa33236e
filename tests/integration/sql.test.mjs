// Integration: the DoSQL API on a real dosqld — values and parameters,
// every method, each kind of bad input, the sandbox, limits.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, Raw, within } from './lib/harness.mjs';
import { post, query, call, WsRpc } from './lib/rpc.mjs';

// The limits every test here is held to; query_timeout is short for the
// test of it. The long-stream tests fill their tables with statements that
// take far longer than 300 ms on a sanitizer build of a loaded machine:
// they run on a second daemon alike but for query_timeout (the default,
// 30 s), which those tests do not test.
const conf = (queryTimeout) => `[engine]
query_timeout = ${queryTimeout}
max_result_bytes = 64K
max_sql_length = 4K
max_params = 50
max_columns = 12
max_expr_depth = 40
[rpc]
max_batch = 20
`;

let d, streams;
before(async () => {
  d = await startDosqld({ conf: conf('300ms') });
  streams = await startDosqld({ conf: conf('30s') });
});
after(async () => {
  try { await d?.cleanup(); } finally { await streams?.cleanup(); }
});

test('values: every SQLite type, bigints, blobs, unicode, in and out', async () => {
  await query(d.port, 'vals', 'CREATE TABLE t(i INTEGER, r REAL, s TEXT, b BLOB, n)');
  const ins = await query(d.port, 'vals', 'INSERT INTO t VALUES (?, ?, ?, ?, ?), (?5, ?4, ?3, ?2, ?1)',
    [{ $bigint: '9223372036854775807' }, 2.5, 'héllo € 😀 "q"', { $bytes: 'AAECAw==' }, null]);
  assert.equal(ins.rowsAffected, 2);
  assert.equal(ins.lastInsertRowid, 2);
  const r = await query(d.port, 'vals', 'SELECT i, r, s, b, n, 9007199254740991 AS safe, -9007199254740992 AS unsafe, 1.0 AS one, true AS t FROM t ORDER BY rowid');
  assert.deepEqual(r.columns, ['i', 'r', 's', 'b', 'n', 'safe', 'unsafe', 'one', 't']);
  assert.deepEqual(r.columnTypes, ['INTEGER', 'REAL', 'TEXT', 'BLOB', null, null, null, null, null]);
  assert.deepEqual(r.rows[0], [{ $bigint: '9223372036854775807' }, 2.5, 'héllo € 😀 "q"', { $bytes: 'AAECAw==' }, null,
    9007199254740991, { $bigint: '-9007199254740992' }, 1, 1]);
  assert.match(JSON.stringify(r.rows[0][1]), /^2\.5$/);
  // The second row took the values in reverse through ?NNN.
  assert.deepEqual(r.rows[1].slice(0, 5), [null, { $bytes: 'AAECAw==' }, 'héllo € 😀 "q"', 2.5, { $bigint: '9223372036854775807' }]);
  assert.equal(typeof r.lsn, 'number');
});

test('named parameters with :, @ and $, given with or without the prefix', async () => {
  const r = await query(d.port, 'vals', 'SELECT :a AS a, @b AS b, $c AS c', { a: 1, '@b': 'two', $c: null });
  assert.deepEqual(r.rows, [[1, 'two', null]]);
  const miss = await query(d.port, 'vals', 'SELECT :a, :b', { a: 1 }, { raw: true });
  assert.equal(miss.status, 400);
  assert.equal(miss.json.error.code, 'INVALID_REQUEST');
  assert.match(miss.json.error.message, /:b/);
  const extra = await query(d.port, 'vals', 'SELECT ?', [1, 2], { raw: true });
  assert.equal(extra.json.error.code, 'INVALID_REQUEST');
});

test('several statements run in order; the result is the last one', async () => {
  const r = await query(d.port, 'multi', 'CREATE TABLE a(x); INSERT INTO a VALUES (1),(2); SELECT sum(x) AS s FROM a;');
  assert.deepEqual(r.rows, [[3]]);
  assert.ok(r.lsn >= 1);
  const bad = await query(d.port, 'multi', 'INSERT INTO a VALUES (10); SELEC 1', undefined, { raw: true });
  assert.equal(bad.json.error.code, 'SYNTAX_ERROR');
  const after = await query(d.port, 'multi', 'SELECT count(*) FROM a');
  assert.deepEqual(after.rows, [[2]], 'a failed request changes nothing');
});

test('LSNs grow by one per committing request and reads keep the last', async () => {
  const a = await query(d.port, 'lsn', 'CREATE TABLE t(x)');
  const b = await query(d.port, 'lsn', 'INSERT INTO t VALUES (1)');
  const c = await query(d.port, 'lsn', 'SELECT * FROM t');
  const e = await query(d.port, 'lsn', 'INSERT INTO t VALUES (2); INSERT INTO t VALUES (3)');
  assert.equal(b.lsn, a.lsn + 1);
  assert.equal(c.lsn, b.lsn);
  assert.equal(e.lsn, b.lsn + 1, 'one request is one commit');
});

test('error codes map from SQLite, with its message', async () => {
  await query(d.port, 'errs', 'CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(p REFERENCES p(id)); CREATE TABLE u(x UNIQUE NOT NULL)');
  const cases = [
    ['SELEC 1', 'SYNTAX_ERROR', 400],
    ['SELECT * FROM nope', 'TABLE_NOT_FOUND', 404],
    ['SELECT nope FROM u', 'COLUMN_NOT_FOUND', 400],
    ['INSERT INTO u VALUES (NULL)', 'CONSTRAINT_VIOLATION', 409],
    ['INSERT INTO c VALUES (42)', 'CONSTRAINT_VIOLATION', 409], // foreign keys are on
  ];
  for (const [sql, code, status] of cases) {
    const r = await query(d.port, 'errs', sql, undefined, { raw: true });
    assert.equal(r.json.error.code, code, sql);
    assert.equal(r.status, status, sql);
    assert.ok(r.json.error.message.length > 0);
  }
});

test('every bad input gets an error object and the connection stays usable', async () => {
  const c = await Raw.connect(d.port);
  const bodies = [
    ['/v1/db/bad/rpc', '{"id":1,"method":', 'INVALID_REQUEST', /invalid JSON/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"query","params":[1]}', 'INVALID_REQUEST', /params/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"query","params":"x"}', 'INVALID_REQUEST', /params/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"nope","params":{}}', 'INVALID_REQUEST', /unknown method/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"query","params":{"sql":42}}', 'INVALID_REQUEST', /must be a string/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"query","params":{}}', 'INVALID_REQUEST', /"sql" is required/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"query","params":{"sql":""}}', 'INVALID_REQUEST', /empty/],
    ['/v1/db/bad/rpc', `{"id":1,"method":"query","params":{"sql":"SELECT 1","params":[${Array(51).fill(1)}]}}`, 'INVALID_REQUEST', /too many params/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"query","params":{"sql":"SELECT ?","params":[[1]]}}', 'INVALID_REQUEST', /array/],
    ['/v1/db/bad/rpc', '{"id":{"x":1},"method":"ping"}', 'INVALID_REQUEST', /"id" must be a string or a number/],
    ['/v1/db/bad/rpc', '{"id":[1],"method":"ping"}', 'INVALID_REQUEST', /"id"/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"batch","params":{"statements":"x"}}', 'INVALID_REQUEST', /statements/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"batch","params":{"statements":[{"sql":"SELECT 1"},5]}}', 'INVALID_REQUEST', /statements\[1\]/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"batch","params":{"statements":[],"atomic":true}}', 'INVALID_REQUEST', /1 to 20/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"beginTransaction","params":{"mode":"exclusive"}}', 'INVALID_REQUEST', /mode/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"beginTransaction","params":{"timeoutMs":-5}}', 'INVALID_REQUEST', /timeoutMs/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"commit","params":{}}', 'INVALID_REQUEST', /transactionId/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"commit","params":{"transactionId":7}}', 'INVALID_REQUEST', /transactionId/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"commit","params":{"transactionId":"nope"}}', 'TRANSACTION_NOT_FOUND', /nope/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"query","params":{"sql":"SELECT 1","asOf":{"lsn":1}}}', 'INVALID_LSN', /after the last commit/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"query","params":{"sql":"SELECT 1","asOf":{"when":1}}}', 'INVALID_REQUEST', /asOf/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"query","params":{"sql":"SELECT 1","asOf":{"timestamp":"yesterday"}}}', 'INVALID_REQUEST', /RFC 3339/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"batch","params":{"statements":[{"sql":"SELECT 1"}],"asOf":{"lsn":0}}}', 'INVALID_REQUEST', /unknown field "asOf" in batch/],
    ['/v1/db/bad/rpc', '{"id":1,"method":"query","params":{"sql":"SELECT 1","database":"other"}}', 'INVALID_REQUEST', /database/],
    ['/v1/rpc', '{"id":1,"method":"query","params":{"sql":"SELECT 1"}}', 'INVALID_REQUEST', /"database" is required/],
    ['/v1/rpc', '{"id":1,"method":"ping","params":{"transactionId":"abc"}}', 'INVALID_REQUEST', /"database" is required/],
    ['/v1/rpc', '{"id":1,"method":"query","params":{"sql":"SELECT 1","database":".hidden"}}', 'INVALID_REQUEST', /invalid database name/],
    ['/v1/rpc', '{"id":1,"method":"query","params":{"sql":"SELECT 1","database":"a/b"}}', 'INVALID_REQUEST', /invalid database name/],
    ['/v1/rpc', '{"id":1,"method":"query","params":{"sql":"SELECT 1","database":5}}', 'INVALID_REQUEST', /must be a string/],
    ['/v1/db/bad/query', '[1,2]', 'INVALID_REQUEST', /JSON object/],
    ['/v1/db/bad/query', '{"sql":"SELECT 1"', 'INVALID_REQUEST', /invalid JSON/],
    ['/v1/db/bad/query', `{"sql":"SELECT '${'x'.repeat(5000)}'"}`, 'RESOURCE_EXHAUSTED', /too big|long/i],
  ];
  for (const [path, body, code, msg] of bodies) {
    c.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    const r = await c.readResponse();
    assert.ok(r.json, `${body}: a JSON body`);
    const err = r.json.error;
    assert.ok(err, `${body}: ${r.text}`);
    assert.equal(err.code, code, `${body}: ${r.text}`);
    assert.match(err.message, msg, body);
    assert.ok(r.status >= 400, body);
  }
  // Still usable after all of that.
  c.write('POST /v1/db/bad/query HTTP/1.1\r\nHost: x\r\nContent-Length: 19\r\n\r\n{"sql":"SELECT 42"}');
  const ok = await c.readResponse();
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.json.rows, [[42]]);
  c.destroy();
});

// Every method, each with a request it takes plus a member it does not.
const unknownFieldCases = [
  ['query', { sql: 'INSERT INTO t VALUES (1)' }],
  ['queryStream', { sql: 'SELECT x FROM t' }],
  ['beginTransaction', { mode: 'immediate' }],
  ['commit', { transactionId: 'abc' }],
  ['rollback', { transactionId: 'abc' }],
  ['batch', { statements: [{ sql: 'INSERT INTO t VALUES (2)' }] }],
  ['subscribeCDC', {}],
  ['unsubscribeCDC', { subscriptionId: '1' }],
  ['getSchema', {}],
  ['ping', {}],
  ['getStats', {}],
];

test('an unknown request field is INVALID_REQUEST naming it, for every method, over HTTP and WebSocket', async () => {
  await query(d.port, 'uf', 'CREATE TABLE t(x)');
  const ws = await WsRpc.open(d.port, '/v1/db/uf/rpc');
  const wsUnbound = await WsRpc.open(d.port, '/v1/rpc');
  let transports;
  try {
    transports = [
      ['HTTP /v1/db/uf/rpc', (m, p) => call(d.port, '/v1/db/uf/rpc', m, p), {}],
      ['HTTP /v1/rpc', (m, p) => call(d.port, '/v1/rpc', m, p), { database: 'uf' }],
      ['WebSocket /v1/db/uf/rpc', (m, p) => ws.call(m, p), {}],
      ['WebSocket /v1/rpc', (m, p) => wsUnbound.call(m, p), { database: 'uf' }],
    ];
    for (const [how, send, extra] of transports) {
      for (const [method, params] of unknownFieldCases) {
        const what = `${how} ${method}`;
        const r = await send(method, { ...params, ...extra, branch: 'feature-x' });
        assert.ok(r.error, `${what}: refused, not ${JSON.stringify(r)}`);
        assert.equal(r.error.code, 'INVALID_REQUEST', what);
        assert.match(r.error.message, new RegExp(`unknown field "branch" in ${method}\\b`), what);
        // The same request without it is not refused for its fields (a
        // stream over HTTP answers NDJSON, which call() does not parse).
        const ok = await send(method, { ...params, ...extra });
        assert.doesNotMatch(ok?.error?.message ?? '', /unknown field/, `${what} without the field`);
        if (method === 'beginTransaction' && ok.result) await send('rollback', { ...extra, transactionId: ok.result.transactionId });
        if (method === 'subscribeCDC' && ok.result) await send('unsubscribeCDC', { ...extra, subscriptionId: ok.result.subscriptionId });
      }
    }
    // unsubscribeCDC's "database", when given, is the subscription's.
    const sub = await wsUnbound.ok('subscribeCDC', { database: 'uf' });
    const other = await wsUnbound.call('unsubscribeCDC', { database: 'other', subscriptionId: sub.subscriptionId });
    assert.equal(other.error?.code, 'INVALID_REQUEST');
    assert.match(other.error.message, /"database" differs/);
    await wsUnbound.ok('unsubscribeCDC', { database: 'uf', subscriptionId: sub.subscriptionId });
    // Members other code paths might have read, and a batch's statements.
    const more = [
      ['beginTransaction', { isolation: 'serializable' }, 'isolation'],
      ['beginTransaction', { transactionId: 'abc' }, 'transactionId'],
      ['queryStream', { sql: 'SELECT 1', asOf: { lsn: 0 } }, 'asOf'],
      ['getStats', { transactionId: 'abc' }, 'transactionId'],
      ['batch', { statements: [{ sql: 'INSERT INTO t VALUES (3)' }, { sql: 'SELECT 1', branch: 'x' }] }, 'branch', 'batch statements\\[1\\]'],
    ];
    for (const [method, params, field, where = method] of more) {
      const r = await call(d.port, '/v1/db/uf/rpc', method, params);
      assert.equal(r.error?.code, 'INVALID_REQUEST', `${method} ${field}: ${JSON.stringify(r)}`);
      assert.match(r.error.message, new RegExp(`unknown field "${field}" in ${where}`));
    }
    // The JSON-RPC envelope, and the body of the query route.
    const env = await post(d.port, '/v1/db/uf/rpc', { id: 7, method: 'ping', params: {}, branch: 'x' });
    assert.equal(env.json.id, 7);
    assert.equal(env.json.error?.code, 'INVALID_REQUEST');
    assert.match(env.json.error.message, /unknown field "branch" in the request/);
    const q = await post(d.port, '/v1/db/uf/query', { sql: 'INSERT INTO t VALUES (4)', branch: 'x' });
    assert.equal(q.status, 400);
    assert.equal(q.json.error.code, 'INVALID_REQUEST');
    assert.match(q.json.error.message, /unknown field "branch" in query/);
    // No refused write reached the database: the rows are those of query
    // and batch without the field, once per transport.
    assert.deepEqual((await query(d.port, 'uf', 'SELECT x, count(*) FROM t GROUP BY x')).rows,
      [[1, transports.length], [2, transports.length]]);
  } finally {
    await ws.close();
    await wsUnbound.close();
  }
});

test('bad input over WebSocket: error objects, the session goes on', async () => {
  const ws = await WsRpc.open(d.port, '/v1/db/badws/rpc');
  let m = await ws.raw('{"id":1,"method":');
  assert.equal(m.error.code, 'INVALID_REQUEST');
  assert.equal(m.id, null);
  m = await ws.raw('{"id":true,"method":"ping"}');
  assert.equal(m.error.code, 'INVALID_REQUEST');
  let r = await ws.call('query', { sql: 7 });
  assert.equal(r.error.code, 'INVALID_REQUEST');
  r = await ws.call('nope', {});
  assert.match(r.error.message, /unknown method/);
  r = await ws.call('query', { sql: 'SELECT 1 + 1 AS two' });
  assert.deepEqual(r.result.rows, [[2]]);
  await ws.close();
});

test('the sandbox refuses what reaches outside the database', async () => {
  const refused = [
    ["ATTACH DATABASE '/tmp/x.db' AS x", 'FORBIDDEN'],
    ['DETACH DATABASE main', 'FORBIDDEN'],
    ['PRAGMA journal_mode = DELETE', 'FORBIDDEN'],
    ['PRAGMA synchronous = OFF', 'FORBIDDEN'],
    ['PRAGMA writable_schema = ON', 'FORBIDDEN'],
    ["SELECT load_extension('/tmp/evil.so')", null], // not a function we offer
    ['BEGIN', 'FORBIDDEN'],
    ['COMMIT', 'FORBIDDEN'],
    ["VACUUM INTO '/tmp/copy.db'", 'FORBIDDEN'],
    ['CREATE TEMP TABLE tt(x)', 'FORBIDDEN'],
  ];
  for (const [sql, code] of refused) {
    const r = await query(d.port, 'sandbox', sql, undefined, { raw: true });
    assert.ok(r.status >= 400, `${sql} was allowed: ${r.text}`);
    if (code) assert.equal(r.json.error.code, code, `${sql}: ${r.text}`);
  }
  // What is allowed still works.
  await query(d.port, 'sandbox', 'CREATE TABLE t(id INTEGER PRIMARY KEY, x)');
  const info = await query(d.port, 'sandbox', 'PRAGMA table_info(t)');
  assert.equal(info.rows.length, 2);
  const fk = await query(d.port, 'sandbox', 'PRAGMA foreign_keys');
  assert.deepEqual(fk.rows, [[1]]);
  const uv = await query(d.port, 'sandbox', 'PRAGMA user_version = 7; PRAGMA user_version');
  assert.deepEqual(uv.rows, [[7]]);
});

test('statements stop at query_timeout with TIMEOUT', async () => {
  const t0 = Date.now();
  const r = await query(d.port, 'slow', 'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n',
    undefined, { raw: true });
  assert.equal(r.json.error.code, 'TIMEOUT');
  assert.equal(r.status, 408);
  assert.ok(Date.now() - t0 < 5000);
  const ok = await query(d.port, 'slow', 'SELECT 1');
  assert.deepEqual(ok.rows, [[1]], 'the database serves on');
});

test('results past max_result_bytes stop with RESOURCE_EXHAUSTED', async () => {
  const r = await query(d.port, 'big', "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) SELECT i, printf('%0100d', i) FROM n",
    undefined, { raw: true });
  assert.equal(r.json.error.code, 'RESOURCE_EXHAUSTED');
  assert.match(r.json.error.message, /max_result/);
});

test('SQLite limits from [engine]: columns and expression depth', async () => {
  const cols = Array.from({ length: 13 }, (_, i) => `${i} AS c${i}`).join(', ');
  let r = await query(d.port, 'limits', `SELECT ${cols}`, undefined, { raw: true });
  assert.ok(r.status >= 400, r.text);
  assert.match(r.json.error.message, /too many columns/);
  r = await query(d.port, 'limits', `SELECT ${Array(60).fill('1').join(' + ')}`, undefined, { raw: true });
  assert.ok(r.status >= 400, r.text);
  assert.match(r.json.error.message, /depth/);
  r = await query(d.port, 'limits', `SELECT ${Array(20).fill('1').join(' + ')} AS ok`);
  assert.deepEqual(r.rows, [[20]]);
});

test('batch: atomic by default, per-statement errors when not', async () => {
  const path = '/v1/db/batch/rpc';
  await query(d.port, 'batch', 'CREATE TABLE t(x UNIQUE)');
  let r = await call(d.port, path, 'batch', { statements: [
    { sql: 'INSERT INTO t VALUES (?)', params: [1] },
    { sql: 'INSERT INTO t VALUES (?)', params: [1] },
  ] });
  assert.equal(r.error.code, 'CONSTRAINT_VIOLATION');
  assert.match(r.error.message, /statement 1/);
  assert.deepEqual((await query(d.port, 'batch', 'SELECT count(*) FROM t')).rows, [[0]], 'all or nothing');
  r = await call(d.port, path, 'batch', { atomic: false, statements: [
    { sql: 'INSERT INTO t VALUES (?)', params: [1] },
    { sql: 'INSERT INTO t VALUES (?)', params: [1] },
    { sql: 'SELECT count(*) AS n FROM t' },
  ] });
  assert.equal(r.result.results.length, 3);
  assert.equal(r.result.results[1].error.code, 'CONSTRAINT_VIOLATION');
  assert.deepEqual(r.result.results[2].rows, [[1]]);
  assert.equal(typeof r.result.lsn, 'number');
});

test('getSchema, getStats, ping, and the unbound route', async () => {
  await query(d.port, 'meta', `CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT 'x', email TEXT UNIQUE);
    CREATE INDEX users_name ON users(name); CREATE VIEW v AS SELECT name FROM users;
    CREATE TRIGGER tr AFTER INSERT ON users BEGIN SELECT 1; END`);
  const s = (await call(d.port, '/v1/db/meta/rpc', 'getSchema', {})).result;
  assert.deepEqual(s.tables.map((t) => t.name), ['users']);
  const cols = s.tables[0].columns;
  assert.deepEqual(cols.map((c) => [c.name, c.type, c.notNull, c.primaryKey]),
    [['id', 'INTEGER', false, 1], ['name', 'TEXT', true, 0], ['email', 'TEXT', false, 0]]);
  assert.equal(cols[1].default, "'x'");
  assert.ok(s.indexes.some((i) => i.name === 'users_name'));
  assert.deepEqual(s.views.map((v) => v.name), ['v']);
  assert.deepEqual(s.triggers.map((t) => t.name), ['tr']);
  const st = (await call(d.port, '/v1/db/meta/rpc', 'getStats', {})).result;
  assert.equal(st.database.name, 'meta');
  for (const k of ['lsn', 'pages', 'bytes', 'statements', 'pageCacheHits']) assert.equal(typeof st.database[k], 'number', k);
  for (const k of ['actorsOpen', 'actorsHibernated', 'queuedMessages']) assert.equal(typeof st.server[k], 'number', k);
  const p = (await call(d.port, '/v1/db/meta/rpc', 'ping', {})).result;
  assert.equal(p.pong, true);
  // Unbound: methods take "database"; ping and getStats without one are the server's.
  const q = (await call(d.port, '/v1/rpc', 'query', { database: 'meta', sql: 'SELECT count(*) FROM users' })).result;
  assert.deepEqual(q.rows, [[0]]);
  const sp = (await call(d.port, '/v1/rpc', 'ping', {})).result;
  assert.equal(sp.pong, true);
  assert.equal(typeof sp.version, 'string');
  const ss = (await call(d.port, '/v1/rpc', 'getStats')).result;
  assert.ok(ss.server.actors >= 1);
});

test('GET /v1/db on a server with no databases is an empty list', async () => {
  const e = await startDosqld();
  try {
    const r = await fetch(`http://127.0.0.1:${e.port}/v1/db`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), []);
  } finally {
    await e.cleanup(); // fails on any sanitizer report
  }
});

test('GET /v1/db lists databases; DELETE drops one with its files', async () => {
  await query(d.port, 'dropme', 'CREATE TABLE t(x); INSERT INTO t VALUES (1)');
  const dir = path.join(d.dir, 'data', 'db', 'dropme');
  assert.ok(existsSync(path.join(dir, 'format')));
  assert.ok(existsSync(path.join(dir, 'wal')));
  let r = await fetch(`http://127.0.0.1:${d.port}/v1/db`);
  let list = await r.json();
  assert.ok(list.includes('dropme'));
  r = await fetch(`http://127.0.0.1:${d.port}/v1/db/dropme`, { method: 'DELETE' });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).dropped, true);
  assert.ok(!existsSync(dir), 'its files are gone');
  list = await (await fetch(`http://127.0.0.1:${d.port}/v1/db`)).json();
  assert.ok(!list.includes('dropme'));
  const again = await query(d.port, 'dropme', "SELECT count(*) FROM sqlite_schema WHERE name = 't'");
  assert.deepEqual(again.rows, [[0]], 'a new, empty database by that name');
});

test('queryStream: chunks over WebSocket, NDJSON over HTTP', async () => {
  await query(d.port, 'stream', "CREATE TABLE t(i INTEGER, s TEXT); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO t SELECT i, 'row ' || i FROM n");
  const ws = await WsRpc.open(d.port, '/v1/db/stream/rpc');
  const res = await ws.ok('queryStream', { sql: 'SELECT i, s FROM t ORDER BY i', chunkSize: 64 });
  assert.equal(res.rowCount, 1000);
  const chunks = ws.notes.filter((n) => n.method === 'stream.chunk');
  assert.equal(chunks.length, Math.ceil(1000 / 64));
  assert.deepEqual(chunks[0].params.columns, ['i', 's']);
  assert.equal(chunks[1].params.columns, undefined, 'columns come once');
  const rows = chunks.flatMap((c) => c.params.rows);
  assert.deepEqual(rows.map((r) => r[0]), Array.from({ length: 1000 }, (_, i) => i + 1));
  chunks.forEach((c, i) => assert.equal(c.params.seq, i));
  const done = ws.notes.find((n) => n.method === 'stream.complete');
  assert.equal(done.params.rowCount, 1000);
  assert.equal(done.params.streamId, chunks[0].params.streamId);
  // A write cannot be streamed; an error mid-way ends with the error reply.
  const w = await ws.call('queryStream', { sql: 'DELETE FROM t' });
  assert.equal(w.error.code, 'INVALID_REQUEST');
  const bad = await ws.call('queryStream', { sql: 'SELECT * FROM t', chunkSize: 0 });
  assert.match(bad.error.message, /chunkSize/);
  await ws.close();

  const r = await fetch(`http://127.0.0.1:${d.port}/v1/db/stream/rpc`, {
    method: 'POST', body: JSON.stringify({ id: 's1', method: 'queryStream', params: { sql: 'SELECT i FROM t WHERE i <= 250', chunkSize: 100 } }),
  });
  assert.equal(r.headers.get('content-type'), 'application/x-ndjson');
  const lines = (await r.text()).trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.method ?? 'reply'), ['stream.chunk', 'stream.chunk', 'stream.chunk', 'stream.complete', 'reply']);
  assert.equal(lines[4].id, 's1');
  assert.equal(lines[4].result.rowCount, 250);
  const inBatch = await post(d.port, '/v1/db/stream/rpc', [{ id: 1, method: 'queryStream', params: { sql: 'SELECT 1' } }]);
  assert.match(inBatch.json[0].error.message, /lone request/);
  const onQuery = await post(d.port, '/v1/db/stream/rpc', { method: 'queryStream', params: { sql: 'SELECT 1' } });
  assert.equal(onQuery.status, 204, 'a notification gets no reply');
});

test('a slow WebSocket reader gets a long stream without the server buffering it all', async () => {
  // (streams: a query_timeout of 30 s for these statements; in pieces all the same)
  await query(streams.port, 'slowread', 'CREATE TABLE t(s TEXT)');
  for (let k = 0; k < 4; k++) {
    await query(streams.port, 'slowread', `WITH RECURSIVE n(i) AS (SELECT ${k * 5000 + 1} UNION ALL SELECT i + 1 FROM n WHERE i < ${(k + 1) * 5000}) INSERT INTO t SELECT printf('%0200d', i) FROM n`);
  }
  const ws = await WsRpc.open(streams.port, '/v1/db/slowread/rpc');
  ws.ws.pause(); // read nothing for a while
  const p = ws.call('queryStream', { sql: 'SELECT s FROM t', chunkSize: 200 }, 30000);
  await new Promise((r) => setTimeout(r, 500));
  ws.ws.resume();
  const res = await p;
  assert.ok(res.result, JSON.stringify(res));
  assert.equal(res.result.rowCount, 20000);
  const rows = ws.notes.filter((n) => n.method === 'stream.chunk').reduce((a, c) => a + c.params.rows.length, 0);
  assert.equal(rows, 20000);
  await ws.close();
});

test('a client that hangs up mid-stream frees the database (HTTP and WebSocket)', async () => {
  // (streams: a query_timeout of 30 s for these statements; in pieces all the same)
  await query(streams.port, 'hangup', 'CREATE TABLE t(s TEXT)');
  for (let k = 0; k < 4; k++) {
    await query(streams.port, 'hangup', `WITH RECURSIVE n(i) AS (SELECT ${k * 5000 + 1} UNION ALL SELECT i + 1 FROM n WHERE i < ${(k + 1) * 5000}) INSERT INTO t SELECT printf('%0200d', i) FROM n`);
  }
  // HTTP: read the head of the NDJSON response, then hang up.
  const c = await Raw.connect(streams.port);
  const body = JSON.stringify({ id: 1, method: 'queryStream', params: { sql: 'SELECT s FROM t', chunkSize: 50 } });
  c.write(`POST /v1/db/hangup/rpc HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  await c.waitFor(() => c.buf.length > 0, 5000, 'the stream to start');
  c.destroy();
  const t0 = Date.now();
  const r = await query(streams.port, 'hangup', 'SELECT count(*) FROM t');
  assert.deepEqual(r.rows, [[20000]], 'the stream no longer holds the database');
  assert.ok(Date.now() - t0 < 5000);
  // WebSocket: the same, with a close in the middle of the chunks.
  const ws = await WsRpc.open(streams.port, '/v1/db/hangup/rpc');
  ws.ws.send(JSON.stringify({ id: 2, method: 'queryStream', params: { sql: 'SELECT s FROM t', chunkSize: 50 } }));
  for (let i = 0; i < 500 && ws.notes.length === 0; i++) await new Promise((res) => setTimeout(res, 10));
  assert.ok(ws.notes.length > 0, 'chunks arrived');
  ws.ws.terminate();
  const r2 = await query(streams.port, 'hangup', 'SELECT count(*) FROM t');
  assert.deepEqual(r2.rows, [[20000]]);
});

test('an HTTP client that never reads its stream holds back no one', { timeout: 120000 }, async () => {
  // 48 MB of rows: far more than send_queue_limit and the loopback socket
  // buffers (which autotune to several MB) can take.
  // (streams: a query_timeout of 30 s for these statements; in pieces all the same)
  await query(streams.port, 'noread', 'CREATE TABLE t(s TEXT)');
  for (let k = 0; k < 30; k++) {
    await query(streams.port, 'noread', "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) INSERT INTO t SELECT printf('%0400d', i) FROM n");
  }
  const heap = async () => (await within(3000, call(streams.port, '/v1/db/noread/rpc', 'getStats', {}), 'getStats beside the stream')).result.server.heap.inUse;
  const before = await heap();
  const c = await Raw.connect(streams.port);
  c.sock.pause(); // read nothing
  const body = JSON.stringify({ id: 1, method: 'queryStream', params: { sql: 'SELECT s FROM t', chunkSize: 100 } });
  c.write(`POST /v1/db/noread/rpc HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  await new Promise((res) => setTimeout(res, 500));
  const grown = (await heap()) - before;
  assert.ok(grown < 24e6, `the stream ran ahead of its reader: ${grown} more bytes in use`);
  // Other databases, and the stream's own database, go on meanwhile: the
  // stream reads a snapshot on a connection of its own.
  assert.deepEqual((await query(streams.port, 'elsewhere', 'SELECT 1')).rows, [[1]]);
  const r = await within(3000, query(streams.port, 'noread', 'SELECT count(*) FROM t'), 'a read beside the stream');
  assert.deepEqual(r.rows, [[120000]]);
  const w = await within(3000, query(streams.port, 'noread', "INSERT INTO t VALUES ('x')"), 'a write beside the stream');
  assert.equal(w.rowsAffected, 1);
  c.destroy();
});

test('a stream reads the database as of its start while others write', async () => {
  await query(streams.port, 'snapstream', 'CREATE TABLE t(s TEXT)');
  for (let k = 0; k < 4; k++) {
    await query(streams.port, 'snapstream', `WITH RECURSIVE n(i) AS (SELECT ${k * 5000 + 1} UNION ALL SELECT i + 1 FROM n WHERE i < ${(k + 1) * 5000}) INSERT INTO t SELECT printf('%0200d', i) FROM n`);
  }
  const ws = await WsRpc.open(streams.port, '/v1/db/snapstream/rpc');
  ws.ws.pause(); // read nothing for a while: the stream waits for room
  const p = ws.call('queryStream', { sql: 'SELECT s FROM t', chunkSize: 200 }, 30000);
  await new Promise((r) => setTimeout(r, 300));
  const del = await within(3000, query(streams.port, 'snapstream', 'DELETE FROM t WHERE rowid % 2 = 0'), 'a write beside the stream');
  assert.equal(del.rowsAffected, 10000);
  ws.ws.resume();
  const res = await p;
  assert.equal(res.result.rowCount, 20000, 'the stream saw the rows as of its start');
  assert.ok(res.result.lsn < del.lsn);
  await ws.close();
});
