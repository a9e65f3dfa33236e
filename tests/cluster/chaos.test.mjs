// The short version of make chaos (tests/chaos/chaos.mjs): a few rounds
// of faults under writes; nothing acknowledged is lost and every copy
// converges. What the rounds did and what the nodes said comes with a
// failure.
import { test } from 'node:test';

import { chaos } from '../chaos/chaos.mjs';

// (Fewer rounds on a sanitizer build, which is slower: the same seed, so
// the same first faults.)
test('a few rounds of chaos: nothing acknowledged lost, every copy the same', async () => {
  const lines = [];
  try {
    await chaos(process.env.SANITIZE ? 4 : 6, { log: (s) => lines.push(s), seed: 20261207 });
  } catch (e) {
    e.message += `\n${lines.join('\n')}`;
    throw e;
  }
});
