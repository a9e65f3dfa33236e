// bench/s3rver.mjs — s3rver (npm) on a free loopback port for bench/tiering:
//   node --openssl-legacy-provider bench/s3rver.mjs DIR BUCKET
// prints {"port": P}; its key pair is S3RVER/S3RVER; stops on SIGTERM.
import S3rver from '../tests/node_modules/s3rver/lib/s3rver.js';

const [, , dir, bucket] = process.argv;
const s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir,
  configureBuckets: [{ name: bucket }] });
const { port } = await s3.run();
process.stdout.write(JSON.stringify({ port }) + '\n');
process.on('SIGTERM', async () => { await s3.close(); process.exit(0); });
