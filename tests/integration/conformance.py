"""RFC 6455 conformance suite for heraldd, over raw sockets.

Run:  /usr/bin/python3 -m pytest tests/integration/conformance.py

Every scenario is named after the RFC 6455 section it checks (``test_4_2_1_*``
is section 4.2.1, ``test_5_5_1_*`` is 5.5.1, ...).  ``test_http_*`` cover the
plain HTTP/1.1 side of the listener (RFC 7230) and ``test_herald_*`` the
daemon contract itself.

The daemon is started by ``herald_proc.start_heraldd`` (binary from
$HERALD_BIN or build/bin/heraldd).  No WebSocket library is used: frames are
built and parsed here, and every socket operation has a timeout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_proc import start_heraldd  # noqa: E402

HOST = "127.0.0.1"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT_TIMEOUT = 5.0

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
OP_NAMES = {0: "CONT", 1: "TEXT", 2: "BINARY", 8: "CLOSE", 9: "PING", 10: "PONG"}


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------

def _server_fixture(*args):
    h = start_heraldd(*args)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def herald():
    """Default server: /echo, default --max-message (65536)."""
    yield from _server_fixture()


@pytest.fixture(scope="module")
def herald_big():
    """Server with a 16 MiB message limit."""
    yield from _server_fixture("--max-message", "16777216")


SMALL_LIMIT = 1000


@pytest.fixture(scope="module")
def herald_small():
    """Server with a 1000-byte message limit."""
    yield from _server_fixture("--max-message", str(SMALL_LIMIT))


# --------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------

def build_frame(opcode, payload=b"", *, fin=True, rsv=0, mask=True,
                mask_key=None, length=None, raw_len64=None):
    """Encode one frame.

    rsv: 3-bit value (4=RSV1, 2=RSV2, 1=RSV3).  mask: mask with a random key
    (or ``mask_key``).  length: announce this length instead of len(payload)
    (the payload bytes are still appended as given).  raw_len64: force the
    64-bit length form with this raw 8-byte value.
    """
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if raw_len64 is not None:
        hdr = struct.pack("!BBQ", b0, mbit | 127, raw_len64)
    elif n < 126:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return hdr + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return hdr + key + xor_mask(payload, key)


def xor_mask(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


def text_frame(s, **kw):
    return build_frame(OP_TEXT, s, **kw)


def binary_frame(b, **kw):
    return build_frame(OP_BINARY, b, **kw)


def ping_frame(b=b"", **kw):
    return build_frame(OP_PING, b, **kw)


def close_frame(code=None, reason=b"", **kw):
    return build_frame(OP_CLOSE, close_payload(code, reason), **kw)


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    def __repr__(self):
        p = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        return (f"Frame(fin={self.fin}, rsv={self.rsv}, "
                f"op={OP_NAMES.get(self.opcode, hex(self.opcode))}, "
                f"len={len(self.payload)}, payload={p!r})")


class Closed(Exception):
    """The server closed TCP (EOF or reset) while we expected bytes."""


# --------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------

class Conn:
    """A raw TCP connection with a read buffer and WebSocket helpers."""

    def __init__(self, port, timeout=DEFAULT_TIMEOUT):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.timeout = timeout

    # -- raw io -------------------------------------------------------------
    def send(self, data: bytes):
        self.sock.sendall(data)

    def send_chopped(self, data: bytes, seed=0, max_piece=7):
        """Send in 1..max_piece byte pieces (TCP_NODELAY), with short pauses."""
        rnd = random.Random(seed)
        i = n = 0
        while i < len(data):
            k = rnd.randint(1, max_piece)
            self.sock.sendall(data[i:i + k])
            i += k
            n += 1
            if n <= 32 or n % 128 == 0:
                time.sleep(0.001)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline exceeded")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError as e:
            raise Closed("connection reset by server") from e
        finally:
            self.sock.settimeout(self.timeout)
        if not chunk:
            raise Closed("server closed the TCP connection (EOF)")
        self.buf += chunk

    def recv_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def recv_until(self, marker: bytes, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[:i + len(marker)])
                del self.buf[:i + len(marker)]
                return out
            if len(self.buf) > limit:
                raise AssertionError(f"no {marker!r} within {limit} bytes")
            self._fill(deadline)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- http ---------------------------------------------------------------
    def read_http_response(self, timeout=DEFAULT_TIMEOUT, body=True):
        """Returns (status, headers[(lower-name, value)], body)."""
        deadline = time.monotonic() + timeout
        head = self.recv_until(b"\r\n\r\n", deadline).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        assert len(parts) >= 2 and parts[0].startswith("HTTP/1."), \
            f"bad status line: {lines[0]!r}"
        status = int(parts[1])
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        data = b""
        if body and status != 101:
            te = hdr(headers, "transfer-encoding")
            cl = hdr(headers, "content-length")
            if te and "chunked" in te.lower():
                data = self._read_chunked(deadline)
            elif cl is not None:
                data = self.recv_exact(int(cl), deadline)
        return status, headers, data

    def _read_chunked(self, deadline):
        out = b""
        while True:
            size = int(self.recv_until(b"\r\n", deadline).split(b";")[0], 16)
            if size == 0:
                while self.recv_until(b"\r\n", deadline) != b"\r\n":
                    pass
                return out
            out += self.recv_exact(size, deadline)
            self.recv_exact(2, deadline)

    # -- websocket ----------------------------------------------------------
    def send_frame(self, opcode, payload=b"", **kw):
        self.send(build_frame(opcode, payload, **kw))

    def read_frame(self, timeout=DEFAULT_TIMEOUT) -> Frame:
        deadline = time.monotonic() + timeout
        b0, b1 = self.recv_exact(2, deadline)
        assert not (b1 & 0x80), \
            f"server frame is masked (byte1={b1:#04x}); expected MASK=0 (RFC 6455 5.1)"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.recv_exact(2, deadline))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.recv_exact(8, deadline))
            assert n < (1 << 63), f"server sent 64-bit length with MSB set: {n:#x}"
        payload = self.recv_exact(n, deadline)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload)

    def read_message_frame(self, timeout=DEFAULT_TIMEOUT) -> Frame:
        """Next frame, asserting it is a complete, RSV-clean data frame."""
        f = self.read_frame(timeout)
        assert f.opcode in (OP_TEXT, OP_BINARY), \
            f"expected a data frame, got {f} (close={decode_close(f)})"
        assert f.fin, f"server data frame not FIN (expected unfragmented): {f}"
        assert f.rsv == 0, f"server data frame has RSV bits {f.rsv}: {f}"
        return f

    def read_close(self, timeout=DEFAULT_TIMEOUT):
        """Read the next frame, which must be a close; returns (code, reason)."""
        try:
            f = self.read_frame(timeout)
        except Closed as e:
            raise AssertionError(f"expected a close frame, but {e}") from None
        except socket.timeout:
            raise AssertionError(
                f"expected a close frame within {timeout}s, got nothing") from None
        assert f.opcode == OP_CLOSE, f"expected a close frame, got {f}"
        assert f.fin and f.rsv == 0, f"malformed server close frame {f}"
        code, reason = decode_close(f)
        return code, reason

    def expect_eof(self, timeout=DEFAULT_TIMEOUT):
        """The server must close TCP within ``timeout``, sending nothing more."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
                assert not self.buf, \
                    f"expected TCP close, got more bytes: {bytes(self.buf[:64])!r}"
        except Closed:
            return
        except socket.timeout:
            raise AssertionError(
                f"server did not close the TCP connection within {timeout}s") from None

    def expect_close(self, code, timeout=DEFAULT_TIMEOUT, reply=True):
        """Next frame must be a close with ``code`` (int, or a tuple of allowed
        codes); then (optionally) answer with a close and require TCP EOF."""
        got, reason = self.read_close(timeout)
        allowed = code if isinstance(code, tuple) else (code,)
        assert got in allowed, \
            f"close code: expected {code}, got {got} (reason {reason!r})"
        if reply:
            try:
                self.send(close_frame(got if got not in (None, 1005) else None))
            except OSError:
                pass
        self.expect_eof(timeout)
        return got, reason

    def echo(self, opcode, payload, timeout=DEFAULT_TIMEOUT):
        """Send one message and require the identical message back."""
        self.send_frame(opcode, payload)
        f = self.read_message_frame(timeout)
        assert f.opcode == opcode, f"echo opcode: expected {opcode}, got {f}"
        assert f.payload == payload, \
            f"echo payload mismatch: expected {len(payload)} bytes " \
            f"{payload[:32]!r}..., got {len(f.payload)} bytes {f.payload[:32]!r}..."
        return f


def decode_close(f: Frame):
    if f.opcode != OP_CLOSE:
        return None
    p = f.payload
    if not p:
        return None, b""
    assert len(p) >= 2, f"server close frame with 1-byte payload {p!r}"
    (code,) = struct.unpack("!H", p[:2])
    try:
        p[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise AssertionError(f"server close reason is not UTF-8: {p[2:]!r}") from None
    return code, p[2:]


def hdr(headers, name):
    """Combined value of header ``name`` (None if absent)."""
    vals = [v for k, v in headers if k == name.lower()]
    return ", ".join(vals) if vals else None


def tokens(value):
    return [t.strip().lower() for t in (value or "").split(",") if t.strip()]


# --------------------------------------------------------------------------
# Handshake helpers
# --------------------------------------------------------------------------

def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def request(port, path="/echo", method="GET", version="HTTP/1.1", key=None,
            omit=(), replace=None, extra=()):
    """Build a handshake request.  omit: header names to drop; replace:
    {name: value} overrides; extra: additional (name, value) pairs."""
    headers = [
        ("Host", f"{HOST}:{port}"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key or new_key()),
        ("Sec-WebSocket-Version", "13"),
    ]
    replace = {k.lower(): v for k, v in (replace or {}).items()}
    omit = {o.lower() for o in omit}
    lines = [f"{method} {path} {version}"]
    for name, value in headers:
        if name.lower() in omit:
            continue
        lines.append(f"{name}: {replace.get(name.lower(), value)}")
    for name, value in extra:
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_get(port, path, extra=()):
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def send_request(port, raw: bytes, timeout=DEFAULT_TIMEOUT):
    """Send a raw request; returns (conn, status, headers, body)."""
    c = Conn(port)
    c.send(raw)
    status, headers, body = c.read_http_response(timeout)
    return c, status, headers, body


def expect_rejected(port, raw: bytes, allowed=(400,)):
    """The handshake must be refused with one of ``allowed`` statuses."""
    c = Conn(port)
    try:
        c.send(raw)
        status, headers, body = c.read_http_response()
        assert status in allowed, \
            f"status: expected one of {allowed}, got {status} {headers}"
        return status, headers, body
    finally:
        c.close()


def open_ws(port, path="/echo", extra=(), key=None, replace=None):
    """Complete a handshake; returns (conn, headers)."""
    key = key or new_key()
    c = Conn(port)
    c.send(request(port, path, key=key, extra=extra, replace=replace))
    status, headers, _ = c.read_http_response()
    assert status == 101, f"handshake: expected 101, got {status} {headers}"
    assert hdr(headers, "sec-websocket-accept") == accept_for(key), \
        f"Sec-WebSocket-Accept: expected {accept_for(key)!r}, got " \
        f"{hdr(headers, 'sec-websocket-accept')!r}"
    return c, headers


@pytest.fixture
def ws(herald):
    c, _ = open_ws(herald.port)
    yield c
    c.close()


@pytest.fixture
def ws_small(herald_small):
    c, _ = open_ws(herald_small.port)
    yield c
    c.close()


def text_payload(n: int) -> bytes:
    """Exactly n bytes of valid UTF-8 mixing 1-, 2-, 3- and 4-byte sequences."""
    unit = "aé€😀".encode()  # 1+2+3+4 = 10 bytes
    return unit * (n // len(unit)) + b"a" * (n % len(unit))


def binary_payload(n: int, seed=0) -> bytes:
    return random.Random(seed ^ n).randbytes(n)


# ==========================================================================
# 4. Opening handshake
# ==========================================================================

def test_4_2_2_valid_handshake_101_with_accept(herald):
    key = new_key()
    c = Conn(herald.port)
    try:
        c.send(request(herald.port, key=key))
        status, headers, _ = c.read_http_response()
        assert status == 101, f"expected 101, got {status}"
        assert hdr(headers, "sec-websocket-accept") == accept_for(key), \
            f"accept: expected {accept_for(key)}, got {hdr(headers, 'sec-websocket-accept')}"
        assert "websocket" in tokens(hdr(headers, "upgrade")), \
            f"Upgrade: expected websocket, got {hdr(headers, 'upgrade')!r}"
        assert "upgrade" in tokens(hdr(headers, "connection")), \
            f"Connection: expected Upgrade, got {hdr(headers, 'connection')!r}"
        assert hdr(headers, "sec-websocket-protocol") is None
        assert hdr(headers, "sec-websocket-extensions") is None
        c.echo(OP_TEXT, b"hello")
    finally:
        c.close()


def test_4_2_2_rfc_sample_key_accept(herald):
    # RFC 6455 section 1.3 sample nonce
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    c, headers = open_ws(herald.port, key=key)
    c.close()
    assert hdr(headers, "sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("upgrade,connection", [
    ("WebSocket", "upgrade"),
    ("websocket", "keep-alive, Upgrade"),
    ("WEBSOCKET", "Upgrade, keep-alive"),
    ("websocket", "KEEP-ALIVE,UPGRADE"),
], ids=["mixed_case", "keepalive_then_upgrade", "upgrade_then_keepalive", "no_space_upper"])
def test_4_2_1_upgrade_connection_token_lists_case_insensitive(herald, upgrade, connection):
    c, _ = open_ws(herald.port, replace={"Upgrade": upgrade, "Connection": connection})
    try:
        c.echo(OP_TEXT, b"tokens")
    finally:
        c.close()


def test_4_2_1_header_names_case_insensitive(herald):
    key = new_key()
    raw = (f"GET /echo HTTP/1.1\r\nhost: {HOST}\r\nUPGRADE: websocket\r\n"
           f"connection: Upgrade\r\nsec-websocket-key: {key}\r\n"
           f"SEC-WEBSOCKET-VERSION: 13\r\n\r\n").encode()
    c, status, headers, _ = send_request(herald.port, raw)
    try:
        assert status == 101, f"expected 101, got {status}"
        assert hdr(headers, "sec-websocket-accept") == accept_for(key)
    finally:
        c.close()


def test_4_2_1_missing_host_400(herald):
    expect_rejected(herald.port, request(herald.port, omit=["Host"]))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_4_2_1_non_get_method_400(herald, method):
    expect_rejected(herald.port, request(herald.port, method=method))


def test_4_2_1_http_1_0_400(herald):
    expect_rejected(herald.port, request(herald.port, version="HTTP/1.0"))


@pytest.mark.parametrize("key", [
    None,
    "",
    "not base64 at all!!",
    base64.b64encode(b"x" * 15).decode(),
    base64.b64encode(b"x" * 17).decode(),
    base64.b64encode(b"x" * 16).decode().rstrip("="),
    "!!!!!!!!!!!!!!!!!!!!!!==",
], ids=["missing", "empty", "not_base64", "15_bytes", "17_bytes",
        "unpadded_22_chars", "24_chars_invalid_alphabet"])
def test_4_2_1_invalid_sec_websocket_key_400(herald, key):
    if key is None:
        raw = request(herald.port, omit=["Sec-WebSocket-Key"])
    else:
        raw = request(herald.port, replace={"Sec-WebSocket-Key": key})
    expect_rejected(herald.port, raw)


def test_4_2_1_duplicate_sec_websocket_key_400(herald):
    raw = request(herald.port, extra=[("Sec-WebSocket-Key", new_key())])
    expect_rejected(herald.port, raw)


@pytest.mark.parametrize("omit,replace", [
    (["Upgrade"], None),
    (["Connection"], None),
    ([], {"Upgrade": "h2c"}),
    ([], {"Connection": "keep-alive"}),
], ids=["missing_upgrade", "missing_connection", "upgrade_not_websocket",
        "connection_without_upgrade"])
def test_4_2_1_bad_upgrade_or_connection_400(herald, omit, replace):
    expect_rejected(herald.port, request(herald.port, omit=omit, replace=replace))


@pytest.mark.parametrize("version", ["8", "7", "14"])
def test_4_4_unsupported_version_426(herald, version):
    _, headers, _ = expect_rejected(
        herald.port, request(herald.port, replace={"Sec-WebSocket-Version": version}),
        allowed=(426,))
    assert tokens(hdr(headers, "sec-websocket-version")) == ["13"], \
        f"426 must carry Sec-WebSocket-Version: 13, got {hdr(headers, 'sec-websocket-version')!r}"


def test_4_2_1_missing_version_not_101(herald):
    expect_rejected(herald.port, request(herald.port, omit=["Sec-WebSocket-Version"]),
                    allowed=(400, 426))


@pytest.mark.parametrize("offer", ["herald.v1", "chat, herald.v1", "herald.v1, chat"],
                         ids=["alone", "last_in_list", "first_in_list"])
def test_4_2_2_subprotocol_herald_v1_selected(herald, offer):
    c, headers = open_ws(herald.port, extra=[("Sec-WebSocket-Protocol", offer)])
    c.close()
    assert hdr(headers, "sec-websocket-protocol") == "herald.v1", \
        f"Sec-WebSocket-Protocol: expected 'herald.v1', got {hdr(headers, 'sec-websocket-protocol')!r}"


@pytest.mark.parametrize("offer", ["chat", "chat, superchat", "herald.v2"],
                         ids=["chat", "chat_superchat", "herald_v2"])
def test_4_2_2_unknown_subprotocol_not_selected(herald, offer):
    c, headers = open_ws(herald.port, extra=[("Sec-WebSocket-Protocol", offer)])
    try:
        assert hdr(headers, "sec-websocket-protocol") is None, \
            f"expected no Sec-WebSocket-Protocol, got {hdr(headers, 'sec-websocket-protocol')!r}"
        c.echo(OP_TEXT, b"still works")
    finally:
        c.close()


def test_9_1_permessage_deflate_not_negotiated(herald):
    c, headers = open_ws(herald.port, extra=[
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")])
    try:
        assert hdr(headers, "sec-websocket-extensions") is None, \
            f"expected no Sec-WebSocket-Extensions, got {hdr(headers, 'sec-websocket-extensions')!r}"
        c.echo(OP_TEXT, b"uncompressed " * 20)  # read_message_frame asserts RSV1=0
    finally:
        c.close()


def test_4_2_1_frame_in_same_segment_as_handshake(herald):
    key = new_key()
    c = Conn(herald.port)
    try:
        c.send(request(herald.port, key=key) + text_frame(b"early bird")
               + binary_frame(b"\x00\x01early"))
        status, headers, _ = c.read_http_response()
        assert status == 101, f"expected 101, got {status}"
        f = c.read_message_frame()
        assert (f.opcode, f.payload) == (OP_TEXT, b"early bird"), f"got {f}"
        f = c.read_message_frame()
        assert (f.opcode, f.payload) == (OP_BINARY, b"\x00\x01early"), f"got {f}"
    finally:
        c.close()


def test_4_2_1_oversized_headers_rejected(herald):
    raw = request(herald.port, extra=[(f"X-Pad-{i}", "a" * 1000) for i in range(10)])
    assert len(raw) > 9000
    c = Conn(herald.port)
    try:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            return  # closed while we were still sending: acceptable
        try:
            status, headers, _ = c.read_http_response()
        except Closed:
            return  # closed without a response: acceptable
        assert status in (400, 431), f"expected 400/431 or close, got {status}"
    finally:
        c.close()


def test_4_1_unknown_path_404_json(herald):
    c, status, headers, body = send_request(herald.port, request(herald.port, path="/nope"))
    c.close()
    assert status == 404, f"expected 404, got {status}"
    try:
        json.loads(body)
    except ValueError:
        raise AssertionError(f"404 body is not JSON: {body!r}") from None


def test_4_1_plain_get_on_echo_path_not_101(herald):
    expect_rejected(herald.port, http_get(herald.port, "/echo"), allowed=(400, 426))


# ==========================================================================
# HTTP/1.1 basics of the listener (RFC 7230)
# ==========================================================================

def _check_health(status, headers, body):
    assert status == 200, f"/health: expected 200, got {status}"
    ctype = hdr(headers, "content-type") or ""
    assert "json" in ctype.lower(), f"/health content-type: expected JSON, got {ctype!r}"
    doc = json.loads(body)
    assert doc.get("status") == "ok", f"/health: expected status 'ok', got {doc!r}"


def test_http_health_200_json(herald):
    c, status, headers, body = send_request(herald.port, http_get(herald.port, "/health"))
    c.close()
    _check_health(status, headers, body)


def test_http_6_3_keep_alive_two_requests(herald):
    c = Conn(herald.port)
    try:
        for _ in range(2):
            c.send(http_get(herald.port, "/health"))
            _check_health(*c.read_http_response())
    finally:
        c.close()


def test_http_6_3_2_pipelined_requests_answered_in_order(herald):
    c = Conn(herald.port)
    try:
        c.send(http_get(herald.port, "/health") + http_get(herald.port, "/health")
               + http_get(herald.port, "/nope"))
        _check_health(*c.read_http_response())
        _check_health(*c.read_http_response())
        status, _, _ = c.read_http_response()
        assert status == 404, f"third pipelined response (/nope): expected 404, got {status}"
    finally:
        c.close()


def test_http_slowloris_incomplete_request_closed(herald):
    """A request whose headers never complete (one byte per second) must be
    dropped by the server within ~10-12 s; we allow 15 s."""
    c = Conn(herald.port)
    start = time.monotonic()
    try:
        c.send(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n".encode())
        trickle = b"X-Slow: " + b"a" * 100
        i = 0
        while time.monotonic() - start < 15.0:
            try:
                c.send(trickle[i % len(trickle):i % len(trickle) + 1])
            except OSError:
                return  # closed
            i += 1
            c.sock.settimeout(1.0)
            try:
                data = c.sock.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return
            if not data:
                return
            # a 408/400 response is fine; keep waiting for the close
        raise AssertionError("server kept an incomplete request open for 15 s")
    finally:
        c.close()


# ==========================================================================
# 5.1 / 5.2 Framing
# ==========================================================================

LENGTHS = [0, 125, 126, 127, 128, 65535, 65536]


@pytest.mark.parametrize("mode", ["whole", "chopped"])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("n", LENGTHS)
def test_5_2_payload_length_echoed(ws, n, opcode, mode):
    payload = text_payload(n) if opcode == OP_TEXT else binary_payload(n)
    frame = build_frame(opcode, payload)
    if mode == "whole":
        ws.send(frame)
    else:
        ws.send_chopped(frame, seed=n)
    f = ws.read_message_frame(timeout=10)
    assert f.opcode == opcode, f"opcode: expected {opcode}, got {f.opcode}"
    assert len(f.payload) == n, f"length: expected {n}, got {len(f.payload)}"
    assert f.payload == payload, "payload differs from what was sent"


def test_5_2_several_frames_in_one_segment_echoed_in_order(ws):
    msgs = [(OP_TEXT, b"one"), (OP_BINARY, b"\x02two"), (OP_TEXT, b""),
            (OP_TEXT, text_payload(300)), (OP_BINARY, binary_payload(70000 - 65536))]
    ws.send(b"".join(build_frame(op, p) for op, p in msgs))
    for op, p in msgs:
        f = ws.read_message_frame()
        assert (f.opcode, f.payload) == (op, p), f"expected {(op, p[:20])}, got {f}"


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY, OP_PING],
                         ids=["text", "binary", "ping"])
def test_5_1_unmasked_client_frame_closes_1002(ws, opcode):
    ws.send(build_frame(opcode, b"unmasked", mask=False))
    ws.expect_close(1002)


@pytest.mark.parametrize("rsv", [4, 2, 1, 7], ids=["rsv1", "rsv2", "rsv3", "all_rsv"])
def test_5_2_rsv_bits_set_closes_1002(ws, rsv):
    ws.send(text_frame(b"reserved", rsv=rsv))
    ws.expect_close(1002)


def test_5_2_rsv1_on_ping_closes_1002(ws):
    ws.send(ping_frame(b"p", rsv=4))
    ws.expect_close(1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF],
                         ids=lambda op: f"op_{op:X}")
def test_5_2_reserved_opcode_closes_1002(ws, opcode):
    ws.send(build_frame(opcode, b"x"))
    ws.expect_close(1002)


def test_5_2_64bit_length_with_msb_set_closes_1002(ws):
    ws.send(build_frame(OP_BINARY, b"", raw_len64=(1 << 63) | 5))
    ws.expect_close(1002, timeout=3)


@pytest.mark.parametrize("size", [1 << 20, 4 << 20, 16 << 20], ids=["1MiB", "4MiB", "16MiB"])
def test_5_2_large_binary_message_echoed(herald_big, size):
    payload = binary_payload(size)
    frame = build_frame(OP_BINARY, payload)
    c, _ = open_ws(herald_big.port)
    err = []

    def sender():
        try:
            c.send(frame)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        f = c.read_message_frame(timeout=30)
        t.join(10)
        assert not err, f"send failed: {err}"
        assert f.opcode == OP_BINARY, f"expected BINARY, got {f}"
        assert len(f.payload) == size, f"length: expected {size}, got {len(f.payload)}"
        assert f.payload == payload, "large payload corrupted"
    finally:
        c.close()


@pytest.mark.parametrize("bad", ["rsv_bit", "reserved_opcode"])
def test_5_2_error_after_valid_message_echo_then_close_no_pong(ws, bad):
    bad_frame = text_frame(b"bad", rsv=4) if bad == "rsv_bit" else build_frame(3, b"bad")
    ws.send(text_frame(b"first") + bad_frame + ping_frame(b"after"))
    f = ws.read_message_frame()
    assert (f.opcode, f.payload) == (OP_TEXT, b"first"), f"expected echo of 'first', got {f}"
    # the next frame must be the close (no pong for the ping after the bad frame)
    ws.expect_close(1002)


def test_5_6_binary_echoed_as_binary_text_as_text(ws):
    ws.echo(OP_BINARY, b"\xff\xfe\x00binary")
    ws.echo(OP_TEXT, "text ✓".encode())


# ==========================================================================
# 5.4 Fragmentation
# ==========================================================================

def fragments(opcode, parts, **kw):
    out = b""
    for i, p in enumerate(parts):
        out += build_frame(opcode if i == 0 else OP_CONT, p,
                           fin=(i == len(parts) - 1), **kw)
    return out


def expect_echo(conn, opcode, payload, timeout=DEFAULT_TIMEOUT):
    f = conn.read_message_frame(timeout)
    assert f.opcode == opcode, f"opcode: expected {opcode}, got {f}"
    assert f.payload == payload, \
        f"payload: expected {len(payload)} bytes {payload[:40]!r}, got {f}"


def test_5_4_text_in_two_fragments(ws):
    ws.send(fragments(OP_TEXT, [b"Hello, ", b"world"]))
    expect_echo(ws, OP_TEXT, b"Hello, world")


def test_5_4_text_in_many_fragments(ws):
    payload = text_payload(1000)
    parts = [payload[i:i + 37] for i in range(0, len(payload), 37)]  # splits chars
    ws.send(fragments(OP_TEXT, parts))
    expect_echo(ws, OP_TEXT, payload)


def test_5_4_binary_in_fragments_sent_separately(ws):
    payload = binary_payload(5000)
    parts = [payload[:1], payload[1:2000], payload[2000:4999], payload[4999:]]
    data = fragments(OP_BINARY, parts)
    ws.send_chopped(data, max_piece=64)
    expect_echo(ws, OP_BINARY, payload)


def test_5_4_fragments_with_interleaved_pings_pong_before_echo(ws):
    ws.send(build_frame(OP_TEXT, b"frag1-", fin=False)
            + ping_frame(b"ping-one")
            + build_frame(OP_CONT, b"frag2-", fin=False)
            + ping_frame(b"")
            + ping_frame(b"ping-three")
            + build_frame(OP_CONT, b"frag3", fin=True))
    for expected in (b"ping-one", b"", b"ping-three"):
        f = ws.read_frame()
        assert f.opcode == OP_PONG, f"expected PONG {expected!r} before the echo, got {f}"
        assert f.payload == expected, f"pong payload: expected {expected!r}, got {f.payload!r}"
    expect_echo(ws, OP_TEXT, b"frag1-frag2-frag3")


def test_5_4_ping_between_fragments_sent_separately(ws):
    ws.send(build_frame(OP_BINARY, b"\x01\x02", fin=False))
    time.sleep(0.05)
    ws.send(ping_frame(b"mid"))
    f = ws.read_frame()
    assert (f.opcode, f.payload) == (OP_PONG, b"mid"), \
        f"expected PONG 'mid' while message incomplete, got {f}"
    ws.send(build_frame(OP_CONT, b"\x03", fin=True))
    expect_echo(ws, OP_BINARY, b"\x01\x02\x03")


@pytest.mark.parametrize("fin", [True, False], ids=["fin1", "fin0"])
def test_5_4_continuation_without_start_closes_1002(ws, fin):
    ws.send(build_frame(OP_CONT, b"orphan", fin=fin))
    ws.expect_close(1002)


@pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("second_fin", [True, False], ids=["fin1", "fin0"])
def test_5_4_new_data_frame_during_fragmented_message_closes_1002(ws, second, second_fin):
    ws.send(build_frame(OP_TEXT, b"start", fin=False)
            + build_frame(second, b"interloper", fin=second_fin))
    ws.expect_close(1002)


def test_5_4_continuation_after_complete_message_closes_1002(ws):
    ws.send(fragments(OP_TEXT, [b"a", b"b"]) + build_frame(OP_CONT, b"c", fin=True))
    expect_echo(ws, OP_TEXT, b"ab")
    ws.expect_close(1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE],
                         ids=["ping", "pong", "close"])
def test_5_4_fragmented_control_frame_closes_1002(ws, opcode):
    payload = close_payload(1000) if opcode == OP_CLOSE else b"ctl"
    ws.send(build_frame(opcode, payload, fin=False))
    ws.expect_close(1002)


def test_5_4_zero_length_fragments(ws):
    ws.send(fragments(OP_TEXT, [b"", b"ab", b"", b"", b"cd", b""]))
    expect_echo(ws, OP_TEXT, b"abcd")


def test_5_4_all_fragments_empty(ws):
    ws.send(fragments(OP_BINARY, [b"", b"", b""]))
    expect_echo(ws, OP_BINARY, b"")


def test_5_4_close_during_fragmented_message(ws):
    ws.send(build_frame(OP_TEXT, b"unfinished", fin=False) + close_frame(1000))
    code, _ = ws.read_close()
    assert code == 1000, f"expected close 1000, got {code}"
    ws.expect_eof()


# ==========================================================================
# 5.5 Control frames
# ==========================================================================

@pytest.mark.parametrize("n", [0, 1, 125])
def test_5_5_2_ping_answered_with_pong_same_payload(ws, n):
    payload = binary_payload(n)
    ws.send(ping_frame(payload))
    f = ws.read_frame()
    assert f.opcode == OP_PONG and f.fin, f"expected PONG, got {f}"
    assert f.payload == payload, f"pong payload: expected {payload!r}, got {f.payload!r}"


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE],
                         ids=["ping", "pong", "close"])
def test_5_5_control_frame_payload_126_closes_1002(ws, opcode):
    payload = close_payload(1000, b"r" * 124) if opcode == OP_CLOSE else b"p" * 126
    assert len(payload) == 126
    ws.send(build_frame(opcode, payload))
    ws.expect_close(1002, reply=(opcode != OP_CLOSE))


@pytest.mark.parametrize("payload", [b"", b"unsolicited"], ids=["empty", "payload"])
def test_5_5_3_unsolicited_pong_ignored(ws, payload):
    ws.send(build_frame(OP_PONG, payload) + text_frame(b"after pong"))
    f = ws.read_message_frame()
    assert (f.opcode, f.payload) == (OP_TEXT, b"after pong"), \
        f"expected only the echo of 'after pong', got {f}"


def test_5_5_2_many_pings_many_pongs(ws):
    ws.send(b"".join(ping_frame(str(i).encode()) for i in range(20)))
    for i in range(20):
        f = ws.read_frame()
        assert (f.opcode, f.payload) == (OP_PONG, str(i).encode()), \
            f"pong #{i}: expected {str(i).encode()!r}, got {f}"


# ==========================================================================
# 5.5.1 / 7.4 Close
# ==========================================================================

def test_5_5_1_close_1000_answered_and_tcp_closed(ws):
    ws.send(close_frame(1000, "bye"))
    code, reason = ws.read_close()
    assert code == 1000, f"expected 1000, got {code}"
    ws.expect_eof(timeout=3)


def test_5_5_1_close_empty_payload_answered_and_tcp_closed(ws):
    ws.send(close_frame())
    code, reason = ws.read_close()
    assert code in (None, 1000), f"expected empty close or 1000, got {code}"
    ws.expect_eof(timeout=3)


def test_5_5_1_close_payload_one_byte_closes_1002(ws):
    ws.send(build_frame(OP_CLOSE, b"\x03"))
    ws.expect_close(1002, reply=False)


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
               3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016,
                 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_7_4_1_valid_close_code_echoed(ws, code):
    ws.send(close_frame(code))
    got, _ = ws.read_close()
    assert got == code, f"close code: expected {code} echoed, got {got}"
    ws.expect_eof(timeout=3)


@pytest.mark.parametrize("code", INVALID_CODES)
def test_7_4_invalid_close_code_closes_1002(ws, code):
    ws.send(close_frame(code))
    ws.expect_close(1002, reply=False)


def test_7_4_close_with_max_reason_echoed(ws):
    reason = ("é" * 61).encode() + b"a"  # 123 bytes, multibyte
    assert len(reason) == 123
    ws.send(close_frame(1000, reason))
    code, _ = ws.read_close()
    assert code == 1000, f"expected 1000, got {code}"
    ws.expect_eof(timeout=3)


@pytest.mark.parametrize("reason", [b"\xff", b"ok\xc0\x80", b"\xed\xa0\x80", b"abc\xe2\x82"],
                         ids=["ff", "overlong", "surrogate", "truncated"])
def test_5_5_1_close_reason_invalid_utf8_closes_1002(ws, reason):
    ws.send(close_frame(1000, reason))
    ws.expect_close(1002, reply=False)


def test_5_5_1_nothing_processed_after_close(ws):
    ws.send(close_frame(1000) + text_frame(b"after close") + ping_frame(b"after"))
    code, _ = ws.read_close()
    assert code == 1000, f"expected 1000, got {code}"
    ws.expect_eof(timeout=3)  # asserts no echo/pong followed the close


def test_5_5_1_message_then_close_echo_first(ws):
    ws.send(text_frame(b"last words") + close_frame(1001))
    expect_echo(ws, OP_TEXT, b"last words")
    code, _ = ws.read_close()
    assert code == 1001, f"expected 1001 echoed, got {code}"
    ws.expect_eof(timeout=3)


# ==========================================================================
# 8.1 UTF-8 handling
# ==========================================================================

VALID_UTF8 = {
    "2_byte": "é ß ©".encode(),
    "3_byte": "€ 中文 ✓".encode(),
    "4_byte": "😀 𝄞 𐍈".encode(),
    "u_d7ff_e000": "\ud7ff\ue000".encode(),
    "u_fffe_ffff_noncharacters": "\ufffe\uffff".encode(),
    "u_10ffff_noncharacter": "\U0010ffff".encode(),
    "bom": "\ufeffbom".encode(),
    "nul_and_ascii": b"\x00 ascii \x7f",
    "max_each_length": "\x7f\u07ff\uffff\U0010ffff".encode(),
}


@pytest.mark.parametrize("payload", list(VALID_UTF8.values()), ids=list(VALID_UTF8))
def test_8_1_valid_utf8_text_echoed(ws, payload):
    ws.echo(OP_TEXT, payload)


INVALID_UTF8 = {
    "overlong_2_c0_80": b"a\xc0\x80b",
    "overlong_2_c1_bf": b"\xc1\xbf",
    "overlong_3_e0_80_80": b"\xe0\x80\x80",
    "overlong_3_e0_9f_bf": b"\xe0\x9f\xbf",
    "overlong_4_f0_80_80_80": b"\xf0\x80\x80\x80",
    "overlong_4_f0_8f_bf_bf": b"\xf0\x8f\xbf\xbf",
    "surrogate_ed_a0_80": b"\xed\xa0\x80",
    "surrogate_ed_bf_bf": b"x\xed\xbf\xbfx",
    "surrogate_pair_cesu": b"\xed\xa0\xbd\xed\xb8\x80",
    "above_10ffff_f4_90": b"\xf4\x90\x80\x80",
    "f5": b"\xf5\x80\x80\x80",
    "f8_5_byte": b"\xf8\x88\x80\x80\x80",
    "fe": b"\xfe",
    "ff": b"ok\xff",
    "truncated_2_at_end": b"abc\xc3",
    "truncated_3_at_end": b"abc\xe2\x82",
    "truncated_4_at_end": b"abc\xf0\x9f\x98",
    "truncated_then_ascii": b"\xe2\x82a",
    "lone_continuation_80": b"\x80",
    "lone_continuation_bf_mid": b"abc\xbfdef",
}


@pytest.mark.parametrize("payload", list(INVALID_UTF8.values()), ids=list(INVALID_UTF8))
def test_8_1_invalid_utf8_text_closes_1007(ws, payload):
    ws.send(text_frame(payload))
    ws.expect_close(1007)


@pytest.mark.parametrize("payload", [b"abc\xe2\x82", b"\xed\xa0\x80", b"\x80"],
                         ids=["truncated_at_end", "surrogate", "lone_continuation"])
def test_8_1_invalid_utf8_in_fragmented_message_closes_1007(ws, payload):
    ws.send(build_frame(OP_TEXT, b"valid-", fin=False)
            + build_frame(OP_CONT, payload, fin=False)
            + build_frame(OP_CONT, b"", fin=True))
    ws.expect_close(1007)


def test_8_1_truncated_sequence_at_end_of_fragmented_message_closes_1007(ws):
    ws.send(build_frame(OP_TEXT, b"abc", fin=False)
            + build_frame(OP_CONT, b"\xf0\x9f", fin=False)
            + build_frame(OP_CONT, b"\x98", fin=True))  # 3 of 4 bytes, then end
    ws.expect_close(1007)


def test_8_1_invalid_utf8_fail_fast_within_frame(ws):
    """Header announces 100 bytes; only 10 are sent, containing 0xFF. The
    server must fail on the bytes it has, without waiting for the rest."""
    payload = b"abcd\xffefgh" + b"i" * 90
    frame = text_frame(payload)
    header_len = 2 + 4  # 7-bit length + mask key
    ws.send(frame[:header_len + 10])
    ws.expect_close(1007, timeout=3)


def test_8_1_invalid_utf8_fail_fast_across_fragments(ws):
    ws.send(build_frame(OP_TEXT, "héllo ".encode(), fin=False))
    time.sleep(0.2)
    ws.send(build_frame(OP_CONT, b"wor\xc0\xafld", fin=False))
    ws.expect_close(1007, timeout=3)  # final fragment never sent


def test_8_1_invalid_sequence_spanning_fragment_boundary_fail_fast(ws):
    ws.send(build_frame(OP_TEXT, b"abc\xe2", fin=False))
    time.sleep(0.2)
    ws.send(build_frame(OP_CONT, b"\x28\xa1", fin=False))  # E2 28: bad continuation
    ws.expect_close(1007, timeout=3)


@pytest.mark.parametrize("split", [1, 2, 3])
def test_8_1_four_byte_char_split_across_fragments(ws, split):
    ch = "😀".encode()
    ws.send(build_frame(OP_TEXT, b"x" + ch[:split], fin=False))
    time.sleep(0.05)
    ws.send(build_frame(OP_CONT, ch[split:] + b"y", fin=True))
    expect_echo(ws, OP_TEXT, b"x" + ch + b"y")


def test_8_1_char_split_one_byte_per_fragment(ws):
    data = "a€😀é".encode()
    ws.send(fragments(OP_TEXT, [bytes([b]) for b in data]))
    expect_echo(ws, OP_TEXT, data)


def test_8_1_invalid_utf8_in_binary_is_fine(ws):
    ws.echo(OP_BINARY, b"\xff\xfe\xc0\x80\xed\xa0\x80")


# ==========================================================================
# 10.4 Implementation-specific limits (--max-message)
# ==========================================================================

@pytest.mark.parametrize("announced", [SMALL_LIMIT + 1, 70000, 1 << 40],
                         ids=["limit_plus_1_16bit", "70000_64bit", "1TiB_64bit"])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_10_4_oversized_frame_header_closes_1009(ws_small, opcode, announced):
    header = build_frame(opcode, b"", length=announced)  # header + mask key only
    ws_small.send(header)
    ws_small.expect_close(1009, timeout=3)


def test_10_4_default_limit_header_65537_closes_1009(ws):
    ws.send(build_frame(OP_BINARY, b"", length=65537))
    ws.expect_close(1009, timeout=3)


def test_10_4_fragmented_message_over_limit_closes_1009(ws_small):
    ws_small.send(build_frame(OP_BINARY, b"a" * 600, fin=False))
    ws_small.send(build_frame(OP_CONT, b"b" * 401, fin=True))
    ws_small.expect_close(1009, timeout=3)


def test_10_4_many_small_fragments_over_limit_closes_1009(ws_small):
    parts = [b"z" * 100] * 11  # 1100 bytes total
    ws_small.send(fragments(OP_TEXT, parts))
    ws_small.expect_close(1009, timeout=3)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_10_4_message_exactly_at_limit_echoed(ws_small, opcode):
    payload = text_payload(SMALL_LIMIT) if opcode == OP_TEXT else binary_payload(SMALL_LIMIT)
    ws_small.echo(opcode, payload)


def test_10_4_fragmented_message_exactly_at_limit_echoed(ws_small):
    payload = binary_payload(SMALL_LIMIT)
    ws_small.send(fragments(OP_BINARY, [payload[:400], payload[400:999], payload[999:]]))
    expect_echo(ws_small, OP_BINARY, payload)


def test_10_4_control_frames_unaffected_by_small_limit(ws_small):
    ws_small.send(build_frame(OP_BINARY, b"q" * 900, fin=False) + ping_frame(b"p" * 125)
                  + build_frame(OP_CONT, b"r" * 100, fin=True))
    f = ws_small.read_frame()
    assert (f.opcode, f.payload) == (OP_PONG, b"p" * 125), f"expected PONG, got {f}"
    expect_echo(ws_small, OP_BINARY, b"q" * 900 + b"r" * 100)


# ==========================================================================
# Daemon contract
# ==========================================================================

def test_herald_sigterm_exits_0_with_open_connection():
    h = start_heraldd()
    c = None
    try:
        c, _ = open_ws(h.port)
        c.echo(OP_TEXT, b"before shutdown")
        t0 = time.monotonic()
        rc = h.stop(timeout=10)
        assert rc == 0, f"exit code after SIGTERM: expected 0, got {rc} " \
                        f"(after {time.monotonic() - t0:.1f}s)\nstderr:\n{h.stderr_text()}"
    finally:
        if c:
            c.close()
        h.stop()
