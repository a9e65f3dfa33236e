// bench/scale — many databases on one node, against a running dosqld (PORT, its PID):
//   1. create and touch N databases, 64 requests in flight over keep-alive
//      HTTP: CREATE TABLE t(x); INSERT INTO t VALUES (i) in database s<i>;
//   2. wait until every one is hibernated (getStats actorsOpen = 0) and
//      read the server's resident memory: per hibernated database, the
//      growth over the memory before the first database, divided by N;
//   3. wake-up: SELECT x FROM t on 1,000 random hibernated databases, one
//      at a time (p50/p99 of the round trip), beside the same SELECT on
//      one open database 1,000 times;
//   4. per open database: 1,000 of them opened at once, the growth of the
//      heap in use (getStats server.heap) divided by how many are open.
// Prints one line of key=value figures.
//
//   node bench/scale.mjs PORT PID N
import { readFileSync } from 'node:fs';

const [port, pid, nArg, mode] = process.argv.slice(2);
const N = Number(nArg);
const base = `http://127.0.0.1:${port}`;
const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function q(db, sql) {
  const r = await fetch(`${base}/v1/db/${db}/query`, { method: 'POST', body: JSON.stringify({ sql }) });
  const j = await r.json();
  if (r.status !== 200) throw new Error(`${db}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}
async function server() {
  const r = await fetch(`${base}/v1/rpc`, { method: 'POST', body: JSON.stringify({ id: 1, method: 'getStats', params: {} }) });
  return (await r.json()).result.server;
}
async function pool(n, conc, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: conc }, async () => {
    for (let i = next++; i < n; i = next++) await fn(i);
  }));
}
async function hibernated(ms) {
  const until = Date.now() + ms;
  for (;;) {
    const s = await server();
    if (s.actorsOpen === 0) return s;
    if (Date.now() > until) throw new Error(`still open: ${JSON.stringify(s)}`);
    await sleep(200);
  }
}
const pct = (v, p) => v[Math.min(v.length - 1, Math.floor(p * v.length))];
async function lat(count, pick) {
  const t = [];
  for (let k = 0; k < count; k++) {
    const i = pick(k);
    const t0 = process.hrtime.bigint();
    const r = await q(`s${i}`, 'SELECT x FROM t');
    t.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (r.rows[0][0] !== i) throw new Error(`s${i}: ${JSON.stringify(r.rows)}`);
  }
  t.sort((a, b) => a - b);
  return [pct(t, 0.5), pct(t, 0.99)];
}

const heap = async () => (await server()).heap.inUse;
if (mode === 'wait') { // (bench/scale: until every database is hibernated again)
  await hibernated(120000);
  process.exit(0);
}
const rss0 = rss();
const heap0 = await heap();
const t0 = Date.now();
await pool(N, 64, (i) => q(`s${i}`, `CREATE TABLE t(x); INSERT INTO t VALUES (${i})`));
const createS = (Date.now() - t0) / 1000;
await hibernated(300000);
await sleep(2500); // (the heap is trimmed at most every 2 s)
const rssH = rss();
const heapH = await heap();
const [wake50, wake99] = await lat(1000, () => Math.floor(Math.random() * N));
await lat(1, () => 0);
const [open50, open99] = await lat(1000, () => 0);
await hibernated(120000);
const heapH2 = await heap();
const M = Math.min(1000, N);
await pool(M, 64, (i) => q(`s${i}`, 'SELECT x FROM t'));
const s = await server();
const heapO = s.heap.inUse;
console.log([
  `n=${N}`, `create_s=${createS.toFixed(1)}`, `create_per_s=${(N / createS).toFixed(0)}`,
  `rss_base_mb=${(rss0 / 1048576).toFixed(1)}`, `rss_hibernated_mb=${(rssH / 1048576).toFixed(1)}`,
  `per_hibernated_b=${((rssH - rss0) / N).toFixed(0)}`, `heap_per_hibernated_b=${((heapH - heap0) / N).toFixed(0)}`,
  `wake_p50_ms=${wake50.toFixed(2)}`, `wake_p99_ms=${wake99.toFixed(2)}`,
  `open_p50_ms=${open50.toFixed(2)}`, `open_p99_ms=${open99.toFixed(2)}`,
  `opened=${s.actorsOpen}`, `per_open_kb=${((heapO - heapH2) / Math.max(1, s.actorsOpen) / 1024).toFixed(1)}`,
].join(' '));
