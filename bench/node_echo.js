// A plain `ws` echo server for the comparison in bench/run.sh (Debian's node-ws).
// Usage: node bench/node_echo.js [port]   (prints "listening on HOST:PORT" to stderr)
'use strict';
const WebSocket = require('/usr/share/nodejs/ws');
const port = Number(process.argv[2] || 0);
const wss = new WebSocket.Server({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('listening', () => {
  const a = wss.address();
  process.stderr.write(`listening on ${a.address}:${a.port}\n`);
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
process.on('SIGTERM', () => process.exit(0));
