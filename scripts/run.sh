#!/usr/bin/env bash
# `make run`: Kamailio in the foreground with cfg/kamailio.cfg on 127.0.0.1.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
port=${MQUEUE_PORT:-35060}
rundir=$(mktemp -d /tmp/mqueue-run.XXXXXX)
trap 'rm -rf "$rundir"' EXIT
bin=${KAMAILIO_BIN:-kamailio}
# The module directory of that Kamailio (Debian's by default).
triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || true)
mpath=/usr/lib/$triplet/kamailio/modules
if [ -n "${KAMAILIO_BIN:-}" ]; then
  prefix=$(dirname "$(dirname "$(readlink -f "$KAMAILIO_BIN")")")
  for d in ${triplet:+lib/$triplet/kamailio/modules} lib64/kamailio/modules lib/kamailio/modules; do
    [ -f "$prefix/$d/sl.so" ] && { mpath="$prefix/$d"; break; }
  done
fi
bash "$here/scripts/render-cfg.sh" "$here/cfg/kamailio.cfg" "$rundir/kamailio.cfg" \
  "$here/build/mqueue.so" "$port" "$rundir" "$mpath"
echo "mqueue demo: Kamailio on udp:127.0.0.1:$port (Ctrl-C stops it)."
echo "In a second terminal: make demo   (SIP MESSAGEs with sipp)"
echo "                      kamcmd -s unix:$rundir/kamailio_ctl mqueue.stats"
"$bin" -DD -E -f "$rundir/kamailio.cfg" -w "$rundir" -Y "$rundir" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$rundir"' EXIT INT TERM
wait $pid
