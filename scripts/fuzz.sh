#!/usr/bin/env bash
# fuzz.sh — builds and runs one libFuzzer target for a bounded time.
#
# Usage: scripts/fuzz.sh <target> <seconds> [extra libFuzzer args...]
#        scripts/fuzz.sh all <seconds>   every target in turn, <seconds>
#                                        each; a summary at the end
#   e.g. scripts/fuzz.sh fuzz_json 300
#
# Configures build-fuzz/ with clang, -DKV_FUZZ=ON -DKV_SANITIZE=ON (Debug),
# builds tests/fuzz/<target>.c and runs it with the corpus directory
# build-fuzz/corpus/<target>, seeded from tests/data/<name>/ when that
# exists (fuzz_json → tests/data/json, fuzz_wal → tests/data/wal) and from
# tests/fuzz/corpus/<target>/ (seeds kept next to the harnesses), with
# tests/fuzz/<target>.dict as dictionary when present. Crashes go to
# build-fuzz/crashes/<target>/. Exits with the fuzzer's status.
set -euo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 <target> <seconds> [libFuzzer args...]" >&2
	exit 2
fi
target=$1
seconds=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)

if [ "$target" = all ]; then
	# One target at a time (each already uses a core; the machine is
	# shared). Logs to build-fuzz/logs/<target>.log; exits non-zero if
	# any target failed.
	mkdir -p "$root/build-fuzz/logs"
	status=0
	summary=()
	for src in "$root"/tests/fuzz/fuzz_*.c; do
		t=$(basename "$src" .c)
		log=$root/build-fuzz/logs/$t.log
		echo "== $t: $seconds s, log $log"
		rc=0
		"$0" "$t" "$seconds" "$@" >"$log" 2>&1 || rc=$?
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
		summary+=("$t rc=$rc execs=${execs:-?}")
		[ "$rc" -eq 0 ] || status=1
	done
	printf '%s\n' "${summary[@]}"
	exit $status
fi
case $target in fuzz_*) ;; *) echo "target must be fuzz_<name> or all" >&2; exit 2;; esac

build=$root/build-fuzz
jobs=${JOBS:-2}

CC=${CC:-clang} cmake -S "$root" -B "$build" -DKV_FUZZ=ON -DKV_SANITIZE=ON \
	-DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" -j"$jobs" --target "$target"

corpus=$build/corpus/$target
crashes=$build/crashes/$target
mkdir -p "$corpus" "$crashes"
seed=$root/tests/data/${target#fuzz_}
if [ -d "$seed" ]; then
	# Seed with every *.json file (fuzz_json) or every file but README*
	# and crash-* (other targets; crash-* are reproducers of open
	# findings: run them with build-fuzz/fuzz/<target> <file>); files are
	# named by content hash so re-seeding does not duplicate.
	pat='*'
	[ "$target" = fuzz_json ] && pat='*.json'
	for f in "$seed"/$pat; do
		[ -f "$f" ] || continue
		case ${f##*/} in README*|crash-*) continue;; esac
		cp -n "$f" "$corpus/seed-$(sha1sum "$f" | cut -c1-16)" || true
	done
fi
if [ -d "$root/tests/fuzz/corpus/$target" ]; then
	for f in "$root/tests/fuzz/corpus/$target"/*; do
		[ -f "$f" ] || continue
		cp -n "$f" "$corpus/seed-$(sha1sum "$f" | cut -c1-16)" || true
	done
fi

dict=()
if [ -f "$root/tests/fuzz/$target.dict" ]; then
	dict=(-dict="$root/tests/fuzz/$target.dict")
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec "$build/fuzz/$target" -max_total_time="$seconds" -timeout=10 \
	-rss_limit_mb=2048 -artifact_prefix="$crashes/" -print_final_stats=1 \
	"${dict[@]}" "$@" "$corpus"
