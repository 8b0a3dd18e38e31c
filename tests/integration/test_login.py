"""POST /auth/login, the embedded identity provider (PROTOCOL.md §8, issue 5).

Run with ``/usr/bin/python3 -m pytest -q tests/integration/test_login.py``.

Covered: a successful login returns {"token","user_id","expires_at"}; the token
is an HS256 JWT for the user that /ws accepts (welcome.user_id == username) and
expires_at is now + --token-ttl; a wrong password and an unknown user get the
same 401 invalid_credentials answer after similar work (argon2id both ways);
malformed bodies 400; other methods 405; without --users 404 login_disabled;
rate limits: 5 failures a minute per username (the 6th attempt, even with the
right password, is 429 with Retry-After in 1..60 s, from any address), 20 a
minute per client address (other names 401 until then, then 429; another
address is unaffected), and concurrent attempts do not slip past the limit;
``herald user add`` / ``del`` on a running server take effect without restart.

Every failed login counts against the per-address budget (20/min for
127.0.0.1), so each test that fails logins gets its own server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_proc import find_binary, start_heraldd  # noqa: E402
from herald_client import (Reply, assert_error_body, jwt_secret, recv_welcome, run,  # noqa: E402
                           ws_connect)

HERALD_CLI = find_binary().parent / "herald"

PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-2", "u1": "p-u1", "u2": "p-u2",
             "u3": "p-u3", "u4": "p-u4"}


def cli(*args, stdin=""):
    return subprocess.run([str(HERALD_CLI), *map(str, args)], input=stdin.encode(),
                          capture_output=True, timeout=30)


def add_user(path, name, password):
    r = cli("user", "add", "--users", path, name, stdin=password + "\n")
    assert r.returncode == 0, f"herald user add {name} failed: {r.stderr!r}"


@pytest.fixture(scope="module")
def users_path(tmp_path_factory):
    """A users file with PASSWORDS (made once; tests that edit it copy it)."""
    p = tmp_path_factory.mktemp("users") / "users.json"
    for name, pw in PASSWORDS.items():
        add_user(p, name, pw)
    return p


def start(users, *extra):
    args = ["--users", users] if users else []
    return start_heraldd(*args, *extra, echo_path=None)


@pytest.fixture()
def herald(users_path):
    """A fresh server per test: its own failure budgets."""
    h = start(users_path)
    yield h
    h.stop_ok()


def request(h, method="POST", path="/auth/login", body=None, source=None, timeout=15.0,
            headers=None) -> Reply:
    """One request on its own connection (from ``source`` address if given)."""
    conn = http.client.HTTPConnection(h.host, h.port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        hdrs = dict(headers or {})
        if body is not None:
            if not isinstance(body, (str, bytes)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read().decode("utf-8", "replace")
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def login(h, user, password, **kw) -> Reply:
    return request(h, body={"username": user, "password": password}, **kw)


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def assert_retry_after(r: Reply):
    assert_error_body(r, 429)
    ra = r.headers.get("retry-after")
    assert ra is not None, f"429 without Retry-After: {r.headers}"
    assert ra.strip().isdigit(), f"Retry-After is not integer seconds: {ra!r}"
    assert 0 < int(ra) <= 60, f"Retry-After {ra} out of 1..60"


def second_loopback_ok() -> bool:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------- success

def test_login_success_token_works_on_ws(users_path):
    ttl = 321
    h = start(users_path, "--token-ttl", ttl)
    try:
        t0 = time.time()
        r = login(h, "alice", PASSWORDS["alice"])
        t1 = time.time()
        assert r.status == 200, r
        assert r.headers.get("content-type", "").startswith("application/json"), r.headers
        j = r.json
        assert isinstance(j, dict) and set(j) >= {"token", "user_id", "expires_at"}, r.body
        assert j["user_id"] == "alice"
        assert isinstance(j["expires_at"], int) and not isinstance(j["expires_at"], bool)
        assert int(t0) + ttl - 2 <= j["expires_at"] <= int(t1) + ttl + 2, \
            f"expires_at {j['expires_at']} is not now + {ttl} ({t0:.0f}..{t1:.0f})"

        # An HS256 JWT signed with the configured secret, for alice, exp == expires_at.
        token = j["token"]
        parts = token.split(".")
        assert len(parts) == 3, token
        header, claims = json.loads(b64d(parts[0])), json.loads(b64d(parts[1]))
        assert header.get("alg") == "HS256", header
        want = hmac.new(jwt_secret(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        assert hmac.compare_digest(b64d(parts[2]), want), "token not signed with the JWT secret"
        assert claims.get("sub") == "alice", claims
        assert claims.get("exp") == j["expires_at"], claims

        async def go():
            for via in ("header", "query", "message"):
                ws = await ws_connect(h, token, via=via)
                try:
                    w = await recv_welcome(ws, "alice")
                    assert w["user_id"] == "alice"
                finally:
                    await ws.close()
        run(go(), timeout=30)

        # A second user gets its own identity.
        r2 = login(h, "bob", PASSWORDS["bob"])
        assert r2.status == 200 and r2.json["user_id"] == "bob", r2
        assert r2.json["token"] != token

        async def go_bob():
            ws = await ws_connect(h, r2.json["token"])
            try:
                await recv_welcome(ws, "bob")
            finally:
                await ws.close()
        run(go_bob(), timeout=15)
    finally:
        assert h.stop() == 0, h.stderr_text()


def test_default_ttl_is_one_hour(herald):
    t0 = time.time()
    r = login(herald, "bob", PASSWORDS["bob"])
    assert r.status == 200, r
    assert abs(r.json["expires_at"] - (t0 + 3600)) <= 5, r.json


def test_password_not_logged(users_path):
    h = start(users_path)
    try:
        assert login(h, "alice", PASSWORDS["alice"]).status == 200
        assert login(h, "alice", "wrong-secret-xyz").status == 401
    finally:
        h.stop()
    text = h.stderr_text()
    assert PASSWORDS["alice"] not in text and "wrong-secret-xyz" not in text


# ---------------------------------------------------------------------------- failures

def test_wrong_password_401(herald):
    r = login(herald, "alice", "not-her-password")
    err = assert_error_body(r, 401, "invalid_credentials")
    assert "token" not in r.body
    assert err["message"]
    # Case matters for the password; a prefix is not enough.
    assert login(herald, "alice", PASSWORDS["alice"].upper()).status == 401
    assert login(herald, "alice", PASSWORDS["alice"][:-1]).status == 401
    assert login(herald, "alice", PASSWORDS["alice"] + " ").status == 401
    assert login(herald, "alice", "").status == 401


def test_unknown_user_answers_like_wrong_password(herald):
    wrong = login(herald, "alice", "nope-nope")
    for user in ("mallory", "Alice", "no such user", "x" * 200):
        unknown = login(herald, user, "nope-nope")
        assert unknown.status == wrong.status == 401, (unknown, wrong)
        assert unknown.body == wrong.body, f"bodies differ: {unknown.body!r} vs {wrong.body!r}"
        assert unknown.headers.get("content-type") == wrong.headers.get("content-type")
        assert "retry-after" not in unknown.headers


def test_unknown_user_takes_similar_time(herald):
    """Both failures pay one argon2id verification: compare medians, generously."""
    def timed(user, pw):
        t = time.perf_counter()
        r = login(herald, user, pw)
        dt = time.perf_counter() - t
        return r, dt

    # Warm up (the first request pays connection and page-in costs).
    assert timed("alice", PASSWORDS["alice"])[0].status == 200
    ok_times, wrong_times, unknown_times = [], [], []
    # 6 wrong passwords on 6 different users (per-user limit 5) and 7 unknown
    # names: 13 failures, under the per-address 20.
    for i, user in enumerate(("u1", "u2", "u3", "u4", "bob", "alice")):
        r, dt = timed(user, "wrong-password")
        assert r.status == 401, r
        wrong_times.append(dt)
        r, dt = timed(f"ghost{i}", "wrong-password")
        assert r.status == 401, r
        unknown_times.append(dt)
        r, dt = timed("alice", PASSWORDS["alice"])
        assert r.status == 200, r
        ok_times.append(dt)
    r, dt = timed("ghost-last", "wrong-password")
    assert r.status == 401
    unknown_times.append(dt)

    ok, wrong, unknown = (statistics.median(x) for x in (ok_times, wrong_times, unknown_times))
    msg = f"median ok {ok*1e3:.1f} ms, wrong password {wrong*1e3:.1f} ms, unknown {unknown*1e3:.1f} ms"
    # Both failures cost at least a real hash check (a success does one)...
    assert wrong >= 0.3 * ok and unknown >= 0.3 * ok, msg
    assert unknown >= 0.005 and wrong >= 0.005, msg  # argon2id is never sub-5 ms
    # ...and they are within 3x of each other.
    ratio = max(wrong, unknown) / min(wrong, unknown)
    assert ratio <= 3.0, msg


@pytest.mark.parametrize("body", [
    "", "not json", "[]", "null", '"alice"',
    {"username": "alice"},
    {"password": "x"},
    {"username": 1, "password": "x"},
    {"username": "alice", "password": 5},
    {"username": "alice", "password": None},
    {"username": None, "password": "x"},
    {"username": "alice", "password": "x" * 5000},
    '{"username":"alice","password":"a","password":"b"}',
])
def test_malformed_body_400(users_path, body):
    h = start(users_path)
    try:
        r = request(h, body=body)
        assert_error_body(r, 400)
        # A malformed request is not a failed login: alice is not penalised.
        assert login(h, "alice", PASSWORDS["alice"]).status == 200
    finally:
        h.stop()


def test_malformed_requests_do_not_count_as_failures(herald):
    for _ in range(25):
        assert request(herald, body={"username": "alice"}).status == 400
    assert login(herald, "alice", PASSWORDS["alice"]).status == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_405(herald, method):
    r = request(herald, method=method,
                body=None if method == "GET" else {"username": "alice", "password": "x"})
    assert_error_body(r, 405)


def test_no_users_file_login_disabled():
    h = start(None)
    try:
        r = login(h, "alice", "whatever")
        assert_error_body(r, 404, "login_disabled")
        assert "token" not in r.body
        assert_error_body(request(h, method="GET"), 405)
    finally:
        assert h.stop() == 0


# ---------------------------------------------------------------------------- rate limits

def test_per_username_limit(herald):
    for i in range(5):
        r = login(herald, "alice", f"guess-{i}")
        assert_error_body(r, 401, "invalid_credentials")
    # The 6th attempt is refused without a check, even with the right password.
    r = login(herald, "alice", PASSWORDS["alice"])
    assert_retry_after(r)
    assert "token" not in r.body
    r = login(herald, "alice", "guess-6")
    assert_retry_after(r)
    # The limit is per username: bob still logs in from the same address.
    r = login(herald, "bob", PASSWORDS["bob"])
    assert r.status == 200, r
    # ...and it holds whatever the address (a distributed guess is still limited).
    if second_loopback_ok():
        r = login(herald, "alice", PASSWORDS["alice"], source="127.0.0.2")
        assert_retry_after(r)


def test_unknown_username_is_limited_too(herald):
    for i in range(5):
        assert login(herald, "ghost", f"g{i}").status == 401
    r = login(herald, "ghost", "g5")
    assert_retry_after(r)


def test_per_address_limit(herald):
    # 5 failures for alice: alice is blocked, the address has used 5 of 20.
    for i in range(5):
        assert login(herald, "alice", f"a{i}").status == 401
    assert_retry_after(login(herald, "alice", PASSWORDS["alice"]))
    # Other names from the same address: 401 until the address's 20th failure.
    for i in range(15):
        r = login(herald, f"other{i}", "x")
        assert r.status == 401, f"failure #{6 + i} from the address: {r!r}"
    # The address is now blocked: any name, even bob with his right password.
    r = login(herald, "other-next", "x")
    assert_retry_after(r)
    r = login(herald, "bob", PASSWORDS["bob"])
    assert_retry_after(r)
    # Another client address is unaffected.
    if second_loopback_ok():
        r = login(herald, "bob", PASSWORDS["bob"], source="127.0.0.2")
        assert r.status == 200, r
        r = login(herald, "fresh-name", "x", source="127.0.0.2")
        assert r.status == 401, r


def test_concurrent_guesses_do_not_exceed_the_limit(herald):
    """12 wrong passwords for one name sent at once: still at most 5 are checked."""
    n = 12
    barrier = threading.Barrier(n)
    results = [None] * n

    def attempt(i):
        conn = http.client.HTTPConnection(herald.host, herald.port, timeout=20)
        try:
            conn.connect()
            body = json.dumps({"username": "alice", "password": f"parallel-{i}"})
            barrier.wait(timeout=10)
            conn.request("POST", "/auth/login", body=body,
                         headers={"Content-Type": "application/json"})
            results[i] = conn.getresponse().status
        except Exception as e:  # noqa: BLE001
            results[i] = repr(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(r in (401, 429) for r in results), results
    checked = results.count(401)
    assert checked <= 5, (f"{checked} password guesses for one user were checked in one "
                          f"window (limit 5): {results}")
    assert_retry_after(login(herald, "alice", PASSWORDS["alice"]))


# ---------------------------------------------------------------------------- live edits

def test_user_add_and_del_while_running(tmp_path, users_path):
    path = tmp_path / "live.json"
    path.write_bytes(users_path.read_bytes())
    os.chmod(path, 0o600)
    h = start(path)
    try:
        assert login(h, "alice", PASSWORDS["alice"]).status == 200
        assert login(h, "dave", "dave-pass").status == 401

        add_user(path, "dave", "dave-pass")
        r = login(h, "dave", "dave-pass")
        assert r.status == 200, f"a user added while running cannot log in: {r!r}"
        assert r.json["user_id"] == "dave"

        # A changed password takes effect too (same file size: the hash lengths match).
        add_user(path, "dave", "dave-pass-2")
        assert login(h, "dave", "dave-pass-2").status == 200
        assert login(h, "dave", "dave-pass").status == 401

        r = cli("user", "del", "--users", path, "dave")
        assert r.returncode == 0, r.stderr
        r = login(h, "dave", "dave-pass-2")
        assert_error_body(r, 401, "invalid_credentials")
        # The others are untouched.
        assert login(h, "alice", PASSWORDS["alice"]).status == 200
    finally:
        assert h.stop() == 0, h.stderr_text()


def test_bad_users_file_edit_keeps_the_old_users(tmp_path, users_path):
    path = tmp_path / "live.json"
    path.write_bytes(users_path.read_bytes())
    h = start(path)
    try:
        assert login(h, "alice", PASSWORDS["alice"]).status == 200
        path.write_text("{ this is not json")
        r = login(h, "alice", PASSWORDS["alice"])
        assert r.status == 200, f"a broken users file dropped the loaded users: {r!r}"
    finally:
        assert h.stop() == 0, h.stderr_text()
