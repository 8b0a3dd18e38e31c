"""The backend API and operations endpoints (PROTOCOL.md sections 3, 7, 9).

Run with ``/usr/bin/python3 -m pytest -q tests/integration/test_backend_api.py``.

Covered: publish of one event (seq 1, 2, 3 ... and delivered = the user's open
connections) arriving byte-identical on every connection of the user with all
envelope fields; batches answered in order; publishing to an offline user
(delivered 0, seq still advancing, the next welcome carrying it); every error
with its status and {"error":{"code","message"}} body (API key, JSON, type,
ids, data, batch size, batch atomicity, body size, message limit, method,
unknown path); keep-alive and pipelining; disconnect (4003, others untouched);
presence (including percent-encoded ids); /health, /ws-health, /metrics
counters; SIGTERM closing clients with 1001 and exiting 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import urllib.parse

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_proc import start_heraldd  # noqa: E402
from herald_client import (Api, api_key, assert_error_body, event, expect_close,  # noqa: E402
                           in_thread, mint, no_message, parse_response, raw_request,
                           recv_json, recv_welcome, run, send_while_reading, ws_connect)


@pytest.fixture(scope="module")
def herald():
    h = start_heraldd()
    yield h
    h.stop_ok()


@pytest.fixture()
def api(herald):
    a = Api(herald)
    yield a
    a.close()


_uid = [0]


def new_user(prefix="u"):
    _uid[0] += 1
    return f"{prefix}-{os.getpid()}-{_uid[0]}-{time.monotonic_ns() % 100000}"


async def connect_user(h, user, n):
    wss = []
    for _ in range(n):
        ws = await ws_connect(h, mint(user))
        wss.append((ws, await recv_welcome(ws, user)))
    return wss


# --------------------------------------------------------------------------- publish

def test_publish_single_seq_and_delivery(herald, api):
    user = new_user("pub")

    async def go():
        conns = await connect_user(herald, user, 3)
        other = await connect_user(herald, new_user("bystander"), 1)
        for ws, w in conns:
            assert w["seq"] == 0, w
        epoch = conns[0][1]["epoch"]
        for expected in (1, 2, 3):
            data = {"tool": "search", "call_id": f"c{expected}", "args": {"q": "x", "n": expected}}
            t0 = time.time() * 1000
            r = await in_thread(api.publish, user, "tool_executing", data, thread_id="t9",
                                run_id="r42")
            t1 = time.time() * 1000
            assert r.status == 200, r
            assert r.json == {"seq": expected, "delivered": 3}, r.json
            raws = [await asyncio.wait_for(ws.recv(), 5) for ws, _ in conns]
            assert all(x == raws[0] for x in raws), f"connections got different bytes: {raws}"
            ev = json.loads(raws[0])
            assert ev["type"] == "tool_executing"
            assert ev["seq"] == expected
            assert ev["epoch"] == epoch
            assert ev["thread_id"] == "t9" and ev["run_id"] == "r42"
            assert ev["data"] == data
            assert isinstance(ev["ts"], int), ev
            assert t0 - 2000 <= ev["ts"] <= t1 + 2000, (t0, ev["ts"], t1)
            assert "user_id" not in ev or ev["user_id"] == user
        await no_message(other[0][0], 0.2)
        for ws, _ in conns + other:
            await ws.close()
    run(go())


@pytest.mark.parametrize("etype,data", [
    ("agent_started", {"agent": "demo", "input": "hello"}),
    ("agent_thinking", {"text": "hmm"}),
    ("tool_executing", {"tool": "t", "call_id": "c", "args": {}}),
    ("tool_completed", {"tool": "t", "call_id": "c", "ok": True, "result": [1, "two", None]}),
    ("agent_message", {"delta": "chunk \u00e9\u2603\U0001F600 \"q\" \\ \n"}),
    ("agent_completed", {"status": "succeeded", "text": "done"}),
])
def test_every_event_type(herald, api, etype, data):
    """Each type round-trips; a run starts with agent_started (the run rules)."""
    user = new_user("types")

    async def go():
        (ws, _), = await connect_user(herald, user, 1)
        seq = 0
        if etype != "agent_started":
            r = await in_thread(api.publish, user, "agent_started",
                                {"agent": "demo", "input": "x"}, run_id="run-types")
            assert r.status == 200 and r.json == {"seq": 1, "delivered": 1}, r
            ev = await recv_json(ws)
            assert ev["type"] == "agent_started" and ev["seq"] == 1, ev
            seq = 1
        r = await in_thread(api.publish, user, etype, data, run_id="run-types")
        assert r.status == 200 and r.json == {"seq": seq + 1, "delivered": 1}, r
        ev = await recv_json(ws)
        assert ev["type"] == etype and ev["data"] == data and ev["seq"] == seq + 1, ev
        assert ev["run_id"] == "run-types", ev
        await ws.close()
    run(go())


def test_backend_runs_are_the_backends_business(herald, api):
    """A run the backend drives itself (any run_id not starting with "hr-") is
    not policed: Herald relays what the backend publishes."""
    user = new_user("ownruns")
    assert api.publish_ok(user, "agent_completed", {"status": "succeeded", "text": ""},
                          run_id="never-started")["seq"] == 1
    assert api.publish_ok(user, "agent_started", {"agent": "a", "input": "i"},
                          run_id="rr")["seq"] == 2


def test_herald_run_rules_are_409(herald, api):
    """Runs Herald started itself ("hr-" ids) get exactly one agent_started (its
    own) and nothing after agent_completed: a backend breaking that gets 409 with
    an error body, never a 5xx."""
    user = new_user("runrules")
    r = api.publish(user, "agent_started", {"agent": "a", "input": "i"}, run_id="hr-0-abc")
    assert_error_body(r, 409, "run_already_started")
    r = api.publish(user, "agent_completed", {"status": "succeeded", "text": ""},
                    run_id="hr-0-abc")
    assert_error_body(r, 409, "run_not_in_flight")
    r = api.publish(user, "agent_message", {"delta": "x"}, run_id="hr-0-abc")
    assert_error_body(r, 409, "run_not_in_flight")


def test_run_rules_violation_in_batch_publishes_nothing(herald, api):
    user = new_user("runbatch")
    evs = [event(user, i, type="agent_thinking", text=str(i)) for i in range(4)]
    evs.append({"user_id": user, "run_id": "hr-1-ghost", "type": "agent_completed",
                "data": {"status": "failed", "text": "", "error": "x"}})
    err = assert_error_body(api.publish_batch(evs), 409)
    assert "events[4]" in err["message"], err
    assert api.publish_ok(user)["seq"] == 1, "part of a refused batch was published"


def test_run_lifecycle_in_one_batch(herald, api):
    user = new_user("runok")
    evs = [{"user_id": user, "run_id": "life", "thread_id": "t", "type": "agent_started",
            "data": {"agent": "a", "input": "hi"}},
           {"user_id": user, "run_id": "life", "thread_id": "t", "type": "agent_message",
            "data": {"delta": "he"}},
           {"user_id": user, "run_id": "life", "thread_id": "t", "type": "agent_completed",
            "data": {"status": "succeeded", "text": "he"}}]
    r = api.publish_batch(evs)
    assert r.status == 200, r
    assert [x["seq"] for x in r.json["results"]] == [1, 2, 3]


def test_publish_without_thread_and_run(herald, api):
    user = new_user("noids")

    async def go():
        (ws, _), = await connect_user(herald, user, 1)
        r = await in_thread(api.publish, user, thread_id=None, run_id=None)
        assert r.status == 200 and r.json["seq"] == 1, r
        ev = await recv_json(ws)
        assert ev["seq"] == 1 and ev["type"] == "agent_thinking", ev
        await ws.close()
    run(go())


# Data in the forms the fast path forwards as sent and in those it leaves to
# jansson (re-encoded): either way the client gets the value that was published.
DATA_FORMS = [
    '{ "text" : "spaced out" ,\n "n" : [ 1 , 2.50 , -0 , 1E+2 ] }',
    '{"esc":"\\u00e9\\ud83d\\ude00 \\"q\\" \\\\ \\/ \\n","raw":"é☃"}',
    '{"\\u006bey":"escaped key"}',
    '{' + ",".join(f'"k{i}":{i}' for i in range(40)) + '}',
    '{"big":1234567890123456789,"r":1e200}',
    '{"deep":' + "[" * 70 + "]" * 70 + '}',
]


@pytest.mark.parametrize("form", range(len(DATA_FORMS)))
def test_data_delivered_as_published(herald, api, form):
    user = new_user("form")
    raw = DATA_FORMS[form]
    want = json.loads(raw)
    single = ('{"user_id":"%s","type":"tool_completed","data":%s}' % (user, raw))
    batch = ('{"events":[{"user_id":"%s","type":"tool_completed","data":%s}]}' % (user, raw))

    async def go():
        (ws, _), = await connect_user(herald, user, 1)
        for seq, body in ((1, single), (2, batch)):
            r = await in_thread(api.request, "POST", "/api/v1/publish", body)
            assert r.status == 200, r
            ev = await recv_json(ws)
            assert ev["seq"] == seq and ev["data"] == want, ev
        await ws.close()
    run(go())


def test_batch_results_in_order(herald, api):
    a, b = new_user("ba"), new_user("bb")

    async def go():
        ca = await connect_user(herald, a, 2)
        cb = await connect_user(herald, b, 1)
        evs = []
        for i in range(10):
            evs.append(event(a if i % 3 else b, i))
        r = await in_thread(api.publish_batch, evs)
        assert r.status == 200, r
        res = r.json["results"]
        assert len(res) == 10
        sa = sb = 0
        for i, (e, x) in enumerate(zip(evs, res)):
            if e["user_id"] == a:
                sa += 1
                assert x == {"seq": sa, "delivered": 2}, (i, x)
            else:
                sb += 1
                assert x == {"seq": sb, "delivered": 1}, (i, x)
        for ws, _ in ca:
            got = [await recv_json(ws) for _ in range(sa)]
            assert [g["seq"] for g in got] == list(range(1, sa + 1))
            assert [g["data"]["delta"] for g in got] == \
                [e["data"]["delta"] for e in evs if e["user_id"] == a]
            await no_message(ws, 0.1)
        ws, _ = cb[0]
        got = [await recv_json(ws) for _ in range(sb)]
        assert [g["data"]["delta"] for g in got] == \
            [e["data"]["delta"] for e in evs if e["user_id"] == b]
        for ws, _ in ca + cb:
            await ws.close()
    run(go())


def test_max_batch_accepted(herald, api):
    user = new_user("max")
    r = api.publish_batch([event(user, i) for i in range(1000)])
    assert r.status == 200, r
    assert [x["seq"] for x in r.json["results"]] == list(range(1, 1001))
    assert all(x["delivered"] == 0 for x in r.json["results"])


def test_offline_user_seq_advances(herald, api):
    user = new_user("offline")
    for i in range(1, 6):
        r = api.publish(user)
        assert r.status == 200 and r.json == {"seq": i, "delivered": 0}, r

    async def go():
        ws = await ws_connect(herald, mint(user))
        w = await recv_welcome(ws, user)
        assert w["seq"] == 5, w
        await no_message(ws, 0.3)  # no replay without since_seq
        r = await in_thread(api.publish, user)
        assert r.json == {"seq": 6, "delivered": 1}, r
        ev = await recv_json(ws)
        assert ev["seq"] == 6 and ev["epoch"] == w["epoch"], ev
        await ws.close()
    run(go())


def test_delivered_counts_connections(herald, api):
    user = new_user("cnt")

    async def go():
        conns = await connect_user(herald, user, 2)
        r = await in_thread(api.publish, user)
        assert r.json["delivered"] == 2, r
        await conns[0][0].close()
        assert await in_thread(api.wait_presence, user, 1) == 1
        r = await in_thread(api.publish, user)
        assert r.json == {"seq": 2, "delivered": 1}, r
        await conns[1][0].close()
    run(go())


# --------------------------------------------------------------------------- errors

def test_api_key_required(herald, api):
    for key in (None, "", "wrong", api_key() + "x", api_key()[:-1]):
        r = api.publish(new_user(), key=key)
        assert_error_body(r, 401)
    r = api.request("POST", "/api/v1/publish", event("u"),
                    headers={"Authorization": f"Basic {api_key()}"}, key=None)
    assert_error_body(r, 401)
    for path, m in (("/api/v1/disconnect", "POST"), ("/api/v1/presence/x", "GET"),
                    ("/api/v1/nope", "GET")):
        r = api.request(m, path, {"user_id": "x"} if m == "POST" else None, key="wrong")
        assert_error_body(r, 401)


def test_wrong_key_publishes_nothing(herald, api):
    user = new_user("nokey")
    assert api.publish(user, key="wrong").status == 401
    assert api.publish_ok(user)["seq"] == 1


def test_api_disabled_without_key():
    with start_heraldd(env={"HERALD_API_KEY": ""}) as h:
        a = Api(h)
        for key in ("", "anything", "test-api-key-0123456789", None):
            r = a.publish("x", key=key)
            assert_error_body(r, 401)
        a.close()


@pytest.mark.parametrize("body", [
    b"", b"{", b"not json", b"[]", b"[{}]", b"42", b"\"s\"", b"null",
    b'{"user_id":"a","type":"agent_thinking","data":{}} trailing',
    b'{"user_id":"a","user_id":"b","type":"agent_thinking","data":{}}',
    b'\xff\xfe',
])
def test_invalid_json_400(herald, api, body):
    assert_error_body(api.request("POST", "/api/v1/publish", body), 400)


BAD_EVENTS = {
    "unknown type": {"type": "agent_dancing"},
    "type missing": {"type": None},
    "type not string": {"type": 7},
    "user_id missing": {"user_id": None},
    "user_id number": {"user_id": 5},
    "user_id empty": {"user_id": ""},
    "user_id 129 bytes": {"user_id": "u" * 129},
    "user_id 129 bytes utf8": {"user_id": "\u00e9" * 64 + "u"},
    "user_id array": {"user_id": ["a"]},
    "thread_id number": {"thread_id": 1},
    "thread_id empty": {"thread_id": ""},
    "thread_id 129": {"thread_id": "t" * 129},
    "thread_id object": {"thread_id": {}},
    "run_id number": {"run_id": 1.5},
    "run_id 129": {"run_id": "r" * 129},
    "run_id bool": {"run_id": True},
    "data missing": {"data": None},
    "data string": {"data": "text"},
    "data array": {"data": [1]},
    "data number": {"data": 3},
}


def _bad_event(user, change):
    ev = event(user, 0)
    for k, v in change.items():
        if v is None:
            ev.pop(k, None)
        else:
            ev[k] = v
    return ev


@pytest.mark.parametrize("name", sorted(BAD_EVENTS))
def test_invalid_event_400(herald, api, name):
    user = new_user("bad")
    err = assert_error_body(api.request("POST", "/api/v1/publish",
                                        _bad_event(user, BAD_EVENTS[name])), 400)
    assert err["message"], err
    # nothing was published for this user
    assert api.publish_ok(user)["seq"] == 1


def test_ids_at_128_bytes_accepted(herald, api):
    user = "u" * 128
    r = api.publish(user, thread_id="t" * 128, run_id="r" * 128)
    assert r.status == 200, r


@pytest.mark.parametrize("k", [0, 7, 999])
def test_batch_invalid_event_publishes_nothing(herald, api, k):
    user = new_user("atomic")
    assert api.publish_ok(user)["seq"] == 1
    evs = [event(user, i) for i in range(1000)]
    evs[k] = _bad_event(user, {"type": "bogus"})
    err = assert_error_body(api.publish_batch(evs), 400)
    assert f"events[{k}]" in err["message"], err
    assert api.publish_ok(user)["seq"] == 2, "part of a refused batch was published"


def test_batch_invalid_data_named(herald, api):
    user = new_user("atomic2")
    evs = [event(user, i) for i in range(5)]
    evs[3]["data"] = "nope"
    err = assert_error_body(api.publish_batch(evs), 400)
    assert "events[3]" in err["message"], err
    assert api.publish_ok(user)["seq"] == 1


def test_batch_too_large_400(herald, api):
    user = new_user("big")
    err = assert_error_body(api.publish_batch([event(user, i) for i in range(1001)]), 400)
    assert err
    assert api.publish_ok(user)["seq"] == 1


@pytest.mark.parametrize("events", [[], {}, "x", None, 3])
def test_batch_malformed_400(herald, api, events):
    r = api.request("POST", "/api/v1/publish", {"events": events})
    assert_error_body(r, 400)


def test_body_over_1mib_413(herald):
    user = new_user("huge")
    body = json.dumps({"user_id": user, "type": "agent_thinking",
                       "data": {"text": "x" * (1 << 20)}}).encode()
    req = (f"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api_key()}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    r = parse_response(send_while_reading(herald, req + body))
    assert_error_body(r, 413)
    a = Api(herald)
    assert a.publish_ok(user)["seq"] == 1, "the oversized event was published"
    a.close()


def test_body_exactly_1mib_not_413(herald):
    user = new_user("edge")
    ev = {"user_id": user, "type": "agent_thinking", "data": {"text": ""}}
    pad = (1 << 20) - len(json.dumps(ev, separators=(",", ":")))
    ev["data"]["text"] = "x" * pad
    body = json.dumps(ev, separators=(",", ":")).encode()
    assert len(body) == 1 << 20
    a = Api(herald)
    r = a.request("POST", "/api/v1/publish", body)
    # within the body limit; the event itself is over the 64 KiB message limit
    assert_error_body(r, 400)
    a.close()


def test_body_over_1mib_413_raw(herald):
    """The 413 comes from the Content-Length alone, before the body is read."""
    req = (f"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api_key()}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {(1 << 20) + 1}\r\n\r\n").encode()
    r = parse_response(raw_request(herald, req))
    assert_error_body(r, 413)


def test_message_limit_400():
    with start_heraldd("--max-message", "2000") as h:
        a = Api(h)
        user = new_user("lim")
        r = a.publish(user, data={"text": "y" * 2500})
        assert_error_body(r, 400)
        r = a.publish_batch([event(user, 0), {**event(user, 1), "data": {"t": "z" * 3000}}])
        err = assert_error_body(r, 400)
        assert "events[1]" in err["message"], err
        r = a.publish(user, data={"text": "y" * 500})
        assert r.status == 200 and r.json["seq"] == 1, r
        a.close()


def test_method_not_allowed(herald, api):
    assert_error_body(api.request("GET", "/api/v1/publish"), 405)
    assert_error_body(api.request("PUT", "/api/v1/publish", event("x")), 405)
    assert_error_body(api.request("GET", "/api/v1/disconnect"), 405)
    assert_error_body(api.request("POST", "/api/v1/presence/x", {}), 405)


def test_unknown_paths_404(herald, api):
    for p in ("/api/v1/x", "/api/v1/publishx", "/api/v1/publish/", "/api/v2/publish",
              "/nope"):
        assert_error_body(api.request("GET", p), 404)


def test_error_keeps_connection(herald):
    a = Api(herald)
    user = new_user("ka-err")
    assert a.request("POST", "/api/v1/publish", b"{").status == 400
    assert a.publish(user, type="bogus").status == 400
    assert a.request("GET", "/api/v1/zzz").status == 404
    assert a.publish_ok(user)["seq"] == 1
    assert a.connects == 1, "an error reply closed the keep-alive connection"
    a.close()


# --------------------------------------------------------------------------- keep-alive

def test_keep_alive_many_requests(herald):
    a = Api(herald)
    user = new_user("ka")
    for i in range(1, 501):
        r = a.publish(user)
        assert r.status == 200 and r.json["seq"] == i, r
    assert a.connects == 1, f"{a.connects} TCP connections for 500 requests"
    a.close()


def test_pipelining(herald):
    user = new_user("pipe")
    n = 20
    reqs = b""
    for i in range(n):
        body = json.dumps(event(user, i)).encode()
        reqs += (f"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {api_key()}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    # a GET and a bad request in the middle of the pipeline, answered in place
    reqs += b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"{"
    reqs += (f"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api_key()}\r\n"
             f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    body = json.dumps(event(user, n)).encode()
    reqs += (f"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api_key()}\r\n"
             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    with socket.create_connection((herald.host, herald.port), timeout=10) as s:
        s.sendall(reqs)
        buf = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    replies = []
    while buf:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        assert sep, buf
        cl = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
        ln = int(cl[0].split(b":")[1]) if cl else 0
        replies.append(parse_response(head + sep + rest[:ln]))
        buf = rest[ln:]
    assert len(replies) == n + 3, replies
    for i in range(n):
        assert replies[i].status == 200 and replies[i].json == {"seq": i + 1, "delivered": 0}, \
            (i, replies[i])
    assert replies[n].status == 200 and replies[n].json["status"] == "ok"
    assert_error_body(replies[n + 1], 400)
    assert replies[n + 2].status == 200 and replies[n + 2].json["seq"] == n + 1


def test_pipelining_split_across_sends(herald):
    user = new_user("pipe2")
    body = json.dumps(event(user, 0)).encode()
    one = (f"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api_key()}\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    data = one * 5
    with socket.create_connection((herald.host, herald.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(data), 37):
            s.sendall(data[i:i + 37])
            time.sleep(0.001)
        got = []
        buf = b""
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            buf += s.recv(65536)
            while b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                cl = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                ln = int(cl[0].split(b":")[1])
                if len(rest) < ln:
                    break
                got.append(parse_response(head + b"\r\n\r\n" + rest[:ln]))
                buf = rest[ln:]
    assert [g.json["seq"] for g in got] == [1, 2, 3, 4, 5], got


# --------------------------------------------------------------------------- disconnect

def test_disconnect(herald, api):
    u, other = new_user("dc"), new_user("dc-other")

    async def go():
        cu = await connect_user(herald, u, 3)
        co = await connect_user(herald, other, 2)
        assert await in_thread(api.presence, u) == 3
        r = await in_thread(api.disconnect, u)
        assert r.status == 200 and r.json == {"closed": 3}, r
        for ws, _ in cu:
            code, _ = await expect_close(ws, 5)
            assert code == 4003, code
        assert await in_thread(api.wait_presence, u, 0) == 0
        assert await in_thread(api.presence, other) == 2
        r = await in_thread(api.publish, other)
        assert r.json["delivered"] == 2, r
        for ws, _ in co:
            ev = await recv_json(ws)
            assert ev["seq"] == 1
        r = await in_thread(api.disconnect, u)
        assert r.status == 200 and r.json == {"closed": 0}, r
        # the user may connect again
        (ws, w), = await connect_user(herald, u, 1)
        assert await in_thread(api.presence, u) == 1
        for x, _ in co + [(ws, w)]:
            await x.close()
    run(go())


def test_disconnect_unknown_user(herald, api):
    r = api.disconnect(new_user("ghost"))
    assert r.status == 200 and r.json == {"closed": 0}, r


@pytest.mark.parametrize("body", [{}, {"user_id": ""}, {"user_id": 3}, b"{", {"user_id": "u" * 129}])
def test_disconnect_invalid_400(herald, api, body):
    assert_error_body(api.request("POST", "/api/v1/disconnect", body), 400)


# --------------------------------------------------------------------------- presence

@pytest.mark.parametrize("user", ["plain", "with space", "a/b?c#d&e=f%", "\u00e9l\u00e8ve \u2603",
                                  "u" * 128])
def test_presence(herald, api, user):
    user = user + new_user("")[-6:] if len(user) < 100 else user

    async def go():
        assert await in_thread(api.presence, user) == 0
        c1 = await connect_user(herald, user, 1)
        assert await in_thread(api.wait_presence, user, 1) == 1
        c2 = await connect_user(herald, user, 2)
        assert await in_thread(api.wait_presence, user, 3) == 3
        await c1[0][0].close()
        assert await in_thread(api.wait_presence, user, 2) == 2
        for ws, _ in c2:
            await ws.close()
        assert await in_thread(api.wait_presence, user, 0) == 0
    run(go())


def test_presence_json_shape(herald, api):
    r = api.request("GET", "/api/v1/presence/" + urllib.parse.quote("x y", safe=""))
    assert r.status == 200 and r.json == {"user_id": "x y", "connections": 0}, r


def test_presence_bad_id(herald, api):
    assert_error_body(api.request("GET", "/api/v1/presence/" + "u" * 129), 400)


# --------------------------------------------------------------------------- operations

def test_health(herald, api):
    r = api.request("GET", "/health", key=None)
    assert r.status == 200 and r.json["status"] == "ok", r


def test_ws_health(herald, api):
    user = new_user("wsh")
    r = api.ws_health()
    assert r.status == 200, r
    base = r.json
    assert base["status"] == "ok" and base["manager_instances"] == 1, base

    async def go():
        conns = await connect_user(herald, user, 2)
        j = (await in_thread(api.ws_health)).json
        assert j["connections"] >= base["connections"] + 2, (base, j)
        assert j["users"] >= base["users"] + 1, (base, j)
        assert j["manager_instances"] == 1
        for ws, _ in conns:
            await ws.close()
    run(go())


def test_metrics(herald, api):
    r = api.request("GET", "/metrics", key=None)
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    for line in r.body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)
    m = api.metrics()
    assert m["herald_manager_instances"] == 1
    assert m["herald_isolation_violations_total"] == 0
    user = new_user("met")
    before = m["herald_events_published_total"]
    assert api.publish_batch([event(user, i) for i in range(37)]).status == 200
    api.publish_ok(user)
    m2 = api.metrics()
    assert m2["herald_events_published_total"] == before + 38, (before, m2)
    assert m2["herald_http_requests_total"] > m["herald_http_requests_total"]


def test_metrics_deliveries_move(herald, api):
    user = new_user("met2")

    async def go():
        conns = await connect_user(herald, user, 2)
        m = await in_thread(api.metrics)
        assert m["herald_authenticated_connections"] >= 2
        r = await in_thread(api.publish_batch, [event(user, i) for i in range(5)])
        assert r.status == 200
        for ws, _ in conns:
            for _ in range(5):
                await recv_json(ws)
        m2 = await in_thread(api.metrics)
        assert m2["herald_deliveries_total"] >= m["herald_deliveries_total"] + 10, (m, m2)
        assert m2["herald_isolation_violations_total"] == 0
        for ws, _ in conns:
            await ws.close()
    run(go())


def test_sigterm_closes_1001_exits_0():
    h = start_heraldd()
    user = "term-user"

    async def go():
        conns = await connect_user(h, user, 3)
        loop = asyncio.get_running_loop()
        stopper = loop.run_in_executor(None, h.stop, 15)
        codes = []
        for ws, _ in conns:
            code, _ = await expect_close(ws, 12)
            codes.append(code)
        rc = await stopper
        return codes, rc
    try:
        codes, rc = run(go(), 40)
    finally:
        h.stop()
    assert codes == [1001, 1001, 1001], codes
    assert rc == 0, f"exit code {rc}\n{h.stderr_text()}"


def test_sigterm_ws_health_draining():
    """During the drain /ws-health answers 503 draining (best effort: a client is kept
    open so the drain lasts; if the listener is already closed the check is skipped)."""
    import signal
    h = start_heraldd("--drain-timeout", "3")
    a = Api(h)
    a.ws_health()  # opens the keep-alive connection before the signal

    async def go():
        (ws, _), = await connect_user(h, "drainer", 1)
        h.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        try:
            r = await in_thread(a.ws_health)
        except OSError:
            r = None
        try:
            await asyncio.wait_for(ws.wait_closed(), 10)
        except asyncio.TimeoutError:
            pass
        return r
    try:
        r = run(go(), 30)
    finally:
        rc = h.stop()
        a.close()
    if r is not None:
        assert r.status == 503 and r.json["status"] == "draining", r
    assert rc == 0, rc
