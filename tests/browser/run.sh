#!/bin/sh
# Runs the browser end-to-end test (tests/browser/golden_path.mjs).
# Installs playwright-core from the lock file when missing (never a browser:
# the test uses Debian's /usr/bin/chromium). Exits non-zero on failure.
set -eu
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1; then
  echo "run.sh: node is required (apt-get install nodejs npm)" >&2
  exit 2
fi
if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  echo "run.sh: chromium is required at ${CHROMIUM_PATH:-/usr/bin/chromium} (apt-get install chromium)" >&2
  exit 2
fi
if [ ! -d node_modules/playwright-core ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
exec node golden_path.mjs "$@"
