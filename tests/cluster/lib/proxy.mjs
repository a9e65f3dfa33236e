// proxy — a TCP proxy with faults, between two nodes' link: it forwards
// bytes both ways, or delays them, drops them (the connection stays, the
// bytes vanish: a black hole), refuses new connections, or cuts the ones
// it carries. partition() is refuse + cut; heal() forwards again.
import net from 'node:net';

export class FaultProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
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
    if (this.mode === 'refuse') {
      this.stats.refused++;
      client.destroy();
      return;
    }
    this.stats.accepted++;
    const up = net.connect({ host: '127.0.0.1', port: this.targetPort });
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
