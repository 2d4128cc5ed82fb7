'use strict';
// The end-to-end tests' first-day chat: plain Node.js (no dependencies), mounted by the deploy under a
// prefix (/chat). It answers JSON naming the path it got and the X-Forwarded-Prefix it was given, and
// echoes WebSocket text frames (RFC 6455, enough of it for short unmasked-reply text messages).
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');

const VERSION = "1"; // tests edit this line to make a new commit
const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || '127.0.0.1';
let RELEASE = 'dev';
try { RELEASE = fs.readFileSync(path.join(process.cwd(), 'REVISION'), 'utf8').split('\n')[0].trim() || 'dev'; } catch (e) { /* dev */ }

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const body = JSON.stringify({
    app: 'nodejs', path: url.pathname, prefix: req.headers['x-forwarded-prefix'] || '',
    host: req.headers.host || '', release: RELEASE, version: VERSION, pid: process.pid,
  });
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(req.method === 'HEAD' ? undefined : body);
});

function frame(text) {
  const data = Buffer.from(text);
  if (data.length > 125) throw new Error('long frames are not needed here');
  return Buffer.concat([Buffer.from([0x81, data.length]), data]);
}

server.on('upgrade', (req, socket) => {
  const key = req.headers['sec-websocket-key'];
  if (!key) { socket.destroy(); return; }
  const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
               `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  socket.write(frame(`hello ${RELEASE} ${new URL(req.url, 'http://x').pathname}`));
  socket.on('data', (buf) => {
    const opcode = buf[0] & 0x0f;
    if (opcode === 0x8) { socket.end(); return; }
    const masked = buf[1] & 0x80;
    const len = buf[1] & 0x7f;
    if (!masked || len > 125) { socket.destroy(); return; }
    const mask = buf.slice(2, 6);
    const payload = Buffer.from(buf.slice(6, 6 + len).map((b, i) => b ^ mask[i % 4]));
    socket.write(frame(`echo ${payload.toString()}`));
  });
  socket.on('error', () => socket.destroy());
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 8000).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
process.on('message', (msg) => msg === 'shutdown' && shutdown());

server.listen(PORT, HOST, () => console.log(`firstday-chat ${process.pid} on ${HOST}:${PORT}`));
