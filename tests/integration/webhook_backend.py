"""A small, real webhook backend for Herald's webhook agent (docs/agents.md).

Herald POSTs each user message here, signed with ``X-Herald-Signature:
sha256=<hex HMAC-SHA256 of the body>``. This backend does what a real one does:
it checks the signature (401 if wrong), answers 202, and then, from another
thread, publishes the run's events through Herald's ``POST /api/v1/publish``
with the API key: agent_thinking, tool_executing, tool_completed, a few
agent_message deltas and agent_completed. Herald has already published
agent_started for its own runs ("hr-..."), so the backend must not; it tries
once anyway and records Herald's answer (409), which the tests check.

The message text steers the behaviour, so one backend serves every test:

    "!500"      answer 500 and publish nothing
    "!slow S"   sleep S seconds before answering 202 (a timeout, or a cancel
                while the request is still in flight), publish nothing
    "!hold"     answer 202 and publish nothing (the run waits for a cancel)
    anything    answer 202 and publish the full run

A cancel POST ({"type":"cancel",...}) is recorded; the backend answers 200 and
then, like a slow backend that has not yet noticed, publishes one more
agent_message for the run and records the status (Herald answers 409).

Everything recorded is guarded by one condition variable; ``wait_for(pred)``
waits (bounded) for pred(backend) to hold. Only the standard library.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["WebhookBackend", "sign"]

SIG_RE = re.compile(r"^sha256=[0-9a-f]{64}$")


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookBackend:
    def __init__(self, secret: bytes, api_key: str, step_delay: float = 0.02):
        self.secret = secret            # tests may swap it to provoke a 401
        self.api_key = api_key
        self.step_delay = step_delay
        self.herald = None              # (host, port), set once heraldd runs
        self.cond = threading.Condition()
        self.requests = []              # every POST: dict(type, body, raw, signature, sig_ok, status)
        self.cancels = []               # cancel bodies with a valid signature
        self.publishes = {}             # run_id -> [(event type, HTTP status)]
        self.threads = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: Herald's client may reuse connections

            def log_message(self, *a):
                pass

            def do_POST(self):
                backend._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ---------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        for t in self.threads:
            t.join(timeout=5)

    def wait_for(self, pred, timeout=10.0):
        """Waits until pred(self) is true (checked under the lock); returns it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred(self)
                left = deadline - time.monotonic()
                if v or left <= 0:
                    return v
                self.cond.wait(left)

    def requests_for(self, run_id, type_=None):
        with self.cond:
            return [r for r in self.requests
                    if r["body"] and r["body"].get("run_id") == run_id
                    and (type_ is None or r["type"] == type_)]

    # ---------------------------------------------------------------- requests

    def _record(self, **kw):
        with self.cond:
            self.requests.append(kw)
            if kw["type"] == "cancel" and kw["sig_ok"]:
                self.cancels.append(kw["body"])
            self.cond.notify_all()

    def _answer(self, h, status, body=b""):
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
        except OSError:
            pass  # Herald gave up on the request (timeout, cancel)

    def _handle(self, h):
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n)
        sig = h.headers.get("X-Herald-Signature", "")
        sig_ok = bool(SIG_RE.match(sig)) and hmac.compare_digest(sig, sign(self.secret, raw))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        kind = body.get("type") if isinstance(body, dict) else None
        rec = dict(type=kind, body=body, raw=raw, signature=sig, sig_ok=sig_ok,
                   content_type=h.headers.get("Content-Type"), path=h.path, status=None)

        if h.path != "/hook":
            status = 404
        elif not sig_ok:
            status = 401
        elif kind == "cancel":
            status = 200
        elif kind != "user_message" or not isinstance(body.get("text"), str):
            status = 400
        else:
            status = self._user_message(h, body)
        rec["status"] = status
        self._record(**rec)
        if status is not None:
            self._answer(h, status, b'{"ok":true}' if status < 300 else b'{"ok":false}')
        if status == 200 and kind == "cancel":
            self._spawn(self._late_publish, body)

    def _user_message(self, h, body):
        text = body["text"]
        if text == "!500":
            return 500
        m = re.match(r"^!slow (\d+(?:\.\d+)?)$", text)
        if m:
            time.sleep(float(m.group(1)))
            return 202
        if text == "!hold":
            return 202
        self._spawn(self._publish_run, body)
        return 202

    def _spawn(self, fn, *a):
        t = threading.Thread(target=fn, args=a, daemon=True)
        with self.cond:
            self.threads.append(t)
        t.start()

    # ---------------------------------------------------------------- publishing

    def _publish(self, conn_box, user, thread, run_id, type_, data):
        ev = {"user_id": user, "thread_id": thread, "run_id": run_id, "type": type_,
              "data": data}
        payload = json.dumps(ev).encode()
        for attempt in range(2):
            if conn_box[0] is None:
                conn_box[0] = http.client.HTTPConnection(*self.herald, timeout=10)
            try:
                conn_box[0].request("POST", "/api/v1/publish", body=payload, headers={
                    "Authorization": f"Bearer {self.api_key}",
                    "Content-Type": "application/json"})
                resp = conn_box[0].getresponse()
                resp.read()
                status = resp.status
                if resp.will_close:
                    conn_box[0].close()
                    conn_box[0] = None
                break
            except (http.client.HTTPException, OSError):
                conn_box[0].close()
                conn_box[0] = None
                status = None
        with self.cond:
            self.publishes.setdefault(run_id, []).append((type_, status))
            self.cond.notify_all()
        return status

    def _publish_run(self, body):
        user, thread, run_id, text = body["user_id"], body["thread_id"], body["run_id"], body["text"]
        box = [None]
        pub = lambda t, d: self._publish(box, user, thread, run_id, t, d)  # noqa: E731
        try:
            # Herald started this run: its agent_started must be refused.
            pub("agent_started", {"agent": "imposter", "input": text})
            steps = [
                ("agent_thinking", {"text": "Reading the message"}),
                ("tool_executing", {"tool": "echo", "call_id": "c1", "args": {"text": text}}),
                ("tool_completed", {"tool": "echo", "call_id": "c1", "ok": True,
                                    "result": {"length": len(text)}}),
                ("agent_message", {"delta": "You "}),
                ("agent_message", {"delta": "said: "}),
                ("agent_message", {"delta": text}),
                ("agent_completed", {"status": "succeeded", "text": "You said: " + text}),
            ]
            for t, d in steps:
                time.sleep(self.step_delay)
                pub(t, d)
        finally:
            if box[0] is not None:
                box[0].close()

    def _late_publish(self, body):
        box = [None]
        time.sleep(0.05)
        try:
            self._publish(box, body["user_id"], body["thread_id"], body["run_id"],
                          "agent_message", {"delta": "too late"})
        finally:
            if box[0] is not None:
                box[0].close()
