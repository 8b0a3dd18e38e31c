"""Resume across reconnects (PROTOCOL.md sections 3 and 5), against a real heraldd.

* test_resume_random_cuts: a publisher thread publishes 10,000 events to one
  user in batches while a client connects, reads a random number of events,
  drops TCP without a close frame (RST or FIN on a raw socket) and reconnects
  with since_seq = the last seq it saw -- the token and since_seq/epoch given
  in turn as query parameters, header + query, and in the auth message.  In the
  end every seq 1..10000 was read exactly once, in order on each connection,
  with its published payload, and every `resumed` said complete:true.
* test_concurrent_resumes: eight connections of one user resume at once from
  different points while publishing continues.
* wrong epoch -> complete:false and every retained event replayed; since_seq
  beyond the head -> complete:false; a since_seq before the retained range ->
  complete:false.

The WebSocket client here is a small raw-socket one (RawWS) so a connection
can be dropped abruptly.  Every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_client import Api, mint  # noqa: E402
from herald_proc import start_heraldd  # noqa: E402

TOTAL = 10_000


# ---------------------------------------------------------------- a raw client

class Closed(Exception):
    """The server sent a close frame (code, reason) or the TCP stream ended."""

    def __init__(self, code, reason=""):
        super().__init__(f"closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


class RawWS:
    """A minimal RFC 6455 client on a plain socket (text frames, pings answered)."""

    def __init__(self, host, port, path="/ws", headers=None, rcvbuf=None, timeout=10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no handshake response")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed during handshake: {buf!r}")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if not status.startswith(b"HTTP/1.1 101"):
            self.sock.close()
            raise ConnectionError(f"handshake refused: {head!r} {rest[:300]!r}")
        self.buf = bytearray(rest)
        self.off = 0

    # -- reading
    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data in time")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError("no data in time") from None
        if not chunk:
            raise Closed(None, "EOF")
        if self.off > (1 << 20):
            del self.buf[:self.off]
            self.off = 0
        self.buf += chunk

    def _take(self, n, deadline):
        while len(self.buf) - self.off < n:
            self._fill(deadline)
        b = bytes(self.buf[self.off:self.off + n])
        self.off += n
        return b

    def _frame(self, deadline):
        b0, b1 = self._take(2, deadline)
        if b1 & 0x80:
            raise AssertionError("server frame is masked")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._take(2, deadline))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._take(8, deadline))[0]
        return bool(b0 & 0x80), b0 & 0x0F, self._take(n, deadline)

    def recv_message(self, timeout=5.0):
        """(opcode, payload) of the next data message; raises Closed on close."""
        deadline = time.monotonic() + timeout
        parts, op0 = [], None
        while True:
            fin, op, payload = self._frame(deadline)
            if op == 0x9:
                self.send_frame(0xA, payload)
                continue
            if op == 0xA:
                continue
            if op == 0x8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode("utf-8", "replace"))
            if op != 0:
                op0 = op
            parts.append(payload)
            if fin:
                return op0, b"".join(parts)

    def recv(self, timeout=5.0):
        op, payload = self.recv_message(timeout)
        assert op == 0x1, f"expected a text frame, got opcode {op}"
        return json.loads(payload.decode("utf-8"))

    # -- writing
    def send_frame(self, opcode, payload: bytes):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(hdr + mask + masked)

    def send_json(self, obj):
        self.send_frame(0x1, json.dumps(obj).encode())

    def abort(self, rst=True):
        """Drop the TCP connection without a close frame (RST, or a bare FIN)."""
        try:
            if rst:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            else:
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def connect(h, token, mode, since=None, epoch=None, timeout=10.0) -> RawWS:
    """Connect presenting token and the resume point through `mode`:
    "query" (access_token + since_seq + epoch in the query), "header"
    (Authorization header, since_seq + epoch in the query) or "message"
    (the auth message carries token, since_seq and epoch)."""
    q, headers = {}, {}
    if mode in ("query", "header"):
        if mode == "query":
            q["access_token"] = token
        else:
            headers["Authorization"] = f"Bearer {token}"
        if since is not None:
            q["since_seq"] = str(since)
            if epoch is not None:
                q["epoch"] = epoch
    path = "/ws" + ("?" + urllib.parse.urlencode(q) if q else "")
    ws = RawWS(h.host, h.port, path, headers, timeout=timeout)
    if mode == "message":
        msg = {"type": "auth", "token": token}
        if since is not None:
            msg["since_seq"] = since
            if epoch is not None:
                msg["epoch"] = epoch
        ws.send_json(msg)
    return ws


def token_for(user):
    return mint(user, exp=int(time.time()) + 600)


# ---------------------------------------------------------------- events

def make_event(user, i):
    """The i-th published event of user (its seq will be i): a counter in data."""
    if i % 7 == 0:
        return {"user_id": user, "thread_id": "t1", "run_id": "r1", "type": "tool_executing",
                "data": {"tool": "search", "call_id": f"c{i}", "args": {"i": i, "q": "z\u00fc"}}}
    return {"user_id": user, "thread_id": "t1", "run_id": "r1", "type": "agent_thinking",
            "data": {"text": f"thinking {i} \u00e9\u6f22\U0001F600", "i": i}}


def check_event(user, ev, epoch):
    """ev (received) is the event published as number ev['seq'] for user."""
    want = make_event(user, ev["seq"])
    assert ev["type"] == want["type"], ev
    assert ev["data"] == want["data"], f"payload of seq {ev['seq']}: {ev['data']} != {want['data']}"
    assert ev["thread_id"] == "t1" and ev["run_id"] == "r1", ev
    assert ev["epoch"] == epoch, ev
    assert "seq_from" not in ev, f"merged event with a large queue: {ev}"
    assert isinstance(ev.get("ts"), int), ev


def publish_range(api, user, first, last):
    r = api.publish_batch([make_event(user, i) for i in range(first, last + 1)])
    assert r.status == 200, r
    seqs = [x["seq"] for x in r.json["results"]]
    assert seqs == list(range(first, last + 1)), f"publish returned seqs {seqs[:5]}..."


@pytest.fixture(scope="module")
def herald():
    h = start_heraldd("--history-events", "20000", "--history-bytes", str(64 << 20),
                      "--max-queue", str(64 << 20), workers=2)
    yield h
    h.stop()


def read_welcome(ws, user, epoch=None, timeout=5.0):
    w = ws.recv(timeout)
    assert w.get("type") == "welcome", f"first message is not welcome: {w}"
    assert w.get("user_id") == user, w
    assert isinstance(w.get("seq"), int) and isinstance(w.get("epoch"), str), w
    if epoch is not None:
        assert w["epoch"] == epoch, f"epoch changed without history loss: {w} vs {epoch}"
    return w


# ---------------------------------------------------------------- tests

def test_resume_random_cuts(herald):
    user = "resume-cuts"
    token = token_for(user)
    rng = random.Random(20240601)
    pub_err, pub_done = [], threading.Event()

    def publisher():
        api = Api(herald)
        prng = random.Random(7)
        i = 1
        try:
            while i <= TOTAL:
                n = min(prng.randint(1, 100), TOTAL - i + 1)
                publish_range(api, user, i, i + n - 1)
                i += n
                time.sleep(prng.uniform(0, 0.1))
        except BaseException as e:  # reported by the main thread
            pub_err.append(e)
        finally:
            api.close()
            pub_done.set()

    seen = {}
    last, epoch = 0, None
    conns = resumed_msgs = mid_replay_drops = 0
    modes = ("query", "header", "message")
    t = threading.Thread(target=publisher, daemon=True)
    deadline = time.monotonic() + 50
    first = True
    while True:
        if pub_done.is_set() and last == TOTAL:
            break
        if pub_err:
            raise pub_err[0]
        assert time.monotonic() < deadline, f"not done in time: last seq {last}, {conns} conns"
        mode = modes[conns % 3]
        since = last
        ws = connect(herald, token, mode, since=since, epoch=epoch)
        w = read_welcome(ws, user, epoch)
        epoch = w["epoch"]
        head = w["seq"]
        assert head >= last, f"welcome seq {head} < seq already seen {last}"
        if first:  # start publishing once the first client is in
            t.start()
            first = False
        k = rng.choice([0, 1, rng.randint(1, 20), rng.randint(1, 200), rng.randint(1, 1500)])
        got, in_replay = 0, True
        while got < k:
            try:
                m = ws.recv(timeout=0.15)
            except TimeoutError:
                if in_replay:
                    raise AssertionError(f"replay/resumed did not arrive (since {since})")
                break
            if m.get("type") == "resumed":
                assert in_replay, f"second resumed: {m}"
                assert m == {"type": "resumed", "from_seq": since + 1, "to_seq": head,
                             "complete": True}, f"resume since {since} ({mode}): {m}"
                assert last == head, f"replay ended at {last}, head was {head}"
                in_replay = False
                resumed_msgs += 1
                continue
            assert "seq" in m, f"unexpected message {m}"
            assert m["seq"] == last + 1, \
                f"conn {conns} ({mode}, since {since}): got seq {m['seq']}, expected {last + 1}"
            if in_replay:
                assert m["seq"] <= head, f"live event {m['seq']} before resumed (head {head})"
            check_event(user, m, epoch)
            seen[m["seq"]] = seen.get(m["seq"], 0) + 1
            last = m["seq"]
            got += 1
        if in_replay:
            mid_replay_drops += 1
        ws.abort(rst=(conns % 2 == 0))
        conns += 1
    t.join(10)
    assert not pub_err, pub_err
    dup = [s for s, n in seen.items() if n != 1]
    assert not dup, f"seqs read more than once: {dup[:10]}"
    missing = [s for s in range(1, TOTAL + 1) if s not in seen]
    assert not missing, f"seqs never read: {missing[:10]} ({len(missing)})"
    assert len(seen) == TOTAL
    # The run must have exercised what it claims to.
    assert conns >= 50, f"only {conns} connections"
    assert resumed_msgs >= 20, f"only {resumed_msgs} resumed messages"
    print(f"{conns} connections, {resumed_msgs} resumed, {mid_replay_drops} dropped mid-replay")


def test_concurrent_resumes(herald):
    user = "resume-many"
    token = token_for(user)
    api = Api(herald)
    first_half, total, nconn = 300, 900, 8
    publish_range(api, user, 1, first_half)
    rng = random.Random(3)
    sinces = [0, first_half, first_half - 1] + [rng.randint(0, first_half) for _ in range(nconn - 3)]
    barrier = threading.Barrier(nconn + 1, timeout=10)
    errors, summary = [], {}

    def client(idx, since):
        mode = ("query", "header", "message")[idx % 3]
        ws = None
        try:
            barrier.wait()
            ws = connect(herald, token, mode, since=since)
            w = read_welcome(ws, user)
            expect, resumed = since + 1, None
            deadline = time.monotonic() + 20
            while expect <= total:
                m = ws.recv(max(0.1, deadline - time.monotonic()))
                if m.get("type") == "resumed":
                    assert resumed is None, m
                    resumed = m
                    assert m == {"type": "resumed", "from_seq": since + 1, "to_seq": w["seq"],
                                 "complete": True}, (since, m)
                    assert expect == w["seq"] + 1, (since, expect, m)
                    continue
                assert m.get("seq") == expect, f"conn {idx} since {since}: {m.get('seq')} != {expect}"
                if resumed is None:
                    assert m["seq"] <= w["seq"], (since, w, m)
                check_event(user, m, w["epoch"])
                expect += 1
            assert resumed is not None
            summary[idx] = (since, w["seq"])
        except BaseException as e:
            errors.append((idx, since, e))
        finally:
            if ws:
                ws.abort()

    threads = [threading.Thread(target=client, args=(i, s), daemon=True)
               for i, s in enumerate(sinces)]
    for th in threads:
        th.start()
    barrier.wait()
    i = first_half + 1
    while i <= total:  # publishing goes on while they resume
        n = min(37, total - i + 1)
        publish_range(api, user, i, i + n - 1)
        i += n
        time.sleep(0.005)
    for th in threads:
        th.join(25)
    api.close()
    assert not errors, errors
    assert len(summary) == nconn, summary


@pytest.fixture(scope="module")
def small_history():
    h = start_heraldd("--history-events", "50", workers=2)
    yield h
    h.stop()


def _published(h, user, n):
    api = Api(h)
    publish_range(api, user, 1, n)
    return api


def _resume(h, user, mode, since, epoch=None):
    """Connects, returns (welcome, replayed events, resumed); leaves ws open."""
    ws = connect(h, token_for(user), mode, since=since, epoch=epoch)
    w = read_welcome(ws, user)
    events = []
    while True:
        m = ws.recv(5)
        if m.get("type") == "resumed":
            return ws, w, events, m
        assert "seq" in m, m
        events.append(m)


@pytest.mark.parametrize("mode", ["query", "header", "message"])
def test_wrong_epoch_replays_all(small_history, mode):
    user = f"resume-epoch-{mode}"
    api = _published(small_history, user, 80)
    ws, w, events, res = _resume(small_history, user, mode, 70, epoch="0" * 32)
    assert w["seq"] == 80
    assert w["epoch"] != "0" * 32
    # Every retained event (31..80, --history-events 50), not just after 70.
    assert [e["seq"] for e in events] == list(range(31, 81)), [e["seq"] for e in events][:5]
    for e in events:
        check_event(user, e, w["epoch"])
    assert res == {"type": "resumed", "from_seq": 71, "to_seq": 80, "complete": False}, res
    # Live events continue after the head.
    publish_range(api, user, 81, 81)
    assert ws.recv(5)["seq"] == 81
    ws.abort()
    # The right epoch: only after 70, complete.
    ws, w2, events, res = _resume(small_history, user, mode, 70, epoch=w["epoch"])
    assert [e["seq"] for e in events] == list(range(71, 82))
    assert res == {"type": "resumed", "from_seq": 71, "to_seq": 81, "complete": True}, res
    ws.abort()
    api.close()


def test_wrong_epoch_in_query_with_auth_message(small_history):
    """since_seq and epoch in the query, the token in the auth message (which
    carries no since_seq): the query's epoch must still count (section 2)."""
    user = "resume-epoch-split"
    api = _published(small_history, user, 60)
    path = "/ws?" + urllib.parse.urlencode({"since_seq": "55", "epoch": "f" * 32})
    ws = RawWS(small_history.host, small_history.port, path)
    ws.send_json({"type": "auth", "token": token_for(user)})
    read_welcome(ws, user)
    events = []
    while True:
        m = ws.recv(5)
        if m.get("type") == "resumed":
            break
        events.append(m["seq"])
    ws.abort()
    api.close()
    assert (events, m) == (list(range(11, 61)),
                           {"type": "resumed", "from_seq": 56, "to_seq": 60, "complete": False}), \
        f"query since_seq=55&epoch=<wrong> + auth message: replayed {events[:3]}..{events[-1:]}, {m}"


@pytest.mark.parametrize("mode", ["query", "message"])
def test_since_beyond_head(small_history, mode):
    user = f"resume-beyond-{mode}"
    api = _published(small_history, user, 20)
    ws, w, events, res = _resume(small_history, user, mode, 1000)
    assert w["seq"] == 20
    assert events == []
    assert res == {"type": "resumed", "from_seq": 1001, "to_seq": 20, "complete": False}, res
    publish_range(api, user, 21, 22)
    assert [ws.recv(5)["seq"], ws.recv(5)["seq"]] == [21, 22]
    ws.abort()
    # since == head is up to date: complete, nothing replayed.
    ws, w, events, res = _resume(small_history, user, mode, 22)
    assert events == [] and res == {"type": "resumed", "from_seq": 23, "to_seq": 22,
                                    "complete": True}, res
    ws.abort()
    api.close()


@pytest.mark.parametrize("mode", ["header", "message"])
def test_since_before_retained_range(small_history, mode):
    user = f"resume-evicted-{mode}"
    api = _published(small_history, user, 75)  # retained: 26..75
    ws, w, events, res = _resume(small_history, user, mode, 10)
    assert [e["seq"] for e in events] == list(range(26, 76))
    assert res == {"type": "resumed", "from_seq": 11, "to_seq": 75, "complete": False}, res
    ws.abort()
    for since, complete in ((24, False), (25, True), (26, True), (74, True)):
        ws, w, events, res = _resume(small_history, user, mode, since)
        assert [e["seq"] for e in events] == list(range(max(since, 25) + 1, 76)), since
        assert res["complete"] is complete, (since, res)
        ws.abort()
    api.close()
