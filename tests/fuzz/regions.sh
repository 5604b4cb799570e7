#!/usr/bin/env bash
# Which of p2c's own source a fuzz target's corpus runs, region by region: rustc's
# source-based coverage (-Cinstrument-coverage) read with llvm-cov. tests/fuzz/coverage.sh
# counts libFuzzer's edges, and the edges of the library code the compiler inlined into p2c's
# functions (serde_json's, chrono's, the standard library's) count there as p2c's; a region
# here is a piece of p2c's source (a branch arm, the `?` of a call, a closure), so a corpus
# that reaches a new one ran p2c code it had never run.
#
#   tests/fuzz/regions.sh <target> [<corpus dir>] [-v]
#       per file of functions/core/src the corpus enters: regions and lines run, of all;
#       -v also the lines never run (a range, with its first line's text) and each line
#       run with a region in it that never ran
#
# The corpus (with the target's seeds, as a run reads them): the directory given, else the
# one a run left in tests/fuzz/corpus/<target>,
# else the one kept in the repository. Needs llvm-cov and llvm-profdata of the LLVM rustc was
# built with: `rustup component add llvm-tools` (of this toolchain, or of another whose LLVM
# has the same major version).
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:?usage: tests/fuzz/regions.sh <target> [<corpus dir>] [-v]}
shift
corpus="" verbose=""
for a in "$@"; do
    case "$a" in
        -v) verbose=1 ;;
        *) corpus=$a ;;
    esac
done
if [ -z "$corpus" ]; then
    tests/fuzz/run.sh --unpack "$target"
    corpus="tests/fuzz/corpus/$target"
fi

# llvm-cov and llvm-profdata of rustc's LLVM major version.
major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
llvm=""
for dir in "$(rustc --print sysroot)"/lib/rustlib/*/bin "${RUSTUP_HOME:-$HOME/.rustup}"/toolchains/*/lib/rustlib/*/bin; do
    [ -x "$dir/llvm-cov" ] && [ -x "$dir/llvm-profdata" ] || continue
    v=$("$dir/llvm-cov" --version | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p')
    if [ "$v" = "$major" ]; then llvm=$dir; break; fi
done
if [ -z "$llvm" ]; then
    echo "regions.sh: no llvm-cov of LLVM $major; install it with \`rustup component add llvm-tools\`" >&2
    exit 2
fi

# The instrumented build and its replay of the corpus and the target's seeds: libFuzzer keeps
# an input only when it reaches what no other does, so what a seed reaches stays with the
# seed, not in the corpus (cargo fuzz merges the raw profiles
# into tests/fuzz/coverage/<target>/coverage.profdata).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rm -rf "tests/fuzz/coverage/$target" # raw profiles an earlier replay left would merge in
RUSTC_BOOTSTRAP=1 cargo fuzz coverage --fuzz-dir tests/fuzz --target-dir tests/fuzz/target/coverage \
    --llvm-path "$llvm" "$target" "$corpus" $(tests/fuzz/run.sh --seeds "$target") >"$log" 2>&1 || { tail -20 "$log"; exit 1; }
bin="tests/fuzz/target/coverage/x86_64-unknown-linux-gnu/release/$target"
profile="tests/fuzz/coverage/$target/coverage.profdata"
src="$PWD/functions/core/src/"
# llvm-cov report names files without their common leading part: matched by what follows.
own=functions/core/src/

"$llvm/llvm-cov" report "$bin" -instr-profile="$profile" 2>/dev/null | awk -v own="$own" -v target="$target" '
    index($1, own) && $3 < $2 {
        f = substr($1, index($1, own) + length(own))
        printf "  %-30s %5d of %5d regions, %5d of %5d lines\n", f, $2 - $3, $2, $8 - $9, $8
        r += $2 - $3; rt += $2; l += $8 - $9; lt += $8
    }
    END { printf "%s: p2c regions %d of %d, lines %d of %d (of the files it enters)\n", target, r, rt, l, lt }
' | sort -r -k2,2 | awk '/^[^ ]/ { head = $0; next } { body = body $0 "\n" } END { print head; printf "%s", body }'

if [ -n "$verbose" ]; then
    # Each line with a count of 0, or with a region (^0 under it) that never ran.
    files=$("$llvm/llvm-cov" report "$bin" -instr-profile="$profile" 2>/dev/null |
        awk -v own="$own" 'index($1, own) && $3 < $2 { print substr($1, index($1, own) + length(own)) }')
    for f in $files; do
        "$llvm/llvm-cov" show "$bin" -instr-profile="$profile" -show-line-counts -show-regions \
            -show-instantiations=false "$src$f" 2>/dev/null | awk -v f="$f" '
            # Runs of never-run lines as one range, with the text of the first.
            function flush() { if (from) print "    " f ":" (from == to ? from : from "-" to) ": " first; from = 0 }
            /^ *[0-9]+\|/ {
                split($0, p, "|"); line = p[1] + 0; count = p[2]; text = $0
                sub(/^[^|]*\|[^|]*\|/, "", text); gsub(/^ +/, "", text)
                gsub(/ /, "", count)
                if (count == "0") {
                    if (!from || line != to + 1) { flush(); from = line; first = text }
                    to = line
                } else if (count != "") flush()
                next
            }
            /\^0([^0-9.kM]|$)/ && line && line != to { flush(); print "    " f ":" line ": " text " (a region in it)" }
            END { flush() }
        ' | uniq
    done
fi
