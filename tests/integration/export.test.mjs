// Export: GET /v1/db/{db}/export gives the database as a SQLite file that
// the sqlite3 tool opens and checks (integrity_check ok), with every
// type, an index, a view and a trigger, and the rows of the last commit;
// ?lsn=N gives the database as of that commit; dosqld's own tables are left
// out (an idempotency key's records); a large database streams
// whole; bad requests are refused; nothing is left in the data directory.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir } from './lib/harness.mjs';
import { query } from './lib/rpc.mjs';

let d, root, dataDir;
before(async () => {
  root = tempDir('dosqld-export-');
  dataDir = path.join(root, 'data');
  d = await startDosqld({ dataDir });
});
after(async () => {
  await d?.cleanup();
  if (root) rmSync(root, { recursive: true, force: true });
});

const sqlite = (file, sql) => execFileSync('sqlite3', ['-batch', file, sql], { encoding: 'utf8' }).trim();

async function exportTo(db, qs = '') {
  const r = await fetch(`${d.url}/v1/db/${db}/export${qs}`);
  const body = Buffer.from(await r.arrayBuffer());
  const file = path.join(root, `${db}-${Math.random().toString(36).slice(2)}.db`);
  if (r.status === 200) writeFileSync(file, body);
  return { status: r.status, type: r.headers.get('content-type'), lsn: r.headers.get('x-dosqld-lsn'), body, file };
}

test('the last commit as a SQLite file: every type, index, view and trigger; integrity ok', async () => {
  await query(d.port, 'ex', 'CREATE TABLE t(id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, n)');
  await query(d.port, 'ex', 'CREATE INDEX t_s ON t(s)');
  await query(d.port, 'ex', 'CREATE VIEW v AS SELECT id, s FROM t WHERE i > 0');
  await query(d.port, 'ex', 'CREATE TABLE log(x); CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.id); END');
  await query(d.port, 'ex', "INSERT INTO t VALUES (1, 9007199254740993, 1.5, 'héllo', x'00ff10', NULL), (2, -4, -0.25, '', x'', 'x')");
  const first = await query(d.port, 'ex', 'SELECT 1');
  const e = await exportTo('ex');
  assert.equal(e.status, 200);
  assert.equal(e.type, 'application/vnd.sqlite3');
  assert.equal(Number(e.lsn), first.lsn);
  assert.equal(e.body.subarray(0, 16).toString('latin1'), 'SQLite format 3\0');
  assert.equal(sqlite(e.file, 'PRAGMA integrity_check'), 'ok');
  assert.equal(sqlite(e.file, "SELECT id, i, r, s, hex(b), quote(n) FROM t ORDER BY id"),
    '1|9007199254740993|1.5|héllo|00FF10|NULL\n2|-4|-0.25|||\'x\'');
  assert.equal(sqlite(e.file, 'SELECT group_concat(x) FROM log'), '1,2');
  assert.equal(sqlite(e.file, "SELECT type || ':' || name FROM sqlite_schema ORDER BY name"),
    'table:log\ntable:t\ntrigger:t_ins\nindex:t_s\nview:v');
  assert.equal(sqlite(e.file, 'SELECT count(*) FROM v'), '1');
  assert.equal(sqlite(e.file, 'PRAGMA journal_mode'), 'delete');
  // dosqld's own tables are not among them.
  assert.equal(sqlite(e.file, "SELECT count(*) FROM sqlite_schema WHERE name LIKE '\\_dsq%' ESCAPE '\\'"), '0');
});

test('?lsn=N: the database as of that commit', async () => {
  await query(d.port, 'hist', 'CREATE TABLE h(x)');
  const lsns = [];
  for (let i = 1; i <= 5; i++) lsns.push((await query(d.port, 'hist', 'INSERT INTO h VALUES (?)', [i])).lsn);
  await query(d.port, 'hist', 'DELETE FROM h');
  const e = await exportTo('hist', `?lsn=${lsns[2]}`);
  assert.equal(e.status, 200);
  assert.equal(Number(e.lsn), lsns[2]);
  assert.equal(sqlite(e.file, 'SELECT group_concat(x) FROM h'), '1,2,3');
  assert.equal(sqlite(e.file, 'PRAGMA integrity_check'), 'ok');
  const now = await exportTo('hist');
  assert.equal(sqlite(now.file, 'SELECT count(*) FROM h'), '0');
  // Refusals: not a number, past the last commit.
  const bad = await exportTo('hist', '?lsn=abc');
  assert.equal(bad.status, 400);
  assert.match(bad.body.toString(), /lsn must be/);
  const future = await exportTo('hist', `?lsn=${lsns[4] + 1000}`);
  assert.equal(JSON.parse(future.body).error.code, 'INVALID_LSN');
});

test('a database of many pages streams whole; no file is left behind', async () => {
  await query(d.port, 'big', 'CREATE TABLE big(id INTEGER PRIMARY KEY, pad BLOB)');
  for (let k = 0; k < 8; k++)
    await query(d.port, 'big', `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO big(pad) SELECT randomblob(1000) FROM n`);
  const e = await exportTo('big');
  assert.equal(e.status, 200);
  assert.ok(e.body.length > 8e6, `${e.body.length} bytes`);
  assert.equal(sqlite(e.file, 'PRAGMA integrity_check'), 'ok');
  assert.equal(sqlite(e.file, 'SELECT count(*), sum(length(pad)) FROM big'), '8000|8000000');
  const tmp = path.join(dataDir, 'tmp');
  assert.deepEqual(readdirSync(tmp).filter((f) => f.startsWith('export-')), []);
});

test("dosqld's own tables (idempotency keys' records) are left out of the file, bytes and all; it imports again", async () => {
  await query(d.port, 'own', 'CREATE TABLE k(x)');
  const r = await fetch(`${d.url}/v1/db/own/query`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sql: "INSERT INTO k VALUES ('kept') RETURNING 'answer-only-marker' AS m", idempotencyKey: 'export-1' }),
  });
  assert.equal(r.status, 200, await r.text());
  const e = await exportTo('own');
  assert.equal(e.status, 200);
  assert.equal(sqlite(e.file, "SELECT count(*) FROM sqlite_schema WHERE name LIKE '\\_dsq%' ESCAPE '\\'"), '0');
  assert.equal(sqlite(e.file, 'SELECT x FROM k'), 'kept');
  assert.equal(sqlite(e.file, 'PRAGMA integrity_check'), 'ok');
  assert.equal(e.body.indexOf('answer-only-marker'), -1, 'the record left no bytes in free pages');
  const imp = await fetch(`${d.url}/v1/db/own-copy/import`, {
    method: 'PUT', headers: { 'content-type': 'application/vnd.sqlite3' }, body: e.body,
  });
  assert.equal(imp.status, 200, await imp.text());
  assert.deepEqual((await query(d.port, 'own-copy', 'SELECT x FROM k')).rows, [['kept']]);
});
