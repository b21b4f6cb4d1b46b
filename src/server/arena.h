/* SPDX-License-Identifier: MIT */
/*
 * arena: the allocator that carves kv-server's value memory.  It hands out
 * offsets inside one range [off, off + len) and never touches the memory
 * itself: its metadata lives in malloc'd nodes, because the arena is
 * RDMA-registered and written by remote peers (it holds value bytes only).
 *
 * Values of 1..ARENA_SMALL_MAX bytes come from slab classes, 64-byte aligned
 * (relative to the range's start); larger ones are ARENA_PAGE_SIZE multiples,
 * page aligned.  Size 0 takes nothing (offset 0).  See arena.c for the
 * layers and why.
 *
 * Threads: none; one owner calls everything (the store, on the server's
 * event loop).  The struct is embedded in its owner (the store) and is
 * opaque apart from the counters documented below.
 */
#ifndef KVFS_SERVER_ARENA_H
#define KVFS_SERVER_ARENA_H

#include <stdint.h>

#define ARENA_PAGE_SIZE 4096        /* granule and alignment of large values */
#define ARENA_SMALL_MAX (16 * 1024) /* values up to this come from slab classes */
#define ARENA_NBINS     64          /* free-run size bins: floor(log2(pages)) */
#define ARENA_NCLASS    28          /* slab classes, see arena.c */

struct arena_tnode; /* treap node keyed by offset */
struct arena_fext;  /* a free run of pages */
struct arena_slab;  /* a slab of one class */

struct arena {
	uint64_t len;                         /* bytes carved, a page multiple */
	uint64_t used;                        /* bytes charged to allocations (arena_alloc_size) */
	uint64_t free_pages;                  /* bytes in free runs (not in slabs) */
	uint64_t bytes;                       /* heap bytes of the metadata (malloc_usable_size) */
	uint64_t rng;                         /* treap priorities */
	struct arena_tnode *free_root;        /* free runs by offset */
	struct arena_fext *bins[ARENA_NBINS]; /* free runs by size */
	uint64_t binmask;                     /* non-empty bins */
	struct arena_fext *spare;             /* pool, one node per allocated extent */
	struct arena_tnode *slab_root;        /* slabs by offset */
	struct arena_slab *partial[ARENA_NCLASS]; /* slabs with free slots, per class */
};

/* Carve [@off, @off + @len), both page multiples, @len > 0, one free run to
 * begin with.  @seed feeds the treap priorities.  Returns 0 or -ENOMEM. */
int arena_init(struct arena *a, uint64_t off, uint64_t len, uint64_t seed);
/* Free all metadata; outstanding allocations die with it. */
void arena_destroy(struct arena *a);

/* Bytes an allocation of @size is charged: 0, its slab class size, or a
 * page multiple. */
uint64_t arena_alloc_size(uint64_t size);

/* Allocate @size bytes; *ret_off is the offset (0 for size 0).  Good fit,
 * no eviction: returns 0, -ENOSPC (no free run or slot fits) or -ENOMEM. */
int arena_alloc(struct arena *a, uint64_t size, uint64_t *ret_off);
/* Give back what arena_alloc(@size) returned at @off.  Never fails; a freed
 * run merges with its free neighbours at once and an emptied slab goes back
 * to the page runs. */
void arena_free(struct arena *a, uint64_t off, uint64_t size);

/* Bytes not charged to any allocation. */
static inline uint64_t arena_free_bytes(const struct arena *a)
{
	return a->len - a->used;
}

/* Largest free contiguous run of pages. */
uint64_t arena_largest_free(const struct arena *a);

#endif /* KVFS_SERVER_ARENA_H */
