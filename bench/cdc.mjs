// bench/cdc.mjs — CDC delivery latency and the writers' cost of subscribers.
//
//   node bench/cdc.mjs PORT latency SUBSCRIBERS RATE SECONDS
//     A writer commits one row every 1/RATE s (JSON-RPC over WebSocket);
//     SUBSCRIBERS WebSocket subscriptions on the same database receive
//     them. Prints, for every delivered event, the time from the writer
//     sending its INSERT to the event's arrival (p50_ms, p99_ms, max_ms),
//     and beside it the time from the same send to the commit's reply
//     (reply_p50_ms, reply_p99_ms): the commit is durable when its reply
//     and its events leave, so the difference is what delivery adds.
//   node bench/cdc.mjs PORT hold SUBSCRIBERS SECONDS
//     Keep SUBSCRIBERS subscriptions open and reading for SECONDS (while
//     another program writes); prints the events they received.
//
// Every figure is a difference of two readings of one monotonic clock in
// one process (performance.now()): both ends of each interval are taken
// here, so none can be negative.
import WebSocket from '../tests/node_modules/ws/wrapper.mjs';

const [, , portArg, mode, subsArg, a, b] = process.argv;
const port = Number(portArg);
const subs = Number(subsArg);
const now = () => performance.now();
const url = `ws://127.0.0.1:${port}/v1/db/cdcbench/rpc`;

function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
    ws.on('open', () => resolve(ws));
    ws.on('error', reject);
  });
}

function call(ws, method, params) {
  return new Promise((resolve, reject) => {
    const id = Math.floor(Math.random() * 1e12);
    const onMsg = (data) => {
      const m = JSON.parse(data.toString());
      if (m.id !== id) return;
      ws.off('message', onMsg);
      if (m.error) reject(new Error(`${method}: ${m.error.message}`));
      else resolve(m.result);
    };
    ws.on('message', onMsg);
    ws.send(JSON.stringify({ id, method, params }));
  });
}

// onEvent(params, t) for each event; with `count` only, the messages are
// counted, not parsed (the hold mode: its CPU is the writer's too).
async function subscribers(onEvent, count) {
  const list = [];
  for (let i = 0; i < subs; i++) {
    const ws = await open();
    await call(ws, 'subscribeCDC', { operations: ['INSERT'] });
    ws.on('message', count ? () => { count.n++; } : (data) => {
      const t = now();
      const m = JSON.parse(data.toString());
      for (const one of Array.isArray(m) ? m : [m]) if (one.method === 'cdc') onEvent(one.params, t);
    });
    list.push(ws);
  }
  return list;
}

const pct = (v, p) => v[Math.min(v.length - 1, Math.floor((p / 100) * v.length))];

if (mode === 'latency') {
  const rate = Number(a), secs = Number(b);
  const w = await open();
  await call(w, 'query', { sql: 'CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, v)' });
  const sent = new Map(); // n -> when its INSERT was sent
  const lat = [], replyLat = [];
  let delivered = 0;
  const list = await subscribers((ev, t) => {
    delivered++;
    const at = sent.get(ev.after.n);
    if (at !== undefined) lat.push(t - at);
  });
  const pending = new Map();
  w.on('message', (data) => {
    const m = JSON.parse(data.toString());
    const n = pending.get(m.id);
    if (n === undefined) return;
    pending.delete(m.id);
    replyLat.push(now() - sent.get(n));
  });
  const base = Date.now() % 1e9 * 1000;
  const start = now();
  let n = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const due = Math.floor(((now() - start) / 1000) * rate);
      while (n < due) {
        n++;
        const id = base + n;
        pending.set(id, base + n);
        sent.set(base + n, now());
        w.send(JSON.stringify({ id, method: 'query', params: { sql: 'INSERT INTO t VALUES (?, 0)', params: [base + n] } }));
      }
      if (now() - start < secs * 1000) setTimeout(tick, 1);
      else resolve();
    };
    tick();
  });
  await new Promise((r) => setTimeout(r, 500)); // the last deliveries
  lat.sort((x, y) => x - y);
  replyLat.sort((x, y) => x - y);
  console.log(`subscribers=${subs} commits=${n} events=${delivered} expected=${n * subs} ` +
    `p50_ms=${pct(lat, 50).toFixed(2)} p99_ms=${pct(lat, 99).toFixed(2)} max_ms=${lat[lat.length - 1].toFixed(2)} ` +
    `reply_p50_ms=${pct(replyLat, 50).toFixed(2)} reply_p99_ms=${pct(replyLat, 99).toFixed(2)}`);
  for (const ws of list) ws.terminate();
  w.terminate();
} else if (mode === 'hold') {
  const secs = Number(a);
  const count = { n: 0 };
  const w = await open();
  await call(w, 'query', { sql: 'CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, v)' });
  const list = await subscribers(null, count);
  console.log('ready');
  await new Promise((r) => setTimeout(r, secs * 1000));
  console.log(`subscribers=${subs} messages=${count.n}`);
  for (const ws of list) ws.terminate();
  w.terminate();
} else {
  console.error('usage: node bench/cdc.mjs PORT latency SUBSCRIBERS RATE SECONDS | hold SUBSCRIBERS SECONDS');
  process.exit(2);
}
process.exit(0);
