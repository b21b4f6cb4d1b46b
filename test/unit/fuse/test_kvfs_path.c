/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "kvfs_i.h"

Test(kvfs_path, join)
{
	char out[KV_KEY_MAX + 8];

	cr_assert_eq(kvfs_path_join("", "a", out, sizeof(out)), 1);
	cr_assert_str_eq(out, "a");
	cr_assert_eq(kvfs_path_join("a/b", "c.txt", out, sizeof(out)), 9);
	cr_assert_str_eq(out, "a/b/c.txt");
	cr_assert_eq(kvfs_path_join("a", "", out, sizeof(out)), -EINVAL);
	cr_assert_eq(kvfs_path_join("a", ".", out, sizeof(out)), -EINVAL);
	cr_assert_eq(kvfs_path_join("a", "..", out, sizeof(out)), -EINVAL);
	cr_assert_eq(kvfs_path_join("a", "x/y", out, sizeof(out)), -EINVAL);
	/* names with control bytes or invalid UTF-8 pass through unchanged */
	cr_assert_eq(kvfs_path_join("", "\x01\xff", out, sizeof(out)), 2);
	cr_assert_eq(memcmp(out, "\x01\xff", 3), 0);
}

Test(kvfs_path, limits)
{
	char parent[KV_KEY_MAX + 1], out[KV_KEY_MAX + 8];

	/* KV_KEY_MAX is PATH_MAX: a key of exactly that many bytes is valid */
	memset(parent, 'p', KV_KEY_MAX - 24);
	parent[KV_KEY_MAX - 24] = '\0';
	cr_assert_eq(kvfs_path_join(parent, "abcdefghijklmnopqrstuvw", out, sizeof(out)),
	             KV_KEY_MAX, "exactly KV_KEY_MAX bytes is a valid key");
	cr_assert_eq(kvfs_path_join(parent, "abcdefghijklmnopqrstuvwx", out, sizeof(out)),
	             -ENAMETOOLONG);
	cr_assert_eq(kvfs_path_join("", "abc", out, 3), -ENAMETOOLONG, "buffer too small");
	memset(parent, 'p', KV_KEY_MAX - 1);
	parent[KV_KEY_MAX - 1] = '\0';
	cr_assert_eq(kvfs_path_dir_marker(parent, out, sizeof(out)), KV_KEY_MAX);
	parent[KV_KEY_MAX - 1] = 'p';
	parent[KV_KEY_MAX] = '\0';
	cr_assert_eq(kvfs_path_dir_marker(parent, out, sizeof(out)), -ENAMETOOLONG);
}

Test(kvfs_path, markers_and_prefixes)
{
	char out[64];

	cr_assert_eq(kvfs_path_dir_marker("d/e", out, sizeof(out)), 4);
	cr_assert_str_eq(out, "d/e/");
	cr_assert_eq(kvfs_path_dir_marker("", out, sizeof(out)), -EINVAL);
	cr_assert_eq(kvfs_path_dir_prefix("", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "");
	cr_assert_eq(kvfs_path_dir_prefix("x", out, sizeof(out)), 2);
	cr_assert_str_eq(out, "x/");
	cr_assert(kvfs_path_is_marker("d/", 2));
	cr_assert_not(kvfs_path_is_marker("d", 1));
	cr_assert_not(kvfs_path_is_marker("", 0));
	cr_assert_str_eq(kvfs_path_base("a/b/c"), "c");
	cr_assert_str_eq(kvfs_path_base("c"), "c");
}
