'use strict';
// A Node.js server as simple as many are (bench.downtime --node-script): it answers like the
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
server.listen(Number(process.env.PORT || 3000), process.env.HOST || '127.0.0.1');
process.on('SIGINT', () => server.close(() => process.exit(0)));
