/* SPDX-License-Identifier: MIT */
/*
 * kv-server storage core: hash index + LRU + versions + pins over the value
 * allocator of arena.h.  See store.h for the contract; single-threaded by
 * design.
 *
 * Eviction is one global LRU of unpinned indexed items that are not kept.  The arena's slabs
 * mean that freeing an item of another class only helps once its slab
 * empties, so a small PUT into a full store may evict more than its own
 * size; the same holds for a large PUT whose bytes are free but not
 * contiguous.
 *
 * Index
 * -----
 * Chained hash table, power-of-two buckets, doubled (stop-the-world) when
 * items > buckets.  The item stores a 32-bit hash for cheap compares and for
 * rehashing.  Hash: seeded 64-bit multiply-fold (wyhash-like) over 8-byte
 * words.  Beside it, an ordered index (kidx.h) of the same items for LIST,
 * so that a page of a listing seeks to its start instead of scanning every
 * key.  It costs about 8-12 bytes per key and O(log N) per new or removed
 * key; it allocates only in kidx_reserve(), before a PUT or RENAME commits.
 */
#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "arena.h"
#include "kidx.h"
#include "kvfs/util.h"
#include "store.h"

#define HASH_MIN_BUCKETS 1024

_Static_assert(STORE_PAGE_SIZE == ARENA_PAGE_SIZE && STORE_SMALL_MAX == ARENA_SMALL_MAX,
               "store.h states the arena's granules");

struct dlist {
	struct dlist *prev, *next;
};

#define DL_ENTRY(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

enum item_state {
	ITEM_RESV,   /* reserved by put_begin, on store.resv, not indexed */
	ITEM_LINKED, /* indexed; on store.lru iff unpinned and not kept (item_evictable()) */
	ITEM_ZOMBIE, /* unindexed but pinned, owns its range; on store.zombies */
	ITEM_MOVED,  /* renamed while pinned: hnext took over its range (it owns none) and pins;
	              * on store.zombies */
};

/* A key's owner and extended attributes, in the store's side table (most
 * keys have neither: the item stays as small as it was without them). */
struct item_ext {
	struct item_ext *next;       /* side-table chain */
	const struct store_item *it; /* whose */
	uint32_t uid, gid;
	bool has_owner;
	uint64_t rdev;               /* a special file's device number */
	uint64_t ctime_ns, atime_ns; /* when has_ctime / has_atime: see item_ctime() */
	bool has_ctime, has_atime;
	uint32_t xlen;   /* bytes of records in xattrs */
	uint8_t *xattrs; /* records: u8 name length, u32 value length, name, value */
};

#define ITEM_F_EXT   0x1u /* has an entry in the side table */
#define ITEM_F_PARTS 0x2u /* its value is a list of parts (parts), not one range (off) */

/*
 * Values in parts: an upload (store_up_open()) builds its value as a list
 * of parts, each a slice of an arena allocation (struct store_ext) that
 * several values may share: an upload starts from the value it replaces,
 * sharing its allocations, and only the ranges it writes get new ones
 * (copy-on-write at part granularity).  Allocations are counted: parts
 * referring to them, and transfers filling them (store_ext_put()).
 */
struct store_ext {
	uint64_t off;  /* arena offset */
	uint64_t size; /* as passed to arena_alloc() */
	uint32_t refs;
};

struct part {
	uint64_t off, len;   /* value bytes [off, off + len) */
	struct store_ext *x; /* are x's bytes [xoff, xoff + len) */
	uint64_t xoff;
};

struct parts {
	uint32_t n, cap; /* parts in p[], sorted by off, adjacent, covering the value */
	struct part p[];
};

struct store_item {
	struct store_item *hnext; /* hash chain; for ITEM_MOVED the item that took over */
	struct dlist link;        /* LRU, reservation or zombie list */
	union {
		uint64_t off;        /* arena offset from the caller's base */
		struct parts *parts; /* ITEM_F_PARTS */
	};
	uint64_t size; /* value bytes */
	uint64_t version;
	uint64_t mtime_ns;
	uint32_t hash;
	uint32_t pins;
	uint16_t mode; /* & 07777; STORE_TYPE_SPECIAL: & 0177777 (its S_IFMT bits) */
	uint16_t keylen;
	uint8_t state : 7; /* enum item_state */
	uint8_t keep : 1;  /* ITEM_LINKED: kept (store_keep()), counted in kept_* */
	uint8_t ns;        /* its namespace's index + 1; 0 = none (fills the padding) */
	uint8_t type;      /* enum store_type */
	uint8_t flags;     /* ITEM_F_* */
	char key[];
};

_Static_assert(STORE_NS_MAX <= UINT8_MAX, "store_item.ns holds a namespace index + 1");

struct store {
	char *base;
	struct arena arena; /* carves the page-aligned part of [base, base + len) */
	enum store_evict evict;
	uint64_t max_value;
	uint64_t max_meta; /* 0 = none: see store_opts */
	uint64_t hseed;
	uint64_t next_version;

	struct store_item **buckets;
	uint64_t nbuckets; /* power of two */
	struct kidx order; /* the same items, in key order */

	struct dlist lru;     /* next = most recent */
	struct dlist resv;    /* reservations */
	struct dlist zombies; /* unindexed pinned items */

	uint64_t nitems, value_bytes;
	uint64_t evictable; /* arena bytes charged to items on the LRU */
	uint64_t evictions, evicted_bytes;
	uint64_t meta_evictions; /* of them, to stay within max_meta */
	uint64_t kept_keys, kept_bytes;
	uint64_t max_kept;
	store_evict_cb on_evict;
	void *evict_arg;
	uint64_t pinned_items, pinned_bytes;
	uint64_t resv_count, resv_bytes;
	uint64_t meta_bytes; /* heap bytes of this struct, buckets, items (arena, order: apart) */
	uint64_t key_bytes;

	const struct store_ns *ns;  /* store_opts.ns: the caller's */
	struct store_ns_usage *use; /* per namespace */
	size_t nns;

	struct item_ext **ext; /* side table of owners and xattrs, by item address */
	uint64_t next_buckets; /* power of two, or 0 before the first */
	uint64_t next;         /* entries */
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void dl_init(struct dlist *h)
{
	h->prev = h;
	h->next = h;
}

static void dl_add_after(struct dlist *pos, struct dlist *n)
{
	n->prev = pos;
	n->next = pos->next;
	pos->next->prev = n;
	pos->next = n;
}

static void dl_del(struct dlist *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n;
	n->next = n;
}

static bool dl_empty(const struct dlist *h)
{
	return h->next == h;
}

static void *meta_alloc(struct store *s, size_t n)
{
	void *p = malloc(n);

	if (p)
		s->meta_bytes += malloc_usable_size(p);
	return p;
}

static void meta_free(struct store *s, void *p)
{
	if (!p)
		return;
	s->meta_bytes -= malloc_usable_size(p);
	free(p);
}

static int key_check(const char *key, size_t len)
{
	if (!key || !len)
		return -EINVAL;
	if (len > KV_KEY_MAX)
		return -ENAMETOOLONG;
	if (memchr(key, 0, len))
		return -EINVAL;
	return 0;
}

/* ---- values ------------------------------------------------------------ */

uint64_t store_alloc_size(const struct store *s, uint64_t size)
{
	(void)s;
	return arena_alloc_size(size);
}

static void ext_unref(struct store *s, struct store_ext *x)
{
	if (--x->refs)
		return;
	arena_free(&s->arena, x->off, x->size);
	meta_free(s, x);
}

/* Give the item's arena range (or its parts) back. */
static void item_release_range(struct store *s, struct store_item *it)
{
	if (!(it->flags & ITEM_F_PARTS)) {
		arena_free(&s->arena, it->off, it->size);
		return;
	}
	for (uint32_t i = 0; i < it->parts->n; i++)
		ext_unref(s, it->parts->p[i].x);
	meta_free(s, it->parts);
	it->parts = NULL;
	it->flags &= (uint8_t)~ITEM_F_PARTS;
}

/* ---- owners and extended attributes: the side table ---------------------- */

static uint64_t ext_bucket(const struct store *s, const struct store_item *it)
{
	return ((uint64_t)(uintptr_t)it * 0x9E3779B97F4A7C15ULL >> 20) & (s->next_buckets - 1);
}

/* The link pointing to @it's entry (it has one: ITEM_F_EXT). */
static struct item_ext **ext_slot(struct store *s, const struct store_item *it)
{
	struct item_ext **pp = &s->ext[ext_bucket(s, it)];

	while ((*pp)->it != it)
		pp = &(*pp)->next;
	return pp;
}

static struct item_ext *ext_of(const struct store *s, const struct store_item *it)
{
	struct item_ext *e;

	if (!(it->flags & ITEM_F_EXT))
		return NULL;
	e = s->ext[ext_bucket(s, it)];
	while (e->it != it)
		e = e->next;
	return e;
}

/* Take @it's entry out of the table (NULL if it has none). */
static struct item_ext *ext_detach(struct store *s, struct store_item *it)
{
	struct item_ext **pp, *e;

	if (!(it->flags & ITEM_F_EXT))
		return NULL;
	pp = ext_slot(s, it);
	e = *pp;
	*pp = e->next;
	e->next = NULL;
	e->it = NULL;
	it->flags &= ~ITEM_F_EXT;
	s->next--;
	return e;
}

/* Double the table when fuller than one entry per bucket; a failed
 * growth only makes chains longer. */
static void ext_maybe_grow(struct store *s)
{
	uint64_t n = s->next_buckets ? s->next_buckets * 2 : 64, old = s->next_buckets;
	struct item_ext **nb, **ob = s->ext;

	if (s->next_buckets && s->next < s->next_buckets)
		return;
	nb = meta_alloc(s, n * sizeof(*nb));
	if (!nb)
		return;
	memset(nb, 0, n * sizeof(*nb));
	s->ext = nb;
	s->next_buckets = n;
	for (uint64_t i = 0; i < old; i++) {
		struct item_ext *e = ob[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = nb[ext_bucket(s, e->it)];
			nb[ext_bucket(s, e->it)] = e;
		}
	}
	meta_free(s, ob);
}

/* Give @it the entry @e (which belongs to no item).  Fails only when the
 * table has no bucket at all (-ENOMEM): call ext_reserve() first. */
static int ext_attach(struct store *s, struct store_item *it, struct item_ext *e)
{
	uint64_t b;

	ext_maybe_grow(s);
	if (!s->next_buckets)
		return -ENOMEM;
	b = ext_bucket(s, it);
	e->it = it;
	e->next = s->ext[b];
	s->ext[b] = e;
	it->flags |= ITEM_F_EXT;
	s->next++;
	return 0;
}

/* Make sure ext_attach() cannot fail. */
static int ext_reserve(struct store *s)
{
	ext_maybe_grow(s);
	return s->next_buckets ? 0 : -ENOMEM;
}

static void ext_free(struct store *s, struct item_ext *e)
{
	if (!e)
		return;
	meta_free(s, e->xattrs);
	meta_free(s, e);
}

static void ext_free_of(struct store *s, struct store_item *it)
{
	ext_free(s, ext_detach(s, it));
}

static struct item_ext *ext_new(struct store *s)
{
	struct item_ext *e = meta_alloc(s, sizeof(*e));

	if (e)
		memset(e, 0, sizeof(*e));
	return e;
}

/*
 * Times beside the mtime.  A key costs nothing more for them while they
 * equal its mtime, which they do after a commit that took the server's
 * clock as the mtime (the key was just changed and made or read then);
 * they move into the side table when they part from it.
 */
static uint64_t item_ctime(const struct item_ext *e, const struct store_item *it)
{
	return e && e->has_ctime ? e->ctime_ns : it->mtime_ns;
}

static uint64_t item_atime(const struct item_ext *e, const struct store_item *it)
{
	return e && e->has_atime ? e->atime_ns : it->mtime_ns;
}

static void ext_settle(struct store *s, struct store_item *it, struct item_ext *e);

/* @it's entry with its times in it (made if it has none), ready for a change
 * of the mtime or the ctime; NULL on ENOMEM (nothing changed). */
static struct item_ext *ext_times(struct store *s, struct store_item *it)
{
	struct item_ext *e = ext_of(s, it);

	if (!e) {
		if (ext_reserve(s) || !(e = ext_new(s)))
			return NULL;
		ext_attach(s, it, e); /* reserved */
	}
	e->ctime_ns = item_ctime(e, it);
	e->atime_ns = item_atime(e, it);
	e->has_ctime = e->has_atime = true;
	return e;
}

/* Put @e back on @it, or free it when it holds nothing. */
static void ext_settle(struct store *s, struct store_item *it, struct item_ext *e)
{
	if (!e)
		return;
	if (!e->has_owner && !e->xlen && !e->rdev && !e->has_ctime && !e->has_atime) {
		ext_free(s, e);
		return;
	}
	if (ext_attach(s, it, e)) /* cannot be: the caller reserved */
		ext_free(s, e);
}

/* ---- items, LRU, hash ---------------------------------------------------- */

/* ---- namespaces ---------------------------------------------------------- */

static int ns_find(const struct store *s, const char *key, size_t keylen)
{
	size_t lo = 0, hi = s->nns;

	/* The last prefix <= @key is the only one @key can start with:
	 * prefixes are sorted and none starts another. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (kv_key_cmp(s->ns[mid].prefix, s->ns[mid].prefixlen, key, keylen) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	lo--;
	if (keylen < s->ns[lo].prefixlen || memcmp(key, s->ns[lo].prefix, s->ns[lo].prefixlen))
		return -1;
	return (int)lo;
}

/* What @it (with its size set) is charged in its namespace (0: none). */
static uint64_t ns_charge_of(const struct store *s, const struct store_item *it)
{
	if (!it->ns)
		return 0;
	return it->size + it->keylen - s->ns[it->ns - 1].prefixlen + STORE_NS_KEY_CHARGE;
}

static void ns_charge(struct store *s, const struct store_item *it)
{
	if (it->ns)
		s->use[it->ns - 1].charged += ns_charge_of(s, it);
}

static void ns_uncharge(struct store *s, const struct store_item *it)
{
	if (it->ns)
		s->use[it->ns - 1].charged -= ns_charge_of(s, it);
}

/* Would @it, charged instead of @credit bytes of its namespace (what it
 * replaces there), take the namespace past its quota? */
static bool ns_over(const struct store *s, const struct store_item *it, uint64_t credit)
{
	const struct store_ns *n;

	if (!it->ns)
		return false;
	n = &s->ns[it->ns - 1];
	return n->quota && s->use[it->ns - 1].charged - credit + ns_charge_of(s, it) > n->quota;
}

static struct store_item *item_new(struct store *s, const char *key, size_t keylen, uint32_t hash)
{
	struct store_item *it = meta_alloc(s, sizeof(*it) + keylen);

	if (!it)
		return NULL;
	memset(it, 0, sizeof(*it));
	memcpy(it->key, key, keylen);
	it->keylen = (uint16_t)keylen;
	it->hash = hash;
	it->ns = (uint8_t)(ns_find(s, key, keylen) + 1);
	dl_init(&it->link);
	s->key_bytes += keylen;
	return it;
}

static void ext_free_of(struct store *s, struct store_item *it);

static void item_free(struct store *s, struct store_item *it)
{
	ext_free_of(s, it);
	s->key_bytes -= it->keylen;
	meta_free(s, it);
}

static void lru_add_head(struct store *s, struct store_item *it)
{
	dl_add_after(&s->lru, &it->link);
	s->evictable += store_alloc_size(s, it->size);
}

static void lru_del(struct store *s, struct store_item *it)
{
	dl_del(&it->link);
	s->evictable -= store_alloc_size(s, it->size);
}

/* Is linked @it on the LRU (may be evicted)? */
static bool item_evictable(const struct store_item *it)
{
	return !it->pins && !it->keep;
}

/* Would kept bytes of @add in place of @sub pass max_kept (0: nothing may
 * be kept, not even an empty value)? */
static bool kept_over(const struct store *s, uint64_t sub, uint64_t add)
{
	return !s->max_kept || s->kept_bytes - sub + add > s->max_kept;
}

static uint64_t mum(uint64_t a, uint64_t b)
{
	__uint128_t r = (__uint128_t)a * b;

	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static uint32_t key_hash(const struct store *s, const char *key, size_t len)
{
	const unsigned char *p = (const unsigned char *)key;
	uint64_t h = s->hseed ^ ((uint64_t)len * 0x9E3779B97F4A7C15ULL);
	uint64_t w;

	for (; len >= 8; p += 8, len -= 8) {
		memcpy(&w, p, 8);
		h = mum(h ^ w, 0xA0761D6478BD642FULL);
	}
	w = 0;
	memcpy(&w, p, len);
	h = mum(h ^ w, 0xE7037ED1A0B428DBULL ^ len);
	h = mum(h, 0x8EBC6AF09C88C6E3ULL);
	return (uint32_t)(h ^ (h >> 32));
}

/* Link pointing to @key's item, or to the NULL ending its chain. */
static struct store_item **hash_slot(struct store *s, const char *key, size_t keylen, uint32_t h)
{
	struct store_item **pp = &s->buckets[h & (s->nbuckets - 1)];

	for (; *pp; pp = &(*pp)->hnext) {
		struct store_item *it = *pp;

		if (it->hash == h && it->keylen == keylen && !memcmp(it->key, key, keylen))
			break;
	}
	return pp;
}

/* Double the table when it got fuller than one item per bucket.  Failure
 * to grow only makes chains longer. */
static void hash_maybe_grow(struct store *s)
{
	uint64_t n = s->nbuckets * 2, i;
	struct store_item **nb;

	if (s->nitems <= s->nbuckets || n > (1ULL << 32))
		return;
	nb = meta_alloc(s, n * sizeof(*nb));
	if (!nb)
		return;
	memset(nb, 0, n * sizeof(*nb));
	for (i = 0; i < s->nbuckets; i++) {
		struct store_item *it = s->buckets[i], *next;

		for (; it; it = next) {
			next = it->hnext;
			it->hnext = nb[it->hash & (n - 1)];
			nb[it->hash & (n - 1)] = it;
		}
	}
	meta_free(s, s->buckets);
	s->buckets = nb;
	s->nbuckets = n;
}

static void hash_link(struct store *s, struct store_item *it)
{
	struct store_item **b = &s->buckets[it->hash & (s->nbuckets - 1)];

	it->hnext = *b;
	*b = it;
	it->state = ITEM_LINKED;
	s->nitems++;
	s->value_bytes += it->size;
	if (it->keep) {
		s->kept_keys++;
		s->kept_bytes += it->size;
	}
	if (it->ns) {
		s->use[it->ns - 1].keys++;
		s->use[it->ns - 1].value_bytes += it->size;
	}
}

/* @it, linked, leaves the index: its counts go, and its kept mark (the
 * caller unhashes it). */
static void item_unlink_counts(struct store *s, struct store_item *it)
{
	s->nitems--;
	s->value_bytes -= it->size;
	if (it->keep) {
		s->kept_keys--;
		s->kept_bytes -= it->size;
		it->keep = 0;
	}
	if (it->ns) {
		s->use[it->ns - 1].keys--;
		s->use[it->ns - 1].value_bytes -= it->size;
	}
	ns_uncharge(s, it);
}

/* @it was just removed from its hash chain: free it, or keep it as a zombie
 * until its last unpin. */
static void item_retire(struct store *s, struct store_item *it)
{
	bool on_lru = item_evictable(it);

	item_unlink_counts(s, it);
	it->hnext = NULL;
	if (it->pins) {
		it->state = ITEM_ZOMBIE;
		dl_add_after(&s->zombies, &it->link);
		return;
	}
	if (on_lru)
		lru_del(s, it);
	item_release_range(s, it);
	item_free(s, it);
}

static const char *item_key(const void *e, size_t *ret_len)
{
	const struct store_item *it = e;

	*ret_len = it->keylen;
	return it->key;
}

/* Heap bytes of the index: what store_opts.max_meta caps. */
static uint64_t meta_total(const struct store *s)
{
	return s->meta_bytes + s->arena.bytes + s->order.bytes;
}

static bool meta_over(const struct store *s)
{
	return s->max_meta && meta_total(s) > s->max_meta;
}

/* Evict the least recently used evictable item, to make room for a PUT of
 * @put_size bytes (@meta: for the index's budget). */
static void evict_lru(struct store *s, uint64_t put_size, bool meta)
{
	struct store_item *it = DL_ENTRY(s->lru.prev, struct store_item, link);
	struct store_item **pp = hash_slot(s, it->key, it->keylen, it->hash);

	assert(*pp == it && item_evictable(it));
	if (s->on_evict)
		s->on_evict(s->evict_arg, it->key, it->keylen, it->size, put_size, meta);
	*pp = it->hnext;
	kidx_erase(&s->order, it);
	s->evictions++;
	s->evicted_bytes += it->size;
	item_retire(s, it);
}

/*
 * Allocate @size bytes of arena for a PUT of @put_size, evicting (LRU)
 * when the store may.  Evicts only when the evictable bytes could make
 * room at all, so that an impossible request (everything pinned) changes
 * nothing.  0, -ENOSPC or -ENOMEM.
 */
static int alloc_evicting(struct store *s, uint64_t size, uint64_t put_size, uint64_t *ret_off)
{
	uint64_t need = store_alloc_size(s, size);
	int err = arena_alloc(&s->arena, size, ret_off);

	if (err == -ENOSPC && s->evict == STORE_EVICT_LRU &&
	    arena_free_bytes(&s->arena) + s->evictable >= need) {
		while (err == -ENOSPC && !dl_empty(&s->lru)) {
			evict_lru(s, put_size, false);
			err = arena_alloc(&s->arena, size, ret_off);
		}
	}
	return err;
}

/* Keys and items cost memory too: a flood of empty values with long keys
 * takes no arena space, and would otherwise grow the heap without bound.
 * Past max_meta, evict like for value bytes (for a PUT of @put_size), or
 * refuse: 0 or -ENOSPC. */
static int meta_room(struct store *s, uint64_t put_size)
{
	while (meta_over(s) && s->evict == STORE_EVICT_LRU && !dl_empty(&s->lru)) {
		evict_lru(s, put_size, true);
		s->meta_evictions++;
	}
	return meta_over(s) ? -ENOSPC : 0;
}

/* ---- public API -------------------------------------------------------- */

int store_create(void *arena_base, size_t arena_len, const struct store_opts *opts,
                 struct store **ret)
{
	uintptr_t b = (uintptr_t)arena_base;
	uint64_t start, end, seed;
	struct store *s;

	if (!arena_base || !ret || b + arena_len < b)
		return -EINVAL;
	if (opts && opts->evict != STORE_EVICT_LRU && opts->evict != STORE_EVICT_NONE)
		return -EINVAL;
	start = (b + STORE_PAGE_SIZE - 1) / STORE_PAGE_SIZE * STORE_PAGE_SIZE - b;
	end = (b + arena_len) / STORE_PAGE_SIZE * STORE_PAGE_SIZE - b;
	if (start >= arena_len || end <= start)
		return -EINVAL;
	if (opts && (opts->nns > STORE_NS_MAX || (opts->nns && !opts->ns)))
		return -EINVAL;
	for (size_t i = 0; opts && i < opts->nns; i++) {
		const struct store_ns *n = &opts->ns[i], *p = i ? &opts->ns[i - 1] : NULL;

		if (!n->prefix || !n->prefixlen || n->prefixlen > KV_KEY_MAX)
			return -EINVAL;
		if (p &&
		    (kv_key_cmp(p->prefix, p->prefixlen, n->prefix, n->prefixlen) >= 0 ||
		     (p->prefixlen <= n->prefixlen && !memcmp(p->prefix, n->prefix, p->prefixlen))))
			return -EINVAL; /* out of order, or nested */
	}

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	if (opts && opts->nns) {
		s->use = calloc(opts->nns, sizeof(*s->use));
		if (!s->use) {
			free(s);
			return -ENOMEM;
		}
		s->ns = opts->ns;
		s->nns = opts->nns;
	}
	s->meta_bytes = malloc_usable_size(s);
	s->base = arena_base;
	s->evict = opts ? opts->evict : STORE_EVICT_LRU;
	s->max_meta = opts ? opts->max_meta : 0;
	s->max_kept = opts ? opts->max_kept : 0;
	s->on_evict = opts ? opts->on_evict : NULL;
	s->evict_arg = opts ? opts->evict_arg : NULL;
	s->max_value = opts && opts->max_value && opts->max_value < end - start ? opts->max_value
	                                                                        : end - start;
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = kv_now_ns() ^ (uint64_t)b;
	s->hseed = seed;
	s->next_version = 1;
	kidx_init(&s->order, item_key);
	dl_init(&s->lru);
	dl_init(&s->resv);
	dl_init(&s->zombies);

	s->nbuckets = HASH_MIN_BUCKETS;
	s->buckets = meta_alloc(s, s->nbuckets * sizeof(*s->buckets));
	if (!s->buckets)
		goto out_free_store;
	memset(s->buckets, 0, s->nbuckets * sizeof(*s->buckets));

	if (arena_init(&s->arena, start, end - start, seed))
		goto out_free_buckets;

	*ret = s;
	return 0;

out_free_buckets:
	free(s->buckets);
out_free_store:
	free(s->use);
	free(s);
	return -ENOMEM;
}

/* store_destroy(): the metadata of @it's parts (the arena goes whole). */
static void free_item(struct store_item *it)
{
	if (it->flags & ITEM_F_PARTS) {
		for (uint32_t i = 0; i < it->parts->n; i++)
			if (!--it->parts->p[i].x->refs)
				free(it->parts->p[i].x);
		free(it->parts);
	}
	free(it);
}

static void free_list_items(struct dlist *h)
{
	while (!dl_empty(h)) {
		struct dlist *n = h->next;

		dl_del(n);
		free_item(DL_ENTRY(n, struct store_item, link));
	}
}

void store_destroy(struct store *s)
{
	uint64_t i;

	if (!s)
		return;
	for (i = 0; i < s->nbuckets; i++) {
		struct store_item *it = s->buckets[i], *next;

		for (; it; it = next) {
			next = it->hnext;
			free_item(it);
		}
	}
	free_list_items(&s->resv);
	free_list_items(&s->zombies);
	for (i = 0; i < s->next_buckets; i++) {
		struct item_ext *e = s->ext[i], *next;

		for (; e; e = next) {
			next = e->next;
			free(e->xattrs);
			free(e);
		}
	}
	free(s->ext);
	arena_destroy(&s->arena);
	free(s->buckets);
	kidx_destroy(&s->order);
	free(s->use);
	free(s);
}

void *store_arena_base(const struct store *s)
{
	return s->base;
}

static struct store_item *resv_item(struct store_resv *r)
{
	return (struct store_item *)(void *)r;
}

static const struct store_item *resv_citem(const struct store_resv *r)
{
	return (const struct store_item *)(const void *)r;
}

int store_put_begin(struct store *s, const char *key, size_t keylen, uint64_t size,
                    struct store_resv **ret)
{
	uint64_t off = 0;
	struct store_item *it;
	int err;

	err = key_check(key, keylen);
	if (err)
		return err;
	if (size > s->max_value)
		return -EFBIG;

	it = item_new(s, key, keylen, key_hash(s, key, keylen));
	if (!it)
		return -ENOMEM;
	it->size = size;
	{ /* a quota or the kept bound refuses before anything is evicted */
		const struct store_item *old = *hash_slot(s, key, keylen, it->hash);

		if (it->ns && ns_over(s, it, old ? ns_charge_of(s, old) : 0)) {
			err = -EDQUOT;
			goto out_free_item;
		}
		if (old && old->keep && kept_over(s, old->size, size)) {
			err = -EOVERFLOW;
			goto out_free_item;
		}
	}

	err = alloc_evicting(s, size, size, &off);
	if (err)
		goto out_free_item;
	err = meta_room(s, size);
	if (err) {
		arena_free(&s->arena, off, size);
		goto out_free_item;
	}

	it->state = ITEM_RESV;
	it->off = off;
	s->resv_count++;
	s->resv_bytes += size;
	ns_charge(s, it);
	dl_add_after(&s->resv, &it->link);
	*ret = (struct store_resv *)(void *)it;
	return 0;

out_free_item:
	item_free(s, it);
	return err;
}

uint64_t store_resv_offset(const struct store_resv *r)
{
	return resv_citem(r)->off;
}

uint64_t store_resv_size(const struct store_resv *r)
{
	return resv_citem(r)->size;
}

/*
 * An entry was added to or removed from the directory holding @key (a
 * kvfs path): as on a local file system, the directory's mtime becomes
 * now.  A directory's times live in its marker key ("dir/"); an implicit
 * directory (no marker) and the root have none to change.  Replacing a
 * key's value changes no directory.
 */
static void touch_parent(struct store *s, const char *key, size_t keylen)
{
	struct store_item *it;
	size_t plen = keylen;

	if (plen && key[plen - 1] == '/')
		plen--; /* a marker's own directory is its parent's entry */
	while (plen && key[plen - 1] != '/')
		plen--;
	if (!plen)
		return; /* in the root */
	it = *hash_slot(s, key, plen, key_hash(s, key, plen));
	if (!it)
		return;
	{
		struct item_ext *e = ext_of(s, it);

		/* an atime and a ctime kept apart stay apart; else they follow */
		it->mtime_ns = now_ns();
		if (e && e->has_ctime)
			e->ctime_ns = it->mtime_ns;
	}
}

int store_put_commit(struct store *s, struct store_resv *r, const struct store_put_cond *cond,
                     uint32_t mode, uint64_t mtime_ns, uint64_t *ret_version)
{
	struct store_attrs a = {.mode = mode, .mtime_ns = mtime_ns};

	return store_put_commit_attrs(s, r, cond, &a, ret_version);
}

int store_put_commit_attrs(struct store *s, struct store_resv *r, const struct store_put_cond *cond,
                           const struct store_attrs *a, uint64_t *ret_version)
{
	struct store_item *it = resv_item(r), **pp, *old;
	struct item_ext *e = NULL, *fresh = NULL;
	bool need_ext = a->has_owner || a->rdev || a->mtime_given;

	assert(it->state == ITEM_RESV);
	pp = hash_slot(s, it->key, it->keylen, it->hash);
	old = *pp;
	if (cond && cond->if_absent && old)
		return -EEXIST;
	if (cond && cond->if_version) {
		if (!old)
			return -ENOENT;
		if (old->version != cond->if_version)
			return -ESTALE;
	}
	if (old && old->keep && kept_over(s, old->size, it->size))
		return -EOVERFLOW;
	if (!old && kidx_reserve(&s->order))
		return -ENOMEM;
	/* An owner or attributes to keep need an entry in the side table:
	 * allocated before anything changes. */
	if ((need_ext || (old && (old->flags & ITEM_F_EXT))) && ext_reserve(s))
		return -ENOMEM;
	if (need_ext && !(old && (old->flags & ITEM_F_EXT)) && !(fresh = ext_new(s)))
		return -ENOMEM;

	dl_del(&it->link);
	s->resv_count--;
	s->resv_bytes -= it->size;
	e = old ? ext_detach(s, old) : NULL; /* the replaced key's, kept */
	if (!e)
		e = fresh;
	if (old) {
		bool keep = old->keep; /* the mark belongs to the key */

		*pp = old->hnext;
		kidx_replace(&s->order, old, it);
		item_retire(s, old);
		it->keep = keep;
	} else {
		kidx_insert(&s->order, it);
	}
	it->version = s->next_version++;
	it->mode = (uint16_t)(a->mode & (a->type == STORE_TYPE_SPECIAL ? 0177777 : 07777));
	it->mtime_ns = a->mtime_ns;
	it->type = a->type;
	if (e) {
		e->rdev = a->rdev; /* the replaced key's was its own */
		/* the ctime is now: the mtime unless the client gave one */
		e->has_ctime = a->mtime_given;
		e->ctime_ns = now_ns();
		/* a rewrite is no access: an atime set or reported stays; a new
		 * key's is its creation */
		if (!old && a->mtime_given) {
			e->has_atime = true;
			e->atime_ns = e->ctime_ns;
		}
	}
	if (e && a->drop_xattrs) {
		meta_free(s, e->xattrs);
		e->xattrs = NULL;
		e->xlen = 0;
	}
	if (e && a->has_owner) {
		e->has_owner = true;
		e->uid = a->uid;
		e->gid = a->gid;
	}
	ext_settle(s, it, e);
	hash_link(s, it);
	if (!it->keep)
		lru_add_head(s, it);
	hash_maybe_grow(s);
	if (!old)
		touch_parent(s, it->key, it->keylen);
	if (ret_version)
		*ret_version = it->version;
	return 0;
}

void store_put_abort(struct store *s, struct store_resv *r)
{
	struct store_item *it;

	if (!r)
		return;
	it = resv_item(r);
	assert(it->state == ITEM_RESV);
	dl_del(&it->link);
	s->resv_count--;
	s->resv_bytes -= it->size;
	ns_uncharge(s, it);
	item_release_range(s, it);
	item_free(s, it);
}

/* ---- uploads: values built in parts ------------------------------------ */

/* Room for @extra more parts in @it's list. */
static int parts_reserve(struct store *s, struct store_item *it, uint32_t extra)
{
	struct parts *ps = it->parts, *np;
	uint32_t cap;

	if (ps && ps->cap - ps->n >= extra)
		return 0;
	cap = ps ? ps->n + extra : extra;
	if (cap > UINT32_MAX / 2)
		return -ENOMEM;
	cap = cap < 4 ? 4 : cap + cap / 2;
	np = meta_alloc(s, sizeof(*np) + (size_t)cap * sizeof(np->p[0]));
	if (!np)
		return -ENOMEM;
	np->n = ps ? ps->n : 0;
	np->cap = cap;
	if (ps) {
		memcpy(np->p, ps->p, (size_t)ps->n * sizeof(ps->p[0]));
		meta_free(s, ps);
	}
	it->parts = np;
	return 0;
}

/* Make @it's value a list of parts (its one range becomes a shared
 * allocation); its bytes do not move.  0 or -ENOMEM. */
static int parts_make(struct store *s, struct store_item *it)
{
	struct store_ext *x = NULL;
	uint64_t off = it->off;

	if (it->flags & ITEM_F_PARTS)
		return 0;
	if (it->size) {
		x = meta_alloc(s, sizeof(*x));
		if (!x)
			return -ENOMEM;
		*x = (struct store_ext){.off = off, .size = it->size, .refs = 1};
	}
	it->parts = NULL;
	if (parts_reserve(s, it, 1)) {
		meta_free(s, x);
		it->off = off;
		return -ENOMEM;
	}
	if (x)
		it->parts->p[it->parts->n++] = (struct part){.off = 0, .len = it->size, .x = x};
	it->flags |= ITEM_F_PARTS;
	return 0;
}

/* The first part of @ps that ends after @off (ps->n when none). */
static uint32_t parts_find(const struct parts *ps, uint64_t off)
{
	uint32_t lo = 0, hi = ps->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (ps->p[mid].off + ps->p[mid].len <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Take the value bytes [@from, @to) out of @ps, leaving a gap there that
 * the caller fills: parts inside it go, parts across its ends are cut.
 * Needs room for one more part (a part holding the whole range splits in
 * two).  Returns the index where the gap is.
 */
static uint32_t parts_cut(struct store *s, struct parts *ps, uint64_t from, uint64_t to)
{
	uint32_t i = parts_find(ps, from), j;
	struct part *p;

	if (i == ps->n)
		return i;
	p = &ps->p[i];
	if (p->off < from && p->off + p->len > to) { /* split */
		memmove(&ps->p[i + 2], &ps->p[i + 1], (size_t)(ps->n - i - 1) * sizeof(*p));
		ps->n++;
		ps->p[i + 1] = (struct part){.off = to,
		                             .len = p->off + p->len - to,
		                             .x = p->x,
		                             .xoff = p->xoff + (to - p->off)};
		p->x->refs++;
		p->len = from - p->off;
		return i + 1;
	}
	if (p->off < from) { /* keep its head */
		p->len = from - p->off;
		i++;
	}
	for (j = i; j < ps->n && ps->p[j].off + ps->p[j].len <= to; j++)
		ext_unref(s, ps->p[j].x);
	if (j < ps->n && ps->p[j].off < to) { /* keep its tail */
		uint64_t cut = to - ps->p[j].off;

		ps->p[j].off += cut;
		ps->p[j].xoff += cut;
		ps->p[j].len -= cut;
	}
	memmove(&ps->p[i], &ps->p[j], (size_t)(ps->n - j) * sizeof(*p));
	ps->n -= j - i;
	return i;
}

/* Put @np at @i of @ps (room checked). */
static void parts_insert(struct parts *ps, uint32_t i, const struct part *np)
{
	memmove(&ps->p[i + 1], &ps->p[i], (size_t)(ps->n - i) * sizeof(ps->p[0]));
	ps->p[i] = *np;
	ps->n++;
}

/*
 * A new allocation of @len bytes for upload @it (evicting if the store
 * may), one reference held for the caller.  @zero: fill it with zeros (a
 * hole).  0, -ENOSPC or -ENOMEM.
 */
static int up_ext_new(struct store *s, struct store_item *it, uint64_t len, bool zero,
                      struct store_ext **ret)
{
	struct store_ext *x = meta_alloc(s, sizeof(*x));
	int err;

	if (!x)
		return -ENOMEM;
	*x = (struct store_ext){.size = len, .refs = 1};
	err = alloc_evicting(s, len, it->size, &x->off);
	if (err) {
		meta_free(s, x);
		return err;
	}
	if (zero)
		memset(s->base + x->off, 0, len);
	*ret = x;
	return 0;
}

/* Can upload @it grow to @size (max_value, its namespace's quota)?
 * 0, -EFBIG or -EDQUOT. */
/* What the key of upload @it holds now is charged: a commit replaces it,
 * so a quota is checked as for a PUT (store_put_begin()), against what the
 * namespace will hold after the commit. */
static uint64_t up_key_credit(struct store *s, const struct store_item *it)
{
	const struct store_item *cur = *hash_slot(s, it->key, it->keylen, it->hash);

	return cur ? ns_charge_of(s, cur) : 0;
}

static int up_size_check(struct store *s, struct store_item *it, uint64_t size)
{
	uint64_t was = it->size, credit;
	bool over;

	if (size > s->max_value)
		return -EFBIG;
	if (size <= was || !it->ns)
		return 0;
	credit = ns_charge_of(s, it) + up_key_credit(s, it);
	it->size = size;
	over = ns_over(s, it, credit);
	it->size = was;
	return over ? -EDQUOT : 0;
}

/* Upload @it's value is now @size bytes long: the counts follow. */
static void up_set_size(struct store *s, struct store_item *it, uint64_t size)
{
	ns_uncharge(s, it);
	s->resv_bytes = s->resv_bytes - it->size + size;
	it->size = size;
	ns_charge(s, it);
}

/* Fill [it->size, @to) of upload @it with a zeroed part: 0 or an error of
 * up_ext_new(). */
static int up_hole(struct store *s, struct store_item *it, uint64_t to)
{
	struct store_ext *x;
	int err;

	if (to <= it->size)
		return 0;
	err = up_ext_new(s, it, to - it->size, true, &x);
	if (err)
		return err;
	parts_insert(it->parts, it->parts->n,
	             &(struct part){.off = it->size, .len = to - it->size, .x = x});
	up_set_size(s, it, to);
	return 0;
}

int store_up_open(struct store *s, const char *key, size_t keylen, uint64_t base_version,
                  struct store_resv **ret)
{
	struct store_item *it, *base = NULL;
	int err;

	err = key_check(key, keylen);
	if (err)
		return err;
	it = item_new(s, key, keylen, key_hash(s, key, keylen));
	if (!it)
		return -ENOMEM;
	if (base_version) {
		base = *hash_slot(s, key, keylen, it->hash);
		err = !base                           ? -ENOENT
		      : base->version != base_version ? -ESTALE
		      : base->size > s->max_value     ? -EFBIG
		                                      : 0;
		if (err)
			goto out_free_item;
		it->size = base->size;
		if (it->ns && ns_over(s, it, ns_charge_of(s, base))) {
			err = -EDQUOT;
			goto out_free_item;
		}
		err = parts_make(s, base);
		if (err)
			goto out_free_item;
	}
	err = parts_reserve(s, it, base ? base->parts->n + 2 : 2);
	if (err)
		goto out_free_item;
	it->flags |= ITEM_F_PARTS;
	if (base) {
		memcpy(it->parts->p, base->parts->p, (size_t)base->parts->n * sizeof(struct part));
		it->parts->n = base->parts->n;
		for (uint32_t i = 0; i < it->parts->n; i++)
			it->parts->p[i].x->refs++;
	}
	err = meta_room(s, it->size);
	if (err)
		goto out_free_parts;
	it->state = ITEM_RESV;
	s->resv_count++;
	s->resv_bytes += it->size;
	ns_charge(s, it);
	dl_add_after(&s->resv, &it->link);
	*ret = (struct store_resv *)(void *)it;
	return 0;

out_free_parts:
	item_release_range(s, it);
out_free_item:
	it->flags &= (uint8_t)~ITEM_F_PARTS;
	it->parts = NULL;
	item_free(s, it);
	return err;
}

int store_up_write(struct store *s, struct store_resv *r, uint64_t off, uint64_t len,
                   uint64_t *ret_off, struct store_ext **ret_ext)
{
	struct store_item *it = resv_item(r);
	struct store_ext *x;
	uint32_t i;
	int err;

	assert(it->state == ITEM_RESV && (it->flags & ITEM_F_PARTS));
	if (!len || off + len < off)
		return -EINVAL;
	err = up_size_check(s, it, off + len);
	if (err)
		return err;
	err = parts_reserve(s, it, 3);
	if (!err)
		err = meta_room(s, it->size);
	if (!err)
		err = up_ext_new(s, it, len, false, &x);
	if (err)
		return err;
	err = up_hole(s, it, off); /* a write past the end: zeros between */
	if (err) {
		ext_unref(s, x);
		return err;
	}
	x->refs++; /* the caller's, until its transfer is done */
	i = parts_cut(s, it->parts, off, off + len);
	parts_insert(it->parts, i, &(struct part){.off = off, .len = len, .x = x});
	if (off + len > it->size)
		up_set_size(s, it, off + len);
	*ret_off = x->off;
	*ret_ext = x;
	return 0;
}

void store_ext_put(struct store *s, struct store_ext *x)
{
	if (x)
		ext_unref(s, x);
}

int store_up_truncate(struct store *s, struct store_resv *r, uint64_t size)
{
	struct store_item *it = resv_item(r);
	int err;

	assert(it->state == ITEM_RESV && (it->flags & ITEM_F_PARTS));
	if (size > it->size) {
		err = up_size_check(s, it, size);
		if (!err)
			err = parts_reserve(s, it, 1);
		return err ? err : up_hole(s, it, size);
	}
	if (size < it->size) {
		err = parts_reserve(s, it, 1);
		if (err)
			return err;
		parts_cut(s, it->parts, size, it->size);
		up_set_size(s, it, size);
	}
	return 0;
}

const struct store_item *store_resv_item(const struct store_resv *r)
{
	return resv_citem(r);
}

const char *store_resv_key(const struct store_resv *r, size_t *ret_len)
{
	*ret_len = resv_citem(r)->keylen;
	return resv_citem(r)->key;
}

uint64_t store_up_size(const struct store_resv *r)
{
	return resv_citem(r)->size;
}

size_t store_item_segs(const struct store_item *it, uint64_t off, uint64_t len,
                       struct store_seg *segs, size_t max)
{
	const struct parts *ps;
	size_t n = 0;
	uint32_t i;

	if (off >= it->size || !len)
		return 0;
	len = KV_MIN(len, it->size - off);
	if (!(it->flags & ITEM_F_PARTS)) {
		if (max)
			segs[0] = (struct store_seg){.off = it->off + off, .len = len};
		return 1;
	}
	ps = it->parts;
	for (i = parts_find(ps, off); i < ps->n && len; i++, n++) {
		const struct part *p = &ps->p[i];
		uint64_t skip = off - p->off, take = KV_MIN(p->len - skip, len);

		if (n < max)
			segs[n] =
			        (struct store_seg){.off = p->x->off + p->xoff + skip, .len = take};
		off += take;
		len -= take;
	}
	return n;
}

size_t store_item_nparts(const struct store_item *it)
{
	if (!(it->flags & ITEM_F_PARTS))
		return it->size ? 1 : 0;
	return it->parts->n;
}

static int find(struct store *s, const char *key, size_t keylen, struct store_item ***ret_pp)
{
	struct store_item **pp;
	int err = key_check(key, keylen);

	if (err)
		return err;
	pp = hash_slot(s, key, keylen, key_hash(s, key, keylen));
	if (!*pp)
		return -ENOENT;
	*ret_pp = pp;
	return 0;
}

int store_get(struct store *s, const char *key, size_t keylen, struct store_item **ret)
{
	struct store_item **pp, *it;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	it = *pp;
	if (it->pins++ == 0) {
		if (!it->keep)
			lru_del(s, it);
		s->pinned_items++;
		s->pinned_bytes += it->size;
	}
	*ret = it;
	return 0;
}

void store_item_unpin(struct store *s, struct store_item *it)
{
	/* A renamed item forwards its pins to the item that took over its
	 * range, possibly through several renames. */
	while (it) {
		struct store_item *next = it->state == ITEM_MOVED ? it->hnext : NULL;

		assert(it->pins > 0);
		if (--it->pins)
			goto next;
		switch ((enum item_state)it->state) {
		case ITEM_LINKED:
			s->pinned_items--;
			s->pinned_bytes -= it->size;
			if (!it->keep)
				lru_add_head(s, it);
			break;
		case ITEM_ZOMBIE:
			s->pinned_items--;
			s->pinned_bytes -= it->size;
			dl_del(&it->link);
			item_release_range(s, it);
			item_free(s, it);
			break;
		case ITEM_MOVED:
			dl_del(&it->link);
			item_free(s, it);
			break;
		case ITEM_RESV:
			assert(!"unpin of a reservation");
			break;
		}
next:
		it = next;
	}
}

int store_lookup(struct store *s, const char *key, size_t keylen, const struct store_item **ret)
{
	struct store_item **pp;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	*ret = *pp;
	return 0;
}

uint64_t store_item_offset(const struct store_item *it)
{
	return it->off;
}

uint64_t store_item_size(const struct store_item *it)
{
	return it->size;
}

uint64_t store_item_version(const struct store_item *it)
{
	return it->version;
}

uint64_t store_item_mtime(const struct store_item *it)
{
	return it->mtime_ns;
}

uint32_t store_item_mode(const struct store_item *it)
{
	return it->mode;
}

bool store_item_kept(const struct store_item *it)
{
	return it->keep;
}

uint8_t store_item_type(const struct store_item *it)
{
	return it->type;
}

uint64_t store_item_ctime(const struct store *s, const struct store_item *it)
{
	return item_ctime(ext_of(s, it), it);
}

uint64_t store_item_atime(const struct store *s, const struct store_item *it)
{
	return item_atime(ext_of(s, it), it);
}

uint64_t store_item_rdev(const struct store *s, const struct store_item *it)
{
	const struct item_ext *e = ext_of(s, it);

	return e ? e->rdev : 0;
}

bool store_item_owner(const struct store *s, const struct store_item *it, uint32_t *ret_uid,
                      uint32_t *ret_gid)
{
	const struct item_ext *e = ext_of(s, it);

	if (!e || !e->has_owner)
		return false;
	if (ret_uid)
		*ret_uid = e->uid;
	if (ret_gid)
		*ret_gid = e->gid;
	return true;
}

const char *store_item_key(const struct store_item *it, size_t *ret_len)
{
	if (ret_len)
		*ret_len = it->keylen;
	return it->key;
}

int store_delete(struct store *s, const char *key, size_t keylen, uint64_t if_version,
                 uint64_t *ret_version)
{
	struct store_item **pp, *it;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	it = *pp;
	if (if_version && it->version != if_version)
		return -ESTALE;
	if (ret_version)
		*ret_version = it->version; /* before item_retire() may free it */
	*pp = it->hnext;
	kidx_erase(&s->order, it);
	item_retire(s, it);
	touch_parent(s, key, keylen);
	return 0;
}

int store_rename(struct store *s, const char *src, size_t srclen, const char *dst, size_t dstlen,
                 bool no_overwrite, const struct store_item **ret_item)
{
	struct store_item **ps, **pd, *sit, *nit;
	struct item_ext *e, *fresh = NULL;
	uint32_t hd;
	int err;

	err = key_check(dst, dstlen);
	if (err)
		return err;
	err = find(s, src, srclen, &ps);
	if (err)
		return err;
	sit = *ps;
	if (srclen == dstlen && !memcmp(src, dst, srclen)) {
		if (ret_item)
			*ret_item = sit;
		return 0;
	}
	hd = key_hash(s, dst, dstlen);
	pd = hash_slot(s, dst, dstlen, hd);
	if (*pd && no_overwrite)
		return -EEXIST;

	nit = item_new(s, dst, dstlen, hd);
	if (!nit)
		return -ENOMEM;
	nit->size = sit->size;
	if (ns_over(s, nit,
	            (*pd ? ns_charge_of(s, *pd) : 0) +
	                    (sit->ns == nit->ns ? ns_charge_of(s, sit) : 0))) {
		item_free(s, nit);
		return -EDQUOT;
	}
	if (kidx_reserve(&s->order) || ext_reserve(s) ||
	    (!(sit->flags & ITEM_F_EXT) && !(fresh = ext_new(s)))) {
		item_free(s, nit);
		return -ENOMEM;
	}

	/* From here on nothing fails.  nit takes over sit's range, attributes,
	 * owner, extended attributes, pins, kept mark and LRU position (none when
	 * it is not on the LRU). */
	*ps = sit->hnext;
	kidx_erase(&s->order, sit);
	nit->keep = sit->keep;
	item_unlink_counts(s, sit);
	nit->off = sit->off; /* or parts: the union */
	nit->flags |= sit->flags & ITEM_F_PARTS;
	sit->flags &= (uint8_t)~ITEM_F_PARTS;
	nit->mode = sit->mode;
	nit->mtime_ns = sit->mtime_ns;
	nit->type = sit->type;
	e = ext_detach(s, sit);
	if (!e)
		e = fresh;
	e->atime_ns = item_atime(e, sit);
	e->has_atime = true;
	e->ctime_ns = now_ns(); /* a rename changes the inode, as on Linux */
	e->has_ctime = true;
	ext_settle(s, nit, e);
	nit->pins = sit->pins;
	nit->version = s->next_version++;
	if (sit->pins) {
		sit->state = ITEM_MOVED;
		sit->hnext = nit;
		dl_add_after(&s->zombies, &sit->link);
	} else {
		if (!nit->keep) /* on the LRU: nit takes its place */
			dl_add_after(&sit->link, &nit->link);
		dl_del(&sit->link);
		item_free(s, sit);
	}

	pd = hash_slot(s, dst, dstlen, hd); /* sit's removal may have moved it */
	if (*pd) {
		struct store_item *old = *pd;

		*pd = old->hnext;
		kidx_replace(&s->order, old, nit);
		item_retire(s, old);
	} else {
		kidx_insert(&s->order, nit);
	}
	hash_link(s, nit);
	ns_charge(s, nit);
	touch_parent(s, src, srclen);
	touch_parent(s, dst, dstlen);
	if (ret_item)
		*ret_item = nit;
	return 0;
}

int store_setattr(struct store *s, const char *key, size_t keylen, unsigned which, uint32_t mode,
                  uint64_t mtime_ns, uint64_t if_version, const struct store_item **ret_item)
{
	struct store_item **pp, *it;
	struct item_ext *e = NULL;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	it = *pp;
	if (if_version && it->version != if_version)
		return -ESTALE;
	if (which && !(e = ext_times(s, it)))
		return -ENOMEM;
	if (which & STORE_SET_MODE)
		it->mode = (uint16_t)((it->mode & ~07777u) | (mode & 07777));
	if (which & STORE_SET_MTIME)
		it->mtime_ns = mtime_ns;
	if (which)
		e->ctime_ns = now_ns();
	if (ret_item)
		*ret_item = it;
	return 0;
}

int store_set_atime(struct store *s, const char *key, size_t keylen, uint64_t atime_ns, bool access,
                    uint64_t if_version, const struct store_item **ret_item)
{
	struct store_item **pp, *it;
	struct item_ext *e = NULL;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	it = *pp;
	if (if_version && it->version != if_version)
		return -ESTALE;
	if (access && atime_ns <= item_atime(ext_of(s, it), it))
		goto out; /* nothing to change, nothing to allocate */
	if (!(e = ext_times(s, it)))
		return -ENOMEM;
	e->atime_ns = atime_ns;
	if (!access)
		e->ctime_ns = now_ns();
out:
	if (ret_item)
		*ret_item = it;
	return 0;
}

int store_keep(struct store *s, const char *key, size_t keylen, bool keep, uint64_t if_version,
               const struct store_item **ret_item)
{
	struct store_item **pp, *it;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	it = *pp;
	if (if_version && it->version != if_version)
		return -ESTALE;
	if (keep && !it->keep) {
		if (kept_over(s, 0, it->size))
			return -EOVERFLOW;
		if (!it->pins)
			lru_del(s, it);
		it->keep = 1;
		s->kept_keys++;
		s->kept_bytes += it->size;
	} else if (!keep && it->keep) {
		it->keep = 0;
		s->kept_keys--;
		s->kept_bytes -= it->size;
		if (!it->pins)
			lru_add_head(s, it);
	}
	if (ret_item)
		*ret_item = it;
	return 0;
}

/* ---- owner and extended attributes ------------------------------------ */

/* The entry of @key's item, made if it has none: 0 and *ret_it, *ret_e. */
static int ext_find_or_make(struct store *s, const char *key, size_t keylen, uint64_t if_version,
                            struct store_item **ret_it, struct item_ext **ret_e)
{
	struct store_item **pp, *it;
	struct item_ext *e;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	it = *pp;
	if (if_version && it->version != if_version)
		return -ESTALE;
	e = ext_of(s, it);
	if (!e) {
		if (ext_reserve(s) || !(e = ext_new(s)))
			return -ENOMEM;
		ext_attach(s, it, e); /* reserved */
	}
	*ret_it = it;
	*ret_e = e;
	return 0;
}

int store_chown(struct store *s, const char *key, size_t keylen, unsigned which, uint32_t uid,
                uint32_t gid, uint64_t if_version)
{
	struct store_item *it;
	struct item_ext *e;
	int err;

	if (!(which & (STORE_SET_UID | STORE_SET_GID)))
		return store_setattr(s, key, keylen, 0, 0, 0, if_version, NULL);
	err = ext_find_or_make(s, key, keylen, if_version, &it, &e);
	if (err)
		return err;
	if (!e->has_owner) {
		e->has_owner = true;
		e->uid = e->gid = 0;
	}
	if (which & STORE_SET_UID)
		e->uid = uid;
	if (which & STORE_SET_GID)
		e->gid = gid;
	ext_times(s, it); /* has one: cannot fail */
	e->ctime_ns = now_ns();
	return 0;
}

#define XREC_HDR 5 /* u8 name length, u32 value length */

static size_t xrec_size(const uint8_t *p)
{
	uint32_t vlen;

	memcpy(&vlen, p + 1, sizeof(vlen));
	return XREC_HDR + p[0] + (size_t)vlen;
}

/* The record of @name in @e, or NULL. */
static uint8_t *xrec_find(const struct item_ext *e, const char *name, size_t namelen)
{
	for (uint32_t o = 0; e && o < e->xlen; o += (uint32_t)xrec_size(e->xattrs + o)) {
		uint8_t *p = e->xattrs + o;

		if (p[0] == namelen && !memcmp(p + XREC_HDR, name, namelen))
			return p;
	}
	return NULL;
}

/* Bytes of names and values in @e, but for the record @skip. */
static size_t xattr_bytes(const struct item_ext *e, const uint8_t *skip)
{
	size_t n = 0;

	for (uint32_t o = 0; e && o < e->xlen; o += (uint32_t)xrec_size(e->xattrs + o))
		if (e->xattrs + o != skip)
			n += xrec_size(e->xattrs + o) - XREC_HDR;
	return n;
}

static int xname_check(const char *name, size_t namelen)
{
	if (!name || !namelen || namelen > STORE_XATTR_NAME_MAX || memchr(name, 0, namelen))
		return -EINVAL;
	return 0;
}

int store_xattr_get(struct store *s, const char *key, size_t keylen, const char *name,
                    size_t namelen, const void **ret_val, size_t *ret_len)
{
	struct store_item **pp;
	const uint8_t *p;
	uint32_t vlen;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	if (xname_check(name, namelen))
		return -EINVAL;
	p = xrec_find(ext_of(s, *pp), name, namelen);
	if (!p)
		return -ENODATA;
	memcpy(&vlen, p + 1, sizeof(vlen));
	*ret_val = p + XREC_HDR + namelen;
	*ret_len = vlen;
	return 0;
}

int store_xattr_set(struct store *s, const char *key, size_t keylen, const char *name,
                    size_t namelen, const void *val, size_t vlen, unsigned flags, bool *ret_found)
{
	bool rm = flags & STORE_XATTR_REMOVE;
	struct store_item **pp, *it;
	struct item_ext *e;
	uint8_t *p, *nx;
	size_t old = 0, nlen;
	uint32_t v32;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	if (xname_check(name, namelen) || (rm && (flags & ~STORE_XATTR_REMOVE)) ||
	    ((flags & STORE_XATTR_CREATE) && (flags & STORE_XATTR_REPLACE)) ||
	    (!rm && vlen && !val))
		return -EINVAL;
	if (!rm && vlen > STORE_XATTR_TOTAL_MAX)
		return -E2BIG;
	it = *pp;
	e = ext_of(s, it);
	p = xrec_find(e, name, namelen);
	if (ret_found)
		*ret_found = p != NULL;
	if (p && (flags & STORE_XATTR_CREATE))
		return -EEXIST;
	if (!p && (rm || (flags & STORE_XATTR_REPLACE)))
		return 0; /* nothing to change; *ret_found says why */
	if (p)
		old = xrec_size(p);
	nlen = e ? e->xlen - old : 0;
	if (!rm) {
		if (xattr_bytes(e, p) + namelen + vlen > STORE_XATTR_TOTAL_MAX)
			return -ENOSPC;
		if (s->max_meta && meta_total(s) + XREC_HDR + namelen + vlen > s->max_meta)
			return -ENOSPC;
		nlen += XREC_HDR + namelen + vlen;
	}
	if (!e) {
		if (ext_reserve(s) || !(e = ext_new(s)))
			return -ENOMEM;
		ext_attach(s, it, e); /* reserved */
	}
	/* A new buffer: records in their order, @name's replaced in place,
	 * a new one last. */
	nx = nlen ? meta_alloc(s, nlen) : NULL;
	if (nlen && !nx) {
		ext_settle(s, it, ext_detach(s, it));
		return -ENOMEM;
	}
	{
		size_t w = 0;

		for (uint32_t o = 0; o < e->xlen;) {
			uint8_t *q = e->xattrs + o;
			size_t qs = xrec_size(q);

			if (q == p && !rm) {
				nx[w] = (uint8_t)namelen;
				v32 = (uint32_t)vlen;
				memcpy(nx + w + 1, &v32, sizeof(v32));
				memcpy(nx + w + XREC_HDR, name, namelen);
				if (vlen)
					memcpy(nx + w + XREC_HDR + namelen, val, vlen);
				w += XREC_HDR + namelen + vlen;
			} else if (q != p) {
				memcpy(nx + w, q, qs);
				w += qs;
			}
			o += (uint32_t)qs;
		}
		if (!p && !rm) {
			nx[w] = (uint8_t)namelen;
			v32 = (uint32_t)vlen;
			memcpy(nx + w + 1, &v32, sizeof(v32));
			memcpy(nx + w + XREC_HDR, name, namelen);
			if (vlen)
				memcpy(nx + w + XREC_HDR + namelen, val, vlen);
			w += XREC_HDR + namelen + vlen;
		}
		assert(w == nlen);
	}
	meta_free(s, e->xattrs);
	e->xattrs = nx;
	e->xlen = (uint32_t)nlen;
	ext_times(s, it); /* has one: cannot fail */
	e->ctime_ns = now_ns();
	ext_settle(s, it, ext_detach(s, it)); /* kept: it holds the times */
	return 0;
}

int store_xattr_list(struct store *s, const char *key, size_t keylen,
                     int (*cb)(void *arg, const char *name, size_t namelen), void *arg)
{
	struct store_item **pp;
	const struct item_ext *e;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	e = ext_of(s, *pp);
	for (uint32_t o = 0; e && o < e->xlen; o += (uint32_t)xrec_size(e->xattrs + o)) {
		err = cb(arg, (const char *)e->xattrs + o + XREC_HDR, e->xattrs[o]);
		if (err < 0)
			return err;
	}
	return 0;
}

int store_list(struct store *s, const struct store_list_req *req, store_list_cb cb, void *arg,
               bool *ret_truncated)
{
	const struct store_item *it;
	struct kidx_pos p;
	bool more = false;
	size_t n = 0;

	/* Walk the keys in order from the first one that can be listed.  A
	 * common prefix is listed once, from the first key under it (its
	 * marker, if the marker exists: a prefix sorts before its extensions),
	 * and the walk then seeks past all of its keys.  One entry past the
	 * limit tells whether more follow.  @cb leaves the store alone, so the
	 * position stays valid across it. */
	if (req->start_after_len &&
	    kv_key_cmp(req->start_after, req->start_after_len, req->prefix, req->prefixlen) >= 0)
		kidx_seek_gt(&s->order, req->start_after, req->start_after_len, &p);
	else
		kidx_seek_ge(&s->order, req->prefix, req->prefixlen, &p);
	while ((it = kidx_at(&s->order, &p))) {
		const struct store_item *e = it; /* a common prefix: its marker, or NULL */
		size_t len = it->keylen;
		const char *d = NULL;
		int err;

		if (it->keylen < req->prefixlen ||
		    (req->prefixlen && memcmp(it->key, req->prefix, req->prefixlen)))
			break; /* past the keys with the prefix */
		if (req->delimiter)
			d = memchr(it->key + req->prefixlen, req->delimiter,
			           it->keylen - req->prefixlen);
		if (d) {
			len = (size_t)(d - it->key) + 1;
			if (len != it->keylen)
				e = NULL; /* not the marker itself */
			kidx_seek_past(&s->order, it->key, len, &p);
		} else {
			kidx_next(&s->order, &p);
		}
		/* Only a common prefix can be <= start_after here: the one that
		 * start_after lies under. */
		if (req->start_after_len &&
		    kv_key_cmp(it->key, len, req->start_after, req->start_after_len) <= 0)
			continue;
		if (n == req->limit) {
			more = true;
			break;
		}
		err = cb(arg, it->key, len, e, d != NULL);
		if (err < 0)
			return err;
		n++;
	}
	if (ret_truncated)
		*ret_truncated = more;
	return 0;
}

void store_get_stats(const struct store *s, struct store_stats *ret)
{
	struct store_stats st = {0};

	st.keys = s->nitems;
	st.value_bytes = s->value_bytes;
	st.arena_usable = s->arena.len;
	st.arena_free = arena_free_bytes(&s->arena);
	st.arena_free_pages = s->arena.free_pages;
	st.largest_free = arena_largest_free(&s->arena);
	st.evictions = s->evictions;
	st.evicted_bytes = s->evicted_bytes;
	st.pinned_items = s->pinned_items;
	st.pinned_bytes = s->pinned_bytes;
	st.resv_count = s->resv_count;
	st.resv_bytes = s->resv_bytes;
	st.meta_bytes = meta_total(s);
	st.meta_evictions = s->meta_evictions;
	st.overhead_bytes = st.meta_bytes - s->key_bytes;
	st.kept_keys = s->kept_keys;
	st.kept_bytes = s->kept_bytes;
	st.max_kept = s->max_kept;
	*ret = st;
}

int store_ns_of(const struct store *s, const char *key, size_t keylen)
{
	return ns_find(s, key, keylen);
}

void store_ns_usage(const struct store *s, unsigned ns, struct store_ns_usage *ret)
{
	*ret = ns < s->nns ? s->use[ns] : (struct store_ns_usage){0};
}

double store_overhead_per_key(const struct store *s)
{
	if (!s->nitems)
		return 0;
	return (double)(s->meta_bytes + s->arena.bytes + s->order.bytes - s->key_bytes) /
	       (double)s->nitems;
}
