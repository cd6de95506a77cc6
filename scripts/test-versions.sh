#!/usr/bin/env bash
# The integration suite on six hosts: Debian's packaged 5.6.3 (the default
# host), each release tarball in ../shared/kamailio-src, Kamailio's next
# release in ../shared/kamailio-next (master), each built once into a cache
# by kamailio-build.sh, and the Debian 13 package's lifecycle inside a
# Debian 13 root (scripts/debian13-root.sh).
#
# Debian's 5.6.3 runs every integration test. The other versions run the
# tests that exercise the host's ABI or compare with that version's own C
# mqueue.so (the oracle); the version-independent ones (ONCE below: the
# queue core under load, process death, Redis, spill files) run on
# Debian's only. While the tests of one host run, the next hosts' Kamailio and our
# module for them are built in the background (low priority).
#
# MQUEUE_REQUIRE_VERSIONS="5.8.8 6.0.1 6.1.4 6.2.0-dev1 debian13" makes a
# host that cannot be tested an error (.ci/run sets it). MQUEUE_VERSIONS
# limits the tarball versions tried; MQUEUE_DEBIAN13=0 leaves out the
# Debian 13 package. MQUEUE_ALL_TESTS=1 runs every test on every version.
# tests/redis.rs runs once more per Redis server of Debian 13 (Redis 8.0,
# Valkey 8.1, from the Debian 13 root), on Debian's Kamailio;
# MQUEUE_REDIS_SERVERS ("redis8 valkey" by default, "" for none) says which.
# Ends with one line naming what was tested and what not.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export MQUEUE_KAMAILIO_TARBALLS=${MQUEUE_KAMAILIO_TARBALLS:-$here/../shared/kamailio-src:$here/../shared/kamailio-next}
# Version-independent integration tests: run on Debian's Kamailio only.
ONCE="load soak restart redis spill process_death"
tested=()
untested=()
failed=()
start=$(date +%s)
elapsed() { local s=$(( $(date +%s) - start )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

run_suite() { # label bin modules module panic_module [cargo test args...]
  echo "=== [$(elapsed)] integration tests on Kamailio $1 ($2)"
  MQUEUE_KAMAILIO_BIN=$2 MQUEUE_KAMAILIO_MODULES=$3 MQUEUE_MODULE=$4 MQUEUE_PANIC_MODULE=$5 \
    cargo test --release --no-fail-fast "${@:6}"
}

versions=${MQUEUE_VERSIONS:-$(IFS=:; for d in $MQUEUE_KAMAILIO_TARBALLS; do ls "$d" 2>/dev/null; done \
  | sed -n 's/^kamailio-\(.*\)\.tar\.xz$/\1/p' | sort -uV)}
debian13=${MQUEUE_DEBIAN13:-1}

# The per-version tests: every test file but the ONCE ones and the package test.
per_version=()
for f in tests/*.rs; do
  t=$(basename "$f" .rs)
  [ "$t" != deb ] || continue
  case " $ONCE " in *" $t "*) [ "${MQUEUE_ALL_TESTS:-}" = 1 ] || continue ;; esac
  per_version+=(--test "$t")
done

# Background preparation, one host after the other: Kamailio into the
# cache, our module for it, then the Debian 13 root and package. Each
# step leaves a file in $state that the loop below waits for.
state=$(mktemp -d "${TMPDIR:-/tmp}/mqueue-matrix.XXXXXX")
prepare() {
  for v in $versions; do
    if entry=$(nice bash scripts/kamailio-build.sh "$v" 2>"$state/$v.log" | tail -n 1) && [ -n "$entry" ]; then
      echo "$entry" > "$state/$v.entry"
      if nice make --no-print-directory build-host KAMAILIO_BIN="$entry/install/sbin/kamailio" \
           KAMAILIO_SRC="$entry/src" HOST_DIR="build/$v" >>"$state/$v.log" 2>&1; then
        echo ok > "$state/$v.done"
      else
        echo module > "$state/$v.done"
      fi
    else
      echo kamailio > "$state/$v.done"
    fi
  done
  if [ "$debian13" = 1 ]; then
    if nice bash scripts/deb-debian13.sh >"$state/debian13.log" 2>&1; then
      echo ok > "$state/debian13.done"
    else
      echo package > "$state/debian13.done"
    fi
  fi
}
set -m
prepare </dev/null &
prep=$!
set +m
trap 'kill -- -"$prep" 2>/dev/null; rm -rf "$state"' EXIT
wait_for() { while [ ! -f "$state/$1.done" ]; do kill -0 "$prep" 2>/dev/null || break; sleep 2; done; cat "$state/$1.done" 2>/dev/null || echo lost; }

debian_version=$(/usr/sbin/kamailio -v 2>/dev/null | sed -n 's/^version: kamailio \([^ ]*\).*/\1/p')
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
if run_suite "$debian_version (Debian package, every test)" /usr/sbin/kamailio \
     "/usr/lib/$multiarch/kamailio/modules" "$here/build/mqueue.so" "$here/build/mqueue-panic.so" \
     --test '*' -- --test-threads=2 --skip debian13; then
  tested+=("$debian_version")
else
  failed+=("$debian_version")
fi

for v in $versions; do
  case $(wait_for "$v") in
    ok) ;;
    module) cat "$state/$v.log"; failed+=("$v (our module did not build)"); continue ;;
    *) cat "$state/$v.log"; untested+=("$v (the Kamailio build failed, see above)"); continue ;;
  esac
  entry=$(cat "$state/$v.entry")
  bin="$entry/install/sbin/kamailio"
  mods=$(dirname "$(find "$entry/install" -path '*/modules/mqueue.so' | head -n 1)")
  if run_suite "$v ($(cat "$entry/build-system") build, host ABI and differential tests)" "$bin" "$mods" \
       "$here/build/$v/mqueue.so" "$here/build/$v/mqueue-panic.so" "${per_version[@]}" -- --test-threads=2; then
    tested+=("$v")
  else
    failed+=("$v")
  fi
done

if [ "$debian13" = 1 ]; then
  case $(wait_for debian13) in
    ok)
      echo "=== [$(elapsed)] Debian 13 package lifecycle (in the Debian 13 root)"
      if cargo test --release --no-fail-fast --test deb debian13; then
        tested+=("debian13-package")
      else
        failed+=("debian13-package")
      fi ;;
    *) cat "$state/debian13.log"; failed+=("debian13-package (the package did not build, see above)") ;;
  esac
fi

# The Redis tests against Debian 13's servers (this machine's Redis ran
# them with the Debian suite above).
redis_tested=("$(redis-server --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/redis-\1/p')")
for srv in ${MQUEUE_REDIS_SERVERS-redis8 valkey}; do
  echo "=== [$(elapsed)] tests/redis.rs against Debian 13's $srv (Kamailio $debian_version)"
  if bash scripts/debian13-root.sh >/dev/null \
     && MQUEUE_REDIS_SERVER=$srv run_suite "$debian_version" /usr/sbin/kamailio \
       "/usr/lib/$multiarch/kamailio/modules" "$here/build/mqueue.so" "$here/build/mqueue-panic.so" \
       --test redis -- --test-threads=2; then
    case $srv in redis8) redis_tested+=("redis-8.0") ;; valkey) redis_tested+=("valkey-8.1") ;; *) redis_tested+=("$srv") ;; esac
  else
    failed+=("redis-on-$srv")
  fi
done

for v in ${MQUEUE_REQUIRE_VERSIONS:-}; do
  case " ${tested[*]} ${failed[*]} " in
    *" $v "*|*" $v ("*|*" $v-package "*|*" $v-package ("*) ;;
    *) untested+=("$v (required, not found: no tarball kamailio-$v.tar.xz in $MQUEUE_KAMAILIO_TARBALLS, or left out)") ;;
  esac
done

summary="Kamailio versions tested: ${tested[*]:-none}; Redis servers tested: ${redis_tested[*]}"
[ ${#failed[@]} -eq 0 ] || summary+="; FAILED: ${failed[*]}"
[ ${#untested[@]} -eq 0 ] || summary+="; not tested: $(IFS=';'; echo "${untested[*]}")"
echo "$summary (in $(elapsed))"
[ ${#failed[@]} -eq 0 ] || exit 1
if [ -n "${MQUEUE_REQUIRE_VERSIONS:-}" ] && [ ${#untested[@]} -gt 0 ]; then exit 1; fi
exit 0
