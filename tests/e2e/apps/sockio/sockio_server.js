'use strict';
// The example's server.js (required here: it listens as it always does) with socket.io on it, for
// issue 28's tests: each client gets a "hello" naming the release, version and pid that serve it;
// a "shout" from any client is broadcast to every client. On shutdown every client's transport is
// ended (not a socket.io "disconnect", after which a client does not come back by itself), so the
// clients reconnect at once, to the process that serves now.
const { Server } = require('socket.io');
const example = require('./server.js');

const io = new Server(example.server);
const who = () => ({ release: example.release, version: example.version, pid: process.pid });

io.on('connection', (socket) => {
  socket.emit('hello', who());
  socket.on('shout', (token) => io.emit('broadcast', { token, ...who() }));
});

example.onShutdown(() => io.engine.close());
