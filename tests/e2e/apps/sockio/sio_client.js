'use strict';
// node sio_client.js URL POLLING WEBSOCKET: socket.io's own client, POLLING clients on the polling
// transport only and WEBSOCKET on the WebSocket transport only, all to URL (through Nginx). Prints
// one JSON line per event: {"event": "ready"} once every client has its hello; then for each line
// "shout TOKEN" on stdin, client 0 shouts TOKEN and {"event": "broadcast", token, received: N,
// versions} follows once every client got it (or 10 s passed); "quit" prints
// {"event": "end", errors, connects} and exits. versions: the version of each client's last hello.
const { io } = require('socket.io-client');

const [url, polling, websocket] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const clients = [];
const errors = [];
let connects = 0;
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

for (let i = 0; i < polling + websocket; i++) {
  const transports = i < polling ? ['polling'] : ['websocket'];
  const client = { socket: io(url, { transports, reconnectionDelay: 100, reconnectionDelayMax: 500 }), version: null, got: new Set() };
  client.socket.on('hello', (who) => { client.version = who.version; connects += 1; check(); });
  client.socket.on('broadcast', (msg) => { client.got.add(msg.token); check(); });
  client.socket.on('connect_error', (err) => errors.push(`${transports[0]}: ${err.message}`));
  clients.push(client);
}

let ready = false;
let waiting = null;
function check() {
  if (!ready && clients.every((c) => c.version !== null)) {
    ready = true;
    say({ event: 'ready', versions: clients.map((c) => c.version) });
  }
  if (waiting && clients.every((c) => c.got.has(waiting.token))) finish();
}
function finish() {
  const { token, timer } = waiting;
  clearTimeout(timer);
  waiting = null;
  say({ event: 'broadcast', token, received: clients.filter((c) => c.got.has(token)).length, versions: clients.map((c) => c.version) });
}

let buffer = '';
process.stdin.on('data', (chunk) => {
  buffer += chunk;
  let at;
  while ((at = buffer.indexOf('\n')) >= 0) {
    const line = buffer.slice(0, at).trim();
    buffer = buffer.slice(at + 1);
    if (line.startsWith('shout ')) {
      const token = line.slice(6);
      waiting = { token, timer: setTimeout(finish, 10000) };
      clients[0].socket.emit('shout', token);
    } else if (line === 'quit') {
      say({ event: 'end', errors, connects });
      process.exit(0);
    }
  }
});
