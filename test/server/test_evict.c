/* SPDX-License-Identifier: MIT */
/*
 * kv-server is a cache (issue 22, item 5): what it evicts is counted and
 * logged, and pinned keys are never evicted, within --max-pinned.  Real
 * kv-server processes, real kvc clients over tcp.
 */
#include <time.h>

#include "srv_proc.h"

TestSuite(evict, .timeout = 120);

/* 16M: 14 MiB for values, so a dozen or so 1 MiB values fit. */
#define SMALL "16M"

static void put_mib(struct kvc *kvc, const char *key, uint64_t seed)
{
	void *b = xmalloc(MIB);
	int r;

	fill(b, MIB, seed);
	r = kvc_put(kvc, key, strlen(key), b, MIB, NULL, NULL);
	free(b);
	cr_assert_eq(r, 0, "PUT %s: %s", key, kvc_strerror());
}

static void check_mib(struct kvc *kvc, const char *key, uint64_t seed)
{
	void *want = xmalloc(MIB), *got = xmalloc(MIB);
	ssize_t n = kvc_get(kvc, key, strlen(key), 0, got, MIB, NULL, NULL);

	cr_assert_eq(n, (ssize_t)MIB, "GET %s: %zd (%s)", key, n, kvc_strerror());
	fill(want, MIB, seed);
	check_bytes(got, want, MIB, key);
	free(want);
	free(got);
}

/* PUT k00..k(n-1), 1 MiB each. */
static void fill_keys(struct kvc *kvc, const char *prefix, int n)
{
	char key[128];

	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "%s%02d", prefix, i);
		put_mib(kvc, key, (uint64_t)i);
	}
}

static bool exists(struct kvc *kvc, const char *key)
{
	int r = kvc_stat(kvc, key, strlen(key), NULL);

	cr_assert(r == 0 || r == -ENOENT, "STAT %s: %s", key, kvc_strerror());
	return r == 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The server log's lines holding @what (0 when none), waiting up to
 * @wait_ms for at least one; the first such line in @line. */
static int log_lines(const struct srv *s, const char *what, int wait_ms, char *line, size_t len)
{
	int n = 0;

	for (int t = 0; t <= wait_ms; t += 50) {
		char buf[1024];
		FILE *f = fopen(s->log, "r");

		n = 0;
		while (f && fgets(buf, sizeof(buf), f)) {
			if (!strstr(buf, what))
				continue;
			if (!n++ && line)
				snprintf(line, len, "%s", buf);
		}
		if (f)
			fclose(f);
		if (n)
			break;
		usleep(50000);
	}
	return n;
}

Test(evict, evictions_are_counted_and_logged)
{
	struct srv s = {0};
	struct kvc *kvc;
	char line[1024], *keys;
	uint64_t ev;
	int lines;
	uint64_t t0 = now_ms();

	srv_start_args(&s, "tcp", SMALL, NULL);
	kvc = connect_to(&s, "tcp");
	/* keys of 70 bytes: the log cuts each at 60 */
	fill_keys(kvc, "a-long-key-name-to-see-the-cut-of-the-key-list-in-the-log-0123456789-", 40);
	ev = counter(kvc, "evictions");
	cr_assert_geq(ev, 20, "40 MiB into 14: %llu evictions", (unsigned long long)ev);
	cr_assert_eq(counter(kvc, "evicted_bytes"), ev * MIB);
	cr_assert_eq(counter(kvc, "meta_evictions"), 0);
	cr_assert_eq(counter(kvc, "keys") + ev, 40);

	/* one warning per second at most, naming the first keys and why */
	lines = log_lines(&s, "evicted ", 3000, line, sizeof(line));
	if (!lines)
		srv_dump_log(&s);
	cr_assert_gt(lines, 0, "no eviction in the log");
	cr_assert(strstr(line, "warning"), "%s", line);
	cr_assert(
	        strstr(line, "\"a-long-key-name-to-see-the-cut-of-the-key-list-in-the-log-01...\""),
	        "the first evicted key is named: %s", line);
	cr_assert(strstr(line, "to make room for"), "why: %s", line);
	cr_assert(strstr(line, "largest PUT 1.0 MiB"), "the PUT's size: %s", line);
	keys = strchr(line, '"');
	cr_assert_not_null(keys);
	cr_assert_lt(strlen(keys), 200 + 140, "at most ~200 characters of keys: %s", line);
	cr_assert_leq(lines, (int)((now_ms() - t0) / 1000) + 2,
	              "%d eviction lines in %llu ms: not rate-limited", lines,
	              (unsigned long long)(now_ms() - t0));
	kvc_close(kvc);
	srv_done(&s);
}

Test(evict, pinned_key_survives_a_fill)
{
	struct srv s = {0};
	struct kvc_entry e;
	struct kvc_list l = {0};
	struct kvc *kvc;

	srv_start_args(&s, "tcp", SMALL, NULL);
	kvc = connect_to(&s, "tcp");
	fill_keys(kvc, "k", 4);
	cr_assert_eq(counter(kvc, "max_pinned_bytes"), 7 * MIB, "half the value memory");
	cr_assert_eq(kvc_pin(kvc, "k00", 3, true, &e), 0, "%s", kvc_strerror());
	cr_assert(e.pinned);
	cr_assert_eq(e.size, MIB);
	cr_assert_eq(kvc_stat(kvc, "k01", 3, &e), 0);
	cr_assert(!e.pinned);
	cr_assert_eq(counter(kvc, "pinned_keys"), 1);
	cr_assert_eq(counter(kvc, "pinned_key_bytes"), MIB);

	fill_keys(kvc, "f", 40);
	cr_assert_gt(counter(kvc, "evictions"), 20);
	cr_assert(exists(kvc, "k00"), "the pinned key, the oldest, survives");
	cr_assert(!exists(kvc, "k01") && !exists(kvc, "k02"), "unpinned old keys go");
	check_mib(kvc, "k00", 0);
	cr_assert_eq(kvc_stat(kvc, "k00", 3, &e), 0);
	cr_assert(e.pinned, "STAT shows the pin");
	cr_assert_eq(kvc_list(kvc, "k", NULL, NULL, 0, &l), 0);
	cr_assert_eq(l.n_entries, 1);
	cr_assert(l.entries[0].e.pinned, "LIST shows the pin");
	kvc_list_free(&l);

	/* unpinned, it is evictable again */
	cr_assert_eq(kvc_pin(kvc, "k00", 3, false, &e), 0);
	cr_assert(!e.pinned);
	cr_assert_eq(counter(kvc, "pinned_keys"), 0);
	fill_keys(kvc, "g", 20);
	cr_assert(!exists(kvc, "k00"));
	cr_assert_eq(kvc_pin(kvc, "k00", 3, true, NULL), -ENOENT);
	kvc_close(kvc);
	srv_done(&s);
}

Test(evict, pins_past_max_pinned_fail_enospc)
{
	const char *extra[] = {"--max-pinned", "3M", NULL};
	struct srv s = {0};
	struct kvc *kvc;
	void *b;

	srv_start_args(&s, "tcp", SMALL, extra);
	kvc = connect_to(&s, "tcp");
	fill_keys(kvc, "k", 5);
	for (int i = 0; i < 3; i++) {
		char key[8];

		snprintf(key, sizeof(key), "k%02d", i);
		cr_assert_eq(kvc_pin(kvc, key, 3, true, NULL), 0, "%s", kvc_strerror());
	}
	cr_assert_eq(kvc_pin(kvc, "k03", 3, true, NULL), -ENOSPC);
	cr_assert(strstr(kvc_strerror(), "--max-pinned"), "names the option: %s", kvc_strerror());
	cr_assert(!strstr(kvc_strerror(), "--memory"), "no misleading hint: %s", kvc_strerror());
	cr_assert_eq(counter(kvc, "pinned_keys"), 3);
	cr_assert_eq(counter(kvc, "pinned_key_bytes"), 3 * MIB);

	/* a pinned key's rewrite may not grow past it either */
	b = xmalloc(2 * MIB);
	fill(b, 2 * MIB, 9);
	cr_assert_eq(kvc_put(kvc, "k00", 3, b, 2 * MIB, NULL, NULL), -ENOSPC);
	cr_assert(strstr(kvc_strerror(), "--max-pinned"), "%s", kvc_strerror());
	check_mib(kvc, "k00", 0);
	cr_assert_eq(kvc_put(kvc, "k03", 3, b, 2 * MIB, NULL, NULL), 0, "unpinned: any size");
	free(b);
	kvc_close(kvc);
	srv_done(&s);
}

Test(evict, no_pinning_with_max_pinned_0)
{
	const char *extra[] = {"--max-pinned", "0", NULL};
	struct srv s = {0};
	struct kvc *kvc;

	srv_start_args(&s, "tcp", SMALL, extra);
	kvc = connect_to(&s, "none");
	cr_assert_eq(kvc_put(kvc, "x", 1, "v", 1, NULL, NULL), 0);
	cr_assert_eq(kvc_pin(kvc, "x", 1, true, NULL), -ENOSPC);
	cr_assert(strstr(kvc_strerror(), "--max-pinned 0"), "%s", kvc_strerror());
	kvc_close(kvc);
	srv_done(&s);
}

Test(evict, put_that_needs_pinned_room_fails)
{
	const char *extra[] = {"--max-pinned", "16M", NULL};
	struct srv s = {0};
	struct kvc_list l = {0};
	struct kvc *kvc;
	void *b;
	int r;

	srv_start_args(&s, "tcp", SMALL, extra);
	kvc = connect_to(&s, "tcp");
	fill_keys(kvc, "k", 20); /* full */
	cr_assert_eq(kvc_list(kvc, "k", NULL, NULL, 0, &l), 0);
	cr_assert_gt(l.n_entries, 5);
	for (size_t i = 0; i < l.n_entries; i++)
		cr_assert_eq(kvc_pin(kvc, l.entries[i].key, l.entries[i].keylen, true, NULL), 0,
		             "%s", kvc_strerror());
	b = xmalloc(MIB);
	fill(b, MIB, 1);
	r = kvc_put(kvc, "new", 3, b, MIB, NULL, NULL);
	free(b);
	cr_assert_eq(r, -ENOSPC, "a PUT that could only evict pinned keys: %d (%s)", r,
	             kvc_strerror());
	cr_assert(strstr(kvc_strerror(), "pinned"), "says why: %s", kvc_strerror());
	for (size_t i = 0; i < l.n_entries; i++)
		cr_assert(exists(kvc, l.entries[i].key), "%s was evicted", l.entries[i].key);
	cr_assert_eq(counter(kvc, "evictions"), 20 - l.n_entries);
	kvc_list_free(&l);
	kvc_close(kvc);
	srv_done(&s);
}

Test(evict, rewrite_and_rename_keep_the_pin)
{
	struct srv s = {0};
	struct kvc_entry e;
	struct kvc *kvc;

	srv_start_args(&s, "tcp", SMALL, NULL);
	kvc = connect_to(&s, "tcp");
	put_mib(kvc, "p", 1);
	cr_assert_eq(kvc_pin(kvc, "p", 1, true, NULL), 0);
	put_mib(kvc, "p", 2); /* RDMA PUT */
	cr_assert_eq(kvc_stat(kvc, "p", 1, &e), 0);
	cr_assert(e.pinned, "a rewrite (RDMA) keeps the pin");
	cr_assert_eq(kvc_put(kvc, "p", 1, "small", 5, NULL, NULL), 0); /* inline */
	cr_assert_eq(kvc_stat(kvc, "p", 1, &e), 0);
	cr_assert(e.pinned, "a rewrite (inline) keeps the pin");
	cr_assert_eq(counter(kvc, "pinned_key_bytes"), 5);
	cr_assert_eq(kvc_rename(kvc, "p", 1, "q", 1, false, NULL), 0);
	cr_assert_eq(kvc_stat(kvc, "q", 1, &e), 0);
	cr_assert(e.pinned, "a rename keeps the pin");
	cr_assert_eq(counter(kvc, "pinned_keys"), 1);
	fill_keys(kvc, "f", 30);
	cr_assert(exists(kvc, "q"));
	cr_assert_eq(kvc_delete(kvc, "q", 1, 0), 0);
	cr_assert_eq(counter(kvc, "pinned_keys"), 0, "a delete drops the pin");
	cr_assert_eq(counter(kvc, "pinned_key_bytes"), 0);
	kvc_close(kvc);
	srv_done(&s);
}
