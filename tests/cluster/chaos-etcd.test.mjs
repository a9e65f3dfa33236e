// The short version of make chaos-etcd (tests/chaos/chaos-etcd.mjs): an
// etcd and four nodes failing over by themselves (three copies of each
// database, re-made elsewhere for a node gone past node_dead_after), four rounds of faults
// under writes (seed 490: a primary killed and back before its lease ran
// out, a primary cut off from etcd, etcd killed, a primary stopped past
// its lease); nothing acknowledged is lost, no epoch is promoted twice,
// etcd's epochs only go up, by at most a few a round. What the rounds did
// and what the nodes said comes with a failure.
import { test } from 'node:test';

import { chaosEtcd } from '../chaos/chaos-etcd.mjs';

test('four rounds of chaos on etcd: nothing acknowledged lost, one primary an epoch', async () => {
  const lines = [];
  try {
    await chaosEtcd(4, { log: (s) => lines.push(s), seed: 490 });
  } catch (e) {
    e.message += `\n${lines.join('\n')}`;
    throw e;
  }
});
