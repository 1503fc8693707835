#!/usr/bin/env bash
# The devices benchmarks (docs/performance-devices.md has the method and the
# last numbers), then a table against the issue's goals:
#
# - criterion (benches/devices.rs): Fleet::recompute over 1,000,000 devices
#   x 30 settings, Fleet::ingest per report, Devices::ingest of 1,000-report
#   batches into 100,000 devices on a SQLite file store, and its parts;
# - http: `tollgate run` (adopted fixture repo, SQLite store) taking
#   `tollgate simulate` over loopback, against the ceiling of the same HTTP
#   stack answering without work (`ingest_load ceiling`), alternately, at
#   each batch size and concurrency, REPEAT times; the server's memory after
#   each run and, for `tollgate run`, how many devices it tracks;
# - rss: the resident set of a process holding 1,000,000 devices in the
#   fleet index, against Fleet::memory_bytes.
#
#   scripts/bench-devices.sh                  # everything
#   scripts/bench-devices.sh http rss         # some parts: criterion, http, rss
#   scripts/bench-devices.sh --table          # reprint the table of the last run
#
# Environment: DEVICES (100000), BATCH ("1000 500"), ROUNDS (5), CONCURRENCY
# (2), REPEAT (2), RSS_DEVICES (1000000); BATCH and CONCURRENCY take lists. Needs curl and jq; Linux
# (/proc). Prints `uptime` with every measurement: the machine is shared,
# and numbers taken under another load are not comparable.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench-devices.sh: $*" >&2; exit 1; }
say() { echo "bench-devices.sh: $*" >&2; }
for tool in curl jq; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
[[ -r /proc/self/status ]] || die "this needs Linux: memory is read from /proc/PID/status"

# What users run: backtraces off (RUST_BACKTRACE makes every captured error
# expensive, see docs/performance.md).
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

devices="${DEVICES:-100000}"
batches="${BATCH:-1000 500}"
rounds="${ROUNDS:-5}"
concurrency="${CONCURRENCY:-2}"
repeat="${REPEAT:-2}"
rss_devices="${RSS_DEVICES:-1000000}"

table_only=false
parts=()
for arg in "$@"; do
    case "$arg" in
        --table) table_only=true ;;
        criterion | http | rss) parts+=("$arg") ;;
        *) die "unknown argument $arg (expected criterion, http, rss or --table)" ;;
    esac
done
[[ ${#parts[@]} -gt 0 ]] || parts=(criterion http rss)
want() {
    local p
    for p in "${parts[@]}"; do [[ $p == "$1" ]] && return 0; done
    return 1
}

target_dir="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
results_dir="$target_dir/bench-devices"
results="$results_dir/results.jsonl"
criterion="$target_dir/criterion"
load() { uptime | sed 's/.*load average: //'; }

work=""
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    [[ -n "$work" ]] && rm -rf "$work"
}
trap cleanup EXIT

# status_kib PID FIELD: a /proc/PID/status field in KiB.
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# cpu_ticks PID: user + system CPU time of PID so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
clock_ticks="$(getconf CLK_TCK)"

# serve KIND DIR: starts the real controller or the ceiling on DIR's
# fixture config, waits until it is ready, sets $pid and $api.
serve() {
    local kind="$1" dir="$2"
    case "$kind" in
        tollgate) "$tollgate" run --config "$dir/controller.yaml" --adopt HEAD >"$dir/stdout" 2>"$dir/stderr" & ;;
        ceiling) "$ingest_load" ceiling "$dir/controller.yaml" >"$dir/stdout" 2>"$dir/stderr" & ;;
    esac
    pid=$!
    api=""
    for _ in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr" >&2; die "$kind exited"; }
        api="$(sed -n 's/^tollgate: serving the API on //p' "$dir/stdout")"
        [[ -n "$api" ]] && break
        sleep 0.05
    done
    [[ -n "$api" ]] || die "$kind did not start listening"
    for _ in $(seq 1 600); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" == 200 ]] && return 0
        sleep 0.05
    done
    die "$kind never became ready"
}

stop() {
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

# http_run KIND CONCURRENCY BATCH: one simulator run against a fresh server.
http_run() {
    local kind="$1" conc="$2" batch="$3" dir
    dir="$(mktemp -d "$work/$kind.XXXX")"
    "$ingest_load" fixture "$dir" 127.0.0.1:0 >"$dir/fixture.json"
    local reporter viewer
    reporter="$(jq -r .reporter_token "$dir/fixture.json")"
    viewer="$(jq -r .viewer_token "$dir/fixture.json")"
    serve "$kind" "$dir"
    local before after ticks
    before="$(load)"
    ticks="$(cpu_ticks "$pid")"
    say "$kind, concurrency $conc: $devices devices, batch $batch, $rounds rounds (load $before)"
    TOLLGATE_TOKEN="$reporter" "$tollgate" simulate -o json --server "$api" --devices "$devices" \
        --batch "$batch" --concurrency "$conc" --rounds "$rounds" --interval 0 >"$dir/sim.json" ||
        say "the simulator reported failures (see the counts)"
    after="$(load)"
    ticks=$(($(cpu_ticks "$pid") - ticks))
    local tracked=null
    if [[ $kind == tollgate ]]; then
        tracked="$(curl -sf -H "Authorization: Bearer $viewer" "$api/v1/drift?limit=1" | jq .summary.devices)"
    fi
    jq -c --arg kind "$kind" --argjson conc "$conc" --arg before "$before" --arg after "$after" \
        --argjson tracked "$tracked" --argjson rss "$(status_kib "$pid" VmRSS)" \
        --argjson anon "$(status_kib "$pid" RssAnon)" --argjson hwm "$(status_kib "$pid" VmHWM)" \
        --argjson ticks "$ticks" --argjson hz "$clock_ticks" \
        '{part: "http", kind: $kind, concurrency: $conc, devices, batch: '"$batch"', rounds,
          reports_per_sec, p50_ms: .latency.p50_ms, p99_ms: .latency.p99_ms, max_ms: .latency.max_ms,
          server_cpu_us_per_report: (if .reported > 0 then $ticks / $hz * 1e6 / .reported else null end),
          reported, accepted, http_errors, throttled, tracked: $tracked,
          rss_kib: $rss, rss_anon_kib: $anon, hwm_kib: $hwm, load_before: $before, load_after: $after}' \
        "$dir/sim.json" | tee -a "$results" >&2
    stop
    rm -rf "$dir"
}

if ! $table_only; then
    mkdir -p "$results_dir"
    : >"$results"
    say "building tollgate and examples/ingest_load (release)"
    cargo build --release --locked --bin tollgate --example ingest_load >&2
    tollgate="$target_dir/release/tollgate"
    ingest_load="$target_dir/release/examples/ingest_load"
    work="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench-devices.XXXXXX")"

    if want criterion; then
        say "criterion (load $(load))"
        cargo bench --locked --bench devices >&2
        jq -nc --arg load "$(load)" '{part: "criterion", load_after: $load}' >>"$results"
    fi
    if want http; then
        for batch in $batches; do
            for conc in $concurrency; do
                for r in $(seq 1 "$repeat"); do
                    # Alternate which goes first, so neither always gets the quieter minute.
                    if ((r % 2)); then order="ceiling tollgate"; else order="tollgate ceiling"; fi
                    for kind in $order; do http_run "$kind" "$conc" "$batch"; done
                done
            done
        done
    fi
    if want rss; then
        before="$(load)"
        say "fleet index of $rss_devices devices in one process (load $before)"
        "$ingest_load" rss "$rss_devices" | jq -c --arg load "$before" '. + {part: "rss", load_before: $load}' |
            tee -a "$results" >&2
    fi
fi

[[ -f $results ]] || die "no results yet: run without --table first"

# Mean point estimate of one criterion benchmark, in ns, or nothing.
est() {
    local f="$criterion/$1/new/estimates.json"
    [[ -f $f ]] && jq -r '.mean.point_estimate' "$f" || true
}

echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
echo
has() { jq -se --arg p "$1" 'any(.[]; .part == $p)' "$results" >/dev/null; }
if has http; then
    echo "Ingestion over HTTP: tollgate simulate -> tollgate run (SQLite) vs the no-work ceiling"
    printf "%-10s %-9s %10s %8s %8s %9s %8s %8s %9s %9s  %s\n" batch/conc server "reports/s" "p50 ms" "p99 ms" "of ceil." "CPU us/r" "errors" "tracked" "RSS MiB" "load before / after"
    jq -rs '
        def setup: "\(.batch)/\(.concurrency)";
        (map(select(.part == "http" and .kind == "ceiling")) | group_by(setup)
            | map({key: (.[0] | setup), value: (map(.reports_per_sec) | add / length)}) | from_entries) as $ceil
        | .[] | select(.part == "http")
        | [setup, .kind, .reports_per_sec, .p50_ms, .p99_ms,
           (if .kind == "tollgate" and $ceil[setup] then "\((100 * .reports_per_sec / $ceil[setup]) * 10 | round / 10)%" else "-" end),
           ((.server_cpu_us_per_report // null) | if . then (. * 10 | round / 10) else "-" end),
           .http_errors, (.tracked // "-"), ((.rss_kib / 1024) | round), "\(.load_before) / \(.load_after)"]
        | @tsv' "$results" |
        while IFS=$'\t' read -r c k r p50 p99 of cpu err tr rss l; do
            printf "%-10s %-9s %10.0f %8.1f %8.1f %9s %8s %8s %9s %9s  %s\n" "$c" "$k" "$r" "$p50" "$p99" "$of" "$cpu" "$err" "$tr" "$rss" "$l"
        done
    jq -rs '[.[] | select(.part == "http")][0]
        | "goal: >= 20,000 reports/s with p99 < 100 ms (each run: \(.devices) devices, \(.rounds) rounds)"' \
        "$results"
    echo
fi

row() {
    awk -v label="$1" -v ns="$2" -v per="${3:-1}" -v goal="${4:-}" '
        function t(x) {
            if (x >= 1e9) return sprintf("%.2f s", x / 1e9)
            if (x >= 1e6) return sprintf("%.1f ms", x / 1e6)
            if (x >= 1e3) return sprintf("%.2f us", x / 1e3)
            return sprintf("%.0f ns", x)
        }
        BEGIN {
            if (ns == "") { printf "%-52s %11s\n", label, "-"; exit }
            printf "%-52s %11s %13s %12.0f/s  %s\n", label, t(ns), t(ns / per) " each", per * 1e9 / ns, goal
        }'
}
# Criterion keeps its last estimates; they are shown when the run that wrote
# this table ran criterion.
if has criterion; then
    echo "In-process (criterion means; per device or report; rate)"
    row "Fleet::recompute, 1M devices x 30, nothing changed" "$(est fleet_recompute/steady_1M_x30)" 1000000 "goal < 2 s"
    row "Fleet::recompute, 1M devices x 30, new digest" "$(est fleet_recompute/new_digest_1M_x30)" 1000000 "goal < 2 s"
    row "Fleet::ingest, 1,000 reports into 1M devices" "$(est fleet_ingest/batch_1000_into_1M)" 1000
    row "Devices::ingest, 1,000 reports into 100k, SQLite" "$(est devices_ingest/batch_1000_into_100k)" 1000
    row "  parse_reports + Devices::ingest" "$(est devices_ingest/parse_and_ingest_1000_into_100k)" 1000
    row "  part: serialise 1,000 reports (no longer done)" "$(est ingest_parts/serialize_to_text_1000)" 1000
    row "  part: commit 1,000 device rows (Values)" "$(est ingest_parts/commit_1000_device_rows)" 1000
    row "  part: commit 1,000 device rows (JSON text)" "$(est ingest_parts/commit_1000_device_rows_json)" 1000
    jq -r 'select(.part == "criterion") | "load after the criterion run: \(.load_after)"' "$results"
    echo
fi
if has rss; then
    echo "Memory of the fleet index (one process, reports of 30 settings)"
    jq -r 'select(.part == "rss") |
        "devices \(.devices), open findings \(.findings_open)\n" +
        "RSS growth per device           \(.rss_growth_bytes_per_device | round) B (anonymous \(.anon_growth_bytes_per_device | round) B)   goal < 1024 B\n" +
        "Fleet::memory_bytes per device  \(.memory_bytes_per_device | round) B\n" +
        "RSS \(.rss_before_kib / 1024 | round) -> \(.rss_after_kib / 1024 | round) MiB; building it \(.ingest_secs * 10 | round / 10) s; a recompute \(.recompute_secs * 1000 | round) ms; load \(.load_before)"' \
        "$results"
fi
