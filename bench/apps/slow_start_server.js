'use strict';
// bench/apps/simple_server.js, but it listens only 4 s after it starts (bench.downtime --node-script):
// a reload must wait for it. Like simple_server.js it answers like the
// example's server.js (release, version) and on SIGINT closes its server and exits once it has
// closed, with no hand-back of connections the cluster primary already sent it.
const fs = require('fs');
const http = require('http');

const VERSION = /^const VERSION = "(.*)";$/m.exec(fs.readFileSync(`${__dirname}/server.js`, 'utf8'))[1];
let RELEASE = 'dev';
try {
  RELEASE = fs.readFileSync(`${__dirname}/REVISION`, 'utf8').split('\n')[0].trim() || 'dev';
} catch (err) {
  // no REVISION: a local run
}

const server = http.createServer((req, res) => {
  const body = JSON.stringify({ app: 'nodejs', release: RELEASE, version: VERSION, pid: process.pid });
  res.writeHead(200, { 'Content-Type': 'application/json', 'X-Release': RELEASE });
  res.end(body);
});
// Takes START_MS (default 4 s) to listen, as an app that loads a model or warms a cache does.
setTimeout(() => server.listen(Number(process.env.PORT || 3000), process.env.HOST || "127.0.0.1"), Number(process.env.START_MS || 4000));
process.on('SIGINT', () => server.close(() => process.exit(0)));
