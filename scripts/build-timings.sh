#!/usr/bin/env bash
# Compile-time figures for one commit, measured in a throwaway clone with its
# own empty target directory:
#   1. `cargo build --timings` from cold (the HTML report is kept);
#   2. `cargo test --no-run` after touching each named file (incremental);
#   3. `cargo test` wall time (PostgreSQL and OPA used when their variables are set).
#
#   scripts/build-timings.sh REV OUT_DIR label=path [label=path...]
#
# Run it for two commits one after the other to compare them on one machine.
set -euo pipefail

rev="$1"
out="$2"
shift 2
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

git clone -q "$repo" "$work/src"
git -C "$work/src" checkout -q "$rev"
cd "$work/src"
export CARGO_TARGET_DIR="$work/target"
export CARGO_INCREMENTAL=1

seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log" >&2; return 1; }
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

# Fetch dependencies first so the cold build measures compiling, not downloading.
cargo fetch --locked >/dev/null 2>&1

report="$out/timings.tsv"
printf 'measure\tseconds\n' >"$report"
printf 'cold cargo build --timings\t%s\n' "$(seconds cargo build --locked --timings)" >>"$report"
cp -r "$CARGO_TARGET_DIR/cargo-timings" "$out/" 2>/dev/null || true

# Warm the test binaries once, then time the rebuild after each touch.
seconds cargo test --locked --workspace --no-run >/dev/null
for pair in "$@"; do
    label="${pair%%=*}"
    file="${pair#*=}"
    # An appended comment changes the file's content, as an edit would.
    echo "// timing touch" >>"$file"
    printf 'cargo test --no-run after touching %s (%s)\t%s\n' "$label" "$file" \
        "$(seconds cargo test --locked --workspace --no-run)" >>"$report"
    git checkout -q -- "$file"
    seconds cargo test --locked --workspace --no-run >/dev/null
done

printf 'cargo test (warm build)\t%s\n' "$(INSTA_UPDATE=no seconds cargo test --locked --workspace)" >>"$report"
printf 'test binaries\t%s\n' "$(find "$CARGO_TARGET_DIR/debug/deps" -maxdepth 1 -type f -executable -newer "$work/src/Cargo.toml" | wc -l)" >>"$report"
cat "$report"
