#!/usr/bin/env bash
# render-cfg.sh IN OUT MODULE PORT RUNDIR [MPATH]: fills the placeholders of a
# cfg/ file. MPATH (the Kamailio module directory) defaults to Debian's.
set -euo pipefail
mpath=${6:-/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -dumpmachine)/kamailio/modules}
sed -e "s|MQUEUE_MODULE_PATH|$3|g" -e "s|MQ_PORT|$4|g" -e "s|MQ_RUNDIR|$5|g" \
    -e "s|MQ_MPATH|$mpath|g" "$1" > "$2"
