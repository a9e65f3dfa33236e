// Interop: a table's CDC as its Iceberg changelog (lake/changelog.c). A
// tool runs transactions on SQLite tables (a rowid one, a WITHOUT ROWID
// one) with dosqld's CDC capture,
// writes each commit's events as changelog rows to a Parquet file, and
// dumps the table's final rows; DuckDB (pinned) reads the file, and the
// changelog replayed by rowid (the last change of each row by _lsn, then
// _seq; a DELETE removes it) gives the table back, every
// value with its type — those that did not fit their column's type from
// `_unfit`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { BUILD } from '../integration/lib/harness.mjs';

let dir, db, con, file;
before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'dosqld-changelog-'));
  execFileSync(path.join(BUILD, 'tests/tools/changelog_write'), [dir]);
  file = path.join(dir, 'changelog.parquet');
  db = await DuckDBInstance.create(':memory:');
  con = await db.connect();
});
after(async () => {
  con?.closeSync?.();
  if (dir) rmSync(dir, { recursive: true, force: true });
});
const objects = async (sql) => (await con.runAndReadAll(sql)).getRowObjects();
const COLS = ['id', 'name', 'price', 'qty', 'data', 'misc'];

test('the changelog\'s schema: metadata columns, the table\'s columns by declared type, _unfit', async () => {
  const schema = await objects(`SELECT name, type, field_id FROM parquet_schema('${file}') WHERE num_children IS NULL`);
  const fields = JSON.parse(readFileSync(path.join(dir, 'fields.json'), 'utf8'));
  assert.deepEqual(schema.map((s) => s.name), fields.map((f) => f.name), 'the file has the Iceberg fields, in order');
  assert.deepEqual(schema.map((s) => Number(s.field_id)), fields.map((f) => f.id), 'with their field ids');
  assert.deepEqual(fields.map((f) => f.type),
    ['string', 'long', 'string', 'timestamptz', 'long', 'long', 'long', 'string', 'double', 'long', 'binary', 'binary', 'string']);
});

test('each change is a row: operations, LSNs, commit times, values that do not fit in _unfit', async () => {
  const rows = await objects(`SELECT _op, _lsn, _seq, _database, epoch_us(_commit_ts) AS ts, _rowid, name, qty, _unfit
                              FROM read_parquet('${file}', file_row_number = true) ORDER BY file_row_number`);
  assert.deepEqual(rows.map((r) => r._op), ['INSERT', 'INSERT', 'INSERT', 'INSERT', 'UPDATE', 'UPDATE', 'DELETE',
    'DELETE', 'INSERT', 'INSERT', 'UPDATE', 'INSERT', 'DELETE', 'UPDATE']);
  assert.deepEqual(rows.map((r) => Number(r._lsn)), [100, 100, 101, 101, 102, 102, 103, 104, 104, 104, 104, 105, 105, 106]);
  assert.deepEqual(rows.map((r) => Number(r._seq)), [0, 1, 0, 1, 0, 1, 0, 0, 1, 2, 3, 0, 1, 0], 'each commit\'s rows in order');
  assert.ok(rows.every((r) => r._database === 'shop'));
  assert.equal(Number(rows[2].ts), 1765000000000000 + 1000000);
  // Row 3's values of other types than their columns'.
  assert.deepEqual(JSON.parse(rows[2]._unfit), { name: { $bytes: 'w6k=' }, price: 'cheap', qty: 'many', data: 'text in blob', misc: 2.5 });
  assert.equal(rows[2].name, null);
  // Row 4's name is text that is not UTF-8: a JSON string cannot hold
  // it, so its bytes are kept, marked as text.
  assert.equal(rows[3].qty, 3n, 'SQLite made 3.0 an integer (INT affinity): it fits');
  assert.deepEqual(JSON.parse(rows[3]._unfit), { name: { $text: '/w==' } });
  // UPDATE id 4 -> 40: the old row deleted, the new one inserted.
  assert.deepEqual([rows[7]._op, Number(rows[7]._rowid), rows[8]._op, Number(rows[8]._rowid)], ['DELETE', 4, 'INSERT', 40]);
});

test('the changelog replayed by rowid gives the table back, value for value', async () => {
  const final = JSON.parse(readFileSync(path.join(dir, 'final.json'), 'utf8'));
  const replayed = await objects(`
    WITH c AS (SELECT *, row_number() OVER (PARTITION BY _rowid ORDER BY _lsn DESC, _seq DESC) AS k
               FROM read_parquet('${file}'))
    SELECT _rowid, ${COLS.map((n) => (n === 'data' || n === 'misc' ? `to_base64(${n}) AS ${n}` : n)).join(', ')}, _unfit
    FROM c WHERE k = 1 AND _op <> 'DELETE' ORDER BY _rowid`);
  assert.equal(replayed.length, final.length, 'the same rows');
  const types = { id: 'long', name: 'string', price: 'double', qty: 'long', data: 'binary', misc: 'binary' };
  for (const [i, r] of replayed.entries()) {
    const unfit = r._unfit ? JSON.parse(r._unfit) : {};
    const want = final[i];
    assert.equal(Number(r._rowid), want[0], 'rowid');
    for (const [j, n] of COLS.entries()) {
      let got = r[n];
      if (got === null && n in unfit) got = unfit[n];
      else if (got !== null && types[n] === 'binary') got = { $bytes: got };
      else if (typeof got === 'bigint') got = Number(got);
      let w = want[j + 1];
      if (typeof w === 'string' && w.includes('\ufffd')) w = { $text: '/w==' }; // the source's text that is not UTF-8 (0xff)
      assert.deepEqual(got, w, `row ${want[0]} column ${n}`);
    }
  }
});

test('a WITHOUT ROWID table: rows known by their key, a key changed is a DELETE and an INSERT; the replay by key gives it back', async () => {
  const w = path.join(dir, 'changelog_w.parquet');
  const rows = await objects(`SELECT _op, _lsn, _seq, _rowid, k, v FROM read_parquet('${w}') ORDER BY _lsn, _seq`);
  assert.ok(rows.every((r) => r._rowid === null), 'no rowid');
  assert.deepEqual(rows.filter((r) => Number(r._lsn) === 202).map((r) => [r._op, r.k]),
    [['DELETE', 'a'], ['INSERT', 'z'], ['UPDATE', 'z']], 'the key change, then an update of the moved row');
  const final = JSON.parse(readFileSync(path.join(dir, 'final_w.json'), 'utf8'));
  const replayed = await objects(`
    WITH c AS (SELECT *, row_number() OVER (PARTITION BY k ORDER BY _lsn DESC, _seq DESC) AS n FROM read_parquet('${w}'))
    SELECT k, v FROM c WHERE n = 1 AND _op <> 'DELETE' ORDER BY k`);
  assert.deepEqual(replayed.map((r) => [r.k, Number(r.v)]), final);
});
