/* SPDX-License-Identifier: MIT */
/*
 * kvfs wire_auth: the control channel's token authentication
 * (docs/protocol.md, "Authentication"): the sizes and labels, and the one
 * place that builds and checks both proofs, for kv-server and the client.
 *
 *   client proof = HMAC-SHA256(token, WIRE_AUTH_CLIENT_LABEL || auth_nonce)
 *   server proof = HMAC-SHA256(token, WIRE_AUTH_SERVER_LABEL || client_nonce || auth_nonce)
 *
 * auth_nonce is the server's (ServerHello.auth_nonce), client_nonce the
 * client's (HelloRequest.client_nonce); labels are mixed in without their NUL.
 * The HMAC and the constant-time compare are libcrypto's.
 *
 * Threads: every function is reentrant and may be called from any thread;
 * nothing here allocates for the caller, keeps state or logs.  A token is
 * any non-empty byte string (its file's contents: kvfs/token.h).
 */
#ifndef KVFS_WIRE_AUTH_H
#define KVFS_WIRE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Nonce and proof sizes, and the labels mixed into the HMACs. */
#define WIRE_AUTH_NONCE_LEN    32
#define WIRE_AUTH_PROOF_LEN    32
#define WIRE_AUTH_CLIENT_LABEL "kvfs-auth-v1"
#define WIRE_AUTH_SERVER_LABEL "kvfs-server-v1"

/*
 * Client proof for the server's @auth_nonce (HelloRequest.auth_proof): write
 * it to @ret_proof and return 0.  -EINVAL for a NULL or empty token (or one
 * above INT_MAX bytes) or a NULL nonce; -EIO when libcrypto fails to compute
 * the HMAC (out of memory, or a configuration without HMAC-SHA256).
 * @ret_proof is untouched on failure: never send it then.
 */
int wire_auth_client_proof(const void *token, size_t token_len,
                           const uint8_t auth_nonce[WIRE_AUTH_NONCE_LEN],
                           uint8_t ret_proof[WIRE_AUTH_PROOF_LEN]);

/*
 * Server proof (HelloResponse.server_proof) for the client's @client_nonce
 * and the server's own @auth_nonce; returns like wire_auth_client_proof().
 */
int wire_auth_server_proof(const void *token, size_t token_len,
                           const uint8_t client_nonce[WIRE_AUTH_NONCE_LEN],
                           const uint8_t auth_nonce[WIRE_AUTH_NONCE_LEN],
                           uint8_t ret_proof[WIRE_AUTH_PROOF_LEN]);

/*
 * Server side: true iff @proof (@proof_len bytes, as received; NULL when
 * absent) is the client proof for @auth_nonce under @token.  False for a
 * missing proof, a length other than WIRE_AUTH_PROOF_LEN (checked first: the
 * length is public), and whenever the expected proof cannot be computed.
 * The comparison takes time that depends on the length only.
 */
bool wire_auth_check_client(const void *token, size_t token_len,
                            const uint8_t auth_nonce[WIRE_AUTH_NONCE_LEN], const void *proof,
                            size_t proof_len);

/* Client side: the same for the server proof over @client_nonce and
 * @auth_nonce. */
bool wire_auth_check_server(const void *token, size_t token_len,
                            const uint8_t client_nonce[WIRE_AUTH_NONCE_LEN],
                            const uint8_t auth_nonce[WIRE_AUTH_NONCE_LEN], const void *proof,
                            size_t proof_len);

/* Constant-time comparison (libcrypto's CRYPTO_memcmp()): true iff the @len
 * bytes at @a and @b are equal.  The time taken depends on @len only. */
bool wire_ct_equal(const void *a, const void *b, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* KVFS_WIRE_AUTH_H */
