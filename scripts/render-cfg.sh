#!/usr/bin/env bash
# render-cfg.sh IN OUT MODULE PORT RUNDIR: fills the placeholders of a cfg/ file.
set -euo pipefail
sed -e "s|MQUEUE_MODULE_PATH|$3|g" -e "s|MQ_PORT|$4|g" -e "s|MQ_RUNDIR|$5|g" "$1" > "$2"
