// certs — a CA and node certificates for [cluster] tls, made with the
// openssl command as an operator would (docs/replication.md), in a
// temporary directory of their own.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
const openssl = (...args) => execFileSync('openssl', args, { stdio: 'ignore' });

export class Certs {
  constructor() {
    this.dir = mkdtempSync(path.join(tmpdir(), 'dosqld-certs-'));
  }

  path(name) { return path.join(this.dir, name); }

  // A self-signed CA: NAME.pem and NAME.key.
  ca(name) {
    openssl('req', '-x509', ...EC, '-keyout', this.path(`${name}.key`), '-out', this.path(`${name}.pem`), '-days', '1',
      '-subj', `/CN=${name}`);
  }

  // A node's certificate as docs/replication.md asks, FILE.pem and
  // FILE.key, signed by CA: its id as a DNS subjectAltName (or `san`,
  // e.g. "IP:127.0.0.1" for a server reached by address), usable as a
  // TLS server's and a client's.
  node(file, id, ca, san = `DNS:${id}`) {
    const f = (n) => this.path(n);
    writeFileSync(f(`${file}.ext`), `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth\n`);
    openssl('req', '-new', ...EC, '-keyout', f(`${file}.key`), '-out', f(`${file}.csr`), '-subj', `/CN=${id}`);
    openssl('x509', '-req', '-in', f(`${file}.csr`), '-CA', f(`${ca}.pem`), '-CAkey', f(`${ca}.key`),
      '-set_serial', String(1000 + Math.floor(Math.random() * 1e6)), '-days', '1', '-out', f(`${file}.pem`),
      '-extfile', f(`${file}.ext`));
  }

  // The [cluster] keys of a node with FILE's certificate, trusting CA.
  conf(file, ca) {
    return `tls = yes\ntls_cert = ${this.path(`${file}.pem`)}\ntls_key = ${this.path(`${file}.key`)}\n` +
      `tls_ca = ${this.path(`${ca}.pem`)}\n`;
  }

  cleanup() { rmSync(this.dir, { recursive: true, force: true }); }
}
