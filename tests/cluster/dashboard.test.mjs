// The Grafana dashboard (conf/grafana/dosqld-dashboard.json): every
// metric its queries name is one a node of a cluster exports, every
// panel has its queries and a place, and the instance variable reads a
// metric that is there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { ROOT } from '../integration/lib/harness.mjs';
import { post, startCluster } from './lib/cluster.mjs';

test('every metric the dashboard queries is exported', async () => {
  const dash = JSON.parse(readFileSync(path.join(ROOT, 'conf/grafana/dosqld-dashboard.json'), 'utf8'));
  const c = await startCluster(2, { conf: () => 'replicas = 2\n' });
  try {
    await post(c.nodes[0], '/v1/db/dash/query', { sql: 'CREATE TABLE t(x)' });
    const text = await (await fetch(`${c.nodes[0].url}/metrics`)).text();
    const exported = new Set(text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(/[{ ]/)[0]));
    const named = new Set();
    assert.ok(dash.panels.length >= 10);
    for (const p of dash.panels) {
      assert.ok(p.title && p.gridPos && p.targets?.length > 0, `panel ${p.id}`);
      for (const t of p.targets) {
        assert.ok(t.refId && t.expr, `panel ${p.title}: a query without refId or expr`);
        for (const m of t.expr.matchAll(/\b((?:dosqld|process)_[a-z_]+)\{/g)) named.add(m[1]);
      }
    }
    const missing = [...named].filter((n) => !exported.has(n));
    assert.deepEqual(missing, [], `queried but not exported: ${missing}`);
    assert.ok(named.size >= 25, `${named.size} metrics queried`);
    const inst = dash.templating.list.find((v) => v.name === 'instance');
    const m = /label_values\((\w+), instance\)/.exec(inst.query);
    assert.ok(m && exported.has(m[1]));
  } finally {
    await c.cleanup();
  }
});
