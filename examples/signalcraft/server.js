'use strict';
// SignalCraft example: the Node.js half of the stack that signalcraft-deploy ships.
//
// Answers every path with JSON naming the release that served it. The deploy tool writes a
// REVISION file next to this one in each release directory; it is read once at start-up
// ("dev" when absent) and echoed in the body and the X-Release header.
//
// PM2 runs it in cluster mode (several workers sharing one port) and rolls `pm2 reload` over
// them; for that to drop nothing, each worker shuts down gracefully on SIGINT / SIGTERM / PM2's
// "shutdown" message: stop accepting, let in-flight requests finish, close idle keep-alive
// connections, exit 0 (forced exit after 10 s).

const cluster = require('cluster');
const fs = require('fs');
const http = require('http');
const path = require('path');

// Tests edit this line to make a "new commit" whose answers differ from the last one.
const VERSION = "1";

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || '127.0.0.1';
// How long a shutdown lets requests in flight finish (keep it below PM2's kill_timeout,
// NODE_KILL_TIMEOUT); SHUTDOWN_TIMEOUT_MS from the app's environment raises it.
const FORCE_EXIT_MS = Number(process.env.SHUTDOWN_TIMEOUT_MS || 10000);

// REVISION sits at the top of the release; the script may live in a subfolder of it,
// so look next to the script first, then in the working directory (PM2's cwd is the release).
function readRelease() {
  for (const dir of [__dirname, process.cwd()]) {
    try {
      const first = fs.readFileSync(path.join(dir, 'REVISION'), 'utf8').split(/\r?\n/)[0].trim();
      if (first) return first;
    } catch (err) {
      // not here; try the next place
    }
  }
  return 'dev';
}

const RELEASE = readRelease();
let shuttingDown = false;
// Extra routes (path -> handler(req, res, url)) and shutdown hooks, for a script that requires this one.
const routes = new Map();
const shutdownHooks = [];

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const urlPath = url.pathname;
  if (routes.has(urlPath)) return routes.get(urlPath)(req, res, url);
  const body = JSON.stringify({ app: 'nodejs', path: urlPath, release: RELEASE, version: VERSION, pid: process.pid });
  const headers = {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    'X-Release': RELEASE,
    'X-App': 'nodejs',
  };
  // A request arriving on a kept-alive connection during shutdown is served, then the
  // connection is closed, so the client opens its next one to a worker that stays.
  if (shuttingDown) headers.Connection = 'close';
  // A connection whose request was in flight when shutdown began turns idle once answered.
  res.on('finish', () => shuttingDown && server.closeIdleConnections());
  res.writeHead(200, headers);
  res.end(req.method === 'HEAD' ? undefined : body);
});

// Keep idle connections longer than a proxy in front would (Nginx's upstream keepalive_timeout
// defaults to 60 s), so the proxy never reuses a connection this side is closing.
server.keepAliveTimeout = 65000;
server.headersTimeout = 66000;

function shutdown(reason) {
  if (shuttingDown) return;
  shuttingDown = true;
  console.log(`signalcraft-nodejs ${process.pid}: ${reason}, closing (in-flight requests finish first)`);
  const force = setTimeout(() => {
    console.error(`signalcraft-nodejs ${process.pid}: still busy after ${FORCE_EXIT_MS / 1000} s, forcing exit`);
    process.exit(1);
  }, FORCE_EXIT_MS);
  force.unref();
  for (const hook of shutdownHooks) hook();
  server.close(exitWhenDelivered);
  server.closeIdleConnections();
}

// Exit 0 once nothing more can reach this process. As a cluster worker (PM2's cluster mode)
// the primary may already have sent it connections it has not read yet; exiting now would
// leave those clients hanging. Node hands such late connections back to the primary, so
// exit only after a round trip to the primary (cluster's own disconnect handshake), by
// which time every earlier message has been read.
function exitWhenDelivered() {
  if (!cluster.isWorker || !process.connected) {
    process.exit(0);
  }
  cluster.worker.once('disconnect', () => process.exit(0));
  cluster.worker.disconnect();
}

process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('message', (msg) => msg === 'shutdown' && shutdown('shutdown message'));

module.exports = { server, routes, release: RELEASE, version: VERSION, onShutdown: (hook) => shutdownHooks.push(hook) };

server.listen(PORT, HOST, () => {
  console.log(`signalcraft-nodejs ${process.pid}: release ${RELEASE}, version ${VERSION}, listening on ${HOST}:${PORT}`);
});
