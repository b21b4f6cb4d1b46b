/* SPDX-License-Identifier: MIT */
/*
 * The value allocator on its own (src/server/arena.c): offsets only, no
 * memory behind them.  test_store.c covers it through the store as well
 * (fragmentation, coalesce_neighbours, the model runs).
 */
#include <criterion/criterion.h>
#include <errno.h>

#include "arena.h"
#include "kvfs/util.h"

#define MIB  (1u << 20)
#define BASE (16 * (uint64_t)ARENA_PAGE_SIZE) /* the range need not start at 0 */

static struct arena a;

static void setup(void)
{
	cr_assert_eq(arena_init(&a, BASE, 64 * MIB, 42), 0);
}

static void teardown(void)
{
	arena_destroy(&a);
}

TestSuite(arena, .init = setup, .fini = teardown);

Test(arena, alloc_sizes)
{
	cr_assert_eq(arena_alloc_size(0), 0);
	cr_assert_eq(arena_alloc_size(1), 64);
	cr_assert_eq(arena_alloc_size(64), 64);
	cr_assert_eq(arena_alloc_size(65), 128);
	cr_assert_eq(arena_alloc_size(1000), 1024);
	cr_assert_eq(arena_alloc_size(1025), 1280);
	cr_assert_eq(arena_alloc_size(ARENA_SMALL_MAX), ARENA_SMALL_MAX);
	cr_assert_eq(arena_alloc_size(ARENA_SMALL_MAX + 1), ARENA_SMALL_MAX + ARENA_PAGE_SIZE);
	cr_assert_eq(arena_alloc_size(3 * MIB + 1), 3 * MIB + ARENA_PAGE_SIZE);
}

Test(arena, zero_takes_nothing)
{
	uint64_t off = 1;

	cr_assert_eq(arena_alloc(&a, 0, &off), 0);
	cr_assert_eq(off, 0);
	cr_assert_eq(a.used, 0);
	arena_free(&a, off, 0);
	cr_assert_eq(arena_free_bytes(&a), 64 * MIB);
}

Test(arena, alignment_and_accounting)
{
	static const uint64_t sizes[] = {1, 63, 64, 100, 4000, 16384, 16385, 100000, 2 * MIB};
	uint64_t off[KV_ARRAY_SIZE(sizes)], used = 0;
	uint64_t meta0 = a.bytes;

	for (size_t i = 0; i < KV_ARRAY_SIZE(sizes); i++) {
		cr_assert_eq(arena_alloc(&a, sizes[i], &off[i]), 0, "size %llu",
		             (unsigned long long)sizes[i]);
		cr_assert_geq(off[i], BASE);
		cr_assert_leq(off[i] + sizes[i], BASE + 64 * MIB);
		cr_assert_eq((off[i] - BASE) % (sizes[i] > ARENA_SMALL_MAX ? ARENA_PAGE_SIZE : 64),
		             0, "size %llu at %llu", (unsigned long long)sizes[i],
		             (unsigned long long)off[i]);
		used += arena_alloc_size(sizes[i]);
		cr_assert_eq(a.used, used);
		cr_assert_eq(arena_free_bytes(&a), 64 * MIB - used);
	}
	/* No two allocations overlap. */
	for (size_t i = 0; i < KV_ARRAY_SIZE(sizes); i++)
		for (size_t j = i + 1; j < KV_ARRAY_SIZE(sizes); j++)
			cr_assert(off[i] + sizes[i] <= off[j] || off[j] + sizes[j] <= off[i],
			          "#%zu and #%zu overlap", i, j);
	for (size_t i = 0; i < KV_ARRAY_SIZE(sizes); i++)
		arena_free(&a, off[i], sizes[i]);
	cr_assert_eq(a.used, 0);
	cr_assert_eq(a.free_pages, 64 * MIB, "emptied slabs went back to the page runs");
	cr_assert_eq(arena_largest_free(&a), 64 * MIB);
	cr_assert_eq(a.bytes, meta0, "no metadata left behind");
}

Test(arena, whole_range_then_enospc)
{
	uint64_t off, off2;

	cr_assert_eq(arena_alloc(&a, 64 * MIB, &off), 0);
	cr_assert_eq(off, BASE);
	cr_assert_eq(arena_free_bytes(&a), 0);
	cr_assert_eq(arena_largest_free(&a), 0);
	cr_assert_eq(arena_alloc(&a, ARENA_SMALL_MAX + 1, &off2), -ENOSPC);
	cr_assert_eq(arena_alloc(&a, 1, &off2), -ENOSPC, "a new slab needs pages too");
	arena_free(&a, off, 64 * MIB);
	cr_assert_eq(arena_largest_free(&a), 64 * MIB);
	cr_assert_eq(arena_alloc(&a, 64 * MIB + 1, &off2), -ENOSPC);
}

Test(arena, neighbours_merge)
{
	uint64_t off[4];

	for (int i = 0; i < 4; i++)
		cr_assert_eq(arena_alloc(&a, 16 * MIB, &off[i]), 0);
	cr_assert_eq(arena_free_bytes(&a), 0);
	arena_free(&a, off[0], 16 * MIB);
	arena_free(&a, off[2], 16 * MIB);
	cr_assert_eq(arena_largest_free(&a), 16 * MIB, "two runs apart");
	arena_free(&a, off[1], 16 * MIB);
	cr_assert_eq(arena_largest_free(&a), 48 * MIB, "merged with both neighbours");
	arena_free(&a, off[3], 16 * MIB);
	cr_assert_eq(arena_largest_free(&a), 64 * MIB);
	cr_assert_eq(a.free_pages, 64 * MIB);
}

Test(arena, slab_slots_reused)
{
	uint64_t x, y, z;

	cr_assert_eq(arena_alloc(&a, 100, &x), 0);
	cr_assert_eq(arena_alloc(&a, 100, &y), 0);
	cr_assert_neq(x, y);
	cr_assert_lt(a.free_pages, 64 * MIB, "the class took a slab of pages");
	arena_free(&a, x, 100);
	cr_assert_eq(arena_alloc(&a, 120, &z), 0, "same class (128)");
	cr_assert_eq(z, x, "the freed slot is the one handed out again");
	arena_free(&a, y, 100);
	arena_free(&a, z, 120);
	cr_assert_eq(a.free_pages, 64 * MIB);
}
