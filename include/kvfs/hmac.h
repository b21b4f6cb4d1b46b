/* SPDX-License-Identifier: MIT */
/*
 * kvfs hmac: TRANSITIONAL, to be removed.  kv_hmac_sha256() on libcrypto's
 * HMAC(), kept only so that src/client/kvc.c and src/server/server.c build
 * unchanged until their hand-built auth proofs become wire_auth_*() calls
 * (kvfs/wire_auth.h); delete this header then, and have them include
 * kvfs/token.h and kvfs/util.h, the homes of kv_read_token_file() and
 * kv_random_bytes(), which it includes for them meanwhile.
 *
 * Reentrant; any thread.  Link libcrypto (wire_dep carries it).
 */
#ifndef KVFS_HMAC_H
#define KVFS_HMAC_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "kvfs/token.h"
#include "kvfs/util.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KV_SHA256_LEN 32 /* digest bytes */

/* HMAC-SHA256 of @msg with a key of any length.  Aborts when libcrypto
 * fails (it cannot allocate): the callers have no error path, and going on
 * with an unwritten proof could let a forged one through. */
static inline void kv_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                                  uint8_t out[KV_SHA256_LEN])
{
	unsigned int len = 0;

	if (keylen > INT_MAX || !HMAC(EVP_sha256(), key, (int)keylen, msg, msglen, out, &len) ||
	    len != KV_SHA256_LEN)
		abort();
}

#ifdef __cplusplus
}
#endif
#endif /* KVFS_HMAC_H */
