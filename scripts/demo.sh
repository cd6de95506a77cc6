#!/usr/bin/env bash
# `make demo`: SIP MESSAGE traffic to the `make run` Kamailio, with sipp.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
port=${MQUEUE_PORT:-35060}
count=${COUNT:-200}
rate=${RATE:-50}
command -v sipp >/dev/null || { echo "sipp missing: run make deps (package sip-tester)" >&2; exit 1; }
echo "sending $count MESSAGE requests at $rate/s to 127.0.0.1:$port"
cd "$(mktemp -d /tmp/mqueue-demo.XXXXXX)"
sipp "127.0.0.1:$port" -sf "$here/tests/sipp/message.xml" -m "$count" -r "$rate" \
  -i 127.0.0.1 -p 35059 -nostdin -timeout 60s -timeout_error
echo "done: every request was answered 200 (queued); see the drain lines in the Kamailio terminal"
