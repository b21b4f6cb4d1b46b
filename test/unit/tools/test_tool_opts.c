/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool_opts.h"

static void test_usage(FILE *out)
{
	fputs("Usage: test-tool [--json]\n", out);
}

static const struct topt_tool tool = {.prog = "test-tool", .usage = test_usage};

Test(topt, parse_uint_decimal_or_0x)
{
	uint64_t v;

	cr_assert_eq(topt_parse_uint("0", 0, 10, &v), 0);
	cr_assert_eq(v, 0);
	cr_assert_eq(topt_parse_uint("42", 0, 100, &v), 0);
	cr_assert_eq(v, 42);
	cr_assert_eq(topt_parse_uint("010", 0, 100, &v), 0);
	cr_assert_eq(v, 10, "a leading 0 is decimal, not octal");
	cr_assert_eq(topt_parse_uint("0x1f", 0, 100, &v), 0);
	cr_assert_eq(v, 31);
	cr_assert_eq(topt_parse_uint("0XFF", 0, 1000, &v), 0);
	cr_assert_eq(v, 255);
	cr_assert_eq(topt_parse_uint("18446744073709551615", 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, UINT64_MAX);
	v = 7;
	cr_assert_eq(topt_parse_uint("", 0, 10, &v), -EINVAL);
	cr_assert_eq(topt_parse_uint(NULL, 0, 10, &v), -EINVAL);
	cr_assert_eq(topt_parse_uint("-1", 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_uint("+1", 0, 10, &v), -EINVAL);
	cr_assert_eq(topt_parse_uint(" 1", 0, 10, &v), -EINVAL);
	cr_assert_eq(topt_parse_uint("1 ", 0, 10, &v), -EINVAL);
	cr_assert_eq(topt_parse_uint("1k", 0, 10000, &v), -EINVAL);
	cr_assert_eq(topt_parse_uint("0x", 0, 10, &v), -EINVAL);
	cr_assert_eq(topt_parse_uint("0x0x5", 0, 10, &v), -EINVAL);
	cr_assert_eq(topt_parse_uint("0x-5", 0, 10, &v), -EINVAL);
	cr_assert_eq(topt_parse_uint("1.5", 0, 10, &v), -EINVAL);
	cr_assert_eq(topt_parse_uint("11", 0, 10, &v), -ERANGE);
	cr_assert_eq(topt_parse_uint("0", 1, 10, &v), -ERANGE);
	cr_assert_eq(topt_parse_uint("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
	cr_assert_eq(v, 7, "output untouched on failure");
}

Test(topt, parse_size_is_kv_parse_size_with_a_range)
{
	uint64_t v;

	cr_assert_eq(topt_parse_size("4096", 1, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 4096);
	cr_assert_eq(topt_parse_size("4K", 1, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 4096);
	cr_assert_eq(topt_parse_size("1.5M", 1, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 1572864);
	cr_assert_eq(topt_parse_size("1GiB", 1, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 1ULL << 30);
	cr_assert_eq(topt_parse_size("64MiB", 1, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 64ULL << 20);
	cr_assert_eq(topt_parse_size("0", 0, 10, &v), 0);
	cr_assert_eq(v, 0);
	v = 7;
	cr_assert_eq(topt_parse_size("", 0, 10, &v), -EINVAL);
	cr_assert_eq(topt_parse_size("-1", 0, 10, &v), -EINVAL);
	cr_assert_eq(topt_parse_size("4Q", 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_size("0", 1, 10, &v), -ERANGE);
	cr_assert_eq(topt_parse_size("65G", 1, 64ULL << 30, &v), -ERANGE);
	cr_assert_eq(v, 7, "output untouched on failure");
}

Test(topt, parse_duration_units)
{
	const uint64_t ms = TOPT_NS_PER_MS, s = TOPT_NS_PER_S;
	uint64_t v;

	cr_assert_eq(topt_parse_duration("1500", ms, 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 1500 * ms, "a bare number is in the bare unit");
	cr_assert_eq(topt_parse_duration("10", s, 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 10 * s);
	cr_assert_eq(topt_parse_duration("0.5", s, 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, s / 2);
	cr_assert_eq(topt_parse_duration(".25", s, 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, s / 4);
	cr_assert_eq(topt_parse_duration("2.", s, 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 2 * s);
	cr_assert_eq(topt_parse_duration("250ms", s, 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 250 * ms);
	cr_assert_eq(topt_parse_duration("2s", ms, 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 2 * s);
	cr_assert_eq(topt_parse_duration("1.5m", ms, 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 90 * s);
	cr_assert_eq(topt_parse_duration("0.1", s, s / 10, UINT64_MAX, &v), 0);
	cr_assert_eq(v, s / 10, "0.1 s is not rounded below a 0.1 s minimum");
	cr_assert_eq(topt_parse_duration("0", s, 0, 0, &v), 0);
	cr_assert_eq(v, 0);
	v = 7;
	cr_assert_eq(topt_parse_duration("", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration(".", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("s", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("-1", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("+1", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration(" 1", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("1 s", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("1e3", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("0x10", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("inf", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("nan", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("1h", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("1M", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("1mss", s, 0, UINT64_MAX, &v), -EINVAL);
	cr_assert_eq(topt_parse_duration("3601", s, 0, 3600 * s, &v), -ERANGE);
	cr_assert_eq(topt_parse_duration("61m", s, 0, 3600 * s, &v), -ERANGE);
	cr_assert_eq(topt_parse_duration("0.5ms", ms, ms, 10 * s, &v), -ERANGE);
	cr_assert_eq(topt_parse_duration("99999999999999999999", s, 0, UINT64_MAX, &v), -ERANGE);
	cr_assert_eq(v, 7, "output untouched on failure");
}

Test(topt, parse_ms_rounds_up_to_whole_ms)
{
	int ms = 7;

	cr_assert_eq(topt_parse_ms("2500", 1, 600000, &ms), 0);
	cr_assert_eq(ms, 2500);
	cr_assert_eq(topt_parse_ms("2s", 1, 600000, &ms), 0);
	cr_assert_eq(ms, 2000);
	cr_assert_eq(topt_parse_ms("10m", 1, 600000, &ms), 0);
	cr_assert_eq(ms, 600000);
	cr_assert_eq(topt_parse_ms("1.2", 1, 600000, &ms), 0);
	cr_assert_eq(ms, 2, "never shorter than asked");
	cr_assert_eq(topt_parse_ms("0", 0, 10, &ms), 0);
	cr_assert_eq(ms, 0);
	ms = 7;
	cr_assert_eq(topt_parse_ms("0.5", 1, 600000, &ms), -ERANGE);
	cr_assert_eq(topt_parse_ms("0", 1, 600000, &ms), -ERANGE);
	cr_assert_eq(topt_parse_ms("10.001m", 1, 600000, &ms), -ERANGE);
	cr_assert_eq(topt_parse_ms("10x", 1, 600000, &ms), -EINVAL);
	cr_assert_eq(ms, 7, "output untouched on failure");
}

Test(topt, parse_secs_fractions_and_units)
{
	double d = -1;

	cr_assert_eq(topt_parse_secs("10", 0, 86400, &d), 0);
	cr_assert_float_eq(d, 10.0, 1e-12);
	cr_assert_eq(topt_parse_secs("2.5", 0, 86400, &d), 0);
	cr_assert_float_eq(d, 2.5, 1e-12);
	cr_assert_eq(topt_parse_secs("750ms", 0, 86400, &d), 0);
	cr_assert_float_eq(d, 0.75, 1e-12);
	cr_assert_eq(topt_parse_secs("60m", 0, 3600, &d), 0);
	cr_assert_float_eq(d, 3600.0, 1e-12);
	cr_assert_eq(topt_parse_secs("0.1", 0.1, 60, &d), 0);
	cr_assert_float_eq(d, 0.1, 1e-12, "0.1 s is not rounded below a 0.1 s minimum");
	d = -1;
	cr_assert_eq(topt_parse_secs("3601", 0, 3600, &d), -ERANGE);
	cr_assert_eq(topt_parse_secs("0.09", 0.1, 60, &d), -ERANGE);
	cr_assert_eq(topt_parse_secs("1e1", 0, 60, &d), -EINVAL);
	cr_assert_float_eq(d, -1.0, 1e-12, "output untouched on failure");
}

Test(topt, uint_arg_message, .init = cr_redirect_stderr)
{
	uint64_t v = 7;

	cr_assert_eq(topt_uint_arg(&tool, "--keys", "12", 1, 100, &v), 0);
	cr_assert_eq(v, 12);
	cr_assert_eq(topt_uint_arg(&tool, "--keys", "0", 1, 100, &v), -EINVAL);
	cr_assert_eq(v, 12);
	fflush(stderr);
	cr_assert_stderr_eq_str("test-tool: --keys: '0' is not a number from 1 to 100. Try "
	                        "'test-tool --help'.\n");
}

Test(topt, secs_arg_message, .init = cr_redirect_stderr)
{
	double d = -1;

	cr_assert_eq(topt_secs_arg(&tool, "--duration", "1.5", 0, 60, &d), 0);
	cr_assert_float_eq(d, 1.5, 1e-12);
	cr_assert_eq(topt_secs_arg(&tool, "--duration", "2m", 0, 600, &d), 0);
	cr_assert_float_eq(d, 120.0, 1e-12);
	cr_assert_eq(topt_secs_arg(&tool, "--interval", "0.1", 0.1, 60, &d), 0);
	cr_assert_float_eq(d, 0.1, 1e-12);
	cr_assert_eq(topt_secs_arg(&tool, "--interval", "0.05", 0.1, 60, &d), -EINVAL);
	cr_assert_float_eq(d, 0.1, 1e-12);
	fflush(stderr);
	cr_assert_stderr_eq_str("test-tool: --interval: '0.05' is not a number of seconds\n");
}

Test(topt, std_opt_version, .init = cr_redirect_stdout)
{
	cr_assert(topt_std_opt(&tool, 'V'));
	cr_assert_not(topt_std_opt(&tool, 'j'));
	fflush(stdout);
	cr_assert_stdout_eq_str("test-tool " KVFS_VERSION "\n");
}

Test(topt, std_opt_help, .init = cr_redirect_stdout)
{
	cr_assert(topt_std_opt(&tool, 'h'));
	fflush(stdout);
	cr_assert_stdout_eq_str("Usage: test-tool [--json]\n");
}

Test(topt, client_init_takes_kvfs_server)
{
	struct topt_client c;

	unsetenv("KVFS_SERVER");
	topt_client_init(&c);
	cr_assert_str_eq(c.server, TOPT_DEFAULT_SERVER);
	cr_assert_str_eq(c.provider, "auto");
	cr_assert_null(c.auth_token_file);
	cr_assert_eq(c.timeout_ms, 10000);
	setenv("KVFS_SERVER", "", 1);
	topt_client_init(&c);
	cr_assert_str_eq(c.server, TOPT_DEFAULT_SERVER, "an empty KVFS_SERVER is not set");
	setenv("KVFS_SERVER", "10.0.0.1:7171", 1);
	topt_client_init(&c);
	cr_assert_str_eq(c.server, "10.0.0.1:7171");
}

/* The fragment in a tool's getopt_long() tables, beside an option of the
 * tool's own, in both spellings. */
Test(topt, client_opts_through_getopt_long)
{
	static const struct option lo[] = {
	        TOPT_CLIENT_LONG,
	        {"json", no_argument, NULL, 'j'},
	        {0},
	};
	char *argv[] = {"test-tool", "--server=h:1", "-p", "tcp", "--auth-token-file",
	                "/tmp/tok",  "-t",           "2s", "-j",  "--timeout",
	                "1.5",       "rest",         NULL};
	int argc = (int)(sizeof(argv) / sizeof(argv[0])) - 1, opt, json = 0;
	struct topt_client c;

	unsetenv("KVFS_SERVER");
	topt_client_init(&c);
	optind = 0;
	while ((opt = getopt_long(argc, argv, "+" TOPT_CLIENT_SHORT "j", lo, NULL)) != -1) {
		int r = topt_client_opt(&tool, &c, opt, optarg);

		cr_assert_geq(r, 0, "option %c", opt);
		if (r == TOPT_OTHER) {
			cr_assert_eq(opt, 'j');
			json = 1;
		}
	}
	cr_assert_eq(optind, argc - 1);
	cr_assert_str_eq(c.server, "h:1");
	cr_assert_str_eq(c.provider, "tcp");
	cr_assert_str_eq(c.auth_token_file, "/tmp/tok");
	cr_assert_eq(c.timeout_ms, 2, "1.5 ms is rounded up to whole ms");
	cr_assert(json);
}

Test(topt, client_timeout_values, .init = cr_redirect_stderr)
{
	struct topt_client c;

	topt_client_init(&c);
	cr_assert_eq(topt_client_opt(&tool, &c, 't', "2500"), TOPT_TAKEN);
	cr_assert_eq(c.timeout_ms, 2500, "a bare number is ms");
	cr_assert_eq(topt_client_opt(&tool, &c, 't', "3s"), TOPT_TAKEN);
	cr_assert_eq(c.timeout_ms, 3000);
	cr_assert_eq(topt_client_opt(&tool, &c, 't', "1m"), TOPT_TAKEN);
	cr_assert_eq(c.timeout_ms, 60000);
	cr_assert_eq(topt_client_opt(&tool, &c, 't', "86400000"), TOPT_TAKEN);
	cr_assert_eq(c.timeout_ms, 86400000);
	cr_assert_eq(topt_client_opt(&tool, &c, 't', "0"), -EINVAL);
	cr_assert_eq(topt_client_opt(&tool, &c, 't', "86400001"), -EINVAL);
	cr_assert_eq(topt_client_opt(&tool, &c, 't', "ten"), -EINVAL);
	cr_assert_eq(c.timeout_ms, 86400000, "unchanged by a bad value");
	fflush(stderr);
	cr_assert_stderr_neq_str("");
}

Test(topt, client_unknown_option_says_try_help, .init = cr_redirect_stderr)
{
	struct topt_client c;

	topt_client_init(&c);
	cr_assert_eq(topt_client_opt(&tool, &c, '?', NULL), -EINVAL);
	cr_assert_eq(topt_client_opt(&tool, &c, 'z', NULL), TOPT_OTHER);
	fflush(stderr);
	cr_assert_stderr_eq_str("Try 'test-tool --help'.\n");
}

Test(topt, client_help_and_version_exit, .init = cr_redirect_stdout)
{
	struct topt_client c;

	topt_client_init(&c);
	cr_assert_eq(topt_client_opt(&tool, &c, 'V', NULL), TOPT_EXIT);
	cr_assert_eq(topt_client_opt(&tool, &c, 'h', NULL), TOPT_EXIT);
	fflush(stdout);
	cr_assert_stdout_eq_str("test-tool " KVFS_VERSION "\nUsage: test-tool [--json]\n");
}

Test(topt, client_check_server, .init = cr_redirect_stderr)
{
	struct topt_client c;

	topt_client_init(&c);
	c.server = "127.0.0.1:7070";
	cr_assert_eq(topt_client_check(&tool, &c), 0);
	c.server = "host";
	cr_assert_eq(topt_client_check(&tool, &c), 0);
	c.server = "[::1]:7070";
	cr_assert_eq(topt_client_check(&tool, &c), 0);
	c.server = "a:b:c";
	cr_assert_eq(topt_client_check(&tool, &c), -EINVAL);
	fflush(stderr);
	cr_assert_stderr_eq_str("test-tool: 'a:b:c' is not HOST:PORT (--server / KVFS_SERVER)\n"
	                        "Try 'test-tool --help'.\n");
}

Test(topt, client_kvc_opts)
{
	struct topt_client c = {
	        .server = "h:1", .provider = "shm", .auth_token_file = "/tok", .timeout_ms = 1234};
	struct kvc_opts o;

	memset(&o, 0xa5, sizeof(o));
	topt_client_kvc_opts(&c, "test-tool", &o);
	cr_assert_str_eq(o.server, "h:1");
	cr_assert_str_eq(o.provider, "shm");
	cr_assert_str_eq(o.auth_token_file, "/tok");
	cr_assert_eq(o.timeout_ms, 1234);
	cr_assert_str_eq(o.client_id, "test-tool");
	cr_assert_str_eq(o.auth_option, "--auth-token-file");
	cr_assert_null(o.bind, "the rest is kvc_opts_init()'s");
	cr_assert_eq(o.connect_timeout_ms, 0);
	cr_assert_eq(o.bounce_size, 0);
}
