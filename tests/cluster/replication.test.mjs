// Replication: three nodes, three copies of each database. A commit's
// reply waits for a quorum of copies; followers serve reads and refuse
// writes; a follower that was stopped, killed or emptied catches up while
// writes go on; with no follower reachable a write ends in TIMEOUT and is
// not acknowledged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { clusterInfo, sleep, startAgain, startCluster, until } from './lib/cluster.mjs';

const conf = () => 'replicas = 3\ncommit_timeout = 1500ms\n';

async function query(d, db, sql, params, ms = 10000, extra = {}) {
  const r = await fetch(`${d.url}/v1/db/${db}/query`, {
    method: 'POST', body: JSON.stringify({ sql, params, ...extra }), signal: AbortSignal.timeout(ms),
  });
  return { status: r.status, body: await r.json() };
}

// The node that is db's primary, and its followers.
async function roles(c, db) {
  const info = (await clusterInfo(c.nodes[0], `?database=${db}`)).body.database;
  const byId = (id) => c.nodes[Number(id.slice(1)) - 1];
  return { primary: byId(info.primary), followers: info.copies.filter((x) => x.role === 'follower').map((x) => byId(x.node)), info };
}

// write(n): n inserts of the next ids through node d, each acknowledged;
// write.acked lists them.
function appender(d, db, sql = 'INSERT INTO t VALUES (?)') {
  const acked = [];
  let next = 1;
  const write = async (n) => {
    for (let k = 0; k < n; k++, next++) {
      const r = await query(d, db, sql, [next]);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      acked.push(next);
    }
  };
  write.acked = acked;
  return write;
}

// SIGKILL node `victim` of c (kept in `gone`, its directory removed at the
// end); the function returned starts it again on its data directory.
async function kill(c, victim, gone) {
  const idx = c.nodes.indexOf(victim);
  victim.proc.kill('SIGKILL');
  await victim.exit;
  gone.push(victim);
  return async () => (c.nodes[idx] = await startAgain({ conf: c.confOf(idx), dataDir: path.join(victim.dir, 'data') }));
}

// What a copy holds (a follower answers when asked with consistency replica).
const values = async (d, db) => {
  const r = await query(d, db, 'SELECT group_concat(x) AS v FROM (SELECT x FROM t ORDER BY x)', undefined, 10000,
    { consistency: 'replica' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.rows[0][0] ?? '';
};

test('commits reach every copy; followers read them when asked and pass the rest on', async () => {
  const c = await startCluster(3, { conf });
  try {
    const { primary, followers, info } = await roles(c, 'acct');
    assert.equal(info.copies.length, 3);
    assert.equal(info.epoch, 1);
    assert.equal((await query(primary, 'acct', 'CREATE TABLE t(x INTEGER PRIMARY KEY)')).status, 200);
    let lsn = 0;
    for (let i = 1; i <= 20; i++) {
      const r = await query(primary, 'acct', 'INSERT INTO t VALUES (?)', [i]);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.ok(r.body.lsn > lsn);
      lsn = r.body.lsn;
    }
    const want = Array.from({ length: 20 }, (_, i) => i + 1).join(',');
    // An acknowledged commit is on a quorum at once; every copy has it soon.
    for (const f of followers) await until(async () => (await values(f, 'acct')) === want, 10000, 'the follower');
    // A follower passes a write on to the primary, and a read of the
    // newest state too (the engine's own refusal, NOT_PRIMARY, is for
    // what reaches it anyway: tests/unit/engine/test_repl.c).
    const w = await query(followers[0], 'acct', 'INSERT INTO t VALUES (99)');
    assert.equal(w.status, 200, JSON.stringify(w.body));
    const plain = await query(followers[1], 'acct', 'SELECT count(*) FROM t');
    assert.equal(plain.status, 200, JSON.stringify(plain.body));
    assert.equal(plain.body.rows[0][0], 21);
    const del = await query(primary, 'acct', 'DELETE FROM t WHERE x = 99');
    const mine = await query(followers[0], 'acct', 'SELECT count(*) FROM t', undefined, 10000,
      { consistency: 'replica', minLSN: del.body.lsn });
    assert.equal(mine.status, 200);
    assert.equal(mine.body.rows[0][0], 20);
    assert.ok(mine.body.lsn >= del.body.lsn);
    const copies = (await clusterInfo(primary, '?database=acct')).body.database.copies;
    for (const x of copies) assert.ok(x.durableLSN >= lsn, JSON.stringify(copies));
    // getStats: the role and the copies, each with its lag.
    const st = await (await fetch(`${primary.url}/v1/db/acct/rpc`, {
      method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'getStats', params: {} }),
    })).json();
    const rep = st.result.database.replication;
    assert.equal(rep.role, 'primary');
    assert.equal(rep.epoch, 1);
    assert.equal(rep.copies.length, 3);
    for (const x of rep.copies) assert.ok('lagLSN' in x && 'lagMs' in x && x.durableLSN >= lsn, JSON.stringify(x));
    const m = await (await fetch(`${primary.url}/metrics`)).text();
    assert.match(m, /\ndosqld_replication_lag_lsn\{follower="n\d"\} \d+\n/);
    assert.ok(Number(/\ndosqld_replication_records_shipped_total (\d+)/.exec(m)[1]) >= 2 * 21, m.slice(-600));
  } finally {
    await c.cleanup();
  }
});

test('one follower away: commits go on; both away: TIMEOUT, then everything converges', async () => {
  const c = await startCluster(3, { conf });
  try {
    const { primary, followers } = await roles(c, 'q');
    assert.equal((await query(primary, 'q', 'CREATE TABLE t(x INTEGER PRIMARY KEY)')).status, 200);
    followers[0].proc.kill('SIGSTOP');
    try {
      for (let i = 1; i <= 5; i++) assert.equal((await query(primary, 'q', 'INSERT INTO t VALUES (?)', [i])).status, 200);
      // The stopped follower lags, and getStats says by how much.
      const st = await (await fetch(`${primary.url}/v1/db/q/rpc`, {
        method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'getStats', params: {} }),
      })).json();
      const id = `n${c.nodes.indexOf(followers[0]) + 1}`;
      const lag = st.result.database.replication.copies.find((x) => x.node === id);
      assert.ok(lag.lagLSN >= 5 && lag.lagMs > 0, JSON.stringify(lag));
      followers[1].proc.kill('SIGSTOP');
      try {
        const t0 = Date.now();
        const r = await query(primary, 'q', 'INSERT INTO t VALUES (6)');
        assert.equal(r.status, 408, JSON.stringify(r.body));
        assert.equal(r.body.error.code, 'TIMEOUT');
        assert.match(r.body.error.message, /not yet on enough of the database's copies/);
        assert.ok(Date.now() - t0 >= 1400, 'it waited for commit_timeout');
      } finally {
        followers[1].proc.kill('SIGCONT');
      }
    } finally {
      followers[0].proc.kill('SIGCONT');
    }
    // Healed: every copy ends with the same rows (6 included: it was
    // durable on the primary and reached the others after).
    for (const d of c.nodes) await until(async () => (await values(d, 'q')) === '1,2,3,4,5,6', 15000, 'convergence');
    assert.equal((await query(primary, 'q', 'INSERT INTO t VALUES (7)')).status, 200);
  } finally {
    await c.cleanup();
  }
});

test('a follower killed, or started empty, catches up while writes go on', async () => {
  const c = await startCluster(3, { conf });
  const gone = []; // nodes killed for good: their directories
  try {
    const { primary, followers } = await roles(c, 'cu');
    assert.equal((await query(primary, 'cu', 'CREATE TABLE t(x INTEGER PRIMARY KEY)')).status, 200);
    const write = appender(primary, 'cu');
    await write(10);
    const restart = await kill(c, followers[0], gone);
    await write(30);
    // It comes back with its own data directory: it catches up.
    const back = await restart();
    await write(10);
    const want = () => write.acked.join(',');
    await until(async () => (await values(back, 'cu')) === want(), 15000, 'the restarted follower');
    // The other follower loses its disk: it starts empty and gets it all.
    const other = followers[1];
    const j = c.nodes.indexOf(other);
    other.proc.kill('SIGKILL');
    await other.exit;
    gone.push(other);
    rmSync(path.join(other.dir, 'data'), { recursive: true, force: true });
    const fresh = await startAgain({ conf: c.confOf(j) });
    c.nodes[j] = fresh;
    await write(10);
    await until(async () => (await values(fresh, 'cu')) === want(), 15000, 'the emptied follower');
    for (const d of c.nodes) assert.equal(await values(d, 'cu'), want());
  } finally {
    await c.cleanup();
    for (const d of gone) rmSync(d.dir, { recursive: true, force: true });
  }
});

test('a shared object store: at start a node restores only the databases it holds a copy of', async () => {
  const shared = mkdtempSync(path.join(tmpdir(), 'dosqld-shared-'));
  const c = await startCluster(3, {
    conf: () => `replicas = 2\ncommit_timeout = 1500ms\n[storage]\nobject_store = file://${shared}\n[object_store]\nupload_interval = 100ms\n`,
  });
  const gone = [];
  try {
    const db = 'stored';
    const info = (await clusterInfo(c.nodes[0], `?database=${db}`)).body.database;
    const idx = (id) => Number(id.slice(1)) - 1;
    const p = idx(info.primary);
    const f = idx(info.copies.find((x) => x.role === 'follower').node);
    const n = [0, 1, 2].find((i) => i !== p && i !== f);
    assert.equal((await query(c.nodes[p], db, 'CREATE TABLE t(x)')).status, 200);
    for (let i = 1; i <= 10; i++) assert.equal((await query(c.nodes[p], db, 'INSERT INTO t VALUES (?)', [i])).status, 200);
    await until(() => existsSync(path.join(shared, 'db', db, 'manifest.json')), 15000, 'the primary to upload');
    const restart = async (i) => {
      const old = c.nodes[i];
      await old.stop('SIGTERM');
      gone.push(old);
      c.nodes[i] = await startAgain({ conf: c.confOf(i) }); /* an empty data directory */
      return c.nodes[i];
    };
    // The node without a copy: nothing of the database comes back there.
    const N = await restart(n);
    const list = await (await fetch(`${N.url}/v1/db`)).json();
    assert.ok(!list.includes(db), `restored where no copy belongs: ${JSON.stringify(list)}`);
    // The follower: its copy comes back from the store and catches up.
    const F = await restart(f);
    assert.equal((await query(c.nodes[p], db, 'INSERT INTO t VALUES (11)')).status, 200);
    await until(async () => (await values(F, db)).split(',').length === 11, 15000, 'the follower, restored and caught up');
  } finally {
    await c.cleanup();
    for (const d of gone) rmSync(d.dir, { recursive: true, force: true });
    rmSync(shared, { recursive: true, force: true });
  }
});

test('a follower behind the start of its primary\'s log is made again from the object store', async () => {
  const shared = mkdtempSync(path.join(tmpdir(), 'dosqld-shared-'));
  // Small segments and checkpoints, no history kept: the primary's log
  // soon starts after where a stopped follower's ends.
  const c = await startCluster(3, {
    conf: () => 'replicas = 3\ncommit_timeout = 1500ms\n' +
      `[storage]\nobject_store = file://${shared}\nsegment_size = 64K\ncheckpoint_size = 64K\nhistory_retention = 0\n` +
      '[object_store]\nupload_interval = 100ms\n',
  });
  const gone = [];
  const metric = async (d, name) => {
    const text = await (await fetch(`${d.url}/metrics`)).text();
    const m = text.match(new RegExp(`^${name} (\\d+)$`, 'm'));
    return m ? Number(m[1]) : NaN;
  };
  try {
    const db = 'rebuilt';
    const { primary, followers } = await roles(c, db);
    assert.equal((await query(primary, db, 'CREATE TABLE t(x INTEGER PRIMARY KEY, pad BLOB)')).status, 200);
    const write = appender(primary, db, 'INSERT INTO t VALUES (?, randomblob(3000))');
    const acked = write.acked;
    await write(5);
    await until(async () => (await values(followers[0], db)) === acked.join(','), 10000, 'the follower in step');
    const restart = await kill(c, followers[0], gone);
    // About 1.2 MB of log: many segments and checkpoints, the old ones
    // deleted, and the store given the newest.
    await write(400);
    const back = await restart();
    await write(5);
    try {
      await until(async () => (await values(back, db)) === acked.join(','), 30000, 'the follower made again');
    } catch (e) {
      const events = (d) => d.stderr.split('\n').filter((l) => /rebuil|copy_|replication_|upload|restore/.test(l)).slice(-40).join('\n');
      throw new Error(`${e.message}\n--- the follower\n${events(back)}\n--- the primary\n${events(primary)}`);
    }
    assert.ok((await metric(back, 'dosqld_replication_rebuilds_total')) >= 1, 'caught up without a rebuild: the test did not test it');
    // And it stays in step.
    await write(5);
    await until(async () => (await values(back, db)) === acked.join(','), 10000, 'the follower in step again');
  } finally {
    await c.cleanup();
    for (const d of gone) rmSync(d.dir, { recursive: true, force: true });
    rmSync(shared, { recursive: true, force: true });
  }
});
