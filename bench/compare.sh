#!/usr/bin/env bash
# Compare one benchmark between a git revision and the working tree, the two
# run in turn: this machine's speed drifts by tens of percent from one minute
# to the next, so two builds measured at different times are no comparison.
#
#   bench/compare.sh [-n RUNS] [-m REGEX] REV BENCH [ARGS...]
#
# REV is built in a scratch worktree ($TMPDIR/dmamem-compare-<commit>, kept
# for the next call), the working tree in build-release ($DMM_BUILD_DIR);
# both as bench/run builds them. Then build-release/bench/BENCH --json ARGS
# runs RUNS times (default 6) from each, alternating. For every figure with a
# baseline it prints the median ratio to that baseline (measured in the same
# process) and its range for REV and for the working tree, and their
# quotient: working tree / REV. A figure without a baseline is compared by
# its value (its unit after the name). -m keeps the figures whose metric
# matches the extended REGEX.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DMM_BUILD_DIR:-build-release}
case $build in
/*) ;;
*) build=$root/$build ;;
esac
runs=6
filter=.
while getopts n:m:h opt; do
	case $opt in
	n) runs=$OPTARG ;;
	m) filter=$OPTARG ;;
	*)
		sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
		[ "$opt" = h ] && exit 0
		exit 2
		;;
	esac
done
shift $((OPTIND - 1))
if [ $# -lt 2 ]; then
	sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
fi
rev=$1
bench=$2
shift 2
case $runs in
'' | *[!0-9]* | 0)
	echo "compare.sh: -n needs a positive count" >&2
	exit 2
	;;
esac

commit=$(git -C "$root" rev-parse --verify "$rev^{commit}")
tree=${TMPDIR:-/tmp}/dmamem-compare-$commit
if [ ! -d "$tree" ]; then
	git -C "$root" worktree add --detach "$tree" "$commit" >&2
fi
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
for dir in "$tree/build-release" "$build"; do
	src=$root
	[ "$dir" = "$tree/build-release" ] && src=$tree
	if [ ! -f "$dir/CMakeCache.txt" ]; then
		cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DDMM_BENCH=ON >&2
	fi
	cmake --build "$dir" -j "$jobs" --target "$bench" >&2
done

out=$(mktemp)
trap 'rm -f "$out"' EXIT
for ((i = 0; i < runs; i++)); do
	for side in base this; do
		dir=$build
		[ $side = base ] && dir=$tree/build-release
		"$dir/bench/$bench" --json "$@" |
			sed -n -e 's/.*"metric": "\([^"]*\)".*"baseline": "\([^"]*\)".*"ratio": \([-0-9.e+]*\).*/\1 \2 \3/p' \
				-e 't' -e 's/.*"metric": "\([^"]*\)", "value": \([-0-9.e+]*\), "unit": "\([^"]*\)".*/\1 \3 \2/p' |
			awk -v s=$side '{print s, NR, $1 "/" $2, $3}' >>"$out"
	done
done

printf '%s (%s) against %s, %d runs each; metric/baseline: ratios to the baseline of the same run, metric/unit: values\n' \
	"$bench" "$(git -C "$root" describe --always --dirty)" "$(git -C "$root" rev-parse --short "$commit")" "$runs"
printf '%-44s %-22s %-22s %s\n' "metric/baseline or unit" "$rev" "working tree" "tree/rev"
# in the order the benchmark prints them: by place, then side, then value
sort -k2,2n -k1,1 -k4,4g "$out" | awk -v filter="$filter" '
function flush(   b, t) {
	if (key == "" || key !~ filter || !nb || !nt)
		return
	b = median(base, nb)
	t = median(this, nt)
	printf "%-44s %.3f [%.3f-%.3f]    %.3f [%.3f-%.3f]    %.3f\n", key, b, base[1], base[nb], t, this[1], this[nt], (b > 0 ? t / b : 0)
}
function median(v, n) {
	return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
$3 != key { flush(); key = $3; nb = 0; nt = 0 }
$1 == "base" { base[++nb] = $4 }
$1 == "this" { this[++nt] = $4 }
END { flush() }'
