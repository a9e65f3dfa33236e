// Faults on the links, through a proxy between every pair of nodes:
// partitions, black holes and delays. Commits go on with a quorum, wait
// and end in TIMEOUT without one, nothing acknowledged is lost across a
// promotion on the majority side, and every copy converges after healing.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { clusterInfo, post, query, startCluster, until } from './lib/cluster.mjs';

const conf = () => 'replicas = 3\ncommit_timeout = 1500ms\npromote_timeout = 5s\n';


async function roles(c, db) {
  const info = (await clusterInfo(c.nodes[0], `?database=${db}`)).body.database;
  const idx = (id) => Number(id.slice(1)) - 1;
  return { p: idx(info.primary), fs: info.copies.filter((x) => x.role === 'follower').map((x) => idx(x.node)) };
}

async function ids(d, db) {
  const r = await query(d, db, 'SELECT group_concat(id) FROM (SELECT id FROM t ORDER BY id)', undefined, { consistency: 'replica' });
  return r.status === 200 ? (r.body.rows[0][0] ?? '') : `error ${r.status}`;
}

test('partitions: a quorum commits, none times out, healing converges', async () => {
  const c = await startCluster(3, { conf, proxies: true });
  try {
    const db = 'part';
    const { p, fs } = await roles(c, db);
    const P = c.nodes[p];
    assert.equal((await query(P, db, 'CREATE TABLE t(id INTEGER PRIMARY KEY)')).status, 200);
    c.isolate(fs[0]);
    for (let i = 1; i <= 5; i++) assert.equal((await query(P, db, 'INSERT INTO t VALUES (?)', [i])).status, 200);
    c.isolate(fs[1]); // the primary is alone now
    const r = await query(P, db, 'INSERT INTO t VALUES (6)');
    assert.equal(r.body.error?.code, 'TIMEOUT', JSON.stringify(r.body));
    // A black hole (the connection stays, the bytes vanish) and a delay.
    c.rejoin(fs[0]);
    c.rejoin(fs[1]);
    c.proxy(p, fs[0]).blackhole();
    c.proxy(p, fs[1]).delayMs = 30;
    await until(async () => (await query(P, db, 'INSERT OR IGNORE INTO t VALUES (7)')).status === 200, 15000, 'a commit over the slow link');
    c.rejoin(fs[0]);
    for (const d of c.nodes) await until(async () => (await ids(d, db)) === '1,2,3,4,5,6,7', 15000, 'convergence');
  } finally {
    await c.cleanup();
  }
});

test('the primary cut off: the majority promotes; after healing the old one follows, nothing acknowledged lost', async () => {
  const c = await startCluster(3, { conf, proxies: true });
  try {
    const db = 'split';
    const { p, fs } = await roles(c, db);
    const P = c.nodes[p];
    assert.equal((await query(P, db, 'CREATE TABLE t(id INTEGER PRIMARY KEY)')).status, 200);
    const acked = [];
    for (let i = 1; i <= 10; i++) if ((await query(P, db, 'INSERT INTO t VALUES (?)', [i])).status === 200) acked.push(i);
    c.isolate(p);
    // Its writes cannot be acknowledged now (ten commits of its own).
    const lost = await Promise.all([100, 101, 102, 103, 104, 105, 106, 107, 108, 109].map((i) =>
      query(P, db, 'INSERT INTO t VALUES (?)', [i])));
    for (const x of lost) assert.notEqual(x.status, 200);
    await until(async () => (await clusterInfo(c.nodes[fs[0]])).body.nodes[p].reachable === false, 10000, 'the cut seen');
    const pr = await post(c.nodes[fs[0]], '/v1/admin/promote', { database: db });
    assert.equal(pr.status, 200, JSON.stringify(pr.body));
    const N = c.nodes[fs[0]];
    for (let i = 11; i <= 20; i++) {
      const w = await query(N, db, 'INSERT INTO t VALUES (?)', [i]);
      if (w.status === 200) acked.push(i);
    }
    assert.ok(acked.includes(20), 'the new primary takes writes');
    c.rejoin(p);
    await until(async () => {
      const x = await query(P, db, 'INSERT INTO t VALUES (200)');
      return x.body.error?.code === 'NOT_PRIMARY' && x.body.error.message.includes(`node n${fs[0] + 1}`);
    }, 15000, 'the old primary to step down');
    const want = await ids(N, db);
    for (const id of acked) assert.ok(want.split(',').includes(String(id)), `acknowledged ${id} lost`);
    assert.ok(!want.split(',').includes('100'), 'the writes the cut-off primary could not get acknowledged are gone');
    for (const d of c.nodes) await until(async () => (await ids(d, db)) === want, 15000, 'every copy the same');
    const m = await (await fetch(`${P.url}/metrics`)).text();
    assert.ok(Number(/\ndosqld_replication_truncations_total (\d+)/.exec(m)[1]) >= 1, 'the old primary cut its log back');
    // What it says it holds durably is what its log holds now, not what it
    // held before the cut (an acknowledgement must never claim that).
    const self = (await clusterInfo(P, `?database=${db}`)).body.database.copies.find((x) => x.node === `n${p + 1}`);
    const top = (await clusterInfo(N, `?database=${db}`)).body.database.copies.find((x) => x.role === 'primary');
    assert.ok(self.durableLSN <= top.durableLSN, `the old primary claims ${self.durableLSN}, the log has ${top.durableLSN}`);
  } finally {
    await c.cleanup();
  }
});

// A copy that became primary by promotion, then cut off in its turn:
// its log grew past where it stood when promoted, and the commits it
// could not get acknowledged go when it follows the next primary (it
// says where its log ends now, not where it ended then).
test('a promoted primary cut off in its turn: its unacknowledged commits go too', async () => {
  const c = await startCluster(3, { conf, proxies: true });
  try {
    const db = 'again';
    const { p, fs } = await roles(c, db);
    assert.equal((await query(c.nodes[p], db, 'CREATE TABLE t(id INTEGER PRIMARY KEY)')).status, 200);
    assert.equal((await query(c.nodes[p], db, 'INSERT INTO t VALUES (1)')).status, 200);
    const a = fs[0], b = fs[1];
    const pr = await post(c.nodes[a], '/v1/admin/promote', { database: db });
    assert.equal(pr.status, 200, JSON.stringify(pr.body));
    const A = c.nodes[a];
    for (let i = 2; i <= 6; i++)
      await until(async () => (await query(A, db, 'INSERT OR IGNORE INTO t VALUES (?)', [i])).status === 200, 10000, `write ${i}`);
    c.isolate(a);
    const lost = await Promise.all([100, 101, 102].map((i) => query(A, db, 'INSERT INTO t VALUES (?)', [i])));
    for (const x of lost) assert.notEqual(x.status, 200);
    await until(async () => (await clusterInfo(c.nodes[b])).body.nodes[a].reachable === false, 10000, 'the cut seen');
    const pr2 = await post(c.nodes[b], '/v1/admin/promote', { database: db });
    assert.equal(pr2.status, 200, JSON.stringify(pr2.body));
    const B = c.nodes[b];
    for (let i = 7; i <= 9; i++)
      await until(async () => (await query(B, db, 'INSERT OR IGNORE INTO t VALUES (?)', [i])).status === 200, 10000, `write ${i}`);
    c.rejoin(a);
    const want = '1,2,3,4,5,6,7,8,9';
    for (const d of c.nodes) await until(async () => (await ids(d, db)) === want, 15000, `n${c.nodes.indexOf(d) + 1} the same`);
    assert.match(A.stderr, /event=replication_diverged db=again/);
  } finally {
    await c.cleanup();
  }
});

// A copy that missed an epoch proposes the same number again: a copy that
// accepted that epoch with another primary refuses at once (before the
// candidate has recorded its own acceptance); the promotion fails saying
// so, and the next one, with the epoch it learned, succeeds.
test('a promotion refused by a copy that knows a newer epoch fails at once; the next succeeds', async () => {
  const c = await startCluster(3, { conf, proxies: true });
  try {
    const db = 'stale';
    const { p, fs } = await roles(c, db);
    const [a, b] = fs;
    assert.equal((await query(c.nodes[p], db, 'CREATE TABLE t(id INTEGER PRIMARY KEY)')).status, 200);
    c.proxy(a, b).partition();
    await until(async () => (await clusterInfo(c.nodes[a])).body.nodes[b].reachable === false, 10000, 'the cut seen');
    const pa = await post(c.nodes[a], '/v1/admin/promote', { database: db });
    assert.equal(pa.status, 200, JSON.stringify(pa.body));
    assert.equal(pa.body.epoch, 2);
    // b heard nothing of epoch 2; the former primary accepted it.
    const pb = await post(c.nodes[b], '/v1/admin/promote', { database: db });
    assert.equal(pb.body.error?.code, 'TIMEOUT', JSON.stringify(pb.body));
    assert.match(pb.body.error.message, new RegExp(`node n${p + 1} accepted epoch 2 already`));
    // (Until the failed one's own record is on disk, a promotion is
    // still under way here: asked again, as an operator would.)
    let again;
    await until(async () => {
      again = await post(c.nodes[b], '/v1/admin/promote', { database: db });
      if (again.status !== 200) {
        assert.equal(again.status, 409, JSON.stringify(again.body));
        assert.equal(again.body.error?.code, 'SERIALIZATION_FAILURE', JSON.stringify(again.body));
        assert.match(again.body.error.message, /under way here/, JSON.stringify(again.body));
      }
      return again.status === 200;
    }, 10000, 'the promotion again');
    assert.equal(again.body.epoch, 3);
    await until(async () => (await query(c.nodes[b], db, 'INSERT OR IGNORE INTO t VALUES (1)')).status === 200, 10000, 'a write');
    c.proxy(a, b).heal();
    for (const d of c.nodes) await until(async () => (await ids(d, db)) === '1', 15000, 'every copy the same');
  } finally {
    await c.cleanup();
  }
});

test('a former primary whose checkpoint holds commits never acknowledged is made again', async () => {
  const c = await startCluster(3, { conf: () => 'replicas = 3\ncommit_timeout = 1s\npromote_timeout = 5s\n[storage]\ncheckpoint_size = 64K\n', proxies: true });
  try {
    const db = 'ckpt';
    const { p, fs } = await roles(c, db);
    const P = c.nodes[p];
    assert.equal((await query(P, db, 'CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)')).status, 200);
    assert.equal((await query(P, db, 'INSERT INTO t VALUES (1, NULL)')).status, 200);
    c.isolate(p);
    // Cut off, it commits (never acknowledged) past a checkpoint's size.
    for (let i = 100; i < 103; i++) await query(P, db, 'INSERT INTO t VALUES (?, randomblob(60000))', [i]);
    await until(async () => (await clusterInfo(c.nodes[fs[0]])).body.nodes[p].reachable === false, 10000, 'the cut seen');
    const pr = await post(c.nodes[fs[0]], '/v1/admin/promote', { database: db });
    assert.equal(pr.status, 200, JSON.stringify(pr.body));
    const N = c.nodes[fs[0]];
    await until(async () => (await query(N, db, 'INSERT OR IGNORE INTO t VALUES (2, NULL)')).status === 200, 10000, 'a write');
    c.rejoin(p);
    await until(() => /event=copy_reset db=ckpt/.test(P.stderr), 15000, 'the old primary to make its copy again');
    const want = await ids(N, db);
    assert.equal(want, '1,2');
    await until(async () => (await ids(P, db)) === want, 15000, 'the copy made again');
  } finally {
    await c.cleanup();
  }
});
