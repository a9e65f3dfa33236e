// bench/pointlat — latency of point reads, one at a time over one
// keep-alive HTTP connection: POST /v1/db/DB/query with SQL taking one key
// drawn at random from 1..MAX. Prints "n=N p50_ms=X p99_ms=Y errors=E".
//
//   node bench/pointlat.mjs PORT DB 'SELECT ... WHERE n = ?' MAX COUNT
const [port, db, sql, max, count] = process.argv.slice(2);
const url = `http://127.0.0.1:${port}/v1/db/${db}/query`;
const times = [];
let errors = 0;
for (let i = 0; i < Number(count); i++) {
  const key = 1 + Math.floor(Math.random() * Number(max));
  const t0 = process.hrtime.bigint();
  const r = await fetch(url, { method: 'POST', body: JSON.stringify({ sql, params: [key] }) });
  const body = await r.json();
  times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  if (r.status !== 200 || !body.rows || body.rows.length !== 1) errors++;
}
times.sort((a, b) => a - b);
const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))].toFixed(2);
console.log(`n=${times.length} p50_ms=${at(0.5)} p99_ms=${at(0.99)} errors=${errors}`);
