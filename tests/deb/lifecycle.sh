#!/usr/bin/env bash
# The package's life on a Debian machine, run as root in a private mount
# namespace (unshare --mount) with overlays over /usr, /etc and /var, so
# that nothing it installs outlives it, even when it fails half-way.
#   lifecycle.sh OURS.deb KAMAILIO.deb WORKDIR PORT
# Prints "STEP n ok" lines; exits non-zero at the first failed check.
set -euo pipefail
ours=$1; theirs=$2; work=$3; port=$4

for d in usr etc var; do
  mkdir -p "$work/$d-up" "$work/$d-work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/$d-up,workdir=$work/$d-work" "/$d"
done
# No service starts or stops from maintainer scripts in here.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d

moddir=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)/kamailio/modules
fail() { echo "FAIL: $*" >&2; exit 1; }

# Kamailio with a stock-style cfg (loadmodule "mqueue.so" from the default
# module path); prints what `mqueue.stats` answers, then stops it.
stats_reply() {
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
loadmodule "mqueue.so"
modparam("ctl", "binrpc", "unix:$dir/ctl.sock")
modparam("mqueue", "mqueue", "name=q")
request_route { sl_send_reply("200", "OK"); }
CFG
  kamailio -DD -E -f "$dir/kamailio.cfg" -w "$dir" -Y "$dir" >"$dir/log" 2>&1 &
  local pid=$! i
  for i in $(seq 1 100); do
    kamcmd -s "unix:$dir/ctl.sock" core.uptime >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; fail "kamailio did not start"; }
    sleep 0.1
  done
  kamcmd -s "unix:$dir/ctl.sock" mqueue.stats q 2>&1 || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

c_sum=$(sha256sum "$moddir/mqueue.so" | cut -d' ' -f1)

# 1. Install: ours answers, its files and the diversion are listed.
dpkg -i "$ours" >/dev/null
stats_reply | grep -q "name: q" || fail "step 1: mqueue.stats does not answer: ours is not loaded"
dpkg -L kamailio-mqueue-rs | grep -qx "$moddir/mqueue.so" || fail "step 1: dpkg -L lacks mqueue.so"
dpkg -L kamailio-mqueue-rs | grep -q "/usr/share/doc/kamailio-mqueue-rs/schema/" || fail "step 1: no schemas"
dpkg-divert --list | grep -q "diversion of $moddir/mqueue.so to $moddir/mqueue-c.so by kamailio-mqueue-rs" \
  || fail "step 1: no diversion"
[ "$(sha256sum "$moddir/mqueue-c.so" | cut -d' ' -f1)" = "$c_sum" ] || fail "step 1: C module not kept"
echo "STEP 1 ok"

# 2. Reinstall Debian's kamailio: ours stays, the C module goes aside.
dpkg -i "$theirs" >/dev/null
stats_reply | grep -q "name: q" || fail "step 2: ours no longer loads after the kamailio reinstall"
mkdir -p "$work/theirs"; dpkg-deb -x "$theirs" "$work/theirs"
cmp -s "$work/theirs$moddir/mqueue.so" "$moddir/mqueue-c.so" || fail "step 2: the new C module is not at mqueue-c.so"
echo "STEP 2 ok"

# 3. Remove: the C module is back and loads (no mqueue.stats there).
dpkg -r kamailio-mqueue-rs >/dev/null
reply=$(stats_reply)
echo "$reply" | grep -q "name: q" && fail "step 3: mqueue.stats still answers"
echo "$reply" | grep -qi "not found\|command" || fail "step 3: unexpected reply: $reply"
[ "$(sha256sum "$moddir/mqueue.so" | cut -d' ' -f1)" = "$c_sum" ] || fail "step 3: mqueue.so is not the C module"
[ ! -e "$moddir/mqueue-c.so" ] || fail "step 3: mqueue-c.so left behind"
dpkg-divert --list | grep -q "mqueue" && fail "step 3: diversion left"
echo "STEP 3 ok"

# 4. Purge: nothing of ours is left.
dpkg --purge kamailio-mqueue-rs >/dev/null
dpkg -L kamailio-mqueue-rs >/dev/null 2>&1 && fail "step 4: package still known"
[ ! -e /usr/share/doc/kamailio-mqueue-rs ] || fail "step 4: doc dir left"
dpkg-divert --list | grep -q "mqueue" && fail "step 4: diversion left"
echo "STEP 4 ok"
