// Changing a database's copies on etcd: re-replication after
// node_dead_after, and POST /v1/admin/move. Four nodes, three copies of
// each database: when a copy's node is gone past node_dead_after, the
// primary gives its place to the fourth node by itself (the new copy
// follows as a learner until it is in step, then a new epoch makes it a
// member); writes go on, and every acknowledged write is there, on the
// new copy too. The new copy is a member: with the old copy still gone,
// a failover needs it. A move by hand does the same for a copy of one's
// choice; the copy moved away stops being one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { runDosqld } from '../integration/lib/harness.mjs';
import { clusterInfo, post, sleep, until, writers } from './lib/cluster.mjs';
import { startEtcdCluster } from './lib/etcdcluster.mjs';

const conf = 'replicas = 3\ncommit_timeout = 2s\npromote_timeout = 5s\nnode_dead_after = 2s\n';

// The ids node d's copy holds (a follower's read: what it has applied).
async function idsOn(d, db) {
  const r = await post(d, `/v1/db/${db}/query`, { sql: 'SELECT id FROM t ORDER BY id', consistency: 'replica' });
  return r.status === 200 ? r.body.rows.map((x) => x[0]) : null;
}

async function holdsAll(d, db, acked) {
  const have = await idsOn(d, db);
  if (have == null) return false;
  const set = new Set(have);
  return have.length === set.size && acked.every((id) => set.has(id));
}

test('a copy gone past node_dead_after is replaced on another node by itself, under writes; the new copy counts', async () => {
  const c = await startEtcdCluster(4, { conf });
  const stops = []; // (writers stopped however the test ends: else the file never ends)
  try {
    await c.linked();
    const db = 'rerep';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    assert.equal(a1.copies.length, 3);
    const primary = c.byId(a1.primary);
    const goneId = a1.copies.find((id) => id !== a1.primary);
    const gone = c.byId(goneId);
    const spareId = ['n1', 'n2', 'n3', 'n4'].find((id) => !a1.copies.includes(id));
    const spare = c.byId(spareId);
    const acked = [];
    const stop = writers(() => [primary], db, (id) => acked.push(id), 1, 3000);
    stops.push(stop);
    await until(async () => acked.length >= 30, 15000, 'writes before the fault');
    gone.proc.kill('SIGKILL');
    // The copy set in etcd loses the dead node and gains the spare one.
    await until(async () => {
      const a = await c.assignment(db);
      return !a.copies.includes(goneId) && a.copies.includes(spareId);
    }, 30000, 'the dead copy replaced in etcd');
    const a2 = await c.assignment(db);
    assert.equal(a2.primary, a1.primary, 'the primary stays');
    assert.ok(a2.epoch > a1.epoch, 'a new epoch made the new set');
    assert.equal(a2.copies.length, 3);
    const before = acked.length;
    await until(async () => acked.length >= before + 30, 15000, 'writes after the change');
    await stop();
    assert.match(primary.stderr, new RegExp(`event=copy_change db=${db} out=${goneId} in=${spareId}`));
    assert.match(primary.stderr, new RegExp(`event=copies_changed_here db=${db} epoch=\\d+ out=${goneId} in=${spareId}`));
    // The new copy holds every acknowledged write, once.
    await until(() => holdsAll(spare, db, acked), 20000, 'the new copy to hold every acknowledged write');
    const info = (await clusterInfo(primary, `?database=${db}`)).body.database;
    assert.deepEqual(info.copies.map((x) => x.node).sort(), [...a2.copies].sort());
    assert.equal((await clusterInfo(primary)).body.etcd.failover.replaced, 1, 'counted as replaced');

    // With the old copy still gone, the primary's node dies too: a quorum
    // of the new set (the other follower and the new copy) takes over.
    const acked2 = [];
    const left = c.nodes.filter((d) => d !== gone && d !== primary);
    primary.proc.kill('SIGKILL');
    await until(async () => (await c.assignment(db)).primary !== a1.primary, 20000, 'a failover after the change');
    const stop2 = writers(() => left, db, (id) => acked2.push(id), 100000, 3000);
    stops.push(stop2);
    await until(async () => acked2.length >= 20, 20000, 'writes on the new primary');
    await stop2();
    const a3 = await c.assignment(db);
    const p3 = c.byId(a3.primary);
    const have = (await post(p3, `/v1/db/${db}/query`, { sql: 'SELECT id FROM t ORDER BY id' })).body.rows.map((x) => x[0]);
    assert.equal(new Set(have).size, have.length, 'no id twice');
    for (const id of [...acked, ...acked2]) assert.ok(have.includes(id), `acknowledged id ${id} missing`);

    // The node taken out comes back. The old primary's node is gone past
    // node_dead_after too, and this one is the only node without a copy:
    // it is given one again, made afresh from the primary, and holds every
    // acknowledged write.
    const back = await c.restart(c.nodes.indexOf(gone));
    await until(async () => {
      const a = await c.assignment(db);
      return a.copies.includes(goneId) && !a.copies.includes(a1.primary);
    }, 30000, 'the returning node to take the dead primary\'s place');
    await until(() => holdsAll(back, db, [...acked, ...acked2]), 20000, 'the returning node to hold every acknowledged write');
  } finally {
    await Promise.all(stops.map((s) => s()));
    await c.cleanup();
  }
});

test('POST /v1/admin/move replaces a chosen copy by one on a chosen node; the copy moved away stops being one', async () => {
  const c = await startEtcdCluster(4, { conf: conf.replace('node_dead_after = 2s', 'node_dead_after = 0') });
  const stops = []; // (writers stopped however the test ends: else the file never ends)
  try {
    await c.linked();
    const db = 'moved';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    const primary = c.byId(a1.primary);
    const fromId = a1.copies.find((id) => id !== a1.primary);
    const toId = ['n1', 'n2', 'n3', 'n4'].find((id) => !a1.copies.includes(id));
    const acked = [];
    const stop = writers(() => [primary], db, (id) => acked.push(id), 1, 3000);
    stops.push(stop);
    await until(async () => acked.length >= 20, 15000, 'writes before the move');
    // Refused clearly: moving the primary's own copy, to a node with a
    // copy, or through a node that is not the primary.
    let r = await post(primary, '/v1/admin/move', { database: db, from: a1.primary, to: toId });
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /promote another copy first/);
    r = await post(primary, '/v1/admin/move', { database: db, from: fromId, to: a1.copies.find((id) => id !== a1.primary && id !== fromId) });
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /holds a copy already/);
    r = await post(c.byId(fromId), '/v1/admin/move', { database: db, from: fromId, to: toId });
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /not the primary/);
    r = await post(primary, '/v1/admin/move', { database: db, to: toId });
    assert.equal(r.status, 400);
    // The move, under writes.
    r = await post(primary, '/v1/admin/move', { database: db, from: fromId, to: toId }, 30000);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(r.body.epoch > a1.epoch);
    await until(async () => {
      const a = await c.assignment(db);
      return a.copies.includes(toId) && !a.copies.includes(fromId);
    }, 10000, 'the assignment to name the new copy');
    const before = acked.length;
    await until(async () => acked.length >= before + 20, 15000, 'writes after the move');
    await stop();
    await until(() => holdsAll(c.byId(toId), db, acked), 20000, 'the new copy to hold every acknowledged write');
    // The node moved away from is no copy: it passes calls on to the primary.
    const from = c.byId(fromId);
    await until(async () => {
      const info = (await clusterInfo(from, `?database=${db}`)).body.database;
      return !info.copies.some((x) => x.node === fromId) && info.copies.some((x) => x.node === toId);
    }, 10000, 'the old copy to stop being one').catch((e) => { for (const d of c.nodes) console.log(d.stderr.split('\n').filter((l) => /db=moved/.test(l)).join('\n')); throw e; });
    const n = await post(from, `/v1/db/${db}/query`, { sql: 'SELECT count(*) FROM t' });
    assert.equal(n.status, 200, JSON.stringify(n.body));
    assert.equal(n.body.rows[0][0], new Set(acked).size);
    // ... and its files are gone from that node.
    await until(async () => /event=copy_discarded db=moved/.test(from.stderr), 10000, 'the old copy\'s files removed').catch((e) => { console.log(from.stderr.split('\n').filter((l) => /moved/.test(l)).join('\n')); throw e; });
    assert.ok(!existsSync(path.join(from.dataDir, 'db', db)), 'the old copy\'s directory is gone');
  } finally {
    await Promise.all(stops.map((s) => s()));
    await c.cleanup();
  }
});

test('a node taken out of a copy set while it was down removes its stale copy when it comes back', async () => {
  const c = await startEtcdCluster(4, { conf: conf.replace('node_dead_after = 2s', 'node_dead_after = 0') });
  try {
    await c.linked();
    const db = 'stale';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    const primary = c.byId(a1.primary);
    const fromId = a1.copies.find((id) => id !== a1.primary);
    const toId = ['n1', 'n2', 'n3', 'n4'].find((id) => !a1.copies.includes(id));
    for (let i = 1; i <= 10; i++)
      assert.equal((await post(primary, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (?)', params: [i] })).status, 200);
    const from = c.byId(fromId);
    await until(async () => (await idsOn(from, db))?.length === 10, 10000, 'the follower to hold the rows');
    from.proc.kill('SIGKILL');
    await until(async () => from.exited, 5000, 'the follower to exit');
    // Its copy moves while it is down (the other two copies are a quorum of both sets).
    const r = await post(primary, '/v1/admin/move', { database: db, from: fromId, to: toId }, 30000);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const back = await c.restart(c.nodes.indexOf(from));
    await until(async () => /event=copy_discarded db=stale/.test(back.stderr), 15000, 'the stale copy removed');
    assert.ok(!existsSync(path.join(back.dataDir, 'db', db)), 'the stale copy\'s directory is gone');
    const n = await post(back, `/v1/db/${db}/query`, { sql: 'SELECT count(*) FROM t' });
    assert.equal(n.status, 200, JSON.stringify(n.body));
    assert.equal(n.body.rows[0][0], 10, 'served through the primary');
    assert.ok(!(await c.assignment(db)).copies.includes(fromId));
  } finally {
    await c.cleanup();
  }
});

test('dosqld cluster move DATABASE --to NODE --primary: the database leaves its primary\'s node for NODE, which serves it', async () => {
  const c = await startEtcdCluster(4, { conf: conf.replace('node_dead_after = 2s', 'node_dead_after = 0') });
  const stops = []; // (writers stopped however the test ends: else the file never ends)
  try {
    await c.linked();
    const db = 'cli';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    const toId = ['n1', 'n2', 'n3', 'n4'].find((id) => !a1.copies.includes(id));
    const acked = [];
    const stop = writers(() => c.nodes, db, (id) => acked.push(id), 1, 3000);
    stops.push(stop);
    await until(async () => acked.length >= 20, 15000, 'writes before the move');
    const via = c.byId(toId); // (any node finds the others)
    const cli = await runDosqld(['cluster', 'move', db, '--to', toId, '--primary', '--url', via.url], { timeoutMs: 60000 });
    if (cli.code !== 0) for (const d of c.nodes) console.log(d.stderr.split('\n').filter((l) => /db=cli/.test(l)).join('\n'));
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, new RegExp(`database ${db}: copy moved from ${a1.primary} to ${toId}`));
    const a2 = await c.assignment(db);
    assert.equal(a2.primary, toId, 'the new node is the primary');
    assert.ok(!a2.copies.includes(a1.primary), 'the old primary\'s node holds no copy');
    assert.equal(a2.copies.length, 3);
    const before = acked.length;
    await until(async () => acked.length >= before + 20, 15000, 'writes after the move');
    await stop();
    const have = (await post(c.byId(toId), `/v1/db/${db}/query`, { sql: 'SELECT id FROM t ORDER BY id' })).body.rows.map((x) => x[0]);
    assert.equal(new Set(have).size, have.length, 'no id twice');
    for (const id of acked) assert.ok(have.includes(id), `acknowledged id ${id} missing`);
    // Refused clearly: no --to; a node that holds a copy already.
    let r = await runDosqld(['cluster', 'move', db, '--url', via.url]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--to NODE/);
    r = await runDosqld(['cluster', 'move', db, '--to', a2.copies.find((id) => id !== toId), '--from', toId, '--url', via.url], { timeoutMs: 60000 });
    assert.equal(r.code, 1);
  } finally {
    await Promise.all(stops.map((s) => s()));
    await c.cleanup();
  }
});

// The primary changes the copies, then dies before etcd hears of it: etcd
// still names the copy taken out, first in its order, as the one to step
// forward. That node is no member any more; it hands the database to one
// (writing the copies it knows), and a member takes over with the new set.
test('the primary dies after a change, before etcd names the new copies: the copy taken out hands over to a member', async () => {
  const c = await startEtcdCluster(4, { conf: conf.replace('node_dead_after = 2s', 'node_dead_after = 0'), ttl: '4s', etcdProxies: true });
  try {
    await c.linked();
    const db = 'lagging';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    const primary = c.byId(a1.primary);
    const fromId = a1.copies.find((id) => id !== a1.primary); // (first in etcd's order after the primary)
    const toId = ['n1', 'n2', 'n3', 'n4'].find((id) => !a1.copies.includes(id));
    for (let i = 1; i <= 10; i++)
      assert.equal((await post(primary, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (?)', params: [i] })).status, 200);
    c.etcdProxy(c.nodes.indexOf(primary)).partition(); // (its writes to etcd go nowhere)
    const moving = post(primary, '/v1/admin/move', { database: db, from: fromId, to: toId }, 20000);
    await until(async () => /event=copies_changed_here db=lagging/.test(primary.stderr), 15000, 'the change made');
    primary.proc.kill('SIGKILL');
    await moving.catch(() => null);
    const a2 = await c.assignment(db);
    assert.ok(a2.copies.includes(fromId) && !a2.copies.includes(toId), 'etcd did not hear of the change');
    // etcd moves the primary on; it ends on a member of the new set.
    await until(async () => {
      const a = await c.assignment(db);
      return a.primary !== a1.primary && a.primary !== fromId && a.copies.includes(toId) && !a.copies.includes(fromId);
    }, 40000, 'a member of the new set named primary, with the new copies');
    assert.match(c.byId(fromId).stderr, /event=failover_not_member db=lagging/);
    const p = c.byId((await c.assignment(db)).primary);
    let r;
    await until(async () => {
      r = await post(p, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (?)', params: [11] });
      return r.status === 200;
    }, 20000, 'writes on the new primary');
    const have = (await post(p, `/v1/db/${db}/query`, { sql: 'SELECT id FROM t ORDER BY id' })).body.rows.map((x) => x[0]);
    assert.deepEqual(have, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  } finally {
    for (let i = 0; i < 4; i++) c.etcdProxy(i)?.heal();
    await c.cleanup();
  }
});

// A move that cannot finish: the node being added is stopped, and another
// copy is made primary meanwhile. The move fails clearly; the node that
// was being added, when it wakes, is told it is no copy and removes what
// it had; the database serves on.
test('a move cut short by a promotion elsewhere fails clearly, and the node being added forgets its copy', async () => {
  const c = await startEtcdCluster(4, { conf: conf.replace('node_dead_after = 2s', 'node_dead_after = 0') });
  try {
    await c.linked();
    const db = 'cutshort';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    const primary = c.byId(a1.primary);
    const [fromId, otherId] = a1.copies.filter((id) => id !== a1.primary);
    const toId = ['n1', 'n2', 'n3', 'n4'].find((id) => !a1.copies.includes(id));
    const to = c.byId(toId);
    for (let i = 1; i <= 10; i++)
      assert.equal((await post(primary, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (?)', params: [i] })).status, 200);
    to.proc.kill('SIGSTOP');
    try {
      const moving = post(primary, '/v1/admin/move', { database: db, from: fromId, to: toId }, 30000);
      await until(async () => /event=copy_change db=cutshort/.test(primary.stderr), 10000, 'the move begun');
      const pr = await post(c.byId(otherId), '/v1/admin/promote', { database: db }, 20000);
      assert.equal(pr.status, 200, JSON.stringify(pr.body));
      const mv = await moving;
      assert.notEqual(mv.status, 200, 'the move did not happen');
      assert.match(mv.body.error.message, /move of a copy of cutshort failed: this node is no longer the primary/);
    } finally {
      to.proc.kill('SIGCONT');
    }
    await until(async () => /event=copy_discarded db=cutshort/.test(to.stderr), 20000, 'the node being added to forget its copy');
    assert.match(to.stderr, /event=copy_learning_ended db=cutshort/);
    assert.ok(!existsSync(path.join(to.dataDir, 'db', db)));
    assert.equal(primary.exited, null, 'the former primary runs on');
    const a2 = await c.assignment(db);
    assert.deepEqual([...a2.copies].sort(), [...a1.copies].sort(), 'the copies are as before');
    const r = await post(c.byId(otherId), `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (11)' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  } finally {
    await c.cleanup();
  }
});

// No node to take a dead copy's place (three nodes, three copies): the
// primary says so once and waits; the database serves on with two copies,
// and its assignment keeps the dead node (it may come back).
test('a copy gone past node_dead_after with no node free to take it: said once, the database serves on', async () => {
  const c = await startEtcdCluster(3, { conf: conf.replace('node_dead_after = 2s', 'node_dead_after = 1s') });
  try {
    await c.linked();
    const db = 'nofree';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    const primary = c.byId(a1.primary);
    const goneId = a1.copies.find((id) => id !== a1.primary);
    c.byId(goneId).proc.kill('SIGKILL');
    await until(async () => /event=copy_replace_stuck db=nofree/.test(primary.stderr), 15000, 'the primary to say no node is free');
    await sleep(1500); // (sweeps every 500 ms: it says it once, and changes nothing)
    assert.equal(primary.stderr.match(/event=copy_replace_stuck db=nofree/g).length, 1);
    assert.deepEqual(await c.assignment(db), a1, 'the assignment is as it was');
    const r = await post(primary, `/v1/db/${db}/query`, { sql: 'INSERT INTO t(id) VALUES (1)' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  } finally {
    await c.cleanup();
  }
});

// The new copy's node hears of the change late (its etcd is slow): a
// promotion asked of it at once answers 409, to ask again, rather than
// "holds no copy"; asked again once its view caught up, it is promoted.
test('a promotion asked of a new copy before its node heard of the change: 409, ask again; then it goes', async () => {
  const c = await startEtcdCluster(4, { conf: conf.replace('node_dead_after = 2s', 'node_dead_after = 0'), ttl: '4s', etcdProxies: true });
  try {
    await c.linked();
    const db = 'late';
    assert.equal((await post(c.nodes[0], `/v1/db/${db}/query`, { sql: 'CREATE TABLE t(id INTEGER PRIMARY KEY)' })).status, 200);
    const a1 = await c.assignment(db);
    const fromId = a1.copies.find((id) => id !== a1.primary);
    const toId = ['n1', 'n2', 'n3', 'n4'].find((id) => !a1.copies.includes(id));
    c.etcdProxy(Number(toId.slice(1)) - 1).delayMs = 1500; // (its watch of the assignments lags)
    const mv = await post(c.byId(a1.primary), '/v1/admin/move', { database: db, from: fromId, to: toId }, 30000);
    assert.equal(mv.status, 200, JSON.stringify(mv.body));
    const r = await post(c.byId(toId), '/v1/admin/promote', { database: db }, 20000);
    assert.equal(r.status, 409, JSON.stringify(r.body));
    assert.match(r.body.error.message, /does not name it yet/);
    c.etcdProxy(Number(toId.slice(1)) - 1).delayMs = 0;
    let p;
    await until(async () => (p = await post(c.byId(toId), '/v1/admin/promote', { database: db }, 20000)).status !== 409,
      10000, 'the new copy\'s view to catch up');
    assert.equal(p.status, 200, JSON.stringify(p.body));
    await until(async () => (await c.assignment(db)).primary === toId, 10000, 'the new copy named primary');
  } finally {
    await c.cleanup();
  }
});
