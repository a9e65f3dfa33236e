// Keyspaces: a VSchema from the configuration, statements through
// /v1/ks/{ks}/query and /rpc answered as one database answers them (the
// same rows loaded in a plain database are the reference), clear
// refusals that change nothing, applyVSchema / getVSchema (validated,
// versioned, kept across a restart, admin only), a schema changed on the
// shards directly picked up.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir } from './lib/harness.mjs';
import { post, WsRpc } from './lib/rpc.mjs';

const ADMIN = 'admin-token-0123456789';
const READ = 'read-token-0123456789ab';
const vschema = {
  keyspaces: {
    shop: {
      shards: ['shop-0', 'shop-1', 'shop-2', 'shop-3'],
      vindexes: {
        h: { type: 'hash' },
        r: { type: 'range', boundaries: [1000, 5000, 9000] },
        by_email: { type: 'lookup_unique', table: 'member_email', from: 'email', to: 'member_id' },
      },
      tables: {
        orders: { column: 'customer_id', vindex: 'h', auto_increment: { column: 'id', sequence: 'order_seq' } },
        order_seq: { type: 'sequence', shard: 'shop-1', start: 100000, cache: 5 },
        customers: { column: 'id', vindex: 'h' },
        countries: { type: 'reference' },
        members: { column: 'id', vindex: 'h', lookups: [{ column: 'email', vindex: 'by_email' }] },
        member_email: { column: 'email', vindex: 'h' },
        settings: { type: 'unsharded', shard: 'shop-0' },
      },
    },
  },
};

let root, d;
const conf = (vsPath) => `[sharding]\nvschema = ${vsPath}\n[auth]\ntoken = ${ADMIN} admin\ntoken = ${READ} read\n`;
const auth = (t) => ({ authorization: `Bearer ${t}` });
const ks = (sql, params, token = ADMIN) => post(d.port, '/v1/ks/shop/query', params ? { sql, params } : { sql }, auth(token));
const db = (name, sql, params) => post(d.port, `/v1/db/${name}/query`, params ? { sql, params } : { sql }, auth(ADMIN));
const rpc = (route, method, params, token = ADMIN) => post(d.port, route, { id: 1, method, params }, auth(token));

async function ok(p) {
  const r = await p;
  assert.equal(r.status, 200, r.text);
  return r.json;
}

before(async () => {
  root = tempDir('dosqld-ks-');
  const vsPath = path.join(root, 'vschema.json');
  writeFileSync(vsPath, JSON.stringify(vschema));
  d = await startDosqld({ conf: conf(vsPath), dataDir: path.join(root, 'data') });
  const ddl = [
    'CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, region TEXT COLLATE NOCASE)',
    'CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, amount INTEGER, status TEXT, note)',
    'CREATE TABLE countries(code TEXT PRIMARY KEY, name TEXT)',
    'CREATE TABLE settings(k TEXT PRIMARY KEY, v)',
  ];
  for (const s of ddl) {
    await ok(ks(s)); // every shard
    await ok(db('plain', s));
  }
  const regions = ['north', 'South', 'east', 'WEST'];
  const statuses = ['new', 'paid', 'shipped'];
  for (let c = 1; c <= 40; c++) {
    const row = [c, `c${c % 9}`, c % 11 === 0 ? null : regions[c % 4]];
    await ok(ks('INSERT INTO customers VALUES (?, ?, ?)', row));
    await ok(db('plain', 'INSERT INTO customers VALUES (?, ?, ?)', row));
  }
  let id = 1;
  for (let c = 1; c <= 40; c++) {
    const rows = [];
    for (let k = 0; k < 1 + (c % 5); k++, id++)
      rows.push([id, c, (id * 37) % 500, statuses[id % 3], id % 4 === 0 ? null : id % 4 === 1 ? `n${id % 7}` : id % 7]);
    // One INSERT of several rows of one customer: one shard.
    const sql = `INSERT INTO orders VALUES ${rows.map(() => '(?, ?, ?, ?, ?)').join(', ')}`;
    await ok(ks(sql, rows.flat()));
    await ok(db('plain', sql, rows.flat()));
  }
  // Reference rows on every shard (written to each: cross-shard writes
  // are refused through the keyspace), unsharded ones on their shard.
  for (const name of ['plain', 'shop-0', 'shop-1', 'shop-2', 'shop-3'])
    await ok(db(name, "INSERT INTO countries VALUES ('new', 'New'), ('paid', 'Paid'), ('xx', NULL)"));
  for (const name of ['plain', 'shop-0'])
    await ok(db(name, "INSERT INTO settings VALUES ('a', 1), ('b', 'two')"));
});

after(async () => {
  if (d) await d.cleanup();
  if (root) rmSync(root, { recursive: true, force: true });
});

const canon = (rows) => rows.map((r) => JSON.stringify(r));

test('queries through the keyspace answer as one database with the same rows', async () => {
  const queries = [
    ['SELECT * FROM orders WHERE customer_id = 7 ORDER BY id', true],
    ['SELECT * FROM orders WHERE customer_id IN (3, 9, 27) ORDER BY id', true],
    ['SELECT count(*), sum(amount), min(amount), max(amount), avg(amount), count(note), total(amount) FROM orders', false],
    ['SELECT status, count(*) n, sum(amount) FROM orders GROUP BY status ORDER BY status', true],
    ['SELECT status, avg(amount) FROM orders WHERE amount > 100 GROUP BY status HAVING count(*) > 5 ORDER BY 2 DESC', true],
    ['SELECT id, amount FROM orders ORDER BY amount DESC, id LIMIT 10 OFFSET 5', true],
    ['SELECT DISTINCT status FROM orders ORDER BY 1', true],
    ['SELECT typeof(note), count(*) FROM orders GROUP BY 1 ORDER BY 1', true],
    ['SELECT c.name, count(*), sum(o.amount) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.name ORDER BY c.name', true],
    ['SELECT o.id, k.name FROM orders o LEFT JOIN countries k ON k.code = o.status ORDER BY o.id LIMIT 25', true],
    ['SELECT * FROM orders WHERE amount > (SELECT avg(amount) FROM orders) ORDER BY id', true],
    ['SELECT a.id, b.id FROM orders a JOIN orders b ON a.amount = b.amount AND a.id < b.id ORDER BY 1, 2', true],
    ['SELECT status FROM orders UNION SELECT code FROM countries ORDER BY 1', true],
    ['SELECT * FROM countries ORDER BY code', true],
    ['SELECT * FROM settings ORDER BY k', true],
    ['SELECT count(*) FROM customers c LEFT JOIN orders o ON o.customer_id = c.id WHERE o.id IS NULL', false],
    ['SELECT id FROM orders WHERE note IS NULL AND amount BETWEEN 100 AND 300', false],
    ['SELECT max(note), min(note) FROM orders', false],
  ];
  for (const [sql, ordered] of queries) {
    const want = await ok(db('plain', sql));
    const got = await ok(ks(sql));
    assert.deepEqual(got.columns, want.columns, sql);
    const [a, b] = [canon(want.rows), canon(got.rows)];
    if (!ordered) {
      a.sort();
      b.sort();
    }
    assert.deepEqual(b, a, sql);
  }
  // Bound parameters, positional and named.
  const p1 = await ok(ks('SELECT id FROM orders WHERE customer_id = ? AND amount >= ? ORDER BY id', [5, 0]));
  const w1 = await ok(db('plain', 'SELECT id FROM orders WHERE customer_id = ? AND amount >= ? ORDER BY id', [5, 0]));
  assert.deepEqual(p1.rows, w1.rows);
  const m = await (await fetch(`${d.url}/metrics`, { headers: auth(ADMIN) })).text();
  for (const plan of ['one', 'scatter', 'fetch', 'all'])
    assert.match(m, new RegExp(`dosqld_keyspace_statements_total\\{plan="${plan}"\\} [1-9]`), plan);
  const p2 = await ok(ks('SELECT count(*) FROM orders WHERE amount < :lim', { lim: 250 }));
  const w2 = await ok(db('plain', 'SELECT count(*) FROM orders WHERE amount < :lim', { lim: 250 }));
  assert.deepEqual(p2.rows, w2.rows);
});

test('writes: by key to their shard; across shards in one cross-shard transaction, all or nothing', async () => {
  const shardOf = async (c) => {
    for (let s = 0; s < 4; s++)
      if ((await ok(db(`shop-${s}`, 'SELECT count(*) FROM customers WHERE id = ?', [c]))).rows[0][0] > 0) return s;
    return -1;
  };
  const s1 = await shardOf(1);
  let other = 2;
  while ((await shardOf(other)) === s1) other++;
  const where = async (sql, params) => {
    const n = [];
    for (let s = 0; s < 4; s++) n.push((await ok(db(`shop-${s}`, sql, params))).rows[0][0]);
    return n;
  };
  const start = await ok(ks('SELECT count(*), sum(amount) FROM orders'));
  // Rows of two shards in one INSERT: each shard gets its own.
  const r = await ok(ks("INSERT INTO orders VALUES (9001, 1, 1, 'new', NULL), (9002, ?, 1, 'new', NULL)", [other]));
  assert.equal(r.rowsAffected, 2);
  const placed = await where('SELECT count(*) FROM orders WHERE id IN (9001, 9002)');
  assert.equal(placed[s1], 1);
  assert.equal(placed[await shardOf(other)], 1);
  // One shard's part fails (its primary key is taken there): nothing is
  // written anywhere, and the shards take writes again at once.
  const before = await ok(ks('SELECT count(*), sum(amount) FROM orders'));
  const f = await ks("INSERT INTO orders VALUES (9003, 1, 5, 'new', NULL), (9002, ?, 5, 'new', NULL)", [other]);
  assert.equal(f.status, 409, f.text);
  assert.equal(f.json.error.code, 'CONSTRAINT_VIOLATION');
  assert.match(f.json.error.message, /rolled back/);
  assert.deepEqual((await ok(ks('SELECT count(*), sum(amount) FROM orders'))).rows, before.rows);
  assert.deepEqual(await where('SELECT count(*) FROM orders WHERE id = 9003'), [0, 0, 0, 0]);
  // A scattered UPDATE and DELETE; a reference table on every shard.
  const u = await ok(ks('UPDATE orders SET note = \'bulk\' WHERE id >= 9001'));
  assert.equal(u.rowsAffected, 2);
  assert.equal((await ok(ks('DELETE FROM orders WHERE id >= 9001'))).rowsAffected, 2);
  await ok(ks("INSERT INTO countries VALUES ('zz', 'Zed')"));
  assert.deepEqual(await where("SELECT count(*) FROM countries WHERE code = 'zz'"), [1, 1, 1, 1]);
  await ok(ks("DELETE FROM countries WHERE code = 'zz'"));
  assert.deepEqual(await where("SELECT count(*) FROM countries WHERE code = 'zz'"), [0, 0, 0, 0]);
  assert.deepEqual((await ok(ks('SELECT count(*), sum(amount) FROM orders'))).rows, start.rows);
  // Still refused: moving a row, a key that is no value, unknown tables.
  const refusals = [
    ['UPDATE orders SET customer_id = 2 WHERE customer_id = 1', /moving a row/],
    ['INSERT INTO orders(id, amount) VALUES (9003, 1)', /key column 'customer_id'/],
    ['SELECT * FROM nowhere', /no such table/],
    ['PRAGMA table_info(orders)', /PRAGMA/],
    ['SELECT * FROM _dsq_prepared', /no such table/],
  ];
  for (const [sql, why] of refusals) {
    const x = await ks(sql);
    assert.ok(x.status >= 400, `${sql}: ${x.text}`);
    assert.match(x.json.error.message, why, sql);
  }
  // By key: one shard, and the row is on that shard only.
  const w1 = await ok(ks('UPDATE orders SET amount = amount + 1000 WHERE customer_id = 1 AND id = 1'));
  assert.equal(w1.rowsAffected, 1);
  assert.deepEqual((await where('SELECT count(*) FROM orders WHERE amount >= 1000')).sort(), [0, 0, 0, 1]);
  await ok(ks('UPDATE orders SET amount = amount - 1000 WHERE customer_id = 1 AND id = 1'));
  // A read-only token reads through the keyspace but does not write.
  assert.equal((await ks('SELECT count(*) FROM orders', undefined, READ)).status, 200);
  for (const sql of ['DELETE FROM orders WHERE customer_id = 1', 'DELETE FROM orders WHERE amount < 0']) {
    const w = await ks(sql, undefined, READ);
    assert.equal(w.status, 403, w.text);
  }
});

test('batch on a keyspace: atomic on one shard, or one cross-shard transaction; not atomic, each on its own', async () => {
  const sum = async () => (await ok(ks('SELECT sum(amount) FROM orders'))).rows[0][0];
  const total = await sum();
  // Two customers (shards): money moves between their first orders.
  const first = async (c) => (await ok(ks('SELECT min(id) FROM orders WHERE customer_id = ?', [c]))).rows[0][0];
  const [a, b] = [await first(1), await first(2)];
  const move = (n) => [
    { sql: 'UPDATE orders SET amount = amount - ? WHERE customer_id = 1 AND id = ?', params: [n, a] },
    { sql: 'UPDATE orders SET amount = amount + ? WHERE customer_id = 2 AND id = ?', params: [n, b] },
    { sql: 'SELECT amount FROM orders WHERE customer_id = 1 AND id = ?', params: [a] },
  ];
  const before = (await ok(ks('SELECT amount FROM orders WHERE id = ?', [a]))).rows[0][0];
  const r = await rpc('/v1/ks/shop/rpc', 'batch', { statements: move(5) });
  assert.ok(r.json.result, r.text);
  assert.equal(r.json.result.results.length, 3);
  assert.equal(r.json.result.results[0].rowsAffected, 1);
  assert.deepEqual(r.json.result.results[2].rows, [[before - 5]], 'a read in the transaction sees its writes');
  assert.equal(await sum(), total);
  // One statement fails (a CHECK on nothing here: a table that is not
  // there): nothing of the batch stays.
  const bad = await rpc('/v1/ks/shop/rpc', 'batch', {
    statements: [...move(7).slice(0, 2), { sql: "INSERT INTO orders VALUES (1, 1, 1, 'dup', NULL)" }],
  });
  assert.equal(bad.json.error.code, 'CONSTRAINT_VIOLATION', bad.text);
  assert.equal((await ok(ks('SELECT amount FROM orders WHERE id = ?', [a]))).rows[0][0], before - 5);
  await ok(ks('UPDATE orders SET amount = amount + 5 WHERE customer_id = 1 AND id = ?', [a]));
  await ok(ks('UPDATE orders SET amount = amount - 5 WHERE customer_id = 2 AND id = ?', [b]));
  assert.equal(await sum(), total);
  // A scattered read has no place in an atomic batch across shards.
  const sc = await rpc('/v1/ks/shop/rpc', 'batch', { statements: [move(1)[0], { sql: 'SELECT count(*) FROM orders' }] });
  assert.match(sc.json.error.message, /statement 2: an atomic batch on a keyspace takes statements that each go to one shard/);
  // Not atomic: each on its own, a failure in its place.
  const na = await rpc('/v1/ks/shop/rpc', 'batch', {
    atomic: false,
    statements: [{ sql: 'SELECT count(*) FROM orders' }, { sql: 'SELECT * FROM nowhere' }, { sql: 'SELECT 1 FROM countries LIMIT 1' }],
  });
  assert.equal(na.json.result.results.length, 3, na.text);
  assert.equal(na.json.result.results[1].error.code, 'TABLE_NOT_FOUND');
  assert.deepEqual(na.json.result.results[2].rows, [[1]]);
});

test('CDC of a keyspace: every shard in one stream, each event naming its shard; resumed from a position', async () => {
  const c = await WsRpc.open(d.port, '/v1/ks/shop/rpc', { headers: auth(ADMIN) });
  const until = async (pred, what) => {
    for (let i = 0; i < 200 && !pred(); i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(pred(), what);
  };
  const events = () => c.notes.filter((n) => n.method === 'cdc').map((n) => n.params);
  try {
    const sub = await c.call('subscribeCDC', { tables: ['orders'] });
    assert.ok(sub.result, JSON.stringify(sub));
    assert.deepEqual(Object.keys(sub.result.position).sort(), ['shop-0', 'shop-1', 'shop-2', 'shop-3']);
    // Two customers on two shards, in one cross-shard transaction.
    let other = 2;
    const shardOfCustomer = async (cu) => {
      for (let s2 = 0; s2 < 4; s2++)
        if ((await ok(db(`shop-${s2}`, 'SELECT count(*) FROM customers WHERE id = ?', [cu]))).rows[0][0] > 0) return s2;
      return -1;
    };
    while ((await shardOfCustomer(other)) === (await shardOfCustomer(1))) other++;
    await ok(ks("INSERT INTO orders VALUES (9101, 1, 1, 'cdc', NULL), (9102, ?, 2, 'cdc', NULL)", [other]));
    await ok(ks("INSERT INTO countries VALUES ('cd', 'not watched')"));
    await until(() => events().length >= 2, 'two events');
    const got = events();
    assert.equal(got.length, 2, JSON.stringify(got));
    assert.deepEqual(got.map((e) => e.after.id).sort(), [9101, 9102]);
    assert.deepEqual(new Set(got.map((e) => e.shard)).size, 2, 'from two shards');
    for (const e of got) {
      assert.equal(e.table, 'orders');
      assert.equal(e.operation, 'INSERT');
      assert.equal(e.position[e.shard], e.lsn, 'the position has its commit');
    }
    // The position after both (each shard's part), to resume from.
    const pos = { ...got[0].position };
    for (const e of got) pos[e.shard] = Math.max(pos[e.shard], e.position[e.shard]);
    const un = await c.call('unsubscribeCDC', { subscriptionId: sub.result.subscriptionId });
    assert.equal(un.result.unsubscribed, true);
    await ok(ks("DELETE FROM orders WHERE status = 'cdc'"));
    await ok(ks("DELETE FROM countries WHERE code = 'cd'"));
    c.notes.length = 0;
    const again = await c.call('subscribeCDC', { fromPosition: pos, tables: ['orders'] });
    assert.ok(again.result, JSON.stringify(again));
    await until(() => events().length >= 2, 'the deletes, resumed');
    assert.deepEqual(events().map((e) => [e.operation, e.before.id]).sort(), [['DELETE', 9101], ['DELETE', 9102]]);
    const bad = await c.call('subscribeCDC', { fromPosition: { nowhere: 1 } });
    assert.match(bad.error.message, /'nowhere' is no shard of this keyspace/);
    const lsnToo = await c.call('subscribeCDC', { fromLSN: 1 });
    assert.match(lsnToo.error.message, /fromPosition/);
  } finally {
    c.close();
  }
});

test('auto_increment: rows that leave their id out get the next values of the sequence, never one twice', async () => {
  const r = await ok(ks("INSERT INTO orders(customer_id, amount, status) VALUES (1, 1, 'seq'), (2, 2, 'seq'), (3, 3, 'seq')"));
  assert.equal(r.rowsAffected, 3);
  const ids = async () => (await ok(ks("SELECT id FROM orders WHERE status = 'seq' ORDER BY id"))).rows.map((x) => x[0]);
  const first = await ids();
  assert.equal(first.length, 3);
  assert.ok(first.every((id) => id >= 100000), JSON.stringify(first));
  // More than the cache holds (5): another block from the sequence's shard.
  await ok(ks("INSERT INTO orders VALUES (NULL, 4, 4, 'seq', NULL), (NULL, 5, 5, 'seq', NULL), (NULL, 6, 6, 'seq', NULL), (NULL, 7, 7, 'seq', NULL)"));
  await ok(ks("INSERT INTO orders(customer_id, status) VALUES (?, 'seq')", [8]));
  const all = await ids();
  assert.equal(all.length, 8);
  assert.equal(new Set(all).size, 8, 'no value twice');
  // A row is found by its key and its id.
  const one = await ok(ks("SELECT id FROM orders WHERE customer_id = 8 AND status = 'seq'"));
  assert.equal(one.rows.length, 1);
  assert.ok(all.includes(one.rows[0][0]));
  // The sequence is no table.
  const x = await ks('SELECT * FROM order_seq');
  assert.ok(x.status >= 400, x.text);
  await ok(ks("DELETE FROM orders WHERE status = 'seq'"));
});

test('a lookup vindex: reads by email go to the owner\'s shard, the lookup table follows inserts and deletes, emails are unique', async () => {
  await ok(ks('CREATE TABLE members(id INTEGER PRIMARY KEY, email TEXT, name TEXT)'));
  await ok(ks('CREATE TABLE member_email(email TEXT PRIMARY KEY, member_id INTEGER NOT NULL)'));
  const rows = Array.from({ length: 12 }, (_, i) => [i + 1, `m${i + 1}@x`, `n${i + 1}`]);
  await ok(ks(`INSERT INTO members VALUES ${rows.map(() => '(?, ?, ?)').join(', ')}`, rows.flat()));
  assert.equal((await ok(ks('SELECT count(*) FROM member_email'))).rows[0][0], 12);
  const lookupsBefore = Number(/dosqld_keyspace_statements_total\{plan="one"\} (\d+)/.exec(await (await fetch(`${d.url}/metrics`, { headers: auth(ADMIN) })).text())[1]);
  for (const [id, email, name] of rows) {
    const r = await ok(ks('SELECT id, name FROM members WHERE email = ?', [email]));
    assert.deepEqual(r.rows, [[id, name]], email);
  }
  // Each went to one shard (its lookup too).
  const lookupsAfter = Number(/dosqld_keyspace_statements_total\{plan="one"\} (\d+)/.exec(await (await fetch(`${d.url}/metrics`, { headers: auth(ADMIN) })).text())[1]);
  assert.equal(lookupsAfter - lookupsBefore, 24, 'a lookup and a read, each on one shard');
  assert.deepEqual((await ok(ks("SELECT * FROM members WHERE email = 'nobody@x'"))).rows, []);
  // Unique across the keyspace: a second owner of an email is refused, whole.
  const dup = await ks("INSERT INTO members VALUES (100, 'm3@x', 'again')");
  assert.equal(dup.json.error?.code, 'CONSTRAINT_VIOLATION', dup.text);
  assert.deepEqual((await ok(ks('SELECT count(*) FROM members WHERE id = 100'))).rows, [[0]]);
  // A delete by key takes the lookup row along; the email is free again.
  await ok(ks('DELETE FROM members WHERE id = 3'));
  assert.deepEqual((await ok(ks("SELECT count(*) FROM member_email WHERE email = 'm3@x'"))).rows, [[0]]);
  await ok(ks("INSERT INTO members VALUES (100, 'm3@x', 'again')"));
  assert.deepEqual((await ok(ks("SELECT id FROM members WHERE email = 'm3@x'"))).rows, [[100]]);
  const upd = await ks("UPDATE members SET email = 'z@x' WHERE id = 100");
  assert.match(upd.json.error.message, /lookup column 'email'/);
  await ok(ks("UPDATE members SET name = 'renamed' WHERE email = 'm4@x'"));
  assert.deepEqual((await ok(ks('SELECT name FROM members WHERE id = 4'))).rows, [['renamed']]);
});

test('queryStream on a keyspace: the router\'s rows in chunks, over WebSocket and NDJSON over HTTP', async () => {
  const want = (await ok(db('plain', 'SELECT id, amount FROM orders ORDER BY amount DESC, id'))).rows;
  const c = await WsRpc.open(d.port, '/v1/ks/shop/rpc', { headers: auth(ADMIN) });
  try {
    const res = await c.call('queryStream', { sql: 'SELECT id, amount FROM orders ORDER BY amount DESC, id', chunkSize: 7 });
    assert.equal(res.result?.rowCount, want.length, JSON.stringify(res));
    const chunks = c.notes.filter((n) => n.method === 'stream.chunk');
    assert.equal(chunks.length, Math.ceil(want.length / 7));
    assert.deepEqual(chunks[0].params.columns, ['id', 'amount']);
    assert.equal(chunks[1].params.columns, undefined);
    chunks.forEach((ch, i) => assert.equal(ch.params.seq, i));
    assert.deepEqual(chunks.flatMap((ch) => ch.params.rows), want);
    assert.equal(c.notes.find((n) => n.method === 'stream.complete').params.rowCount, want.length);
    const w = await c.call('queryStream', { sql: 'DELETE FROM orders WHERE customer_id = 1' });
    assert.match(w.error.message, /only reads/);
  } finally {
    c.close();
  }
  const r = await fetch(`${d.url}/v1/ks/shop/rpc`, {
    method: 'POST', headers: auth(ADMIN),
    body: JSON.stringify({ id: 's1', method: 'queryStream', params: { sql: 'SELECT count(*) FROM orders', chunkSize: 5 } }),
  });
  const lines = (await r.text()).trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.method ?? 'reply'), ['stream.chunk', 'stream.complete', 'reply']);
  assert.equal(lines[2].result.rowCount, 1);
});

test('JSON-RPC on a keyspace: query, getSchema and ping; other methods and members refused by name', async () => {
  const c = await WsRpc.open(d.port, '/v1/ks/shop/rpc', { headers: auth(ADMIN) });
  try {
    const q = await c.call('query', { sql: 'SELECT count(*) FROM orders WHERE customer_id = 3' });
    assert.ok(q.result, JSON.stringify(q));
    const s = await c.call('getSchema', {});
    assert.ok(s.result.tables.some((t) => t.name === 'orders'), JSON.stringify(s));
    assert.equal((await c.call('ping', {})).result.pong, true);
    const b = await c.call('getStats', {});
    assert.equal(b.error.code, 'INVALID_REQUEST');
    assert.match(b.error.message, /getStats is not supported on a keyspace/);
    const t = await c.call('query', { sql: 'SELECT 1', transactionId: 'x' });
    assert.equal(t.error.code, 'TRANSACTION_NOT_FOUND');
    const a = await c.call('query', { sql: 'SELECT 1', asOf: { lsn: 1 } });
    assert.match(a.error.message, /"asOf" is not supported on a keyspace/);
  } finally {
    c.close();
  }
  const r = await post(d.port, '/v1/ks/nowhere/query', { sql: 'SELECT 1' }, auth(ADMIN));
  assert.equal(r.status, 400);
  assert.match(r.json.error.message, /no keyspace 'nowhere'/);
  const bad = await post(d.port, '/v1/ks/not-a-name/query', { sql: 'SELECT 1' }, auth(ADMIN));
  assert.equal(bad.status, 400);
  assert.match(bad.text, /invalid keyspace name/);
});

test('applyVSchema: checked whole, admin only, versioned, kept across a restart; a table made on the shards directly is found', async () => {
  const got = await rpc('/v1/rpc', 'getVSchema', {});
  assert.equal(got.json.result.version, 1);
  assert.deepEqual(Object.keys(got.json.result.vschema.keyspaces), ['shop']);
  const wrong = structuredClone(vschema);
  wrong.keyspaces.shop.tables.orders.vindex = 'nope';
  const e1 = await rpc('/v1/rpc', 'applyVSchema', { vschema: wrong });
  assert.equal(e1.json.error.code, 'INVALID_REQUEST');
  assert.match(e1.json.error.message, /keyspaces\.shop\.tables\.orders\.vindex/);
  const e2 = await rpc('/v1/rpc', 'applyVSchema', { vschema }, READ);
  assert.equal(e2.json.error.code, 'FORBIDDEN');
  const e3 = await rpc('/v1/ks/shop/rpc', 'applyVSchema', { vschema });
  assert.equal(e3.json.error.code, 'INVALID_REQUEST');
  // A new table, made on each shard directly, then named in the VSchema.
  for (let s = 0; s < 4; s++) {
    await ok(db(`shop-${s}`, 'CREATE TABLE events(id INTEGER PRIMARY KEY, kind TEXT)'));
    await ok(db(`shop-${s}`, 'INSERT INTO events VALUES (?, ?)', [s, `k${s}`]));
  }
  const next = structuredClone(vschema);
  next.keyspaces.shop.tables.events = { column: 'id', vindex: 'r' };
  const a = await rpc('/v1/rpc', 'applyVSchema', { vschema: next });
  assert.equal(a.json.result.version, 2, a.text);
  assert.equal((await ok(ks('SELECT count(*) FROM events'))).rows[0][0], 4);
  // A column added on the shards directly: the router's copy of the
  // schema lacks it, reads it again, and answers.
  for (let s = 0; s < 4; s++) await ok(db(`shop-${s}`, 'ALTER TABLE events ADD COLUMN extra INTEGER DEFAULT 7'));
  assert.deepEqual((await ok(ks('SELECT sum(extra) FROM events'))).rows, [[28]]);
  // A schema change that fails on one shard says so, and where it was made.
  await ok(db('shop-3', 'CREATE TABLE half(x)'));
  const h = await ks('CREATE TABLE half(x)');
  assert.equal(h.status, 400, h.text);
  assert.match(h.json.error.message, /failed on 1 of 4 shards .* made on the others .*shop-3.*already exists/);
  await ok(ks('CREATE TABLE IF NOT EXISTS half(x)'));
  await d.stop();
  d = await startDosqld({ conf: conf('/nonexistent/the-applied-one-is-used'), dataDir: d.dataDir });
  const again = await rpc('/v1/rpc', 'getVSchema', {});
  assert.equal(again.json.result.version, 2);
  assert.ok(again.json.result.vschema.keyspaces.shop.tables.events);
  assert.equal((await ok(ks('SELECT count(*) FROM orders WHERE customer_id = 4'))).rows[0][0] > 0, true);
  // After the restart the sequence goes on past what was taken (a gap:
  // the cached values are gone), never back.
  await ok(ks("INSERT INTO orders(customer_id, status) VALUES (1, 'seq2')"));
  const id = (await ok(ks("SELECT id FROM orders WHERE status = 'seq2'"))).rows[0][0];
  assert.ok(id >= 100010, `id ${id}`);
});
