/* SPDX-License-Identifier: MIT */
/*
 * Shared bits of the libFuzzer harnesses in test/fuzz/.  A CHECK() that
 * fails is a finding: it prints the broken invariant and aborts, which
 * libFuzzer reports as a crash and saves the input.
 */
#ifndef KVFS_TEST_FUZZ_H
#define KVFS_TEST_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__,       \
			        #cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* xorshift32: chunk sizes derived from the input, so a crash reproduces. */
static inline uint32_t fuzz_rand(uint32_t *x)
{
	uint32_t v = *x ? *x : 0x9e3779b9u;

	v ^= v << 13;
	v ^= v >> 17;
	v ^= v << 5;
	*x = v;
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif /* KVFS_TEST_FUZZ_H */
