/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by every kvfs component: clocks, human sizes,
 * HOST:PORT parsing, random bytes.  All functions are thread-safe and
 * allocation-free.
 */
#ifndef KVFS_UTIL_H
#define KVFS_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define KV_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define KV_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define KV_MAX(a, b)     ((a) > (b) ? (a) : (b))

#define KV_KIB (1024ULL)
#define KV_MIB (1024ULL * 1024)
#define KV_GIB (1024ULL * 1024 * 1024)

/* Longest key in bytes: the protocol's, the store's and kvfs's limit. */
#define KV_KEY_MAX 4096

/* CLOCK_MONOTONIC in nanoseconds / milliseconds. */
uint64_t kv_now_ns(void);
uint64_t kv_now_ms(void);

/* A condition variable whose timed waits run on kv_now_ms()'s clock. */
void kv_cond_init_monotonic(pthread_cond_t *cond);
/* Wait on @cond (@lock held) until it is signalled or kv_now_ms() reaches
 * @until_ms. */
void kv_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *lock, uint64_t until_ms);

/*
 * Parse "4096", "64K", "1.5M", "4G", "1T" (powers of 1024, optional "iB"/"B").
 * Returns 0 and sets *ret_bytes, or -EINVAL (garbage) / -ERANGE (overflow).
 */
int kv_parse_size(const char *s, uint64_t *ret_bytes);

/* Format @bytes as "1.5 GiB" into @buf; returns @buf. */
char *kv_fmt_size(uint64_t bytes, char *buf, size_t len);

/*
 * Split "HOST:PORT" or "[V6]:PORT" into @host (NUL-terminated, at most
 * @hostlen bytes) and *ret_port.  A missing port uses @default_port.
 * Returns 0 or -EINVAL.
 */
int kv_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t default_port,
                      uint16_t *ret_port);

/* Format @host and @port as "HOST:PORT", "[V6]:PORT" for a host holding a
 * ':', into @buf; returns @buf.  Messages name an address this way, with the
 * port kv_parse_hostport() assumed when it was left out. */
char *kv_fmt_hostport(const char *host, uint16_t port, char *buf, size_t len);

/* splitmix64: advance the generator state *@s and return its next value.
 * Deterministic for a given start state; the state belongs to the caller. */
static inline uint64_t kv_splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* Bytewise (memcmp) order of two keys, the shorter first when one is a
 * prefix of the other: the order LIST returns keys in. */
static inline int kv_key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = n ? memcmp(a, b, n) : 0; /* an empty key may be NULL */

	return c ? c : (alen > blen) - (alen < blen);
}

/* Write @s to @f as a JSON string literal, quotes included; a byte that is
 * not part of well-formed UTF-8 (keys may hold any byte) is written as the
 * code point of its value, \u0080..\u00ff. */
void kv_json_str(FILE *f, const char *s);

/* "'key'" into @out (capacity @cap, at least 16) for messages and logs:
 * bytes outside printable ASCII, quotes and backslashes as \xNN, and
 * shortened past 48 bytes with "...".  Keys may hold any byte but NUL
 * (tabs, newlines, escape sequences): never print one raw. */
void kv_quote_key(const void *key, size_t len, char *out, size_t cap);

/* Fill @buf with @len bytes from getrandom(2) (blocks only until the kernel
 * pool is initialised, retries on EINTR and short reads).  Returns 0 or
 * -errno (-ENOSYS on kernels without getrandom).  For auth nonces. */
int kv_random_bytes(void *buf, size_t len);

#endif /* KVFS_UTIL_H */
