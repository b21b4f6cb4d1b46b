/* SPDX-License-Identifier: MIT */
/*
 * Client library (src/client) against the real kv-server binary ($KV_SERVER),
 * over the tcp and shm providers and inline only ("none").  Every test
 * starts its own server on its own port (20000 + pid % 20000: criterion
 * forks a process per test) and verifies values byte for byte.
 *
 * Tests in the "slow" suites (1 GiB values) run only with KVFS_SLOW=1.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvfs/client.h"
#include "kvfs/util.h"
#include "kvfs/xfer.h"

#include "srv_proc.h"

static bool slow_enabled(void)
{
	const char *e = getenv("KVFS_SLOW");

	return e && *e && strcmp(e, "0");
}

/* ------------------------------------------------------------------ */
/* Every operation                                                     */
/* ------------------------------------------------------------------ */

static void stats_cb(void *arg, const char *name, uint64_t value)
{
	int *n = arg;

	(void)value;
	cr_assert_not_null(name);
	(*n)++;
}

static void t_ops(const char *prov)
{
	struct srv s = {0};
	struct kvc_entry e, e2;
	struct kvc_list l;
	struct kvc_limits lim;
	struct kvc_put_opts po = {0};
	char buf[64], longkey[KV_KEY_MAX + 1];
	uint64_t v;
	int n = 0;
	ssize_t got;

	srv_start(&s, prov);
	struct kvc *kvc = connect_to(&s, prov);

	kvc_limits(kvc, &lim);
	cr_assert(lim.rdma, "provider %s: RDMA expected (server %s)", prov, lim.server_provider);
	cr_assert_not_null(kvc_engine(kvc));
	cr_assert_gt(lim.max_value, 0);
	cr_assert_str_neq(lim.provider, "none");

	/* PUT / GET / STAT */
	po.mode = 0600;
	po.mtime_ns = 1234567890123LL;
	cr_assert_eq(kvc_put(kvc, "a/1", 3, "hello", 5, &po, &e), 0, "%s", kvc_strerror());
	cr_assert_eq(e.size, 5);
	cr_assert_neq(e.version, 0);
	got = kvc_get(kvc, "a/1", 3, 0, buf, sizeof(buf), NULL, &e2);
	cr_assert_eq(got, 5, "%s", kvc_strerror());
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	cr_assert_eq(e2.version, e.version);
	cr_assert_eq(e2.size, 5);
	cr_assert_eq(e2.mode & 07777, 0600);
	cr_assert_eq(e2.mtime_ns, 1234567890123LL);
	cr_assert_eq(kvc_get(kvc, "a/1", 3, 1, buf, 3, NULL, NULL), 3);
	cr_assert_eq(memcmp(buf, "ell", 3), 0, "offset read");
	cr_assert_eq(kvc_get(kvc, "a/1", 3, 5, buf, 3, NULL, NULL), 0, "read at the end");
	cr_assert_eq(kvc_get(kvc, "a/1", 3, 99, buf, 3, NULL, NULL), 0, "read past the end");
	cr_assert_eq(kvc_stat(kvc, "a/1", 3, &e2), 0);
	cr_assert_eq(e2.size, 5);
	cr_assert_eq(e2.version, e.version);

	/* Missing keys and bad keys */
	cr_assert_eq(kvc_get(kvc, "nope", 4, 0, buf, 8, NULL, NULL), -ENOENT);
	cr_assert_neq(strlen(kvc_strerror()), 0, "a message for ENOENT");
	cr_assert_eq(kvc_stat(kvc, "nope", 4, &e2), -ENOENT);
	cr_assert_eq(kvc_delete(kvc, "nope", 4, 0), -ENOENT);
	cr_assert_eq(kvc_put(kvc, "", 0, "x", 1, NULL, NULL), -EINVAL);
	cr_assert_eq(kvc_put(kvc, "a\0b", 3, "x", 1, NULL, NULL), -EINVAL);
	memset(longkey, 'k', sizeof(longkey));
	cr_assert_eq(kvc_put(kvc, longkey, sizeof(longkey), "x", 1, NULL, NULL), -ENAMETOOLONG);
	cr_assert_eq(kvc_put(kvc, longkey, KV_KEY_MAX, "x", 1, NULL, NULL), 0, "longest key: %s",
	             kvc_strerror());
	cr_assert_eq(kvc_delete(kvc, longkey, KV_KEY_MAX, 0), 0);

	/* SETATTR: version unchanged */
	cr_assert_eq(kvc_setattr(kvc, "a/1", 3,
	                         &(struct kvc_setattr_opts){.set = KVC_SET_MODE, .mode = 0640},
	                         &e2),
	             0, "%s", kvc_strerror());
	cr_assert_eq(e2.mode & 07777, 0640);
	cr_assert_eq(e2.mtime_ns, 1234567890123LL);
	cr_assert_eq(e2.version, e.version);
	cr_assert_eq(kvc_setattr(kvc, "a/1", 3,
	                         &(struct kvc_setattr_opts){.set = KVC_SET_MTIME, .mtime_ns = 42},
	                         &e2),
	             0);
	cr_assert_eq(e2.mode & 07777, 0640);
	cr_assert_eq(e2.mtime_ns, 42);
	cr_assert_eq(kvc_setattr(kvc, "nope", 4,
	                         &(struct kvc_setattr_opts){.set = KVC_SET_MODE, .mode = 0600},
	                         &e2),
	             -ENOENT);

	/* LIST: prefix, delimiter, pages */
	cr_assert_eq(kvc_put(kvc, "a/2", 3, "2", 1, NULL, NULL), 0);
	cr_assert_eq(kvc_put(kvc, "a/d/x", 5, "x", 1, NULL, NULL), 0);
	cr_assert_eq(kvc_put(kvc, "b", 1, "b", 1, NULL, NULL), 0);
	cr_assert_eq(kvc_list(kvc, "a/", "/", NULL, 0, &l), 0, "%s", kvc_strerror());
	cr_assert_eq(l.n_entries, 2);
	cr_assert_str_eq(l.entries[0].key, "a/1");
	cr_assert_str_eq(l.entries[1].key, "a/2");
	cr_assert_eq(l.entries[0].e.size, 5);
	cr_assert_eq(l.n_prefixes, 1);
	cr_assert_str_eq(l.prefixes[0], "a/d/");
	cr_assert_not(l.truncated);
	kvc_list_free(&l);
	cr_assert_eq(kvc_list(kvc, NULL, NULL, NULL, 2, &l), 0);
	cr_assert_eq(l.n_entries, 2);
	cr_assert(l.truncated);
	cr_assert_not_null(l.next_start_after);
	char next[64];
	snprintf(next, sizeof(next), "%s", l.next_start_after);
	kvc_list_free(&l);
	cr_assert_eq(kvc_list(kvc, NULL, NULL, next, 10, &l), 0);
	cr_assert_eq(l.n_entries, 2, "the rest: a/d/x and b");
	cr_assert_str_eq(l.entries[0].key, "a/d/x");
	cr_assert_str_eq(l.entries[1].key, "b");
	cr_assert_not(l.truncated);
	kvc_list_free(&l);

	/* RENAME */
	cr_assert_eq(kvc_rename(kvc, "a/2", 3, "c", 1, false, &v), 0, "%s", kvc_strerror());
	cr_assert_neq(v, 0);
	cr_assert_eq(kvc_stat(kvc, "a/2", 3, &e2), -ENOENT);
	cr_assert_eq(kvc_get(kvc, "c", 1, 0, buf, sizeof(buf), NULL, &e2), 1);
	cr_assert_eq(buf[0], '2');
	cr_assert_eq(e2.version, v);
	cr_assert_eq(kvc_rename(kvc, "c", 1, "b", 1, true, &v), -EEXIST);
	cr_assert_eq(kvc_rename(kvc, "zz", 2, "y", 1, false, &v), -ENOENT);

	/* DELETE */
	cr_assert_eq(kvc_delete(kvc, "c", 1, 0), 0);
	cr_assert_eq(kvc_stat(kvc, "c", 1, &e2), -ENOENT);

	/* STATS */
	cr_assert_eq(kvc_stats(kvc, stats_cb, &n), 0, "%s", kvc_strerror());
	cr_assert_gt(n, 0);

	kvc_close(kvc);
	srv_done(&s);
}

Test(client_tcp, every_operation, .timeout = 120)
{
	t_ops("tcp");
}

Test(client_shm, every_operation, .timeout = 120)
{
	t_ops("shm");
}

/* ------------------------------------------------------------------ */
/* Owner, type and extended attributes                                 */
/* ------------------------------------------------------------------ */

Test(client_tcp, owner_symlink_and_xattrs, .timeout = 120)
{
	struct srv s = {0};
	struct kvc_put_opts po = {.set_owner = true, .uid = 1000, .gid = 100};
	struct kvc_setattr_opts so = {.set = KVC_SET_UID | KVC_SET_GID, .uid = 7, .gid = 8};
	struct kvc_entry e;
	struct kvc_list l;
	char buf[128], big[70000];
	ssize_t n;

	srv_start(&s, "tcp");
	struct kvc *kvc = connect_to(&s, "tcp");

	/* owner: stored, kept by a PUT without one, changed by SETATTR */
	cr_assert_eq(kvc_put(kvc, "d/f", 3, "abc", 3, &po, &e), 0, "%s", kvc_strerror());
	cr_assert_eq(kvc_stat(kvc, "d/f", 3, &e), 0);
	cr_assert(e.has_owner);
	cr_assert_eq(e.uid, 1000);
	cr_assert_eq(e.gid, 100);
	cr_assert_eq(e.type, KVC_TYPE_FILE);
	cr_assert_eq(kvc_put(kvc, "d/f", 3, "abcd", 4, NULL, NULL), 0);
	cr_assert_eq(kvc_stat(kvc, "d/f", 3, &e), 0);
	cr_assert(e.has_owner, "a PUT without an owner keeps it");
	cr_assert_eq(e.uid, 1000);
	cr_assert_eq(kvc_setattr(kvc, "d/f", 3, &so, &e), 0, "%s", kvc_strerror());
	cr_assert_eq(e.uid, 7);
	cr_assert_eq(e.gid, 8);
	cr_assert_eq(kvc_put(kvc, "d/plain", 7, "x", 1, NULL, NULL), 0);
	cr_assert_eq(kvc_stat(kvc, "d/plain", 7, &e), 0);
	cr_assert_not(e.has_owner, "kvctl put and the like: no owner");

	/* a symbolic link: its type, in STAT and LIST */
	po.type = KVC_TYPE_SYMLINK;
	cr_assert_eq(kvc_put(kvc, "d/l", 3, "../t", 4, &po, NULL), 0, "%s", kvc_strerror());
	cr_assert_eq(kvc_stat(kvc, "d/l", 3, &e), 0);
	cr_assert_eq(e.type, KVC_TYPE_SYMLINK);
	cr_assert_eq(e.size, 4);
	cr_assert_eq(kvc_put(kvc, "d/bad", 5, "a\0b", 3, &po, NULL), -EINVAL, "NUL in a target");
	cr_assert_eq(kvc_list(kvc, "d/", "/", NULL, 0, &l), 0);
	cr_assert_eq(l.n_entries, 3);
	cr_assert_str_eq(l.entries[0].key, "d/f");
	cr_assert_eq(l.entries[0].e.uid, 7);
	cr_assert_str_eq(l.entries[1].key, "d/l");
	cr_assert_eq(l.entries[1].e.type, KVC_TYPE_SYMLINK);
	cr_assert_not(l.entries[2].e.has_owner);
	kvc_list_free(&l);

	/* extended attributes, as getxattr(2) and friends */
	cr_assert_eq(kvc_getxattr(kvc, "d/f", 3, "user.a", buf, sizeof(buf)), -ENODATA);
	cr_assert_eq(kvc_setxattr(kvc, "d/f", 3, "user.a", "hello", 5, 0), 0, "%s", kvc_strerror());
	cr_assert_eq(kvc_getxattr(kvc, "d/f", 3, "user.a", NULL, 0), 5, "size only");
	cr_assert_eq(kvc_getxattr(kvc, "d/f", 3, "user.a", buf, 2), -ERANGE);
	n = kvc_getxattr(kvc, "d/f", 3, "user.a", buf, sizeof(buf));
	cr_assert_eq(n, 5);
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	cr_assert_eq(kvc_setxattr(kvc, "d/f", 3, "user.a", "x", 1, KVC_XATTR_CREATE), -EEXIST);
	cr_assert_eq(kvc_setxattr(kvc, "d/f", 3, "user.b", "x", 1, KVC_XATTR_REPLACE), -ENODATA);
	cr_assert_eq(kvc_setxattr(kvc, "d/f", 3, "user.b", "", 0, 0), 0);
	cr_assert_eq(kvc_listxattr(kvc, "d/f", 3, NULL, 0), 14);
	cr_assert_eq(kvc_listxattr(kvc, "d/f", 3, buf, 5), -ERANGE);
	cr_assert_eq(kvc_listxattr(kvc, "d/f", 3, buf, sizeof(buf)), 14);
	cr_assert_eq(memcmp(buf, "user.a\0user.b\0", 14), 0);
	memset(big, 'v', sizeof(big));
	cr_assert_eq(kvc_setxattr(kvc, "d/f", 3, "user.c", big, 65537, 0), -E2BIG);
	cr_assert_eq(kvc_setxattr(kvc, "d/f", 3, "user.c", big, 65536, 0), -ENOSPC,
	             "past the key's 64 KiB: %s", kvc_strerror());
	cr_assert_eq(kvc_setxattr(kvc, "d/f", 3, "user.c", big, 60000, 0), 0);
	/* kept by a rewrite and a rename */
	cr_assert_eq(kvc_put(kvc, "d/f", 3, "new", 3, NULL, NULL), 0);
	cr_assert_eq(kvc_rename(kvc, "d/f", 3, "d/g", 3, false, NULL), 0);
	cr_assert_eq(kvc_getxattr(kvc, "d/g", 3, "user.c", NULL, 0), 60000);
	cr_assert_eq(kvc_removexattr(kvc, "d/g", 3, "user.c"), 0);
	cr_assert_eq(kvc_removexattr(kvc, "d/g", 3, "user.c"), -ENODATA);
	cr_assert_eq(kvc_getxattr(kvc, "d/g", 3, "user.a", buf, sizeof(buf)), 5);
	/* dropped on ask */
	po = (struct kvc_put_opts){.drop_xattrs = true};
	cr_assert_eq(kvc_put(kvc, "d/g", 3, "fresh", 5, &po, NULL), 0);
	cr_assert_eq(kvc_listxattr(kvc, "d/g", 3, NULL, 0), 0);
	cr_assert_eq(kvc_getxattr(kvc, "nope", 4, "user.a", buf, sizeof(buf)), -ENOENT);
	cr_assert_eq(kvc_setxattr(kvc, "nope", 4, "user.a", "1", 1, 0), -ENOENT);

	kvc_close(kvc);
	srv_done(&s);
}

/* ------------------------------------------------------------------ */
/* Value sizes, plain memory and zero copy                             */
/* ------------------------------------------------------------------ */

static const uint64_t sizes[] = {
        0, 1, 4096, 65536, 65537, MIB + 1, 9 * MIB + 3, 256 * MIB,
};

static void roundtrip_copy(struct kvc *kvc, uint64_t len, uint64_t seed)
{
	char key[64], what[96];
	uint8_t *val = xmalloc(len), *out = xmalloc(len + 16);
	struct kvc_entry e, e2;
	ssize_t got;

	snprintf(key, sizeof(key), "copy/%llu", (unsigned long long)len);
	snprintf(what, sizeof(what), "kvc_put/kvc_get %llu bytes", (unsigned long long)len);
	fill(val, len, seed);
	cr_assert_eq(kvc_put(kvc, key, strlen(key), val, len, NULL, &e), 0, "%s: %s", what,
	             kvc_strerror());
	cr_assert_eq(e.size, len);
	memset(out, 0xee, len + 16);
	got = kvc_get(kvc, key, strlen(key), 0, out, len + 16, NULL, &e2);
	cr_assert_eq(got, (ssize_t)len, "%s: got %zd: %s", what, got, kvc_strerror());
	cr_assert_eq(e2.size, len);
	cr_assert_eq(e2.version, e.version);
	check_bytes(out, val, len, what);
	cr_assert_eq(out[len], 0xee, "%s: wrote past the value", what);
	if (len > 10) {
		/* A piece in the middle. */
		uint64_t off = len / 3, n = len / 2;

		got = kvc_get(kvc, key, strlen(key), off, out, n, NULL, NULL);
		cr_assert_eq(got, (ssize_t)n, "%s at %llu: %s", what, (unsigned long long)off,
		             kvc_strerror());
		check_bytes(out, val + off, n, what);
	}
	free(val);
	free(out);
}

struct async_res {
	atomic_int done;
	ssize_t result;
	struct kvc_entry e;
};

static void async_cb(void *arg, ssize_t result, const struct kvc_entry *e)
{
	struct async_res *a = arg;

	a->result = result;
	if (e)
		a->e = *e;
	atomic_store(&a->done, 1);
}

static void async_wait(struct async_res *a)
{
	for (int i = 0; i < 120000 && !atomic_load(&a->done); i++)
		usleep(1000);
	cr_assert(atomic_load(&a->done), "async call never completed");
}

static void roundtrip_mr(struct kvc *kvc, uint64_t len, uint64_t seed, bool async)
{
	struct xfer_engine *eng = kvc_engine(kvc);
	struct xfer_mr *src, *dst;
	struct kvc_entry e, e2;
	char key[64], what[96];
	uint64_t half;
	ssize_t got;
	int r;

	cr_assert_not_null(eng);
	snprintf(key, sizeof(key), "mr/%llu", (unsigned long long)len);
	snprintf(what, sizeof(what), "%s %llu bytes", async ? "async _mr" : "_mr",
	         (unsigned long long)len);
	/* Registered at an offset of 8 to check that offsets are honoured. */
	r = xfer_buf_alloc(eng, len + 8, XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ, &src);
	cr_assert_eq(r, 0, "xfer_buf_alloc: %s", strerror(-r));
	r = xfer_buf_alloc(eng, len + 16,
	                   XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_WRITE | XFER_ACCESS_REMOTE_READ,
	                   &dst);
	cr_assert_eq(r, 0);
	fill((uint8_t *)xfer_mr_addr(src) + 8, len, seed);
	memset(xfer_mr_addr(dst), 0xee, len + 16);

	if (async) {
		struct async_res a = {0};

		r = kvc_put_mr_async(kvc, key, strlen(key), src, 8, len, NULL, async_cb, &a);
		cr_assert_eq(r, 0, "%s: %s", what, kvc_strerror());
		async_wait(&a);
		cr_assert_eq(a.result, 0, "%s: %zd", what, a.result);
		e = a.e;
	} else {
		r = kvc_put_mr(kvc, key, strlen(key), src, 8, len, NULL, &e);
		cr_assert_eq(r, 0, "%s: %s", what, kvc_strerror());
	}
	cr_assert_eq(e.size, len);

	/* Two pieces: the first half at dst+0, the rest at dst+half+8. */
	half = len / 2;
	struct xfer_sge sg[2] = {
	        {.mr = dst, .off = 0, .len = half},
	        {.mr = dst, .off = half + 8, .len = len - half},
	};
	if (async) {
		struct async_res a = {0};

		r = kvc_get_mr_async(kvc, key, strlen(key), 0, sg, 2, NULL, async_cb, &a);
		cr_assert_eq(r, 0, "%s: %s", what, kvc_strerror());
		async_wait(&a);
		got = a.result;
		e2 = a.e;
	} else {
		got = kvc_get_mr(kvc, key, strlen(key), 0, sg, 2, NULL, &e2);
	}
	cr_assert_eq(got, (ssize_t)len, "%s: got %zd: %s", what, got, kvc_strerror());
	cr_assert_eq(e2.version, e.version);
	check_bytes(xfer_mr_addr(dst), (uint8_t *)xfer_mr_addr(src) + 8, half, what);
	check_bytes((uint8_t *)xfer_mr_addr(dst) + half + 8,
	            (uint8_t *)xfer_mr_addr(src) + 8 + half, len - half, what);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(((uint8_t *)xfer_mr_addr(dst))[half + (uint64_t)i], 0xee,
		             "%s: gap between pieces written", what);
	xfer_mr_dereg(src);
	xfer_mr_dereg(dst);
}

static void t_sizes(const char *prov, bool mr)
{
	struct srv s = {0};

	srv_start_args(&s, prov, "1G", NULL);
	struct kvc *kvc = connect_to(&s, prov);

	for (size_t i = 0; i < KV_ARRAY_SIZE(sizes); i++) {
		if (mr) {
			roundtrip_mr(kvc, sizes[i], i + 100, false);
			if (sizes[i] <= 9 * MIB)
				roundtrip_mr(kvc, sizes[i], i + 200, true);
		} else {
			roundtrip_copy(kvc, sizes[i], i + 1);
		}
	}
	kvc_close(kvc);
	srv_done(&s);
}

Test(client_tcp, sizes_copy, .timeout = 300)
{
	t_sizes("tcp", false);
}

Test(client_shm, sizes_copy, .timeout = 300)
{
	t_sizes("shm", false);
}

Test(client_tcp, sizes_zero_copy, .timeout = 300)
{
	t_sizes("tcp", true);
}

Test(client_shm, sizes_zero_copy, .timeout = 300)
{
	t_sizes("shm", true);
}

/* A small bounce buffer: values above it use a temporary registration. */
Test(client_tcp, small_bounce_buffer, .timeout = 120)
{
	struct srv s = {0};
	struct kvc_opts o;
	struct kvc *kvc;

	srv_start(&s, "tcp");
	kvc_opts_init(&o);
	o.server = s.addr;
	o.provider = "tcp";
	o.bounce_size = 128 * 1024;
	cr_assert_eq(kvc_connect(&o, &kvc), 0, "%s", kvc_strerror());
	roundtrip_copy(kvc, 100 * 1024, 7);
	roundtrip_copy(kvc, 3 * MIB + 5, 8);
	kvc_close(kvc);
	srv_done(&s);
}

static void t_slow(const char *prov)
{
	struct srv s = {0};

	if (!slow_enabled())
		cr_skip_test("1 GiB values: set KVFS_SLOW=1 (meson test --suite slow)");
	srv_start_args(&s, prov, "3G", NULL);
	struct kvc *kvc = connect_opts(&s, prov, 300000, NULL);

	roundtrip_copy(kvc, KV_GIB, 5);
	roundtrip_mr(kvc, KV_GIB, 6, false);
	kvc_close(kvc);
	srv_done(&s);
}

Test(slow_tcp, one_gib, .timeout = 900)
{
	t_slow("tcp");
}

Test(slow_shm, one_gib, .timeout = 900)
{
	t_slow("shm");
}

/* ------------------------------------------------------------------ */
/* Concurrency                                                         */
/* ------------------------------------------------------------------ */

struct worker {
	struct kvc *kvc;
	const uint64_t *sizes; /* cycled through */
	size_t nsizes;
	int id;
	int iters;
	int failures;
	char err[256];
};

static const uint64_t worker_sizes[] = {100, 4096, 70000, MIB + 1, 3 * MIB, 9 * MIB + 1};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint8_t *val = malloc(10 * MIB), *out = malloc(10 * MIB);

	for (int i = 0; i < w->iters && !w->failures; i++) {
		uint64_t len = w->sizes[(size_t)(i + w->id) % w->nsizes];
		uint64_t seed = (uint64_t)w->id * 1000 + (uint64_t)i;
		char key[32];
		ssize_t got;
		int r;

		snprintf(key, sizeof(key), "w%d/%d", w->id, i % 3);
		fill(val, len, seed);
		r = kvc_put(w->kvc, key, strlen(key), val, len, NULL, NULL);
		if (r) {
			snprintf(w->err, sizeof(w->err), "put %s %llu: %s", key,
			         (unsigned long long)len, kvc_strerror());
			w->failures++;
			break;
		}
		got = kvc_get(w->kvc, key, strlen(key), 0, out, 10 * MIB, NULL, NULL);
		if (got != (ssize_t)len || memcmp(out, val, len)) {
			snprintf(w->err, sizeof(w->err), "get %s %llu: got %zd %s", key,
			         (unsigned long long)len, got,
			         got < 0 ? kvc_strerror() : "(bytes differ)");
			w->failures++;
		}
	}
	free(val);
	free(out);
	return NULL;
}

static void run_workers(struct kvc **kvcs, int nkvc, int nthreads, int iters, const uint64_t *lens,
                        size_t nlens)
{
	pthread_t th[32];
	struct worker w[32];

	for (int i = 0; i < nthreads; i++) {
		w[i] = (struct worker){.kvc = kvcs[i % nkvc],
		                       .sizes = lens,
		                       .nsizes = nlens,
		                       .id = i,
		                       .iters = iters};
		cr_assert_eq(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < nthreads; i++)
		cr_assert_eq(w[i].failures, 0, "worker %d: %s", i, w[i].err);
}

static void t_threads(const char *prov, int nkvc)
{
	struct srv s = {0};
	struct kvc *kvcs[4];

	srv_start_args(&s, prov, "2G", NULL);
	for (int i = 0; i < nkvc; i++)
		kvcs[i] = connect_to(&s, prov);
	run_workers(kvcs, nkvc, 16, 12, worker_sizes, KV_ARRAY_SIZE(worker_sizes));
	for (int i = 0; i < nkvc; i++)
		kvc_close(kvcs[i]);
	srv_done(&s);
}

Test(client_tcp, threads16_one_kvc, .timeout = 300)
{
	t_threads("tcp", 1);
}

Test(client_shm, threads16_one_kvc, .timeout = 300)
{
	t_threads("shm", 1);
}

/*
 * 32 threads on one inline-only connection with values up to 1 MiB: the
 * client library writes many queued frames per sendmsg() and the socket
 * takes them in pieces that end mid-frame; kv-server answers the frames of
 * one read together until 64 KiB have collected, then at once.  Every value
 * read back must be the one written.
 */
Test(client_tcp, threads32_inline_batched, .timeout = 300)
{
	static const uint64_t lens[] = {1, 100, 4096, 65536, 70000, 300000, MIB};
	const char *extra[] = {"--max-inline", "1M", NULL};
	struct srv s = {0};
	struct kvc *kvc;

	srv_start_args(&s, "tcp", "1G", extra);
	kvc = connect_to(&s, "none");
	run_workers(&kvc, 1, 32, 10, lens, KV_ARRAY_SIZE(lens));
	kvc_close(kvc);
	srv_done(&s);
}

Test(client_tcp, threads16_four_kvcs, .timeout = 300)
{
	t_threads("tcp", 4);
}

Test(client_shm, threads16_four_kvcs, .timeout = 300)
{
	t_threads("shm", 4);
}

/* ------------------------------------------------------------------ */
/* Conditions: compare-and-swap, if_absent, rename                     */
/* ------------------------------------------------------------------ */

static void t_conditions(const char *prov)
{
	struct srv s = {0};
	struct kvc_put_opts po = {0};
	struct kvc_get_opts go = {0};
	struct kvc_entry e1, e2, e3;
	uint8_t *big = xmalloc(2 * MIB), buf[16];

	srv_start(&s, prov);
	struct kvc *kvc = connect_to(&s, prov);

	cr_assert_eq(kvc_put(kvc, "k", 1, "v1", 2, NULL, &e1), 0);
	po.if_absent = true;
	cr_assert_eq(kvc_put(kvc, "k", 1, "v2", 2, &po, NULL), -EEXIST);
	cr_assert_eq(kvc_put(kvc, "new", 3, "n", 1, &po, NULL), 0, "if_absent on a new key");
	po.if_absent = false;

	po.if_version = e1.version;
	cr_assert_eq(kvc_put(kvc, "k", 1, "v2", 2, &po, &e2), 0, "CAS: %s", kvc_strerror());
	cr_assert_neq(e2.version, e1.version);
	cr_assert_eq(kvc_put(kvc, "k", 1, "v3", 2, &po, NULL), -ESTALE, "stale CAS");
	/* CAS over RDMA too */
	fill(big, 2 * MIB, 3);
	cr_assert_eq(kvc_put(kvc, "k", 1, big, 2 * MIB, &po, NULL), -ESTALE, "stale CAS, RDMA");
	po.if_version = e2.version;
	cr_assert_eq(kvc_put(kvc, "k", 1, big, 2 * MIB, &po, &e3), 0, "CAS, RDMA: %s",
	             kvc_strerror());
	po.if_version = 12345;
	cr_assert_eq(kvc_put(kvc, "absent", 6, "x", 1, &po, NULL), -ENOENT, "CAS on a missing key");
	po.if_version = 0;
	po.if_absent = true;
	po.if_version = 1;
	cr_assert_eq(kvc_put(kvc, "k", 1, "x", 1, &po, NULL), -EINVAL, "if_absent + if_version");

	go.if_version = e1.version;
	cr_assert_eq(kvc_get(kvc, "k", 1, 0, buf, sizeof(buf), &go, NULL), -ESTALE);
	go.if_version = e3.version;
	cr_assert_eq(kvc_get(kvc, "k", 1, 0, buf, sizeof(buf), &go, NULL), (ssize_t)sizeof(buf));
	cr_assert_eq(memcmp(buf, big, sizeof(buf)), 0);
	cr_assert_eq(kvc_delete(kvc, "k", 1, e1.version), -ESTALE);
	cr_assert_eq(kvc_delete(kvc, "k", 1, e3.version), 0);
	free(big);
	kvc_close(kvc);
	srv_done(&s);
}

Test(client_tcp, conditions, .timeout = 120)
{
	t_conditions("tcp");
}

Test(client_shm, conditions, .timeout = 120)
{
	t_conditions("shm");
}

/* Readers of a key replaced by RENAME see a whole value, old or new. */
struct renamer {
	struct kvc *kvc;
	atomic_int stop;
	int renames;
	int torn;
	int reads;
	char err[256];
};

#define RN_LEN (200 * 1024)

static void *rename_reader(void *arg)
{
	struct renamer *rn = arg;
	uint8_t *out = malloc(RN_LEN);

	while (!atomic_load(&rn->stop)) {
		ssize_t got = kvc_get(rn->kvc, "target", 6, 0, out, RN_LEN, NULL, NULL);

		if (got == -ENOENT)
			continue;
		if (got != RN_LEN) {
			snprintf(rn->err, sizeof(rn->err), "get: %zd %s", got, kvc_strerror());
			rn->torn++;
			break;
		}
		for (size_t i = 1; i < RN_LEN; i++) {
			if (out[i] != out[0]) {
				snprintf(rn->err, sizeof(rn->err), "torn value at byte %zu", i);
				rn->torn++;
				break;
			}
		}
		rn->reads++;
	}
	free(out);
	return NULL;
}

static void t_rename(const char *prov)
{
	struct srv s = {0};
	struct renamer rn = {0};
	uint8_t *val = xmalloc(RN_LEN);
	pthread_t th;

	srv_start(&s, prov);
	rn.kvc = connect_to(&s, prov);
	memset(val, 'a', RN_LEN);
	cr_assert_eq(kvc_put(rn.kvc, "target", 6, val, RN_LEN, NULL, NULL), 0);
	cr_assert_eq(pthread_create(&th, NULL, rename_reader, &rn), 0);
	for (int i = 0; i < 60; i++) {
		memset(val, 'b' + i % 20, RN_LEN);
		cr_assert_eq(kvc_put(rn.kvc, "tmp", 3, val, RN_LEN, NULL, NULL), 0);
		cr_assert_eq(kvc_rename(rn.kvc, "tmp", 3, "target", 6, false, NULL), 0, "%s",
		             kvc_strerror());
		rn.renames++;
	}
	atomic_store(&rn.stop, 1);
	pthread_join(th, NULL);
	cr_assert_eq(rn.torn, 0, "%s", rn.err);
	cr_assert_gt(rn.reads, 0);

	/* no_overwrite */
	cr_assert_eq(kvc_put(rn.kvc, "tmp", 3, "x", 1, NULL, NULL), 0);
	cr_assert_eq(kvc_rename(rn.kvc, "tmp", 3, "target", 6, true, NULL), -EEXIST);
	cr_assert_eq(kvc_stat(rn.kvc, "tmp", 3, NULL), 0, "src kept after EEXIST");
	cr_assert_eq(kvc_rename(rn.kvc, "tmp", 3, "fresh", 5, true, NULL), 0);
	cr_assert_eq(kvc_stat(rn.kvc, "tmp", 3, NULL), -ENOENT);
	free(val);
	kvc_close(rn.kvc);
	srv_done(&s);
}

Test(client_tcp, rename_atomic, .timeout = 120)
{
	t_rename("tcp");
}

Test(client_shm, rename_atomic, .timeout = 120)
{
	t_rename("shm");
}

/* ------------------------------------------------------------------ */
/* Authentication                                                      */
/* ------------------------------------------------------------------ */

static void write_token(const char *path, const char *tok)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f);
	fprintf(f, "%s\n", tok);
	fclose(f);
	chmod(path, 0600);
}

static void t_auth(const char *prov)
{
	struct srv s = {0};
	char good[64], bad[64];
	struct kvc_opts o;
	struct kvc *kvc = NULL;
	uint8_t buf[8];
	int r;

	snprintf(good, sizeof(good), "/tmp/kvfs-test-token-%d", (int)getpid());
	snprintf(bad, sizeof(bad), "/tmp/kvfs-test-token-bad-%d", (int)getpid());
	write_token(good, "correct horse battery staple");
	write_token(bad, "wrong token, long enough");
	const char *extra[] = {"--auth-token-file", good, NULL};
	srv_start_args(&s, prov, NULL, extra);

	kvc = connect_opts(&s, prov, 10000, good);
	cr_assert_eq(kvc_put(kvc, "k", 1, "secret", 6, NULL, NULL), 0, "%s", kvc_strerror());
	cr_assert_eq(kvc_get(kvc, "k", 1, 0, buf, sizeof(buf), NULL, NULL), 6);
	kvc_close(kvc);

	kvc_opts_init(&o);
	o.server = s.addr;
	o.provider = prov;
	o.timeout_ms = 5000;
	o.auth_token_file = bad;
	kvc = NULL;
	r = kvc_connect(&o, &kvc);
	cr_assert_eq(r, -EACCES, "wrong token: %d %s", r, kvc_strerror());
	cr_assert_null(kvc);
	cr_assert_not_null(strstr(kvc_strerror(), "auth"), "message: %s", kvc_strerror());

	o.auth_token_file = NULL;
	r = kvc_connect(&o, &kvc);
	cr_assert_eq(r, -EACCES, "no token: %d %s", r, kvc_strerror());
	cr_assert_not_null(strstr(kvc_strerror(), "auth_token_file"), "message: %s",
	                   kvc_strerror());

	o.auth_token_file = "/nonexistent/kvfs-token";
	r = kvc_connect(&o, &kvc);
	cr_assert_eq(r, -ENOENT, "missing token file: %d %s", r, kvc_strerror());

	unlink(good);
	unlink(bad);
	srv_done(&s);
}

Test(client_tcp, auth, .timeout = 60)
{
	t_auth("tcp");
}

Test(client_shm, auth, .timeout = 60)
{
	t_auth("shm");
}

/* ------------------------------------------------------------------ */
/* Failures: killed server, restart, nothing listening                 */
/* ------------------------------------------------------------------ */

static void t_killed(const char *prov)
{
	struct srv s = {0};
	uint8_t *big = xmalloc(4 * MIB), buf[8];
	struct kvc_get_opts go = {.timeout_ms = 2000};
	struct kvc_put_opts po = {.timeout_ms = 2000};
	uint64_t t0, ms;
	ssize_t r;

	srv_start(&s, prov);
	struct kvc *kvc = connect_opts(&s, prov, 2000, NULL);

	fill(big, 4 * MIB, 1);
	cr_assert_eq(kvc_put(kvc, "k", 1, big, 4 * MIB, NULL, NULL), 0, "%s", kvc_strerror());
	srv_kill(&s);

	t0 = kv_now_ms();
	r = kvc_get(kvc, "k", 1, 0, buf, sizeof(buf), &go, NULL);
	ms = kv_now_ms() - t0;
	cr_assert_lt(r, 0, "GET against a killed server");
	cr_assert_leq(ms, 2500, "GET took %llu ms, deadline 2000", (unsigned long long)ms);
	cr_log_info("killed server, GET: %zd (%s) in %llu ms", r, kvc_strerror(),
	            (unsigned long long)ms);

	t0 = kv_now_ms();
	r = kvc_put(kvc, "k", 1, big, 4 * MIB, &po, NULL);
	ms = kv_now_ms() - t0;
	cr_assert_lt(r, 0, "PUT against a killed server");
	cr_assert_leq(ms, 2500, "PUT took %llu ms, deadline 2000", (unsigned long long)ms);
	cr_assert_neq(strlen(kvc_strerror()), 0);
	free(big);
	kvc_close(kvc);
	unlink(s.log);
}

Test(client_tcp, killed_server, .timeout = 60)
{
	t_killed("tcp");
}

Test(client_shm, killed_server, .timeout = 60)
{
	t_killed("shm");
}

static void t_restart(const char *prov, bool hard)
{
	struct srv s = {0};
	uint8_t *big = xmalloc(4 * MIB), *out = xmalloc(4 * MIB), buf[8];
	ssize_t got;

	srv_start(&s, prov);
	struct kvc *kvc = connect_opts(&s, prov, 15000, NULL);

	fill(big, 4 * MIB, 2);
	cr_assert_eq(kvc_put(kvc, "k", 1, big, 4 * MIB, NULL, NULL), 0, "%s", kvc_strerror());
	if (hard)
		srv_kill(&s);
	else
		srv_stop(&s);
	srv_start(&s, prov); /* same port */

	/* The store is new: the key is gone, and the same kvc works again. */
	got = kvc_get(kvc, "k", 1, 0, buf, sizeof(buf), NULL, NULL);
	cr_assert_eq(got, -ENOENT, "after restart: %zd %s", got, kvc_strerror());
	cr_assert_eq(kvc_put(kvc, "k", 1, big, 4 * MIB, NULL, NULL), 0, "RDMA after restart: %s",
	             kvc_strerror());
	got = kvc_get(kvc, "k", 1, 0, out, 4 * MIB, NULL, NULL);
	cr_assert_eq(got, (ssize_t)(4 * MIB), "%s", kvc_strerror());
	check_bytes(out, big, 4 * MIB, "after restart");
	free(big);
	free(out);
	kvc_close(kvc);
	srv_done(&s);
}

Test(client_tcp, restart_same_port, .timeout = 120)
{
	t_restart("tcp", false);
}

Test(client_shm, restart_same_port, .timeout = 120)
{
	t_restart("shm", false);
}

Test(client_tcp, restart_after_kill, .timeout = 120)
{
	t_restart("tcp", true);
}

Test(client_shm, restart_after_kill, .timeout = 120)
{
	t_restart("shm", true);
}

/*
 * A restart is visible (issue 21, "Restart visible"): the restarted server
 * is another instance, the client starts a new epoch, says so once, and
 * never takes a version of the old instance for one of the new, although
 * the new store counts its versions from 1 again and so hands out the same
 * numbers for other values.
 */
static void restarted_cb(void *arg, uint64_t epoch)
{
	atomic_uint_fast64_t *seen = arg;

	atomic_store(seen, epoch);
}

/* Lines of @path containing @needle. */
static int count_lines(const char *path, const char *needle)
{
	char line[1024];
	FILE *f = fopen(path, "r");
	int n = 0;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

static void t_restart_visible(const char *prov, size_t len)
{
	struct srv s = {0};
	struct kvc_opts o;
	struct kvc *kvc = NULL;
	struct kvc_entry e1, e2, e;
	struct kvc_get_opts go = {0};
	struct kvc_put_opts po = {0};
	atomic_uint_fast64_t seen = 0;
	uint8_t *a = xmalloc(len), *b = xmalloc(len), *out = xmalloc(len);
	uint64_t inst1 = 0, inst2 = 0;
	char log[96], needle[128];
	int saved, fd;
	ssize_t got;

	srv_start(&s, prov);
	kvc_opts_init(&o);
	o.server = s.addr;
	o.provider = prov;
	o.timeout_ms = 15000;
	o.on_restart = restarted_cb;
	o.on_restart_arg = &seen;
	cr_assert_eq(kvc_connect(&o, &kvc), 0, "%s", kvc_strerror());
	cr_assert_eq(kvc_server_epoch(kvc, &inst1), 1);
	cr_assert_neq(inst1, 0, "the server announced no instance");
	cr_assert_eq(counter(kvc, "instance_id"), inst1, "STATS and HELLO disagree");

	fill(a, len, 5);
	fill(b, len, 6);
	cr_assert_eq(kvc_put(kvc, "k", 1, a, len, NULL, &e1), 0, "%s", kvc_strerror());
	cr_assert_eq(e1.epoch, 1);

	srv_kill(&s);
	srv_start(&s, prov); /* same port, new process: empty store */
	/* the reconnect's warning goes to stderr: catch it */
	snprintf(log, sizeof(log), "/tmp/kvfs-test-restart-%d.log", (int)getpid());
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	cr_assert_geq(fd, 0);
	saved = dup(2);
	dup2(fd, 2);
	close(fd);

	cr_assert_eq(kvc_stat(kvc, "k", 1, &e), -ENOENT, "%s", kvc_strerror());
	cr_assert_eq(kvc_server_epoch(kvc, &inst2), 2, "the restart was not seen");
	cr_assert_neq(inst2, inst1);
	cr_assert_eq(atomic_load(&seen), 2, "on_restart was not called with the new epoch");
	cr_assert_eq(counter(kvc, "instance_id"), inst2);

	/* The new store hands out the old numbers again: */
	cr_assert_eq(kvc_put(kvc, "k", 1, b, len, NULL, &e2), 0, "%s", kvc_strerror());
	cr_assert_eq(e2.version, e1.version, "versions did not start again from 1");
	cr_assert_eq(e2.epoch, 2);
	/* ... yet a version of the old epoch names nothing here. */
	go.if_version = e1.version;
	go.if_epoch = e1.epoch;
	memset(out, 0, len);
	got = kvc_get(kvc, "k", 1, 0, out, len, &go, &e);
	cr_assert_eq(got, -ESTALE, "GET pinned to the old instance's version: %zd %s", got,
	             kvc_strerror());
	cr_assert_not_null(strstr(kvc_strerror(), "restarted"), "%s", kvc_strerror());
	po.if_version = e1.version;
	po.if_epoch = e1.epoch;
	cr_assert_eq(kvc_put(kvc, "k", 1, a, len, &po, NULL), -ESTALE, "%s", kvc_strerror());
	/* the same version in the new epoch is the new value */
	go.if_epoch = e2.epoch;
	got = kvc_get(kvc, "k", 1, 0, out, len, &go, &e);
	cr_assert_eq(got, (ssize_t)len, "%s", kvc_strerror());
	check_bytes(out, b, len, "the value stored after the restart");
	cr_assert_eq(e.epoch, 2);

	dup2(saved, 2);
	close(saved);
	snprintf(needle, sizeof(needle),
	         "kv-server at %s restarted (instance %016llx, was %016llx)", s.addr,
	         (unsigned long long)inst2, (unsigned long long)inst1);
	cr_assert_eq(count_lines(log, needle), 1, "want one warning with: %s", needle);
	unlink(log);
	kvc_close(kvc);
	srv_done(&s);
	free(a);
	free(b);
	free(out);
}

Test(client_tcp, restart_visible, .timeout = 120)
{
	t_restart_visible("tcp", 4 * MIB);
}

Test(client_shm, restart_visible, .timeout = 120)
{
	t_restart_visible("shm", 4 * MIB);
}

Test(client, restart_visible_inline, .timeout = 120)
{
	t_restart_visible("none", 1000);
}

Test(client, nothing_listening, .timeout = 30)
{
	struct kvc_opts o;
	struct kvc *kvc = NULL;
	char addr[32];
	int r;

	snprintf(addr, sizeof(addr), "127.0.0.1:%d", 20000 + getpid() % 20000);
	kvc_opts_init(&o);
	o.server = addr;
	o.provider = "none";
	o.timeout_ms = 2000;
	r = kvc_connect(&o, &kvc);
	cr_assert_eq(r, -ECONNREFUSED, "%d %s", r, kvc_strerror());
	cr_assert_null(kvc);
	cr_assert_not_null(strstr(kvc_strerror(), addr), "message names the server: %s",
	                   kvc_strerror());

	o.server = "no-such-host.invalid:1";
	r = kvc_connect(&o, &kvc);
	cr_assert_lt(r, 0);
	o.server = "127.0.0.1:notaport";
	cr_assert_eq(kvc_connect(&o, &kvc), -EINVAL);
}

/* ------------------------------------------------------------------ */
/* Inline only                                                         */
/* ------------------------------------------------------------------ */

static void t_none(const char *srv_prov)
{
	struct srv s = {0};
	const char *extra[] = {"--max-inline", "1M", NULL};
	uint64_t big = 256 * MIB;
	uint8_t *val = xmalloc(big), *out = xmalloc(big + 1);
	struct kvc_limits lim;
	struct kvc_entry e;
	ssize_t got;
	int r;

	srv_start_args(&s, srv_prov, "1G", extra);
	struct kvc *kvc = connect_to(&s, "none");
	struct kvc *rdma = connect_to(&s, srv_prov);

	kvc_limits(kvc, &lim);
	cr_assert_not(lim.rdma);
	cr_assert_str_eq(lim.provider, "none");
	cr_assert_eq(lim.max_inline, MIB);
	cr_assert_null(kvc_engine(kvc));

	/* Up to max_inline both ways, inline. */
	roundtrip_copy(kvc, 0, 1);
	roundtrip_copy(kvc, 1, 2);
	roundtrip_copy(kvc, 4096, 3);
	roundtrip_copy(kvc, MIB, 4);

	/* Larger values: written with RDMA by another client, read inline in
	 * pieces, byte for byte. */
	for (uint64_t len = MIB + 1; len <= big; len = len == MIB + 1 ? big : big + 1) {
		fill(val, len, len);
		cr_assert_eq(kvc_put(rdma, "big", 3, val, len, NULL, &e), 0, "%s", kvc_strerror());
		memset(out, 0xee, len + 1);
		got = kvc_get(kvc, "big", 3, 0, out, len + 1, NULL, NULL);
		cr_assert_eq(got, (ssize_t)len, "inline-only GET of %llu: %zd %s",
		             (unsigned long long)len, got, kvc_strerror());
		check_bytes(out, val, len, "inline-only GET in pieces");
		cr_assert_eq(out[len], 0xee);
		got = kvc_get(kvc, "big", 3, 12345, out, 3 * MIB, NULL, NULL);
		cr_assert_eq(got, (ssize_t)KV_MIN(3 * MIB, len - 12345));
		check_bytes(out, val + 12345, (size_t)got, "inline-only GET at an offset");
	}

	/* A PUT above max_inline cannot be atomic without RDMA: refused, clearly. */
	r = kvc_put(kvc, "big2", 4, val, MIB + 1, NULL, NULL);
	cr_assert_eq(r, -EFBIG, "%d %s", r, kvc_strerror());
	cr_assert_not_null(strstr(kvc_strerror(), "RDMA"), "%s", kvc_strerror());
	kvc_close(rdma);
	kvc_close(kvc);
	free(val);
	free(out);
	srv_done(&s);
}

Test(client_tcp, provider_none, .timeout = 300)
{
	t_none("tcp");
}

Test(client_shm, provider_none, .timeout = 300)
{
	t_none("shm");
}

/* A server without RDMA: a tcp client falls back to inline values. */
Test(client, server_provider_none, .timeout = 60)
{
	struct srv s = {0};
	struct kvc_limits lim;
	uint8_t val[4096], out[4096];

	srv_start(&s, "none");
	struct kvc *kvc = connect_to(&s, "tcp");

	kvc_limits(kvc, &lim);
	cr_assert_not(lim.rdma);
	cr_assert_null(kvc_engine(kvc));
	fill(val, sizeof(val), 9);
	cr_assert_eq(kvc_put(kvc, "k", 1, val, sizeof(val), NULL, NULL), 0, "%s", kvc_strerror());
	cr_assert_eq(kvc_get(kvc, "k", 1, 0, out, sizeof(out), NULL, NULL), (ssize_t)sizeof(out));
	check_bytes(out, val, sizeof(val), "inline fallback");
	kvc_close(kvc);
	srv_done(&s);
}

/* A client with a deadline shorter than a slow request: the call returns
 * -ETIMEDOUT on time and the connection keeps working for the next call. */
Test(client_tcp, deadline_while_server_stopped, .timeout = 60)
{
	struct srv s = {0};
	struct kvc_get_opts go = {.timeout_ms = 500};
	uint8_t buf[8];
	uint64_t t0, ms;
	ssize_t r;

	srv_start(&s, "tcp");
	struct kvc *kvc = connect_opts(&s, "tcp", 5000, NULL);

	cr_assert_eq(kvc_put(kvc, "k", 1, "abc", 3, NULL, NULL), 0);
	kill(s.pid, SIGSTOP);
	t0 = kv_now_ms();
	r = kvc_get(kvc, "k", 1, 0, buf, sizeof(buf), &go, NULL);
	ms = kv_now_ms() - t0;
	kill(s.pid, SIGCONT);
	cr_assert_eq(r, -ETIMEDOUT, "%zd %s", r, kvc_strerror());
	cr_assert_leq(ms, 1000, "took %llu ms for a 500 ms deadline", (unsigned long long)ms);
	cr_assert_eq(kvc_get(kvc, "k", 1, 0, buf, sizeof(buf), NULL, NULL), 3, "%s",
	             kvc_strerror());
	kvc_close(kvc);
	srv_done(&s);
}

/* kvc_stat_dir(): a file, a directory with a marker, one without, and a
 * missing name, in one round trip each (issue 23: a new file's lookup). */
Test(client, stat_dir_tells_files_and_directories)
{
	struct srv s = {0};
	struct kvc_entry e;
	struct kvc *kvc;
	uint64_t stats0;

	srv_start(&s, "none");
	kvc = connect_to(&s, "none");
	cr_assert_eq(kvc_put(kvc, "f", 1, "x", 1, NULL, NULL), 0);
	cr_assert_eq(kvc_put(kvc, "d/", 2, "", 0, &(struct kvc_put_opts){.mode = 0700}, NULL), 0);
	cr_assert_eq(kvc_put(kvc, "d/a", 3, "y", 1, NULL, NULL), 0);
	cr_assert_eq(kvc_put(kvc, "implicit/b/c", 12, "z", 1, NULL, NULL), 0);
	stats0 = counter(kvc, "stat_calls");
	cr_assert_eq(kvc_stat_dir(kvc, "f", 1, &e), 0, "%s", kvc_strerror());
	cr_assert_eq(e.size, 1);
	cr_assert_eq(kvc_stat_dir(kvc, "d", 1, &e), 1, "%s", kvc_strerror());
	cr_assert_eq(e.mode, 0700, "the marker's entry");
	cr_assert_neq(e.version, 0);
	cr_assert_eq(kvc_stat_dir(kvc, "implicit", 8, &e), 1);
	cr_assert_eq(e.version, 0, "no marker: an empty entry");
	cr_assert_eq(kvc_stat_dir(kvc, "implicit/b", 10, &e), 1);
	cr_assert_eq(kvc_stat_dir(kvc, "nothing", 7, &e), -ENOENT);
	cr_assert_eq(kvc_stat_dir(kvc, "d/a/x", 5, &e), -ENOENT);
	cr_assert_eq(counter(kvc, "stat_calls") - stats0, 6, "one STAT each, no LIST");
	kvc_close(kvc);
	srv_done(&s);
}
