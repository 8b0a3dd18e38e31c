// Interop: drive heraldd's /echo endpoint with Debian's node-ws (`ws` 8.x).
//
//   node tests/integration/test_interop_node.mjs
//
// Starts its own heraldd ($HERALD_BIN or <repo>/build/bin/heraldd), runs the
// checks below printing one line each, SIGTERMs the daemon (clients must see
// 1001, the daemon must exit 0), and exits non-zero if anything failed. A
// global 60 s watchdog kills everything so the script can never hang.
//
// Covered: text and binary echo at frame-length boundaries (0 .. 65536) and
// 1 MiB (+1) against a --max-message 1048577 server; fragmented sends
// (send(..., {fin:false}) ... {fin:true}), with a ping between fragments;
// ping/pong payloads; clean close 1000 finished promptly by the server;
// herald.v1 subprotocol; 200 concurrent connections; oversized -> 1009;
// SIGTERM -> 1001 and exit status 0.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
// NODE_PATH does not apply to ESM `import`, but it does to a created require.
let WS_DIR;
try {
  WS_DIR = path.dirname(require.resolve('ws/package.json'));
} catch {
  WS_DIR = '/usr/share/nodejs/ws';
}
const WebSocket = require(WS_DIR);
const WS_VERSION = require(path.join(WS_DIR, 'package.json')).version;

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const BIN = process.env.HERALD_BIN || path.join(REPO, 'build', 'bin', 'heraldd');
const SUBPROTO = 'herald.v1';
const DEFAULT_MAX = 65536;
const BIG = 1 << 20;
const SIZES = [0, 1, 125, 126, 127, 128, 65535, 65536];
const OVERALL_TIMEOUT_MS = 60000;
const STEP_TIMEOUT_MS = 5000;

const servers = new Set();

const watchdog = setTimeout(() => {
  console.error(`FAIL overall timeout (${OVERALL_TIMEOUT_MS} ms) exceeded`);
  for (const s of servers) s.proc.kill('SIGKILL');
  process.exit(2);
}, OVERALL_TIMEOUT_MS);

// ---- helpers -------------------------------------------------------------------

function withTimeout(promise, ms, what) {
  let t;
  const timer = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timer]).finally(() => clearTimeout(t));
}

function textPayload(n, seed = 0) {
  const a = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  let s = '';
  for (let i = 0; i < n; i++) s += a[(i * 7 + seed) % a.length];
  return s;
}

function binaryPayload(n, seed = 0) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Start heraldd; resolves {proc, port, exited, stderr()} once it listens. */
function startHerald(...extra) {
  const env = { ...process.env };
  env.HERALD_JWT_SECRET ||= 'x'.repeat(40);
  env.HERALD_API_KEY ||= 'test-api-key-0123456789';
  const argv = ['--listen', '127.0.0.1:0', '--workers', '2', '--echo-path', '/echo', ...extra];
  const proc = spawn(BIN, argv, { env, cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
  let text = '';
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => resolve({ code, signal }));
  });
  const srv = { proc, port: 0, exited, stderr: () => text };
  servers.add(srv);
  exited.then(() => servers.delete(srv));
  // Keep draining stderr for the daemon's whole life so it never blocks.
  proc.stderr.setEncoding('utf8');
  const listening = new Promise((resolve, reject) => {
    proc.on('error', reject);
    proc.stderr.on('data', (chunk) => {
      text += chunk;
      const m = /listening on (?:\[[^\]]*\]|[^\s:]+):(\d+)/.exec(text);
      if (m && !srv.port) {
        srv.port = Number(m[1]);
        resolve(srv);
      }
    });
    exited.then(({ code, signal }) =>
      reject(new Error(`heraldd exited (${code ?? signal}) before listening:\n${text}`)));
  });
  return withTimeout(listening, 10000, `heraldd ${argv.join(' ')} to listen`);
}

/** A connected client with a message queue. */
class Client {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.closeInfo = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        for (const w of this.waiters) w.reject(new Error(`closed ${code} while waiting`));
        this.waiters = [];
        resolve(this.closeInfo);
      });
    });
    ws.on('message', (data, isBinary) => {
      const m = { data, isBinary };
      const w = this.waiters.shift();
      if (w) w.resolve(m);
      else this.queue.push(m);
    });
    ws.on('error', (e) => { this.error = e; });
  }

  static open(port, { protocols = [SUBPROTO], path: p = '/echo', ...opts } = {}) {
    return withTimeout(new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}${p}`, protocols, {
        perMessageDeflate: false, ...opts,
      });
      const c = new Client(ws);
      ws.once('open', () => resolve(c));
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) =>
        reject(new Error(`unexpected HTTP ${res.statusCode}`)));
    }), STEP_TIMEOUT_MS, `connect to ${p}`);
  }

  next(what = 'message') {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closeInfo) return Promise.reject(new Error(`closed ${this.closeInfo.code}`));
    return withTimeout(new Promise((resolve, reject) => this.waiters.push({ resolve, reject })),
      STEP_TIMEOUT_MS, what);
  }

  send(data, opts = {}) {
    return new Promise((resolve, reject) =>
      this.ws.send(data, opts, (err) => (err ? reject(err) : resolve())));
  }

  async echo(payload) {
    await this.send(payload);
    const m = await this.next(`echo of ${payload.length}`);
    assertEcho(m, payload);
  }

  /** Close with code and time until the server has closed TCP too. */
  async close(code = 1000, reason = '') {
    const t0 = Date.now();
    this.ws.close(code, reason);
    const info = await withTimeout(this.closed, STEP_TIMEOUT_MS, 'close');
    return { ...info, ms: Date.now() - t0 };
  }
}

function assertEcho(m, payload) {
  const wantBinary = typeof payload !== 'string';
  assert.equal(m.isBinary, wantBinary,
    `echo of ${wantBinary ? 'binary' : 'text'} came back as ${m.isBinary ? 'binary' : 'text'}`);
  assert.ok(Buffer.isBuffer(m.data));
  const want = wantBinary ? payload : Buffer.from(payload, 'utf8');
  assert.equal(m.data.length, want.length, 'echo length');
  assert.ok(m.data.equals(want), 'echo payload differs');
}

let failures = 0;
let passes = 0;
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await withTimeout(Promise.resolve().then(fn), 20000, name);
    passes++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

// ---- checks --------------------------------------------------------------------

async function main() {
  const srv = await startHerald();
  const big = await startHerald('--max-message', String(BIG + 1));
  console.log(`heraldd on ports ${srv.port} and ${big.port} (ws ${WS_VERSION} from ${WS_DIR})`);

  for (const kind of ['text', 'binary']) {
    for (const n of SIZES) {
      await check(`echo ${kind} ${n} bytes`, async () => {
        const c = await Client.open(srv.port);
        assert.equal(c.ws.protocol, SUBPROTO);
        const p = kind === 'text' ? textPayload(n) : binaryPayload(n);
        await c.echo(p);
        await c.echo(p.slice(0, Math.max(0, n - 1)));
        const r = await c.close();
        assert.equal(r.code, 1000);
      });
    }
  }

  await check('echo all sizes interleaved on one connection', async () => {
    const c = await Client.open(srv.port);
    SIZES.forEach((n, i) => {
      c.ws.send(textPayload(n, i));
      c.ws.send(binaryPayload(n, i));
    });
    for (const [i, n] of SIZES.entries()) {
      assertEcho(await c.next(), textPayload(n, i));
      assertEcho(await c.next(), binaryPayload(n, i));
    }
    assert.equal((await c.close()).code, 1000);
  });

  await check('echo multibyte UTF-8 text of exactly 65536 bytes', async () => {
    const c = await Client.open(srv.port);
    const s = 'é€𝄞'.repeat(Math.floor(65536 / 9)) + 'a'.repeat(65536 % 9);
    assert.equal(Buffer.byteLength(s), 65536);
    await c.echo(s);
    assert.equal((await c.close()).code, 1000);
  });

  for (const kind of ['text', 'binary']) {
    for (const n of [BIG, BIG + 1]) {
      await check(`echo ${kind} ${n} bytes (--max-message ${BIG + 1})`, async () => {
        const c = await Client.open(big.port);
        await c.echo(kind === 'text' ? textPayload(n, 3) : binaryPayload(n, 3));
        assert.equal((await c.close()).code, 1000);
      });
    }
  }

  await check('fragmented text send (fin:false ... fin:true)', async () => {
    const c = await Client.open(srv.port);
    const frags = ['héllo ', '', 'fragmented ', textPayload(5000, 1), 'wörld'];
    for (let i = 0; i < frags.length; i++) {
      await c.send(frags[i], { fin: i === frags.length - 1 });
    }
    assertEcho(await c.next(), frags.join(''));
    await c.echo('after fragments');
    assert.equal((await c.close()).code, 1000);
  });

  await check('fragmented binary send (fin:false ... fin:true)', async () => {
    const c = await Client.open(srv.port);
    const frags = [1, 0, 125, 126, 5000, 3].map((n, i) => binaryPayload(n, i));
    for (let i = 0; i < frags.length; i++) {
      await c.send(frags[i], { binary: true, fin: i === frags.length - 1 });
    }
    assertEcho(await c.next(), Buffer.concat(frags));
    assert.equal((await c.close()).code, 1000);
  });

  await check('fragments totalling exactly max-message (65536)', async () => {
    const c = await Client.open(srv.port);
    const frags = [0, 1, 2, 3].map((i) => binaryPayload(16384, i));
    for (let i = 0; i < 4; i++) await c.send(frags[i], { binary: true, fin: i === 3 });
    assertEcho(await c.next(), Buffer.concat(frags));
    assert.equal((await c.close()).code, 1000);
  });

  await check('ping between fragments is answered at once', async () => {
    const c = await Client.open(srv.port);
    await c.send('part one, ', { fin: false });
    const pong = withTimeout(new Promise((r) => c.ws.once('pong', r)), 5000, 'pong');
    c.ws.ping(Buffer.from('mid-frag'));
    assert.ok((await pong).equals(Buffer.from('mid-frag')));
    await c.send('part two', { fin: true });
    assertEcho(await c.next(), 'part one, part two');
    assert.equal((await c.close()).code, 1000);
  });

  await check('fragments over max-message -> close 1009', async () => {
    const c = await Client.open(srv.port);
    const frags = [0, 1, 2, 3].map((i) => binaryPayload(16384, i));
    frags.push(Buffer.from('x'));
    for (let i = 0; i < frags.length; i++) {
      c.ws.send(frags[i], { binary: true, fin: i === frags.length - 1 });
    }
    const info = await withTimeout(c.closed, STEP_TIMEOUT_MS, 'close after oversized');
    assert.equal(info.code, 1009);
    assert.equal(c.queue.length, 0, 'no echo expected');
  });

  for (const p of [Buffer.alloc(0), Buffer.from('p'), Buffer.from('herald-ping'),
    binaryPayload(125, 9)]) {
    await check(`ping/pong with ${p.length}-byte payload`, async () => {
      const c = await Client.open(srv.port);
      const pong = withTimeout(new Promise((r) => c.ws.once('pong', r)), 5000, 'pong');
      c.ws.ping(p);
      const got = await pong;
      assert.ok(Buffer.isBuffer(got));
      assert.ok(got.equals(p), `pong payload ${got.toString('hex')} != ${p.toString('hex')}`);
      await c.echo('after ping');
      assert.equal((await c.close()).code, 1000);
    });
  }

  await check('50 pings in flight, pongs in order', async () => {
    const c = await Client.open(srv.port);
    const got = [];
    const all = withTimeout(new Promise((r) => {
      c.ws.on('pong', (d) => { got.push(d.toString()); if (got.length === 50) r(); });
    }), 10000, '50 pongs');
    for (let i = 0; i < 50; i++) c.ws.ping(`p${i}`);
    await all;
    assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => `p${i}`));
    assert.equal((await c.close()).code, 1000);
  });

  await check('clean close 1000, server closes TCP promptly', async () => {
    const c = await Client.open(srv.port);
    await c.echo('bye soon');
    const r = await c.close(1000, 'done');
    assert.equal(r.code, 1000, 'server should echo 1000');
    // ws waits 30 s for the server to end TCP after the close handshake.
    assert.ok(r.ms < 2000, `close took ${r.ms} ms`);
    assert.equal(c.ws.readyState, WebSocket.CLOSED);
    assert.equal(c.error, undefined);
  });

  await check('raw socket: server closes TCP first after close handshake', async () => {
    // ws ends its side once it gets the close reply, which would mask a server
    // that only closes on EOF; a raw socket keeps writing open and waits.
    const sock = net.connect({ host: '127.0.0.1', port: srv.port, allowHalfOpen: true });
    let data = Buffer.alloc(0);
    let upgraded = false;
    let t0 = 0;
    const ended = new Promise((resolve, reject) => {
      sock.on('error', reject);
      sock.on('end', () => resolve(Date.now() - t0));
      sock.on('data', (chunk) => {
        data = Buffer.concat([data, chunk]);
        if (upgraded) return;
        const i = data.indexOf('\r\n\r\n');
        if (i < 0) return;
        const head = data.subarray(0, i).toString();
        data = data.subarray(i + 4);
        upgraded = true;
        if (!head.startsWith('HTTP/1.1 101')) return reject(new Error(`handshake: ${head}`));
        const mask = crypto.randomBytes(4);
        const body = Buffer.from([0x03, 0xe8]); // 1000
        const masked = Buffer.from(body.map((b, k) => b ^ mask[k % 4]));
        t0 = Date.now();
        sock.write(Buffer.concat([Buffer.from([0x88, 0x80 | body.length]), mask, masked]));
      });
    });
    sock.write('GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n' +
      'Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
      `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n\r\n`);
    try {
      const ms = await withTimeout(ended, 2000, 'server FIN after close handshake');
      assert.ok(data.equals(Buffer.from([0x88, 0x02, 0x03, 0xe8])),
        `expected close 1000 reply, got ${data.toString('hex')}`);
      assert.ok(ms < 2000, `FIN after ${ms} ms`);
    } finally {
      sock.destroy();
    }
  });

  await check('close 4321 echoed', async () => {
    const c = await Client.open(srv.port);
    const r = await c.close(4321, 'custom');
    assert.equal(r.code, 4321);
    assert.ok(r.ms < 2000, `close took ${r.ms} ms`);
  });

  await check('subprotocol herald.v1 selected among offers', async () => {
    const c = await Client.open(srv.port, { protocols: ['other.v0', SUBPROTO] });
    assert.equal(c.ws.protocol, SUBPROTO);
    await c.echo('proto');
    assert.equal((await c.close()).code, 1000);
  });

  await check('no subprotocol when none offered', async () => {
    const c = await Client.open(srv.port, { protocols: [] });
    assert.equal(c.ws.protocol, '');
    await c.echo(Buffer.from('no proto'));
    assert.equal((await c.close()).code, 1000);
  });

  await check('200 concurrent connections echoing', async () => {
    const N = 200;
    const clients = await Promise.all(Array.from({ length: N }, () => Client.open(srv.port)));
    assert.equal(clients.length, N);
    await Promise.all(clients.map(async (c, i) => {
      assert.equal(c.ws.protocol, SUBPROTO);
      for (let j = 0; j < 5; j++) {
        await c.echo(`${i}:${j}:` + textPayload(j * 50, i));
        await c.echo(binaryPayload(j * 50 + 1, i));
      }
    }));
    const closes = await Promise.all(clients.map((c) => c.close()));
    for (const r of closes) assert.equal(r.code, 1000);
  });

  for (const kind of ['text', 'binary']) {
    await check(`oversized ${kind} (${DEFAULT_MAX + 1}) -> close 1009`, async () => {
      const c = await Client.open(srv.port);
      c.ws.send(kind === 'text' ? textPayload(DEFAULT_MAX + 1) : binaryPayload(DEFAULT_MAX + 1));
      const info = await withTimeout(c.closed, STEP_TIMEOUT_MS, 'close after oversized');
      assert.equal(info.code, 1009);
      assert.equal(c.queue.length, 0, 'no echo expected');
    });
  }

  await check('server still serves after 1009', async () => {
    const c = await Client.open(srv.port);
    await c.echo('still alive');
    assert.equal((await c.close()).code, 1000);
  });

  await check('SIGTERM -> clients see 1001, heraldd exits 0', async () => {
    const clients = await Promise.all(Array.from({ length: 5 }, () => Client.open(srv.port)));
    for (const [i, c] of clients.entries()) await c.echo(`before shutdown ${i}`);
    srv.proc.kill('SIGTERM');
    const infos = await withTimeout(Promise.all(clients.map((c) => c.closed)), 10000,
      'close frames after SIGTERM');
    for (const info of infos) assert.equal(info.code, 1001);
    const { code, signal } = await withTimeout(srv.exited, 10000, 'heraldd exit');
    assert.equal(signal, null, `heraldd killed by ${signal}\n${srv.stderr()}`);
    assert.equal(code, 0, `heraldd exit ${code}\n${srv.stderr()}`);
  });

  await check('second server: SIGTERM with no clients exits 0', async () => {
    big.proc.kill('SIGTERM');
    const { code, signal } = await withTimeout(big.exited, 10000, 'heraldd exit');
    assert.equal(signal, null);
    assert.equal(code, 0, `heraldd exit ${code}\n${big.stderr()}`);
  });
}

try {
  await main();
} catch (e) {
  failures++;
  console.log(`FAIL setup: ${e && e.stack ? e.stack : e}`);
}
for (const s of servers) s.proc.kill('SIGKILL');
clearTimeout(watchdog);
console.log(`${passes} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
