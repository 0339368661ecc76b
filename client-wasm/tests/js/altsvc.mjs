// HTTP/3 from the browser (issue 15): what Debian's headless Chromium does with a phts
// listener that serves HTTP/3 on the same port number over UDP (`http3=true`) and
// advertises it with Alt-Svc, when the server's self-made CA is trusted in a throw-away NSS
// database (no certificate error is ignored, QUIC is not disabled).
//
// One pht-server (its HOME in a temporary folder, so it makes its CA there) serves
//   phts://127.0.0.1:P   forward to its echo listener, cors=*, http3=true: HTTP/3 on UDP P
//                        into the same tunnel table, and on every answer
//                        Alt-Svc: h3=":P"; ma=86400 (no altSvc given)
// The test page is https://127.0.0.1:P/altsvc-test/ itself (the document and the web build
// of the client are handed to Chromium by playwright's routing, which is removed once they
// are loaded), so the tunnels' requests are same-origin and the page can read each one's
// PerformanceResourceTiming.nextHopProtocol ('h2', 'h3'); across origins Chromium hides it
// (''), as pht-server sends no Timing-Allow-Origin. DevTools' protocol of every response
// (CDP Network.responseReceived) is noted too; both are checked. Each tunnel echoes --kib
// KiB of random bytes, compared byte for byte. The server's debug log counts
// "h3 connection accepted" and "QUIC handshake failed", and its tunnels: each token opened
// once, closed, never reset; each browser writes a net-log whose QUIC sessions to port P
// and net errors are read.
//
// Browsers, each with a fresh profile (no Alt-Svc remembered between them):
//   as-it-comes  Chromium's defaults. On the first answer's Alt-Svc it opens QUIC to P and
//                ends the handshake itself: "TLS handshake failure ... 46: certificate
//                unknown ... CERTIFICATE_VERIFY_FAILED" (net error ERR_QUIC_PROTOCOL_ERROR),
//                because QUIC takes only certificates that chain to a known public root
//                while TCP accepts the NSS root (the net-log shows the chain verified with
//                is_issued_by_known_root false; Chromium's name for the refusal,
//                ERR_QUIC_CERT_ROOT_NOT_KNOWN, appears nowhere a page or the net-log can
//                see); it marks h3 broken for the origin and every request stays on h2.
//                Checked: all that, and every tunnel intact with Alt-Svc on every answer.
//   split        --origin-to-force-quic-on=127.0.0.1:D, D a port nothing serves: Chromium
//                then allows a locally-installed root for QUIC to that host name (any port),
//                still verifying the chain against the NSS database. P itself is not forced,
//                so only Alt-Svc can bring the page to h3, and the tunnels start at once (no
//                warm-up requests): Chromium moves to h3 in the middle of the first tunnel,
//                whose authorize and pull go over h2 and later pushes over h3 (that tunnel
//                writes its bytes in --chunks pieces, 50 ms apart, so it outlasts the QUIC
//                handshake). The phts listener serves both into one tunnel table, so the
//                tunnel carries on. Checked: every tunnel intact, the first tunnel's requests
//                seen on h2 and on h3, the later tunnels' over h3 only, one h3 connection
//                accepted, every tunnel opened once and closed (none reset, no push refused,
//                no second tunnel of the same token). With two listeners (phts with altSvc,
//                and h3 on the same port) the halves of that tunnel land in separate tables
//                and it fails (the h3 listener answers its pushes 410) or stalls.
//   forced       --origin-to-force-quic-on=127.0.0.1:P: QUIC from the first request, no
//                Alt-Svc needed. Checked: every request over h3, one h3 connection accepted.
//   forced-untrusted  as forced, the CA not in the NSS database: the tunnel is refused.
// If Chromium ever takes h3 in `as-it-comes`, the test checks that instead (tunnels intact,
// the server accepted an h3 connection) and says so.
//
// node altsvc.mjs [--server BIN] [--pkg DIR] [--tunnels N] [--kib N] [--chunks N] [--keep DIR]
//   --pkg: the web build (client-wasm/pkg/web); --keep: copy the server log and net-logs.
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS } from './chromium.mjs';
import { parseArgs } from 'node:util';
import { spawn, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const { values: args } = parseArgs({
  options: {
    server: { type: 'string', default: join(root, 'target/debug/pht-server') },
    pkg: { type: 'string', default: join(root, 'client-wasm/pkg/web') },
    tunnels: { type: 'string', default: '5' },
    kib: { type: 'string', default: '512' },
    chunks: { type: 'string', default: '16' },
    keep: { type: 'string' },
  },
});
const tunnels = Number(args.tunnels);
const kib = Number(args.kib);
const chunks = Number(args.chunks);
const lo = '127.0.0.1';
const t0 = Date.now();
const step = (msg) => console.error(`[altsvc-test ${((Date.now() - t0) / 1000).toFixed(1)} s] ${msg}`);
const check = (ok, what) => {
  if (!ok) throw new Error(what);
};

const tmp = mkdtempSync(join(tmpdir(), 'pht-altsvc-'));
let server;
process.on('exit', () => {
  server?.removeAllListeners('exit');
  server?.kill();
  if (args.keep) {
    mkdirSync(args.keep, { recursive: true });
    for (const f of readdirSync(tmp)) {
      if (f === 'server.log' || f.startsWith('netlog-')) cpSync(join(tmp, f), join(args.keep, f));
    }
  }
  rmSync(tmp, { recursive: true, force: true });
});

/** A port free on TCP and, when `udp`, on UDP too (the phts listener takes both). */
async function freePort(udp) {
  for (let i = 0; i < 50; i++) {
    const tcp = createServer();
    const port = await new Promise((ok, err) => {
      tcp.once('error', err);
      tcp.listen(0, lo, () => ok(tcp.address().port));
    });
    let free = true;
    if (udp) {
      const u = createSocket('udp4');
      free = await new Promise((ok) => {
        u.once('error', () => ok(false));
        u.bind(port, lo, () => ok(true));
      });
      u.close();
    }
    await new Promise((ok) => tcp.close(ok));
    if (free) return port;
  }
  throw new Error('no free port');
}

const tunPort = await freePort(true);
const echoPort = await freePort(false);
const sparePort = await freePort(true);
const origin = `https://${lo}:${tunPort}`;

// The page's files, read now (a rebuild running meanwhile cannot change them under us).
const files = {
  '/altsvc-test/': ['text/html', Buffer.from(
    '<!doctype html><meta charset="utf-8"><title>pht altsvc test</title><body>HTTP/3 test page</body>\n')],
  '/altsvc-test/pht_wasm.js': ['text/javascript', readFileSync(join(args.pkg, 'pht_wasm.js'))],
  '/altsvc-test/pht_wasm_bg.wasm': ['application/wasm', readFileSync(join(args.pkg, 'pht_wasm_bg.wasm'))],
};

const serverHome = join(tmp, 'server-home');
mkdirSync(serverHome);
const serverLog = join(tmp, 'server.log');
server = spawn(args.server, [
  '-D',
  '-L', `forward+phts://${lo}:${tunPort}/${lo}:${echoPort}?cors=*&http3=true`,
  '-L', `echo://${lo}:${echoPort}`,
], { stdio: ['ignore', 'ignore', openSync(serverLog, 'w')], env: { ...process.env, HOME: serverHome } });
server.on('exit', (code) => {
  console.error(`pht-server exited (${code}):\n${readFileSync(serverLog, 'utf8')}`);
  process.exit(1);
});
const log = () => readFileSync(serverLog, 'utf8');
const count = (what) => log().split('\n').filter((l) => l.includes(what)).length;
for (let i = 0; ; i++) {
  const l = log();
  if ([`${tunPort}/phts`, `${echoPort}/tcp`].every((s) => l.includes(`listening on ${lo}:${s}`)) &&
    l.includes(`HTTP/3 on udp ${lo}:${tunPort}, with the same tunnels`)) break;
  if (i > 100) throw new Error(`pht-server did not start:\n${l}`);
  await new Promise((r) => setTimeout(r, 100));
}

// The browser trusts the server's CA through an NSS database in its HOME, as page.mjs.
const ca = join(serverHome, '.gost/auto-ca-cert.pem');
check(existsSync(ca), `the server made no CA at ${ca}`);
function browserHome(name, trusted) {
  const home = join(tmp, `home-${name}`);
  const db = join(home, '.pki/nssdb');
  mkdirSync(db, { recursive: true });
  execFileSync('certutil', ['-N', '-d', `sql:${db}`, '--empty-password']);
  if (trusted) execFileSync('certutil', ['-A', '-d', `sql:${db}`, '-n', 'pht-server test CA', '-t', 'C,,', '-i', ca]);
  return home;
}

const launch = (name, extra, trusted = true) => chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // page.mjs's flags (without --disable-quic: QUIC is on by default), and a net-log.
  args: [
    ...CHROMIUM_ARGS,
    '--password-store=basic',
    `--log-net-log=${join(tmp, `netlog-${name}.json`)}`,
    ...extra,
  ],
  env: { ...process.env, HOME: browserHome(name, trusted) },
  timeout: 60_000,
});

/**
 * In the page: one tunnel echoing `n` random bytes, compared; the protocols of its
 * requests (nextHopProtocol) and how long the echo took. The bytes are written in `pieces`
 * writes, 50 ms apart. Gives up after `ms` (the tunnel is closed then).
 */
async function pageTunnel([server, n, ms, pieces]) {
  const { connect } = globalThis.__pht;
  performance.clearResourceTimings();
  const sent = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(sent.subarray(i, Math.min(n, i + 65536)));
  const got = new Uint8Array(n);
  let len = 0;
  let tunnel;
  let version;
  let error;
  const start = performance.now();
  let took;
  const work = (async () => {
    tunnel = await connect(server, { connector: 'forward' });
    version = tunnel.version;
    const writer = tunnel.writable.getWriter();
    const reader = tunnel.readable.getReader();
    const writing = (async () => {
      const size = Math.ceil(n / pieces);
      for (let i = 0; i < n; i += size) {
        if (i > 0) await new Promise((r) => setTimeout(r, 50));
        await writer.write(sent.subarray(i, Math.min(n, i + size)));
      }
    })();
    while (len < n) {
      const { done, value } = await reader.read();
      if (done) break;
      if (len + value.length > n) throw new Error(`the echo sent more than the ${n} bytes sent`);
      got.set(value, len);
      len += value.length;
    }
    await writing;
    took = Math.round(performance.now() - start);
  })();
  let timer;
  const timeout = new Promise((_, fail) => {
    timer = setTimeout(() => fail(new Error(`no echo after ${ms} ms (${len} of ${n} bytes back)`)), ms);
  });
  try {
    await Promise.race([work, timeout]);
  } catch (e) {
    error = String(e.message ?? e);
  }
  clearTimeout(timer);
  await tunnel?.close();
  let intact = len === n;
  for (let i = 0; intact && i < n; i++) intact = got[i] === sent[i];
  // A pull's entry is made when its response ends: wait a little for it.
  await new Promise((r) => setTimeout(r, 300));
  const hops = {};
  for (const e of performance.getEntriesByType('resource')) {
    if (!e.name.startsWith(server)) continue;
    hops[e.nextHopProtocol || '(hidden)'] = (hops[e.nextHopProtocol || '(hidden)'] ?? 0) + 1;
  }
  return { echoed: len, intact, version, hops, error, took };
}

/** A fresh browser on the test page: the tunnels, and what each one went over. */
async function session(name, extra, { pace = false } = {}) {
  const accepted0 = count('h3 connection accepted');
  const failed0 = count('QUIC handshake failed');
  const log0 = log().length;
  const browser = await launch(name, extra);
  const out = { name, runs: [] };
  try {
    const page = await browser.newPage();
    page.on('console', (m) => {
      if (!m.text().includes('404')) console.error(`[${name} page ${m.type()}] ${m.text()}`);
    });
    const responses = [];
    const urls = new Map();
    // Every request in the order sent, with the protocol of its answer.
    const sent = [];
    const failed = [];
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    cdp.on('Network.requestWillBeSent', ({ requestId, request }) => {
      urls.set(requestId, request.url);
      sent.push({ requestId, url: request.url });
    });
    cdp.on('Network.responseReceived', ({ requestId, response }) => {
      const altSvc = Object.entries(response.headers).find(([k]) => k.toLowerCase() === 'alt-svc')?.[1];
      responses.push({ url: response.url, protocol: response.protocol, altSvc });
      for (const x of sent) if (x.requestId === requestId) x.protocol = response.protocol;
    });
    cdp.on('Network.loadingFailed', ({ requestId, errorText, canceled }) => {
      if (!canceled) failed.push(`${urls.get(requestId)}: ${errorText}`);
    });
    // The page and the client, from playwright; then no more routing.
    const served = [];
    await page.route(`${origin}/altsvc-test/**`, (route) => {
      const path = new URL(route.request().url()).pathname;
      const f = files[path];
      if (!f) return route.continue();
      served.push(path);
      return route.fulfill({ status: 200, contentType: f[0], body: f[1] });
    });
    await page.goto(`${origin}/altsvc-test/`, { timeout: 30_000 });
    await page.evaluate(async () => {
      const mod = await import('./pht_wasm.js');
      await mod.default();
      globalThis.__pht = mod;
    });
    await page.unrouteAll();
    check(served.length === 3, `the page's files: ${JSON.stringify(served)}`);
    responses.length = 0;
    const wantAltSvc = `h3=":${tunPort}"; ma=86400`;
    for (let i = 0; i < tunnels; i++) {
      const from = responses.length;
      const sentFrom = sent.length;
      const r = await page.evaluate(pageTunnel, [origin, kib * 1024, 20_000, pace && i === 0 ? chunks : 1]);
      const mine = responses.slice(from).filter((x) => x.url.startsWith(origin));
      const protocols = {};
      for (const x of mine) protocols[x.protocol] = (protocols[x.protocol] ?? 0) + 1;
      const order = sequence(sent.slice(sentFrom).filter((x) => x.url.startsWith(origin)));
      const run = { ...r, protocols, order, requests: mine.length, altSvc: mine.every((x) => x.protocol !== 'h2' || x.altSvc === wantAltSvc) };
      out.runs.push(run);
      step(`${name}: tunnel ${i + 1}: ${r.echoed} bytes echoed${r.intact ? ' intact' : ' NOT INTACT'}, PHT/${r.version}` +
        `${r.error ? ` (${r.error})` : ` in ${r.took} ms`}; nextHopProtocol ${JSON.stringify(r.hops)}, DevTools ${JSON.stringify(protocols)}; ` +
        `Alt-Svc on every h2 answer: ${run.altSvc}; requests in order: ${order}`);
      await new Promise((res) => setTimeout(res, 300));
    }
    for (const f of failed) step(`${name}: request failed: ${f}`);
    await page.close();
  } finally {
    await browser.close();
  }
  out.accepted = count('h3 connection accepted') - accepted0;
  out.refused = count('QUIC handshake failed') - failed0;
  out.server = await serverTunnels(log0);
  step(`${name}: the server's tunnels: ${out.server.opened} opened (${out.server.tokens} tokens), ` +
    `${out.server.closed} closed, ${out.server.reset} reset, ${out.server.refused} pushes refused`);
  Object.assign(out, netLog(join(tmp, `netlog-${name}.json`), tunPort));
  step(`${name}: the server accepted ${out.accepted} h3 connection(s), ${out.refused} QUIC handshake(s) failed; ` +
    `Chromium's net-log: QUIC sessions to port ${tunPort}: ` +
    `${out.quic.length ? out.quic.map((q) => `[${q}]`).join(', ') : 'none'}; h3 marked broken: ${out.broken}; ` +
    `net errors ${JSON.stringify(out.errors)}`);
  return out;
}

/**
 * QUIC forced to P in a browser that does not trust the CA: the flag lifts only the
 * public-root rule, the certificate is still verified, so the tunnel must be refused.
 */
async function untrusted() {
  const name = 'forced-untrusted';
  const accepted0 = count('h3 connection accepted');
  const failed0 = count('QUIC handshake failed');
  const browser = await launch(name, [`--origin-to-force-quic-on=${lo}:${tunPort}`], false);
  let answer;
  try {
    const page = await browser.newPage();
    await page.route(`${origin}/altsvc-test/**`, (route) => {
      const f = files[new URL(route.request().url()).pathname];
      return f ? route.fulfill({ status: 200, contentType: f[0], body: f[1] }) : route.continue();
    });
    await page.goto(`${origin}/altsvc-test/`, { timeout: 30_000 });
    answer = await page.evaluate(async (server) => {
      const mod = await import('./pht_wasm.js');
      await mod.default();
      try {
        const t = await mod.connect(server, { connector: 'forward' });
        await t.close();
        return 'opened';
      } catch (e) {
        return `refused: ${e.message ?? e}`;
      }
    }, origin);
  } finally {
    await browser.close();
  }
  const { quic, errors } = netLog(join(tmp, `netlog-${name}.json`), tunPort);
  const out = { answer, quic, errors, accepted: count('h3 connection accepted') - accepted0, refused: count('QUIC handshake failed') - failed0 };
  step(`${name}: the tunnel: ${answer}; the server accepted ${out.accepted} h3 connection(s), ${out.refused} QUIC ` +
    `handshake(s) failed; QUIC sessions: ${quic.map((q) => `[${q}]`).join(', ') || 'none'}; net errors ${JSON.stringify(errors)}`);
  return out;
}

/** Requests in order as `authorize h2, push h3 ×2, ...` (path's last part, then protocol). */
function sequence(reqs) {
  const parts = [];
  for (const x of reqs) {
    const what = `${new URL(x.url).pathname.split('/').at(-1)} ${x.protocol ?? '(no answer)'}`;
    const last = parts.at(-1);
    if (last?.what === what) last.n++;
    else parts.push({ what, n: 1 });
  }
  return parts.map((p) => (p.n > 1 ? `${p.what} ×${p.n}` : p.what)).join(', ');
}

/**
 * The server's debug log from offset `from`: tunnels opened (and how many tokens: each
 * token must open one tunnel, whichever side its requests came in by), closed, reset, and
 * pushes refused. Waits up to 3 s for every opened tunnel to be closed.
 */
async function serverTunnels(from) {
  for (let i = 0; ; i++) {
    const lines = log().slice(from).split('\n');
    const opened = lines.filter((l) => / DEBUG tunnel opened service=/.test(l));
    const tokens = new Set(opened.map((l) => l.match(/ token="?([^" ]+)/)?.[1]));
    const n = (re) => lines.filter((l) => re.test(l)).length;
    const out = {
      opened: opened.length,
      tokens: tokens.size,
      closed: n(/ DEBUG tunnel closed service=/),
      reset: n(/ DEBUG (.*: )?tunnel reset service=/),
      refused: n(/ push refused/),
    };
    if (out.closed >= out.opened || i >= 30) return out;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every tunnel of the session opened once (one per token), closed, none reset. */
const tidy = (s, want) => s.server.opened === want && s.server.tokens === want && s.server.closed === want &&
  s.server.reset === 0 && s.server.refused === 0;

/**
 * A net-log's QUIC sessions to 127.0.0.1:`port` (how each ended), whether Chromium marked
 * that origin's Alt-Svc broken, and its net errors by name (how often each was logged).
 */
function netLog(file, port) {
  const text = readFileSync(file, 'utf8').trim();
  let j;
  try {
    j = JSON.parse(text);
  } catch {
    // Chromium may stop before it closes the JSON.
    j = JSON.parse(`${text.replace(/,\s*$/, '')}]}`);
  }
  const errName = Object.fromEntries(Object.entries(j.constants.netError).map(([k, v]) => [v, k]));
  const type = Object.fromEntries(Object.entries(j.constants.logEventTypes).map(([k, v]) => [v, k]));
  const errors = {};
  const sessions = new Map();
  let broken = false;
  for (const e of j.events) {
    const p = e.params ?? {};
    const t = type[e.type];
    if (typeof p.net_error === 'number' && p.net_error < 0) {
      const n = errName[p.net_error] ?? String(p.net_error);
      errors[n] = (errors[n] ?? 0) + 1;
    }
    if (t === 'QUIC_SESSION' && p.host === lo && p.port === port) sessions.set(e.source.id, 'open');
    if (t === 'QUIC_SESSION_CLOSED' && sessions.get(e.source.id) === 'open') {
      sessions.set(e.source.id, `closed by ${p.from_peer ? 'the server' : 'Chromium'}: ${p.details} (quic_error ${p.quic_error})`);
    }
    if (t === 'HTTP_STREAM_JOB_CONTROLLER_ALT_SVC_FOUND' && p.is_broken && String(p.alt_svc).includes(`${lo}:${port}`)) broken = true;
  }
  return { errors, quic: [...sessions.values()], broken };
}

const intact = (s) => s.runs.length === tunnels &&
  s.runs.every((r) => !r.error && r.intact && r.echoed === kib * 1024 && r.version === 2);
/** Every request of the run went over `p`, as the page and DevTools both saw it. */
const only = (r, p) => r.requests > 0 && r.protocols[p] === r.requests && Object.keys(r.protocols).length === 1 &&
  r.hops[p] === r.requests && Object.keys(r.hops).length === 1;
const protocolsOf = (s) => s.runs.map((r, i) => `#${i + 1} ${Object.keys(r.hops).join('+')}`).join(', ');
const failures = [];
const summary = [];

try {
  // 1. Chromium as it comes.
  const a = await session('as-it-comes', []);
  check(intact(a), `as-it-comes: a tunnel failed or its bytes did not come back intact: ${JSON.stringify(a.runs)}`);
  check(a.runs.every((r) => r.altSvc), `as-it-comes: an h2 answer came without Alt-Svc: ${JSON.stringify(a.runs)}`);
  check(tidy(a, tunnels), `as-it-comes: the server's tunnels: ${JSON.stringify(a.server)}`);
  if (a.runs.some((r) => r.hops.h3 || r.protocols.h3)) {
    check(a.accepted > 0, 'as-it-comes: h3 seen in the page, but the server accepted no h3 connection');
    summary.push(`Chromium as it comes moved to h3 after Alt-Svc with the NSS-trusted root: ${protocolsOf(a)}`);
  } else {
    check(a.runs.every((r) => only(r, 'h2')), `as-it-comes: ${JSON.stringify(a.runs)}`);
    check(a.accepted === 0, `as-it-comes: the server accepted ${a.accepted} h3 connections, every request went over h2`);
    // It did try, once, and ended the handshake itself over the certificate.
    check(a.quic.length > 0 && a.quic.every((q) => /^closed by Chromium: .*CERTIFICATE_VERIFY_FAILED/.test(q)),
      `as-it-comes: Chromium stayed on h2, but not after refusing the certificate on QUIC: ${JSON.stringify(a.quic)}`);
    check(a.errors.ERR_QUIC_PROTOCOL_ERROR > 0 && a.broken && a.refused > 0,
      `as-it-comes: no ERR_QUIC_PROTOCOL_ERROR, h3 not marked broken, or no failed handshake in the server's log: ` +
      `${JSON.stringify(a.errors)}, ${a.broken}, ${a.refused}`);
    summary.push(`Chromium as it comes: every request over h2 (${protocolsOf(a)}), Alt-Svc on every answer; ` +
      `${a.quic.length} QUIC handshake(s) to the h3 port, ended by Chromium (certificate unknown, ` +
      `CERTIFICATE_VERIFY_FAILED; ERR_QUIC_PROTOCOL_ERROR), h3 marked broken, 0 h3 connections accepted`);
  }

  // 2. The local root allowed for QUIC to 127.0.0.1, no warm-up: Alt-Svc acted on in the
  // middle of the first tunnel, whose requests then reach both sides of the listener.
  const d = await session('split', [`--origin-to-force-quic-on=${lo}:${sparePort}`], { pace: true });
  const first = d.runs[0];
  check(intact(d), `split: a tunnel failed when Chromium moved to h3 in its middle: ${protocolsOf(d)}; ` +
    `${d.runs.filter((r) => r.error).map((r) => r.error).join('; ')}`);
  check(first.protocols.h2 > 0 && first.protocols.h3 > 0 && first.hops.h2 > 0 && first.hops.h3 > 0,
    `split: the first tunnel's requests were not seen on both h2 and h3: ${JSON.stringify(first)}`);
  check(first.order.startsWith('authorize h2') && / push h3/.test(first.order),
    `split: the first tunnel did not start on h2 and push over h3: ${first.order}`);
  check(d.runs.slice(1).every((r) => only(r, 'h3')), `split: a later tunnel's requests not all over h3: ${JSON.stringify(d.runs)}`);
  check(d.runs.every((r) => r.altSvc), `split: an h2 answer came without Alt-Svc: ${JSON.stringify(d.runs)}`);
  check(d.accepted === 1 && d.refused === 0,
    `split: the server accepted ${d.accepted} h3 connection(s) and ${d.refused} QUIC handshake(s) failed; want 1 and 0`);
  check(tidy(d, tunnels), `split: the server's tunnels (want ${tunnels} opened, one per token, all closed, none reset, ` +
    `no push refused): ${JSON.stringify(d.server)}`);
  summary.push(`local root allowed for QUIC (--origin-to-force-quic-on=${lo}:<another port>), no warm-up: Chromium ` +
    `moved to h3 in the middle of the first tunnel (${first.order}; ${first.took} ms), every tunnel intact ` +
    `(${protocolsOf(d)}), 1 h3 connection accepted, ${tunnels} tunnels opened and closed, none reset`);

  // 3. QUIC forced to P.
  const c = await session('forced', [`--origin-to-force-quic-on=${lo}:${tunPort}`]);
  check(intact(c), `forced: a tunnel failed or its bytes did not come back intact: ${JSON.stringify(c.runs)}`);
  check(c.runs.every((r) => only(r, 'h3')), `forced: not every request went over h3: ${JSON.stringify(c.runs)}`);
  check(c.accepted === 1, `forced: the server accepted ${c.accepted} h3 connections; want 1`);
  check(tidy(c, tunnels), `forced: the server's tunnels: ${JSON.stringify(c.server)}`);
  summary.push(`QUIC forced to the tunnels' origin: every request over h3 (${protocolsOf(c)}), ${c.accepted} h3 connection accepted`);

  // 4. The same without the CA trusted: refused (the flag is no certificate override).
  const u = await untrusted();
  check(u.answer?.startsWith('refused: ') && u.accepted === 0 && u.refused > 0 &&
    u.quic.length > 0 && u.quic.every((q) => /^closed by Chromium: .*CERTIFICATE_VERIFY_FAILED/.test(q)),
  `forced-untrusted: ${JSON.stringify(u)}`);
  summary.push(`QUIC forced, CA not trusted: the tunnel refused (${u.answer}), the QUIC handshake ended by Chromium ` +
    `(CERTIFICATE_VERIFY_FAILED), 0 h3 connections accepted`);
} catch (e) {
  failures.push(e.message);
}

for (const s of summary) console.log(`[altsvc-test] ${s}`);
if (failures.length) {
  for (const f of failures) console.error(`[altsvc-test] FAILED: ${f}`);
  process.exit(1);
}
console.log('[altsvc-test] ok');
// The server is a child process: it would keep Node running.
process.exit(0);
