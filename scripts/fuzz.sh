#!/bin/sh
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each for SECONDS
# (default 60) over a scratch copy of its checked-in seed corpus
# (tests/fuzz/corpus/<target>/). New inputs found while fuzzing stay in the
# scratch copy; the repository's corpus is never written. Exits non-zero if a
# target fails to build or any run finds a crash, leak, timeout or sanitizer
# error; the reproducer is left in build-fuzz/artifacts/<target>/.
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# With no TARGET, every tests/fuzz/fuzz_*.c is a target (CMakeLists.txt builds
# each of them when HD_FUZZ=ON).
set -eu

SECONDS_PER_TARGET=${1:-60}
[ $# -gt 0 ] && shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -gt 0 ]; then
  TARGETS=$*
else
  TARGETS=$(cd "$ROOT/tests/fuzz" && ls fuzz_*.c | sed 's/\.c$//' | tr '\n' ' ')
fi

case $SECONDS_PER_TARGET in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

BUILD=$ROOT/build-fuzz
JOBS=$(nproc 2>/dev/null || echo 2)

CC=${CC:-clang}
export CC
cmake -S "$ROOT" -B "$BUILD" -DHD_FUZZ=ON -DCMAKE_C_COMPILER="$CC" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# shellcheck disable=SC2086
cmake --build "$BUILD" -j "$JOBS" --target $TARGETS

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/herald-fuzz.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT INT TERM

status=0
for t in $TARGETS; do
  corpus=$SCRATCH/$t
  artifacts=$BUILD/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  if [ -d "$ROOT/tests/fuzz/corpus/$t" ]; then
    cp -R "$ROOT/tests/fuzz/corpus/$t/." "$corpus/"
  fi
  echo "== $t: ${SECONDS_PER_TARGET}s"
  if "$BUILD/bin/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" \
      >"$BUILD/$t.log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units)' "$BUILD/$t.log" || true
    echo "== $t: ok"
  else
    tail -n 40 "$BUILD/$t.log"
    echo "== $t: FAILED (log $BUILD/$t.log, reproducer in $artifacts/)" >&2
    status=1
  fi
done
exit $status
