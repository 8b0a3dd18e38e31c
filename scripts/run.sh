#!/bin/sh
# Starts heraldd with the embedded development defaults. State (a random JWT
# secret and API key) lives in .local/, created once and git-ignored.
set -eu
cd "$(dirname "$0")/.."
state=.local
mkdir -p "$state"
chmod 700 "$state"
[ -s "$state/jwt_secret" ] || head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$state/jwt_secret"
[ -s "$state/api_key" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$state/api_key"
HERALD_JWT_SECRET=$(cat "$state/jwt_secret")
HERALD_API_KEY=$(cat "$state/api_key")
export HERALD_JWT_SECRET HERALD_API_KEY
listen=${HERALD_LISTEN:-127.0.0.1:8080}
echo "Herald: http://$listen/  (API key in $state/api_key; Ctrl-C to stop)"
exec build/bin/heraldd --listen "$listen" "$@"
