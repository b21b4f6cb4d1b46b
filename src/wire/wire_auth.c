/* SPDX-License-Identifier: MIT */
/*
 * Token authentication proofs on libcrypto's HMAC-SHA256: see
 * src/include/kvfs/wire_auth.h and docs/protocol.md, "Authentication".
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "kvfs/wire_auth.h"

#define LABEL_LEN(l) (sizeof(l) - 1) /* a label goes into the MAC without its NUL */

_Static_assert(WIRE_AUTH_PROOF_LEN == SHA256_DIGEST_LENGTH, "a proof is one HMAC-SHA256");

/* HMAC-SHA256(@token, @msg) into @ret_mac; 0, -EINVAL or -EIO. */
static int auth_mac(const void *token, size_t token_len, const uint8_t *msg, size_t msg_len,
                    uint8_t ret_mac[WIRE_AUTH_PROOF_LEN])
{
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	int r = 0;

	if (!token || token_len == 0 || token_len > INT_MAX)
		return -EINVAL;
	/* NULL is failure: never go on with a proof that was not written. */
	if (!HMAC(EVP_sha256(), token, (int)token_len, msg, msg_len, mac, &mac_len) ||
	    mac_len != WIRE_AUTH_PROOF_LEN) {
		ERR_clear_error(); /* this thread's libcrypto error queue: nobody reads it */
		r = -EIO;
	} else {
		memcpy(ret_mac, mac, WIRE_AUTH_PROOF_LEN);
	}
	OPENSSL_cleanse(mac, sizeof(mac));
	return r;
}

int wire_auth_client_proof(const void *token, size_t token_len,
                           const uint8_t auth_nonce[WIRE_AUTH_NONCE_LEN],
                           uint8_t ret_proof[WIRE_AUTH_PROOF_LEN])
{
	uint8_t msg[LABEL_LEN(WIRE_AUTH_CLIENT_LABEL) + WIRE_AUTH_NONCE_LEN];

	if (!auth_nonce)
		return -EINVAL;
	memcpy(msg, WIRE_AUTH_CLIENT_LABEL, LABEL_LEN(WIRE_AUTH_CLIENT_LABEL));
	memcpy(msg + LABEL_LEN(WIRE_AUTH_CLIENT_LABEL), auth_nonce, WIRE_AUTH_NONCE_LEN);
	return auth_mac(token, token_len, msg, sizeof(msg), ret_proof);
}

int wire_auth_server_proof(const void *token, size_t token_len,
                           const uint8_t client_nonce[WIRE_AUTH_NONCE_LEN],
                           const uint8_t auth_nonce[WIRE_AUTH_NONCE_LEN],
                           uint8_t ret_proof[WIRE_AUTH_PROOF_LEN])
{
	uint8_t msg[LABEL_LEN(WIRE_AUTH_SERVER_LABEL) + 2 * WIRE_AUTH_NONCE_LEN];
	uint8_t *p = msg;

	if (!client_nonce || !auth_nonce)
		return -EINVAL;
	memcpy(p, WIRE_AUTH_SERVER_LABEL, LABEL_LEN(WIRE_AUTH_SERVER_LABEL));
	p += LABEL_LEN(WIRE_AUTH_SERVER_LABEL);
	memcpy(p, client_nonce, WIRE_AUTH_NONCE_LEN);
	p += WIRE_AUTH_NONCE_LEN;
	memcpy(p, auth_nonce, WIRE_AUTH_NONCE_LEN);
	return auth_mac(token, token_len, msg, sizeof(msg), ret_proof);
}

/* Compare a received @proof with the expected @want (computed with status
 * @r), then wipe @want. */
static bool auth_proof_equal(int r, uint8_t want[WIRE_AUTH_PROOF_LEN], const void *proof)
{
	bool ok = r == 0 && CRYPTO_memcmp(want, proof, WIRE_AUTH_PROOF_LEN) == 0;

	OPENSSL_cleanse(want, WIRE_AUTH_PROOF_LEN);
	return ok;
}

bool wire_auth_check_client(const void *token, size_t token_len,
                            const uint8_t auth_nonce[WIRE_AUTH_NONCE_LEN], const void *proof,
                            size_t proof_len)
{
	uint8_t want[WIRE_AUTH_PROOF_LEN];
	int r;

	if (!proof || proof_len != WIRE_AUTH_PROOF_LEN)
		return false;
	r = wire_auth_client_proof(token, token_len, auth_nonce, want);
	return auth_proof_equal(r, want, proof);
}

bool wire_auth_check_server(const void *token, size_t token_len,
                            const uint8_t client_nonce[WIRE_AUTH_NONCE_LEN],
                            const uint8_t auth_nonce[WIRE_AUTH_NONCE_LEN], const void *proof,
                            size_t proof_len)
{
	uint8_t want[WIRE_AUTH_PROOF_LEN];
	int r;

	if (!proof || proof_len != WIRE_AUTH_PROOF_LEN)
		return false;
	r = wire_auth_server_proof(token, token_len, client_nonce, auth_nonce, want);
	return auth_proof_equal(r, want, proof);
}

bool wire_ct_equal(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}
