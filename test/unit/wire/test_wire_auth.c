/* SPDX-License-Identifier: MIT */
/*
 * kvfs's token authentication (src/wire/wire_auth.c): both proofs for fixed
 * tokens and nonces against bytes computed outside kvfs, e.g.
 *   printf 'kvfs-auth-v1' + auth_nonce | openssl dgst -sha256 -hmac TOKEN
 * (and Python's hmac module), and every wrong input refused.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kvfs/wire_auth.h"

#define TOKEN "kvfs-test-token"
/* 100 bytes: longer than an HMAC-SHA256 block, so the HMAC hashes it first. */
#define LONG_TOKEN                                                                                 \
	"0123456789012345678901234567890123456789012345678901234567890123456789"                   \
	"012345678901234567890123456789"

/* auth_nonce[i] = i; client_nonce[i] = 0xff - i. */
static uint8_t auth_nonce[WIRE_AUTH_NONCE_LEN], client_nonce[WIRE_AUTH_NONCE_LEN];

/* HMAC-SHA256(TOKEN, "kvfs-auth-v1" || auth_nonce) */
static const char client_kat[] = "0dcc2368c89e47858db377af33d35949d7c05e88d8660dd5f7f93697d7324d41";
/* HMAC-SHA256(TOKEN, "kvfs-server-v1" || client_nonce || auth_nonce) */
static const char server_kat[] = "3a64d8ed8354a5dececd2928ab67ff83d1505af0fdf26f011e088cef8a15f85b";
/* The same with LONG_TOKEN. */
static const char client_kat_long[] =
        "c0107ec9a072d88b8cae6ab8be51fc973f0a3efbd41e6c7f89f5eaf440a02e7f";
static const char server_kat_long[] =
        "f1b8e858e41deb8eff9224a2b0f233f2e08772118fdff7587db3b7ac9e413cdc";
/* HMAC-SHA256("", "kvfs-auth-v1" || auth_nonce): what an empty token would give. */
static const char client_kat_empty[] =
        "0a7826af3d649151ad61aee7c31d10f0088c23e358121211c25868e308db44fc";

static void nonces(void)
{
	for (int i = 0; i < WIRE_AUTH_NONCE_LEN; i++) {
		auth_nonce[i] = (uint8_t)i;
		client_nonce[i] = (uint8_t)(0xff - i);
	}
}

TestSuite(wire_auth, .init = nonces);

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static void unhex(const char *s, uint8_t out[WIRE_AUTH_PROOF_LEN])
{
	cr_assert_eq(strlen(s), 2 * WIRE_AUTH_PROOF_LEN);
	for (size_t i = 0; i < WIRE_AUTH_PROOF_LEN; i++)
		cr_assert_eq(sscanf(s + 2 * i, "%2hhx", &out[i]), 1);
}

static void check_client_kat(const char *token, const char *want)
{
	uint8_t p[WIRE_AUTH_PROOF_LEN];
	char h[2 * WIRE_AUTH_PROOF_LEN + 1];

	cr_assert_eq(wire_auth_client_proof(token, strlen(token), auth_nonce, p), 0);
	hex(p, sizeof(p), h);
	cr_assert_str_eq(h, want, "client proof with a %zu-byte token", strlen(token));
	unhex(want, p);
	cr_assert(wire_auth_check_client(token, strlen(token), auth_nonce, p, sizeof(p)));
}

static void check_server_kat(const char *token, const char *want)
{
	uint8_t p[WIRE_AUTH_PROOF_LEN];
	char h[2 * WIRE_AUTH_PROOF_LEN + 1];

	cr_assert_eq(wire_auth_server_proof(token, strlen(token), client_nonce, auth_nonce, p), 0);
	hex(p, sizeof(p), h);
	cr_assert_str_eq(h, want, "server proof with a %zu-byte token", strlen(token));
	unhex(want, p);
	cr_assert(wire_auth_check_server(token, strlen(token), client_nonce, auth_nonce, p,
	                                 sizeof(p)));
}

Test(wire_auth, known_answers)
{
	check_client_kat(TOKEN, client_kat);
	check_server_kat(TOKEN, server_kat);
	check_client_kat(LONG_TOKEN, client_kat_long);
	check_server_kat(LONG_TOKEN, server_kat_long);
}

Test(wire_auth, wrong_token_refused)
{
	uint8_t c[WIRE_AUTH_PROOF_LEN], s[WIRE_AUTH_PROOF_LEN];
	char other[] = TOKEN;

	unhex(client_kat, c);
	unhex(server_kat, s);
	other[3] ^= 1;
	cr_assert_not(wire_auth_check_client(other, strlen(other), auth_nonce, c, sizeof(c)));
	cr_assert_not(wire_auth_check_server(other, strlen(other), client_nonce, auth_nonce, s,
	                                     sizeof(s)));
	/* a prefix of the token, and the token with a byte more */
	cr_assert_not(wire_auth_check_client(TOKEN, strlen(TOKEN) - 1, auth_nonce, c, sizeof(c)));
	cr_assert_not(
	        wire_auth_check_client(TOKEN "x", strlen(TOKEN) + 1, auth_nonce, c, sizeof(c)));
	cr_assert_not(wire_auth_check_server(TOKEN, strlen(TOKEN) - 1, client_nonce, auth_nonce, s,
	                                     sizeof(s)));
}

Test(wire_auth, wrong_nonce_refused)
{
	uint8_t c[WIRE_AUTH_PROOF_LEN], s[WIRE_AUTH_PROOF_LEN], n[WIRE_AUTH_NONCE_LEN];

	unhex(client_kat, c);
	unhex(server_kat, s);
	/* another connection's auth_nonce: a replayed proof */
	memcpy(n, auth_nonce, sizeof(n));
	n[WIRE_AUTH_NONCE_LEN - 1] ^= 0x80;
	cr_assert_not(wire_auth_check_client(TOKEN, strlen(TOKEN), n, c, sizeof(c)));
	cr_assert_not(wire_auth_check_server(TOKEN, strlen(TOKEN), client_nonce, n, s, sizeof(s)));
	/* another client_nonce */
	memcpy(n, client_nonce, sizeof(n));
	n[0] ^= 1;
	cr_assert_not(wire_auth_check_server(TOKEN, strlen(TOKEN), n, auth_nonce, s, sizeof(s)));
	/* the two nonces swapped */
	cr_assert_not(wire_auth_check_server(TOKEN, strlen(TOKEN), auth_nonce, client_nonce, s,
	                                     sizeof(s)));
}

/* The labels keep one side's proof from passing as the other's. */
Test(wire_auth, wrong_label_refused)
{
	uint8_t c[WIRE_AUTH_PROOF_LEN], s[WIRE_AUTH_PROOF_LEN];

	cr_assert_eq(wire_auth_client_proof(TOKEN, strlen(TOKEN), auth_nonce, c), 0);
	cr_assert_eq(wire_auth_server_proof(TOKEN, strlen(TOKEN), auth_nonce, auth_nonce, s), 0);
	cr_assert_not(
	        wire_auth_check_server(TOKEN, strlen(TOKEN), auth_nonce, auth_nonce, c, sizeof(c)));
	cr_assert_not(wire_auth_check_client(TOKEN, strlen(TOKEN), auth_nonce, s, sizeof(s)));
	cr_assert(wire_auth_check_client(TOKEN, strlen(TOKEN), auth_nonce, c, sizeof(c)));
	cr_assert(
	        wire_auth_check_server(TOKEN, strlen(TOKEN), auth_nonce, auth_nonce, s, sizeof(s)));
}

Test(wire_auth, wrong_length_refused)
{
	uint8_t c[WIRE_AUTH_PROOF_LEN + 1], s[WIRE_AUTH_PROOF_LEN + 1];

	unhex(client_kat, c);
	unhex(server_kat, s);
	c[WIRE_AUTH_PROOF_LEN] = s[WIRE_AUTH_PROOF_LEN] = 0;
	for (size_t len = 0; len <= WIRE_AUTH_PROOF_LEN + 1; len++) {
		bool want = len == WIRE_AUTH_PROOF_LEN;

		cr_assert_eq(wire_auth_check_client(TOKEN, strlen(TOKEN), auth_nonce, c, len), want,
		             "client proof of %zu bytes", len);
		cr_assert_eq(wire_auth_check_server(TOKEN, strlen(TOKEN), client_nonce, auth_nonce,
		                                    s, len),
		             want, "server proof of %zu bytes", len);
	}
	/* absent (NULL) */
	cr_assert_not(wire_auth_check_client(TOKEN, strlen(TOKEN), auth_nonce, NULL, 0));
	cr_assert_not(wire_auth_check_client(TOKEN, strlen(TOKEN), auth_nonce, NULL,
	                                     WIRE_AUTH_PROOF_LEN));
	cr_assert_not(wire_auth_check_server(TOKEN, strlen(TOKEN), client_nonce, auth_nonce, NULL,
	                                     WIRE_AUTH_PROOF_LEN));
}

/* A missing or empty token proves nothing, even with the HMAC an empty key
 * gives, and a failed call leaves its output alone. */
Test(wire_auth, bad_arguments)
{
	uint8_t p[WIRE_AUTH_PROOF_LEN], untouched[WIRE_AUTH_PROOF_LEN], e[WIRE_AUTH_PROOF_LEN];

	memset(p, 0xee, sizeof(p));
	memcpy(untouched, p, sizeof(p));
	cr_assert_eq(wire_auth_client_proof(TOKEN, 0, auth_nonce, p), -EINVAL);
	cr_assert_eq(wire_auth_client_proof(NULL, 4, auth_nonce, p), -EINVAL);
	cr_assert_eq(wire_auth_client_proof(TOKEN, strlen(TOKEN), NULL, p), -EINVAL);
	cr_assert_eq(wire_auth_server_proof(TOKEN, 0, client_nonce, auth_nonce, p), -EINVAL);
	cr_assert_eq(wire_auth_server_proof(TOKEN, strlen(TOKEN), NULL, auth_nonce, p), -EINVAL);
	cr_assert_eq(wire_auth_server_proof(TOKEN, strlen(TOKEN), client_nonce, NULL, p), -EINVAL);
	cr_assert_arr_eq(p, untouched, sizeof(p), "output untouched on failure");

	unhex(client_kat_empty, e);
	cr_assert_not(wire_auth_check_client("", 0, auth_nonce, e, sizeof(e)));
	cr_assert_not(wire_auth_check_client(NULL, 0, auth_nonce, e, sizeof(e)));
}

Test(wire_auth, ct_equal)
{
	uint8_t a[32], b[32];

	memset(a, 7, sizeof(a));
	memcpy(b, a, sizeof(b));
	cr_assert(wire_ct_equal(a, b, sizeof(a)));
	b[31] ^= 1;
	cr_assert_not(wire_ct_equal(a, b, sizeof(a)));
	cr_assert(wire_ct_equal(a, b, 0));
}
