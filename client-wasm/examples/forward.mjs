#!/usr/bin/env node
// Forwards a local TCP port through PHT tunnels: every local connection gets its own tunnel
// (what `pht-client -L tcp://... -F ...` does natively), using the pht-wasm package and
// Node's `net`.
//
//   node forward.mjs --listen 127.0.0.1:2222 --server forward+pht://server.example:8443
//   node forward.mjs --listen 127.0.0.1:2222 --server http://server.example:8443 \
//        --connector socks5 --target 10.0.0.5:22 --username u --password p
//
// Options: --listen host:port (required), --server URL (required), --connector
// forward|http|socks5|relay, --target host:port, --username, --password, --token
// authorize|mint, --proxy http://[user:pass@]host:port (an HTTP forward proxy for every
// request; needs the `undici` package). Logs go to stderr; stops on SIGINT/SIGTERM.
import net from 'node:net';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { connect } from 'pht-wasm';

const { values: args } = parseArgs({
  options: {
    listen: { type: 'string' },
    server: { type: 'string' },
    connector: { type: 'string' },
    target: { type: 'string' },
    username: { type: 'string' },
    password: { type: 'string' },
    token: { type: 'string' },
    proxy: { type: 'string' },
  },
});
if (!args.listen || !args.server) {
  console.error('usage: node forward.mjs --listen host:port --server URL [--connector c --target host:port]');
  process.exit(2);
}
const options = {};
for (const k of ['connector', 'target', 'username', 'password', 'token']) {
  if (args[k] !== undefined) options[k] = args[k];
}

const log = (msg) => console.error(`[forward] ${msg}`);

if (args.proxy) {
  // Node's fetch ignores HTTP_PROXY: route it through undici's ProxyAgent, in absolute form
  // (no CONNECT) for http:// servers.
  const { ProxyAgent, setGlobalDispatcher } = await import('undici');
  setGlobalDispatcher(new ProxyAgent({ uri: args.proxy, proxyTunnel: false }));
}

async function serve(socket) {
  const peer = `${socket.remoteAddress}:${socket.remotePort}`;
  socket.pause();
  let tunnel;
  try {
    tunnel = await connect(args.server, options);
  } catch (e) {
    log(`${peer}: ${e.message}`);
    socket.destroy();
    return;
  }
  log(`${peer}: tunnel open (PHT/${tunnel.version})`);
  // Local EOF closes the writable, the readable's end ends the socket: on PHT/2 each is a
  // half-close, and the tunnel is over once both happened; PHT/1 has no half-close, and
  // either ends the tunnel. A failure on either side is a reset on the other: a broken
  // local connection aborts the writable (the far end sees a reset), a broken tunnel
  // resets the local connection.
  let failure;
  const upload = (async () => {
    const writer = tunnel.writable.getWriter();
    try {
      // The socket stays open for writing after the local EOF: the tunnel still delivers.
      for await (const chunk of socket.iterator({ destroyOnReturn: false })) await writer.write(chunk);
    } catch (e) {
      await writer.abort(e).catch(() => {});
      throw e;
    }
    await writer.close();
  })().catch((e) => {
    failure ??= e;
  });
  try {
    // The socket is ended here, not by pipeTo: on a failure pipeTo would destroy it, and
    // a destroyed socket closes with a FIN, a clean end to the application.
    await tunnel.readable.pipeTo(Writable.toWeb(socket), { preventAbort: true, preventClose: true });
  } catch (e) {
    failure ??= e;
  }
  // A failed upload fails the tunnel: the local side must not read a clean end either.
  if (failure) socket.resetAndDestroy();
  else socket.end();
  // PHT/2: the far end has finished, but the local side may still be sending.
  if (!failure && tunnel.version === 2) {
    await upload;
    if (failure) socket.resetAndDestroy();
  }
  await tunnel.close();
  log(failure ? `${peer}: ${failure.message ?? failure}` : `${peer}: closed`);
}

const colon = args.listen.lastIndexOf(':');
const host = args.listen.slice(0, colon).replace(/^\[|\]$/g, '') || '127.0.0.1';
const port = Number(args.listen.slice(colon + 1));
// Half-open: a local FIN must not end the socket before the tunnel has delivered its end.
const server = net.createServer({ allowHalfOpen: true }, (socket) => {
  socket.on('error', () => {});
  serve(socket).catch((e) => {
    log(`unexpected: ${e.stack ?? e}`);
    socket.destroy();
  });
});
server.listen(port, host, () => {
  log(`listening on ${args.listen}, tunnels to ${args.server}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
