"""Interop: drive heraldd's /echo endpoint with Debian's python3-websockets.

Run with ``/usr/bin/python3 -m pytest -q tests/integration/test_interop_python.py``
(CTest sets HERALD_BIN).  No pytest-asyncio: every test wraps its coroutine in
``asyncio.run`` under a hard ``asyncio.wait_for`` bound so nothing can hang.

Covered: text and binary echo at frame-length boundaries (0 .. 65536) and at
1 MiB (+1) with a larger --max-message; fragmented client messages (sync and
async iterables of fragments); ping/pong with payloads; a clean 1000 close
handshake that the server finishes promptly by closing TCP; herald.v1
subprotocol selection (and none when not offered); 200 concurrent echoing
connections; an oversized message closed with 1009; SIGTERM closing clients
with 1001 and the daemon exiting 0.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_proc import start_heraldd  # noqa: E402

SUBPROTO = "herald.v1"
DEFAULT_MAX = 65536
BIG = 1 << 20  # 1 MiB
BOUNDARY_SIZES = [0, 1, 125, 126, 127, 128, 65535, 65536]
TEST_TIMEOUT = 30.0  # per test coroutine


def run(coro, timeout: float = TEST_TIMEOUT):
    """Run ``coro`` to completion, failing (not hanging) after ``timeout`` s."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def text_payload(n: int, seed: int = 0) -> str:
    """n ASCII characters (== n UTF-8 bytes), varied so corruption shows."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(alphabet[(i * 7 + seed) % len(alphabet)] for i in range(n))


def binary_payload(n: int, seed: int = 0) -> bytes:
    """n bytes covering every byte value (including invalid UTF-8)."""
    return bytes((i * 31 + seed) & 0xFF for i in range(n))


@pytest.fixture(scope="module")
def herald():
    h = start_heraldd()
    yield h
    h.stop_ok()


@pytest.fixture(scope="module")
def herald_big():
    h = start_heraldd("--max-message", str(BIG + 1))
    yield h
    h.stop_ok()


def uri(h, path: str = "/echo") -> str:
    return f"ws://{h.host}:{h.port}{path}"


def connect(h, *, subprotocols=(SUBPROTO,), max_size=BIG, **kw):
    return websockets.connect(
        uri(h), subprotocols=list(subprotocols) if subprotocols else None,
        max_size=max_size, open_timeout=10, close_timeout=5,
        compression=None, **kw)


async def echo_once(ws, payload):
    await ws.send(payload)
    got = await asyncio.wait_for(ws.recv(), 5)
    assert type(got) is type(payload), (
        f"echo of {type(payload).__name__} came back as {type(got).__name__}")
    assert len(got) == len(payload)
    assert got == payload
    return got


# ---- echo at boundary sizes ---------------------------------------------------


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
@pytest.mark.parametrize("kind", ["text", "binary"])
def test_echo_boundary_sizes(herald, kind, size):
    async def main():
        async with connect(herald) as ws:
            assert ws.subprotocol == SUBPROTO
            payload = text_payload(size) if kind == "text" else binary_payload(size)
            await echo_once(ws, payload)
            # Same connection stays usable after a boundary-sized message.
            await echo_once(ws, payload[: max(0, size - 1)])
        assert ws.close_code == 1000
    run(main())


def test_echo_all_sizes_one_connection(herald):
    """Every boundary size, both types, interleaved on a single connection."""
    async def main():
        async with connect(herald) as ws:
            for i, size in enumerate(BOUNDARY_SIZES):
                await echo_once(ws, text_payload(size, seed=i))
                await echo_once(ws, binary_payload(size, seed=i))
        assert ws.close_code == 1000
    run(main())


def test_echo_utf8_multibyte(herald):
    async def main():
        async with connect(herald) as ws:
            # 'é' is 2 bytes, '€' 3, '𝄞' 4: 65536 UTF-8 bytes exactly.
            msg = "é€𝄞" * (65536 // 9) + "a" * (65536 % 9)
            assert len(msg.encode()) == 65536
            await echo_once(ws, msg)
            await echo_once(ws, "héllo wörld €𝄞")
    run(main())


@pytest.mark.parametrize("size", [BIG, BIG + 1])
@pytest.mark.parametrize("kind", ["text", "binary"])
def test_echo_one_mebibyte(herald_big, kind, size):
    async def main():
        async with connect(herald_big, max_size=None) as ws:
            payload = text_payload(size, 3) if kind == "text" else binary_payload(size, 3)
            await echo_once(ws, payload)
            await echo_once(ws, payload[:1000])
        assert ws.close_code == 1000
    run(main())


def test_default_limit_boundary_exact(herald):
    """65536 is accepted by a default server (limit is inclusive)."""
    async def main():
        async with connect(herald) as ws:
            await echo_once(ws, binary_payload(DEFAULT_MAX))
            await echo_once(ws, text_payload(DEFAULT_MAX))
    run(main())


# ---- fragmentation ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_fragmented_send_iterable(herald, kind):
    async def main():
        async with connect(herald) as ws:
            if kind == "text":
                frags = [text_payload(n, n) for n in (1, 0, 125, 126, 5000, 3)]
                whole = "".join(frags)
            else:
                frags = [binary_payload(n, n) for n in (1, 0, 125, 126, 5000, 3)]
                whole = b"".join(frags)
            await ws.send(frags)
            got = await asyncio.wait_for(ws.recv(), 5)
            assert type(got) is type(whole)
            assert got == whole
            # Unfragmented message right after still works.
            await echo_once(ws, whole[:10])
    run(main())


def test_fragmented_send_async_iterable_with_ping_between(herald):
    """Async-iterable fragments; a ping interleaved between fragments is
    answered at once (RFC 6455 5.5.2) and the message still arrives whole."""
    async def main():
        async with connect(herald) as ws:
            pong_waiter = None

            async def frags():
                nonlocal pong_waiter
                yield "héllo "
                yield "fragmented "
                # ws.ping() sends a control frame mid-message.
                pong_waiter = await ws.ping(b"mid-frag")
                await asyncio.wait_for(pong_waiter, 5)
                yield "wörld"

            await ws.send(frags())
            got = await asyncio.wait_for(ws.recv(), 5)
            assert got == "héllo fragmented wörld"
            assert pong_waiter is not None and pong_waiter.done()
    run(main())


def test_fragmented_message_reaching_limit(herald):
    """Fragments totalling exactly max-message are accepted."""
    async def main():
        async with connect(herald) as ws:
            frags = [binary_payload(16384, i) for i in range(4)]
            await ws.send(frags)
            got = await asyncio.wait_for(ws.recv(), 5)
            assert got == b"".join(frags)
    run(main())


def test_fragmented_message_over_limit_closes_1009(herald):
    async def main():
        async with connect(herald) as ws:
            frags = [binary_payload(16384, i) for i in range(4)] + [b"x"]
            with pytest.raises(ConnectionClosedError) as ei:
                await ws.send(frags)
                await asyncio.wait_for(ws.recv(), 10)
            assert ei.value.rcvd is not None and ei.value.rcvd.code == 1009
        assert ws.close_code == 1009
    run(main())


# ---- ping/pong ----------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"p", b"herald-ping", bytes(range(125))])
def test_ping_pong(herald, payload):
    async def main():
        async with connect(herald) as ws:
            waiter = await ws.ping(payload)
            t0 = time.monotonic()
            await asyncio.wait_for(waiter, 5)
            assert time.monotonic() - t0 < 5
            # Data still flows after the ping.
            await echo_once(ws, "after ping")
    run(main())


def test_many_pings_in_flight(herald):
    async def main():
        async with connect(herald) as ws:
            waiters = [await ws.ping(f"p{i}".encode()) for i in range(50)]
            await asyncio.wait_for(asyncio.gather(*waiters), 10)
            assert all(w.done() and not w.cancelled() for w in waiters)
    run(main())


# ---- close ------------------------------------------------------------------


def test_clean_close_1000(herald):
    async def main():
        ws = await connect(herald)
        await echo_once(ws, "bye soon")
        t0 = time.monotonic()
        await ws.close(1000, "done")
        await asyncio.wait_for(ws.wait_closed(), 5)
        elapsed = time.monotonic() - t0
        # The server echoes our 1000 ...
        assert ws.close_code == 1000
        # ... and then closes TCP itself; otherwise close() would sit for the
        # whole 5 s close_timeout before dropping the connection.
        assert elapsed < 2.0, f"close handshake took {elapsed:.2f}s"
        with pytest.raises(ConnectionClosed) as ei:
            await ws.recv()
        assert ei.value.rcvd is not None and ei.value.rcvd.code == 1000
        assert ei.value.sent is not None and ei.value.sent.code == 1000
        assert ei.value.rcvd_then_sent is False  # we initiated
    run(main())


def test_server_closes_tcp_first_after_close_handshake(herald):
    """RFC 6455 7.1.1: after the close handshake the server closes TCP first.

    Both websockets and ws half-close their side once they get the close
    reply, which would mask a server that only reacts to EOF, so this uses a
    raw socket that keeps its write side open and expects EOF from the server.
    """
    import base64
    import socket
    import struct

    with socket.create_connection((herald.host, herald.port), timeout=5) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /echo HTTP/1.1\r\nHost: {herald.host}:{herald.port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   "\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, f"EOF during handshake: {buf!r}"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        mask = os.urandom(4)
        body = struct.pack("!H", 1000)
        s.sendall(bytes([0x88, 0x80 | len(body)]) + mask
                  + bytes(b ^ mask[i % 4] for i, b in enumerate(body)))
        t0 = time.monotonic()
        s.settimeout(2.0)
        data = rest
        while True:
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                pytest.fail(f"server did not close TCP within 2 s; got {data!r}")
            if not chunk:
                break
            data += chunk
        assert data == b"\x88\x02\x03\xe8", f"expected close 1000 reply, got {data!r}"
        assert time.monotonic() - t0 < 2.0


def test_close_other_code_echoed(herald):
    async def main():
        ws = await connect(herald)
        t0 = time.monotonic()
        await ws.close(4321, "custom")
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert time.monotonic() - t0 < 2.0
        assert ws.close_code == 4321
    run(main())


# ---- subprotocol ----------------------------------------------------------------


def test_subprotocol_selected(herald):
    async def main():
        async with connect(herald, subprotocols=["other.v0", SUBPROTO]) as ws:
            assert ws.subprotocol == SUBPROTO
            assert ws.response_headers.get("Sec-WebSocket-Protocol") == SUBPROTO
            await echo_once(ws, "proto")
    run(main())


def test_subprotocol_not_offered(herald):
    async def main():
        async with connect(herald, subprotocols=None) as ws:
            assert ws.subprotocol is None
            assert "Sec-WebSocket-Protocol" not in ws.response_headers
            await echo_once(ws, b"no proto")
    run(main())


# ---- concurrency --------------------------------------------------------------


def test_many_concurrent_connections(herald):
    n_conns, n_msgs = 200, 5

    async def client(i):
        async with connect(herald) as ws:
            assert ws.subprotocol == SUBPROTO
            for j in range(n_msgs):
                if j % 2:
                    p = binary_payload(100 + i + j, seed=i)
                else:
                    p = f"conn {i} msg {j} " + text_payload(i * 7 % 300, seed=j)
                await echo_once(ws, p)
        assert ws.close_code == 1000
        return i

    async def main():
        # All 200 are open at the same time: each waits for the others to
        # connect before starting to echo.
        opened = []
        ready = asyncio.Event()

        async def held(i):
            async with connect(herald) as ws:
                opened.append(i)
                if len(opened) == n_conns:
                    ready.set()
                await asyncio.wait_for(ready.wait(), 20)
                for j in range(n_msgs):
                    await echo_once(ws, f"{i}:{j}:" + text_payload(j * 50, i))
                    await echo_once(ws, binary_payload(j * 50 + 1, i))
            assert ws.close_code == 1000
            return i

        done = await asyncio.gather(*(held(i) for i in range(n_conns)))
        assert sorted(done) == list(range(n_conns))
        done = await asyncio.gather(*(client(i) for i in range(n_conns)))
        assert sorted(done) == list(range(n_conns))

    run(main(), timeout=45)


# ---- limits -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_oversized_message_closes_1009(herald, kind):
    async def main():
        async with connect(herald) as ws:
            size = DEFAULT_MAX + 1
            payload = text_payload(size) if kind == "text" else binary_payload(size)
            with pytest.raises(ConnectionClosedError) as ei:
                await ws.send(payload)
                await asyncio.wait_for(ws.recv(), 10)
            assert ei.value.rcvd is not None, "no close frame from server"
            assert ei.value.rcvd.code == 1009
        assert ws.close_code == 1009
    run(main())


def test_server_still_serves_after_1009(herald):
    async def main():
        async with connect(herald) as ws:
            with pytest.raises(ConnectionClosedError):
                await ws.send(binary_payload(DEFAULT_MAX + 100))
                await asyncio.wait_for(ws.recv(), 10)
        async with connect(herald) as ws2:
            await echo_once(ws2, "still alive")
    run(main())


# ---- shutdown -----------------------------------------------------------------


def test_sigterm_closes_1001_and_exits_0():
    h = start_heraldd()
    try:
        async def main():
            conns = [await connect(h) for _ in range(5)]
            for i, ws in enumerate(conns):
                await echo_once(ws, f"before shutdown {i}")
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, h.proc.terminate)  # SIGTERM
            for ws in conns:
                with pytest.raises(ConnectionClosed) as ei:
                    await asyncio.wait_for(ws.recv(), 10)
                assert ei.value.rcvd is not None, "no close frame from server"
                assert ei.value.rcvd.code == 1001
                await asyncio.wait_for(ws.wait_closed(), 5)
                assert ws.close_code == 1001
            rc = await loop.run_in_executor(None, lambda: h.proc.wait(timeout=10))
            return rc

        rc = run(main())
        assert rc == 0, f"heraldd exited {rc}\n{h.stderr_text()}"
    finally:
        rc = h.stop()
    assert rc == 0, f"heraldd exited {rc}\n{h.stderr_text()}"
