// bench/sharding — keyspace workloads against one database, same run
// (bench/sharding drives it; prints KEY=VALUE lines):
//   - point reads: one at a time over one keep-alive connection, a key
//     of shard 0 each: through the keyspace and straight to shard 0;
//     p50 and p99 of each;
//   - a scatter `SELECT g, count(*) FROM t GROUP BY g` over every shard
//     vs the same on one database holding every shard's rows;
//   - `SELECT id, v FROM t ORDER BY v DESC LIMIT 10` the same way;
//   - rows moved from the shards to the router per query (the metric
//     dosqld_keyspace_shard_rows_total before and after), against the
//     result's rows.
//
//   node bench/sharding.mjs PORT KEYSPACE SHARD0 ONEDB REPS POINTS
const [port, ks, shard0, onedb, repsArg, pointsArg] = process.argv.slice(2);
const base = `http://127.0.0.1:${port}`;
const reps = Number(repsArg), points = Number(pointsArg);

async function q(path, sql, params) {
  const r = await fetch(`${base}${path}`, { method: 'POST', body: JSON.stringify(params ? { sql, params } : { sql }) });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`${path} ${sql}: ${JSON.stringify(body)}`);
  return body;
}

const shardRows = async () => Number(/dosqld_keyspace_shard_rows_total (\d+)/.exec(await (await fetch(`${base}/metrics`)).text())[1]);
const pct = (v, p) => v[Math.min(v.length - 1, Math.floor(p * v.length))];
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function timeit(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

// Point reads: the keys of shard 0.
const keys = (await q(`/v1/db/${shard0}/query`, 'SELECT id FROM t LIMIT 2000')).rows.map((r) => r[0]);
const lat = { ks: [], db: [] };
for (let i = 0; i < points; i++) {
  const key = keys[i % keys.length];
  const sql = 'SELECT * FROM t WHERE id = ?';
  // In turn first, so that neither always runs on a warmer cache.
  const order = i % 2 ? ['ks', 'db'] : ['db', 'ks'];
  for (const which of order) {
    const path = which === 'ks' ? `/v1/ks/${ks}/query` : `/v1/db/${shard0}/query`;
    lat[which].push(await timeit(() => q(path, sql, [key])));
  }
}
for (const k of ['ks', 'db']) lat[k].sort((a, b) => a - b);
console.log(`point_ks_p50_ms=${pct(lat.ks, 0.5).toFixed(3)} point_ks_p99_ms=${pct(lat.ks, 0.99).toFixed(3)}`);
console.log(`point_db_p50_ms=${pct(lat.db, 0.5).toFixed(3)} point_db_p99_ms=${pct(lat.db, 0.99).toFixed(3)}`);

for (const [name, sql] of [
  ['group', 'SELECT g, count(*) FROM t GROUP BY g'],
  ['topn', 'SELECT id, v FROM t ORDER BY v DESC LIMIT 10'],
]) {
  const tks = [], tdb = [];
  let moved = 0, resultRows = 0;
  for (let i = 0; i < reps; i++) {
    const before = await shardRows();
    let res;
    tks.push(await timeit(async () => { res = await q(`/v1/ks/${ks}/query`, sql); }));
    moved += (await shardRows()) - before;
    resultRows += res.rows.length;
    tdb.push(await timeit(() => q(`/v1/db/${onedb}/query`, sql)));
  }
  console.log(`${name}_ks_ms=${median(tks).toFixed(1)} ${name}_db_ms=${median(tdb).toFixed(1)} ` +
    `${name}_rows_moved=${(moved / reps).toFixed(0)} ${name}_result_rows=${(resultRows / reps).toFixed(0)}`);
}
