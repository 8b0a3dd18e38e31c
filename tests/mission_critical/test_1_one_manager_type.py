"""Mission-critical 1: one manager type, no alias or proxy.

The seed had ``WebSocketManager`` (an alias/proxy) next to
``UnifiedWebSocketManager`` (the real one). In Herald, scanning include/ and
src/ (comments and string literals removed first):

- ``struct hd_manager_s`` is defined exactly once, in src/core/manager.c;
- ``hd_manager_t`` is typedef'd exactly once, in include/herald/manager.h, as
  ``typedef struct hd_manager_s hd_manager_t;``;
- nothing else aliases it: no other typedef of ``hd_manager_t`` or
  ``struct hd_manager_s`` (pointer or not), no ``#define`` whose body is the
  type;
- no other struct/union/enum tag or typedef name contains "manager" except
  hd_manager_api_s / hd_manager_api_t / hd_manager_stats_t.

How it fails: any of the above in the tree. The scanner itself is tested on a
temporary copy of the tree with each kind of violation injected (and with the
same text inside a comment, which must not count), so a scanner that finds
nothing cannot pass.

Run: /usr/bin/python3 -m pytest -q tests/mission_critical/test_1_one_manager_type.py
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("HERALD_SRC") or Path(__file__).resolve().parents[2])
SCAN_DIRS = ("include", "src")
EXTS = (".c", ".h")
CANON_STRUCT_FILE = "src/core/manager.c"
CANON_TYPEDEF_FILE = "include/herald/manager.h"
ALLOWED_NAMES = {"hd_manager_s", "hd_manager_t", "hd_manager_api_s", "hd_manager_api_t",
                 "hd_manager_stats_t"}


def strip_c(text: str) -> str:
    """Blanks out comments and string/char literals, keeping line breaks."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + re.sub(r"[^\n]", " ", text[i + 1:j - 1]) + (c if j - 1 > i else ""))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def sources(root: Path):
    for d in SCAN_DIRS:
        base = root / d
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if p.is_file() and p.suffix in EXTS:
                yield p.relative_to(root).as_posix(), strip_c(p.read_text(errors="replace"))


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def strip_braces(s: str) -> str:
    """Removes every {...} body (nested), so a typedef reads as its declarators."""
    out, depth = [], 0
    for ch in s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


STRUCT_DEF = re.compile(r"\bstruct\s+hd_manager_s\s*\{")
CANON_TYPEDEF = re.compile(r"\btypedef\s+struct\s+hd_manager_s\s+hd_manager_t\s*;")
ALIAS_TYPEDEF = re.compile(
    r"\btypedef\s+(?:const\s+|volatile\s+)*(?:struct\s+hd_manager_s|hd_manager_t)\b[\w\s\*]*;")
DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)(\([^)]*\))?(.*(?:\\\n.*)*)", re.M)
DEFINE_ALIAS_BODY = re.compile(
    r"^\s*\(?\s*(?:const\s+)?(?:struct\s+hd_manager_s|hd_manager_t)\s*\**\s*\)?\s*$")
TAG_DEF = re.compile(r"\b(struct|union|enum)\s+(\w*manager\w*)\s*\{", re.I)
TYPEDEF_STMT = re.compile(r"\btypedef\b")
PARAM_LIST = re.compile(r"\)\s*\((?:[^()]|\([^()]*\))*\)")
TAG_REF = re.compile(r"\b(?:struct|union|enum)\s+\w+")
IDENT = re.compile(r"\b[A-Za-z_]\w*\b")


def typedef_statements(text: str):
    """Yields (pos, statement text) for each typedef, up to its ';' at depth 0."""
    for m in TYPEDEF_STMT.finditer(text):
        depth, j = 0, m.end()
        while j < len(text):
            ch = text[j]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == ";" and depth == 0:
                break
            j += 1
        yield m.start(), text[m.start():j + 1]


def scan(root: Path) -> list[str]:
    """Returns the violations as 'file:line: message' strings."""
    problems: list[str] = []
    struct_defs, canon_typedefs = [], []
    for rel, text in sources(root):
        for m in STRUCT_DEF.finditer(text):
            struct_defs.append(f"{rel}:{line_of(text, m.start())}")
        for m in CANON_TYPEDEF.finditer(text):
            canon_typedefs.append(f"{rel}:{line_of(text, m.start())}")
        # Aliases by typedef (anything but the one canonical typedef).
        for m in ALIAS_TYPEDEF.finditer(text):
            if CANON_TYPEDEF.fullmatch(m.group(0)) and rel == CANON_TYPEDEF_FILE:
                continue
            if CANON_TYPEDEF.fullmatch(m.group(0)):
                continue  # counted (and reported) as a second canonical typedef
            problems.append(f"{rel}:{line_of(text, m.start())}: alias of the manager type: "
                            f"{' '.join(m.group(0).split())}")
        # Aliases by macro.
        for m in DEFINE.finditer(text):
            if DEFINE_ALIAS_BODY.match(m.group(3).replace("\\\n", " ")):
                problems.append(f"{rel}:{line_of(text, m.start())}: macro alias of the manager "
                                f"type: #define {m.group(1)}")
        # Other types named like a manager.
        for m in TAG_DEF.finditer(text):
            name = m.group(2)
            if name in ALLOWED_NAMES:
                continue
            problems.append(f"{rel}:{line_of(text, m.start())}: another manager type: "
                            f"{m.group(1)} {name}")
        for pos, stmt in typedef_statements(text):
            # Tags first ("struct x {...} name": x is checked as a tag), then the
            # bodies and parameter lists: what is left names the typedefs.
            decl = PARAM_LIST.sub(")", strip_braces(TAG_REF.sub(" ", stmt)))
            for name in IDENT.findall(decl):
                if "manager" in name.lower() and name not in ALLOWED_NAMES:
                    problems.append(f"{rel}:{line_of(text, pos)}: another manager type: "
                                    f"typedef name {name}")
    for where in struct_defs:
        if not where.startswith(CANON_STRUCT_FILE + ":"):
            problems.append(f"{where}: another definition of struct hd_manager_s (the one "
                            f"belongs in {CANON_STRUCT_FILE})")
    if sum(w.startswith(CANON_STRUCT_FILE + ":") for w in struct_defs) != 1:
        problems.append(f"{CANON_STRUCT_FILE}: struct hd_manager_s must be defined exactly "
                        f"once here; found: {struct_defs or 'none'}")
    for where in canon_typedefs:
        if not where.startswith(CANON_TYPEDEF_FILE + ":"):
            problems.append(f"{where}: another typedef of hd_manager_t (the one belongs in "
                            f"{CANON_TYPEDEF_FILE})")
    if sum(w.startswith(CANON_TYPEDEF_FILE + ":") for w in canon_typedefs) != 1:
        problems.append(f"{CANON_TYPEDEF_FILE}: hd_manager_t must be typedef'd exactly once "
                        f"here; found: {canon_typedefs or 'none'}")
    return problems


# ---- the test ----------------------------------------------------------------------


def test_one_manager_type_in_tree():
    problems = scan(ROOT)
    assert problems == [], "\n" + "\n".join(problems)


def test_the_tree_was_scanned():
    """The scan saw the canonical definitions (a wrong ROOT cannot pass)."""
    files = dict(sources(ROOT))
    assert CANON_STRUCT_FILE in files and CANON_TYPEDEF_FILE in files
    assert STRUCT_DEF.search(files[CANON_STRUCT_FILE])
    assert CANON_TYPEDEF.search(files[CANON_TYPEDEF_FILE])
    assert len(files) > 10


# ---- the scanner catches each violation ----------------------------------------------

INJECTIONS = {
    "typedef_alias": ("src/net/alias.h", "typedef hd_manager_t hd_ws_manager_t;\n"),
    "pointer_alias": ("src/api/proxy.h", "typedef struct hd_manager_s *hd_mgr_ref;\n"),
    "plain_alias": ("src/api/proxy.h", "typedef hd_manager_t WebSocketMgr;\n"),
    "macro_alias": ("src/api/router.c", "#define WebSocketManager hd_manager_t\n"),
    "macro_struct_alias": ("src/net/conn.c", "#define HD_MGR struct hd_manager_s *\n"),
    "second_struct": ("src/net/conn.c", "struct hd_manager_s { int shadow; };\n"),
    "second_typedef": ("src/core/frame.h", "typedef struct hd_manager_s hd_manager_t;\n"),
    "proxy_struct": ("src/api/backend.c",
                     "typedef struct hd_user_manager_s { hd_manager_t *real; } hd_umgr_t;\n"),
    "proxy_typedef_name": ("src/api/backend.c",
                           "typedef struct { hd_manager_t *real; } hd_websocket_manager_t;\n"),
    "manager_enum": ("src/daemon/config.c", "enum hd_manager_kind { A, B };\n"),
}


@pytest.fixture()
def tree(tmp_path):
    for d in SCAN_DIRS:
        shutil.copytree(ROOT / d, tmp_path / d)
    return tmp_path


def inject(root: Path, rel: str, text: str):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    old = p.read_text() if p.exists() else ""
    p.write_text(old + "\n" + text)
    return old.count("\n") + 2  # the line the injection starts on


def test_scanner_clean_copy_passes(tree):
    assert scan(tree) == []


@pytest.mark.parametrize("kind", sorted(INJECTIONS))
def test_scanner_catches(tree, kind):
    rel, text = INJECTIONS[kind]
    line = inject(tree, rel, text)
    problems = scan(tree)
    assert problems, f"{kind} was not detected"
    assert any(p.startswith(f"{rel}:{line}:") for p in problems), problems


def test_scanner_catches_moved_struct(tree):
    """The one definition, but in the wrong file (shared through a header)."""
    mc = tree / CANON_STRUCT_FILE
    text = mc.read_text()
    m = re.search(r"\bstruct hd_manager_s\s*\{", text)
    mc.write_text(text[:m.start()] + "struct hd_manager_s_moved {" + text[m.end():])
    inject(tree, "src/core/manager_internal.h", "struct hd_manager_s { int moved; };\n")
    problems = scan(tree)
    assert any(p.startswith("src/core/manager_internal.h:") for p in problems), problems
    assert any("exactly once" in p for p in problems), problems


def test_scanner_ignores_comments_and_strings(tree):
    inject(tree, "src/api/router.c",
           "/* typedef hd_manager_t hd_ws_manager_t; struct hd_manager_s { int x; }; */\n"
           "// #define WebSocketManager hd_manager_t\n"
           "static const char *doc_ = \"typedef hd_manager_t X; struct hd_fake_manager_s {\";\n")
    assert scan(tree) == []
