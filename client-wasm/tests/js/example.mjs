// Runs examples/forward.mjs against a real pht-server whose tunnels reach an echo target,
// and pushes bytes through the forwarded port: SHA-256 both ways, several connections at
// once, and the throughput of one big transfer.
//
// node example.mjs --server URL --listen 127.0.0.1:PORT [--mib N]
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    server: { type: 'string' },
    listen: { type: 'string' },
    mib: { type: 'string', default: '16' },
  },
});
if (!args.server || !args.listen) throw new Error('--server and --listen are required');
const [host, port] = [args.listen.split(':')[0], Number(args.listen.split(':')[1])];

const example = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples', 'forward.mjs');
const child = spawn(process.execPath, [example, '--listen', args.listen, '--server', args.server], {
  stdio: ['ignore', 'inherit', 'pipe'],
});
let logs = '';
child.stderr.on('data', (d) => {
  logs += d;
  process.stderr.write(d);
});
const stop = () => child.kill('SIGTERM');
process.on('exit', stop);
const timer = setTimeout(() => {
  console.error('[example-test] timed out');
  process.exit(1);
}, 180_000);

for (let i = 0; !logs.includes('listening on'); i++) {
  if (i > 100 || child.exitCode !== null) throw new Error(`the example did not start:\n${logs}`);
  await new Promise((r) => setTimeout(r, 100));
}

/** Sends `data` through the forwarded port and returns what comes back and how long it took. */
function roundtrip(data) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const sock = net.connect(port, host);
    const chunks = [];
    let got = 0;
    sock.on('error', reject);
    sock.on('data', (d) => {
      chunks.push(d);
      got += d.length;
      if (got >= data.length) {
        const secs = (performance.now() - t0) / 1000;
        sock.end();
        resolve({ back: Buffer.concat(chunks), secs });
      }
    });
    sock.on('close', () => {
      if (got < data.length) reject(new Error(`connection closed after ${got} of ${data.length} bytes`));
    });
    sock.write(data);
  });
}

const sha = (b) => createHash('sha256').update(b).digest('hex');

// Three connections at once, a tunnel each.
const small = [1, 2, 3].map((i) => randomBytes(100_000 * i));
const results = await Promise.all(small.map(roundtrip));
results.forEach(({ back }, i) => {
  if (sha(back) !== sha(small[i])) throw new Error(`connection ${i}: SHA-256 differs`);
});

// One big transfer for throughput.
const mib = Number(args.mib);
const big = randomBytes(mib * 1024 * 1024);
const { back, secs } = await roundtrip(big);
if (back.length !== big.length || sha(back) !== sha(big)) throw new Error('big transfer: SHA-256 differs');
const rate = (big.length / 1e6 / secs).toFixed(1);
console.log(`[example-test] throughput in Node: ${mib} MiB sent and echoed back in ${secs.toFixed(2)} s: ${rate} MB/s each way`);

// Every local close became a tunnel close.
for (let i = 0; (logs.match(/: closed/g) ?? []).length < 4; i++) {
  if (i > 100) throw new Error(`the example did not close its tunnels:\n${logs}`);
  await new Promise((r) => setTimeout(r, 100));
}
console.log('[example-test] ok: 4 connections through examples/forward.mjs, SHA-256 both ways');
clearTimeout(timer);
stop();
