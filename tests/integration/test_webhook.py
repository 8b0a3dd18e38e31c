"""The webhook agent against a real backend (issue 5 item 4; PROTOCOL.md 3, 4, 7).

Run with ``/usr/bin/python3 -m pytest -q tests/integration/test_webhook.py``
(``HERALD_BIN`` picks the binary, e.g. an ASan build).

heraldd runs with ``--agent webhook --agent-url http://127.0.0.1:<port>/hook
--workers 2`` against webhook_backend.py, which checks the signature, answers
202 and publishes the run through the publish API. Covered:
  - a full run reaches the user's websocket in order: Herald's agent_started
    (agent "webhook") first, the backend's events, one agent_completed last;
    nothing more arrives after it; the backend's own agent_started got 409;
  - the body and its X-Herald-Signature (HMAC-SHA256 with
    HERALD_WEBHOOK_SECRET, not the API key) as the backend received them;
  - a backend that rejects the signature (401), answers 500, does not answer
    within the timeout, or cannot be reached: the run ends failed with an
    error, exactly once;
  - cancel: the backend receives a signed cancel POST, the user sees
    agent_completed cancelled, a late publish for the run gets 409; also when
    the cancel comes while the user_message request is still in flight;
  - runs completed by the backend free their slot (--max-runs 2, many rounds);
  - several users with concurrent runs on both workers see only their own.
Each heraldd must exit 0 on SIGTERM (an ASan build exits non-zero on a leak)
and print no sanitizer report.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_proc import DEFAULT_ENV, find_binary, start_heraldd  # noqa: E402
from herald_client import mint, recv_json, recv_welcome, run, ws_connect  # noqa: E402
from webhook_backend import SIG_RE, WebhookBackend, sign  # noqa: E402

WEBHOOK_SECRET = b"whsec-integration-test-0123456789"
API_KEY = os.environ.get("HERALD_API_KEY", DEFAULT_ENV["HERALD_API_KEY"])
MAX_RUNS = 2


def has_flag(flag: str) -> bool:
    try:
        out = subprocess.run([str(find_binary()), "--help"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return flag in out.stdout + out.stderr


def stop_clean(h):
    rc = h.stop()
    err = h.stderr_text()
    assert rc == 0, f"heraldd exited {rc}\n{err[-4000:]}"
    for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert bad not in err, err[-4000:]


def start_herald(url, *extra):
    return start_heraldd("--agent", "webhook", "--agent-url", url, "--max-runs", str(MAX_RUNS),
                         *extra, workers=2, echo_path=None,
                         env={"HERALD_WEBHOOK_SECRET": WEBHOOK_SECRET.decode(),
                              "HERALD_API_KEY": API_KEY})


@pytest.fixture(scope="module")
def backend():
    b = WebhookBackend(WEBHOOK_SECRET, API_KEY).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def herald(backend):
    h = start_herald(backend.url)
    backend.herald = (h.host, h.port)
    yield h
    stop_clean(h)


_n = [0]


def new_user(tag="wh"):
    _n[0] += 1
    return f"{tag}-{os.getpid()}-{_n[0]}"


class Session:
    """One authenticated websocket; buffers what arrives while waiting for acks."""

    def __init__(self, ws, user):
        self.ws, self.user, self.buf, self.n = ws, user, [], 0

    @classmethod
    async def open(cls, h, user):
        ws = await ws_connect(h, mint(user))
        await recv_welcome(ws, user)
        return cls(ws, user)

    async def _next(self, timeout):
        msg = await recv_json(self.ws, timeout)
        assert msg.get("type") != "error", f"error reply: {msg}"
        self.buf.append(msg)
        return msg

    async def start_run(self, text, thread="t1", timeout=10.0):
        self.n += 1
        mid = f"m{self.n}"
        await self.ws.send(json.dumps({"type": "user_message", "id": mid, "thread_id": thread,
                                       "text": text}))
        deadline = time.monotonic() + timeout
        while True:
            for m in self.buf:
                if m.get("type") == "ack" and m.get("id") == mid:
                    self.buf.remove(m)
                    return m["run_id"], mid
            await self._next(max(0.05, deadline - time.monotonic()))

    async def cancel(self, run_id):
        await self.ws.send(json.dumps({"type": "cancel", "run_id": run_id}))

    def events(self, run_id):
        return [m for m in self.buf if "seq" in m and m.get("run_id") == run_id]

    async def until_completed(self, run_id, timeout=15.0):
        deadline = time.monotonic() + timeout
        while not any(e["type"] == "agent_completed" for e in self.events(run_id)):
            left = deadline - time.monotonic()
            assert left > 0, f"no agent_completed for {run_id}: {self.events(run_id)}"
            await self._next(left)
        return self.events(run_id)

    async def settle(self, wait):
        """Reads whatever arrives within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                await self._next(left)
            except asyncio.TimeoutError:
                break

    async def close(self):
        await self.ws.close()


def check_shape(evs, run_id, text=None):
    """Exactly one agent_started (Herald's) first, exactly one agent_completed last,
    seq strictly increasing; returns the completion's data."""
    assert evs, f"no events for {run_id}"
    types = [e["type"] for e in evs]
    assert types[0] == "agent_started", types
    assert types.count("agent_started") == 1, types
    assert types[-1] == "agent_completed", types
    assert types.count("agent_completed") == 1, types
    assert evs[0]["data"]["agent"] == "webhook", evs[0]
    if text is not None:
        assert evs[0]["data"]["input"] == text, evs[0]
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    assert all(e["run_id"] == run_id for e in evs)
    return evs[-1]["data"]


# ---------------------------------------------------------------------- the full run

def test_full_run_in_order(herald, backend):
    user, text = new_user(), "what is the weather in Lyon?"

    async def go():
        s = await Session.open(herald, user)
        run_id, mid = await s.start_run(text)
        evs = await s.until_completed(run_id)
        await s.settle(2.0)  # past the runtime's sweep: nothing may follow
        after = s.events(run_id)
        await s.close()
        return run_id, mid, evs, after

    run_id, mid, evs, after = run(go())
    assert run_id.startswith("hr-"), run_id
    done = check_shape(evs, run_id, text)
    assert after == evs, f"events after agent_completed: {after[len(evs):]}"
    merged = []  # a lagging connection may merge deltas; the order is what counts
    for e in evs[1:-1]:
        if e["type"] != "agent_message" or not merged or merged[-1][0] != "agent_message":
            merged.append((e["type"], dict(e["data"])))
        else:
            merged[-1][1]["delta"] += e["data"]["delta"]
    assert [t for t, _ in merged] == ["agent_thinking", "tool_executing", "tool_completed",
                                      "agent_message"], merged
    assert merged[1][1] == {"tool": "echo", "call_id": "c1", "args": {"text": text}}
    assert merged[2][1]["result"] == {"length": len(text)} and merged[2][1]["ok"] is True
    assert merged[3][1]["delta"] == "You said: " + text
    assert done["status"] == "succeeded" and done["text"] == "You said: " + text, done

    # The backend's view: one signed user_message with the run's fields, and its
    # attempt to publish agent_started for Herald's run was refused.
    reqs = backend.requests_for(run_id)
    assert len(reqs) == 1, reqs
    r = reqs[0]
    assert r["type"] == "user_message" and r["status"] == 202 and r["path"] == "/hook"
    assert r["body"] == {"type": "user_message", "user_id": user, "thread_id": "t1",
                         "run_id": run_id, "message_id": mid, "text": text}, r["body"]
    assert r["content_type"] == "application/json", r
    assert SIG_RE.match(r["signature"]), r["signature"]
    assert r["signature"] == sign(WEBHOOK_SECRET, r["raw"]) and r["sig_ok"]
    assert r["signature"] != sign(API_KEY.encode(), r["raw"])  # the webhook secret, not the key
    pubs = backend.wait_for(lambda b: len(b.publishes.get(run_id, [])) == 8 and
                            b.publishes[run_id])
    assert pubs[0] == ("agent_started", 409), pubs
    assert all(st == 200 for _, st in pubs[1:]), pubs


def test_unicode_text_signed_over_exact_bytes(herald, backend):
    user, text = new_user(), 'caf\u00e9 \u2615 "quotes" \\ back\nslash \U0001F600'

    async def go():
        s = await Session.open(herald, user)
        run_id, _ = await s.start_run(text)
        evs = await s.until_completed(run_id)
        await s.close()
        return run_id, evs

    run_id, evs = run(go())
    assert check_shape(evs, run_id, text)["status"] == "succeeded"
    r = backend.requests_for(run_id)[0]
    assert r["sig_ok"] and r["body"]["text"] == text, r


# ---------------------------------------------------------------------- failures

def one_failed_run(h, text, timeout=20.0, user=None):
    user = user or new_user()

    async def go():
        s = await Session.open(h, user)
        t0 = time.monotonic()
        run_id, _ = await s.start_run(text)
        evs = await s.until_completed(run_id, timeout)
        took = time.monotonic() - t0
        await s.settle(1.5)
        after = s.events(run_id)
        await s.close()
        return run_id, evs, after, took

    run_id, evs, after, took = run(go(), timeout + 20)
    assert after == evs, f"events after agent_completed: {after[len(evs):]}"
    done = check_shape(evs, run_id, text)
    assert done["status"] == "failed", done
    assert isinstance(done.get("error"), str) and done["error"], done
    return run_id, evs, done, took


def test_wrong_secret_on_backend_fails_run(herald, backend):
    backend.secret = b"not-the-secret-herald-signs-with"
    try:
        run_id, evs, done, _ = one_failed_run(herald, "hello with the wrong secret")
    finally:
        backend.secret = WEBHOOK_SECRET
    assert [e["type"] for e in evs] == ["agent_started", "agent_completed"], evs
    assert "401" in done["error"], done
    r = backend.requests_for(run_id)
    assert len(r) == 1 and r[0]["status"] == 401 and not r[0]["sig_ok"], r
    # Herald did sign it, with its own secret.
    assert r[0]["signature"] == sign(WEBHOOK_SECRET, r[0]["raw"])


def test_backend_500_fails_run(herald, backend):
    run_id, evs, done, _ = one_failed_run(herald, "!500")
    assert [e["type"] for e in evs] == ["agent_started", "agent_completed"], evs
    assert done["error"] == "webhook answered 500", done
    assert [r["status"] for r in backend.requests_for(run_id)] == [500]


def test_backend_too_slow_fails_run(backend):
    # With --agent-timeout-ms the test is quick; without it, the 10 s default.
    if has_flag("--agent-timeout-ms"):
        extra, timeout_s = ("--agent-timeout-ms", "1000"), 1.0
    else:
        extra, timeout_s = (), 10.0
    h, saved = start_herald(backend.url, *extra), backend.herald
    try:
        backend.herald = (h.host, h.port)
        run_id, evs, done, took = one_failed_run(h, f"!slow {timeout_s + 2}",
                                                 timeout=timeout_s + 10)
        assert "did not answer" in done["error"], done
        assert timeout_s - 0.2 <= took <= timeout_s + 3, f"failed after {took:.1f}s"
        # The backend did get the request (it was just slow).
        assert backend.wait_for(lambda b: b.requests_for(run_id), 5)
    finally:
        backend.herald = saved
        stop_clean(h)


def test_unreachable_backend_fails_run():
    # A port that was just free: nobody listens there.
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    h = start_herald(f"http://127.0.0.1:{port}/hook")
    try:
        _, evs, done, took = one_failed_run(h, "anyone there?")
        assert done["error"] == "webhook unreachable", done
        assert took < 5, took
    finally:
        stop_clean(h)


# ---------------------------------------------------------------------- cancel

def cancel_run(h, backend, text):
    user = new_user()

    async def go():
        s = await Session.open(h, user)
        run_id, _ = await s.start_run(text)
        # Wait for agent_started: the run is live (and for "!hold", wait for the
        # backend to have taken it, so the cancel follows the accepted request).
        while not s.events(run_id):
            await s._next(5)
        if text == "!hold":
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: backend.wait_for(lambda b: b.requests_for(run_id), 5))
        await s.cancel(run_id)
        evs = await s.until_completed(run_id)
        await s.settle(1.5)
        after = s.events(run_id)
        await s.close()
        return user, run_id, evs, after

    user, run_id, evs, after = run(go())
    assert after == evs, f"events after agent_completed: {after[len(evs):]}"
    done = check_shape(evs, run_id, text)
    assert done["status"] == "cancelled", done
    assert [e["type"] for e in evs] == ["agent_started", "agent_completed"], evs
    # The backend got the cancel, signed, and its late publish was refused.
    assert backend.wait_for(lambda b: any(c["run_id"] == run_id for c in b.cancels), 5), \
        backend.requests_for(run_id)
    c = backend.requests_for(run_id, "cancel")
    assert len(c) == 1 and c[0]["sig_ok"] and c[0]["status"] == 200, c
    assert c[0]["body"] == {"type": "cancel", "user_id": user, "thread_id": "t1",
                            "run_id": run_id}, c[0]["body"]
    late = backend.wait_for(lambda b: b.publishes.get(run_id), 5)
    assert late == [("agent_message", 409)], late
    return run_id


def test_cancel_after_backend_accepted(herald, backend):
    cancel_run(herald, backend, "!hold")


def test_cancel_while_request_in_flight(herald, backend):
    # The backend sleeps 2 s before answering the user_message: the cancel
    # aborts that request (its late answer must not reach the freed run).
    run_id = cancel_run(herald, backend, "!slow 2")
    time.sleep(2.5)  # let the slow answer land on the aborted connection
    r = backend.requests_for(run_id, "user_message")
    assert len(r) == 1 and r[0]["sig_ok"], r


# ---------------------------------------------------------------------- run slots

def test_completed_runs_free_their_slots(herald, backend):
    user = new_user()

    async def go():
        s = await Session.open(herald, user)
        for rnd in range(3):
            ids = [(await s.start_run(f"round {rnd} run {i}"))[0] for i in range(MAX_RUNS)]
            for rid in ids:
                check_shape(await s.until_completed(rid), rid)
        # All slots in use: the next one is refused, then freed by a completion.
        held = [(await s.start_run("!hold"))[0] for _ in range(MAX_RUNS)]
        await s.ws.send(json.dumps({"type": "user_message", "id": "over", "thread_id": "t1",
                                    "text": "one too many"}))
        while True:
            m = await recv_json(s.ws, 5)
            if m.get("type") == "error":
                assert m["code"] == "too_many_runs", m
                break
        for rid in held:
            await s.cancel(rid)
            await s.until_completed(rid)
        rid, _ = await s.start_run("after the cancels")
        check_shape(await s.until_completed(rid), rid)
        await s.settle(2.0)
        await s.close()
        return s

    s = run(go(), 90)
    completions = [m for m in s.buf if m.get("type") == "agent_completed"]
    assert len(completions) == 3 * MAX_RUNS + MAX_RUNS + 1, completions


def test_concurrent_users_no_crossover(herald, backend):
    users = [new_user("cc") for _ in range(4)]

    async def one(user):
        s = await Session.open(herald, user)
        ids = {}
        for i in range(MAX_RUNS):
            text = f"{user} says {i}"
            rid, _ = await s.start_run(text, thread=f"th{i}")
            ids[rid] = text
        for rid, text in ids.items():
            check_shape(await s.until_completed(rid), rid, text)
        await s.settle(0.5)
        await s.close()
        return user, ids, s.buf

    async def go():
        return await asyncio.gather(*(one(u) for u in users))

    for user, ids, buf in run(go(), 60):
        events = [m for m in buf if "seq" in m]
        assert {e["run_id"] for e in events} == set(ids), (user, events)
        for e in events:
            if e["type"] == "tool_executing":
                assert e["data"]["args"]["text"] == ids[e["run_id"]], e
        for rid in ids:
            r = backend.requests_for(rid)
            assert len(r) == 1 and r[0]["body"]["user_id"] == user, r


# ---------------------------------------------------------------------- shutdown

def test_shutdown_with_request_in_flight(backend):
    # "localhost" also takes curl's resolver path (a name, not an address).
    h = start_herald(backend.url.replace("127.0.0.1", "localhost"))
    saved, backend.herald = backend.herald, (h.host, h.port)
    user = new_user()
    try:
        async def go():
            s = await Session.open(h, user)
            rid, _ = await s.start_run("through localhost")
            assert check_shape(await s.until_completed(rid), rid)["status"] == "succeeded"
            rid, _ = await s.start_run("!slow 4")
            while not s.events(rid):
                await s._next(5)
            await asyncio.sleep(0.5)  # the backend is sitting on the request
            t0 = time.monotonic()
            # SIGTERM: the run ends, its request is aborted, heraldd exits 0.
            await asyncio.get_running_loop().run_in_executor(None, stop_clean, h)
            took = time.monotonic() - t0
            await s.ws.close()
            return took

        took = run(go())
        assert took < 3.5, f"shutdown waited {took:.1f}s for the slow backend"
    finally:
        backend.herald = saved
        stop_clean(h)
