"""History, runs and retention (PROTOCOL.md sections 3-5), against a real heraldd.

* test_mid_run_join: a tab that opens mid-run rebuilds the whole run from
  `runs` + `history` + the live stream, each event exactly once, while
  publishing goes on.
* eviction by count (--history-events), bytes (--history-bytes) and age
  (--history-age, including the periodic sweep seen in /metrics): a resume or
  history request from before the evicted range says complete:false, one from
  inside the retained range complete:true.
* run-aware retention: a run in flight keeps all its events past
  --history-events until agent_completed; then the count limit applies again.
* herald_history_events / herald_history_bytes in /metrics follow all this.

Uses the raw-socket client of test_resume.py.  Every wait is bounded.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_client import Api  # noqa: E402
from herald_proc import start_heraldd  # noqa: E402
from test_resume import connect, read_welcome, token_for  # noqa: E402


def ev(user, type, run, data, thread="t1"):
    e = {"user_id": user, "type": type, "data": data}
    if run is not None:
        e["run_id"] = run
    if thread is not None:
        e["thread_id"] = thread
    return e


class Stream:
    """Publishes events for one user and remembers them by seq."""

    def __init__(self, h, user):
        self.api = Api(h)
        self.user = user
        self.by_seq = {}

    def publish(self, events):
        for i in range(0, len(events), 500):
            part = events[i:i + 500]
            r = self.api.publish_batch(part)
            assert r.status == 200, r
            for e, res in zip(part, r.json["results"]):
                assert res["seq"] not in self.by_seq, res
                self.by_seq[res["seq"]] = e
        return max(self.by_seq) if self.by_seq else 0

    def msg(self, run, n, start=0, pad=0):
        return [ev(self.user, "agent_message", run, {"delta": f"[{run}:{start + i}\u00e9]" + "p" * pad})
                for i in range(n)]

    def check(self, e):
        """A received event is the one published with its seq."""
        want = self.by_seq.get(e["seq"])
        assert want is not None, f"unknown seq {e['seq']}"
        assert e["type"] == want["type"] and e["data"] == want["data"], (e, want)
        assert e.get("run_id") == want.get("run_id"), (e, want)
        assert "seq_from" not in e, e

    def close(self):
        self.api.close()


def metrics(h):
    api = Api(h)
    try:
        return api.metrics()
    finally:
        api.close()


def resume(h, user, since, mode="header"):
    """(replayed seqs, resumed message), after checking the welcome."""
    ws = connect(h, token_for(user), mode, since=since)
    try:
        w = read_welcome(ws, user)
        seqs = []
        while True:
            m = ws.recv(5)
            if m.get("type") == "resumed":
                assert m["from_seq"] == since + 1 and m["to_seq"] == w["seq"], (since, w, m)
                return seqs, m
            seqs.append(m["seq"])
    finally:
        ws.abort()


def history(h, user, since, limit=None):
    """The `history` reply on a fresh connection (no resume)."""
    ws = connect(h, token_for(user), "query")
    try:
        read_welcome(ws, user)
        req = {"type": "history", "since_seq": since}
        if limit is not None:
            req["limit"] = limit
        ws.send_json(req)
        m = ws.recv(5)
        assert m.get("type") == "history", m
        assert isinstance(m.get("events"), list), m
        assert isinstance(m.get("complete"), bool), m
        assert isinstance(m.get("more"), bool), m
        return m
    finally:
        ws.abort()


def expect_retained(h, user, first, last, evicted_before):
    """Retained exactly first..last: resume and history agree, complete only from
    first-1 on (evicted_before: there were evicted events before first)."""
    seqs, res = resume(h, user, first - 1)
    assert seqs == list(range(first, last + 1)) and res["complete"] is True, \
        f"resume since {first - 1}: {seqs[:3]}..{seqs[-1:]} {res}"
    if evicted_before:
        seqs, res = resume(h, user, first - 2)
        assert seqs == list(range(first, last + 1)) and res["complete"] is False, \
            f"resume since {first - 2} (evicted): {seqs[:3]}..{seqs[-1:]} {res}"
        seqs, res = resume(h, user, 0, mode="message")
        assert seqs == list(range(first, last + 1)) and res["complete"] is False, (seqs[:3], res)
        m = history(h, user, first - 2)
        assert [e["seq"] for e in m["events"]] == list(range(first, last + 1))
        assert m["complete"] is False, m
    m = history(h, user, first - 1)
    assert [e["seq"] for e in m["events"]] == list(range(first, last + 1))
    assert m["complete"] is True and m["more"] is False, {k: m[k] for k in ("complete", "more")}


# ------------------------------------------------------------------ mid-run join

@pytest.fixture(scope="module")
def herald():
    h = start_heraldd(workers=2)
    yield h
    h.stop()


def test_mid_run_join(herald):
    s = Stream(herald, "hist-join")
    u = s.user
    # An earlier run, over; then run R (in thread tj) and a concurrent run R2.
    s.publish([ev(u, "agent_started", "r0", {"agent": "a", "input": "old"}),
               ev(u, "agent_message", "r0", {"delta": "old"}),
               ev(u, "agent_completed", "r0", {"status": "succeeded", "text": "old"})])
    s.publish([ev(u, "agent_started", "R", {"agent": "demo", "input": "h\u00e9llo"}, thread="tj")])
    first_seq = 4
    early = []
    for i in range(30):
        early.append(ev(u, "agent_message", "R", {"delta": f"chunk {i} \U0001F600 "}, thread="tj"))
        if i == 5:
            early.append(ev(u, "agent_started", "R2", {"agent": "b", "input": "x"}, thread="t2"))
        if i % 9 == 0:
            early.append(ev(u, "tool_executing", "R", {"tool": "calc", "call_id": f"c{i}",
                                                       "args": {"x": i}}, thread="tj"))
            early.append(ev(u, "agent_thinking", "R2", {"text": f"r2 {i}"}, thread="t2"))
    s.publish(early)

    ws = connect(herald, token_for(u), "header")
    w = read_welcome(ws, u)
    H = w["seq"]
    assert H == max(s.by_seq), (w, max(s.by_seq))

    # Live events start flowing before the tab even asks.
    s.publish([ev(u, "agent_message", "R", {"delta": f"late {i}"}, thread="tj") for i in range(10)])
    ws.send_json({"type": "runs"})
    ws.send_json({"type": "history", "since_seq": first_seq - 1})
    done = threading.Event()
    err = []

    def more():
        try:
            pub = Stream(herald, u)
            pub.by_seq = s.by_seq  # one record of what was published
            for k in range(5):
                batch = [ev(u, "agent_message", "R", {"delta": f"more {k}.{i}\n\"q\"\\"},
                            thread="tj") for i in range(8)]
                batch.append(ev(u, "tool_completed", "R", {"tool": "calc", "call_id": "c0",
                                                           "ok": True, "result": [k]}, thread="tj"))
                pub.publish(batch)
                time.sleep(0.01)
            pub.publish([ev(u, "agent_completed", "R", {"status": "succeeded", "text": "fin"},
                            thread="tj")])
            pub.close()
        except BaseException as e:
            err.append(e)
        finally:
            done.set()

    t = threading.Thread(target=more, daemon=True)
    t.start()
    runs_reply = hist_reply = None
    live = []
    deadline = time.monotonic() + 15
    while True:
        m = ws.recv(max(0.1, deadline - time.monotonic()))
        if m["type"] == "runs":
            assert runs_reply is None
            runs_reply = m
        elif m["type"] == "history":
            assert hist_reply is None
            hist_reply = m
        else:
            assert "seq" in m, m
            live.append(m)
            if m["type"] == "agent_completed" and m.get("run_id") == "R":
                break
    t.join(10)
    ws.abort()
    assert not err, err
    if runs_reply is None or hist_reply is None:
        pytest.fail(f"no runs/history reply: {runs_reply} {hist_reply and hist_reply['type']}")

    runs = {r["run_id"]: r for r in runs_reply["runs"]}
    assert set(runs) == {"R", "R2"}, runs_reply
    assert runs["R"] == {"run_id": "R", "thread_id": "tj", "first_seq": first_seq,
                         "status": "running"}, runs["R"]
    r2_start = [q for q, e in s.by_seq.items()
                if e["type"] == "agent_started" and e.get("run_id") == "R2"]
    assert runs["R2"] == {"run_id": "R2", "thread_id": "t2", "first_seq": r2_start[0],
                          "status": "running"}, runs["R2"]

    hist = hist_reply["events"]
    assert hist_reply["complete"] is True and hist_reply["more"] is False, \
        {k: hist_reply[k] for k in ("complete", "more")}
    assert [e["seq"] for e in hist] == list(range(first_seq, first_seq + len(hist)))
    assert hist[-1]["seq"] >= H, (hist[-1]["seq"], H)
    for e in hist:
        s.check(e)
    # The live stream: everything after the welcome's head, in order.
    assert [e["seq"] for e in live] == list(range(H + 1, H + 1 + len(live))), \
        [e["seq"] for e in live][:10]
    for e in live:
        s.check(e)
    # Reconstruct run R: dedup by seq, then it is exactly what was published.
    merged = {}
    for e in hist + live:
        if e["seq"] in merged:
            assert merged[e["seq"]] == e, f"seq {e['seq']} differs between history and live"
        merged[e["seq"]] = e
    got = [(e["type"], e["data"]) for _, e in sorted(merged.items()) if e.get("run_id") == "R"]
    want = [(e["type"], e["data"]) for _, e in sorted(s.by_seq.items()) if e.get("run_id") == "R"]
    assert got == want, f"run R rebuilt with {len(got)} events, published {len(want)}"
    assert got[0][0] == "agent_started" and got[-1][0] == "agent_completed"
    s.close()


# ------------------------------------------------------------------ eviction

def test_evict_by_count():
    with start_heraldd("--history-events", "10", workers=2) as h:
        s = Stream(h, "hist-count")
        u = s.user
        m0 = metrics(h)
        assert m0["herald_history_events"] == 0 and m0["herald_history_bytes"] == 0, m0
        s.publish([ev(u, "agent_thinking", None, {"text": f"n{i}"}) for i in range(30)])
        m1 = metrics(h)
        assert m1["herald_history_events"] == 10, m1
        assert m1["herald_history_evictions_total"] == 20, m1
        assert m1["herald_history_bytes"] > 10 * 50, m1
        expect_retained(h, u, 21, 30, evicted_before=True)
        seqs, res = resume(h, u, 25, mode="query")
        assert seqs == [26, 27, 28, 29, 30] and res["complete"] is True, res
        m = history(h, u, 5, limit=3)
        assert [e["seq"] for e in m["events"]] == [21, 22, 23], m
        assert m["complete"] is False and m["more"] is True, m
        # A second user: the gauges add up.
        s2 = Stream(h, "hist-count-2")
        s2.publish([ev(s2.user, "agent_thinking", None, {"text": f"n{i}"}) for i in range(30)])
        m2 = metrics(h)
        assert m2["herald_history_events"] == 20, m2
        assert abs(m2["herald_history_bytes"] - 2 * m1["herald_history_bytes"]) <= 100, (m1, m2)
        s.close()
        s2.close()


def test_evict_by_bytes():
    with start_heraldd("--history-bytes", "4096", workers=2) as h:
        s = Stream(h, "hist-bytes")
        u = s.user
        s.publish(s.msg("rb", 30, pad=400))  # ~500 bytes each: ~7 fit in 4 KiB
        m = metrics(h)
        assert 0 < m["herald_history_bytes"] <= 4096, m
        n = int(m["herald_history_events"])
        assert 3 <= n <= 8, m
        seqs, res = resume(h, u, 0)
        assert res["complete"] is False and len(seqs) == n and seqs[-1] == 30, (seqs, res)
        expect_retained(h, u, 31 - n, 30, evicted_before=True)
        # The byte limit is hard even for a run in flight.
        s.publish([ev(u, "agent_started", "rb2", {"agent": "a", "input": "q"})])
        s.publish(s.msg("rb2", 20, pad=400))
        m = metrics(h)
        assert 0 < m["herald_history_bytes"] <= 4096, m
        seqs, res = resume(h, u, 30)
        assert res["complete"] is False and seqs[-1] == 51 and len(seqs) <= 8, (seqs, res)
        s.close()


def test_evict_by_age():
    with start_heraldd("--history-age", "2", workers=2) as h:
        s = Stream(h, "hist-age")
        u = s.user
        s.publish([ev(u, "agent_thinking", None, {"text": f"n{i}"}) for i in range(10)])
        # A run in flight is spared by the age limit.
        r = Stream(h, "hist-age-run")
        r.publish([ev(r.user, "agent_started", "ra", {"agent": "a", "input": "q"})] +
                  r.msg("ra", 4))
        m0 = metrics(h)
        assert m0["herald_history_events"] == 15, m0
        expect_retained(h, u, 1, 10, evicted_before=False)
        time.sleep(3)
        # No publish, no resume of this user: only the periodic sweep can act.
        deadline = time.monotonic() + 12
        while True:
            m1 = metrics(h)
            if m1["herald_history_events"] <= 5 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert m1["herald_history_events"] == 5, \
            f"periodic sweep did not drop the 10 old events: {m1['herald_history_events']}"
        assert 0 < m1["herald_history_bytes"] < m0["herald_history_bytes"], (m0, m1)
        assert m1["herald_history_evictions_total"] == 10, m1
        seqs, res = resume(h, u, 5)
        assert seqs == [] and res["complete"] is False, res
        seqs, res = resume(h, u, 10)
        assert seqs == [] and res["complete"] is True, res
        m = history(h, u, 0)
        assert m["events"] == [] and m["complete"] is False, m
        s.publish([ev(u, "agent_thinking", None, {"text": "new"})])
        expect_retained(h, u, 11, 11, evicted_before=True)
        # The run survived, all of it.
        expect_retained(h, r.user, 1, 5, evicted_before=False)
        s.close()
        r.close()


def test_run_aware_retention():
    with start_heraldd("--history-events", "10", workers=2) as h:
        s = Stream(h, "hist-run")
        u = s.user
        s.publish([ev(u, "agent_thinking", None, {"text": f"before {i}"}) for i in range(3)])
        s.publish([ev(u, "agent_started", "long", {"agent": "a", "input": "q"}, thread="tl")])
        s.publish(s.msg("long", 40))
        m0 = metrics(h)
        # 1..3 went by the count limit; the run in flight (4..44) stays whole.
        assert m0["herald_history_events"] == 41, m0
        expect_retained(h, u, 4, 44, evicted_before=True)
        m = history(h, u, 3, limit=1000)
        assert len(m["events"]) == 41 and m["complete"] is True
        for e in m["events"]:
            s.check(e)
        ws = connect(h, token_for(u), "message", since=None)
        read_welcome(ws, u)
        ws.send_json({"type": "runs"})
        runs = ws.recv(5)
        ws.abort()
        assert runs == {"type": "runs", "runs": [{"run_id": "long", "thread_id": "tl",
                                                  "first_seq": 4, "status": "running"}]}, runs
        # The run ends: the count limit applies again.
        s.publish([ev(u, "agent_completed", "long", {"status": "succeeded", "text": "t"},
                      thread="tl")])
        m1 = metrics(h)
        assert m1["herald_history_events"] == 10, m1
        assert m1["herald_history_bytes"] < m0["herald_history_bytes"] / 2, (m0, m1)
        expect_retained(h, u, 36, 45, evicted_before=True)
        ws = connect(h, token_for(u), "query")
        read_welcome(ws, u)
        ws.send_json({"type": "runs"})
        runs = ws.recv(5)
        ws.abort()
        assert runs == {"type": "runs", "runs": []}, runs
        s.close()
