// keyspace — a cluster of n nodes (startCluster) that all read one
// VSchema of keyspace `name` with `shards` and `tables` (hash vindex `h`),
// every link up; with helpers for its tests:
//
//     const k = await startKeyspaceCluster(3, { name: 'shop', shards, tables, conf: 'replicas = 2\n' });
//     await k.ok(k.ks(k.c.nodes[0], 'SELECT ...'))   // /v1/ks/shop/query, asserting 200
//     await k.primaryOf('shop-1')                     // 'n2'
//     k.node('n2')                                    // its handle
//     k.gone.push(handle)                             // replaced by a restart: its directory goes at cleanup
//     await k.cleanup()
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { clusterInfo, post, startCluster, until } from './cluster.mjs';

export async function startKeyspaceCluster(n, { name, shards, tables, conf = '' }) {
  const dir = mkdtempSync(path.join(tmpdir(), 'dosqld-ks-'));
  const vs = path.join(dir, 'vschema.json');
  writeFileSync(vs, JSON.stringify({ keyspaces: { [name]: { shards, vindexes: { h: { type: 'hash' } }, tables } } }));
  const c = await startCluster(n, { conf: () => `${conf}[sharding]\nvschema = ${vs}\n` });
  for (const d of c.nodes)
    await until(async () => (await clusterInfo(d)).body.nodes.every((x) => x.reachable), 10000, 'every link up');
  const k = { c, dir, gone: [] };
  k.ks = (d, sql, params) => post(d, `/v1/ks/${name}/query`, params ? { sql, params } : { sql });
  k.rpc = (d, method, params) => post(d, `/v1/ks/${name}/rpc`, { id: 1, method, params });
  k.ok = async (p) => {
    const r = await p;
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  k.primaryOf = async (db) => (await clusterInfo(c.nodes[0], `?database=${db}`)).body.database.primary;
  k.node = (id) => c.nodes[Number(id.slice(1)) - 1];
  k.cleanup = async () => {
    await c.cleanup();
    for (const d of k.gone) rmSync(d.dir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  };
  return k;
}
