// Interop: the lake's Iceberg manifests and manifest lists (lake/manifest.c,
// written as Avro container files by lake/avro.c with libavro's encoding)
// read by an independent Avro reader, avsc (npm, pinned): the header's
// metadata Iceberg requires, the schema's field ids, and every value.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import avro from 'avsc';
import { BUILD } from '../integration/lib/harness.mjs';

let dir, length;
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'dosqld-manifest-'));
  length = Number(execFileSync(path.join(BUILD, 'tests/tools/manifest_write'), [dir]).toString().trim());
});
after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

// The records, the header's metadata (as strings) and the writer's schema.
function read(file) {
  return new Promise((resolve, reject) => {
    const records = [];
    let meta, schema;
    avro.createFileDecoder(path.join(dir, file))
      .on('metadata', (type, codec, header) => {
        meta = Object.fromEntries(Object.entries(header.meta).map(([k, v]) => [k, v.toString()]));
        schema = JSON.parse(meta['avro.schema']);
      })
      .on('data', (r) => records.push(r))
      .on('end', () => resolve({ records, meta, schema }))
      .on('error', reject);
  });
}

// A field of a record schema by name (through an optional union).
function fieldOf(rec, name) {
  const f = rec.fields.find((x) => x.name === name);
  assert.ok(f, `field ${name}`);
  return f;
}
const nonNull = (t) => (Array.isArray(t) ? t.find((x) => x !== 'null') : t);
// avsc's records are instances of classes of its own: compared as plain data.
const plain = (x) => JSON.parse(JSON.stringify(x));
const le = (buf) => (buf.length === 4 ? buf.readInt32LE(0) : buf.readBigInt64LE(0));

test('a manifest: Iceberg\'s metadata keys, field ids in its schema, every entry', async () => {
  const { records, meta, schema } = await read('manifest.avro');
  assert.equal(meta['avro.codec'], 'null');
  assert.equal(meta['format-version'], '2');
  assert.equal(meta.content, 'data');
  assert.equal(meta['schema-id'], '0');
  assert.equal(meta['partition-spec-id'], '0');
  assert.deepEqual(JSON.parse(meta['partition-spec']).map((f) => [f.name, f['field-id']]), [['commit_day', 1000], ['database', 1001]]);
  assert.equal(JSON.parse(meta.schema).fields.length, 5);

  // Field ids where Iceberg's readers look for them.
  assert.deepEqual(['status', 'snapshot_id', 'sequence_number', 'file_sequence_number', 'data_file'].map((n) => fieldOf(schema, n)['field-id']), [0, 1, 3, 4, 2]);
  const df = fieldOf(schema, 'data_file').type;
  const ids = { content: 134, file_path: 100, file_format: 101, partition: 102, record_count: 103, file_size_in_bytes: 104, column_sizes: 108, value_counts: 109, null_value_counts: 110, nan_value_counts: 137, lower_bounds: 125, upper_bounds: 128, key_metadata: 131, split_offsets: 132, equality_ids: 135, sort_order_id: 140 };
  for (const [n, id] of Object.entries(ids)) assert.equal(fieldOf(df, n)['field-id'], id, n);
  const part = fieldOf(df, 'partition').type;
  assert.deepEqual(part.fields.map((f) => [f.name, f['field-id']]), [['commit_day', 1000], ['database', 1001]]);
  assert.deepEqual(nonNull(fieldOf(part, 'commit_day').type), { type: 'int', logicalType: 'date' });
  const sizes = nonNull(fieldOf(df, 'column_sizes').type);
  assert.equal(sizes.logicalType, 'map');
  assert.deepEqual(sizes.items.fields.map((f) => f['field-id']), [117, 118]);
  assert.deepEqual(nonNull(fieldOf(df, 'lower_bounds').type).items.fields.map((f) => f['field-id']), [126, 127]);
  assert.equal(nonNull(fieldOf(df, 'split_offsets').type)['element-id'], 133);

  assert.equal(records.length, 3);
  const [a, b, old] = records;
  assert.equal(a.status, 1);
  assert.equal(a.snapshot_id, null, 'added: inherited from the manifest list');
  assert.equal(a.data_file.file_path, 'file:///lake/shop/orders_changelog/data/a.parquet');
  assert.equal(a.data_file.file_format, 'parquet');
  assert.deepEqual(plain(a.data_file.partition), { commit_day: 20429, database: 'shop' });
  assert.equal(a.data_file.record_count, 100);
  assert.deepEqual(plain(a.data_file.null_value_counts), [{ key: 1, value: 0 }, { key: 2, value: 0 }, { key: 5, value: 3 }]);
  assert.deepEqual(plain(a.data_file.nan_value_counts), [{ key: 5, value: 0 }], 'only the columns that have the metric');
  const lower = Object.fromEntries(a.data_file.lower_bounds.map((x) => [x.key, x.value]));
  const upper = Object.fromEntries(a.data_file.upper_bounds.map((x) => [x.key, x.value]));
  assert.equal(lower[1].toString(), 'DELETE');
  assert.equal(upper[1].toString(), 'UPDATE');
  assert.equal(le(lower[2]), 7n);
  assert.equal(le(upper[2]), 1234567890123n);
  assert.equal(lower[5].readDoubleLE(0), -2.5);
  assert.equal(upper[5].readDoubleLE(0), 99.75);
  assert.deepEqual(plain(a.data_file.split_offsets), [4, 65536]);
  assert.equal(a.data_file.sort_order_id, 0);
  assert.equal(b.data_file.column_sizes, null, 'no metrics given: left out');
  assert.equal(b.data_file.sort_order_id, null);
  assert.equal(old.status, 2);
  assert.equal(old.snapshot_id, 41);
  assert.equal(old.sequence_number, 3);
  assert.deepEqual(plain(old.data_file.partition), { commit_day: 20000, database: null });
});

test('a manifest list: the manifest\'s counts and its partition fields\' bounds', async () => {
  const { records, meta, schema } = await read('snap.avro');
  assert.equal(meta['snapshot-id'], '42');
  assert.equal(meta['parent-snapshot-id'], '41');
  assert.equal(meta['sequence-number'], '4');
  assert.equal(meta['format-version'], '2');
  assert.equal(fieldOf(schema, 'manifest_path')['field-id'], 500);
  assert.equal(nonNull(fieldOf(schema, 'partitions').type)['element-id'], 508);
  assert.equal(records.length, 1);
  const m = records[0];
  assert.equal(m.manifest_path, path.join(dir, 'manifest.avro'));
  assert.equal(m.manifest_length, length);
  assert.deepEqual([m.added_files_count, m.existing_files_count, m.deleted_files_count], [2, 0, 1]);
  assert.deepEqual([m.added_rows_count, m.existing_rows_count, m.deleted_rows_count], [105, 0, 9]);
  assert.deepEqual([m.sequence_number, m.min_sequence_number, m.added_snapshot_id], [4, 4, 42]);
  // The bounds of every entry's partition values, the deleted one's too
  // (as Iceberg's own writer summarizes): days 20000..20430, databases
  // "billing".."shop" and a null.
  const [day, db] = m.partitions;
  assert.equal(day.contains_null, false);
  assert.equal(db.contains_null, true);
  assert.deepEqual([le(day.lower_bound), le(day.upper_bound)], [20000, 20430]);
  assert.deepEqual([db.lower_bound.toString(), db.upper_bound.toString()], ['billing', 'shop']);
});
