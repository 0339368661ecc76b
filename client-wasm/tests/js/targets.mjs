// Target servers for the wasm tests, all on 127.0.0.1 (run by scripts/test-wasm.sh):
//   echo   TCP echo; counts connections opened and closed
//   bye    TCP: writes "bye\n" and closes (the far end closes first)
//   http   HTTP/1.1 responder: "hello from the pht target: GET <path>\n"
//   stats  HTTP, CORS-open: GET /stats -> {"echoOpened":n,"echoClosed":n,"echoBytes":n}
//   dead   a port nothing listens on
//   free   `count` more free ports for the script's own servers
// Usage: node targets.mjs PORTS_JSON_FILE [count]. Writes the ports as JSON once all listen,
// then serves until killed (or for at most 30 minutes).
import { createServer as createTcpServer } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { writeFileSync } from 'node:fs';

const [file, countArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node targets.mjs PORTS_JSON_FILE [count]');
  process.exit(2);
}

const stats = { echoOpened: 0, echoClosed: 0, echoBytes: 0 };

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

const echo = createTcpServer((sock) => {
  stats.echoOpened++;
  sock.on('data', (d) => { stats.echoBytes += d.length; });
  sock.on('error', () => {});
  sock.on('close', () => { stats.echoClosed++; });
  sock.pipe(sock);
});

const bye = createTcpServer((sock) => {
  sock.on('error', () => {});
  sock.end('bye\n');
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
  bye: await listen(bye),
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
