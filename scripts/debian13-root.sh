#!/usr/bin/env bash
# A Debian 13 (trixie) root for what must run on Debian 13 rather than on
# this machine: the package of Debian 13's kamailio (`make deb DEBIAN=13`),
# its lifecycle test (tests/deb.rs), or a service of Debian 13 (Redis 8,
# Valkey 8.1) that a test wants.
#
#   debian13-root.sh
#       prints the root's path; builds it first when it is missing
#   debian13-root.sh run WORKDIR [--bind DIR]... [--env NAME=VALUE]... -- CMD...
#       runs CMD as root inside a throwaway copy of the root: an overlay
#       whose changes go to WORKDIR, in a private mount namespace, with /dev,
#       /proc, /sys and each DIR (at the same path) mounted in. The cached
#       root and the machine stay as they were; the network is the
#       machine's (loopback ports are shared). `apt-get install` works in
#       there (Debian 13's archive through the machine's mirror).
#
# The root: `debootstrap --variant=minbase trixie` from the Debian mirror
# that this machine's apt uses, plus the tools to build the module and run
# lintian, the kamailio packages downloaded (not installed: the package
# test lets `apt install ./…deb` pull them in) and the source package of
# that exact kamailio unpacked in /usr/src/kamailio. Cached in
# MQUEUE_DEBIAN13_ROOT (default ~/.cache/mqueue-rs/debian13/root), reused
# by later runs, rebuilt when missing or incomplete.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=${MQUEUE_DEBIAN13_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/mqueue-rs/debian13/root}
cache=$(dirname "$root")
suite=trixie
# The kamailio packages the build and the tests use (downloaded only).
kamailio_pkgs="kamailio"
# Installed in the root: the module's build (bindgen needs libclang), the
# package's (dpkg-shlibdeps), lintian, and what the tests run with.
tools="ca-certificates gcc libc6-dev clang libclang-dev make dpkg-dev binutils xz-utils file lintian procps"
# Debian 13's servers that tests/redis.rs also runs against (Redis 8.0,
# Valkey 8.1; MQUEUE_REDIS_SERVER=redis8|valkey). Installed with the tools
# in a new root, and added to an existing root that lacks them.
services="redis-server valkey-server"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The mirror: the machine's own Debian archive entry (deb822 or one-line),
# unless MQUEUE_DEBIAN_MIRROR names one.
mirror() {
  if [ -n "${MQUEUE_DEBIAN_MIRROR:-}" ]; then echo "$MQUEUE_DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -n 's/^URIs:[ \t]*//p' | tr ' ' '\n' | grep -E '/debian/?$' | head -n 1 || true)
  [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\/debian\/\{0,1\}\) .*/\2/p' | head -n 1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# run_in ROOT WORKDIR binds envs -- CMD...: see the usage above.
run_in() {
  local lower=$1 work=$2; shift 2
  local binds=() envs=()
  while [ $# -gt 0 ]; do
    case $1 in
      --bind) binds+=("$2"); shift 2 ;;
      --env) envs+=("$2"); shift 2 ;;
      --) shift; break ;;
      *) echo "debian13-root: unknown option $1" >&2; exit 2 ;;
    esac
  done
  [ $# -gt 0 ] || { echo "debian13-root: run: no command" >&2; exit 2; }
  mkdir -p "$work/upper" "$work/ovl" "$work/merged"
  # Private mount namespace: every mount below goes away with the command.
  unshare --mount --propagation private bash -s "$lower" "$work" "${#binds[@]}" "${binds[@]}" \
    "${#envs[@]}" "${envs[@]}" "$@" <<'INNER'
set -euo pipefail
lower=$1 work=$2; shift 2
n=$1; shift; binds=("${@:1:$n}"); shift "$n"
n=$1; shift; envs=("${@:1:$n}"); shift "$n"
m="$work/merged"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$work/upper,workdir=$work/ovl" "$m"
mount --rbind /dev "$m/dev"
mount -t proc proc "$m/proc"
mount --rbind /sys "$m/sys"
mount -t tmpfs tmpfs "$m/tmp"
cp /etc/resolv.conf "$m/etc/resolv.conf" 2>/dev/null || true
for d in "${binds[@]}"; do
  mkdir -p "$m$d"
  mount --bind "$d" "$m$d"
done
# No service starts from maintainer scripts in here.
printf '#!/bin/sh\nexit 101\n' > "$m/usr/sbin/policy-rc.d"
chmod 0755 "$m/usr/sbin/policy-rc.d"
exec chroot "$m" /usr/bin/env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${envs[@]}" "$@"
INNER
}

build_root() {
  command -v debootstrap >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  local url new
  url=$(mirror)
  new="$cache/root.new"
  rm -rf "$new"
  echo "debian13-root: debootstrap --variant=minbase $suite from $url into $new" >&2
  debootstrap --variant=minbase "$suite" "$new" "$url" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  printf 'deb %s %s main\ndeb-src %s %s main\n' "$url" "$suite" "$url" "$suite" > "$new/etc/apt/sources.list"
  # Packages are installed into the root itself (not an overlay): a
  # private namespace for the mounts apt needs, chroot straight in.
  unshare --mount --propagation private bash -s "$new" "$tools $services" "$kamailio_pkgs" \
    >"$cache/setup.log" 2>&1 <<'SETUP' || { tail -30 "$cache/setup.log" >&2; exit 1; }
set -euo pipefail
r=$1 tools=$2 kpkgs=$3
mount --rbind /dev "$r/dev"; mount -t proc proc "$r/proc"; mount --rbind /sys "$r/sys"
cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"; chmod 0755 "$r/usr/sbin/policy-rc.d"
inroot() { chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
         PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
inroot apt-get update -qq
inroot apt-get install -y -qq --no-install-recommends $tools
inroot apt-get install -y -qq --no-install-recommends --download-only $kpkgs
version=$(inroot dpkg-deb -f "$(ls "$r"/var/cache/apt/archives/kamailio_*.deb | head -n 1 | sed "s|^$r||")" Version)
# The source package of that kamailio, unpacked without the Debian patches
# (as scripts/deps.sh does on this machine); when the mirror lacks a file
# the .dsc lists (the upstream signature), the orig tarball, whose
# checksum apt checked, is unpacked instead.
inroot bash -c "mkdir -p /usr/src/kamailio.dl && cd /usr/src/kamailio.dl
  apt-get source -qq --download-only kamailio=$version || ls kamailio_*.orig.tar.*
  dpkg-source -x --skip-patches ./kamailio_*.dsc /usr/src/kamailio \
    || { mkdir -p /usr/src/kamailio && tar -xf kamailio_*.orig.tar.* -C /usr/src/kamailio --strip-components=1; }
  cd / && rm -rf /usr/src/kamailio.dl && test -f /usr/src/kamailio/src/core/sr_module.h"
echo "$version" > "$r/usr/src/kamailio/.debian-version"
rm -f "$r/usr/sbin/policy-rc.d" "$r/etc/resolv.conf"
umount -R "$r/dev" "$r/proc" "$r/sys" 2>/dev/null || umount -l "$r/dev" "$r/proc" "$r/sys"
SETUP
  rm -rf "$root"
  mv "$new" "$root"
  touch "$cache/.complete"
}

# Adds the services to a root built before they were in its list.
install_services() {
  unshare --mount --propagation private bash -s "$root" "$services" \
    >"$cache/services.log" 2>&1 <<'SERVICES' || { tail -30 "$cache/services.log" >&2; exit 1; }
set -euo pipefail
r=$1 pkgs=$2
mount --rbind /dev "$r/dev"; mount -t proc proc "$r/proc"; mount --rbind /sys "$r/sys"
cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"; chmod 0755 "$r/usr/sbin/policy-rc.d"
inroot() { chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
         PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
inroot apt-get update -qq
inroot apt-get install -y -qq --no-install-recommends $pkgs
rm -f "$r/usr/sbin/policy-rc.d" "$r/etc/resolv.conf"
umount -R "$r/dev" "$r/proc" "$r/sys" 2>/dev/null || umount -l "$r/dev" "$r/proc" "$r/sys"
SERVICES
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$cache/.complete" ] || [ ! -f "$root/usr/src/kamailio/.debian-version" ]; then
  rm -f "$cache/.complete"
  start=$(date +%s)
  build_root
  echo "debian13-root: built in $(( $(date +%s) - start ))s: $root" >&2
fi
if [ ! -x "$root/usr/bin/redis-server" ] || [ ! -x "$root/usr/bin/valkey-server" ]; then
  echo "debian13-root: installing $services into $root" >&2
  install_services
fi
flock -u 9

case ${1:-} in
  "") echo "$root" ;;
  run) shift; work=${1:?usage: debian13-root.sh run WORKDIR [--bind DIR]... -- CMD...}; shift
       run_in "$root" "$work" "$@" ;;
  *) echo "usage: debian13-root.sh [run WORKDIR [--bind DIR]... [--env N=V]... -- CMD...]" >&2; exit 2 ;;
esac
