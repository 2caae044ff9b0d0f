#!/bin/sh
# Run one libFuzzer harness for a while on a working copy of its seed corpus, and say
# what it found. Called by `make fuzz` and `make fuzz-smoke`.
#   run.sh BIN SEEDS WORK SECONDS MAX_LEN
# The seeds (tests/fuzz/corpus/NAME) are copied into WORK, the only corpus directory the
# fuzzer is given, so new inputs never land in the checked-in corpus. Inputs that crash,
# leak or hang go to WORK/../NAME-crash-*, -leak-*, -timeout-*; the whole log to WORK.log.
# A dictionary tests/fuzz/NAME.dict (tokens the parser looks for) is used when present.
# Prints one line per run; exits 1 when the harness found anything.
set -eu
bin=$1 seeds=$2 work=$3 secs=$4 maxlen=$5
name=$(basename "$bin")
log=$work.log

# Debian's sanitizers look for llvm-symbolizer-14 (package llvm-14, not installed); without
# it, addr2line (binutils, which clang needs) still gives stack traces file:line.
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && ! command -v llvm-symbolizer-14 >/dev/null 2>&1 &&
  ! command -v llvm-symbolizer >/dev/null 2>&1 && command -v addr2line >/dev/null 2>&1; then
  ASAN_SYMBOLIZER_PATH=$(command -v addr2line)
  export ASAN_SYMBOLIZER_PATH
fi

mkdir -p "$work"
cp "$seeds"/* "$work"/
before=$(ls "$work" | wc -l)
dict=$(dirname "$0")/$name.dict
[ -f "$dict" ] && set -- -dict="$dict" || set --
rc=0
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$bin" -max_total_time="$secs" -max_len="$maxlen" -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$(dirname "$work")/$name-" "$@" "$work" >"$log" 2>&1 || rc=$?
after=$(ls "$work" | wc -l)

if [ "$rc" -ne 0 ]; then
  echo "fuzz $name: FOUND something (exit $rc); log: $log" >&2
  grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|artifact_prefix|Test unit written)' "$log" \
    | head -n 8 >&2 || true
  echo "  reproduce: $bin <the file written above>" >&2
  exit 1
fi
final() { sed -n "s/^stat::$1: *//p" "$log"; }
cov=$(sed -n 's/.*DONE *cov: \([0-9]*\) ft: \([0-9]*\).*/\1 edges, \2 features/p' "$log")
echo "fuzz $name: $(final number_of_executed_units) runs in ${secs}s," \
  "$(final average_exec_per_sec) exec/s, $cov, corpus $before -> $after inputs, nothing found"
