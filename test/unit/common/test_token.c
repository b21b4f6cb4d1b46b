/* SPDX-License-Identifier: MIT */
/* kv_read_token_file(): the shared auth token's file. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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
	char buf[32];
	size_t len = 99;
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	close(fd);

	write_file(path, "s3cret-s3cret-s3cret\n");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), 0);
	cr_assert_str_eq(buf, "s3cret-s3cret-s3cret");
	cr_assert_eq(len, 20);

	write_file(path, "  tok en tok en tok en \r\n\t\n");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), 0);
	cr_assert_str_eq(buf, "  tok en tok en tok en", "leading and inner whitespace are kept");
	cr_assert_eq(len, 22);

	len = 99;
	write_file(path, "");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), -ENODATA);
	write_file(path, " \n\n");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), -ENODATA);
	cr_assert_eq(len, 99, "untouched on failure");

	/* Too short to resist guessing: refused, the buffer wiped. */
	write_file(path, "s3cret\n");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), -EKEYREJECTED);
	cr_assert_eq(len, 99, "untouched on failure");
	for (size_t i = 0; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], 0, "token bytes left in the buffer");
	write_file(path, "0123456789abcde\n");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), -EKEYREJECTED, "15 bytes");
	write_file(path, "0123456789abcdef\n");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), 0, "16 bytes");
	cr_assert_eq(len, KV_TOKEN_MIN);

	write_file(path, "0123456789abcdef0123456789abcdef");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), -EFBIG);
	write_file(path, "0123456789abcdef0123456789abcde\n\n\n   ");
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), 0);
	cr_assert_eq(len, 31);

	unlink(path);
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), -ENOENT);
	cr_assert_eq(kv_read_token_file(NULL, buf, sizeof(buf), &len), -EINVAL);
}

/* One limit on both sides: KV_TOKEN_MAX, whatever buffer the caller has. */
Test(token, longest)
{
	char path[] = "/tmp/kvfs-token-XXXXXX";
	static char tok[KV_TOKEN_MAX + 2], buf[4 * KV_TOKEN_MAX];
	size_t len = 0;
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	close(fd);
	memset(tok, 'x', KV_TOKEN_MAX);
	write_file(path, tok);
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), 0);
	cr_assert_eq(len, KV_TOKEN_MAX);
	tok[KV_TOKEN_MAX] = 'x';
	write_file(path, tok);
	cr_assert_eq(kv_read_token_file(path, buf, sizeof(buf), &len), -EFBIG);
	cr_assert_not_null(strstr(kv_token_strerror(-EFBIG), "1024"));
	cr_assert_not_null(strstr(kv_token_strerror(-EKEYREJECTED), "16 bytes"));
	unlink(path);
}

/* A token file others can read is reported (the callers warn). */
Test(token, exposed)
{
	char path[] = "/tmp/kvfs-token-XXXXXX";
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(chmod(path, 0600), 0);
	cr_assert_not(kv_token_file_exposed(path));
	cr_assert_eq(chmod(path, 0640), 0);
	cr_assert(kv_token_file_exposed(path), "group-readable");
	cr_assert_eq(chmod(path, 0604), 0);
	cr_assert(kv_token_file_exposed(path), "world-readable");
	cr_assert_eq(chmod(path, 0400), 0);
	cr_assert_not(kv_token_file_exposed(path));
	unlink(path);
	cr_assert_not(kv_token_file_exposed(path), "missing file");
}
