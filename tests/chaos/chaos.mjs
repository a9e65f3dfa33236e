// chaos — three nodes, three copies, writers through every node, and
// faults one after another: a node partitioned, paused (SIGSTOP), killed
// (SIGKILL) and restarted; a link delayed or black-holed; a promotion
// when the primary is out of reach. At the end, everything healed: every
// acknowledged write is on every copy, once. Prints a summary.
//
//   node tests/chaos/chaos.mjs [ROUNDS]      (make chaos: ROUNDS=...)
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';

import { clusterInfo, sleep, startAgain, startCluster, until } from '../cluster/lib/cluster.mjs';

export async function chaos(rounds, { log = console.log, seed = Date.now() } = {}) {
  let x = seed >>> 0;
  const rand = () => ((x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const pick = (a) => a[Math.floor(rand() * a.length)];
  const conf = () => 'replicas = 3\ncommit_timeout = 1500ms\npromote_timeout = 5s\n';
  const c = await startCluster(3, { conf, proxies: true });
  log(`chaos: seed ${seed}`);
  const db = 'chaos';
  const faults = {};
  const acked = new Set();
  let attempts = 0, promotions = 0;
  const down = new Set(); // nodes not to send to now (stopped or killed)
  const gone = []; // directories of killed nodes' first daemons
  const past = ['', '', '']; // what killed daemons logged
  const when = new Map(); // acknowledged id → which node answered, when, LSN
  const post = async (d, route, body, ms = 8000) => {
    try {
      const r = await fetch(`${d.url}${route}`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(ms) });
      return { status: r.status, body: await r.json() };
    } catch (e) {
      return { status: 0, body: { error: { code: 'NETWORK', message: String(e) } } };
    }
  };
  // As an operator would: promote a copy, and once more (with the epoch
  // it learned) when another promotion got there first.
  const promote = async (to, round) => {
    for (let attempt = 0; attempt < 2; attempt++) {
      const r = await post(c.nodes[to], '/v1/admin/promote', { database: db }, 10000);
      if (r.status === 200) {
        promotions++;
        return true;
      }
      log(`round ${round}: promoting n${to + 1} failed: ${JSON.stringify(r.body)}`);
    }
    return false;
  };
  const primaryIdx = async () => {
    for (const [i, d] of c.nodes.entries()) {
      if (down.has(i)) continue;
      try { return Number((await clusterInfo(d, `?database=${db}`)).body.database.primary.slice(1)) - 1; } catch { /* next */ }
    }
    return -1;
  };
  try {
    const p0 = c.nodes[await primaryIdx()];
    assert.equal((await post(p0, `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    let stop = false, next = 1;
    const writer = async () => {
      while (!stop) {
        const live = c.nodes.map((_, i) => i).filter((i) => !down.has(i));
        const id = next++;
        attempts++;
        const to = pick(live);
        const r = await post(c.nodes[to], `/v1/db/${db}/query`, { sql: 'INSERT INTO t VALUES (?)', params: [id] });
        if (r.status === 200) {
          acked.add(id);
          when.set(id, `n${to + 1} at ${new Date().toISOString()} lsn ${r.body.lsn}`);
        }
        else await sleep(30);
      }
    };
    const writers = [writer(), writer(), writer()];
    for (let round = 1; round <= rounds; round++) {
      const i = Math.floor(rand() * 3);
      const kind = pick(['partition', 'pause', 'kill', 'delay', 'blackhole']);
      faults[kind] = (faults[kind] ?? 0) + 1;
      const ms = 800 + Math.floor(rand() * 1500);
      const p = await primaryIdx();
      if (kind === 'partition') {
        c.isolate(i);
      } else if (kind === 'pause') {
        down.add(i);
        c.nodes[i].proc.kill('SIGSTOP');
      } else if (kind === 'kill') {
        down.add(i);
        c.nodes[i].proc.kill('SIGKILL');
        await c.nodes[i].exit;
      } else {
        const j = (i + 1 + Math.floor(rand() * 2)) % 3;
        if (kind === 'delay') c.proxy(i, j).delayMs = 50;
        else c.proxy(i, j).blackhole();
      }
      // The primary out of reach: the operator promotes another copy.
      if (i === p && (kind === 'partition' || kind === 'pause' || kind === 'kill')) {
        await sleep(1200); // (the others see it gone: peer_timeout)
        const to = pick([0, 1, 2].filter((k) => k !== i));
        await promote(to, round);
      } else {
        await sleep(ms);
      }
      // Heal.
      if (kind === 'partition' || kind === 'delay' || kind === 'blackhole') {
        c.rejoin(i);
        for (let j = 0; j < 3; j++) if (j !== i) c.proxy(i, j).heal();
      } else if (kind === 'pause') {
        c.nodes[i].proc.kill('SIGCONT');
        down.delete(i);
      } else {
        const old = c.nodes[i];
        past[i] += old.stderr;
        c.nodes[i] = await startAgain({ conf: c.confOf(i), dataDir: old.dataDir });
        gone.push(old.dir); /* (its data stays in the first one's directory) */
        down.delete(i);
      }
      await sleep(300);
      log(`round ${round}: ${kind} n${i + 1}${i === p ? ' (the primary)' : ''}; acknowledged ${acked.size} of ${attempts}`);
    }
    stop = true;
    await Promise.all(writers);
    // Healed: writes go through again (an operator promotes a copy when a
    // failed promotion left none serving), and every copy converges.
    const writes = async () => (await post(c.nodes[await primaryIdx()], `/v1/db/${db}/query`,
      { sql: 'INSERT OR IGNORE INTO t VALUES (0)' })).status === 200;
    let served = false;
    for (let k = 0; k < 3 && !served; k++) {
      try {
        await until(writes, 10000, 'a write after healing');
        served = true;
      } catch {
        await promote(k, 'end');
      }
    }
    assert.ok(served, 'no write went through after healing');
    const fin = await primaryIdx();
    const ids = async (d) => {
      const r = await post(d, `/v1/db/${db}/query`, { sql: 'SELECT group_concat(id) FROM (SELECT id FROM t ORDER BY id)', consistency: 'replica' });
      return r.status === 200 ? (r.body.rows[0][0] ?? '') : `error ${r.status}`;
    };
    const want = await ids(c.nodes[fin]);
    const have = new Set(want.split(',').map(Number));
    const lost = [...acked].filter((id) => !have.has(id));
    if (lost.length > 0) { /* what each node said about replication, for the post-mortem */
      for (const id of lost.slice(0, 10)) log(`lost ${id}: acknowledged through ${when.get(id)}`);
      for (const [i, d] of c.nodes.entries())
        log(`--- n${i + 1}\n${(past[i] + d.stderr).split('\n').filter((l) => /promot|step_down|diverged|truncat|cut|reset|epoch|peer_up|peer_down|listening|accepted/.test(l)).join('\n')}`);
    }
    assert.deepEqual(lost, [], `acknowledged writes lost: ${lost.slice(0, 20)}`);
    try {
      for (const d of c.nodes) await until(async () => (await ids(d)) === want, 30000, 'every copy the same');
    } catch (e) {
      for (const [i, d] of c.nodes.entries()) {
        const v = await ids(d);
        const info = await clusterInfo(d, `?database=${db}`).catch(() => null);
        log(`n${i + 1}: ${v.split(',').length} rows, ends ${v.slice(-30)}; ${JSON.stringify(info?.body?.database)}`);
        log((past[i] + d.stderr).split('\n').filter((l) => /promot|step_down|diverged|truncat|cut|reset|accepted|failed|error/.test(l)).slice(-15).join('\n'));
      }
      throw e;
    }
    const summary = { rounds, seed, faults, promotions, attempts, acknowledged: acked.size, rows: have.size - 1 };
    log(`chaos: ${JSON.stringify(summary)}`);
    return summary;
  } finally {
    for (const d of c.nodes) {
      try { d.proc.kill('SIGCONT'); } catch { /* gone */ }
    }
    await c.cleanup();
    for (const d of gone) rmSync(d, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rounds = Number(process.argv[2] ?? process.env.ROUNDS ?? 40);
  chaos(rounds).then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
}
