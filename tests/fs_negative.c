/* SPDX-License-Identifier: MIT */
/* Negative control for the freestanding check: a "core" that calls malloc
 * and printf must be rejected by tests/check_freestanding.sh. */
#include <stdio.h>
#include <stdlib.h>

int dmm_fs_negative(int n);

int dmm_fs_negative(int n)
{
	char *p = malloc((size_t)n);
	if (!p)
		return -1;
	printf("%p\n", (void *)p);
	free(p);
	return 0;
}
