#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Prove that the core is freestanding.
#
#   check_freestanding.sh nm LIBDMAMEM.A CC SRCDIR [sanitized]
#
# 1. Every symbol libdmamem.a needs from outside itself must be one a
#    freestanding C environment provides (memcpy, memset, memmove, memcmp),
#    compiler runtime (stack protector, libgcc/compiler-rt helpers), or, in a
#    sanitized or fuzzing build, sanitizer/coverage runtime.
# 2. Every src/mm/*.c, src/dma/*.c and src/lib/*.c compiles with -ffreestanding -nostdinc
#    and only the compiler's own headers (stddef.h, stdint.h, stdarg.h, ...).
set -euo pipefail

NM=$1
LIB=$2
CC=$3
SRC=$4
SANITIZED=${5:-0}
status=0

undef=$("$NM" -u "$LIB" | awk 'NF && $0 !~ /:$/ {print $NF}' | sort -u)
defined=$("$NM" --defined-only "$LIB" | awk 'NF == 3 {print $3}' | sort -u)
external=$(comm -23 <(printf '%s\n' "$undef") <(printf '%s\n' "$defined") | sed '/^$/d')

allowed='^(memcpy|memset|memmove|memcmp|__stack_chk_fail|__stack_chk_guard|_GLOBAL_OFFSET_TABLE_|__(u)?(div|mod)[dt]i3|__popcount[dst]i2|__clz[dst]i2|__ctz[dst]i2)$'
sanitizer='^(__asan_|__ubsan_|__sanitizer_|__tsan_|__msan_|__lsan_|__odr_asan|___asan)'

echo "external symbols of $(basename "$LIB"):"
for sym in $external; do
	if [[ $sym =~ $allowed ]]; then
		echo "  ok        $sym"
	elif [[ $SANITIZED != 0 && $sym =~ $sanitizer ]]; then
		: # sanitizer runtime, counted below
	else
		echo "  FORBIDDEN $sym"
		status=1
	fi
done
if [[ $SANITIZED != 0 ]]; then
	echo "  ($(printf '%s\n' "$external" | grep -cE "$sanitizer" || true) sanitizer runtime symbols allowed in this build)"
fi

inc=$("$CC" -print-file-name=include)
echo "freestanding compile (-ffreestanding -nostdinc -isystem $inc):"
for f in "$SRC"/src/mm/*.c "$SRC"/src/dma/*.c "$SRC"/src/lib/*.c; do
	if "$CC" -std=c11 -ffreestanding -nostdinc -isystem "$inc" -I"$SRC/include" -I"$SRC/src" \
		-DDMM_ASSERT_LEVEL=3 -Wall -Wextra -fsyntax-only "$f"; then
		echo "  ok        ${f#"$SRC"/}"
	else
		echo "  FAILED    ${f#"$SRC"/}"
		status=1
	fi
done
if [[ $status != 0 ]]; then
	echo "the core is not freestanding"
fi
exit $status
