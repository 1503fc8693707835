#!/usr/bin/env bash
# The controller measured as a process, what a criterion bench cannot do
# (docs/performance-controller.md has the method and the last numbers):
#
# - resident memory (VmRSS, and the peak VmHWM, from /proc/PID/status) of
#   `tollgate run`: idle after startup on the quickstart sample repo; then on
#   a governed repo of 1,000 baselines with a store pre-filled with 10,000
#   promotions of history (examples/controller_fixture.rs), after a few
#   polls, after reading every promotion page and the whole audit export,
#   and after another 1,000 commits (see --grow);
# - time from a new commit to its promotion existing, end to end over HTTP:
#   the trigger path (`POST /v1/trigger`, then `GET /v1/promotions` until it
#   appears) and the poll path (no trigger, `interval: 1s`), on both repos.
#
#   scripts/bench-controller.sh [--runs N] [--grow M]
#
# --runs: commits per latency series (default 20); --grow: commits the
# 1,000-baseline controller takes, one pass each, before memory and latency
# are measured once more (default 1000): each fetch adds a pack to its mirror
# until it holds more than 32, when the controller repacks it into one.
#
# Needs curl and jq; Linux (/proc). Works in a temporary directory that
# it removes at the end (TOLLGATE_BENCH_KEEP=1 keeps it). Prints `uptime`
# before each measurement: numbers taken under load are not comparable.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench-controller.sh: $*" >&2; exit 1; }
say() { echo "bench-controller.sh: $*" >&2; }
for tool in curl jq; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
[[ -r /proc/self/status ]] || die "this needs Linux: memory is read from /proc/PID/status"

runs=20
grow=1000
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) runs="${2:?--runs takes a number}"; shift 2 ;;
        --grow) grow="${2:?--grow takes a number}"; shift 2 ;;
        *) die "unknown argument $1 (expected --runs N or --grow N)" ;;
    esac
done

# What users run: no backtrace capture (it slows planning, see docs/performance.md).
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
export TOLLGATE_LOG="${TOLLGATE_LOG:-warn}"

say "building tollgate and the fixture (release)"
cargo build --release --locked --bin tollgate --example controller_fixture >&2
target_dir="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
tollgate="$target_dir/release/tollgate"
fixture="$target_dir/release/examples/controller_fixture"

work="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench-controller.XXXXXX")"
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [[ "${TOLLGATE_BENCH_KEEP:-0}" == 1 ]]; then
        say "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

token="bench-operator-$RANDOM$RANDOM"
token_sha="$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)"
auth=(-H "Authorization: Bearer $token")
results="$work/results.txt"
: >"$results"

record() { echo "$*" | tee -a "$results"; }
load() { uptime | sed 's/.*load average: /load /'; }

# config DIR REPO INTERVAL: a ControllerConfig on an ephemeral port.
config() {
    cat >"$1/config.yaml" <<EOF
apiVersion: tollgate.dev/v1alpha1
kind: ControllerConfig
source: {url: "file://$2", branch: main, interval: $3}
store: "sqlite://$1/state.db"
listen: "127.0.0.1:0"
forge: {local: {}}
mirror: "$1/mirror"
tokens:
  - {name: bench, role: operator, sha256: "$token_sha"}
EOF
}

# start DIR [ARGS...]: runs the controller on DIR/config.yaml, waits until it
# is ready (its first pass succeeded) and sets $pid, $api, $mirror and $ready_ms.
start() {
    local dir="$1"
    shift
    mirror="$dir/mirror"
    local t0=$EPOCHREALTIME
    "$tollgate" run --config "$dir/config.yaml" "$@" >"$dir/stdout" 2>>"$dir/stderr" &
    pid=$!
    api=""
    for _ in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr" >&2; die "tollgate run exited"; }
        api="$(sed -n 's/^tollgate: serving the API on //p' "$dir/stdout")"
        [[ -n "$api" ]] && break
        sleep 0.05
    done
    [[ -n "$api" ]] || die "tollgate run did not start listening"
    for _ in $(seq 1 3000); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" == 200 ]] && break
        sleep 0.02
    done
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" == 200 ]] || die "tollgate run never became ready"
    ready_ms="$(ms_since "$t0")"
}

stop() {
    kill -TERM "$pid"
    wait "$pid" || die "tollgate run exited with $? on SIGTERM"
    pid=""
}

ms_since() { echo "$1 $EPOCHREALTIME" | awk '{printf "%.1f", ($2 - $1) * 1000}'; }

# memory LABEL: VmRSS (of which anonymous: heap and stacks; the rest is
# mapped files, mostly the binary) and its peak VmHWM, in MiB.
memory() {
    local status="/proc/$pid/status"
    mib() { awk -v k="$1:" '$1 == k {printf "%.1f", $2 / 1024}' "$status"; }
    local fds packs
    fds="$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)"
    packs="$(find "$mirror/objects/pack" -name '*.pack' 2>/dev/null | wc -l)"
    record "$(printf '%-46s VmRSS %6s MiB (anon %6s)  VmHWM %6s MiB  fds %4s  mirror packs %4s  (%s)' \
        "$1" "$(mib VmRSS)" "$(mib RssAnon)" "$(mib VmHWM)" "$fds" "$packs" "$(load)")"
}

# latency LABEL REPO FILE FIRST MODE: RUNS commits to FILE, each timed from
# the moment it exists to its promotion being listed (MODE trigger: after
# POST /v1/trigger; poll: by the next interval). The observer is one process
# asking in a tight loop (examples/controller_fixture.rs, `latency`).
latency() {
    local label="$1" repo="$2" file="$3" first="$4" mode="$5" line
    local flags=()
    if [[ "$mode" == trigger ]]; then
        flags+=(--trigger)
    fi
    say "$label: $runs commits ($(load))"
    line="$(TOLLGATE_TOKEN="$token" "$fixture" latency --server "$api" --repo "$repo" --file "$file" \
        --runs "$runs" --from "$first" --label "$label" "${flags[@]}")"
    record "$line ($(load))"
}

# read_everything OUT: every promotion page, the whole audit export (to OUT)
# and the status.
read_everything() {
    local out="$1" before="" page n=0 next
    while :; do
        page="$(curl -sf "${auth[@]}" "$api/v1/promotions?limit=500${before:+&before=$before}")"
        n=$((n + $(jq '.promotions | length' <<<"$page")))
        next="$(jq -r '.next_before // empty' <<<"$page")"
        [[ -z "$next" ]] && break
        before="$next"
    done
    local bytes
    bytes="$(curl -sf "${auth[@]}" "$api/v1/audit/export" -o "$out" -w '%{size_download}')"
    curl -sf "${auth[@]}" "$api/v1/status" -o /dev/null
    say "read $n promotions and an audit export of $((bytes / 1024)) KiB ($(wc -l <"$out") events)"
}

record "machine: $(nproc) cores, $(awk '/^model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo), $(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"

# --- The quickstart sample repo ------------------------------------------
small="$work/sample"
mkdir -p "$small"
# Only the repo: the controller runs under this script's config.
"$tollgate" quickstart --no-run --dir "$small/quickstart" >/dev/null
sample_repo="$small/quickstart/repo"
sample_file="baselines/ios/phones/corp-ios.yaml"
config "$small" "$sample_repo" 1h
say "sample repo: starting ($(load))"
start "$small" --adopt HEAD
record "sample: ready after ${ready_ms} ms"
sleep 5
memory "sample repo, idle after startup"
latency "sample repo, trigger path" "$sample_repo" "$sample_file" 1 trigger
memory "sample repo, after $runs triggered passes"
stop
config "$small" "$sample_repo" 1s
start "$small"
latency "sample repo, poll path (interval 1s)" "$sample_repo" "$sample_file" $((runs + 1)) poll
stop

# --- 1,000 baselines, 10,000 promotions of history -----------------------
big="$work/fleet"
say "fleet fixture: 1,000 baselines, 10,000 promotions ($(load))"
"$fixture" "$big" --baselines 1000 --promotions 10000 | tee -a "$results"
fleet_file="baselines/ios/team-00/fleet-ios-0000.yaml"
config "$big" "$big/repo" 1h
say "fleet: starting ($(load))"
start "$big"
record "fleet: ready after ${ready_ms} ms (mirror cloned, the unplanned tip planned against 1,000 baselines)"
sleep 5
memory "fleet, idle after startup"
latency "fleet, trigger path" "$big/repo" "$fleet_file" 1 trigger
memory "fleet, after $runs triggered passes"
read_everything "$work/export.jsonl"
memory "fleet, after reading promotions and export"
sleep 5
memory "fleet, 5 s later"
readers=()
for i in 1 2 3 4; do
    read_everything "$work/export-$i.jsonl" &
    readers+=($!)
done
wait "${readers[@]}"
memory "fleet, after 4 concurrent readers"
# A controller that has run for a while: each fetch that brought a commit
# left a pack in its mirror, repacked into one past 32 packs.
say "fleet: $grow more commits, one triggered pass each ($(load))"
runs_saved="$runs"
runs="$grow"
latency "fleet, trigger path over $grow more commits" "$big/repo" "$fleet_file" 1001 trigger
runs="$runs_saved"
memory "fleet, after $grow more commits"
latency "fleet, trigger path after $grow more commits" "$big/repo" "$fleet_file" $((1001 + grow)) trigger
stop
config "$big" "$big/repo" 1s
# A fresh clone, so that the poll path is measured without the packs of the
# growth phase (a restart alone keeps them: they are files in the mirror).
rm -rf "$big/mirror"
start "$big"
latency "fleet, poll path (interval 1s)" "$big/repo" "$fleet_file" $((runs + 1)) poll
memory "fleet, after $runs polled passes"
stop

echo
echo "== results"
cat "$results"
