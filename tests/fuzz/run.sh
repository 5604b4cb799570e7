#!/usr/bin/env bash
# Fuzzing that adds up across machines: each target's corpus is kept in the repository
# (tests/fuzz/corpora/<target>.tar.xz, minimised), so a run continues from everything earlier
# runs found instead of from the seeds.
#
#   tests/fuzz/run.sh <target> <seconds>   unpack the kept corpus (if tests/fuzz/corpus/<target>
#                                          is empty), fuzz for that long with the target's
#                                          seeds and dictionary, print the figures (executions,
#                                          edges at start → end, when the last new edge came,
#                                          p2c's own edges before → after), then minimise the
#                                          corpus and pack it again
#   tests/fuzz/run.sh --replay [<target>…] run every kept corpus input once (all targets if
#                                          none is named): the test command does this, so an
#                                          input that once passed and now crashes fails CI
#   tests/fuzz/run.sh --seeds <target>     the target's read-only seed folders (regions.sh
#                                          replays them with the corpus)
#   tests/fuzz/run.sh --unpack <target>    the kept corpus into tests/fuzz/corpus/<target>
#                                          unless that holds one already (coverage.sh uses it)
#
# The run's whole log is kept in tests/fuzz/logs/<target>-<UTC time>.log (not committed).
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGETS="dataverse business_central salesforce_cdc salesforce_soap fin_ops generic rules"
fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }

# The read-only seed folders of a target, beside its corpus.
seeds() {
    case "$1" in
        rules | generic) echo "tests/fuzz/seeds/$1" ;;
        business_central) echo "tests/fixtures" ;;
        *) echo "tests/fixtures tests/fuzz/seeds/$1" ;;
    esac
}

unpack() { # <target> <dir>: the kept corpus into <dir>
    mkdir -p "$2"
    [ -f "tests/fuzz/corpora/$1.tar.xz" ] && tar -xJf "tests/fuzz/corpora/$1.tar.xz" -C "$2"
    return 0
}
# The kept corpus into tests/fuzz/corpus/<target>, unless a run left one there.
unpack_once() { [ -n "$(ls -A "tests/fuzz/corpus/$1" 2>/dev/null)" ] || unpack "$1" "tests/fuzz/corpus/$1"; }

if [ "${1:-}" = --seeds ]; then
    seeds "${2:?usage: tests/fuzz/run.sh --seeds <target>}"
    exit 0
fi

if [ "${1:-}" = --unpack ]; then
    unpack_once "${2:?usage: tests/fuzz/run.sh --unpack <target>}"
    exit 0
fi

if [ "${1:-}" = --replay ]; then
    shift
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for t in ${*:-$TARGETS}; do
        unpack "$t" "$tmp/$t"
        n=$(find "$tmp/$t" -type f | wc -l)
        # -runs=0: every input once, then exit; a crash, a panic, a leak or a sanitizer report
        # fails it (libFuzzer exits non-zero and names the input).
        if ! fuzz run --fuzz-dir tests/fuzz "$t" "$tmp/$t" -- -runs=0 >"$tmp/$t.log" 2>&1; then
            tail -30 "$tmp/$t.log"
            echo "fuzz replay: $t failed on its kept corpus" >&2
            exit 1
        fi
        echo "fuzz replay: $t, $n kept inputs, no failure"
    done
    exit 0
fi

target=${1:?usage: tests/fuzz/run.sh <target> <seconds> | --replay [<target>…]}
seconds=${2:?usage: tests/fuzz/run.sh <target> <seconds>}
case " $TARGETS " in *" $target "*) ;; *) echo "no target $target (one of: $TARGETS)" >&2; exit 2 ;; esac
corpus="tests/fuzz/corpus/$target"
unpack_once "$target"
mkdir -p tests/fuzz/logs
log="tests/fuzz/logs/$target-$(date -u +%Y%m%dT%H%M%SZ).log"

fuzz build --fuzz-dir tests/fuzz "$target"
# p2c's own edges the corpus reaches ("covered total"): the fuzzer's `cov:` counts serde_json's,
# roxmltree's and Rhai's too, which go on growing long after p2c's code stops yielding.
# A report that fails leaves "? ?": it never stops the run.
p2c_edges() {
    local e
    e=$(tests/fuzz/coverage.sh "$target" 2>/dev/null | sed -n '1s/.*p2c edges \([0-9]*\) of \([0-9]*\).*/\1 \2/p') || true
    echo "${e:-? ?}"
}
p2c_before=$(p2c_edges)
# Each line of the fuzzer's output with the seconds since the fuzzing started (not counting
# the build and the coverage report above), to tell when the last new edge came.
SECONDS=0
# shellcheck disable=SC2046
fuzz run --fuzz-dir tests/fuzz "$target" "$corpus" $(seeds "$target") -- \
    -max_total_time="$seconds" -dict="tests/fuzz/dicts/$target.dict" -print_final_stats=1 2>&1 |
    while IFS= read -r line; do printf '%s %s\n' "$SECONDS" "$line"; done >"$log" || {
    tail -40 "$log"
    echo "fuzz run: $target stopped with a finding (tests/fuzz/artifacts/$target, log $log)" >&2
    exit 1
}
awk -v target="$target" '
    /[ \t](INITED|NEW|REDUCE|pulse|DONE)[ \t]+cov: / {
        for (i = 1; i < NF; i++) {
            if ($i == "cov:") cov = $(i + 1)
            if ($i == "ft:") ft = $(i + 1)
            if ($i == "corp:") corp = $(i + 1)
        }
        if ($0 ~ /[ \t]INITED[ \t]/) start = cov
        if (cov > best) { best = cov; last = $1 }
    }
    /stat::number_of_executed_units:/ { execs = $NF }
    /Done [0-9]+ runs in/ { took = $1 }
    END {
        sub(/\/.*/, "", corp)
        printf "%s: %d s, %d executions, edges %d → %d, features %d, corpus %d, last new edge at %d s\n",
            target, took, execs, start, best, ft, corp, last
    }' "$log"

# Keep the corpus, minimised (inputs that add no feature dropped), packed reproducibly.
fuzz cmin --fuzz-dir tests/fuzz "$target" "$corpus" >>"$log" 2>&1
mkdir -p tests/fuzz/corpora
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$corpus" -cf - . |
    xz -9 >"tests/fuzz/corpora/$target.tar.xz"
echo "kept: tests/fuzz/corpora/$target.tar.xz ($(find "$corpus" -type f | wc -l) inputs, $(du -h "tests/fuzz/corpora/$target.tar.xz" | cut -f1))"
p2c_after=$(p2c_edges)
echo "$target: p2c edges ${p2c_before%% *} → ${p2c_after%% *} of ${p2c_after##* }"
