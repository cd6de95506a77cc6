#!/usr/bin/env bash
# `make deb DEBIAN=13`: the package for Debian 13's kamailio, built inside
# the Debian 13 root (scripts/debian13-root.sh) against that root's own
# kamailio package and its source package, with this machine's Rust
# toolchain mounted in. The root stays clean (a throwaway overlay); the
# module is built in target/debian13 and the package lands in build/:
#   build/kamailio-mqueue-rs_<version>+kamailio<Debian 13's kamailio version>_<arch>.deb
# Prints the package's path on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
[ -x "$cargo_home/bin/cargo" ] || { echo "deb-debian13: no cargo in $cargo_home/bin (install Rust with rustup)" >&2; exit 1; }

bash scripts/debian13-root.sh >/dev/null
mkdir -p build/debian13
work=$(mktemp -d "$here/build/debian13/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
# kamailio from the root's download cache (the exact version the source
# package in /usr/src/kamailio is of), then the module and the package.
bash scripts/debian13-root.sh run "$work" --bind "$here" --bind "$cargo_home" --bind "$rustup_home" \
  --env CARGO_HOME="$cargo_home" --env RUSTUP_HOME="$rustup_home" \
  --env PATH="$cargo_home/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --env KAMAILIO_BIN=/usr/sbin/kamailio --env KAMAILIO_SRC=/usr/src/kamailio \
  --env CARGO_TARGET_DIR="$here/target/debian13" -- bash -euc '
    cd "$1"
    apt-get install -y -qq --no-install-recommends kamailio="$(cat /usr/src/kamailio/.debian-version)" >/dev/null
    cargo build --release --locked
    cp target/debian13/release/libmqueue.so build/debian13/mqueue.so
    bash scripts/deb.sh build/debian13/mqueue.so' bash "$here" | tail -n 1
