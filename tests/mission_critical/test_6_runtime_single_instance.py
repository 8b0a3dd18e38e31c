"""Mission-critical 6: exactly one manager instance at runtime, as /ws-health
reports under load.

The seed found several live manager instances in production with nothing to
notice it. Against the real heraldd (2 workers): 100 authenticated WebSocket
connections (50 users x 2; half with an Authorization header, half with
?access_token=) stay open and keep reading while a publisher thread sends
events to them; meanwhile /ws-health is asked several times and must answer
200 with "manager_instances":1 and the exact connection and user counts, and
/metrics must say herald_manager_instances 1 with the same counts. Closing 30
connections must bring the counts down accordingly (so the numbers are live,
not constants), and the instance count stays 1.

How it fails: a second manager (per worker, per user, per request) makes
instances 2+, or splits the registry so the counts come out short; a count
that does not track connections; a publisher that got no events through
(load was not actually applied).

Run: /usr/bin/python3 -m pytest -q tests/mission_critical/test_6_runtime_single_instance.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mc_util import Http, metrics, mint, run_against_heraldd, ws_uri  # noqa: E402

USERS = 50
PER_USER = 2
CONNS = USERS * PER_USER
CLOSE = 30
TIMEOUT = 120.0


def user(i: int) -> str:
    return f"mc6-user-{i:03d}"


class Client:
    def __init__(self, ws, uid: str):
        self.ws = ws
        self.user = uid
        self.events = 0
        self.closed_early = None
        self.task = asyncio.get_running_loop().create_task(self.read())

    async def read(self):
        try:
            async for msg in self.ws:
                m = json.loads(msg)
                if "seq" in m and m.get("type") != "welcome":
                    self.events += 1
        except websockets.ConnectionClosed as e:
            self.closed_early = e


async def open_client(h, i: int) -> Client:
    uid = user(i // PER_USER)
    token = mint(uid)
    if i % 2:
        ws = await websockets.connect(ws_uri(h, token), open_timeout=20, close_timeout=5,
                                      compression=None)
    else:
        ws = await websockets.connect(ws_uri(h), open_timeout=20, close_timeout=5,
                                      compression=None,
                                      extra_headers={"Authorization": f"Bearer {token}"})
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert welcome["type"] == "welcome", welcome
    assert welcome["user_id"] == uid, welcome
    return Client(ws, uid)


def publisher(h, stop: threading.Event, counts: dict):
    http = Http(h)
    k = 0
    try:
        while not stop.is_set():
            events = [{"user_id": user((k + j) % USERS), "thread_id": "t1", "run_id": "r1",
                       "type": "agent_message", "data": {"delta": f"chunk {k + j}"}}
                      for j in range(20)]
            status, body = http.publish({"events": events})
            if status != 200:
                counts["errors"] += 1
                continue
            counts["published"] += len(body["results"])
            counts["delivered"] += sum(r["delivered"] for r in body["results"])
            k += 20
            time.sleep(0.005)
    finally:
        http.close()


async def health_checks(h, rounds: int, want_conns: int, want_users: int):
    def check():
        http = Http(h)
        try:
            out = []
            for _ in range(rounds):
                status, wh = http.get_json("/ws-health")
                m = metrics(http)
                out.append((status, wh, m))
                time.sleep(0.1)
            return out
        finally:
            http.close()

    for status, wh, m in await asyncio.to_thread(check):
        assert status == 200, (status, wh)
        assert wh["status"] == "ok", wh
        assert wh["manager_instances"] == 1, wh
        assert wh["connections"] == want_conns, wh
        assert wh["users"] == want_users, wh
        assert wh.get("isolation_violations", 0) == 0, wh
        assert m["herald_manager_instances"] == 1, m
        assert m["herald_authenticated_connections"] == want_conns, m
        assert m["herald_users"] == want_users, m
        assert m["herald_isolation_violations_total"] == 0, m


async def wait_counts(h, want_conns: int, want_users: int, deadline: float):
    def poll():
        http = Http(h)
        try:
            while True:
                status, wh = http.get_json("/ws-health")
                if (wh["connections"], wh["users"]) == (want_conns, want_users) or \
                        time.monotonic() > deadline:
                    return status, wh
                time.sleep(0.05)
        finally:
            http.close()

    status, wh = await asyncio.to_thread(poll)
    assert status == 200 and wh["manager_instances"] == 1, wh
    assert (wh["connections"], wh["users"]) == (want_conns, want_users), wh


async def scenario(h):
    clients = []
    for start_i in range(0, CONNS, 20):  # open in waves of 20
        clients += await asyncio.gather(*(open_client(h, i)
                                          for i in range(start_i, min(CONNS, start_i + 20))))
    assert len(clients) == CONNS

    stop = threading.Event()
    counts = {"published": 0, "delivered": 0, "errors": 0}
    pub = threading.Thread(target=publisher, args=(h, stop, counts), daemon=True)
    pub.start()
    try:
        await asyncio.sleep(0.3)  # the publisher is under way
        await health_checks(h, rounds=6, want_conns=CONNS, want_users=USERS)
    finally:
        stop.set()
        await asyncio.to_thread(pub.join, 30)
    assert counts["errors"] == 0, counts
    assert counts["published"] > 0, counts
    assert counts["delivered"] == counts["published"] * PER_USER, counts
    # Every client is still there (none closed as a slow consumer) and got events.
    await asyncio.sleep(0.2)
    for c in clients:
        assert c.closed_early is None, (c.user, c.closed_early)
    assert sum(c.events for c in clients) > 0

    # Close 30 connections: the first 30 clients are users 0..14, both connections.
    await asyncio.gather(*(c.ws.close() for c in clients[:CLOSE]))
    await wait_counts(h, CONNS - CLOSE, USERS - CLOSE // PER_USER, time.monotonic() + 10)
    await health_checks(h, rounds=2, want_conns=CONNS - CLOSE,
                        want_users=USERS - CLOSE // PER_USER)

    await asyncio.gather(*(c.ws.close() for c in clients[CLOSE:]))
    await wait_counts(h, 0, 0, time.monotonic() + 10)
    for c in clients:
        c.task.cancel()


def test_one_instance_under_load():
    run_against_heraldd(scenario, TIMEOUT)
