#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/fuzz_targets) for SECS seconds each.
#   scripts/fuzz.sh SECS keep   grow the committed corpus (make fuzz)
#   scripts/fuzz.sh SECS temp   new inputs go to a temp dir (make test)
# Needs the nightly toolchain (on the machine) and cargo-fuzz (installed
# from crates.io when missing). Fails, saying what is missing, otherwise.
set -euo pipefail
secs=${1:-300}
mode=${2:-keep}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: the nightly Rust toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked --quiet
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in param ops spill log; do
  mkdir -p "fuzz/corpus/$target"
  if [ "$mode" = temp ]; then
    mkdir -p "$scratch/$target"
    dirs=("$scratch/$target" "fuzz/corpus/$target")
  else
    dirs=("fuzz/corpus/$target")
  fi
  log="$scratch/$target.log"
  if ! cargo +nightly fuzz run "$target" "${dirs[@]}" -- -max_total_time="$secs" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: target $target failed (reproducer under fuzz/artifacts/$target)" >&2
    exit 1
  fi
  echo "fuzz $target: $(grep -E '^Done [0-9]+ runs' "$log" | tail -1)"
done
