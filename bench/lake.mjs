// bench/lake.mjs — the lake writer's measurements (bench/lake drives it).
//
//   node bench/lake.mjs throughput PORT OBJECTS_DIR ROWS TMPDIR
//   node bench/lake.mjs lag PORT OBJECTS_DIR RATE SECONDS
//
// Prints "key=value" pairs.
import { createRequire } from 'node:module';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

const need = createRequire(new URL('../tests/interop/package.json', import.meta.url));
const { DuckDBInstance } = need('@duckdb/node-api');
const [mode, port, objects, a, b] = process.argv.slice(2);
const base = `http://127.0.0.1:${port}`;

async function post(url, body) {
  const r = await fetch(`${base}${url}`, { method: 'POST', body: body === undefined ? undefined : JSON.stringify(body) });
  const j = await r.json();
  if (r.status !== 200) throw new Error(`${url}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}
const sql = (text) => post('/v1/db/bench/query', { sql: text });

// The table's current metadata and the data files of its current snapshot,
// from the files under OBJECTS (the manifests are Avro: their paths are
// found as the .parquet names under data/, which a single writer's
// snapshots never remove).
function lakeTable(table) {
  const dir = path.join(objects, 'lake', 'bench', table);
  const v = Math.max(...readdirSync(path.join(dir, 'metadata')).map((f) => /^v(\d+)\.metadata\.json$/.exec(f)).filter(Boolean).map((m) => Number(m[1])));
  const md = JSON.parse(readFileSync(path.join(dir, 'metadata', `v${v}.metadata.json`), 'utf8'));
  const files = [];
  const walk = (d) => { for (const f of readdirSync(d)) { const p = path.join(d, f); if (statSync(p).isDirectory()) walk(p); else if (p.endsWith('.parquet')) files.push(p); } };
  walk(path.join(dir, 'data'));
  return { md, files };
}

if (mode === 'throughput') {
  const rows = Number(a);
  await sql('CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, price REAL, qty INTEGER, note TEXT)');
  for (let i = 0; i < rows; i += 1000) {
    const n = Math.min(1000, rows - i);
    await sql(`WITH RECURSIVE s(k) AS (SELECT ${i} UNION ALL SELECT k + 1 FROM s WHERE k < ${i + n - 1})
               INSERT INTO t SELECT k, 'name ' || (k % 977), (k % 1000) / 7.0, k % 13, hex(randomblob(8)) FROM s`);
  }
  const t0 = process.hrtime.bigint();
  const st = await post('/v1/admin/lake');
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (st.errors !== 0 || st.rows !== rows) throw new Error(`round: ${JSON.stringify(st)}`);
  const { files } = lakeTable('t_changelog');
  const ours = files.reduce((s, f) => s + statSync(f).size, 0);
  // DuckDB: the same rows, in its memory, written by its own COPY.
  const db = await DuckDBInstance.create(':memory:');
  const con = await db.connect();
  await con.run('SET threads = 1');
  await con.run(`CREATE TABLE x AS SELECT * FROM read_parquet([${files.map((f) => `'${f}'`).join(', ')}])`);
  const out = path.join(b, 'duckdb.parquet');
  const times = [];
  for (let r = 0; r < 3; r++) {
    const d0 = process.hrtime.bigint();
    await con.run(`COPY x TO '${out}' (FORMAT parquet, COMPRESSION zstd)`);
    times.push(Number(process.hrtime.bigint() - d0) / 1e9);
  }
  times.sort((p, q) => p - q);
  const theirs = statSync(out).size;
  console.log(`rows=${rows} dosqld_round_s=${secs.toFixed(3)} dosqld_rows_per_s=${(rows / secs).toFixed(0)} ` +
    `duckdb_copy_s=${times[1].toFixed(3)} duckdb_rows_per_s=${(rows / times[1]).toFixed(0)} ` +
    `dosqld_bytes=${ours} duckdb_bytes=${theirs} dosqld_bytes_per_row=${(ours / rows).toFixed(1)} ` +
    `duckdb_bytes_per_row=${(theirs / rows).toFixed(1)} dosqld_files=${files.length}`);
} else if (mode === 'lag') {
  const rate = Number(a);
  const seconds = Number(b);
  await sql('CREATE TABLE e(id INTEGER PRIMARY KEY, at INTEGER)');
  const end = Date.now() + seconds * 1000;
  let n = 0;
  while (Date.now() < end) {
    const next = Date.now() + 1000 / rate;
    await sql(`INSERT INTO e(at) VALUES (${Date.now()})`);
    n++;
    const wait = next - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  // Until the lake holds the last commit (bounded: 30 s).
  const last = (await sql('SELECT 1')).lsn;
  const until = Date.now() + 30000;
  let md;
  for (;;) {
    md = lakeTable('e_changelog').md;
    const cur = md.snapshots.find((s) => s['snapshot-id'] === md['current-snapshot-id']);
    if (Number(cur?.summary['dosqld.lsn'] ?? 0) >= last) break;
    if (Date.now() > until) throw new Error('the lake did not catch up in 30 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  // Each row's lag: the first snapshot whose position covers its LSN,
  // against the row's commit time.
  const snaps = md.snapshots.map((s) => ({ lsn: Number(s.summary['dosqld.lsn']), ms: s['timestamp-ms'] }))
    .sort((p, q) => p.lsn - q.lsn);
  const db = await DuckDBInstance.create(':memory:');
  const con = await db.connect();
  const { files } = lakeTable('e_changelog');
  const rows = (await con.runAndReadAll(`SELECT _lsn, epoch_ms(_commit_ts) AS ts FROM read_parquet([${files.map((f) => `'${f}'`).join(', ')}])`)).getRows();
  const lags = [];
  for (const [lsn, ts] of rows) {
    const s = snaps.find((x) => x.lsn >= Number(lsn));
    lags.push(s.ms - Number(ts));
  }
  lags.sort((p, q) => p - q);
  const at = (q) => lags[Math.min(lags.length - 1, Math.floor(q * lags.length))];
  console.log(`commits=${n} rows=${rows.length} snapshots=${snaps.length} lag_p50_ms=${at(0.5)} lag_p99_ms=${at(0.99)} lag_max_ms=${lags[lags.length - 1]}`);
} else {
  throw new Error(`unknown mode ${mode}`);
}
