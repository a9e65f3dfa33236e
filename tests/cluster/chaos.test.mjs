// The short version of make chaos (tests/chaos/chaos.mjs): a few rounds
// of faults under writes; nothing acknowledged is lost and every copy
// converges.
import { test } from 'node:test';

import { chaos } from '../chaos/chaos.mjs';

test('a few rounds of chaos: nothing acknowledged lost, every copy the same', async () => {
  await chaos(6, { log: () => {}, seed: 20261207 });
});
