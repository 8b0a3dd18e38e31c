"""Helpers for the mission-critical integration tests (6 and 7).

Starts the real heraldd through tests/integration/herald_proc.py, mints HS256
JWTs with the standard library (hmac/hashlib), and talks HTTP with
http.client. Nothing here asserts; the tests do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from herald_proc import start_heraldd  # noqa: E402

JWT_SECRET = "mission-critical-secret-0123456789abcdef"  # >= 32 bytes, raw
API_KEY = "mission-critical-api-key-0123456789"
ENV = {"HERALD_JWT_SECRET": JWT_SECRET, "HERALD_API_KEY": API_KEY}

__all__ = ["API_KEY", "Http", "JWT_SECRET", "metrics", "mint", "start", "ws_uri"]


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(user: str, ttl: int = 600, secret: str = JWT_SECRET) -> str:
    """An HS256 token for user ({"sub": user, "exp": now + ttl})."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64(json.dumps({"sub": user, "exp": int(time.time()) + ttl},
                             separators=(",", ":")).encode())
    signing = f"{header}.{claims}".encode()
    sig = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(sig)}"


def start(workers: int = 2):
    return start_heraldd(env=ENV, workers=workers, echo_path=None)


def run_against_heraldd(scenario, timeout: float) -> None:
    """Runs the async scenario(h) against a fresh heraldd, then checks the server
    logged no isolation refusal and exited 0 on SIGTERM."""
    import asyncio
    h = start()
    try:
        asyncio.run(asyncio.wait_for(scenario(h), timeout))
    finally:
        rc = h.stop()
    log = h.stderr_text()
    assert "isolation: frame" not in log, log[-2000:]
    assert rc == 0, f"heraldd exited {rc}\n{log[-2000:]}"


def ws_uri(h, token: str | None = None) -> str:
    q = f"?access_token={token}" if token else ""
    return f"ws://{h.host}:{h.port}/ws{q}"


class Http:
    """One keep-alive HTTP connection (one per thread)."""

    def __init__(self, h, timeout: float = 30.0):
        self.c = http.client.HTTPConnection(h.host, h.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, auth: str | None = None):
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        self.c.request(method, path, body=data, headers=headers)
        r = self.c.getresponse()
        raw = r.read()
        return r.status, raw

    def get_json(self, path: str):
        status, raw = self.request("GET", path)
        return status, json.loads(raw)

    def publish(self, body):
        status, raw = self.request("POST", "/api/v1/publish", body, auth=API_KEY)
        return status, json.loads(raw)

    def close(self):
        self.c.close()


_METRIC = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)$")


def metrics(http: Http) -> dict[str, float]:
    status, raw = http.request("GET", "/metrics")
    assert status == 200, (status, raw[:200])
    out = {}
    for line in raw.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = _METRIC.match(line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def scaled(n: int) -> int:
    """Load scaled down under sanitizers (HERALD_MC_SCALE, default 1)."""
    return max(1, int(n * float(os.environ.get("HERALD_MC_SCALE", "1"))))
