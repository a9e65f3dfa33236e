// Hostile tests of dosqld's Hrana (libSQL's protocol): malformed and
// adversarial pipelines and WebSocket messages, with raw fetch and a raw
// `ws`, each a bug that was found here (see the commit that fixed it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { createClient } from '@libsql/client';
import { startDosqld, sleep, within } from '../integration/lib/harness.mjs';

const require = createRequire(import.meta.url);
const WebSocket = require('ws');

const WRITE = 'hostile-write-token-0123456789';
const READ = 'hostile-read-token-0123456789';

let d;
before(async () => {
  d = await startDosqld({
    conf: `[auth]
token = ${WRITE} write
token = ${READ} read
[rpc]
hrana_stream_timeout = 2s
`,
  });
});
after(async () => { await d?.cleanup(); });

async function pipeline(db, body, token = WRITE) {
  const r = await fetch(`${d.url}/v1/db/${db}/v2/pipeline`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: r.status, body: json };
}

const exec = (sql, args) => ({ type: 'execute', stmt: args ? { sql, args } : { sql } });
const cell = (res, row = 0, col = 0) => res.response.result.rows[row][col];

// A raw hrana2 WebSocket: send(obj), next() -> the next message (parsed).
async function wsOpen(db, { protocol = 'hrana2' } = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${d.port}/v1/db/${db}/`, protocol);
  const queue = [];
  const waiters = [];
  ws.on('message', (m) => {
    const msg = JSON.parse(m.toString());
    if (waiters.length) waiters.shift()(msg); else queue.push(msg);
  });
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  return {
    ws,
    send: (o) => ws.send(typeof o === 'string' ? o : JSON.stringify(o)),
    next: (ms = 5000) => within(ms, new Promise((res) => {
      if (queue.length) res(queue.shift()); else waiters.push(res);
    }), 'a WebSocket message'),
    close: () => ws.close(),
  };
}

test('http pipeline: the answer to a request that is not an object stays in its place', async () => {
  const r = await pipeline('order_nonobj', {
    baton: null,
    requests: [exec('SELECT 1'), 7, exec('SELECT 2'), { type: 'close' }],
  });
  assert.equal(r.status, 200);
  const types = r.body.results.map((x) => x.type);
  assert.deepEqual(types, ['ok', 'error', 'ok', 'ok']);
  assert.equal(cell(r.body.results[0]).value, '1');
  assert.equal(cell(r.body.results[2]).value, '2');
});

test('sequence: an unterminated last statement reaches SQLite, not left out', async () => {
  const r = await pipeline('seq_unterminated', {
    baton: null,
    requests: [
      exec('CREATE TABLE s (x)'),
      { type: 'sequence', sql: "INSERT INTO s VALUES (1); INSERT INTO s VALUES ('never closed" },
      { type: 'sequence', sql: 'INSERT INTO s VALUES (2); INSERT INTO s VALUES ([x' },
      // SQLite takes a comment left open as running to the end
      { type: 'sequence', sql: 'INSERT INTO s VALUES (3); INSERT INTO s VALUES (4) /* left open' },
      exec('SELECT group_concat(x) FROM s'),
      { type: 'close' },
    ],
  });
  assert.equal(r.status, 200);
  assert.equal(r.body.results[1].type, 'error', JSON.stringify(r.body.results[1]));
  assert.equal(r.body.results[2].type, 'error', JSON.stringify(r.body.results[2]));
  assert.equal(r.body.results[3].type, 'ok', JSON.stringify(r.body.results[3]));
  assert.equal(cell(r.body.results[4]).value, '1,2,3,4');
});

test('sequence: a long trigger body is split in linear time (the loop thread is not held)', async () => {
  // 20000 statements in one trigger's body (620 kB): read again at each
  // semicolon, this held every client of the server for seconds
  const body = 'INSERT INTO log VALUES (new.x);'.repeat(20000);
  const sql = `CREATE TABLE src (x); CREATE TABLE log (x);
    CREATE TRIGGER tr AFTER INSERT ON src BEGIN ${body} END;
    INSERT INTO src VALUES (5)`;
  const t0 = Date.now();
  const slow = pipeline('seq_linear', { baton: null, requests: [{ type: 'sequence', sql }, exec('SELECT count(*) FROM log'), { type: 'close' }] });
  // meanwhile another client is served
  await sleep(50);
  const t1 = Date.now();
  const other = await pipeline('seq_linear_other', { baton: null, requests: [exec('SELECT 1'), { type: 'close' }] });
  const otherMs = Date.now() - t1;
  const r = await slow;
  assert.equal(r.body.results[0].type, 'ok', JSON.stringify(r.body.results[0]).slice(0, 300));
  assert.equal(cell(r.body.results[1]).value, '20000');
  assert.equal(other.body.results[0].type, 'ok');
  assert.ok(otherMs < 1500, `another client waited ${otherMs} ms (the whole sequence took ${Date.now() - t0} ms)`);
});

test('sequence: split where SQLite ends a statement: strings, names, comments, CASE ... END, triggers', async () => {
  const sql = `CREATE TABLE "a;b" ([c;d] TEXT, \`e;f\` TEXT); -- a comment; with a semicolon
    /* another; */ INSERT INTO "a;b" VALUES ('x;y', 'it''s;');
    CREATE TABLE n (v);
    CREATE TEMPORARY TABLE IF NOT EXISTS never (x); -- refused, but only this one
    `;
  const r = await pipeline('seq_tricky', { baton: null, requests: [
    { type: 'sequence', sql },
    { type: 'sequence', sql: `CREATE TRIGGER t1 AFTER INSERT ON n BEGIN
        INSERT INTO "a;b" VALUES (CASE WHEN new.v > 0 THEN 'pos;' ELSE 'neg;' END, 'trg');
        UPDATE "a;b" SET \`e;f\` = 'end' WHERE [c;d] = 'none';
      END; INSERT INTO n VALUES (1); INSERT INTO n VALUES (-1)` },
    exec(`SELECT group_concat("c;d" || '|' || "e;f", ',') FROM "a;b"`),
    { type: 'close' },
  ] });
  assert.equal(r.status, 200);
  assert.equal(r.body.results[0].type, 'error'); // the TEMPORARY table, after the others ran
  assert.match(r.body.results[0].error.message, /temporary/i);
  assert.equal(r.body.results[1].type, 'ok', JSON.stringify(r.body.results[1]));
  assert.equal(cell(r.body.results[2]).value, "x;y|it's;,pos;|trg,neg;|trg");
});

test('sequence and batch: 100000 steps that end at once do not recurse (stack overflow)', async () => {
  const big = await startDosqld({ conf: '[rpc]\nmax_batch = 100000\n' });
  try {
    const post = async (requests) => {
      const r = await fetch(`${big.url}/v1/db/deep/v2/pipeline`, { method: 'POST', body: JSON.stringify({ baton: null, requests }) });
      return r.json();
    };
    const n = 100000;
    const seq = await post([{ type: 'sequence', sql: 'PRAGMA foreign_keys = ON;'.repeat(n) }, { type: 'close' }]);
    assert.equal(seq.results[0].type, 'ok');
    const steps = Array.from({ length: n }, (_, i) => (i % 2 ? { stmt: 5 } : { stmt: { sql: 'SELECT 1' }, condition: { type: 'not', cond: { type: 'is_autocommit' } } }));
    const batch = await post([{ type: 'batch', batch: { steps } }, { type: 'close' }]);
    const res = batch.results[0].response.result;
    assert.equal(res.step_results.length, n);
    assert.equal(res.step_errors.filter((e) => e !== null).length, n / 2);
  } finally {
    await big.cleanup();
  }
});

for (const scheme of ['http', 'ws']) {
  test(`${scheme}: a text value holding U+0000 goes and comes back whole (it broke the pipeline, or closed the WebSocket)`, async () => {
    const c = createClient({ url: `${scheme}://127.0.0.1:${d.port}/v1/db/nul_${scheme}/`, authToken: WRITE });
    try {
      await c.execute('CREATE TABLE t (v TEXT)');
      await c.execute({ sql: 'INSERT INTO t VALUES (?)', args: ['a\0b'] });
      const r = await c.execute({ sql: 'SELECT v, length(CAST(v AS BLOB)) AS n, ? AS p FROM t', args: ['\0'] });
      assert.deepEqual({ ...r.rows[0] }, { v: 'a\0b', n: 3, p: '\0' });
    } finally {
      c.close();
    }
  });
}

const SLOW = 'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000) SELECT count(*) FROM c';

// Another client's write, which waits for the write lock: it must come
// soon after the holder went.
async function writesSoon(db, ms = 3000) {
  const t0 = Date.now();
  const r = await pipeline(db, { baton: null, requests: [exec('INSERT INTO t VALUES (99)'), { type: 'close' }] });
  assert.equal(r.body.results[0].type, 'ok', JSON.stringify(r.body.results[0]));
  assert.ok(Date.now() - t0 < ms, `the write waited ${Date.now() - t0} ms`);
}

test('ws: the connection goes with a transaction open, a statement with the engine and requests queued behind it', async () => {
  await pipeline('ws_gone', { baton: null, requests: [exec('CREATE TABLE t (x)'), { type: 'close' }] });
  const w = await wsOpen('ws_gone');
  w.send({ type: 'hello', jwt: WRITE });
  assert.equal((await w.next()).type, 'hello_ok');
  w.send({ type: 'request', request_id: 1, request: { type: 'open_stream', stream_id: 7 } });
  assert.equal((await w.next()).type, 'response_ok');
  let id = 2;
  const req = (request) => w.send({ type: 'request', request_id: id++, request: { stream_id: 7, ...request } });
  req(exec('BEGIN IMMEDIATE'));
  req(exec('INSERT INTO t VALUES (1)'));
  assert.equal((await w.next()).type, 'response_ok');
  assert.equal((await w.next()).type, 'response_ok');
  req(exec(SLOW));
  for (let i = 0; i < 50; i++) req(exec('INSERT INTO t VALUES (2)'));
  req({ type: 'close_stream' });
  await sleep(100);
  w.ws.terminate();
  await writesSoon('ws_gone');
  const r = await pipeline('ws_gone', { baton: null, requests: [exec('SELECT group_concat(x) FROM t'), { type: 'close' }] });
  assert.equal(cell(r.body.results[0]).value, '99');
});

test('http: the client hangs up while its pipeline runs, in a transaction', async () => {
  await pipeline('http_gone', { baton: null, requests: [exec('CREATE TABLE t (x)'), { type: 'close' }] });
  const ac = new AbortController();
  const p = fetch(`${d.url}/v1/db/http_gone/v2/pipeline`, {
    method: 'POST', signal: ac.signal, headers: { authorization: `Bearer ${WRITE}` },
    body: JSON.stringify({ baton: null, requests: [exec('BEGIN IMMEDIATE'), exec('INSERT INTO t VALUES (1)'), exec(SLOW), exec('INSERT INTO t VALUES (2)')] }),
  }).catch((e) => e);
  await sleep(200);
  ac.abort();
  await p;
  await writesSoon('http_gone');
  const r = await pipeline('http_gone', { baton: null, requests: [exec('SELECT group_concat(x) FROM t'), { type: 'close' }] });
  assert.equal(cell(r.body.results[0]).value, '99');
});

test('http: one baton used twice at once: one pipeline gets the stream, the other is refused', async () => {
  const first = await pipeline('baton_twice', { baton: null, requests: [exec('CREATE TABLE t (x)')] });
  const baton = first.body.baton;
  assert.match(baton, /^[0-9a-f]{32}$/);
  const [a, b] = await Promise.all([
    pipeline('baton_twice', { baton, requests: [exec(SLOW.replace('50000000', '2000000'))] }),
    pipeline('baton_twice', { baton, requests: [exec('SELECT 1')] }),
  ]);
  const statuses = [a.status, b.status].sort();
  assert.deepEqual(statuses, [200, 400]);
  const ok = a.status === 200 ? a : b;
  assert.notEqual(ok.body.baton, baton);
  // the old baton is spent, the new one is for this database only
  assert.equal((await pipeline('baton_twice', { baton, requests: [] })).status, 400);
  assert.equal((await pipeline('baton_other', { baton: ok.body.baton, requests: [] })).status, 400);
  const again = await pipeline('baton_twice', { baton: ok.body.baton, requests: [{ type: 'close' }] });
  assert.equal(again.status, 200);
  assert.equal(again.body.baton, null);
});

test('foreign keys off on a stream whose transaction ends by expiry, by the WebSocket going, by close: others keep them on', async () => {
  const db = 'fk_leak';
  const setup = await pipeline(db, { baton: null, requests: [
    exec('CREATE TABLE p (id INTEGER PRIMARY KEY)'),
    exec('CREATE TABLE c (pid INTEGER REFERENCES p (id))'),
    exec('INSERT INTO p VALUES (1)'),
    { type: 'close' },
  ] });
  assert.ok(setup.body.results.every((x) => x.type === 'ok'));
  const orphanRefused = async () => {
    const r = await pipeline(db, { baton: null, requests: [exec('INSERT INTO c VALUES (42)'), { type: 'close' }] });
    assert.equal(r.body.results[0].type, 'error', 'an orphan row went in: foreign keys were off for another client');
    assert.equal(r.body.results[0].error.code, 'SQLITE_CONSTRAINT');
  };
  // 1. HTTP: left idle past hrana_stream_timeout (2 s)
  const a = await pipeline(db, { baton: null, requests: [
    exec('PRAGMA foreign_keys = OFF'), exec('BEGIN'), exec('INSERT INTO c VALUES (7)'),
  ] });
  assert.ok(a.body.results.every((x) => x.type === 'ok'), JSON.stringify(a.body));
  await sleep(3000);
  await orphanRefused();
  // 2. WebSocket: the connection goes
  const w = await wsOpen(db);
  w.send({ type: 'hello', jwt: WRITE });
  await w.next();
  w.send({ type: 'request', request_id: 1, request: { type: 'open_stream', stream_id: 1 } });
  await w.next();
  for (const [i, sql] of ['PRAGMA foreign_keys = off', 'BEGIN', 'INSERT INTO c VALUES (8)'].entries()) {
    w.send({ type: 'request', request_id: 2 + i, request: { stream_id: 1, ...exec(sql) } });
    assert.equal((await w.next()).type, 'response_ok');
  }
  w.ws.terminate();
  await orphanRefused();
  // 3. HTTP: closed by its client, and off outside a transaction
  const b = await pipeline(db, { baton: null, requests: [exec('PRAGMA foreign_keys = 0'), exec('INSERT INTO c VALUES (9)')] });
  assert.ok(b.body.results.every((x) => x.type === 'ok'), JSON.stringify(b.body));
  await orphanRefused();
  await pipeline(db, { baton: b.body.baton, requests: [{ type: 'close' }] });
  await orphanRefused();
  const rows = await pipeline(db, { baton: null, requests: [exec('SELECT group_concat(pid) FROM c'), { type: 'close' }] });
  assert.equal(cell(rows.body.results[0]).value, '9');
});

test('scopes: a read token cannot write through BEGIN, a later hello or a baton taken over', async () => {
  const db = 'scopes';
  await pipeline(db, { baton: null, requests: [exec('CREATE TABLE t (x)'), { type: 'close' }] });
  // HTTP, read token: BEGIN (which would take the write lock) is refused
  const r = await pipeline(db, { baton: null, requests: [exec('BEGIN IMMEDIATE'), exec('BEGIN'), exec('INSERT INTO t VALUES (1)'),
    exec('PRAGMA foreign_keys = OFF'), exec('BEGIN TRANSACTION READONLY'), exec('SELECT count(*) FROM t'), exec('COMMIT'), { type: 'close' }] }, READ);
  assert.deepEqual(r.body.results.map((x) => x.type === 'ok' ? 'ok' : x.error.code),
    ['FORBIDDEN', 'FORBIDDEN', 'FORBIDDEN', 'ok', 'ok', 'ok', 'ok', 'ok']);
  // HTTP: a write stream's baton, carried on with a read token
  const a = await pipeline(db, { baton: null, requests: [exec('BEGIN'), exec('INSERT INTO t VALUES (2)')] });
  const b = await pipeline(db, { baton: a.body.baton, requests: [exec('INSERT INTO t VALUES (3)'), exec('ROLLBACK')] }, READ);
  assert.equal(b.body.results[0].error?.code, 'FORBIDDEN');
  await pipeline(db, { baton: b.body.baton, requests: [{ type: 'close' }] });
  // WebSocket: a second hello with a read token
  const w = await wsOpen(db);
  w.send({ type: 'hello', jwt: WRITE });
  assert.equal((await w.next()).type, 'hello_ok');
  w.send({ type: 'request', request_id: 1, request: { type: 'open_stream', stream_id: 1 } });
  await w.next();
  w.send({ type: 'hello', jwt: READ });
  assert.equal((await w.next()).type, 'hello_ok');
  w.send({ type: 'request', request_id: 2, request: { stream_id: 1, ...exec('INSERT INTO t VALUES (4)') } });
  const m = await w.next();
  assert.equal(m.type, 'response_error');
  assert.equal(m.error.code, 'FORBIDDEN');
  // and a bad one: hello_error, the connection closes
  w.send({ type: 'hello', jwt: 'nope' });
  assert.equal((await w.next()).type, 'hello_error');
  w.close();
  const rows = await pipeline(db, { baton: null, requests: [exec('SELECT count(*) FROM t'), { type: 'close' }] });
  assert.equal(cell(rows.body.results[0]).value, '0');
});

test('transaction control as SQLite takes it: a transaction name, ROLLBACK TRANSACTION TO, comments between words', async () => {
  const r = await pipeline('txn_names', { baton: null, requests: [
    exec('CREATE TABLE t (x)'),
    exec('BEGIN TRANSACTION t1'), exec('INSERT INTO t VALUES (1)'), exec('ROLLBACK TRANSACTION t1'),
    exec('BEGIN /* c */ DEFERRED -- c\n TRANSACTION t2;'), exec('INSERT INTO t VALUES (2)'), exec('SAVEPOINT sp'),
    exec('INSERT INTO t VALUES (3)'), exec('ROLLBACK TRANSACTION TO SAVEPOINT sp'), exec('COMMIT TRANSACTION t2'),
    exec('END TRANSACTION t3'),
    exec('SELECT group_concat(x) FROM t'),
    { type: 'get_autocommit' },
    { type: 'close' },
  ] });
  const res = r.body.results;
  assert.deepEqual(res.slice(0, 11).map((x) => x.type === 'ok' ? 'ok' : x.error.message),
    ['ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'cannot commit - no transaction is active']);
  assert.equal(cell(res[11]).value, '2');
  assert.equal(res[12].response.is_autocommit, true);
});

test('max_result_bytes bounds a pipeline\'s results together, and a batch\'s (as it bounds a JSON-RPC batch\'s)', async () => {
  const small = await startDosqld({ conf: '[engine]\nmax_result_bytes = 1M\n' });
  try {
    const post = async (requests) => {
      const r = await fetch(`${small.url}/v1/db/budget/v2/pipeline`, { method: 'POST', body: JSON.stringify({ baton: null, requests }) });
      const text = await r.text();
      return { len: text.length, body: JSON.parse(text) };
    };
    const big = { sql: 'SELECT zeroblob(900000)' };
    // 40 x 0.9 MB under a 1 MB budget: one result, then RESOURCE_EXHAUSTED
    const p = await post(Array.from({ length: 40 }, () => ({ type: 'execute', stmt: big })));
    assert.ok(p.len < 3e6, `a ${p.len}-byte response`);
    assert.equal(p.body.results[0].type, 'ok');
    assert.ok(p.body.results.slice(1).every((x) => x.type === 'error' && x.error.code === 'RESOURCE_EXHAUSTED'));
    const b = await post([{ type: 'batch', batch: { steps: Array.from({ length: 40 }, () => ({ stmt: big })) } }, { type: 'close' }]);
    assert.ok(b.len < 3e6, `a ${b.len}-byte response`);
    const res = b.body.results[0].response.result;
    assert.equal(res.step_errors.filter((e) => e?.code === 'RESOURCE_EXHAUSTED').length, 39);
    // the next pipeline of the stream, and rows not kept (a sequence), have a budget of their own
    const s = await post([{ type: 'sequence', sql: 'SELECT zeroblob(900000); SELECT zeroblob(900000); SELECT zeroblob(900000)' }, { type: 'execute', stmt: big }]);
    assert.deepEqual(s.body.results.map((x) => x.type), ['ok', 'ok']);
    const again = await fetch(`${small.url}/v1/db/budget/v2/pipeline`, { method: 'POST', body: JSON.stringify({ baton: s.body.baton, requests: [{ type: 'execute', stmt: big }, { type: 'close' }] }) });
    assert.deepEqual((await again.json()).results.map((x) => x.type), ['ok', 'ok']);
  } finally {
    await small.cleanup();
  }
});
