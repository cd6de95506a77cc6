#!/usr/bin/env bash
# The integration suite against every Kamailio it can get: Debian's packaged
# 5.6.3 (the default host) and each release tarball in
# ../shared/kamailio-src (built once into a cache by kamailio-build.sh). For
# each, our module is built for that host and every integration test runs
# with that version's own C mqueue.so as the oracle (the Debian package test
# runs on Debian's Kamailio only: the package depends on Debian's kamailio).
#
# MQUEUE_REQUIRE_VERSIONS="5.8.8 6.0.1 6.1.4" makes a version that cannot be
# tested an error (.ci/run sets it). MQUEUE_VERSIONS limits the tarball
# versions tried. Ends with one line naming what was tested and what not.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
tarballs=${MQUEUE_KAMAILIO_TARBALLS:-$here/../shared/kamailio-src}
tested=()
untested=()
failed=()

run_suite() { # label bin modules module panic_module [test args...]
  echo "=== integration tests on Kamailio $1 ($2)"
  MQUEUE_KAMAILIO_BIN=$2 MQUEUE_KAMAILIO_MODULES=$3 MQUEUE_MODULE=$4 MQUEUE_PANIC_MODULE=$5 \
    cargo test --release --no-fail-fast --test '*' -- --test-threads=2 "${@:6}"
}

debian_version=$(/usr/sbin/kamailio -v 2>/dev/null | sed -n 's/^version: kamailio \([^ ]*\).*/\1/p')
if run_suite "$debian_version (Debian package)" /usr/sbin/kamailio \
     /usr/lib/x86_64-linux-gnu/kamailio/modules "$here/build/mqueue.so" "$here/build/mqueue-panic.so"; then
  tested+=("$debian_version")
else
  failed+=("$debian_version")
fi

versions=${MQUEUE_VERSIONS:-$(ls "$tarballs" 2>/dev/null | sed -n 's/^kamailio-\(.*\)\.tar\.xz$/\1/p' | sort -V)}
for v in $versions; do
  if ! entry=$(bash scripts/kamailio-build.sh "$v" | tail -n 1); then
    untested+=("$v (the Kamailio build failed, see above)")
    continue
  fi
  bin="$entry/install/sbin/kamailio"
  mods=$(dirname "$(find "$entry/install" -path '*/modules/mqueue.so' | head -n 1)")
  if ! make --no-print-directory build-host KAMAILIO_BIN="$bin" KAMAILIO_SRC="$entry/src" HOST_DIR="build/$v"; then
    failed+=("$v (our module did not build)")
    continue
  fi
  # The Debian package test needs Debian's kamailio package: Debian's run only.
  if run_suite "$v ($(cat "$entry/build-system") build)" "$bin" "$mods" \
       "$here/build/$v/mqueue.so" "$here/build/$v/mqueue-panic.so" --skip debian_package; then
    tested+=("$v")
  else
    failed+=("$v")
  fi
done

for v in ${MQUEUE_REQUIRE_VERSIONS:-}; do
  case " ${tested[*]} ${failed[*]} " in
    *" $v "*|*" $v ("*) ;;
    *) untested+=("$v (required, no tarball kamailio-$v.tar.xz in $tarballs)") ;;
  esac
done

summary="Kamailio versions tested: ${tested[*]:-none}"
[ ${#failed[@]} -eq 0 ] || summary+="; FAILED: ${failed[*]}"
[ ${#untested[@]} -eq 0 ] || summary+="; not tested: $(IFS=';'; echo "${untested[*]}")"
echo "$summary"
[ ${#failed[@]} -eq 0 ] || exit 1
if [ -n "${MQUEUE_REQUIRE_VERSIONS:-}" ] && [ ${#untested[@]} -gt 0 ]; then exit 1; fi
exit 0
