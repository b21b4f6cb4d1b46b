/* SPDX-License-Identifier: MIT */
/*
 * Uploads (streaming PUT: kvc_upload_*) against the real kv-server, over
 * tcp, shm and inline only: bytes compared after the commit, nothing
 * visible before it, copy-on-write from a base version, conflicts, a full
 * server, and the server's memory given back when an upload is aborted or
 * its client dies mid-way (STATS uploads_open, reserved_bytes).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvfs/client.h"
#include "kvfs/util.h"

#include "srv_proc.h"

/* Get @key whole (at most @cap bytes) into a new buffer. */
static uint8_t *get_all(struct kvc *kvc, const char *key, size_t cap, size_t *ret_len)
{
	uint8_t *buf = xmalloc(cap + 1);
	ssize_t n = kvc_get(kvc, key, strlen(key), 0, buf, cap + 1, NULL, NULL);

	cr_assert_geq(n, 0, "GET %s: %s", key, kvc_strerror());
	*ret_len = (size_t)n;
	return buf;
}

/* Write @len bytes of @src in pieces of @step through @u, from @off. */
static void write_steps(struct kvc_upload *u, uint64_t off, const uint8_t *src, size_t len,
                        size_t step)
{
	for (size_t at = 0; at < len; at += step) {
		size_t n = KV_MIN(step, len - at);

		cr_assert_eq(kvc_upload_write(u, off + at, src + at, n), 0, "write at %zu: %s", at,
		             kvc_strerror());
	}
}

static void t_stream(const char *prov)
{
	struct srv s = {0};
	const size_t len = 40 * MIB + 123;
	uint8_t *want = xmalloc(len), *got;
	struct kvc_upload *u;
	struct kvc_entry e, st;
	struct kvc *kvc;
	uint64_t size;
	size_t n;

	srv_start(&s, prov);
	kvc = connect_to(&s, prov);
	fill(want, len, 5);
	cr_assert_eq(kvc_upload_open(kvc, "big", 3, NULL, &u, &size), 0, "%s", kvc_strerror());
	cr_assert_eq(size, 0);
	write_steps(u, 0, want, len, MIB - 7); /* parts do not line up with writes */
	cr_assert_eq(kvc_stat(kvc, "big", 3, &st), -ENOENT, "nothing visible before the commit");
	cr_assert_eq(counter(kvc, "uploads_open"), 1);
	{ /* the writer reads back what it wrote (across parts, and the end) */
		uint8_t back[300 * 1024];
		ssize_t r = kvc_upload_read(u, 4 * MIB - 1000, back, sizeof(back));

		cr_assert_eq(r, (ssize_t)sizeof(back), "%zd: %s", r, kvc_strerror());
		check_bytes(back, want + 4 * MIB - 1000, sizeof(back), "read back");
		r = kvc_upload_read(u, len - 100, back, sizeof(back));
		cr_assert_eq(r, 100);
		check_bytes(back, want + len - 100, 100, "read back at the end");
		cr_assert_eq(kvc_upload_write(u, len, "tail", 4), 0); /* writes go on after */
		cr_assert_eq(kvc_upload_truncate(u, len), 0);
	}
	cr_assert_eq(kvc_upload_commit(u, NULL, &e), 0, "%s", kvc_strerror());
	cr_assert_eq(e.size, len);
	got = get_all(kvc, "big", len, &n);
	cr_assert_eq(n, len);
	check_bytes(got, want, len, "streamed value");
	cr_assert_eq(counter(kvc, "uploads_open"), 0);
	cr_assert_eq(counter(kvc, "reserved_bytes"), 0);
	cr_assert_eq(counter(kvc, "upload_commits"), 1);

	/* an empty upload commits an empty value; a write past the end
	 * leaves zeros before it */
	cr_assert_eq(kvc_upload_open(kvc, "empty", 5, NULL, &u, NULL), 0);
	cr_assert_eq(kvc_upload_commit(u, NULL, &e), 0, "%s", kvc_strerror());
	cr_assert_eq(e.size, 0);
	cr_assert_eq(kvc_upload_open(kvc, "sparse", 6, NULL, &u, NULL), 0);
	cr_assert_eq(kvc_upload_write(u, 3 * MIB, "end", 3), 0);
	cr_assert_eq(kvc_upload_commit(u, NULL, &e), 0, "%s", kvc_strerror());
	free(got);
	got = get_all(kvc, "sparse", 4 * MIB, &n);
	cr_assert_eq(n, 3 * MIB + 3);
	for (size_t i = 0; i < 3 * MIB; i++)
		cr_assert_eq(got[i], 0, "byte %zu of the hole", i);
	cr_assert_eq(memcmp(got + 3 * MIB, "end", 3), 0);
	free(got);
	free(want);
	kvc_close(kvc);
	srv_done(&s);
}

Test(upload, stream_then_read_tcp, .timeout = 300)
{
	t_stream("tcp");
}

Test(upload, stream_then_read_shm, .timeout = 300)
{
	t_stream("shm");
}

Test(upload, stream_then_read_inline, .timeout = 300)
{
	t_stream("none");
}

static void t_cow(const char *prov)
{
	struct srv s = {0};
	const size_t len = 16 * MIB;
	uint8_t *want = xmalloc(len + MIB), *got, patch[1000];
	struct kvc_upload *u;
	struct kvc_upload_opts uo = {0};
	struct kvc_put_opts po = {0};
	struct kvc_entry e, e2;
	struct kvc *kvc;
	uint64_t size, sent0;
	size_t n;

	srv_start(&s, prov);
	kvc = connect_to(&s, prov);
	fill(want, len + MIB, 9);
	/* the base goes up as an upload too: without RDMA that is the only way
	 * a value above max_inline can be stored at all */
	cr_assert_eq(kvc_upload_open(kvc, "f", 1, NULL, &u, NULL), 0, "%s", kvc_strerror());
	write_steps(u, 0, want, len, 3 * MIB);
	cr_assert_eq(kvc_upload_commit(u, NULL, &e), 0, "%s", kvc_strerror());
	sent0 = counter(kvc, "put_bytes");

	/* append a MiB and change 1000 bytes in the middle: only those go */
	uo.base_version = e.version;
	uo.base_epoch = e.epoch;
	cr_assert_eq(kvc_upload_open(kvc, "f", 1, &uo, &u, &size), 0, "%s", kvc_strerror());
	cr_assert_eq(size, len);
	memset(patch, 0x5a, sizeof(patch));
	cr_assert_eq(kvc_upload_write(u, 5 * MIB + 3, patch, sizeof(patch)), 0);
	memcpy(want + 5 * MIB + 3, patch, sizeof(patch));
	write_steps(u, len, want + len, MIB, 64 * 1024);
	po.if_version = e.version;
	po.if_epoch = e.epoch;
	cr_assert_eq(kvc_upload_commit(u, &po, &e2), 0, "%s", kvc_strerror());
	cr_assert_eq(counter(kvc, "put_bytes") - sent0, MIB + sizeof(patch),
	             "only the written bytes were sent");
	got = get_all(kvc, "f", len + MIB, &n);
	cr_assert_eq(n, len + MIB);
	check_bytes(got, want, n, "value after append and patch");
	free(got);

	/* a commit built on a version someone replaced meanwhile fails, and
	 * the newer value stays */
	uo.base_version = e2.version;
	cr_assert_eq(kvc_upload_open(kvc, "f", 1, &uo, &u, NULL), 0, "%s", kvc_strerror());
	cr_assert_eq(kvc_upload_write(u, 0, "abcd", 4), 0);
	cr_assert_eq(kvc_put(kvc, "f", 1, "newer", 5, NULL, &e), 0);
	po.if_version = e2.version;
	cr_assert_eq(kvc_upload_commit(u, &po, NULL), -ESTALE, "%s", kvc_strerror());
	got = get_all(kvc, "f", 16, &n);
	cr_assert_eq(n, 5);
	cr_assert_eq(memcmp(got, "newer", 5), 0);
	free(got);
	/* a base that is gone is refused at once */
	uo.base_version = e2.version;
	cr_assert_eq(kvc_upload_open(kvc, "f", 1, &uo, &u, NULL), -ESTALE);
	cr_assert_eq(counter(kvc, "uploads_open"), 0);
	cr_assert_eq(counter(kvc, "reserved_bytes"), 0);
	free(want);
	kvc_close(kvc);
	srv_done(&s);
}

Test(upload, copy_on_write_from_base_tcp, .timeout = 300)
{
	t_cow("tcp");
}

Test(upload, copy_on_write_from_base_shm, .timeout = 300)
{
	t_cow("shm");
}

Test(upload, copy_on_write_from_base_inline, .timeout = 300)
{
	t_cow("none");
}

/* The server's memory comes back: abort, and a client killed mid-upload. */
Test(upload, abort_and_dead_client_free_the_memory, .timeout = 300)
{
	struct srv s = {0};
	uint8_t *buf = xmalloc(8 * MIB);
	struct kvc_upload *u;
	struct kvc *kvc;
	int status, i;
	pid_t pid;

	srv_start(&s, "tcp");
	kvc = connect_to(&s, "tcp");
	fill(buf, 8 * MIB, 1);
	cr_assert_eq(kvc_upload_open(kvc, "a", 1, NULL, &u, NULL), 0);
	write_steps(u, 0, buf, 8 * MIB, MIB);
	cr_assert_eq(kvc_upload_truncate(u, 6 * MIB), 0, "%s", kvc_strerror());
	cr_assert_eq(kvc_upload_size(u), 6 * MIB);
	cr_assert_eq(counter(kvc, "reserved_bytes"), 6 * MIB);
	kvc_upload_abort(u);
	cr_assert_eq(counter(kvc, "uploads_open"), 0);
	cr_assert_eq(counter(kvc, "reserved_bytes"), 0);

	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct kvc *k2 = connect_to(&s, "tcp");

		if (kvc_upload_open(k2, "dead", 4, NULL, &u, NULL) ||
		    kvc_upload_write(u, 0, buf, 8 * MIB) || kvc_upload_truncate(u, 8 * MIB))
			_exit(2);
		kill(getpid(), SIGKILL);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status), "the client got its upload going (status %d)", status);
	for (i = 0; i < 100 && counter(kvc, "uploads_open"); i++)
		usleep(50 * 1000);
	cr_assert_eq(counter(kvc, "uploads_open"), 0, "the dead client's upload was dropped");
	cr_assert_eq(counter(kvc, "reserved_bytes"), 0);
	cr_assert_eq(kvc_stat(kvc, "dead", 4, &(struct kvc_entry){0}), -ENOENT);
	free(buf);
	kvc_close(kvc);
	srv_done(&s);
}

/* --eviction none: an upload that does not fit fails with ENOSPC and the
 * key keeps its old value. */
Test(upload, full_server_enospc_keeps_the_old_value, .timeout = 300)
{
	static const char *const extra[] = {"--eviction", "none", NULL};
	struct srv s = {0};
	uint8_t *buf = xmalloc(4 * MIB), *got;
	struct kvc_upload *u;
	struct kvc *kvc;
	int r = 0;
	size_t n;

	srv_start_args(&s, "tcp", "64M", extra);
	kvc = connect_to(&s, "tcp");
	fill(buf, 4 * MIB, 2);
	cr_assert_eq(kvc_put(kvc, "k", 1, "old", 3, NULL, NULL), 0);
	cr_assert_eq(kvc_upload_open(kvc, "k", 1, NULL, &u, NULL), 0);
	for (uint64_t off = 0; off < 128 * MIB && r == 0; off += 4 * MIB)
		r = kvc_upload_write(u, off, buf, 4 * MIB);
	if (r == 0)
		r = kvc_upload_commit(u, NULL, NULL);
	else
		kvc_upload_abort(u);
	cr_assert_eq(r, -ENOSPC, "%d: %s", r, kvc_strerror());
	got = get_all(kvc, "k", 16, &n);
	cr_assert_eq(n, 3);
	cr_assert_eq(memcmp(got, "old", 3), 0);
	free(got);
	cr_assert_eq(counter(kvc, "uploads_open"), 0);
	cr_assert_eq(counter(kvc, "reserved_bytes"), 0);
	free(buf);
	kvc_close(kvc);
	srv_done(&s);
}

/* A server restarted mid-upload: the commit fails within the deadline and
 * nothing is stored. */
Test(upload, server_restart_fails_the_commit, .timeout = 300)
{
	struct srv s = {0};
	uint8_t *buf = xmalloc(8 * MIB);
	struct kvc_upload *u;
	struct kvc *kvc;
	uint64_t t0;
	int r;

	srv_start(&s, "tcp");
	kvc = connect_opts(&s, "tcp", 5000, NULL);
	fill(buf, 8 * MIB, 3);
	cr_assert_eq(kvc_upload_open(kvc, "r", 1, NULL, &u, NULL), 0);
	write_steps(u, 0, buf, 8 * MIB, MIB);
	srv_kill(&s);
	srv_start(&s, "tcp"); /* same port */
	t0 = kv_now_ms();
	r = kvc_upload_write(u, 8 * MIB, buf, 8 * MIB);
	if (r == 0)
		r = kvc_upload_commit(u, NULL, NULL);
	else
		kvc_upload_abort(u);
	cr_assert_lt(r, 0, "the upload died with its server");
	cr_assert_lt(kv_now_ms() - t0, 15000);
	cr_assert_eq(kvc_stat(kvc, "r", 1, &(struct kvc_entry){0}), -ENOENT, "%s", kvc_strerror());
	free(buf);
	kvc_close(kvc);
	srv_done(&s);
}
