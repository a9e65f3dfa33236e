// Interop: the official capnweb client on keyspaces — keyspace(name) on
// the main object and /v1/ks/{keyspace}/capnweb, over WebSocket and HTTP
// batch: queries routed to one shard or scattered, a cross-shard write,
// batches, a transaction across shards, getSchema, queryStream and
// subscribeCDC with callbacks (a callback that throws ends the
// subscription; unsubscribe() after the stream ended gives its position);
// unknown keyspaces and methods refused by name.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { newWebSocketRpcSession, newHttpBatchRpcSession } from 'capnweb';
import { startDosqld, tempDir } from '../integration/lib/harness.mjs';

globalThis.WebSocket = WebSocket;

let d, root;
before(async () => {
  root = tempDir('dosqld-ks-cw-');
  const vs = path.join(root, 'vschema.json');
  writeFileSync(vs, JSON.stringify({
    keyspaces: { app: { shards: ['app-0', 'app-1', 'app-2'], vindexes: { h: { type: 'hash' } },
      tables: { users: { column: 'id', vindex: 'h' } } } },
  }));
  d = await startDosqld({ conf: `[sharding]\nvschema = ${vs}\n` });
});
after(async () => {
  await d?.cleanup();
  if (root) rmSync(root, { recursive: true, force: true });
});

test('keyspace(name) over WebSocket: DDL, a write across shards, routed and scattered reads, a batch', async () => {
  const main = newWebSocketRpcSession(`ws://127.0.0.1:${d.port}/v1/capnweb`);
  try {
    const app = main.keyspace('app');
    await app.query({ sql: 'CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, age INTEGER)' });
    const ins = await app.query({ sql: 'INSERT INTO users VALUES (1, ?, 30), (2, ?, 40), (3, ?, 50), (4, ?, 60)', params: ['a', 'b', 'c', 'd'] });
    assert.equal(ins.rowsAffected, 4);
    const one = await app.query({ sql: 'SELECT name FROM users WHERE id = ?', params: [3] });
    assert.deepEqual(one.rows, [['c']]);
    const agg = await app.query({ sql: 'SELECT count(*), sum(age), avg(age) FROM users' });
    assert.deepEqual(agg.rows, [[4, 180, 45]]);
    const top = await app.query({ sql: 'SELECT id FROM users ORDER BY age DESC LIMIT 2' });
    assert.deepEqual(top.rows, [[4], [3]]);
    const b = await app.batch({ statements: [
      { sql: 'UPDATE users SET age = age + 1 WHERE id = 1' },
      { sql: 'UPDATE users SET age = age - 1 WHERE id = 4' },
    ] });
    assert.equal(b.results.length, 2);
    assert.deepEqual((await app.query({ sql: 'SELECT sum(age) FROM users' })).rows, [[180]]);
    const schema = await app.getSchema({});
    assert.ok(schema.tables.some((t) => t.name === 'users'));
    const e1 = await main.keyspace('nowhere').query({ sql: 'SELECT 1' }).catch((e) => e);
    assert.ok(e1 instanceof Error);
    assert.match(e1.message, /no keyspace 'nowhere'/);
    // A transaction across shards: seen inside, not outside, until commit.
    const tx = await app.beginTransaction({});
    assert.match(tx.transactionId, /^[0-9a-f]{32}$/);
    assert.equal(tx.lsn, 0n);
    await app.query({ sql: 'UPDATE users SET age = age + 100 WHERE id = 1', transactionId: tx.transactionId });
    await app.query({ sql: 'UPDATE users SET age = age - 100 WHERE id = 4', transactionId: tx.transactionId });
    const inside = await app.query({ sql: 'SELECT age FROM users WHERE id = 1', transactionId: tx.transactionId });
    assert.deepEqual(inside.rows, [[131]]);
    assert.deepEqual((await app.query({ sql: 'SELECT age FROM users WHERE id = 1' })).rows, [[31]]);
    await app.commit({ transactionId: tx.transactionId });
    assert.deepEqual((await app.query({ sql: 'SELECT age FROM users WHERE id IN (1, 4) ORDER BY id' })).rows, [[131], [-41]]);
    const e2 = await app.getStats({}).catch((e) => e);
    assert.match(e2.message, /not supported on a keyspace/);
  } finally {
    main[Symbol.dispose]();
  }
});

test('queryStream on a keyspace over WebSocket: scattered rows in chunks, each waiting for the callback', async () => {
  const main = newWebSocketRpcSession(`ws://127.0.0.1:${d.port}/v1/capnweb`);
  try {
    const app = main.keyspace('app');
    const rows = Array.from({ length: 30 }, (_, i) => [100 + i, `s${i}`, i]);
    await app.query({ sql: `INSERT INTO users VALUES ${rows.map(() => '(?, ?, ?)').join(', ')}`, params: rows.flat() });
    const chunks = [];
    let inFlight = 0, maxInFlight = 0;
    const res = await app.queryStream({ sql: 'SELECT id FROM users WHERE id >= 100 ORDER BY id', chunkSize: 7 }, async (chunk) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      chunks.push(chunk);
      await new Promise((r) => setTimeout(r, 5));
      inFlight--;
    });
    assert.equal(res.rowCount, 30);
    assert.equal(res.chunks, 5);
    assert.equal(typeof res.lsn, 'bigint');
    assert.deepEqual(chunks.map((c) => c.seq), [0, 1, 2, 3, 4]);
    assert.deepEqual(chunks[0].columns, ['id']);
    assert.deepEqual(chunks.flatMap((c) => c.rows.map((r) => r[0])), rows.map((r) => r[0]));
    assert.equal(maxInFlight, 1);
    // No rows: one chunk with the columns.
    const none = [];
    const r0 = await app.queryStream({ sql: 'SELECT id FROM users WHERE id < 0' }, (c) => { none.push(c); });
    assert.equal(r0.rowCount, 0);
    assert.deepEqual(none.map((c) => [c.seq, c.columns, c.rows]), [[0, ['id'], []]]);
    // A callback that throws ends the stream with an error; writes are refused.
    const e = await app.queryStream({ sql: 'SELECT id FROM users', chunkSize: 5 }, () => { throw new Error('enough'); })
      .then(() => null, (err) => err);
    assert.ok(e instanceof Error);
    const w = await app.queryStream({ sql: 'DELETE FROM users' }, () => {}).then(() => null, (err) => err);
    assert.match(w.message, /only reads/);
    await app.query({ sql: 'DELETE FROM users WHERE id >= 100' });
  } finally {
    main[Symbol.dispose]();
  }
});

test('subscribeCDC on a keyspace stub: every shard\'s changes to the callback, with shard and position; resumed; unsubscribe()', async () => {
  const main = newWebSocketRpcSession(`ws://127.0.0.1:${d.port}/v1/capnweb`);
  try {
    const app = main.keyspace('app');
    const events = [];
    const sub = await app.subscribeCDC({ tables: ['users'] }, (ev) => { events.push(ev); });
    const rows = Array.from({ length: 12 }, (_, i) => [200 + i, `c${i}`, i]);
    await app.query({ sql: `INSERT INTO users VALUES ${rows.map(() => '(?, ?, ?)').join(', ')}`, params: rows.flat() });
    for (let k = 0; k < 200 && events.length < 12; k++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(events.length, 12);
    assert.ok(events.every((e) => e.operation === 'INSERT' && e.table === 'users'));
    assert.ok(new Set(events.map((e) => e.shard)).size >= 2, JSON.stringify(events.map((e) => e.shard)));
    assert.equal(typeof events[0].lsn, 'bigint');
    const last = events.filter((e) => e.position).at(-1).position;
    assert.deepEqual(Object.keys(last).sort(), ['app-0', 'app-1', 'app-2']);
    assert.equal(typeof last['app-0'], 'bigint');
    const done = await sub.unsubscribe();
    assert.equal(done.unsubscribed, true);
    assert.deepEqual(Object.keys(done.position).sort(), ['app-0', 'app-1', 'app-2']);
    // Resumed from an earlier position: what followed it comes again.
    const first = Object.fromEntries(Object.keys(last).map((k) => [k, 0n]));
    const again = [];
    const sub2 = await app.subscribeCDC({ tables: ['users'], fromPosition: first }, (ev) => { again.push(ev); });
    for (let k = 0; k < 200 && again.filter((e) => e.operation === 'INSERT' && (e.after?.id ?? 0) >= 200).length < 12; k++)
      await new Promise((r) => setTimeout(r, 25));
    assert.ok(again.filter((e) => e.operation === 'INSERT' && (e.after?.id ?? 0) >= 200).length >= 12);
    await sub2.unsubscribe();
    // Refusals: a position naming no shard of it, fromLSN.
    const bad = await app.subscribeCDC({ fromPosition: { nowhere: 1 } }, () => {}).then(() => null, (e) => e);
    assert.match(bad.message, /is no shard of this keyspace/);
    const lsn = await app.subscribeCDC({ fromLSN: 1 }, () => {}).then(() => null, (e) => e);
    assert.match(lsn.message, /fromPosition/);
    await app.query({ sql: 'DELETE FROM users WHERE id >= 200' });
  } finally {
    main[Symbol.dispose]();
  }
});

test('/v1/ks/{keyspace}/capnweb over HTTP batch: the main object is the keyspace', async () => {
  const app = newHttpBatchRpcSession(`http://127.0.0.1:${d.port}/v1/ks/app/capnweb`);
  const [n, byId] = await Promise.all([
    app.query({ sql: 'SELECT count(*) FROM users' }),
    newHttpBatchRpcSession(`http://127.0.0.1:${d.port}/v1/ks/app/capnweb`).query({ sql: 'SELECT name FROM users WHERE id = 2' }),
  ]);
  assert.deepEqual(n.rows, [[4]]);
  assert.deepEqual(byId.rows, [['b']]);
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('a keyspace subscription whose callback throws is called no more', async () => {
  const main = newWebSocketRpcSession(`ws://127.0.0.1:${d.port}/v1/capnweb`);
  try {
    const app = main.keyspace('app');
    await app.query({ sql: 'CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, name TEXT, age INTEGER)' });
    let calls = 0;
    await app.subscribeCDC({ tables: ['users'] }, () => { calls++; throw new Error('enough'); });
    await app.query({ sql: 'INSERT INTO users(id, name) VALUES (301, \'a\')' });
    for (let k = 0; k < 200 && calls < 1; k++) await sleep(25);
    assert.equal(calls, 1);
    await sleep(200);
    for (let i = 302; i < 308; i++) await app.query({ sql: 'INSERT INTO users(id, name) VALUES (?, \'b\')', params: [i] });
    await sleep(500);
    assert.equal(calls, 1, 'called again after it threw');
  } finally {
    main[Symbol.dispose]();
  }
});

test('the same on a database stub (control)', async () => {
  const main = newWebSocketRpcSession(`ws://127.0.0.1:${d.port}/v1/capnweb`);
  try {
    const db = main.database('plain');
    await db.query({ sql: 'CREATE TABLE IF NOT EXISTS u(id INTEGER PRIMARY KEY)' });
    let calls = 0;
    await db.subscribeCDC({ tables: ['u'] }, () => { calls++; throw new Error('enough'); });
    await db.query({ sql: 'INSERT INTO u VALUES (1)' });
    for (let k = 0; k < 200 && calls < 1; k++) await sleep(25);
    await sleep(200);
    for (let i = 2; i < 8; i++) await db.query({ sql: 'INSERT INTO u VALUES (?)', params: [i] });
    await sleep(500);
    assert.equal(calls, 1);
  } finally {
    main[Symbol.dispose]();
  }
});

// (last: it drops a shard)
test('unsubscribe() after a keyspace stream ended by itself answers a position, not lastLsn', async () => {
  const main = newWebSocketRpcSession(`ws://127.0.0.1:${d.port}/v1/capnweb`);
  try {
    const app = main.keyspace('app');
    await app.query({ sql: 'CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, name TEXT, age INTEGER)' });
    const got = [];
    const sub = await app.subscribeCDC({}, (ev) => { got.push(ev); });
    const r = await fetch(`http://127.0.0.1:${d.port}/v1/db/app-2`, { method: 'DELETE' });
    assert.equal(r.status, 200, await r.text());
    await app.query({ sql: 'INSERT INTO users(id, name) VALUES (400, \'z\')' }).catch(() => {});
    for (let k = 0; k < 200 && !got.some((e) => e.end); k++) await sleep(25);
    assert.ok(got.some((e) => e.end), 'the stream ended');
    const done = await sub.unsubscribe();
    assert.equal(done.unsubscribed, true);
    assert.ok(done.position && typeof done.position === 'object', JSON.stringify(done, (k, v) => typeof v === 'bigint' ? `${v}n` : v));
  } finally {
    main[Symbol.dispose]();
  }
});
