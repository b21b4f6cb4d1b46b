/* SPDX-License-Identifier: MIT */
/*
 * kv-server under bad input and failure, as a client observes it: garbage,
 * truncated and oversized frames close only the offender; a full server
 * evicts least-recently-used values or refuses cleanly; a client that dies
 * mid-PUT leaves the old value and no reservation behind; a GET racing an
 * overwrite returns one whole value.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "kvfs/util.h"
#include "srv_proc.h"

static void put_bytes(struct kvc *kvc, const char *key, size_t len, uint64_t seed)
{
	void *b = xmalloc(len);

	fill(b, len, seed);
	cr_assert_eq(kvc_put(kvc, key, strlen(key), b, len, NULL, NULL), 0, "PUT %s: %s", key,
	             kvc_strerror());
	free(b);
}

/* Read @key back in pieces of at most 32 MiB, each within the server's
 * deadline even on a loaded machine (a 256 MiB GET in one piece timed out
 * at 3 s with the ASan suites running beside it), and compare all of it. */
static void check_value(struct kvc *kvc, const char *key, size_t len, uint64_t seed)
{
	uint8_t *want = xmalloc(len), *got = xmalloc(len);
	size_t off = 0;

	fill(want, len, seed);
	do {
		size_t piece = KV_MIN(len - off, 32 * MIB);
		ssize_t n = kvc_get(kvc, key, strlen(key), off, got + off, piece, NULL, NULL);

		cr_assert_eq(n, (ssize_t)piece, "GET %s at %zu: %zd (%s)", key, off, n,
		             kvc_strerror());
		off += piece;
	} while (off < len);
	check_bytes(got, want, len, key);
	free(want);
	free(got);
}

/* kv-server's bad command lines: exit status 2 and a message that names
 * the option (the server never starts, so nothing listens). */
Test(server, bad_options_exit_2_naming_the_option)
{
	static const char *const cases[][2] = {
	        {"--max-held 0", "--max-held"},
	        {"--max-held lots", "--max-held"},
	        {"--memory 1K", "--memory"},
	        {"--max-frame 1K", "--max-frame"},
	        {"--eviction fifo", "--eviction"},
	        {"stray-argument", "unexpected argument"},
	        {"--max-held-total 0", "--max-held-total"},
	        {"--memory 64M --max-meta 40M", "--max-meta"},
	};
	const char *bin = getenv("KV_SERVER");

	if (!bin)
		cr_skip_test("KV_SERVER is not set (run through meson test)");
	for (size_t i = 0; i < KV_ARRAY_SIZE(cases); i++) {
		char cmd[512], out[1024] = "";
		size_t n;
		FILE *f;
		int st;

		snprintf(cmd, sizeof(cmd), "%s --listen 127.0.0.1:1 %s 2>&1", bin, cases[i][0]);
		f = popen(cmd, "r");
		cr_assert_not_null(f);
		n = fread(out, 1, sizeof(out) - 1, f);
		out[n] = '\0';
		st = pclose(f);
		cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 2,
		          "kv-server %s: status %d, said: %s", cases[i][0], st, out);
		cr_expect(strstr(out, cases[i][1]), "kv-server %s does not name %s: %s",
		          cases[i][0], cases[i][1], out);
	}
}

Test(server, bad_frames_close_only_the_offender, .timeout = 120)
{
	static const uint8_t garbage[] = {0,    0,    0,    9,    1,    0xff, 0xfe,
	                                  0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8};
	static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 1};
	static const uint8_t zero[] = {0, 0, 0, 0, 1};
	static const uint8_t badtype[] = {0, 0, 0, 1, 9};
	static const uint8_t truncated[] = {0, 0, 0, 100, 1, 8, 1};
	struct srv s = {0};
	struct kvc *good;
	int fd;

	srv_start(&s, "tcp");
	good = connect_to(&s, "tcp");
	put_bytes(good, "keep", 100000, 1);

	fd = raw_connect(&s);
	cr_assert_eq(send(fd, garbage, sizeof(garbage), 0), (ssize_t)sizeof(garbage));
	expect_closed(fd, "garbage protobuf");
	fd = raw_connect(&s);
	cr_assert_eq(send(fd, huge, sizeof(huge), 0), (ssize_t)sizeof(huge));
	expect_closed(fd, "4 GiB length");
	fd = raw_connect(&s);
	cr_assert_eq(send(fd, zero, sizeof(zero), 0), (ssize_t)sizeof(zero));
	expect_closed(fd, "zero length");
	fd = raw_connect(&s);
	cr_assert_eq(send(fd, badtype, sizeof(badtype), 0), (ssize_t)sizeof(badtype));
	expect_closed(fd, "unknown frame type");
	/* a frame cut short by the client going away */
	fd = raw_connect(&s);
	cr_assert_eq(send(fd, truncated, sizeof(truncated), 0), (ssize_t)sizeof(truncated));
	close(fd);
	/* a connection that sends nothing at all does not block anyone */
	int idle = raw_connect(&s);

	/* the well-behaved client never noticed */
	check_value(good, "keep", 100000, 1);
	put_bytes(good, "after", 5000, 2);
	check_value(good, "after", 5000, 2);
	cr_assert_geq(counter(good, "bad_frames"), 4);
	close(idle);
	kvc_close(good);
	srv_done(&s);
}

Test(server, request_before_hello_refused, .timeout = 60)
{
	/* Request{id=7, stat{key="k"}}: field 1 varint 7, field 13 (stat) len 3 {1: "k"} */
	static const uint8_t req[] = {0, 0, 0, 8, 1, 0x08, 0x07, 0x6a, 0x03, 0x0a, 0x01, 'k'};
	struct srv s = {0};
	uint8_t buf[512];
	ssize_t n, got = 0;
	int fd;

	srv_start(&s, "tcp");
	fd = raw_connect(&s);
	cr_assert_eq(send(fd, req, sizeof(req), 0), (ssize_t)sizeof(req));
	while ((n = recv(fd, buf + got, sizeof(buf) - (size_t)got, 0)) > 0)
		got += n;
	/* an answer (a RESPONSE frame), then the close */
	cr_assert_geq(got, 5, "no response before the close");
	cr_assert_eq(buf[4], 2, "frame type %u, want RESPONSE", buf[4]);
	close(fd);
	srv_done(&s);
}

Test(server, lru_eviction_order_and_counts, .timeout = 120)
{
	const char *extra[] = {"--eviction", "lru", NULL};
	struct srv s = {0};
	struct kvc *kvc;
	char key[32];
	const size_t sz = 2 * MIB;

	srv_start_args(&s, "tcp", "64M", extra);
	kvc = connect_to(&s, "tcp");
	for (int i = 0; i < 24; i++) { /* 48 MiB: fits */
		snprintf(key, sizeof(key), "v%02d", i);
		put_bytes(kvc, key, sz, (uint64_t)i);
	}
	cr_assert_eq(counter(kvc, "evictions"), 0);
	check_value(kvc, "v00", sz, 0); /* v00 is now the most recently used */
	for (int i = 24; i < 40; i++) { /* 32 MiB more: must evict */
		snprintf(key, sizeof(key), "v%02d", i);
		put_bytes(kvc, key, sz, (uint64_t)i);
	}
	uint64_t ev = counter(kvc, "evictions");
	cr_assert_gt(ev, 0, "nothing was evicted");
	struct kvc_entry e;
	cr_assert_eq(kvc_stat(kvc, "v00", 3, &e), 0, "the recently read key was evicted");
	cr_assert_eq(kvc_stat(kvc, "v01", 3, &e), -ENOENT, "the oldest key survived");
	/* evicted keys are exactly the oldest ones, and every survivor is intact */
	int gone = 0;
	for (int i = 1; i < 40; i++) {
		snprintf(key, sizeof(key), "v%02d", i);
		if (kvc_stat(kvc, key, strlen(key), &e) == -ENOENT) {
			cr_assert_eq(i, gone + 1, "%s evicted out of LRU order", key);
			gone++;
		} else {
			check_value(kvc, key, sz, (uint64_t)i);
		}
	}
	cr_assert_eq((uint64_t)gone, ev, "STATS evictions %llu, keys gone %d",
	             (unsigned long long)ev, gone);
	kvc_close(kvc);
	srv_done(&s);
}

Test(server, eviction_none_refuses_cleanly, .timeout = 120)
{
	const char *extra[] = {"--eviction", "none", NULL};
	struct srv s = {0};
	struct kvc *kvc;
	char key[32];
	int i, r = 0;

	srv_start_args(&s, "tcp", "32M", extra);
	kvc = connect_to(&s, "tcp");
	for (i = 0; i < 100; i++) {
		void *b = xmalloc(MIB);

		snprintf(key, sizeof(key), "n%02d", i);
		fill(b, MIB, (uint64_t)i);
		r = kvc_put(kvc, key, strlen(key), b, MIB, NULL, NULL);
		free(b);
		if (r < 0)
			break;
	}
	cr_assert_eq(r, -ENOSPC, "a full server answered %d (%s)", r, kvc_strerror());
	cr_assert(strstr(kvc_strerror(), "full") || strstr(kvc_strerror(), "space"),
	          "message does not say the server is full: %s", kvc_strerror());
	cr_assert_eq(counter(kvc, "evictions"), 0);
	cr_assert_eq(counter(kvc, "keys"), (uint64_t)i);
	for (int k = 0; k < i; k++) {
		snprintf(key, sizeof(key), "n%02d", k);
		check_value(kvc, key, MIB, (uint64_t)k);
	}
	/* deleting makes room again */
	cr_assert_eq(kvc_delete(kvc, "n00", 3, 0), 0);
	put_bytes(kvc, "again", MIB, 77);
	kvc_close(kvc);
	srv_done(&s);
}

/* A client dies while the server RDMA-READs its PUT: the old value stays,
 * and the reservation is released. */
/* A child process that PUTs (@put) or GETs @big bytes of "victim" in a
 * loop until it is killed: the client the server sees die mid-transfer. */
static pid_t spawn_victim_loop(const struct srv *s, const char *prov, size_t big, bool put)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct kvc_opts o;
		struct kvc *c;
		void *b = malloc(big);

		kvc_opts_init(&o);
		o.server = s->addr;
		o.provider = prov;
		o.timeout_ms = 60000;
		if (!b || kvc_connect(&o, &c))
			_exit(1);
		if (put)
			memset(b, 0xab, big);
		for (;;) {
			if (put)
				kvc_put(c, "victim", 6, b, big, NULL, NULL);
			else
				kvc_get(c, "victim", 6, 0, b, big, NULL, NULL);
		}
	}
	return pid;
}

static void client_dies_mid_put(const char *prov)
{
	const char *extra[] = {"--timeout", "3000", NULL};
	const size_t big = 512 * MIB;
	struct srv s = {0};
	struct kvc *kvc;
	uint64_t t0;
	pid_t pid;
	int i;

	srv_start_args(&s, prov, "2G", extra);
	kvc = connect_to(&s, prov);
	put_bytes(kvc, "victim", 3 * MIB + 1, 5);
	pid = spawn_victim_loop(&s, prov, big, true);
	/* wait until a PUT is landing, then kill the writer (each PUT first
	 * copies 512 MiB into the client's staging buffer: slow under ASan) */
	t0 = kv_now_ms();
	while (kv_now_ms() - t0 < 60000 && counter(kvc, "reservations") == 0)
		usleep(2000);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	cr_assert_lt(kv_now_ms() - t0, 60000, "the dying client never started its PUT");
	/* the reservation goes away within the transfer deadline */
	for (i = 0; i < 200 && counter(kvc, "reservations") != 0; i++)
		usleep(50000);
	if (counter(kvc, "reservations") != 0) {
		srv_dump_log(&s); /* what the server said about the transfer */
		srv_dump_stacks(&s);
	}
	cr_assert_eq(counter(kvc, "reservations"), 0, "reservation leaked");
	cr_assert_eq(counter(kvc, "pinned_items"), 0);
	struct kvc_entry e;
	cr_assert_eq(kvc_stat(kvc, "victim", 6, &e), 0);
	if (e.size == 3 * MIB + 1)
		check_value(kvc, "victim", 3 * MIB + 1, 5);
	else
		cr_assert_eq(e.size, big, "a torn value of %llu bytes", (unsigned long long)e.size);
	kvc_close(kvc);
	srv_done(&s);
}

Test(server_tcp, client_dies_mid_put, .timeout = 120)
{
	client_dies_mid_put("tcp");
}

Test(server_shm, client_dies_mid_put, .timeout = 120)
{
	client_dies_mid_put("shm");
}

Test(server_shm, client_dies_mid_put_without_cma, .timeout = 120)
{
	setenv("FI_SHM_DISABLE_CMA", "1", 1);
	client_dies_mid_put("shm");
}

/* A client paused (SIGSTOP) past the server's deadline in the middle of
 * its PUT sends the rest of the value once it resumes.  By then the server
 * has answered TIMEOUT, but it must not have given the value's range to
 * anyone else, or the late bytes land in another value (they did, before
 * xfer_comp.unsettled).  So the range stays reserved until the provider
 * gives it back -- a PUT that needs the room meanwhile finds the server
 * full -- and every value reads back intact.  When the pause caught no
 * segment at the provider, nothing can land late and the room is free at
 * once; that attempt is repeated.  (tcp: over shm the server copies from a
 * paused client without its help.) */
static pid_t spawn_paused_put(const struct srv *s, const void *b, size_t big, int *ready_fd)
{
	int p[2];
	pid_t pid;

	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct kvc_opts o;
		struct kvc *c;

		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never left stopped */
		close(p[0]);
		kvc_opts_init(&o);
		o.server = s->addr;
		o.provider = "tcp";
		o.timeout_ms = 120000;
		/* an RDMA PUT first, so the transfer connection is up and the
		 * big one's segments go straight out */
		if (kvc_connect(&o, &c) || kvc_put(c, "warm", 4, b, MIB, NULL, NULL) ||
		    write(p[1], "w", 1) != 1)
			_exit(3);
		_exit(kvc_put(c, "paused", 6, b, big, NULL, NULL) == 0 ? 0 : 1);
	}
	close(p[1]);
	*ready_fd = p[0];
	return pid;
}

Test(server_tcp, paused_client_late_put_lands_nowhere, .timeout = 240)
{
	const char *extra[] = {"--timeout", "1500", NULL};
	const size_t big = 160 * MIB;
	struct srv s = {0};
	struct kvc_entry e;
	struct kvc *kvc;
	bool caught = false;
	uint64_t t0, fails0;
	int st, r, fd;
	char ch;
	pid_t pid;
	void *b;

	srv_start_args(&s, "tcp", "200M", extra); /* room for one such value */
	kvc = connect_to(&s, "tcp");
	b = xmalloc(big);
	for (int attempt = 0; attempt < 6 && !caught; attempt++) {
		fill(b, big, 9);
		fails0 = counter(kvc, "rdma_failures");
		pid = spawn_paused_put(&s, b, big, &fd);
		cr_assert_eq(read(fd, &ch, 1), 1, "the client could not warm up");
		close(fd);
		t0 = kv_now_ms();
		while (kv_now_ms() - t0 < 60000 && counter(kvc, "reservations") == 0)
			usleep(500);
		kill(pid, SIGSTOP);
		/* past the server's deadline it answers TIMEOUT to the paused client */
		while (kv_now_ms() - t0 < 60000 && counter(kvc, "rdma_failures") == fails0 &&
		       counter(kvc, "reservations") != 0)
			usleep(20000);
		caught = counter(kvc, "rdma_unsettled") == 1;
		fill(b, big, 11); /* not what the paused client sends */
		r = kvc_put(kvc, "other", 5, b, big, NULL, NULL);
		if (caught)
			cr_assert_eq(
			        r, -ENOSPC,
			        "the range of the paused PUT was given away: PUT answered %d (%s)",
			        r, kvc_strerror());
		else
			cr_assert(r == 0 || r == -ENOSPC, "PUT other: %d (%s)", r, kvc_strerror());
		kill(pid, SIGCONT);
		cr_assert_eq(waitpid(pid, &st, 0), pid);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) <= 1, "the paused client: status %d",
		          st);
		/* whatever came late has landed (or the range is still held) */
		t0 = kv_now_ms();
		while (kv_now_ms() - t0 < 30000 &&
		       (counter(kvc, "reservations") != 0 || counter(kvc, "rdma_unsettled") != 0))
			usleep(20000);
		cr_assert_eq(counter(kvc, "reservations"), 0, "reservation leaked");
		cr_assert_eq(counter(kvc, "rdma_unsettled"), 0);
		if (r == 0)
			check_value(kvc, "other", big, 11); /* no late byte landed in it */
		if (caught)
			cr_assert_eq(kvc_stat(kvc, "paused", 6, &e), -ENOENT,
			             "a timed-out PUT was stored");
		kvc_delete(kvc, "paused", 6, 0);
		kvc_delete(kvc, "other", 5, 0);
		kvc_delete(kvc, "warm", 4, 0);
	}
	cr_assert(caught, "no attempt paused the client with segments of its PUT in flight");
	/* the room is usable again */
	fill(b, big, 10);
	cr_assert_eq(kvc_put(kvc, "other", 5, b, big, NULL, NULL), 0, "PUT other: %s",
	             kvc_strerror());
	check_value(kvc, "other", big, 10);
	free(b);
	kvc_close(kvc);
	srv_done(&s);
}

/* A client dies while the server RDMA-WRITEs its GET: the value's pin is
 * released, the value is intact (read by another client, over RDMA), and
 * deleting it frees its space.  @resets: how often the server's engine had
 * to open its endpoint anew (shm without CMA: the dead client's unanswered
 * segments held every later completion, and the other client's GET timed
 * out, before the engine reset), or UINT64_MAX: not checked (whether shm
 * has CMA depends on where the suite runs). */
static void client_dies_mid_get(const char *prov, uint64_t resets)
{
	const char *extra[] = {"--timeout", "3000", NULL};
	const size_t big = 256 * MIB;
	struct srv s = {0};
	struct kvc *kvc;
	uint64_t free0, t0;
	pid_t pid;
	int i;

	srv_start_args(&s, prov, "1G", extra);
	kvc = connect_to(&s, prov);
	free0 = counter(kvc, "free_bytes");
	put_bytes(kvc, "victim", big, 6);
	pid = spawn_victim_loop(&s, prov, big, false);
	/* wait until a GET is being written, then kill the reader */
	t0 = kv_now_ms();
	while (kv_now_ms() - t0 < 60000 && counter(kvc, "pinned_items") == 0)
		usleep(2000);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	cr_assert_lt(kv_now_ms() - t0, 60000, "the dying client never started its GET");
	/* the pin goes away within the transfer deadline */
	for (i = 0; i < 200 && counter(kvc, "pinned_items") != 0; i++)
		usleep(50000);
	if (counter(kvc, "pinned_items") != 0) {
		/* as in client_dies_mid_put: say where the server is (the
		 * libfabric shm lock race, docs/reliability.md, shows as a thread
		 * in __pthread_spin_lock and xfer_stuck_events > 0) */
		srv_dump_log(&s);
		srv_dump_stacks(&s);
	}
	cr_assert_eq(counter(kvc, "pinned_items"), 0,
	             "pin leaked (xfer_stuck_events %llu, xfer_locks_released %llu)",
	             (unsigned long long)counter(kvc, "xfer_stuck_events"),
	             (unsigned long long)counter(kvc, "xfer_locks_released"));
	cr_assert_eq(counter(kvc, "pinned_bytes"), 0);
	check_value(kvc, "victim", big, 6);
	if (resets != UINT64_MAX)
		cr_assert_eq(counter(kvc, "xfer_resets"), resets, "engine resets");
	cr_assert_eq(kvc_delete(kvc, "victim", 6, 0), 0);
	cr_assert_eq(counter(kvc, "free_bytes"), free0, "the value's space was not freed");
	kvc_close(kvc);
	srv_done(&s);
}

Test(server_tcp, client_dies_mid_get, .timeout = 120)
{
	client_dies_mid_get("tcp", 0);
}

Test(server_shm, client_dies_mid_get, .timeout = 120)
{
	client_dies_mid_get("shm", UINT64_MAX);
}

/* Without CMA (as where process_vm_writev is not permitted, e.g. Docker's
 * default seccomp profile).  libfabric reads the variable when it loads,
 * in this test's own process and in the server it starts. */
Test(server_shm, client_dies_mid_get_without_cma, .timeout = 120)
{
	setenv("FI_SHM_DISABLE_CMA", "1", 1);
	client_dies_mid_get("shm", 1);
}

struct racer {
	struct srv *s;
	const char *prov;
	atomic_bool stop;
	atomic_int reads;
	int torn, errors;
};

static void *race_reader(void *arg)
{
	struct racer *r = arg;
	const size_t len = 8 * MIB;
	uint8_t *a = xmalloc(len), *b = xmalloc(len), *got = xmalloc(len);
	struct kvc *kvc = connect_to(r->s, r->prov);

	fill(a, len, 100);
	fill(b, len, 200);
	while (!atomic_load(&r->stop)) {
		ssize_t n = kvc_get(kvc, "race", 4, 0, got, len, NULL, NULL);

		if (n != (ssize_t)len) {
			r->errors++;
			continue;
		}
		r->reads++;
		if (memcmp(got, a, len) && memcmp(got, b, len))
			r->torn++;
	}
	kvc_close(kvc);
	free(a);
	free(b);
	free(got);
	return NULL;
}

static void get_races_overwrite(const char *prov)
{
	const size_t len = 8 * MIB;
	struct srv s = {0};
	struct racer r = {.s = &s, .prov = prov};
	struct kvc *kvc;
	pthread_t t[2];
	uint8_t *a = xmalloc(len), *b = xmalloc(len);

	srv_start(&s, prov);
	kvc = connect_to(&s, prov);
	fill(a, len, 100);
	fill(b, len, 200);
	cr_assert_eq(kvc_put(kvc, "race", 4, a, len, NULL, NULL), 0);
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, race_reader, &r);
	/* overwrite until the readers have read 40 times (bounded: 2,000 PUTs) */
	for (int i = 0; i < 2000 && (i < 20 || atomic_load(&r.reads) < 40); i++)
		cr_assert_eq(kvc_put(kvc, "race", 4, i & 1 ? a : b, len, NULL, NULL), 0);
	atomic_store(&r.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	cr_assert_gt(r.reads, 0);
	cr_assert_eq(r.torn, 0, "%d of %d reads mixed two versions", r.torn, r.reads);
	cr_assert_eq(r.errors, 0);
	free(a);
	free(b);
	kvc_close(kvc);
	srv_done(&s);
}

Test(server_tcp, get_races_overwrite, .timeout = 120)
{
	get_races_overwrite("tcp");
}

Test(server_shm, get_races_overwrite, .timeout = 120)
{
	get_races_overwrite("shm");
}

Test(server, max_conns_enforced, .timeout = 60)
{
	const char *extra[] = {"--max-conns", "2", NULL};
	struct srv s = {0};
	struct kvc *kvc;
	int a, b;

	srv_start_args(&s, "tcp", "64M", extra);
	a = raw_connect(&s);
	kvc = connect_to(&s, "tcp"); /* the second connection */
	/* the third is refused: closed before any ServerHello */
	{
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(s.port)};
		uint8_t buf[64];

		b = socket(AF_INET, SOCK_STREAM, 0);
		inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
		cr_assert_eq(connect(b, (struct sockaddr *)&sa, sizeof(sa)), 0);
		ssize_t n = recv(b, buf, sizeof(buf), 0);
		cr_assert(n == 0 || (n < 0 && errno == ECONNRESET), "third connection served");
		close(b);
	}
	put_bytes(kvc, "k", 10, 1);
	cr_assert_geq(counter(kvc, "connections_refused"), 1);
	close(a);
	kvc_close(kvc);
	srv_done(&s);
}

/* The server's transfer engine stuck inside its provider (the engine's test
 * hook makes its first post hang for 14 s): the PUT that hit it fails at
 * the client's own deadline, never later; once the watchdog has seen it
 * (10 s), STATS says so and a new RDMA PUT fails at once with a message to
 * restart kv-server, while inline requests are still served; when the call
 * returns, PUTs work again. */
Test(server_tcp, stuck_transfer_engine_fails_fast, .timeout = 120)
{
	const char *extra[] = {"--timeout", "1000", NULL};
	const size_t big = 16 * MIB;
	struct srv s = {0};
	struct kvc *kvc, *ctl;
	struct kvc_entry e;
	void *b = xmalloc(big);
	uint64_t t0;
	int r;

	fill(b, big, 3);
	setenv("KVFS_XFER_TEST_STALL_MS", "14000", 1);
	srv_start_args(&s, "tcp", "256M", extra);
	unsetenv("KVFS_XFER_TEST_STALL_MS");
	kvc = connect_opts(&s, "tcp", 3000, NULL);
	ctl = connect_opts(&s, "none", 3000, NULL);
	t0 = kv_now_ms();
	r = kvc_put(kvc, "big", 3, b, big, NULL, NULL);
	cr_assert_lt(r, 0, "a PUT into a stuck engine succeeded");
	cr_assert_lt(kv_now_ms() - t0, 3000 + 2000, "the PUT waited %llu ms, deadline 3000",
	             (unsigned long long)(kv_now_ms() - t0));
	while (kv_now_ms() - t0 < 13000 && counter(ctl, "xfer_stuck") == 0)
		usleep(100000);
	cr_assert_eq(counter(ctl, "xfer_stuck"), 1, "STATS does not show the stuck engine");
	cr_assert_eq(counter(ctl, "xfer_stuck_events"), 1);
	uint64_t t1 = kv_now_ms();
	r = kvc_put(kvc, "big2", 4, b, big, NULL, NULL);
	cr_assert_lt(r, 0, "a PUT while stuck succeeded");
	cr_assert_lt(kv_now_ms() - t1, 2000, "refused only after %llu ms",
	             (unsigned long long)(kv_now_ms() - t1));
	cr_assert_not_null(strstr(kvc_strerror(), "restart kv-server"), "message: %s",
	                   kvc_strerror());
	cr_assert_eq(kvc_put(ctl, "small", 5, "x", 1, NULL, NULL), 0, "inline PUT: %s",
	             kvc_strerror());
	/* the call returns at 14 s */
	while (kv_now_ms() - t0 < 30000 && counter(ctl, "xfer_stuck") != 0)
		usleep(100000);
	cr_assert_eq(counter(ctl, "xfer_stuck"), 0, "still stuck after the call returned");
	for (int i = 0; i < 20 && (r = kvc_put(kvc, "big3", 4, b, big, NULL, NULL)) < 0; i++)
		usleep(200000); /* the client reconnects after its failed calls */
	cr_assert_eq(r, 0, "PUT after the stall: %s", kvc_strerror());
	cr_assert_eq(kvc_stat(ctl, "big3", 4, &e), 0);
	cr_assert_eq(e.size, big);
	free(b);
	kvc_close(kvc);
	kvc_close(ctl);
	srv_done(&s);
}
