/* SPDX-License-Identifier: MIT */
/*
 * A Criterion binary with one test that never returns, for check-watchdog:
 * the watchdog (test/cr_watchdog.c) must name it and print its stack. Not a
 * test by itself.
 */
#include <criterion/criterion.h>
#include <unistd.h>

Test(wd, passes)
{
	cr_assert_eq(1 + 1, 2);
}

Test(wd, blocks_forever)
{
	int p[2];
	char c;

	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(read(p[0], &c, 1), 1, "nobody writes to this pipe");
}
