/* SPDX-License-Identifier: MIT */
/*
 * kv-server's tenants (--tenants FILE): several tokens, each bound to a key
 * prefix (its namespace) and a byte quota.  A connection whose HELLO
 * proves a tenant's token sees its prefix as the whole store: the server
 * puts the prefix before every key it is sent and takes it off every key
 * it sends back (request.c); the store counts and caps what each prefix
 * holds (store.h, "Namespaces").  The --auth-token-file token, when there
 * is one, keeps the whole namespace.
 *
 * The file: one tenant per line, four fields separated by blanks,
 *
 *   NAME TOKEN_FILE PREFIX QUOTA
 *
 * NAME is 1 to 32 of [A-Za-z0-9._-], unique; TOKEN_FILE a token file as for
 * --auth-token-file (16 to 1024 bytes, a relative path is taken from the
 * tenants file's directory), its token unique; PREFIX a key ending in '/'
 * ("alice/", "team/alice/"), no prefix inside another; QUOTA a size (64M,
 * 2G) or "none".  Blank lines are skipped; a field starting with '#'
 * starts a comment to the end of the line.  At most STORE_NS_MAX tenants.
 *
 * Threads: loaded before the server starts, read-only afterwards (the
 * loop's thread).  Nothing here logs a token.
 */
#ifndef KVFS_SERVER_TENANT_H
#define KVFS_SERVER_TENANT_H

#include <stddef.h>
#include <stdint.h>

#include "kvfs/token.h"
#include "kvfs/util.h"

#define TENANT_NAME_MAX 32

struct tenant {
	char name[TENANT_NAME_MAX + 1];
	char prefix[KV_KEY_MAX + 1]; /* NUL-terminated, ends with '/' */
	size_t prefixlen;
	uint64_t quota; /* bytes the store may charge it (store.h); 0 = none */
	uint8_t token[KV_TOKEN_MAX + 1];
	size_t tokenlen;
	unsigned line; /* in the file, for messages */
};

/* The tenants, sorted by prefix: t[i] is the store's namespace i. */
struct tenant_table {
	struct tenant *t;
	size_t n;
};

/*
 * Read the tenants file @path into @ret.  Errors are printed to stderr as
 * "kv-server: FILE:LINE: what is wrong" (a bad line, a duplicate name, a
 * prefix inside another, a token two tenants share, a token file that
 * cannot be used, no tenant at all); a token file others can read gets a
 * warning.  Returns 0, -EINVAL after printing, or -ENOMEM.  On failure
 * @ret is untouched and no token stays in memory.
 */
int tenant_load(const char *path, struct tenant_table *ret);

/* Wipe the tokens and free.  Accepts an empty table. */
void tenant_table_free(struct tenant_table *tt);

/* The tenant holding @token, or NULL (startup checks only: not constant
 * time). */
const struct tenant *tenant_by_token(const struct tenant_table *tt, const void *token, size_t len);

/*
 * @key (@len bytes) as the store names it for @t: @t's prefix then @key,
 * built in @buf (@cap bytes), or @key itself when @t is NULL (the whole
 * namespace).  Returns 0 and *ret_key, *ret_len, or -ENAMETOOLONG when the
 * result would not fit @cap.
 */
int tenant_key(const struct tenant *t, const void *key, size_t len, char *buf, size_t cap,
               const char **ret_key, size_t *ret_len);

#endif /* KVFS_SERVER_TENANT_H */
