// Import's sandbox: statements hidden behind comments (ATTACH of a file
// outside the data directory, COMMIT or PRAGMA) are refused as the bare
// ones are, and a schema row renamed to one of dosqld's own tables
// through writable_schema fails the import.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { startDosqld, tempDir } from './lib/harness.mjs';
import { query } from './lib/rpc.mjs';

const ADMIN = 'admin-token-0123456789';
let d, root;
const auth = { authorization: `Bearer ${ADMIN}` };
before(async () => {
  root = tempDir('dosqld-import-escape-');
  d = await startDosqld({ conf: `[auth]\ntoken = ${ADMIN} admin\n` });
});
after(async () => {
  await d?.cleanup();
  if (root) rmSync(root, { recursive: true, force: true });
});
const put = (db, body) => fetch(`${d.url}/v1/db/${db}/import`, {
  method: 'PUT', headers: { 'content-type': 'application/sql', ...auth }, body,
}).then(async (r) => ({ status: r.status, json: await r.json() }));

test('a comment before ATTACH does not let an import write a file outside the data directory', async () => {
  const outside = path.join(root, 'escaped.db');
  const r = await put('esc1', `/* x */ ATTACH 'file:${outside}?vfs=unix' AS x;\nCREATE TABLE x.t(a);\nINSERT INTO x.t VALUES (1);\nCREATE TABLE t(a);\n`);
  assert.notEqual(r.status, 200, JSON.stringify(r.json));
  assert.equal(existsSync(outside), false, 'the import wrote a file outside the data directory');
});

test('a comment before COMMIT does not end the import\'s transaction', async () => {
  const r = await put('esc2', 'CREATE TABLE a(x);\n-- c\nCOMMIT;\nCREATE TABLE b(x);\nINSERT INTO nowhere VALUES (1);\n');
  assert.notEqual(r.status, 200);
  // One commit: the failure leaves nothing behind.
  const q = await query(d.port, 'esc2', "SELECT count(*) FROM sqlite_schema WHERE name IN ('a','b')", undefined, { headers: auth });
  assert.deepEqual(q.rows, [[0]]);
});

test('a comment before PRAGMA does not let other PRAGMAs through', async () => {
  const r = await put('esc3', '/**/PRAGMA journal_mode=OFF;\nCREATE TABLE t(x);\n');
  assert.notEqual(r.status, 200, JSON.stringify(r.json));
});

test('schema rows written straight into sqlite_schema cannot name dosqld\'s own tables', async () => {
  const r = await put('esc4', [
    'CREATE TABLE p(txid TEXT PRIMARY KEY, coordinator TEXT NOT NULL, created INTEGER NOT NULL);',
    "INSERT INTO p VALUES ('fake', 'x', 1);",
    'PRAGMA writable_schema=ON;',
    "UPDATE sqlite_schema SET name = '_' || 'dsq' || '_prepared', tbl_name = '_' || 'dsq' || '_prepared', " +
      "sql = replace(sql, 'TABLE p', 'TABLE _' || 'dsq' || '_prepared') WHERE name = 'p';",
    "UPDATE sqlite_schema SET name = 'sqlite_autoindex__' || 'dsq' || '_prepared_1', tbl_name = '_' || 'dsq' || '_prepared' WHERE tbl_name = 'p';",
    'PRAGMA writable_schema=OFF;',
  ].join('\n'));
  assert.notEqual(r.status, 200, JSON.stringify(r.json));
  const q = await query(d.port, 'esc4', "SELECT count(*) FROM sqlite_schema", undefined, { headers: auth });
  assert.deepEqual(q.rows, [[0]]);
});
