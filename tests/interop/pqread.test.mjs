// Interop: files DuckDB writes (@duckdb/node-api, pinned in package-lock.json)
// read by lake/pqread's reader (through tests/tools/parquet_read, which
// prints them as JSON lines), compared with DuckDB's own read of the same
// file: every value, the schema, and each chunk's statistics. The other
// direction (DuckDB reading our files) is tests/interop/parquet.test.mjs.
// DuckDB (1.5) cuts a column chunk into data pages only past 1 GB of
// values, so its chunks here are one page each; chunks of many pages are
// our writer's, read in tests/unit/lake/test_pqread.c.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { BUILD } from '../integration/lib/harness.mjs';

const TOOL = path.join(BUILD, 'tests/tools/parquet_read');
let dir, db, con;
before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsq-pqread-'));
  db = await DuckDBInstance.create(':memory:');
  con = await db.connect();
});
after(() => {
  con?.closeSync();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function rows(sql) { return (await con.runAndReadAll(sql)).getRows(); }
async function objects(sql) { return (await con.runAndReadAll(sql)).getRowObjects(); }

// The tool's output: the header line, the rows, the pages line.
function read(file) {
  const r = spawnSync(TOOL, [file], { maxBuffer: 256 << 20 });
  if (r.status !== 0) return { error: r.stderr.toString() };
  const lines = r.stdout.toString().trimEnd().split('\n').map((l) => JSON.parse(l));
  return { head: lines[0], rows: lines.slice(1, -1), tail: lines[lines.length - 1] };
}

// DuckDB's value in the tool's terms.
function plain(v) {
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return v;
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'nan';
    if (v === Infinity) return 'inf';
    if (v === -Infinity) return '-inf';
    return v;
  }
  if (typeof v === 'bigint') return String(v);
  if ('bytes' in v) return { hex: Buffer.from(v.bytes).toString('hex') };
  if ('micros' in v) return String(v.micros);
  return String(v);
}

function sameValue(got, want, where) {
  if (typeof want === 'number') assert.ok(Object.is(got, want), `${where}: ${got} want ${want}`);
  else assert.deepEqual(got, want, where);
}

const TABLE = `
  SELECT i AS id,
         CASE WHEN i = 1 THEN 9223372036854775807 WHEN i = 2 THEN -9223372036854775808
              ELSE (i * 1234567891) % 100000000000 END::BIGINT AS i64,
         CASE WHEN i % 13 = 0 THEN NULL WHEN i = 3 THEN 2147483647 WHEN i = 4 THEN -2147483648 ELSE i - 5000 END::INTEGER AS i32,
         CASE WHEN i % 7 = 0 THEN NULL WHEN i = 5 THEN 'nan'::DOUBLE WHEN i = 6 THEN '-inf'::DOUBLE
              WHEN i = 8 THEN -0.0::DOUBLE WHEN i = 9 THEN 'inf'::DOUBLE ELSE i / 3.0 END::DOUBLE AS dbl,
         CASE WHEN i % 5 = 0 THEN NULL ELSE ['red', 'green', '', 'ünïcödé ✓', 'blue'][i % 4 + 1] END AS cat,
         CASE WHEN i % 17 = 0 THEN NULL ELSE 'row-' || i || repeat('x', i % 23) END AS uniq,
         CASE WHEN i % 11 = 0 THEN NULL ELSE TIMESTAMP '2024-01-01' + INTERVAL (i * 7919) SECOND END AS ts,
         CASE WHEN i % 19 = 0 THEN NULL ELSE TIMESTAMPTZ '1969-12-31 23:00:00+00' + INTERVAL (i) MICROSECOND END AS tstz,
         CASE WHEN i % 3 = 0 THEN NULL ELSE i % 2 = 0 END AS flag,
         (i % 9 - 4)::FLOAT / 4 AS f,
         CASE WHEN i % 29 = 0 THEN NULL ELSE ('\\x' || lpad(printf('%x', i % 251), 2, '0') || '\\x00')::BLOB END AS blob
  FROM range(30000) t(i)`;

for (const codec of ['zstd', 'uncompressed']) {
  test(`DuckDB's file read back equal, value for value (${codec})`, async () => {
    const file = path.join(dir, `all-${codec}.parquet`);
    await con.run(`COPY (${TABLE}) TO '${file}' (FORMAT parquet, COMPRESSION ${codec}, ROW_GROUP_SIZE 10000)`);
    const got = read(file);
    assert.equal(got.error, undefined, got.error);
    const { head } = got;
    assert.equal(head.rows, 30000);
    assert.match(head.created_by, /^DuckDB/);
    assert.deepEqual(head.columns.map((c) => [c.name, c.type, c.logical, c.nullable]), [
      ['id', 'INT64', null, true], ['i64', 'INT64', null, true], ['i32', 'INT32', null, true],
      ['dbl', 'DOUBLE', null, true], ['cat', 'BYTE_ARRAY', 'STRING', true], ['uniq', 'BYTE_ARRAY', 'STRING', true],
      ['ts', 'INT64', 'TIMESTAMP_US', true], ['tstz', 'INT64', 'TIMESTAMP_US', true], ['flag', 'BOOLEAN', null, true],
      ['f', 'FLOAT', null, true], ['blob', 'BYTE_ARRAY', null, true],
    ]);
    assert.equal(head.columns[6].utc, false, 'TIMESTAMP: not adjusted to UTC');
    assert.equal(head.columns[7].utc, true, 'TIMESTAMPTZ: adjusted to UTC');
    assert.ok(head.row_groups.length >= 3, `${head.row_groups.length} row groups`);
    for (const g of head.row_groups)
      assert.ok(g.chunks.every((c) => c.codec === (codec === 'zstd' ? 6 : 0)));

    const want = await rows(`SELECT * FROM read_parquet('${file}')`);
    assert.equal(got.rows.length, want.length);
    for (let i = 0; i < want.length; i++)
      for (let c = 0; c < want[i].length; c++)
        sameValue(got.rows[i][c], plain(want[i][c]), `row ${i} ${head.columns[c].name}`);

    // Every chunk's statistics as DuckDB reads them from the same footer.
    const meta = await objects(`SELECT row_group_id g, column_id c, stats_null_count nc, stats_min_value mn,
        stats_max_value mx, dictionary_page_offset dpo FROM parquet_metadata('${file}') ORDER BY g, c`);
    for (const m of meta) {
      const ch = head.row_groups[Number(m.g)].chunks[Number(m.c)];
      const name = head.columns[Number(m.c)].name;
      assert.equal(BigInt(ch.null_count), m.nc, `group ${m.g} ${name} null_count`);
      if (['id', 'i64', 'i32', 'cat', 'uniq'].includes(name)) {
        assert.equal(ch.min === null ? null : String(ch.min), m.mn, `group ${m.g} ${name} min`);
        assert.equal(ch.max === null ? null : String(ch.max), m.mx, `group ${m.g} ${name} max`);
      }
    }
    // The dictionary pages read are the ones the footer lists.
    for (const m of meta)
      assert.equal(got.tail.dictionary[Number(m.g)][Number(m.c)], m.dpo !== null, `group ${m.g} column ${m.c}`);
    assert.ok(got.tail.dictionary.every((g) => g[4]), 'five strings: a dictionary');
  });
}

// PARQUET_VERSION V2: DuckDB (1.5) still writes V1 data pages (DATA_PAGE_V2
// pages are read in the unit tests, from hand-made files), but with the
// V2 encodings. Its dictionary-encoded strings and booleans are read; its
// integers come DELTA_BINARY_PACKED, which is refused by name.
test('DuckDB PARQUET_VERSION V2: strings and booleans read, delta integers refused', async () => {
  const file = path.join(dir, 'v2.parquet');
  await con.run(`COPY (SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE 's' || (i % 10) END AS s,
      CASE WHEN i % 5 = 0 THEN NULL ELSE i % 3 = 0 END AS b FROM range(5000) t(i))
      TO '${file}' (FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION V2)`);
  const got = read(file);
  assert.equal(got.error, undefined, got.error);
  const want = await rows(`SELECT * FROM read_parquet('${file}')`);
  assert.equal(got.rows.length, want.length);
  for (let i = 0; i < want.length; i++) assert.deepEqual(got.rows[i], want[i].map(plain), `row ${i}`);
  assert.ok(got.tail.dictionary[0][0]);

  const ints = path.join(dir, 'v2-ints.parquet');
  await con.run(`COPY (SELECT i::BIGINT AS n FROM range(100) t(i)) TO '${ints}' (FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION V2)`);
  assert.match(read(ints).error, /column n of row group 0: values in DELTA_BINARY_PACKED: not read/);
});

test('other codecs are refused by name', async () => {
  for (const [codec, name] of [['snappy', 'SNAPPY'], ['gzip', 'GZIP']]) {
    const file = path.join(dir, `c-${codec}.parquet`);
    await con.run(`COPY (SELECT 1 AS a) TO '${file}' (FORMAT parquet, COMPRESSION ${codec})`);
    assert.match(read(file).error, new RegExp(`codec ${name}: not read \\(only UNCOMPRESSED and ZSTD\\)`));
  }
});
