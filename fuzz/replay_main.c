/* SPDX-License-Identifier: MIT */
/*
 * Ordinary main for a fuzz target, so its operation interpreter and checks
 * run in every test build (any compiler, no libFuzzer). Linked with one
 * interpreter (fuzz_target.h): fuzz_alloc.c gives fuzz_replay, fuzz_iova.c
 * fuzz_iova_replay, fuzz_dma.c fuzz_dma_replay.
 *
 *   PROG [--seeds N] [--len L] [--seed S] [FILE...]
 *
 * Replays each FILE (a corpus entry, a crash artifact or a saved regression
 * input), then N inputs of up to L pseudo-random bytes from seed S (with
 * FILEs, no seeded inputs unless --seeds is given). Exits 0 if every input
 * ran (the target aborts on the first violation; the input that failed is
 * then written to PROG-crash.bin in the current directory, to be replayed
 * with `PROG PROG-crash.bin` or minimized with libFuzzer).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_target.h"

static uint64_t next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static const uint8_t *cur_data;
static size_t cur_len;
static char crash_path[256], crash_msg[512];

static void on_abort(int sig)
{
	int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		size_t off = 0;
		while (off < cur_len) {
			ssize_t w = write(fd, cur_data + off, cur_len - off);
			if (w <= 0)
				break;
			off += (size_t)w;
		}
		close(fd);
		if (write(2, crash_msg, strlen(crash_msg)) < 0) {
			/* nothing more to do */
		}
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void run_one(const uint8_t *data, size_t n)
{
	cur_data = data;
	cur_len = n;
	LLVMFuzzerTestOneInput(data, n);
}

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	static uint8_t buf[1 << 20];
	size_t n;
	if (!f) {
		perror(path);
		return -1;
	}
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	run_one(buf, n);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long seeds = 200, len = 2048;
	uint64_t seed = 0x0ddba11cafef00dull;
	static uint8_t buf[1 << 16];
	const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	int files = 0, seeds_given = 0;

	snprintf(crash_path, sizeof(crash_path), "%s-crash.bin", prog);
	snprintf(crash_msg, sizeof(crash_msg), "%s: failing input written to %s\n", prog, crash_path);
	signal(SIGABRT, on_abort);

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
			seeds = strtoul(argv[++i], NULL, 0);
			seeds_given = 1;
		} else if (!strcmp(argv[i], "--len") && i + 1 < argc) {
			len = strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
			seed = strtoull(argv[++i], NULL, 0);
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "usage: %s [--seeds N] [--len L] [--seed S] [FILE...]\n", argv[0]);
			return 2;
		} else {
			if (replay_file(argv[i]))
				return 1;
			files++;
		}
	}
	if (len > sizeof(buf))
		len = sizeof(buf);
	if (files && !seeds_given)
		seeds = 0; /* replaying files only, unless asked */
	for (unsigned long k = 0; k < seeds; k++) {
		uint64_t s = seed + k * 0x9e3779b97f4a7c15ull;
		size_t n = (size_t)(next(&s) % (len + 1));
		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)next(&s);
		run_one(buf, n);
	}
	dmm_fuzz_print_summary(prog);
	return 0;
}
