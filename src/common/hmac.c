/* SPDX-License-Identifier: MIT */
/*
 * SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), written from the
 * specifications.  See include/kvfs/hmac.h.
 */
#include <string.h>

#include "kvfs/hmac.h"

static const uint32_t sha256_k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
};

static inline uint32_t ror32(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

static inline uint32_t load_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
	       (uint32_t)p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Volatile stores so the compiler cannot drop the wipe of secrets. */
static void wipe(void *p, size_t len)
{
	volatile uint8_t *v = p;

	while (len--)
		*v++ = 0;
}

static void sha256_block(uint32_t h[8], const uint8_t blk[KV_SHA256_BLOCK])
{
	uint32_t w[64], a, b, c, d, e, f, g, hh, t1, t2;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = load_be32(blk + 4 * i);
	for (i = 16; i < 64; i++) {
		uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0];
	b = h[1];
	c = h[2];
	d = h[3];
	e = h[4];
	f = h[5];
	g = h[6];
	hh = h[7];
	for (i = 0; i < 64; i++) {
		uint32_t S1 = ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25);
		uint32_t ch = (e & f) ^ (~e & g);
		uint32_t S0 = ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22);
		uint32_t maj = (a & b) ^ (a & c) ^ (b & c);

		t1 = hh + S1 + ch + sha256_k[i] + w[i];
		t2 = S0 + maj;
		hh = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
	h[5] += f;
	h[6] += g;
	h[7] += hh;
	wipe(w, sizeof(w));
}

void kv_sha256_init(struct kv_sha256_ctx *ctx)
{
	static const uint32_t iv[8] = {
	        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
	        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};

	memcpy(ctx->h, iv, sizeof(iv));
	ctx->total = 0;
	ctx->buflen = 0;
}

void kv_sha256_update(struct kv_sha256_ctx *ctx, const void *data, size_t len)
{
	const uint8_t *p = data;

	ctx->total += len;
	if (ctx->buflen) {
		size_t take = KV_SHA256_BLOCK - ctx->buflen;

		if (take > len)
			take = len;
		memcpy(ctx->buf + ctx->buflen, p, take);
		ctx->buflen += take;
		p += take;
		len -= take;
		if (ctx->buflen < KV_SHA256_BLOCK)
			return;
		sha256_block(ctx->h, ctx->buf);
		ctx->buflen = 0;
	}
	while (len >= KV_SHA256_BLOCK) {
		sha256_block(ctx->h, p);
		p += KV_SHA256_BLOCK;
		len -= KV_SHA256_BLOCK;
	}
	if (len) {
		memcpy(ctx->buf, p, len);
		ctx->buflen = len;
	}
}

void kv_sha256_final(struct kv_sha256_ctx *ctx, uint8_t out[KV_SHA256_LEN])
{
	uint64_t bits = ctx->total * 8;
	int i;

	/* Padding: 0x80, zeros up to 56 mod 64, then the bit length (BE64). */
	ctx->buf[ctx->buflen++] = 0x80;
	if (ctx->buflen > KV_SHA256_BLOCK - 8) {
		memset(ctx->buf + ctx->buflen, 0, KV_SHA256_BLOCK - ctx->buflen);
		sha256_block(ctx->h, ctx->buf);
		ctx->buflen = 0;
	}
	memset(ctx->buf + ctx->buflen, 0, KV_SHA256_BLOCK - 8 - ctx->buflen);
	for (i = 0; i < 8; i++)
		ctx->buf[KV_SHA256_BLOCK - 1 - i] = (uint8_t)(bits >> (8 * i));
	sha256_block(ctx->h, ctx->buf);
	for (i = 0; i < 8; i++)
		store_be32(out + 4 * i, ctx->h[i]);
	wipe(ctx, sizeof(*ctx));
}

void kv_sha256(const void *data, size_t len, uint8_t out[KV_SHA256_LEN])
{
	struct kv_sha256_ctx ctx;

	kv_sha256_init(&ctx);
	kv_sha256_update(&ctx, data, len);
	kv_sha256_final(&ctx, out);
}

void kv_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                    uint8_t out[KV_SHA256_LEN])
{
	uint8_t k[KV_SHA256_BLOCK] = {0}, pad[KV_SHA256_BLOCK], inner[KV_SHA256_LEN];
	struct kv_sha256_ctx ctx;
	size_t i;

	if (keylen > KV_SHA256_BLOCK)
		kv_sha256(key, keylen, k);
	else if (keylen)
		memcpy(k, key, keylen);

	for (i = 0; i < KV_SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x36;
	kv_sha256_init(&ctx);
	kv_sha256_update(&ctx, pad, sizeof(pad));
	kv_sha256_update(&ctx, msg, msglen);
	kv_sha256_final(&ctx, inner);

	for (i = 0; i < KV_SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x5c;
	kv_sha256_init(&ctx);
	kv_sha256_update(&ctx, pad, sizeof(pad));
	kv_sha256_update(&ctx, inner, sizeof(inner));
	kv_sha256_final(&ctx, out);

	wipe(k, sizeof(k));
	wipe(pad, sizeof(pad));
	wipe(inner, sizeof(inner));
}
