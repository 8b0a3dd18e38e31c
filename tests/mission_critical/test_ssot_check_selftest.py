"""Self-test of scripts/check-ssot, the daily SSOT compliance check.

The check runs on a temporary copy of include/ and src/ into which one
violation at a time is injected; it must exit 1 and name the file, the line of
the injection and the rule. Controls: the clean copy passes (so a failure is
caused by the injection), the same text inside a comment passes, and registry
internals used inside src/core/manager.c itself pass (the owner may).

How it fails: a check that misses an injected violation, blames another line,
or fails on a clean tree.

Run: /usr/bin/python3 -m pytest -q tests/mission_critical/test_ssot_check_selftest.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("HERALD_SRC") or Path(__file__).resolve().parents[2])
SCRIPT = ROOT / "scripts" / "check-ssot"

# name: (file, injected text, rule)
INJECTIONS = {
    "user_record_struct": ("src/net/conn.c",
                           "static size_t peek(struct hd_user_s *u) { return 0; }\n",
                           "internals"),
    "user_record_typedef": ("src/net/conn.c", "static int peek2(hd_user_t *u);\n", "internals"),
    "user_record_defined_in_header": ("src/core/manager_internal.h",
                                      "struct hd_user_s { unsigned long seq; };\n", "internals"),
    "subs_list": ("src/api/backend.c",
                  "static int count(struct x *u) { return u->nsubs; }\n", "internals"),
    "deref_user_via_sub": ("src/net/inbox.c",
                           "static void *head(hd_conn_t *c) { return c->sub.user->subs; }\n",
                           "internals"),
    "walk_list": ("src/api/metrics.c",
                  "static int walk(hd_sub_t *sub) { int n = 0; for (; sub; sub = sub->next) n++; "
                  "return n; }\n", "internals"),
    "forge_uid": ("src/net/inbox.c",
                  "static void forge(hd_conn_t *c, unsigned t) { c->sub.uid = t; }\n",
                  "internals"),
    "forge_user_id": ("src/api/client.c",
                      "static void relabel(hd_conn_t *c) { c->sub.user_id = \"bob\"; }\n",
                      "internals"),
    "shards": ("src/api/metrics.c", "static const int nshards = HD_SHARDS;\n", "shards"),
    "own_map_snake": ("src/net/server.c", "static void *user_conn_map[64];\n", "own-map"),
    "own_map_camel": ("src/api/client.c", "static int connsByUser;\n", "own-map"),
    "own_map_table": ("src/net/conn.c", "typedef struct { int n; } uid_socket_table_t;\n",
                      "own-map"),
    "second_manager_struct": ("src/net/conn.c", "struct hd_manager_s { int shadow; };\n",
                              "second"),
    "typedef_alias": ("src/api/router.c", "typedef hd_manager_t WebSocketManager;\n", "alias"),
    "macro_alias": ("src/api/router.c", "#define WebSocketManager hd_manager_t\n", "alias"),
    "constructor": ("src/core/error.c", "hd_manager_t *hd_manager_new(void);\n", "ctor"),
}


def run_check(root: Path):
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture()
def tree(tmp_path):
    for d in ("include", "src"):
        shutil.copytree(ROOT / d, tmp_path / d)
    return tmp_path


def inject(root: Path, rel: str, text: str) -> int:
    """Appends text to root/rel; returns the line it starts on."""
    p = root / rel
    old = p.read_text()
    if not old.endswith("\n"):
        old += "\n"
    p.write_text(old + text)
    return old.count("\n") + 1


def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK)
    first = SCRIPT.read_text().splitlines()[0]
    assert first.startswith("#!") and "python3" in first


def test_real_tree_passes():
    r = run_check(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout


def test_clean_copy_passes(tree):
    r = run_check(tree)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", sorted(INJECTIONS))
def test_injected_violation_fails(tree, name):
    rel, text, rule = INJECTIONS[name]
    line = inject(tree, rel, text)
    r = run_check(tree)
    assert r.returncode == 1, f"{name} not caught:\n{r.stdout}{r.stderr}"
    assert f"{rel}:{line}: [{rule}]" in r.stdout, r.stdout
    assert "FAILED" in r.stderr


def test_moved_manager_struct_fails(tree):
    """The only definition, moved out of manager.c into a header."""
    mc = tree / "src/core/manager.c"
    mc.write_text(mc.read_text().replace("struct hd_manager_s {", "struct hd_manager_s_gone {", 1))
    line = inject(tree, "src/core/manager_internal.h", "struct hd_manager_s { int moved; };\n")
    r = run_check(tree)
    assert r.returncode == 1
    assert f"src/core/manager_internal.h:{line}: [second]" in r.stdout
    assert "src/core/manager.c:1: [second]" in r.stdout


def test_comments_and_strings_pass(tree):
    inject(tree, "src/net/conn.c",
           "/* c->sub.user->subs; struct hd_manager_s { int x; }; HD_SHARDS */\n"
           "// typedef hd_manager_t WebSocketManager;\n"
           "static const char *doc_ = \"user_conn_map ->nsubs hd_user_t\";\n")
    r = run_check(tree)
    assert r.returncode == 0, r.stdout


def test_owner_may_use_its_internals(tree):
    inject(tree, "src/core/manager.c",
           "static unsigned long count_subs(hd_user_t *u) { return u->nsubs + HD_SHARDS; }\n")
    r = run_check(tree)
    assert r.returncode == 0, r.stdout


def test_bad_root_is_a_usage_error(tmp_path):
    r = run_check(tmp_path)
    assert r.returncode == 2
