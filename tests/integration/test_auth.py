"""Authentication and Origin checks on GET /ws (PROTOCOL.md sections 1, 2, 6).

Run with ``/usr/bin/python3 -m pytest -q tests/integration/test_auth.py``.

Covered: an HS256 token via the Authorization header, the access_token query
parameter and the first-message auth, each answered with welcome first; the
header winning over the query parameter; every refused token at the handshake
(alg none, HS384/RS256 when HS256 is pinned, a bad signature, expired, no exp,
nbf in the future, wrong aud/iss, malformed, empty sub) answered with 401 and a
JSON error body and no upgrade; exp/nbf within the leeway accepted; first-
message auth failures (4001, expired 4002), the auth timeout, a non-auth first
message; a token expiring while connected (4002); Origin rules (default and
--allowed-origins); start-up refused without a 32-byte secret; the herald.v1
subprotocol; a client-sent user_id never changing the identity; RS256 and
ES256 with a public key (when openssl is available).
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
from herald_proc import find_binary, start_heraldd  # noqa: E402
from herald_client import (SUBPROTO, Api, Keypair, assert_error_body, b64url,  # noqa: E402
                           expect_close, have_openssl, in_thread, jwt_secret, mint,
                           mint_asym, no_message, raw_handshake, recv_json, recv_welcome,
                           run, ws_connect)

AUD = "herald-tests"
ISS = "https://issuer.example"


@pytest.fixture(scope="module")
def herald():
    h = start_heraldd()
    yield h
    h.stop_ok()


@pytest.fixture(scope="module")
def herald_audiss():
    h = start_heraldd("--jwt-audience", AUD, "--jwt-issuer", ISS)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def herald_short():
    """Short auth timeout and no leeway."""
    h = start_heraldd("--auth-timeout", "2", "--jwt-leeway", "0")
    yield h
    h.stop()


@pytest.fixture(scope="module")
def herald_origins():
    h = start_heraldd("--allowed-origins", "https://app.example.com")
    yield h
    h.stop()


def check_welcome(w, user):
    assert w.get("type") == "welcome", w
    assert w.get("user_id") == user, w
    assert isinstance(w.get("connection_id"), str) and w["connection_id"], w
    assert isinstance(w.get("seq"), int) and w["seq"] >= 0, w
    assert isinstance(w.get("epoch"), str) and w["epoch"], w
    assert w.get("heartbeat_s") == 25, w


# --------------------------------------------------------------------------- valid tokens

@pytest.mark.parametrize("via", ["header", "query", "message"])
def test_valid_token_welcome(herald, via):
    user = f"auth-ok-{via}"

    async def go():
        ws = await ws_connect(herald, mint(user), via=via)
        try:
            w = await recv_json(ws)
            check_welcome(w, user)
            assert w["seq"] == 0, f"a new user starts at seq 0: {w}"
        finally:
            await ws.close()
    run(go())


def test_welcome_then_event_for_sub(herald):
    user = "auth-events"
    api = Api(herald)

    async def go():
        ws = await ws_connect(herald, mint(user), via="query")
        await recv_welcome(ws, user)
        r = await in_thread(api.publish, user, data={"text": "x"})
        assert r.status == 200, r
        ev = await recv_json(ws)
        assert ev["type"] == "agent_thinking" and ev["seq"] == r.json["seq"], ev
        await ws.close()
    run(go())
    api.close()


def test_header_wins_over_query(herald):
    """Both presented: the Authorization header's token is used."""
    async def go():
        ws = await ws_connect(herald, mint("hdr-user"), via="header",
                              query={"access_token": mint("query-user")})
        w = await recv_welcome(ws, "hdr-user")
        check_welcome(w, "hdr-user")
        await ws.close()
    run(go())


def test_header_wins_over_query_bad_header(herald):
    """First match wins: a bad header token is refused even with a good query token."""
    bad = mint("hdr-user", key=b"y" * 40)
    r = raw_handshake(herald, "/ws?access_token=" + mint("query-user"),
                      {"Authorization": f"Bearer {bad}"})
    assert_error_body(r, 401)
    assert "sec-websocket-accept" not in r.headers


def test_valid_handshake_is_101_with_subprotocol(herald):
    r = raw_handshake(herald, headers={"Authorization": f"Bearer {mint('raw-ok')}",
                                       "Sec-WebSocket-Protocol": "chat, herald.v1"})
    assert r.status == 101, r
    assert r.headers.get("sec-websocket-protocol") == SUBPROTO, r.headers


def test_subprotocol_selected(herald):
    async def go():
        ws = await ws_connect(herald, mint("sp"), subprotocols=("other", SUBPROTO))
        assert ws.subprotocol == SUBPROTO
        await recv_welcome(ws, "sp")
        await ws.close()
        ws = await ws_connect(herald, mint("sp"), subprotocols=None)
        assert ws.subprotocol is None
        await recv_welcome(ws, "sp")
        await ws.close()
    run(go())


# --------------------------------------------------------------------------- refused tokens

def _now():
    return int(time.time())


def bad_tokens():
    now = _now()
    return {
        "alg_none": mint("u", alg="none"),
        "alg_none_caps": mint("u", alg="None", signature=b""),
        "alg_hs384": mint("u", alg="HS384"),
        "alg_rs256": mint("u", alg="RS256"),
        "alg_missing": mint("u", header={"alg": None}),
        "bad_signature": mint("u", key=b"z" * 40),
        "truncated_signature": mint("u", signature=b"\x00" * 16),
        "empty_signature": mint("u", signature=b""),
        "expired": mint("u", exp=now - 3600),
        "expired_beyond_leeway": mint("u", exp=now - 90),
        "missing_exp": mint("u", omit=("exp",)),
        "exp_string": mint("u", exp=str(now + 3600)),
        "nbf_future": mint("u", nbf=now + 3600),
        "nbf_future_90s": mint("u", nbf=now + 90),
        "empty_sub": mint(""),
        "missing_sub": mint("u", omit=("sub",)),
        "sub_not_string": mint(12345),
        "sub_too_long": mint("s" * 129),
        "malformed_two_parts": "abc.def",
        "malformed_garbage": "not-a-jwt",
        "malformed_bad_json": b64url(b"{not json") + "." + b64url(b"{}") + ".sig",
        "malformed_payload_array": _signed_raw({"alg": "HS256"}, b"[1,2]"),
        "tampered_payload": _tamper(mint("u")),
    }


def _signed_raw(header, payload: bytes):
    import hashlib
    import hmac
    si = (b64url(json.dumps(header).encode()) + "." + b64url(payload)).encode()
    return si.decode() + "." + b64url(hmac.new(jwt_secret(), si, hashlib.sha256).digest())


def _tamper(tok):
    h, p, s = tok.split(".")
    claims = json.loads(__import__("base64").urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["sub"] = "mallory"
    return h + "." + b64url(json.dumps(claims).encode()) + "." + s


BAD_NAMES = sorted(bad_tokens().keys())


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("via", ["header", "query"])
def test_bad_token_refused_at_handshake(herald, name, via):
    tok = bad_tokens()[name]
    if via == "header":
        r = raw_handshake(herald, headers={"Authorization": f"Bearer {tok}"})
    else:
        from urllib.parse import quote
        r = raw_handshake(herald, "/ws?access_token=" + quote(tok, safe=""))
    assert r.status == 401, f"{name} via {via}: expected 401, got {r!r}"
    assert_error_body(r, 401)
    assert "sec-websocket-accept" not in r.headers, r.headers
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers


@pytest.mark.parametrize("claims,ok", [
    ({}, False),
    ({"aud": AUD}, False),
    ({"iss": ISS}, False),
    ({"aud": "other", "iss": ISS}, False),
    ({"aud": AUD, "iss": "https://evil.example"}, False),
    ({"aud": [AUD + "x"], "iss": ISS}, False),
    ({"aud": AUD, "iss": ISS}, True),
    ({"aud": ["other", AUD], "iss": ISS}, True),
])
def test_audience_issuer(herald_audiss, claims, ok):
    r = raw_handshake(herald_audiss, headers={"Authorization": f"Bearer {mint('ai', **claims)}"})
    if ok:
        assert r.status == 101, (claims, r)
    else:
        assert_error_body(r, 401)


def test_exp_within_leeway_accepted(herald):
    """Default leeway 30 s: exp 10 s ago and nbf 10 s ahead are accepted."""
    now = _now()
    for tok in (mint("lw", exp=now - 10), mint("lw", nbf=now + 10)):
        r = raw_handshake(herald, headers={"Authorization": f"Bearer {tok}"})
        assert r.status == 101, r


def test_exp_within_leeway_not_closed_at_once(herald):
    """A token accepted within the leeway is not then closed 4002 by the once-a-second
    expiry check: the connection's expiry is exp + leeway, like the handshake's."""
    async def go():
        ws = await ws_connect(herald, mint("lw-open", exp=_now() - 10))
        await recv_welcome(ws, "lw-open")
        try:
            await no_message(ws, 2.5)
        except Exception as e:  # ConnectionClosed
            raise AssertionError(f"accepted token (exp 10 s ago, leeway 30 s) closed: "
                                 f"{ws.close_code} {ws.close_reason!r}") from e
        await ws.close()
    run(go())


def test_expiry_check_uses_leeway():
    """--jwt-leeway 2, exp = now+1: still open at now+2, closed 4002 by about now+4."""
    with start_heraldd("--jwt-leeway", "2") as h:
        async def go():
            t0 = time.time()
            ws = await ws_connect(h, mint("lw2", exp=int(t0) + 1))
            await recv_welcome(ws, "lw2")
            code, _ = await expect_close(ws, 10)
            return code, time.time() - int(t0)
        code, when = run(go(), 20)
        assert code == 4002, code
        assert when >= 2.5, f"closed at exp+{when - 1:.1f}s, within the 2 s leeway"
        assert when <= 6.0, when


def test_nbf_past_accepted(herald):
    r = raw_handshake(herald, headers={"Authorization": f"Bearer {mint('nbf', nbf=_now() - 5)}"})
    assert r.status == 101, r


def test_no_leeway_server_refuses_just_expired(herald_short):
    tok = mint("lw0", exp=_now() - 2)
    r = raw_handshake(herald_short, headers={"Authorization": f"Bearer {tok}"})
    assert_error_body(r, 401)


def test_refused_handshake_counted(herald):
    api = Api(herald)
    before = api.metrics()["herald_auth_failures_total"]
    raw_handshake(herald, headers={"Authorization": f"Bearer {mint('u', alg='none')}"})
    after = api.metrics()["herald_auth_failures_total"]
    assert after >= before + 1
    api.close()


# --------------------------------------------------------------------------- first-message auth

def _first_msg_close(h, msg, timeout=5.0):
    async def go():
        ws = await ws_connect(h)
        await ws.send(msg if isinstance(msg, str) else json.dumps(msg))
        return await expect_close(ws, timeout)
    return run(go())


def test_first_message_bad_token_4001(herald):
    for tok in (mint("u", alg="none"), mint("u", key=b"q" * 40), "garbage", mint(""),
                mint("u", omit=("exp",))):
        code, _ = _first_msg_close(herald, {"type": "auth", "token": tok})
        assert code == 4001, (tok, code)


def test_first_message_expired_4002(herald):
    code, _ = _first_msg_close(herald, {"type": "auth", "token": mint("u", exp=_now() - 3600)})
    assert code == 4002, code


def test_first_message_token_not_string_4001(herald):
    code, _ = _first_msg_close(herald, {"type": "auth", "token": 42})
    assert code == 4001, code


@pytest.mark.parametrize("msg", [
    {"type": "user_message", "id": "1", "thread_id": "t", "text": "hi"},
    {"type": "runs"},
    {"token": "x"},
    "not json",
    "[1,2]",
])
def test_non_auth_first_message_4001(herald, msg):
    code, _ = _first_msg_close(herald, msg)
    assert code == 4001, (msg, code)


def test_auth_timeout_4001(herald_short):
    async def go():
        ws = await ws_connect(herald_short)
        t0 = time.monotonic()
        code, _ = await expect_close(ws, 8.0)
        return code, time.monotonic() - t0
    code, elapsed = run(go())
    assert code == 4001, code
    assert 1.0 <= elapsed <= 5.0, f"closed after {elapsed:.1f}s with --auth-timeout 2"


def test_auth_message_in_time_not_closed(herald_short):
    async def go():
        ws = await ws_connect(herald_short)
        await asyncio.sleep(1.0)
        await ws.send(json.dumps({"type": "auth", "token": mint("late-ok")}))
        await recv_welcome(ws, "late-ok")
        await no_message(ws, 2.0)  # past the 2 s auth timeout: still open
        await ws.ping()
        await ws.close()
    run(go())


def test_token_expires_while_connected_4002(herald_short):
    async def go():
        ws = await ws_connect(herald_short, mint("shortlived", exp=_now() + 3))
        await recv_welcome(ws, "shortlived")
        t0 = time.monotonic()
        code, _ = await expect_close(ws, 10.0)
        return code, time.monotonic() - t0
    code, elapsed = run(go(), 20)
    assert code == 4002, code
    assert 1.5 <= elapsed <= 6.0, f"closed {elapsed:.1f}s after connecting (exp = now+3)"


def test_first_message_auth_expires_while_connected_4002(herald_short):
    async def go():
        ws = await ws_connect(herald_short, mint("shortlived2", exp=_now() + 3), via="message")
        await recv_welcome(ws, "shortlived2")
        code, _ = await expect_close(ws, 10.0)
        return code
    assert run(go(), 20) == 4002


# --------------------------------------------------------------------------- origin

def _origin(h, origin, host=None):
    hdrs = {"Authorization": f"Bearer {mint('origin-user')}"}
    if origin is not None:
        hdrs["Origin"] = origin
    return raw_handshake(h, headers=hdrs, host=host)


def test_origin_absent_allowed(herald):
    assert _origin(herald, None).status == 101


def test_origin_same_host_allowed(herald):
    hp = f"{herald.host}:{herald.port}"
    assert _origin(herald, f"http://{hp}").status == 101
    assert _origin(herald, f"https://{hp}").status == 101


@pytest.mark.parametrize("origin", [
    "http://127.0.0.1:{port}.evil.com",
    "http://evil.com",
    "null",
    "http://127.0.0.1",
    "http://127.0.0.1:1",
    "http://localhost:{port}",
    "http://127.0.0.1:{port}/",
    "127.0.0.1:{port}",
])
def test_origin_refused_403(herald, origin):
    r = _origin(herald, origin.format(port=herald.port))
    assert_error_body(r, 403)
    assert "sec-websocket-accept" not in r.headers


def test_origin_checked_before_token(herald):
    """A bad Origin is refused even when no token is presented (no upgrade at all)."""
    r = raw_handshake(herald, headers={"Origin": "http://evil.com"})
    assert_error_body(r, 403)


def test_allowed_origins_list(herald_origins):
    h = herald_origins
    assert _origin(h, "https://app.example.com").status == 101
    assert _origin(h, None).status == 101
    for bad in ("https://app.example.com.evil.com", "http://app.example.com",
                f"http://{h.host}:{h.port}", "null", "https://evil.com",
                "https://app.example.co"):
        r = _origin(h, bad)
        assert_error_body(r, 403)


# --------------------------------------------------------------------------- start-up

def _start_fails(env):
    full = dict(os.environ)
    full.pop("HERALD_JWT_SECRET", None)
    full.update(env)
    full = {k: v for k, v in full.items() if v is not None}
    p = subprocess.run([str(find_binary()), "--listen", "127.0.0.1:0", "--workers", "1"],
                       env=full, capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    return p


@pytest.mark.parametrize("secret", [None, "", "x" * 31, "short"])
def test_refuses_to_start_without_strong_secret(secret):
    env = {"HERALD_API_KEY": "k" * 20}
    if secret is not None:
        env["HERALD_JWT_SECRET"] = secret
    try:
        p = _start_fails(env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"heraldd kept running with HERALD_JWT_SECRET={secret!r}")
    assert p.returncode != 0, p
    assert p.stderr.strip(), "no message on stderr"


def test_starts_with_32_byte_secret():
    secret = "s" * 32
    with start_heraldd(env={"HERALD_JWT_SECRET": secret}) as h:
        tok = mint("s32", key=secret.encode())
        assert raw_handshake(h, headers={"Authorization": f"Bearer {tok}"}).status == 101
        # A token signed with another secret is refused.
        assert raw_handshake(h, headers={"Authorization": f"Bearer {mint('s32')}"}).status == 401


# --------------------------------------------------------------------------- identity

def test_user_id_in_messages_ignored(herald):
    api = Api(herald)

    async def go():
        ws = await ws_connect(herald, mint("ident-a"))
        victim = await ws_connect(herald, mint("ident-b"))
        await recv_welcome(ws, "ident-a")
        await recv_welcome(victim, "ident-b")
        for m in ({"type": "user_message", "id": "1", "thread_id": "t1", "text": "hi",
                   "user_id": "ident-b"},
                  {"type": "runs", "user_id": "ident-b"},
                  {"type": "auth", "token": mint("ident-b"), "user_id": "ident-b"},
                  {"type": "history", "since_seq": 0, "user_id": "ident-b"}):
            await ws.send(json.dumps(m))
        # Drain replies (acks/errors/agent events), all for ident-a's session.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                msg = await recv_json(ws, max(0.05, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            assert msg.get("type") != "welcome", msg
            assert msg.get("user_id") in (None, "ident-a"), msg
        assert await in_thread(api.presence, "ident-a") == 1
        assert await in_thread(api.presence, "ident-b") == 1
        # Events for b go to b only; events for a reach the connection.
        rb = await in_thread(api.publish, "ident-b", data={"text": "for b"})
        ra = await in_thread(api.publish, "ident-a", data={"text": "for a"})
        assert rb.json["delivered"] == 1 and ra.json["delivered"] == 1, (ra, rb)
        while True:
            ev = await recv_json(ws)
            if ev.get("type") == "agent_thinking":
                break
        assert ev["data"] == {"text": "for a"}, ev
        evb = None
        while evb is None or evb.get("type") != "agent_thinking":
            evb = await recv_json(victim)
        assert evb["data"] == {"text": "for b"}, evb
        await ws.close()
        await victim.close()
    run(go())
    api.close()


def test_auth_message_user_id_ignored(herald):
    """First-message auth with a user_id field: the identity is still the sub."""
    async def go():
        ws = await ws_connect(herald)
        await ws.send(json.dumps({"type": "auth", "token": mint("real-sub"), "user_id": "x"}))
        await recv_welcome(ws, "real-sub")
        await ws.close()
    run(go())


# --------------------------------------------------------------------------- RS256 / ES256

@pytest.mark.skipif(not have_openssl(), reason="needs the openssl CLI")
@pytest.mark.parametrize("kind,alg", [("rsa", "RS256"), ("ec", "ES256")])
def test_asymmetric_algorithms(kind, alg):
    kp = Keypair(kind)
    other = Keypair(kind)
    try:
        with start_heraldd("--jwt-alg", alg, "--jwt-public-key", kp.public_pem_path) as h:
            ok = mint_asym(kp, "asym-user")
            r = raw_handshake(h, headers={"Authorization": f"Bearer {ok}"})
            assert r.status == 101, r

            async def go():
                ws = await ws_connect(h, ok, via="message")
                await recv_welcome(ws, "asym-user")
                await ws.close()
            run(go())
            refused = {
                "other key": mint_asym(other, "asym-user"),
                "HS256 with the secret": mint("asym-user"),
                "expired": mint_asym(kp, "asym-user", exp=_now() - 3600),
                "alg none": mint("asym-user", alg="none"),
                "wrong alg label": mint_asym(kp, "asym-user",
                                             alg="ES256" if alg == "RS256" else "RS256"),
            }
            for name, tok in refused.items():
                r = raw_handshake(h, headers={"Authorization": f"Bearer {tok}"})
                assert r.status == 401, (name, r)
                assert_error_body(r, 401)
    finally:
        kp.cleanup()
        other.cleanup()
