/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "kvfs/util.h"

uint64_t kv_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t kv_now_ms(void)
{
	return kv_now_ns() / 1000000ULL;
}

void kv_cond_init_monotonic(pthread_cond_t *cond)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cond, &ca);
	pthread_condattr_destroy(&ca);
}

void kv_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *lock, uint64_t until_ms)
{
	struct timespec ts = {.tv_sec = (time_t)(until_ms / 1000),
	                      .tv_nsec = (long)(until_ms % 1000) * 1000000L};

	pthread_cond_timedwait(cond, lock, &ts);
}

int kv_parse_size(const char *s, uint64_t *ret_bytes)
{
	static const char units[] = "BKMGTP";
	const char *p;
	char *end;
	double v, mult = 1;

	if (!s || !*s || *s == '-' || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v < 0)
		return -EINVAL;
	if (*end) {
		p = strchr(units, toupper((unsigned char)*end));
		if (!p)
			return -EINVAL;
		mult = pow(1024.0, (double)(p - units));
		end++;
		if (p != units && (*end == 'i' || *end == 'I'))
			end++;
		if (p != units && (*end == 'b' || *end == 'B'))
			end++;
		if (*end)
			return -EINVAL;
	}
	v *= mult;
	if (v >= 18446744073709551615.0)
		return -ERANGE;
	*ret_bytes = (uint64_t)v;
	return 0;
}

char *kv_fmt_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)bytes;
	unsigned u = 0;

	while (v >= 1024 && u < KV_ARRAY_SIZE(units) - 1) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

int kv_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t default_port,
                      uint16_t *ret_port)
{
	const char *colon, *hend;
	unsigned long port = default_port;
	size_t hl;
	char *end;

	if (!s || !*s)
		return -EINVAL;
	if (*s == '[') {
		hend = strchr(s, ']');
		if (!hend)
			return -EINVAL;
		s++;
		colon = hend[1] == ':' ? hend + 1 : NULL;
		if (hend[1] && !colon)
			return -EINVAL;
	} else {
		colon = strrchr(s, ':');
		if (colon && strchr(s, ':') != colon)
			return -EINVAL; /* bare IPv6 needs brackets */
		hend = colon ? colon : s + strlen(s);
	}
	hl = (size_t)(hend - s);
	if (hl == 0 || hl >= hostlen)
		return -EINVAL;
	if (colon) {
		errno = 0;
		port = strtoul(colon + 1, &end, 10);
		if (errno || end == colon + 1 || *end || port == 0 || port > 65535)
			return -EINVAL;
	}
	memcpy(host, s, hl);
	host[hl] = '\0';
	*ret_port = (uint16_t)port;
	return 0;
}

char *kv_fmt_hostport(const char *host, uint16_t port, char *buf, size_t len)
{
	bool v6 = strchr(host, ':') != NULL;

	snprintf(buf, len, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)port);
	return buf;
}

/* Length of the well-formed UTF-8 sequence at @p (at most @n bytes): 1..4,
 * or 0 (malformed, overlong, a surrogate, above U+10FFFF, cut short). */
static int utf8_len(const uint8_t *p, size_t n)
{
	uint8_t c = p[0], lo = 0x80, hi = 0xbf;
	int len;

	if (c < 0x80)
		return 1;
	if (c < 0xc2 || c > 0xf4)
		return 0;
	len = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if ((size_t)len > n)
		return 0;
	for (int i = 1; i < len; i++)
		if (p[i] < (i == 1 ? lo : 0x80) || p[i] > (i == 1 ? hi : 0xbf))
			return 0;
	return len;
}

void kv_json_str(FILE *f, const char *s)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t n = strlen(s);

	fputc('"', f);
	for (size_t i = 0; i < n;) {
		int l = utf8_len(p + i, n - i);

		if (p[i] == '"' || p[i] == '\\')
			fprintf(f, "\\%c", p[i]);
		else if (p[i] < 0x20 || p[i] == 0x7f || l == 0)
			fprintf(f, "\\u%04x", p[i]); /* a byte that is not UTF-8: U+0080..U+00FF */
		else
			fwrite(p + i, 1, (size_t)l, f);
		i += l ? (size_t)l : 1;
	}
	fputc('"', f);
}

void kv_quote_key(const void *key, size_t len, char *out, size_t cap)
{
	const unsigned char *k = key;
	size_t o = 0, i;

	if (cap < 16) {
		if (cap)
			out[0] = '\0';
		return;
	}
	out[o++] = '\'';
	for (i = 0; i < len && o + 8 < cap && i < 48; i++) {
		if (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '\'' && k[i] != '\\')
			out[o++] = (char)k[i];
		else
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", k[i]);
	}
	if (i < len && o + 5 < cap) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o++] = '\'';
	out[o] = '\0';
}

int kv_random_bytes(void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = getrandom(p, len, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
