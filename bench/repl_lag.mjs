// bench/repl_lag — how far a database's followers trail its primary
// while bench/replication loads it (run beside the load, on the clients'
// CPU). Two measures, both for SECONDS:
//
//   sampled LSNs: every 10 ms, GET /v1/cluster?database=DB on the primary's
//     node; for each follower copy, the primary's durableLSN minus the
//     follower's appliedLSN (as the follower last acknowledged it): how
//     many commits durable on the primary the follower has not applied.
//     Per sample the larger of the followers' (the one behind) is kept.
//   visibility: one at a time, an INSERT on the primary (POST
//     /v1/db/DB/query; its reply carries the commit's lsn and rowid),
//     then at once a read of that row on a follower (the followers in
//     turn) with "consistency": "replica" and "minLSN": lsn, which that
//     copy answers once it has applied the commit (and the primary told
//     it the commit holds). The time from the INSERT's reply to the
//     read's is how long an acknowledged commit takes to be readable
//     there; it includes the read's own round trip, so right after it the
//     same read is made again (the row is there now) and its time kept
//     apart (rtt) to say how much of it that is.
//
//   node bench/repl_lag.mjs PRIMARY_PORT FOLLOWER_PORT[,PORT...] DB SECONDS
//
// Prints one line:
//   samples=N lag_p50=.. lag_p99=.. lag_max=.. lsn_rate=.. probes=N
//   vis_p50_ms=.. vis_p99_ms=.. rtt_p50_ms=.. rtt_p99_ms=.. errors=E
// (lag_* in commits; lsn_rate: the primary's commits/s over the samples).
// Every request has a 10 s timeout; the whole run ends after SECONDS + 15 s
// at the latest.
import http from 'node:http';

const [primaryPort, followerList, db, seconds] = process.argv.slice(2);
const followers = followerList.split(',').map(Number);
const until = Date.now() + Number(seconds) * 1000;
setTimeout(() => { console.error('repl_lag: overran its time'); process.exit(1); }, Number(seconds) * 1000 + 15000).unref();

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
let errors = 0;
let firstError = '';
function fail(what) {
  errors++;
  if (!firstError) firstError = what;
}

function request(port, method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({
      host: '127.0.0.1', port, method, path, agent, timeout: 10000,
      headers: data === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode, body: JSON.parse(text) });
        } catch (e) {
          reject(new Error(`${res.statusCode} ${text.slice(0, 200)}`));
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6;

// ---- Sampled LSNs ----
const lags = [];
let firstLsn = null;
let lastLsn = null;
async function sampler() {
  while (Date.now() < until) {
    const t = now();
    try {
      const r = await request(Number(primaryPort), 'GET', `/v1/cluster?database=${encodeURIComponent(db)}`);
      const d = r.body.database;
      const p = d.copies.find((c) => c.role === 'primary');
      const fs = d.copies.filter((c) => c.role !== 'primary');
      if (r.status !== 200 || !p || fs.length === 0) throw new Error(`no primary or followers: ${JSON.stringify(r.body).slice(0, 200)}`);
      lags.push(Math.max(...fs.map((f) => Math.max(0, p.durableLSN - f.appliedLSN))));
      if (firstLsn === null) firstLsn = [t, p.durableLSN];
      lastLsn = [t, p.durableLSN];
    } catch (e) {
      fail(`cluster: ${e.message}`);
    }
    const left = 10 - (now() - t);
    if (left > 0) await sleep(left);
  }
}

// ---- Visibility ----
const vis = [];
const rtt = [];
async function prober() {
  let i = 0;
  while (Date.now() < until) {
    const port = followers[i++ % followers.length];
    try {
      const w = await request(Number(primaryPort), 'POST', `/v1/db/${db}/query`, { sql: 'INSERT INTO c(v) VALUES (-1)' });
      if (w.status !== 200 || !(w.body.lsn > 0)) throw new Error(`insert: ${w.status} ${JSON.stringify(w.body).slice(0, 200)}`);
      const t0 = now();
      const q = { sql: 'SELECT v FROM c WHERE k = ?', params: [w.body.lastInsertRowid], consistency: 'replica', minLSN: w.body.lsn };
      const r = await request(port, 'POST', `/v1/db/${db}/query`, q);
      const t1 = now();
      const again = await request(port, 'POST', `/v1/db/${db}/query`, q);
      const t2 = now();
      if (r.status !== 200 || !r.body.rows || r.body.rows.length !== 1)
        throw new Error(`read on :${port}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
      if (again.status !== 200) throw new Error(`read again on :${port}: ${again.status}`);
      vis.push(t1 - t0);
      rtt.push(t2 - t1);
    } catch (e) {
      fail(`probe: ${e.message}`);
      await sleep(50);
    }
    await sleep(2);
  }
}

await Promise.all([sampler(), prober()]);
agent.destroy();
const q = (a, p) => {
  if (a.length === 0) return 'nan';
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
};
const f2 = (x) => (x === 'nan' ? x : x.toFixed(2));
const rate = firstLsn && lastLsn && lastLsn[0] > firstLsn[0]
  ? ((lastLsn[1] - firstLsn[1]) / ((lastLsn[0] - firstLsn[0]) / 1000)).toFixed(0) : 'nan';
if (firstError) console.error(`repl_lag: first error: ${firstError}`);
console.log(`samples=${lags.length} lag_p50=${q(lags, 0.5)} lag_p99=${q(lags, 0.99)} lag_max=${q(lags, 1)} lsn_rate=${rate}` +
  ` probes=${vis.length} vis_p50_ms=${f2(q(vis, 0.5))} vis_p99_ms=${f2(q(vis, 0.99))}` +
  ` rtt_p50_ms=${f2(q(rtt, 0.5))} rtt_p99_ms=${f2(q(rtt, 0.99))} errors=${errors}`);
