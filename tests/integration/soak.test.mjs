// The soak's short version (make soak runs it for 30 minutes on an ASan
// build, tests/soak/soak.mjs): 20 s (8 s on a sanitizer build, whose
// second pass of the suite is the slower) of the same mixed load — writes,
// reads, transactions, streams, CDC subscribers, clients disconnecting
// mid-request, hibernation and eviction — with no error other than the
// expected ones, no warning in the log, and a clean exit. Memory and
// descriptor growth is judged only on the long run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { soak } from '../soak/soak.mjs';

const SECONDS = process.env.SANITIZE ? 8 : 20;

test(`${SECONDS} s of mixed load: no unexpected error, nothing logged, a clean exit`, { timeout: 120000 }, async () => {
  const r = await soak({ seconds: SECONDS, checkGrowth: false, log: () => {} });
  assert.deepEqual(r.problems, [], JSON.stringify(r, null, 2));
  assert.ok(r.txns > 0 && r.streams > 0 && r.cdcEvents > 0 && r.disconnects > 0, JSON.stringify(r));
});
