#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, every test,
# and the risk policy's parity with OPA. Installs what it needs on a fresh
# machine; heavy builds are cached outside the checkout, keyed by version.
set -euo pipefail
cd "$(dirname "$0")/.."

export TOLLGATE_CACHE="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
# Keep cargo's build output outside the clone so a fresh clone builds warm.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TOLLGATE_CACHE/target}"
mkdir -p "$TOLLGATE_CACHE"
if [ -n "${CI:-}" ]; then
    # CI builds each revision once: incremental state would only fill the disk.
    export CARGO_INCREMENTAL=0
    rm -rf "$CARGO_TARGET_DIR/debug/incremental"
fi

step() { printf '\n==> %s\n' "$*"; }

need() {
    # need <command> <debian package>
    if ! command -v "$1" >/dev/null 2>&1; then
        step "installing $2"
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
        else
            sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
        fi
    fi
}

need git git
need cc build-essential
need go golang-go
need ssh-keygen openssh-client
need gpg gnupg
command -v cargo >/dev/null || { echo "cargo is required (install Rust with rustup)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

step "OPA (policy parity peer)"
TOLLGATE_OPA="$(bash scripts/opa.sh)"
export TOLLGATE_OPA

step "PostgreSQL (store tests run against a real server)"
TOLLGATE_TEST_POSTGRES_URL="$(bash scripts/postgres.sh)"
export TOLLGATE_TEST_POSTGRES_URL

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, integration, property, snapshot, policy parity with OPA)"
INSTA_UPDATE=no cargo test --workspace --locked

step "benchmarks compile"
cargo bench --workspace --no-run --locked >/dev/null
