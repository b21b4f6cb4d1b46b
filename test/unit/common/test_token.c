/* SPDX-License-Identifier: MIT */
/* kv_read_token_file(): the shared auth token's file. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kvfs/token.h"

static void write_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f);
	fputs(s, f);
	fclose(f);
}

Test(token, file)
{
	char path[] = "/tmp/kvfs-token-XXXXXX";
	char buf[16];
	size_t len = 99;
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	close(fd);

	write_file(path, "s3cret\n");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), 0);
	cr_assert_str_eq(buf, "s3cret");
	cr_assert_eq(len, 6);

	write_file(path, "  tok en \r\n\t\n");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), 0);
	cr_assert_str_eq(buf, "  tok en", "leading and inner whitespace are kept");
	cr_assert_eq(len, 8);

	len = 99;
	write_file(path, "");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), -ENODATA);
	write_file(path, " \n\n");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), -ENODATA);
	cr_assert_eq(len, 99, "untouched on failure");

	write_file(path, "0123456789abcdef");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), -EFBIG);
	write_file(path, "0123456789abcde\n\n\n   ");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), 0);
	cr_assert_eq(len, 15);

	unlink(path);
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), -ENOENT);
	cr_assert_eq(kv_read_token_file(NULL, buf, sizeof(buf), &len), -EINVAL);
}
