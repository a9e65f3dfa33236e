// Change data capture over JSON-RPC WebSocket: subscribeCDC and
// its "cdc" notifications, unsubscribeCDC, resuming from any LSN exactly
// once (during a write load, and across a crash), filters, schema events,
// triggers and cascades, rolled-back work producing nothing, errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { startDosqld, tempDir, sleep, within, metric } from './lib/harness.mjs';
import { WsRpc, query, post, untilHibernated } from './lib/rpc.mjs';

// The cdc events of subscription `id` collected by c so far.
const events = (c, id) => c.notes.filter((n) => n.method === 'cdc' && n.params.subscriptionId === id).map((n) => n.params);

// Wait until pred(events) holds (5 s at most).
async function until(c, id, pred, what = 'events') {
  await within(5000, (async () => {
    while (!pred(events(c, id))) await sleep(10);
  })(), what);
  return events(c, id);
}

test('every operation and value type, as committed, after the subscription', async () => {
  const d = await startDosqld();
  try {
    await query(d.port, 'v', 'CREATE TABLE t(id INTEGER PRIMARY KEY, i, r, s, b)');
    const c = await WsRpc.open(d.port, '/v1/db/v/rpc');
    const { subscriptionId: id } = await c.ok('subscribeCDC', {});
    assert.equal(typeof id, 'string');
    const w1 = await query(d.port, 'v', "INSERT INTO t VALUES (1, 9007199254740993, 1.5, 'héllo', x'00ff'), (2, NULL, -2, '', x'')");
    const w2 = await query(d.port, 'v', "UPDATE t SET s = 'x', id = 7 WHERE id = 2");
    const w3 = await query(d.port, 'v', 'DELETE FROM t WHERE id = 1');
    const ev = await until(c, id, (e) => e.length >= 4);
    assert.equal(ev.length, 4, 'nothing from before the subscription (the CREATE TABLE)');
    const strip = ({ timestamp, subscriptionId, ...rest }) => rest;
    assert.deepEqual(ev.map(strip), [
      { lsn: w1.lsn, operation: 'INSERT', table: 't', rowid: 1, after: { id: 1, i: { $bigint: '9007199254740993' }, r: 1.5, s: 'héllo', b: { $bytes: 'AP8=' } } },
      { lsn: w1.lsn, operation: 'INSERT', table: 't', rowid: 2, after: { id: 2, i: null, r: -2, s: '', b: { $bytes: '' } } },
      { lsn: w2.lsn, operation: 'UPDATE', table: 't', rowid: 7, previousRowid: 2, before: { id: 2, i: null, r: -2, s: '', b: { $bytes: '' } }, after: { id: 7, i: null, r: -2, s: 'x', b: { $bytes: '' } } },
      { lsn: w3.lsn, operation: 'DELETE', table: 't', rowid: 1, before: { id: 1, i: { $bigint: '9007199254740993' }, r: 1.5, s: 'héllo', b: { $bytes: 'AP8=' } } },
    ]);
    for (const e of ev) assert.ok(Math.abs(e.timestamp - Date.now()) < 60000, `timestamp ${e.timestamp} is ms since 1970`);
    await c.close();
  } finally {
    await d.cleanup();
  }
});

test('generated columns: writes to a table with VIRTUAL and STORED ones go through; events carry the stored columns', async () => {
  const d = await startDosqld();
  try {
    await query(d.port, 'gen', 'CREATE TABLE g(a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL, c INTEGER GENERATED ALWAYS AS (a + 1) STORED, d TEXT)');
    const c = await WsRpc.open(d.port, '/v1/db/gen/rpc');
    const { subscriptionId: id } = await c.ok('subscribeCDC', {});
    const w1 = await query(d.port, 'gen', "INSERT INTO g(a, d) VALUES (1, 'x')");
    const w2 = await query(d.port, 'gen', "UPDATE g SET a = 5, d = 'y'");
    const w3 = await query(d.port, 'gen', 'DELETE FROM g');
    assert.deepEqual((await query(d.port, 'gen', 'SELECT count(*) FROM g')).rows, [[0]]);
    const ev = await until(c, id, (e) => e.length >= 3);
    const strip = ({ timestamp, subscriptionId, ...rest }) => rest;
    assert.deepEqual(ev.map(strip), [
      { lsn: w1.lsn, operation: 'INSERT', table: 'g', rowid: 1, after: { a: 1, c: 2, d: 'x' } },
      { lsn: w2.lsn, operation: 'UPDATE', table: 'g', rowid: 1, before: { a: 1, c: 2, d: 'x' }, after: { a: 5, c: 6, d: 'y' } },
      { lsn: w3.lsn, operation: 'DELETE', table: 'g', rowid: 1, before: { a: 5, c: 6, d: 'y' } },
    ]);
    await c.close();
  } finally {
    await d.cleanup();
  }
});

test('statement order within a transaction, triggers and cascades; rolled-back work sends nothing', async () => {
  const d = await startDosqld();
  try {
    await query(d.port, 'o', `CREATE TABLE p(id INTEGER PRIMARY KEY);
      CREATE TABLE ch(id INTEGER PRIMARY KEY, p REFERENCES p(id) ON DELETE CASCADE);
      CREATE TABLE audit(what);
      CREATE TRIGGER tr AFTER DELETE ON ch BEGIN INSERT INTO audit VALUES ('gone ' || old.id); END`);
    const c = await WsRpc.open(d.port, '/v1/db/o/rpc');
    const { subscriptionId: id } = await c.ok('subscribeCDC', {});
    // Rolled back: an explicit rollback, and a failing atomic batch.
    const { transactionId } = await c.ok('beginTransaction', {});
    await c.ok('query', { sql: 'INSERT INTO p VALUES (99)', transactionId });
    await c.ok('rollback', { transactionId });
    const bad = await c.call('batch', { statements: [{ sql: 'INSERT INTO p VALUES (98)' }, { sql: 'INSERT INTO nope VALUES (1)' }] });
    assert.equal(bad.error.code, 'TABLE_NOT_FOUND');
    // One transaction, several statements, with a savepoint rolled back.
    const t2 = (await c.ok('beginTransaction', {})).transactionId;
    await c.ok('query', { sql: 'INSERT INTO p VALUES (1); INSERT INTO ch VALUES (10, 1), (11, 1)', transactionId: t2 });
    await c.ok('query', { sql: 'SAVEPOINT s1; INSERT INTO p VALUES (2); ROLLBACK TO s1; RELEASE s1', transactionId: t2 });
    const committed = await c.ok('commit', { transactionId: t2 });
    const del = await c.ok('query', { sql: 'DELETE FROM p WHERE id = 1' });
    const ev = await until(c, id, (e) => e.length >= 7);
    await sleep(100);
    const short = events(c, id).map((e) => `${e.lsn} ${e.operation} ${e.table} ${e.rowid}`);
    assert.deepEqual(short, [
      `${committed.lsn} INSERT p 1`, `${committed.lsn} INSERT ch 10`, `${committed.lsn} INSERT ch 11`,
      `${del.lsn} DELETE p 1`, `${del.lsn} DELETE ch 10`, `${del.lsn} INSERT audit 1`, `${del.lsn} DELETE ch 11`,
      `${del.lsn} INSERT audit 2`,
    ].slice(0, short.length));
    assert.equal(short.length, 8, JSON.stringify(ev));
    await c.close();
  } finally {
    await d.cleanup();
  }
});

test('filters by table and operation; schema changes as DDL events', async () => {
  const d = await startDosqld();
  try {
    await query(d.port, 'f', 'CREATE TABLE a(x); CREATE TABLE b(y)');
    const c = await WsRpc.open(d.port, '/v1/db/f/rpc');
    const onlyA = (await c.ok('subscribeCDC', { tables: ['a'] })).subscriptionId;
    const deletes = (await c.ok('subscribeCDC', { operations: ['DELETE'] })).subscriptionId;
    const ddl = (await c.ok('subscribeCDC', { operations: ['DDL'] })).subscriptionId;
    const all = (await c.ok('subscribeCDC', {})).subscriptionId;
    await query(d.port, 'f', 'INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)');
    await query(d.port, 'f', 'DELETE FROM b');
    const alter = await query(d.port, 'f', 'ALTER TABLE a ADD COLUMN z DEFAULT 5');
    await query(d.port, 'f', 'UPDATE a SET z = 6');
    await until(c, all, (e) => e.length >= 5);
    await sleep(100);
    assert.deepEqual(events(c, onlyA).map((e) => e.operation), ['INSERT', 'UPDATE']);
    assert.deepEqual(events(c, onlyA)[1].after, { x: 1, z: 6 }, 'columns as the schema had them');
    assert.deepEqual(events(c, deletes).map((e) => `${e.operation} ${e.table}`), ['DELETE b']);
    assert.deepEqual(events(c, ddl).map((e) => [e.operation, e.sql, e.lsn]), [['DDL', 'ALTER TABLE a ADD COLUMN z DEFAULT 5', alter.lsn]]);
    assert.deepEqual(events(c, all).map((e) => e.operation), ['INSERT', 'INSERT', 'DELETE', 'DDL', 'UPDATE']);
    await c.close();
  } finally {
    await d.cleanup();
  }
});

test('WITHOUT ROWID tables are identified by their primary key', async () => {
  const d = await startDosqld();
  try {
    await query(d.port, 'k', 'CREATE TABLE kv(k TEXT, n INTEGER, v, PRIMARY KEY (n, k)) WITHOUT ROWID');
    const c = await WsRpc.open(d.port, '/v1/db/k/rpc');
    const { subscriptionId: id } = await c.ok('subscribeCDC', {});
    await query(d.port, 'k', "INSERT INTO kv VALUES ('a', 1, 'one')");
    await query(d.port, 'k', "UPDATE kv SET v = 'uno'");
    const ev = await until(c, id, (e) => e.length >= 2);
    assert.deepEqual(ev.map((e) => [e.operation, e.primaryKey, e.rowid]), [['INSERT', { k: 'a', n: 1 }, undefined], ['UPDATE', { k: 'a', n: 1 }, undefined]]);
    await c.close();
  } finally {
    await d.cleanup();
  }
});

// A writer inserts rows 1..N, one commit each; every subscriber must see
// exactly the rows committed after its fromLSN, each once, in LSN order.
function checkExactlyOnce(ev, fromLsn, lsnOf, label) {
  let last = fromLsn;
  const seen = new Set();
  for (const e of ev) {
    assert.ok(e.lsn > fromLsn, `${label}: LSN ${e.lsn} is not after ${fromLsn}`);
    assert.ok(e.lsn >= last, `${label}: LSN ${e.lsn} after ${last}`);
    last = e.lsn;
    const n = e.after.n;
    assert.ok(!seen.has(n), `${label}: row ${n} twice`);
    seen.add(n);
  }
  const want = [...lsnOf.entries()].filter(([, l]) => l > fromLsn).map(([n]) => n);
  assert.deepEqual([...seen].sort((a, b) => a - b), want.sort((a, b) => a - b), `${label}: every row after ${fromLsn}, once`);
}

test('resuming from arbitrary LSNs during a write load: every event after it, exactly once', async () => {
  // Small checkpoints and segments: older commits come from the log's
  // sealed segments, newer from the feed.
  const d = await startDosqld({ conf: '[storage]\ncheckpoint_size = 64K\nsegment_size = 64K\n[cdc]\nbuffer_size = 64K\n' });
  try {
    const first = await query(d.port, 'x', 'CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)');
    const lsnOf = new Map();
    const N = 600;
    let stop = false;
    const writer = (async () => {
      for (let n = 1; n <= N && !stop; n++) {
        const r = await query(d.port, 'x', 'INSERT INTO t VALUES (?, randomblob(200))', [n]);
        lsnOf.set(n, r.lsn);
      }
    })();
    const subs = [];
    for (let k = 0; k < 6; k++) {
      await sleep(40);
      const c = await WsRpc.open(d.port, '/v1/db/x/rpc');
      const known = [...lsnOf.values()];
      const from = k === 0 ? first.lsn : known.length ? known[Math.floor(Math.random() * known.length)] : first.lsn;
      const { subscriptionId } = await c.ok('subscribeCDC', { fromLSN: from, operations: ['INSERT'] });
      subs.push({ c, id: subscriptionId, from });
    }
    await within(60000, writer, 'writer');
    const lastLsn = lsnOf.get(N);
    for (const s of subs) {
      const ev = await until(s.c, s.id, (e) => e.length > 0 && e[e.length - 1].lsn >= lastLsn, `events up to ${lastLsn}`);
      checkExactlyOnce(ev, s.from, lsnOf, `from ${s.from}`);
      await s.c.close();
    }
  } finally {
    await d.cleanup();
  }
});

test('a crash mid-stream, then resuming from the last LSN received', async () => {
  const dir = tempDir('dosqld-cdc-crash-');
  const dataDir = path.join(dir, 'data');
  let d = await startDosqld({ dataDir });
  try {
    await query(d.port, 'y', 'CREATE TABLE t(n INTEGER PRIMARY KEY)');
    let c = await WsRpc.open(d.port, '/v1/db/y/rpc');
    const sub1 = (await c.ok('subscribeCDC', {})).subscriptionId;
    const lsnOf = new Map();
    for (let n = 1; n <= 50; n++) lsnOf.set(n, (await query(d.port, 'y', 'INSERT INTO t VALUES (?)', [n])).lsn);
    const before = await until(c, sub1, (e) => e.length >= 20);
    const lastSeen = before[19].lsn; // resume from the middle of what was sent
    d.proc.kill('SIGKILL');
    await within(10000, d.exit, 'exit');
    d = await startDosqld({ dataDir });
    for (let n = 51; n <= 80; n++) lsnOf.set(n, (await query(d.port, 'y', 'INSERT INTO t VALUES (?)', [n])).lsn);
    c = await WsRpc.open(d.port, '/v1/db/y/rpc');
    const sub2 = (await c.ok('subscribeCDC', { fromLSN: lastSeen })).subscriptionId;
    for (let n = 81; n <= 90; n++) lsnOf.set(n, (await query(d.port, 'y', 'INSERT INTO t VALUES (?)', [n])).lsn);
    const ev = await until(c, sub2, (e) => e.length > 0 && e[e.length - 1].lsn >= lsnOf.get(90));
    checkExactlyOnce(ev, lastSeen, lsnOf, 'after the crash');
    await c.close();
  } finally {
    await d.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('errors: fromLSN outside the log, a bad request, unsubscribing, HTTP', async () => {
  const d = await startDosqld({ conf: '[storage]\ncheckpoint_size = 64K\nsegment_size = 64K\nhistory_retention = 0\n' });
  try {
    await query(d.port, 'e', 'CREATE TABLE t(v BLOB)');
    for (let i = 0; i < 60; i++) await query(d.port, 'e', 'INSERT INTO t VALUES (randomblob(3000))');
    const c = await WsRpc.open(d.port, '/v1/db/e/rpc');
    const old = await c.call('subscribeCDC', { fromLSN: 1 });
    assert.equal(old.error?.code, 'INVALID_LSN', JSON.stringify(old));
    const oldest = Number(old.error.message.match(/oldest available LSN is (\d+)/)?.[1]);
    assert.ok(oldest > 1, old.error.message);
    const ok = await c.call('subscribeCDC', { fromLSN: oldest });
    assert.ok(ok.result?.subscriptionId, JSON.stringify(ok));
    const future = await c.call('subscribeCDC', { fromLSN: 1000000 });
    assert.equal(future.error?.code, 'INVALID_LSN');
    for (const [params, re] of [[{ fromLSN: -1 }, /fromLSN/], [{ tables: 'a' }, /tables/], [{ operations: ['MERGE'] }, /operations/], [{ operations: [] }, /operations/]]) {
      const r = await c.call('subscribeCDC', params);
      assert.equal(r.error?.code, 'INVALID_REQUEST', JSON.stringify(params));
      assert.match(r.error.message, re);
    }
    const un = await c.call('unsubscribeCDC', { subscriptionId: ok.result.subscriptionId });
    assert.equal(un.result.unsubscribed, true);
    const again = await c.call('unsubscribeCDC', { subscriptionId: ok.result.subscriptionId });
    assert.equal(again.error?.code, 'SUBSCRIPTION_ERROR');
    // Nothing more for it.
    const n = c.notes.length;
    await query(d.port, 'e', 'INSERT INTO t VALUES (1)');
    await sleep(200);
    assert.equal(c.notes.filter((x) => x.method === 'cdc').length, c.notes.slice(0, n).filter((x) => x.method === 'cdc').length);
    const stats = await c.ok('getStats', {});
    assert.equal(stats.server.subscriptions, 0);
    const m = await (await fetch(`${d.url}/metrics`)).text();
    assert.match(m, /^dosqld_cdc_subscriptions 0$/m);
    await c.close();
    // Over plain HTTP there is no stream to send events on.
    const h = await post(d.port, '/v1/db/e/rpc', { id: 1, method: 'subscribeCDC', params: {} });
    assert.equal(h.json.error.code, 'INVALID_REQUEST');
    assert.match(h.json.error.message, /WebSocket|Server-Sent Events/);
  } finally {
    await d.cleanup();
  }
});

// Server-Sent Events: a reader that collects the blocks of one response.
function sse(port, target, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: target, headers }, (res) => {
      const s = { res, req, status: res.statusCode, headers: res.headers, text: '', blocks: [] };
      s.ended = new Promise((r) => res.on('end', r));
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        s.text += chunk;
        let i;
        while ((i = s.text.indexOf('\n\n')) >= 0) {
          const block = s.text.slice(0, i);
          s.text = s.text.slice(i + 2);
          const ev = {};
          for (const line of block.split('\n')) {
            const m = line.match(/^([a-z]+): ?(.*)$/i);
            if (m) ev[m[1]] = m[1] === 'data' ? JSON.parse(m[2]) : m[2];
          }
          if (ev.event) s.blocks.push(ev);
        }
      });
      resolve(s);
    });
    req.on('error', reject);
  });
}

async function sseUntil(s, pred) {
  await within(5000, (async () => {
    while (!pred(s.blocks)) await sleep(10);
  })(), 'SSE events');
  return s.blocks;
}

test('Server-Sent Events: ids on whole commits, Last-Event-ID resumes exactly once', async () => {
  const d = await startDosqld();
  try {
    const first = await query(d.port, 's', 'CREATE TABLE t(n INTEGER PRIMARY KEY, m)');
    const lsnOf = new Map();
    // Two rows per commit: the id comes with the second.
    for (let n = 1; n <= 20; n += 2) {
      const r = await query(d.port, 's', 'INSERT INTO t VALUES (?, 0), (?, 0)', [n, n + 1]);
      lsnOf.set(n, r.lsn);
      lsnOf.set(n + 1, r.lsn);
    }
    const a = await sse(d.port, `/v1/db/s/cdc?from=${first.lsn}&operations=INSERT`);
    assert.equal(a.status, 200);
    assert.match(a.headers['content-type'], /^text\/event-stream/);
    const got = await sseUntil(a, (b) => b.length >= 20);
    assert.deepEqual(got.map((b) => b.event), Array(20).fill('cdc'));
    for (let i = 0; i < 20; i++) {
      assert.equal(got[i].data.after.n, i + 1);
      assert.equal(got[i].id, i % 2 === 1 ? String(got[i].data.lsn) : undefined, `event ${i}: an id on the last of each commit`);
    }
    a.req.destroy();
    const lastId = got[11].id; // as if the client saw up to the 12th event
    for (let n = 21; n <= 30; n += 2) {
      const r = await query(d.port, 's', 'INSERT INTO t VALUES (?, 0), (?, 0)', [n, n + 1]);
      lsnOf.set(n, r.lsn);
      lsnOf.set(n + 1, r.lsn);
    }
    const b = await sse(d.port, '/v1/db/s/cdc?from=1', { 'Last-Event-ID': lastId });
    const rest = await sseUntil(b, (x) => x.length >= 18);
    checkExactlyOnce(rest.map((x) => x.data), Number(lastId), lsnOf, 'after Last-Event-ID');
    b.req.destroy();
    // Live events, and the tables filter.
    const c = await sse(d.port, '/v1/db/s/cdc?tables=t');
    await query(d.port, 's', 'UPDATE t SET m = 1 WHERE n = 1');
    const live = await sseUntil(c, (x) => x.length >= 1);
    assert.equal(live[0].data.operation, 'UPDATE');
    c.req.destroy();
    await sleep(100);
    const st = (await post(d.port, '/v1/rpc', { id: 1, method: 'getStats', params: {} })).json.result.server;
    assert.equal(st.subscriptions, 0, 'a client that hung up has no subscription left');
  } finally {
    await d.cleanup();
  }
});

test('Server-Sent Events: errors before the stream are JSON', async () => {
  const d = await startDosqld();
  try {
    await query(d.port, 'z', 'CREATE TABLE t(x)');
    for (const [target, status, code] of [
      ['/v1/db/z/cdc?from=99', 400, 'INVALID_LSN'],
      ['/v1/db/z/cdc?from=x', 400, 'INVALID_REQUEST'],
      ['/v1/db/z/cdc?operations=MERGE', 400, 'INVALID_REQUEST'],
      ['/v1/db/z/cdc?tables=a,,b', 400, 'INVALID_REQUEST'],
    ]) {
      const s = await sse(d.port, target);
      await within(5000, s.ended, 'response');
      assert.equal(s.status, status, target);
      assert.equal(JSON.parse(s.text).error.code, code, target);
    }
    const bad = await sse(d.port, '/v1/db/z/cdc', { 'Last-Event-ID': 'abc' });
    assert.equal(bad.status, 400);
  } finally {
    await d.cleanup();
  }
});

// A subscriber that stops reading while 8 writers run: the writers and a
// healthy subscriber go on; when it reads again it gets every event once
// (the log still has them), or, when the log was retired meanwhile,
// BUFFER_OVERFLOW naming the last commit it received whole.
async function stalled(conf, expectOverflow) {
  const d = await startDosqld({ conf });
  try {
    await query(d.port, 'st', 'CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)');
    const healthy = await WsRpc.open(d.port, '/v1/db/st/rpc');
    const hid = (await healthy.ok('subscribeCDC', {})).subscriptionId;
    const slow = await WsRpc.open(d.port, '/v1/db/st/rpc');
    const sid = (await slow.ok('subscribeCDC', {})).subscriptionId;
    assert.equal(slow.ws.extensions, /compression = yes/.test(conf) ? 'permessage-deflate' : '');
    slow.ws._socket.pause(); // reads nothing from here on
    const lsnOf = new Map();
    const W = 8, PER = 250;
    await within(60000, Promise.all(Array.from({ length: W }, async (_, w) => {
      for (let i = 0; i < PER; i++) {
        const n = w * PER + i + 1;
        lsnOf.set(n, (await query(d.port, 'st', 'INSERT INTO t VALUES (?, randomblob(3000))', [n])).lsn);
      }
    })), 'writers beside a stalled subscriber');
    const last = Math.max(...lsnOf.values());
    const hev = await until(healthy, hid, (e) => e.length > 0 && e[e.length - 1].lsn >= last, 'the healthy subscriber');
    checkExactlyOnce(hev, 1, lsnOf, 'healthy');
    // While it is stalled, getStats shows how far behind it is.
    const lag = (await healthy.ok('getStats', {})).database.cdc;
    assert.equal(lag.subscriptions, 2);
    const behind = lag.subscribers.reduce((a, b) => (a.lagLsn > b.lagLsn ? a : b));
    assert.ok(behind.lagLsn > 0 && behind.lsn < last, JSON.stringify(lag));
    slow.ws._socket.resume();
    const end = () => slow.notes.find((n) => n.method === 'cdc.end');
    await within(20000, (async () => {
      while (!end() && !(events(slow, sid).at(-1)?.lsn >= last)) await sleep(20);
    })(), 'the stalled subscriber');
    await sleep(200);
    const sev = events(slow, sid);
    if (expectOverflow) {
      const e = end();
      assert.ok(e, `BUFFER_OVERFLOW expected; got events up to ${sev.at(-1)?.lsn} of ${last}`);
      assert.equal(e.params.error.code, 'BUFFER_OVERFLOW');
      assert.equal(e.params.subscriptionId, sid);
      assert.match(e.params.error.message, /oldest available LSN is \d+/);
      const upto = e.params.lastLsn;
      assert.ok(upto < last, `stopped at ${upto}`);
      const want = new Map([...lsnOf].filter(([, l]) => l <= upto));
      checkExactlyOnce(sev, 1, want, 'stalled, up to its end');
      const st = await slow.ok('getStats', {});
      assert.equal(st.server.subscriptions, 1, 'only the healthy one is left');
    } else {
      assert.equal(end(), undefined);
      checkExactlyOnce(sev, 1, lsnOf, 'stalled, then caught up');
      const st = await slow.ok('getStats', {});
      assert.equal(st.database.cdc.subscriptions, 2);
      for (const x of st.database.cdc.subscribers) {
        assert.equal(x.lsn, last, JSON.stringify(x));
        assert.equal(x.lagLsn, 0);
        assert.equal(x.lagBytes, 0);
      }
    }
    await healthy.close();
    await slow.close();
  } finally {
    await d.cleanup();
  }
}

test('the commits kept rendered for alike subscribers stay within a bound: large ones do not pile up in the heap', async () => {
  const d = await startDosqld();
  let c;
  try {
    await query(d.port, 'big', 'CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)');
    c = await WsRpc.open(d.port, '/v1/db/big/rpc');
    const { subscriptionId: id } = await c.ok('subscribeCDC', {});
    // Each commit renders to about 80 KB (a 60 KB blob in base64).
    const write = async (from, to) => {
      let w;
      for (let i = from; i <= to; i++) {
        if (i % 50 === 0) c.notes.length = 0; // (the client keeps little; never the last event)
        w = await query(d.port, 'big', 'INSERT INTO t VALUES (?, randomblob(60000))', [i]);
      }
      await within(20000, (async () => {
        while (!c.notes.some((n) => n.method === 'cdc' && n.params.subscriptionId === id && n.params.lsn === w.lsn)) await sleep(10);
      })(), 'the last commit\'s event');
      c.notes.length = 0;
    };
    const inUse = async () => (await c.ok('getStats', {})).server.heap.inUse;
    await write(1, 50); // caches and buffers at their size
    const before = await inUse();
    await write(51, 350);
    // Under load, notifications the client has not read yet still sit in
    // the connection's output: the bound must hold once they are sent
    // (read again for up to 3 s; what the cache keeps does not go away).
    let grew;
    for (let i = 0; i < 30; i++) {
      grew = (await inUse()) - before;
      if (grew < 16 << 20) break;
      await sleep(100);
    }
    assert.ok(grew < 16 << 20, `300 commits of 80 KB rendered: the heap grew ${(grew / 1048576).toFixed(1)} MiB`);
  } finally {
    c?.ws.terminate();
    await d.cleanup();
  }
});

// The commits kept rendered give their memory back once nobody reads them
// (5 s): a subscriber's heap follows what it reads now. Without that the
// cache filled up to its bound over a long run (the soak's heap grew by a
// third in 20 minutes).
test('the commits kept rendered are let go once idle', async () => {
  const d = await startDosqld();
  let c;
  try {
    await query(d.port, 'idle', 'CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)');
    c = await WsRpc.open(d.port, '/v1/db/idle/rpc');
    const { subscriptionId: id } = await c.ok('subscribeCDC', {});
    const write = async (from, to, size) => {
      let w;
      for (let i = from; i <= to; i++) w = await query(d.port, 'idle', 'INSERT INTO t VALUES (?, randomblob(?))', [i, size]);
      await within(20000, (async () => {
        while (!c.notes.some((n) => n.method === 'cdc' && n.params.subscriptionId === id && n.params.lsn === w.lsn)) await sleep(10);
      })(), 'the last commit\'s event');
      c.notes.length = 0;
    };
    const inUse = async () => (await c.ok('getStats', {})).server.heap.inUse;
    await write(1, 20, 10);
    const base = await inUse();
    await write(21, 420, 9000); // about 12 KB rendered each: 4.8 MB kept
    const full = await inUse();
    assert.ok(full - base > 3 << 20, `the cache holds them: ${((full - base) / 1048576).toFixed(1)} MiB`);
    await sleep(5500);
    await write(421, 520, 10); // each commit delivered looks at 64 slots
    const after = await inUse();
    assert.ok(full - after > 3 << 20, `let go: ${((full - base) / 1048576).toFixed(1)} MiB held, ` +
      `${((after - base) / 1048576).toFixed(1)} MiB after`);
  } finally {
    c?.ws.terminate();
    await d.cleanup();
  }
});

test('a stalled subscriber neither stops writers nor other subscribers, then catches up from the log', async () => {
  await stalled('[cdc]\nbuffer_size = 64K\n', false);
});

// The same while the server counts itself busy (coalesce_cpu = 0): the
// sends are coalesced, the two subscribers (both id "1") share batches,
// and the stalled one's large frames fill its socket part way.
test('a stalled subscriber while sends are coalesced: the same', async () => {
  await stalled('[cdc]\nbuffer_size = 64K\ncoalesce_cpu = 0\ncoalesce_interval = 100ms\n', false);
});

// With WebSocket compression on (both clients offer it): the shared
// batches go compressed, and the stalled one's compressed frames fill its
// socket part way.
test('a stalled subscriber while coalesced batches go compressed: the same', async () => {
  await stalled('[cdc]\nbuffer_size = 64K\ncoalesce_cpu = 0\ncoalesce_interval = 100ms\n' +
    '[websocket]\ncompression = yes\n', false);
});

test('a stalled subscriber that falls out of the retained log ends with BUFFER_OVERFLOW', async () => {
  await stalled('[storage]\ncheckpoint_size = 256K\nsegment_size = 256K\nhistory_retention = 0\n[cdc]\nbuffer_size = 64K\n', true);
});

// Events rendered for a dropped database are not served for the new one
// under its name, whose LSNs start again from 1.
test('a database made again under a dropped one\'s name gets its own events, not the old ones rendered', async () => {
  const d = await startDosqld();
  try {
    const old = await WsRpc.open(d.port, '/v1/db/rr/rpc');
    const oid = (await old.ok('subscribeCDC', { fromLSN: 0 })).subscriptionId;
    await query(d.port, 'rr', 'CREATE TABLE t(x)');
    await query(d.port, 'rr', 'INSERT INTO t VALUES (1)');
    await until(old, oid, (e) => e.length >= 2, 'the old database\'s events');
    assert.equal((await fetch(`${d.url}/v1/db/rr`, { method: 'DELETE' })).status, 200);
    await query(d.port, 'rr', 'CREATE TABLE t(x, z)');
    await query(d.port, 'rr', 'INSERT INTO t VALUES (7, 8)');
    const n = await WsRpc.open(d.port, '/v1/db/rr/rpc');
    const nid = (await n.ok('subscribeCDC', { fromLSN: 0 })).subscriptionId;
    const ev = await until(n, nid, (e) => e.length >= 2);
    assert.deepEqual(ev.map(({ lsn, operation, sql, after }) => ({ lsn, operation, sql, after })), [
      { lsn: 1, operation: 'DDL', sql: 'CREATE TABLE t(x, z)', after: undefined },
      { lsn: 2, operation: 'INSERT', sql: undefined, after: { x: 7, z: 8 } },
    ]);
    await old.close();
    await n.close();
  } finally {
    await d.cleanup();
  }
});

test('a subscription outlives its database hibernating', async () => {
  const d = await startDosqld({ conf: '[engine]\nidle_timeout = 300ms\n' });
  try {
    await query(d.port, 'h', 'CREATE TABLE t(x)');
    const c = await WsRpc.open(d.port, '/v1/db/h/rpc');
    const { subscriptionId: id } = await c.ok('subscribeCDC', {});
    await query(d.port, 'h', 'INSERT INTO t VALUES (1)');
    await until(c, id, (e) => e.length >= 1);
    const st = await untilHibernated(d.port);
    assert.equal(st.actorsOpen, 0, 'hibernated');
    assert.equal(st.subscriptions, 1);
    const w = await query(d.port, 'h', 'INSERT INTO t VALUES (2)');
    const ev = await until(c, id, (e) => e.length >= 2);
    assert.deepEqual(ev.map((e) => [e.lsn, e.after.x]), [[w.lsn - 1, 1], [w.lsn, 2]]);
    await c.close();
  } finally {
    await d.cleanup();
  }
});

test('dropping a database ends its subscriptions; a new one under the name starts afresh', async () => {
  const d = await startDosqld();
  try {
    await query(d.port, 'dr', 'CREATE TABLE t(x)');
    for (let i = 0; i < 5; i++) await query(d.port, 'dr', 'INSERT INTO t VALUES (?)', [i]);
    const c = await WsRpc.open(d.port, '/v1/db/dr/rpc');
    const { subscriptionId: id } = await c.ok('subscribeCDC', {});
    const s = await sse(d.port, '/v1/db/dr/cdc');
    assert.equal((await fetch(`${d.url}/v1/db/dr`, { method: 'DELETE' })).status, 200);
    await within(5000, (async () => { while (!c.notes.some((n) => n.method === 'cdc.end')) await sleep(10); })(), 'cdc.end');
    const end = c.notes.find((n) => n.method === 'cdc.end').params;
    assert.equal(end.subscriptionId, id);
    assert.equal(end.error.code, 'SUBSCRIPTION_ERROR');
    assert.match(end.error.message, /dropped/);
    await within(5000, s.ended, 'the SSE stream ends');
    assert.equal(s.blocks.at(-1).event, 'end');
    // The new database's commits, from LSN 1, reach a new subscriber.
    const n = await WsRpc.open(d.port, '/v1/db/dr/rpc');
    const nid = (await n.ok('subscribeCDC', { fromLSN: 0 })).subscriptionId;
    const w = await query(d.port, 'dr', 'CREATE TABLE u(y); INSERT INTO u VALUES (7)');
    assert.equal(w.lsn, 1);
    const ev = await until(n, nid, (e) => e.length >= 2);
    assert.deepEqual(ev.map((e) => [e.lsn, e.operation]), [[1, 'DDL'], [1, 'INSERT']]);
    assert.equal(events(c, id).length, 0, 'the old subscription got nothing of the new database');
    await c.close();
    await n.close();
  } finally {
    await d.cleanup();
  }
});

test('an SSE client that stops reading holds back only itself, then gets every event once; one that hangs up leaves no subscription', async () => {
  const d = await startDosqld({ conf: '[cdc]\nbuffer_size = 64K\n' });
  try {
    await query(d.port, 'sr', 'CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)');
    const s = await sse(d.port, '/v1/db/sr/cdc?operations=INSERT');
    s.res.pause(); // reads nothing from here on
    const ws = await WsRpc.open(d.port, '/v1/db/sr/rpc');
    const wid = (await ws.ok('subscribeCDC', { operations: ['INSERT'] })).subscriptionId;
    const lsnOf = new Map();
    await within(60000, Promise.all(Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < 150; i++) {
        const n = w * 150 + i + 1;
        lsnOf.set(n, (await query(d.port, 'sr', 'INSERT INTO t VALUES (?, randomblob(3000))', [n])).lsn);
      }
    })), 'writers beside a stalled SSE client');
    const last = Math.max(...lsnOf.values());
    checkExactlyOnce(await until(ws, wid, (e) => e.length > 0 && e.at(-1).lsn >= last), 1, lsnOf, 'the WebSocket one');
    s.res.resume();
    const got = await sseUntil(s, (b) => b.length > 0 && b.at(-1).data.lsn >= last);
    checkExactlyOnce(got.map((b) => b.data), 1, lsnOf, 'the SSE one, after it read again');
    // Both hang up: nothing of them stays.
    s.req.destroy();
    ws.ws.terminate();
    let st;
    for (let i = 0; i < 50; i++) {
      st = (await post(d.port, '/v1/rpc', { id: 1, method: 'getStats', params: {} })).json.result.server;
      if (st.subscriptions === 0) break;
      await sleep(100);
    }
    assert.equal(st.subscriptions, 0);
  } finally {
    await d.cleanup();
  }
});

// [cdc] coalesce_cpu = 0 counts the server busy at all times, so every
// database's subscribers are sent to at most every coalesce_interval; the
// subscribers with the same id, encoding and operations share each batch's
// message. Every event still arrives once, in order, with its filters.
test('coalescing: a busy server sends fewer, larger messages, the same to alike subscribers, every event once and in order', async () => {
  const d = await startDosqld({ conf: '[cdc]\ncoalesce_interval = 150ms\ncoalesce_cpu = 0\n' });
  try {
    await query(d.port, 'co', 'CREATE TABLE a(k INTEGER PRIMARY KEY, v); CREATE TABLE b(k INTEGER PRIMARY KEY, v)');
    const open = async (params) => {
      const c = await WsRpc.open(d.port, '/v1/db/co/rpc');
      c.raw = [];
      c.ws.on('message', (data) => c.raw.push(data.toString()));
      const { subscriptionId } = await c.ok('subscribeCDC', params);
      return { c, id: subscriptionId };
    };
    const all1 = await open({});
    const all2 = await open({});
    const inserts = await open({ operations: ['INSERT'] });
    const onlyB = await open({ tables: ['b'] });
    // A busy feed's subscribers wait 0.5 ms each between sends (up to
    // coalesce_interval): with 27 of them, 13.5 ms.
    const more = [];
    for (let i = 0; i < 20; i++) more.push(await open({}));
    const stream = await sse(d.port, '/v1/db/co/cdc');
    const stream2 = await sse(d.port, '/v1/db/co/cdc');
    const streamB = await sse(d.port, '/v1/db/co/cdc?tables=b');
    const w = await WsRpc.open(d.port, '/v1/db/co/rpc');
    const lsns = [];
    for (let i = 1; i <= 40; i++) {
      const sql = i % 4 === 0 ? `UPDATE a SET v = v + 1 WHERE k = ${i - 1}` : `INSERT INTO ${i % 2 ? 'a' : 'b'} VALUES (${i}, ${i})`;
      lsns.push((await w.ok('query', { sql })).lsn);
    }
    const want = (filter) => lsns.filter((_, k) => filter(k + 1));
    const got = async (s, n) => (await until(s.c, s.id, (e) => e.length >= n, `${n} events`)).map((e) => e.lsn);
    assert.deepEqual(await got(all1, 40), lsns);
    assert.deepEqual(await got(all2, 40), lsns);
    assert.deepEqual(await got(inserts, 30), want((i) => i % 4 !== 0));
    assert.deepEqual(await got(onlyB, 10), want((i) => i % 2 === 0 && i % 4 !== 0));
    await sleep(400); // nothing more, nothing twice
    assert.equal(events(all1.c, all1.id).length, 40);
    assert.equal(events(inserts.c, inserts.id).length, 30);
    assert.equal(events(onlyB.c, onlyB.id).length, 10);
    const notes = (s) => s.c.raw.filter((m) => m.includes('"method":"cdc"'));
    assert.ok(notes(all1).length < 40, `40 commits in ${notes(all1).length} messages: coalesced`);
    assert.deepEqual(notes(all1), notes(all2), 'alike subscribers get the same messages');
    const blocks = await sseUntil(stream, (b) => b.length >= 40);
    assert.deepEqual(blocks.map((b) => b.data.lsn), lsns, 'Server-Sent Events too');
    assert.deepEqual(blocks.map((b) => b.id), lsns.map(String), 'each commit\'s (only) event carries its id');
    assert.deepEqual(await sseUntil(stream2, (b) => b.length >= 40), blocks, 'alike SSE streams get the same');
    const bOnly = await sseUntil(streamB, (b) => b.length >= 10);
    assert.deepEqual(bOnly.map((b) => b.data.lsn), want((i) => i % 2 === 0 && i % 4 !== 0));
    const st = await w.ok('getStats', {});
    assert.ok(st.server.cdcCoalesced > 0, `cdcCoalesced ${st.server.cdcCoalesced}`);
    assert.ok(await metric(d.port, 'dosqld_cdc_coalesced_total') > 0);
    for (const x of [stream, stream2, streamB]) x.req.destroy();
    assert.deepEqual(await got(more[19], 40), lsns);
    for (const s of [all1, all2, inserts, onlyB, ...more]) await s.c.close();
    await w.close();
  } finally {
    await d.cleanup();
  }
});

// Subscribers hanging up in the middle of coalesced rounds (called 16 at a
// time): the others get every event once, the server drops the gone ones.
test('subscribers that hang up while sends are coalesced leave the others whole', async () => {
  const d = await startDosqld({ conf: '[cdc]\ncoalesce_interval = 50ms\ncoalesce_cpu = 0\n' });
  try {
    await query(d.port, 'hu', 'CREATE TABLE t(n INTEGER PRIMARY KEY)');
    const subs = [];
    for (let i = 0; i < 40; i++) {
      const c = await WsRpc.open(d.port, '/v1/db/hu/rpc');
      subs.push({ c, id: (await c.ok('subscribeCDC', {})).subscriptionId });
    }
    const lsnOf = new Map();
    const write = async (from, to) => {
      for (let n = from; n <= to; n++) lsnOf.set(n, (await query(d.port, 'hu', 'INSERT INTO t VALUES (?)', [n])).lsn);
    };
    await write(1, 50);
    // Every other one goes, abruptly, while the writes go on.
    const going = write(51, 150);
    for (let i = 0; i < 40; i += 2) {
      subs[i].c.ws.terminate();
      await sleep(3);
    }
    await going;
    const last = Math.max(...lsnOf.values());
    for (let i = 1; i < 40; i += 2) {
      const ev = await until(subs[i].c, subs[i].id, (e) => e.length > 0 && e.at(-1).lsn >= last, `subscriber ${i}`);
      assert.deepEqual(ev.map((e) => e.after.n), [...lsnOf.keys()], `subscriber ${i}: every event once, in order`);
    }
    await within(5000, (async () => {
      while ((await subs[1].c.ok('getStats', {})).database.cdc.subscriptions !== 20) await sleep(20);
    })(), 'the gone subscriptions dropped');
    const { lsn } = await query(d.port, 'hu', 'INSERT INTO t VALUES (1000)');
    await until(subs[39].c, subs[39].id, (e) => e.at(-1).lsn === lsn, 'still serving');
    for (let i = 1; i < 40; i += 2) await subs[i].c.close();
  } finally {
    await d.cleanup();
  }
});

// Without coalescing (the default, idle server) each sync's commits go at once.
test('an idle server sends each commit as it becomes durable', async () => {
  const d = await startDosqld({ conf: '[cdc]\ncoalesce_interval = 5s\n' });
  try {
    await query(d.port, 'idle', 'CREATE TABLE a(k INTEGER PRIMARY KEY)');
    const c = await WsRpc.open(d.port, '/v1/db/idle/rpc');
    const { subscriptionId: id } = await c.ok('subscribeCDC', {});
    for (let i = 1; i <= 3; i++) {
      const { lsn } = await query(d.port, 'idle', `INSERT INTO a VALUES (${i})`);
      const t0 = Date.now();
      const ev = await until(c, id, (e) => e.some((x) => x.lsn === lsn));
      assert.ok(Date.now() - t0 < 2000, 'not held for the 5 s interval');
      assert.equal(ev.length, i);
    }
    await c.close();
  } finally {
    await d.cleanup();
  }
});
