/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfs/util.h"
#include "store.h"

#define ARENA_LEN (64u << 20)
#define MIB       (1u << 20)

static char *arena;
static struct store *st;

static void make_store(size_t len, enum store_evict ev, uint64_t max_value)
{
	struct store_opts o = {.evict = ev, .max_value = max_value};

	arena = aligned_alloc(STORE_PAGE_SIZE, len);
	cr_assert_not_null(arena);
	cr_assert_eq(store_create(arena, len, &o, &st), 0);
}

static void teardown(void)
{
	store_destroy(st);
	st = NULL;
	free(arena);
	arena = NULL;
}

static void setup_lru(void)
{
	make_store(ARENA_LEN, STORE_EVICT_LRU, 0);
}

static void setup_none(void)
{
	make_store(ARENA_LEN, STORE_EVICT_NONE, 0);
}

/* Deterministic fill pattern from a seed (key id + version). */
static uint64_t pat_word(uint64_t seed, uint64_t i)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + i * 0xD6E8FEB86659FD93ULL;

	x ^= x >> 32;
	return x * 0xD6E8FEB86659FD93ULL;
}

static void fill(void *p, uint64_t size, uint64_t seed)
{
	uint64_t i, w;

	for (i = 0; i + 8 <= size; i += 8) {
		w = pat_word(seed, i);
		memcpy((char *)p + i, &w, 8);
	}
	w = pat_word(seed, i);
	memcpy((char *)p + i, &w, size - i);
}

static bool check(const void *p, uint64_t size, uint64_t seed)
{
	uint64_t i, w;

	for (i = 0; i + 8 <= size; i += 8) {
		w = pat_word(seed, i);
		if (memcmp((const char *)p + i, &w, 8))
			return false;
	}
	w = pat_word(seed, i);
	return !memcmp((const char *)p + i, &w, size - i);
}

static uint64_t seed_of(const char *key, uint64_t version)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *key; key++)
		h = (h ^ (unsigned char)*key) * 1099511628211ULL;
	return h ^ (version << 1);
}

/* xorshift64: a reproducible sequence for the randomized tests. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* put with the bytes written into the reserved range; returns errno. */
static int put_v(const char *key, uint64_t size, const struct store_put_cond *cond,
                 uint64_t *ret_version)
{
	struct store_resv *r;
	uint64_t v;
	int err;

	err = store_put_begin(st, key, strlen(key), size, &r);
	if (err)
		return err;
	/* Land the bytes before commit, as an RDMA-READ would. */
	fill(arena + store_resv_offset(r), size, seed_of(key, 0));
	err = store_put_commit(st, r, cond, 0644, 42, &v);
	if (err) {
		store_put_abort(st, r);
		return err;
	}
	if (ret_version)
		*ret_version = v;
	return 0;
}

static int put(const char *key, uint64_t size)
{
	return put_v(key, size, NULL, NULL);
}

static struct store_stats stats(void)
{
	struct store_stats s;

	store_get_stats(st, &s);
	return s;
}

static bool exists(const char *key)
{
	const struct store_item *it;

	return store_lookup(st, key, strlen(key), &it) == 0;
}

TestSuite(store, .fini = teardown);

Test(store, create_args)
{
	char *a = aligned_alloc(STORE_PAGE_SIZE, 8 * STORE_PAGE_SIZE);
	struct store *s = (struct store *)0x1;
	struct store_opts bad = {.evict = 7};

	cr_assert_eq(store_create(NULL, 4096, NULL, &s), -EINVAL);
	cr_assert_eq(store_create(a + 1, STORE_PAGE_SIZE, NULL, &s), -EINVAL);
	cr_assert_eq(store_create(a, 8 * STORE_PAGE_SIZE, &bad, &s), -EINVAL);
	cr_assert_eq(s, (struct store *)0x1, "ret untouched on failure");
	/* Unaligned base: the store trims to page boundaries. */
	cr_assert_eq(store_create(a + 100, 8 * STORE_PAGE_SIZE - 100, NULL, &s), 0);
	{
		struct store_stats x;

		store_get_stats(s, &x);
		cr_assert_eq(x.arena_usable, 7 * STORE_PAGE_SIZE);
		cr_assert_eq(x.arena_free, 7 * STORE_PAGE_SIZE);
	}
	cr_assert_eq(store_arena_base(s), a + 100);
	store_destroy(s);
	store_destroy(NULL);
	free(a);
}

Test(store, roundtrip, .init = setup_lru)
{
	static const uint64_t sizes[] = {0,    1,    7,     63,    64,      65,
	                                 1000, 4096, 16384, 16385, 1 << 20, 3333333};
	struct store_item *it;
	char key[32];
	size_t i, klen;
	uint64_t v, prev = 0;

	for (i = 0; i < KV_ARRAY_SIZE(sizes); i++) {
		struct store_resv *r;

		snprintf(key, sizeof(key), "k%zu", i);
		cr_assert_eq(store_put_begin(st, key, strlen(key), sizes[i], &r), 0);
		cr_assert_eq(store_resv_size(r), sizes[i]);
		cr_assert(!exists(key), "reservation invisible before commit");
		fill(arena + store_resv_offset(r), sizes[i], i);
		cr_assert_eq(store_put_commit(st, r, NULL, 0600 + i, 1000 + i, &v), 0);
		cr_assert_gt(v, prev);
		prev = v;
	}
	for (i = 0; i < KV_ARRAY_SIZE(sizes); i++) {
		uint64_t off;

		snprintf(key, sizeof(key), "k%zu", i);
		cr_assert_eq(store_get(st, key, strlen(key), &it), 0);
		off = store_item_offset(it);
		cr_assert_eq(store_item_size(it), sizes[i]);
		cr_assert_eq(store_item_mode(it), 0600 + i);
		cr_assert_eq(store_item_mtime(it), 1000 + i);
		cr_assert(check(arena + off, sizes[i], i), "bytes of %s", key);
		if (sizes[i] > STORE_SMALL_MAX)
			cr_assert_eq((uintptr_t)(arena + off) % STORE_PAGE_SIZE, 0);
		else if (sizes[i])
			cr_assert_eq((uintptr_t)(arena + off) % 64, 0);
		cr_assert_eq(memcmp(store_item_key(it, &klen), key, strlen(key)), 0);
		cr_assert_eq(klen, strlen(key));
		store_item_unpin(st, it);
	}
	cr_assert_eq(store_get(st, "nope", 4, &it), -ENOENT);
	cr_assert_eq(stats().keys, KV_ARRAY_SIZE(sizes));
	cr_assert_eq(stats().pinned_items, 0);
}

Test(store, key_rules, .init = setup_lru)
{
	char key[KV_KEY_MAX + 1];
	struct store_resv *r = (struct store_resv *)0x1;
	struct store_item *it;

	memset(key, 'a', sizeof(key));
	cr_assert_eq(store_put_begin(st, key, KV_KEY_MAX, 10, &r), 0);
	cr_assert_eq(store_put_commit(st, r, NULL, 0, 0, NULL), 0);
	cr_assert_eq(store_get(st, key, KV_KEY_MAX, &it), 0);
	store_item_unpin(st, it);
	r = (struct store_resv *)0x1;
	cr_assert_eq(store_put_begin(st, key, KV_KEY_MAX + 1, 10, &r), -ENAMETOOLONG);
	cr_assert_eq(store_put_begin(st, key, 0, 10, &r), -EINVAL);
	cr_assert_eq(store_put_begin(st, "a\0b", 3, 10, &r), -EINVAL);
	cr_assert_eq(r, (struct store_resv *)0x1, "ret untouched");
	cr_assert_eq(store_get(st, key, KV_KEY_MAX + 1, &it), -ENAMETOOLONG);
	cr_assert_eq(store_delete(st, "", 0, 0, NULL), -EINVAL);
	cr_assert_eq(store_rename(st, key, KV_KEY_MAX, "x\0", 2, false, NULL), -EINVAL);
	cr_assert_eq(stats().keys, 1);
	cr_assert_eq(stats().resv_count, 0);
}

Test(store, too_big)
{
	struct store_resv *r;

	make_store(ARENA_LEN, STORE_EVICT_LRU, 1 * MIB);
	cr_assert_eq(store_put_begin(st, "a", 1, MIB, &r), 0);
	store_put_abort(st, r);
	cr_assert_eq(store_put_begin(st, "a", 1, MIB + 1, &r), -EFBIG);
	store_destroy(st);
	free(arena);
	make_store(ARENA_LEN, STORE_EVICT_LRU, 0);
	cr_assert_eq(store_put_begin(st, "a", 1, ARENA_LEN + 1ULL, &r), -EFBIG);
	/* The whole arena is one value. */
	cr_assert_eq(put("all", ARENA_LEN), 0);
	cr_assert_eq(stats().arena_free, 0);
	cr_assert_eq(store_delete(st, "all", 3, 0, NULL), 0);
	cr_assert_eq(stats().arena_free, ARENA_LEN);
}

Test(store, overwrite_while_pinned, .init = setup_none)
{
	struct store_item *old, *nw;
	uint64_t v1, v2, off_old;

	cr_assert_eq(put_v("k", 100000, NULL, &v1), 0);
	cr_assert_eq(store_get(st, "k", 1, &old), 0);
	off_old = store_item_offset(old);
	cr_assert_eq(stats().pinned_items, 1);
	cr_assert_eq(stats().pinned_bytes, 100000);

	cr_assert_eq(put_v("k", 5000, NULL, &v2), 0);
	cr_assert_gt(v2, v1);
	cr_assert_eq(store_get(st, "k", 1, &nw), 0);
	cr_assert_neq(nw, old);
	cr_assert_eq(store_item_version(nw), v2);
	cr_assert_eq(store_item_size(nw), 5000);
	cr_assert_eq(store_item_version(old), v1, "old item still readable");
	cr_assert(check(arena + off_old, 100000, seed_of("k", 0)), "old bytes intact");
	cr_assert_eq(stats().keys, 1);
	cr_assert_eq(stats().pinned_items, 2);

	/* Fill the arena so that the old range would be reused if freed. */
	for (int i = 0;; i++) {
		char key[16];
		struct store_resv *r;

		snprintf(key, sizeof(key), "f%d", i);
		if (store_put_begin(st, key, strlen(key), 1 << 16, &r))
			break;
		cr_assert(store_resv_offset(r) + (1 << 16) <= off_old ||
		          store_resv_offset(r) >= off_old + 100000);
		memset(arena + store_resv_offset(r), 0xee, 1 << 16);
		cr_assert_eq(store_put_commit(st, r, NULL, 0, 0, NULL), 0);
	}
	cr_assert(check(arena + off_old, 100000, seed_of("k", 0)), "old bytes intact");
	store_item_unpin(st, old);
	store_item_unpin(st, nw);
	cr_assert_eq(stats().pinned_items, 0);
	cr_assert_eq(stats().pinned_bytes, 0);
}

Test(store, delete_while_pinned, .init = setup_none)
{
	struct store_item *it;
	struct store_stats s0;
	uint64_t v;

	s0 = stats();
	cr_assert_eq(put_v("k", 200000, NULL, &v), 0);
	cr_assert_eq(store_get(st, "k", 1, &it), 0);
	cr_assert_eq(store_delete(st, "k", 1, v + 1, NULL), -ESTALE);
	cr_assert_eq(store_delete(st, "k", 1, v, NULL), 0);
	cr_assert_eq(store_delete(st, "k", 1, 0, NULL), -ENOENT);
	cr_assert(!exists("k"));
	cr_assert_eq(stats().keys, 0);
	cr_assert_eq(stats().arena_free, s0.arena_free - 200704, "range held while pinned");
	cr_assert(check(arena + store_item_offset(it), 200000, seed_of("k", 0)));
	/* Recreate: a fresh version, never the deleted one. */
	cr_assert_eq(put("k", 10), 0);
	{
		const struct store_item *n;

		cr_assert_eq(store_lookup(st, "k", 1, &n), 0);
		cr_assert_gt(store_item_version(n), v);
	}
	store_item_unpin(st, it);
	cr_assert_eq(stats().arena_free, s0.arena_free - 64);
	cr_assert_eq(stats().pinned_items, 0);
}

Test(store, lru_eviction, .init = setup_lru)
{
	struct store_item *it;
	char key[16];
	int i;

	/* 64 MiB arena, 1 MiB values: exactly 64 fit. */
	for (i = 0; i < 64; i++) {
		snprintf(key, sizeof(key), "k%02d", i);
		cr_assert_eq(put(key, MIB), 0);
	}
	cr_assert_eq(stats().arena_free, 0);
	cr_assert_eq(stats().evictions, 0);
	/* Touch k00 (the oldest). */
	cr_assert_eq(store_get(st, "k00", 3, &it), 0);
	store_item_unpin(st, it);
	/* A lookup (STAT) does not touch. */
	cr_assert(exists("k01"));

	cr_assert_eq(put("new1", MIB), 0);
	cr_assert(!exists("k01"), "oldest untouched goes first");
	cr_assert(exists("k00"), "touched survives");
	cr_assert_eq(stats().evictions, 1);
	cr_assert_eq(stats().evicted_bytes, MIB);

	cr_assert_eq(put("new2", 3 * MIB), 0); /* k02..k04 are contiguous */
	cr_assert(!exists("k02") && !exists("k03") && !exists("k04"));
	cr_assert(exists("k05") && exists("k00"));
	cr_assert_eq(stats().evictions, 4);
	cr_assert_eq(stats().evicted_bytes, 4 * MIB);

	/* A pinned item is never evicted. */
	cr_assert_eq(store_get(st, "k05", 3, &it), 0);
	cr_assert_eq(put("new3", MIB), 0);
	cr_assert(exists("k05"));
	cr_assert(!exists("k06"));
	store_item_unpin(st, it);
	cr_assert_eq(stats().keys, 64 - 5 + 3);
}

Test(store, policy_none_enospc, .init = setup_none)
{
	struct store_resv *r = (struct store_resv *)0x1;
	struct store_stats a, b;
	char key[16];
	int i;

	for (i = 0; i < 64; i++) {
		snprintf(key, sizeof(key), "k%02d", i);
		cr_assert_eq(put(key, MIB), 0);
	}
	a = stats();
	cr_assert_eq(store_put_begin(st, "x", 1, 1, &r), -ENOSPC);
	cr_assert_eq(store_put_begin(st, "x", 1, MIB, &r), -ENOSPC);
	cr_assert_eq(r, (struct store_resv *)0x1);
	b = stats();
	cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0, "nothing changed");
	cr_assert_eq(b.keys, 64);
	cr_assert_eq(b.evictions, 0);
	/* Zero-length values need no space. */
	cr_assert_eq(put("empty", 0), 0);
}

Test(store, all_pinned_enospc, .init = setup_lru)
{
	struct store_item *pins[64];
	struct store_stats a, b;
	struct store_resv *r;
	char key[16];
	int i;

	for (i = 0; i < 64; i++) {
		snprintf(key, sizeof(key), "k%02d", i);
		cr_assert_eq(put(key, MIB), 0);
		cr_assert_eq(store_get(st, key, strlen(key), &pins[i]), 0);
	}
	a = stats();
	cr_assert_eq(a.pinned_items, 64);
	cr_assert_eq(a.pinned_bytes, 64ULL * MIB);
	cr_assert_eq(store_put_begin(st, "x", 1, MIB, &r), -ENOSPC);
	cr_assert_eq(store_put_begin(st, "x", 1, 100, &r), -ENOSPC);
	b = stats();
	cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0, "nothing changed");

	/* Not enough evictable bytes: still nothing evicted. */
	store_item_unpin(st, pins[0]);
	a = stats();
	cr_assert_eq(store_put_begin(st, "x", 1, 2 * MIB, &r), -ENOSPC);
	b = stats();
	cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0, "nothing changed");
	cr_assert_eq(store_put_begin(st, "x", 1, MIB, &r), 0);
	cr_assert_eq(stats().evictions, 1);
	store_put_abort(st, r);
	for (i = 1; i < 64; i++)
		store_item_unpin(st, pins[i]);
}

Test(store, cas, .init = setup_lru)
{
	struct store_put_cond c = {0};
	const struct store_item *it;
	uint64_t v1, v2, v3 = 0;

	c.if_absent = true;
	cr_assert_eq(put_v("k", 10, &c, &v1), 0);
	cr_assert_eq(put_v("k", 10, &c, &v3), -EEXIST);
	cr_assert_eq(v3, 0, "ret_version untouched");
	c.if_absent = false;
	c.if_version = v1 + 100;
	cr_assert_eq(put_v("k", 20, &c, NULL), -ESTALE);
	c.if_version = v1;
	cr_assert_eq(put_v("k", 20, &c, &v2), 0);
	cr_assert_gt(v2, v1);
	cr_assert_eq(put_v("k", 30, &c, NULL), -ESTALE, "old version no longer matches");
	cr_assert_eq(put_v("other", 30, &c, NULL), -ENOENT);
	cr_assert_eq(store_lookup(st, "k", 1, &it), 0);
	cr_assert_eq(store_item_size(it), 20);
	cr_assert_eq(store_item_version(it), v2);
	cr_assert_eq(stats().resv_count, 0);

	/* A failed commit keeps the reservation: it can be retried. */
	{
		struct store_resv *r;
		struct store_put_cond bad = {.if_version = 1};

		cr_assert_eq(store_put_begin(st, "k", 1, 40, &r), 0);
		cr_assert_eq(store_put_commit(st, r, &bad, 0, 0, NULL), -ESTALE);
		cr_assert_eq(stats().resv_count, 1);
		cr_assert_eq(store_put_commit(st, r, NULL, 0, 0, &v3), 0);
		cr_assert_gt(v3, v2);
	}
	/* Race between two writers: condition checked at commit. */
	{
		struct store_resv *a, *b;
		struct store_put_cond ca = {.if_version = v3};

		cr_assert_eq(store_put_begin(st, "k", 1, 1, &a), 0);
		cr_assert_eq(store_put_begin(st, "k", 1, 2, &b), 0);
		cr_assert_eq(store_put_commit(st, b, &ca, 0, 0, NULL), 0);
		cr_assert_eq(store_put_commit(st, a, &ca, 0, 0, NULL), -ESTALE);
		store_put_abort(st, a);
	}
}

Test(store, abort_frees, .init = setup_none)
{
	struct store_resv *r, *r2;
	struct store_stats s0 = stats(), s1;

	cr_assert_eq(store_put_begin(st, "a", 1, ARENA_LEN, &r), 0);
	s1 = stats();
	cr_assert_eq(s1.arena_free, 0);
	cr_assert_eq(s1.resv_count, 1);
	cr_assert_eq(s1.resv_bytes, ARENA_LEN);
	cr_assert_eq(store_put_begin(st, "b", 1, 1, &r2), -ENOSPC);
	store_put_abort(st, r);
	store_put_abort(st, NULL);
	s1 = stats();
	cr_assert_eq(s1.arena_free, s0.arena_free);
	cr_assert_eq(s1.largest_free, ARENA_LEN);
	cr_assert_eq(s1.resv_count, 0);
	cr_assert_eq(s1.keys, 0);
	cr_assert_eq(store_put_begin(st, "b", 1, 100, &r2), 0);
	store_put_abort(st, r2);
	cr_assert_eq(stats().arena_free, ARENA_LEN);
	cr_assert_eq(stats().arena_free_pages, ARENA_LEN, "empty slab returned");
}

Test(store, rename, .init = setup_lru)
{
	const struct store_item *it;
	struct store_item *pin;
	uint64_t va, vb, off;

	cr_assert_eq(put_v("a", 5000, NULL, &va), 0);
	cr_assert_eq(put_v("b", 7000, NULL, &vb), 0);
	cr_assert_eq(store_rename(st, "zz", 2, "c", 1, false, NULL), -ENOENT);
	cr_assert_eq(store_rename(st, "a", 1, "b", 1, true, NULL), -EEXIST);
	cr_assert(exists("a") && exists("b"));
	cr_assert_eq(store_rename(st, "a", 1, "a", 1, false, NULL), 0, "onto itself");
	cr_assert_eq(store_lookup(st, "a", 1, &it), 0);
	cr_assert_eq(store_item_version(it), va);
	off = store_item_offset(it);

	cr_assert_eq(store_rename(st, "a", 1, "b", 1, false, NULL), 0);
	cr_assert(!exists("a"));
	cr_assert_eq(store_lookup(st, "b", 1, &it), 0);
	cr_assert_eq(store_item_size(it), 5000);
	cr_assert_eq(store_item_offset(it), off);
	cr_assert_gt(store_item_version(it), vb);
	cr_assert(check(arena + off, 5000, seed_of("a", 0)));
	cr_assert_eq(stats().keys, 1);
	cr_assert_eq(stats().value_bytes, 5000);
	cr_assert_eq(stats().arena_free, ARENA_LEN - store_alloc_size(st, 5000));

	/* Rename of a pinned item, twice, then delete: the range lives until
	 * the last unpin of the original pointer. */
	cr_assert_eq(store_get(st, "b", 1, &pin), 0);
	cr_assert_eq(store_rename(st, "b", 1, "a-much-longer-name", 18, true, NULL), 0);
	cr_assert_eq(store_rename(st, "a-much-longer-name", 18, "d", 1, true, NULL), 0);
	cr_assert_eq(stats().pinned_items, 1);
	cr_assert_eq(store_delete(st, "d", 1, 0, NULL), 0);
	cr_assert_eq(stats().keys, 0);
	cr_assert_eq(stats().arena_free, ARENA_LEN - store_alloc_size(st, 5000));
	cr_assert_eq(store_item_size(pin), 5000);
	store_item_unpin(st, pin);
	cr_assert_eq(stats().arena_free, ARENA_LEN);
	cr_assert_eq(stats().pinned_items, 0);
}

Test(store, setattr, .init = setup_lru)
{
	const struct store_item *it;
	uint64_t v;

	cr_assert_eq(put_v("k", 1, NULL, &v), 0);
	cr_assert_eq(store_setattr(st, "k", 1, STORE_SET_MODE, 0755, 0, 0, NULL), 0);
	cr_assert_eq(store_lookup(st, "k", 1, &it), 0);
	cr_assert_eq(store_item_mode(it), 0755);
	cr_assert_eq(store_item_mtime(it), 42);
	cr_assert_eq(store_setattr(st, "k", 1, STORE_SET_MTIME, 0, 99, 0, NULL), 0);
	cr_assert_eq(store_item_mode(it), 0755);
	cr_assert_eq(store_item_mtime(it), 99);
	cr_assert_eq(store_item_version(it), v, "setattr keeps the version");
	cr_assert_eq(store_setattr(st, "x", 1, STORE_SET_MODE, 0, 0, 0, NULL), -ENOENT);
}

/* ---- type, owner and extended attributes ------------------------------- */

static int put_attrs(const char *key, uint64_t size, const struct store_attrs *a)
{
	struct store_resv *r;
	int err;

	err = store_put_begin(st, key, strlen(key), size, &r);
	if (err)
		return err;
	fill(arena + store_resv_offset(r), size, seed_of(key, 0));
	err = store_put_commit_attrs(st, r, NULL, a, NULL);
	if (err)
		store_put_abort(st, r);
	return err;
}

static const struct store_item *look(const char *key)
{
	const struct store_item *it;

	cr_assert_eq(store_lookup(st, key, strlen(key), &it), 0, "%s", key);
	return it;
}

static int xget(const char *key, const char *name, char *buf, size_t cap)
{
	const void *v;
	size_t n;
	int err = store_xattr_get(st, key, strlen(key), name, strlen(name), &v, &n);

	if (err)
		return err;
	cr_assert_lt(n, cap);
	memcpy(buf, v, n);
	buf[n] = '\0';
	return (int)n;
}

static int xset(const char *key, const char *name, const char *val, unsigned flags)
{
	return store_xattr_set(st, key, strlen(key), name, strlen(name), val, val ? strlen(val) : 0,
	                       flags, NULL);
}

Test(store, owner_and_type_stored_kept_by_put_and_rename, .init = setup_lru)
{
	struct store_attrs a = {
	        .mode = 0600, .mtime_ns = 7, .has_owner = true, .uid = 1000, .gid = 100};
	uint32_t uid = 0, gid = 0;
	const struct store_item *it;

	cr_assert_eq(put("plain", 3), 0);
	cr_assert_not(store_item_owner(st, look("plain"), &uid, &gid), "no owner given: none");
	cr_assert_eq(store_item_type(look("plain")), STORE_TYPE_FILE);

	cr_assert_eq(put_attrs("f", 5, &a), 0);
	cr_assert(store_item_owner(st, look("f"), &uid, &gid));
	cr_assert_eq(uid, 1000);
	cr_assert_eq(gid, 100);
	cr_assert_eq(store_item_mode(look("f")), 0600);

	/* a PUT without an owner keeps the replaced key's */
	cr_assert_eq(put("f", 9), 0);
	cr_assert(store_item_owner(st, look("f"), &uid, &gid), "a rewrite keeps the owner");
	cr_assert_eq(uid, 1000);
	/* one with an owner sets it */
	a.uid = 7;
	a.gid = 8;
	cr_assert_eq(put_attrs("f", 1, &a), 0);
	cr_assert(store_item_owner(st, look("f"), &uid, &gid));
	cr_assert_eq(uid, 7);
	cr_assert_eq(gid, 8);

	/* chown, alone or half, does not bump the version */
	it = look("f");
	uint64_t v = store_item_version(it);
	cr_assert_eq(store_chown(st, "f", 1, STORE_SET_GID, 0, 55, 0), 0);
	cr_assert(store_item_owner(st, look("f"), &uid, &gid));
	cr_assert_eq(uid, 7);
	cr_assert_eq(gid, 55);
	cr_assert_eq(store_item_version(look("f")), v);
	cr_assert_eq(store_chown(st, "f", 1, STORE_SET_UID, 3, 0, v + 1), -ESTALE);
	cr_assert_eq(store_chown(st, "nope", 4, STORE_SET_UID, 3, 0, 0), -ENOENT);
	cr_assert_eq(store_chown(st, "plain", 5, STORE_SET_UID, 3, 0, 0), 0);
	cr_assert(store_item_owner(st, look("plain"), &uid, &gid));
	cr_assert_eq(uid, 3);
	cr_assert_eq(gid, 0, "half an owner on a key with none: the other is 0");

	/* a symbolic link: its type, kept by RENAME with the owner */
	a.type = STORE_TYPE_SYMLINK;
	cr_assert_eq(put_attrs("l", 6, &a), 0);
	cr_assert_eq(store_item_type(look("l")), STORE_TYPE_SYMLINK);
	cr_assert_eq(store_rename(st, "l", 1, "l2", 2, false, NULL), 0);
	cr_assert_eq(store_item_type(look("l2")), STORE_TYPE_SYMLINK);
	cr_assert(store_item_owner(st, look("l2"), &uid, &gid));
	cr_assert_eq(uid, 7);
	/* a file PUT over it is a file again */
	cr_assert_eq(put("l2", 2), 0);
	cr_assert_eq(store_item_type(look("l2")), STORE_TYPE_FILE);

	/* mode: permission bits only */
	a.type = STORE_TYPE_FILE;
	a.mode = 0100644;
	cr_assert_eq(put_attrs("m", 1, &a), 0);
	cr_assert_eq(store_item_mode(look("m")), 0644);
	cr_assert_eq(store_delete(st, "m", 1, 0, NULL), 0);
	cr_assert_eq(store_delete(st, "l2", 2, 0, NULL), 0);
	cr_assert_eq(store_delete(st, "f", 1, 0, NULL), 0);
	cr_assert_eq(store_delete(st, "plain", 5, 0, NULL), 0);
}

struct names_acc {
	char *buf;
	size_t n;
};

static int names_cb(void *arg, const char *name, size_t len)
{
	struct names_acc *a = arg;

	memcpy(a->buf + a->n, name, len);
	a->n += len;
	a->buf[a->n++] = ',';
	return 0;
}

Test(store, xattrs_set_get_list_remove, .init = setup_lru)
{
	char buf[256], names[64];
	bool found = true;

	cr_assert_eq(put("k", 3), 0);
	cr_assert_eq(xget("k", "user.a", buf, sizeof(buf)), -ENODATA);
	cr_assert_eq(xset("k", "user.a", "one", 0), 0);
	cr_assert_eq(xset("k", "user.b", "", 0), 0, "an empty value");
	cr_assert_eq(xget("k", "user.a", buf, sizeof(buf)), 3);
	cr_assert_str_eq(buf, "one");
	cr_assert_eq(xget("k", "user.b", buf, sizeof(buf)), 0);
	cr_assert_eq(xset("k", "user.a", "x", STORE_XATTR_CREATE), -EEXIST);
	cr_assert_eq(store_xattr_set(st, "k", 1, "user.c", 6, "x", 1, STORE_XATTR_REPLACE, &found),
	             0);
	cr_assert_not(found, "replace of a missing one: nothing changes");
	cr_assert_eq(xget("k", "user.c", buf, sizeof(buf)), -ENODATA);
	cr_assert_eq(xset("k", "user.a", "longer value", STORE_XATTR_REPLACE), 0);
	cr_assert_eq(xget("k", "user.a", buf, sizeof(buf)), 12);
	cr_assert_str_eq(buf, "longer value");

	struct names_acc acc = {.buf = names};

	cr_assert_eq(store_xattr_list(st, "k", 1, names_cb, &acc), 0);
	names[acc.n] = '\0';
	cr_assert_str_eq(names, "user.a,user.b,", "in the order first set");

	cr_assert_eq(store_xattr_set(st, "k", 1, "user.a", 6, NULL, 0, STORE_XATTR_REMOVE, &found),
	             0);
	cr_assert(found);
	cr_assert_eq(store_xattr_set(st, "k", 1, "user.a", 6, NULL, 0, STORE_XATTR_REMOVE, &found),
	             0);
	cr_assert_not(found);
	cr_assert_eq(xget("k", "user.a", buf, sizeof(buf)), -ENODATA);
	cr_assert_eq(xget("k", "user.b", buf, sizeof(buf)), 0);
	cr_assert_eq(xset("nope", "user.a", "1", 0), -ENOENT);
	cr_assert_eq(xset("k", "", "1", 0), -EINVAL);
	cr_assert_eq(store_xattr_set(st, "k", 1, "a\0b", 3, "1", 1, 0, NULL), -EINVAL);
}

Test(store, xattrs_bounded, .init = setup_lru)
{
	static char big[STORE_XATTR_TOTAL_MAX + 1];
	char name[STORE_XATTR_NAME_MAX + 2];
	uint64_t meta, meta0;

	memset(big, 'v', sizeof(big));
	memset(name, 'n', sizeof(name));
	cr_assert_eq(put("k", 1), 0); /* the index's own growth, before counting */
	cr_assert_eq(store_delete(st, "k", 1, 0, NULL), 0);
	meta0 = stats().meta_bytes;
	cr_assert_eq(put("k", 1), 0);
	meta = stats().meta_bytes;
	cr_assert_eq(store_xattr_set(st, "k", 1, name, STORE_XATTR_NAME_MAX + 1, "1", 1, 0, NULL),
	             -EINVAL, "a name of 256 bytes");
	cr_assert_eq(store_xattr_set(st, "k", 1, name, STORE_XATTR_NAME_MAX, "1", 1, 0, NULL), 0);
	cr_assert_eq(store_xattr_set(st, "k", 1, "a", 1, big, STORE_XATTR_TOTAL_MAX + 1, 0, NULL),
	             -E2BIG);
	/* names and values of a key together: 255 + 1 taken, so 65536 - 256 - 1
	 * is what is left for "a" */
	cr_assert_eq(store_xattr_set(st, "k", 1, "a", 1, big,
	                             STORE_XATTR_TOTAL_MAX - STORE_XATTR_NAME_MAX - 1, 0, NULL),
	             -ENOSPC);
	cr_assert_eq(store_xattr_set(st, "k", 1, "a", 1, big,
	                             STORE_XATTR_TOTAL_MAX - STORE_XATTR_NAME_MAX - 2, 0, NULL),
	             0);
	cr_assert_gt(stats().meta_bytes, meta + STORE_XATTR_TOTAL_MAX - 1024,
	             "counted in the index's memory");
	/* replacing one counts its new size, not both */
	cr_assert_eq(store_xattr_set(st, "k", 1, "a", 1, big, 10, 0, NULL), 0);
	cr_assert_eq(store_delete(st, "k", 1, 0, NULL), 0);
	cr_assert_leq(stats().meta_bytes, meta0 + 1024, "all given back (but the side table)");
}

Test(store, xattrs_kept_by_put_and_rename_dropped_on_ask, .init = setup_lru)
{
	struct store_attrs a = {.mode = 0644, .mtime_ns = 1};
	char buf[64];
	struct store_item *pinned;

	cr_assert_eq(put("k", 3), 0);
	cr_assert_eq(xset("k", "user.a", "1", 0), 0);
	cr_assert_eq(put("k", 100), 0, "a rewrite");
	cr_assert_eq(xget("k", "user.a", buf, sizeof(buf)), 1, "kept by a PUT");
	cr_assert_eq(store_rename(st, "k", 1, "k2", 2, false, NULL), 0);
	cr_assert_eq(xget("k2", "user.a", buf, sizeof(buf)), 1, "kept by a RENAME");
	/* a rename of a pinned item moves them too */
	cr_assert_eq(store_get(st, "k2", 2, &pinned), 0);
	cr_assert_eq(store_rename(st, "k2", 2, "k3", 2, false, NULL), 0);
	cr_assert_eq(xget("k3", "user.a", buf, sizeof(buf)), 1);
	store_item_unpin(st, pinned);
	cr_assert_eq(xget("k3", "user.a", buf, sizeof(buf)), 1);
	/* a rename over a key with attributes: the moved key's win */
	cr_assert_eq(put("o", 1), 0);
	cr_assert_eq(xset("o", "user.o", "2", 0), 0);
	cr_assert_eq(store_rename(st, "k3", 2, "o", 1, false, NULL), 0);
	cr_assert_eq(xget("o", "user.o", buf, sizeof(buf)), -ENODATA);
	cr_assert_eq(xget("o", "user.a", buf, sizeof(buf)), 1);
	/* a PUT that asks starts without them, and keeps nothing on a new key */
	a.drop_xattrs = true;
	cr_assert_eq(put_attrs("o", 1, &a), 0);
	cr_assert_eq(xget("o", "user.a", buf, sizeof(buf)), -ENODATA);
	cr_assert_eq(xset("o", "user.b", "3", 0), 0);
	cr_assert_eq(store_delete(st, "o", 1, 0, NULL), 0);
	cr_assert_eq(put("o", 1), 0);
	cr_assert_eq(xget("o", "user.b", buf, sizeof(buf)), -ENODATA, "deleted and made anew");
	cr_assert_eq(store_delete(st, "o", 1, 0, NULL), 0);
}

/* Many keys with owners and attributes: the side table grows, shrinks, and
 * everything is given back (ASan counts). */
Test(store, xattrs_many_keys_side_table, .init = setup_lru)
{
	enum { N = 5000 };
	struct store_attrs a = {.mode = 0644, .mtime_ns = 1, .has_owner = true};
	char key[32], buf[32];
	uint64_t meta0;
	uint32_t uid;

	for (int i = 0; i < N; i++) { /* the index's own growth, before counting */
		snprintf(key, sizeof(key), "k%d", i);
		cr_assert_eq(put(key, 10), 0);
	}
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		cr_assert_eq(store_delete(st, key, strlen(key), 0, NULL), 0);
	}
	meta0 = stats().meta_bytes;

	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		a.uid = (uint32_t)i;
		cr_assert_eq(put_attrs(key, 10, &a), 0);
		if (i % 2)
			cr_assert_eq(xset(key, "user.i", key, 0), 0);
	}
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		cr_assert(store_item_owner(st, look(key), &uid, NULL));
		cr_assert_eq(uid, (uint32_t)i);
		cr_assert_eq(xget(key, "user.i", buf, sizeof(buf)),
		             i % 2 ? (int)strlen(key) : -ENODATA);
		cr_assert_eq(store_delete(st, key, strlen(key), 0, NULL), 0);
	}
	/* the side table's buckets stay; nothing else */
	cr_assert_leq(stats().meta_bytes, meta0 + 8 * 8192 + 64);
}

/* DELETE, RENAME and SETATTR hand back what the server answers with, so it
 * looks the key up once. */
Test(store, calls_hand_back_the_item, .init = setup_lru)
{
	const struct store_item *it = NULL, *got;
	uint64_t v, v2, dv = 0;

	cr_assert_eq(put_v("k", 10, NULL, &v), 0);
	cr_assert_eq(store_setattr(st, "k", 1, STORE_SET_MODE, 0700, 0, v + 1, &it), -ESTALE);
	cr_assert_null(it, "untouched on failure");
	cr_assert_eq(store_lookup(st, "k", 1, &got), 0);
	cr_assert_eq(store_item_mode(got), 0644, "nothing set on a version mismatch");
	cr_assert_eq(store_setattr(st, "k", 1, STORE_SET_MODE, 0700, 0, v, &it), 0);
	cr_assert_eq(it, got);
	cr_assert_eq(store_item_mode(it), 0700);
	cr_assert_eq(store_setattr(st, "k", 1, 0, 0, 0, 0, &it), 0, "nothing to set: a look-up");
	cr_assert_eq(store_item_version(it), v);

	it = NULL;
	cr_assert_eq(store_rename(st, "k", 1, "k", 1, false, &it), 0);
	cr_assert_eq(it, got, "onto itself: the same item");
	cr_assert_eq(store_rename(st, "k", 1, "m", 1, false, &it), 0);
	cr_assert_eq(store_lookup(st, "m", 1, &got), 0);
	cr_assert_eq(it, got);
	v2 = store_item_version(it);
	cr_assert_gt(v2, v);
	cr_assert_eq(store_item_mode(it), 0700);

	cr_assert_eq(store_delete(st, "m", 1, v, &dv), -ESTALE);
	cr_assert_eq(dv, 0, "untouched on failure");
	cr_assert_eq(store_delete(st, "m", 1, 0, &dv), 0);
	cr_assert_eq(dv, v2, "the version deleted");
	cr_assert(!exists("m"));
}

/* ---- list ------------------------------------------------------------------ */

struct collect {
	char names[2048][64];
	bool is_prefix[2048];
	bool has_marker[2048]; /* a common prefix that is also a key */
	int n;
};

static int collect_cb(void *arg, const char *name, size_t len, const struct store_item *it,
                      bool prefix)
{
	struct collect *c = arg;

	cr_assert_lt(len, 64);
	memcpy(c->names[c->n], name, len);
	c->names[c->n][len] = 0;
	c->is_prefix[c->n] = prefix;
	c->has_marker[c->n] = prefix && it;
	if (it)
		cr_assert_eq(store_item_size(it), 3);
	if (prefix && it) { /* the marker is the key equal to the prefix */
		size_t kl;
		const char *k = store_item_key(it, &kl);

		cr_assert(kl == len && !memcmp(k, name, len), "marker of %.*s is another key",
		          (int)len, name);
	}
	c->n++;
	return 0;
}

static int list(struct collect *c, const char *prefix, char delim, const char *after, size_t limit,
                bool *trunc)
{
	struct store_list_req req = {
	        .prefix = prefix,
	        .prefixlen = strlen(prefix),
	        .delimiter = delim,
	        .start_after = after,
	        .start_after_len = strlen(after),
	        .limit = limit,
	};

	c->n = 0;
	return store_list(st, &req, collect_cb, c, trunc);
}

Test(store, list_small, .init = setup_lru)
{
	static const char *keys[] = {"a/b/c", "a/b/d", "a/c", "a/d/e", "ab", "b", "a/"};
	static struct collect c;
	bool t;

	for (size_t i = 0; i < KV_ARRAY_SIZE(keys); i++)
		cr_assert_eq(put(keys[i], 3), 0);

	cr_assert_eq(list(&c, "", 0, "", 100, &t), 0);
	cr_assert_eq(c.n, 7);
	cr_assert(!t);
	cr_assert_str_eq(c.names[0], "a/");
	cr_assert_str_eq(c.names[1], "a/b/c");
	cr_assert_str_eq(c.names[6], "b");

	cr_assert_eq(list(&c, "", '/', "", 100, &t), 0);
	cr_assert_eq(c.n, 3);
	cr_assert_str_eq(c.names[0], "a/");
	cr_assert(c.is_prefix[0]);
	cr_assert(c.has_marker[0], "the key \"a/\" is the prefix's marker");
	cr_assert_str_eq(c.names[1], "ab");
	cr_assert(!c.is_prefix[1]);
	cr_assert_str_eq(c.names[2], "b");

	cr_assert_eq(list(&c, "a/", '/', "", 100, &t), 0);
	cr_assert_eq(c.n, 4);
	cr_assert_str_eq(c.names[0], "a/"); /* the key "a/" itself */
	cr_assert(!c.is_prefix[0]);
	cr_assert_str_eq(c.names[1], "a/b/");
	cr_assert(c.is_prefix[1]);
	cr_assert(!c.has_marker[1], "no key \"a/b/\": no marker");
	cr_assert_str_eq(c.names[2], "a/c");
	cr_assert_str_eq(c.names[3], "a/d/");

	/* Paging by start_after = last entry, common prefixes once. */
	cr_assert_eq(list(&c, "a/", '/', "", 2, &t), 0);
	cr_assert_eq(c.n, 2);
	cr_assert(t);
	cr_assert_str_eq(c.names[1], "a/b/");
	cr_assert_eq(list(&c, "a/", '/', "a/b/", 2, &t), 0);
	cr_assert_eq(c.n, 2);
	cr_assert(!t);
	cr_assert_str_eq(c.names[0], "a/c");
	cr_assert_str_eq(c.names[1], "a/d/");

	cr_assert_eq(list(&c, "a/b", 0, "a/b/c", 10, &t), 0);
	cr_assert_eq(c.n, 1);
	cr_assert_str_eq(c.names[0], "a/b/d");
	cr_assert_eq(list(&c, "zzz", 0, "", 10, &t), 0);
	cr_assert_eq(c.n, 0);
	cr_assert(!t);
	cr_assert_eq(list(&c, "", 0, "", 0, &t), 0);
	cr_assert_eq(c.n, 0);
	cr_assert(t);
}

static int stop_cb(void *arg, const char *name, size_t len, const struct store_item *it,
                   bool prefix)
{
	int *n = arg;

	return ++*n == 2 ? -EINTR : 0;
}

Test(store, list_cb_stops, .init = setup_lru)
{
	struct store_list_req req = {.limit = 10};
	int n = 0;

	cr_assert_eq(put("a", 3), 0);
	cr_assert_eq(put("b", 3), 0);
	cr_assert_eq(put("c", 3), 0);
	cr_assert_eq(store_list(st, &req, stop_cb, &n, NULL), -EINTR);
	cr_assert_eq(n, 2);
}

Test(store, list_100k_paged, .init = setup_lru)
{
	static struct collect c;
	enum { N = 100000, PAGE = 1000 };
	char key[32], last[64] = "";
	int i, total = 0, pages = 0;
	bool t = true;

	/* Insert in scrambled order. */
	for (i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "key/%08d", (int)((uint64_t)i * 7919 % N));
		cr_assert_eq(put(key, 3), 0);
	}
	cr_assert_eq(put("other", 3), 0);
	while (t) {
		cr_assert_eq(list(&c, "key/", 0, last, PAGE, &t), 0);
		for (i = 0; i < c.n; i++) {
			snprintf(key, sizeof(key), "key/%08d", total + i);
			cr_assert_str_eq(c.names[i], key, "every key once, in order");
		}
		total += c.n;
		pages++;
		if (c.n)
			strcpy(last, c.names[c.n - 1]);
	}
	cr_assert_eq(total, N);
	cr_assert_eq(pages, N / PAGE);

	/* Delimiter collapses all into one prefix. */
	cr_assert_eq(list(&c, "", '/', "", 10, &t), 0);
	cr_assert_eq(c.n, 2);
	cr_assert_str_eq(c.names[0], "key/");
	cr_assert_str_eq(c.names[1], "other");
}

/*
 * LIST against a brute-force model, under puts, deletes and renames.  Keys
 * are the 1,364 strings of 1 to 5 characters over "ab/c", so prefixes,
 * delimiters, markers ("a/") and neighbours ("a/" < "a/a" < "a0") are dense,
 * and enough keys come and go for the ordered index to split and merge.
 */
#define LK_ALPHA  "/abc"
#define LK_MAXLEN 5
#define LK_N      (4 + 16 + 64 + 256 + 1024)

static void lk_name(int id, char *out)
{
	int len = 1, span = 4;

	while (id >= span) {
		id -= span;
		span *= 4;
		len++;
	}
	for (int i = len - 1; i >= 0; i--, id /= 4)
		out[i] = LK_ALPHA[id % 4];
	out[len] = 0;
}

static int lk_cmp(const void *a, const void *b)
{
	const char *x = a, *y = b;

	return kv_key_cmp(x, strlen(x), y, strlen(y));
}

/* Expected entries of a listing, from the model's present keys. */
static int lk_expect(const bool *present, const char *prefix, char delim, const char *after,
                     size_t limit, char (*out)[8], bool *out_prefix, bool *out_marker, bool *trunc)
{
	static char keys[LK_N][8];
	int nk = 0, n = 0;
	size_t pl = strlen(prefix);

	for (int id = 0; id < LK_N; id++) {
		if (present[id])
			lk_name(id, keys[nk++]);
	}
	qsort(keys, (size_t)nk, sizeof(keys[0]), lk_cmp);
	*trunc = false;
	for (int i = 0; i < nk; i++) {
		char name[8];
		const char *d;
		bool isp = false;

		if (strncmp(keys[i], prefix, pl))
			continue;
		strcpy(name, keys[i]);
		d = delim ? strchr(keys[i] + pl, delim) : NULL;
		if (d) {
			name[d - keys[i] + 1] = 0;
			isp = true;
		}
		if (*after && lk_cmp(name, after) <= 0)
			continue;
		if (n && !strcmp(out[n - 1], name))
			continue; /* same common prefix */
		if ((size_t)n == limit) {
			*trunc = true;
			break;
		}
		strcpy(out[n], name);
		out_prefix[n] = isp;
		out_marker[n] = isp && !strcmp(name, keys[i]);
		n++;
	}
	return n;
}

static void lk_check(const bool *present, const char *prefix, char delim, const char *after,
                     size_t limit)
{
	static char want[LK_N][8];
	static bool want_prefix[LK_N], want_marker[LK_N];
	static struct collect c;
	bool t, want_t;
	int n = lk_expect(present, prefix, delim, after, limit, want, want_prefix, want_marker,
	                  &want_t);

	cr_assert_eq(list(&c, prefix, delim, after, limit, &t), 0);
	cr_assert_eq(c.n, n,
	             "list prefix \"%s\" delim %d after \"%s\" limit %zu: %d entries, "
	             "want %d",
	             prefix, delim, after, limit, c.n, n);
	cr_assert_eq(t, want_t, "truncated, prefix \"%s\" after \"%s\" limit %zu", prefix, after,
	             limit);
	for (int i = 0; i < n; i++) {
		cr_assert_str_eq(c.names[i], want[i], "entry %d of prefix \"%s\" after \"%s\"", i,
		                 prefix, after);
		cr_assert_eq(c.is_prefix[i], want_prefix[i], "entry %s", want[i]);
		cr_assert_eq(c.has_marker[i], want_marker[i], "marker of %s", want[i]);
	}
}

/* Page through with start_after = last entry, as kvfs's readdir does. */
static void lk_check_paged(const bool *present, const char *prefix, char delim, size_t page)
{
	static char want[LK_N][8], last[8];
	static bool want_prefix[LK_N], want_marker[LK_N];
	static struct collect c;
	bool t = true, want_t;
	int n = lk_expect(present, prefix, delim, "", LK_N, want, want_prefix, want_marker,
	                  &want_t),
	    got = 0;

	last[0] = 0;
	while (t) {
		cr_assert_eq(list(&c, prefix, delim, last, page, &t), 0);
		for (int i = 0; i < c.n; i++, got++) {
			cr_assert_lt(got, n, "more entries than keys");
			cr_assert_str_eq(c.names[i], want[got], "paged entry %d", got);
		}
		if (c.n)
			strcpy(last, c.names[c.n - 1]);
		cr_assert(c.n || !t, "an empty page says more follow");
	}
	cr_assert_eq(got, n, "paged listing of \"%s\": %d entries, want %d", prefix, got, n);
}

Test(store, list_matches_model, .init = setup_lru)
{
	static bool present[LK_N];
	static const char *prefixes[] = {"", "a", "a/", "/", "b/a", "c/c/", "ab", "//"};
	uint64_t r = 0x5eed;
	char key[8], key2[8], after[8];

	for (int op = 0; op < 40000; op++) {
		int id = (int)(rnd(&r) % LK_N), id2 = (int)(rnd(&r) % LK_N);
		unsigned what = (unsigned)(rnd(&r) % 100);

		/* Phases of 5,000 ops fill up and drain in turn, so that the
		 * ordered index both splits and merges leaves. */
		if ((op / 5000) % 2)
			what = what < 15 ? what : what < 85 ? 60 : 90;
		lk_name(id, key);
		lk_name(id2, key2);
		if (what < 50) {
			cr_assert_eq(put(key, 3), 0);
			present[id] = true;
		} else if (what < 80) {
			cr_assert_eq(store_delete(st, key, strlen(key), 0, NULL),
			             present[id] ? 0 : -ENOENT);
			present[id] = false;
		} else {
			cr_assert_eq(
			        store_rename(st, key, strlen(key), key2, strlen(key2), false, NULL),
			        present[id] ? 0 : -ENOENT);
			if (present[id] && id != id2) {
				present[id] = false;
				present[id2] = true;
			}
		}
		if (op % 97)
			continue;
		lk_name((int)(rnd(&r) % LK_N), after);
		if (rnd(&r) % 4 == 0)
			after[0] = 0;
		lk_check(present, prefixes[rnd(&r) % KV_ARRAY_SIZE(prefixes)],
		         rnd(&r) % 2 ? '/' : 0, after, (size_t)(rnd(&r) % 40));
		if (op % (97 * 16) == 0)
			lk_check_paged(present, prefixes[rnd(&r) % KV_ARRAY_SIZE(prefixes)],
			               rnd(&r) % 2 ? '/' : 0, 1 + (size_t)(rnd(&r) % 7));
	}
	for (size_t i = 0; i < KV_ARRAY_SIZE(prefixes); i++) {
		lk_check_paged(present, prefixes[i], '/', 3);
		lk_check_paged(present, prefixes[i], 0, 50);
	}
	cr_assert_eq(stats().evictions, 0, "the model assumes nothing was evicted");
}

/* ---- accounting -------------------------------------------------------- */

Test(store, overhead_per_key, .init = setup_lru)
{
	enum { N = 100000 };
	struct store_stats s;
	char key[33];
	double ov, ov_in_order;
	int i;

	for (i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "%032d", i);
		cr_assert_eq(put(key, 100), 0);
	}
	s = stats();
	ov = ov_in_order = store_overhead_per_key(st);
	cr_log_info("per-key overhead, %d keys of 32 bytes, 100-byte values: %.1f bytes "
	            "(meta %llu, overhead %llu)",
	            N, ov, (unsigned long long)s.meta_bytes, (unsigned long long)s.overhead_bytes);
	fprintf(stderr, "store: per-key overhead %.1f bytes (%d keys of 32 B)\n", ov, N);
	cr_assert_eq(s.keys, N);
	cr_assert_gt(ov, 0);
	cr_assert_leq(ov, 100.0);
	cr_assert_eq(s.arena_free, ARENA_LEN - (uint64_t)N * store_alloc_size(st, 100));
	for (i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "%032d", i);
		cr_assert_eq(store_delete(st, key, 32, 0, NULL), 0);
	}
	s = stats();
	cr_assert_eq(s.arena_free, ARENA_LEN);
	cr_assert_eq(s.arena_free_pages, ARENA_LEN);
	cr_assert_eq(s.largest_free, ARENA_LEN);

	/* Keys arriving out of order leave the ordered index's leaves part
	 * full: the budget must hold then too. */
	for (i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "%032d", (int)((uint64_t)i * 7919 % N));
		cr_assert_eq(put(key, 100), 0);
	}
	ov = store_overhead_per_key(st);
	fprintf(stderr, "store: per-key overhead %.1f bytes (%d keys of 32 B, scrambled order)\n",
	        ov, N);
	cr_assert_leq(ov, 100.0);
	for (i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "%032d", i);
		cr_assert_eq(store_delete(st, key, 32, 0, NULL), 0);
	}
	/* and in descending order */
	for (i = N - 1; i >= 0; i--) {
		snprintf(key, sizeof(key), "%032d", i);
		cr_assert_eq(put(key, 100), 0);
	}
	ov = store_overhead_per_key(st);
	fprintf(stderr, "store: per-key overhead %.1f bytes (%d keys of 32 B, descending order)\n",
	        ov, N);
	cr_assert_leq(ov, ov_in_order + 1.0,
	              "keys stored in descending order cost %.1f B/key, in order %.1f: the ordered "
	              "index packs its leaves only half",
	              ov, ov_in_order);
}

Test(store, fragmentation, .init = setup_none)
{
	enum { N = 3000 };
	static uint64_t size[N];
	static bool live[N];
	uint64_t used = 0, rng = 12345;
	struct store_stats s;
	char key[16];
	int i, n;

	for (n = 0; n < N; n++) {
		uint64_t r;

		rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
		r = rng >> 33;
		size[n] = r % 4 == 0 ? r % (256 * 1024) : r % 20000;
		snprintf(key, sizeof(key), "f%d", n);
		if (put(key, size[n]))
			break;
		live[n] = true;
		used += store_alloc_size(st, size[n]);
	}
	cr_assert_gt(n, 200);
	cr_assert_eq(stats().arena_free, ARENA_LEN - used);
	for (i = 0; i < n; i++) {
		rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
		if ((rng >> 40) & 1)
			continue;
		snprintf(key, sizeof(key), "f%d", i);
		cr_assert_eq(store_delete(st, key, strlen(key), 0, NULL), 0);
		live[i] = false;
		used -= store_alloc_size(st, size[i]);
	}
	s = stats();
	cr_assert_eq(s.arena_free, ARENA_LEN - used, "exact accounting");
	cr_assert_leq(s.arena_free_pages, s.arena_free);
	/* The largest free run is allocatable, one byte more is not (policy none). */
	cr_assert_gt(s.largest_free, STORE_SMALL_MAX);
	cr_assert_eq(put("big", s.largest_free), 0);
	cr_assert_eq(store_delete(st, "big", 3, 0, NULL), 0);
	for (i = 0; i < n; i++) {
		if (!live[i])
			continue;
		snprintf(key, sizeof(key), "f%d", i);
		cr_assert_eq(store_delete(st, key, strlen(key), 0, NULL), 0);
	}
	s = stats();
	cr_assert_eq(s.arena_free, ARENA_LEN);
	cr_assert_eq(s.largest_free, ARENA_LEN, "all runs coalesced");
	cr_assert_eq(put("all", ARENA_LEN), 0);
}

Test(store, coalesce_neighbours, .init = setup_none)
{
	char key[16];
	int i;

	for (i = 0; i < 64; i++) {
		snprintf(key, sizeof(key), "k%02d", i);
		cr_assert_eq(put(key, MIB), 0);
	}
	/* Free k10, k12, then k11: one 3 MiB run. */
	cr_assert_eq(store_delete(st, "k10", 3, 0, NULL), 0);
	cr_assert_eq(store_delete(st, "k12", 3, 0, NULL), 0);
	cr_assert_eq(stats().largest_free, MIB);
	cr_assert_eq(put("x", 2 * MIB), -ENOSPC);
	cr_assert_eq(store_delete(st, "k11", 3, 0, NULL), 0);
	cr_assert_eq(stats().largest_free, 3 * MIB);
	cr_assert_eq(put("x", 3 * MIB), 0);
	cr_assert_eq(stats().arena_free, 0);
}

/* ---- randomized model check ------------------------------------------- */

#define MKEYS 1000
#define MPINS 8

struct model {
	bool present;
	uint64_t size, version, seed;
	uint32_t mode;
};

struct heldpin {
	struct store_item *it;
	uint64_t size, seed;
};

static uint64_t rnd_size(uint64_t *r)
{
	uint64_t x = rnd(r) % 100;

	if (x < 5)
		return 0;
	if (x < 50)
		return rnd(r) % 1024;
	if (x < 90)
		return rnd(r) % 20000;
	return rnd(r) % 300000;
}

static void model_run(enum store_evict ev, int ops)
{
	static struct model m[MKEYS];
	struct heldpin pins[MPINS] = {0};
	uint64_t r = 0x1234567ULL, used_lo;
	bool lru = ev == STORE_EVICT_LRU;
	char key[32], key2[32];
	int i, k, enospc = 0, missing = 0, nput = 0;
	uint64_t putbytes = 0;

	memset(m, 0, sizeof(m));
	make_store(10 * MIB, ev, 0);
	for (i = 0; i < ops; i++) {
		int op = (int)(rnd(&r) % 100);
		struct store_item *it;
		const struct store_item *cit;

		k = (int)(rnd(&r) % MKEYS);
		snprintf(key, sizeof(key), "m/%d", k);
		if (op < 35) { /* put, maybe conditional */
			struct store_put_cond c = {0};
			struct store_resv *rv;
			uint64_t sz = rnd_size(&r), v;
			int err, cond = (int)(rnd(&r) % 4);

			err = store_put_begin(st, key, strlen(key), sz, &rv);
			if (err == -ENOSPC) {
				enospc++;
				continue;
			}
			cr_assert_eq(err, 0);
			if (rnd(&r) % 20 == 0) {
				store_put_abort(st, rv);
				continue;
			}
			if (cond == 1)
				c.if_absent = true;
			else if (cond == 2)
				c.if_version = m[k].present ? m[k].version : 12345678;
			else if (cond == 3)
				c.if_version = m[k].version + 1;
			/* Learn about evictions before judging the condition. */
			if (lru && m[k].present && !exists(key))
				m[k].present = false, missing++;
			err = store_put_commit(st, rv, &c, (uint32_t)i & 07777, (uint64_t)i, &v);
			if (cond == 1 && m[k].present) {
				cr_assert_eq(err, -EEXIST);
			} else if (cond >= 2 && !m[k].present && c.if_version) {
				cr_assert_eq(err, -ENOENT);
			} else if (cond == 3 || (cond == 2 && c.if_version != m[k].version)) {
				cr_assert_eq(err, -ESTALE);
			} else {
				cr_assert_eq(err, 0, "op %d cond %d", i, cond);
				cr_assert_gt(v, m[k].version);
				m[k] = (struct model){true, sz, v, seed_of(key, v),
				                      (uint32_t)i & 07777};
				fill(arena + store_resv_offset(rv), sz, m[k].seed);
				nput++;
				putbytes += sz;
				continue;
			}
			store_put_abort(st, rv);
		} else if (op < 65) { /* get + verify, sometimes keep the pin */
			int err = store_get(st, key, strlen(key), &it);

			if (err == -ENOENT && lru && m[k].present) {
				m[k].present = false;
				missing++;
			}
			if (!m[k].present) {
				cr_assert_eq(err, -ENOENT, "op %d key %s", i, key);
				continue;
			}
			cr_assert_eq(err, 0);
			cr_assert_eq(store_item_version(it), m[k].version);
			cr_assert_eq(store_item_size(it), m[k].size);
			cr_assert_eq(store_item_mode(it), m[k].mode);
			cr_assert(check(arena + store_item_offset(it), m[k].size, m[k].seed),
			          "value bytes of %s op %d", key, i);
			int slot = (int)(rnd(&r) % (MPINS * 2));
			if (slot < MPINS) {
				if (pins[slot].it) {
					cr_assert(check(arena + store_item_offset(pins[slot].it),
					                pins[slot].size, pins[slot].seed),
					          "pinned bytes intact");
					store_item_unpin(st, pins[slot].it);
				}
				pins[slot] = (struct heldpin){it, m[k].size, m[k].seed};
			} else {
				store_item_unpin(st, it);
			}
		} else if (op < 80) { /* delete */
			uint64_t iv = rnd(&r) % 3 == 0 ? m[k].version + (rnd(&r) % 2) : 0;
			int err = store_delete(st, key, strlen(key), iv, NULL);

			if (err == -ENOENT && lru && m[k].present) {
				m[k].present = false;
				missing++;
			}
			if (!m[k].present) {
				cr_assert_eq(err, -ENOENT);
			} else if (iv && iv != m[k].version) {
				cr_assert_eq(err, -ESTALE);
			} else {
				cr_assert_eq(err, 0);
				m[k].present = false;
			}
		} else if (op < 90) { /* rename */
			int k2 = (int)(rnd(&r) % MKEYS), err;
			bool nover = rnd(&r) % 2;

			snprintf(key2, sizeof(key2), "m/%d", k2);
			if (lru && m[k].present && !exists(key))
				m[k].present = false, missing++;
			if (lru && m[k2].present && !exists(key2))
				m[k2].present = false, missing++;
			err = store_rename(st, key, strlen(key), key2, strlen(key2), nover, NULL);
			if (!m[k].present) {
				cr_assert_eq(err, -ENOENT);
			} else if (k == k2) {
				cr_assert_eq(err, 0);
			} else if (nover && m[k2].present) {
				cr_assert_eq(err, -EEXIST);
			} else {
				cr_assert_eq(err, 0);
				cr_assert_eq(store_lookup(st, key2, strlen(key2), &cit), 0);
				cr_assert_gt(store_item_version(cit), m[k].version);
				m[k2] = m[k];
				m[k2].version = store_item_version(cit);
				m[k].present = false;
			}
		} else if (op < 95) { /* setattr */
			int err = store_setattr(st, key, strlen(key), STORE_SET_MODE, 0777, 0, 0,
			                        NULL);

			if (err == -ENOENT && lru && m[k].present)
				m[k].present = false, missing++;
			cr_assert_eq(err, m[k].present ? 0 : -ENOENT);
			if (!err)
				m[k].mode = 0777;
		} else { /* release a held pin */
			int slot = (int)(rnd(&r) % MPINS);

			if (pins[slot].it) {
				cr_assert(check(arena + store_item_offset(pins[slot].it),
				                pins[slot].size, pins[slot].seed),
				          "pinned bytes intact");
				store_item_unpin(st, pins[slot].it);
				pins[slot].it = NULL;
			}
		}
	}
	for (i = 0; i < MPINS; i++) {
		if (pins[i].it)
			store_item_unpin(st, pins[i].it);
	}

	/* Final sweep: store matches the model, accounting exact. */
	used_lo = 0;
	for (k = 0; k < MKEYS; k++) {
		const struct store_item *cit;
		int err;

		snprintf(key, sizeof(key), "m/%d", k);
		err = store_lookup(st, key, strlen(key), &cit);
		if (err && lru && m[k].present)
			m[k].present = false, missing++;
		cr_assert_eq(err, m[k].present ? 0 : -ENOENT, "final %s", key);
		if (err)
			continue;
		cr_assert_eq(store_item_version(cit), m[k].version);
		cr_assert(check(arena + store_item_offset(cit), m[k].size, m[k].seed));
		used_lo += store_alloc_size(st, m[k].size);
	}
	{
		struct store_stats s = stats();

		cr_assert_eq(s.pinned_items, 0);
		cr_assert_eq(s.resv_count, 0);
		cr_assert_eq(s.arena_free, s.arena_usable - used_lo);
		if (!lru)
			cr_assert_eq(s.evictions, 0);
		else
			cr_assert_geq(s.evictions, (uint64_t)missing);
		cr_log_info("model %s: %d ops, %d puts (%llu bytes), %d ENOSPC, %d evicted seen, "
		            "%llu evictions",
		            lru ? "lru" : "none", ops, nput, (unsigned long long)putbytes, enospc,
		            missing, (unsigned long long)s.evictions);
	}
	for (k = 0; k < MKEYS; k++) {
		snprintf(key, sizeof(key), "m/%d", k);
		(void)store_delete(st, key, strlen(key), 0, NULL);
	}
	cr_assert_eq(stats().arena_free, stats().arena_usable);
	cr_assert_eq(stats().largest_free, stats().arena_usable);
}

Test(store, model_none)
{
	model_run(STORE_EVICT_NONE, 100000);
}

Test(store, model_lru)
{
	model_run(STORE_EVICT_LRU, 100000);
}

/* PUT an empty value under a 1000-byte key numbered @i; its status. */
static int put_long_key(struct store *s, int i)
{
	static char key[1000];
	struct store_resv *r;
	int err;

	memset(key, 'k', sizeof(key));
	snprintf(key, 16, "%015d", i);
	key[15] = 'k';
	err = store_put_begin(s, key, sizeof(key), 0, &r);
	if (err)
		return err;
	err = store_put_commit(s, r, NULL, 0644, 1, NULL);
	if (err)
		store_put_abort(s, r);
	return err;
}

/*
 * Empty values take no arena space, but their keys and items take heap:
 * 20,000 of them with 1000-byte keys (about 22 MB of index) under a 2 MiB
 * metadata budget evict the oldest and the index stays within it.  Before,
 * nothing was evicted and the heap grew with every key (a 64 MiB server
 * reached 2.27 GB).
 */
Test(store, meta_budget_evicts, .fini = teardown)
{
	struct store_opts o = {.evict = STORE_EVICT_LRU, .max_meta = 2 * MIB};
	struct store_stats ss;
	const struct store_item *it;
	uint64_t most = 0;

	arena = aligned_alloc(STORE_PAGE_SIZE, ARENA_LEN);
	cr_assert_not_null(arena);
	cr_assert_eq(store_create(arena, ARENA_LEN, &o, &st), 0);
	for (int i = 0; i < 20000; i++) {
		cr_assert_eq(put_long_key(st, i), 0, "PUT %d", i);
		store_get_stats(st, &ss);
		most = KV_MAX(most, ss.meta_bytes);
	}
	store_get_stats(st, &ss);
	/* the budget, plus what one commit may add past it (the order index
	 * and the hash grow in steps) */
	cr_assert_leq(most, 2 * MIB + MIB / 2, "index reached %llu bytes",
	              (unsigned long long)most);
	cr_assert_gt(ss.meta_evictions, 0);
	cr_assert_eq(ss.meta_evictions, ss.evictions, "evicted for values too");
	cr_assert_lt(ss.keys, 20000);
	cr_assert_gt(ss.keys, 100, "kept only %llu keys", (unsigned long long)ss.keys);
	{ /* the newest is there, the oldest gone */
		char key[1000];

		memset(key, 'k', sizeof(key));
		snprintf(key, 16, "%015d", 19999);
		key[15] = 'k';
		cr_assert_eq(store_lookup(st, key, sizeof(key), &it), 0);
		snprintf(key, 16, "%015d", 0);
		key[15] = 'k';
		cr_assert_eq(store_lookup(st, key, sizeof(key), &it), -ENOENT);
	}
}

/* Without eviction the PUT past the budget is refused and changes nothing. */
Test(store, meta_budget_refuses_without_eviction, .fini = teardown)
{
	struct store_opts o = {.evict = STORE_EVICT_NONE, .max_meta = 2 * MIB};
	struct store_stats before, after;
	int i, err = 0;

	arena = aligned_alloc(STORE_PAGE_SIZE, ARENA_LEN);
	cr_assert_not_null(arena);
	cr_assert_eq(store_create(arena, ARENA_LEN, &o, &st), 0);
	for (i = 0; i < 20000 && !(err = put_long_key(st, i)); i++)
		;
	cr_assert_eq(err, -ENOSPC, "PUT %d: %d", i, err);
	cr_assert_gt(i, 100);
	store_get_stats(st, &before);
	cr_assert_eq(put_long_key(st, i + 1), -ENOSPC);
	store_get_stats(st, &after);
	cr_assert_eq(after.keys, before.keys);
	cr_assert_eq(after.evictions, 0);
	cr_assert_eq(after.arena_free, before.arena_free);
}

/* ---- namespaces (tenants) ---------------------------------------------- */

/* Two namespaces, "a/" with a quota of @quota bytes and "b/" without. */
static const struct store_ns ns_ab[] = {
        {.prefix = "a/", .prefixlen = 2, .quota = 0},
        {.prefix = "b/", .prefixlen = 2, .quota = 0},
};
static struct store_ns ns_q[2];

static void make_ns_store(enum store_evict ev, size_t len, uint64_t quota)
{
	struct store_opts o = {.evict = ev, .ns = ns_q, .nns = 2};

	memcpy(ns_q, ns_ab, sizeof(ns_q));
	ns_q[0].quota = quota;
	arena = aligned_alloc(STORE_PAGE_SIZE, len);
	cr_assert_not_null(arena);
	cr_assert_eq(store_create(arena, len, &o, &st), 0);
}

static struct store_ns_usage ns_use(unsigned ns)
{
	struct store_ns_usage u;

	store_ns_usage(st, ns, &u);
	return u;
}

/* What a key of @keylen bytes (prefix included) with @size value bytes is
 * charged in a 2-byte-prefix namespace. */
static uint64_t charge(size_t keylen, uint64_t size)
{
	return size + keylen - 2 + STORE_NS_KEY_CHARGE;
}

Test(store, ns_create_args, .fini = teardown)
{
	static const struct store_ns unsorted[] = {{"b/", 2, 0}, {"a/", 2, 0}};
	static const struct store_ns nested[] = {{"a/", 2, 0}, {"a/b/", 4, 0}};
	static const struct store_ns empty[] = {{"", 0, 0}};
	struct store_opts o = {.evict = STORE_EVICT_LRU};

	arena = aligned_alloc(STORE_PAGE_SIZE, ARENA_LEN);
	cr_assert_not_null(arena);
	o.ns = unsorted;
	o.nns = 2;
	cr_assert_eq(store_create(arena, ARENA_LEN, &o, &st), -EINVAL);
	o.ns = nested;
	cr_assert_eq(store_create(arena, ARENA_LEN, &o, &st), -EINVAL);
	o.ns = empty;
	o.nns = 1;
	cr_assert_eq(store_create(arena, ARENA_LEN, &o, &st), -EINVAL);
	o.ns = ns_ab;
	o.nns = STORE_NS_MAX + 1;
	cr_assert_eq(store_create(arena, ARENA_LEN, &o, &st), -EINVAL);
	o.nns = 2;
	cr_assert_eq(store_create(arena, ARENA_LEN, &o, &st), 0);
	cr_assert_eq(store_ns_of(st, "a/x", 3), 0);
	cr_assert_eq(store_ns_of(st, "b/x", 3), 1);
	cr_assert_eq(store_ns_of(st, "a", 1), -1);
	cr_assert_eq(store_ns_of(st, "ab/x", 4), -1);
	cr_assert_eq(store_ns_of(st, "c/x", 3), -1);
	cr_assert_eq(store_ns_of(st, "0", 1), -1);
}

/* Every change of a key follows into its namespace's counts. */
Test(store, ns_counts_follow_the_keys, .fini = teardown)
{
	struct store_item *pin;
	struct store_resv *r;

	make_ns_store(STORE_EVICT_LRU, ARENA_LEN, 0);
	cr_assert_eq(put("a/x", 100), 0);
	cr_assert_eq(put("a/yy", 10), 0);
	cr_assert_eq(put("b/z", 7), 0);
	cr_assert_eq(put("top", 5), 0);
	cr_assert_eq(ns_use(0).keys, 2);
	cr_assert_eq(ns_use(0).value_bytes, 110);
	cr_assert_eq(ns_use(0).charged, charge(3, 100) + charge(4, 10));
	cr_assert_eq(ns_use(1).keys, 1);
	cr_assert_eq(ns_use(1).charged, charge(3, 7));

	cr_assert_eq(put("a/x", 50), 0); /* replaced */
	cr_assert_eq(ns_use(0).value_bytes, 60);
	cr_assert_eq(ns_use(0).charged, charge(3, 50) + charge(4, 10));

	/* a reservation is charged until it commits or aborts */
	cr_assert_eq(store_put_begin(st, "a/r", 3, 1000, &r), 0);
	cr_assert_eq(ns_use(0).charged, charge(3, 50) + charge(4, 10) + charge(3, 1000));
	cr_assert_eq(ns_use(0).keys, 2);
	store_put_abort(st, r);
	cr_assert_eq(ns_use(0).charged, charge(3, 50) + charge(4, 10));

	/* renamed within, across, and out of namespaces */
	cr_assert_eq(store_rename(st, "a/yy", 4, "a/y", 3, false, NULL), 0);
	cr_assert_eq(ns_use(0).charged, charge(3, 50) + charge(3, 10));
	cr_assert_eq(store_rename(st, "a/y", 3, "b/y", 3, false, NULL), 0);
	cr_assert_eq(ns_use(0).keys, 1);
	cr_assert_eq(ns_use(0).charged, charge(3, 50));
	cr_assert_eq(ns_use(1).keys, 2);
	cr_assert_eq(ns_use(1).value_bytes, 17);
	cr_assert_eq(store_rename(st, "b/y", 3, "top2", 4, false, NULL), 0);
	cr_assert_eq(ns_use(1).keys, 1);
	cr_assert_eq(ns_use(1).charged, charge(3, 7));
	/* over an existing key of the namespace: the old one's charge goes */
	cr_assert_eq(store_rename(st, "top2", 4, "b/z", 3, false, NULL), 0);
	cr_assert_eq(ns_use(1).keys, 1);
	cr_assert_eq(ns_use(1).value_bytes, 10);

	/* deleted while pinned: gone from the counts at once */
	cr_assert_eq(store_get(st, "a/x", 3, &pin), 0);
	cr_assert_eq(store_delete(st, "a/x", 3, 0, NULL), 0);
	cr_assert_eq(ns_use(0).keys, 0);
	cr_assert_eq(ns_use(0).charged, 0);
	store_item_unpin(st, pin);
	cr_assert_eq(store_delete(st, "b/z", 3, 0, NULL), 0);
	cr_assert_eq(ns_use(1).charged, 0);
	cr_assert_eq(ns_use(1).value_bytes, 0);
}

/* Evicted keys leave their namespace's counts. */
Test(store, ns_counts_follow_eviction, .fini = teardown)
{
	char key[16];
	int i;

	make_ns_store(STORE_EVICT_LRU, 4 * MIB, 0);
	for (i = 0; i < 40; i++) {
		snprintf(key, sizeof(key), "%s%02d", i % 2 ? "a/" : "b/", i);
		cr_assert_eq(put(key, 256 * 1024), 0);
	}
	cr_assert_gt(stats().evictions, 0);
	cr_assert_eq(ns_use(0).keys + ns_use(1).keys, stats().keys);
	cr_assert_eq(ns_use(0).value_bytes + ns_use(1).value_bytes, stats().value_bytes);
	cr_assert_eq(ns_use(0).charged, ns_use(0).keys * charge(4, 256 * 1024));
}

/*
 * A namespace's quota refuses a PUT past it with -EDQUOT, before anything
 * is evicted and whatever room the store has; its keys stay; replacing a
 * key is charged only the difference; the other namespace and the keys
 * outside any are not limited.
 */
Test(store, ns_quota_refuses, .fini = teardown)
{
	uint64_t q = charge(3, 100000) + charge(3, 50000);
	struct store_resv *r;

	make_ns_store(STORE_EVICT_LRU, ARENA_LEN, q);
	cr_assert_eq(put("a/1", 100000), 0);
	cr_assert_eq(put("a/2", 50000), 0);
	cr_assert_eq(ns_use(0).charged, q);
	cr_assert_eq(put("a/3", 0), -EDQUOT, "an empty value is charged its key");
	cr_assert_eq(put("a/2", 50001), -EDQUOT);
	cr_assert_eq(put("a/2", 50000), 0, "a replacement of the same size fits");
	cr_assert_eq(put("a/1", 10), 0);
	cr_assert_eq(put("a/3", 99990 - charge(3, 0) + 1), -EDQUOT);
	cr_assert_eq(put("a/3", 99990 - charge(3, 0)), 0, "room freed by a smaller value");
	cr_assert_eq(ns_use(0).charged, q);
	cr_assert(exists("a/1") && exists("a/2") && exists("a/3"));
	cr_assert_eq(stats().evictions, 0);
	cr_assert_eq(put("b/big", 10 * MIB), 0);
	cr_assert_eq(put("big", 10 * MIB), 0);

	/* reservations count: two PUTs in flight cannot both take the room */
	cr_assert_eq(store_delete(st, "a/3", 3, 0, NULL), 0);
	cr_assert_eq(store_put_begin(st, "a/4", 3, 99990 - charge(3, 0), &r), 0);
	cr_assert_eq(put("a/5", 10), -EDQUOT);
	store_put_abort(st, r);
	cr_assert_eq(put("a/5", 10), 0);

	/* a rename into the namespace, or to a longer name, is refused past it */
	cr_assert_eq(store_rename(st, "b/big", 5, "a/big", 5, false, NULL), -EDQUOT);
	cr_assert(exists("b/big") && !exists("a/big"));
	cr_assert_eq(put("a/5", 99990 - charge(3, 0) - 2), 0);
	cr_assert_eq(ns_use(0).charged, q - 2);
	cr_assert_eq(store_rename(st, "a/5", 3, "a/5555", 6, false, NULL), -EDQUOT);
	cr_assert_eq(store_rename(st, "a/5", 3, "a/6", 3, false, NULL), 0);
	cr_assert_eq(store_rename(st, "a/6", 3, "b/6", 3, false, NULL), 0, "out: always");
}

/* ---- kept keys (user pins) and the eviction callback ------------------- */

struct evict_log {
	unsigned n, meta;
	uint64_t bytes, put_size;
	char first[16];
};

static void on_evict(void *arg, const char *key, size_t keylen, uint64_t size, uint64_t put_size,
                     bool meta)
{
	struct evict_log *l = arg;

	if (!l->n)
		snprintf(l->first, sizeof(l->first), "%.*s", (int)keylen, key);
	l->n++;
	l->meta += meta;
	l->bytes += size;
	l->put_size = put_size;
}

static struct evict_log evlog;

static void setup_kept(void)
{
	struct store_opts o = {.evict = STORE_EVICT_LRU,
	                       .max_kept = 8 * MIB,
	                       .on_evict = on_evict,
	                       .evict_arg = &evlog};

	memset(&evlog, 0, sizeof(evlog));
	arena = aligned_alloc(STORE_PAGE_SIZE, ARENA_LEN);
	cr_assert_not_null(arena);
	cr_assert_eq(store_create(arena, ARENA_LEN, &o, &st), 0);
}

static bool kept(const char *key)
{
	const struct store_item *it;

	return store_lookup(st, key, strlen(key), &it) == 0 && store_item_kept(it);
}

static void fill64(void)
{
	char key[16];

	for (int i = 0; i < 64; i++) {
		snprintf(key, sizeof(key), "k%02d", i);
		cr_assert_eq(put(key, MIB), 0);
	}
}

Test(store, kept_keys_are_never_evicted, .init = setup_kept)
{
	const struct store_item *it;

	fill64();
	cr_assert_eq(store_keep(st, "k00", 3, true, 0, &it), 0);
	cr_assert(store_item_kept(it));
	cr_assert_eq(store_keep(st, "k00", 3, true, 0, NULL), 0, "idempotent");
	cr_assert_eq(stats().kept_keys, 1);
	cr_assert_eq(stats().kept_bytes, MIB);
	cr_assert_eq(stats().max_kept, 8 * MIB);
	cr_assert_eq(put("new", 4 * MIB), 0);
	cr_assert(exists("k00"), "the oldest key is kept");
	cr_assert(!exists("k01") && !exists("k04") && exists("k05"));
	/* the callback is told of each eviction, with what it made room for */
	cr_assert_eq(evlog.n, 4);
	cr_assert_eq(evlog.meta, 0);
	cr_assert_eq(evlog.bytes, 4 * MIB);
	cr_assert_eq(evlog.put_size, 4 * MIB);
	cr_assert_str_eq(evlog.first, "k01");
	cr_assert_eq(stats().evictions, 4);

	/* a GET's transfer pin and unpin leave it off the LRU */
	{
		struct store_item *g;

		cr_assert_eq(store_get(st, "k00", 3, &g), 0);
		store_item_unpin(st, g);
	}
	cr_assert_eq(put("new2", MIB), 0);
	cr_assert(exists("k00") && !exists("k05"));

	/* unkept, it is evictable again (as the most recently used) */
	cr_assert_eq(store_keep(st, "k00", 3, false, 0, NULL), 0);
	cr_assert_eq(stats().kept_keys, 0);
	cr_assert_eq(stats().kept_bytes, 0);
	for (int i = 0; i < 64; i++) {
		char key[16];

		snprintf(key, sizeof(key), "n%02d", i);
		cr_assert_eq(put(key, MIB), 0);
	}
	cr_assert(!exists("k00"));
}

Test(store, kept_bytes_are_bounded, .init = setup_kept)
{
	struct store_stats a, b;

	fill64();
	for (int i = 0; i < 8; i++) {
		char key[16];

		snprintf(key, sizeof(key), "k%02d", i);
		cr_assert_eq(store_keep(st, key, 3, true, 0, NULL), 0);
	}
	a = stats();
	cr_assert_eq(store_keep(st, "k08", 3, true, 0, NULL), -EOVERFLOW);
	cr_assert(!kept("k08"));
	b = stats();
	cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0, "nothing changed");
	cr_assert_eq(store_keep(st, "nope", 4, true, 0, NULL), -ENOENT);
	cr_assert_eq(store_keep(st, "k00", 3, true, 12345, NULL), -ESTALE);

	/* a kept key may not grow past the bound, shrinking is fine */
	cr_assert_eq(put("k00", 2 * MIB), -EOVERFLOW);
	cr_assert_eq(put("k00", MIB / 2), 0);
	cr_assert(kept("k00"), "a rewrite keeps the mark");
	cr_assert_eq(stats().kept_bytes, 7 * MIB + MIB / 2);

	/* a delete drops the mark; recreated, the key is not kept */
	cr_assert_eq(store_delete(st, "k01", 3, 0, NULL), 0);
	cr_assert_eq(stats().kept_keys, 7);
	cr_assert_eq(put("k01", MIB), 0);
	cr_assert(!kept("k01"));
}

Test(store, kept_mark_follows_rename, .init = setup_kept)
{
	fill64();
	cr_assert_eq(store_keep(st, "k00", 3, true, 0, NULL), 0);
	cr_assert_eq(store_keep(st, "k02", 3, true, 0, NULL), 0);
	cr_assert_eq(store_rename(st, "k00", 3, "moved", 5, false, NULL), 0);
	cr_assert(kept("moved") && !exists("k00"));
	cr_assert_eq(stats().kept_keys, 2);
	/* a kept destination replaced by an unkept source loses its mark */
	cr_assert_eq(store_rename(st, "k03", 3, "k02", 3, false, NULL), 0);
	cr_assert(!kept("k02"));
	cr_assert_eq(stats().kept_keys, 1);
	cr_assert_eq(stats().kept_bytes, MIB);
	cr_assert_eq(put("big", 8 * MIB), 0);
	cr_assert(exists("moved"), "still never evicted after the rename");
}

Test(store, all_kept_enospc, .init = setup_kept)
{
	struct store_opts o = {.evict = STORE_EVICT_LRU, .max_kept = ARENA_LEN};
	struct store_stats a, b;
	struct store_resv *r;

	store_destroy(st);
	cr_assert_eq(store_create(arena, ARENA_LEN, &o, &st), 0);
	fill64();
	for (int i = 0; i < 63; i++) {
		char key[16];

		snprintf(key, sizeof(key), "k%02d", i);
		cr_assert_eq(store_keep(st, key, 3, true, 0, NULL), 0);
	}
	a = stats();
	cr_assert_eq(store_put_begin(st, "x", 1, 2 * MIB, &r), -ENOSPC);
	b = stats();
	cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0, "nothing evicted");
	cr_assert_eq(put("x", MIB), 0, "the one key not kept makes room");
	cr_assert(!exists("k63"));
	cr_assert_eq(store_keep(st, "x", 1, true, 0, NULL), 0);
	cr_assert_eq(put("y", MIB), -ENOSPC, "everything kept");
	cr_assert_eq(put("k00", MIB), -ENOSPC, "not even a kept key's rewrite finds room");
	cr_assert(exists("k00"));
}

Test(store, nothing_kept_without_a_budget, .init = setup_lru)
{
	cr_assert_eq(put("a", 0), 0);
	cr_assert_eq(store_keep(st, "a", 1, true, 0, NULL), -EOVERFLOW);
	cr_assert_eq(store_keep(st, "a", 1, false, 0, NULL), 0);
}

/* ---- uploads: values in parts ---------------------------------------- */

/* The value of @key, read through its arena ranges into a new buffer. */
static uint8_t *read_value(const char *key, uint64_t *ret_size)
{
	struct store_item *it;
	struct store_seg segs[512];
	uint8_t *buf;
	uint64_t at = 0;
	size_t n;

	cr_assert_eq(store_get(st, key, strlen(key), &it), 0);
	*ret_size = store_item_size(it);
	buf = malloc(*ret_size + 1);
	cr_assert_not_null(buf);
	n = store_item_segs(it, 0, *ret_size, segs, 512);
	cr_assert_leq(n, 512);
	cr_assert_eq(n, store_item_nparts(it) ? n : 0);
	for (size_t i = 0; i < n; i++) {
		memcpy(buf + at, arena + segs[i].off, segs[i].len);
		at += segs[i].len;
	}
	cr_assert_eq(at, *ret_size, "the ranges cover the value");
	store_item_unpin(st, it);
	return buf;
}

/* Write @len bytes of @src at @off of upload @r, as a transfer would. */
static int up_write(struct store_resv *r, uint64_t off, const void *src, uint64_t len)
{
	struct store_ext *x;
	uint64_t aoff;
	int err = store_up_write(st, r, off, len, &aoff, &x);

	if (err)
		return err;
	memcpy(arena + aoff, src, len);
	store_ext_put(st, x);
	return 0;
}

Test(store, upload_in_parts_out_of_order, .init = setup_none)
{
	uint64_t size, v, free0 = stats().arena_free;
	uint8_t *want = malloc(3 * MIB), *got;
	struct store_resv *r;

	fill(want, 3 * MIB, 7);
	cr_assert_eq(store_up_open(st, "up", 2, 0, &r), 0);
	/* the third part first: the two before it are zeros until written */
	cr_assert_eq(up_write(r, 2 * MIB, want + 2 * MIB, MIB), 0);
	cr_assert_eq(store_up_size(r), 3 * MIB);
	cr_assert_eq(stats().resv_bytes, 3 * MIB);
	cr_assert_eq(up_write(r, 0, want, MIB), 0);
	cr_assert_eq(up_write(r, MIB, want + MIB, MIB), 0);
	cr_assert_not(exists("up"), "nothing is visible before the commit");
	cr_assert_eq(store_put_commit(st, r, NULL, 0644, 1, &v), 0);
	got = read_value("up", &size);
	cr_assert_eq(size, 3 * MIB);
	cr_assert_eq(memcmp(got, want, size), 0);
	cr_assert_eq(stats().resv_bytes, 0);
	cr_assert_eq(stats().arena_free, free0 - 3 * MIB,
	             "the zeros under rewritten ranges were given back");
	cr_assert_eq(store_delete(st, "up", 2, 0, NULL), 0);
	cr_assert_eq(stats().arena_free, free0);
	free(got);
	free(want);
}

Test(store, upload_copies_on_write_from_its_base, .init = setup_none)
{
	uint64_t v1, v2, size, free0;
	struct store_item *old;
	struct store_resv *r;
	uint8_t *want = malloc(4 * MIB), *got, *old_bytes, patch[100];

	cr_assert_eq(put_v("f", 4 * MIB, NULL, &v1), 0);
	got = read_value("f", &size);
	memcpy(want, got, size);
	old_bytes = got;
	free0 = stats().arena_free;
	cr_assert_eq(store_get(st, "f", 1, &old), 0); /* a reader of the old value */

	cr_assert_eq(store_up_open(st, "f", 1, v1 + 100, &r), -ESTALE);
	cr_assert_eq(store_up_open(st, "g", 1, v1, &r), -ENOENT);
	cr_assert_eq(store_up_open(st, "f", 1, v1, &r), 0);
	cr_assert_eq(store_up_size(r), 4 * MIB);
	memset(patch, 0xab, sizeof(patch));
	cr_assert_eq(up_write(r, MIB + 100, patch, sizeof(patch)), 0);
	memcpy(want + MIB + 100, patch, sizeof(patch));
	cr_assert_eq(up_write(r, 4 * MIB, patch, sizeof(patch)), 0); /* append */
	cr_assert_eq(stats().arena_free, free0 - 2 * store_alloc_size(st, 100),
	             "only the written bytes take new memory");
	cr_assert_eq(
	        store_put_commit(st, r, &(struct store_put_cond){.if_version = v1}, 0644, 1, &v2),
	        0);
	got = read_value("f", &size);
	cr_assert_eq(size, 4 * MIB + 100);
	cr_assert_eq(memcmp(got, want, 4 * MIB), 0);
	cr_assert_eq(memcmp(got + 4 * MIB, patch, 100), 0);
	free(got);
	/* the old value is intact for its reader, and its memory is shared */
	{
		struct store_seg seg[8];
		size_t n = store_item_segs(old, 0, 4 * MIB, seg, 8);
		uint64_t at = 0;

		cr_assert_eq(store_item_size(old), 4 * MIB);
		cr_assert_eq(n, 1, "an old value keeps its one range");
		cr_assert_eq(memcmp(arena + seg[0].off, old_bytes, 4 * MIB), 0);
		at = seg[0].len;
		cr_assert_eq(at, 4 * MIB);
	}
	store_item_unpin(st, old);
	cr_assert_eq(stats().arena_free, free0 - 2 * store_alloc_size(st, 100));
	cr_assert_eq(store_delete(st, "f", 1, 0, NULL), 0);
	cr_assert_eq(stats().arena_free, free0 + 4 * MIB, "every range freed with the last user");
	free(old_bytes);
	free(want);
}

Test(store, upload_truncate_abort_and_held_memory, .init = setup_none)
{
	uint64_t size, v, aoff, free0 = stats().arena_free;
	uint8_t *buf = malloc(2 * MIB), *got;
	struct store_resv *r;
	struct store_ext *x;

	fill(buf, 2 * MIB, 3);
	cr_assert_eq(store_up_open(st, "t", 1, 0, &r), 0);
	cr_assert_eq(up_write(r, 0, buf, 2 * MIB), 0);
	cr_assert_eq(store_up_truncate(st, r, MIB + 5), 0);
	cr_assert_eq(store_up_truncate(st, r, 3 * MIB), 0); /* zeros past MIB + 5 */
	cr_assert_eq(store_up_write(st, r, 0, 0, &aoff, &x), -EINVAL);
	cr_assert_eq(store_put_commit(st, r, NULL, 0644, 1, &v), 0);
	got = read_value("t", &size);
	cr_assert_eq(size, 3 * MIB);
	cr_assert_eq(memcmp(got, buf, MIB + 5), 0);
	for (uint64_t i = MIB + 5; i < size; i++)
		cr_assert_eq(got[i], 0, "byte %llu of the extension", (unsigned long long)i);
	free(got);
	cr_assert_eq(store_delete(st, "t", 1, 0, NULL), 0);
	cr_assert_eq(stats().arena_free, free0);

	/* an abort while a transfer still fills a range: that range stays
	 * allocated until the transfer lets go of it */
	cr_assert_eq(store_up_open(st, "t", 1, 0, &r), 0);
	cr_assert_eq(store_up_write(st, r, 0, MIB, &aoff, &x), 0);
	store_put_abort(st, r);
	cr_assert_eq(stats().resv_bytes, 0);
	cr_assert_eq(stats().arena_free, free0 - MIB);
	store_ext_put(st, x);
	cr_assert_eq(stats().arena_free, free0);
	free(buf);
}

Test(store, upload_limits, .init = setup_none)
{
	uint64_t aoff;
	struct store_resv *r;
	struct store_ext *x;

	cr_assert_eq(store_up_open(st, "big", 3, 0, &r), 0);
	cr_assert_eq(store_up_write(st, r, ARENA_LEN, MIB, &aoff, &x), -EFBIG);
	cr_assert_eq(store_up_write(st, r, UINT64_MAX - 10, 100, &aoff, &x), -EINVAL);
	cr_assert_eq(store_up_truncate(st, r, ARENA_LEN + 1), -EFBIG);
	/* a store that may not evict refuses what does not fit, and the upload
	 * is unchanged by the refusal */
	cr_assert_eq(put("other", ARENA_LEN - 8 * MIB), 0);
	cr_assert_eq(up_write(r, 0, arena, 4 * MIB), 0);
	cr_assert_eq(store_up_write(st, r, 4 * MIB, 8 * MIB, &aoff, &x), -ENOSPC);
	cr_assert_eq(store_up_size(r), 4 * MIB);
	store_put_abort(st, r);
	cr_assert(exists("other"));
}

Test(store, upload_evicts_with_lru_and_survives_rename, .init = setup_lru)
{
	uint64_t size, v;
	uint8_t *buf = malloc(8 * MIB), *got;
	struct store_resv *r;

	fill(buf, 8 * MIB, 11);
	for (int i = 0; i < 7; i++) {
		char k[8];

		snprintf(k, sizeof(k), "k%d", i);
		cr_assert_eq(put(k, 8 * MIB), 0);
	}
	cr_assert_eq(store_up_open(st, "u", 1, 0, &r), 0);
	for (uint64_t off = 0; off < 32 * MIB; off += 8 * MIB)
		cr_assert_eq(up_write(r, off, buf, 8 * MIB), 0);
	cr_assert_gt(stats().evictions, 0, "the upload made room by eviction");
	cr_assert_eq(store_put_commit(st, r, NULL, 0644, 1, &v), 0);
	cr_assert_eq(store_rename(st, "u", 1, "w", 1, false, NULL), 0);
	got = read_value("w", &size);
	cr_assert_eq(size, 32 * MIB);
	for (uint64_t off = 0; off < size; off += 8 * MIB)
		cr_assert_eq(memcmp(got + off, buf, 8 * MIB), 0);
	free(got);
	free(buf);
}

/* Random writes and truncations against a byte model, each round over the
 * value the last one committed. */
Test(store, upload_matches_model, .init = setup_lru)
{
	uint64_t seed = 12345, v, size, msize;
	const uint64_t cap = 6 * MIB;
	uint8_t *model = calloc(1, cap), *src = malloc(cap), *got;

	fill(src, cap, 99);
	cr_assert_eq(put_v("m", 2 * MIB, NULL, &v), 0);
	got = read_value("m", &size);
	memcpy(model, got, size);
	msize = size;
	free(got);
	for (int round = 0; round < 40; round++) {
		struct store_resv *r;

		cr_assert_eq(store_up_open(st, "m", 1, v, &r), 0);
		for (int op = 0; op < 30; op++) {
			uint64_t off = rnd(&seed) % (cap - 1), len = 1 + rnd(&seed) % (MIB / 2),
			         soff;

			if (off + len > cap)
				len = cap - off;
			if (rnd(&seed) % 8 == 0) {
				cr_assert_eq(store_up_truncate(st, r, off), 0);
				if (off > msize)
					memset(model + msize, 0, off - msize);
				msize = off;
				continue;
			}
			soff = rnd(&seed) % (cap - len);
			cr_assert_eq(up_write(r, off, src + soff, len), 0);
			if (off > msize)
				memset(model + msize, 0, off - msize);
			memcpy(model + off, src + soff, len);
			msize = KV_MAX(msize, off + len);
			cr_assert_eq(store_up_size(r), msize);
		}
		cr_assert_eq(store_put_commit(st, r, &(struct store_put_cond){.if_version = v},
		                              0644, 1, &v),
		             0);
		got = read_value("m", &size);
		cr_assert_eq(size, msize, "round %d", round);
		cr_assert_eq(memcmp(got, model, size), 0, "round %d", round);
		free(got);
	}
	cr_assert_eq(store_delete(st, "m", 1, 0, NULL), 0);
	cr_assert_eq(stats().arena_free, stats().arena_usable, "nothing leaked");
	free(model);
	free(src);
}

/* A special file keeps its file-type bits through a chmod and its device
 * number through a rename; a replacing PUT of another type drops both. */
Test(store, special_files_keep_type_bits_and_rdev, .init = setup_lru)
{
	struct store_attrs a = {
	        .mode = 020640, .mtime_ns = 5, .type = STORE_TYPE_SPECIAL, .rdev = 0x103};
	const struct store_item *it;

	cr_assert_eq(put_attrs("dev", 0, &a), 0);
	it = look("dev");
	cr_assert_eq(store_item_mode(it), 020640);
	cr_assert_eq(store_item_rdev(st, it), 0x103);
	cr_assert_eq(store_setattr(st, "dev", 3, STORE_SET_MODE, 0600, 0, 0, &it), 0);
	cr_assert_eq(store_item_mode(it), 020600, "chmod keeps the type: %o", store_item_mode(it));
	cr_assert_eq(store_rename(st, "dev", 3, "dev2", 4, false, &it), 0);
	cr_assert_eq(store_item_type(it), STORE_TYPE_SPECIAL);
	cr_assert_eq(store_item_rdev(st, it), 0x103);
	a = (struct store_attrs){.mode = 020644, .mtime_ns = 5};
	cr_assert_eq(put_attrs("dev2", 0, &a), 0);
	it = look("dev2");
	cr_assert_eq(store_item_mode(it), 0644, "a FILE keeps permission bits only");
	cr_assert_eq(store_item_rdev(st, it), 0);
}

/* The ctime is the store's clock at every change; the atime is set, or
 * moved forward by an access without touching the ctime.  A key whose
 * times equal its mtime keeps nothing more for them. */
Test(store, ctime_and_atime, .init = setup_lru)
{
	struct store_attrs a = {.mode = 0644, .mtime_ns = 1000, .mtime_given = true};
	const struct store_item *it;
	uint64_t c0, c1;

	cr_assert_eq(put_attrs("plain", 10, &(struct store_attrs){.mode = 0644, .mtime_ns = 77}),
	             0);
	it = look("plain");
	cr_assert_eq(store_item_ctime(st, it), 77, "the server's clock was the mtime");
	cr_assert_eq(store_item_atime(st, it), 77);
	cr_assert_eq(put_attrs("k", 10, &a), 0);
	it = look("k");
	c0 = store_item_ctime(st, it);
	cr_assert_gt(c0, 1000, "the clock, not the client's mtime");
	cr_assert_eq(store_item_atime(st, it), c0, "a new key's atime is its creation");
	cr_assert_eq(store_item_mtime(it), 1000);
#define BUMPED(call)                                                                               \
	do {                                                                                       \
		cr_assert_eq(call, 0);                                                             \
		c1 = store_item_ctime(st, look("k"));                                              \
		cr_assert_gt(c1, c0, "%s", #call);                                                 \
		c0 = c1;                                                                           \
	} while (0)
	BUMPED(store_setattr(st, "k", 1, STORE_SET_MODE, 0600, 0, 0, NULL));
	BUMPED(store_setattr(st, "k", 1, STORE_SET_MTIME, 0, 2000, 0, NULL));
	cr_assert_neq(store_item_atime(st, look("k")), 2000, "the atime does not follow");
	BUMPED(store_chown(st, "k", 1, STORE_SET_UID, 5, 0, 0));
	BUMPED(xset("k", "user.a", "1", 0));
	BUMPED(xset("k", "user.a", NULL, STORE_XATTR_REMOVE));
	BUMPED(store_set_atime(st, "k", 1, 500, false, 0, NULL));
	cr_assert_eq(store_item_atime(st, look("k")), 500);
	BUMPED(put_attrs("k", 10, &a));
	cr_assert_eq(store_item_atime(st, look("k")), 500, "a rewrite keeps the atime set");
	cr_assert_eq(store_rename(st, "k", 1, "k2", 2, false, NULL), 0);
	BUMPED(store_rename(st, "k2", 2, "k", 1, false, NULL));
	cr_assert_eq(store_item_atime(st, look("k")), 500, "a rename keeps it");
#undef BUMPED
	cr_assert_eq(store_rename(st, "plain", 5, "p2", 2, false, NULL), 0);
	cr_assert_gt(store_item_ctime(st, look("p2")), 77);
	cr_assert_eq(store_item_atime(st, look("p2")), 77, "a renamed key keeps its atime");
	/* an access: forward only, the ctime stays */
	cr_assert_eq(store_set_atime(st, "k", 1, 400, true, 0, &it), 0);
	cr_assert_eq(store_item_atime(st, it), 500);
	cr_assert_eq(store_set_atime(st, "k", 1, c0 + 7, true, 0, &it), 0);
	cr_assert_eq(store_item_atime(st, it), c0 + 7);
	cr_assert_eq(store_item_ctime(st, it), c0);
	/* a new key in a marker's directory changes the marker's ctime */
	cr_assert_eq(put_attrs("d/", 0, &(struct store_attrs){.mode = 0755, .mtime_ns = 5}), 0);
	cr_assert_eq(put_attrs("d/f", 1, &a), 0);
	cr_assert_gt(store_item_ctime(st, look("d/")), 5);
	cr_assert_eq(store_item_mtime(look("d/")), store_item_ctime(st, look("d/")));
}

/* An upload is checked against a tenant's quota like a PUT: against what
 * the namespace holds once it replaces the key's value, so appending to a
 * value that takes most of the quota fits while the result does. */
Test(store, upload_quota_counts_the_replaced_value_once, .fini = teardown)
{
	uint64_t q = charge(3, 6 * MIB), v, aoff;
	struct store_resv *r;
	struct store_ext *x;

	make_ns_store(STORE_EVICT_LRU, ARENA_LEN, q);
	cr_assert_eq(put_v("a/1", 4 * MIB, NULL, &v), 0);
	cr_assert_eq(store_up_open(st, "a/1", 3, v, &r), 0, "a base of 4 MiB in a 6 MiB quota");
	cr_assert_eq(store_up_write(st, r, 4 * MIB, MIB, &aoff, &x), 0, "an append to 5 MiB fits");
	store_ext_put(st, x);
	cr_assert_eq(store_up_write(st, r, 5 * MIB, 2 * MIB, &aoff, &x), -EDQUOT,
	             "7 MiB would not");
	cr_assert_eq(store_up_size(r), 5 * MIB);
	cr_assert_eq(
	        store_put_commit(st, r, &(struct store_put_cond){.if_version = v}, 0644, 1, &v), 0);
	cr_assert_eq(ns_use(0).charged, charge(3, 5 * MIB), "charged once after the commit");
	/* an upload of a new key is charged on top of what is there */
	cr_assert_eq(store_up_open(st, "a/2", 3, 0, &r), 0);
	cr_assert_eq(store_up_write(st, r, 0, 2 * MIB, &aoff, &x), -EDQUOT);
	store_put_abort(st, r);
	cr_assert_eq(ns_use(0).charged, charge(3, 5 * MIB));
}
