// Runs ON THE HOST as `node -e <this file> <path of pm2> [list | watch | delete NAME... | save |
// start FILE [ONLY]]`.
// Asks the PM2 daemon over its RPC socket, with PM2's own client modules, what the PM2 CLI would
// ask it, without starting the CLI (which loads its whole program first: about 0.1 s a call on an
// idle machine, 0.5 s under load):
//   list          prints what `pm2 jlist` prints;
//   watch         prints that list as one line each time a line arrives on stdin, until stdin ends
//                 (the health gate asks several times a second: one node start, not one a question);
//   delete NAME   stops and removes every process of each app NAME, as `pm2 delete NAME` does
//                 (exit 1 if there is none);
//   save          writes the list to $PM2_HOME/dump.pm2 as `pm2 save --force` does (the same
//                 entries, the old dump kept as dump.pm2.bak), through a temporary file and a rename;
//   start FILE [ONLY]  starts the apps of a PM2 config file (all, or the one named ONLY) as
//                 `pm2 start FILE [--only ONLY]` does, each app resolved by PM2's own modules
//                 (lib/Common.js) as its CLI resolves it: the same entry, environment and messages.
//                 When one of them is already in PM2's list it gives up (3): the CLI restarts those.
// Exits 3 when it cannot (no daemon yet, a stale socket, a PM2 that keeps its modules elsewhere);
// the caller then runs the PM2 CLI, which also starts the daemon.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const [pm2Path, op = 'list', ...names] = process.argv.slice(1);
// Once a start has asked the daemon to launch an app, the CLI must not run after it (it would
// restart what was launched): a failure then is the start's own (exit 1).
let launching = false;
const giveUp = () => {
  if (!launching) process.exit(3);
  process.stderr.write('pm2_rpc.js: lost PM2\'s daemon while starting apps\n', () => process.exit(1));
};
process.on('uncaughtException', giveUp);
// A delete waits for the app to exit (up to its kill_timeout), a start for its apps' launch; a list
// should answer at once; a watch lives as long as its caller keeps stdin open (the caller times each
// answer).
const slow = op === 'delete' || op === 'start';
const timer = op === 'watch' ? null : setTimeout(giveUp, slow ? 120000 : 5000);
const done = (code, text) => process.stdout.write(text || '', () => { clearTimeout(timer); process.exit(code); });
try {
  const root = path.dirname(path.dirname(fs.realpathSync(pm2Path)));
  const own = (file) => require(path.join(root, file));
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
  if (!fs.existsSync(socketFile) || !['list', 'watch', 'delete', 'save', 'start'].includes(op)) giveUp();
  // PM2's own modules, loaded before the daemon is asked anything (a PM2 without them: the CLI).
  const starting = op === 'start' ? configured(own, names[0], names[1]) : null;
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
    if (op === 'start') return start(client, starting, list);
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

// What `pm2 start FILE [--only ONLY]` (lib/API.js `_startJson`) makes of the file before it asks the
// daemon anything: the apps checked and completed by PM2's Common.verifyConfs, in PM2's own CLI
// environment (PM2_USAGE, PM2_JSON_PROCESSING: the apps' environment starts from it).
function configured(own, file, only) {
  process.env.PM2_USAGE = 'CLI';
  process.env._ = pm2Path; // as the shell sets it for the CLI
  const Common = own('lib/Common.js');
  const cst = own('constants.js');
  const { getModuleConf } = own('lib/API/Modules/NPM.js');
  if (!['json', 'js'].includes(Common.isConfigFile(file))) giveUp();
  const config = Common.parseConfig(fs.readFileSync(path.resolve(file)), file);
  let apps = config.apps || config.pm2 || config;
  apps = Common.verifyConfs(Array.isArray(apps) ? apps : [apps]);
  if (apps instanceof Error) {
    Common.printError(apps);
    process.exit(1);
  }
  process.env.PM2_JSON_PROCESSING = true;
  const chosen = apps.filter((app) => {
    if (!app.env) app.env = {};
    app.env.io = app.io;
    if (only && !only.split(/,| /).includes(app.name)) return false;
    if (!app.namespace) app.namespace = 'default';
    app.username = Common.getCurrentUsername();
    return true;
  });
  let linked = false;
  try {
    process.kill(parseInt(fs.readFileSync(cst.INTERACTOR_PID_PATH).toString().trim(), 10), 0);
    linked = true;
  } catch (e) {
    linked = false;
  }
  return { Common, cst, getModuleConf, apps: chosen, linked, deploy: config.deploy || {} };
}

// `_startJson`'s startApps: each app resolved (Common.resolveAppAttributes: paths, interpreter,
// exec mode, log files, the environment) and handed to the daemon's `prepare`, as many at a time
// as PM2's CLI does; the exit status the CLI's (1 when an app could not be resolved).
function start(client, { Common, cst, getModuleConf, apps, linked, deploy }, list) {
  const running = new Set(list.map((p) => p.name));
  if (apps.some((app) => running.has(app.name))) giveUp();
  launching = true;
  if (apps.length) {
    const names = apps.map((app) => app.name).join(', ');
    Common.printOut(`${cst.PREFIX_MSG_WARNING}Applications %s not running, starting...`, names);
  }
  const errored = [];
  const queue = apps.slice();
  let active = 0;
  const next = () => {
    if (!queue.length && !active) return done(errored.length ? 1 : 0);
    while (queue.length && active < cst.CONCURRENT_ACTIONS) {
      active += 1;
      launch(queue.shift(), () => {
        active -= 1;
        next();
      });
    }
  };
  const launch = (app, finished) => {
    let resolved;
    try {
      resolved = Common.resolveAppAttributes({ cwd: process.cwd(), pm2_home: cst.PM2_ROOT_PATH }, app);
    } catch (e) {
      errored.push(e);
      Common.err(`Error: ${e.message}`);
      return finished();
    }
    if (!resolved.env) resolved.env = {};
    resolved.env.PM2_HOME = cst.PM2_ROOT_PATH;
    Object.assign(resolved.env, getModuleConf(resolved.name));
    resolved.env = Common.mergeEnvironmentVariables(resolved, undefined, deploy);
    delete resolved.env.current_conf;
    resolved.km_link = linked;
    if (resolved.wait_ready) {
      Common.warn(`App ${resolved.name} has option 'wait_ready' set, waiting for app to be ready...`);
    }
    client.call('prepare', resolved, (err, data) => {
      if (err) {
        Common.printError(`${cst.PREFIX_MSG_ERR}Process failed to launch %s`, err.message ? err.message : err);
      } else if (!data || data.length === 0) {
        Common.printError(`${cst.PREFIX_MSG_ERR}Process config loading failed`, data);
      } else {
        Common.printOut(`${cst.PREFIX_MSG}App [%s] launched (%d instances)`, data[0].pm2_env.name, data.length);
      }
      finished();
    });
  };
  next();
}
