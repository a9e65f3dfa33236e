// Cap'n Web subscribeCDC on a keyspace stub — a callback that
// throws ends the subscription (docs/protocol.md), as on a database stub.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { newWebSocketRpcSession } from 'capnweb';
import { startDosqld, tempDir } from '../integration/lib/harness.mjs';

globalThis.WebSocket = WebSocket;

let d, root;
before(async () => {
  root = tempDir('dosqld-r3-cw-');
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('a keyspace subscription whose callback throws is called no more', async () => {
  const main = newWebSocketRpcSession(`ws://127.0.0.1:${d.port}/v1/capnweb`);
  try {
    const app = main.keyspace('app');
    await app.query({ sql: 'CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT)' });
    let calls = 0;
    await app.subscribeCDC({ tables: ['users'] }, () => { calls++; throw new Error('enough'); });
    await app.query({ sql: 'INSERT INTO users VALUES (1, \'a\')' });
    for (let k = 0; k < 200 && calls < 1; k++) await sleep(25);
    assert.equal(calls, 1);
    await sleep(200);
    for (let i = 2; i < 8; i++) await app.query({ sql: 'INSERT INTO users VALUES (?, \'b\')', params: [i] });
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

test('unsubscribe() after a keyspace stream ended by itself answers a position, not lastLsn', async () => {
  const main = newWebSocketRpcSession(`ws://127.0.0.1:${d.port}/v1/capnweb`);
  try {
    const app = main.keyspace('app');
    await app.query({ sql: 'CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, name TEXT)' });
    const got = [];
    const sub = await app.subscribeCDC({}, (ev) => { got.push(ev); });
    const r = await fetch(`http://127.0.0.1:${d.port}/v1/db/app-2`, { method: 'DELETE' });
    assert.equal(r.status, 200, await r.text());
    await app.query({ sql: 'INSERT INTO users VALUES (100, \'z\')' }).catch(() => {});
    for (let k = 0; k < 200 && !got.some((e) => e.end); k++) await sleep(25);
    assert.ok(got.some((e) => e.end), 'the stream ended');
    const done = await sub.unsubscribe();
    assert.equal(done.unsubscribed, true);
    assert.ok(done.position && typeof done.position === 'object', JSON.stringify(done, (k, v) => typeof v === 'bigint' ? `${v}n` : v));
  } finally {
    main[Symbol.dispose]();
  }
});
