// proxy — a TCP proxy with faults, between two nodes' link: it forwards
// bytes both ways, or delays them, drops them (the connection stays, the
// bytes vanish: a black hole), refuses new connections, or cuts the ones
// it carries. partition() is refuse + cut; heal() forwards again.
// block(host) refuses and cuts the connections that come from that
// address only (a node whose links leave from an address of its own);
// unblock(host) lets them in again.
import net from 'node:net';

export class FaultProxy {
  constructor(targetPort, targetHost = '127.0.0.1') {
    this.targetPort = targetPort;
    this.targetHost = targetHost;
    this.blocked = new Set();
    this.mode = 'pass'; // pass | drop | refuse
    this.delayMs = 0;
    this.conns = new Set();
    this.stats = { accepted: 0, refused: 0, cut: 0 };
  }

  start() {
    this.server = net.createServer((client) => this.accept(client));
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  accept(client) {
    if (this.mode === 'refuse' || this.blocked.has(client.remoteAddress)) {
      this.stats.refused++;
      client.destroy();
      return;
    }
    this.stats.accepted++;
    const up = net.connect({ host: this.targetHost, port: this.targetPort });
    const pair = { client, up };
    this.conns.add(pair);
    const pipe = (from, to) => from.on('data', (b) => {
      if (this.mode === 'drop') return; // a black hole
      if (this.delayMs > 0) setTimeout(() => to.destroyed || to.write(b), this.delayMs);
      else to.write(b);
    });
    pipe(client, up);
    pipe(up, client);
    const end = () => {
      client.destroy();
      up.destroy();
      this.conns.delete(pair);
    };
    client.on('close', end);
    up.on('close', end);
    client.on('error', end);
    up.on('error', end);
  }

  block(host) {
    this.blocked.add(host);
    for (const { client, up } of this.conns)
      if (client.remoteAddress === host) {
        client.destroy();
        up.destroy();
        this.stats.cut++;
      }
  }

  unblock(host) {
    this.blocked.delete(host);
  }

  cut() {
    for (const { client, up } of this.conns) {
      client.destroy();
      up.destroy();
      this.stats.cut++;
    }
    this.conns.clear();
  }

  partition() {
    this.mode = 'refuse';
    this.cut();
  }

  blackhole() { this.mode = 'drop'; }

  heal() {
    this.mode = 'pass';
    this.delayMs = 0;
  }

  close() {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
