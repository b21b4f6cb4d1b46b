/* SPDX-License-Identifier: MIT */
/*
 * kidx: an ordered index of opaque elements by their key, in kv_key_cmp()
 * order (bytewise, a prefix before its extensions).  kv-server's store keeps
 * one beside its hash table so that LIST seeks instead of scanning: a page of
 * a listing costs O(log N) plus the entries it visits.
 *
 * Keys must be unique within an index; the caller owns the elements and the
 * keys they point to, and tells the index about every change of the key set.
 * Single-threaded.  Positions are valid until the next insert, erase or
 * replace.
 */
#ifndef KVFS_SERVER_KIDX_H
#define KVFS_SERVER_KIDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The key of element @e, not NUL-terminated. */
typedef const char *(*kidx_key_fn)(const void *e, size_t *ret_len);

struct kidx_leaf;

struct kidx {
	struct kidx_leaf **leaf; /* sorted, none empty */
	size_t nleaf, cap;
	struct kidx_leaf *spare; /* makes one insert infallible */
	kidx_key_fn key;
	size_t bytes; /* heap bytes held (malloc_usable_size) */
};

struct kidx_pos {
	size_t leaf;
	uint32_t i;
};

void kidx_init(struct kidx *x, kidx_key_fn key);
void kidx_destroy(struct kidx *x);

/* Make the next kidx_insert() infallible.  Returns 0 or -ENOMEM. */
int kidx_reserve(struct kidx *x);

/* Insert @e, whose key is not in @x; kidx_reserve() must have succeeded
 * since the last insert. */
void kidx_insert(struct kidx *x, const void *e);

/* Remove @e, which is in @x.  Never fails. */
void kidx_erase(struct kidx *x, const void *e);

/* Put @e where @old is; both have the same key.  Never fails. */
void kidx_replace(struct kidx *x, const void *old, const void *e);

/* Position at the first element whose key is >= @key (kidx_seek_ge), > @key
 * (kidx_seek_gt), or sorts after every key starting with @prefix
 * (kidx_seek_past). */
void kidx_seek_ge(const struct kidx *x, const char *key, size_t len, struct kidx_pos *p);
void kidx_seek_gt(const struct kidx *x, const char *key, size_t len, struct kidx_pos *p);
void kidx_seek_past(const struct kidx *x, const char *prefix, size_t len, struct kidx_pos *p);

/* The element at @p, or NULL past the end. */
const void *kidx_at(const struct kidx *x, const struct kidx_pos *p);

/* Advance @p, which is not past the end. */
void kidx_next(const struct kidx *x, struct kidx_pos *p);

#endif /* KVFS_SERVER_KIDX_H */
