/* SPDX-License-Identifier: MIT */
/*
 * kv-server storage core: a key -> value index over one caller-provided
 * memory arena.  No networking, no threads: a pure data structure.
 *
 * Threads
 * -------
 * A store is used from ONE thread (the server's event loop).  No function
 * here locks anything; calling into the same store from two threads is a bug.
 *
 * Memory
 * ------
 * The caller owns the arena (allocates and RDMA-registers it, frees it after
 * store_destroy()).  The store only carves it: value bytes live at offsets
 * inside it, counted from @arena_base as passed to store_create().  Nothing
 * else is ever written into the arena by the store.  Item metadata (key,
 * size, version, LRU and hash links) lives in malloc'd memory.
 *
 * Values
 * ------
 * Values of 1..STORE_SMALL_MAX bytes are 64-byte aligned, larger ones
 * STORE_PAGE_SIZE aligned (alignment of the absolute address, not only of the
 * offset).  Zero-length values take no arena space (offset 0).
 *
 * Versions
 * --------
 * One store-global counter, starting at 1, bumped by every commit and every
 * rename: a version is never reused, not even by a deleted and recreated key.
 * Version 0 never names an item and means "no condition" in the APIs below.
 * store_setattr() does not bump it (the version names the bytes and the key
 * they are bound to, not the attributes).
 *
 * Pins
 * ----
 * store_get() pins an item: until store_item_unpin() its arena range is not
 * freed, reused or evicted, so an RDMA-WRITE can read from it.  An item
 * overwritten, deleted or renamed while pinned disappears from the index at
 * once (new lookups do not see it); its range is freed at the last unpin.
 * The struct store_item pointer of a pinned item stays valid until the unpin.
 *
 * Kept items
 * ----------
 * store_keep() marks a key kept: it is never evicted (what users and the
 * wire protocol call "pinned"; the word pin above is the transfers' hold).
 * The mark belongs to the key: a commit replacing it and a rename moving it
 * keep it, a delete drops it.  The value bytes of kept keys are bounded by
 * store_opts.max_kept; what would pass it fails with -EOVERFLOW.
 */
#ifndef KVFS_SERVER_STORE_H
#define KVFS_SERVER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvfs/util.h" /* KV_KEY_MAX */

#define STORE_PAGE_SIZE 4096        /* granule and alignment of large values */
#define STORE_SMALL_MAX (16 * 1024) /* values up to this come from slab classes */

struct store;
struct store_item; /* a published (or once published) value */
struct store_resv; /* an arena range reserved by store_put_begin() */

enum store_evict {
	STORE_EVICT_LRU = 0,  /* make room by evicting least recently used unpinned items */
	STORE_EVICT_NONE = 1, /* never evict: a full store answers -ENOSPC */
};

/*
 * Namespaces (kv-server's tenants): key prefixes whose keys the store
 * counts apart and may cap.  A key belongs to the namespace whose prefix
 * it starts with, or to none (prefixes never nest).  Each key of a
 * namespace is charged its value's size, its length without the prefix
 * and STORE_NS_KEY_CHARGE for its record (about what the record takes in
 * the heap: a flood of empty values is charged too); a reservation is
 * charged from store_put_begin() on.  A namespace with a quota refuses
 * with -EDQUOT a store_put_begin() or store_rename() that would take its
 * charge past the quota, before anything is evicted; replacing a key is
 * charged the difference.  Eviction knows nothing of namespaces (one LRU):
 * a quota caps what a namespace holds, it reserves nothing for it.
 */
#define STORE_NS_MAX        255 /* namespaces a store can count */
#define STORE_NS_KEY_CHARGE 128 /* bytes charged per key beyond its value and name */

struct store_ns {
	const char *prefix; /* non-empty, not NUL-terminated */
	size_t prefixlen;
	uint64_t quota; /* bytes it may be charged; 0 = no limit */
};

/*
 * Told of every eviction, before the item goes (the callback must not touch
 * the store): the key, its value's size, the size of the PUT it makes room
 * for, and whether it went to keep the index within max_meta (else to make
 * room for that PUT's value).
 */
typedef void (*store_evict_cb)(void *arg, const char *key, size_t keylen, uint64_t size,
                               uint64_t put_size, bool meta);

struct store_opts {
	enum store_evict evict;
	uint64_t max_value;        /* largest value accepted; 0 or > usable arena = usable arena */
	uint64_t max_meta;         /* heap bytes the index may take (keys, items, hash, order;
	                            * store_stats.meta_bytes); a PUT that would pass it evicts
	                            * (LRU) or fails with -ENOSPC like one whose value does not
	                            * fit; 0 = no limit */
	const struct store_ns *ns; /* namespaces, sorted by prefix (memcmp order), none a
	                            * prefix of another; the store keeps the pointer: the
	                            * array and its prefixes outlive the store */
	size_t nns;                /* at most STORE_NS_MAX */
	uint64_t max_kept;         /* value bytes kept (never evicted) keys may hold
	                            * (store_keep()); 0 = none may be kept */
	store_evict_cb on_evict;   /* NULL = nobody is told */
	void *evict_arg;           /* its @arg */
};

/*
 * Create a store over [@arena_base, @arena_base + @arena_len).  The part of
 * the arena before the first and after the last STORE_PAGE_SIZE boundary is
 * not used (see store_stats.arena_usable).  @opts may be NULL (LRU, values
 * up to the arena size).
 * Returns 0, -EINVAL (no arena, or less than one page usable, or namespaces
 * out of order, nested, empty or too many) or -ENOMEM.
 */
int store_create(void *arena_base, size_t arena_len, const struct store_opts *opts,
                 struct store **ret);

/* Free all metadata.  Accepts NULL.  Outstanding pins and reservations are
 * the caller's bug: their pointers die with the store.  The arena is
 * untouched and stays the caller's. */
void store_destroy(struct store *s);

/* Base address passed to store_create(); offsets below are relative to it. */
void *store_arena_base(const struct store *s);

/* Arena bytes a value of @size is charged (0, a slab class size or a page
 * multiple); what store_stats.arena_free accounts in. */
uint64_t store_alloc_size(const struct store *s, uint64_t size);

/*
 * Two-phase PUT.
 *
 * store_put_begin() validates the key, reserves @size bytes of arena and
 * returns a reservation whose range (store_resv_offset(), store_resv_size())
 * the caller fills, typically by RDMA-READ from the client.  Nothing is
 * visible to lookups until commit.  With STORE_EVICT_LRU, unpinned items are
 * evicted, least recently used first, until the range fits; when it cannot
 * fit even after that (everything pinned, or evictable bytes too few) the
 * answer is -ENOSPC and nothing was evicted -- except in the rare case where
 * enough bytes are evictable but not contiguous after eviction, which evicts
 * and still fails.  The current item of the same key is a candidate like
 * any other (a commit may then find the key absent), unless it is kept.
 * Kept items are never evicted.  With STORE_EVICT_NONE, -ENOSPC and nothing
 * changes.
 * Returns 0, -EINVAL (empty key, key with NUL), -ENAMETOOLONG (key longer
 * than KV_KEY_MAX), -EFBIG (@size > max value), -EDQUOT (the key's
 * namespace would pass its quota; nothing evicted), -EOVERFLOW (the key is
 * kept and @size would take the kept bytes past max_kept; nothing evicted),
 * -ENOSPC or -ENOMEM.
 *
 * store_put_commit() publishes the reservation under its key, replacing any
 * current item, in one step: readers see the old value or the new one.  The
 * conditions are checked here, not at begin:
 *   cond->if_absent:  -EEXIST if the key exists;
 *   cond->if_version: (when non-zero) -ENOENT if the key is absent, -ESTALE
 *                     if its version differs.
 *   -EOVERFLOW when the key is kept and the new size would take the kept
 *              bytes past max_kept.
 * @cond may be NULL.  On success the reservation is consumed, *ret_version
 * (may be NULL) is the new version, and the item is the most recently used;
 * it is kept if the item it replaced was.
 * On failure the reservation is still held: retry or store_put_abort() it.
 *
 * store_put_abort() releases the reservation and its range.  Accepts NULL.
 */
struct store_put_cond {
	bool if_absent;      /* fail with -EEXIST when the key exists */
	uint64_t if_version; /* non-zero: fail unless the key has this version */
};

int store_put_begin(struct store *s, const char *key, size_t keylen, uint64_t size,
                    struct store_resv **ret);
uint64_t store_resv_offset(const struct store_resv *r);
uint64_t store_resv_size(const struct store_resv *r);
int store_put_commit(struct store *s, struct store_resv *r, const struct store_put_cond *cond,
                     uint32_t mode, uint64_t mtime_ns, uint64_t *ret_version);
void store_put_abort(struct store *s, struct store_resv *r);

/*
 * Uploads: a value built in parts while its bytes arrive.
 *
 * store_up_open() starts one for @key: empty, or with @base_version
 * non-zero, as a copy of the key's current value, which must have that
 * version (-ENOENT, -ESTALE otherwise).  The copy shares the value's arena
 * ranges (copy-on-write at part granularity): only the ranges the upload
 * writes take new memory.  The upload is a reservation (struct store_resv):
 * store_put_commit_attrs() publishes it, store_put_abort() drops it, and
 * store_stats counts it in resv_count and resv_bytes (its size, shared
 * bytes too; a namespace is charged the same).  Returns 0, a key error,
 * -EFBIG, -EDQUOT, -ENOSPC (past max_meta) or -ENOMEM.
 *
 * store_up_write() makes [@off, @off + @len) of the upload's value new
 * memory: *ret_off (arena offset) is where the caller puts those @len
 * bytes, typically by RDMA-READ.  Ranges before @off past the current end
 * become zeros.  Memory is found like store_put_begin()'s (evicting with
 * STORE_EVICT_LRU).  The caller holds *ret_ext, a reference on that
 * memory, until its transfer is settled (store_ext_put()): the memory
 * outlives an abort or a later write over the same range until then.
 * Returns 0, -EINVAL (@len 0 or wrapping), -EFBIG (past max_value),
 * -EDQUOT, -ENOSPC or -ENOMEM; nothing changes on failure.
 *
 * store_up_truncate() cuts the value to @size or extends it with zeros:
 * 0, -EFBIG, -EDQUOT, -ENOSPC or -ENOMEM.
 *
 * Published, such a value is an item like any other; store_item_segs()
 * gives the arena ranges of its bytes (store_item_offset() is meaningless
 * for it: use store_item_segs() for every item).
 */
struct store_ext; /* arena memory an upload's transfer fills */

struct store_seg {
	uint64_t off; /* arena offset */
	uint64_t len;
};

int store_up_open(struct store *s, const char *key, size_t keylen, uint64_t base_version,
                  struct store_resv **ret);
int store_up_write(struct store *s, struct store_resv *r, uint64_t off, uint64_t len,
                   uint64_t *ret_off, struct store_ext **ret_ext);
void store_ext_put(struct store *s, struct store_ext *x); /* accepts NULL */
int store_up_truncate(struct store *s, struct store_resv *r, uint64_t size);
uint64_t store_up_size(const struct store_resv *r);
/* An upload's value so far, to read with store_item_segs() and the item
 * accessors (size; version 0) until its next change. */
const struct store_item *store_resv_item(const struct store_resv *r);
/* The key a reservation or upload is for (not NUL-terminated). */
const char *store_resv_key(const struct store_resv *r, size_t *ret_len);

/* The arena ranges holding [@off, @off + @len) of @it's value (cut to its
 * size), in order: the first @max of them go to @segs; returns how many
 * there are. */
size_t store_item_segs(const struct store_item *it, uint64_t off, uint64_t len,
                       struct store_seg *segs, size_t max);
/* How many ranges its whole value takes (0 for an empty value). */
size_t store_item_nparts(const struct store_item *it);

/*
 * What a key is to a file system, its owner and its extended attributes:
 * metadata kept beside mode and mtime (see "Owner and extended
 * attributes" below).  store_put_commit_attrs() is store_put_commit()
 * with all of them; store_put_commit() is it with type FILE, the replaced
 * key's owner and extended attributes kept.  Besides the errors of
 * store_put_commit() it may fail with -ENOMEM (the reservation still
 * held).
 */
enum store_type {
	STORE_TYPE_FILE = 0,    /* the value is a file's content */
	STORE_TYPE_SYMLINK = 1, /* the value is a symbolic link's target */
	STORE_TYPE_SPECIAL = 2, /* a fifo, socket or device: no value; mode holds its
	                         * S_IFMT bits, rdev a device's number */
};

struct store_attrs {
	uint32_t mode; /* permission bits, & 07777; with STORE_TYPE_SPECIAL & 0177777 */
	uint64_t mtime_ns;
	uint8_t type;   /* enum store_type */
	bool has_owner; /* false: keep the replaced key's owner (a new key: none) */
	uint32_t uid, gid;
	bool drop_xattrs; /* false: keep the replaced key's extended attributes */
	uint64_t rdev;    /* a device's number (STORE_TYPE_SPECIAL), else 0 */
	bool mtime_given; /* mtime_ns is the client's: the ctime (now) differs from it */
};

int store_put_commit_attrs(struct store *s, struct store_resv *r, const struct store_put_cond *cond,
                           const struct store_attrs *a, uint64_t *ret_version);

/*
 * Look up @key, make it the most recently used and pin it (see "Pins").
 * Returns 0, -ENOENT, or the key errors of store_put_begin().  Every
 * successful store_get() needs exactly one store_item_unpin().
 */
int store_get(struct store *s, const char *key, size_t keylen, struct store_item **ret);
void store_item_unpin(struct store *s, struct store_item *it);

/*
 * Look up @key without pinning or touching the LRU (for STAT).  The pointer
 * is valid until the next call that modifies the store (as are those that
 * store_rename() and store_setattr() hand back).
 * Returns 0, -ENOENT or a key error.
 */
int store_lookup(struct store *s, const char *key, size_t keylen, const struct store_item **ret);

/* Accessors; valid on a pinned item or an item just handed back by
 * store_lookup(), store_rename() or store_setattr(). */
uint64_t store_item_offset(const struct store_item *it); /* relative to arena base */
uint64_t store_item_size(const struct store_item *it);
uint64_t store_item_version(const struct store_item *it);
uint64_t store_item_mtime(const struct store_item *it); /* ns, as given at commit */
/* ns, the server's clock at the last change of the value or of any metadata
 * (commit, rename, setattr, chown, xattr set or remove, an entry added to or
 * removed from a directory marker's directory).  Kept in the side table
 * only while it differs from the mtime (a commit with the client's mtime,
 * or a change after the commit). */
uint64_t store_item_ctime(const struct store *s, const struct store_item *it);
/* ns: a new key's creation, then what store_set_atime() set; a rewrite keeps
 * one set there, else it follows the mtime (likewise kept apart only while
 * it differs from it) */
uint64_t store_item_atime(const struct store *s, const struct store_item *it);
uint32_t store_item_mode(const struct store_item *it); /* & 07777, a special's & 0177777 */
bool store_item_kept(const struct store_item *it);
uint8_t store_item_type(const struct store_item *it); /* enum store_type */
/* A special file's device number (0: none, or not a device). */
uint64_t store_item_rdev(const struct store *s, const struct store_item *it);
/* The owner of @it: true and *ret_uid, *ret_gid (may be NULL), or false
 * when none was ever stored (nothing written). */
bool store_item_owner(const struct store *s, const struct store_item *it, uint32_t *ret_uid,
                      uint32_t *ret_gid);
const char *store_item_key(const struct store_item *it, size_t *ret_len); /* not NUL-terminated */

/*
 * Delete @key; with @if_version non-zero only if it has that version.
 * Returns 0 and *ret_version (may be NULL: the version deleted), -ENOENT,
 * -ESTALE or a key error.  One look-up.
 */
int store_delete(struct store *s, const char *key, size_t keylen, uint64_t if_version,
                 uint64_t *ret_version);

/*
 * Atomically move @src to @dst, replacing @dst unless @no_overwrite
 * (-EEXIST then).  The moved item gets a fresh version (anything conditioned
 * on the old version of either key fails afterwards) and keeps size, mode,
 * mtime, type, owner, extended attributes, its kept mark and its LRU
 * position (a kept @dst it replaces is dropped, mark and all).  @src ==
 * @dst is a successful no-op when it exists.  Returns 0 and *ret_item (may
 * be NULL: the item now under @dst, as store_lookup() gives it), -ENOENT
 * (no @src), -EEXIST, -ENOMEM or a key error, or -EDQUOT when @dst's
 * namespace would pass its quota (a move between namespaces, or a longer
 * name); nothing changes on failure.
 */
int store_rename(struct store *s, const char *src, size_t srclen, const char *dst, size_t dstlen,
                 bool no_overwrite, const struct store_item **ret_item);

#define STORE_SET_MODE  0x1u
#define STORE_SET_MTIME 0x2u
/*
 * Set the fields named in @which (none: only look @key up); with
 * @if_version non-zero only if @key has that version.  A mode sets the
 * permission bits (& 07777): a special file keeps its S_IFMT bits.  Does not bump the
 * version; any field set makes the ctime now.  Returns 0 and *ret_item
 * (may be NULL: the item, as store_lookup() gives it), -ENOENT, -ESTALE,
 * -ENOMEM (the times' side-table entry) or a key error.  One look-up.
 */
int store_setattr(struct store *s, const char *key, size_t keylen, unsigned which, uint32_t mode,
                  uint64_t mtime_ns, uint64_t if_version, const struct store_item **ret_item);

/*
 * Set @key's atime: with @access false to @atime_ns (utimensat: the ctime
 * becomes now), with @access true to @atime_ns only if that is later than
 * the stored one (an access a client reports: the ctime stays).  With
 * @if_version non-zero only if @key has that version.  Returns 0 and
 * *ret_item (may be NULL), -ENOENT, -ESTALE, -ENOMEM or a key error.
 */
int store_set_atime(struct store *s, const char *key, size_t keylen, uint64_t atime_ns, bool access,
                    uint64_t if_version, const struct store_item **ret_item);

/*
 * Keep @key (never evict it) or, @keep false, let it be evicted again; with
 * @if_version non-zero only if it has that version.  Idempotent.  Does not
 * bump the version nor touch the LRU order.  Returns 0 and *ret_item (may be
 * NULL, as store_lookup() gives it), -ENOENT, -ESTALE, a key error, or
 * -EOVERFLOW when its value would take the kept bytes past max_kept
 * (nothing changes).
 */
int store_keep(struct store *s, const char *key, size_t keylen, bool keep, uint64_t if_version,
               const struct store_item **ret_item);

/*
 * Owner and extended attributes
 * -----------------------------
 * Kept per key in a side table of the store (a key without either costs
 * nothing), counted in store_stats.meta_bytes and so in max_meta.  Like
 * mode and mtime they do not bump the version; RENAME moves them with the
 * value; a PUT keeps the replaced key's unless store_attrs says otherwise.
 *
 * store_chown() sets the uid and/or gid (@which: STORE_SET_UID,
 * STORE_SET_GID; the other one of a key with no owner yet is 0); with
 * @if_version non-zero only if @key has that version.  Returns 0, -ENOENT,
 * -ESTALE, -ENOMEM, -ENOSPC (past max_meta) or a key error.
 *
 * Extended attributes: names of 1..STORE_XATTR_NAME_MAX bytes without NUL,
 * values of 0..STORE_XATTR_TOTAL_MAX bytes, and per key at most
 * STORE_XATTR_TOTAL_MAX bytes of names and values together.
 * store_xattr_get() points *ret_val at the value (valid until the next call
 * that modifies the store): 0, -ENODATA (no such attribute), -ENOENT,
 * -EINVAL (bad name) or a key error.
 * store_xattr_set() sets @name to @val (@flags: STORE_XATTR_CREATE fails
 * with -EEXIST when it exists; STORE_XATTR_REPLACE changes nothing when it
 * does not; STORE_XATTR_REMOVE removes it) and says in *ret_found (may be
 * NULL) whether it existed before.  Returns 0, -ENOENT, -EEXIST, -EINVAL
 * (bad name, contradictory flags), -E2BIG (a value above the limit),
 * -ENOSPC (past the key's total or max_meta), -ENOMEM or a key error.
 * store_xattr_list() calls @cb with each name, in the order they were
 * first set; a negative return of @cb stops it and is returned.
 */
#define STORE_SET_UID         0x4u
#define STORE_SET_GID         0x8u
#define STORE_XATTR_NAME_MAX  255
#define STORE_XATTR_TOTAL_MAX 65536
#define STORE_XATTR_CREATE    0x1u
#define STORE_XATTR_REPLACE   0x2u
#define STORE_XATTR_REMOVE    0x4u

int store_chown(struct store *s, const char *key, size_t keylen, unsigned which, uint32_t uid,
                uint32_t gid, uint64_t if_version);
int store_xattr_get(struct store *s, const char *key, size_t keylen, const char *name,
                    size_t namelen, const void **ret_val, size_t *ret_len);
int store_xattr_set(struct store *s, const char *key, size_t keylen, const char *name,
                    size_t namelen, const void *val, size_t vlen, unsigned flags, bool *ret_found);
int store_xattr_list(struct store *s, const char *key, size_t keylen,
                     int (*cb)(void *arg, const char *name, size_t namelen), void *arg);

/*
 * List keys (S3 ListObjectsV2 semantics), in memcmp order.
 *
 * Only keys starting with @prefix (may be empty) are considered.  With a
 * @delimiter (0 = none), a key holding @delimiter after the prefix is
 * collapsed into one common prefix ending at that delimiter, listed once.
 * An entry (key or common prefix) is listed only if it sorts strictly after
 * @start_after (empty = from the start), so paging with start_after = last
 * entry of the previous page lists every entry exactly once.
 *
 * At most @limit entries are passed to @cb, in order; *ret_truncated (may be
 * NULL) says whether more entries follow.  @cb gets the entry name (not
 * NUL-terminated), whether it is a common prefix, and the item: the key's,
 * or for a common prefix the key equal to it (a directory marker, "dir/")
 * or NULL.  @cb must not modify the store; a negative return stops the
 * listing and is returned.  Cost: O(log N) to find the first entry and to
 * step past each common prefix, O(1) per key listed; never a scan.
 * Returns 0 or a negative return of @cb.
 */
typedef int (*store_list_cb)(void *arg, const char *name, size_t namelen,
                             const struct store_item *it, bool prefix);

struct store_list_req {
	const char *prefix;
	size_t prefixlen;
	char delimiter; /* 0 = no collapsing */
	const char *start_after;
	size_t start_after_len; /* 0 = from the start */
	size_t limit;           /* most entries returned */
};

int store_list(struct store *s, const struct store_list_req *req, store_list_cb cb, void *arg,
               bool *ret_truncated);

struct store_stats {
	uint64_t keys;             /* items reachable by key */
	uint64_t value_bytes;      /* sum of their sizes */
	uint64_t arena_usable;     /* page-aligned part of the arena the store carves */
	uint64_t arena_free;       /* usable bytes not charged to any item or reservation */
	uint64_t arena_free_pages; /* of which in free page extents (not in slabs) */
	uint64_t largest_free;     /* largest free contiguous extent */
	uint64_t evictions;        /* items evicted since creation */
	uint64_t evicted_bytes;    /* their value bytes */
	uint64_t pinned_items;     /* items (indexed or not) with pins outstanding */
	uint64_t pinned_bytes;     /* their value bytes */
	uint64_t resv_count;       /* reservations outstanding */
	uint64_t resv_bytes;       /* their sizes */
	uint64_t meta_bytes;       /* malloc_usable_size() of all store metadata */
	uint64_t meta_evictions;   /* of the evictions, those for max_meta */
	uint64_t overhead_bytes;   /* meta_bytes minus the key bytes stored in it */
	uint64_t kept_keys;        /* keys kept (store_keep()): never evicted */
	uint64_t kept_bytes;       /* their value bytes */
	uint64_t max_kept;         /* store_opts.max_kept */
};

void store_get_stats(const struct store *s, struct store_stats *ret);

/* What one namespace holds: keys reachable by key, their value bytes, and
 * what it is charged (its keys and its reservations, see "Namespaces"). */
struct store_ns_usage {
	uint64_t keys;
	uint64_t value_bytes;
	uint64_t charged;
};

/* The index in store_opts.ns of the namespace @key belongs to, or -1. */
int store_ns_of(const struct store *s, const char *key, size_t keylen);
/* Usage of namespace @ns (an index below store_opts.nns). */
void store_ns_usage(const struct store *s, unsigned ns, struct store_ns_usage *ret);

/* overhead_bytes / keys (0 when empty): metadata cost of one key beyond its
 * key and value bytes. */
double store_overhead_per_key(const struct store *s);

#endif /* KVFS_SERVER_STORE_H */
