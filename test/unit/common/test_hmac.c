/* SPDX-License-Identifier: MIT */
/* SHA-256 against FIPS 180-2 (appendix B) and HMAC-SHA256 against RFC 4231. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfs/hmac.h"

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static void check_sha(const void *data, size_t len, const char *want)
{
	uint8_t d[KV_SHA256_LEN];
	char h[2 * KV_SHA256_LEN + 1];

	kv_sha256(data, len, d);
	hex(d, sizeof(d), h);
	cr_assert_str_eq(h, want, "sha256 of %zu bytes", len);
}

Test(sha256, fips180_2)
{
	check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	check_sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
	          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

Test(sha256, million_a_incremental)
{
	static const char want[] =
	        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
	struct kv_sha256_ctx ctx;
	uint8_t chunk[1000], d[KV_SHA256_LEN];
	char h[2 * KV_SHA256_LEN + 1];
	size_t done = 0, step = 1;

	memset(chunk, 'a', sizeof(chunk));
	kv_sha256_init(&ctx);
	/* Odd-sized updates cross block boundaries in every possible way. */
	while (done < 1000000) {
		size_t n = step % 997 + 1;

		if (n > 1000000 - done)
			n = 1000000 - done;
		kv_sha256_update(&ctx, chunk, n);
		done += n;
		step = step * 31 + 7;
	}
	kv_sha256_final(&ctx, d);
	hex(d, sizeof(d), h);
	cr_assert_str_eq(h, want);

	uint8_t *big = malloc(1000000);
	cr_assert_not_null(big);
	memset(big, 'a', 1000000);
	check_sha(big, 1000000, want);
	free(big);
}

Test(sha256, padding_edges)
{
	/* 55, 56, 63, 64 and 65 bytes: incremental byte-by-byte == one shot. */
	static const size_t lens[] = {55, 56, 57, 63, 64, 65, 119, 120, 128};
	uint8_t data[128], a[KV_SHA256_LEN], b[KV_SHA256_LEN];

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 3);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct kv_sha256_ctx ctx;

		kv_sha256(data, lens[i], a);
		kv_sha256_init(&ctx);
		for (size_t j = 0; j < lens[i]; j++)
			kv_sha256_update(&ctx, data + j, 1);
		kv_sha256_final(&ctx, b);
		cr_assert_arr_eq(a, b, sizeof(a), "length %zu", lens[i]);
	}
}

static void check_hmac(const void *key, size_t klen, const void *msg, size_t mlen, const char *want)
{
	uint8_t d[KV_SHA256_LEN];
	char h[2 * KV_SHA256_LEN + 1];

	kv_hmac_sha256(key, klen, msg, mlen, d);
	hex(d, sizeof(d), h);
	cr_assert_eq(strncmp(h, want, strlen(want)), 0, "hmac: got %s want %s", h, want);
}

Test(hmac, rfc4231)
{
	uint8_t key[131], data[152];

	/* Test case 1 */
	memset(key, 0x0b, 20);
	check_hmac(key, 20, "Hi There", 8,
	           "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	/* Test case 2 */
	check_hmac("Jefe", 4, "what do ya want for nothing?", 28,
	           "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	/* Test case 3 */
	memset(key, 0xaa, 20);
	memset(data, 0xdd, 50);
	check_hmac(key, 20, data, 50,
	           "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
	/* Test case 4 */
	for (int i = 0; i < 25; i++)
		key[i] = (uint8_t)(i + 1);
	memset(data, 0xcd, 50);
	check_hmac(key, 25, data, 50,
	           "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
	/* Test case 5 (truncated to 128 bits) */
	memset(key, 0x0c, 20);
	check_hmac(key, 20, "Test With Truncation", 20, "a3b6167473100ee06e0c796c2955552b");
	/* Test case 6: key longer than a block */
	memset(key, 0xaa, 131);
	check_hmac(key, 131, "Test Using Larger Than Block-Size Key - Hash Key First", 54,
	           "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	/* Test case 7 */
	static const char m7[] = "This is a test using a larger than block-size key and a larger "
	                         "than block-size data. The key needs to be hashed before being "
	                         "used by the HMAC algorithm.";
	check_hmac(key, 131, m7, strlen(m7),
	           "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}
