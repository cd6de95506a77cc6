#!/usr/bin/env bash
# Builds one Kamailio release from ../shared/kamailio-src or master from
# ../shared/kamailio-next (MQUEUE_KAMAILIO_TARBALLS: directories, colon-separated,
# each with the tarballs and their SHA256SUMS) the way its users get it, with only the modules the tests load, into a
# cache outside the clone keyed by version and tarball checksum:
#   $MQUEUE_KAMAILIO_CACHE/<version>-<sha12>/{src,install}
# Prints the cache entry's path on its last line. A second call with the
# same tarball reuses the build.
#   5.x, 6.0: Kamailio's Makefile build (libsrdb1.so in the library dir)
#   6.1+:     CMake build (srdb1 linked into the kamailio binary); master
#             (6.2.0-dev) too: its src/ Makefiles are on their way out
set -euo pipefail

version=${1:?usage: kamailio-build.sh VERSION}
here=$(cd "$(dirname "$0")/.." && pwd)
search=${MQUEUE_KAMAILIO_TARBALLS:-$here/../shared/kamailio-src:$here/../shared/kamailio-next}
cache=${MQUEUE_KAMAILIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mqueue-rs/kamailio}
tarballs=
IFS=: read -ra dirs <<<"$search"
for d in "${dirs[@]}"; do
  [ -f "$d/kamailio-$version.tar.xz" ] && { tarballs=$d; break; }
done
[ -n "$tarballs" ] || { echo "kamailio-build: kamailio-$version.tar.xz not found in $search" >&2; exit 1; }
tarball="$tarballs/kamailio-$version.tar.xz"

sum=$(sha256sum "$tarball" | cut -c1-64)
if [ -f "$tarballs/SHA256SUMS" ]; then
  want=$(awk -v f="kamailio-$version.tar.xz" '$2 == f { print $1 }' "$tarballs/SHA256SUMS")
  [ -z "$want" ] || [ "$want" = "$sum" ] || {
    echo "kamailio-build: $tarball does not match SHA256SUMS ($sum != $want)" >&2; exit 1; }
fi
entry="$cache/$version-${sum:0:12}"
# One build of an entry at a time (several clones share the cache): a
# second caller waits for the first, then reuses its build.
mkdir -p "$cache"
exec 9>"$entry.lock"
flock 9
if [ -f "$entry/.complete" ]; then
  echo "$entry"
  exit 0
fi

# The modules the tests, the demo and the bench load.
modules="mqueue ctl pv xlog sl tm tmx rtimer acc acc_json app_lua app_jsdt cfgutils kex
         db_postgres db_sqlite db_text jsonrpcs xhttp xhttp_prom kemix"
modules=$(echo $modules)

# Kamailio bakes its install paths into the binary: build in place; an
# entry without .complete (an interrupted build) is started over.
rm -rf "$entry"
mkdir -p "$entry"
echo "kamailio-build: building Kamailio $version in $entry (modules: $modules)" >&2
tar -xJf "$tarball" -C "$entry"
mv "$entry/kamailio-$version" "$entry/src"
dest="$entry/install"
major=${version%%.*}; rest=${version#*.}; minor=${rest%%.*}
log="$entry/build.log"
if [ "$major" -gt 6 ] || { [ "$major" = 6 ] && [ "$minor" -ge 1 ]; }; then
  system=cmake
  cmake -S "$entry/src" -B "$entry/build" -DCMAKE_INSTALL_PREFIX="$dest" \
        -DMODULE_GROUP_NAME="" -DINCLUDE_MODULES="$modules" >"$log" 2>&1 \
    || { tail -40 "$log" >&2; exit 1; }
  make -C "$entry/build" -j"$(nproc)" install >>"$log" 2>&1 || { tail -40 "$log" >&2; exit 1; }
  rm -rf "$entry/build"
else
  system=make
  all=$(cd "$entry/src/src/modules" && ls -d */ | tr -d / | tr '\n' ' ')
  (cd "$entry/src" && make PREFIX="$dest" exclude_modules="$all" include_modules="$modules" cfg \
     && make -j"$(nproc)" all && make install) >"$log" 2>&1 || { tail -40 "$log" >&2; exit 1; }
fi
echo "$system" > "$entry/build-system"
touch "$entry/.complete"
echo "$entry"
