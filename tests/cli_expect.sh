#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# cli_expect.sh STATUS PATTERN PROGRAM [ARGS...]
#
# Run PROGRAM ARGS, then require its exit status to be STATUS and its
# output (stdout and stderr together) to match the extended regular
# expression PATTERN (an empty PATTERN matches anything). Used by the cli
# tests that check what the dmamem command accepts, refuses and prints.
set -u
want=$1
pattern=$2
shift 2
out=$("$@" 2>&1)
rc=$?
if [ "$rc" -ne "$want" ]; then
	printf '%s\n' "$out" | tail -n 40
	echo "cli_expect: exit status $rc, expected $want: $*" >&2
	exit 1
fi
if [ -n "$pattern" ] && ! printf '%s\n' "$out" | grep -Eq -- "$pattern"; then
	printf '%s\n' "$out" | tail -n 40
	echo "cli_expect: output does not match /$pattern/: $*" >&2
	exit 1
fi
exit 0
