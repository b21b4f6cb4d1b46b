/* SPDX-License-Identifier: MIT */
/* Shared by the xfer tests and their peer program: deterministic patterns and
 * the one-line handshake the peer prints. */
#ifndef KVFS_XFER_TEST_H
#define KVFS_XFER_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kvfs/xfer.h"

/* Fill @len bytes at @p with a pattern derived from @seed and the offset. */
static inline void pat_fill(void *p, size_t len, uint64_t seed)
{
	uint8_t *b = p;
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;

	for (size_t i = 0; i < len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t n = len - i < 8 ? len - i : 8;
		memcpy(b + i, &x, n);
	}
}

/* Index of the first byte that differs from the pattern, or -1. */
static inline long pat_check(const void *p, size_t len, uint64_t seed)
{
	const uint8_t *b = p;
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;

	for (size_t i = 0; i < len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t n = len - i < 8 ? len - i : 8;
		if (memcmp(b + i, &x, n)) {
			for (size_t j = 0; j < n; j++)
				if (b[i + j] != ((const uint8_t *)&x)[j])
					return (long)(i + j);
		}
	}
	return -1;
}

/* One transfer of @len bytes between @mr at @loff and the remote region
 * @desc at @roff; x->op points into *x, so @x must not be copied. */
struct one_xfer {
	struct xfer_sge s;
	struct xfer_rsge rs;
	struct xfer_op op;
};

static inline void one_xfer_init(struct one_xfer *x, xfer_peer_t peer, enum xfer_opcode opc,
                                 struct xfer_mr *mr, uint64_t loff, const struct xfer_desc *desc,
                                 uint64_t roff, uint64_t len)
{
	x->s = (struct xfer_sge){.mr = mr, .off = loff, .len = len};
	x->rs = (struct xfer_rsge){.desc = *desc, .off = roff, .len = len};
	x->op = (struct xfer_op){.opcode = opc,
	                         .peer = peer,
	                         .local = &x->s,
	                         .nlocal = 1,
	                         .remote = &x->rs,
	                         .nremote = 1};
}

static inline void hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char h[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = h[in[i] >> 4];
		out[2 * i + 1] = h[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static inline int hex_decode(const char *in, uint8_t *out, size_t cap)
{
	size_t n = strlen(in) / 2;

	if (n > cap)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(in + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return (int)n;
}

#endif
