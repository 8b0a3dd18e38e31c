"""Agent runs driven by user_message (PROTOCOL.md §3-4, issue 5): the run contract.

Run with ``/usr/bin/python3 -m pytest -q tests/integration/test_runs.py``.

Covered, against the demo agent:
- "what is 12*7?" -> ack {id, run_id}, then exactly agent_started (agent "demo",
  input == text) first, 1-3 agent_thinking, tool_executing calculator
  {expression:"12*7"}, tool_completed {ok:true, result:84}, agent_message deltas
  whose concatenation is agent_completed.text (containing "84"), and
  agent_completed succeeded last; every event carries run_id and thread_id; seq
  is gapless; both of the user's connections see identical events;
- other inputs use the clock or word_count tool; a division by zero is a failed
  tool call, still one clean run;
- cancel -> agent_completed cancelled, exactly once, nothing afterwards;
  cancelling an unknown run or another user's run -> error unknown_run (and the
  other user's run completes normally);
- a silent agent (--run-timeout 1) -> agent_completed failed with an error, once;
- --max-runs: the next concurrent user_message -> error too_many_runs; after the
  runs complete a new one starts; the limit is per user;
- invalid user_message -> error invalid_request, connection stays usable;
  --agent none -> error no_agent;
- two users running 20 runs each at once: no crossover, every run well formed;
- the backend API cannot publish agent_started (or late events) for a Herald run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_proc import start_heraldd  # noqa: E402
from herald_client import (Api, assert_error_body, in_thread, mint, recv_welcome, run,  # noqa: E402
                           ws_connect)

MIDDLE = ("agent_thinking", "tool_executing", "tool_completed", "agent_message")
_ids = itertools.count(1)


def new_user(prefix="run"):
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


def start(*args):
    return start_heraldd(*map(str, args), echo_path=None)


@pytest.fixture(scope="module")
def fast():
    """The demo agent without pauses."""
    h = start("--demo-pace", 0)
    yield h
    h.stop_ok()


@pytest.fixture(scope="module")
def slow():
    """The demo agent at 500 ms a step: runs stay in flight for seconds."""
    h = start("--demo-pace", 500)
    yield h
    h.stop_ok()


# ---------------------------------------------------------------------------- client helpers

class Client:
    """One authenticated connection that records everything it receives."""

    def __init__(self, ws, user, welcome):
        self.ws, self.user, self.welcome = ws, user, welcome
        self.msgs = []      # every message, in arrival order
        self._seen = 0      # messages already returned by next()

    @classmethod
    async def open(cls, h, user):
        ws = await ws_connect(h, mint(user))
        w = await recv_welcome(ws, user)
        return cls(ws, user, w)

    async def close(self):
        await self.ws.close()

    async def send(self, obj):
        await self.ws.send(json.dumps(obj))

    async def user_message(self, text, thread="t1", mid=None):
        mid = mid or f"m{next(_ids)}"
        await self.send({"type": "user_message", "id": mid, "thread_id": thread, "text": text})
        return mid

    async def _recv(self, timeout):
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), f"binary frame {raw!r}"
        m = json.loads(raw)
        self.msgs.append(m)
        return m

    async def wait_for(self, pred, timeout=10.0, what="a message", anywhere=False):
        """Next message (in order, from what was not yet consumed) matching pred;
        with ``anywhere``, any message received so far (or later) matching it."""
        deadline = time.monotonic() + timeout
        if anywhere:
            for m in self.msgs:
                if pred(m):
                    return m
        while True:
            while self._seen < len(self.msgs):
                m = self.msgs[self._seen]
                self._seen += 1
                if pred(m):
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout}s; got {self.msgs[-20:]}")
            try:
                await self._recv(left)
            except asyncio.TimeoutError:
                raise AssertionError(f"no {what} within {timeout}s; got {self.msgs[-20:]}")

    async def reply(self, mid=None, timeout=10.0):
        """The next ack or error (a reply has no seq)."""
        if mid is not None:
            for m in self.msgs:  # already received (while waiting for something else)
                if m.get("type") == "ack" and m.get("id") == mid:
                    return m
        return await self.wait_for(
            lambda m: m.get("type") in ("ack", "error") and (
                mid is None or m.get("type") == "error" or m.get("id") == mid),
            timeout, "ack or error")

    async def completed(self, run_id, timeout=10.0):
        return await self.wait_for(
            lambda m: m.get("type") == "agent_completed" and m.get("run_id") == run_id,
            timeout, f"agent_completed for {run_id}", anywhere=True)

    async def drain(self, wait):
        """Receive whatever arrives within ``wait`` s."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await self._recv(left)
            except asyncio.TimeoutError:
                return

    def events(self, run_id=None):
        return [m for m in self.msgs if "seq" in m and m.get("type") != "welcome"
                and (run_id is None or m.get("run_id") == run_id)]


def check_error(m, code):
    assert m.get("type") == "error", f"expected error {code}, got {m}"
    assert m.get("code") == code, f"expected error {code}, got {m}"
    assert isinstance(m.get("message"), str)
    assert "seq" not in m, m


def check_ack(m, mid):
    assert m.get("type") == "ack", f"expected an ack, got {m}"
    assert m.get("id") == mid, m
    rid = m.get("run_id")
    assert isinstance(rid, str) and rid, m
    assert "seq" not in m, m
    return rid


def check_seq_gapless(events, first=None):
    """seq counts up by exactly one (a merged agent_message spans seq_from..seq)."""
    prev = None if first is None else first - 1
    for e in events:
        lo = e.get("seq_from", e["seq"])
        if prev is not None:
            assert lo == prev + 1, f"seq gap/duplicate: {prev} then {lo} in {e}"
        assert e["seq"] >= lo
        prev = e["seq"]
    epochs = {e.get("epoch") for e in events}
    assert len(epochs) <= 1 and None not in epochs, f"epochs {epochs}"


def check_run_shape(evs, run_id, text=None, thread="t1", status="succeeded"):
    """One run's events, in order: the full contract. Returns a summary dict."""
    assert evs, f"no events for {run_id}"
    types = [e["type"] for e in evs]
    for e in evs:
        assert e.get("run_id") == run_id, e
        assert e.get("thread_id") == thread, e
        assert isinstance(e.get("seq"), int) and isinstance(e.get("ts"), int), e
        assert isinstance(e.get("data"), dict), e
    assert types[0] == "agent_started", f"first event is {types[0]}: {types}"
    assert types[-1] == "agent_completed", f"last event is {types[-1]}: {types}"
    assert types.count("agent_started") == 1, types
    assert types.count("agent_completed") == 1, types
    assert all(t in MIDDLE for t in types[1:-1]), types
    started, done = evs[0]["data"], evs[-1]["data"]
    assert started.get("agent") == "demo", started
    if text is not None:
        assert started.get("input") == text, started
    assert done.get("status") == status, done
    assert isinstance(done.get("text"), str), done
    out = {"types": types, "started": started, "done": done}
    if status != "succeeded":
        return out
    # Successful demo run: thinking{1,3}, tool_executing, tool_completed, message+.
    middle = types[1:-1]
    n_think = 0
    while n_think < len(middle) and middle[n_think] == "agent_thinking":
        n_think += 1
    assert 1 <= n_think <= 3, f"{n_think} agent_thinking: {types}"
    rest = middle[n_think:]
    assert rest[:2] == ["tool_executing", "tool_completed"], types
    assert len(rest) >= 3 and all(t == "agent_message" for t in rest[2:]), types
    for e in evs[1:1 + n_think]:
        assert isinstance(e["data"].get("text"), str) and e["data"]["text"].strip(), e
    ex, co = evs[1 + n_think]["data"], evs[2 + n_think]["data"]
    assert isinstance(ex.get("tool"), str) and isinstance(ex.get("args"), dict), ex
    assert co.get("tool") == ex["tool"], (ex, co)
    assert isinstance(ex.get("call_id"), str) and co.get("call_id") == ex["call_id"], (ex, co)
    assert isinstance(co.get("ok"), bool) and "result" in co, co
    deltas = [e["data"].get("delta") for e in evs[3 + n_think:-1]]
    assert all(isinstance(d, str) for d in deltas), deltas
    joined = "".join(deltas)
    assert joined == done["text"], f"deltas {deltas!r} != final text {done['text']!r}"
    assert "error" not in done or not done["error"], done
    out.update(thinking=n_think, executing=ex, completed=co, deltas=deltas, text=joined)
    return out


async def one_run(c, text, thread="t1", timeout=10.0):
    """user_message -> (run_id, that run's events) on client c; checks ack ordering."""
    mid = await c.user_message(text, thread)
    ack = await c.reply(mid, timeout)
    rid = check_ack(ack, mid)
    await c.completed(rid, timeout)
    i_ack = next(i for i, m in enumerate(c.msgs) if m is ack)
    i_first = next(i for i, m in enumerate(c.msgs) if "seq" in m and m.get("run_id") == rid)
    assert i_ack < i_first, "an event of the run arrived before its ack"
    return rid, c.events(rid)


# ---------------------------------------------------------------------------- the golden path

def test_calculator_run_full_shape_on_two_connections(fast):
    user = new_user()
    text = "what is 12*7?"

    async def go():
        a = await Client.open(fast, user)
        b = await Client.open(fast, user)
        try:
            assert a.welcome["seq"] == 0 and b.welcome["seq"] == 0, (a.welcome, b.welcome)
            rid, evs = await one_run(a, text)
            await b.completed(rid)
            await a.drain(0.5)
            await b.drain(0.2)
            return rid, a, b
        finally:
            await a.close()
            await b.close()

    rid, a, b = run(go(), timeout=30)
    assert rid.startswith("hr-"), rid
    evs = a.events()
    assert all(e["run_id"] == rid for e in evs), "events of another run appeared"
    check_seq_gapless(evs, first=1)
    s = check_run_shape(evs, rid, text)
    assert s["executing"]["tool"] == "calculator", s["executing"]
    assert s["executing"]["args"] == {"expression": "12*7"}, s["executing"]
    assert s["completed"]["ok"] is True and s["completed"]["result"] == 84, s["completed"]
    assert "84" in s["text"], s["text"]
    # Replies go to the sender only; both connections see identical events.
    assert [m for m in b.msgs if m.get("type") in ("ack", "error")] == []
    assert b.events() == evs, "the user's two connections saw different events"
    # ts: milliseconds since the epoch, now-ish, non-decreasing.
    now_ms = time.time() * 1000
    assert all(abs(e["ts"] - now_ms) < 60_000 for e in evs), evs[0]["ts"]
    assert [e["ts"] for e in evs] == sorted(e["ts"] for e in evs)


@pytest.mark.parametrize("text,tool", [
    ("what time is it?", "clock"),
    ("What's the date today", "clock"),
    ("hello there friend", "word_count"),
    ("Tell me a story about dragons", "word_count"),
])
def test_other_inputs_pick_other_tools(fast, text, tool):
    user = new_user()

    async def go():
        c = await Client.open(fast, user)
        try:
            rid, evs = await one_run(c, text, thread="t-other")
            return rid, evs
        finally:
            await c.close()

    rid, evs = run(go(), timeout=20)
    check_seq_gapless(evs, first=1)
    s = check_run_shape(evs, rid, text, thread="t-other")
    assert s["executing"]["tool"] == tool, s["executing"]
    assert s["completed"]["ok"] is True, s["completed"]
    if tool == "word_count":
        words = len(text.split())
        assert s["completed"]["result"].get("words") == words, s["completed"]
        assert str(words) in s["text"], s["text"]
    else:
        res = s["completed"]["result"]
        utc = res.get("utc") if isinstance(res, dict) else None
        assert isinstance(utc, str) and utc.startswith(time.strftime("%Y-", time.gmtime())), res


def test_division_by_zero_is_a_failed_tool_call_in_a_clean_run(fast):
    user = new_user()
    text = "what is 5/0?"

    async def go():
        c = await Client.open(fast, user)
        try:
            return await one_run(c, text)
        finally:
            await c.close()

    rid, evs = run(go(), timeout=20)
    types = [e["type"] for e in evs]
    assert types[0] == "agent_started" and types[-1] == "agent_completed", types
    assert types.count("agent_completed") == 1
    ex = next(e["data"] for e in evs if e["type"] == "tool_executing")
    co = next(e["data"] for e in evs if e["type"] == "tool_completed")
    assert ex["tool"] == "calculator" and ex["args"] == {"expression": "5/0"}, ex
    assert co["ok"] is False, co
    done = evs[-1]["data"]
    assert done["status"] in ("succeeded", "failed"), done
    deltas = "".join(e["data"]["delta"] for e in evs if e["type"] == "agent_message")
    assert deltas == done["text"]


def test_runs_on_several_threads_and_sequential_runs(fast):
    user = new_user()

    async def go():
        c = await Client.open(fast, user)
        try:
            out = []
            for i, thread in enumerate(("t1", "t2", "t1")):
                out.append((thread,) + await one_run(c, f"what is {i + 2}*10?", thread))
            await c.drain(0.3)
            return c, out
        finally:
            await c.close()

    c, out = run(go(), timeout=30)
    check_seq_gapless(c.events(), first=1)
    rids = [rid for _, rid, _ in out]
    assert len(set(rids)) == 3, rids
    for i, (thread, rid, evs) in enumerate(out):
        s = check_run_shape(evs, rid, thread=thread)
        assert s["completed"]["result"] == (i + 2) * 10


# ---------------------------------------------------------------------------- cancel

def test_cancel_right_after_started(slow):
    user = new_user()

    async def go():
        c = await Client.open(slow, user)
        try:
            mid = await c.user_message("what is 6*7?")
            rid = check_ack(await c.reply(mid), mid)
            await c.wait_for(lambda m: m.get("type") == "agent_started" and m.get("run_id") == rid,
                             5, "agent_started")
            # In flight: the runs reply lists it.
            await c.send({"type": "runs"})
            runs = await c.wait_for(lambda m: m.get("type") == "runs", 5, "runs reply")
            assert rid in [r.get("run_id") for r in runs.get("runs", [])], runs
            t0 = time.monotonic()
            await c.send({"type": "cancel", "run_id": rid})
            done = await c.completed(rid, timeout=3)
            latency = time.monotonic() - t0
            await c.drain(2.0)  # nothing more for this run
            # A second cancel: the run is no longer in flight.
            await c.send({"type": "cancel", "run_id": rid})
            second = await c.reply(timeout=5)
            await c.send({"type": "runs"})
            runs_after = await c.wait_for(lambda m: m.get("type") == "runs", 5, "runs reply")
            return c, rid, done, latency, second, runs_after
        finally:
            await c.close()

    c, rid, done, latency, second, runs_after = run(go(), timeout=30)
    assert done["data"].get("status") == "cancelled", done
    assert latency < 1.0, f"cancel took {latency:.2f}s to show"
    evs = c.events(rid)
    types = [e["type"] for e in evs]
    assert types[0] == "agent_started" and types[-1] == "agent_completed", types
    assert types.count("agent_completed") == 1, f"{types.count('agent_completed')} completions"
    assert types.count("agent_started") == 1, types
    assert all(t in MIDDLE for t in types[1:-1]), types
    assert c.events()[-1] is evs[-1], "events after the cancelled run's completion"
    check_seq_gapless(c.events(), first=1)
    check_error(second, "unknown_run")
    assert rid not in [r.get("run_id") for r in runs_after.get("runs", [])], runs_after


def test_cancel_unknown_run(fast):
    user = new_user()

    async def go():
        c = await Client.open(fast, user)
        try:
            out = []
            for rid in ("hr-0-0000000000000000", "no-such-run", "hr-999-abc"):
                await c.send({"type": "cancel", "run_id": rid})
                out.append(await c.reply(timeout=5))
            await c.send({"type": "cancel"})
            out.append(await c.reply(timeout=5))
            await c.send({"type": "cancel", "run_id": ""})
            out.append(await c.reply(timeout=5))
            await c.drain(0.3)
            return c, out
        finally:
            await c.close()

    c, out = run(go(), timeout=20)
    for m in out[:3]:
        check_error(m, "unknown_run")
    for m in out[3:]:
        check_error(m, "invalid_request")
    assert c.events() == [], "a refused cancel produced events"


def test_cancel_of_another_users_run(slow):
    alice, mallory = new_user("alice"), new_user("mallory")

    async def go():
        a = await Client.open(slow, alice)
        m = await Client.open(slow, mallory)
        try:
            mid = await a.user_message("what is 3*3?")
            rid = check_ack(await a.reply(mid), mid)
            await a.wait_for(lambda x: x.get("type") == "agent_started", 5, "agent_started")
            await m.send({"type": "cancel", "run_id": rid})
            err = await m.reply(timeout=5)
            await m.send({"type": "runs"})
            mruns = await m.wait_for(lambda x: x.get("type") == "runs", 5, "runs reply")
            done = await a.completed(rid, timeout=20)
            await a.drain(0.3)
            await m.drain(0.3)
            return a, m, rid, err, done, mruns
        finally:
            await a.close()
            await m.close()

    a, m, rid, err, done, mruns = run(go(), timeout=40)
    check_error(err, "unknown_run")
    assert mruns.get("runs") == [], f"another user's run listed: {mruns}"
    assert done["data"]["status"] == "succeeded", done
    s = check_run_shape(a.events(rid), rid, "what is 3*3?")
    assert s["completed"]["result"] == 9
    assert m.events() == [], f"mallory received events: {m.events()}"


# ---------------------------------------------------------------------------- timeout

def test_silent_agent_times_out_once():
    h = start("--run-timeout", 1, "--demo-pace", 3000)
    try:
        user = new_user()

        async def go():
            c = await Client.open(h, user)
            try:
                mid = await c.user_message("what is 1+1?")
                t0 = time.monotonic()
                rid = check_ack(await c.reply(mid), mid)
                done = await c.completed(rid, timeout=4)
                elapsed = time.monotonic() - t0
                await c.drain(3.5)  # past the agent's next step: nothing more
                return c, rid, done, elapsed
            finally:
                await c.close()

        c, rid, done, elapsed = run(go(), timeout=30)
    finally:
        h.stop_ok()
    assert done["data"].get("status") == "failed", done
    assert isinstance(done["data"].get("error"), str) and done["data"]["error"], done
    assert 0.9 <= elapsed <= 3.0, f"timed out after {elapsed:.2f}s with --run-timeout 1"
    evs = c.events(rid)
    types = [e["type"] for e in evs]
    assert types == ["agent_started", "agent_completed"], types
    assert c.events() == evs, "events of something else appeared"
    check_seq_gapless(evs, first=1)


# ---------------------------------------------------------------------------- limits

def test_max_runs_per_user():
    h = start("--max-runs", 2, "--demo-pace", 1000)
    try:
        user, other = new_user(), new_user("other")

        async def go():
            c = await Client.open(h, user)
            o = await Client.open(h, other)
            try:
                m1 = await c.user_message("what is 1+2?")
                m2 = await c.user_message("what is 3+4?")
                m3 = await c.user_message("what is 5+6?")
                r1 = check_ack(await c.reply(m1), m1)
                r2 = check_ack(await c.reply(m2), m2)
                third = await c.reply(timeout=5)
                # The limit is per user: another user still starts a run.
                mo = await o.user_message("what is 7+8?")
                ro = check_ack(await o.reply(mo), mo)
                await o.send({"type": "cancel", "run_id": ro})
                await o.completed(ro, timeout=5)
                d1 = await c.completed(r1, timeout=25)
                d2 = await c.completed(r2, timeout=25)
                m4 = await c.user_message("what is 9+10?")
                r4 = check_ack(await c.reply(m4), m4)
                await c.wait_for(lambda m: m.get("type") == "agent_started"
                                 and m.get("run_id") == r4, 5, "agent_started of run 4")
                await c.send({"type": "cancel", "run_id": r4})
                await c.completed(r4, timeout=5)
                return c, (r1, r2, r4), third, d1, d2
            finally:
                await c.close()
                await o.close()

        c, rids, third, d1, d2 = run(go(), timeout=60)
    finally:
        h.stop_ok()
    check_error(third, "too_many_runs")
    assert d1["data"]["status"] == "succeeded" and d2["data"]["status"] == "succeeded"
    assert len(set(rids)) == 3
    # The refused message made no run: only the three acked runs have events.
    assert {e["run_id"] for e in c.events()} == set(rids)
    check_seq_gapless(c.events(), first=1)
    for rid in rids[:2]:
        check_run_shape(c.events(rid), rid)


@pytest.mark.parametrize("msg", [
    {"type": "user_message", "id": "x1", "text": "what is 1+1?"},                  # no thread_id
    {"type": "user_message", "id": "x2", "thread_id": "", "text": "hi"},
    {"type": "user_message", "id": "x3", "thread_id": 7, "text": "hi"},
    {"type": "user_message", "id": "x4", "thread_id": "t" * 129, "text": "hi"},
    {"type": "user_message", "id": "x5", "thread_id": "t1", "text": ""},            # empty text
    {"type": "user_message", "id": "x6", "thread_id": "t1"},                        # no text
    {"type": "user_message", "id": "x7", "thread_id": "t1", "text": 12},
    {"type": "user_message", "id": "x8", "thread_id": "t1", "text": None},
    {"type": "user_message", "id": "x9", "thread_id": "t1", "text": "a\u0000b"},
    {"type": "user_message", "id": 5, "thread_id": "t1", "text": "hi"},
])
def test_invalid_user_message(fast, msg):
    user = new_user()

    async def go():
        c = await Client.open(fast, user)
        try:
            await c.send(msg)
            err = await c.reply(timeout=5)
            await c.drain(0.3)
            no_events = c.events() == []
            # The connection is still usable.
            rid, evs = await one_run(c, "what is 2*2?")
            return err, no_events, rid, evs
        finally:
            await c.close()

    err, no_events, rid, evs = run(go(), timeout=20)
    if any(isinstance(v, str) and "\0" in v for v in msg.values()):
        # jansson refuses NUL in strings at parse time: an invalid_json reply is fine.
        assert err.get("type") == "error" and err.get("code") in (
            "invalid_request", "invalid_json"), err
    else:
        check_error(err, "invalid_request")
    assert no_events, "an invalid user_message started a run"
    check_run_shape(evs, rid, "what is 2*2?")


def test_no_agent():
    h = start("--agent", "none")
    try:
        user = new_user()

        async def go():
            c = await Client.open(h, user)
            try:
                await c.user_message("what is 12*7?")
                err = await c.reply(timeout=5)
                await c.drain(0.5)
                return c, err
            finally:
                await c.close()

        c, err = run(go(), timeout=20)
    finally:
        h.stop_ok()
    check_error(err, "no_agent")
    assert c.events() == [], c.events()


# ---------------------------------------------------------------------------- isolation

def test_two_users_twenty_runs_each_no_crossover():
    h = start("--max-runs", 20, "--demo-pace", "0-20")  # two workers (the helper's default)
    try:
        users = [new_user("iso-a"), new_user("iso-b")]
        per_user, per_conn = 20, 10

        async def user_session(user):
            conns = [await Client.open(h, user) for _ in range(2)]
            try:
                sent = []  # (client, mid, text)
                for i in range(per_user):
                    c = conns[i % 2]
                    text = f"what is {i + 1}*{len(user)}?" if i % 3 else f"count these {i} words"
                    sent.append((c, await c.user_message(text, thread=f"t{i % 4}"), text))
                acks = {}
                for c, mid, text in sent:
                    m = await c.reply(mid, timeout=15)
                    rid = check_ack(m, mid)
                    acks[rid] = (text, c, mid)
                for rid in acks:
                    for c in conns:
                        await c.completed(rid, timeout=30)
                for c in conns:
                    await c.drain(0.5)
                return acks, conns
            finally:
                for c in conns:
                    await c.close()

        async def go():
            return await asyncio.gather(*(user_session(u) for u in users))

        results = run(go(), timeout=90)
    finally:
        h.stop_ok()

    all_rids = [set(acks) for acks, _ in results]
    assert not (all_rids[0] & all_rids[1]), "two users got the same run id"
    for user, (acks, conns) in zip(users, results):
        assert len(acks) == per_user, f"{user}: {len(acks)} acks"
        errors = [m for c in conns for m in c.msgs if m.get("type") == "error"]
        assert errors == [], f"{user}: errors {errors}"
        own = set(acks)
        streams = [c.events() for c in conns]
        for evs in streams:
            foreign = [e for e in evs if e.get("run_id") not in own]
            assert not foreign, f"{user} received events of runs not its own: {foreign[:3]}"
            check_seq_gapless(evs, first=1)
        assert streams[0] == streams[1], f"{user}: the two connections saw different events"
        evs = streams[0]
        for rid, (text, c, mid) in acks.items():
            run_evs = [e for e in evs if e["run_id"] == rid]
            s = check_run_shape(run_evs, rid, text, thread=run_evs[0]["thread_id"])
            assert len(run_evs) == 1 + s["thinking"] + 2 + len(s["deltas"]) + 1
            # The ack reached its sender before the run's first event.
            i_ack = next(i for i, m in enumerate(c.msgs)
                         if m.get("type") == "ack" and m.get("run_id") == rid)
            i_first = next(i for i, m in enumerate(c.msgs) if "seq" in m and m.get("run_id") == rid)
            assert i_ack < i_first, f"{rid}: event before ack"
            if s["executing"]["tool"] == "calculator":
                a, b = s["executing"]["args"]["expression"].split("*")
                assert s["completed"]["result"] == int(a) * int(b)
            else:
                assert s["executing"]["tool"] == "word_count", s["executing"]


# ---------------------------------------------------------------------------- backend vs Herald runs

def test_backend_cannot_start_or_extend_herald_runs(slow):
    user = new_user()
    api = Api(slow)

    async def go():
        c = await Client.open(slow, user)
        try:
            mid = await c.user_message("what is 4*4?")
            rid = check_ack(await c.reply(mid), mid)
            await c.wait_for(lambda m: m.get("type") == "agent_started", 5, "agent_started")
            ev = {"user_id": user, "thread_id": "t1", "run_id": rid, "type": "agent_started",
                  "data": {"agent": "impostor", "input": "x"}}
            r_live = await in_thread(api.request, "POST", "/api/v1/publish", ev)
            # A made-up Herald run id is refused as well.
            ev2 = dict(ev, run_id="hr-0-feedfacefeedface")
            r_fake = await in_thread(api.request, "POST", "/api/v1/publish", ev2)
            # A batch holding one such event is refused whole.
            ok_ev = {"user_id": user, "thread_id": "t9", "run_id": "backend-run-1",
                     "type": "agent_message", "data": {"delta": "from the backend"}}
            r_batch = await in_thread(api.request, "POST", "/api/v1/publish",
                                      {"events": [ok_ev, ev]})
            await c.send({"type": "cancel", "run_id": rid})
            await c.completed(rid, timeout=5)
            # A late event for the finished Herald run is refused.
            late = {"user_id": user, "thread_id": "t1", "run_id": rid, "type": "agent_message",
                    "data": {"delta": "late"}}
            r_late = await in_thread(api.request, "POST", "/api/v1/publish", late)
            await c.drain(0.5)
            return c, rid, r_live, r_fake, r_batch, r_late
        finally:
            await c.close()

    try:
        c, rid, r_live, r_fake, r_batch, r_late = run(go(), timeout=30)
    finally:
        api.close()
    assert_error_body(r_live, 409)
    assert_error_body(r_fake, 409)
    assert_error_body(r_batch, 409)
    assert_error_body(r_late, 409)
    evs = c.events()
    assert all(e["run_id"] == rid for e in evs), f"a refused publish was delivered: {evs}"
    types = [e["type"] for e in evs]
    assert types.count("agent_started") == 1 and types.count("agent_completed") == 1, types
    assert evs[0]["data"]["agent"] == "demo"
    check_seq_gapless(evs, first=1)


# ---------------------------------------------------------------------------- more run life

def test_cancel_from_another_connection_of_the_user(slow):
    """A cancel sent on another connection (possibly another worker) ends the run."""
    user = new_user()

    async def go():
        conns = [await Client.open(slow, user) for _ in range(4)]  # spread over the workers
        a, others = conns[0], conns[1:]
        try:
            mid = await a.user_message("what is 8*8?")
            rid = check_ack(await a.reply(mid), mid)
            await a.wait_for(lambda m: m.get("type") == "agent_started", 5, "agent_started")
            await others[-1].send({"type": "cancel", "run_id": rid})
            done = await a.completed(rid, timeout=3)
            for c in others:
                await c.completed(rid, timeout=3)
            await a.drain(1.5)
            return a, others, rid, done
        finally:
            for c in conns:
                await c.close()

    a, others, rid, done = run(go(), timeout=30)
    assert done["data"]["status"] == "cancelled", done
    evs = a.events(rid)
    types = [e["type"] for e in evs]
    assert types[0] == "agent_started" and types[-1] == "agent_completed", types
    assert types.count("agent_completed") == 1, types
    assert a.events()[-1] is evs[-1]
    assert not [m for c in others for m in c.msgs if m.get("type") == "error"]


def test_timeout_is_about_silence_not_duration():
    """--run-timeout 1 with a step every 300 ms: the run takes seconds but never
    goes silent for 1 s, so it succeeds."""
    h = start("--run-timeout", 1, "--demo-pace", 300)
    try:
        user = new_user()

        async def go():
            c = await Client.open(h, user)
            try:
                t0 = time.monotonic()
                rid, evs = await one_run(c, "what is 12*7?", timeout=15)
                return rid, evs, time.monotonic() - t0
            finally:
                await c.close()

        rid, evs, took = run(go(), timeout=30)
    finally:
        h.stop_ok()
    assert took > 1.5, f"the run took only {took:.2f}s: the test proves nothing"
    s = check_run_shape(evs, rid, "what is 12*7?")
    assert s["completed"]["result"] == 84


def test_cancel_frees_a_run_slot():
    h = start("--max-runs", 1, "--demo-pace", 500)
    try:
        user = new_user()

        async def go():
            c = await Client.open(h, user)
            try:
                m1 = await c.user_message("what is 1*1?")
                r1 = check_ack(await c.reply(m1), m1)
                await c.user_message("what is 2*2?")
                refused = await c.reply(timeout=5)
                await c.send({"type": "cancel", "run_id": r1})
                await c.completed(r1, timeout=3)
                m3 = await c.user_message("what is 3*3?")
                again = await c.reply(m3, timeout=5)
                if again.get("type") == "ack":
                    await c.send({"type": "cancel", "run_id": again["run_id"]})
                    await c.completed(again["run_id"], timeout=3)
                return refused, again
            finally:
                await c.close()

        refused, again = run(go(), timeout=30)
    finally:
        h.stop_ok()
    check_error(refused, "too_many_runs")
    assert again.get("type") == "ack", f"a cancelled run still holds its slot: {again}"


def test_run_survives_disconnect_and_replays_on_resume(slow):
    """The sender leaves right after the ack; the run goes on, and a resume from
    seq 0 replays the whole run exactly once."""
    user = new_user()
    text = "what is 7*6?"

    async def go():
        c = await Client.open(slow, user)
        mid = await c.user_message(text)
        rid = check_ack(await c.reply(mid), mid)
        await c.close()
        await asyncio.sleep(0.2)
        # Watch it finish from a fresh connection, then resume from 0 on another.
        w = await Client.open(slow, user)
        try:
            await w.completed(rid, timeout=20)
        finally:
            await w.close()
        ws = await ws_connect(slow, mint(user), query={"since_seq": 0})
        r = Client(ws, user, await recv_welcome(ws, user))
        try:
            resumed = await r.wait_for(lambda m: m.get("type") == "resumed", 10, "resumed")
            await r.drain(0.3)
            return rid, r, resumed
        finally:
            await r.close()

    rid, r, resumed = run(go(), timeout=40)
    assert resumed.get("complete") is True, resumed
    evs = r.events()
    check_seq_gapless(evs, first=1)
    s = check_run_shape(evs, rid, text)
    assert s["completed"]["result"] == 42 and "42" in s["text"]
