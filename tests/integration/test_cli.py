"""The ``herald`` command-line tool: users file edits and version (issue 5, PROTOCOL.md §10).

Run with ``/usr/bin/python3 -m pytest -q tests/integration/test_cli.py``.

Covered: ``herald user add/list/del`` round trip; the users file is mode 0600,
holds argon2id hashes and never the password; changing a password replaces the
hash; bad names (empty, spaces, 65 characters, odd characters) are refused with
a non-zero exit and a message, without touching the file; add with an empty
stdin or an empty first line fails; del of a missing user fails;
``herald version`` prints the version; unknown commands and a missing --users
are usage errors.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_proc import find_binary  # noqa: E402

HERALD = find_binary().parent / "herald"


def herald(*args, stdin: str | bytes | None = "", timeout=30.0):
    if not HERALD.exists():
        pytest.fail(f"herald CLI not found at {HERALD}")
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run([str(HERALD), *map(str, args)], input=data, capture_output=True,
                          timeout=timeout)


def out(r) -> str:
    return r.stdout.decode(errors="replace")


def err(r) -> str:
    return r.stderr.decode(errors="replace")


@pytest.fixture()
def users_file(tmp_path):
    return tmp_path / "users.json"


def listed(path):
    r = herald("user", "list", "--users", path)
    assert r.returncode == 0, f"user list failed: {err(r)}"
    return [ln for ln in out(r).splitlines() if ln.strip()]


def hashes(path):
    with open(path) as f:
        doc = json.load(f)
    assert isinstance(doc.get("users"), dict), doc
    return {name: v["hash"] for name, v in doc["users"].items()}


def test_add_list_del_round_trip(users_file):
    r = herald("user", "add", "--users", users_file, "alice", stdin="alice-secret-1\n")
    assert r.returncode == 0, err(r)
    assert users_file.exists()
    assert listed(users_file) == ["alice"]

    r = herald("user", "add", "--users", users_file, "bob", stdin="bob-secret-2\n")
    assert r.returncode == 0, err(r)
    r = herald("user", "add", "--users", users_file, "carol.x_y@ex-1", stdin="pw3\n")
    assert r.returncode == 0, err(r)
    assert sorted(listed(users_file)) == ["alice", "bob", "carol.x_y@ex-1"]

    r = herald("user", "del", "--users", users_file, "bob")
    assert r.returncode == 0, err(r)
    assert sorted(listed(users_file)) == ["alice", "carol.x_y@ex-1"]

    r = herald("user", "del", "--users", users_file, "alice")
    assert r.returncode == 0, err(r)
    r = herald("user", "del", "--users", users_file, "carol.x_y@ex-1")
    assert r.returncode == 0, err(r)
    assert listed(users_file) == []


def test_list_of_missing_file_is_empty(tmp_path):
    assert listed(tmp_path / "nope.json") == []


def test_file_mode_and_hashes(users_file):
    pw_a, pw_b = "correct horse battery staple", "Tr0ub4dor&3-unique"
    assert herald("user", "add", "--users", users_file, "alice", stdin=pw_a + "\n").returncode == 0
    assert herald("user", "add", "--users", users_file, "bob", stdin=pw_b).returncode == 0  # no newline
    mode = stat.S_IMODE(os.stat(users_file).st_mode)
    assert mode == 0o600, f"users file mode is {oct(mode)}, expected 0o600"
    raw = users_file.read_bytes()
    assert pw_a.encode() not in raw and pw_b.encode() not in raw, "password stored in clear"
    assert b"Tr0ub4dor" not in raw and b"battery" not in raw
    h = hashes(users_file)
    assert set(h) == {"alice", "bob"}
    for name, v in h.items():
        assert v.startswith("$argon2id$"), f"{name}: not an argon2id hash: {v!r}"
    assert h["alice"] != h["bob"]
    # No temporary files left next to it.
    leftovers = [p.name for p in users_file.parent.iterdir() if p.name != users_file.name]
    assert leftovers == [], leftovers


def test_add_existing_user_changes_the_hash(users_file):
    assert herald("user", "add", "--users", users_file, "alice", stdin="one\n").returncode == 0
    h1 = hashes(users_file)["alice"]
    assert herald("user", "add", "--users", users_file, "alice", stdin="two\n").returncode == 0
    h2 = hashes(users_file)["alice"]
    assert h1 != h2 and h2.startswith("$argon2id$")
    assert listed(users_file) == ["alice"]
    assert stat.S_IMODE(os.stat(users_file).st_mode) == 0o600


def test_password_is_first_line_only(users_file):
    r = herald("user", "add", "--users", users_file, "alice", stdin="first-line\nsecond-line\n")
    assert r.returncode == 0, err(r)
    raw = users_file.read_bytes()
    assert b"first-line" not in raw and b"second-line" not in raw


@pytest.mark.parametrize("name", ["", " ", "has space", "a" * 65, "tab\tname", "sl/ash",
                                  "quote\"", "ünïcode"])
def test_bad_names_rejected(users_file, name):
    assert herald("user", "add", "--users", users_file, "ok", stdin="pw\n").returncode == 0
    before = users_file.read_bytes()
    r = herald("user", "add", "--users", users_file, name, stdin="pw\n")
    assert r.returncode != 0, f"bad name {name!r} accepted: {err(r)}"
    assert err(r).strip(), "no message on stderr"
    assert users_file.read_bytes() == before, "file changed by a refused add"
    assert listed(users_file) == ["ok"]


def test_longest_name_accepted(users_file):
    name = "a" * 64
    r = herald("user", "add", "--users", users_file, name, stdin="pw\n")
    assert r.returncode == 0, err(r)
    assert listed(users_file) == [name]


@pytest.mark.parametrize("stdin", ["", "\n", "\r\n"])
def test_add_with_empty_password_fails(users_file, stdin):
    r = herald("user", "add", "--users", users_file, "alice", stdin=stdin)
    assert r.returncode != 0, f"empty password accepted (stdin {stdin!r})"
    assert err(r).strip(), "no message on stderr"
    assert not users_file.exists() or "alice" not in hashes(users_file)


def test_del_missing_user_fails(users_file):
    assert herald("user", "add", "--users", users_file, "alice", stdin="pw\n").returncode == 0
    before = users_file.read_bytes()
    r = herald("user", "del", "--users", users_file, "bob")
    assert r.returncode != 0
    assert "bob" in err(r), err(r)
    assert users_file.read_bytes() == before
    # ...and in a file that does not exist at all.
    r = herald("user", "del", "--users", users_file.parent / "none.json", "bob")
    assert r.returncode != 0
    assert err(r).strip()


def test_corrupt_file_is_not_overwritten(users_file):
    users_file.write_text("{not json")
    r = herald("user", "add", "--users", users_file, "alice", stdin="pw\n")
    assert r.returncode != 0
    assert err(r).strip()
    assert users_file.read_text() == "{not json"
    r = herald("user", "list", "--users", users_file)
    assert r.returncode != 0


def test_missing_users_option_and_usage():
    r = herald("user", "add", "alice", stdin="pw\n")
    assert r.returncode != 0 and "--users" in err(r)
    r = herald("user", "list")
    assert r.returncode != 0
    r = herald("frobnicate")
    assert r.returncode != 0 and err(r).strip()
    r = herald()
    assert r.returncode != 0 and "usage" in err(r).lower()
    r = herald("user", "rename", "--users", "/nonexistent/x.json", "a")
    assert r.returncode != 0


def test_version():
    r = herald("version")
    assert r.returncode == 0, err(r)
    text = out(r).strip()
    assert re.fullmatch(r"herald \d+\.\d+\.\d+\S*", text), text
    r2 = herald("--version")
    assert r2.returncode == 0 and out(r2).strip() == text
    # The daemon reports the same version.
    d = subprocess.run([str(find_binary()), "--version"], capture_output=True, timeout=10)
    assert d.returncode == 0
    assert text.split()[1] in (d.stdout + d.stderr).decode(errors="replace")
