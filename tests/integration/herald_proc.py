"""Start and stop a real ``heraldd`` for integration tests.

Tiny, dependency-free helper shared by the integration suites.

API
---
``start_heraldd(*extra_args, env=None, workers=2, echo_path="/echo",
                listen="127.0.0.1:0", timeout=10.0) -> HeraldProcess``

    Launches ``heraldd --listen LISTEN --workers N [--echo-path PATH]
    *extra_args`` and waits (bounded by ``timeout`` seconds) until the daemon
    writes ``listening on HOST:PORT`` to stderr.  stderr goes to a temporary
    file (never a pipe, so the daemon can never block on it).

    ``env`` entries are layered over ``os.environ``; ``HERALD_JWT_SECRET``
    (>= 32 bytes) and ``HERALD_API_KEY`` get test defaults unless already set
    in ``env`` or the environment.  Pass ``echo_path=None`` to omit
    ``--echo-path``.

    The binary is ``$HERALD_BIN`` if set, else ``<repo>/build/bin/heraldd``.
    Raises ``FileNotFoundError`` if it does not exist and ``RuntimeError``
    (with the captured stderr) if the daemon exits or does not announce its
    port in time.

``HeraldProcess``
    ``.host``, ``.port``        where the daemon listens
    ``.proc``                   the ``subprocess.Popen`` object
    ``.stop(timeout=10.0)``     SIGTERM, wait; SIGKILL if still alive after
                                ``timeout``.  Returns the exit code (negative
                                = killed by that signal; ``None`` never).
                                Idempotent.
    ``.stderr_text()``          everything the daemon wrote to stderr so far
                                (still available after stop(); the temp
                                file is deleted by stop() unless
                                $HERALD_KEEP_LOGS is set)
    Usable as a context manager (``with start_heraldd() as h: ...``), which
    calls ``stop()`` on exit.

Typical pytest use::

    @pytest.fixture(scope="module")
    def herald():
        h = start_heraldd()
        yield h
        h.stop()
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["REPO_ROOT", "HeraldProcess", "find_binary", "start_heraldd"]

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_ENV = {
    "HERALD_JWT_SECRET": "x" * 40,
    "HERALD_API_KEY": "test-api-key-0123456789",
}

_LISTEN_RE = re.compile(r"listening on (\[[^\]]*\]|[^\s:]+):(\d+)")


def find_binary() -> Path:
    """Path of the heraldd binary ($HERALD_BIN or <repo>/build/bin/heraldd)."""
    override = os.environ.get("HERALD_BIN")
    return Path(override) if override else REPO_ROOT / "build" / "bin" / "heraldd"


class HeraldProcess:
    """A running heraldd (see module docstring)."""

    def __init__(self, proc: subprocess.Popen, stderr_path: str, host: str, port: int):
        self.proc = proc
        self.host = host
        self.port = port
        self.stderr_path = stderr_path
        self.returncode = None
        self._final_stderr = None

    def stderr_text(self) -> str:
        if self._final_stderr is not None:
            return self._final_stderr
        try:
            with open(self.stderr_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0):
        """SIGTERM and wait up to ``timeout`` s (then SIGKILL). Returns exit code."""
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.returncode = self.proc.returncode
        self._final_stderr = self.stderr_text()
        if not os.environ.get("HERALD_KEEP_LOGS"):
            try:
                os.unlink(self.stderr_path)
            except OSError:
                pass
        return self.returncode

    def stop_ok(self, timeout: float = 10.0, tail: int = 4000):
        """stop(), then assert a clean exit, showing the end of the log if not."""
        rc = self.stop(timeout)
        assert rc == 0, f"heraldd exited {rc}\n{self.stderr_text()[-tail:]}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def __repr__(self):
        return f"<HeraldProcess pid={self.proc.pid} {self.host}:{self.port}>"


def start_heraldd(*extra_args, env=None, workers=2, echo_path="/echo",
                  listen="127.0.0.1:0", timeout=10.0) -> HeraldProcess:
    """Start heraldd and wait for its ``listening on`` line (see module docstring)."""
    binary = find_binary()
    if not binary.exists():
        raise FileNotFoundError(
            f"heraldd binary not found at {binary} (build it or set HERALD_BIN)")

    full_env = dict(os.environ)
    for k, v in DEFAULT_ENV.items():
        full_env.setdefault(k, v)
    if env:
        full_env.update(env)

    argv = [str(binary), "--listen", listen, "--workers", str(workers)]
    if echo_path is not None:
        argv += ["--echo-path", echo_path]
    argv += [str(a) for a in extra_args]

    fd, stderr_path = tempfile.mkstemp(prefix="heraldd-", suffix=".stderr")
    with os.fdopen(fd, "wb") as errf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=errf,
                                env=full_env, cwd=str(REPO_ROOT))

    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        with open(stderr_path, "r", errors="replace") as f:
            text = f.read()
        m = _LISTEN_RE.search(text)
        if m:
            host = m.group(1).strip("[]")
            return HeraldProcess(proc, stderr_path, host, int(m.group(2)))
        if proc.poll() is not None:
            os.unlink(stderr_path)
            raise RuntimeError(
                f"heraldd exited with {proc.returncode} before listening\n"
                f"argv: {argv}\nstderr:\n{text}")
        time.sleep(0.02)

    proc.kill()
    proc.wait(timeout=5)
    os.unlink(stderr_path)
    raise RuntimeError(
        f"heraldd did not print 'listening on HOST:PORT' within {timeout}s\n"
        f"argv: {argv}\nstderr:\n{text}")
