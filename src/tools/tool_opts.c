/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvfs/token.h"
#include "kvfs/util.h"
#include "tool_opts.h"

/* ------------------------------------------------------------------ */
/* Values                                                              */

int topt_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret_v)
{
	const char *p = s, *q;
	unsigned long long v;
	int base = 10;

	if (!s)
		return -EINVAL;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	/* Digits only: strtoull() would also take blanks, a sign, and a
	 * second "0x". */
	for (q = p; *q; q++)
		if (base == 16 ? !isxdigit((unsigned char)*q) : !isdigit((unsigned char)*q))
			return -EINVAL;
	if (q == p)
		return -EINVAL;
	errno = 0;
	v = strtoull(p, NULL, base);
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	*ret_v = v;
	return 0;
}

int topt_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *ret_bytes)
{
	uint64_t v;
	int r = kv_parse_size(s, &v);

	if (r < 0)
		return r;
	if (v < min || v > max)
		return -ERANGE;
	*ret_bytes = v;
	return 0;
}

int topt_parse_duration(const char *s, uint64_t bare_ns, uint64_t min_ns, uint64_t max_ns,
                        uint64_t *ret_ns)
{
	const char *p = s;
	uint64_t unit = bare_ns, v;
	size_t digits = 0;
	double x;
	char *end;

	if (!s)
		return -EINVAL;
	/* [digits][.digits]: no sign, exponent, hex, inf or nan as strtod()
	 * would take */
	for (; isdigit((unsigned char)*p); p++)
		digits++;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			digits++;
	if (!digits)
		return -EINVAL;
	x = strtod(s, &end);
	if (end != p)
		return -EINVAL;
	if (!strcmp(p, "ms"))
		unit = TOPT_NS_PER_MS;
	else if (!strcmp(p, "s"))
		unit = TOPT_NS_PER_S;
	else if (!strcmp(p, "m"))
		unit = 60 * TOPT_NS_PER_S;
	else if (*p)
		return -EINVAL;
	x = round(x * (double)unit);
	if (x >= 18446744073709551615.0)
		return -ERANGE;
	v = (uint64_t)x;
	if (v < min_ns || v > max_ns)
		return -ERANGE;
	*ret_ns = v;
	return 0;
}

int topt_parse_ms(const char *s, int min_ms, int max_ms, int *ret_ms)
{
	uint64_t ns;
	int r;

	if (min_ms < 0 || max_ms < min_ms)
		return -EINVAL;
	r = topt_parse_duration(s, TOPT_NS_PER_MS, (uint64_t)min_ms * TOPT_NS_PER_MS,
	                        (uint64_t)max_ms * TOPT_NS_PER_MS, &ns);
	if (r < 0)
		return r;
	*ret_ms = (int)((ns + TOPT_NS_PER_MS - 1) / TOPT_NS_PER_MS);
	return 0;
}

int topt_parse_secs(const char *s, double min_s, double max_s, double *ret_s)
{
	uint64_t ns;
	int r;

	if (!(min_s >= 0) || !(max_s >= min_s) || max_s > 1e9)
		return -EINVAL;
	r = topt_parse_duration(s, TOPT_NS_PER_S, (uint64_t)round(min_s * 1e9),
	                        (uint64_t)round(max_s * 1e9), &ns);
	if (r < 0)
		return r;
	*ret_s = (double)ns / 1e9;
	return 0;
}

int topt_uint_arg(const struct topt_tool *t, const char *opt, const char *s, uint64_t min,
                  uint64_t max, uint64_t *ret_v)
{
	if (topt_parse_uint(s, min, max, ret_v) == 0)
		return 0;
	fprintf(stderr,
	        "%s: %s: '%s' is not a number from %" PRIu64 " to %" PRIu64 ". Try '%s --help'.\n",
	        t->prog, opt, s, min, max, t->prog);
	return -EINVAL;
}

int topt_secs_arg(const struct topt_tool *t, const char *opt, const char *s, double min_s,
                  double max_s, double *ret_s)
{
	if (topt_parse_secs(s, min_s, max_s, ret_s) == 0)
		return 0;
	fprintf(stderr, "%s: %s: '%s' is not a number of seconds\n", t->prog, opt, s);
	return -EINVAL;
}

/* ------------------------------------------------------------------ */
/* Common options                                                      */

bool topt_std_opt(const struct topt_tool *t, int opt)
{
	switch (opt) {
	case 'h':
		t->usage(stdout);
		return true;
	case 'V':
		printf("%s %s\n", t->prog, KVFS_VERSION);
		return true;
	default:
		return false;
	}
}

void topt_client_init(struct topt_client *c)
{
	c->server = getenv("KVFS_SERVER");
	if (!c->server || !*c->server)
		c->server = TOPT_DEFAULT_SERVER;
	c->provider = "auto";
	c->auth_token_file = NULL;
	c->timeout_ms = TOPT_DEFAULT_TIMEOUT_MS;
}

int topt_client_opt(const struct topt_tool *t, struct topt_client *c, int opt, const char *arg)
{
	switch (opt) {
	case 's':
		c->server = arg;
		return TOPT_TAKEN;
	case 'p':
		c->provider = arg;
		return TOPT_TAKEN;
	case 'a':
		c->auth_token_file = arg;
		return TOPT_TAKEN;
	case 't':
		if (topt_parse_ms(arg, 1, TOPT_MAX_TIMEOUT_MS, &c->timeout_ms) < 0) {
			fprintf(stderr,
			        "%s: --timeout: '%s' is not a time from 1 ms to 24 h (a number of "
			        "ms, or with a unit: 1500ms, 2s, 1m). Try '%s --help'.\n",
			        t->prog, arg, t->prog);
			return -EINVAL;
		}
		return TOPT_TAKEN;
	case '?':
		fprintf(stderr, "Try '%s --help'.\n", t->prog);
		return -EINVAL;
	default:
		return topt_std_opt(t, opt) ? TOPT_EXIT : TOPT_OTHER;
	}
}

int topt_client_check(const struct topt_tool *t, const struct topt_client *c)
{
	char host[256];
	uint16_t port;

	if (kv_token_file_exposed(c->auth_token_file))
		fprintf(stderr,
		        "%s: warning: the token file %s can be read by other users: they can take "
		        "the token (chmod 600 %s)\n",
		        t->prog, c->auth_token_file, c->auth_token_file);
	if (kv_parse_hostport(c->server, host, sizeof(host), KVC_DEFAULT_PORT, &port) == 0)
		return 0;
	fprintf(stderr, "%s: '%s' is not HOST:PORT (--server / KVFS_SERVER)\nTry '%s --help'.\n",
	        t->prog, c->server, t->prog);
	return -EINVAL;
}
