#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Build, run and test dmamem.
#
#   ./build.sh deps            install the Debian packages it needs (as root, or via sudo)
#   ./build.sh run [ARGS...]   build, then `dmamem info` and `dmamem run` on the default
#                              profile (ARGS are passed to `dmamem run`; without ARGS
#                              the dma workload runs too)
#   ./build.sh test            build and run every test (ctest)
#   ./build.sh asan            the same under AddressSanitizer + UBSan
#   ./build.sh fuzz [SECONDS]  build the libFuzzer targets with clang and run them, the time
#                              split between them (default 60 s in all)
#   ./build.sh bench [ARGS...] build and run every benchmark (bench/run ARGS)
#
# Build directories: build (run, test; DMM_BUILD_DIR overrides), build-asan,
# build-fuzz; bench/run uses build-release. Environment: JOBS (parallel jobs,
# default: all cores), DMM_PROFILE (profile for `run`, default pc).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
PROFILE=${DMM_PROFILE:-pc}
B=${DMM_BUILD_DIR:-build}

# make and libc6-dev are only "Recommends" of cmake and gcc: name them.
PACKAGES=(cmake make gcc libc6-dev clang libclang-rt-14-dev libcmocka-dev libinih-dev
	libmimalloc-dev libbsd-dev libjemalloc-dev pkg-config binutils)

say() { printf '\n==> %s\n' "$*"; }

deps() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
			missing+=("$p")
		fi
	done
	if [ ${#missing[@]} -eq 0 ]; then
		return 0
	fi
	say "installing ${missing[*]}"
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null; then
			sudo=(sudo)
		else
			echo "build.sh: need root (or sudo) to install: ${missing[*]}" >&2
			exit 1
		fi
	fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

# configure DIR [cmake options...]: configure once, reconfigure when options change
configure() {
	local dir=$1
	shift
	cmake -S "$ROOT" -B "$dir" "$@"
}

build() {
	local dir=$1
	shift
	cmake --build "$dir" -j "$JOBS" "$@"
}

run_tests() {
	local dir=$1
	# ctest exits non-zero on any failure; --no-tests=error catches an empty run.
	# The output is kept in DIR/ctest.log (.ci/run totals it).
	(cd "$dir" && ctest --output-on-failure --no-tests=error -j "$JOBS") 2>&1 | tee "$dir/ctest.log"
	return "${PIPESTATUS[0]}"
}

cmd=${1:-}
[ $# -gt 0 ] && shift

case $cmd in
deps)
	deps
	;;
run)
	deps
	say "configure + build ($B/)"
	configure "$B"
	build "$B"
	say "dmamem info --profile $PROFILE"
	"$B/dmamem" info --profile "$PROFILE"
	say "dmamem run --profile $PROFILE $*"
	"$B/dmamem" run --profile "$PROFILE" "$@"
	if [ $# -eq 0 ]; then
		say "dmamem run --profile $PROFILE --workload dma (a 32-bit device with and without the IOMMU)"
		"$B/dmamem" run --profile "$PROFILE" --workload dma
	fi
	;;
test)
	deps
	say "configure + build ($B/)"
	configure "$B"
	build "$B"
	say "ctest ($B/)"
	run_tests "$B"
	;;
asan)
	deps
	say "configure + build with ASan + UBSan (build-asan/)"
	configure build-asan -DDMM_SANITIZE=ON -DDMM_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
	build build-asan
	say "ctest under ASan + UBSan (build-asan/)"
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1} \
		UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
		run_tests build-asan
	;;
fuzz)
	secs=${1:-60}
	deps
	say "configure + build the libFuzzer targets with clang (build-fuzz/)"
	configure build-fuzz -DCMAKE_C_COMPILER=clang -DDMM_FUZZ=ON -DDMM_SANITIZE=ON -DDMM_BENCH=OFF \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo
	build build-fuzz --target fuzz_alloc fuzz_iova fuzz_dma
	# The time is split between the targets in thirds (fuzz_alloc gets what
	# does not divide): page and range allocators, the IOVA allocator, the
	# DMA layer. Each keeps its own corpus and crash directory: corpus/ and
	# artifacts/ for fuzz_alloc, corpus-iova/ and artifacts-iova/ for
	# fuzz_iova, corpus-dma/ and artifacts-dma/ for fuzz_dma. All run even
	# if an earlier one finds a crash.
	iova_secs=$((secs / 3))
	[ "$iova_secs" -ge 1 ] || iova_secs=1
	dma_secs=$iova_secs
	alloc_secs=$((secs - iova_secs - dma_secs))
	[ "$alloc_secs" -ge 1 ] || alloc_secs=1
	fuzz_rc=0
	for t in alloc:"$alloc_secs":corpus:artifacts iova:"$iova_secs":corpus-iova:artifacts-iova \
		dma:"$dma_secs":corpus-dma:artifacts-dma; do
		IFS=: read -r name tsecs cdir adir <<<"$t"
		corpus=build-fuzz/fuzz/$cdir
		artifacts=build-fuzz/fuzz/$adir
		mkdir -p "$corpus" "$artifacts"
		say "fuzz_$name for ${tsecs}s (corpus $corpus, crashes in $artifacts)"
		# one job: the machine has 2 cores and the run must stay bounded
		ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1} \
			build-fuzz/fuzz/fuzz_"$name" -max_total_time="$tsecs" -max_len=1024 -len_control=0 \
			-timeout=30 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$artifacts/" \
			"$corpus" || fuzz_rc=$?
	done
	exit "$fuzz_rc"
	;;
bench)
	deps
	say "bench/run $*"
	bench/run "$@"
	;;
"" | -h | --help | help)
	sed -n '4,17p' "$0" | sed 's/^# \{0,1\}//'
	;;
*)
	echo "build.sh: unknown command '$cmd' (try ./build.sh --help)" >&2
	exit 2
	;;
esac
