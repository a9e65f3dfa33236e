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

// Start dosql on `args`, send it SIGINT once its stderr matches `when`,
// and resolve to { code, stderr } when it has exited.
function interruptWhen(args, when, input = '') {
  const e = { ...process.env };
  delete e.DOSQL_URL;
  delete e.DOSQL_TOKEN;
  const p = spawn(DOSQL, args, { env: e, stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '', sent = false;
  p.stderr.on('data', (b) => {
    stderr += b;
    if (!sent && when.test(stderr)) { sent = true; p.kill('SIGINT'); }
  });
  p.stdin.on('error', () => {});
  p.stdin.end(input);
  const done = new Promise((resolve) => p.on('close', (code, signal) => resolve({ code, signal, stderr, sent })));
  return within(60000, done, 'dosql .import until SIGINT').catch((err) => { p.kill('SIGKILL'); throw err; })
    .then((r) => {
      // (A sanitizer's report would also end it with status 1.)
      assert.doesNotMatch(r.stderr, /AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:/);
      return r;
    });
}

// Rows per .import batch for a CSV of 4 columns: ten INSERTs of 500 rows.
const BATCH = 5000;

test('Ctrl-C during .import: the batch under way is rolled back, the shell says how many rows were committed', async () => {
  const big = path.join(dir, 'big.csv');
  const lines = ['id,name,score,note'];
  for (let i = 1; i <= 600000; i++) lines.push(`${i},name${i},${i / 4},"a, ""quoted"" ${i}"`);
  writeFileSync(big, lines.join('\n') + '\n');
  // A script: SIGINT after the first progress line (100,000 rows) ends it
  // with a non-zero status.
  const r = await interruptWhen([url('big'), '-c', `.import ${big} t`], /100000 rows/);
  assert.ok(r.sent, r.stderr);
  assert.equal(r.code, 1, r.stderr);
  const m = /Error: interrupted: (\d+) rows imported and committed, none after them\n/.exec(r.stderr);
  assert.ok(m, r.stderr);
  const said = Number(m[1]);
  assert.ok(said >= 100000 && said < 600000, r.stderr);
  // What it says is what is there: whole batches, in file order, and no
  // transaction is left open (a write goes through at once).
  const q = await dosql([url('big'), '--json', '-c', 'SELECT count(*) AS n, max(CAST(id AS INTEGER)) AS top FROM t']);
  assert.equal(q.code, 0, q.stderr);
  assert.deepEqual(JSON.parse(q.stdout.trim()), { n: said, top: said });
  assert.equal(said % BATCH, 0);
  const w = await dosql([url('big'), '-c', "INSERT INTO t VALUES ('x', 'y', 'z', 'w')"]);
  assert.equal(w.code, 0, w.stderr);
});

test('Ctrl-C during .import inside BEGIN: nothing of the import stays', async () => {
  const big = path.join(dir, 'big.csv'); // (written by the test above)
  const r = await interruptWhen([url('bigtx')], /100000 rows/, `CREATE TABLE t(id, name, score, note);\nBEGIN;\n.import ${big} t\nCOMMIT;\n`);
  assert.ok(r.sent, r.stderr);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /Error: interrupted: \d+ rows imported into the open transaction \(not committed\), and perhaps part of the batch under way; ROLLBACK undoes them\n/);
  assert.match(r.stderr, /the open transaction was rolled back/);
  const q = await dosql([url('bigtx'), '--json', '-c', 'SELECT count(*) AS n FROM t']);
  assert.deepEqual(JSON.parse(q.stdout.trim()), { n: 0 });
});

test('.import of a 1,000,000-row CSV with awkward fields (BOM, CRLF, quotes, commas and line ends in fields, empty lines): every row, exactly', async () => {
  const N = 1_000_000;
  const awkward = (i) => `he said "hi ${i}", then\nleft`;
  const parts = ['\ufeffid,name,score,note\r\n'];
  for (let i = 1; i <= N; i++) {
    const note = i % 1000 === 0 ? `"${awkward(i).replace(/"/g, '""')}"` : `t${i % 7}`;
    parts.push(`${i},n${i},${i / 2},${note}\r\n`);
    if (i % 100000 === 0) parts.push('\r\n'); // an empty line: passed over
  }
  const file = path.join(dir, 'big.csv');
  writeFileSync(file, parts.join(''));
  const e = { ...process.env };
  delete e.DOSQL_URL;
  delete e.DOSQL_TOKEN;
  const t0 = Date.now();
  const p = spawn(DOSQL, [url('big'), '-c', `.import ${file} big`], { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (b) => { stderr += b; });
  const code = await within(300000, new Promise((resolve) => p.on('close', resolve)), 'dosql .import of 1M rows');
  assert.equal(code, 0, stderr);
  console.log(`# 1,000,000 rows imported in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const r = await dosql([url('big'), '--json', '-c',
    "SELECT count(*) AS n, sum(CAST(id AS INTEGER)) AS ids, total(CAST(score AS REAL)) AS score, " +
    "sum(note LIKE '%\n%') AS multiline FROM big"]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout.trim()), { n: N, ids: N * (N + 1) / 2, score: N * (N + 1) / 4, multiline: N / 1000 });
  const one = await dosql([url('big'), '--json', '-c', 'SELECT id, name, note FROM big WHERE id = \'123000\'']);
  assert.deepEqual(JSON.parse(one.stdout.trim()), { id: '123000', name: 'n123000', note: awkward(123000) });
  const cols = await dosql([url('big'), '--json', '-c', "SELECT group_concat(name) AS c FROM pragma_table_info('big')"]);
  assert.deepEqual(JSON.parse(cols.stdout.trim()), { c: 'id,name,score,note' }, 'the BOM is not part of the first name');
});
