#!/usr/bin/env bash
# Runs Tollgate's benchmarks against their peers and prints a table of
# ratios (tollgate / peer, mean times; lower is better). See
# docs/performance.md for the method and the last recorded numbers.
#
#   scripts/bench.sh                 # plan, diff and policy (+ the OPA peer)
#   scripts/bench.sh plan diff       # only some of them
#   scripts/bench.sh --table         # only print the table from the last run
#
# Benches: plan (tollgate plan vs git diff --name-status on generated repos of
# 500 and 5,000 baselines, cached under $TOLLGATE_CACHE/bench-repos), diff
# (semantic diff of a 10,000-setting baseline vs diff -u), policy (regorus vs
# OPA on the risk policy; skipped when benches/policy.rs is absent, its OPA
# peer skipped when Go is not installed). Needs git, diff and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench.sh: $*" >&2; exit 1; }
command -v jq >/dev/null 2>&1 || die "jq is required to read criterion's results"

# Measure what users run: with RUST_BACKTRACE=1 every anyhow error regorus
# builds while parsing the policy captures a backtrace, which adds milliseconds
# to every plan (docs/performance.md).
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

table_only=false
requested=()
for arg in "$@"; do
    case "$arg" in
        --table) table_only=true ;;
        plan | diff | policy) requested+=("$arg") ;;
        *) die "unknown argument $arg (expected plan, diff, policy or --table)" ;;
    esac
done
[[ ${#requested[@]} -gt 0 ]] || requested=(plan diff policy)

benches=()
for b in "${requested[@]}"; do
    if [[ -f "benches/$b.rs" ]]; then
        benches+=("$b")
    else
        echo "bench.sh: benches/$b.rs does not exist yet; skipping it" >&2
    fi
done

target_dir="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
criterion="$target_dir/criterion"
# Only results written by this run count, so a skipped bench never shows
# stale numbers; --table reuses whatever is there.
since="$target_dir/.bench-started"
opa_results="$target_dir/.bench-opa.jsonl"

has_bench() {
    local b
    for b in "${benches[@]}"; do [[ $b == "$1" ]] && return 0; done
    return 1
}

if ! $table_only; then
    touch "$since"
    rm -f "$opa_results"
    cargo build --release --bin tollgate
    if [[ ${#benches[@]} -gt 0 ]]; then
        args=()
        for b in "${benches[@]}"; do args+=(--bench "$b"); done
        cargo bench "${args[@]}"
    fi
    # The OPA peer runs after the Rust benches, never beside them: two cores.
    if has_bench policy; then
        if [[ -f benches/opa/main.go ]] && command -v go >/dev/null 2>&1; then
            (cd benches/opa && go run . inputs.json) >"$opa_results" ||
                { echo "bench.sh: the OPA peer failed; no policy ratios" >&2; rm -f "$opa_results"; }
        else
            echo "bench.sh: benches/opa or Go is missing; no policy ratios" >&2
        fi
    fi
fi

# Mean point estimate in ns of one criterion benchmark, or nothing.
est() {
    local f="$criterion/$1/new/estimates.json"
    [[ -f $f ]] || return 0
    if ! $table_only && [[ ! $f -nt $since ]]; then return 0; fi
    jq -r '.mean.point_estimate' "$f"
}

opa() {
    [[ -f $opa_results ]] || return 0
    jq -r --arg n "$1" 'select(.input == $n) | .ns_per_op' "$opa_results"
}

row() {
    awk -v label="$1" -v a="$2" -v b="$3" -v goal="${4:-}" '
        function t(x) {
            if (x == "") return "-"
            if (x >= 1e6) return sprintf("%.2f ms", x / 1e6)
            if (x >= 1e3) return sprintf("%.1f us", x / 1e3)
            return sprintf("%.0f ns", x)
        }
        BEGIN {
            ratio = (a != "" && b != "" && b > 0) ? sprintf("%.2fx", a / b) : "-"
            printf "%-56s %11s %11s %8s  %s\n", label, t(a), t(b), ratio, goal
        }'
}

echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
echo "Tools:   $(git --version), $(rustc --version)"
echo
printf "%-56s %11s %11s %8s  %s\n" "comparison (tollgate vs peer)" "tollgate" "peer" "ratio" "goal"
printf "%-56s %11s %11s %8s  %s\n" "-----------------------------" "--------" "----" "-----" "----"
for n in 500 5000; do
    git_1="$(est "plan_one_file/git_diff_process/$n")"
    row "plan, 1 file, $n baselines vs git diff --name-status" \
        "$(est "plan_one_file/tollgate_process/$n")" "$git_1" "<= 3x"
    row "  same, tollgate in-process" "$(est "plan_one_file/tollgate_in_process/$n")" "$git_1"
    row "  tollgate validate --rev HEAD vs the same" "$(est "plan_one_file/tollgate_validate_process/$n")" "$git_1"
done
for n in 500 5000; do
    row "plan, 50 files, $n baselines vs git diff --name-status" \
        "$(est "plan_50_files/tollgate_process/$n")" "$(est "plan_50_files/git_diff_process/$n")"
    row "  same vs git diff (full patch)" \
        "$(est "plan_50_files/tollgate_process/$n")" "$(est "plan_50_files/git_diff_patch_process/$n")"
done
echo
echo "Growth (same tool, ratio of times):"
row "plan, 1 file: 5000 vs 500 baselines" \
    "$(est plan_one_file/tollgate_process/5000)" "$(est plan_one_file/tollgate_process/500)" "~1x: repo size"
row "plan, 5000 baselines: 50 files vs 1 file" \
    "$(est plan_50_files/tollgate_process/5000)" "$(est plan_one_file/tollgate_process/5000)" "grows with change"
row "git diff --name-status, 5000: 50 files vs 1 file" \
    "$(est plan_50_files/git_diff_process/5000)" "$(est plan_one_file/git_diff_process/5000)"
echo
row "semantic diff, 10k settings (parse+diff) vs diff -u" \
    "$(est diff_10k_settings/tollgate_parse_and_diff)" "$(est diff_10k_settings/diff_u_process)"
row "  parse both files only vs diff -u" \
    "$(est diff_10k_settings/tollgate_parse)" "$(est diff_10k_settings/diff_u_process)"
row "  per-setting diff only vs diff -u" \
    "$(est diff_10k_settings/tollgate_diff)" "$(est diff_10k_settings/diff_u_process)"
row "  unified text diff (similar) vs diff -u" \
    "$(est diff_10k_settings/tollgate_unified_text)" "$(est diff_10k_settings/diff_u_process)"
if [[ -f benches/opa/inputs.json ]]; then
    echo
    for name in $(jq -r '.[].name' benches/opa/inputs.json); do
        row "policy evaluation '$name' (regorus vs OPA)" \
            "$(est "risk_policy_evaluate/$name")" "$(opa "$name")"
    done
fi
echo
echo "Plan phases, in-process, 1-file change of the 5000-baseline repo:"
for phase in startup_tollgate_version startup_git_version catalog_parse open_repo read_head_whole \
    read_and_validate_head parse_head_whole validate_head derive_base_from_head validate_head_from_valid_base \
    compile_policy diff_effective_and_evaluate_policy render_json; do
    row "  $phase" "$(est "plan_phases/$phase")" ""
done
