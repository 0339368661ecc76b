// Target servers for the wasm tests, all on 127.0.0.1 (run by scripts/test-wasm.sh):
//   echo   TCP echo; counts connections opened, closed, and reset (ended by an error)
//   chaos  another echo with counters of its own, for the random-cuts test
//   bulk   TCP bulk transfers, one command line per connection (see bulk.mjs):
//            "send N SEED\n"  writes N bytes of bulk.mjs's stream SEED, then ends
//            "recv N\n"       reads N bytes, answers their SHA-256 in hex and "\n", ends
//   bye    TCP: writes "bye\n" and closes (the far end closes first)
//   eof    TCP: answers only after the client's end of stream (a half-close): the line
//          "<n> <sha256 hex>\n" of the n bytes it read, then those bytes again, then ends
//   late   TCP: reads nothing for 4 s after the accept, then like eof answers
//          "<n> <sha256 hex>\n" after the client's end of stream (without the bytes)
//   reset  TCP echo that resets the connection (RST) once it has echoed 256 KiB: a tunnel
//          that breaks mid-stream (the page test shows its readable's error)
//   http   HTTP/1.1 responder: "hello from the pht target: GET <path>\n"
//   stats  HTTP, CORS-open: GET /stats -> {"echoOpened":n,"echoClosed":n,"echoReset":n,
//          "echoBytes":n,"chaosOpened":n,...,"bulkOpened":n,"bulkReset":n,"eofOpened":n,
//          "eofAnswered":n,"eofClosed":n,"eofReset":n,"lateAnswered":n}
//          GET /digest?seed=S&n=N -> SHA-256 (hex) of what "send N S" sends
//   dead   a port nothing listens on
//   free   `count` more free ports for the script's own servers
// Usage: node targets.mjs PORTS_JSON_FILE [count]. Writes the ports as JSON once all listen,
// then serves until killed (or for at most 30 minutes).
import { createServer as createTcpServer } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { bulkDigest, bulkStream } from './bulk.mjs';

const [file, countArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node targets.mjs PORTS_JSON_FILE [count]');
  process.exit(2);
}

const stats = {
  echoOpened: 0, echoClosed: 0, echoReset: 0, echoBytes: 0,
  chaosOpened: 0, chaosClosed: 0, chaosReset: 0, chaosBytes: 0,
  bulkOpened: 0, bulkReset: 0,
  eofOpened: 0, eofAnswered: 0, eofClosed: 0, eofReset: 0,
  lateAnswered: 0,
};

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

/** A TCP echo counting into `stats[name + 'Opened']` and the like. */
const echoServer = (name) => createTcpServer((sock) => {
  stats[`${name}Opened`]++;
  sock.on('data', (d) => { stats[`${name}Bytes`] += d.length; });
  sock.on('error', () => { stats[`${name}Reset`]++; });
  sock.on('close', () => { stats[`${name}Closed`]++; });
  sock.pipe(sock);
});
const echo = echoServer('echo');
const chaos = echoServer('chaos');

const bulk = createTcpServer((sock) => {
  stats.bulkOpened++;
  sock.on('error', () => { stats.bulkReset++; });
  let head = Buffer.alloc(0);
  const onHead = (d) => {
    head = Buffer.concat([head, d]);
    const nl = head.indexOf(10);
    if (nl < 0) {
      if (head.length > 100) sock.destroy();
      return;
    }
    sock.off('data', onHead);
    const [cmd, n, seed] = head.subarray(0, nl).toString().trim().split(/\s+/);
    const rest = head.subarray(nl + 1);
    if (cmd === 'send') sendBulk(sock, Number(n), seed ?? '0');
    else if (cmd === 'recv') recvBulk(sock, Number(n), rest);
    else sock.end(`unknown command ${cmd}\n`);
  };
  sock.on('data', onHead);
});

/** Writes `n` bytes of stream `seed`, with backpressure, then ends. */
async function sendBulk(sock, n, seed) {
  sock.on('data', () => {}); // whatever comes is dropped
  for (const chunk of bulkStream(seed, n)) {
    if (sock.destroyed) return;
    if (!sock.write(chunk)) {
      await new Promise((r) => { sock.once('drain', r); sock.once('close', r); });
    }
  }
  sock.end();
}

/** Reads `n` bytes and answers their SHA-256. */
function recvBulk(sock, n, first) {
  const h = createHash('sha256');
  let got = 0;
  const take = (d) => {
    const part = d.subarray(0, n - got);
    h.update(part);
    got += part.length;
    if (got === n) {
      sock.off('data', take);
      sock.end(`${h.digest('hex')}\n`);
    }
  };
  sock.on('data', take);
  if (first.length) take(first);
}

const bye = createTcpServer((sock) => {
  sock.on('error', () => {});
  sock.end('bye\n');
});

// Half-open: its answer goes out after the client's FIN, so Node must not end the socket
// on that FIN.
const eof = createTcpServer({ allowHalfOpen: true }, (sock) => {
  stats.eofOpened++;
  const chunks = [];
  let failed = false;
  sock.on('data', (d) => chunks.push(d));
  sock.on('end', () => {
    const all = Buffer.concat(chunks);
    const sha = createHash('sha256').update(all).digest('hex');
    stats.eofAnswered++;
    sock.write(`${all.length} ${sha}\n`);
    sock.end(all);
  });
  sock.on('error', () => {
    failed = true;
    stats.eofReset++;
  });
  sock.on('close', () => {
    if (!failed) stats.eofClosed++;
  });
});

// A reader that pauses: the kernel's buffers fill, and the tunnel must hold the rest
// back instead of failing.
const LATE_MS = 4000;
const late = createTcpServer({ allowHalfOpen: true }, (sock) => {
  const hash = createHash('sha256');
  let n = 0;
  sock.on('error', () => {});
  sock.pause();
  setTimeout(() => sock.resume(), LATE_MS);
  sock.on('data', (d) => {
    hash.update(d);
    n += d.length;
  });
  sock.on('end', () => {
    stats.lateAnswered++;
    sock.end(`${n} ${hash.digest('hex')}\n`);
  });
});

const RESET_AFTER = 256 * 1024;
const reset = createTcpServer((sock) => {
  let echoed = 0;
  sock.on('error', () => {});
  sock.on('data', (d) => {
    if (echoed >= RESET_AFTER) return;
    const part = d.subarray(0, RESET_AFTER - echoed);
    echoed += part.length;
    // Reset once what was echoed has gone out, so the client sees bytes, then the break.
    if (echoed < RESET_AFTER) sock.write(part);
    else sock.write(part, () => sock.resetAndDestroy());
  });
});

const http = createHttpServer((req, res) => {
  const body = `hello from the pht target: ${req.method} ${req.url}\n`;
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});

const statsServer = createHttpServer((req, res) => {
  res.writeHead(200, {
    'Content-Type': 'application/json',
    'Access-Control-Allow-Origin': '*',
    'Cache-Control': 'no-store',
  });
  const url = new URL(req.url, 'http://stats');
  if (url.pathname === '/digest') {
    res.end(JSON.stringify(bulkDigest(url.searchParams.get('seed') ?? '0', Number(url.searchParams.get('n')))));
    return;
  }
  res.end(JSON.stringify(stats));
});

// Free ports: held together while they are picked (so none is picked twice), then let go.
const reserved = [];
async function freePort() {
  const s = createTcpServer();
  reserved.push(s);
  return listen(s);
}

const ports = {
  echo: await listen(echo),
  chaos: await listen(chaos),
  bulk: await listen(bulk),
  bye: await listen(bye),
  eof: await listen(eof),
  late: await listen(late),
  reset: await listen(reset),
  http: await listen(http),
  stats: await listen(statsServer),
  dead: await freePort(),
  free: [],
};
for (let i = 0; i < Number(countArg ?? 0); i++) ports.free.push(await freePort());
await Promise.all(reserved.map((s) => new Promise((r) => s.close(r))));
writeFileSync(file, JSON.stringify(ports));
console.error(`[targets] ${JSON.stringify(ports)}`);

setTimeout(() => process.exit(0), 30 * 60 * 1000).unref();
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
