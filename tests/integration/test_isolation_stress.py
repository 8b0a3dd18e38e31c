"""The isolation stress test: many users, many connections, many concurrent events.

Run with ``/usr/bin/python3 -m pytest -q -s tests/integration/test_isolation_stress.py``.

A heraldd with --workers 2 serves USERS users x CONNS connections each (default
200 x 3 = 600 WebSockets, spread over several client processes).  Several
publisher processes publish EVENTS events (default 100,000) in batches of 100
over keep-alive HTTP connections, in random user order.  Each event's data
carries its user's random secret and a per-user counter.

Every client checks, as events arrive, that each event is its own user's
(secret), and that seq counts up by exactly 1 from the welcome seq.  At the
end every connection's (seq, counter) list must equal, exactly, what the
publishers were told was published for its user (the publish replies' seqs):
no leak, no loss, no duplicate, no reordering.  Every publish must report
delivered == CONNS.  /metrics must show herald_isolation_violations_total 0 and
herald_events_published_total moved by EVENTS.

Scale with HERALD_STRESS_USERS, HERALD_STRESS_CONNS, HERALD_STRESS_EVENTS,
HERALD_STRESS_PUBLISHERS, HERALD_STRESS_CLIENT_PROCS; HERALD_STRESS_SEED fixes
the random order.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import queue
import random
import resource
import secrets
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_proc import start_heraldd  # noqa: E402
from herald_client import Api, mint, ws_connect  # noqa: E402

USERS = int(os.environ.get("HERALD_STRESS_USERS", 200))
CONNS = int(os.environ.get("HERALD_STRESS_CONNS", 3))
EVENTS = int(os.environ.get("HERALD_STRESS_EVENTS", 100_000))
PUBLISHERS = int(os.environ.get("HERALD_STRESS_PUBLISHERS", 4))
CLIENT_PROCS = int(os.environ.get("HERALD_STRESS_CLIENT_PROCS", 3))
BATCH = 100
DEADLINE_S = 200  # the whole scenario, well under CTest's limit
# Not agent_message (a slow connection may get those merged, PROTOCOL.md 3) and not
# agent_started/agent_completed (the run rules: one of each per run).
TYPES = ("agent_thinking", "tool_executing", "tool_completed")


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# --------------------------------------------------------------------------- clients

class _H:
    def __init__(self, host, port):
        self.host, self.port = host, port


async def _client_main(host, port, users, secret_of, ready_q, cmd_q, out_q, idx):
    h = _H(host, port)
    conns = []  # dicts
    sem = asyncio.Semaphore(50)

    async def open_one(user):
        async with sem:
            ws = await ws_connect(h, mint(user), max_size=1 << 20)
            w = json.loads(await asyncio.wait_for(ws.recv(), 20))
            return ws, w

    pending = [(u, k) for u in users for k in range(CONNS)]
    opened = await asyncio.gather(*(open_one(u) for u, _ in pending))
    done_evt = asyncio.Event()
    state = {"remaining": len(opened)}

    for (user, k), (ws, w) in zip(pending, opened):
        c = {"user": user, "k": k, "ws": ws, "welcome": w, "got": [], "errors": [],
             "next": None, "target": None, "close": None}
        if w.get("type") != "welcome" or w.get("user_id") != user:
            c["errors"].append(f"bad welcome {w}")
        c["next"] = w.get("seq", 0) + 1
        conns.append(c)

    def note(c, msg):
        if len(c["errors"]) < 10:
            c["errors"].append(msg)

    async def reader(c):
        ws, user, secret = c["ws"], c["user"], secret_of[c["user"]]
        got = c["got"]
        counted = False
        try:
            async for raw in ws:
                if not isinstance(raw, str):
                    note(c, f"binary frame {raw[:50]!r}")
                    continue
                m = json.loads(raw)
                d = m.get("data")
                if not isinstance(d, dict) or d.get("secret") != secret or d.get("u") != user:
                    note(c, f"LEAK: {user} got {raw[:300]}")
                    continue
                seq = m.get("seq")
                if seq != c["next"]:
                    note(c, f"seq {seq} where {c['next']} expected")
                c["next"] = (seq or 0) + 1
                got.append((seq, d.get("n")))
                if not counted and c["target"] is not None and len(got) >= c["target"]:
                    counted = True
                    state["remaining"] -= 1
                    if state["remaining"] == 0:
                        done_evt.set()
        except Exception as e:  # noqa: BLE001 - reported below
            if not closing:
                c["close"] = f"{type(e).__name__}: {e}"
        if ws.close_code is not None and c["close"] is None and not closing:
            c["close"] = f"closed {ws.close_code}"

    closing = False
    tasks = [asyncio.create_task(reader(c)) for c in conns]
    ready_q.put(("ready", idx, len(conns)))

    loop = asyncio.get_running_loop()
    try:
        targets = await loop.run_in_executor(None, lambda: cmd_q.get(timeout=DEADLINE_S))
    except queue.Empty:
        targets = {}
    for c in conns:
        c["target"] = targets.get(c["user"], 0)
        if len(c["got"]) >= c["target"]:
            state["remaining"] -= 1
    if state["remaining"] <= 0:
        done_evt.set()
    try:
        await asyncio.wait_for(done_evt.wait(), 90)
    except asyncio.TimeoutError:
        pass
    await asyncio.sleep(0.5)  # anything extra (a duplicate, a leak) shows up now
    for c in conns:
        if c["ws"].close_code is not None and c["close"] is None:
            c["close"] = f"closed {c['ws'].close_code}"
    closing = True
    await asyncio.gather(*(asyncio.wait_for(c["ws"].close(), 10) for c in conns),
                         return_exceptions=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    out_q.put(("result", idx, [{"user": c["user"], "k": c["k"], "welcome_seq": c["welcome"].get("seq"),
                                "got": c["got"], "errors": c["errors"], "close": c["close"]}
                               for c in conns]))


def client_proc(host, port, users, secret_of, ready_q, cmd_q, out_q, idx):
    raise_nofile()
    try:
        asyncio.run(asyncio.wait_for(
            _client_main(host, port, users, secret_of, ready_q, cmd_q, out_q, idx),
            DEADLINE_S + 60))
    except BaseException as e:  # noqa: BLE001
        ready_q.put(("failed", idx, f"{type(e).__name__}: {e}"))
        out_q.put(("failed", idx, f"{type(e).__name__}: {e}"))


# --------------------------------------------------------------------------- publishers

def publisher_proc(host, port, items, secret_of, out_q, idx):
    try:
        api = Api(_H(host, port), timeout=60)
        results = []
        errors = []
        for i in range(0, len(items), BATCH):
            chunk = items[i:i + BATCH]
            evs = []
            for user, n in chunk:
                evs.append({"user_id": user, "thread_id": f"t{n % 7}", "run_id": f"r{n % 5}",
                            "type": TYPES[n % len(TYPES)],
                            "data": {"u": user, "secret": secret_of[user], "n": n,
                                     "text": f"event {n} for {user}"}})
            r = api.publish_batch(evs)
            if r.status != 200:
                errors.append(f"batch {i // BATCH}: {r!r}")
                break
            res = r.json["results"]
            if len(res) != len(chunk):
                errors.append(f"batch {i // BATCH}: {len(res)} results for {len(chunk)}")
                break
            for (user, n), x in zip(chunk, res):
                results.append((user, n, x["seq"], x["delivered"]))
        out_q.put(("published", idx, results, errors, api.connects))
        api.close()
    except BaseException as e:  # noqa: BLE001
        out_q.put(("published", idx, [], [f"{type(e).__name__}: {e}"], 0))


# --------------------------------------------------------------------------- the test

def _get(q, what, timeout):
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"timed out waiting for {what}")


def test_isolation_stress():
    raise_nofile()
    seed = int(os.environ.get("HERALD_STRESS_SEED", random.randrange(1 << 30)))
    rnd = random.Random(seed)
    print(f"\nseed {seed}: {USERS} users x {CONNS} connections, {EVENTS} events, "
          f"{PUBLISHERS} publishers, {CLIENT_PROCS} client processes")
    t_start = time.monotonic()
    ctx = mp.get_context("fork")
    h = start_heraldd("--workers", "2", workers=2)
    procs = []
    try:
        api = Api(h)
        users = [f"stress-{i:04d}-{secrets.token_hex(3)}" for i in range(USERS)]
        secret_of = {u: secrets.token_hex(16) for u in users}
        before = api.metrics()

        # ---- clients
        ready_q, out_q = ctx.Queue(), ctx.Queue()
        cmd_qs = []
        for i in range(CLIENT_PROCS):
            mine = users[i::CLIENT_PROCS]
            cq = ctx.Queue()
            cmd_qs.append(cq)
            p = ctx.Process(target=client_proc,
                            args=(h.host, h.port, mine, secret_of, ready_q, cq, out_q, i),
                            daemon=True)
            p.start()
            procs.append(p)
        for _ in range(CLIENT_PROCS):
            msg = _get(ready_q, "clients to connect", 120)
            assert msg[0] == "ready", f"client process failed: {msg}"
        t_connected = time.monotonic()
        wsh = api.ws_health().json
        assert wsh["connections"] == USERS * CONNS, wsh
        assert wsh["users"] == USERS, wsh
        assert wsh["manager_instances"] == 1, wsh
        for u in rnd.sample(users, 5):
            assert api.presence(u) == CONNS
        print(f"{USERS * CONNS} connections open in {t_connected - t_start:.1f}s")

        # ---- events: per-user counts vary; global order is random
        base = EVENTS // USERS
        counts = {u: base for u in users}
        for _ in range(EVENTS - base * USERS):
            counts[rnd.choice(users)] += 1
        for _ in range(USERS):  # move some events between users so counts differ
            a, b = rnd.choice(users), rnd.choice(users)
            k = rnd.randint(0, base // 2)
            if counts[a] > k:
                counts[a] -= k
                counts[b] += k
        items = [(u, n) for u in users for n in range(counts[u])]
        rnd.shuffle(items)
        assert len(items) == EVENTS

        # ---- publishers
        pub_q = ctx.Queue()
        t_pub = time.monotonic()
        pubs = []
        for i in range(PUBLISHERS):
            p = ctx.Process(target=publisher_proc,
                            args=(h.host, h.port, items[i::PUBLISHERS], secret_of, pub_q, i),
                            daemon=True)
            p.start()
            pubs.append(p)
            procs.append(p)
        published = {u: {} for u in users}
        pub_errors = []
        delivered_bad = []
        for _ in range(PUBLISHERS):
            msg = _get(pub_q, "publishers", DEADLINE_S)
            _, idx, results, errors, connects = msg
            pub_errors += errors
            if connects > 1:
                pub_errors.append(f"publisher {idx} needed {connects} TCP connections "
                                  f"(keep-alive broken)")
            for user, n, seq, delivered in results:
                if seq in published[user]:
                    pub_errors.append(f"seq {seq} of {user} returned twice")
                published[user][seq] = n
                if delivered != CONNS and len(delivered_bad) < 10:
                    delivered_bad.append((user, n, seq, delivered))
        t_pub_done = time.monotonic()
        assert not pub_errors, pub_errors[:10]
        n_pub = sum(len(v) for v in published.values())
        assert n_pub == EVENTS, f"{n_pub} events published of {EVENTS}"
        pub_rate = EVENTS / (t_pub_done - t_pub)

        # ---- tell the clients what to expect, collect what they saw
        for i in range(CLIENT_PROCS):
            cmd_qs[i].put({u: counts[u] for u in users[i::CLIENT_PROCS]})
        conns = []
        for _ in range(CLIENT_PROCS):
            msg = _get(out_q, "client results", DEADLINE_S)
            assert msg[0] == "result", f"client process failed: {msg}"
            conns += msg[2]
        t_all = time.monotonic()
        assert len(conns) == USERS * CONNS

        # ---- verify
        problems = []
        received = 0
        for c in conns:
            u = c["user"]
            exp_map = published[u]
            w = c["welcome_seq"]
            expected = [(s, exp_map[s]) for s in sorted(exp_map)]
            if expected and expected[0][0] != w + 1:
                problems.append(f"{u}: published seqs start at {expected[0][0]}, welcome {w}")
            if [s for s, _ in expected] != list(range(w + 1, w + 1 + len(expected))):
                problems.append(f"{u}: published seqs not gapless")
            got = [tuple(x) for x in c["got"]]
            received += len(got)
            if c["errors"]:
                problems.append(f"{u}#{c['k']}: {c['errors'][:3]}")
            if c["close"]:
                problems.append(f"{u}#{c['k']}: connection ended early: {c['close']}")
            if got != expected:
                gs, es = set(got), set(expected)
                problems.append(
                    f"{u}#{c['k']}: received {len(got)} events, published {len(expected)}: "
                    f"missing {len(es - gs)} (e.g. {sorted(es - gs)[:3]}), "
                    f"extra {len(gs - es)} (e.g. {sorted(gs - es)[:3]}), "
                    f"duplicates {len(got) - len(gs)}")
        rx_rate = received / (t_all - t_pub)
        print(f"published {EVENTS} events in {t_pub_done - t_pub:.2f}s "
              f"({pub_rate:,.0f} events/s); {received} deliveries checked "
              f"({rx_rate:,.0f} deliveries/s end to end); total {t_all - t_start:.1f}s")
        assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])
        assert not delivered_bad, f"publish replies with delivered != {CONNS}: {delivered_bad}"
        assert received == EVENTS * CONNS

        after = api.metrics()
        assert after["herald_isolation_violations_total"] == 0, after
        assert after["herald_manager_instances"] == 1
        assert after["herald_events_published_total"] - before["herald_events_published_total"] \
            == EVENTS, (before["herald_events_published_total"],
                        after["herald_events_published_total"])
        assert after["herald_deliveries_total"] - before["herald_deliveries_total"] \
            == EVENTS * CONNS
        assert after["herald_slow_consumer_closes_total"] == 0
        assert api.ws_health().json["isolation_violations"] == 0
        assert t_all - t_start < 240, f"took {t_all - t_start:.0f}s"
        api.close()
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        rc = h.stop()
    assert rc == 0, f"heraldd exited {rc}\n{h.stderr_text()[-3000:]}"
