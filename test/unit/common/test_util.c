/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "kvfs/util.h"

Test(util, parse_size)
{
	uint64_t v;

	cr_assert_eq(kv_parse_size("4096", &v), 0);
	cr_assert_eq(v, 4096);
	cr_assert_eq(kv_parse_size("64K", &v), 0);
	cr_assert_eq(v, 65536);
	cr_assert_eq(kv_parse_size("1.5M", &v), 0);
	cr_assert_eq(v, 1572864);
	cr_assert_eq(kv_parse_size("4GiB", &v), 0);
	cr_assert_eq(v, 4ULL << 30);
	cr_assert_eq(kv_parse_size("2g", &v), 0);
	cr_assert_eq(v, 2ULL << 30);
	v = 7;
	cr_assert_eq(kv_parse_size("", &v), -EINVAL);
	cr_assert_eq(kv_parse_size("-1", &v), -EINVAL);
	cr_assert_eq(kv_parse_size("12X", &v), -EINVAL);
	cr_assert_eq(kv_parse_size("1Kq", &v), -EINVAL);
	cr_assert_eq(kv_parse_size("99999999P", &v), -ERANGE);
	cr_assert_eq(v, 7, "output untouched on failure");
}

Test(util, fmt_size)
{
	char b[32];

	cr_assert_str_eq(kv_fmt_size(512, b, sizeof(b)), "512 B");
	cr_assert_str_eq(kv_fmt_size(1536, b, sizeof(b)), "1.5 KiB");
	cr_assert_str_eq(kv_fmt_size(1ULL << 30, b, sizeof(b)), "1.0 GiB");
}

Test(util, parse_hostport)
{
	char h[64];
	uint16_t p = 0;

	cr_assert_eq(kv_parse_hostport("127.0.0.1:7070", h, sizeof(h), 1, &p), 0);
	cr_assert_str_eq(h, "127.0.0.1");
	cr_assert_eq(p, 7070);
	cr_assert_eq(kv_parse_hostport("localhost", h, sizeof(h), 9999, &p), 0);
	cr_assert_str_eq(h, "localhost");
	cr_assert_eq(p, 9999);
	cr_assert_eq(kv_parse_hostport("[::1]:80", h, sizeof(h), 1, &p), 0);
	cr_assert_str_eq(h, "::1");
	cr_assert_eq(p, 80);
	cr_assert_eq(kv_parse_hostport("::1:80", h, sizeof(h), 1, &p), -EINVAL);
	cr_assert_eq(kv_parse_hostport("host:0", h, sizeof(h), 1, &p), -EINVAL);
	cr_assert_eq(kv_parse_hostport("host:70000", h, sizeof(h), 1, &p), -EINVAL);
	cr_assert_eq(kv_parse_hostport(":80", h, sizeof(h), 1, &p), -EINVAL);
	cr_assert_eq(kv_parse_hostport("h:8x", h, sizeof(h), 1, &p), -EINVAL);
}

Test(util, fmt_hostport)
{
	char h[64], b[80];
	uint16_t p = 0;

	cr_assert_eq(kv_parse_hostport("127.0.0.1", h, sizeof(h), 7070, &p), 0);
	cr_assert_str_eq(kv_fmt_hostport(h, p, b, sizeof(b)), "127.0.0.1:7070");
	cr_assert_eq(kv_parse_hostport("[::1]", h, sizeof(h), 7070, &p), 0);
	cr_assert_str_eq(kv_fmt_hostport(h, p, b, sizeof(b)), "[::1]:7070");
	cr_assert_str_eq(kv_fmt_hostport("kv.example", 80, b, sizeof(b)), "kv.example:80");
}

Test(random, bytes)
{
	uint8_t a[64] = {0}, b[64] = {0}, zero[64] = {0};

	cr_assert_eq(kv_random_bytes(a, sizeof(a)), 0);
	cr_assert_eq(kv_random_bytes(b, sizeof(b)), 0);
	cr_assert_neq(memcmp(a, zero, sizeof(a)), 0);
	cr_assert_neq(memcmp(a, b, sizeof(a)), 0);
	cr_assert_eq(kv_random_bytes(a, 0), 0);
}
