// Automatic failover on etcd: three nodes found through etcd, three copies
// of each database. When the primary's node dies (SIGKILL) or stops for
// longer than its lease in etcd (SIGSTOP), a surviving copy takes over by
// itself (the assignment in etcd names it, in the next epoch), writes
// through any surviving node go on, and every acknowledged write is there
// exactly once. A stopped primary that comes back acknowledges nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { clusterInfo, post, sleep, until, writers } from './lib/cluster.mjs';
import { startEtcdCluster } from './lib/etcdcluster.mjs';

const conf = 'replicas = 3\ncommit_timeout = 2s\npromote_timeout = 5s\n';

async function ids(d, db) {
  const r = await post(d, `/v1/db/${db}/query`, { sql: 'SELECT id FROM t ORDER BY id' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.rows.map((x) => x[0]);
}

for (const how of ['SIGKILL', 'SIGSTOP']) {
  test(`the primary's node ${how === 'SIGKILL' ? 'killed' : 'stopped past its lease'}: a copy takes over by itself, no acknowledged write lost`, async () => {
    const c = await startEtcdCluster(3, { conf });
    let stop = async () => {}; // (the writers stopped however the test ends: else the file never ends)
    try {
      const db = 'auto';
      assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
      const a1 = await c.assignment(db);
      assert.equal(a1.epoch, 1);
      const primary = c.byId(a1.primary);
      const survivors = c.nodes.filter((d) => d !== primary);
      const acked = [];
      stop = writers(() => survivors, db, (id) => acked.push({ id, at: Date.now() }), 1);
      await until(async () => acked.length >= 30, 15000, 'writes before the fault');
      const t0 = Date.now();
      primary.proc.kill(how);
      // The assignment moves to a survivor, in epoch 2, by itself.
      await until(async () => (await c.assignment(db))?.epoch >= 2, 15000, 'a new primary in etcd');
      const a2 = await c.assignment(db);
      assert.notEqual(a2.primary, a1.primary);
      assert.deepEqual([...a2.copies].sort(), [...a1.copies].sort());
      const before = acked.length;
      await until(async () => acked.length >= before + 30, 15000, 'writes on the new primary');
      const resumed = acked.find((x) => x.at > t0 && acked.indexOf(x) >= before)?.at ?? Date.now();
      await stop();
      const newPrimary = c.byId(a2.primary);
      assert.match(newPrimary.stderr, /event=failover_won db=auto from=n\d epoch=2/);
      for (const d of survivors) {
        const info = (await clusterInfo(d, `?database=${db}`)).body.database;
        assert.equal(info.primary, a2.primary, 'every survivor routes to the new primary');
      }
      // Every acknowledged id, exactly once.
      const have = await ids(survivors[0], db);
      assert.equal(new Set(have).size, have.length, 'no id twice');
      for (const { id } of acked) assert.ok(have.includes(id), `acknowledged id ${id} missing`);
      if (how === 'SIGKILL') {
        // The old primary comes back with its data: it follows the new one
        // (it does not take its place back) and catches up.
        const back = await c.restart(c.nodes.indexOf(primary));
        await until(async () => {
          const info = (await clusterInfo(back, `?database=${db}`)).body.database;
          return info.primary === a2.primary;
        }, 15000, 'the restarted node to follow the new primary');
        const last = await post(newPrimary, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (?)', params: [-2] });
        assert.equal(last.status, 200, JSON.stringify(last.body));
        await until(async () => {
          const r = await post(back, `/v1/db/${db}/query`, { sql: 'SELECT count(*) FROM t WHERE id = -2' , consistency: 'replica' });
          return r.status === 200 && r.body.rows[0][0] === 1;
        }, 15000, 'the restarted node to catch up');
        const mine = (await post(back, `/v1/db/${db}/query`, { sql: 'SELECT id FROM t', consistency: 'replica' })).body.rows.map((x) => x[0]);
        for (const { id } of acked) assert.ok(mine.includes(id), `acknowledged id ${id} missing on the restarted node`);
        assert.equal((await c.assignment(db)).primary, a2.primary, 'the assignment did not move back');
      }
      if (how === 'SIGSTOP') {
        // The old primary wakes: it no longer answers as primary (its
        // epoch is fenced); a write through it goes to the new one or fails.
        primary.proc.kill('SIGCONT');
        const r = await post(primary, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (?)', params: [-1] }, 8000);
        if (r.status === 200) {
          const now = await ids(newPrimary, db);
          assert.ok(now.includes(-1), 'a write the old primary acknowledged is on the new primary');
        }
        await until(async () => {
          const info = (await clusterInfo(primary, `?database=${db}`)).body.database;
          return info.primary === a2.primary;
        }, 15000, 'the old primary follows the new one');
      }
      console.log(`# ${how}: writes resumed ${resumed - t0} ms after the fault`);
    } finally {
      await stop();
      if (how === 'SIGSTOP') for (const d of c.nodes) d.proc.kill('SIGCONT');
      await c.cleanup();
    }
  });
}

// A promotion by hand on etcd goes through the assignment first, so the
// former primary (alive, named there before) does not take its place back.
test('a promotion by hand on etcd: the assignment names the new primary, and it stays', async () => {
  const c = await startEtcdCluster(3, { conf });
  try {
    const db = 'byhand';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    const target = c.nodes.find((d) => d !== c.byId(a1.primary));
    const tid = `n${c.nodes.indexOf(target) + 1}`;
    const p = await post(target, '/v1/admin/promote', { database: db });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    const a2 = await c.assignment(db);
    assert.equal(a2.primary, tid);
    assert.equal(a2.epoch, p.body.epoch);
    assert.ok(a2.epoch > a1.epoch);
    await sleep(2000); // (sweeps every 500 ms: the former primary would have acted)
    assert.deepEqual(await c.assignment(db), a2);
    for (const d of c.nodes)
      await until(async () => (await clusterInfo(d, `?database=${db}`)).body.database.primary === tid, 5000,
        'every node routing to the new primary');
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (1)' })).status, 200);
    // Asking again on the primary: refused.
    const again = await post(target, '/v1/admin/promote', { database: db });
    assert.equal(again.status, 400);
    assert.match(again.body.error.message, /primary of database byhand already/);
  } finally {
    await c.cleanup();
  }
});

// The last node stopped (SIGTERM) while it tries to take over a database
// whose other copies are gone: the promotion cannot reach a quorum and
// would wait promote_timeout (20 s here), keeping the node's requests and
// its stop waiting. Stopping ends it at once ("this node is stopping"), no
// failover starts after the stop began, and the node exits cleanly.
test('the last node stopped while its promotion cannot finish: the promotion ends at once, the node exits cleanly', async () => {
  const c = await startEtcdCluster(3, { conf: 'replicas = 3\ncommit_timeout = 2s\npromote_timeout = 20s\n' });
  try {
    let db = null;
    for (let i = 0; i < 30 && db === null; i++) {
      const name = `last${i}`;
      assert.equal((await post(c.nodes[1], `/v1/db/${name}/query`, { sql: 'CREATE TABLE t(x)' })).status, 200);
      if ((await c.assignment(name)).primary === 'n2') db = name;
    }
    assert.ok(db, 'a database whose primary is n2');
    const [n1, n2, n3] = c.nodes;
    await n1.stop();
    await n2.stop();
    await until(() => new RegExp(`event=promotion db=${db} `).test(n3.stderr), 15000, 'n3 promoting its copy');
    const e = await n3.stop('SIGTERM', 30000);
    assert.deepEqual(e, { code: 0, signal: null }, n3.stderr.slice(-2000));
    assert.match(n3.stderr, new RegExp(`event=promotion_failed db=${db} epoch=\\d+ reason="this node is stopping"`));
    const after = n3.stderr.slice(n3.stderr.indexOf('event=shutdown'));
    assert.doesNotMatch(after, /event=(failover_candidate|promotion) /, 'nothing started after the stop began');
  } finally {
    await c.cleanup();
  }
});
