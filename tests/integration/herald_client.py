"""Shared helpers for Herald's protocol integration tests.

Used by test_auth.py, test_backend_api.py, test_client_protocol.py and
test_isolation_stress.py.  Only the standard library, python3-websockets and
(for RS256/ES256 tokens) the ``openssl`` command line tool.

Tokens
    ``jwt_secret()``                  HERALD_JWT_SECRET as bytes (the test default
                                      of herald_proc unless set)
    ``mint(sub, exp=..., **claims)``  an HS256 token; ``header=`` overrides header
                                      fields, ``alg=`` the header alg, ``key=`` the key,
                                      ``omit=`` claim names to leave out,
                                      ``signature=`` raw signature bytes
    ``Keypair(kind)``                 an RSA-2048 or EC P-256 key made with openssl;
                                      ``.public_pem_path``, ``.sign(signing_input)``
    ``mint_asym(keypair, sub, ...)``  an RS256/ES256 token signed with it

Backend API
    ``Api(h)``  one keep-alive http.client connection; ``.request(method, path,
    body=None, key=...) -> Reply(status, headers, body, json)``; ``.publish(...)``,
    ``.publish_batch(events)``, ``.disconnect(user)``, ``.presence(user)``,
    ``.metrics() -> {name: value}``, ``.ws_health()``.

WebSocket
    ``raw_handshake(h, path, headers)`` sends an upgrade request on a raw
    socket and returns the HTTP response (status, headers, body) so a refused
    handshake's status and JSON body can be checked.
    ``ws_connect(h, token=None, via="header"|"query"|"message", ...)`` opens a
    websockets client (and sends the auth message when via="message").
    ``recv_json(ws, timeout)`` / ``expect_close(ws, timeout) -> code``.
    ``event(user, i, ...)`` builds a publishable event.

Every network wait here is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse

import websockets
from websockets.exceptions import ConnectionClosed

from herald_proc import DEFAULT_ENV

SUBPROTO = "herald.v1"
API_KEY_DEFAULT = DEFAULT_ENV["HERALD_API_KEY"]

EVENT_TYPES = ("agent_started", "agent_thinking", "tool_executing", "tool_completed",
               "agent_message", "agent_completed")


# ---------------------------------------------------------------------------- tokens

def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def jwt_secret() -> bytes:
    return os.environ.get("HERALD_JWT_SECRET", DEFAULT_ENV["HERALD_JWT_SECRET"]).encode()


def api_key() -> str:
    return os.environ.get("HERALD_API_KEY", API_KEY_DEFAULT)


def _claims(sub, exp, omit, extra):
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + 3600 if exp is None else exp}
    claims.update(extra)
    for k in omit:
        claims.pop(k, None)
    return claims


def _signing_input(header: dict, claims: dict) -> bytes:
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    p = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{h}.{p}".encode("ascii")


def mint(sub="alice", exp=None, *, alg="HS256", key=None, header=None, omit=(),
         signature=None, **extra) -> str:
    """An HS256-signed JWT (whatever ``alg`` the header claims).

    ``exp`` defaults to now + 1 h; ``omit`` drops claims; ``extra`` adds claims
    (``nbf``, ``aud``, ``iss``...).  ``signature`` replaces the HMAC bytes.
    """
    hdr = {"alg": alg, "typ": "JWT"}
    if header:
        hdr.update(header)
    si = _signing_input(hdr, _claims(sub, exp, omit, extra))
    if signature is None:
        if alg == "none":
            signature = b""
        else:
            signature = hmac.new(key if key is not None else jwt_secret(), si,
                                 hashlib.sha256).digest()
    return si.decode() + "." + b64url(signature)


def have_openssl() -> bool:
    return shutil.which("openssl") is not None


class Keypair:
    """An RSA-2048 ("rsa") or EC P-256 ("ec") key pair made with the openssl CLI."""

    def __init__(self, kind: str):
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix="herald-key-")
        self.private_pem_path = os.path.join(self.dir, "key.pem")
        self.public_pem_path = os.path.join(self.dir, "pub.pem")
        if kind == "rsa":
            gen = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                   "rsa_keygen_bits:2048", "-out", self.private_pem_path]
        else:
            gen = ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                   "ec_paramgen_curve:P-256", "-out", self.private_pem_path]
        subprocess.run(gen, check=True, capture_output=True, timeout=60)
        subprocess.run(["openssl", "pkey", "-in", self.private_pem_path, "-pubout", "-out",
                        self.public_pem_path], check=True, capture_output=True, timeout=30)

    def sign(self, data: bytes) -> bytes:
        r = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.private_pem_path],
                           input=data, check=True, capture_output=True, timeout=30)
        sig = r.stdout
        if self.kind == "ec":
            sig = _der_ecdsa_to_raw(sig, 32)
        return sig

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def _der_ecdsa_to_raw(der: bytes, n: int) -> bytes:
    """ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } -> r || s (JWS form)."""
    def read_len(b, i):
        ln = b[i]
        i += 1
        if ln & 0x80:
            k = ln & 0x7F
            ln = int.from_bytes(b[i:i + k], "big")
            i += k
        return ln, i

    assert der[0] == 0x30
    _, i = read_len(der, 1)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        ln, i = read_len(der, i + 1)
        v = int.from_bytes(der[i:i + ln], "big")
        i += ln
        out += v.to_bytes(n, "big")
    return out


def mint_asym(kp: Keypair, sub="alice", exp=None, *, alg=None, omit=(), **extra) -> str:
    alg = alg or ("RS256" if kp.kind == "rsa" else "ES256")
    si = _signing_input({"alg": alg, "typ": "JWT"}, _claims(sub, exp, omit, extra))
    return si.decode() + "." + b64url(kp.sign(si))


# ---------------------------------------------------------------------------- HTTP API

class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"<Reply {self.status} {self.body[:300]!r}>"


def assert_error_body(r: Reply, status: int, code: str | None = None):
    """r is an HTTP error with the contract's {"error":{"code","message"}} body."""
    assert r.status == status, f"expected HTTP {status}, got {r!r}"
    j = r.json
    assert isinstance(j, dict) and isinstance(j.get("error"), dict), \
        f"error body is not {{'error':{{...}}}}: {r.body!r}"
    assert isinstance(j["error"].get("code"), str) and j["error"]["code"], r.body
    assert isinstance(j["error"].get("message"), str), r.body
    if code is not None:
        assert j["error"]["code"] == code, f"expected code {code!r}: {r.body!r}"
    return j["error"]


class Api:
    """A keep-alive HTTP/1.1 connection to the backend API."""

    def __init__(self, h, key=None, timeout=30.0):
        self.host, self.port = h.host, h.port
        self.key = api_key() if key is None else key
        self.timeout = timeout
        self.conn = None
        self.connects = 0

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connects += 1
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, key=..., headers=None) -> Reply:
        hdrs = {}
        k = self.key if key is ... else key
        if k is not None:
            hdrs["Authorization"] = f"Bearer {k}"
        if body is not None:
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body, separators=(",", ":"))
            if isinstance(body, str):
                body = body.encode()
            hdrs["Content-Type"] = "application/json"
        if headers:
            hdrs.update(headers)
        reused = self.conn is not None
        c = self._conn()
        try:
            c.request(method, path, body=body, headers=hdrs)
            resp = c.getresponse()
            data = resp.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.close()
            # An idle keep-alive connection the server timed out: GETs are safe to
            # retry once on a new connection (POSTs are never retried).
            if not (reused and method == "GET"):
                raise
            c = self._conn()
            c.request(method, path, body=body, headers=hdrs)
            resp = c.getresponse()
            data = resp.read()
        except (http.client.HTTPException, OSError):
            self.close()
            raise
        if resp.will_close:
            self.close()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                     data.decode("utf-8", "replace"))

    def publish(self, user_id="alice", type="agent_thinking", data=None, thread_id="t1",
                run_id="r1", **kw) -> Reply:
        ev = {"user_id": user_id, "type": type, "data": {"text": "hi"} if data is None else data}
        if thread_id is not None:
            ev["thread_id"] = thread_id
        if run_id is not None:
            ev["run_id"] = run_id
        return self.request("POST", "/api/v1/publish", ev, **kw)

    def publish_ok(self, *a, **kw) -> dict:
        r = self.publish(*a, **kw)
        assert r.status == 200, r
        return r.json

    def publish_batch(self, events, **kw) -> Reply:
        return self.request("POST", "/api/v1/publish", {"events": events}, **kw)

    def disconnect(self, user_id, **kw) -> Reply:
        return self.request("POST", "/api/v1/disconnect", {"user_id": user_id}, **kw)

    def presence(self, user_id) -> int:
        r = self.request("GET", "/api/v1/presence/" + urllib.parse.quote(user_id, safe=""))
        assert r.status == 200, r
        assert r.json["user_id"] == user_id, r
        return r.json["connections"]

    def wait_presence(self, user_id, n, timeout=5.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            got = self.presence(user_id)
            if got == n or time.monotonic() > deadline:
                return got
            time.sleep(0.02)

    def metrics(self) -> dict:
        r = self.request("GET", "/metrics", key=None)
        assert r.status == 200, r
        return parse_metrics(r.body)

    def ws_health(self) -> Reply:
        return self.request("GET", "/ws-health", key=None)


def parse_metrics(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def event(user_id, i=0, type="agent_message", **data):
    return {"user_id": user_id, "thread_id": "t1", "run_id": "r1", "type": type,
            "data": data or {"delta": f"chunk {i}"}}


# ---------------------------------------------------------------------------- raw HTTP

def raw_request(h, data: bytes, timeout=5.0) -> bytes:
    """Send raw bytes, read until the server closes or a full response arrives."""
    with socket.create_connection((h.host, h.port), timeout=timeout) as s:
        s.sendall(data)
        return _read_response(s, timeout)


def _read_response(s, timeout) -> bytes:
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
        head, sep, body = buf.partition(b"\r\n\r\n")
        if sep:
            m = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
            if m and len(body) >= int(m[0].split(b":", 1)[1]):
                break
            if head.startswith(b"HTTP/1.1 101"):
                break
    return buf


def send_while_reading(h, data: bytes, timeout=10.0) -> bytes:
    """Send ``data`` while reading: a server may answer (413) and close before the
    whole request is written.  Returns what was received (a reset after the
    response arrived is not an error)."""
    import select
    s = socket.create_connection((h.host, h.port), timeout=timeout)
    s.setblocking(False)
    off, got = 0, b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, w, _ = select.select([s], [s] if off < len(data) else [], [], 0.2)
            try:
                if r:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                if w and off < len(data):
                    off += s.send(data[off:off + 65536])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                break
            head, sep, body = got.partition(b"\r\n\r\n")
            if sep:
                m = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                if m and len(body) >= int(m[0].split(b":", 1)[1]):
                    break
    finally:
        s.close()
    return got


def parse_response(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return Reply(status, headers, body.decode("utf-8", "replace"))


def raw_handshake(h, path="/ws", headers=None, host=None, timeout=5.0) -> Reply:
    """A GET upgrade on a raw socket: returns the HTTP response (101 or an error)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1",
             f"Host: {host or f'{h.host}:{h.port}'}",
             "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    raw = raw_request(h, ("\r\n".join(lines) + "\r\n\r\n").encode(), timeout)
    return parse_response(raw)


# ---------------------------------------------------------------------------- WebSocket

def run(coro, timeout=30.0):
    """Run a coroutine under a hard bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_uri(h, query=None):
    q = ("?" + urllib.parse.urlencode(query)) if query else ""
    return f"ws://{h.host}:{h.port}/ws{q}"


async def ws_connect(h, token=None, via="header", query=None, headers=None, origin=None,
                     subprotocols=(SUBPROTO,), max_size=1 << 22, open_timeout=10, **kw):
    """Connect to /ws presenting ``token`` via the header, the query or an auth message."""
    q = dict(query or {})
    hdrs = dict(headers or {})
    if token is not None and via == "header":
        hdrs["Authorization"] = f"Bearer {token}"
    elif token is not None and via == "query":
        q["access_token"] = token
    ws = await websockets.connect(
        ws_uri(h, q), extra_headers=hdrs, origin=origin,
        subprotocols=list(subprotocols) if subprotocols else None, max_size=max_size,
        open_timeout=open_timeout, close_timeout=5, compression=None, ping_interval=None,
        **kw)
    if token is not None and via == "message":
        await ws.send(json.dumps({"type": "auth", "token": token}))
    return ws


async def recv_json(ws, timeout=5.0):
    msg = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(msg, str), f"expected a text frame, got {msg!r}"
    return json.loads(msg)


async def recv_welcome(ws, user, timeout=5.0) -> dict:
    w = await recv_json(ws, timeout)
    assert w.get("type") == "welcome", f"first message is not welcome: {w}"
    assert w.get("user_id") == user, f"welcome for {w.get('user_id')!r}, expected {user!r}"
    return w


async def expect_close(ws, timeout=5.0):
    """Wait for the server to close; return (code, reason).  Fails on a data frame."""
    try:
        while True:
            msg = await asyncio.wait_for(ws.recv(), timeout)
            raise AssertionError(f"expected a close, got a message {msg!r}")
    except ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else None
    except asyncio.TimeoutError:
        raise AssertionError(f"no close within {timeout}s")


async def expect_close_skipping(ws, timeout=5.0):
    """Like expect_close but ignores (returns) messages received before the close."""
    got = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no close within {timeout}s (got {got})")
            got.append(await asyncio.wait_for(ws.recv(), left))
    except ConnectionClosed as e:
        return (e.rcvd.code if e.rcvd else None), got
    except asyncio.TimeoutError:
        raise AssertionError(f"no close within {timeout}s (got {got})")


async def no_message(ws, wait=0.3):
    """Assert nothing arrives within ``wait`` s (and the connection is open)."""
    try:
        msg = await asyncio.wait_for(ws.recv(), wait)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message {msg!r}")


async def in_thread(fn, *a, **kw):
    """Run blocking fn (an HTTP call) without stalling the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*a, **kw))
