/* SPDX-License-Identifier: MIT */
/*
 * kv-bench: GET/PUT load against a kv-server, comparable with
 * redis-benchmark -c N.
 *
 * Model
 * -----
 * --concurrency N opens N client connections (N struct kvc, each with its
 * own control connection, I/O thread and transfer engine) and drives each
 * from its own thread with synchronous calls: one request in flight per
 * connection, like redis-benchmark without pipelining.  --depth D (needs
 * --zero-copy) keeps D asynchronous requests in flight per connection
 * instead, the analogue of redis-benchmark -P D.
 *
 * Values
 * ------
 * The value of key k is a window of one shared pseudo-random buffer starting
 * at 8*k bytes (mod 1 MiB), so PUTs send it without generating anything and
 * a GET can be checked byte for byte.  The first GET of every key in the run
 * is checked; a mismatch is counted, reported, and fails the run.  PUTs in
 * --op put/mixed write the same bytes, so the check stays valid.
 *
 * Measurement
 * -----------
 * Keys are loaded before the clock starts (all connections in parallel).
 * Latency is call-to-return (sync) or submit-to-callback (async), kept in a
 * log-linear histogram per connection (32 buckets per power of two: < 3.2 %
 * error) with no allocation on the hot path.  GB/s is 10^9 value bytes per
 * second.  The run is bounded: a watchdog ends the process if a call hangs
 * past its deadline.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvfs/client.h"
#include "kvfs/log.h"
#include "kvfs/util.h"
#include "kvfs/wire.h"
#include "kvfs/xfer.h"
#include "tool_opts.h"

#define PROG          "kv-bench"
#define SHIFT_WINDOW  (1u << 20) /* value of key k starts at (8*k) % this in the pattern */
#define MAX_CONNS     1024
#define MAX_DEPTH     256
#define MAX_REPORTED  5 /* mismatches / errors printed in detail */
#define HIST_SUB_BITS 5
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_BUCKETS  ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

enum op { OP_GET, OP_PUT, OP_MIXED };

struct cfg {
	struct topt_client cli; /* -s, -p, -a, -t */
	const char *prefix;     /* key prefix */
	enum op op;
	uint64_t size;     /* value bytes */
	unsigned conns;    /* connections = threads */
	unsigned depth;    /* requests in flight per connection */
	double duration;   /* seconds; 0 = load keys, report, exit */
	uint64_t keys;     /* keys preloaded and used */
	bool keys_given;   /* --keys on the command line */
	unsigned read_pct; /* --op mixed: percentage of GETs */
	bool zero_copy;    /* registered buffers, kvc_*_mr */
	bool stream;       /* PUTs as uploads (kvc_upload_*) in --part pieces */
	uint64_t part;     /* --stream: bytes per kvc_upload_write() */
	bool json;
};

/* Log-linear latency histogram, nanoseconds. */
struct hist {
	uint64_t b[HIST_BUCKETS];
	uint64_t n, sum, min, max;
};

struct worker;

/* One asynchronous request slot (--depth). */
struct slot {
	struct worker *w;
	unsigned idx;
	uint64_t key;
	bool is_get;
	uint64_t t0;
	ssize_t res;        /* set by the callback */
	uint64_t seen_size; /* entry size reported with a GET */
};

struct bench;

struct worker {
	struct bench *b;
	unsigned id;
	pthread_t thr;
	struct kvc *kvc;
	struct xfer_mr *pat_mr; /* the shared pattern, registered on this engine (zero copy) */
	struct xfer_mr *dst_mr; /* depth * size receive slots (zero copy) */
	char *dst;              /* size bytes, plain memory (not zero copy) */
	uint64_t rng;
	struct hist h;
	uint64_t gets, puts, bytes, errors, short_reads;
	uint64_t t_end; /* when the last operation of this worker returned */
	char err[256];  /* first error */
	int load_err;   /* preload failure */
	/* async completions: slot indexes pushed by the I/O thread */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned ring[MAX_DEPTH];
	unsigned ring_head, ring_n;
	struct slot slots[MAX_DEPTH];
};

struct bench {
	struct cfg c;
	uint8_t *pat; /* size + SHIFT_WINDOW bytes of pseudo-random data */
	char *keybuf; /* keys, keystride bytes each, NUL-terminated */
	size_t keystride;
	atomic_uchar *verified; /* per key: first GET checked */
	atomic_uint_least64_t n_verified;
	atomic_uint_least64_t mismatches;
	atomic_bool stop;
	pthread_barrier_t go; /* workers and main: preload done, start the clock */
	uint64_t t_start;
	struct worker *w;
	char provider[64];
};

/* ------------------------------------------------------------------ */
/* Help                                                                */

static void usage(FILE *f)
{
	fprintf(f,
	        "Usage: " PROG " [OPTIONS]\n"
	        "Load a kv-server with GETs and/or PUTs from N connections and report ops/s,\n"
	        "GB/s and p50/p99/p999 latency.  Comparable with redis-benchmark -c N.\n"
	        "\n"
	        "  -s, --server HOST:PORT   kv-server (default $KVFS_SERVER, "
	        "else " TOPT_DEFAULT_SERVER ")\n"
	        "  -o, --op OP              get, put or mixed (default get)\n"
	        "  -z, --size SIZE          value size, e.g. 4K, 1M (default 4K)\n"
	        "  -c, --concurrency N      connections, each driven by its own thread with\n"
	        "                           synchronous calls (default 1)\n"
	        "  -d, --duration S         seconds to measure, fractions allowed, or with a\n"
	        "                           unit: 500ms, 2m (default 10); 0 = load the keys,\n"
	        "                           print server counters, exit\n"
	        "  -k, --keys N             keys loaded before the clock starts (default 1000,\n"
	        "                           fewer if they would not fit in the server's memory)\n"
	        "  -p, --provider NAME      auto|tcp|shm|verbs|efa|none (default auto)\n"
	        "  -Z, --zero-copy          move values straight into/out of registered buffers\n"
	        "                           (kvc_get_mr/kvc_put_mr) instead of plain memory\n"
	        "      --stream[=SIZE]      PUT as an upload (kvc_upload_*: streamed in parts,\n"
	        "                           published at the end), written SIZE bytes at a\n"
	        "                           time (default 1M)\n"
	        "  -D, --depth D            requests in flight per connection, asynchronous\n"
	        "                           (default 1 = synchronous; D > 1 needs --zero-copy)\n"
	        "  -r, --read-pct P         --op mixed: percentage of GETs (default 90)\n"
	        "      --prefix STR         key prefix (default 'kvbench/')\n"
	        "  -a, --auth-token-file F  token file, when the server requires one\n"
	        "  -t, --timeout MS         per-call deadline in ms, or with a unit: 2s, 1m\n"
	        "                           (default 10000)\n"
	        "  -j, --json               print one JSON object instead of text\n"
	        "  -h, --help               this text\n"
	        "  -V, --version            print the version\n"
	        "\n"
	        "Every key's first GET is compared byte for byte with what was stored; the\n"
	        "number of mismatches is reported and must be 0.  GB/s is 10^9 value bytes/s;\n"
	        "latency is per call, in microseconds.\n"
	        "\n"
	        "Exit status: 0 ok; 1 a call failed or a value mismatched; 2 bad usage.\n");
}

/* ------------------------------------------------------------------ */
/* Histogram                                                           */

static unsigned hist_index(uint64_t v)
{
	unsigned e;

	if (v < HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	return (e - HIST_SUB_BITS + 1) * HIST_SUB +
	       (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* Middle of bucket @i. */
static double hist_value(unsigned i)
{
	unsigned e, sub;
	uint64_t lo, width;

	if (i < HIST_SUB)
		return i;
	e = i / HIST_SUB + HIST_SUB_BITS - 1;
	sub = i % HIST_SUB;
	lo = (1ULL << e) | ((uint64_t)sub << (e - HIST_SUB_BITS));
	width = 1ULL << (e - HIST_SUB_BITS);
	return (double)lo + (double)(width - 1) / 2.0;
}

static void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

static inline void hist_add(struct hist *h, uint64_t ns)
{
	h->b[hist_index(ns)]++;
	h->n++;
	h->sum += ns;
	if (ns < h->min)
		h->min = ns;
	if (ns > h->max)
		h->max = ns;
}

static void hist_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->n += src->n;
	dst->sum += src->sum;
	dst->min = KV_MIN(dst->min, src->min);
	dst->max = KV_MAX(dst->max, src->max);
}

/* Latency at quantile @q (0..1), microseconds. */
static double hist_quantile_us(const struct hist *h, double q)
{
	uint64_t rank, seen = 0;
	double v;

	if (!h->n)
		return 0;
	rank = (uint64_t)ceil(q * (double)h->n);
	if (rank == 0)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank) {
			v = hist_value(i);
			v = KV_MAX(v, (double)h->min);
			v = KV_MIN(v, (double)h->max);
			return v / 1000.0;
		}
	}
	return (double)h->max / 1000.0;
}

/* ------------------------------------------------------------------ */
/* Values and keys                                                     */

static inline uint64_t val_off(uint64_t key)
{
	return (key * 8) % SHIFT_WINDOW;
}

static inline const char *key_name(const struct bench *b, uint64_t k)
{
	return b->keybuf + k * b->keystride;
}

static void worker_error(struct worker *w, const char *what, uint64_t k, long r)
{
	w->errors++;
	if (!w->err[0]) {
		const char *m = kvc_strerror();

		snprintf(w->err, sizeof(w->err), "%s %s: %s", what, key_name(w->b, k),
		         m && *m ? m : strerror((int)-r));
	}
}

/* Check the first GET of key @k; @got holds @n bytes of it. */
static void verify_first(struct worker *w, uint64_t k, const uint8_t *got, uint64_t n)
{
	struct bench *b = w->b;
	const uint8_t *want = b->pat + val_off(k);
	uint64_t bad;

	if (atomic_exchange(&b->verified[k], 1))
		return;
	atomic_fetch_add(&b->n_verified, 1);
	if (n == b->c.size && !memcmp(got, want, n))
		return;
	bad = atomic_fetch_add(&b->mismatches, 1);
	if (bad >= MAX_REPORTED)
		return;
	if (n != b->c.size) {
		fprintf(stderr,
		        PROG ": mismatch on key %s: got %" PRIu64 " bytes, stored %" PRIu64 "\n",
		        key_name(b, k), n, b->c.size);
		return;
	}
	for (uint64_t i = 0; i < n; i++) {
		if (got[i] != want[i]) {
			fprintf(stderr,
			        PROG ": mismatch on key %s: first differing byte at offset %" PRIu64
			             " of %" PRIu64 " (got 0x%02x, stored 0x%02x)\n",
			        key_name(b, k), i, n, got[i], want[i]);
			break;
		}
	}
}

static inline uint64_t next_rand(struct worker *w)
{
	return kv_splitmix64(&w->rng);
}

static inline bool pick_get(struct worker *w, uint64_t r)
{
	switch (w->b->c.op) {
	case OP_GET:
		return true;
	case OP_PUT:
		return false;
	default:
		return (r >> 32) % 100 < w->b->c.read_pct;
	}
}

/* ------------------------------------------------------------------ */
/* Synchronous operations                                              */

static int do_put(struct worker *w, uint64_t k)
{
	const struct bench *b = w->b;
	const char *key = key_name(b, k);

	if (b->c.stream) {
		const uint8_t *val = b->pat + val_off(k);
		struct kvc_upload *u;
		int r = kvc_upload_open(w->kvc, key, strlen(key), NULL, &u, NULL);

		for (uint64_t off = 0; r == 0 && off < b->c.size; off += b->c.part)
			r = kvc_upload_write(u, off, val + off, KV_MIN(b->c.part, b->c.size - off));
		if (r == 0)
			return kvc_upload_commit(u, NULL, NULL);
		if (u)
			kvc_upload_abort(u);
		return r;
	}
	if (b->c.zero_copy)
		return kvc_put_mr(w->kvc, key, strlen(key), w->pat_mr, val_off(k), b->c.size, NULL,
		                  NULL);
	return kvc_put(w->kvc, key, strlen(key), b->pat + val_off(k), b->c.size, NULL, NULL);
}

static ssize_t do_get(struct worker *w, uint64_t k, uint8_t **ret_buf)
{
	const struct bench *b = w->b;
	const char *key = key_name(b, k);

	if (b->c.zero_copy) {
		struct xfer_sge sge = {.mr = w->dst_mr, .off = 0, .len = b->c.size};

		*ret_buf = xfer_mr_addr(w->dst_mr);
		return kvc_get_mr(w->kvc, key, strlen(key), 0, &sge, 1, NULL, NULL);
	}
	*ret_buf = (uint8_t *)w->dst;
	return kvc_get(w->kvc, key, strlen(key), 0, w->dst, b->c.size, NULL, NULL);
}

static void account(struct worker *w, uint64_t k, bool is_get, ssize_t r, const uint8_t *buf,
                    uint64_t t0, uint64_t t1)
{
	if (r < 0) {
		worker_error(w, is_get ? "GET" : "PUT", k, (long)r);
		return;
	}
	hist_add(&w->h, t1 - t0);
	if (is_get) {
		w->gets++;
		w->bytes += (uint64_t)r;
		if ((uint64_t)r != w->b->c.size)
			w->short_reads++;
		verify_first(w, k, buf, (uint64_t)r);
	} else {
		w->puts++;
		w->bytes += w->b->c.size;
	}
}

static void run_sync(struct worker *w)
{
	const struct bench *b = w->b;

	while (!atomic_load_explicit(&b->stop, memory_order_relaxed)) {
		uint64_t r = next_rand(w), k = r % b->c.keys, t0, t1;
		bool is_get = pick_get(w, r);
		uint8_t *buf = NULL;
		ssize_t n;

		t0 = kv_now_ns();
		n = is_get ? do_get(w, k, &buf) : do_put(w, k);
		t1 = kv_now_ns();
		account(w, k, is_get, n, buf, t0, t1);
		w->t_end = t1;
		if (n < 0 && w->errors > 1000)
			break; /* something is badly wrong; the report says what */
	}
}

/* ------------------------------------------------------------------ */
/* Asynchronous operations (--depth)                                   */

/* I/O thread of w->kvc: hand the slot back to the worker. */
static void on_done(void *arg, ssize_t res, const struct kvc_entry *entry)
{
	struct slot *s = arg;
	struct worker *w = s->w;
	uint64_t t1 = kv_now_ns();

	s->res = res;
	s->seen_size = res >= 0 && entry ? entry->size : 0;
	pthread_mutex_lock(&w->lock);
	w->ring[(w->ring_head + w->ring_n) % MAX_DEPTH] = s->idx;
	w->ring_n++;
	w->t_end = t1;
	/* Latency is recorded by the worker with this end time. */
	s->t0 = t1 - s->t0;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static int submit(struct worker *w, struct slot *s)
{
	const struct bench *b = w->b;
	uint64_t r = next_rand(w);
	const char *key;

	s->key = r % b->c.keys;
	s->is_get = pick_get(w, r);
	key = key_name(b, s->key);
	s->t0 = kv_now_ns();
	if (s->is_get) {
		struct xfer_sge sge = {
		        .mr = w->dst_mr, .off = s->idx * b->c.size, .len = b->c.size};

		return kvc_get_mr_async(w->kvc, key, strlen(key), 0, &sge, 1, NULL, on_done, s);
	}
	return kvc_put_mr_async(w->kvc, key, strlen(key), w->pat_mr, val_off(s->key), b->c.size,
	                        NULL, on_done, s);
}

static void run_async(struct worker *w)
{
	struct bench *b = w->b;
	unsigned inflight = 0;
	uint8_t *base = xfer_mr_addr(w->dst_mr);

	for (unsigned i = 0; i < b->c.depth; i++) {
		struct slot *s = &w->slots[i];
		int r;

		s->w = w;
		s->idx = i;
		r = submit(w, s);
		if (r < 0)
			worker_error(w, s->is_get ? "GET" : "PUT", s->key, r);
		else
			inflight++;
	}
	while (inflight) {
		unsigned idx;
		struct slot *s;
		int r;

		pthread_mutex_lock(&w->lock);
		while (!w->ring_n)
			pthread_cond_wait(&w->cond, &w->lock);
		idx = w->ring[w->ring_head];
		w->ring_head = (w->ring_head + 1) % MAX_DEPTH;
		w->ring_n--;
		pthread_mutex_unlock(&w->lock);
		inflight--;
		s = &w->slots[idx];
		/* on_done() turned t0 into the latency; account() takes t1 - t0. */
		account(w, s->key, s->is_get, s->res, base + (uint64_t)idx * b->c.size, 0, s->t0);
		if (atomic_load_explicit(&b->stop, memory_order_relaxed) || w->errors > 1000)
			continue;
		r = submit(w, s);
		if (r < 0)
			worker_error(w, s->is_get ? "GET" : "PUT", s->key, r);
		else
			inflight++;
	}
}

/* ------------------------------------------------------------------ */
/* Worker thread                                                       */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;

	/* Preload this connection's share of the keys. */
	for (uint64_t k = w->id; k < b->c.keys && !w->load_err; k += b->c.conns) {
		int r = do_put(w, k);

		if (r < 0) {
			w->load_err = r;
			worker_error(w, "loading PUT", k, r);
		}
	}
	w->errors = 0; /* load failures are reported through load_err */
	pthread_barrier_wait(&b->go);
	/* main checks the load results between the two barriers */
	pthread_barrier_wait(&b->go);
	if (atomic_load(&b->stop) || b->c.duration <= 0)
		return NULL;
	w->t_end = b->t_start;
	if (b->c.depth > 1)
		run_async(w);
	else
		run_sync(w);
	return NULL;
}

static int worker_connect(struct bench *b, struct worker *w, const struct kvc_opts *o)
{
	int r = kvc_connect(o, &w->kvc);

	if (r < 0)
		fprintf(stderr, PROG ": connection %u: %s; the server is set by --server\n", w->id,
		        kvc_strerror());
	return r;
}

/* Receive buffer, and for zero copy the registrations on this connection's
 * engine.  Needs the value pattern (setup_values()). */
static int worker_buffers(struct bench *b, struct worker *w)
{
	struct xfer_engine *eng;
	int r;

	if (!b->c.zero_copy) {
		w->dst = malloc(b->c.size);
		if (!w->dst) {
			fprintf(stderr, PROG ": cannot allocate %" PRIu64 " bytes\n", b->c.size);
			return -ENOMEM;
		}
		memset(w->dst, 0, b->c.size);
		return 0;
	}
	eng = kvc_engine(w->kvc);
	if (!eng) {
		fprintf(stderr, PROG
		        ": --zero-copy: the connection has no RDMA engine (provider none, or the "
		        "server does not do RDMA with us); drop --zero-copy or pick a common "
		        "--provider\n");
		return -ENOTSUP;
	}
	r = xfer_mr_reg(eng, b->pat, b->c.size + SHIFT_WINDOW,
	                XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ, &w->pat_mr);
	if (r < 0) {
		fprintf(stderr,
		        PROG ": cannot register the value pattern (%" PRIu64 " bytes): %s\n",
		        b->c.size + SHIFT_WINDOW, strerror(-r));
		return r;
	}
	r = xfer_buf_alloc(eng, b->c.size * b->c.depth,
	                   XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_WRITE, &w->dst_mr);
	if (r < 0) {
		fprintf(stderr,
		        PROG ": cannot allocate %" PRIu64 " registered bytes for GETs: %s (try a "
		             "smaller --size or --depth)\n",
		        b->c.size * b->c.depth, strerror(-r));
		return r;
	}
	return 0;
}

static void worker_teardown(struct worker *w)
{
	xfer_mr_dereg(w->dst_mr);
	xfer_mr_dereg(w->pat_mr);
	kvc_close(w->kvc); /* after the regions: no call is in flight any more */
	free(w->dst);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
}

/* ------------------------------------------------------------------ */
/* Server counters                                                     */

struct counters {
	uint64_t keys, bytes_used, capacity, overhead_bytes;
	bool has_keys, has_capacity, has_overhead;
};

/* docs/protocol.md names "bytes_used"/"capacity"; kv-server reports
 * "value_bytes"/"capacity_bytes": take either. */
static void on_counter(void *arg, const char *name, uint64_t value)
{
	struct counters *c = arg;

	if (!strcmp(name, "keys")) {
		c->keys = value;
		c->has_keys = true;
	} else if (!strcmp(name, "bytes_used") || !strcmp(name, "value_bytes")) {
		c->bytes_used = value;
	} else if (!strcmp(name, "capacity") || !strcmp(name, "capacity_bytes")) {
		c->capacity = value;
		c->has_capacity = true;
	} else if (!strcmp(name, "overhead_bytes")) {
		c->overhead_bytes = value;
		c->has_overhead = true;
	}
}

/* ------------------------------------------------------------------ */
/* Command line                                                        */

static const struct topt_tool tool = {.prog = PROG, .usage = usage};

static int parse_args(int argc, char **argv, struct cfg *c)
{
	enum { O_PREFIX = 256, O_STREAM };
	static const struct option lo[] = {
	        TOPT_CLIENT_LONG,
	        {"op", required_argument, NULL, 'o'},
	        {"size", required_argument, NULL, 'z'},
	        {"concurrency", required_argument, NULL, 'c'},
	        {"duration", required_argument, NULL, 'd'},
	        {"keys", required_argument, NULL, 'k'},
	        {"zero-copy", no_argument, NULL, 'Z'},
	        {"depth", required_argument, NULL, 'D'},
	        {"read-pct", required_argument, NULL, 'r'},
	        {"prefix", required_argument, NULL, O_PREFIX},
	        {"stream", optional_argument, NULL, O_STREAM},
	        {"json", no_argument, NULL, 'j'},
	        {0},
	};
	uint64_t v;
	int opt, r;

	memset(c, 0, sizeof(*c));
	topt_client_init(&c->cli);
	c->prefix = "kvbench/";
	c->op = OP_GET;
	c->size = 4096;
	c->conns = 1;
	c->depth = 1;
	c->duration = 10;
	c->keys = 1000;
	c->read_pct = 90;

	while ((opt = getopt_long(argc, argv, TOPT_CLIENT_SHORT "o:z:c:d:k:ZD:r:j", lo, NULL)) !=
	       -1) {
		r = topt_client_opt(&tool, &c->cli, opt, optarg);
		if (r == TOPT_EXIT)
			exit(0);
		if (r != TOPT_OTHER) {
			if (r < 0)
				return r;
			continue;
		}
		switch (opt) {
		case 'o':
			if (!strcmp(optarg, "get"))
				c->op = OP_GET;
			else if (!strcmp(optarg, "put"))
				c->op = OP_PUT;
			else if (!strcmp(optarg, "mixed"))
				c->op = OP_MIXED;
			else {
				fprintf(stderr, PROG ": --op: use get, put or mixed, not '%s'\n",
				        optarg);
				return -EINVAL;
			}
			break;
		case 'z':
			if (topt_parse_size(optarg, 1, 64 * KV_GIB, &c->size) < 0) {
				fprintf(stderr,
				        PROG
				        ": --size: '%s' is not a size from 1 byte to 64G (e.g. "
				        "4K, 1M)\n",
				        optarg);
				return -EINVAL;
			}
			break;
		case 'c':
			if (topt_uint_arg(&tool, "--concurrency", optarg, 1, MAX_CONNS, &v))
				return -EINVAL;
			c->conns = (unsigned)v;
			break;
		case 'd':
			if (topt_secs_arg(&tool, "--duration", optarg, 0, 86400, &c->duration))
				return -EINVAL;
			break;
		case 'k':
			if (topt_uint_arg(&tool, "--keys", optarg, 1, 100000000, &c->keys))
				return -EINVAL;
			c->keys_given = true;
			break;
		case 'Z':
			c->zero_copy = true;
			break;
		case 'D':
			if (topt_uint_arg(&tool, "--depth", optarg, 1, MAX_DEPTH, &v))
				return -EINVAL;
			c->depth = (unsigned)v;
			break;
		case 'r':
			if (topt_uint_arg(&tool, "--read-pct", optarg, 0, 100, &v))
				return -EINVAL;
			c->read_pct = (unsigned)v;
			break;
		case O_PREFIX:
			c->prefix = optarg;
			break;
		case O_STREAM:
			c->stream = true;
			c->part = 1 << 20;
			if (optarg && topt_parse_size(optarg, 1, KV_GIB, &c->part) < 0) {
				fprintf(stderr,
				        PROG ": --stream: '%s' is not a size from 1 byte to 1G "
				             "(e.g. 1M)\n",
				        optarg);
				return -EINVAL;
			}
			break;
		case 'j':
			c->json = true;
			break;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'. Try '" PROG " --help'.\n",
		        argv[optind]);
		return -EINVAL;
	}
	if (c->stream && (c->zero_copy || c->depth > 1)) {
		fprintf(stderr, PROG ": --stream goes with neither --zero-copy nor --depth\n");
		return -EINVAL;
	}
	if (c->depth > 1 && !c->zero_copy) {
		fprintf(stderr,
		        PROG ": --depth %u needs --zero-copy (the asynchronous calls take "
		             "registered memory)\n",
		        c->depth);
		return -EINVAL;
	}
	if (strlen(c->prefix) > 1000) {
		fprintf(stderr,
		        PROG ": --prefix is longer than 1000 bytes (keys are at most 1024)\n");
		return -EINVAL;
	}
	{
		char k[1100];
		const char *why;

		/* Keys are PREFIX + 8 digits: check one with the server's policy. */
		snprintf(k, sizeof(k), "%s00000000", c->prefix);
		if (wire_key_validate(k, strlen(k), 0, &why) < 0) {
			fprintf(stderr, PROG ": --prefix '%s' makes bad keys: %s\n", c->prefix,
			        why);
			return -EINVAL;
		}
	}
	return topt_client_check(&tool, &c->cli);
}

/* ------------------------------------------------------------------ */
/* Report                                                              */

static const char *op_name(enum op op)
{
	return op == OP_GET ? "get" : op == OP_PUT ? "put" : "mixed";
}

struct result {
	double secs;
	uint64_t ops, gets, puts, bytes, errors, short_reads;
	struct hist h;
	struct counters srv;
	bool srv_ok;
	double load_secs;
};

static void report(const struct bench *b, const struct result *res)
{
	const struct cfg *c = &b->c;
	double ops_s = res->secs > 0 ? (double)res->ops / res->secs : 0;
	double gbs = res->secs > 0 ? (double)res->bytes / res->secs / 1e9 : 0;
	double mean = res->h.n ? (double)res->h.sum / (double)res->h.n / 1000.0 : 0;
	double p50 = hist_quantile_us(&res->h, 0.50), p99 = hist_quantile_us(&res->h, 0.99);
	double p999 = hist_quantile_us(&res->h, 0.999);
	double maxus = res->h.n ? (double)res->h.max / 1000.0 : 0;
	uint64_t mism = atomic_load(&b->mismatches), nver = atomic_load(&b->n_verified);
	double ovh = res->srv_ok && res->srv.has_overhead && res->srv.keys
	                     ? (double)res->srv.overhead_bytes / (double)res->srv.keys
	                     : -1;
	char sz[32];

	if (c->json) {
		printf("{\"server\":");
		kv_json_str(stdout, c->cli.server);
		printf(",\"provider\":");
		kv_json_str(stdout, b->provider);
		printf(",\"op\":\"%s\",\"size\":%" PRIu64 ",\"concurrency\":%u,\"depth\":%u,"
		       "\"zero_copy\":%s,\"stream\":%s,\"keys\":%" PRIu64
		       ",\"read_pct\":%u,\"load_s\":%.3f,"
		       "\"duration_s\":%.3f,\"ops\":%" PRIu64 ",\"gets\":%" PRIu64
		       ",\"puts\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"ops_per_s\":%.1f,"
		       "\"gb_per_s\":%.4f,\"lat_us\":{\"mean\":%.2f,\"p50\":%.2f,\"p99\":%.2f,"
		       "\"p999\":%.2f,\"max\":%.2f},\"errors\":%" PRIu64 ",\"short_reads\":%" PRIu64
		       ",\"verified\":%" PRIu64 ",\"mismatches\":%" PRIu64,
		       op_name(c->op), c->size, c->conns, c->depth, c->zero_copy ? "true" : "false",
		       c->stream ? "true" : "false", c->keys,
		       c->op == OP_MIXED ? c->read_pct
		       : c->op == OP_GET ? 100u
		                         : 0u,
		       res->load_secs, res->secs, res->ops, res->gets, res->puts, res->bytes, ops_s,
		       gbs, mean, p50, p99, p999, maxus, res->errors, res->short_reads, nver, mism);
		if (res->srv_ok) {
			printf(",\"server_counters\":{\"keys\":%" PRIu64 ",\"bytes_used\":%" PRIu64
			       ",\"capacity\":%" PRIu64,
			       res->srv.keys, res->srv.bytes_used, res->srv.capacity);
			if (res->srv.has_overhead)
				printf(",\"overhead_bytes\":%" PRIu64 ",\"overhead_per_key\":%.1f",
				       res->srv.overhead_bytes, ovh);
			printf("}");
		}
		printf("}\n");
		return;
	}
	printf(PROG ": %s %s x %u connection%s (depth %u%s), %" PRIu64
	            " keys, provider %s, server %s\n",
	       op_name(c->op), kv_fmt_size(c->size, sz, sizeof(sz)), c->conns,
	       c->conns == 1 ? "" : "s", c->depth,
	       c->zero_copy ? ", zero copy"
	       : c->stream  ? ", streamed"
	                    : "",
	       c->keys, b->provider, c->cli.server);
	printf("  load       %.2f s\n", res->load_secs);
	if (c->duration > 0) {
		printf("  ops        %" PRIu64 " in %.2f s (%" PRIu64 " GET, %" PRIu64 " PUT)\n",
		       res->ops, res->secs, res->gets, res->puts);
		printf("  rate       %.1f ops/s, %.3f GB/s\n", ops_s, gbs);
		printf("  latency us mean %.1f  p50 %.1f  p99 %.1f  p999 %.1f  max %.1f\n", mean,
		       p50, p99, p999, maxus);
		printf("  errors     %" PRIu64 "  short reads %" PRIu64 "\n", res->errors,
		       res->short_reads);
		printf("  mismatches %" PRIu64 " (first GET of %" PRIu64 " keys checked)\n", mism,
		       nver);
	}
	if (res->srv_ok) {
		printf("  server     keys %" PRIu64 ", bytes_used %" PRIu64 ", capacity %" PRIu64,
		       res->srv.keys, res->srv.bytes_used, res->srv.capacity);
		if (res->srv.has_overhead)
			printf(", overhead %" PRIu64 " B (%.1f B/key)", res->srv.overhead_bytes,
			       ovh);
		printf("\n");
	}
}

/* ------------------------------------------------------------------ */

static void on_alarm(int sig)
{
	static const char m[] = PROG ": the run did not end in time (a call hung past its "
	                             "deadline); giving up\n";
	ssize_t n = write(STDERR_FILENO, m, sizeof(m) - 1);

	(void)n;
	(void)sig;
	_exit(1);
}

static int setup_values(struct bench *b)
{
	uint64_t s = 0xC0FFEEULL, len = b->c.size + SHIFT_WINDOW;
	size_t plen = strlen(b->c.prefix);

	b->pat = aligned_alloc(4096, (len + 4095) & ~4095ULL);
	if (!b->pat)
		return -ENOMEM;
	for (uint64_t i = 0; i < len; i += 8) {
		uint64_t x = kv_splitmix64(&s);

		memcpy(b->pat + i, &x, KV_MIN(8, len - i));
	}
	b->keystride = plen + 21;
	b->keybuf = malloc(b->c.keys * b->keystride);
	b->verified = calloc(b->c.keys, sizeof(*b->verified));
	if (!b->keybuf || !b->verified)
		return -ENOMEM;
	for (uint64_t k = 0; k < b->c.keys; k++)
		snprintf(b->keybuf + k * b->keystride, b->keystride, "%s%08" PRIu64, b->c.prefix,
		         k);
	return 0;
}

/* Fewer keys when they would not fit: the server would evict them. */
static int fit_keys(struct bench *b, struct kvc *kvc)
{
	struct kvc_limits lim;
	struct counters sc = {0};
	uint64_t room, fit;

	kvc_limits(kvc, &lim);
	if (lim.max_value && b->c.size > lim.max_value) {
		fprintf(stderr,
		        PROG ": --size %" PRIu64 " is above the server's largest value (%" PRIu64
		             " bytes); use a smaller --size\n",
		        b->c.size, lim.max_value);
		return -EFBIG;
	}
	snprintf(b->provider, sizeof(b->provider), "%s", lim.provider[0] ? lim.provider : "?");
	if (kvc_stats(kvc, on_counter, &sc) < 0 || !sc.has_capacity || !sc.capacity)
		return 0;
	/* Leave a quarter free: PUTs replace values and need room for both. */
	room = sc.capacity / 4 * 3;
	fit = room / b->c.size;
	if (fit == 0) {
		fprintf(stderr,
		        PROG ": --size %" PRIu64 " does not fit in the server's %" PRIu64
		             " bytes of value memory; use a smaller --size or a larger --memory\n",
		        b->c.size, sc.capacity);
		return -ENOSPC;
	}
	if (fit < b->c.keys) {
		if (b->c.keys_given || !b->c.json)
			fprintf(stderr,
			        PROG ": using %" PRIu64 " keys instead of %" PRIu64
			             " so they fit in the server's memory\n",
			        fit, b->c.keys);
		b->c.keys = fit;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct bench b;
	struct kvc_opts o;
	struct result res;
	struct timespec ts;
	uint64_t t_load, t_go, t_stop, load_errs = 0;
	unsigned started = 0;
	int r, rc = 1;

	memset(&b, 0, sizeof(b));
	memset(&res, 0, sizeof(res));
	kv_log_init(PROG);
	if (!getenv("KVFS_LOG"))
		kv_log_level = KV_LOG_WARN;
	signal(SIGPIPE, SIG_IGN);
	if (parse_args(argc, argv, &b.c) < 0)
		return 2;
	topt_client_kvc_opts(&b.c.cli, PROG, &o);

	b.w = calloc(b.c.conns, sizeof(*b.w));
	if (!b.w) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	for (unsigned i = 0; i < b.c.conns; i++) {
		struct worker *w = &b.w[i];

		w->b = &b;
		w->id = i;
		w->rng = 0x1234567ULL + i * 0x9E3779B97F4A7C15ULL;
		hist_init(&w->h);
		pthread_mutex_init(&w->lock, NULL);
		pthread_cond_init(&w->cond, NULL);
	}
	/* Connection 0 first: it tells us the limits before we size anything. */
	if (worker_connect(&b, &b.w[0], &o) < 0 || fit_keys(&b, b.w[0].kvc) < 0)
		goto out_teardown;
	if (setup_values(&b) < 0) {
		fprintf(stderr, PROG ": out of memory for %" PRIu64 " keys of %" PRIu64 " bytes\n",
		        b.c.keys, b.c.size);
		goto out_teardown;
	}
	for (unsigned i = 0; i < b.c.conns; i++)
		if ((i && worker_connect(&b, &b.w[i], &o) < 0) || worker_buffers(&b, &b.w[i]) < 0)
			goto out_teardown;

	/* Bounded run: load + duration + a generous margin per call deadline. */
	signal(SIGALRM, on_alarm);
	alarm((unsigned)(b.c.duration + 3.0 * b.c.cli.timeout_ms / 1000.0 + 60.0 +
	                 (double)b.c.keys * (double)b.c.size / 1e8));

	pthread_barrier_init(&b.go, NULL, b.c.conns + 1);
	t_load = kv_now_ns();
	for (; started < b.c.conns; started++) {
		r = pthread_create(&b.w[started].thr, NULL, worker_main, &b.w[started]);
		if (r) {
			fprintf(stderr, PROG ": cannot start thread %u: %s\n", started,
			        strerror(r));
			/* Let the started ones finish; they wait at the barrier forever
			 * otherwise, so there is no clean way back: exit. */
			_exit(1);
		}
	}
	pthread_barrier_wait(&b.go);
	res.load_secs = (double)(kv_now_ns() - t_load) / 1e9;
	for (unsigned i = 0; i < b.c.conns; i++) {
		if (b.w[i].load_err) {
			if (!load_errs)
				fprintf(stderr, PROG ": loading the keys failed: %s\n", b.w[i].err);
			load_errs++;
		}
	}
	if (load_errs)
		atomic_store(&b.stop, true);
	t_go = kv_now_ns();
	b.t_start = t_go;
	pthread_barrier_wait(&b.go);
	if (!load_errs && b.c.duration > 0) {
		uint64_t end = t_go + (uint64_t)(b.c.duration * 1e9);

		while ((t_stop = kv_now_ns()) < end) {
			uint64_t left = end - t_stop;

			ts.tv_sec = (time_t)(left / 1000000000ULL);
			ts.tv_nsec = (long)(left % 1000000000ULL);
			nanosleep(&ts, NULL);
		}
		atomic_store(&b.stop, true);
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(b.w[i].thr, NULL);
	alarm(0);
	pthread_barrier_destroy(&b.go);
	if (load_errs)
		goto out_teardown;

	hist_init(&res.h);
	for (unsigned i = 0; i < b.c.conns; i++) {
		struct worker *w = &b.w[i];
		double s = (double)(w->t_end - t_go) / 1e9;

		hist_merge(&res.h, &w->h);
		res.gets += w->gets;
		res.puts += w->puts;
		res.bytes += w->bytes;
		res.errors += w->errors;
		res.short_reads += w->short_reads;
		if (w->t_end > t_go && s > res.secs)
			res.secs = s;
		if (w->errors && !(b.c.json && res.errors > w->errors))
			fprintf(stderr,
			        PROG ": connection %u: %" PRIu64 " failed calls, first: %s\n", i,
			        w->errors, w->err);
	}
	res.ops = res.gets + res.puts;
	res.srv_ok = kvc_stats(b.w[0].kvc, on_counter, &res.srv) == 0;
	report(&b, &res);
	rc = res.errors || atomic_load(&b.mismatches) ? 1 : 0;
	if (atomic_load(&b.mismatches))
		fprintf(stderr, PROG ": %" PRIu64 " values did not match what was stored\n",
		        (uint64_t)atomic_load(&b.mismatches));

out_teardown:
	for (unsigned i = 0; i < b.c.conns; i++)
		worker_teardown(&b.w[i]);
	free(b.w);
	free(b.pat);
	free(b.keybuf);
	free(b.verified);
	return rc;
}
