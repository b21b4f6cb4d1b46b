/* SPDX-License-Identifier: MIT */
/*
 * arena: kv-server's value allocator, see arena.h for the contract.
 *
 * Two layers, both keeping their metadata outside the arena:
 *
 *  1. Page extents.  The range is a set of ARENA_PAGE_SIZE granules.
 *     Free runs are nodes in a treap ordered by offset (O(log n) neighbour
 *     lookup, so a freed run merges with both neighbours immediately: no
 *     fragmentation survives "delete everything") and, at the same time, in
 *     one of 64 size bins (floor(log2(pages))).  Allocation is good-fit:
 *     best fit inside the request's own bin, else the head of the lowest
 *     non-empty larger bin (every run there fits), carved from its front.
 *     A value of the whole range is allocatable when it is all free.
 *     Freeing must not fail, so every allocated extent owns one spare free
 *     node (kept in a pool), allocated up front when the extent was carved.
 *
 *  2. Slab classes for values of 1..ARENA_SMALL_MAX (16 KiB) bytes:
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
 * With slabs, freeing a value of another class only helps an allocation
 * once its slab empties, so a small allocation into a full arena may need
 * more than its own size freed first; the same holds for a large one whose
 * bytes are free but not contiguous (the store's eviction loop copes).
 */
#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdlib.h>

#include "arena.h"
#include "kvfs/util.h"

#define SLAB_SIZE (128 * 1024)

static const uint32_t cls_size[] = {
        64,   128,  192,  256,  320,  384,  448,  512,  640,  768,  896,   1024,  1280,  1536,
        1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384,
};
_Static_assert(KV_ARRAY_SIZE(cls_size) == ARENA_NCLASS, "ARENA_NCLASS counts the classes");
_Static_assert(16384 == ARENA_SMALL_MAX, "the largest class is ARENA_SMALL_MAX");

/* Treap node keyed by arena offset (free runs and slabs). */
struct arena_tnode {
	uint64_t key;
	struct arena_tnode *l, *r;
	uint32_t prio;
};

struct arena_fext {
	struct arena_tnode t;             /* t.key = offset; first member (pool links use t.l) */
	uint64_t len;                     /* bytes, page multiple */
	struct arena_fext *bprev, *bnext; /* size bin list */
	int bin;
};

struct arena_slab {
	struct arena_tnode t;           /* t.key = offset */
	struct arena_slab *prev, *next; /* class list of slabs with free slots */
	uint32_t cls, nobj, nfree, hint;
	uint64_t map[]; /* 1 = slot free */
};

/* ---- small helpers ---------------------------------------------------- */

static void *meta_alloc(struct arena *a, size_t n)
{
	void *p = malloc(n);

	if (p)
		a->bytes += malloc_usable_size(p);
	return p;
}

static void meta_free(struct arena *a, void *p)
{
	if (!p)
		return;
	a->bytes -= malloc_usable_size(p);
	free(p);
}

static uint64_t rng_next(struct arena *a)
{
	/* xorshift64* */
	a->rng ^= a->rng >> 12;
	a->rng ^= a->rng << 25;
	a->rng ^= a->rng >> 27;
	return a->rng * 0x2545F4914F6CDD1DULL;
}

static int log2floor(uint64_t x)
{
	return 63 - __builtin_clzll(x);
}

static uint64_t round_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

/* ---- treap ------------------------------------------------------------ */

static struct arena_tnode *t_rot_right(struct arena_tnode *n)
{
	struct arena_tnode *l = n->l;

	n->l = l->r;
	l->r = n;
	return l;
}

static struct arena_tnode *t_rot_left(struct arena_tnode *n)
{
	struct arena_tnode *r = n->r;

	n->r = r->l;
	r->l = n;
	return r;
}

static void t_insert(struct arena_tnode **root, struct arena_tnode *n)
{
	struct arena_tnode *t = *root;

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

static void t_erase(struct arena_tnode **root, struct arena_tnode *n)
{
	struct arena_tnode **p = root;

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
static struct arena_tnode *t_floor(struct arena_tnode *t, uint64_t key)
{
	struct arena_tnode *best = NULL;

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
static struct arena_tnode *t_above(struct arena_tnode *t, uint64_t key)
{
	struct arena_tnode *best = NULL;

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

static void bin_add(struct arena *a, struct arena_fext *e)
{
	int b = log2floor(e->len / ARENA_PAGE_SIZE);

	e->bin = b;
	e->bprev = NULL;
	e->bnext = a->bins[b];
	if (e->bnext)
		e->bnext->bprev = e;
	a->bins[b] = e;
	a->binmask |= 1ULL << b;
}

static void bin_del(struct arena *a, struct arena_fext *e)
{
	if (e->bprev)
		e->bprev->bnext = e->bnext;
	else
		a->bins[e->bin] = e->bnext;
	if (e->bnext)
		e->bnext->bprev = e->bprev;
	if (!a->bins[e->bin])
		a->binmask &= ~(1ULL << e->bin);
}

static void spare_push(struct arena *a, struct arena_fext *e)
{
	e->t.l = a->spare ? &a->spare->t : NULL;
	a->spare = e;
}

static struct arena_fext *spare_pop(struct arena *a)
{
	struct arena_fext *e = a->spare;

	assert(e);
	a->spare = (struct arena_fext *)(void *)e->t.l;
	return e;
}

/* Carve @len (page multiple) bytes.  Returns 0, -ENOSPC or -ENOMEM. */
static int pages_alloc(struct arena *a, uint64_t len, uint64_t *ret_off)
{
	int b = log2floor(len / ARENA_PAGE_SIZE);
	struct arena_fext *best = NULL, *e;
	uint64_t mask, off;

	for (e = a->bins[b]; e; e = e->bnext) {
		if (e->len >= len && (!best || e->len < best->len)) {
			best = e;
			if (e->len == len)
				break;
		}
	}
	if (!best) {
		mask = b + 1 < ARENA_NBINS ? a->binmask & (~0ULL << (b + 1)) : 0;
		if (!mask)
			return -ENOSPC;
		best = a->bins[__builtin_ctzll(mask)];
	}

	off = best->t.key;
	if (best->len == len) {
		bin_del(a, best);
		t_erase(&a->free_root, &best->t);
		spare_push(a, best);
	} else {
		e = meta_alloc(a, sizeof(*e));
		if (!e)
			return -ENOMEM;
		spare_push(a, e);
		bin_del(a, best);
		/* Moving the start forward keeps the treap order. */
		best->t.key += len;
		best->len -= len;
		bin_add(a, best);
	}
	a->free_pages -= len;
	*ret_off = off;
	return 0;
}

static void pages_free(struct arena *a, uint64_t off, uint64_t len)
{
	struct arena_fext *spare = spare_pop(a);
	struct arena_tnode *tp = t_floor(a->free_root, off), *ts = t_above(a->free_root, off);
	struct arena_fext *pred = (struct arena_fext *)(void *)tp;
	struct arena_fext *succ = (struct arena_fext *)(void *)ts;
	bool merge_pred = pred && pred->t.key + pred->len == off;
	bool merge_succ = succ && off + len == succ->t.key;

	a->free_pages += len;
	if (merge_pred && merge_succ) {
		bin_del(a, pred);
		bin_del(a, succ);
		t_erase(&a->free_root, &succ->t);
		pred->len += len + succ->len;
		bin_add(a, pred);
		meta_free(a, succ);
		meta_free(a, spare);
	} else if (merge_pred) {
		bin_del(a, pred);
		pred->len += len;
		bin_add(a, pred);
		meta_free(a, spare);
	} else if (merge_succ) {
		bin_del(a, succ);
		succ->t.key = off; /* still above pred's end: order kept */
		succ->len += len;
		bin_add(a, succ);
		meta_free(a, spare);
	} else {
		spare->t.key = off;
		spare->t.prio = (uint32_t)rng_next(a);
		spare->len = len;
		t_insert(&a->free_root, &spare->t);
		bin_add(a, spare);
	}
}

/* ---- layer 2: slabs --------------------------------------------------- */

static int cls_of(uint64_t size)
{
	int lo = 0, hi = ARENA_NCLASS - 1;

	while (lo < hi) {
		int mid = (lo + hi) / 2;

		if (cls_size[mid] >= size)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static void partial_add(struct arena *a, struct arena_slab *sl)
{
	sl->prev = NULL;
	sl->next = a->partial[sl->cls];
	if (sl->next)
		sl->next->prev = sl;
	a->partial[sl->cls] = sl;
}

static void partial_del(struct arena *a, struct arena_slab *sl)
{
	if (sl->prev)
		sl->prev->next = sl->next;
	else
		a->partial[sl->cls] = sl->next;
	if (sl->next)
		sl->next->prev = sl->prev;
}

static int slab_alloc(struct arena *a, int c, uint64_t *ret_off)
{
	struct arena_slab *sl = a->partial[c];
	uint32_t words, w, i;
	int ret, bit;

	if (!sl) {
		uint32_t nobj = SLAB_SIZE / cls_size[c];
		uint64_t off;

		words = (nobj + 63) / 64;
		sl = meta_alloc(a, sizeof(*sl) + words * sizeof(uint64_t));
		if (!sl)
			return -ENOMEM;
		ret = pages_alloc(a, SLAB_SIZE, &off);
		if (ret) {
			meta_free(a, sl);
			return ret;
		}
		sl->t.key = off;
		sl->t.prio = (uint32_t)rng_next(a);
		sl->cls = (uint32_t)c;
		sl->nobj = nobj;
		sl->nfree = nobj;
		sl->hint = 0;
		for (i = 0; i < words; i++)
			sl->map[i] = ~0ULL;
		if (nobj % 64)
			sl->map[words - 1] = (1ULL << (nobj % 64)) - 1;
		t_insert(&a->slab_root, &sl->t);
		partial_add(a, sl);
	}

	words = (sl->nobj + 63) / 64;
	for (w = sl->hint; !sl->map[w]; w = (w + 1) % words)
		;
	bit = __builtin_ctzll(sl->map[w]);
	sl->map[w] &= ~(1ULL << bit);
	sl->hint = w;
	if (--sl->nfree == 0)
		partial_del(a, sl);
	*ret_off = sl->t.key + ((uint64_t)w * 64 + (uint64_t)bit) * cls_size[c];
	return 0;
}

static void slab_free(struct arena *a, uint64_t off)
{
	struct arena_slab *sl = (struct arena_slab *)(void *)t_floor(a->slab_root, off);
	uint64_t idx;

	assert(sl && off < sl->t.key + SLAB_SIZE);
	idx = (off - sl->t.key) / cls_size[sl->cls];
	assert(!(sl->map[idx / 64] & (1ULL << (idx % 64))));
	sl->map[idx / 64] |= 1ULL << (idx % 64);
	if (++sl->nfree == 1)
		partial_add(a, sl);
	if (sl->nfree == sl->nobj) {
		partial_del(a, sl);
		t_erase(&a->slab_root, &sl->t);
		pages_free(a, sl->t.key, SLAB_SIZE);
		meta_free(a, sl);
	}
}

/* ---- API ---------------------------------------------------------------- */

int arena_init(struct arena *a, uint64_t off, uint64_t len, uint64_t seed)
{
	struct arena_fext *e;

	*a = (struct arena){.len = len, .rng = seed | 1};
	e = meta_alloc(a, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->t.key = off;
	e->t.prio = (uint32_t)rng_next(a);
	e->len = len;
	t_insert(&a->free_root, &e->t);
	bin_add(a, e);
	a->free_pages = len;
	return 0;
}

static void free_slab_tree(struct arena_tnode *t)
{
	if (!t)
		return;
	free_slab_tree(t->l);
	free_slab_tree(t->r);
	free(t);
}

void arena_destroy(struct arena *a)
{
	for (int b = 0; b < ARENA_NBINS; b++) {
		struct arena_fext *e = a->bins[b], *next;

		for (; e; e = next) {
			next = e->bnext;
			free(e);
		}
	}
	while (a->spare)
		free(spare_pop(a));
	free_slab_tree(a->slab_root);
}

uint64_t arena_alloc_size(uint64_t size)
{
	if (size == 0)
		return 0;
	if (size <= ARENA_SMALL_MAX)
		return cls_size[cls_of(size)];
	return round_up(size, ARENA_PAGE_SIZE);
}

int arena_alloc(struct arena *a, uint64_t size, uint64_t *ret_off)
{
	uint64_t off = 0; /* size 0 takes nothing */
	int ret = 0;

	if (size > ARENA_SMALL_MAX)
		ret = pages_alloc(a, round_up(size, ARENA_PAGE_SIZE), &off);
	else if (size)
		ret = slab_alloc(a, cls_of(size), &off);
	if (ret)
		return ret;
	a->used += arena_alloc_size(size);
	*ret_off = off;
	return 0;
}

void arena_free(struct arena *a, uint64_t off, uint64_t size)
{
	if (size > ARENA_SMALL_MAX)
		pages_free(a, off, round_up(size, ARENA_PAGE_SIZE));
	else if (size)
		slab_free(a, off);
	a->used -= arena_alloc_size(size);
}

uint64_t arena_largest_free(const struct arena *a)
{
	const struct arena_fext *e;
	uint64_t best = 0;

	if (!a->binmask)
		return 0;
	for (e = a->bins[log2floor(a->binmask)]; e; e = e->bnext)
		best = KV_MAX(best, e->len);
	return best;
}
