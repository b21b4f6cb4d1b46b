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

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest token kv_read_token_file() accepts by default (callers pass their
 * own capacity; this is a sensible buffer size). */
#define KV_TOKEN_MAX 4096

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
#endif /* KVFS_TOKEN_H */
