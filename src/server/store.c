/* SPDX-License-Identifier: MIT */
/*
 * kv-server storage core: hash index + LRU + arena allocator.  See store.h
 * for the contract; single-threaded by design.
 *
 * Arena allocator
 * ---------------
 * Two layers, both keeping their metadata outside the arena (the arena is
 * RDMA-registered and written by remote peers; it holds value bytes only):
 *
 *  1. Page extents.  The usable arena is a set of STORE_PAGE_SIZE granules.
 *     Free runs are nodes in a treap ordered by offset (O(log n) neighbour
 *     lookup, so a freed run merges with both neighbours immediately: no
 *     fragmentation survives "delete everything") and, at the same time, in
 *     one of 64 size bins (floor(log2(pages))).  Allocation is good-fit:
 *     best fit inside the request's own bin, else the head of the lowest
 *     non-empty larger bin (every run there fits), carved from its front.
 *     A value of the whole usable arena is allocatable when it is all free.
 *     Freeing must not fail, so every allocated extent owns one spare free
 *     node (kept in a pool), allocated up front when the extent was carved.
 *
 *  2. Slab classes for values of 1..STORE_SMALL_MAX (16 KiB) bytes:
 *     28 classes, multiples of 64 bytes spaced four per power of two
 *     (64, 128, 192, 256, 320, ... 12288, 14336, 16384: at most ~20% lost
 *     to rounding, 64-byte alignment for free).  A class takes SLAB_SIZE
 *     (128 KiB, >= 8 objects) page extents from layer 1 and tracks its
 *     slots in a bitmap; a slab that becomes empty goes back to layer 1 at
 *     once, so small values never strand arena space after deletion.  Slabs
 *     sit in their own offset-ordered treap to find a slot's slab on free
 *     without spending a pointer per item.
 *
 * Why not one allocator for everything: a 64-byte granular extent allocator
 * needs a free-run node per hole, i.e. up to one node per small item, and
 * small holes chop up the runs that multi-MiB KV-cache blocks need.  Slabs
 * keep small values together, cost O(1) per op, and their per-item metadata
 * is one bit.  Large values (> 16 KiB) lose at most one page (< 20%) to
 * rounding, and page alignment is what RDMA and O_DIRECT like.
 *
 * Eviction is one global LRU of unpinned indexed items.  With slabs, freeing
 * an item of another class only helps once its slab empties, so a small PUT
 * into a full store may evict more than its own size; the same holds for a
 * large PUT whose bytes are free but not contiguous.
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

#include "kidx.h"
#include "kvfs/util.h"
#include "store.h"

#define SLAB_SIZE        (128 * 1024)
#define HASH_MIN_BUCKETS 1024
#define NBINS            64

#define CLS_NONE  0    /* zero-length value, no arena space */
#define CLS_PAGES 0xff /* page extent; otherwise slab class index + 1 */

static const uint32_t cls_size[] = {
        64,   128,  192,  256,  320,  384,  448,  512,  640,  768,  896,   1024,  1280,  1536,
        1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384,
};
#define NCLASS ((int)KV_ARRAY_SIZE(cls_size))

struct dlist {
	struct dlist *prev, *next;
};

#define DL_ENTRY(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

enum item_state {
	ITEM_RESV,   /* reserved by put_begin, on store.resv, not indexed */
	ITEM_LINKED, /* indexed; on store.lru iff unpinned */
	ITEM_ZOMBIE, /* unindexed but pinned, owns its range; on store.zombies */
	ITEM_MOVED,  /* renamed while pinned: hnext took over range and pins; on store.zombies */
};

struct store_item {
	struct store_item *hnext; /* hash chain; for ITEM_MOVED the item that took over */
	struct dlist link;        /* LRU, reservation or zombie list */
	uint64_t off;             /* arena offset from the caller's base */
	uint64_t size;            /* value bytes */
	uint64_t version;
	uint64_t mtime_ns;
	uint32_t hash;
	uint32_t mode;
	uint32_t pins;
	uint16_t keylen;
	uint8_t state; /* enum item_state */
	uint8_t cls;   /* CLS_NONE, CLS_PAGES or slab class + 1 */
	char key[];
};

/* Treap node keyed by arena offset (free runs and slabs). */
struct tnode {
	uint64_t key;
	struct tnode *l, *r;
	uint32_t prio;
};

struct fext {
	struct tnode t;             /* t.key = offset; first member (pool links use t.l) */
	uint64_t len;               /* bytes, page multiple */
	struct fext *bprev, *bnext; /* size bin list */
	int bin;
};

struct slab {
	struct tnode t;           /* t.key = offset */
	struct slab *prev, *next; /* class list of slabs with free slots */
	uint32_t cls, nobj, nfree, hint;
	uint64_t map[]; /* 1 = slot free */
};

struct store {
	char *base;
	uint64_t ulen; /* usable bytes */
	enum store_evict evict;
	uint64_t max_value;
	uint64_t hseed;
	uint64_t rng; /* treap priorities */
	uint64_t next_version;

	struct store_item **buckets;
	uint64_t nbuckets; /* power of two */
	struct kidx order; /* the same items, in key order */

	struct dlist lru;     /* next = most recent */
	struct dlist resv;    /* reservations */
	struct dlist zombies; /* unindexed pinned items */

	struct tnode *free_root;  /* free runs by offset */
	struct fext *bins[NBINS]; /* free runs by size */
	uint64_t binmask;         /* non-empty bins */
	struct fext *spare;       /* pool, one node per allocated extent */
	struct tnode *slab_root;  /* slabs by offset */
	struct slab *partial[NCLASS];

	uint64_t nitems, value_bytes;
	uint64_t charged;    /* arena bytes held by items and reservations */
	uint64_t free_pages; /* bytes in free runs */
	uint64_t evictable;  /* charged bytes of items on the LRU */
	uint64_t evictions, evicted_bytes;
	uint64_t pinned_items, pinned_bytes;
	uint64_t resv_count, resv_bytes;
	uint64_t meta_bytes, key_bytes;
};

/* ---- small helpers ---------------------------------------------------- */

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

static uint64_t rng_next(struct store *s)
{
	/* xorshift64* */
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return s->rng * 0x2545F4914F6CDD1DULL;
}

static int log2floor(uint64_t x)
{
	return 63 - __builtin_clzll(x);
}

static uint64_t round_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

static int key_check(const char *key, size_t len)
{
	if (!key || !len)
		return -EINVAL;
	if (len > STORE_KEY_MAX)
		return -ENAMETOOLONG;
	if (memchr(key, 0, len))
		return -EINVAL;
	return 0;
}

/* ---- treap ------------------------------------------------------------ */

static struct tnode *t_rot_right(struct tnode *n)
{
	struct tnode *l = n->l;

	n->l = l->r;
	l->r = n;
	return l;
}

static struct tnode *t_rot_left(struct tnode *n)
{
	struct tnode *r = n->r;

	n->r = r->l;
	r->l = n;
	return r;
}

static void t_insert(struct tnode **root, struct tnode *n)
{
	struct tnode *t = *root;

	if (!t) {
		n->l = NULL;
		n->r = NULL;
		*root = n;
		return;
	}
	if (n->key < t->key) {
		t_insert(&t->l, n);
		if (t->l->prio > t->prio)
			*root = t_rot_right(t);
	} else {
		t_insert(&t->r, n);
		if (t->r->prio > t->prio)
			*root = t_rot_left(t);
	}
}

static void t_erase(struct tnode **root, struct tnode *n)
{
	struct tnode **p = root;

	while (*p != n)
		p = n->key < (*p)->key ? &(*p)->l : &(*p)->r;
	while (n->l && n->r) {
		if (n->l->prio > n->r->prio) {
			*p = t_rot_right(n);
			p = &(*p)->r;
		} else {
			*p = t_rot_left(n);
			p = &(*p)->l;
		}
	}
	*p = n->l ? n->l : n->r;
}

/* Node with the largest key <= @key, or NULL. */
static struct tnode *t_floor(struct tnode *t, uint64_t key)
{
	struct tnode *best = NULL;

	while (t) {
		if (t->key <= key) {
			best = t;
			t = t->r;
		} else {
			t = t->l;
		}
	}
	return best;
}

/* Node with the smallest key > @key, or NULL. */
static struct tnode *t_above(struct tnode *t, uint64_t key)
{
	struct tnode *best = NULL;

	while (t) {
		if (t->key > key) {
			best = t;
			t = t->l;
		} else {
			t = t->r;
		}
	}
	return best;
}

/* ---- layer 1: page extents -------------------------------------------- */

static void bin_add(struct store *s, struct fext *e)
{
	int b = log2floor(e->len / STORE_PAGE_SIZE);

	e->bin = b;
	e->bprev = NULL;
	e->bnext = s->bins[b];
	if (e->bnext)
		e->bnext->bprev = e;
	s->bins[b] = e;
	s->binmask |= 1ULL << b;
}

static void bin_del(struct store *s, struct fext *e)
{
	if (e->bprev)
		e->bprev->bnext = e->bnext;
	else
		s->bins[e->bin] = e->bnext;
	if (e->bnext)
		e->bnext->bprev = e->bprev;
	if (!s->bins[e->bin])
		s->binmask &= ~(1ULL << e->bin);
}

static void spare_push(struct store *s, struct fext *e)
{
	e->t.l = s->spare ? &s->spare->t : NULL;
	s->spare = e;
}

static struct fext *spare_pop(struct store *s)
{
	struct fext *e = s->spare;

	assert(e);
	s->spare = (struct fext *)(void *)e->t.l;
	return e;
}

/* Carve @len (page multiple) bytes.  Returns 0, -ENOSPC or -ENOMEM. */
static int pages_alloc(struct store *s, uint64_t len, uint64_t *ret_off)
{
	int b = log2floor(len / STORE_PAGE_SIZE);
	struct fext *best = NULL, *e;
	uint64_t mask, off;

	for (e = s->bins[b]; e; e = e->bnext) {
		if (e->len >= len && (!best || e->len < best->len)) {
			best = e;
			if (e->len == len)
				break;
		}
	}
	if (!best) {
		mask = b + 1 < NBINS ? s->binmask & (~0ULL << (b + 1)) : 0;
		if (!mask)
			return -ENOSPC;
		best = s->bins[__builtin_ctzll(mask)];
	}

	off = best->t.key;
	if (best->len == len) {
		bin_del(s, best);
		t_erase(&s->free_root, &best->t);
		spare_push(s, best);
	} else {
		e = meta_alloc(s, sizeof(*e));
		if (!e)
			return -ENOMEM;
		spare_push(s, e);
		bin_del(s, best);
		/* Moving the start forward keeps the treap order. */
		best->t.key += len;
		best->len -= len;
		bin_add(s, best);
	}
	s->free_pages -= len;
	*ret_off = off;
	return 0;
}

static void pages_free(struct store *s, uint64_t off, uint64_t len)
{
	struct fext *spare = spare_pop(s);
	struct tnode *tp = t_floor(s->free_root, off), *ts = t_above(s->free_root, off);
	struct fext *pred = (struct fext *)(void *)tp, *succ = (struct fext *)(void *)ts;
	bool merge_pred = pred && pred->t.key + pred->len == off;
	bool merge_succ = succ && off + len == succ->t.key;

	s->free_pages += len;
	if (merge_pred && merge_succ) {
		bin_del(s, pred);
		bin_del(s, succ);
		t_erase(&s->free_root, &succ->t);
		pred->len += len + succ->len;
		bin_add(s, pred);
		meta_free(s, succ);
		meta_free(s, spare);
	} else if (merge_pred) {
		bin_del(s, pred);
		pred->len += len;
		bin_add(s, pred);
		meta_free(s, spare);
	} else if (merge_succ) {
		bin_del(s, succ);
		succ->t.key = off; /* still above pred's end: order kept */
		succ->len += len;
		bin_add(s, succ);
		meta_free(s, spare);
	} else {
		spare->t.key = off;
		spare->t.prio = (uint32_t)rng_next(s);
		spare->len = len;
		t_insert(&s->free_root, &spare->t);
		bin_add(s, spare);
	}
}

/* ---- layer 2: slabs --------------------------------------------------- */

static int cls_of(uint64_t size)
{
	int lo = 0, hi = NCLASS - 1;

	while (lo < hi) {
		int mid = (lo + hi) / 2;

		if (cls_size[mid] >= size)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static void partial_add(struct store *s, struct slab *sl)
{
	sl->prev = NULL;
	sl->next = s->partial[sl->cls];
	if (sl->next)
		sl->next->prev = sl;
	s->partial[sl->cls] = sl;
}

static void partial_del(struct store *s, struct slab *sl)
{
	if (sl->prev)
		sl->prev->next = sl->next;
	else
		s->partial[sl->cls] = sl->next;
	if (sl->next)
		sl->next->prev = sl->prev;
}

static int slab_alloc(struct store *s, int c, uint64_t *ret_off)
{
	struct slab *sl = s->partial[c];
	uint32_t words, w, i;
	int ret, bit;

	if (!sl) {
		uint32_t nobj = SLAB_SIZE / cls_size[c];
		uint64_t off;

		words = (nobj + 63) / 64;
		sl = meta_alloc(s, sizeof(*sl) + words * sizeof(uint64_t));
		if (!sl)
			return -ENOMEM;
		ret = pages_alloc(s, SLAB_SIZE, &off);
		if (ret) {
			meta_free(s, sl);
			return ret;
		}
		sl->t.key = off;
		sl->t.prio = (uint32_t)rng_next(s);
		sl->cls = (uint32_t)c;
		sl->nobj = nobj;
		sl->nfree = nobj;
		sl->hint = 0;
		for (i = 0; i < words; i++)
			sl->map[i] = ~0ULL;
		if (nobj % 64)
			sl->map[words - 1] = (1ULL << (nobj % 64)) - 1;
		t_insert(&s->slab_root, &sl->t);
		partial_add(s, sl);
	}

	words = (sl->nobj + 63) / 64;
	for (w = sl->hint; !sl->map[w]; w = (w + 1) % words)
		;
	bit = __builtin_ctzll(sl->map[w]);
	sl->map[w] &= ~(1ULL << bit);
	sl->hint = w;
	if (--sl->nfree == 0)
		partial_del(s, sl);
	*ret_off = sl->t.key + ((uint64_t)w * 64 + (uint64_t)bit) * cls_size[c];
	return 0;
}

static void slab_free(struct store *s, uint64_t off)
{
	struct slab *sl = (struct slab *)(void *)t_floor(s->slab_root, off);
	uint64_t idx;

	assert(sl && off < sl->t.key + SLAB_SIZE);
	idx = (off - sl->t.key) / cls_size[sl->cls];
	assert(!(sl->map[idx / 64] & (1ULL << (idx % 64))));
	sl->map[idx / 64] |= 1ULL << (idx % 64);
	if (++sl->nfree == 1)
		partial_add(s, sl);
	if (sl->nfree == sl->nobj) {
		partial_del(s, sl);
		t_erase(&s->slab_root, &sl->t);
		pages_free(s, sl->t.key, SLAB_SIZE);
		meta_free(s, sl);
	}
}

/* ---- values ------------------------------------------------------------ */

uint64_t store_alloc_size(const struct store *s, uint64_t size)
{
	(void)s;
	if (size == 0)
		return 0;
	if (size <= STORE_SMALL_MAX)
		return cls_size[cls_of(size)];
	return round_up(size, STORE_PAGE_SIZE);
}

static int val_alloc(struct store *s, uint64_t size, uint8_t *ret_cls, uint64_t *ret_off)
{
	uint64_t off;
	int c, ret;

	if (size == 0) {
		*ret_cls = CLS_NONE;
		*ret_off = 0;
		return 0;
	}
	if (size <= STORE_SMALL_MAX) {
		c = cls_of(size);
		ret = slab_alloc(s, c, &off);
		if (ret)
			return ret;
		*ret_cls = (uint8_t)(c + 1);
	} else {
		ret = pages_alloc(s, round_up(size, STORE_PAGE_SIZE), &off);
		if (ret)
			return ret;
		*ret_cls = CLS_PAGES;
	}
	*ret_off = off;
	return 0;
}

/* Give the item's arena range back. */
static void item_release_range(struct store *s, struct store_item *it)
{
	if (it->cls == CLS_PAGES)
		pages_free(s, it->off, round_up(it->size, STORE_PAGE_SIZE));
	else if (it->cls != CLS_NONE)
		slab_free(s, it->off);
	s->charged -= store_alloc_size(s, it->size);
	it->cls = CLS_NONE;
}

/* ---- items, LRU, hash ---------------------------------------------------- */

static struct store_item *item_new(struct store *s, const char *key, size_t keylen, uint32_t hash)
{
	struct store_item *it = meta_alloc(s, sizeof(*it) + keylen);

	if (!it)
		return NULL;
	memset(it, 0, sizeof(*it));
	memcpy(it->key, key, keylen);
	it->keylen = (uint16_t)keylen;
	it->hash = hash;
	dl_init(&it->link);
	s->key_bytes += keylen;
	return it;
}

static void item_free(struct store *s, struct store_item *it)
{
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
}

/* @it was just removed from its hash chain: free it, or keep it as a zombie
 * until its last unpin. */
static void item_retire(struct store *s, struct store_item *it)
{
	s->nitems--;
	s->value_bytes -= it->size;
	it->hnext = NULL;
	if (it->pins) {
		it->state = ITEM_ZOMBIE;
		dl_add_after(&s->zombies, &it->link);
		return;
	}
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

static void evict_lru(struct store *s)
{
	struct store_item *it = DL_ENTRY(s->lru.prev, struct store_item, link);
	struct store_item **pp = hash_slot(s, it->key, it->keylen, it->hash);

	assert(*pp == it && it->pins == 0);
	*pp = it->hnext;
	kidx_erase(&s->order, it);
	s->evictions++;
	s->evicted_bytes += it->size;
	item_retire(s, it);
}

/* ---- public API -------------------------------------------------------- */

int store_create(void *arena_base, size_t arena_len, const struct store_opts *opts,
                 struct store **ret)
{
	uintptr_t b = (uintptr_t)arena_base;
	uint64_t start, end, seed;
	struct store *s;
	struct fext *e;

	if (!arena_base || !ret || b + arena_len < b)
		return -EINVAL;
	if (opts && opts->evict != STORE_EVICT_LRU && opts->evict != STORE_EVICT_NONE)
		return -EINVAL;
	start = round_up(b, STORE_PAGE_SIZE) - b;
	end = (b + arena_len) / STORE_PAGE_SIZE * STORE_PAGE_SIZE - b;
	if (start >= arena_len || end <= start)
		return -EINVAL;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->meta_bytes = malloc_usable_size(s);
	s->base = arena_base;
	s->ulen = end - start;
	s->evict = opts ? opts->evict : STORE_EVICT_LRU;
	s->max_value =
	        opts && opts->max_value && opts->max_value < s->ulen ? opts->max_value : s->ulen;
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = kv_now_ns() ^ (uint64_t)b;
	s->hseed = seed;
	s->rng = seed | 1;
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

	e = meta_alloc(s, sizeof(*e));
	if (!e)
		goto out_free_buckets;
	e->t.key = start;
	e->t.prio = (uint32_t)rng_next(s);
	e->len = s->ulen;
	t_insert(&s->free_root, &e->t);
	bin_add(s, e);
	s->free_pages = s->ulen;

	*ret = s;
	return 0;

out_free_buckets:
	free(s->buckets);
out_free_store:
	free(s);
	return -ENOMEM;
}

static void free_list_items(struct dlist *h)
{
	while (!dl_empty(h)) {
		struct dlist *n = h->next;

		dl_del(n);
		free(DL_ENTRY(n, struct store_item, link));
	}
}

static void free_slab_tree(struct tnode *t)
{
	if (!t)
		return;
	free_slab_tree(t->l);
	free_slab_tree(t->r);
	free(t);
}

void store_destroy(struct store *s)
{
	uint64_t i;
	int b;

	if (!s)
		return;
	for (i = 0; i < s->nbuckets; i++) {
		struct store_item *it = s->buckets[i], *next;

		for (; it; it = next) {
			next = it->hnext;
			free(it);
		}
	}
	free_list_items(&s->resv);
	free_list_items(&s->zombies);
	for (b = 0; b < NBINS; b++) {
		struct fext *e = s->bins[b], *next;

		for (; e; e = next) {
			next = e->bnext;
			free(e);
		}
	}
	while (s->spare)
		free(spare_pop(s));
	free_slab_tree(s->slab_root);
	free(s->buckets);
	kidx_destroy(&s->order);
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
	uint64_t need = store_alloc_size(s, size), off = 0;
	struct store_item *it;
	uint8_t cls = CLS_NONE;
	int err;

	err = key_check(key, keylen);
	if (err)
		return err;
	if (size > s->max_value)
		return -EFBIG;

	it = item_new(s, key, keylen, key_hash(s, key, keylen));
	if (!it)
		return -ENOMEM;

	err = val_alloc(s, size, &cls, &off);
	/* Evict only when the evictable bytes could make room at all, so that
	 * an impossible request (everything pinned) changes nothing. */
	if (err == -ENOSPC && s->evict == STORE_EVICT_LRU &&
	    s->ulen - s->charged + s->evictable >= need) {
		while (err == -ENOSPC && !dl_empty(&s->lru)) {
			evict_lru(s);
			err = val_alloc(s, size, &cls, &off);
		}
	}
	if (err)
		goto out_free_item;

	it->state = ITEM_RESV;
	it->size = size;
	it->off = off;
	it->cls = cls;
	s->charged += need;
	s->resv_count++;
	s->resv_bytes += size;
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

int store_put_commit(struct store *s, struct store_resv *r, const struct store_put_cond *cond,
                     uint32_t mode, uint64_t mtime_ns, uint64_t *ret_version)
{
	struct store_item *it = resv_item(r), **pp, *old;

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
	if (!old && kidx_reserve(&s->order))
		return -ENOMEM;

	dl_del(&it->link);
	s->resv_count--;
	s->resv_bytes -= it->size;
	if (old) {
		*pp = old->hnext;
		kidx_replace(&s->order, old, it);
		item_retire(s, old);
	} else {
		kidx_insert(&s->order, it);
	}
	it->version = s->next_version++;
	it->mode = mode;
	it->mtime_ns = mtime_ns;
	hash_link(s, it);
	lru_add_head(s, it);
	hash_maybe_grow(s);
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
	item_release_range(s, it);
	item_free(s, it);
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

const char *store_item_key(const struct store_item *it, size_t *ret_len)
{
	if (ret_len)
		*ret_len = it->keylen;
	return it->key;
}

int store_delete(struct store *s, const char *key, size_t keylen, uint64_t if_version)
{
	struct store_item **pp, *it;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	it = *pp;
	if (if_version && it->version != if_version)
		return -ESTALE;
	*pp = it->hnext;
	kidx_erase(&s->order, it);
	item_retire(s, it);
	return 0;
}

int store_rename(struct store *s, const char *src, size_t srclen, const char *dst, size_t dstlen,
                 bool no_overwrite)
{
	struct store_item **ps, **pd, *sit, *nit;
	uint32_t hd;
	int err;

	err = key_check(dst, dstlen);
	if (err)
		return err;
	err = find(s, src, srclen, &ps);
	if (err)
		return err;
	sit = *ps;
	if (srclen == dstlen && !memcmp(src, dst, srclen))
		return 0;
	hd = key_hash(s, dst, dstlen);
	pd = hash_slot(s, dst, dstlen, hd);
	if (*pd && no_overwrite)
		return -EEXIST;

	nit = item_new(s, dst, dstlen, hd);
	if (!nit)
		return -ENOMEM;
	if (kidx_reserve(&s->order)) {
		item_free(s, nit);
		return -ENOMEM;
	}

	/* From here on nothing fails.  nit takes over sit's range, attributes,
	 * pins and LRU position. */
	*ps = sit->hnext;
	kidx_erase(&s->order, sit);
	s->nitems--;
	s->value_bytes -= sit->size;
	nit->off = sit->off;
	nit->size = sit->size;
	nit->cls = sit->cls;
	nit->mode = sit->mode;
	nit->mtime_ns = sit->mtime_ns;
	nit->pins = sit->pins;
	nit->version = s->next_version++;
	if (sit->pins) {
		sit->state = ITEM_MOVED;
		sit->hnext = nit;
		sit->cls = CLS_NONE;
		dl_add_after(&s->zombies, &sit->link);
	} else {
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
	return 0;
}

int store_setattr(struct store *s, const char *key, size_t keylen, unsigned which, uint32_t mode,
                  uint64_t mtime_ns)
{
	struct store_item **pp;
	int err = find(s, key, keylen, &pp);

	if (err)
		return err;
	if (which & STORE_SET_MODE)
		(*pp)->mode = mode;
	if (which & STORE_SET_MTIME)
		(*pp)->mtime_ns = mtime_ns;
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
	const struct fext *e;

	st.keys = s->nitems;
	st.value_bytes = s->value_bytes;
	st.arena_usable = s->ulen;
	st.arena_free = s->ulen - s->charged;
	st.arena_free_pages = s->free_pages;
	if (s->binmask) {
		for (e = s->bins[log2floor(s->binmask)]; e; e = e->bnext)
			st.largest_free = KV_MAX(st.largest_free, e->len);
	}
	st.evictions = s->evictions;
	st.evicted_bytes = s->evicted_bytes;
	st.pinned_items = s->pinned_items;
	st.pinned_bytes = s->pinned_bytes;
	st.resv_count = s->resv_count;
	st.resv_bytes = s->resv_bytes;
	st.meta_bytes = s->meta_bytes + s->order.bytes;
	st.overhead_bytes = st.meta_bytes - s->key_bytes;
	*ret = st;
}

double store_overhead_per_key(const struct store *s)
{
	if (!s->nitems)
		return 0;
	return (double)(s->meta_bytes + s->order.bytes - s->key_bytes) / (double)s->nitems;
}
