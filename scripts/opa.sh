#!/usr/bin/env bash
# Builds OPA (the reference Rego implementation) from its Go module into a cache
# directory outside the checkout and prints the path of the binary on stdout.
# Used as the parity peer for the risk policy (tests/policy.rs) and as the
# benchmark peer (benches/opa). Logs go to stderr so callers can do
#   TOLLGATE_OPA="$(scripts/opa.sh)" cargo test --test policy
set -euo pipefail

OPA_VERSION="v1.22.2"
cache_root="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
dir="$cache_root/opa-$OPA_VERSION"
bin="$dir/opa"

if [[ ! -x "$bin" ]]; then
    command -v go >/dev/null 2>&1 || { echo "opa.sh: go is required to build OPA" >&2; exit 1; }
    # OPA $OPA_VERSION needs Go 1.26; Go >= 1.21 fetches that toolchain itself
    # (GOTOOLCHAIN=auto), older ones cannot.
    go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
    if [[ ! "$go_minor" =~ ^[0-9]+$ ]] || (( go_minor < 21 )); then
        echo "opa.sh: $(go env GOVERSION) is too old to build OPA $OPA_VERSION (needs Go >= 1.21)" >&2
        exit 1
    fi
    mkdir -p "$dir"
    echo "opa.sh: building github.com/open-policy-agent/opa@$OPA_VERSION into $dir (takes a few minutes)" >&2
    # Build into a temporary GOBIN and move into place, so an interrupted build
    # never leaves a half-written binary that later runs would trust.
    tmp="$(mktemp -d "$dir/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    GOBIN="$tmp" GOFLAGS="${GOFLAGS:-} -trimpath" go install "github.com/open-policy-agent/opa@$OPA_VERSION" >&2
    mv "$tmp/opa" "$bin"
fi

"$bin" version >/dev/null || { echo "opa.sh: $bin does not run" >&2; exit 1; }
echo "$bin"
