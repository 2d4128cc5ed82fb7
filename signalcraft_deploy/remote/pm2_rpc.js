// Runs ON THE HOST as `node -e <this file> <path of pm2> [list | watch | delete NAME...]`.
// Asks the PM2 daemon over its RPC socket, with PM2's own client modules, what the PM2 CLI would
// ask it, without starting the CLI (which loads its whole program first: about 0.1 s a call on an
// idle machine, 0.5 s under load):
//   list          prints what `pm2 jlist` prints;
//   watch         prints that list as one line each time a line arrives on stdin, until stdin ends
//                 (the health gate asks several times a second: one node start, not one a question);
//   delete NAME   stops and removes every process of each app NAME, as `pm2 delete NAME` does
//                 (exit 1 if there is none);
//   save          writes the list to $PM2_HOME/dump.pm2 as `pm2 save --force` does (the same
//                 entries, the old dump kept as dump.pm2.bak), through a temporary file and a rename.
// Exits 3 when it cannot (no daemon yet, a stale socket, a PM2 that keeps its modules elsewhere);
// the caller then runs the PM2 CLI, which also starts the daemon.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const [pm2Path, op = 'list', ...names] = process.argv.slice(1);
const giveUp = () => process.exit(3);
// A delete waits for the app to exit (up to its kill_timeout); a list should answer at once; a watch
// lives as long as its caller keeps stdin open (the caller times each answer).
const timer = op === 'watch' ? null : setTimeout(giveUp, op === 'delete' ? 120000 : 5000);
const done = (code, text) => process.stdout.write(text || '', () => { clearTimeout(timer); process.exit(code); });
try {
  const root = path.dirname(path.dirname(fs.realpathSync(pm2Path)));
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
  if (!fs.existsSync(socketFile) || !['list', 'watch', 'delete', 'save'].includes(op)) giveUp();
  const req = axon.socket('req');
  req.on('socket error', giveUp);
  req.on('error', giveUp);
  const client = new rpc.Client(req);
  req.connect(socketFile);
  if (op === 'watch') req.once('connect', () => watch(client));
  else req.once('connect', () => client.call('getMonitorData', {}, (err, list) => {
    if (err || !Array.isArray(list)) giveUp();
    if (op === 'list') return done(0, JSON.stringify(list));
    if (op === 'save') return save(path.dirname(socketFile), list);
    const ids = list.filter((p) => names.includes(p.name)).map((p) => p.pm_id);
    if (!ids.length) return done(1, `no app named ${names.join(', ')}\n`);
    const next = () => {
      if (!ids.length) return done(0, `deleted ${names.join(', ')}\n`);
      client.call('deleteProcessId', ids.shift(), (failed) => (failed ? giveUp() : next()));
    };
    next();
  }));
} catch (e) {
  giveUp();
}

function watch(client) {
  let asked = 0;
  let busy = false;
  let ended = false;
  const answer = () => {
    if (busy) return;
    if (!asked) {
      if (ended) process.exit(0);
      return;
    }
    busy = true;
    asked -= 1;
    client.call('getMonitorData', {}, (err, list) => {
      if (err || !Array.isArray(list)) giveUp();
      process.stdout.write(`${JSON.stringify(list)}\n`, () => { busy = false; answer(); });
    });
  };
  process.stdin.on('data', (chunk) => { asked += chunk.toString().split('\n').length - 1; answer(); });
  process.stdin.on('end', () => { ended = true; answer(); });
}

// PM2's own dump (lib/API/Startup.js `dump`): each process's pm2_env without instances, pm_id and
// prev_restart_delay, PM2's modules left out; the previous dump kept as dump.pm2.bak.
function save(home, list) {
  const dump = path.join(home, 'dump.pm2');
  const entries = list
    .filter((p) => p.pm2_env && !p.pm2_env.pmx_module)
    .map((p) => {
      const env = { ...p.pm2_env };
      delete env.instances;
      delete env.pm_id;
      delete env.prev_restart_delay;
      return env;
    });
  try {
    if (fs.existsSync(dump)) fs.copyFileSync(dump, `${dump}.bak`);
    const temporary = `${dump}.${process.pid}.tmp`;
    fs.writeFileSync(temporary, JSON.stringify(entries, '', 2));
    fs.renameSync(temporary, dump);
  } catch (e) {
    giveUp();
  }
  return done(0, `saved ${entries.length} process(es) in ${dump}\n`);
}
