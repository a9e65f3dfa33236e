// Review 2: sequences, lookup vindexes, keyspace CDC and batches — inputs
// where the keyspace's answer differs from one database's (the same
// statements on a plain database are the reference).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir } from './lib/harness.mjs';
import { post, WsRpc } from './lib/rpc.mjs';

const ADMIN = 'admin-token-0123456789';
const vschema = {
  keyspaces: {
    rv: {
      shards: ['rv-0', 'rv-1', 'rv-2', 'rv-3'],
      vindexes: {
        h: { type: 'hash' },
        by_email: { type: 'lookup_unique', table: 'user_email', from: 'email', to: 'user_id' },
        by_ci: { type: 'lookup_unique', table: 'ci_email', from: 'email', to: 'ci_id' },
      },
      tables: {
        orders: { column: 'customer_id', vindex: 'h', auto_increment: { column: 'id', sequence: 'oseq' } },
        oseq: { type: 'sequence', shard: 'rv-1', start: 1000, cache: 3 },
        users: { column: 'id', vindex: 'h', lookups: [{ column: 'email', vindex: 'by_email' }] },
        user_email: { column: 'email', vindex: 'h' },
        ci: { column: 'id', vindex: 'h', lookups: [{ column: 'email', vindex: 'by_ci' }] },
        ci_email: { column: 'email', vindex: 'h' },
        logs: { type: 'unsharded', shard: 'rv-0', auto_increment: { column: 'id', sequence: 'lseq' } },
        lseq: { type: 'sequence', shard: 'rv-0' },
      },
    },
  },
};

let root, d;
const conf = (vsPath) => `[sharding]\nvschema = ${vsPath}\n[auth]\ntoken = ${ADMIN} admin\n`;
const auth = { authorization: `Bearer ${ADMIN}` };
const ks = (sql, params) => post(d.port, '/v1/ks/rv/query', params ? { sql, params } : { sql }, auth);
const db = (name, sql, params) => post(d.port, `/v1/db/${name}/query`, params ? { sql, params } : { sql }, auth);
const rpc = (route, method, params) => post(d.port, route, { id: 1, method, params }, auth);
const both = async (sql, params) => [await ks(sql, params), await db('plain', sql, params)];

async function ok(p) {
  const r = await p;
  assert.equal(r.status, 200, r.text);
  return r.json;
}

before(async () => {
  root = tempDir('dosqld-ksr-');
  const vsPath = path.join(root, 'vschema.json');
  writeFileSync(vsPath, JSON.stringify(vschema));
  d = await startDosqld({ conf: conf(vsPath), dataDir: path.join(root, 'data') });
  const ddl = [
    'CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, amount INTEGER)',
    "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT DEFAULT 'none@x', name TEXT)",
    'CREATE TABLE user_email(email TEXT PRIMARY KEY, user_id INTEGER NOT NULL)',
    'CREATE TABLE ci(id INTEGER PRIMARY KEY, email TEXT COLLATE NOCASE, name TEXT)',
    'CREATE TABLE ci_email(email TEXT PRIMARY KEY, ci_id INTEGER NOT NULL)',
    'CREATE TABLE logs(id INTEGER PRIMARY KEY, msg TEXT)',
  ];
  for (const s of ddl) {
    await ok(ks(s));
    await ok(db('plain', s));
  }
});

after(async () => {
  if (d) await d.cleanup();
  if (root) rmSync(root, { recursive: true, force: true });
});

// 1. The rows affected of an INSERT / DELETE on a table with a lookup
// vindex count the lookup table's rows too.
test('review2: rowsAffected of writes to a table with a lookup vindex counts only its own rows', async () => {
  const [a, b] = await both("INSERT INTO users(id, email, name) VALUES (1, 'a@x', 'a')");
  assert.equal(a.status, 200, a.text);
  assert.equal(a.json.rowsAffected, b.json.rowsAffected, `INSERT: keyspace ${a.text} vs one database ${b.text}`);
  const [c, e] = await both('DELETE FROM users WHERE id = 1');
  assert.equal(c.status, 200, c.text);
  assert.equal(c.json.rowsAffected, e.json.rowsAffected, `DELETE: keyspace ${c.text} vs one database ${e.text}`);
});

// 2. A looked-up column declared COLLATE NOCASE: a read by another
// spelling finds no lookup row and goes to "any shard".
test('review2: a lookup column with COLLATE NOCASE finds its row by any spelling, as one database does', async () => {
  for (let i = 1; i <= 8; i++) {
    const [a] = await both('INSERT INTO ci(id, email, name) VALUES (?, ?, ?)', [i, `e${i}@x`, `n${i}`]);
    assert.equal(a.status, 200, a.text);
  }
  for (let i = 1; i <= 8; i++) {
    const sql = 'SELECT id, name FROM ci WHERE email = ?';
    const [a, b] = await both(sql, [`E${i}@X`]);
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(a.json.rows, b.json.rows, `E${i}@X`);
  }
});

// 3. A parameter bound to NULL for the auto_increment column: no value
// from the sequence; each shard numbers the row itself.
test('review2: auto_increment column given NULL through a parameter gets a sequence value, unique', async () => {
  const ids = [];
  for (let c = 1; c <= 8; c++) {
    const r = await ok(ks('INSERT INTO orders(id, customer_id, amount) VALUES (?, ?, ?) RETURNING id', [null, c, c]));
    ids.push(r.rows[0][0]);
  }
  assert.equal(new Set(ids).size, ids.length, `ids given twice: ${JSON.stringify(ids)}`);
  assert.ok(ids.every((x) => x >= 1000), `ids not from the sequence (start 1000): ${JSON.stringify(ids)}`);
});

// 4. INSERT forms auto_fill passes by (INSERT ... SELECT, DEFAULT VALUES,
// WITH ... INSERT) on an unsharded table: SQLite numbers the row, and a
// later value of the sequence collides with it.
test('review2: INSERT ... SELECT / DEFAULT VALUES into an auto_increment table never collide with the sequence', async () => {
  // Forms whose rows SQLite would number itself are refused, whole.
  for (const sql of ["INSERT INTO logs(msg) SELECT 'sel'", 'INSERT INTO logs DEFAULT VALUES',
    "WITH w AS (SELECT 1) INSERT INTO logs(msg) VALUES ('with')", "INSERT INTO main.logs(msg) VALUES ('main')"]) {
    const a = await post(d.port, '/v1/ks/rv/query', { sql }, auth);
    assert.equal(a.status, 400, `${sql}: ${a.text}`);
    assert.match(a.json.error.message, /sequence|WITH/, sql);
  }
  for (let i = 0; i < 3; i++) {
    const [a, b] = await both('INSERT INTO logs(msg) VALUES (?)', ['seq']);
    assert.equal(b.status, 200, b.text);
    assert.equal(a.status, 200, `the sequence's value collides with a row SQLite numbered: ${a.text}`);
  }
});

// 5. A looked-up column left out of the INSERT takes its DEFAULT: the row
// has an email, but no lookup row; reads by it miss the row.
test('review2: a lookup column filled by its DEFAULT is found by reads, and stays unique', async () => {
  // Leaving out a lookup column that has a default is refused (its
  // lookup row would be missing); given, it is kept in step.
  const a = await post(d.port, '/v1/ks/rv/query', { sql: 'INSERT INTO users(id, name) VALUES (?, ?)', params: [21, 'dflt21'] }, auth);
  assert.equal(a.status, 400, a.text);
  assert.match(a.json.error.message, /leaves out lookup column 'email', which has a default/);
  const [w] = await both("INSERT INTO users(id, name, email) VALUES (21, 'dflt21', 'none@x')");
  assert.equal(w.status, 200, w.text);
  const [r, p] = await both("SELECT id, name FROM users WHERE email = 'none@x' ORDER BY id");
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.rows, p.json.rows, 'a read by the default email');
});

// 6. Named parameters with a sequence; an atomic batch with sequence
// INSERTs and a lookup INSERT.
test('review2: an atomic batch with sequence and lookup INSERTs answers rowsAffected as one database (named params too)', async () => {
  const n = await post(d.port, '/v1/ks/rv/query', { sql: 'INSERT INTO orders(customer_id, amount) VALUES (:c, :a), (:c, :a) RETURNING id, customer_id', params: { c: 31, a: 5 } }, auth);
  assert.equal(n.status, 200, n.text);
  assert.equal(n.json.rows.length, 2);
  assert.notEqual(n.json.rows[0][0], n.json.rows[1][0]);
  const st = [
    { sql: 'INSERT INTO orders(customer_id, amount) VALUES (?, 1)', params: [41] },
    { sql: 'INSERT INTO orders(customer_id, amount) VALUES (?, 2), (?, 3)', params: [42, 43] },
    { sql: "INSERT INTO users(id, email, name) VALUES (51, 'b51@x', 'b')" },
  ];
  const r = await rpc('/v1/ks/rv/rpc', 'batch', { statements: st });
  const p = await rpc('/v1/db/plain/rpc', 'batch', { statements: st });
  assert.ok(r.json.result, r.text);
  assert.deepEqual(r.json.result.results.map((x) => x.rowsAffected), p.json.result.results.map((x) => x.rowsAffected), r.text);
});

// 7. CDC of a keyspace: a subscription refused (one shard's part cannot
// start) sends no events afterwards.
test('review2: a keyspace CDC subscription that is refused sends no cdc notifications', async () => {
  const c = await WsRpc.open(d.port, '/v1/ks/rv/rpc', { headers: auth });
  try {
    const sub = await c.call('subscribeCDC', { fromPosition: { 'rv-0': 0, 'rv-1': 0, 'rv-2': 0, 'rv-3': 1e12 } });
    await new Promise((res) => setTimeout(res, 500));
    const notes = c.notes.filter((x) => x.method === 'cdc');
    if (sub.error) assert.equal(notes.length, 0, `refused (${sub.error.message}) yet ${notes.length} cdc notifications came`);
    else assert.fail(`subscribed from a position past the end: ${JSON.stringify(sub)}`);
  } finally {
    c.close();
  }
});

// 8. Session closed while a keyspace subscription starts.
test('review2: closing the connection while a keyspace CDC subscription starts', async () => {
  for (let i = 0; i < 20; i++) {
    const c = await WsRpc.open(d.port, '/v1/ks/rv/rpc', { headers: auth });
    c.ws.send(JSON.stringify({ id: 1, method: 'subscribeCDC', params: i % 2 ? {} : { fromPosition: { 'rv-3': 1e12 } } }));
    c.close();
  }
  await new Promise((res) => setTimeout(res, 300));
  assert.equal((await ok(ks('SELECT count(*) FROM orders WHERE customer_id = 1'))).rows.length, 1);
});

// 9. (Sanitizer build) An INSERT without parameters that takes sequence
// values: seq_fill copies req->params (NULL) with memcpy — undefined
// behaviour; the UBSan build dies at router.c seq_fill.
test('review2: an INSERT without params taking sequence values (run under SANITIZE=address,undefined)', async () => {
  const r = await ok(ks('INSERT INTO orders(customer_id, amount) VALUES (77, 1) RETURNING id'));
  assert.equal(r.rows.length, 1);
  assert.equal((await ok(ks('SELECT count(*) FROM orders WHERE customer_id = 77'))).rows[0][0], 1);
});
