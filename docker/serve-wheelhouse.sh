#!/usr/bin/env bash
# Run a command while a folder of wheels is served on 127.0.0.1 (pip --find-links over HTTP), then
# stop the server, whatever the command's outcome:
#
#   docker/serve-wheelhouse.sh DIR PORT -- COMMAND...
#
# `make image-ci` builds the image this way from the wheels the host has already resolved for
# requirements.txt (`make wheelhouse`), so the cold build downloads nothing twice. The URL stays the
# same from build to build (fixed PORT) so Docker's layer cache still applies.
set -euo pipefail

dir=${1:?usage: $0 DIR PORT -- COMMAND...}
port=${2:?usage: $0 DIR PORT -- COMMAND...}
shift 2
[[ "${1:-}" == "--" ]] && shift
[[ -d "$dir" ]] || {
  echo "$dir: no wheelhouse; run make wheelhouse first" >&2
  exit 1
}
python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$server" 2>/dev/null || {
    echo "the wheelhouse server could not start on 127.0.0.1:$port (port in use? set WHEELHOUSE_PORT)" >&2
    exit 1
  }
  sleep 0.2
done
"$@"
