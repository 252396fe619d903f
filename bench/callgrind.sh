#!/usr/bin/env bash
# Instructions per alloc+free pair, counted by callgrind (repeatable where
# wall-clock time is noisy).
#
#   bench/callgrind.sh [--json] [N]      N: pairs of the long run (default 200000)
#
# For each kind, bench_page runs twice under valgrind --tool=callgrind, with
# 1000 and with N pairs after the same set-up and warm-up; the difference of
# the two totals divided by the difference of the pair counts is the cost of
# one pair, set-up excluded. Kinds: order0_pcp, order0_zone_lock, order9,
# glibc (aligned_alloc), mimalloc (mi_malloc_aligned). Needs valgrind.
# Build directory: $DMM_BUILD_DIR (default build-release), built as bench/run does.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DMM_BUILD_DIR:-build-release}
case $build in
/*) ;;
*) build=$root/$build ;;
esac
json=0
long=200000
for a in "$@"; do
	case $a in
	--json) json=1 ;;
	-h | --help)
		sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) long=$a ;;
	esac
done
short=1000
command -v valgrind >/dev/null || {
	echo "callgrind.sh: valgrind not installed (apt-get install valgrind)" >&2
	exit 1
}
if [ ! -f "$build/CMakeCache.txt" ]; then
	cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDMM_BENCH=ON >&2
fi
cmake --build "$build" --target bench_page -j "$(nproc 2>/dev/null || echo 2)" >&2
bin=$build/bench/bench_page

# Total instructions (Ir) of one run.
count() {
	valgrind --tool=callgrind --callgrind-out-file=/dev/null \
		"$bin" --mem-mib 256 --callgrind-kind "$1" --pairs "$2" 2>&1 >/dev/null |
		sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' | tail -n 1
}

declare -A per
for k in order0_pcp order0_zone_lock order9 glibc mimalloc; do
	a=$(count "$k" "$short") || a=
	b=$(count "$k" "$long") || b=
	if [ -z "$a" ] || [ -z "$b" ]; then
		echo "callgrind.sh: $k: no count (kind unavailable?)" >&2
		continue
	fi
	per[$k]=$(awk -v a="$a" -v b="$b" -v s="$short" -v l="$long" 'BEGIN { printf "%.1f", (b - a) / (l - s) }')
done

emit() { # metric value [baseline ratio]
	if [ $json = 1 ]; then
		if [ $# -ge 4 ]; then
			printf '{"bench": "page_callgrind", "metric": "%s", "value": %s, "unit": "instructions", "baseline": "%s", "ratio": %s}\n' "$1" "$2" "$3" "$4"
		else
			printf '{"bench": "page_callgrind", "metric": "%s", "value": %s, "unit": "instructions"}\n' "$1" "$2"
		fi
	elif [ $# -ge 4 ]; then
		printf '  %-28s %10s instructions/pair   vs %-9s ratio %s\n' "$1" "$2" "$3" "$4"
	else
		printf '  %-28s %10s instructions/pair\n' "$1" "$2"
	fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3g", a / b }'; }

[ $json = 1 ] || echo "callgrind: instructions per alloc+free pair ($short vs $long pairs, differenced)"
for k in order0_pcp order0_zone_lock; do
	[ -n "${per[$k]:-}" ] || continue
	[ -n "${per[mimalloc]:-}" ] && emit "${k}_pair" "${per[$k]}" mimalloc "$(ratio "${per[$k]}" "${per[mimalloc]}")"
	[ -n "${per[glibc]:-}" ] && emit "${k}_pair" "${per[$k]}" glibc "$(ratio "${per[$k]}" "${per[glibc]}")"
done
[ -n "${per[order9]:-}" ] && emit order9_pair "${per[order9]}"
[ -n "${per[glibc]:-}" ] && emit glibc_aligned_alloc_4k_pair "${per[glibc]}"
[ -n "${per[mimalloc]:-}" ] && emit mimalloc_aligned_4k_pair "${per[mimalloc]}"
exit 0
