// lake — a lake as the lake writer commits it, written straight into a
// daemon's embedded object store (file://DATA/objects), for the Iceberg
// catalog's tests:
//
//   lake/D/namespace.json               {"properties": {...}}
//   lake/D/T/metadata/vN.metadata.json  Iceberg v2 table metadata, N = 1, 2, ...
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

// The object store's directory of a daemon started with --data-dir DIR.
export const objectsDir = (dataDir) => path.join(dataDir, 'objects');

// The URI of an object (what the catalog gives as metadata-location).
export const objectUri = (dataDir, key) => `file://${objectsDir(dataDir)}/${key}`;

export function putObject(dataDir, key, text) {
  const file = path.join(objectsDir(dataDir), key);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
}

export function putNamespace(dataDir, ns, properties) {
  putObject(dataDir, `lake/${ns}/namespace.json`, `${JSON.stringify(properties === undefined ? {} : { properties })}\n`);
}

// Iceberg v2 table metadata of a source table's current state: version 1
// has no snapshot; each later version one more appended snapshot.
export function tableMetadata(dataDir, ns, table, version, { uuid = '5a3c1f4e-2b7d-4c8e-9f10-1a2b3c4d5e6f' } = {}) {
  const location = `file://${objectsDir(dataDir)}/lake/${ns}/${table}`;
  const t0 = 1767225600000; // 2026-01-01T00:00:00Z
  const snapshots = [];
  for (let i = 1; i < version; i++) {
    snapshots.push({
      'snapshot-id': 1000 + i,
      ...(i > 1 ? { 'parent-snapshot-id': 1000 + i - 1 } : {}),
      'sequence-number': i,
      'timestamp-ms': t0 + i * 1000,
      'manifest-list': `${location}/metadata/snap-${1000 + i}-1-manifest-list.avro`,
      summary: { operation: 'append', 'added-data-files': '1', 'added-records': String(10 * i) },
      'schema-id': 0,
    });
  }
  const current = snapshots.at(-1);
  return {
    'format-version': 2,
    'table-uuid': uuid,
    location,
    'last-sequence-number': snapshots.length,
    'last-updated-ms': t0 + (version - 1) * 1000,
    'last-column-id': 3,
    'current-schema-id': 0,
    schemas: [{
      type: 'struct',
      'schema-id': 0,
      'identifier-field-ids': [1],
      fields: [
        { id: 1, name: 'id', required: true, type: 'long' },
        { id: 2, name: 'name', required: false, type: 'string' },
        { id: 3, name: 'total', required: false, type: 'double' },
      ],
    }],
    'default-spec-id': 0,
    'partition-specs': [{ 'spec-id': 0, fields: [] }],
    'last-partition-id': 999,
    'default-sort-order-id': 0,
    'sort-orders': [{ 'order-id': 0, fields: [] }],
    properties: { 'dosqld.source-database': ns, 'dosqld.source-table': table },
    'current-snapshot-id': current ? current['snapshot-id'] : -1,
    refs: current ? { main: { 'snapshot-id': current['snapshot-id'], type: 'branch' } } : {},
    snapshots,
    'snapshot-log': snapshots.map((s) => ({ 'snapshot-id': s['snapshot-id'], 'timestamp-ms': s['timestamp-ms'] })),
    'metadata-log': Array.from({ length: version - 1 }, (_, i) => ({
      'metadata-file': `${location}/metadata/v${i + 1}.metadata.json`,
      'timestamp-ms': t0 + i * 1000,
    })),
  };
}

// Write version `version` of a table; returns its metadata.
export function putTableVersion(dataDir, ns, table, version, opts) {
  const m = tableMetadata(dataDir, ns, table, version, opts);
  putObject(dataDir, `lake/${ns}/${table}/metadata/v${version}.metadata.json`, `${JSON.stringify(m, null, 2)}\n`);
  return m;
}

// The fixture both catalog tests use: namespace app (with properties) holding
// orders (v1, v2: v2 is current) and orders_changelog (v1), plus files that
// are not the catalog's concern; namespace logs with no properties and no
// tables; and tables under a directory with no namespace.json (not a
// namespace). Returns the metadata the catalog should answer with.
export function writeLake(dataDir) {
  putNamespace(dataDir, 'app', { owner: 'data-team', 'dosqld.database': 'app' });
  putNamespace(dataDir, 'logs');
  putTableVersion(dataDir, 'app', 'orders', 1);
  const orders = putTableVersion(dataDir, 'app', 'orders', 2);
  const changelog = putTableVersion(dataDir, 'app', 'orders_changelog', 1, { uuid: '0f9e8d7c-6b5a-4938-8271-605f4e3d2c1b' });
  putObject(dataDir, 'lake/app/orders/data/00000-0-part.parquet', 'PAR1 not really PAR1');
  putObject(dataDir, 'lake/app/orders/metadata/snap-1001-1-manifest-list.avro', 'Obj');
  putObject(dataDir, 'lake/app/orders/metadata/version-hint.text', '1');
  putObject(dataDir, 'lake/app/staging/data/x.parquet', 'no metadata: not a table');
  putTableVersion(dataDir, 'orphan', 't', 1);
  return { orders, changelog };
}
