// Interop: libSQL's own client (@libsql/client, pinned in package-lock.json)
// against a real dosqld, unchanged, over HTTP (Hrana's /v2/pipeline with
// batons) and WebSocket (hrana2). The database X is at
// http://HOST:PORT/v1/db/X/ (the trailing slash: the client resolves its
// paths against it) and ws://HOST:PORT/v1/db/X/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@libsql/client';
import { startDosqld, sleep, within } from '../integration/lib/harness.mjs';

const WRITE = 'libsql-write-token-0123456789';
const READ = 'libsql-read-token-0123456789';

let d;
before(async () => {
  d = await startDosqld({
    conf: `[auth]
token = ${WRITE} write
token = ${READ} read
[rpc]
hrana_stream_timeout = 1s
`,
  });
});
after(async () => { await d?.cleanup(); });

const SCHEMES = ['http', 'ws'];
const url = (scheme, db) => `${scheme}://127.0.0.1:${d.port}/v1/db/${db}/`;
const open = (scheme, db, opts = {}) => createClient({ url: url(scheme, db), authToken: WRITE, ...opts });

// Every client of a test is closed however the test ends.
async function using(clients, fn) {
  try { return await fn(); } finally { for (const c of clients) c.close(); }
}

for (const scheme of SCHEMES) {
  test(`${scheme}: execute with every value type, positional and named arguments`, async () => {
    const c = open(scheme, `types_${scheme}`);
    await using([c], async () => {
      await c.execute('CREATE TABLE v (i INTEGER, f REAL, t TEXT, b BLOB, n)');
      const r = await c.execute({
        sql: 'INSERT INTO v VALUES (?, ?, ?, ?, ?)',
        args: [42, 2.5, 'héllo ✓ "q"', new Uint8Array([0, 1, 254, 255]), null],
      });
      assert.equal(r.rowsAffected, 1);
      assert.equal(r.lastInsertRowid, 1n);
      await c.execute({ sql: 'INSERT INTO v (i, t) VALUES (:i, $t)', args: { i: -7, t: 'named' } });
      await c.execute({ sql: 'INSERT INTO v (i, f) VALUES (@i, :f)', args: { i: 9007199254740993n, f: 1e300 } });
      // (the default intMode refuses integers past 2^53: row 3's is read below)
      const rows = (await c.execute('SELECT i, f, t, b, n FROM v WHERE rowid < 3 ORDER BY rowid')).rows;
      assert.equal(rows.length, 2);
      assert.equal(rows[0].i, 42);
      assert.equal(rows[0].f, 2.5);
      assert.equal(rows[0].t, 'héllo ✓ "q"');
      assert.deepEqual([...new Uint8Array(rows[0].b)], [0, 1, 254, 255]);
      assert.equal(rows[0].n, null);
      assert.equal(rows[1].i, -7);
      assert.equal(rows[1].t, 'named');
      await assert.rejects(c.execute('SELECT i FROM v WHERE rowid = 3'), /too large/);
      const third = (await c.execute('SELECT typeof(i) AS ti, f FROM v WHERE rowid = 3')).rows[0];
      assert.equal(third.ti, 'integer');
      assert.equal(third.f, 1e300);
      const cols = (await c.execute('SELECT i, t FROM v LIMIT 1'));
      assert.deepEqual(cols.columns, ['i', 't']);
      assert.deepEqual(cols.columnTypes, ['INTEGER', 'TEXT']);
    });
    // intMode "bigint": integers past 2^53 come back whole.
    const big = open(scheme, `types_${scheme}`, { intMode: 'bigint' });
    await using([big], async () => {
      const r = await big.execute('SELECT i FROM v ORDER BY rowid');
      assert.deepEqual(r.rows.map((x) => x.i), [42n, -7n, 9007199254740993n]);
    });
  });

  test(`${scheme}: batch in each transaction mode is all or nothing`, async () => {
    const c = open(scheme, `batch_${scheme}`);
    await using([c], async () => {
      await c.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
      const rs = await c.batch([
        { sql: 'INSERT INTO t VALUES (?, ?)', args: [1, 'a'] },
        { sql: 'INSERT INTO t VALUES (?, ?)', args: [2, 'b'] },
        'SELECT count(*) AS n FROM t',
      ], 'write');
      assert.equal(rs.length, 3);
      assert.equal(rs[2].rows[0].n, 2);
      // The second statement fails: the first is rolled back with it.
      await assert.rejects(c.batch([
        "INSERT INTO t VALUES (3, 'c')",
        'INSERT INTO t VALUES (1, NULL)',
      ], 'deferred'), (e) => {
        assert.equal(e.code, 'SQLITE_CONSTRAINT');
        return true;
      });
      assert.equal((await c.execute('SELECT count(*) AS n FROM t')).rows[0].n, 2);
      // "read": a read-only snapshot; a write in it is refused.
      const r = await c.batch(['SELECT v FROM t ORDER BY id'], 'read');
      assert.deepEqual(r[0].rows.map((x) => x.v), ['a', 'b']);
      await assert.rejects(c.batch(["INSERT INTO t VALUES (9, 'z')"], 'read'));
      assert.equal((await c.execute('SELECT count(*) AS n FROM t')).rows[0].n, 2);
    });
  });

  test(`${scheme}: interactive transactions commit, roll back, and are their own`, async () => {
    const c = open(scheme, `tx_${scheme}`);
    await using([c], async () => {
      await c.execute('CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER)');
      await c.execute('INSERT INTO acct VALUES (1, 100), (2, 0)');
      const tx = await c.transaction('write');
      await tx.execute('UPDATE acct SET bal = bal - 30 WHERE id = 1');
      await tx.execute('UPDATE acct SET bal = bal + 30 WHERE id = 2');
      // The transaction sees its own writes.
      assert.equal((await tx.execute('SELECT bal FROM acct WHERE id = 2')).rows[0].bal, 30);
      await tx.commit();
      assert.deepEqual((await c.execute('SELECT bal FROM acct ORDER BY id')).rows.map((r) => r.bal), [70, 30]);

      const tx2 = await c.transaction('write');
      await tx2.execute('DELETE FROM acct');
      await tx2.rollback();
      assert.equal((await c.execute('SELECT count(*) AS n FROM acct')).rows[0].n, 2);

      // A transaction closed without a commit rolls back.
      const tx3 = await c.transaction('write');
      await tx3.execute('DELETE FROM acct WHERE id = 1');
      tx3.close();
      await sleep(100);
      assert.equal((await c.execute('SELECT count(*) AS n FROM acct')).rows[0].n, 2);

      // An error inside leaves the transaction open; the client decides.
      const tx4 = await c.transaction('write');
      await tx4.execute('INSERT INTO acct VALUES (3, 5)');
      await assert.rejects(tx4.execute('INSERT INTO acct VALUES (3, 6)'), /UNIQUE/);
      await tx4.commit();
      assert.equal((await c.execute('SELECT bal FROM acct WHERE id = 3')).rows[0].bal, 5);
    });
  });

  test(`${scheme}: executeMultiple runs each statement, triggers and comments included`, async () => {
    const c = open(scheme, `multi_${scheme}`);
    await using([c], async () => {
      await c.executeMultiple(`
        -- a log of inserts; the trigger's body holds semicolons
        CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
        CREATE TABLE log (msg TEXT);
        CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
          INSERT INTO log VALUES ('new ' || NEW.v || ';');
        END;
        /* two rows */ INSERT INTO t (v) VALUES ('a;b'); INSERT INTO t (v) VALUES ('c')
      `);
      assert.deepEqual((await c.execute('SELECT msg FROM log ORDER BY rowid')).rows.map((r) => r.msg),
        ['new a;b;', 'new c;']);
      // It stops at its first error; what ran before it stays.
      await assert.rejects(c.executeMultiple("INSERT INTO t (v) VALUES ('d'); INSERT INTO nope VALUES (1); INSERT INTO t (v) VALUES ('e');"),
        /no such table: nope/);
      assert.deepEqual((await c.execute('SELECT v FROM t ORDER BY id')).rows.map((r) => r.v), ['a;b', 'c', 'd']);
      // BEGIN and COMMIT in the text are the stream's transaction.
      await c.executeMultiple("BEGIN; INSERT INTO t (v) VALUES ('x'); ROLLBACK;");
      assert.equal((await c.execute("SELECT count(*) AS n FROM t WHERE v = 'x'")).rows[0].n, 0);
    });
  });

  test(`${scheme}: migrate turns foreign keys off around its transaction`, async () => {
    // The rebuild of a parent table (SQLite's way to change a table):
    // with foreign keys on, DROP TABLE parent would delete every child
    // (ON DELETE CASCADE); client.migrate() sends PRAGMA foreign_keys=off
    // first, as it does against sqld.
    const c = open(scheme, `fk_${scheme}`);
    await using([c], async () => {
      await c.batch([
        'CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT)',
        'CREATE TABLE child (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id) ON DELETE CASCADE)',
        "INSERT INTO parent VALUES (1, 'p')",
        'INSERT INTO child VALUES (10, 1), (11, 1)',
      ], 'write');
      await c.migrate([
        'CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT, extra TEXT)',
        'INSERT INTO parent_new (id, name) SELECT id, name FROM parent',
        'DROP TABLE parent',
        'ALTER TABLE parent_new RENAME TO parent',
      ]);
      assert.equal((await c.execute('SELECT count(*) AS n FROM child')).rows[0].n, 2, 'the children survived the rebuild');
      // Foreign keys are on again for what follows.
      await assert.rejects(c.execute('INSERT INTO child VALUES (12, 99)'), (e) => e.code === 'SQLITE_CONSTRAINT');
      await c.execute('DELETE FROM parent WHERE id = 1');
      assert.equal((await c.execute('SELECT count(*) AS n FROM child')).rows[0].n, 0, 'ON DELETE CASCADE is back');
    });
  });

  test(`${scheme}: errors carry SQLite's codes and dosqld's messages`, async () => {
    const c = open(scheme, `err_${scheme}`);
    await using([c], async () => {
      await assert.rejects(c.execute('SELEC 1'), (e) => e.code === 'SQLITE_ERROR' && /syntax error/.test(e.message));
      await assert.rejects(c.execute('SELECT * FROM missing'), (e) => e.code === 'SQLITE_ERROR' && /no such table/.test(e.message));
      await assert.rejects(c.execute("ATTACH 'x.db' AS x"), (e) => e.code === 'FORBIDDEN' && /ATTACH/.test(e.message));
      await assert.rejects(c.execute({ sql: 'SELECT ?, :a', args: [1] }), /./);
    });
  });

  test(`${scheme}: tokens: a read token reads and may not write, a bad one is refused`, async () => {
    const w = open(scheme, `auth_${scheme}`);
    await using([w], async () => { await w.execute('CREATE TABLE t (x)'); await w.execute('INSERT INTO t VALUES (1)'); });
    const r = open(scheme, `auth_${scheme}`, { authToken: READ });
    await using([r], async () => {
      assert.equal((await r.execute('SELECT x FROM t')).rows[0].x, 1);
      await assert.rejects(r.execute('INSERT INTO t VALUES (2)'), (e) => e.code === 'FORBIDDEN');
    });
    const bad = open(scheme, `auth_${scheme}`, { authToken: 'not-a-token-at-all-0000' });
    await using([bad], async () => {
      await assert.rejects(within(5000, bad.execute('SELECT 1'), 'a bad token'));
    });
    const none = createClient({ url: url(scheme, `auth_${scheme}`) });
    await using([none], async () => {
      await assert.rejects(within(5000, none.execute('SELECT 1'), 'no token'));
    });
  });
}

test('http: an idle stream closes after hrana_stream_timeout and its transaction rolls back', async () => {
  const c = open('http', 'idle');
  await using([c], async () => {
    await c.execute('CREATE TABLE t (x)');
    const tx = await c.transaction('write');
    await tx.execute('INSERT INTO t VALUES (1)');
    await sleep(2500); // past the 1 s timeout (the sweep runs every engine tick)
    await assert.rejects(tx.execute('INSERT INTO t VALUES (2)'), /baton|stream/);
    tx.close();
    assert.equal((await c.execute('SELECT count(*) AS n FROM t')).rows[0].n, 0);
  });
});

test('ws: two transactions of one connection are separate streams', async () => {
  const c = open('ws', 'streams');
  await using([c], async () => {
    await c.execute('CREATE TABLE t (x)');
    const a = await c.transaction('read');
    assert.equal((await a.execute('SELECT count(*) AS n FROM t')).rows[0].n, 0); // its snapshot begins
    const b = await c.transaction('write');
    await b.execute('INSERT INTO t VALUES (1)');
    await b.commit();
    // a reads the database as its snapshot began, before b's commit.
    assert.equal((await a.execute('SELECT count(*) AS n FROM t')).rows[0].n, 0);
    a.close();
    assert.equal((await c.execute('SELECT count(*) AS n FROM t')).rows[0].n, 1);
  });
});

test('the Hrana versions dosqld does not serve are refused, so clients fall back', async () => {
  const base = `http://127.0.0.1:${d.port}/v1/db/probe`;
  const auth = { authorization: `Bearer ${WRITE}` };
  assert.equal((await fetch(`${base}/v2`, { headers: auth })).status, 200);
  assert.equal((await fetch(`${base}/v3-protobuf`, { headers: auth })).status, 404);
  assert.equal((await fetch(`${base}/v3`, { headers: auth })).status, 404);
  // A baton that was never handed out.
  const r = await fetch(`${base}/v2/pipeline`, {
    method: 'POST', headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ baton: 'f'.repeat(32), requests: [{ type: 'close' }] }),
  });
  assert.equal(r.status, 400);
  assert.match((await r.json()).message, /baton/);
  // describe is not built: a clear error, the stream goes on.
  const p = await fetch(`${base}/v2/pipeline`, {
    method: 'POST', headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ baton: null, requests: [{ type: 'describe', sql: 'SELECT 1' }, { type: 'execute', stmt: { sql: 'SELECT 1' } }, { type: 'close' }] }),
  });
  const body = await p.json();
  assert.equal(body.baton, null);
  assert.equal(body.results[0].type, 'error');
  assert.match(body.results[0].error.message, /describe is not supported/);
  assert.equal(body.results[1].type, 'ok');
  assert.equal(body.results[1].response.result.rows[0][0].value, '1');
});

test('http: open streams are bounded by max_connections; closing one makes room', async () => {
  const small = await startDosqld({ conf: '[server]\nmax_connections = 4\n' });
  try {
    const pipeline = async (baton, requests) => {
      const r = await fetch(`http://127.0.0.1:${small.port}/v1/db/cap/v2/pipeline`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ baton, requests }),
      });
      return { status: r.status, body: await r.json() };
    };
    const batons = [];
    for (let i = 0; i < 4; i++) { // streams left open (no close request)
      const r = await pipeline(null, [{ type: 'execute', stmt: { sql: 'SELECT 1' } }]);
      assert.equal(r.status, 200);
      batons.push(r.body.baton);
    }
    const over = await pipeline(null, [{ type: 'execute', stmt: { sql: 'SELECT 1' } }]);
    assert.equal(over.status, 503);
    assert.equal(over.body.code, 'RESOURCE_EXHAUSTED');
    const closed = await pipeline(batons[0], [{ type: 'close' }]);
    assert.equal(closed.status, 200);
    assert.equal(closed.body.baton, null);
    assert.equal((await pipeline(null, [{ type: 'close' }])).status, 200, 'room again');
  } finally {
    await small.cleanup();
  }
});
