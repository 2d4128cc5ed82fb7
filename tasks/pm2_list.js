// Runs ON THE HOST as `node -e <this file> <path of pm2>` (the last argument names the pm2 program).
// Prints what `pm2 jlist` prints, asked of the PM2 daemon over its RPC socket with PM2's own client
// modules, without starting the PM2 CLI (which loads its whole program first: about 0.1 s a call on
// an idle machine, 0.5 s under load). Exits 3 when it cannot (no daemon yet, a stale socket, a PM2
// that keeps its modules elsewhere); the caller then runs `pm2 jlist`, which also starts the daemon.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const giveUp = () => process.exit(3);
const timer = setTimeout(giveUp, 5000);
try {
  const root = path.dirname(path.dirname(fs.realpathSync(process.argv[process.argv.length - 1])));
  const load = (name) => {
    for (const dir of ['modules', 'node_modules']) {
      const where = path.join(root, dir, name);
      if (fs.existsSync(where)) return require(where);
    }
    throw new Error(`no ${name} in ${root}`);
  };
  const axon = load('pm2-axon');
  const rpc = load('pm2-axon-rpc');
  const socketFile = path.join(process.env.PM2_HOME || path.join(os.homedir(), '.pm2'), 'rpc.sock');
  if (!fs.existsSync(socketFile)) giveUp();
  const req = axon.socket('req');
  req.on('socket error', giveUp);
  req.on('error', giveUp);
  const client = new rpc.Client(req);
  req.connect(socketFile);
  req.once('connect', () => client.call('getMonitorData', {}, (err, list) => {
    if (err || !Array.isArray(list)) giveUp();
    process.stdout.write(JSON.stringify(list), () => {
      clearTimeout(timer);
      process.exit(0);
    });
  }));
} catch (e) {
  giveUp();
}
