/* SPDX-License-Identifier: MIT */
/*
 * kidx: ordered index, see kidx.h.
 *
 * Layout: a sorted array of leaves, each a sorted array of up to KIDX_LEAF
 * element pointers.  A lookup is a binary search over the leaves' first keys
 * and one inside a leaf; an insert or erase moves at most one leaf's
 * pointers.  A full leaf splits in half, except at either end of the
 * index, where a new leaf is started, so keys that arrive in ascending or
 * descending order pack leaves full.  A leaf that falls below a quarter
 * merges with a neighbour when the two fit in three quarters; an empty one
 * goes.  Splitting inserts into the leaf array (a memmove of nleaf
 * pointers), but only once per KIDX_LEAF / 2 inserts at worst.
 *
 * Memory: 8 bytes per element in full leaves, plus 8 per leaf in the array;
 * measured in the store (test_store), 100,000 keys cost 8.3 bytes each in
 * order and 10.8 in scrambled order.  No pointer in the elements, so the
 * caller's structures keep their size.
 */
#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "kidx.h"
#include "kvfs/util.h"

#define KIDX_LEAF 128

struct kidx_leaf {
	uint32_t n;
	const void *e[KIDX_LEAF];
};

/* Is an element's key still before the target?  Must hold for a prefix of
 * the index (true ... true false ... false). */
typedef bool (*before_fn)(const char *k, size_t klen, const char *t, size_t tlen);

static bool before_lt(const char *k, size_t klen, const char *t, size_t tlen)
{
	return kv_key_cmp(k, klen, t, tlen) < 0;
}

static bool before_le(const char *k, size_t klen, const char *t, size_t tlen)
{
	return kv_key_cmp(k, klen, t, tlen) <= 0;
}

/* Keys starting with @t follow @t directly in key order. */
static bool before_past(const char *k, size_t klen, const char *t, size_t tlen)
{
	return (klen >= tlen && (!tlen || !memcmp(k, t, tlen))) || kv_key_cmp(k, klen, t, tlen) < 0;
}

static bool elem_before(const struct kidx *x, const void *e, before_fn before, const char *t,
                        size_t tlen)
{
	size_t klen;
	const char *k = x->key(e, &klen);

	return before(k, klen, t, tlen);
}

static void seek(const struct kidx *x, before_fn before, const char *t, size_t tlen,
                 struct kidx_pos *p)
{
	const struct kidx_leaf *l;
	size_t lo = 0, hi = x->nleaf;
	uint32_t ilo, ihi;

	/* First leaf whose first element is not before: the answer is in the
	 * leaf ahead of it, or is its first element. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (elem_before(x, x->leaf[mid]->e[0], before, t, tlen))
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0) {
		*p = (struct kidx_pos){0, 0};
		return;
	}
	l = x->leaf[lo - 1];
	ilo = 1;
	ihi = l->n;
	while (ilo < ihi) {
		uint32_t mid = ilo + (ihi - ilo) / 2;

		if (elem_before(x, l->e[mid], before, t, tlen))
			ilo = mid + 1;
		else
			ihi = mid;
	}
	*p = ilo == l->n ? (struct kidx_pos){lo, 0} : (struct kidx_pos){lo - 1, ilo};
}

void kidx_seek_ge(const struct kidx *x, const char *key, size_t len, struct kidx_pos *p)
{
	seek(x, before_lt, key, len, p);
}

void kidx_seek_gt(const struct kidx *x, const char *key, size_t len, struct kidx_pos *p)
{
	seek(x, before_le, key, len, p);
}

void kidx_seek_past(const struct kidx *x, const char *prefix, size_t len, struct kidx_pos *p)
{
	seek(x, before_past, prefix, len, p);
}

const void *kidx_at(const struct kidx *x, const struct kidx_pos *p)
{
	return p->leaf < x->nleaf ? x->leaf[p->leaf]->e[p->i] : NULL;
}

void kidx_next(const struct kidx *x, struct kidx_pos *p)
{
	assert(p->leaf < x->nleaf);
	if (++p->i == x->leaf[p->leaf]->n) {
		p->leaf++;
		p->i = 0;
	}
}

void kidx_init(struct kidx *x, kidx_key_fn key)
{
	memset(x, 0, sizeof(*x));
	x->key = key;
}

static void leaf_free(struct kidx *x, struct kidx_leaf *l)
{
	x->bytes -= malloc_usable_size(l);
	free(l);
}

void kidx_destroy(struct kidx *x)
{
	size_t i;

	for (i = 0; i < x->nleaf; i++)
		leaf_free(x, x->leaf[i]);
	if (x->spare)
		leaf_free(x, x->spare);
	if (x->leaf)
		x->bytes -= malloc_usable_size(x->leaf);
	free(x->leaf);
	memset(x, 0, sizeof(*x));
}

int kidx_reserve(struct kidx *x)
{
	if (!x->spare) {
		x->spare = malloc(sizeof(*x->spare));
		if (!x->spare)
			return -ENOMEM;
		x->bytes += malloc_usable_size(x->spare);
	}
	if (x->nleaf + 1 > x->cap) {
		size_t cap = x->cap ? x->cap * 2 : 16;
		struct kidx_leaf **a = malloc(cap * sizeof(*a));

		if (!a)
			return -ENOMEM;
		if (x->nleaf)
			memcpy(a, x->leaf, x->nleaf * sizeof(*a));
		if (x->leaf)
			x->bytes -= malloc_usable_size(x->leaf);
		free(x->leaf);
		x->bytes += malloc_usable_size(a);
		x->leaf = a;
		x->cap = cap;
	}
	return 0;
}

/* Put leaf @l at index @at of the leaf array (capacity reserved). */
static void leaf_link(struct kidx *x, size_t at, struct kidx_leaf *l)
{
	memmove(&x->leaf[at + 1], &x->leaf[at], (x->nleaf - at) * sizeof(*x->leaf));
	x->leaf[at] = l;
	x->nleaf++;
}

static void leaf_unlink(struct kidx *x, size_t at)
{
	struct kidx_leaf *l = x->leaf[at];

	memmove(&x->leaf[at], &x->leaf[at + 1], (x->nleaf - at - 1) * sizeof(*x->leaf));
	x->nleaf--;
	if (!x->spare)
		x->spare = l;
	else
		leaf_free(x, l);
}

static void leaf_put(struct kidx_leaf *l, uint32_t i, const void *e)
{
	memmove(&l->e[i + 1], &l->e[i], (l->n - i) * sizeof(l->e[0]));
	l->e[i] = e;
	l->n++;
}

void kidx_insert(struct kidx *x, const void *e)
{
	struct kidx_leaf *l, *nl;
	struct kidx_pos p;
	size_t klen;
	const char *k = x->key(e, &klen);
	uint32_t half = KIDX_LEAF / 2;

	assert(x->spare && x->nleaf < x->cap);
	if (!x->nleaf) {
		nl = x->spare;
		x->spare = NULL;
		nl->n = 0;
		leaf_put(nl, 0, e);
		leaf_link(x, 0, nl);
		return;
	}
	kidx_seek_ge(x, k, klen, &p);
	/* Between two leaves (or past the end): the end of the earlier one. */
	if (p.i == 0 && p.leaf > 0 && (p.leaf == x->nleaf || x->leaf[p.leaf - 1]->n < KIDX_LEAF)) {
		p.leaf--;
		p.i = x->leaf[p.leaf]->n;
	}
	l = x->leaf[p.leaf];
	if (l->n < KIDX_LEAF) {
		leaf_put(l, p.i, e);
		return;
	}

	nl = x->spare;
	x->spare = NULL;
	if (p.leaf == x->nleaf - 1 && p.i == KIDX_LEAF) { /* appending in order */
		nl->n = 0;
		leaf_put(nl, 0, e);
		leaf_link(x, p.leaf + 1, nl);
		return;
	}
	if (p.leaf == 0 && p.i == 0) { /* prepending in descending order */
		nl->n = 0;
		leaf_put(nl, 0, e);
		leaf_link(x, 0, nl);
		return;
	}
	nl->n = KIDX_LEAF - half;
	memcpy(nl->e, &l->e[half], nl->n * sizeof(nl->e[0]));
	l->n = half;
	leaf_link(x, p.leaf + 1, nl);
	if (p.i <= half)
		leaf_put(l, p.i, e);
	else
		leaf_put(nl, p.i - half, e);
}

/* Position of @e, which is in @x. */
static void find(const struct kidx *x, const void *e, struct kidx_pos *p)
{
	size_t klen;
	const char *k = x->key(e, &klen);

	kidx_seek_ge(x, k, klen, p);
	assert(kidx_at(x, p) == e);
}

void kidx_erase(struct kidx *x, const void *e)
{
	struct kidx_pos p;
	struct kidx_leaf *l, *o;

	find(x, e, &p);
	l = x->leaf[p.leaf];
	memmove(&l->e[p.i], &l->e[p.i + 1], (l->n - p.i - 1) * sizeof(l->e[0]));
	l->n--;
	if (!l->n) {
		leaf_unlink(x, p.leaf);
		return;
	}
	if (l->n >= KIDX_LEAF / 4)
		return;
	if (p.leaf + 1 < x->nleaf && l->n + x->leaf[p.leaf + 1]->n <= KIDX_LEAF * 3 / 4) {
		o = x->leaf[p.leaf + 1];
		memcpy(&l->e[l->n], o->e, o->n * sizeof(o->e[0]));
		l->n += o->n;
		leaf_unlink(x, p.leaf + 1);
	} else if (p.leaf > 0 && l->n + x->leaf[p.leaf - 1]->n <= KIDX_LEAF * 3 / 4) {
		o = x->leaf[p.leaf - 1];
		memcpy(&o->e[o->n], l->e, l->n * sizeof(l->e[0]));
		o->n += l->n;
		leaf_unlink(x, p.leaf);
	}
}

void kidx_replace(struct kidx *x, const void *old, const void *e)
{
	struct kidx_pos p;

	find(x, old, &p);
	x->leaf[p.leaf]->e[p.i] = e;
}
