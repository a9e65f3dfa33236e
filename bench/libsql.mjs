// bench/libsql.mjs — point reads one at a time, the same SQL and keys, through
// four clients of one dosqld: libSQL's @libsql/client over HTTP (Hrana's
// /v2/pipeline) and over WebSocket (hrana2), dosqld's JSON-RPC over a
// WebSocket (`ws`), and its HTTP /query (fetch). The difference is the
// protocol's own cost: each is one request and one reply per read.
// Prints "key=value" pairs: CLIENT_p50_us, CLIENT_p99_us, CLIENT_cpu_us
// (this process's CPU per read).
//
//   node bench/libsql.mjs PORT DB MAX COUNT
import { createRequire } from 'node:module';

const [port, db, max, count] = process.argv.slice(2).map((x, i) => (i === 1 ? x : Number(x)));
// The clients are the interop tests' (tests/interop/package-lock.json).
const need = createRequire(new URL('../tests/interop/package.json', import.meta.url));
const { createClient } = need('@libsql/client');
const WebSocket = need('ws');
const SQL = 'SELECT v FROM kv WHERE k = ?';
const key = () => 1 + Math.floor(Math.random() * max);

async function measure(name, read) {
  for (let i = 0; i < Math.min(200, count); i++) await read(key()); // warm up
  const times = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < count; i++) {
    const t0 = process.hrtime.bigint();
    const v = await read(key());
    times.push(Number(process.hrtime.bigint() - t0) / 1e3);
    if (typeof v !== 'string') throw new Error(`${name}: unexpected answer ${JSON.stringify(v)}`);
  }
  const cpu = process.cpuUsage(cpu0);
  times.sort((a, b) => a - b);
  const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))].toFixed(0);
  return `${name}_p50_us=${at(0.5)} ${name}_p99_us=${at(0.99)} ${name}_cpu_us=${((cpu.user + cpu.system) / count).toFixed(0)}`;
}

const out = [];
for (const scheme of ['http', 'ws']) {
  const c = createClient({ url: `${scheme}://127.0.0.1:${port}/v1/db/${db}/` });
  out.push(await measure(`libsql_${scheme}`, async (k) => (await c.execute({ sql: SQL, args: [k] })).rows[0].v));
  c.close();
}

// JSON-RPC over one WebSocket, one request at a time.
const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/db/${db}/rpc`);
await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
let waiting = null;
ws.on('message', (m) => { const w = waiting; waiting = null; w(JSON.parse(m)); });
let id = 0;
out.push(await measure('jsonrpc_ws', (k) => new Promise((res) => {
  waiting = (msg) => res(msg.result.rows[0][0]);
  ws.send(JSON.stringify({ id: ++id, method: 'query', params: { sql: SQL, params: [k] } }));
})));
ws.close();

const url = `http://127.0.0.1:${port}/v1/db/${db}/query`;
out.push(await measure('http_query', async (k) =>
  (await (await fetch(url, { method: 'POST', body: JSON.stringify({ sql: SQL, params: [k] }) })).json()).rows[0][0]));
console.log(out.join(' '));
