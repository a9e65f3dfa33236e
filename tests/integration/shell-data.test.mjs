// The dosql shell's .import and .dump against awkward input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BUILD, startDosqld, within } from './lib/harness.mjs';

const DOSQL = path.join(BUILD, 'dosql');
let d, dir;
before(async () => { d = await startDosqld(); dir = mkdtempSync(path.join(tmpdir(), 'dosql-review-')); });
after(async () => { await d?.cleanup(); rmSync(dir, { recursive: true, force: true }); });

function dosql(args, input = '') {
  const e = { ...process.env };
  delete e.DOSQL_URL;
  delete e.DOSQL_TOKEN;
  const p = spawn(DOSQL, args, { env: e, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  p.stdout.on('data', (b) => { stdout += b; });
  p.stderr.on('data', (b) => { stderr += b; });
  p.stdin.on('error', () => {});
  p.stdin.end(input);
  return within(20000, new Promise((resolve) => p.on('close', (code) => resolve({ code, stdout, stderr }))), 'dosql');
}
const url = (db) => `${d.url}/v1/db/${db}`;

test('.import stopped by a bad row: the rows before it are imported, as it says', async () => {
  const bad = path.join(dir, 'bad.csv');
  writeFileSync(bad, 'a,b\n1,2\n3,4\n5\n');
  let r = await dosql([url('imp'), '-c', `.import ${bad} t`]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /line 4: 1 fields, the header has 2 \(rows before it were imported\)/);
  r = await dosql([url('imp'), '--json', '-c', 'SELECT count(*) AS n FROM t']);
  assert.deepEqual(JSON.parse(r.stdout.trim()), { n: 2 });
});

test('.dump of a table with a generated column loads into sqlite3', async () => {
  let r = await dosql([url('gen')], 'CREATE TABLE g(a INTEGER, b AS (a * 2) STORED);\nINSERT INTO g(a) VALUES (1), (2);\n');
  assert.equal(r.code, 0, r.stderr);
  r = await dosql([url('gen'), '-c', '.dump']);
  assert.equal(r.code, 0, r.stderr);
  const file = path.join(dir, 'gen.db');
  execFileSync('sqlite3', ['-bail', file], { input: r.stdout });
  assert.equal(execFileSync('sqlite3', [file, 'SELECT a, b FROM g ORDER BY a'], { encoding: 'utf8' }), '1|2\n2|4\n');
});

test('PUT import of a SQLite file with a generated column', async () => {
  const file = path.join(dir, 'gen2.db');
  execFileSync('sqlite3', [file, 'CREATE TABLE g(a INTEGER, b AS (a * 2) STORED); INSERT INTO g(a) VALUES (1);']);
  const res = await fetch(`${d.url}/v1/db/genfile/import`, {
    method: 'PUT', headers: { 'content-type': 'application/vnd.sqlite3' }, body: readFileSync(file),
  });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
});
