// Tunnels from Node through a forward HTTP proxy that denies CONNECT (squid, run by
// scripts/test-wasm.sh): every PHT request goes to the proxy in absolute form, through
// undici's ProxyAgent with `proxyTunnel: false`. The server's name resolves only in the
// proxy, so a tunnel that opens at all went through it.
//
//   1. without a proxy, connect() rejects (the name does not resolve here);
//   2. the `dispatcher` option: N MiB down and N MiB up, a tunnel each, SHA-256 checked,
//      MB/s printed;
//   3. the README's recipes (setGlobalDispatcher), no option: a 1 MiB echo round trip with
//      a ProxyAgent, then with an EnvHttpProxyAgent reading HTTP_PROXY.
//
// node proxy.mjs --proxy http://127.0.0.1:P --bulk URL --echo URL [--mib 64]
import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { EnvHttpProxyAgent, ProxyAgent, setGlobalDispatcher } from 'undici';
import { connect } from 'pht-wasm';
import { bulkDigest, bulkStream } from './bulk.mjs';

const { values: args } = parseArgs({
  options: {
    proxy: { type: 'string' },
    bulk: { type: 'string' },
    echo: { type: 'string' },
    mib: { type: 'string', default: '64' },
  },
});
if (!args.proxy || !args.bulk || !args.echo) throw new Error('--proxy, --bulk and --echo are required');
const bytes = Number(args.mib) * 1024 * 1024;
const log = (msg) => console.log(`[proxy-test] ${msg}`);
const fail = (msg) => {
  console.error(`[proxy-test] FAILED: ${msg}`);
  process.exit(1);
};
const timer = setTimeout(() => fail('timed out'), 240_000);

const enc = new TextEncoder();
const hex = (b) => createHash('sha256').update(b).digest('hex');
const rate = (n, ms) => (n / 1e6 / (ms / 1000)).toFixed(1);

/** Writes `chunks` (an iterable of Uint8Array) and closes the writable. */
async function writeAll(tunnel, chunks) {
  const writer = tunnel.writable.getWriter();
  for (const c of chunks) await writer.write(c);
  await writer.close();
}

/** Reads the readable to its end: SHA-256 and length, and the bytes if `keep`. */
async function readAll(tunnel, keep = false) {
  const h = createHash('sha256');
  const kept = [];
  let n = 0;
  for await (const chunk of tunnel.readable) {
    h.update(chunk);
    n += chunk.length;
    if (keep) kept.push(chunk);
  }
  return { sha: h.digest('hex'), n, bytes: Buffer.concat(kept) };
}

// 1. The name is the proxy's alone.
try {
  await connect(args.bulk);
  fail(`${args.bulk} opened without the proxy: the test proves nothing`);
} catch (e) {
  if (!e.message.startsWith('authorize request failed: ')) fail(`unexpected error: ${e.message}`);
  log(`without a proxy: ${e.message}`);
}

// 2. A dispatcher per tunnel.
const dispatcher = new ProxyAgent({ uri: args.proxy, proxyTunnel: false });

// Download: the bulk target sends `bytes` of a stream this side regenerates.
const down = await (async () => {
  const tunnel = await connect(args.bulk, { dispatcher });
  const t0 = performance.now();
  const writer = tunnel.writable.getWriter();
  await writer.write(enc.encode(`send ${bytes} squid-down\n`));
  writer.releaseLock();
  const got = await readAll(tunnel);
  const ms = performance.now() - t0;
  // PHT/2 half-closes: the target's end ended the readable; this side ends its own.
  await writeAll(tunnel, []);
  await tunnel.closed;
  if (got.n !== bytes) fail(`download: ${got.n} of ${bytes} bytes arrived`);
  if (got.sha !== bulkDigest('squid-down', bytes)) fail('download: SHA-256 differs');
  return ms;
})();
log(`${args.mib} MiB down through the proxy in ${(down / 1000).toFixed(2)} s: ${rate(bytes, down)} MB/s, SHA-256 ok`);

// Upload: the bulk target answers the SHA-256 of what it received, then ends.
const up = await (async () => {
  const tunnel = await connect(args.bulk, { dispatcher });
  const t0 = performance.now();
  const answer = readAll(tunnel, true);
  const writer = tunnel.writable.getWriter();
  await writer.write(enc.encode(`recv ${bytes}\n`));
  for (const chunk of bulkStream('squid-up', bytes)) await writer.write(chunk);
  writer.releaseLock();
  const got = await answer;
  const ms = performance.now() - t0;
  await writeAll(tunnel, []);
  await tunnel.closed;
  const want = `${bulkDigest('squid-up', bytes)}\n`;
  if (got.bytes.toString() !== want) fail(`upload: the target got SHA-256 ${got.bytes.toString().trim()}, sent ${want.trim()}`);
  return ms;
})();
log(`${args.mib} MiB up through the proxy in ${(up / 1000).toFixed(2)} s: ${rate(bytes, up)} MB/s, SHA-256 ok`);

/** A 1 MiB echo round trip through a tunnel to the echo server, with no options. */
async function echo() {
  const tunnel = await connect(args.echo);
  const data = randomBytes(1 << 20);
  const [got] = await Promise.all([
    (async () => {
      const h = createHash('sha256');
      let n = 0;
      const reader = tunnel.readable.getReader();
      while (n < data.length) {
        const { value, done } = await reader.read();
        if (done) fail(`echo: ended after ${n} bytes`);
        h.update(value);
        n += value.length;
      }
      reader.releaseLock();
      return h.digest('hex');
    })(),
    (async () => {
      const writer = tunnel.writable.getWriter();
      await writer.write(data);
      writer.releaseLock();
    })(),
  ]);
  if (got !== hex(data)) fail('echo: SHA-256 differs');
  await writeAll(tunnel, []);
  // The echo's own end follows this side's: the tunnel is over once it has been read.
  if ((await readAll(tunnel)).n !== 0) fail('echo: bytes after the echo');
  await tunnel.closed;
}

// 3. The recipes: one global dispatcher for every fetch in the process.
setGlobalDispatcher(new ProxyAgent({ uri: args.proxy, proxyTunnel: false }));
await echo();
log('1 MiB echoed with setGlobalDispatcher(new ProxyAgent({ uri, proxyTunnel: false })), SHA-256 ok');
process.env.HTTP_PROXY = args.proxy;
setGlobalDispatcher(new EnvHttpProxyAgent({ proxyTunnel: false }));
await echo();
log('1 MiB echoed with setGlobalDispatcher(new EnvHttpProxyAgent({ proxyTunnel: false })) and HTTP_PROXY, SHA-256 ok');
log(`ok: ${args.mib} MiB each way through the proxy: ${rate(bytes, down)} MB/s down, ${rate(bytes, up)} MB/s up`);
clearTimeout(timer);
await dispatcher.close();
process.exit(0);
