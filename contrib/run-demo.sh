#!/bin/sh
# `make run`: start the local demo upstream (127.0.0.1:18080) in the background and
# sluice in the foreground on the sample config. Ctrl-C drains sluice and stops both.
set -e
bin=${1:-build/sluice}
conf=${2:-proxy.yaml.sample}
python3 contrib/demo_upstream.py 18080 &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT INT TERM
echo "demo upstream on 127.0.0.1:18080; sluice on 127.0.0.1:8080 -- try:" >&2
echo "  curl -i localhost:8080/demo/hello" >&2
echo "  for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{http_code} after %{time_total}s\n' localhost:8080/demo/\$i & done; wait" >&2
echo "dashboard: http://127.0.0.1:9901/  (also /status, /metrics)" >&2
"$bin" -c "$conf" || true
