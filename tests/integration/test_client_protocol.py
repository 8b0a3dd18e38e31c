"""Client messages on an authenticated /ws connection (PROTOCOL.md sections 3, 4, 6).

Run with ``/usr/bin/python3 -m pytest -q tests/integration/test_client_protocol.py``.

Covered: malformed JSON, non-object JSON, a missing or non-string type and an
unknown type each answered with {"type":"error","code","message"} while the
connection stays open (a later publish still arrives, in seq order); a second
auth message is an error, not a re-authentication; binary frames close 1003;
ping/pong; invalid UTF-8 in a text frame closes 1007; events arrive in seq
order on every connection while client messages interleave.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import pytest
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_proc import start_heraldd  # noqa: E402
from herald_client import (Api, event, expect_close, in_thread, mint, no_message,  # noqa: E402
                           recv_json, recv_welcome, run, ws_connect)


@pytest.fixture(scope="module")
def herald():
    # A high message rate limit: some tests flood on purpose (4029 is tested apart).
    h = start_heraldd("--max-client-rate", "5000")
    yield h
    h.stop_ok()


@pytest.fixture()
def api(herald):
    a = Api(herald)
    yield a
    a.close()


_n = [0]


def new_user():
    _n[0] += 1
    return f"cp-{os.getpid()}-{_n[0]}"


def check_error(msg):
    assert msg.get("type") == "error", f"expected an error reply, got {msg}"
    assert isinstance(msg.get("code"), str) and msg["code"], msg
    assert all(c.islower() or c.isdigit() or c == "_" for c in msg["code"]), \
        f"code is not snake_case: {msg}"
    assert isinstance(msg.get("message"), str), msg
    assert "seq" not in msg, f"replies carry no seq: {msg}"
    return msg


async def authed(h, user, via="header"):
    ws = await ws_connect(h, mint(user), via=via)
    w = await recv_welcome(ws, user)
    return ws, w


BAD_MESSAGES = {
    "malformed": "{not json",
    "truncated": '{"type":"runs"',
    "empty": "",
    "array": "[1,2,3]",
    "string": '"runs"',
    "number": "42",
    "null": "null",
    "no type": '{"id":"x"}',
    "type number": '{"type":5}',
    "type null": '{"type":null}',
    "type object": '{"type":{"a":1}}',
    "unknown type": '{"type":"make_coffee"}',
    "event type from server": '{"type":"welcome"}',
    "duplicate keys": '{"type":"runs","type":"nope"}',
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
@pytest.mark.parametrize("via", ["header", "message"])
def test_bad_message_error_and_stays_open(herald, api, name, via):
    user = new_user()

    async def go():
        ws, w = await authed(herald, user, via)
        await ws.send(BAD_MESSAGES[name])
        check_error(await recv_json(ws))
        # still open: a publish arrives, with the next seq
        r = await in_thread(api.publish, user)
        assert r.status == 200 and r.json["delivered"] == 1, r
        ev = await recv_json(ws)
        assert ev["seq"] == w["seq"] + 1 and ev["type"] == "agent_thinking", ev
        # and another bad message is answered too
        await ws.send(BAD_MESSAGES[name])
        check_error(await recv_json(ws))
        await ws.close()
    run(go())


def test_error_codes_distinguish(herald):
    """Malformed JSON and an unknown type are both errors with a code; log the codes."""
    async def go():
        ws, _ = await authed(herald, new_user())
        codes = {}
        for name in ("malformed", "array", "no type", "unknown type"):
            await ws.send(BAD_MESSAGES[name])
            codes[name] = check_error(await recv_json(ws))["code"]
        await ws.close()
        return codes
    codes = run(go())
    print("error codes:", codes)
    assert codes["unknown type"] != codes["malformed"], codes


def test_many_errors_do_not_close(herald, api):
    user = new_user()

    async def go():
        ws, w = await authed(herald, user)
        for i in range(200):
            await ws.send("{oops" if i % 2 else '{"type":"nope"}')
        for _ in range(200):
            check_error(await recv_json(ws))
        r = await in_thread(api.publish, user)
        assert r.json["delivered"] == 1
        ev = await recv_json(ws)
        assert ev["seq"] == w["seq"] + 1
        await ws.close()
    run(go())


@pytest.mark.parametrize("via", ["header", "message"])
def test_second_auth_is_error(herald, api, via):
    user = new_user()

    async def go():
        ws, w = await authed(herald, user, via)
        await ws.send(json.dumps({"type": "auth", "token": mint("someone-else")}))
        check_error(await recv_json(ws))
        await ws.send(json.dumps({"type": "auth", "token": "garbage"}))
        check_error(await recv_json(ws))
        # still the same user
        assert await in_thread(api.presence, "someone-else") == 0
        assert await in_thread(api.presence, user) == 1
        r = await in_thread(api.publish, user)
        assert r.json["delivered"] == 1
        ev = await recv_json(ws)
        assert ev["seq"] == w["seq"] + 1
        await ws.close()
    run(go())


@pytest.mark.parametrize("payload", [b"", b"\x00\x01\x02", b'{"type":"runs"}', b"x" * 70000])
def test_binary_frame_closes_1003(herald, payload):
    async def go():
        ws, _ = await authed(herald, new_user())
        await ws.send(payload)
        code, _ = await expect_close(ws, 5)
        return code
    code = run(go())
    expected = 1009 if len(payload) > 65536 else 1003
    assert code in (1003, expected), code


def test_binary_before_auth_closes(herald):
    async def go():
        ws = await ws_connect(herald)
        await ws.send(b"\x01\x02")
        code, _ = await expect_close(ws, 5)
        return code
    assert run(go()) in (1003, 4001)


def test_ping_pong(herald):
    async def go():
        ws, _ = await authed(herald, new_user())
        for payload in (b"", b"hello", b"\x00" * 125):
            waiter = await ws.ping(payload)
            await asyncio.wait_for(waiter, 5)
        await no_message(ws, 0.2)
        await ws.close()
    run(go())


def test_ping_before_auth(herald):
    async def go():
        ws = await ws_connect(herald)
        await asyncio.wait_for(await ws.ping(b"pre"), 5)
        await ws.send(json.dumps({"type": "auth", "token": mint("pinger")}))
        await recv_welcome(ws, "pinger")
        await ws.close()
    run(go())


def test_invalid_utf8_text_closes_1007(herald):
    """A text frame that is not UTF-8 closes 1007 (sent raw, websockets won't)."""
    async def go():
        ws, _ = await authed(herald, new_user())
        from websockets.frames import Frame, OP_TEXT
        await ws.write_frame(True, OP_TEXT, b'{"type":"\xff\xfe"}')
        code, _ = await expect_close(ws, 5)
        return code
    assert run(go()) == 1007


def test_clean_close_1000(herald):
    async def go():
        ws, _ = await authed(herald, new_user())
        await asyncio.wait_for(ws.close(1000, "bye"), 5)
        assert ws.close_code == 1000, ws.close_code
    run(go())


def test_events_in_seq_order_on_each_connection(herald, api):
    user = new_user()
    n = 2000

    async def go():
        conns = [await authed(herald, user) for _ in range(3)]
        base = conns[0][1]["seq"]

        async def publisher():
            a = Api(herald)
            for i in range(0, n, 100):
                evs = [event(user, j, delta=str(j)) for j in range(i, i + 100)]
                r = await in_thread(a.publish_batch, evs)
                assert r.status == 200, r
            a.close()

        async def reader(ws, noisy):
            seqs = []
            errors = 0
            while len(seqs) < n:
                if noisy and len(seqs) % 250 == 0:
                    await ws.send('{"type":"nope"}')  # client traffic interleaved
                m = await recv_json(ws, 10)
                if m.get("type") == "error":
                    errors += 1
                    continue
                assert m["data"]["delta"] == str(m["seq"] - base - 1), m
                seqs.append(m["seq"])
            return seqs

        res = await asyncio.gather(publisher(), *(reader(ws, i == 0) for i, (ws, _) in
                                                  enumerate(conns)))
        for seqs in res[1:]:
            assert seqs == list(range(base + 1, base + n + 1))
        for ws, _ in conns:
            await no_message(ws, 0.2) if ws is not conns[0][0] else None
            await ws.close()
    run(go(), 60)


def test_message_over_limit_closes_1009():
    with start_heraldd("--max-message", "1000") as h:
        async def go():
            ws = await ws_connect(h, mint("big-sender"))
            await recv_welcome(ws, "big-sender")
            await ws.send(json.dumps({"type": "nope", "pad": "x" * 2000}))
            code, _ = await expect_close(ws, 5)
            return code
        assert run(go()) == 1009


def test_message_flood_closes_4029():
    """More client messages in one second than --max-client-rate: close 4029."""
    with start_heraldd("--max-client-rate", "20") as h:
        async def go():
            ws = await ws_connect(h, mint("flooder"))
            await recv_welcome(ws, "flooder")
            for _ in range(60):
                await ws.send('{"type":"runs"}')
            replies = 0
            try:
                while True:
                    m = await asyncio.wait_for(ws.recv(), 5)
                    assert json.loads(m)["type"] == "runs"
                    replies += 1
            except ConnectionClosed as e:
                return e.code, replies
        code, replies = run(go())
        assert code == 4029, code
        assert 1 <= replies <= 40, replies  # at most two one-second windows' worth


def test_connections_per_user_limit_4009():
    """The (N+1)th connection of one user is closed with 4009; others are fine."""
    with start_heraldd("--max-user-connections", "3") as h:
        async def go():
            socks = []
            for _ in range(3):
                ws = await ws_connect(h, mint("crowd"))
                await recv_welcome(ws, "crowd")
                socks.append(ws)
            extra = await ws_connect(h, mint("crowd"))
            code, _ = await expect_close(extra, 5)
            other = await ws_connect(h, mint("someone-else"))
            await recv_welcome(other, "someone-else")
            await socks[0].close()
            again = await ws_connect(h, mint("crowd"))  # a slot was freed
            await recv_welcome(again, "crowd")
            for ws in socks[1:] + [other, again]:
                await ws.close()
            return code
        assert run(go()) == 4009
