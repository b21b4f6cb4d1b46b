/* SPDX-License-Identifier: MIT */
/*
 * kvfs hmac: self-contained SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104)
 * for the control channel's token authentication (docs/protocol.md,
 * "Authentication").  It still includes kvfs/token.h and kvfs/util.h, where
 * kv_read_token_file() and kv_random_bytes() moved, for its old users.
 *
 * All functions are reentrant and allocation-free; a struct kv_sha256_ctx
 * belongs to one thread at a time.  Nothing here logs.
 */
#ifndef KVFS_HMAC_H
#define KVFS_HMAC_H

#include <stddef.h>
#include <stdint.h>

#include "kvfs/token.h"
#include "kvfs/util.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KV_SHA256_LEN   32 /* digest bytes */
#define KV_SHA256_BLOCK 64 /* block bytes */

/* Incremental SHA-256.  Fields are private. */
struct kv_sha256_ctx {
	uint32_t h[8];                /* chaining state */
	uint64_t total;               /* bytes hashed so far */
	uint8_t buf[KV_SHA256_BLOCK]; /* partial block */
	size_t buflen;                /* bytes in buf */
};

void kv_sha256_init(struct kv_sha256_ctx *ctx);
void kv_sha256_update(struct kv_sha256_ctx *ctx, const void *data, size_t len);
/* Write the digest and wipe @ctx (init again to reuse it). */
void kv_sha256_final(struct kv_sha256_ctx *ctx, uint8_t out[KV_SHA256_LEN]);

/* One-shot SHA-256 of @len bytes at @data. */
void kv_sha256(const void *data, size_t len, uint8_t out[KV_SHA256_LEN]);

/* HMAC-SHA256 with a key of any length (keys above 64 bytes are hashed). */
void kv_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                    uint8_t out[KV_SHA256_LEN]);

#ifdef __cplusplus
}
#endif
#endif /* KVFS_HMAC_H */
