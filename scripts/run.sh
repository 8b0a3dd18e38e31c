#!/bin/sh
# `make run`: starts heraldd with the embedded development defaults.
#
# State lives in .local/ (git-ignored), created once: a random JWT secret and
# API key, and a users file with two demo users, alice and bob, whose random
# passwords are kept in .local/passwords.txt and printed at every start.
# DEVELOPMENT ONLY: never use these files for a real deployment.
set -eu
cd "$(dirname "$0")/.."
state=.local
mkdir -p "$state"
chmod 700 "$state"
rand() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
[ -s "$state/jwt_secret" ] || rand 32 > "$state/jwt_secret"
[ -s "$state/api_key" ] || rand 24 > "$state/api_key"
if [ ! -s "$state/users.json" ] || [ ! -s "$state/passwords.txt" ]; then
  rm -f "$state/users.json" "$state/passwords.txt"
  for user in alice bob; do
    pw=$(rand 6)
    echo "$pw" | build/bin/herald user add --users "$state/users.json" "$user" 2>/dev/null
    echo "$user $pw" >> "$state/passwords.txt"
  done
  chmod 600 "$state/passwords.txt"
fi
HERALD_JWT_SECRET=$(cat "$state/jwt_secret")
HERALD_API_KEY=$(cat "$state/api_key")
export HERALD_JWT_SECRET HERALD_API_KEY
listen=${HERALD_LISTEN:-127.0.0.1:8080}

echo "Herald (development mode)"
echo "  chat page:  http://$listen/"
echo "  demo users (development only):"
while read -r user pw; do echo "    $user / $pw"; done < "$state/passwords.txt"
echo "  backend API key: $state/api_key   (Ctrl-C to stop)"
exec build/bin/heraldd --listen "$listen" --users "$state/users.json" --agent demo "$@"
