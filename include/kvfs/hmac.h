/* SPDX-License-Identifier: MIT */
/*
 * kvfs hmac: self-contained SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104)
 * for the control channel's token authentication (docs/protocol.md,
 * "Authentication"), plus random bytes and token-file reading.
 *
 * All functions are reentrant and allocation-free; a struct kv_sha256_ctx
 * belongs to one thread at a time.  Nothing here logs.
 */
#ifndef KVFS_HMAC_H
#define KVFS_HMAC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KV_SHA256_LEN   32 /* digest bytes */
#define KV_SHA256_BLOCK 64 /* block bytes */

/* Largest token kv_read_token_file() accepts by default (callers pass their
 * own capacity; this is a sensible buffer size). */
#define KV_TOKEN_MAX 4096

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

/* Fill @buf with @len bytes from getrandom(2) (blocks only until the kernel
 * pool is initialised, retries on EINTR and short reads).  Returns 0 or
 * -errno (-ENOSYS on kernels without getrandom). */
int kv_random_bytes(void *buf, size_t len);

/*
 * Read a token from @path into @buf (capacity @cap, NUL-terminated), strip
 * trailing newline and whitespace, and return 0 and *ret_len (bytes without
 * the NUL).  Errors: -errno from open/read (-ENOENT, -EACCES, ...),
 * -ENODATA when the token is empty (or only whitespace), -EFBIG when it does
 * not fit @cap - 1 bytes, -EINVAL for bad arguments.  On failure *ret_len
 * is untouched and @buf holds no part of the token (it is wiped).
 */
int kv_read_token_file(const char *path, char *buf, size_t cap, size_t *ret_len);

#ifdef __cplusplus
}
#endif
#endif /* KVFS_HMAC_H */
