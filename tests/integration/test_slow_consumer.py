"""Slow consumers (PROTOCOL.md sections 3, 5, 6), against a real heraldd.

* test_coalescing_keeps_text: a client with a tiny receive buffer does not
  read while thousands of agent_message deltas of one run are published (plus
  a tool_executing and another run's message in between); then it reads
  everything (the answer text fits --max-queue, its unmerged frames do not).
  The deltas joined in seq order are the published text byte for byte,
  seq/seq_from ranges tile the stream with no gap or overlap, only
  agent_message events of one run were merged, everything else arrives as it
  was published, in order.
* test_non_reader_closed_4008: a client that does not read while large,
  unmergeable events (tool_executing) are published is closed with 4008: once
  the server counts the slow-consumer close it drains its socket and finds a
  gapless prefix of its stream, then the close frame.  Another user's
  connection receives all of its events meanwhile.  Memory: ~120 MB are
  published to the slow user; the server's RSS must reach a plateau - it may
  grow by at most 16 MiB over the last two thirds of the publishing (where an
  unbounded queue or history would add ~80 MB), and in an unsanitized build
  by at most 48 MiB in all.  Sanitizer builds skip only the absolute bound:
  their allocators and shadow memory make it meaningless, not the plateau.

Uses the raw-socket client of test_resume.py.  Every wait is bounded.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_client import Api  # noqa: E402
from herald_proc import start_heraldd  # noqa: E402
from test_resume import Closed, RawWS, read_welcome, token_for  # noqa: E402

ALPHABET = ["a", "b", "z", " ", "\u00e9", "\u6f22", "\U0001F642", "\"", "\\", "\n", "\t",
            "\u00df", "<", "\u2028", "\u0416"]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_ws(h, user, rcvbuf=None):
    ws = RawWS(h.host, h.port, "/ws", {"Authorization": f"Bearer {token_for(user)}"},
               rcvbuf=rcvbuf)
    w = read_welcome(ws, user)
    return ws, w


def test_coalescing_keeps_text():
    max_queue = 49152
    # A small kernel send buffer, so the server's own queue fills and merges.
    with start_heraldd("--max-queue", str(max_queue), "--socket-sndbuf", "4096",
                       workers=2) as h:
        user = "slow-coalesce"
        api = Api(h)
        rng = random.Random(11)
        ws, w = open_ws(h, user, rcvbuf=2048)
        assert w["seq"] == 0

        def msg(run, delta):
            return {"user_id": user, "thread_id": "t1", "run_id": run, "type": "agent_message",
                    "data": {"delta": delta}}

        n = 8000
        deltas = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 2))) for _ in range(n)]
        text = "".join(deltas)
        # The premise: the whole answer fits the queue once merged, its
        # unmerged frames (~190 bytes each) are many times the limit.
        assert len(text.encode()) * 2 < max_queue
        published = [{"user_id": user, "thread_id": "t1", "run_id": "R", "type": "agent_started",
                      "data": {"agent": "demo", "input": "q"}}]
        for i, d in enumerate(deltas):
            published.append(msg("R", d))
            if i == 3000:
                published.append({"user_id": user, "thread_id": "t1", "run_id": "R",
                                  "type": "tool_executing",
                                  "data": {"tool": "t", "call_id": "c1", "args": {"k": [1, "\u00e9"]}}})
            if i == 5000:
                published.append(msg("OTHER", "other-run \u00e9"))
            if i == 6500:
                published.append({"user_id": user, "thread_id": "t1", "run_id": "R",
                                  "type": "agent_thinking", "data": {"text": "hmm"}})
        published.append({"user_id": user, "thread_id": "t1", "run_id": "R",
                          "type": "agent_completed", "data": {"status": "succeeded", "text": text}})
        for i in range(0, len(published), 400):
            r = api.publish_batch(published[i:i + 400])
            assert r.status == 200, r
            assert [x["seq"] for x in r.json["results"]] == list(range(i + 1, i + 1 + len(published[i:i + 400])))
        by_seq = {i + 1: e for i, e in enumerate(published)}
        last_seq = len(published)

        got = []
        try:
            while True:
                m = ws.recv(10)
                got.append(m)
                if m.get("seq") == last_seq:
                    break
        except Closed as e:
            raise AssertionError(f"closed with {e.code} {e.reason!r} after {len(got)} events "
                                 f"(last seq {got[-1].get('seq') if got else None})")
        finally:
            ws.abort()
        metrics = api.metrics()
        api.close()

        # The events tile 1..last_seq: seq_from..seq ranges, no gap, no overlap.
        nxt, merged_frames = 1, 0
        joined = []
        for m in got:
            lo, hi = m.get("seq_from", m["seq"]), m["seq"]
            assert lo == nxt and hi >= lo, f"range {lo}..{hi}, expected to start at {nxt}"
            nxt = hi + 1
            if "seq_from" in m:
                merged_frames += 1
                assert m["type"] == "agent_message", f"a {m['type']} was merged: {m}"
                for s in range(lo, hi + 1):  # only messages of this run were merged
                    assert by_seq[s]["type"] == "agent_message" and by_seq[s]["run_id"] == m["run_id"], \
                        f"merged range {lo}..{hi} covers {by_seq[s]['type']} of {by_seq[s]['run_id']}"
                assert m["data"] == {"delta": "".join(by_seq[s]["data"]["delta"]
                                                      for s in range(lo, hi + 1))}, f"seq {lo}..{hi}"
                assert m["epoch"] == w["epoch"] and m["thread_id"] == "t1", m
                assert isinstance(m["ts"], int), m
            else:
                want = by_seq[hi]
                assert (m["type"], m["data"], m.get("run_id")) == \
                    (want["type"], want["data"], want["run_id"]), f"seq {hi}: {m} != {want}"
            if m["type"] == "agent_message" and m["run_id"] == "R":
                joined.append(m["data"]["delta"])
        assert nxt == last_seq + 1
        assert "".join(joined) == text, "the answer text changed in coalescing"
        assert merged_frames > 0, f"no merge happened ({len(got)} frames): the test did not exercise coalescing"
        assert metrics.get("herald_slow_consumer_closes_total", 0) == 0, metrics
        print(f"{last_seq} events arrived as {len(got)} frames, {merged_frames} merged")


def test_non_reader_closed_4008():
    max_queue = 65536
    with start_heraldd("--max-queue", str(max_queue), "--max-body", str(8 << 20),
                       workers=2) as h:
        slow, other = "slow-4008", "slow-bystander"
        pid = h.proc.pid
        ws_slow, w = open_ws(h, slow, rcvbuf=2048)
        ws_other, _ = open_ws(h, other)
        blob_len = 30000
        batches, per_batch, other_per_batch = 40, 100, 5
        total_other = batches * other_per_batch
        total_slow = batches * per_batch + 3

        def slow_event(i):
            return {"user_id": slow, "thread_id": "t", "run_id": "r", "type": "tool_executing",
                    "data": {"tool": "dump", "call_id": f"c{i}",
                             "args": {"i": i, "blob": chr(0x61 + i % 26) * blob_len}}}

        def other_event(i):
            return {"user_id": other, "thread_id": "t", "run_id": "r", "type": "tool_executing",
                    "data": {"tool": "x", "call_id": f"o{i}", "args": {"i": i}}}

        errors = []
        other_got, slow_got = [], []
        slow_close = {}
        stop = threading.Event()
        rss = {"max": 0}
        marks = []  # the highest RSS seen when each batch was answered

        def read_other():
            try:
                while len(other_got) < total_other:
                    m = ws_other.recv(20)
                    assert m["seq"] == len(other_got) + 1, m
                    assert m["data"] == other_event(m["seq"])["data"], m
                    other_got.append(m["seq"])
            except BaseException as e:
                errors.append(("other", e))

        def drain_slow():
            # Wait (not reading) until the server has given up on this client,
            # then drain: the close frame is queued behind what was sent.
            api = Api(h)
            try:
                deadline = time.monotonic() + 40
                while api.metrics().get("herald_slow_consumer_closes_total", 0) < 1:
                    assert time.monotonic() < deadline, "no slow-consumer close"
                    time.sleep(0.05)
                try:
                    while True:
                        m = ws_slow.recv(10)
                        slow_got.append(m)
                except Closed as e:
                    slow_close["code"] = e.code
            except BaseException as e:
                errors.append(("slow", e))
            finally:
                api.close()

        def sample_rss():
            while not stop.is_set():
                try:
                    rss["max"] = max(rss["max"], rss_kib(pid))
                except (OSError, AssertionError):
                    return
                time.sleep(0.01)

        base = rss_kib(pid)
        threads = [threading.Thread(target=f, daemon=True)
                   for f in (read_other, drain_slow, sample_rss)]
        for t in threads:
            t.start()
        api = Api(h, timeout=60)
        sent = 0
        # A few single events first, so some reach the socket before the queue
        # fills: the client must then see exactly those, then the close.
        warm = 3
        for i in range(1, warm + 1):
            r = api.publish_batch([slow_event(i)])
            assert r.status == 200 and r.json["results"][0]["seq"] == i, r
            sent += blob_len
            time.sleep(0.05)
        for b in range(batches):
            evs = []
            for k in range(per_batch):
                evs.append(slow_event(warm + b * per_batch + k + 1))
                if k % (per_batch // other_per_batch) == 0:
                    evs.append(other_event(b * other_per_batch + k // (per_batch // other_per_batch) + 1))
            r = api.publish_batch(evs)
            assert r.status == 200, r
            sent += sum(len(e["data"]["args"].get("blob", "")) for e in evs)
            marks.append(max(rss["max"], rss_kib(pid)))
        assert sent >= 120_000_000
        for t in threads[:2]:
            t.join(30)
        stop.set()
        threads[2].join(5)
        grown_mib = (rss["max"] - base) / 1024
        third = batches // 3
        late_mib = (max(marks[third:]) - marks[third - 1]) / 1024
        presence = api.wait_presence(slow, 0, timeout=10)
        metrics = api.metrics()
        api.close()
        ws_slow.abort()
        ws_other.abort()

        assert not errors, errors
        assert slow_close.get("code") == 4008, f"slow client: close {slow_close}, {len(slow_got)} events"
        # What did arrive is a gapless prefix of the stream, as published.
        seqs = [m.get("seq") for m in slow_got]
        assert seqs == list(range(1, len(seqs) + 1)), f"not a gapless prefix: {seqs[:5]}..{seqs[-5:]}"
        assert 1 <= len(seqs) < total_slow, len(seqs)
        for m in slow_got:
            assert "seq_from" not in m and m["data"] == slow_event(m["seq"])["data"], m["seq"]
        assert other_got == list(range(1, total_other + 1))
        assert presence == 0, presence
        assert metrics["herald_slow_consumer_closes_total"] == 1, metrics
        assert late_mib < 16, f"no plateau: RSS grew by {late_mib:.1f} MiB in the last 2/3 {marks}"
        if not os.environ.get("HERALD_SANITIZER"):
            assert grown_mib < 48, f"RSS grew by {grown_mib:.1f} MiB (from {base} KiB)"
        print(f"slow client got {len(seqs)} events then 4008; RSS +{grown_mib:.1f} MiB, "
              f"+{late_mib:.1f} MiB over the last 2/3")
