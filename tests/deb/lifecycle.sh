#!/usr/bin/env bash
# The package's life on a Debian machine, run as root where nothing it
# installs outlives it, even when it fails half-way:
#   - Debian 12 (the machine): in a private mount namespace (unshare
#     --mount) with MQUEUE_LIFECYCLE_OVERLAY=1, which puts overlays over
#     /usr, /etc and /var;
#   - Debian 13: inside a throwaway overlay of the Debian 13 root
#     (scripts/debian13-root.sh run), where kamailio is not installed yet.
#   lifecycle.sh OURS.deb KAMAILIO.deb WORKDIR PORT
# KAMAILIO.deb is the kamailio package ours depends on (the exact version).
# Prints "STEP n ok" lines; exits non-zero at the first failed check.
set -euo pipefail
ours=$1; theirs=$2; work=$3; port=$4
mkdir -p "$work"

if [ "${MQUEUE_LIFECYCLE_OVERLAY:-}" = 1 ]; then
  for d in usr etc var; do
    mkdir -p "$work/$d-up" "$work/$d-work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/$d-up,workdir=$work/$d-work" "/$d"
  done
  # No service starts or stops from maintainer scripts in here.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
fi
export DEBIAN_FRONTEND=noninteractive

moddir=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)/kamailio/modules
fail() { echo "FAIL: $*" >&2; exit 1; }
# grep that reads all of its input: `cmd | grep -q` under pipefail fails
# whenever cmd is still writing when grep has its match (SIGPIPE).
has() { grep "$@" >/dev/null; }
# apt wants a path it reads as a file: ./name or an absolute one.
apt_install() { apt-get install -y -q --no-install-recommends "$@" >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; return 1; }; }

# The C module of the kamailio package, as shipped.
mkdir -p "$work/theirs"
dpkg-deb -x "$theirs" "$work/theirs"
c_sum=$(sha256sum "$work/theirs$moddir/mqueue.so" | cut -d' ' -f1)

# Kamailio with a stock-style cfg (loadmodule "mqueue.so" from the default
# module path): a SIP MESSAGE is queued by mq_add and fetched by an rtimer
# route with mq_fetch. Prints what `mqueue.stats` answers and the fetched
# item ("FETCHED ..."), then stops Kamailio.
run_kamailio() {
  local dir="$work/run"
  rm -rf "$dir"; mkdir -p "$dir"
  cat > "$dir/kamailio.cfg" <<CFG
#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:$port
loadmodule "ctl.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "rtimer.so"
loadmodule "mqueue.so"
modparam("ctl", "binrpc", "unix:$dir/ctl.sock")
modparam("mqueue", "mqueue", "name=q")
modparam("rtimer", "timer", "name=fetch;interval=100000u;mode=1;")
modparam("rtimer", "exec", "timer=fetch;route=FETCH")
request_route {
  if (\$rm == "MESSAGE") {
    if (!mq_add("q", "\$fU", "\$rb")) { sl_send_reply("500", "Not queued"); exit; }
  }
  sl_send_reply("200", "OK");
}
route[FETCH] {
  while (mq_fetch("q")) { xlog("L_NOTICE", "FETCHED key=\$mqk(q) value=\$mqv(q)\n"); }
}
CFG
  kamailio -DD -E -f "$dir/kamailio.cfg" -w "$dir" -Y "$dir" >"$dir/log" 2>&1 &
  local pid=$! i
  for i in $(seq 1 300); do
    kamcmd -s "unix:$dir/ctl.sock" core.uptime >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; fail "kamailio did not start"; }
    sleep 0.1
  done
  kamcmd -s "unix:$dir/ctl.sock" mqueue.stats q 2>&1 || true
  local body="hello-lifecycle"
  # One write, one datagram (bash's printf writes line by line).
  printf 'MESSAGE sip:bob@127.0.0.1:%s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-lc%s\r\nFrom: <sip:alice@example.org>;tag=lc\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: lifecycle-%s\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s' \
    "$port" "$RANDOM" "$RANDOM" "${#body}" "$body" > "$dir/message"
  # UDP: sent again until the fetch shows in the log (at most 30 s).
  for i in $(seq 1 300); do
    [ $((i % 20)) = 1 ] && cat "$dir/message" > "/dev/udp/127.0.0.1/$port"
    grep -q "FETCHED key=alice value=$body" "$dir/log" && break
    sleep 0.1
  done
  grep -o "FETCHED key=alice value=$body" "$dir/log" | head -n 1 || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# 1. Install with apt (it pulls in kamailio where it is missing): ours
#    answers, carries the SIP MESSAGE, its files and the diversion are there.
(cd "$(dirname "$ours")" && apt_install "./$(basename "$ours")")
reply=$(run_kamailio)
echo "$reply" | has "name: q" || fail "step 1: mqueue.stats does not answer: ours is not loaded: $reply"
echo "$reply" | has "FETCHED key=alice" || fail "step 1: the MESSAGE was not queued and fetched: $(cat "$work/run/log")"
dpkg -L kamailio-mqueue-rs | has -x "$moddir/mqueue.so" || fail "step 1: dpkg -L lacks mqueue.so"
dpkg -L kamailio-mqueue-rs | has "/usr/share/doc/kamailio-mqueue-rs/schema/" || fail "step 1: no schemas"
dpkg-divert --list | has "diversion of $moddir/mqueue.so to $moddir/mqueue-c.so by kamailio-mqueue-rs" \
  || fail "step 1: no diversion"
[ "$(sha256sum "$moddir/mqueue-c.so" | cut -d' ' -f1)" = "$c_sum" ] || fail "step 1: C module not kept"
echo "STEP 1 ok"

# 2. Reinstall kamailio: ours stays, the C module goes aside.
dpkg -i "$theirs" >/dev/null
reply=$(run_kamailio)
echo "$reply" | has "name: q" || fail "step 2: ours no longer loads after the kamailio reinstall"
echo "$reply" | has "FETCHED key=alice" || fail "step 2: the MESSAGE was not queued and fetched"
[ "$(sha256sum "$moddir/mqueue-c.so" | cut -d' ' -f1)" = "$c_sum" ] || fail "step 2: the C module is not at mqueue-c.so"
echo "STEP 2 ok"

# 3. Remove: the C module is back, byte-identical, and carries the MESSAGE
#    (it has no mqueue.stats).
dpkg -r kamailio-mqueue-rs >/dev/null
reply=$(run_kamailio)
echo "$reply" | has "name: q" && fail "step 3: mqueue.stats still answers"
echo "$reply" | has -i "not found\|command" || fail "step 3: unexpected reply: $reply"
echo "$reply" | has "FETCHED key=alice" || fail "step 3: the C module did not queue and fetch the MESSAGE"
[ "$(sha256sum "$moddir/mqueue.so" | cut -d' ' -f1)" = "$c_sum" ] || fail "step 3: mqueue.so is not the C module"
[ ! -e "$moddir/mqueue-c.so" ] || fail "step 3: mqueue-c.so left behind"
dpkg-divert --list | has "mqueue" && fail "step 3: diversion left"
echo "STEP 3 ok"

# 4. Purge: nothing of ours is left.
dpkg --purge kamailio-mqueue-rs >/dev/null
dpkg -L kamailio-mqueue-rs >/dev/null 2>&1 && fail "step 4: package still known"
[ ! -e /usr/share/doc/kamailio-mqueue-rs ] || fail "step 4: doc dir left"
dpkg-divert --list | has "mqueue" && fail "step 4: diversion left"
echo "STEP 4 ok"
