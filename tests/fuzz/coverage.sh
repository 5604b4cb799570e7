#!/usr/bin/env bash
# How much of p2c's own code a fuzz target's corpus reaches: replays the corpus once
# (libFuzzer's -runs=0 -print_coverage=1) and sums, per source file of functions/core, the
# edges of the functions defined there (code the compiler inlined into them counts with
# them). The fuzzer's own `cov:` figure counts every instrumented edge, serde_json's and the
# standard library's included; this one is p2c's alone, and shows where the uncovered
# edges are.
#
#   tests/fuzz/coverage.sh <target> [-v]    (-v: also each function of p2c's not fully
#                                            covered, and the lines of its uncovered edges)
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:?usage: tests/fuzz/coverage.sh <target> [-v]}
verbose=${2:-}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# The corpus a run left here, else the one kept in the repository.
tests/fuzz/run.sh --unpack "$target"
RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz "$target" "tests/fuzz/corpus/$target" \
    -- -runs=0 -print_coverage=1 >"$out" 2>&1 || { tail -20 "$out"; exit 1; }
src="$PWD/functions/core/src/"
awk -v src="$src" -v verbose="$verbose" -v target="$target" '
    /^(UN)?COVERED_FUNC:/ {
        file = $NF; sub(/:[0-9]+$/, "", file)
        own = index(file, src) == 1
        if (!own) next
        file = substr(file, length(src) + 1)
        split($5, e, "/")
        covered[file] += e[1]; total[file] += e[2]
        all_covered += e[1]; all_total += e[2]
        if (e[1] < e[2]) {
            name = $6
            for (i = 7; i < NF; i++) name = name " " $i
            gaps[file] = gaps[file] sprintf("    %s %s\n", $5, name)
        }
        next
    }
    /^ *UNCOVERED_PC:/ && verbose == "-v" {
        file = $2
        if (index(file, src) == 1) {
            line = substr(file, length(src) + 1)
            if (!(line in seen)) { seen[line] = 1; lines = lines "    " line "\n" }
        }
    }
    END {
        if (all_total == 0) { print target ": no function of functions/core/src in the report"; exit 1 }
        printf "%s: p2c edges %d of %d (%.1f%%)\n", target, all_covered, all_total, 100 * all_covered / all_total
        n = 0
        for (f in total) order[++n] = f
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (order[j] < order[i]) { t = order[i]; order[i] = order[j]; order[j] = t }
        for (i = 1; i <= n; i++) {
            f = order[i]
            printf "  %-32s %5d of %5d\n", f, covered[f], total[f]
            if (verbose == "-v") printf "%s", gaps[f]
        }
        if (verbose == "-v" && lines != "") printf "  uncovered edges at:\n%s", lines
    }
' "$out"
