// Import: PUT /v1/db/{db}/import loads the output of `sqlite3 X .dump`
// unchanged (its PRAGMA, BEGIN and COMMIT lines included), or a SQLite
// file, into an empty database as one commit; export then gives a file
// whose dump equals the original's. A database that is not empty, a
// statement that fails, another PRAGMA, a wrong Content-Type and a read
// token are refused, and leave the database as it was.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir } from './lib/harness.mjs';
import { query } from './lib/rpc.mjs';

const ADMIN = 'admin-token-0123456789';
const READ = 'read-token-0123456789ab';
let d, root, src;
const auth = (t = ADMIN) => ({ authorization: `Bearer ${t}` });
const sqlite = (file, sql) => execFileSync('sqlite3', ['-batch', file, sql], { encoding: 'utf8' });

before(async () => {
  root = tempDir('dosqld-import-');
  d = await startDosqld({ conf: `[auth]\ntoken = ${ADMIN} admin\ntoken = ${READ} read\n` });
  src = path.join(root, 'src.db');
  sqlite(src, `
    CREATE TABLE kinds(id INTEGER PRIMARY KEY AUTOINCREMENT, i INTEGER, r REAL, s TEXT, b BLOB, n);
    INSERT INTO kinds(i, r, s, b, n) VALUES (9007199254740993, 1.5, 'it''s', x'00ff', NULL), (-1, -2.25e-10, 'é
new line', x'', 3);
    CREATE TABLE pairs(a TEXT, b INTEGER, PRIMARY KEY (a, b)) WITHOUT ROWID;
    INSERT INTO pairs VALUES ('x', 1), ('y', 2);
    CREATE INDEX kinds_s ON kinds(s);
    CREATE VIEW positive AS SELECT id, i FROM kinds WHERE i > 0;
    CREATE TABLE audit(what);
    CREATE TRIGGER kinds_ins AFTER INSERT ON kinds BEGIN INSERT INTO audit VALUES (new.id); END;
    CREATE VIRTUAL TABLE docs USING fts5(body);
    INSERT INTO docs VALUES ('hello world'), ('goodbye moon');
  `);
});
after(async () => {
  await d?.cleanup();
  if (root) rmSync(root, { recursive: true, force: true });
});

const put = (db, body, type, token) => fetch(`${d.url}/v1/db/${db}/import`, {
  method: 'PUT', headers: { 'content-type': type, ...auth(token) }, body,
}).then(async (r) => ({ status: r.status, json: await r.json() }));

async function exported(db) {
  const r = await fetch(`${d.url}/v1/db/${db}/export`, { headers: auth() });
  assert.equal(r.status, 200);
  const file = path.join(root, `${db}-out.db`);
  writeFileSync(file, Buffer.from(await r.arrayBuffer()));
  return file;
}

async function checkLoaded(db) {
  const q = (sql) => query(d.port, db, sql, undefined, { headers: auth() });
  assert.deepEqual((await q('SELECT id, i, r, s, hex(b), n FROM kinds ORDER BY id')).rows,
    [[1, { $bigint: '9007199254740993' }, 1.5, "it's", '00FF', null], [2, -1, -2.25e-10, 'é\nnew line', '', 3]]);
  assert.deepEqual((await q('SELECT count(*) FROM pairs')).rows, [[2]]);
  assert.deepEqual((await q('SELECT * FROM positive')).rows, [[1, { $bigint: '9007199254740993' }]]);
  assert.deepEqual((await q("SELECT body FROM docs WHERE docs MATCH 'moon'")).rows, [['goodbye moon']]);
  // The trigger is there and fires now; AUTOINCREMENT goes on from 2.
  await q("INSERT INTO kinds(s) VALUES ('new')");
  assert.deepEqual((await q('SELECT max(id), (SELECT group_concat(what) FROM audit) FROM kinds')).rows, [[3, '3']]);
  await q('DELETE FROM kinds WHERE id = 3');
  await q('DELETE FROM audit');
  // Out again: a file sqlite3 checks, whose dump is the original's.
  const file = await exported(db);
  assert.equal(sqlite(file, 'PRAGMA integrity_check').trim(), 'ok');
  const clean = (t) => t.replace(/^INSERT INTO sqlite_sequence VALUES\('kinds',\d+\);$/m, '');
  assert.equal(clean(sqlite(file, '.dump')), clean(sqlite(src, '.dump')));
}

test('the output of sqlite3 .dump loads unchanged, as one commit; export gives it back', async () => {
  const dump = sqlite(src, '.dump');
  assert.match(dump, /^PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;/);
  const r = await put('fromdump', dump, 'application/sql');
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.ok(r.json.statements > 10);
  assert.ok(r.json.lsn > 0);
  await checkLoaded('fromdump');
});

test('a SQLite file loads the same', async () => {
  const r = await put('fromfile', readFileSync(src), 'application/vnd.sqlite3');
  assert.equal(r.status, 200, JSON.stringify(r.json));
  await checkLoaded('fromfile');
});

test('refusals leave the database as it was', async () => {
  // Not empty.
  const again = await put('fromdump', 'CREATE TABLE z(x);', 'application/sql');
  assert.equal(again.status, 400);
  assert.match(again.json.error.message, /is not empty/);
  // A statement that fails: nothing of what came before it stays.
  const bad = await put('broken', 'CREATE TABLE ok(x);\nINSERT INTO ok VALUES (1);\nINSERT INTO nowhere VALUES (1);\n', 'application/sql');
  assert.notEqual(bad.status, 200);
  assert.match(bad.json.error.message, /statement 2: no such table: nowhere/);
  const none = await query(d.port, 'broken', "SELECT count(*) FROM sqlite_schema WHERE name = 'ok'", undefined, { headers: auth() });
  assert.deepEqual(none.rows, [[0]]);
  // Another PRAGMA; ATTACH.
  const pragma = await put('broken', 'PRAGMA journal_mode=WAL;', 'application/sql');
  assert.match(pragma.json.error.message, /PRAGMA journal_mode is not imported/);
  const own = await put('broken', 'CREATE TABLE _dsq_prepared(txid TEXT PRIMARY KEY, coordinator TEXT, created INT);', 'application/sql');
  assert.match(own.json.error.message, /dosqld's own/);
  const attach = await put('broken', "ATTACH 'x.db' AS x;", 'application/sql');
  assert.match(attach.json.error.message, /ATTACH is not imported/);
  // Hidden behind a comment: the same.
  const hidden = await put('broken', "/* x */ VACUUM INTO '/tmp/dosqld-import-escape.db';", 'application/sql');
  assert.match(hidden.json.error.message, /VACUUM is not imported/);
  assert.ok(!existsSync('/tmp/dosqld-import-escape.db'), 'VACUUM INTO wrote its file');
  const hidden2 = await put('broken', "-- c\nATTACH '/etc/passwd' AS p;", 'application/sql');
  assert.match(hidden2.json.error.message, /ATTACH is not imported/);
  const temp = await put('broken', 'CREATE TEMP TABLE tt(x);', 'application/sql');
  assert.match(temp.json.error.message, /temporary tables/);
  const ext = await put('broken', "SELECT load_extension('x');", 'application/sql');
  assert.match(ext.json.error.message, /load_extension/);
  assert.notEqual(ext.status, 200);
  // Not SQL, not a database file; a read token; an empty body.
  assert.equal((await put('broken', '{}', 'application/json')).status, 415);
  const notdb = await put('broken', 'this is no database', 'application/vnd.sqlite3');
  assert.equal(notdb.status, 400);
  assert.match(notdb.json.error.message, /not a SQLite database/);
  assert.equal((await put('broken', 'CREATE TABLE r(x);', 'application/sql', READ)).status, 403);
  const empty = await put('broken', '-- nothing\n', 'application/sql');
  assert.match(empty.json.error.message, /holds no statement/);
});
