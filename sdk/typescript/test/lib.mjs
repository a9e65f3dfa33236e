// Shared by the package's tests: a real dosqld (the project's harness),
// the tests' TCP fault proxy, and a WebSocket class that lets a test see
// what the client sends and lose a reply on purpose.
import WebSocket from 'ws';
import { startDosqld, sleep, within, metric } from '../../../tests/integration/lib/harness.mjs';
import { FaultProxy } from '../../../tests/cluster/lib/proxy.mjs';

export { startDosqld, sleep, within, metric, FaultProxy };

export const WRITE_TOKEN = 'sdk-write-token-0123456789';
export const READ_TOKEN = 'sdk-read-token-0123456789';

// A dosqld with a write and a read token, and a short write_wait_timeout
// (how long a minLSN ahead of the database waits on a lone node).
export function startServer(opts = {}) {
  return startDosqld({
    conf: `[engine]
write_wait_timeout = 1s
[auth]
token = ${WRITE_TOKEN} write
token = ${READ_TOKEN} read
`,
    ...opts,
  });
}

// Wait until pred() holds (polled), or fail.
export async function until(pred, ms = 5000, what = 'condition') {
  await within(ms, (async () => { while (!(await pred())) await sleep(10); })(), what);
}

// A ws WebSocket that records every message the client sends (`sent`),
// and, when `loseNextReplyTo(re)` was called, cuts the connection instead
// of delivering the first message after one that matched `re`: the server
// has run the request, the client never hears the answer.
export function tapWebSocket() {
  const tap = { sent: [], lose: null, sockets: [] };
  class TapWebSocket extends WebSocket {
    constructor(url, opts) {
      super(url, opts);
      tap.sockets.push(this);
      this.armed = false;
    }
    send(data, ...rest) {
      tap.sent.push(String(data));
      if (tap.lose && tap.lose.test(String(data))) {
        tap.lose = null;
        this.armed = true;
      }
      return super.send(data, ...rest);
    }
    addEventListener(type, listener, o) {
      if (type !== 'message') return super.addEventListener(type, listener, o);
      return super.addEventListener('message', (ev) => {
        if (this.armed) {
          this.armed = false;
          this.terminate();
          return;
        }
        listener(ev);
      }, o);
    }
  }
  tap.WebSocket = TapWebSocket;
  tap.loseNextReplyTo = (re) => { tap.lose = re; };
  return tap;
}
