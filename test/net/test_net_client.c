/* SPDX-License-Identifier: MIT */
/*
 * The client library across a network that fails: kv-server inside the
 * namespace of test/netns-wrap, the client here, provider tcp over the veth
 * pair.  The link is cut in the middle of 16 MiB transfers, delayed, made
 * lossy and slowed down (scripts/netns).  Every call must end within its
 * deadline plus NET_SLACK_MS (a hang check, not a speed check) with a
 * network error or the right bytes; after the link heals the same struct
 * kvc works again and every value is whole: the old one or the new one.
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>

#include "../server/srv_proc.h"
#include "kvfs/log.h"
#include "kvfs/util.h"
#include "net_env.h"

#define VAL_BIG   (16 * MIB)
#define VAL_SMALL 4096
#define DEADLINE  2000 /* ms, the client's timeout_ms */
#define MAX_CALLS 512

static struct srv S;

static void start_with(const char *const *extra)
{
	kv_log_init("test_net_client"); /* KVFS_LOG=debug shows the client's log */
	memset(&S, 0, sizeof(S));
	S.netns = net_ns();
	S.host = getenv("KVFS_PEER_ADDR");
	srv_start_args(&S, "tcp", "256M", extra);
}

static void start(void)
{
	static const char *const extra[] = {"--timeout", "4000", NULL};

	start_with(extra);
}

static void stop(void)
{
	net_restore();
	srv_done(&S);
}

TestSuite(net_client, .init = start, .fini = stop, .timeout = 120);

/* The netem tests skip before starting anything when the kernel has no
 * netem (net_delay() skips). */
static void start_netem(void)
{
	net_delay(0, 0);
	net_restore();
	start();
}

TestSuite(net_netem, .init = start_netem, .fini = stop, .timeout = 240);

/* Deadline of the delay and loss tests: 16 MiB across a 100 ms round trip
 * needs TCP's window to open first. */
#define DELAY_DEADLINE 10000

/* A client with a per-call deadline of @timeout_ms; the first connect may
 * take longer (the server's first Hello, a loaded machine). */
static struct kvc *client(int timeout_ms)
{
	struct kvc_opts o;
	struct kvc *kvc = NULL;
	int r;

	kvc_opts_init(&o);
	o.server = S.addr;
	o.provider = "tcp";
	o.timeout_ms = timeout_ms;
	o.connect_timeout_ms = 30000;
	r = kvc_connect(&o, &kvc);
	if (r)
		srv_dump_log(&S);
	cr_assert_eq(r, 0, "kvc_connect(%s): %s", S.addr, kvc_strerror());
	return kvc;
}

/* What a call may fail with when the network is gone (client.h: "a dead or
 * unreachable server gives -ETIMEDOUT, -ECONNREFUSED or -ECONNRESET"; a link
 * whose peer vanished also gives the route errors). */
static bool net_error(long r)
{
	switch (-r) {
	case ETIMEDOUT:
	case ECONNRESET:
	case ECONNREFUSED:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ENOTCONN:
	case EIO:
		return true;
	default:
		return false;
	}
}

/* Which of @seeds the @len bytes at @buf are, or -1 (a mix, or none). */
static int which_seed(const uint8_t *buf, size_t len, const uint64_t *seeds, int n, uint8_t *tmp)
{
	for (int i = 0; i < n; i++) {
		fill(tmp, len, seeds[i]);
		if (memcmp(buf, tmp, len) == 0)
			return i;
	}
	return -1;
}

static void put_get_checked(struct kvc *kvc, const char *key, size_t len, uint64_t seed,
                            uint64_t *ret_put_ms, uint64_t *ret_get_ms)
{
	uint8_t *want = xmalloc(len), *got = xmalloc(len);
	struct kvc_entry e;
	uint64_t t0;
	ssize_t n;
	int r;

	fill(want, len, seed);
	memset(got, 0, len);
	t0 = net_now_ms();
	r = kvc_put(kvc, key, strlen(key), want, len, NULL, NULL);
	*ret_put_ms = net_now_ms() - t0;
	cr_assert_eq(r, 0, "PUT %s (%zu bytes): %s", key, len, kvc_strerror());
	t0 = net_now_ms();
	n = kvc_get(kvc, key, strlen(key), 0, got, len, NULL, &e);
	*ret_get_ms = net_now_ms() - t0;
	cr_assert_eq(n, (ssize_t)len, "GET %s: %zd: %s", key, n, kvc_strerror());
	cr_assert_eq(e.size, len);
	check_bytes(got, want, len, key);
	free(want);
	free(got);
}

/* ------------------------------------------------------------------ */
/* Baseline                                                            */
/* ------------------------------------------------------------------ */

Test(net_client, baseline_across_namespaces)
{
	struct kvc *kvc = client(DEADLINE);
	struct kvc_limits l;
	uint64_t p, g;

	kvc_limits(kvc, &l);
	cr_assert(l.rdma, "the client should use RDMA (provider %s, server %s)", l.provider,
	          l.server_provider);
	put_get_checked(kvc, "small", VAL_SMALL, 1, &p, &g);
	cr_log_info("4 KiB: PUT %llu ms, GET %llu ms", (unsigned long long)p,
	            (unsigned long long)g);
	put_get_checked(kvc, "big", VAL_BIG, 2, &p, &g);
	cr_log_info("16 MiB: PUT %llu ms, GET %llu ms", (unsigned long long)p,
	            (unsigned long long)g);
	kvc_close(kvc);
}

/* ------------------------------------------------------------------ */
/* A cut in the middle of a stream of 16 MiB PUTs and GETs             */
/* ------------------------------------------------------------------ */

struct call_rec {
	uint64_t start, end; /* net_now_ms() */
	long result;         /* 0 / bytes, or -errno */
	bool put;
	char msg[160];
};

struct stream {
	struct kvc *kvc;
	atomic_bool stop;
	atomic_uint ok_rounds;  /* PUT and GET both succeeded, bytes right */
	atomic_ullong heal_ms;  /* 0 = not healed yet */
	atomic_ullong ok_after; /* end of the first good round started after heal_ms */
	pthread_mutex_t lock;
	struct call_rec calls[MAX_CALLS];
	int ncalls;
	char bad[256]; /* first wrong byte or size, "" = none */
};

static void stream_rec(struct stream *st, bool put, uint64_t t0, long r)
{
	pthread_mutex_lock(&st->lock);
	if (st->ncalls < MAX_CALLS) {
		struct call_rec *c = &st->calls[st->ncalls++];

		c->start = t0;
		c->end = net_now_ms();
		c->result = r;
		c->put = put;
		snprintf(c->msg, sizeof(c->msg), "%s", r < 0 ? kvc_strerror() : "");
	}
	pthread_mutex_unlock(&st->lock);
}

/* PUT a new 16 MiB value, GET it back, forever (bounded by MAX_CALLS).  A
 * GET must return the last value stored, or one of the PUTs that failed
 * since (a failed PUT may have been applied): whole, never mixed. */
static void *stream_main(void *arg)
{
	struct stream *st = arg;
	uint8_t *val = xmalloc(VAL_BIG), *got = xmalloc(VAL_BIG), *tmp = xmalloc(VAL_BIG);
	uint64_t cand[MAX_CALLS];
	int ncand = 0;

	for (uint64_t seed = 100; !atomic_load(&st->stop) && st->ncalls < MAX_CALLS - 2; seed++) {
		struct kvc_entry e = {0};
		uint64_t t0 = net_now_ms();
		ssize_t n;
		int r, k;

		fill(val, VAL_BIG, seed);
		r = kvc_put(st->kvc, "stream", 6, val, VAL_BIG, NULL, NULL);
		stream_rec(st, true, t0, r);
		if (r == 0)
			ncand = 0;
		cand[ncand++] = seed;

		memset(got, 0, VAL_BIG);
		t0 = net_now_ms();
		n = kvc_get(st->kvc, "stream", 6, 0, got, VAL_BIG, NULL, &e);
		stream_rec(st, false, t0, (long)n);
		if (n < 0)
			continue;
		k = n == (ssize_t)VAL_BIG && e.size == VAL_BIG
		            ? which_seed(got, VAL_BIG, cand, ncand, tmp)
		            : -1;
		if (k < 0) {
			snprintf(st->bad, sizeof(st->bad),
			         "GET after PUT of seed %llu: %zd bytes, size %llu, not any of the "
			         "%d values that may be stored (torn or lost)",
			         (unsigned long long)seed, n, (unsigned long long)e.size, ncand);
			break;
		}
		cand[0] = cand[k];
		ncand = 1;
		if (r == 0) {
			uint64_t heal = atomic_load(&st->heal_ms);

			atomic_fetch_add(&st->ok_rounds, 1);
			if (heal && t0 >= heal && !atomic_load(&st->ok_after))
				atomic_store(&st->ok_after, net_now_ms());
		}
	}
	free(val);
	free(got);
	free(tmp);
	return NULL;
}

/* Wait (bounded by @ms) for @cond to become true. */
#define WAIT_FOR(cond, ms)                                                                         \
	do {                                                                                       \
		uint64_t until_ = net_now_ms() + (ms);                                             \
		while (!(cond) && net_now_ms() < until_)                                           \
			usleep(20000);                                                             \
	} while (0)

/* What held the server when no round worked after the heal: its held
 * ranges and the tail of its log. */
static void why_no_round(struct kvc *kvc)
{
	static const char *const names[] = {"reservations",   "rdma_unsettled", "rdma_failures",
	                                    "reserved_bytes", "free_bytes",     "pinned_items",
	                                    "connections"};
	struct cnt c;

	for (size_t i = 0; i < KV_ARRAY_SIZE(names); i++) {
		c = (struct cnt){.name = names[i]};
		if (kvc_stats(kvc, cnt_cb, &c) == 0 && c.found)
			cr_log_info("server %s: %llu", names[i], (unsigned long long)c.value);
	}
	srv_dump_log(&S);
}

Test(net_client, cut_mid_stream_then_heal)
{
	struct stream *st = calloc(1, sizeof(*st));
	uint64_t cut_ms, heal_ms, worst = 0;
	unsigned before;
	int failed = 0;
	pthread_t t;

	cr_assert_not_null(st);
	st->kvc = client(DEADLINE);
	pthread_mutex_init(&st->lock, NULL);
	cr_assert_eq(pthread_create(&t, NULL, stream_main, st), 0);

	WAIT_FOR(atomic_load(&st->ok_rounds) >= 2 || st->bad[0], 30000);
	cr_assert_geq(atomic_load(&st->ok_rounds), 2, "no good rounds before the cut: %s", st->bad);
	before = atomic_load(&st->ok_rounds);
	usleep(30000); /* into the next transfer */
	cut_ms = net_now_ms();
	net_cut();
	/* Long enough for several calls to meet the cut, each with its deadline. */
	usleep((2 * DEADLINE + 1000) * 1000);
	heal_ms = net_now_ms();
	net_heal();
	atomic_store(&st->heal_ms, net_now_ms());
	WAIT_FOR(atomic_load(&st->ok_after) || st->bad[0], 30000);
	atomic_store(&st->stop, true);
	pthread_join(t, NULL);
	if (st->bad[0] || !atomic_load(&st->ok_after))
		why_no_round(st->kvc);

	cr_assert_eq(st->bad[0], '\0', "%s", st->bad);
	for (int i = 0; i < st->ncalls; i++) {
		const struct call_rec *c = &st->calls[i];
		uint64_t el = c->end - c->start;

		if (c->end < cut_ms)
			continue;
		if (c->result < 0) {
			failed++;
			cr_expect(net_error(c->result),
			          "%s failed with %s, not a network error: %s",
			          c->put ? "PUT" : "GET", strerror((int)-c->result), c->msg);
			cr_log_info("%s at +%llu ms: %s after %llu ms", c->put ? "PUT" : "GET",
			            (unsigned long long)(c->start - cut_ms),
			            strerror((int)-c->result), (unsigned long long)el);
		}
		worst = el > worst ? el : worst;
		cr_expect_leq(el, DEADLINE + NET_SLACK_MS,
		              "%s %s took %llu ms, deadline %d ms (+%d slack): %s",
		              c->put ? "PUT" : "GET", c->result < 0 ? "failure" : "success",
		              (unsigned long long)el, DEADLINE, NET_SLACK_MS, c->msg);
	}
	cr_assert_gt(failed, 0, "no call failed while the link was cut for %llu ms",
	             (unsigned long long)(heal_ms - cut_ms));
	cr_assert_neq(atomic_load(&st->ok_after), 0,
	              "no good PUT+GET round within 30 s after the link healed");
	cr_log_info("cut: %d calls failed, slowest call %llu ms (deadline %d); first good "
	            "round %llu ms after heal; %u good rounds before the cut",
	            failed, (unsigned long long)worst, DEADLINE,
	            (unsigned long long)(atomic_load(&st->ok_after) - heal_ms), before);
	kvc_close(st->kvc);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

/* ------------------------------------------------------------------ */
/* A cut while async zero-copy calls are in flight                     */
/* ------------------------------------------------------------------ */

struct async_res {
	sem_t done;
	atomic_long result;
	atomic_ullong end;
};

static void async_done(void *arg, ssize_t result, const struct kvc_entry *entry)
{
	struct async_res *a = arg;

	(void)entry;
	atomic_store(&a->result, (long)result);
	atomic_store(&a->end, net_now_ms());
	sem_post(&a->done);
}

/* Wait for @a until @until_ms (CLOCK_REALTIME for sem_timedwait). */
static bool async_wait(struct async_res *a, uint64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	while (sem_timedwait(&a->done, &ts) != 0) {
		if (errno != EINTR)
			return false;
	}
	return true;
}

Test(net_client, cut_with_async_in_flight)
{
	struct kvc *kvc = client(DEADLINE);
	struct xfer_engine *eng = kvc_engine(kvc);
	struct xfer_mr *src, *dst;
	struct async_res ag, ap;
	uint64_t seeds[2] = {7, 8}, t0;
	uint8_t *tmp = xmalloc(VAL_BIG), *got = xmalloc(VAL_BIG);
	ssize_t n = -1;
	int r, k;

	cr_assert_not_null(eng);
	cr_assert_eq(
	        xfer_buf_alloc(eng, VAL_BIG, XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_WRITE, &dst),
	        0);
	cr_assert_eq(
	        xfer_buf_alloc(eng, VAL_BIG, XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ, &src), 0);
	fill(tmp, VAL_BIG, seeds[0]);
	cr_assert_eq(kvc_put(kvc, "async-get", 9, tmp, VAL_BIG, NULL, NULL), 0, "%s",
	             kvc_strerror());
	cr_assert_eq(kvc_put(kvc, "async-put", 9, tmp, VAL_BIG, NULL, NULL), 0, "%s",
	             kvc_strerror());
	fill(xfer_mr_addr(src), VAL_BIG, seeds[1]);
	memset(xfer_mr_addr(dst), 0, VAL_BIG);
	sem_init(&ag.done, 0, 0);
	sem_init(&ap.done, 0, 0);

	struct xfer_sge sge = {.mr = dst, .off = 0, .len = VAL_BIG};

	/* 100 Mbit/s: the two 16 MiB transfers take about 2.7 s, so the cut
	 * (a shell and two ip commands away) meets them under way. */
	cr_assert_eq(net_sh("rate", "100000"), 0, "scripts/netns rate failed (tc tbf)");
	t0 = net_now_ms();
	cr_assert_eq(kvc_get_mr_async(kvc, "async-get", 9, 0, &sge, 1, NULL, async_done, &ag), 0,
	             "%s", kvc_strerror());
	cr_assert_eq(kvc_put_mr_async(kvc, "async-put", 9, src, 0, VAL_BIG, NULL, async_done, &ap),
	             0, "%s", kvc_strerror());
	usleep(300000);
	net_cut();
	cr_assert(async_wait(&ag, DEADLINE + NET_SLACK_MS),
	          "async GET: no completion within %d ms of the cut", DEADLINE + NET_SLACK_MS);
	cr_assert(async_wait(&ap, DEADLINE + NET_SLACK_MS),
	          "async PUT: no completion within %d ms of the cut", DEADLINE + NET_SLACK_MS);
	cr_log_info("async GET: %s after %llu ms; async PUT: %s after %llu ms",
	            ag.result < 0 ? strerror((int)-ag.result) : "ok",
	            (unsigned long long)(ag.end - t0),
	            ap.result < 0 ? strerror((int)-ap.result) : "ok",
	            (unsigned long long)(ap.end - t0));
	cr_expect_leq(ag.end - t0, DEADLINE + NET_SLACK_MS);
	cr_expect_leq(ap.end - t0, DEADLINE + NET_SLACK_MS);
	if (ag.result >= 0) {
		cr_assert_eq(ag.result, (long)VAL_BIG);
		check_bytes(xfer_mr_addr(dst), tmp, VAL_BIG, "async GET before the cut");
	} else {
		cr_expect(net_error(ag.result), "async GET: %s", strerror((int)-ag.result));
	}
	if (ap.result < 0)
		cr_expect(net_error(ap.result), "async PUT: %s", strerror((int)-ap.result));
	net_restore();

	/* The same client works again; the PUT left the old value or the new. */
	t0 = net_now_ms();
	for (int i = 0; i < 20 && n < 0; i++)
		n = kvc_get(kvc, "async-put", 9, 0, got, VAL_BIG, NULL, NULL);
	cr_assert_eq(n, (ssize_t)VAL_BIG, "GET after heal: %s", kvc_strerror());
	cr_log_info("first GET after heal: %llu ms", (unsigned long long)(net_now_ms() - t0));
	k = which_seed(got, VAL_BIG, seeds, 2, tmp);
	cr_assert_geq(k, 0, "async-put holds neither the old nor the new value");
	if (ap.result == 0)
		cr_assert_eq(k, 1, "the async PUT succeeded but the old value is stored");
	fill(tmp, VAL_BIG, seeds[0]);
	r = (int)kvc_get(kvc, "async-get", 9, 0, got, VAL_BIG, NULL, NULL);
	cr_assert_eq(r, (int)VAL_BIG, "%s", kvc_strerror());
	check_bytes(got, tmp, VAL_BIG, "async-get after heal");
	xfer_mr_dereg(src);
	xfer_mr_dereg(dst);
	kvc_close(kvc);
	free(tmp);
	free(got);
}

/* ------------------------------------------------------------------ */
/* Transfers that outlive the server's deadline                        */
/* ------------------------------------------------------------------ */

/* Server counter @name, read from inside the server's namespace with
 * kvctl (the link to the client may be cut); -1 when kvctl fails. */
static long long counter_inside(const char *name)
{
	const char *root = getenv("KVFS_BUILD_ROOT");
	char cmd[512], line[256];
	long long v = -1;
	FILE *f;

	if (!root)
		cr_skip_test("KVFS_BUILD_ROOT is not set (run through meson test)");
	snprintf(cmd, sizeof(cmd), "ip netns exec %s %s/src/tools/kvctl -q -t 2000 -s %s stats",
	         net_ns(), root, S.addr);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		size_t n = strlen(name);

		if (!strncmp(line, name, n) && line[n] == ' ')
			v = atoll(line + n + 1);
	}
	pclose(f);
	return v;
}

/* PUTs over a link too slow for their deadline: each times out at the
 * client (2 s) and at the server (4 s), whose read of the value is still
 * under way; the server holds the value's range until its provider gives
 * the read back (rdma_unsettled).  Once the link is fast again every such
 * range must come back.  They did not: the client fenced its timed-out
 * staging buffer off (no access), its tcp provider failed to answer the
 * read it had already accepted and never told the server, whose read then
 * waited for good -- 16 MiB of the server lost per PUT (the rare
 * cut_mid_stream_then_heal failure: NO_SPACE, no good round after the
 * heal).  Now the buffer becomes read-only zeros and the read is answered. */
Test(net_client, slow_link_timed_out_puts_give_room_back)
{
	struct kvc *kvc = client(DEADLINE);
	uint8_t *val = xmalloc(1 << 20);
	long long held = -1, resv = -1, most = 0;
	uint64_t t0, p, g;
	int failed = 0;

	put_get_checked(kvc, "slow-warm", 1 << 20, 60, &p, &g); /* RDMA path up */
	cr_assert_eq(net_sh("rate", "2000"), 0, "scripts/netns rate failed (tc tbf)");
	for (int i = 0; i < 3; i++) {
		int r;

		fill(val, 1 << 20, 61 + (uint64_t)i);
		r = kvc_put(kvc, "slow", 4, val, 1 << 20, NULL, NULL);
		if (r < 0) {
			cr_expect(net_error(r), "PUT over a slow link: %s", kvc_strerror());
			failed++;
		}
		held = counter_inside("rdma_unsettled");
		most = held > most ? held : most;
	}
	t0 = net_now_ms();
	while (net_now_ms() - t0 < 6000 && most == 0) { /* the server's 4 s deadline */
		held = counter_inside("rdma_unsettled");
		most = held > most ? held : most;
		usleep(250000);
	}
	cr_assert_gt(failed, 0, "no PUT failed over a 2 Mbit/s link: the test proves nothing");
	cr_assert_gt(most, 0, "no failed PUT left a read under way at the server: nothing tested");

	net_restore();
	t0 = net_now_ms();
	while (net_now_ms() - t0 < 30000) {
		held = counter_inside("rdma_unsettled");
		resv = counter_inside("reservations");
		if (held == 0 && resv == 0)
			break;
		usleep(250000);
	}
	cr_log_info("%d PUTs failed, up to %lld reads held; all back %llu ms after the link "
	            "was fast again",
	            failed, most, (unsigned long long)(net_now_ms() - t0));
	if (held != 0 || resv != 0)
		srv_dump_log(&S);
	cr_assert_eq(held, 0,
	             "30 s after the link was fast again the server still holds %lld failed "
	             "transfers",
	             held);
	cr_assert_eq(resv, 0,
	             "30 s after the link was fast again the server still holds %lld reservations",
	             resv);
	/* and the client works again */
	for (int i = 0; i < 5 && kvc_put(kvc, "slow", 4, val, VAL_SMALL, NULL, NULL) < 0; i++)
		;
	put_get_checked(kvc, "slow", VAL_BIG, 64, &p, &g);
	kvc_close(kvc);
	free(val);
}

/* A client on a slow link keeps retrying 2 MiB PUTs: each one that times
 * out at the server leaves its read under way and its 2 MiB held.  With
 * --max-held 1M the next transfer of that client is refused with BUSY
 * instead of holding 2 MiB more; the client library resends it after a
 * pause until the held bytes come back or its deadline passes (then
 * EAGAIN, naming the limit).  Meanwhile another client, in the server's own
 * namespace, still stores and reads 1 MiB.  Once the link is fast again
 * everything comes back and the slow client works again. */
static void start_held(void)
{
	static const char *const extra[] = {"--timeout", "3000", "--max-held", "1M", NULL};

	start_with(extra);
}

TestSuite(net_held, .init = start_held, .fini = stop, .timeout = 180);

/* kvctl inside the server's namespace: another client on a fast path. */
static int kvctl_inside(const char *args)
{
	char cmd[1024];
	int st;

	snprintf(cmd, sizeof(cmd),
	         "ip netns exec %s %s/src/tools/kvctl -q -p tcp -t 10000 -s %s %s", net_ns(),
	         getenv("KVFS_BUILD_ROOT"), S.addr, args);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* kv-server stopped while the provider still holds a failed transfer's
 * memory (a PUT that timed out over a slow link): it must exit 0 at once.
 * Closing libfabric 1.17's tcp;ofi_rxm endpoint over such a transfer
 * crashed kv-server with SIGSEGV (exit status 1 after "stopped"). */
Test(net_held, stop_while_transfers_held_exits_0)
{
	struct kvc *kvc;
	size_t len = 2 * MIB;
	uint8_t *val = xmalloc(len);
	long long held;
	uint64_t p, g, t0;
	int r;

	if (!getenv("KVFS_BUILD_ROOT"))
		cr_skip_test("KVFS_BUILD_ROOT is not set (run through meson test)");
	kvc = client(30000);
	put_get_checked(kvc, "held-warm", MIB, 80, &p, &g);
	cr_assert_eq(net_sh("rate", "2000"), 0, "scripts/netns rate failed (tc tbf)");
	fill(val, len, 81);
	r = kvc_put(kvc, "held", 4, val, len, NULL, NULL);
	held = counter_inside("rdma_unsettled_bytes");
	cr_log_info("PUT of 2 MiB over 2 Mbit/s: %s; %lld bytes held", r ? kvc_strerror() : "ok",
	            held);
	cr_assert_lt(r, 0, "a 2 MiB PUT over 2 Mbit/s beat the server's 3 s deadline");
	cr_assert_gt(held, 0, "the timed-out PUT holds nothing: the test proves nothing");
	t0 = net_now_ms();
	srv_stop(&S); /* asserts exit status 0 within 20 s */
	cr_log_info("kv-server stopped %llu ms after SIGTERM with %lld bytes held",
	            (unsigned long long)(net_now_ms() - t0), held);
	kvc_close(kvc);
	free(val);
}

Test(net_held, retrying_client_refused_others_served)
{
	struct kvc *kvc;
	size_t len = 2 * MIB;
	uint8_t *val = xmalloc(len), *got = xmalloc(MIB);
	char in[] = "/tmp/kvfs-held-in.XXXXXX", out[64], args[256];
	long long held = -1, held_max = 0, refused = 0;
	int fd, client_refused = 0, failed = 0, other = -1, resent = 0;
	bool checked = false;
	uint64_t t0, p, g;

	if (!getenv("KVFS_BUILD_ROOT"))
		cr_skip_test("KVFS_BUILD_ROOT is not set (run through meson test)");
	/* A deadline past the server's (3 s): the client hears the server's
	 * TIMEOUT or BUSY instead of giving up first. */
	kvc = client(30000);
	put_get_checked(kvc, "held-warm", MIB, 70, &p, &g); /* RDMA path up */
	cr_assert_eq(net_sh("rate", "2000"), 0, "scripts/netns rate failed (tc tbf)");
	for (int i = 0; i < 6 && (refused < 2 || failed < 2 || !resent); i++) {
		long long before = counter_inside("refused_held");
		int r;

		fill(val, len, 71 + (uint64_t)i);
		r = kvc_put(kvc, "held", 4, val, len, NULL, NULL);
		cr_log_info("PUT %d of 2 MiB over 2 Mbit/s: %s (%s)", i, r ? strerror(-r) : "ok",
		            r ? kvc_strerror() : "");
		if (r < 0) {
			cr_expect(net_error(r) || r == -EAGAIN, "PUT over a slow link: %s",
			          kvc_strerror());
			failed++;
		}
		refused = counter_inside("refused_held");
		/* Refused during the call, yet not ended by the refusal: the
		 * client resent it until it was admitted. */
		if (refused > before && r != -EAGAIN)
			resent++;
		held = counter_inside("rdma_unsettled_bytes");
		held_max = KV_MAX(held_max, held);
		if (r < 0 && !checked && held > 0) {
			/* A GET whose deadline ends before the bytes can come
			 * back is refused, and resent, until it gives up:
			 * EAGAIN naming the limit, or ETIMEDOUT when a round
			 * trip over the busy link outlasted what was left of
			 * the deadline.  Never admitted: it is checked only
			 * when bytes were held before and after it, and no
			 * other transfer of this client is under way, so they
			 * were held throughout. */
			struct kvc_get_opts go = {.timeout_ms = 3000};
			long long h0 = held, h1, n0 = refused, n1;
			ssize_t gr = kvc_get(kvc, "held-warm", 9, 0, got, 128 * 1024, &go, NULL);

			h1 = counter_inside("rdma_unsettled_bytes");
			n1 = counter_inside("refused_held");
			cr_log_info(
			        "GET of 128 KiB, 3 s deadline, with %lld, then %lld bytes held: "
			        "%s; %lld refusals meanwhile",
			        h0, h1, gr < 0 ? kvc_strerror() : "ok", n1 - n0);
			if (h1 > 0) {
				cr_expect(gr == -EAGAIN || gr == -ETIMEDOUT,
				          "a GET while the client held %lld bytes: %zd (%s)", h0,
				          gr, kvc_strerror());
				if (gr == -EAGAIN) {
					cr_expect(strstr(kvc_strerror(), "--max-held"),
					          "the refusal does not say what limit: %s",
					          kvc_strerror());
					cr_expect_gt(n1, n0,
					             "EAGAIN, but the server refused nothing");
					client_refused++;
				}
			}
			checked = true;
			/* while refused, another client is served */
			fd = mkstemp(in);
			cr_assert_geq(fd, 0);
			fill(got, MIB, 79);
			cr_assert_eq(write(fd, got, MIB), (ssize_t)MIB);
			close(fd);
			snprintf(out, sizeof(out), "%s.out", in);
			snprintf(args, sizeof(args), "put held-other %s", in);
			other = kvctl_inside(args);
			if (other == 0) {
				snprintf(args, sizeof(args), "get held-other %s", out);
				other = kvctl_inside(args);
			}
		}
	}
	cr_log_info("%d PUTs failed, %d of them admitted after a refusal; the server refused %lld "
	            "transfers and held at most %lld bytes for this client",
	            failed, resent, refused, held_max);
	if (refused <= 0)
		srv_dump_log(&S);
	cr_assert_gt(failed, 0, "no PUT failed over a 2 Mbit/s link: the test proves nothing");
	cr_assert_gt(refused, 0, "a client holding failed transfers was never refused");
	cr_assert_gt(resent, 0, "no refused PUT was resent and admitted once the bytes came back");
	cr_assert_leq(held_max, (long long)len,
	              "the client held %lld bytes, more than one value, with --max-held 1M",
	              held_max);
	cr_assert_geq(refused, client_refused,
	              "the server counted %lld refusals, the client saw %d", refused,
	              client_refused);
	cr_assert_eq(other, 0, "another client could not PUT and GET while one was refused");
	{
		uint8_t *want = xmalloc(MIB);
		FILE *f = fopen(out, "rb");

		cr_assert_not_null(f, "%s: %s", out, strerror(errno));
		cr_assert_eq(fread(got, 1, MIB, f), MIB);
		fclose(f);
		fill(want, MIB, 79);
		check_bytes(got, want, MIB, "held-other");
		free(want);
		unlink(in);
		unlink(out);
	}

	net_restore();
	t0 = net_now_ms();
	while (net_now_ms() - t0 < 30000 && (held = counter_inside("rdma_unsettled_bytes")) != 0)
		usleep(250000);
	cr_assert_eq(held, 0, "30 s after the link was fast again %lld bytes are still held", held);
	/* no longer refused: the client stores its 2 MiB again */
	{
		int r = -1;

		for (int i = 0; i < 5 && r < 0; i++)
			r = kvc_put(kvc, "held", 4, val, len, NULL, NULL);
		cr_assert_eq(r, 0, "PUT after the link was fast again: %s", kvc_strerror());
	}
	put_get_checked(kvc, "held", len, 78, &p, &g);
	kvc_close(kvc);
	free(val);
	free(got);
}

/* ------------------------------------------------------------------ */
/* A cut while idle                                                    */
/* ------------------------------------------------------------------ */

Test(net_client, cut_idle_then_heal)
{
	struct kvc *kvc = client(DEADLINE);
	uint8_t *big = xmalloc(VAL_BIG), small[VAL_SMALL];
	struct kvc_entry e;
	uint64_t t0, p, g;
	long r;

	put_get_checked(kvc, "idle-big", VAL_BIG, 31, &p, &g);
	put_get_checked(kvc, "idle-small", VAL_SMALL, 32, &p, &g);
	net_cut();
	for (int i = 0; i < 4; i++) {
		t0 = net_now_ms();
		switch (i) {
		case 0:
			r = kvc_stat(kvc, "idle-small", 10, &e);
			break;
		case 1:
			fill(small, sizeof(small), 33);
			r = kvc_put(kvc, "idle-small", 10, small, sizeof(small), NULL, NULL);
			break;
		case 2:
			r = kvc_get(kvc, "idle-big", 8, 0, big, VAL_BIG, NULL, NULL);
			break;
		default:
			r = kvc_stat(kvc, "idle-small", 10, &e);
			break;
		}
		uint64_t el = net_now_ms() - t0;

		cr_log_info("idle cut, call %d: %s after %llu ms (%s)", i,
		            r < 0 ? strerror((int)-r) : "ok", (unsigned long long)el,
		            kvc_strerror());
		cr_expect(r < 0 && net_error(r), "call %d on a cut link: %ld (%s)", i, r,
		          kvc_strerror());
		cr_expect_leq(el, DEADLINE + NET_SLACK_MS, "call %d took %llu ms", i,
		              (unsigned long long)el);
	}
	net_heal();
	t0 = net_now_ms();
	r = -1;
	for (int i = 0; i < 20 && r < 0; i++)
		r = kvc_stat(kvc, "idle-small", 10, &e);
	cr_assert_eq(r, 0, "STAT after heal: %s", kvc_strerror());
	cr_log_info("first call after heal: %llu ms", (unsigned long long)(net_now_ms() - t0));
	/* The PUT during the cut may or may not have been applied: whole either way. */
	cr_assert_eq(kvc_get(kvc, "idle-small", 10, 0, small, sizeof(small), NULL, NULL),
	             (ssize_t)sizeof(small));
	{
		uint64_t seeds[2] = {32, 33};
		uint8_t tmp[VAL_SMALL];

		cr_assert_geq(which_seed(small, sizeof(small), seeds, 2, tmp), 0,
		              "idle-small is torn");
	}
	put_get_checked(kvc, "idle-big", VAL_BIG, 34, &p, &g);
	kvc_close(kvc);
	free(big);
}

/* ------------------------------------------------------------------ */
/* Delay and loss (tc netem)                                           */
/* ------------------------------------------------------------------ */

Test(net_netem, delay_50ms)
{
	struct kvc *kvc = client(DELAY_DEADLINE);
	uint64_t p, g;

	net_delay(50, 0);
	for (int i = 0; i < 3; i++) {
		put_get_checked(kvc, "delay-small", VAL_SMALL, 40 + (uint64_t)i, &p, &g);
		cr_log_info("50 ms each way, 4 KiB: PUT %llu ms, GET %llu ms",
		            (unsigned long long)p, (unsigned long long)g);
		cr_expect_geq(p, 50, "a PUT across a 50 ms link took %llu ms",
		              (unsigned long long)p);
		cr_expect_geq(g, 50);
		cr_expect_leq(p, DELAY_DEADLINE + NET_SLACK_MS);
		cr_expect_leq(g, DELAY_DEADLINE + NET_SLACK_MS);
	}
	put_get_checked(kvc, "delay-big", VAL_BIG, 43, &p, &g);
	cr_log_info("50 ms each way, 16 MiB: PUT %llu ms, GET %llu ms", (unsigned long long)p,
	            (unsigned long long)g);
	cr_expect_geq(p, 50);
	cr_expect_geq(g, 50);
	kvc_close(kvc);
}

/* 5 % loss: TCP crawls (tens of KiB/s at a 100 ms round trip), so values
 * of 4 KiB (inline) and 1 MiB (RDMA) rather than 16 MiB. */
Test(net_netem, delay_and_loss)
{
	static const size_t sizes[] = {VAL_SMALL, 1 << 20};
	struct kvc *kvc = client(5000);
	uint8_t *want = xmalloc(1 << 20), *got = xmalloc(1 << 20), *tmp = xmalloc(1 << 20);

	for (int z = 0; z < 2; z++) {
		size_t len = sizes[z];
		uint64_t cand[16];
		int ncand = 0, ok = 0, failed = 0;

		fill(want, len, 50);
		net_restore();
		cr_assert_eq(kvc_put(kvc, "lossy", 5, want, len, NULL, NULL), 0, "%s",
		             kvc_strerror());
		cand[ncand++] = 50;
		net_delay(50, 5);
		for (uint64_t seed = 51; seed < 55; seed++) {
			uint64_t t0 = net_now_ms(), el;
			ssize_t n;
			int r, k;

			fill(want, len, seed);
			r = kvc_put(kvc, "lossy", 5, want, len, NULL, NULL);
			el = net_now_ms() - t0;
			cr_expect_leq(el, 5000 + NET_SLACK_MS, "PUT took %llu ms",
			              (unsigned long long)el);
			if (r == 0)
				ncand = 0;
			else
				cr_expect(net_error(r), "PUT: %s", kvc_strerror());
			cand[ncand++] = seed;
			failed += r != 0;
			t0 = net_now_ms();
			n = kvc_get(kvc, "lossy", 5, 0, got, len, NULL, NULL);
			el = net_now_ms() - t0;
			cr_expect_leq(el, 5000 + NET_SLACK_MS, "GET took %llu ms",
			              (unsigned long long)el);
			if (n < 0) {
				cr_expect(net_error(n), "GET: %s", kvc_strerror());
				failed++;
				continue;
			}
			cr_assert_eq(n, (ssize_t)len);
			k = which_seed(got, len, cand, ncand, tmp);
			cr_assert_geq(k, 0, "GET over a lossy link: a value that was never stored");
			cand[0] = cand[k];
			ncand = 1;
			ok += r == 0;
		}
		cr_log_info("50 ms, 5%% loss, %zu bytes: %d good PUT+GET rounds of 4, %d failed "
		            "calls",
		            len, ok, failed);
	}
	kvc_close(kvc);
	free(want);
	free(got);
	free(tmp);
}

Test(net_netem, delay_beyond_deadline)
{
	struct kvc *kvc = client(1000);
	uint8_t small[VAL_SMALL];
	struct kvc_entry e;
	uint64_t t0, el, p, g;
	long r;

	put_get_checked(kvc, "slow", VAL_SMALL, 60, &p, &g);
	net_delay(2000, 0);
	for (int i = 0; i < 2; i++) {
		t0 = net_now_ms();
		r = i ? kvc_get(kvc, "slow", 4, 0, small, sizeof(small), NULL, NULL)
		      : kvc_stat(kvc, "slow", 4, &e);
		el = net_now_ms() - t0;
		cr_log_info("2 s delay, 1 s deadline: %s after %llu ms",
		            r < 0 ? strerror((int)-r) : "ok", (unsigned long long)el);
		cr_expect_eq(r, -ETIMEDOUT, "call %d: %ld (%s)", i, r, kvc_strerror());
		cr_expect_leq(el, 1000 + NET_SLACK_MS);
	}
	net_restore();
	r = -1;
	for (int i = 0; i < 20 && r < 0; i++)
		r = kvc_stat(kvc, "slow", 4, &e);
	cr_assert_eq(r, 0, "STAT after the delay was removed: %s", kvc_strerror());
	put_get_checked(kvc, "slow", VAL_SMALL, 61, &p, &g);
	kvc_close(kvc);
}

/* ------------------------------------------------------------------ */
/* A slow link (tc tbf): a 16 MiB transfer cannot finish in time      */
/* ------------------------------------------------------------------ */

struct pinger {
	struct kvc *kvc;
	atomic_bool stop;
	atomic_int ok, failed;
};

/* Small calls that keep answers flowing on the control connection. */
static void *pinger_main(void *arg)
{
	struct pinger *p = arg;

	for (int i = 0; i < 10000 && !atomic_load(&p->stop); i++) {
		struct kvc_entry e;

		if (kvc_stat(p->kvc, "slowlink-small", 14, &e) == 0)
			atomic_fetch_add(&p->ok, 1);
		else
			atomic_fetch_add(&p->failed, 1);
		usleep(100000);
	}
	return NULL;
}

Test(net_client, slow_link_beyond_deadline)
{
	struct kvc *kvc = client(DEADLINE);
	uint8_t *want = xmalloc(VAL_BIG), *got = xmalloc(VAL_BIG);
	struct pinger pg = {.kvc = kvc};
	uint64_t t0, el, p, g;
	pthread_t t;
	ssize_t n;

	put_get_checked(kvc, "slowlink-small", VAL_SMALL, 70, &p, &g);
	fill(want, VAL_BIG, 71);
	cr_assert_eq(kvc_put(kvc, "slowlink-big", 12, want, VAL_BIG, NULL, NULL), 0, "%s",
	             kvc_strerror());
	/* 4 Mbit/s: 16 MiB needs 34 s, 4 KiB 8 ms. */
	cr_assert_eq(net_sh("rate", "4000"), 0, "scripts/netns rate failed (tc tbf)");
	put_get_checked(kvc, "slowlink-small", VAL_SMALL, 72, &p, &g);
	cr_log_info("4 Mbit/s: 4 KiB PUT %llu ms, GET %llu ms", (unsigned long long)p,
	            (unsigned long long)g);
	cr_assert_eq(pthread_create(&t, NULL, pinger_main, &pg), 0);
	memset(got, 0, VAL_BIG);
	t0 = net_now_ms();
	n = kvc_get(kvc, "slowlink-big", 12, 0, got, VAL_BIG, NULL, NULL);
	el = net_now_ms() - t0;
	cr_log_info("4 Mbit/s: 16 MiB GET: %s after %llu ms", n < 0 ? strerror((int)-n) : "ok",
	            (unsigned long long)el);
	cr_expect_eq(n, -ETIMEDOUT, "16 MiB GET over 4 Mbit/s with a %d ms deadline: %zd (%s)",
	             DEADLINE, n, kvc_strerror());
	cr_expect_leq(el, DEADLINE + NET_SLACK_MS);
	/* The call has returned: its memory is the caller's again.  Nothing
	 * may land in it any more, while the connection stays up. */
	memset(got, 0xa5, VAL_BIG);
	usleep(2 * DEADLINE * 1000);
	atomic_store(&pg.stop, true);
	pthread_join(t, NULL);
	for (size_t i = 0; i < VAL_BIG; i++) {
		if (got[i] != 0xa5)
			cr_assert_fail("byte %zu of a GET buffer changed after the GET returned "
			               "-ETIMEDOUT",
			               i);
	}
	cr_log_info("4 Mbit/s: %d small calls answered, %d failed meanwhile", atomic_load(&pg.ok),
	            atomic_load(&pg.failed));
	net_restore();
	n = -1;
	for (int i = 0; i < 20 && n < 0; i++)
		n = kvc_get(kvc, "slowlink-big", 12, 0, got, VAL_BIG, NULL, NULL);
	cr_assert_eq(n, (ssize_t)VAL_BIG, "GET after the link is fast again: %s", kvc_strerror());
	check_bytes(got, want, VAL_BIG, "slowlink-big");
	kvc_close(kvc);
	free(want);
	free(got);
}

/*
 * Another host holds 1,100 sockets to the server that never send HELLO,
 * reopening each one the server closes: the 10 clients here still connect
 * and are served.  Before, the idle sockets took every connection slot
 * (--max-conns) and kept the clients out; now sockets in HELLO have a quota
 * of their own, a quarter of it per host.
 */
Test(net_client, idle_sockets_of_another_host_do_not_lock_out_clients, .timeout = 180)
{
	const char *flood = getenv("KVFS_FLOOD");
	char port[8];
	int served = 0;
	struct kvc *ctl;
	pid_t pid;

	if (!flood)
		cr_skip_test("KVFS_FLOOD is not set (run through meson test)");
	snprintf(port, sizeof(port), "%u", S.port);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execlp("ip", "ip", "netns", "exec", net_ns(), flood, S.host, port, "1100", "30",
		       (char *)NULL);
		_exit(127);
	}
	usleep(1000000); /* its sockets are in */
	for (int i = 0; i < 10; i++) {
		struct kvc_opts o;
		struct kvc *kvc = NULL;
		char key[16], back[8];
		int r;

		kvc_opts_init(&o);
		o.server = S.addr;
		o.provider = "tcp";
		o.timeout_ms = 5000;
		r = kvc_connect(&o, &kvc);
		if (r) {
			cr_expect_fail("client %d kept out: %s", i, kvc_strerror());
			continue;
		}
		snprintf(key, sizeof(key), "c%d", i);
		if (kvc_put(kvc, key, strlen(key), "value", 5, NULL, NULL) == 0 &&
		    kvc_get(kvc, key, strlen(key), 0, back, sizeof(back), NULL, NULL) == 5 &&
		    !memcmp(back, "value", 5))
			served++;
		else
			cr_expect_fail("client %d not served: %s", i, kvc_strerror());
		kvc_close(kvc);
	}
	ctl = connect_opts(&S, "none", 5000, NULL);
	cr_expect_gt(counter(ctl, "connections_refused_unauthenticated"), 0,
	             "the idle sockets were never refused: was the flood running?");
	kvc_close(ctl);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	cr_expect_eq(served, 10, "%d of 10 clients served beside another host's idle sockets",
	             served);
}

/* Many clients holding failed transfers: each stays under --max-held, but
 * together they are bounded by --max-held-total.  Two clients on a slow link
 * PUT 2 MiB at once and leave at least one read under way (2 MiB or more
 * held, the total 1 MiB); the next transfer of a client that holds some is
 * refused (BUSY), which --max-held (8 MiB) alone never would.  Before, the
 * held bytes of any number of clients could grow until they evicted
 * everyone's values. */
static void start_held_total(void)
{
	static const char *const extra[] = {"--timeout",        "3000", "--max-held", "8M",
	                                    "--max-held-total", "1M",   NULL};

	start_with(extra);
}

TestSuite(net_held_total, .init = start_held_total, .fini = stop, .timeout = 180);

struct held_put {
	struct kvc *kvc;
	const char *key;
	const uint8_t *val;
	size_t len;
	int r;
};

static void *held_put_main(void *arg)
{
	struct held_put *h = arg;

	h->r = kvc_put(h->kvc, h->key, strlen(h->key), h->val, h->len, NULL, NULL);
	return NULL;
}

Test(net_held_total, clients_together_stay_within_the_total)
{
	struct kvc *a = client(4000), *b = client(4000);
	size_t len = 2 * MIB;
	uint8_t *val = xmalloc(len);
	long long held, refused0, refused;
	uint64_t p, g;
	int ra, rb, r2;

	put_get_checked(a, "total-a", MIB, 90, &p, &g); /* both RDMA paths up */
	put_get_checked(b, "total-b", MIB, 91, &p, &g);
	refused0 = counter_inside("refused_held");
	cr_assert_eq(net_sh("rate", "2000"), 0, "scripts/netns rate failed (tc tbf)");
	fill(val, len, 92);
	{ /* at once: held until the slow link gives them back */
		struct held_put ha = {a, "total-a", val, len, 0}, hb = {b, "total-b", val, len, 0};
		pthread_t ta, tb;

		cr_assert_eq(pthread_create(&ta, NULL, held_put_main, &ha), 0);
		cr_assert_eq(pthread_create(&tb, NULL, held_put_main, &hb), 0);
		pthread_join(ta, NULL);
		pthread_join(tb, NULL);
		ra = ha.r;
		rb = hb.r;
	}
	held = counter_inside("rdma_unsettled_bytes");
	cr_log_info("two 2 MiB PUTs over 2 Mbit/s: %d, %d; %lld bytes held", ra, rb, held);
	cr_assert(ra < 0 && rb < 0, "a 2 MiB PUT over 2 Mbit/s beat the server's 3 s deadline");
	cr_assert_geq(held, 2 * MIB, "the timed-out PUTs hold %lld bytes: the test proves nothing",
	              held);
	/* One of them holds: its next transfer waits (the other's is let
	 * through: it holds nothing). */
	r2 = kvc_put(a, "total-a", 7, val, len, NULL, NULL);
	if (counter_inside("refused_held") == refused0)
		r2 = kvc_put(b, "total-b", 7, val, len, NULL, NULL);
	refused = counter_inside("refused_held");
	cr_log_info("the next PUT: %s", r2 ? kvc_strerror() : "ok");
	cr_assert_gt(refused, refused0,
	             "a client holding part of %lld bytes (--max-held-total 1M) was not refused",
	             held);
	net_restore();
	kvc_close(a);
	kvc_close(b);
	free(val);
}
