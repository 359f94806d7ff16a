#!/usr/bin/env bash
# Fuzzing AmusedKit's readers with libFuzzer (shipped with Swift's toolchain), outside CI.
#
#   Tools/fuzz.sh --list                 the targets (Tests/Fuzz/Targets/FuzzTargets.swift)
#   Tools/fuzz.sh TARGET SECONDS [ARGS]  build with -sanitize=fuzzer,address, fuzz TARGET for SECONDS on one core
#                                        (extra libFuzzer ARGS allowed), then merge what it found into the committed,
#                                        minimised corpus Tests/Fuzz/corpus/TARGET; crashes go to .fuzz/crashes/TARGET
#   Tools/fuzz.sh --build                only build the fuzzing binary (.build-fuzz/release/amused-fuzz)
#
# Limits per input, as the hostile-input contract states them: 1 s (-timeout; 40 s for hdf5, whose libhdf5 runs
# under the helper reader's own budget of CPU time and memory), 2 GB (-rss_limit_mb and
# -malloc_limit_mb). CI does no fuzzing: `swift test` replays every committed corpus input once (CorpusReplayTests).
# Each run appends a line to Tests/Fuzz/log.tsv (committed; Tools/fuzz_table.py sums it into the README's table): when,
# target, sanitizers, seconds, executions, corpus size, findings, CPU, and the commit the binary was built from.
#
# hdf5-inprocess runs in libFuzzer's fork mode with crashes ignored: libhdf5 itself crashes on some files (which is
# why every command reads HDF5 through the helper process), and fork mode keeps fuzzing past them. Every crash it
# saves is then replayed through the helper target (`hdf5`), which must absorb it as an error: a crash there is a
# finding in AmusedKit and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
# SANITIZE=fuzzer builds without AddressSanitizer (Swift's own overflow and bounds traps stay on in release builds):
# several times the executions per second, for volume; the default, fuzzer,address, also catches memory errors in
# the unsafe-pointer and C code.
sanitize=${SANITIZE:-fuzzer,address}
scratch=${FUZZ_SCRATCH:-.build-fuzz-${sanitize//,/-}}
binary=$scratch/release/amused-fuzz

build() {
  mkdir -p "$scratch"; git rev-parse --short HEAD >"$scratch/commit" 2>/dev/null || true
  swift build -c release --scratch-path "$scratch" --product amused-fuzz \
    -Xswiftc -sanitize="$sanitize" -Xswiftc -DAMUSED_LIBFUZZER \
    -Xcc -fsanitize="${sanitize/fuzzer/fuzzer-no-link}" >&2
}

case "${1:-}" in
  --list|"") swift run -q amused-fuzz --list; exit 0 ;;
  --build) build; exit 0 ;;
esac

target=$1
seconds=${2:?usage: Tools/fuzz.sh TARGET SECONDS [libFuzzer args]}
shift 2
[ -d "Tests/Fuzz/corpus/$target" ] || { echo "no corpus folder Tests/Fuzz/corpus/$target" >&2; exit 2; }
[ -x "$binary" ] || build
work=.fuzz/work/$target
crashes=.fuzz/crashes/$target
mkdir -p "$work" "$crashes"
dict=()
[ -f "Tests/Fuzz/dict/$target.dict" ] && dict=(-dict="Tests/Fuzz/dict/$target.dict")
log=.fuzz/run-$target.log
# Inputs may grow to 64 KiB, or to the largest seed when one is larger (bundles).
largest=$(find "Tests/Fuzz/corpus/$target" -type f -printf '%s\n' | sort -n | tail -1)
max_len=${MAX_LEN:-$(( largest > 65536 ? largest : 65536 ))}
export AMUSED_FUZZ_TARGET=$target AMUSED_FIXTURES=$PWD/Fixtures
# The hdf5 target reads through the helper process: the plain amused build (or AMUSED_HDF5_HELPER when set).
if [[ "$target" == hdf5* ]] && [ -z "${AMUSED_HDF5_HELPER:-}" ]; then
  [ -x .build/release/amused ] || swift build -c release --product amused >&2
  export AMUSED_HDF5_HELPER=$PWD/.build/release/amused
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1}
started=$(date +%s)
fork=()
[ "$target" = hdf5-inprocess ] && fork=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
# Through the helper, libhdf5 runs under the reader's budget (20 s of CPU, 30 s of wall clock, 2 × file + 512 MiB):
# a timeout past that budget is AmusedKit's, one within it is libhdf5's slowness on a hostile file, bounded.
timeout=1
[ "$target" = hdf5 ] && timeout=40
set +e
"$binary" "$work" "Tests/Fuzz/corpus/$target" "${dict[@]}" -max_total_time="$seconds" -timeout="$timeout" \
  -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len="$max_len" -artifact_prefix="$crashes/" \
  -print_final_stats=1 "${fork[@]}" "$@" >"$log" 2>&1
status=$?
set -e
elapsed=$(( $(date +%s) - started ))
if [ ${#fork[@]} -gt 0 ]; then
  # Fork mode prints "#EXECS: cov: … crash: N …" lines and no final statistics: the last line counts them all.
  execs=$(grep -ao '^#[0-9]*: cov' "$log" | tail -1 | tr -dc 0-9)
  execs=${execs:-0}
  # What libhdf5 crashed on, through the helper: each must come back as an error (exit 0 from the replay).
  swift build --product amused-fuzz >&2
  helper_replay=$(swift build --show-bin-path)/amused-fuzz
  findings=0
  for f in "$crashes"/*; do
    [ -f "$f" ] || continue
    AMUSED_HDF5_HELPER=$AMUSED_HDF5_HELPER "$helper_replay" hdf5 "$f" >/dev/null 2>&1 || { echo "helper did not absorb $f" >&2; findings=$((findings + 1)); }
  done
  echo "$(find "$crashes" -type f | wc -l) libhdf5 crashes in-process, all replayed through the helper: $findings not absorbed" >&2
else
  execs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  findings=$(find "$crashes" -type f | wc -l)
fi
# Minimise: the committed corpus becomes the smallest set covering what both folders cover.
merged=$(mktemp -d)
"$binary" -merge=1 -timeout=1 -rss_limit_mb=2048 "$merged" "Tests/Fuzz/corpus/$target" "$work" >>"$log" 2>&1 || true
if [ "$(ls "$merged" | wc -l)" -gt 0 ]; then
  rm -f "Tests/Fuzz/corpus/$target"/*
  cp "$merged"/* "Tests/Fuzz/corpus/$target/"
fi
rm -rf "$merged"
size=$(ls "Tests/Fuzz/corpus/$target" | wc -l)
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs) model $(grep -m1 '^model' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$target" "$sanitize" "$elapsed" "$execs" "$size" "$findings" \
  "$cpu" "$(cat "$scratch/commit" 2>/dev/null || echo unknown)" >>Tests/Fuzz/log.tsv
echo "$target: $execs executions in $elapsed s, corpus $size inputs, $findings findings (exit $status; log $log)"
