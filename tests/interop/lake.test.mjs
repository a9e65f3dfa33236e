// Interop: the lake writer (lake/writer.c). A daemon with [lake] feeds the
// CDC of the databases its globs select into Iceberg changelog tables in
// its object store; the test reads them the way an engine would, with
// independent readers: the metadata JSON, the manifest lists and manifests
// with avsc, every data file they list with DuckDB. Replaying each
// changelog by key gives the source table back, row for row; a writer cut
// at any point of a commit and restarted takes every change once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import avro from 'avsc';
import { DuckDBInstance } from '@duckdb/node-api';
import { runDosqld, startDosqld, tempDir } from '../integration/lib/harness.mjs';

const LAKE = '[lake]\ndatabases = shop*\nflush_interval = 1h\ncurrent_state_interval = 0\n';

async function post(d, url, body) {
  const r = await fetch(`${d.url}${url}`, { method: 'POST', body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}
async function sql(d, db, text) {
  const r = await post(d, `/v1/db/${db}/query`, { sql: text });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}
async function flush(d) {
  const r = await post(d, '/v1/admin/lake');
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

function decode(file) {
  return new Promise((resolve, reject) => {
    const records = [];
    avro.createFileDecoder(file).on('data', (r) => records.push(r)).on('end', () => resolve(records)).on('error', reject);
  });
}
const fileOf = (uri) => {
  assert.ok(uri.startsWith('file://'), uri);
  return uri.slice('file://'.length);
};

// A lake table as a reader finds it: the highest vN.metadata.json, its
// current snapshot's manifest list, the manifests, the live data files.
async function loadTable(d, db, table) {
  const dir = path.join(d.dataDir, 'objects', 'lake', db, table, 'metadata');
  const versions = readdirSync(dir).map((f) => /^v(\d+)\.metadata\.json$/.exec(f)).filter(Boolean).map((m) => Number(m[1]));
  const version = Math.max(...versions);
  const md = JSON.parse(readFileSync(path.join(dir, `v${version}.metadata.json`), 'utf8'));
  const snap = md.snapshots.find((s) => s.snapshot_id === md['current-snapshot-id'] || s['snapshot-id'] === md['current-snapshot-id']);
  const list = await decode(fileOf(snap['manifest-list']));
  const files = [];
  for (const m of list) {
    const entries = await decode(fileOf(m.manifest_path));
    for (const e of entries) if (e.status !== 2) files.push(e.data_file);
  }
  return { md, version, snap, list, files };
}

// The changelog replayed by key: the last change of each row by (_lsn,
// _seq); a DELETE removes it.
async function replay(con, files, key, cols) {
  const list = files.map((f) => `'${fileOf(f.file_path)}'`).join(', ');
  const rows = (await con.runAndReadAll(`SELECT * FROM read_parquet([${list}], union_by_name = true) ORDER BY _lsn, _seq`)).getRowObjects();
  const state = new Map();
  for (const r of rows) {
    const k = String(r[key]);
    if (r._op === 'DELETE') state.delete(k);
    else state.set(k, cols.map((c) => (r[c] === null || r[c] === undefined ? null : typeof r[c] === 'bigint' ? Number(r[c]) : r[c])));
  }
  return { rows, state: [...state.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([, v]) => v) };
}

test('every table of the selected databases becomes a changelog table that DuckDB reads back to the table', async () => {
  const d = await startDosqld({ conf: LAKE });
  const duck = await DuckDBInstance.create(':memory:');
  const con = await duck.connect();
  try {
    await sql(d, 'shop1', 'CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, price REAL)');
    await sql(d, 'shop1', 'CREATE TABLE w(k TEXT PRIMARY KEY, v INT) WITHOUT ROWID');
    await sql(d, 'other', 'CREATE TABLE t(x)');
    await sql(d, 'other', 'INSERT INTO t VALUES (1)');
    await sql(d, 'shop1', "INSERT INTO t(name, price) VALUES ('apple', 1.5), ('pear', 2), ('fig', NULL)");
    await sql(d, 'shop1', "INSERT INTO w VALUES ('a', 1), ('b', 2)");
    let st = await flush(d);
    assert.equal(st.errors, 0, st.lastError);
    assert.equal(st.commits, 4, 'per table, its changelog and its current state');
    await sql(d, 'shop1', "UPDATE t SET price = price * 2 WHERE name <> 'fig'; DELETE FROM t WHERE name = 'pear'");
    await sql(d, 'shop1', "UPDATE w SET k = 'z' WHERE k = 'a'; INSERT INTO t(name) VALUES ('kiwi')");
    for (let i = 0; i < 50; i++) await sql(d, 'shop1', `INSERT INTO t(name, price) VALUES ('n${i}', ${i}.25)`);
    st = await flush(d);
    assert.equal(st.errors, 0, st.lastError);
    assert.ok(!existsSync(path.join(d.dataDir, 'objects', 'lake', 'other')), 'a database no glob selects stays out');

    const t = await loadTable(d, 'shop1', 't_changelog');
    assert.equal(t.md['format-version'], 2);
    assert.equal(t.version, 2, 'two commits of table t');
    assert.equal(t.snap.summary.operation, 'append');
    const last = (await sql(d, 'shop1', 'SELECT 1')).lsn;
    assert.equal(t.snap.summary['dosqld.lsn'], String(last), 'the position committed with the snapshot');
    assert.equal(t.list.length, 2, 'the earlier snapshot\'s manifest carried forward');
    assert.equal(Number(t.snap.summary['total-records']), t.files.reduce((a, f) => a + Number(f.record_count), 0));
    const ns = JSON.parse(readFileSync(path.join(d.dataDir, 'objects', 'lake', 'shop1', 'namespace.json'), 'utf8'));
    assert.equal(ns.properties['dosqld.lsn'], String(last));
    // The schema: changelog columns, then the table's by declared type.
    const schema = t.md.schemas.find((s) => s['schema-id'] === t.md['current-schema-id']);
    assert.deepEqual(schema.fields.map((f) => `${f.name}:${f.type}`), ['_op:string', '_lsn:long', '_database:string',
      '_commit_ts:timestamptz', '_rowid:long', '_seq:long', '_unfit:string', 'id:long', 'name:string', 'price:double']);
    assert.deepEqual(t.md['partition-specs'][0].fields.map((f) => f.transform), ['day']);
    // Every file the manifests list is there, with the counts they say.
    for (const f of t.files) {
      assert.ok(existsSync(fileOf(f.file_path)), f.file_path);
      const n = (await con.runAndReadAll(`SELECT count(*) AS n FROM read_parquet('${fileOf(f.file_path)}')`)).getRowObjects()[0].n;
      assert.equal(Number(n), Number(f.record_count));
      assert.ok(f.partition._commit_ts_day > 20000, 'partitioned by day');
    }
    const want = (await sql(d, 'shop1', 'SELECT id, name, price FROM t ORDER BY id')).rows;
    const r = await replay(con, t.files, '_rowid', ['id', 'name', 'price']);
    assert.deepEqual(r.state.sort((a, b) => a[0] - b[0]), want, 'the changelog replayed is the table');
    const w = await loadTable(d, 'shop1', 'w_changelog');
    const rw = await replay(con, w.files, 'k', ['k', 'v']);
    assert.deepEqual(rw.state, (await sql(d, 'shop1', 'SELECT k, v FROM w ORDER BY k')).rows);
    // The current-state tables: the table's rows as of the same commit,
    // read straight from the files the manifests list.
    const cur = await loadTable(d, 'shop1', 't');
    assert.equal(cur.snap.summary.operation, 'overwrite');
    assert.equal(cur.snap.summary['dosqld.lsn'], String(last));
    assert.equal(cur.md.properties['dosqld.table-kind'], 'current-state');
    const curSchema = cur.md.schemas.find((s) => s['schema-id'] === cur.md['current-schema-id']);
    assert.deepEqual(curSchema.fields.map((f) => f.name), ['_rowid', 'id', 'name', 'price', '_unfit']);
    const read = async (files, cols, order) => (await con.runAndReadAll(
      `SELECT ${cols} FROM read_parquet([${files.map((f) => `'${fileOf(f.file_path)}'`).join(', ')}]) ORDER BY ${order}`))
      .getRows().map((row) => row.map((v) => (typeof v === 'bigint' ? Number(v) : v)));
    assert.deepEqual(await read(cur.files, 'id, name, price', 'id'), want, 'the current state is the table');
    assert.deepEqual((await read(cur.files, '_rowid', '_rowid')).map((x) => x[0]), want.map((x) => x[0]));
    const curW = await loadTable(d, 'shop1', 'w');
    assert.deepEqual(await read(curW.files, 'k, v', 'k'), (await sql(d, 'shop1', 'SELECT k, v FROM w ORDER BY k')).rows);
    assert.equal(curW.list.length, 1, 'one manifest: the last snapshot\'s files are replaced');
    // Nothing new: a round commits nothing.
    const before = st.commits;
    st = await flush(d);
    assert.equal(st.commits, before);
  } finally {
    con.closeSync?.();
    await d.cleanup();
  }
});

test('ADD COLUMN and RENAME COLUMN become schema changes that keep field ids; old files stay readable', async () => {
  const d = await startDosqld({ conf: LAKE });
  const duck = await DuckDBInstance.create(':memory:');
  const con = await duck.connect();
  try {
    await sql(d, 'shop2', 'CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT)');
    await sql(d, 'shop2', "INSERT INTO t(a) VALUES ('one'), ('two')");
    await flush(d);
    const before = await loadTable(d, 'shop2', 't_changelog');
    const idOf = (md, name) => md.schemas.find((s) => s['schema-id'] === md['current-schema-id']).fields.find((f) => f.name === name)?.id;
    const aId = idOf(before.md, 'a');
    await sql(d, 'shop2', 'ALTER TABLE t ADD COLUMN qty INTEGER');
    await sql(d, 'shop2', "INSERT INTO t(a, qty) VALUES ('three', 3)");
    // A rename and rows before and after it in one round: two files.
    await sql(d, 'shop2', "UPDATE t SET qty = 1 WHERE id = 1");
    await sql(d, 'shop2', 'ALTER TABLE t RENAME COLUMN a TO label');
    await sql(d, 'shop2', "INSERT INTO t(label, qty) VALUES ('four', 4); UPDATE t SET label = 'TWO' WHERE id = 2");
    const st = await flush(d);
    assert.equal(st.errors, 0, st.lastError);
    const after = await loadTable(d, 'shop2', 't_changelog');
    assert.equal(idOf(after.md, 'label'), aId, 'the renamed column keeps its field id');
    assert.equal(idOf(after.md, 'a'), undefined);
    assert.ok(idOf(after.md, 'qty') > aId, 'the new column has a new id');
    assert.ok(after.md.schemas.length >= 3, 'a schema per change');
    // DuckDB reads each file by its own names; by field id they are one
    // column: read them and map a -> label through the ids.
    const byId = new Map();
    for (const f of after.files) {
      const schema = (await con.runAndReadAll(`SELECT name, field_id FROM parquet_schema('${fileOf(f.file_path)}')`)).getRowObjects();
      for (const s of schema) if (s.field_id !== null) byId.set(`${fileOf(f.file_path)}:${s.name}`, Number(s.field_id));
    }
    const state = new Map();
    const rows = [];
    for (const f of after.files) {
      const file = fileOf(f.file_path);
      for (const r of (await con.runAndReadAll(`SELECT * FROM read_parquet('${file}')`)).getRowObjects()) {
        const o = { _lsn: Number(r._lsn), _seq: Number(r._seq), _op: r._op, _rowid: Number(r._rowid) };
        for (const [k, v] of Object.entries(r)) {
          const id = byId.get(`${file}:${k}`);
          if (id === aId) o.label = v;
          if (id === idOf(after.md, 'qty')) o.qty = v === null ? null : Number(v);
        }
        rows.push(o);
      }
    }
    rows.sort((x, y) => x._lsn - y._lsn || x._seq - y._seq);
    for (const o of rows) {
      if (o._op === 'DELETE') state.delete(o._rowid);
      else state.set(o._rowid, [o._rowid, o.label, o.qty ?? null]);
    }
    const want = (await sql(d, 'shop2', 'SELECT id, label, qty FROM t ORDER BY id')).rows;
    assert.deepEqual([...state.values()].sort((x, y) => x[0] - y[0]), want);
    const cur = await loadTable(d, 'shop2', 't');
    const got = (await con.runAndReadAll(`SELECT id, label, qty FROM read_parquet([${cur.files.map((f) => `'${fileOf(f.file_path)}'`).join(', ')}]) ORDER BY id`))
      .getRows().map((row) => row.map((v) => (typeof v === 'bigint' ? Number(v) : v)));
    assert.deepEqual(got, want, 'the current state, under the new names');
  } finally {
    con.closeSync?.();
    await d.cleanup();
  }
});

// Cut the writer at each point of a commit (the second table's commit of
// the round: the first one's is in; or the first's, just after it is in);
// the restarted daemon takes every change exactly once.
for (const point of ['before-upload:2', 'before-commit:2', 'after-commit:1']) {
  test(`the writer killed ${point.replace('-', ' ')} resumes with no change twice and none missing`, async () => {
    const dataDir = path.join(tempDir(), 'data'); // (outlives the first daemon)
    let d = await startDosqld({ conf: LAKE, dataDir, env: { DSQ_LAKE_FAILPOINT: point } });
    const duck = await DuckDBInstance.create(':memory:');
    const con = await duck.connect();
    try {
      await sql(d, 'shop3', 'CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)');
      await sql(d, 'shop3', 'CREATE TABLE u(id INTEGER PRIMARY KEY, v INT)');
      for (let i = 0; i < 20; i++) await sql(d, 'shop3', `INSERT INTO t(v) VALUES (${i}); INSERT INTO u(v) VALUES (${i})`);
      // The first round commits table t, then is cut in u's commit (or
      // in t's, before-upload): the daemon ends where the point is.
      fetch(`${d.url}/v1/admin/lake`, { method: 'POST' }).catch(() => {});
      const e = await d.exit;
      assert.equal(e.code, 70, `ended at the failpoint:\n${d.stderr.slice(-1500)}`);
      await d.cleanup().catch(() => {});
      d = await startDosqld({ conf: LAKE, dataDir });
      for (let i = 20; i < 30; i++) await sql(d, 'shop3', `UPDATE t SET v = v + 100 WHERE id = ${i - 19}; INSERT INTO u(v) VALUES (${i})`);
      const st = await flush(d);
      assert.equal(st.errors, 0, st.lastError);
      const commits = (await sql(d, 'shop3', 'SELECT 1')).lsn;
      for (const [table, key] of [['t', '_rowid'], ['u', '_rowid']]) {
        const lt = await loadTable(d, 'shop3', `${table}_changelog`);
        const r = await replay(con, lt.files, key, ['id', 'v']);
        const seen = new Set();
        for (const row of r.rows) {
          const k = `${row._lsn}/${row._seq}`;
          assert.ok(!seen.has(k), `change ${k} of ${table} twice`);
          seen.add(k);
        }
        assert.deepEqual(r.state.sort((a, b) => a[0] - b[0]), (await sql(d, 'shop3', `SELECT id, v FROM ${table} ORDER BY id`)).rows,
          `table ${table} replayed`);
        assert.equal(lt.snap.summary['dosqld.lsn'], String(commits));
        const cur = await loadTable(d, 'shop3', table);
        const rows = (await con.runAndReadAll(`SELECT id, v FROM read_parquet([${cur.files.map((f) => `'${fileOf(f.file_path)}'`).join(', ')}]) ORDER BY id`))
          .getRows().map((row) => row.map(Number));
        assert.deepEqual(rows, (await sql(d, 'shop3', `SELECT id, v FROM ${table} ORDER BY id`)).rows, `current state of ${table}`);
      }
    } finally {
      con.closeSync?.();
      await d.cleanup();
      rmSync(path.dirname(dataDir), { recursive: true, force: true });
    }
  });
}

// What the writer commits, a catalog client loads: iceberg-js through the
// daemon's own REST catalog finds the namespace, its changelog tables, and
// the metadata the writer committed last (its files' URIs absolute).
test('iceberg-js loads the changelog tables the writer committed, through the daemon\'s catalog', async () => {
  const d = await startDosqld({ conf: LAKE });
  try {
    await sql(d, 'shop4', 'CREATE TABLE orders(id INTEGER PRIMARY KEY, total REAL)');
    await sql(d, 'shop4', 'INSERT INTO orders(total) VALUES (9.5), (12)');
    await flush(d);
    await sql(d, 'shop4', 'INSERT INTO orders(total) VALUES (1)');
    await flush(d);
    const { IcebergRestCatalog } = await import('iceberg-js');
    const catalog = new IcebergRestCatalog({ baseUrl: `${d.url}/v1/iceberg` });
    assert.deepEqual(await catalog.listNamespaces(), [{ namespace: ['shop4'] }]);
    const props = (await catalog.loadNamespaceMetadata({ namespace: ['shop4'] })).properties;
    assert.equal(props['dosqld.lsn'], String((await sql(d, 'shop4', 'SELECT 1')).lsn));
    assert.deepEqual(await catalog.listTables({ namespace: ['shop4'] }), [
      { namespace: ['shop4'], name: 'orders' }, { namespace: ['shop4'], name: 'orders_changelog' }]);
    const m = await catalog.loadTable({ namespace: ['shop4'], name: 'orders_changelog' });
    const onDisk = await loadTable(d, 'shop4', 'orders_changelog');
    assert.deepEqual(m, onDisk.md, 'the current version');
    assert.equal(m.snapshots.length, 2);
    assert.match(m.location, /^file:\/\/\/.+\/objects\/lake\/shop4\/orders_changelog$/);
    assert.equal(m['metadata-log'].length, 1, 'the version it replaced noted');
    assert.equal(onDisk.files.length, 2);
  } finally {
    await d.cleanup();
  }
});

test('table_partitioning gives some tables their own spec; a line that is not GLOB SPEC is refused at start', async () => {
  const d = await startDosqld({ conf: `${LAKE}table_partitioning = shop8.ev* day,database\ntable_partitioning = *.plain none\n` });
  try {
    for (const t of ['events', 'plain', 'other']) {
      await sql(d, 'shop8', `CREATE TABLE ${t}(id INTEGER PRIMARY KEY)`);
      await sql(d, 'shop8', `INSERT INTO ${t} VALUES (1)`);
    }
    assert.equal((await flush(d)).errors, 0);
    const spec = async (t) => (await loadTable(d, 'shop8', `${t}_changelog`)).md['partition-specs'][0].fields.map((f) => f.transform);
    assert.deepEqual(await spec('events'), ['day', 'identity']);
    assert.deepEqual(await spec('plain'), []);
    assert.deepEqual(await spec('other'), ['day'], 'partitioning\'s default');
  } finally {
    await d.cleanup();
  }
  const dir = tempDir();
  try {
    const bad = path.join(dir, 'bad.conf');
    writeFileSync(bad, '[lake]\ntable_partitioning = shop.t hourly\ntable_partitioning = day\n');
    const r = await runDosqld(['--check-config', '-c', bad]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /lake\.table_partitioning: 'shop\.t hourly' is not "DATABASE\.TABLE SPEC"/);
    assert.match(r.stderr, /lake\.table_partitioning: 'day' is not/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('partitioning = day,database: both partition fields, in the spec, the manifests and the paths; none: no spec', async () => {
  for (const [part, want] of [['day,database', ['day', 'identity']], ['none', []], ['database', ['identity']]]) {
    const d = await startDosqld({ conf: `${LAKE}partitioning = ${part}\n` });
    try {
      await sql(d, 'shop5', 'CREATE TABLE t(id INTEGER PRIMARY KEY)');
      await sql(d, 'shop5', 'INSERT INTO t VALUES (1), (2)');
      assert.equal((await flush(d)).errors, 0);
      const t = await loadTable(d, 'shop5', 't_changelog');
      const spec = t.md['partition-specs'][0].fields;
      assert.deepEqual(spec.map((f) => f.transform), want, part);
      assert.equal(t.files.length, 1);
      const f = t.files[0];
      if (want.includes('identity')) {
        assert.equal(f.partition._database, 'shop5');
        assert.match(f.file_path, /\/data\/(_commit_ts_day=\d{4}-\d\d-\d\d\/)?_database=shop5\/[^/]+\.parquet$/);
      }
      if (want.length === 0) assert.match(f.file_path, /\/data\/[^/=]+\.parquet$/);
    } finally {
      await d.cleanup();
    }
  }
});

test('maintenance: old snapshots expire, files no snapshot references go once old enough, the tables read the same', async () => {
  const conf = `${LAKE}maintenance_interval = 0\nsnapshot_retention = 0\norphan_age = 1h\n`;
  const d = await startDosqld({ conf });
  const duck = await DuckDBInstance.create(':memory:');
  const con = await duck.connect();
  try {
    await sql(d, 'shop6', 'CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
    for (let r = 0; r < 3; r++) {
      await sql(d, 'shop6', `INSERT INTO t(v) VALUES ('a${r}'), ('b${r}'); UPDATE t SET v = v || '!' WHERE id = 1`);
      assert.equal((await flush(d)).errors, 0);
    }
    let st = await flush(d);
    assert.ok(st.expired >= 4, `the changelog's and the current state's older snapshots expired: ${JSON.stringify(st)}`);
    assert.equal(st.removed, 0, 'nothing is old enough yet');
    let t = await loadTable(d, 'shop6', 't_changelog');
    assert.equal(t.md.snapshots.length, 1, 'only the current snapshot is left');
    assert.equal(t.md['snapshot-log'].length, 1);
    // A cut commit's leftover, and every file, made two hours old; one
    // young leftover besides.
    const root = path.join(d.dataDir, 'objects', 'lake', 'shop6');
    const stray = path.join(root, 't_changelog', 'data', 'stray.parquet');
    writeFileSync(stray, 'PAR1');
    const old = new Date(Date.now() - 2 * 3600 * 1000);
    const walk = (dir) => readdirSync(dir).flatMap((f) => {
      const p = path.join(dir, f);
      return statSync(p).isDirectory() ? walk(p) : [p];
    });
    for (const f of walk(root)) utimesSync(f, old, old);
    const young = path.join(root, 't_changelog', 'data', 'young.parquet');
    writeFileSync(young, 'PAR1');
    const before = walk(root);
    st = await flush(d);
    assert.equal(st.errors, 0, st.lastError);
    assert.ok(st.removed >= 3, `removed: ${st.removed}`);
    assert.ok(!existsSync(stray), 'an old file no snapshot references is gone');
    assert.ok(existsSync(young), 'a young one stays (a commit may be under way)');
    const after = walk(root);
    assert.equal(before.length - after.length, st.removed);
    // What the snapshots reference is all there, and reads the same.
    t = await loadTable(d, 'shop6', 't_changelog');
    const r = await replay(con, t.files, '_rowid', ['id', 'v']);
    assert.deepEqual(r.state.sort((a, b) => a[0] - b[0]), (await sql(d, 'shop6', 'SELECT id, v FROM t ORDER BY id')).rows);
    const cur = await loadTable(d, 'shop6', 't');
    assert.equal(cur.files.length, 1);
    for (const f of [...t.files, ...cur.files]) assert.ok(existsSync(fileOf(f.file_path)), f.file_path);
    assert.ok(after.every((f) => !f.endsWith('.avro') || t.list.some((m) => fileOf(m.manifest_path) === f) ||
      cur.list.some((m) => fileOf(m.manifest_path) === f) || f.includes('/snap-')),
    'the manifests left are the snapshots\'');
    for (const f of after.filter((x) => x.includes('/snap-'))) {
      const sid = Number(/snap-(\d+)-/.exec(f)[1]);
      assert.ok([t.md['current-snapshot-id'], cur.md['current-snapshot-id']].includes(sid), `manifest list ${f} of an expired snapshot`);
    }
  } finally {
    con.closeSync?.();
    await d.cleanup();
  }
});

test('the log the lake has not taken stays, past history_retention; once taken it goes', async () => {
  const conf = '[storage]\ncheckpoint_size = 64K\nsegment_size = 64K\nhistory_retention = 0\n' + LAKE + 'current_state = no\n';
  const d = await startDosqld({ conf });
  const duck = await DuckDBInstance.create(':memory:');
  const con = await duck.connect();
  try {
    await sql(d, 'shop7', 'CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)');
    await sql(d, 'shop7', 'INSERT INTO t(v) VALUES (x\'00\')');
    assert.equal((await flush(d)).errors, 0);
    // Checkpoints and a zero window would retire all this log at once.
    for (let i = 0; i < 60; i++) await sql(d, 'shop7', 'INSERT INTO t(v) VALUES (randomblob(3000))');
    const segs = () => readdirSync(path.join(d.dataDir, 'db', 'shop7', 'wal')).filter((f) => f.endsWith('.seg')).length;
    const held = segs();
    assert.ok(held > 3, `the log is held: ${held} segments`);
    const st = await flush(d);
    assert.equal(st.errors, 0, st.lastError);
    const t = await loadTable(d, 'shop7', 't_changelog');
    const n = (await con.runAndReadAll(`SELECT count(*) AS n FROM read_parquet([${t.files.map((f) => `'${fileOf(f.file_path)}'`).join(', ')}])`)).getRowObjects()[0].n;
    assert.equal(Number(n), 61, 'every change reached the lake');
    // Taken: the next checkpoint lets it go.
    for (let i = 0; i < 30; i++) await sql(d, 'shop7', 'INSERT INTO t(v) VALUES (randomblob(3000))');
    assert.ok(segs() < held, `the log is let go: ${segs()} segments, ${held} before`);
  } finally {
    con.closeSync?.();
    await d.cleanup();
  }
});

test('another writer made the next version first: the commit is refused, counted, and the next round reloads and commits on top', async () => {
  const d = await startDosqld({ conf: `${LAKE}current_state = no\n` });
  const duck = await DuckDBInstance.create(':memory:');
  const con = await duck.connect();
  try {
    await sql(d, 'shop9', 'CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)');
    await sql(d, 'shop9', 'INSERT INTO t(v) VALUES (1), (2)');
    assert.equal((await flush(d)).commits, 1);
    // A second writer's commit: v2, the same table (its position unchanged).
    const meta = path.join(d.dataDir, 'objects', 'lake', 'shop9', 't_changelog', 'metadata');
    writeFileSync(path.join(meta, 'v2.metadata.json'), readFileSync(path.join(meta, 'v1.metadata.json')));
    await sql(d, 'shop9', 'INSERT INTO t(v) VALUES (3); UPDATE t SET v = 20 WHERE id = 2');
    let st = await flush(d);
    assert.equal(st.conflicts, 1, JSON.stringify(st));
    assert.equal(st.errors, 1);
    assert.match(st.lastError, /another writer committed to table t first/);
    assert.equal((await loadTable(d, 'shop9', 't_changelog')).version, 2, 'the other writer\'s version stands');
    st = await flush(d);
    assert.equal(st.errors, 1, st.lastError);
    assert.equal(st.commits, 2);
    const t = await loadTable(d, 'shop9', 't_changelog');
    assert.equal(t.version, 3, 'committed on top of it');
    const r = await replay(con, t.files, '_rowid', ['id', 'v']);
    assert.deepEqual(r.state.sort((a, b) => a[0] - b[0]), (await sql(d, 'shop9', 'SELECT id, v FROM t ORDER BY id')).rows);
    assert.equal(new Set(r.rows.map((x) => `${x._lsn}/${x._seq}`)).size, r.rows.length, 'no change twice');
  } finally {
    con.closeSync?.();
    await d.cleanup();
  }
});

test('a database whose log no longer starts at its first commit joins the lake from what the log holds', async () => {
  const dataDir = path.join(tempDir(), 'data');
  const storage = '[storage]\ncheckpoint_size = 64K\nsegment_size = 64K\nhistory_retention = 0\n';
  let d = await startDosqld({ conf: storage, dataDir });
  const duck = await DuckDBInstance.create(':memory:');
  const con = await duck.connect();
  try {
    await sql(d, 'shop10', 'CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)');
    for (let i = 0; i < 60; i++) await sql(d, 'shop10', 'INSERT INTO t(v) VALUES (randomblob(3000))');
    await d.cleanup();
    // Its history retired before any lake saw it.
    d = await startDosqld({ conf: storage + LAKE, dataDir });
    let st = await flush(d);
    assert.equal(st.errors, 0, st.lastError);
    assert.match(d.stderr, /event=lake_history_partial db=shop10 first_lsn=\d+/);
    const first = Number(/lake_history_partial db=shop10 first_lsn=(\d+)/.exec(d.stderr)[1]);
    assert.ok(first > 1, 'the log starts after the first commit');
    await sql(d, 'shop10', 'UPDATE t SET v = x\'01\' WHERE id = 1');
    st = await flush(d);
    assert.equal(st.errors, 0, st.lastError);
    const t = await loadTable(d, 'shop10', 't_changelog');
    const lsns = (await con.runAndReadAll(`SELECT _lsn FROM read_parquet([${t.files.map((f) => `'${fileOf(f.file_path)}'`).join(', ')}])`))
      .getRows().map((r) => Number(r[0]));
    assert.ok(lsns.length > 0 && lsns.every((x) => x >= first), 'only what the log held, and after');
    // The current state is the whole table all the same.
    const cur = await loadTable(d, 'shop10', 't');
    const n = (await con.runAndReadAll(`SELECT count(*) FROM read_parquet([${cur.files.map((f) => `'${fileOf(f.file_path)}'`).join(', ')}])`)).getRows()[0][0];
    assert.equal(Number(n), 60);
  } finally {
    con.closeSync?.();
    await d.cleanup();
    rmSync(path.dirname(dataDir), { recursive: true, force: true });
  }
});

test('a damaged metadata file or manifest list in the store stops that database\'s lake with the reason, and nothing else', async () => {
  const d = await startDosqld({ conf: `${LAKE}current_state = no\n` });
  try {
    await sql(d, 'shop11', 'CREATE TABLE t(id INTEGER PRIMARY KEY)');
    await sql(d, 'shop11', 'INSERT INTO t VALUES (1)');
    assert.equal((await flush(d)).errors, 0);
    const meta = path.join(d.dataDir, 'objects', 'lake', 'shop11', 't_changelog', 'metadata');
    const v1 = path.join(meta, 'v1.metadata.json');
    const good = readFileSync(v1);
    // A writer restarted on damaged metadata: refused, named, retried.
    await d.stop();
    writeFileSync(v1, '{"format-version": 2, "snapsh');
    const d2 = await startDosqld({ conf: `${LAKE}current_state = no\n`, dataDir: d.dataDir });
    try {
      await sql(d2, 'shop11', 'INSERT INTO t VALUES (2)');
      let st = await flush(d2);
      assert.equal(st.errors, 1);
      assert.match(st.lastError, /lake\/shop11\/t_changelog\/metadata\/v1\.metadata\.json: /);
      assert.match(d2.stderr, /event=lake_failed db=shop11/);
      // A damaged manifest list: the commit that carries it forward fails.
      writeFileSync(v1, good);
      const list = readdirSync(meta).find((f) => f.startsWith('snap-'));
      const listBytes = readFileSync(path.join(meta, list));
      writeFileSync(path.join(meta, list), listBytes.subarray(0, listBytes.length - 7));
      st = await flush(d2);
      assert.equal(st.errors, 2);
      assert.match(st.lastError, /avro: /);
      writeFileSync(path.join(meta, list), listBytes);
      st = await flush(d2);
      assert.equal(st.errors, 2, st.lastError);
      assert.match(d2.stderr, /event=lake_recovered db=shop11/);
      assert.equal((await loadTable(d2, 'shop11', 't_changelog')).version, 2);
    } finally {
      await d2.cleanup();
    }
  } finally {
    await d.cleanup();
  }
});
