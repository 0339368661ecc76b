// Throughput of the wasm client, one direction at a time, in Node and in headless Chromium
// (Debian's /usr/bin/chromium through playwright-core), through a pht-server on 127.0.0.1:
//   down  the bulk target sends N MiB ("send N SEED"), the client reads them
//   up    the client writes N MiB, the bulk target answers their SHA-256 ("recv N")
//   echo  the client writes N MiB to an echo target and reads them back, both at once (the
//         demo page's "Measure"); MB/s each way
// Each run prints MB/s and where the time went on the reading side: how the bytes came
// (chunk sizes handed to the reader) and how long the reader waited in gaps of more than
// 20 ms (the bursts-and-gaps pattern of a stalled flow control).
//
// node speed.mjs [--server BIN] [--mib N] [--runs N] [--where node,chromium]
//                [--v 2,1] [--dir down,up,echo] [--pkg DIR] [--options JSON] [--trace]
// --pkg: the package to measure (default client-wasm/pkg, as scripts/build-wasm.sh makes
// it: DIR/web and DIR/node). --trace: every PHT request's start and answer time, and the
// reader's gaps. --options: more connect() options, e.g. '{"maxPushSize":2097152}'.
// Starts its own target servers (targets.mjs) and pht-server (default
// target/release/pht-server) and stops them at the end. Build the wasm package first
// (scripts/build-wasm.sh).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const { values: args } = parseArgs({
  options: {
    server: { type: 'string', default: join(root, 'target/release/pht-server') },
    mib: { type: 'string', default: '64' },
    runs: { type: 'string', default: '1' },
    where: { type: 'string', default: 'node,chromium' },
    v: { type: 'string', default: '2,1' },
    dir: { type: 'string', default: 'down,up,echo' },
    trace: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    pkg: { type: 'string', default: join(root, 'client-wasm/pkg') },
    options: { type: 'string', default: '{}' },
  },
});
const mib = Number(args.mib);
const lo = '127.0.0.1';
const children = [];
let tmp;
const stopAll = () => {
  for (const c of children) c.kill();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
};
process.on('exit', stopAll);

async function waitFor(what, test, ms = 10_000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const v = await test();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not start`);
}

// Targets and free ports.
tmp = mkdtempSync(join(tmpdir(), 'pht-speed-'));
const portsFile = join(tmp, 'ports.json');
children.push(spawn('node', [join(root, 'client-wasm/tests/js/targets.mjs'), portsFile, '3'],
  { stdio: ['ignore', 'ignore', 'inherit'] }));
const ports = await waitFor('targets.mjs', () =>
  existsSync(portsFile) && JSON.parse(readFileSync(portsFile, 'utf8')));
const [ptun, pfile, pecho] = ports.free;
const server = spawn(args.server, [
  '-L', `forward+pht://${lo}:${ptun}/${lo}:${ports.bulk}?cors=*`,
  '-L', `forward+pht://${lo}:${pecho}/${lo}:${ports.echo}?cors=*`,
  '-L', `file://${lo}:${pfile}?dir=${resolve(args.pkg)}`,
], { stdio: ['ignore', 'ignore', openSync(join(tmp, 'server.log'), 'w')] });
children.push(server);
server.on('exit', (code) => {
  console.error(`pht-server exited (${code}):\n${readFileSync(join(tmp, 'server.log'), 'utf8')}`);
  process.exit(1);
});
const net = await import('node:net');
await waitFor('pht-server', () => {
  const s = net.connect(ptun, lo);
  let ok = false;
  s.on('connect', () => { ok = true; s.destroy(); });
  s.on('error', () => {});
  return new Promise((r) => setTimeout(() => r(ok), 50));
});
const serverUrl = `forward+pht://${lo}:${ptun}`;
const echoUrl = `forward+pht://${lo}:${pecho}`;

/**
 * One transfer, run wherever `connect` is (Node or the page): returns the figures. Kept
 * self-contained: it is sent to the page as source text.
 */
async function transfer(connect, serverUrl, dir, v, total, echoUrl, options) {
  const tunnel = await connect(dir === 'echo' ? echoUrl : serverUrl, { ...options, v });
  const reader = tunnel.readable.getReader();
  const writer = tunnel.writable.getWriter();
  const enc = new TextEncoder();
  const now = () => performance.now();
  const sizes = [];
  let gapMs = 0;
  let gaps = 0;
  let last = null;
  const gapList = [];
  const note = (n) => {
    const t = now();
    if (last !== null && t - last > 20) {
      gapMs += t - last;
      gaps++;
      if (gapList.length < 20) gapList.push(`${(last - t0).toFixed(0)} ms@${got - n} B: ${(t - last).toFixed(0)} ms`);
    }
    last = t;
    sizes.push(n);
  };
  let t0;
  let got = 0;
  let answer = '';
  if (dir === 'down') {
    await writer.write(enc.encode(`send ${total} 7\n`));
    t0 = now();
    last = t0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      got += value.length;
      note(value.length);
    }
    if (got !== total) throw new Error(`got ${got} of ${total} bytes`);
  } else if (dir === 'echo') {
    const chunk = new Uint8Array(64 * 1024);
    t0 = now();
    last = t0;
    const writing = (async () => {
      for (let sent = 0; sent < total; sent += chunk.length) {
        await writer.write(chunk.subarray(0, Math.min(chunk.length, total - sent)));
      }
    })();
    while (got < total) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`the echo ended after ${got} of ${total} bytes`);
      got += value.length;
      note(value.length);
    }
    await writing;
  } else {
    await writer.write(enc.encode(`recv ${total}\n`));
    const chunk = new Uint8Array(64 * 1024);
    const reading = (async () => {
      const dec = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        answer += dec.decode(value, { stream: true });
      }
    })();
    t0 = now();
    for (let sent = 0; sent < total; sent += chunk.length) {
      await writer.write(chunk.subarray(0, Math.min(chunk.length, total - sent)));
    }
    await reading;
    answer = answer.trim();
    if (!/^[0-9a-f]{64}$/.test(answer)) throw new Error(`the target answered ${answer}`);
  }
  const secs = (now() - t0) / 1000;
  await tunnel.close();
  sizes.sort((a, b) => a - b);
  const pick = (q) => sizes[Math.min(sizes.length - 1, Math.floor(q * sizes.length))] ?? 0;
  return {
    version: tunnel.version,
    secs,
    mbps: total / 1e6 / secs,
    answer,
    chunks: sizes.length,
    chunkMedian: pick(0.5),
    chunkP90: pick(0.9),
    gaps,
    gapMs: Math.round(gapMs),
    gapList,
  };
}

/**
 * Wraps the global fetch to note each PHT request: its kind, body size and the times its
 * headers and (POST) answer came (ms since the first). Source text too, for the page.
 */
function installTrace() {
  if (globalThis.__phtTrace) return;
  const trace = [];
  globalThis.__phtTrace = trace;
  const orig = globalThis.fetch;
  globalThis.fetch = async (req, init) => {
    const url = new URL(req.url ?? String(req));
    const kind = url.pathname.slice(1) + (url.searchParams.get('seq') !== null && req.method === 'POST'
      ? `(seq=${url.searchParams.get('seq')} ack=${url.searchParams.get('ack')})` : '');
    const e = { kind, t0: performance.now() };
    trace.push(e);
    const resp = await orig(req, init);
    e.t1 = performance.now();
    if (req.method !== 'GET' || !resp.body) return resp;
    // The pull's body: how the platform cuts it into chunks.
    e.chunks = 0;
    e.bytes = 0;
    const counted = resp.body.pipeThrough(new TransformStream({
      transform(c, ctl) {
        e.chunks++;
        e.bytes += c.length;
        ctl.enqueue(c);
      },
    }));
    return new Response(counted, { status: resp.status, headers: resp.headers });
  };
}

function takeTrace() {
  const t = globalThis.__phtTrace ?? [];
  globalThis.__phtTrace = undefined;
  return t;
}

function printTrace(trace) {
  if (!trace.length) return;
  const base = trace[0].t0;
  for (const e of trace) {
    const body = e.chunks ? `: ${e.bytes} B in ${e.chunks} chunks, ${Math.round(e.bytes / e.chunks)} B each` : '';
    console.log(`  ${(e.t0 - base).toFixed(1).padStart(8)} ms  +${((e.t1 ?? NaN) - e.t0).toFixed(1).padStart(7)} ms  ${e.kind}${body}`);
  }
}

/** The page's main thread: the functions that took the most time themselves. */
function printProfile(profile) {
  const self = new Map();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const dt = profile.timeDeltas;
  let all = 0;
  profile.samples.forEach((id, i) => {
    const n = byId.get(id);
    const f = n.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url.split('/').pop()}:${f.lineNumber}`;
    self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0));
    all += dt[i] ?? 0;
  });
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 25);
  for (const [k, us] of top) console.log(`  ${(us / 1000).toFixed(1).padStart(8)} ms ${(100 * us / all).toFixed(1).padStart(5)}%  ${k}`);
}

const total = mib * 1024 * 1024;
const zeroDigest = (await import('node:crypto')).createHash('sha256').update(Buffer.alloc(total)).digest('hex');
const results = [];
function report(where, dir, v, r) {
  if (dir === 'up' && r.answer !== zeroDigest) throw new Error(`upload digest ${r.answer} is wrong`);
  const line = `${where.padEnd(8)} PHT/${r.version} ${dir.padEnd(4)} ${mib} MiB: ${r.mbps.toFixed(1).padStart(6)} MB/s ` +
    `(${r.secs.toFixed(2)} s; ${r.chunks} chunks read, median ${r.chunkMedian} B, p90 ${r.chunkP90} B; ` +
    `${r.gaps} gaps > 20 ms, ${r.gapMs} ms in all)`;
  console.log(line);
  if (args.trace && r.gapList.length) console.log(`  gaps: ${r.gapList.join(', ')}`);
  results.push({ where, dir, v, ...r });
}

const wheres = args.where.split(',');
const versions = args.v.split(',');
const dirs = args.dir.split(',');
const runs = Number(args.runs);

if (wheres.includes('node')) {
  const require = createRequire(import.meta.url);
  const { connect } = require(join(resolve(args.pkg), 'node/pht_wasm.js'));
  for (let i = 0; i < runs; i++) {
    for (const v of versions) {
      for (const dir of dirs) {
        if (args.trace) installTrace();
        report('node', dir, v, await transfer(connect, serverUrl, dir, v, total, echoUrl, JSON.parse(args.options)));
        if (args.trace) printTrace(takeTrace());
      }
    }
  }
}

if (wheres.includes('chromium')) {
  const { chromium } = await import('playwright-core');
  const { CHROMIUM, CHROMIUM_ARGS } = await import('./chromium.mjs');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...(process.env.SPEED_JS_FLAGS ? [`--js-flags=${process.env.SPEED_JS_FLAGS}`] : []), ...CHROMIUM_ARGS],
  });
  try {
    const page = await browser.newPage();
    const cdp = await page.context().newCDPSession(page);
    page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => console.error(`[page exception] ${e.message}`));
    // Any page of the package's origin will do (this one is a 404: the console says so).
    await page.goto(`http://${lo}:${pfile}/`);
    await page.evaluate(async () => {
      const m = await import('/web/pht_wasm.js');
      await m.default();
      globalThis.phtConnect = m.connect;
    });
    for (let i = 0; i < runs; i++) {
      for (const v of versions) {
        for (const dir of dirs) {
          if (args.trace) await page.evaluate((src) => new Function(`(${src})()`)(), installTrace.toString());
          if (args.profile) {
            await cdp.send('Profiler.enable');
            await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
            await cdp.send('Profiler.start');
          }
          const r = await page.evaluate(
            ([src, url, d, ver, n, e, o]) => {
              const f = new Function(`return (${src})`)();
              return f(globalThis.phtConnect, url, d, ver, n, e, o);
            },
            [transfer.toString(), serverUrl, dir, v, total, echoUrl, JSON.parse(args.options)],
          );
          report('chromium', dir, v, r);
          if (args.profile) printProfile((await cdp.send('Profiler.stop')).profile);
          if (args.trace) {
            printTrace(await page.evaluate((src) => new Function(`return (${src})()`)(), takeTrace.toString()));
          }
        }
      }
    }
  } finally {
    await browser.close();
  }
}
server.removeAllListeners('exit');
process.exit(0);
