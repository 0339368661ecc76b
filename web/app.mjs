// The demo page: opens PHT tunnels with the pht-wasm package (web build, copied to ./pkg by
// scripts/build-wasm.sh), shows what comes back, and shows every tunnel live (live.mjs).
import init, { connect } from './pkg/pht_wasm.js';
import { Live } from './live.mjs';

const $ = (id) => document.getElementById(id);
const FIELDS = ['server', 'connector', 'target', 'username', 'password', 'token', 'v', 'echo', 'mib'];

function log(msg, isError = false) {
  const line = document.createElement('div');
  line.textContent = `${new Date().toISOString().slice(11, 23)}  ${msg}`;
  if (isError) line.className = 'error';
  $('log').append(line);
  $('log').scrollTop = $('log').scrollHeight;
  (isError ? console.error : console.log)(`[pht] ${msg}`);
}

const live = new Live({
  canvas: $('plot'),
  tbody: document.querySelector('#tunnels tbody'),
  rateDown: $('rate-down'),
  rateUp: $('rate-up'),
  peak: $('peak'),
  openCount: $('open-count'),
  log,
});

// What scripts/run.sh serves with no arguments (its list is scripts/demo-args.sh): these
// defaults make every control work there. `?ports=name:port,...` moves them (the page test
// runs the same list on free ports).
const ports = { pht: 8443, phts: 8444, relay: 8445, forward: 8446, echo: 7007 };
const params = new URLSearchParams(location.search);
for (const item of (params.get('ports') ?? '').split(',').filter(Boolean)) {
  const [name, port] = item.split(':');
  if (name in ports && /^\d{1,5}$/.test(port ?? '')) ports[name] = Number(port);
  else log(`?ports=: "${item}" is not one of ${Object.keys(ports).map((k) => `${k}:<port>`).join(', ')}`, true);
}
const host = location.hostname || '127.0.0.1';
const ENDPOINTS = [
  { url: `http://${host}:${ports.pht}`, connectors: ['http', 'socks5'],
    what: "scripts/run.sh's auto handler (HTTP and SOCKS proxy) over PHT" },
  { url: `https://${host}:${ports.phts}`, connectors: ['http', 'socks5'],
    what: "scripts/run.sh's auto handler over PHTS: TLS, and HTTP/2 for every tunnel at once. " +
      "The browser must trust the server's self-made CA first (README: \"The demo page over phts\")" },
  { url: `http://${host}:${ports.relay}`, connectors: ['relay'], what: "scripts/run.sh's relay handler over PHT" },
  { url: `http://${host}:${ports.forward}`, connectors: ['forward'],
    what: `scripts/run.sh's forward handler over PHT: every tunnel goes to the echo target 127.0.0.1:${ports.echo}` },
];
for (const e of ENDPOINTS) {
  const o = document.createElement('option');
  o.value = e.url;
  o.label = e.what;
  $('servers').append(o);
}
const endpointOf = (url) => ENDPOINTS.find((e) => e.url === url.trim());

for (const f of FIELDS) {
  if (params.has(f)) $(f).value = params.get(f);
}
$('settings').addEventListener('submit', (e) => e.preventDefault());
if (!$('server').value) $('server').value = ENDPOINTS[0].url;
if (!$('target').value) $('target').value = location.host || '127.0.0.1:8080';
if (!$('echo').value) $('echo').value = `127.0.0.1:${ports.echo}`;

/** The fields that mean something for the connector, and a word on the server in use. */
function settingsChanged() {
  const forward = $('connector').value === 'forward';
  for (const id of ['target', 'echo']) {
    $(id).disabled = forward;
    $(id).title = forward ? "the forward connector goes to the server's fixed target" : '';
  }
  $('server-hint').textContent = endpointOf($('server').value)?.what ?? '';
}
// A scripts/run.sh endpoint that does not serve the chosen connector gives way to one that
// does; a server URL typed in stays.
$('connector').addEventListener('change', () => {
  const c = $('connector').value;
  const current = endpointOf($('server').value);
  if (current && !current.connectors.includes(c)) {
    const next = ENDPOINTS.find((e) => e.connectors.includes(c));
    $('server').value = next.url;
    log(`server: ${next.url} (${next.what})`);
  }
  settingsChanged();
});
$('server').addEventListener('input', settingsChanged);
settingsChanged();

function options(target) {
  const o = { connector: $('connector').value, token: $('token').value, v: $('v').value };
  if (target && o.connector !== 'forward') o.target = target;
  if ($('username').value) {
    o.username = $('username').value;
    o.password = $('password').value;
  }
  return o;
}

/** Browsers say only "Failed to fetch" when they reject a server's certificate. */
function explain(message, server) {
  if (/^([a-z0-9]+\+)?(https|phts):/i.test(server) && /Failed to fetch/.test(message)) {
    return `${message} — for an https/phts server this is also how the browser refuses a certificate ` +
      'it does not trust: trust the server\'s CA (README: "The demo page over phts") and reload';
  }
  return message;
}

/** Opens a tunnel, with its row in the live table; rejects with the reason. */
async function open(target) {
  const server = $('server').value.trim();
  const o = options(target);
  const label = `${server} → ${o.connector === 'forward' ? "the server's target" : `${o.connector} ${o.target ?? ''}`}`;
  const rec = live.add(label);
  log(`tunnel #${rec.id}: connecting to ${server} (${o.connector}${o.target ? ` → ${o.target}` : ''}, token ${o.token}, PHT ${o.v})`);
  const t0 = performance.now();
  let tunnel;
  try {
    tunnel = await connect(server, o);
  } catch (e) {
    const msg = explain(e?.message ?? String(e), server);
    rec.failedToOpen(msg);
    throw new Error(`could not open the tunnel: ${msg}`);
  }
  rec.attach(tunnel);
  log(`tunnel #${rec.id}: open in ${(performance.now() - t0).toFixed(0)} ms, PHT/${tunnel.version}`);
  return rec;
}

function hostOf(url) {
  try {
    return new URL(url).hostname || 'localhost';
  } catch {
    return 'localhost';
  }
}

/** Runs `job` with `button` disabled; its error goes to `out`, in plain words, and the log. */
function action(button, out, job) {
  $(button).addEventListener('click', async () => {
    $(button).disabled = true;
    $(out).classList.remove('error');
    $(out).textContent = '…';
    try {
      await job();
    } catch (e) {
      const msg = e?.message ?? String(e);
      $(out).textContent = msg;
      $(out).classList.add('error');
      log(msg, true);
    } finally {
      $(button).disabled = false;
    }
  });
}

action('open', 'response', async () => {
  const target = $('target').value.trim();
  const rec = await open(target);
  const { tunnel } = rec;
  try {
    const host = $('connector').value === 'forward' ? hostOf($('server').value.trim()) : target;
    const request = `GET / HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: pht-wasm-demo\r\nConnection: close\r\n\r\n`;
    const writer = tunnel.writable.getWriter();
    try {
      await writer.write(new TextEncoder().encode(request));
    } catch (e) {
      throw new Error(`the tunnel broke while sending the request: ${e.message}`);
    }
    writer.releaseLock();
    log(`tunnel #${rec.id}: sent ${request.length} bytes: GET / HTTP/1.1`);

    // Until the target closes (Connection: close), or has sent the request back (an
    // echo: it would never close), or 15 s have passed.
    const reader = tunnel.readable.getReader();
    const decoder = new TextDecoder();
    let text = '';
    let bytes = 0;
    let note = '';
    const deadline = setTimeout(() => {
      note = '(no end from the target within 15 s: closed the tunnel)';
      rec.close();
    }, 15000);
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (e) {
          throw new Error(`the tunnel broke after ${bytes} bytes of the answer: ${e.message}` +
            (text ? `\n\nwhat arrived:\n${text}` : ''));
        }
        if (chunk.done) break;
        bytes += chunk.value.length;
        rec.received(bytes);
        // An answer means the target had the request.
        rec.taken(request.length);
        text += decoder.decode(chunk.value, { stream: true });
        $('response').textContent = text;
        if (text === request) {
          note = '(the target sent the request back: an echo)';
          break;
        }
      }
    } finally {
      clearTimeout(deadline);
    }
    text += decoder.decode();
    $('response').textContent = `${text || '(no answer)'}${note ? `\n${note}` : ''}`;
    log(`tunnel #${rec.id}: received ${bytes} bytes ${note}`);
  } finally {
    await rec.close();
  }
});

action('measure', 'throughput', async () => {
  const mib = Math.max(1, Math.min(1024, Number($('mib').value) || 16));
  const total = mib * 1024 * 1024;
  const target = $('echo').value.trim() || $('target').value.trim();
  const rec = await open(target);
  const { tunnel } = rec;
  try {
    const pattern = new Uint8Array(64 * 1024);
    crypto.getRandomValues(pattern);
    let got = 0;
    let elapsed = 0;
    const t0 = performance.now();
    const ticker = setInterval(() => {
      $('throughput').textContent = `… ${(got / 1048576).toFixed(1)} of ${mib} MiB back`;
    }, 250);
    const reader = tunnel.readable.getReader();
    const writer = tunnel.writable.getWriter();
    const allBack = (async () => {
      while (got < total) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (e) {
          throw new Error(`the tunnel broke after ${got} of ${total} bytes came back: ${e.message}`);
        }
        if (chunk.done) {
          throw new Error(`the tunnel ended after ${got} of ${total} bytes came back` +
            (tunnel.progress === null ? ' (it was closed)' : ''));
        }
        const { value } = chunk;
        for (let i = 0; i < value.length; i++) {
          if (value[i] !== pattern[(got + i) % pattern.length]) {
            throw new Error(`byte ${got + i} differs: the target is not an echo`);
          }
        }
        got += value.length;
        rec.received(got);
      }
    })();
    // A reader that gave up reads no more, so the echo stops reading and the writer would
    // wait for ever: closing the tunnel ends its pending write.
    allBack.catch(() => rec.close());
    // Once everything is back, the writer ends: its close() resolves when the server has
    // every byte (the row's counts are final then). On PHT/2 that is a half-close: the echo
    // ends its side in turn and the tunnel ends in order; PHT/1 ends the tunnel at once.
    const writing = (async () => {
      for (let sent = 0; sent < total; sent += pattern.length) {
        await writer.write(pattern.subarray(0, Math.min(pattern.length, total - sent)));
      }
      await allBack;
      elapsed = (performance.now() - t0) / 1000;
      rec.refresh();
      await writer.close();
      rec.taken(total);
    })();
    const reading = (async () => {
      await allBack;
      if (tunnel.version !== 2) return;
      let end;
      try {
        end = await reader.read();
      } catch (e) {
        throw new Error(`the tunnel broke after all ${total} bytes came back, before the echo ended: ${e.message}`);
      }
      if (!end.done) throw new Error(`the echo sent ${end.value.length} bytes more than it was sent`);
    })();
    const [w, r] = await Promise.allSettled([writing, reading]).finally(() => clearInterval(ticker));
    // The reader's account of a failure says the most; the writer only knows its write failed.
    if (r.status === 'rejected') throw r.reason;
    if (w.status === 'rejected') throw new Error(`writing to the tunnel failed: ${w.reason?.message ?? w.reason}`);
    const secs = elapsed;
    const rate = total / 1e6 / secs;
    const result = `${mib} MiB sent and echoed back in ${secs.toFixed(2)} s: ${rate.toFixed(1)} MB/s each way ` +
      `(tunnel #${rec.id}, PHT/${tunnel.version})`;
    $('throughput').textContent = result;
    log(result);
  } finally {
    await rec.close();
  }
});

try {
  await init();
  log('pht-wasm loaded');
  document.body.dataset.ready = 'true';
} catch (e) {
  log(`could not load pht-wasm: ${e.message}`, true);
}
