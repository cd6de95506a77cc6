#!/usr/bin/env bash
# Installs what the build, the demo and the tests need, and fetches the
# Kamailio source of the exact installed version for its headers.
# Idempotent: quick when everything is already there.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
src_dir="$here/kamailio-headers/src"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# binutils: nm for the symbol test; python3: make bench; postgresql and
# sqlite3: the persistence tests start a server and read rows with the clients;
# debootstrap: the Debian 13 root (scripts/debian13-root.sh); openssl: the
# rediss:// test makes its CA and certificates.
pkgs=(kamailio kamailio-extra-modules kamailio-lua-modules kamailio-sqlite-modules
      kamailio-postgres-modules sip-tester clang libclang-dev dpkg-dev valgrind
      binutils python3 postgresql sqlite3 redis-server redis-tools openssl
      bison flex cmake make gcc pkg-config libsqlite3-dev libpq-dev libjansson-dev
      liblua5.1-0-dev libssl-dev libevent-dev xz-utils lintian fakeroot debootstrap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
updated=0
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  as_root apt-get update -qq
  updated=1
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Headers: the Kamailio source of the installed version, unless KAMAILIO_SRC names one.
if [ -n "${KAMAILIO_SRC:-}" ]; then
  [ -f "$KAMAILIO_SRC/src/core/sr_module.h" ] || { echo "deps: KAMAILIO_SRC=$KAMAILIO_SRC has no src/core/sr_module.h" >&2; exit 1; }
  exit 0
fi
version=$(dpkg-query -W -f='${Version}' kamailio)
stamp="$here/kamailio-headers/.version"
if [ -f "$src_dir/src/core/sr_module.h" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # Mirror the machine's own Debian `deb` entries (same URIs, suites, keys),
  # so that set-up goes through whatever mirror or proxy apt already uses.
  echo "deps: adding deb-src entries derived from the machine's deb entries"
  derived=$(bash "$here/scripts/deb-src-entries.sh")
  [ -n "$derived" ] || { echo "deps: no Debian 'deb' entry found in /etc/apt to derive a deb-src entry from" >&2; exit 1; }
  printf '%s\n' "$derived" | as_root tee /etc/apt/sources.list.d/mqueue-rs-deb-src.sources >/dev/null
  updated=0
fi
[ "$updated" = 1 ] || as_root apt-get update -qq
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "deps: fetching the source of kamailio $version"
(cd "$tmp" && apt-get source -qq --download-only "kamailio=$version" >/dev/null)
(cd "$tmp" && dpkg-source -x --skip-patches ./kamailio_*.dsc src >/dev/null 2>&1 || dpkg-source -x ./kamailio_*.dsc src >/dev/null)
rm -rf "$src_dir"
mv "$tmp/src" "$src_dir"
echo "$version" > "$stamp"
echo "deps: kamailio source in $src_dir"
