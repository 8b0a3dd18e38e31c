"""Mission-critical 7: no cross-user event bleeding under a concurrent stress
run.

Against the real heraldd (2 workers): 50 users with 2 connections each, plus 5
quiet users (2 connections each) who are never published to. Four publisher
threads, each on its own keep-alive HTTP connection, publish 6,000 events in
total to random users of the 50 -- mostly in batches, some one at a time, all
six event types -- and each event's data carries the user's secret, its name
and a unique (publisher, n) tag. Then:

- every connection received only events of its own user: data.user is the
  user, data.secret is the user's secret (another user's secret never
  appears), and nothing arrives on the quiet users' connections;
- each connection's seq runs welcome.seq + 1, + 2, ... without a gap, and its
  events are exactly the ones published to the user: the (publisher, n) tags
  match one to one, at the seq the publish API returned for each;
- the user's two connections saw identical streams;
- every publish result reported delivered == 2, the seqs the API returned per
  user are 1..N with no repeat;
- /metrics herald_isolation_violations_total is 0, herald_deliveries_total
  equals 2 x the events, /ws-health isolation_violations is 0, and the
  daemon logged no refused frame.

How it fails: an event routed to another user (wrong user/secret on some
connection, or anything on a quiet user's connection), a lost or duplicated
event (seq gap, tag missing or twice), seqs that differ between a user's
connections, a non-zero violation counter.

Run: /usr/bin/python3 -m pytest -q tests/mission_critical/test_7_no_cross_user_bleeding.py
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import sys
import threading
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mc_util import Http, metrics, mint, run_against_heraldd, scaled, ws_uri  # noqa: E402

USERS = 50
QUIET = 5
PER_USER = 2
PUBLISHERS = 4
EVENTS = scaled(6000)  # in total, over all publishers
BATCH = 25
TIMEOUT = 180.0
TYPES = ["agent_started", "agent_thinking", "tool_executing", "tool_completed",
         "agent_message", "agent_completed"]


def user(i: int) -> str:
    return f"mc7-user-{i:03d}"


def quiet(i: int) -> str:
    return f"mc7-quiet-{i}"


SECRETS = {user(i): secrets.token_hex(16) for i in range(USERS)}
SECRETS.update({quiet(i): secrets.token_hex(16) for i in range(QUIET)})


class Client:
    def __init__(self, ws, uid: str, welcome: dict):
        self.ws = ws
        self.user = uid
        self.welcome = welcome
        self.events: list[dict] = []
        self.other: list[dict] = []
        self.closed = None
        self.task = asyncio.get_running_loop().create_task(self.read())

    async def read(self):
        try:
            async for msg in self.ws:
                m = json.loads(msg)
                (self.events if "seq" in m else self.other).append(m)
        except websockets.ConnectionClosed as e:
            self.closed = e


async def open_client(h, uid: str, header: bool) -> Client:
    token = mint(uid)
    kw = dict(open_timeout=20, close_timeout=5, compression=None, max_size=1 << 20)
    if header:
        ws = await websockets.connect(ws_uri(h), extra_headers={"Authorization": f"Bearer {token}"},
                                      **kw)
    else:
        ws = await websockets.connect(ws_uri(h, token), **kw)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert welcome["type"] == "welcome" and welcome["user_id"] == uid, welcome
    return Client(ws, uid, welcome)


def publisher(h, pub: int, n_events: int, out: list, errors: list):
    """Publishes n_events to random users; appends (user, pub, n, seq, delivered)."""
    rnd = random.Random(1000 + pub)
    http = Http(h)
    n = 0
    try:
        while n < n_events:
            size = 1 if rnd.random() < 0.1 else min(BATCH, n_events - n)
            events = []
            for _ in range(size):
                uid = user(rnd.randrange(USERS))
                events.append({"user_id": uid, "thread_id": f"thread-{uid}", "run_id": f"run-{pub}",
                               "type": rnd.choice(TYPES),
                               "data": {"user": uid, "secret": SECRETS[uid], "pub": pub, "n": n}})
                n += 1
            if size == 1:
                status, body = http.publish(events[0])
                results = [body] if status == 200 else []
            else:
                status, body = http.publish({"events": events})
                results = body.get("results", []) if status == 200 else []
            if status != 200 or len(results) != len(events):
                errors.append((status, body))
                return
            for ev, r in zip(events, results):
                out.append((ev["user_id"], pub, ev["data"]["n"], r["seq"], r["delivered"]))
    finally:
        http.close()


async def scenario(h):
    clients: list[Client] = []
    names = [user(i) for i in range(USERS)] + [quiet(i) for i in range(QUIET)]
    for k in range(0, len(names), 10):
        wave = names[k:k + 10]
        clients += await asyncio.gather(*(open_client(h, u, header=(j % 2 == 0))
                                          for u in wave for j in range(PER_USER)))
    by_user: dict[str, list[Client]] = {}
    for c in clients:
        by_user.setdefault(c.user, []).append(c)
    for c in clients:
        assert c.welcome["seq"] == 0, c.welcome  # fresh daemon, fresh users

    http = Http(h)
    m0 = await asyncio.to_thread(metrics, http)

    # The stress run: publishers in threads, clients reading on the loop.
    results: list[list] = [[] for _ in range(PUBLISHERS)]
    errors: list = []
    threads = [threading.Thread(target=publisher,
                                args=(h, p, EVENTS // PUBLISHERS + (p < EVENTS % PUBLISHERS),
                                      results[p], errors), daemon=True)
               for p in range(PUBLISHERS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        await asyncio.sleep(0.05)
        assert time.monotonic() - t0 < TIMEOUT / 2, "publishers did not finish"
    assert errors == [], errors[:3]
    published = [r for rs in results for r in rs]
    assert len(published) == EVENTS

    # What each user must receive, by seq (from the publish API's answers).
    want: dict[str, dict[int, tuple[int, int]]] = {u: {} for u in by_user}
    for uid, pub, n, seq, delivered in published:
        assert delivered == PER_USER, (uid, pub, n, seq, delivered)
        assert seq not in want[uid], f"seq {seq} of {uid} returned twice"
        want[uid][seq] = (pub, n)
    for uid, seqs in want.items():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), f"{uid}: seqs not 1..N"

    # Wait until every connection has everything meant for it.
    deadline = time.monotonic() + 60
    while any(len(c.events) < len(want[c.user]) for c in clients):
        assert time.monotonic() < deadline, "events did not all arrive: " + str(
            [(c.user, len(c.events), len(want[c.user])) for c in clients
             if len(c.events) < len(want[c.user])][:5])
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # anything extra (a bleed) would arrive now

    all_secrets = {s: u for u, s in SECRETS.items()}
    for c in clients:
        assert c.closed is None, (c.user, c.closed)
        assert c.other == [], (c.user, c.other[:3])
        mine = want[c.user]
        assert len(c.events) == len(mine), (c.user, len(c.events), len(mine))
        expect_seq = c.welcome["seq"] + 1
        for ev in c.events:
            d = ev["data"]
            leaked_from = all_secrets.get(d.get("secret"))
            assert d["user"] == c.user and d["secret"] == SECRETS[c.user], \
                f"{c.user} received an event of {d.get('user')} (secret of {leaked_from})"
            assert ev["seq"] == expect_seq, (c.user, ev["seq"], expect_seq)
            assert mine[ev["seq"]] == (d["pub"], d["n"]), (c.user, ev["seq"], d)
            assert ev["thread_id"] == f"thread-{c.user}", ev
            assert ev["type"] in TYPES and ev["epoch"] == c.welcome["epoch"], ev
            expect_seq += 1
    for uid, cs in by_user.items():
        a, b = ([(e["seq"], e["data"]["pub"], e["data"]["n"]) for e in c.events] for c in cs)
        assert a == b, f"{uid}: its connections saw different streams"
    for i in range(QUIET):
        for c in by_user[quiet(i)]:
            assert c.events == [], (c.user, c.events[:3])

    m1 = await asyncio.to_thread(metrics, http)
    status, wh = await asyncio.to_thread(http.get_json, "/ws-health")
    http.close()
    assert m1["herald_isolation_violations_total"] == 0, m1
    assert m1["herald_deliveries_total"] - m0["herald_deliveries_total"] == EVENTS * PER_USER, m1
    assert m1["herald_events_published_total"] - m0["herald_events_published_total"] == EVENTS
    assert m1["herald_manager_instances"] == 1
    assert status == 200 and wh["isolation_violations"] == 0 and wh["manager_instances"] == 1, wh
    assert wh["connections"] == len(clients), wh

    await asyncio.gather(*(c.ws.close() for c in clients))
    for c in clients:
        c.task.cancel()


def test_no_cross_user_bleeding():
    run_against_heraldd(scenario, TIMEOUT)
