// Interop: files from lake/parquet's writer (through tests/tools/parquet_write)
// read back by DuckDB (@duckdb/node-api, pinned in package-lock.json), an
// independent reader: every value row for row, and the footer as DuckDB
// sees it — statistics, field ids, logical types, codecs, encodings.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { BUILD } from '../integration/lib/harness.mjs';

const TOOL = path.join(BUILD, 'tests/tools/parquet_write');
let dir, db, con;
before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsq-parquet-'));
  db = await DuckDBInstance.create(':memory:');
  con = await db.connect();
});
after(() => {
  con?.closeSync();
  fs.rmSync(dir, { recursive: true, force: true });
});

// Write rows (arrays of the tool's JSON values) to a file; the writer's
// own statistics come back beside its path.
let seq = 0;
function write(columns, options, rows) {
  const file = path.join(dir, `f${seq++}.parquet`);
  const input = [JSON.stringify({ columns, options }), ...rows.map((r) => JSON.stringify(r))].join('\n') + '\n';
  const r = spawnSync(TOOL, [file], { input, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `parquet_write: ${r.stderr}`);
  return { file, stats: JSON.parse(r.stdout.toString()) };
}

async function rows(sql) { return (await con.runAndReadAll(sql)).getRows(); }
async function objects(sql) { return (await con.runAndReadAll(sql)).getRowObjects(); }

// DuckDB's values in the input's terms.
function plain(v) {
  if (v === null || typeof v !== 'object') return v;
  if ('bytes' in v) return { hex: Buffer.from(v.bytes).toString('hex') };
  if ('micros' in v) return v.micros;
  return String(v);
}

const ALL = [
  { name: 'id', type: 'INT64', nullable: false, field_id: 1 },
  { name: 'i32', type: 'INT32', nullable: true, field_id: 2 },
  { name: 'txt', type: 'BYTE_ARRAY', logical: 'STRING', nullable: true, field_id: 3 },
  { name: 'blob', type: 'BYTE_ARRAY', nullable: true, field_id: 4 },
  { name: 'dbl', type: 'DOUBLE', nullable: true, field_id: 5 },
  { name: 'flag', type: 'BOOLEAN', nullable: true, field_id: 6 },
  { name: 'ts', type: 'INT64', logical: 'TIMESTAMP_US', nullable: true, field_id: 7 },
];
const MAX = '9223372036854775807', MIN = '-9223372036854775808';
const INPUT = [
  [MAX, 2147483647, 'héllo wörld ✓ 😀', { hex: '00ff10' }, 1.5, true, '1700000000123456'],
  [MIN, -2147483648, '', { hex: '' }, '-0', false, '-1'],
  ['-9223372036854775807', null, null, null, null, null, null],
  ['0', 0, 'a\u0000b', { hex: 'ff' }, 'inf', true, '0'],
  ['42', 7, '日本語', { hex: '00' }, '-inf', null, '253402300799999999'],
  ['-1', -7, 'zzz', { hex: '7f' }, 'nan', false, null],
  ['5', 5, 'A', { hex: '0001' }, 2.2250738585072014e-308, true, '86400000000'],
];

for (const codec of ['zstd', 'none']) {
  test(`every type, nulls, unicode, blobs, extremes read back equal (${codec})`, async () => {
    const { file, stats } = write(ALL, { codec }, INPUT);
    const got = await rows(`SELECT * FROM read_parquet('${file}')`);
    assert.equal(got.length, INPUT.length);
    for (let i = 0; i < INPUT.length; i++) {
      const want = INPUT[i], row = got[i].map(plain);
      assert.equal(row[0], BigInt(want[0]), `row ${i} id`);
      assert.equal(row[1], want[1], `row ${i} i32`);
      assert.equal(row[2], want[2], `row ${i} txt`);
      assert.deepEqual(row[3], want[3], `row ${i} blob`);
      const d = { inf: Infinity, '-inf': -Infinity, '-0': -0, nan: NaN }[want[4]] ?? want[4];
      assert.ok(Object.is(row[4], d), `row ${i} dbl: ${row[4]} want ${d}`);
      assert.equal(row[5], want[5], `row ${i} flag`);
      assert.equal(row[6], want[6] === null ? null : BigInt(want[6]), `row ${i} ts`);
    }
    const types = await objects(`SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('${file}'))`);
    assert.deepEqual(types.map((t) => t.column_type),
      ['BIGINT', 'INTEGER', 'VARCHAR', 'BLOB', 'DOUBLE', 'BOOLEAN', 'TIMESTAMP WITH TIME ZONE']);

    const meta = await objects(`SELECT path_in_schema p, compression, encodings, stats_min_value mn, stats_max_value mx,
        stats_null_count nc, num_values FROM parquet_metadata('${file}') ORDER BY column_id`);
    assert.deepEqual(meta.map((m) => m.compression), Array(7).fill(codec === 'zstd' ? 'ZSTD' : 'UNCOMPRESSED'));
    const by = Object.fromEntries(meta.map((m) => [m.p, m]));
    assert.equal(by.id.mn, MIN);
    assert.equal(by.id.mx, MAX);
    assert.equal(by.id.nc, 0n);
    assert.equal(by.i32.mn, '-2147483648');
    assert.equal(by.i32.mx, '2147483647');
    assert.equal(by.i32.nc, 1n);
    assert.equal(by.txt.mn, '', 'the empty string is the least');
    assert.equal(by.txt.mx, '日本語', 'UTF-8 bytes compare unsigned: 0xe6 is the greatest lead');
    assert.equal(by.txt.nc, 1n);
    assert.equal(by.blob.nc, 1n);
    assert.equal(by.dbl.nc, 1n);
    assert.equal(by.flag.mn, 'false');
    assert.equal(by.flag.mx, 'true');
    assert.equal(by.flag.nc, 2n);
    assert.equal(by.ts.nc, 2n);
    assert.equal(by.ts.mn, '1969-12-31 23:59:59.999999+00');
    assert.equal(by.ts.mx, '9999-12-31 23:59:59.999999+00');
    assert.match(by.txt.encodings, /RLE_DICTIONARY/);
    assert.equal(by.id.encodings, 'PLAIN', 'REQUIRED: no levels');

    // The writer's own totals agree with the file.
    assert.equal(stats.rows, INPUT.length);
    assert.equal(stats.file_bytes, fs.statSync(file).size);
    assert.deepEqual(stats.row_group_offsets, [4]);
    assert.equal(stats.columns[0].min, '0000000000000080');
    assert.equal(stats.columns[4].nans, 1);
    assert.equal(stats.columns[4].min, '000000000000f0ff', '-inf');
    assert.equal(stats.columns[4].max, '000000000000f07f', '+inf');

    const schema = await objects(`SELECT name, field_id, repetition_type r, converted_type c, logical_type l
        FROM parquet_schema('${file}')`);
    assert.deepEqual(schema.slice(1).map((s) => [s.name, s.field_id, s.r]),
      ALL.map((c) => [c.name, BigInt(c.field_id), c.nullable ? 'OPTIONAL' : 'REQUIRED']));
    assert.equal(schema[3].c, 'UTF8');
    assert.match(schema[3].l, /StringType/);
    assert.equal(schema[7].c, 'TIMESTAMP_MICROS');
    assert.match(schema[7].l, /isAdjustedToUTC=1.*MICROS=MicroSeconds/);
    const fm = await objects(`SELECT created_by, num_rows, column_orders FROM parquet_file_metadata('${file}')`);
    assert.equal(fm[0].created_by, 'dosqld version 0.1.0');
    assert.equal(fm[0].num_rows, 7n);
    assert.match(String(fm[0].column_orders), /TypeDefinedOrder/);
  });
}

test('the double bounds DuckDB shows are finite ones, zeros signed per the spec', async () => {
  const { file } = write([{ name: 'd', type: 'DOUBLE', nullable: false }], {}, [[0.0], [3.25], ['-0'], [-1.5], ['nan']]);
  const m = await objects(`SELECT stats_min_value mn, stats_max_value mx FROM parquet_metadata('${file}')`);
  assert.deepEqual([m[0].mn, m[0].mx], ['-1.5', '3.25']);
  const { file: z } = write([{ name: 'd', type: 'DOUBLE', nullable: false }], {}, [[0.0], ['-0']]);
  const mz = await objects(`SELECT stats_min_value mn, stats_max_value mx FROM parquet_metadata('${z}')`);
  assert.deepEqual([mz[0].mn, mz[0].mx], ['-0.0', '0.0']);
  assert.deepEqual((await rows(`SELECT count(*) FROM '${z}' WHERE d = 0`)), [[2n]]);
});

// 30,000 rows in groups of 10,000 and pages of 8 KiB: a column of five
// values (dictionary), one of unique values past the dictionary's 1,000
// entries (PLAIN), one that flips between them by row group.
test('several row groups and pages, dictionary-heavy and dictionary-overflow columns', async () => {
  const cols = [
    { name: 'id', type: 'INT64', nullable: false, field_id: 1 },
    { name: 'cat', type: 'BYTE_ARRAY', logical: 'STRING', nullable: true, field_id: 2 },
    { name: 'uniq', type: 'BYTE_ARRAY', logical: 'STRING', nullable: false, field_id: 3 },
    { name: 'mixed', type: 'BYTE_ARRAY', nullable: true, field_id: 4 },
    { name: 'x', type: 'DOUBLE', nullable: false, field_id: 5 },
  ];
  const N = 30000;
  const input = [];
  for (let i = 0; i < N; i++) {
    const g = Math.floor(i / 10000);
    input.push([String(i), i % 11 === 0 ? null : ['red', 'green', 'blue', 'ünïcode', ''][i % 5], `u-${i}-${'x'.repeat(i % 30)}`,
      i % 13 === 0 ? null : { hex: (g === 1 ? i : i % 3).toString(16).padStart(6, '0') }, i / 8]);
  }
  for (const codec of ['zstd', 'none']) {
    const { file, stats } = write(cols, { codec, row_group_rows: 10000, page_bytes: 8192, dict_max_entries: 1000 }, input);
    const got = await rows(`SELECT * FROM read_parquet('${file}')`);
    assert.equal(got.length, N);
    for (let i = 0; i < N; i++) {
      const r = got[i].map(plain), w = input[i];
      assert.deepEqual([r[0], r[1], r[2], r[3], r[4]], [BigInt(w[0]), w[1], w[2], w[3], w[4]], `row ${i}`);
    }
    const fm = await objects(`SELECT num_row_groups FROM parquet_file_metadata('${file}')`);
    assert.equal(fm[0].num_row_groups, 3n);
    assert.equal(stats.row_group_offsets.length, 3);
    const meta = await objects(`SELECT row_group_id g, path_in_schema p, encodings e, stats_min_value mn, stats_max_value mx,
        stats_null_count nc, dictionary_page_offset dpo, data_page_offset, total_compressed_size
        FROM parquet_metadata('${file}') ORDER BY row_group_id, column_id`);
    const at = (g, p) => meta.find((m) => m.g === BigInt(g) && m.p === p);
    for (let g = 0; g < 3; g++) {
      assert.match(at(g, 'cat').e, /RLE_DICTIONARY/, `group ${g}: five values take a dictionary`);
      assert.ok(at(g, 'cat').dpo !== null);
      assert.doesNotMatch(at(g, 'uniq').e, /DICTIONARY/, `group ${g}: 10,000 unique values overflow it`);
      assert.equal(at(g, 'uniq').dpo, null);
      assert.equal(at(g, 'id').mn, String(g * 10000));
      assert.equal(at(g, 'id').mx, String(g * 10000 + 9999));
      assert.equal(at(g, 'cat').mn, '');
      assert.equal(at(g, 'cat').mx, 'ünïcode');
    }
    assert.match(at(0, 'mixed').e, /RLE_DICTIONARY/);
    assert.doesNotMatch(at(1, 'mixed').e, /DICTIONARY/, 'the middle group overflows');
    assert.match(at(2, 'mixed').e, /RLE_DICTIONARY/, 'and the next starts a dictionary again');
    assert.equal(meta.filter((m) => m.p === 'cat').reduce((a, m) => a + m.nc, 0n), BigInt(Math.ceil(N / 11)));
    // Pages: DuckDB reads them all above; the id column's 80 KB a group
    // took ten or more 8 KiB pages, so the writer's sizes exceed one page's.
    assert.ok(at(0, 'id').total_compressed_size > 0n);
    // Statistics let DuckDB answer a filter; the answer must be the true one.
    assert.deepEqual(await rows(`SELECT count(*), min(id), max(x) FROM '${file}' WHERE id >= 25000`), [[5000n, 25000n, (N - 1) / 8]]);
    assert.deepEqual(await rows(`SELECT count(*) FROM '${file}' WHERE cat = 'ünïcode'`),
      [[BigInt(input.filter((r) => r[1] === 'ünïcode').length)]]);
  }
});

test('an empty file has a footer and no row groups', async () => {
  const { file, stats } = write([{ name: 'a', type: 'INT64', nullable: true, field_id: 1 }], {}, []);
  assert.deepEqual(await rows(`SELECT count(*) FROM read_parquet('${file}')`), [[0n]]);
  assert.equal(stats.rows, 0);
  assert.deepEqual(stats.row_group_offsets, []);
});
