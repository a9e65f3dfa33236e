// chaos on etcd — an etcd and four nodes that find each other through
// it (each reaching etcd through a proxy of its own), three copies of 2 to
// 4 databases, writers through every live node and a probe per database,
// and one fault per round on a node chosen at random (most often the
// primary of a database): killed (SIGKILL) and started again, stopped
// (SIGSTOP) for longer than its lease, cut off from etcd, cut off from the
// other nodes (its links, through a proxy per node: etcd still sees it, so
// nothing fails over and its databases wait), cut off from both (the
// others fail over); now and then etcd itself killed and started again. Nobody promotes anything by hand:
// the nodes fail over by themselves. A node killed for longer than
// node_dead_after (3 s here) has its copies made again on the node
// without one (re-replication). Between rounds every database must serve
// again within a bound, and have its three copies on live nodes again. At
// the end, everything healed:
//
//   - every acknowledged id is on every copy etcd names (three, the number
//     configured), exactly once, and no copy holds an id that was never
//     sent;
//   - no (database, epoch) was promoted by two nodes (the daemons'
//     `event=promoted` lines, those of killed daemons included);
//   - the assignments in etcd, sampled all along, never went back to an
//     older epoch, and never named two primaries for one epoch;
//   - every node routes each database to the primary etcd names.
//
// Failover time, for each fault that took a primary away: from the fault
// to the first acknowledged write on that database sent after it (the
// probes write every 50 ms with a 1 s timeout through the nodes not
// faulted). A primary cut off from etcd is not gone: it serves until the
// new primary fences it, so for those (the ones replaced: a cut shorter
// than the lease replaces none) the figure is the longest stretch without
// an acknowledged write from the fault on (the hand-over).
//
// Also checked after each round: every node is back in etcd and linked,
// and no database's epoch rose by more than 3 (a promotion war). A failure
// writes every daemon's whole log to a directory it names.
//
//   node tests/chaos/chaos-etcd.mjs [ROUNDS] [SEED]      (make chaos-etcd)
//   CHAOS_LOGS=REGEX: print the daemons' log lines that match, at the end
//   CHAOS_ONLY=kill|stop|cut|isolate|both|etcd: every fault of that kind
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { clusterInfo, sleep, until } from '../cluster/lib/cluster.mjs';
import { PREFIX, startEtcdCluster } from '../cluster/lib/etcdcluster.mjs';

const CONF = 'replicas = 3\ncommit_timeout = 1500ms\npromote_timeout = 5s\nnode_dead_after = 3s\n';
const NODES = 4;
const KINDS = ['kill', 'stop', 'cut', 'isolate', 'both'];
const COPIES = 3;
const RESTORED_MS = 30000; // a database's copies all on live nodes again after a round
const TTL_MS = 2000;
const SERVE_MS = 30000;   // a database serving again after a round (else: stuck)
const WRITE_MS = 8000;    // a writer's request
const PROBE_MS = 1000;    // a probe's request
const PROBE_EVERY = 50;
const MAX_EPOCHS_A_ROUND = 4; // a database's epoch in etcd, in one round (a failover, a copy replaced, ...)
const STALL_NOTED_MS = 5000;  // a database whose primary was not faulted: its logs are kept
const b64 = (s) => Buffer.from(s).toString('base64');

// The p-th percentile (nearest rank) of numbers; null for none.
function pct(v, p) {
  if (v.length === 0) return null;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil(p * s.length) - 1)];
}
const stats = (v) => ({ n: v.length, p50: pct(v, 0.5), p99: pct(v, 0.99), max: v.length ? Math.max(...v) : null });

export async function chaosEtcd(rounds, { log = console.log, seed = Date.now() } = {}) {
  // The faults come from the seed alone (the writers draw elsewhere): a
  // seed replays the same choices (kinds, targets, durations).
  let x = seed >>> 0;
  const rand = () => ((x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const ndb = 2 + Math.floor(rand() * 3);
  const dbs = Array.from({ length: ndb }, (_, k) => `e${k}`);
  const c = await startEtcdCluster(NODES, { conf: CONF, ttl: `${TTL_MS / 1000}s`, etcdProxies: true, peerProxies: true });
  log(`chaos-etcd: seed ${seed}, ${rounds} rounds, databases ${dbs.join(' ')}`);
  const t00 = Date.now();
  const ms = () => Date.now() - t00; // (for the log)
  const daemons = c.nodes.map((d, i) => ({ node: `n${i + 1}`, d })); // every daemon that ran, for its log
  const down = new Set();     // nodes not to send to now (stopped, killed, starting)
  const faulted = new Set();  // nodes the probes avoid now (the round's target)
  const acked = new Map(dbs.map((db) => [db, new Map()])); // id → { via, sent, at, lsn }
  const sent = new Map(dbs.map((db) => [db, new Set()]));  // every id sent
  const acks = new Map(dbs.map((db) => [db, []]));         // { sent, at } in the order they came
  const epochs = new Map(dbs.map((db) => [db, []]));       // the assignments sampled: { epoch, primary, round }
  const faults = {};
  const hits = [];            // faults that took a primary away: { round, kind, db, node, first, worst } (ms)
  const others = [];          // the other faults' longest stalls, per database
  let next = 1, stop = false, climb = 0;
  const count = { attempted: 0, acknowledged: 0 }; // every write: writers', probes', the checks'

  const post = async (d, route, body, timeout) => {
    try {
      const r = await fetch(`${d.url}${route}`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(timeout) });
      return { status: r.status, body: await r.json() };
    } catch (e) {
      return { status: 0, body: { error: { code: 'NETWORK', message: String(e) } } };
    }
  };
  // One insert of a fresh id into db through node i.
  const write = async (db, i, timeout) => {
    const id = next++;
    const d = c.nodes[i];
    const t = Date.now();
    sent.get(db).add(id);
    count.attempted++;
    const r = await post(d, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id, via) VALUES (?, ?)', params: [id, `n${i + 1}`] }, timeout);
    if (r.status !== 200) return false;
    count.acknowledged++;
    const at = Date.now();
    acked.get(db).set(id, { via: `n${i + 1}`, sent: new Date(t).toISOString(), at: new Date(at).toISOString(), lsn: r.body.lsn });
    acks.get(db).push({ sent: t, at });
    return true;
  };
  const all = [...Array(NODES).keys()];
  const live = () => all.filter((i) => !down.has(i));
  let replaced = 0; // copies etcd's assignments dropped for another node's
  const sample = async (round) => {
    for (const db of dbs) {
      let a;
      try { a = await c.assignment(db); } catch { return; } /* (etcd down) */
      if (a) epochs.get(db).push({ epoch: a.epoch, primary: a.primary, round });
    }
  };
  // Every database serves: a write through some live node goes through.
  const serving = async (what) => {
    for (const db of dbs) {
      await until(async () => {
        for (const i of live()) if (await write(db, i, 2000)) return true;
        return false;
      }, SERVE_MS, `${db} to serve again (${what})`);
    }
  };
  // Every node is in etcd (its key) and linked to every other.
  const whole = async () => {
    await until(async () => {
      const r = await c.etcd.post('/v3/kv/range', { key: b64(`${PREFIX}nodes/`), range_end: b64(`${PREFIX}nodes0`), count_only: true });
      return Number(r.count ?? 0) === NODES;
    }, 20000, 'every node back in etcd');
    await c.linked();
  };
  const logsOf = (re) => daemons.map(({ node, d }) =>
    `--- ${node} (pid ${d.proc.pid}${d.exited ? `, ended ${JSON.stringify(d.exited)}` : ''})\n` +
    d.stderr.split('\n').filter((l) => re.test(l)).slice(-40).join('\n')).join('\n');
  // Every daemon's whole log so far, for the post-mortem: the directory.
  const saveLogs = (why) => {
    const dir = mkdtempSync(path.join(tmpdir(), `chaos-etcd-${seed}-`));
    for (const [k, { node, d }] of daemons.entries()) writeFileSync(path.join(dir, `${k}-${node}.log`), d.stderr);
    writeFileSync(path.join(dir, 'etcd.log'), c.etcd.log());
    log(`chaos-etcd: ${why} (seed ${seed}); the daemons' logs: ${dir}`);
    return dir;
  };
  const RELEVANT = /promot|step_down|diverged|failover|epoch_accepted|fenced|etcd_down|etcd_up|topo_node_down|topo_registered|drain|cut|rebuild|error/;

  let writers = [], probes = [], failed = false;
  try {
    for (const db of dbs)
      await until(async () => (await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE IF NOT EXISTS t(id INTEGER NOT NULL, via TEXT)' }, 5000)).status === 200,
        10000, `CREATE TABLE in ${db}`);
    await sample(0);
    // Writers: one per node, through it while it runs, into a database at random.
    writers = all.map(async (i) => {
      while (!stop) {
        if (down.has(i)) { await sleep(50); continue; }
        if (!(await write(dbs[Math.floor(Math.random() * dbs.length)], i, WRITE_MS))) await sleep(30);
      }
    });
    // Probes: one per database, every 50 ms, through a node not faulted.
    probes = dbs.map(async (db) => {
      while (!stop) {
        const t = Date.now();
        const via = live().filter((i) => !faulted.has(i));
        if (via.length > 0) await write(db, via[Math.floor(Math.random() * via.length)], PROBE_MS);
        await sleep(Math.max(0, PROBE_EVERY - (Date.now() - t)));
      }
    });
    await sleep(1000);

    for (let round = 1; round <= rounds; round++) {
      // Every draw of the round first, whatever it turns out to need.
      const [kindRoll, targetRoll, dbRoll, nodeRoll, lenRoll] = [rand(), rand(), rand(), rand(), rand()];
      const kind = process.env.CHAOS_ONLY ??
        (kindRoll < 0.1 ? 'etcd' : KINDS[Math.floor((kindRoll - 0.1) / 0.9 * KINDS.length)]);
      faults[kind] = (faults[kind] ?? 0) + 1;
      const now = new Map();
      for (const db of dbs) now.set(db, await c.assignment(db));
      const db0 = dbs[Math.floor(dbRoll * dbs.length)], a0 = now.get(db0);
      // Most often the primary of a database, else one of its followers.
      const i = targetRoll < 0.7 ? Number(a0.primary.slice(1)) - 1
        : (() => { const f = a0.copies.filter((n) => n !== a0.primary); return Number(f[Math.floor(nodeRoll * f.length)].slice(1)) - 1; })();
      const node = `n${i + 1}`;
      const primaryOf = kind === 'etcd' ? [] : dbs.filter((db) => now.get(db).primary === node);
      const t0 = Date.now();
      let what;
      if (kind === 'kill') {
        const pause = 300 + Math.floor(lenRoll * 6700); // (past ~5 s: its key gone 2 s, then node_dead_after)
        what = `kill ${node}, restarted after ${pause} ms`;
        down.add(i); faulted.add(i);
        c.nodes[i].proc.kill('SIGKILL');
        await c.nodes[i].exit;
        await sleep(pause);
        await sample(round);
        const d = await c.restart(i);
        daemons.push({ node, d });
        down.delete(i); faulted.delete(i);
      } else if (kind === 'stop') {
        const pause = TTL_MS + 500 + Math.floor(lenRoll * 2000);
        what = `stop ${node} for ${pause} ms`;
        down.add(i); faulted.add(i);
        c.nodes[i].proc.kill('SIGSTOP');
        await sleep(pause);
        await sample(round);
        c.nodes[i].proc.kill('SIGCONT');
        down.delete(i); faulted.delete(i);
      } else if (kind === 'cut') {
        // (from a little less than the lease, which moves nothing, to
        // well past it; around the lease, the hand-over races the return)
        const pause = TTL_MS - 500 + Math.floor(lenRoll * 3500);
        what = `cut ${node} from etcd for ${pause} ms`;
        faulted.add(i);
        c.etcdProxy(i).partition();
        await sleep(pause);
        await sample(round);
        c.etcdProxy(i).heal();
        faulted.delete(i);
      } else if (kind === 'isolate') {
        const pause = 1000 + Math.floor(lenRoll * 3000);
        what = `cut ${node} from the other nodes for ${pause} ms`;
        faulted.add(i);
        c.isolate(i);
        await sleep(pause);
        await sample(round);
        c.rejoin(i);
        faulted.delete(i);
      } else if (kind === 'both') {
        const pause = TTL_MS + 500 + Math.floor(lenRoll * 2500);
        what = `cut ${node} from the other nodes and from etcd for ${pause} ms`;
        faulted.add(i);
        c.isolate(i);
        c.etcdProxy(i).partition();
        await sleep(pause);
        await sample(round);
        c.rejoin(i);
        c.etcdProxy(i).heal();
        faulted.delete(i);
      } else {
        const pause = 1000 + Math.floor(lenRoll * 3000);
        what = `kill etcd, restarted after ${pause} ms`;
        await c.etcd.kill();
        await sleep(pause);
        await c.etcd.restart();
      }
      try {
        await serving(`round ${round}: ${what}`);
        await whole();
        // Every database's copies: three, on live nodes (a node gone past
        // node_dead_after replaced; the others back).
        for (const db of dbs)
          await until(async () => {
            const a = await c.assignment(db);
            return a.copies.length === COPIES && a.copies.every((id) => !down.has(Number(id.slice(1)) - 1));
          }, RESTORED_MS, `${db}'s ${COPIES} copies on live nodes (round ${round}: ${what})`);
      } catch (e) {
        e.message += `\n${logsOf(RELEVANT)}`;
        throw e;
      }
      await sample(round);
      // A fault moves a primary once (twice when its node comes back in
      // time to take it again): more is a promotion war.
      const rose = new Map();
      for (const db of dbs) {
        const a = await c.assignment(db);
        replaced += now.get(db).copies.filter((id) => !a.copies.includes(id)).length;
        rose.set(db, a.epoch - now.get(db).epoch);
        climb = Math.max(climb, rose.get(db));
        if (kind === 'etcd' && rose.get(db) > 0) {
          log(logsOf(RELEVANT));
          assert.fail(`round ${round} (${what}): ${db} failed over (epoch ${now.get(db).epoch} to ${now.get(db).epoch + rose.get(db)}): etcd down moves no primary`);
        }
        if (rose.get(db) > MAX_EPOCHS_A_ROUND) {
          log(logsOf(RELEVANT));
          assert.fail(`round ${round} (${what}): ${db}'s epoch rose by ${rose.get(db)} (from ${now.get(db).epoch}): a promotion war`);
        }
      }
      const t1 = Date.now();
      // How long each database went without an acknowledged write.
      const stall = (db) => {
        let last = t0, worst = 0, first = null;
        for (const a of acks.get(db)) {
          if (a.sent < t0 || a.at > t1) continue;
          if (first === null) first = a.at - t0;
          worst = Math.max(worst, a.at - last);
          last = a.at;
        }
        return { first, worst };
      };
      const notes = [];
      for (const db of dbs) {
        const s = stall(db);
        if (primaryOf.includes(db)) {
          hits.push({ round, kind, db, node, first: s.first, worst: s.worst, moved: rose.get(db) > 0 });
          notes.push(`${db} primary: first write after ${s.first} ms, longest stall ${s.worst} ms, now ${(await c.assignment(db)).primary}` +
            (rose.get(db) > 0 ? '' : ' (no failover)'));
        } else {
          others.push({ round, kind, db, worst: s.worst });
          if (s.worst > 2000) notes.push(`${db} (its primary not faulted): longest stall ${s.worst} ms`);
          if (s.worst > STALL_NOTED_MS) saveLogs(`round ${round}: ${db} stalled ${s.worst} ms, its primary not faulted`);
        }
      }
      log(`round ${round} (+${ms()} ms): ${what}${notes.length ? `; ${notes.join('; ')}` : ''}; acknowledged ${count.acknowledged} of ${count.attempted}`);
    }
    stop = true;
    await Promise.all([...writers, ...probes]);

    // Healed (every round heals its fault): each database serves and
    // every node routes it to the primary etcd names.
    await serving('at the end');
    await sample('end');
    for (const db of dbs) {
      const a = await c.assignment(db);
      for (const [k, d] of c.nodes.entries())
        await until(async () => (await clusterInfo(d, `?database=${db}`)).body.database?.primary === a.primary,
          20000, `n${k + 1} to route ${db} to ${a.primary}`);
    }

    // Every acknowledged id on every copy, once; nothing never sent.
    const ids = async (d, db, extra) => {
      const r = await post(d, `/v1/db/${db}/query`, { sql: 'SELECT id FROM t ORDER BY id', ...extra }, 10000);
      if (r.status !== 200) throw new Error(`reading ${db}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.rows.map((row) => row[0]);
    };
    let checked = 0, rows = 0;
    for (const db of dbs) {
      const a = await c.assignment(db);
      const want = await ids(c.byId(a.primary), db, {});
      const have = new Set(want);
      const lost = [...acked.get(db).keys()].filter((id) => !have.has(id));
      if (lost.length > 0) {
        for (const id of lost.slice(0, 10)) log(`${db}: lost ${id}: acknowledged through ${JSON.stringify(acked.get(db).get(id))}`);
        log(logsOf(RELEVANT));
      }
      assert.deepEqual(lost, [], `${db}: acknowledged writes lost: ${lost.slice(0, 20)}`);
      assert.equal(have.size, want.length, `${db}: an id twice on the primary ${a.primary}`);
      const strange = want.filter((id) => !sent.get(db).has(id));
      assert.deepEqual(strange, [], `${db}: ids never sent to it`);
      assert.equal(a.copies.length, COPIES, `${db}: ${a.copies.length} copies in etcd`);
      for (const k of a.copies.map((id) => Number(id.slice(1)) - 1)) {
        const d = c.nodes[k];
        try {
          await until(async () => {
            const v = await ids(d, db, { consistency: 'replica' });
            return v.length === want.length && v.every((id, j) => id === want[j]);
          }, 30000, `n${k + 1}'s copy of ${db} to be the primary's`);
        } catch (e) {
          const v = await ids(d, db, { consistency: 'replica' }).catch((err) => [String(err)]);
          e.message += `\nn${k + 1}: ${v.length} rows (the primary ${want.length}), ${v.filter((id) => !have.has(id)).length} the primary lacks\n${logsOf(RELEVANT)}`;
          throw e;
        }
        checked += acked.get(db).size;
      }
      rows += want.length;
    }

    // No (database, epoch) promoted by two nodes.
    const promoted = new Map(); // "db epoch" → nodes
    for (const { node, d } of daemons)
      for (const m of d.stderr.matchAll(/event=promoted db=(\S+) epoch=(\d+)/g)) {
        const k = `${m[1]} ${m[2]}`;
        promoted.set(k, [...(promoted.get(k) ?? []), node]);
      }
    const twice = [...promoted.entries()].filter(([, v]) => new Set(v).size > 1);
    if (twice.length > 0) log(logsOf(RELEVANT));
    assert.deepEqual(twice, [], 'a database promoted by two nodes in one epoch');
    // The assignments' epochs only went up, one primary each.
    for (const db of dbs) {
      const seen = epochs.get(db);
      for (let k = 1; k < seen.length; k++)
        assert.ok(seen[k].epoch >= seen[k - 1].epoch, `${db}: etcd's epoch went back: ${JSON.stringify(seen.slice(k - 1, k + 1))}`);
      const by = new Map();
      for (const s of seen) {
        if (by.has(s.epoch)) assert.equal(by.get(s.epoch), s.primary, `${db}: epoch ${s.epoch} with two primaries in etcd`);
        by.set(s.epoch, s.primary);
      }
    }

    const failover = hits.filter((h) => h.kind !== 'cut' && h.kind !== 'isolate').map((h) => h.first);
    const isolated = hits.filter((h) => h.kind === 'isolate').map((h) => h.worst);
    const handover = hits.filter((h) => h.kind === 'cut' && h.moved).map((h) => h.worst);
    const summary = {
      rounds, seed, databases: dbs.length, faults,
      primaryFaults: Object.fromEntries(KINDS.map((k) => [k, hits.filter((h) => h.kind === k).length])),
      failovers: hits.filter((h) => h.moved).length, // (a cut shorter than the lease moves nothing)
      copiesReplaced: replaced,             // re-replication of nodes gone past node_dead_after
      writes: { attempted: count.attempted, acknowledged: count.acknowledged, checked, rows },
      promotions: [...promoted.values()].reduce((s, v) => s + v.length, 0),
      mostEpochsInARound: climb,
      failoverMs: stats(failover),          // killed, stopped or cut-from-both primary: fault → first acknowledged write
      cutHandoverMs: stats(handover),       // primary cut from etcd, replaced: longest stretch without an acknowledged write
      isolatedStallMs: stats(isolated),     // primary cut from its peers only (no failover): its longest stall
      otherStallMs: stats(others.map((o) => o.worst)), // databases whose primary the fault left alone
      seconds: Math.round((Date.now() - t00) / 1000),
    };
    log(`chaos-etcd: ${JSON.stringify(summary)}`);
    if (process.env.CHAOS_LOGS) log(logsOf(new RegExp(process.env.CHAOS_LOGS)));
    return summary;
  } catch (e) {
    failed = true;
    const dir = saveLogs('failed');
    e.message += `\n(the daemons' logs: ${dir})`;
    throw e;
  } finally {
    stop = true;
    for (const d of c.nodes) {
      try { d.proc.kill('SIGCONT'); } catch { /* gone */ }
    }
    for (let i = 0; i < NODES; i++) {
      c.etcdProxy(i).heal();
      c.rejoin(i);
    }
    await Promise.allSettled([...writers, ...probes]);
    if (c.etcd.exited) await c.etcd.restart().catch(() => {});
    // (all at once: one by one, each stop would make the others fail over)
    const ends = await Promise.allSettled(c.nodes.map((d) => d.cleanup()));
    await c.cleanup();
    const bad = ends.find((e) => e.status === 'rejected');
    if (bad && !failed) throw bad.reason;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rounds = Number(process.argv[2] ?? process.env.ROUNDS ?? 40);
  const seed = Number(process.argv[3] ?? process.env.SEED ?? Date.now());
  chaosEtcd(rounds, { seed }).then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
}
