// Interop: iceberg-js (npm, pinned), a client of the Iceberg REST catalog
// spec, pointed at dosqld's catalog URI http://HOST:PORT/v1/iceberg: it
// lists namespaces and tables and loads a table from a lake written into
// the daemon's embedded object store, and what it returns is the lake's;
// its write calls come back as the catalog's refusal; with tokens, it
// sees only the namespaces its token may read.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { IcebergError, IcebergRestCatalog } from 'iceberg-js';
import { startDosqld, within } from '../integration/lib/harness.mjs';
import { writeLake } from '../integration/lib/lake.mjs';

let d, lake, catalog;
before(async () => {
  d = await startDosqld();
  lake = writeLake(d.dataDir);
  catalog = new IcebergRestCatalog({ baseUrl: `${d.url}/v1/iceberg` });
});
after(async () => { await d?.cleanup(); });

const bounded = (p, what) => within(10000, p, what);

test('iceberg-js lists the namespaces and their properties', async () => {
  const ns = await bounded(catalog.listNamespaces(), 'listNamespaces');
  assert.deepEqual(ns, [{ namespace: ['app'] }, { namespace: ['logs'] }]);
  const meta = await bounded(catalog.loadNamespaceMetadata({ namespace: ['app'] }), 'loadNamespaceMetadata');
  assert.deepEqual(meta.properties, { owner: 'data-team', 'dosqld.database': 'app' });
  assert.equal(await bounded(catalog.namespaceExists({ namespace: ['logs'] }), 'namespaceExists'), true);
  assert.equal(await bounded(catalog.namespaceExists({ namespace: ['nope'] }), 'namespaceExists'), false);
  assert.deepEqual(await bounded(catalog.listNamespaces({ namespace: ['app'] }), 'listNamespaces(parent)'), []);
});

test('iceberg-js lists the tables of a namespace', async () => {
  const tables = await bounded(catalog.listTables({ namespace: ['app'] }), 'listTables');
  assert.deepEqual(tables, [
    { namespace: ['app'], name: 'orders' },
    { namespace: ['app'], name: 'orders_changelog' },
  ]);
  assert.deepEqual(await bounded(catalog.listTables({ namespace: ['logs'] }), 'listTables'), []);
  await assert.rejects(bounded(catalog.listTables({ namespace: ['nope'] }), 'listTables'), (e) => {
    assert.ok(e instanceof IcebergError);
    assert.equal(e.status, 404);
    assert.equal(e.icebergType, 'NoSuchNamespaceException');
    return true;
  });
});

test('iceberg-js loads a table: the current (highest) metadata version', async () => {
  const m = await bounded(catalog.loadTable({ namespace: ['app'], name: 'orders' }), 'loadTable');
  assert.deepEqual(m, lake.orders);
  assert.equal(m['format-version'], 2);
  assert.equal(m['current-snapshot-id'], 1001, 'v2 has the snapshot; v1 had none');
  assert.deepEqual(m.schemas[0].fields.map((f) => [f.id, f.name, f.type]),
    [[1, 'id', 'long'], [2, 'name', 'string'], [3, 'total', 'double']]);
  assert.match(m.location, /^file:\/\/\/.*\/objects\/lake\/app\/orders$/);
  const c = await bounded(catalog.loadTable({ namespace: ['app'], name: 'orders_changelog' }), 'loadTable');
  assert.deepEqual(c, lake.changelog);
  assert.equal(await bounded(catalog.tableExists({ namespace: ['app'], name: 'orders' }), 'tableExists'), true);
  assert.equal(await bounded(catalog.tableExists({ namespace: ['app'], name: 'nope' }), 'tableExists'), false);
  await assert.rejects(bounded(catalog.loadTable({ namespace: ['app'], name: 'nope' }), 'loadTable'), (e) => {
    assert.ok(e instanceof IcebergError);
    assert.ok(e.isNotFound());
    assert.equal(e.icebergType, 'NoSuchTableException');
    return true;
  });
});

test("iceberg-js's writes get the catalog's refusal (406, UnsupportedOperationException)", async () => {
  const refused = (e) => {
    assert.ok(e instanceof IcebergError, String(e));
    assert.equal(e.status, 406);
    assert.equal(e.icebergType, 'UnsupportedOperationException');
    assert.match(e.message, /read-only/);
    return true;
  };
  await assert.rejects(bounded(catalog.createNamespace({ namespace: ['made'] }), 'createNamespace'), refused);
  await assert.rejects(bounded(catalog.dropNamespace({ namespace: ['logs'] }), 'dropNamespace'), refused);
  await assert.rejects(bounded(catalog.createTable({ namespace: ['app'] }, {
    name: 't', schema: { type: 'struct', 'schema-id': 0, fields: [{ id: 1, name: 'id', type: 'long', required: true }] },
  }), 'createTable'), refused);
  await assert.rejects(bounded(catalog.dropTable({ namespace: ['app'], name: 'orders' }), 'dropTable'), refused);
  assert.deepEqual(await bounded(catalog.listNamespaces(), 'listNamespaces'), [{ namespace: ['app'] }, { namespace: ['logs'] }]);
  assert.deepEqual(await bounded(catalog.loadTable({ namespace: ['app'], name: 'orders' }), 'loadTable'), lake.orders);
});

test('iceberg-js with a bearer token scoped to one database', async () => {
  const TOKEN = 'iceberg-js-app-token-0123';
  const t = await startDosqld({ conf: `[auth]\ntoken = ${TOKEN} read app\n` });
  try {
    const tl = writeLake(t.dataDir);
    const scoped = new IcebergRestCatalog({ baseUrl: `${t.url}/v1/iceberg`, auth: { type: 'bearer', token: TOKEN } });
    assert.deepEqual(await bounded(scoped.listNamespaces(), 'listNamespaces'), [{ namespace: ['app'] }]);
    assert.deepEqual(await bounded(scoped.loadTable({ namespace: ['app'], name: 'orders' }), 'loadTable'), tl.orders);
    await assert.rejects(bounded(scoped.listTables({ namespace: ['logs'] }), 'listTables'), (e) => e.status === 403);
    const anonymous = new IcebergRestCatalog({ baseUrl: `${t.url}/v1/iceberg` });
    await assert.rejects(bounded(anonymous.listNamespaces(), 'listNamespaces'), (e) => {
      assert.equal(e.status, 401);
      assert.equal(e.icebergType, 'NotAuthorizedException');
      return true;
    });
  } finally {
    await t.cleanup();
  }
});
