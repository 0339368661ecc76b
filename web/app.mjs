// The demo page: opens PHT tunnels with the pht-wasm package (web build, copied to ./pkg by
// scripts/build-wasm.sh) and shows what comes back.
import init, { connect } from './pkg/pht_wasm.js';

const $ = (id) => document.getElementById(id);
const FIELDS = ['server', 'connector', 'target', 'username', 'password', 'token', 'echo', 'mib'];

const params = new URLSearchParams(location.search);
for (const f of FIELDS) {
  if (params.has(f)) $(f).value = params.get(f);
}
$('settings').addEventListener('submit', (e) => e.preventDefault());
if (!$('server').value) $('server').value = `http://${location.hostname || '127.0.0.1'}:8443`;
// Out of the box (scripts/run.sh serves gost's auto handler on :8443): ask the server's
// HTTP proxy for this very page's server, so "Open tunnel" shows an answer at once.
if (!params.has('connector')) $('connector').value = 'http';
if (!params.has('target') && !$('target').value) $('target').value = location.host || '127.0.0.1:8080';

function log(msg, isError = false) {
  const line = document.createElement('div');
  line.textContent = `${new Date().toISOString().slice(11, 23)}  ${msg}`;
  if (isError) line.className = 'error';
  $('log').append(line);
  $('log').scrollTop = $('log').scrollHeight;
  (isError ? console.error : console.log)(`[pht] ${msg}`);
}

function options(target) {
  const o = { connector: $('connector').value, token: $('token').value };
  if (target && o.connector !== 'forward') o.target = target;
  if ($('username').value) {
    o.username = $('username').value;
    o.password = $('password').value;
  }
  return o;
}

async function open(target) {
  const server = $('server').value.trim();
  const o = options(target);
  log(`connecting to ${server} (${o.connector}${o.target ? ` → ${o.target}` : ''}, token ${o.token})`);
  const t0 = performance.now();
  const tunnel = await connect(server, o);
  log(`tunnel open in ${(performance.now() - t0).toFixed(0)} ms`);
  tunnel.closed.then(
    () => log('tunnel closed'),
    (e) => log(`tunnel failed: ${e.message}`, true),
  );
  return tunnel;
}

function hostOf(url) {
  try {
    return new URL(url).hostname || 'localhost';
  } catch {
    return 'localhost';
  }
}

/** Runs `job` with `button` disabled; errors go to `out` and the log. */
function action(button, out, job) {
  $(button).addEventListener('click', async () => {
    $(button).disabled = true;
    $(out).classList.remove('error');
    $(out).textContent = '…';
    try {
      await job();
    } catch (e) {
      $(out).textContent = e.message;
      $(out).classList.add('error');
      log(e.message, true);
    } finally {
      $(button).disabled = false;
    }
  });
}

action('open', 'response', async () => {
  const target = $('target').value.trim();
  const tunnel = await open(target);
  try {
    const host = target || hostOf($('server').value.trim());
    const request = `GET / HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: pht-wasm-demo\r\nConnection: close\r\n\r\n`;
    const writer = tunnel.writable.getWriter();
    await writer.write(new TextEncoder().encode(request));
    writer.releaseLock();
    log(`sent ${request.length} bytes: GET / HTTP/1.1`);

    // Read until the target closes (Connection: close), for 15 s at most.
    const reader = tunnel.readable.getReader();
    const decoder = new TextDecoder();
    let text = '';
    let bytes = 0;
    const deadline = setTimeout(() => reader.cancel(), 15000);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      bytes += value.length;
      text += decoder.decode(value, { stream: true });
      $('response').textContent = text;
    }
    clearTimeout(deadline);
    text += decoder.decode();
    $('response').textContent = text || '(no answer)';
    log(`received ${bytes} bytes`);
  } finally {
    await tunnel.close();
  }
});

action('measure', 'throughput', async () => {
  const mib = Math.max(1, Math.min(1024, Number($('mib').value) || 8));
  const total = mib * 1024 * 1024;
  const target = $('echo').value.trim() || $('target').value.trim();
  const tunnel = await open(target);
  try {
    const pattern = new Uint8Array(64 * 1024);
    crypto.getRandomValues(pattern);
    const t0 = performance.now();
    const writing = (async () => {
      const writer = tunnel.writable.getWriter();
      for (let sent = 0; sent < total; sent += pattern.length) {
        await writer.write(pattern.subarray(0, Math.min(pattern.length, total - sent)));
      }
      writer.releaseLock();
    })();
    const reading = (async () => {
      const reader = tunnel.readable.getReader();
      let got = 0;
      while (got < total) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the tunnel ended after ${got} of ${total} bytes`);
        for (let i = 0; i < value.length; i++) {
          if (value[i] !== pattern[(got + i) % pattern.length]) {
            throw new Error(`byte ${got + i} differs: the target is not an echo`);
          }
        }
        got += value.length;
      }
      reader.releaseLock();
    })();
    await Promise.all([writing, reading]);
    const secs = (performance.now() - t0) / 1000;
    const rate = total / 1e6 / secs;
    const result = `${mib} MiB sent and echoed back in ${secs.toFixed(2)} s: ${rate.toFixed(1)} MB/s each way`;
    $('throughput').textContent = result;
    log(result);
  } finally {
    await tunnel.close();
  }
});

try {
  await init();
  log('pht-wasm loaded');
  document.body.dataset.ready = 'true';
} catch (e) {
  log(`could not load pht-wasm: ${e.message}`, true);
}
