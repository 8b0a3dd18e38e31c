"""libherald.so exports exactly its public declarations: nothing extra, nothing missing.

The public API is what include/herald/*.h declares with HD_EXPORT, plus the manager
operations generated from the HD_MANAGER_OPS list. Everything else is built with hidden
visibility. This test fails if a function leaks out of the library (an internal hd__
symbol, a static helper made global, llhttp's symbols) or if a declared function is not
exported (a missing HD_EXPORT on its definition).
"""
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def declared():
    names = set()
    for h in sorted((ROOT / "include" / "herald").glob("*.h")):
        text = h.read_text()
        # Plain declarations: HD_EXPORT <type> name(...);
        for m in re.finditer(r"^HD_EXPORT\s+[^;{]*?\b([A-Za-z_]\w*)\s*\(", text, re.M):
            names.add(m.group(1))
        # The manager operations: XX(ret, name, (params), (args)) inside HD_MANAGER_OPS.
        ops = re.search(r"#define HD_MANAGER_OPS\(XX\)(.*?)\n\n", text, re.S)
        if ops:
            for m in re.finditer(r"XX\(\s*[^,]+,\s*([A-Za-z_]\w*)\s*,", ops.group(1)):
                names.add(m.group(1))
    return names


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    syms = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TtWwDdBbRr" and parts[1].isupper():
            syms.add(parts[2])
    # The toolchain's own symbols are not ours.
    return {s for s in syms if not s.startswith("_")}


def test_exports_equal_public_declarations():
    lib = os.environ.get("HERALD_LIB") or str(ROOT / "build" / "lib" / "libherald.so")
    want, got = declared(), exported(lib)
    assert len(want) >= 15, f"the header scan found too little: {sorted(want)}"
    assert got - want == set(), f"exported but not declared public: {sorted(got - want)}"
    assert want - got == set(), f"declared public but not exported: {sorted(want - got)}"
    assert all(s.startswith("hd_") for s in got), sorted(got)
