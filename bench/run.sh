#!/bin/sh
# `make bench`: builds the load generator and runs the four measurements of
# MISSION.md "Targets" (echo vs Node ws, idle memory, per-user routing,
# handshakes), printing a table. QUICK=1 for a short smoke run; REPS=N for N
# repetitions (default 3). A measurement, not a test: exits 0.
set -eu
cd "$(dirname "$0")"
make --no-print-directory -s
exec python3 bench.py
