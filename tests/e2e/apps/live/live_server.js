'use strict';
// The example's server.js (required here: it listens as it always does) with a WebSocket endpoint
// and a server-sent-events route, for issue 28's tests. No package: the WebSocket framing (RFC 6455,
// text frames, close, ping) is written out below so the test app needs no node_modules.
//   GET /live/ws (Upgrade: websocket): sends {"type":"hello",release,version,pid}, then a
//     {"type":"tick",n,...} every second; echoes each text message as {"type":"echo",text,...}.
//     On shutdown each socket gets a close frame 1001 ("going away") before the process exits.
//   GET /live/events?events=N&interval=S: N server-sent events S seconds apart.
const crypto = require('crypto');
const example = require('./server.js');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const sockets = new Set();
const who = () => ({ release: example.release, version: example.version, pid: process.pid });

function frame(opcode, payload) {
  const body = Buffer.from(payload);
  let head;
  if (body.length < 126) {
    head = Buffer.from([0x80 | opcode, body.length]);
  } else {
    head = Buffer.alloc(4);
    head[0] = 0x80 | opcode;
    head[1] = 126;
    head.writeUInt16BE(body.length, 2);
  }
  return Buffer.concat([head, body]);
}

function send(socket, message) {
  if (!socket.destroyed) socket.write(frame(0x1, JSON.stringify({ ...message, ...who() })));
}

function closeFrame(code, reason) {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return frame(0x8, payload);
}

// Client frames are masked; this reads whole frames from `state.buffer` and handles each.
function readFrames(socket, state) {
  for (;;) {
    const buf = state.buffer;
    if (buf.length < 2) return;
    const opcode = buf[0] & 0x0f;
    let length = buf[1] & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (buf.length < 4) return;
      length = buf.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      socket.destroy();
      return;
    }
    if (buf.length < offset + 4 + length) return;
    const mask = buf.subarray(offset, offset + 4);
    const data = Buffer.from(buf.subarray(offset + 4, offset + 4 + length));
    for (let i = 0; i < data.length; i++) data[i] ^= mask[i % 4];
    state.buffer = buf.subarray(offset + 4 + length);
    if (opcode === 0x1) send(socket, { type: 'echo', text: data.toString('utf8') });
    else if (opcode === 0x9) socket.write(frame(0xa, data));
    else if (opcode === 0x8) {
      if (!state.closing) socket.write(frame(0x8, data.subarray(0, 2)));
      socket.end();
      return;
    }
  }
}

example.server.on('upgrade', (req, socket) => {
  const key = req.headers['sec-websocket-key'];
  if (new URL(req.url, 'http://localhost').pathname !== '/live/ws' || !key) {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
    return;
  }
  const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
  const state = { buffer: Buffer.alloc(0), closing: false };
  socket.state = state;
  sockets.add(socket);
  socket.on('data', (chunk) => {
    state.buffer = Buffer.concat([state.buffer, chunk]);
    readFrames(socket, state);
  });
  socket.on('close', () => sockets.delete(socket));
  socket.on('error', () => sockets.delete(socket));
  send(socket, { type: 'hello' });
});

let ticks = 0;
setInterval(() => {
  ticks += 1;
  for (const socket of sockets) send(socket, { type: 'tick', n: ticks });
}, 1000).unref();

example.onShutdown(() => {
  for (const socket of sockets) {
    socket.state.closing = true;
    socket.write(closeFrame(1001, 'going away'));
    socket.end();
    setTimeout(() => socket.destroy(), 1000).unref();
  }
});

example.routes.set('/live/events', (req, res, url) => {
  const events = Number(url.searchParams.get('events') || 5);
  const interval = Number(url.searchParams.get('interval') || 1) * 1000;
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no' });
  let n = 0;
  const next = () => {
    res.write(`data: ${JSON.stringify({ n, sent: Date.now() / 1000, ...who() })}\n\n`);
    n += 1;
    if (n >= events) res.end();
    else setTimeout(next, interval);
  };
  next();
});
