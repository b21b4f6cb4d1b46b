/* SPDX-License-Identifier: MIT */
/*
 * kvfs token: reading the secret token that kv-server and its clients share
 * for the control channel's authentication (docs/protocol.md,
 * "Authentication"; the proofs themselves are kvfs/wire_auth.h's).
 *
 * Reentrant and allocation-free; nothing here logs.
 */
#ifndef KVFS_TOKEN_H
#define KVFS_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Token lengths, in bytes, after trailing whitespace is stripped: the same
 * limits on both sides.  A buffer for a token holds KV_TOKEN_MAX + 1. */
#define KV_TOKEN_MIN 16
#define KV_TOKEN_MAX 1024

/*
 * Read a token from @path into @buf (capacity @cap, NUL-terminated), strip
 * trailing newline and whitespace, and return 0 and *ret_len (bytes without
 * the NUL).  Errors: -errno from open/read (-ENOENT, -EACCES, ...),
 * -ENODATA when the token is empty (or only whitespace), -EKEYREJECTED when
 * it is shorter than KV_TOKEN_MIN bytes (guessable), -EFBIG when it does not
 * fit @cap - 1 bytes or is longer than KV_TOKEN_MAX, -EINVAL for bad
 * arguments.  On failure *ret_len is untouched and @buf holds no part of the
 * token (it is wiped).
 */
int kv_read_token_file(const char *path, char *buf, size_t cap, size_t *ret_len);

/* What is wrong with a token file, in words, for an error of
 * kv_read_token_file(): "it is empty", "the token is shorter than 16
 * bytes ...", or strerror(). */
const char *kv_token_strerror(int err);

/* Can users other than the file's owner read it (group or other read
 * bits)?  Then anyone on the host can take the token: callers warn. */
bool kv_token_file_exposed(const char *path);

#ifdef __cplusplus
}
#endif
#endif /* KVFS_TOKEN_H */
