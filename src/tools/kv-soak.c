/* SPDX-License-Identifier: MIT */
/*
 * kv-soak: a bounded run of mixed PUT/GET/DELETE/RENAME against a kv-server
 * from several clients, with every value checked.
 *
 * Values
 * ------
 * A value of at least VAL_HDR_LEN bytes starts with a header (magic, the key
 * it was written for, a generation, its length, a checksum of all of it) and
 * a body generated from (run seed, key, generation), so any GET can be
 * checked on its own.  Shorter values (down to 0 bytes) are the first bytes
 * of such a body; they are checked against what their owner expects.
 *
 * Expectations
 * ------------
 * Client c owns the keys [c * keys / clients, (c + 1) * keys / clients) and
 * is the only one that writes them, so it knows exactly what each of them
 * holds: nothing (a GET must give ENOENT), or the value, length and
 * version of its last acknowledged PUT (a GET must give exactly that, or
 * ENOENT when the server evicted it).  RENAME moves the expectation, DELETE
 * makes it "absent".  A call that fails in a way that leaves its effect
 * unknown (timeout, reset) makes the key "any" until the next GET has seen
 * it.  A few shared keys are written by every client and checked for
 * self-consistency only.
 *
 * Eviction
 * --------
 * A key seen missing while its owner expects a value is counted as evicted,
 * and the expectation becomes "absent".  Each such sighting stands for one
 * eviction, so at the end their number must not exceed the growth of the
 * server's "evictions" counter; more would mean keys vanished that the
 * server did not evict.
 *
 * Server memory
 * -------------
 * With --server-pid, VmRSS/VmData/VmHWM of the server are sampled from
 * /proc/PID/status at the start, at every progress line and at the end
 * (after the clients disconnected).  --max-growth bounds the growth from
 * the first sample after --warmup to the end: a leak check, not a timing.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
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
#include "kvfs/xfer.h"
#include "tool_opts.h"

#define PROG         "kv-soak"
#define VAL_MAGIC    0x4b41534bu /* "KSAK" */
#define MAX_CLIENTS  256
#define MAX_REPORTED 5 /* mismatches / unexpected errors printed in detail */
#define MAX_ERRNO    256
#define MAX_SAMPLES  8192
#define RECENT       32            /* half of the GETs read one of the last RECENT keys written */
#define MAX_SECS     (86400.0 * 7) /* --duration, --interval, --warmup */

enum op_type { OP_GET, OP_PUT, OP_DELETE, OP_RENAME, OP__N };
static const char *const op_names[OP__N] = {"get", "put", "delete", "rename"};

/* Header of every value of at least VAL_HDR_LEN bytes (host byte order). */
struct val_hdr {
	uint32_t magic;
	uint32_t origin; /* key id the value was written for (RENAME keeps it) */
	uint64_t gen;    /* (client + 1) << 40 | the client's PUT counter; seeds the body */
	uint64_t len;    /* whole value, header included */
	uint64_t sum;    /* val_sum() of the fields above and the body */
};
#define VAL_HDR_LEN sizeof(struct val_hdr)

/* What the owner knows about one of its keys. */
enum exp_state {
	EXP_ABSENT,  /* a GET must give ENOENT */
	EXP_PRESENT, /* a GET must give exactly (origin, gen, len, version), or ENOENT if evicted */
	EXP_ANY,     /* unknown after a failed call: any self-consistent value, or ENOENT */
};

struct expect {
	uint8_t st; /* enum exp_state */
	uint32_t origin;
	uint64_t gen, len, version;
};

struct cfg {
	struct topt_client cli; /* -s, -p, -a, -t */
	const char *prefix;
	unsigned clients;
	double duration; /* seconds of mixed operations */
	double interval; /* seconds between progress lines and memory samples */
	double warmup;   /* seconds before the "after warm-up" memory sample; <0 = duration/5 */
	uint32_t keys;   /* owned keys, split among the clients */
	uint32_t shared; /* keys every client writes */
	uint64_t min_size, max_size;
	uint64_t seed;
	bool seed_given;
	int server_pid;      /* 0 = no memory samples */
	uint64_t reconnect;  /* each client reconnects after this many operations, 0 = never */
	uint64_t max_growth; /* 0 = no memory check */
	bool require_evictions;
	bool json;
};

/* Counters of one client; read by the main thread while the client runs. */
struct counts {
	atomic_uint_least64_t ops[OP__N];
	atomic_uint_least64_t shared_ops;
	atomic_uint_least64_t put_bytes, get_bytes;
	atomic_uint_least64_t verified;        /* GETs whose bytes were checked */
	atomic_uint_least64_t evicted;         /* own keys seen missing while expected */
	atomic_uint_least64_t unexpected;      /* errors that should not happen */
	atomic_uint_least64_t zero_copy;       /* operations through registered memory */
	atomic_uint_least64_t reconnects;      /* connections closed and opened again */
	atomic_uint_least64_t errs[MAX_ERRNO]; /* every failed call, by errno */
};

struct soak;

struct client {
	struct soak *s;
	unsigned id;
	pthread_t thr;
	struct kvc *kvc;
	uint32_t k0, nk;    /* owned keys [k0, k0 + nk) */
	struct expect *exp; /* nk entries */
	uint64_t rng;
	uint64_t puts;           /* PUT counter, the low bits of gen */
	uint8_t *wbuf;           /* value being written (plain memory) */
	uint8_t *rbuf;           /* GET target (plain memory), max_size + 4 KiB */
	uint8_t *xbuf;           /* expected bytes, regenerated for ranged reads and reports */
	struct xfer_mr *wmr;     /* registered PUT source (zero copy), NULL without RDMA */
	struct xfer_mr *rmr;     /* registered GET target (zero copy) */
	uint32_t recent[RECENT]; /* owned keys written last, for read-after-write GETs */
	unsigned nrecent;
	int prep_err; /* the initial DELETE of the owned keys failed */
	struct counts n;
};

struct vm {
	double t;                /* seconds since the start */
	uint64_t rss, data, hwm; /* KiB */
	bool ok;
};

struct soak {
	struct cfg c;
	struct client *cl;
	atomic_bool stop;
	atomic_uint_least64_t mismatches;
	atomic_uint_least64_t reported_errors;
	pthread_barrier_t go; /* clients and main: owned keys cleared */
	pthread_mutex_t report_lock;
	struct kvc *mon;             /* main thread's connection for STATS */
	const struct kvc_opts *opts; /* for the clients' connections */
	char keyfmt[64];
	struct vm vm[MAX_SAMPLES];
	unsigned nvm;
	struct vm vm_start, vm_warm, vm_end, vm_max;
	uint64_t evictions0, evictions1;
	bool evictions_ok;
	uint64_t t0;
	char provider[64];
	uint64_t max_inline;
};

/* ------------------------------------------------------------------ */
/* Help                                                                */

static void usage(FILE *f)
{
	fprintf(f, "Usage: " PROG " [OPTIONS]\n"
	           "Soak a kv-server with mixed PUT/GET/DELETE/RENAME from several connections,\n"
	           "checking every value, and watch the server's memory.\n"
	           "\n"
	           "  -s, --server HOST:PORT   kv-server (default $KVFS_SERVER, "
	           "else " TOPT_DEFAULT_SERVER ")\n"
	           "  -p, --provider NAME      auto|tcp|shm|verbs|efa|none (default auto)\n"
	           "  -c, --clients N          connections, one thread each (default 4)\n"
	           "  -d, --duration S         seconds of mixed operations (default 60)\n"
	           "  -k, --keys N             keys owned by the clients, split among them\n"
	           "                           (default 1024)\n"
	           "      --shared-keys N      keys every client writes (default 8)\n"
	           "      --min-size SIZE      smallest value (default 0)\n"
	           "      --max-size SIZE      largest value (default 4M); sizes are log-uniform\n"
	           "                           in between, so small inline values and large RDMA\n"
	           "                           ones mix (mean about max/ln(max))\n"
	           "      --seed N             run seed (default: from the clock, printed)\n"
	           "      --server-pid PID     sample VmRSS/VmData/VmHWM of this process\n"
	           "      --interval S         seconds between progress lines and samples (default "
	           "5)\n"
	           "      --warmup S           the 'after warm-up' sample is the first one at or\n"
	           "                           after S seconds (default duration/5)\n"
	           "      --max-growth SIZE    fail if VmRSS or VmData grew more than SIZE from\n"
	           "                           the warm-up sample to the end (needs --server-pid)\n"
	           "      --require-evictions  fail unless the server evicted something\n"
	           "      --reconnect N        each client closes its connection and opens a new\n"
	           "                           one every N operations (default 0 = never)\n"
	           "      --prefix STR         key prefix (default 'soak/')\n"
	           "  -a, --auth-token-file F  token file, when the server requires one\n"
	           "  -t, --timeout MS         per-call deadline in ms, or with a unit: 2s, 1m\n"
	           "                           (default 10000)\n"
	           "  -j, --json               print one JSON object instead of text\n"
	           "  -h, --help               this text\n"
	           "  -V, --version            print the version\n"
	           "\n"
	           "Times given in seconds (S) take fractions, or a unit: 500ms, 2s, 2m.\n"
	           "A progress line goes to stderr every --interval seconds.  Size the keys so\n"
	           "that keys x mean size is well above the server's --memory: eviction is part\n"
	           "of what is checked.\n"
	           "\n"
	           "Exit status: 0 no mismatch, no unexpected error and the checks asked for\n"
	           "passed; 1 otherwise; 2 bad usage.\n");
}

/* ------------------------------------------------------------------ */
/* Values                                                              */

static inline uint64_t rnd(struct client *c)
{
	return kv_splitmix64(&c->rng);
}

static uint64_t body_seed(uint64_t run_seed, uint32_t origin, uint64_t gen)
{
	uint64_t s = run_seed ^ ((uint64_t)origin << 32) ^ (gen * 0xD6E8FEB86659FD93ULL);

	return kv_splitmix64(&s);
}

/* @n pseudo-random bytes from @seed (xorshift64, 8 bytes per step). */
static void gen_bytes(uint8_t *p, uint64_t n, uint64_t seed)
{
	uint64_t x = seed | 1, i;

	for (i = 0; i + 8 <= n; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(p + i, &x, 8);
	}
	x ^= x << 13;
	for (; i < n; i++)
		p[i] = (uint8_t)(x >> (8 * (i & 7)));
}

/* Checksum of a header (its sum field excluded) and @n body bytes.  Order
 * sensitive, so swapped or shifted pieces change it. */
static uint64_t val_sum(const struct val_hdr *h, const uint8_t *body, uint64_t n)
{
	uint64_t s = 0x243F6A8885A308D3ULL, w, i;

#define MIX(v)                                                                                     \
	do {                                                                                       \
		s = (s ^ (v)) * 0x9E3779B97F4A7C15ULL;                                             \
		s ^= s >> 29;                                                                      \
	} while (0)
	MIX(((uint64_t)h->magic << 32) | h->origin);
	MIX(h->gen);
	MIX(h->len);
	for (i = 0; i + 8 <= n; i += 8) {
		memcpy(&w, body + i, 8);
		MIX(w);
	}
	w = 0;
	memcpy(&w, body + i, n - i);
	MIX(w ^ (n << 3));
#undef MIX
	return s;
}

/* Write the value (@origin, @gen) of @len bytes into @p. */
static void make_value(uint64_t run_seed, uint8_t *p, uint32_t origin, uint64_t gen, uint64_t len)
{
	uint64_t seed = body_seed(run_seed, origin, gen);
	struct val_hdr h = {.magic = VAL_MAGIC, .origin = origin, .gen = gen, .len = len};

	if (len < VAL_HDR_LEN) {
		gen_bytes(p, len, seed);
		return;
	}
	gen_bytes(p + VAL_HDR_LEN, len - VAL_HDR_LEN, seed);
	h.sum = val_sum(&h, p + VAL_HDR_LEN, len - VAL_HDR_LEN);
	memcpy(p, &h, sizeof(h));
}

/* Check @n bytes on their own: NULL if they are a whole, intact value (its
 * header in *ret_h), else what is wrong. */
static const char *val_check(const uint8_t *p, uint64_t n, struct val_hdr *ret_h)
{
	struct val_hdr h;

	if (n < VAL_HDR_LEN)
		return "shorter than a header";
	memcpy(&h, p, sizeof(h));
	if (h.magic != VAL_MAGIC)
		return "bad magic";
	if (h.len != n)
		return "length in the header differs from the bytes returned";
	if (val_sum(&h, p + VAL_HDR_LEN, n - VAL_HDR_LEN) != h.sum)
		return "checksum does not match (torn or corrupted value)";
	*ret_h = h;
	return NULL;
}

/* Log-uniform in [min, max]. */
static uint64_t pick_size(struct client *c, uint64_t min, uint64_t max)
{
	double u = (double)(rnd(c) >> 11) / 9007199254740992.0, lo, hi, v;

	if (max <= min)
		return min;
	lo = log((double)min + 1);
	hi = log((double)max + 1);
	v = exp(lo + u * (hi - lo)) - 1;
	if (v < (double)min)
		return min;
	if (v > (double)max)
		return max;
	return (uint64_t)v;
}

/* ------------------------------------------------------------------ */
/* Accounting                                                          */

static inline void cnt(atomic_uint_least64_t *x, uint64_t n)
{
	atomic_fetch_add_explicit(x, n, memory_order_relaxed);
}

static inline uint64_t rd(atomic_uint_least64_t *x)
{
	return atomic_load_explicit(x, memory_order_relaxed);
}

static void key_name(const struct soak *s, uint32_t id, char *buf, size_t len)
{
	if (id < s->c.keys)
		snprintf(buf, len, "%sk%08" PRIu32, s->c.prefix, id);
	else
		snprintf(buf, len, "%sshared/%04" PRIu32, s->c.prefix, id - s->c.keys);
}

static void exp_str(const struct expect *e, char *buf, size_t len)
{
	switch (e->st) {
	case EXP_ABSENT:
		snprintf(buf, len, "absent");
		break;
	case EXP_PRESENT:
		snprintf(buf, len,
		         "value (origin %" PRIu32 ", gen %#" PRIx64 ", %" PRIu64
		         " bytes, version %" PRIu64 ")",
		         e->origin, e->gen, e->len, e->version);
		break;
	default:
		snprintf(buf, len, "unknown after a failed call");
	}
}

static void mismatch(struct client *c, const char *op, uint32_t key, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void mismatch(struct client *c, const char *op, uint32_t key, const char *fmt, ...)
{
	struct soak *s = c->s;
	uint64_t nth = atomic_fetch_add(&s->mismatches, 1);
	char name[128], msg[768];
	va_list ap;

	if (nth >= MAX_REPORTED)
		return;
	key_name(s, key, name, sizeof(name));
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&s->report_lock);
	fprintf(stderr, PROG ": MISMATCH #%" PRIu64 ", client %u, %s %s: %s\n", nth + 1, c->id, op,
	        name, msg);
	pthread_mutex_unlock(&s->report_lock);
}

static const char *errname(int e)
{
	const char *n = e > 0 ? strerrorname_np(e) : NULL;

	return n ? n : "other";
}

/* Any failed call: counted by errno. */
static void count_errno(struct client *c, long r)
{
	long e = -r;

	cnt(&c->n.errs[e > 0 && e < MAX_ERRNO ? e : 0], 1);
}

/* A failure that should not happen: counted, the first few printed. */
static void unexpected(struct client *c, const char *op, uint32_t key, long r)
{
	struct soak *s = c->s;
	const char *m = kvc_strerror();
	char name[128];

	cnt(&c->n.unexpected, 1);
	if (atomic_fetch_add(&s->reported_errors, 1) >= MAX_REPORTED)
		return;
	key_name(s, key, name, sizeof(name));
	fprintf(stderr, PROG ": client %u: %s %s failed: %s (%s)\n", c->id, op, name,
	        m && *m ? m : strerror((int)-r), errname((int)-r));
}

/* Outcome unknown (timeout, reset, ...): the key may hold anything now. */
static inline bool uncertain(long r)
{
	return r != -ENOENT && r != -EEXIST && r != -ENOSPC && r != -EFBIG && r != -EINVAL &&
	       r != -ENAMETOOLONG && r != -EACCES;
}

/* ------------------------------------------------------------------ */
/* Operations on owned keys                                            */

/* Describe how @got differs from the expected value @e. */
static void value_mismatch(struct client *c, const char *op, uint32_t key, const struct expect *e,
                           const uint8_t *got, uint64_t n, const struct kvc_entry *ent,
                           const char *why)
{
	char want[192], hdr[160] = "";
	uint64_t i, lim;
	struct val_hdr h;

	exp_str(e, want, sizeof(want));
	if (n >= VAL_HDR_LEN) {
		memcpy(&h, got, sizeof(h));
		snprintf(hdr, sizeof(hdr),
		         "; its header: magic %#" PRIx32 ", origin %" PRIu32 ", gen %#" PRIx64
		         ", len %" PRIu64,
		         h.magic, h.origin, h.gen, h.len);
	}
	if (e->st == EXP_PRESENT) {
		make_value(c->s->c.seed, c->xbuf, e->origin, e->gen, e->len);
		lim = KV_MIN(n, e->len);
		for (i = 0; i < lim && got[i] == c->xbuf[i]; i++)
			;
		mismatch(c, op, key,
		         "%s: expected %s, got %" PRIu64 " bytes (size %" PRIu64
		         ", version %" PRIu64 "), first differing byte at %" PRIu64 "%s",
		         why, want, n, ent->size, ent->version, i, hdr);
		return;
	}
	mismatch(c, op, key,
	         "%s: expected %s, got %" PRIu64 " bytes (size %" PRIu64 ", version %" PRIu64 ")%s",
	         why, want, n, ent->size, ent->version, hdr);
}

/* Check a whole value read from owned key @idx against the expectation. */
static void check_owned(struct client *c, uint32_t idx, const uint8_t *got, uint64_t n,
                        const struct kvc_entry *ent)
{
	struct expect *e = &c->exp[idx];
	uint32_t key = c->k0 + idx;
	struct val_hdr h;
	const char *bad;

	cnt(&c->n.verified, 1);
	switch (e->st) {
	case EXP_ABSENT:
		value_mismatch(c, "GET", key, e, got, n, ent, "a value where none should be");
		break;
	case EXP_PRESENT:
		if (n != e->len || ent->size != e->len) {
			value_mismatch(c, "GET", key, e, got, n, ent, "wrong length");
			break;
		}
		if (ent->version != e->version) {
			value_mismatch(c, "GET", key, e, got, n, ent, "wrong version");
			break;
		}
		if (n < VAL_HDR_LEN) {
			make_value(c->s->c.seed, c->xbuf, e->origin, e->gen, e->len);
			if (memcmp(got, c->xbuf, n))
				value_mismatch(c, "GET", key, e, got, n, ent, "wrong bytes");
			break;
		}
		bad = val_check(got, n, &h);
		if (!bad && (h.origin != e->origin || h.gen != e->gen))
			bad = "another value than the last one written";
		if (bad)
			value_mismatch(c, "GET", key, e, got, n, ent, bad);
		break;
	default: /* EXP_ANY: learn what is there */
		if (n < VAL_HDR_LEN)
			break; /* cannot be told apart; stays unknown */
		bad = val_check(got, n, &h);
		if (!bad && (h.origin < c->k0 || h.origin >= c->k0 + c->nk))
			bad = "a value written for a key of another client";
		if (bad) {
			value_mismatch(c, "GET", key, e, got, n, ent, bad);
			break;
		}
		*e = (struct expect){.st = EXP_PRESENT,
		                     .origin = h.origin,
		                     .gen = h.gen,
		                     .len = h.len,
		                     .version = ent->version};
	}
}

/* ENOENT for a key: evicted if a value was expected. */
static void saw_missing(struct client *c, struct expect *e)
{
	if (e->st == EXP_PRESENT)
		cnt(&c->n.evicted, 1);
	e->st = EXP_ABSENT;
}

static void op_get(struct client *c, uint32_t idx)
{
	const struct soak *s = c->s;
	struct expect *e = &c->exp[idx];
	uint32_t key = c->k0 + idx;
	uint64_t v = rnd(c) % 10, off = 0, len, want;
	struct kvc_entry ent = {0};
	char name[128];
	uint8_t *buf;
	ssize_t r;

	key_name(s, key, name, sizeof(name));
	if (v >= 8 && e->st == EXP_PRESENT) {
		/* A range, possibly reaching past the end. */
		off = rnd(c) % (e->len + 1);
		len = rnd(c) % (e->len - off + 4097);
		len = KV_MIN(len, s->c.max_size + 4096);
		buf = c->rbuf;
		r = kvc_get(c->kvc, name, strlen(name), off, buf, len, NULL, &ent);
	} else if (v >= 5 && c->rmr) {
		struct xfer_sge sge = {.mr = c->rmr, .off = 0, .len = KV_MAX(s->c.max_size, 1)};

		len = sge.len;
		buf = xfer_mr_addr(c->rmr);
		cnt(&c->n.zero_copy, 1);
		r = kvc_get_mr(c->kvc, name, strlen(name), 0, &sge, 1, NULL, &ent);
	} else {
		len = s->c.max_size;
		buf = c->rbuf;
		r = kvc_get(c->kvc, name, strlen(name), 0, buf, len, NULL, &ent);
	}
	cnt(&c->n.ops[OP_GET], 1);
	if (r == -ENOENT) {
		count_errno(c, r);
		saw_missing(c, e);
		return;
	}
	if (r < 0) {
		count_errno(c, r);
		unexpected(c, "GET", key, r);
		if (uncertain(r))
			e->st = EXP_ANY;
		return;
	}
	cnt(&c->n.get_bytes, (uint64_t)r);
	if (off == 0 && len >= s->c.max_size) {
		check_owned(c, idx, buf, (uint64_t)r, &ent);
		return;
	}
	/* Ranged read of an expected value. */
	cnt(&c->n.verified, 1);
	want = KV_MIN(len, e->len - off);
	if (ent.size != e->len || ent.version != e->version || (uint64_t)r != want) {
		value_mismatch(c, "GET range", key, e, buf, (uint64_t)r, &ent,
		               "wrong length or version for a range");
		return;
	}
	make_value(s->c.seed, c->xbuf, e->origin, e->gen, e->len);
	if (memcmp(buf, c->xbuf + off, want)) {
		uint64_t i = 0;

		while (buf[i] == c->xbuf[off + i])
			i++;
		mismatch(c, "GET range", key,
		         "bytes %" PRIu64 "+%" PRIu64 " of a %" PRIu64
		         "-byte value differ from byte %" PRIu64 " of the range",
		         off, want, e->len, i);
	}
}

/* PUT a fresh value of a random size to key id @key; fills *ret_gen/len. */
static int put_value(struct client *c, uint32_t key, uint64_t min, struct kvc_entry *ret_ent,
                     uint64_t *ret_gen, uint64_t *ret_len)
{
	const struct soak *s = c->s;
	uint64_t gen = ((uint64_t)(c->id + 1) << 40) | ++c->puts;
	uint64_t len = pick_size(c, KV_MAX(min, s->c.min_size), s->c.max_size);
	char name[128];
	int r;

	key_name(s, key, name, sizeof(name));
	if (c->wmr && rnd(c) % 2) {
		make_value(s->c.seed, xfer_mr_addr(c->wmr), key, gen, len);
		cnt(&c->n.zero_copy, 1);
		r = kvc_put_mr(c->kvc, name, strlen(name), c->wmr, 0, len, NULL, ret_ent);
	} else {
		make_value(s->c.seed, c->wbuf, key, gen, len);
		r = kvc_put(c->kvc, name, strlen(name), c->wbuf, len, NULL, ret_ent);
	}
	cnt(&c->n.ops[OP_PUT], 1);
	if (r == 0)
		cnt(&c->n.put_bytes, len);
	*ret_gen = gen;
	*ret_len = len;
	return r;
}

static void wrote(struct client *c, uint32_t idx)
{
	c->recent[c->nrecent++ % RECENT] = idx;
}

static void op_put(struct client *c, uint32_t idx)
{
	struct expect *e = &c->exp[idx];
	struct kvc_entry ent = {0};
	uint64_t gen, len;
	int r = put_value(c, c->k0 + idx, 0, &ent, &gen, &len);

	if (r == 0) {
		*e = (struct expect){.st = EXP_PRESENT,
		                     .origin = c->k0 + idx,
		                     .gen = gen,
		                     .len = len,
		                     .version = ent.version};
		wrote(c, idx);
		return;
	}
	count_errno(c, r);
	unexpected(c, "PUT", c->k0 + idx, r);
	if (uncertain(r))
		e->st = EXP_ANY;
}

static void op_delete(struct client *c, uint32_t idx)
{
	struct expect *e = &c->exp[idx];
	uint32_t key = c->k0 + idx;
	char name[128];
	int r;

	key_name(c->s, key, name, sizeof(name));
	r = kvc_delete(c->kvc, name, strlen(name), 0);
	cnt(&c->n.ops[OP_DELETE], 1);
	if (r == 0) {
		if (e->st == EXP_ABSENT)
			mismatch(c, "DELETE", key, "deleted a key that should not exist");
		e->st = EXP_ABSENT;
		return;
	}
	count_errno(c, r);
	if (r == -ENOENT) {
		saw_missing(c, e);
		return;
	}
	unexpected(c, "DELETE", key, r);
	if (uncertain(r))
		e->st = EXP_ANY;
}

static void op_rename(struct client *c, uint32_t si)
{
	uint32_t di = (uint32_t)((si + 1 + rnd(c) % (c->nk - 1)) % c->nk);
	struct expect *se = &c->exp[si], *de = &c->exp[di];
	bool no_over = rnd(c) % 4 == 0;
	char src[128], dst[128], want[192];
	uint64_t version = 0;
	int r;

	key_name(c->s, c->k0 + si, src, sizeof(src));
	key_name(c->s, c->k0 + di, dst, sizeof(dst));
	r = kvc_rename(c->kvc, src, strlen(src), dst, strlen(dst), no_over, &version);
	cnt(&c->n.ops[OP_RENAME], 1);
	if (r == 0) {
		if (se->st == EXP_ABSENT) {
			mismatch(c, "RENAME", c->k0 + si,
			         "renamed to %s a key that should not exist", dst);
		} else if (no_over && de->st == EXP_PRESENT) {
			cnt(&c->n.evicted, 1); /* the target was evicted meanwhile */
		}
		*de = *se;
		de->version = version;
		if (se->st == EXP_ABSENT)
			de->st = EXP_ANY;
		se->st = EXP_ABSENT;
		wrote(c, di);
		return;
	}
	count_errno(c, r);
	if (r == -ENOENT) {
		saw_missing(c, se);
		return;
	}
	if (r == -EEXIST && no_over) {
		if (de->st == EXP_ABSENT) {
			exp_str(se, want, sizeof(want));
			mismatch(c, "RENAME", c->k0 + di,
			         "no-overwrite rename from %s (%s) found the target existing, "
			         "which should not exist",
			         src, want);
		}
		return;
	}
	unexpected(c, "RENAME", c->k0 + si, r);
	if (uncertain(r)) {
		se->st = EXP_ANY;
		de->st = EXP_ANY;
	}
}

/* ------------------------------------------------------------------ */
/* Shared keys: self-consistency only                                  */

static void op_shared(struct client *c)
{
	const struct soak *s = c->s;
	uint32_t key = s->c.keys + (uint32_t)(rnd(c) % s->c.shared);
	uint64_t v = rnd(c) % 10, gen, len;
	struct kvc_entry ent = {0};
	struct val_hdr h;
	const char *bad;
	char name[128];
	ssize_t r;

	cnt(&c->n.shared_ops, 1);
	key_name(s, key, name, sizeof(name));
	if (v < 5) {
		r = kvc_get(c->kvc, name, strlen(name), 0, c->rbuf, s->c.max_size, NULL, &ent);
		cnt(&c->n.ops[OP_GET], 1);
		if (r >= 0) {
			cnt(&c->n.get_bytes, (uint64_t)r);
			cnt(&c->n.verified, 1);
			bad = val_check(c->rbuf, (uint64_t)r, &h);
			if (!bad && (h.origin != key || ent.size != (uint64_t)r))
				bad = "value of another key, or size differs from the bytes";
			if (bad)
				mismatch(c, "GET", key, "%s (%zd bytes, version %" PRIu64 ")", bad,
				         r, ent.version);
			return;
		}
		if (r != -ENOENT)
			unexpected(c, "GET", key, r);
	} else if (v < 9) {
		r = put_value(c, key, VAL_HDR_LEN, &ent, &gen, &len);
		if (r < 0)
			unexpected(c, "PUT", key, r);
	} else {
		r = kvc_delete(c->kvc, name, strlen(name), 0);
		cnt(&c->n.ops[OP_DELETE], 1);
		if (r < 0 && r != -ENOENT)
			unexpected(c, "DELETE", key, r);
	}
	if (r < 0)
		count_errno(c, r);
}

/* ------------------------------------------------------------------ */
/* Client thread                                                       */

static int client_connect(struct soak *s, struct client *c);
static void client_disconnect(struct client *c);

static void *client_main(void *arg)
{
	uint64_t ops = 0;
	struct client *c = arg;
	struct soak *s = c->s;
	char name[128];

	/* Start from a known state: every owned key absent. */
	for (uint32_t i = 0; i < c->nk && !c->prep_err; i++) {
		int r;

		key_name(s, c->k0 + i, name, sizeof(name));
		r = kvc_delete(c->kvc, name, strlen(name), 0);
		if (r < 0 && r != -ENOENT) {
			c->prep_err = r;
			fprintf(stderr, PROG ": client %u: cannot clear %s: %s\n", c->id, name,
			        kvc_strerror());
		}
		c->exp[i].st = EXP_ABSENT;
	}
	pthread_barrier_wait(&s->go);
	pthread_barrier_wait(&s->go); /* main checked the preparation */
	while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
		uint64_t r = rnd(c);
		unsigned pct = (unsigned)((r >> 32) % 100);
		uint32_t idx = (uint32_t)(r % c->nk);

		if (s->c.shared && pct < 5)
			op_shared(c);
		else if (pct < 50)
			op_get(c, c->nrecent && (r >> 16) % 2
			                  ? c->recent[(r >> 20) % KV_MIN(c->nrecent, RECENT)]
			                  : idx);
		else if (pct < 80)
			op_put(c, idx);
		else if (pct < 88)
			op_delete(c, idx);
		else
			op_rename(c, idx);
		if (s->c.reconnect && ++ops % s->c.reconnect == 0) {
			/* Connection churn: the server must free what a client leaves. */
			client_disconnect(c);
			if (client_connect(s, c) < 0) {
				cnt(&c->n.unexpected, 1);
				break;
			}
			cnt(&c->n.reconnects, 1);
		}
	}
	return NULL;
}

/* Connect and register the zero-copy buffers on the connection's engine. */
static int client_connect(struct soak *s, struct client *c)
{
	uint64_t bsz = KV_MAX(s->c.max_size, 1);
	struct xfer_engine *eng;
	int r;

	r = kvc_connect(s->opts, &c->kvc);
	if (r < 0) {
		fprintf(stderr, PROG ": client %u: cannot connect to %s: %s\n", c->id,
		        s->c.cli.server, kvc_strerror());
		return r;
	}
	eng = kvc_engine(c->kvc);
	if (!eng)
		return 0; /* inline only: no zero-copy calls */
	r = xfer_buf_alloc(eng, bsz, XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ, &c->wmr);
	if (r == 0)
		r = xfer_buf_alloc(eng, bsz, XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_WRITE, &c->rmr);
	if (r < 0) {
		fprintf(stderr,
		        PROG ": client %u: cannot allocate 2 x %" PRIu64
		             " registered bytes: %s (try a smaller --max-size)\n",
		        c->id, bsz, strerror(-r));
		return r;
	}
	return 0;
}

static void client_disconnect(struct client *c)
{
	xfer_mr_dereg(c->rmr);
	xfer_mr_dereg(c->wmr);
	c->rmr = c->wmr = NULL;
	kvc_close(c->kvc); /* after the regions: no call is in flight any more */
	c->kvc = NULL;
}

static int client_setup(struct soak *s, struct client *c)
{
	uint64_t bsz = KV_MAX(s->c.max_size, 1);

	c->exp = calloc(c->nk, sizeof(*c->exp));
	c->wbuf = malloc(bsz);
	c->rbuf = malloc(bsz + 4096);
	c->xbuf = malloc(bsz);
	if (!c->exp || !c->wbuf || !c->rbuf || !c->xbuf) {
		fprintf(stderr,
		        PROG ": out of memory for client %u's buffers (%" PRIu64 " bytes)\n", c->id,
		        3 * bsz);
		return -ENOMEM;
	}
	return client_connect(s, c);
}

static void client_teardown(struct client *c)
{
	client_disconnect(c);
	free(c->exp);
	free(c->wbuf);
	free(c->rbuf);
	free(c->xbuf);
	c->exp = NULL;
	c->wbuf = c->rbuf = c->xbuf = NULL;
}

/* ------------------------------------------------------------------ */
/* Server memory and counters                                          */

static int read_vm(int pid, struct vm *ret)
{
	char path[64], line[256];
	struct vm v = {0};
	unsigned found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long kb;

		if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) {
			v.rss = kb;
			found |= 1;
		} else if (sscanf(line, "VmData: %llu kB", &kb) == 1) {
			v.data = kb;
			found |= 2;
		} else if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) {
			v.hwm = kb;
			found |= 4;
		}
	}
	fclose(f);
	if (found != 7)
		return -ENODATA;
	v.ok = true;
	*ret = v;
	return 0;
}

/* Sample the server's memory now; kept in s->vm[] and as the maximum. */
static struct vm sample_vm(struct soak *s)
{
	struct vm v = {0};

	if (!s->c.server_pid || read_vm(s->c.server_pid, &v) < 0)
		return v;
	v.t = (double)(kv_now_ns() - s->t0) / 1e9;
	if (s->nvm < MAX_SAMPLES)
		s->vm[s->nvm++] = v;
	if (v.rss > s->vm_max.rss)
		s->vm_max = v;
	return v;
}

static void on_counter(void *arg, const char *name, uint64_t value)
{
	uint64_t *ev = arg;

	if (!strcmp(name, "evictions"))
		*ev = value;
}

static int server_evictions(struct soak *s, uint64_t *ret)
{
	uint64_t ev = UINT64_MAX;
	int r = kvc_stats(s->mon, on_counter, &ev);

	if (r < 0)
		return r;
	if (ev == UINT64_MAX)
		return -ENODATA;
	*ret = ev;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Totals and report                                                   */

struct totals {
	uint64_t ops[OP__N], all, shared, put_bytes, get_bytes, verified, evicted, unexpected,
	        zero_copy, reconnects, errs[MAX_ERRNO];
};

static void add_totals(struct soak *s, struct totals *t)
{
	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < s->c.clients; i++) {
		struct counts *n = &s->cl[i].n;

		for (unsigned k = 0; k < OP__N; k++) {
			t->ops[k] += rd(&n->ops[k]);
			t->all += rd(&n->ops[k]);
		}
		t->shared += rd(&n->shared_ops);
		t->put_bytes += rd(&n->put_bytes);
		t->get_bytes += rd(&n->get_bytes);
		t->verified += rd(&n->verified);
		t->evicted += rd(&n->evicted);
		t->unexpected += rd(&n->unexpected);
		t->zero_copy += rd(&n->zero_copy);
		t->reconnects += rd(&n->reconnects);
		for (unsigned k = 0; k < MAX_ERRNO; k++)
			t->errs[k] += rd(&n->errs[k]);
	}
}

static void progress(struct soak *s, const struct vm *v)
{
	double secs = (double)(kv_now_ns() - s->t0) / 1e9;
	char pb[32], gb[32], rss[32], data[32], evs[48] = "?";
	struct totals t;
	uint64_t ev;

	add_totals(s, &t);
	if (server_evictions(s, &ev) == 0)
		snprintf(evs, sizeof(evs), "%" PRIu64, ev - s->evictions0);
	fprintf(stderr,
	        PROG ": %5.0f s  ops %" PRIu64 " (%.0f/s; get %" PRIu64 " put %" PRIu64
	             " del %" PRIu64 " ren %" PRIu64 ")  put %s get %s  mismatches %" PRIu64
	             "  evicted %" PRIu64 " (server %s)  unexpected errors %" PRIu64,
	        secs, t.all, secs > 0 ? (double)t.all / secs : 0, t.ops[OP_GET], t.ops[OP_PUT],
	        t.ops[OP_DELETE], t.ops[OP_RENAME], kv_fmt_size(t.put_bytes, pb, sizeof(pb)),
	        kv_fmt_size(t.get_bytes, gb, sizeof(gb)), (uint64_t)atomic_load(&s->mismatches),
	        t.evicted, evs, t.unexpected);
	if (v->ok)
		fprintf(stderr, "  server RSS %s data %s",
		        kv_fmt_size(v->rss * 1024, rss, sizeof(rss)),
		        kv_fmt_size(v->data * 1024, data, sizeof(data)));
	fputc('\n', stderr);
}

static void json_vm(const char *name, const struct vm *v)
{
	if (!v->ok) {
		printf(",\"%s\":null", name);
		return;
	}
	printf(",\"%s\":{\"t_s\":%.1f,\"rss_kib\":%" PRIu64 ",\"data_kib\":%" PRIu64
	       ",\"hwm_kib\":%" PRIu64 "}",
	       name, v->t, v->rss, v->data, v->hwm);
}

static void text_vm(const char *name, const struct vm *v)
{
	char a[32], b[32], c[32];

	if (!v->ok)
		return;
	printf("  %-10s VmRSS %10s  VmData %10s  VmHWM %10s  (at %.0f s)\n", name,
	       kv_fmt_size(v->rss * 1024, a, sizeof(a)), kv_fmt_size(v->data * 1024, b, sizeof(b)),
	       kv_fmt_size(v->hwm * 1024, c, sizeof(c)), v->t);
}

static void report(struct soak *s, const struct totals *t, double secs, const char *verdict,
                   bool ok)
{
	const struct cfg *c = &s->c;
	uint64_t mism = atomic_load(&s->mismatches);
	int64_t grss = (int64_t)s->vm_end.rss - (int64_t)s->vm_warm.rss;
	int64_t gdata = (int64_t)s->vm_end.data - (int64_t)s->vm_warm.data;
	bool mem = s->vm_end.ok && s->vm_warm.ok;
	char a[32], b[32];
	bool first = true;

	if (c->json) {
		printf("{\"server\":");
		kv_json_str(stdout, c->cli.server);
		printf(",\"provider\":");
		kv_json_str(stdout, s->provider);
		printf(",\"clients\":%u,\"duration_s\":%.1f,\"keys\":%" PRIu32
		       ",\"shared_keys\":%" PRIu32 ",\"min_size\":%" PRIu64 ",\"max_size\":%" PRIu64
		       ",\"seed\":%" PRIu64 ",\"ops\":{\"total\":%" PRIu64,
		       c->clients, secs, c->keys, c->shared, c->min_size, c->max_size, c->seed,
		       t->all);
		for (unsigned k = 0; k < OP__N; k++)
			printf(",\"%s\":%" PRIu64, op_names[k], t->ops[k]);
		printf(",\"shared\":%" PRIu64 ",\"zero_copy\":%" PRIu64 ",\"reconnects\":%" PRIu64
		       "},\"ops_per_s\":%.1f"
		       ",\"bytes\":{\"put\":%" PRIu64 ",\"get\":%" PRIu64 "},\"verified\":%" PRIu64
		       ",\"mismatches\":%" PRIu64 ",\"evicted_seen\":%" PRIu64,
		       t->shared, t->zero_copy, t->reconnects, secs > 0 ? (double)t->all / secs : 0,
		       t->put_bytes, t->get_bytes, t->verified, mism, t->evicted);
		if (s->evictions_ok)
			printf(",\"server_evictions\":%" PRIu64, s->evictions1 - s->evictions0);
		else
			printf(",\"server_evictions\":null");
		printf(",\"unexpected_errors\":%" PRIu64 ",\"errors\":{", t->unexpected);
		for (unsigned k = 0; k < MAX_ERRNO; k++) {
			if (!t->errs[k])
				continue;
			printf("%s\"%s\":%" PRIu64, first ? "" : ",", errname((int)k), t->errs[k]);
			first = false;
		}
		printf("},\"memory\":{\"pid\":%d,\"samples\":%u", c->server_pid, s->nvm);
		json_vm("start", &s->vm_start);
		json_vm("warm", &s->vm_warm);
		json_vm("end", &s->vm_end);
		json_vm("max", &s->vm_max);
		if (mem)
			printf(",\"growth_rss_kib\":%" PRId64 ",\"growth_data_kib\":%" PRId64, grss,
			       gdata);
		printf("},\"ok\":%s,\"verdict\":", ok ? "true" : "false");
		kv_json_str(stdout, verdict);
		printf("}\n");
		return;
	}
	printf(PROG ": %u clients, %.1f s, provider %s, server %s, seed %" PRIu64 "\n", c->clients,
	       secs, s->provider, c->cli.server, c->seed);
	printf("  keys       %" PRIu32 " owned + %" PRIu32 " shared, values %" PRIu64 " to %" PRIu64
	       " bytes\n",
	       c->keys, c->shared, c->min_size, c->max_size);
	printf("  ops        %" PRIu64 " (%.0f/s): get %" PRIu64 ", put %" PRIu64
	       ", delete %" PRIu64 ", rename %" PRIu64 "; %" PRIu64 " on shared keys, %" PRIu64
	       " zero copy, %" PRIu64 " reconnects\n",
	       t->all, secs > 0 ? (double)t->all / secs : 0, t->ops[OP_GET], t->ops[OP_PUT],
	       t->ops[OP_DELETE], t->ops[OP_RENAME], t->shared, t->zero_copy, t->reconnects);
	printf("  bytes      put %s, get %s\n", kv_fmt_size(t->put_bytes, a, sizeof(a)),
	       kv_fmt_size(t->get_bytes, b, sizeof(b)));
	printf("  verified   %" PRIu64 " reads, mismatches %" PRIu64 "\n", t->verified, mism);
	if (s->evictions_ok)
		printf("  evicted    %" PRIu64 " seen missing, server evicted %" PRIu64 "\n",
		       t->evicted, s->evictions1 - s->evictions0);
	printf("  errors     %" PRIu64 " unexpected;", t->unexpected);
	for (unsigned k = 0; k < MAX_ERRNO; k++)
		if (t->errs[k])
			printf(" %s %" PRIu64, errname((int)k), t->errs[k]);
	printf("\n");
	text_vm("start", &s->vm_start);
	text_vm("warm", &s->vm_warm);
	text_vm("end", &s->vm_end);
	text_vm("max", &s->vm_max);
	if (mem)
		printf("  growth     VmRSS %+" PRId64 " KiB, VmData %+" PRId64
		       " KiB (warm-up to end)\n",
		       grss, gdata);
	printf("  result     %s\n", verdict);
}

/* ------------------------------------------------------------------ */
/* Command line                                                        */

static const struct topt_tool tool = {.prog = PROG, .usage = usage};

static int parse_sz(const char *opt, const char *s, uint64_t *ret)
{
	if (topt_parse_size(s, 0, 4 * KV_GIB, ret) < 0) {
		fprintf(stderr, PROG ": %s: '%s' is not a size up to 4G (e.g. 0, 4K, 1M)\n", opt,
		        s);
		return -EINVAL;
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct cfg *c)
{
	enum {
		O_SHARED = 256,
		O_MIN,
		O_MAX,
		O_SEED,
		O_PID,
		O_INTERVAL,
		O_WARMUP,
		O_GROWTH,
		O_REQEV,
		O_RECONNECT,
		O_PREFIX
	};
	static const struct option lo[] = {
	        TOPT_CLIENT_LONG,
	        {"clients", required_argument, NULL, 'c'},
	        {"duration", required_argument, NULL, 'd'},
	        {"keys", required_argument, NULL, 'k'},
	        {"shared-keys", required_argument, NULL, O_SHARED},
	        {"min-size", required_argument, NULL, O_MIN},
	        {"max-size", required_argument, NULL, O_MAX},
	        {"seed", required_argument, NULL, O_SEED},
	        {"server-pid", required_argument, NULL, O_PID},
	        {"interval", required_argument, NULL, O_INTERVAL},
	        {"warmup", required_argument, NULL, O_WARMUP},
	        {"max-growth", required_argument, NULL, O_GROWTH},
	        {"require-evictions", no_argument, NULL, O_REQEV},
	        {"reconnect", required_argument, NULL, O_RECONNECT},
	        {"prefix", required_argument, NULL, O_PREFIX},
	        {"json", no_argument, NULL, 'j'},
	        {0},
	};
	uint64_t v;
	int opt, r;

	memset(c, 0, sizeof(*c));
	topt_client_init(&c->cli);
	c->prefix = "soak/";
	c->clients = 4;
	c->duration = 60;
	c->interval = 5;
	c->warmup = -1;
	c->keys = 1024;
	c->shared = 8;
	c->max_size = 4 * KV_MIB;

	while ((opt = getopt_long(argc, argv, TOPT_CLIENT_SHORT "c:d:k:j", lo, NULL)) != -1) {
		r = topt_client_opt(&tool, &c->cli, opt, optarg);
		if (r == TOPT_EXIT)
			exit(0);
		if (r != TOPT_OTHER) {
			if (r < 0)
				return r;
			continue;
		}
		switch (opt) {
		case 'c':
			if (topt_uint_arg(&tool, "--clients", optarg, 1, MAX_CLIENTS, &v))
				return -EINVAL;
			c->clients = (unsigned)v;
			break;
		case 'd':
			if (topt_secs_arg(&tool, "--duration", optarg, 0, MAX_SECS, &c->duration))
				return -EINVAL;
			break;
		case 'k':
			if (topt_uint_arg(&tool, "--keys", optarg, 2, 10000000, &v))
				return -EINVAL;
			c->keys = (uint32_t)v;
			break;
		case O_SHARED:
			if (topt_uint_arg(&tool, "--shared-keys", optarg, 0, 10000, &v))
				return -EINVAL;
			c->shared = (uint32_t)v;
			break;
		case O_MIN:
			if (parse_sz("--min-size", optarg, &c->min_size))
				return -EINVAL;
			break;
		case O_MAX:
			if (parse_sz("--max-size", optarg, &c->max_size))
				return -EINVAL;
			break;
		case O_SEED:
			if (topt_uint_arg(&tool, "--seed", optarg, 0, UINT64_MAX, &c->seed))
				return -EINVAL;
			c->seed_given = true;
			break;
		case O_PID:
			if (topt_uint_arg(&tool, "--server-pid", optarg, 1, 1u << 30, &v))
				return -EINVAL;
			c->server_pid = (int)v;
			break;
		case O_INTERVAL:
			if (topt_secs_arg(&tool, "--interval", optarg, 0.1, MAX_SECS, &c->interval))
				return -EINVAL;
			break;
		case O_WARMUP:
			if (topt_secs_arg(&tool, "--warmup", optarg, 0, MAX_SECS, &c->warmup))
				return -EINVAL;
			break;
		case O_GROWTH:
			if (topt_parse_size(optarg, 1, UINT64_MAX, &c->max_growth) < 0) {
				fprintf(stderr,
				        PROG ": --max-growth: '%s' is not a size (e.g. 16M)\n",
				        optarg);
				return -EINVAL;
			}
			break;
		case O_REQEV:
			c->require_evictions = true;
			break;
		case O_RECONNECT:
			if (topt_uint_arg(&tool, "--reconnect", optarg, 0, UINT64_MAX,
			                  &c->reconnect))
				return -EINVAL;
			break;
		case O_PREFIX:
			c->prefix = optarg;
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
	if (c->min_size > c->max_size) {
		fprintf(stderr, PROG ": --min-size is above --max-size\n");
		return -EINVAL;
	}
	if (c->shared && c->max_size < VAL_HDR_LEN) {
		fprintf(stderr,
		        PROG ": shared keys need values of at least %zu bytes: raise --max-size "
		             "or use --shared-keys 0\n",
		        VAL_HDR_LEN);
		return -EINVAL;
	}
	if (c->keys < 2 * c->clients) {
		fprintf(stderr, PROG ": --keys must be at least 2 per client (RENAME needs two)\n");
		return -EINVAL;
	}
	if (strlen(c->prefix) > 900) {
		fprintf(stderr, PROG ": --prefix is longer than 900 bytes\n");
		return -EINVAL;
	}
	if (c->max_growth && !c->server_pid) {
		fprintf(stderr, PROG ": --max-growth needs --server-pid\n");
		return -EINVAL;
	}
	if (topt_client_check(&tool, &c->cli) < 0)
		return -EINVAL;
	if (c->warmup < 0)
		c->warmup = c->duration / 5;
	if (!c->seed_given)
		c->seed = kv_now_ns() ^ ((uint64_t)getpid() << 32);
	return 0;
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

static void sleep_until(uint64_t t_ns)
{
	uint64_t now = kv_now_ns();
	struct timespec ts;

	if (now >= t_ns)
		return;
	ts.tv_sec = (time_t)((t_ns - now) / 1000000000ULL);
	ts.tv_nsec = (long)((t_ns - now) % 1000000000ULL);
	nanosleep(&ts, NULL);
}

/* Clamp the value sizes to what the server takes. */
static int check_limits(struct soak *s)
{
	struct kvc_limits lim;

	kvc_limits(s->mon, &lim);
	s->max_inline = lim.max_inline;
	if (lim.max_value && s->c.max_size > lim.max_value) {
		fprintf(stderr,
		        PROG ": --max-size %" PRIu64
		             " is above the server's largest value (%" PRIu64
		             " bytes); use a smaller --max-size\n",
		        s->c.max_size, lim.max_value);
		return -EFBIG;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct soak *s;
	struct kvc_opts o;
	struct totals t;
	unsigned started = 0;
	uint64_t t_go, t_end, next;
	double secs;
	bool warm_taken = false, ok;
	char verdict[256] = "ok";
	int r, rc = 1, prep_errs = 0;

	kv_log_init(PROG);
	if (!getenv("KVFS_LOG"))
		kv_log_level = KV_LOG_WARN;
	signal(SIGPIPE, SIG_IGN);
	s = calloc(1, sizeof(*s));
	if (!s) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	if (parse_args(argc, argv, &s->c) < 0) {
		free(s);
		return 2;
	}
	pthread_mutex_init(&s->report_lock, NULL);
	s->t0 = kv_now_ns();
	s->vm_start = sample_vm(s);
	if (s->c.server_pid && !s->vm_start.ok)
		fprintf(stderr,
		        PROG ": cannot read /proc/%d/status; no memory samples (is --server-pid "
		             "the kv-server's PID?)\n",
		        s->c.server_pid);

	topt_client_kvc_opts(&s->c.cli, PROG " monitor", &o);
	o.provider = "none"; /* STATS only */
	if (kvc_connect(&o, &s->mon) < 0) {
		fprintf(stderr, PROG ": cannot connect to %s: %s\n", s->c.cli.server,
		        kvc_strerror());
		goto out_free;
	}
	if (check_limits(s) < 0)
		goto out_free;
	o.provider = s->c.cli.provider;
	o.client_id = PROG;
	s->opts = &o;

	s->cl = calloc(s->c.clients, sizeof(*s->cl));
	if (!s->cl) {
		fprintf(stderr, PROG ": out of memory\n");
		goto out_free;
	}
	for (unsigned i = 0; i < s->c.clients; i++) {
		struct client *c = &s->cl[i];
		uint64_t rs = s->c.seed + i;

		c->s = s;
		c->id = i;
		c->k0 = (uint32_t)((uint64_t)s->c.keys * i / s->c.clients);
		c->nk = (uint32_t)((uint64_t)s->c.keys * (i + 1) / s->c.clients) - c->k0;
		c->rng = kv_splitmix64(&rs);
	}
	for (unsigned i = 0; i < s->c.clients; i++)
		if (client_setup(s, &s->cl[i]) < 0)
			goto out_teardown;
	{
		struct kvc_limits lim;

		kvc_limits(s->cl[0].kvc, &lim);
		snprintf(s->provider, sizeof(s->provider), "%s", lim.provider);
	}

	/* Bounded: clearing the keys + the run + a margin of call deadlines. */
	signal(SIGALRM, on_alarm);
	alarm((unsigned)(s->c.duration + 4.0 * s->c.cli.timeout_ms / 1000.0 + 120.0 +
	                 s->c.keys / 50.0));
	pthread_barrier_init(&s->go, NULL, s->c.clients + 1);
	for (; started < s->c.clients; started++) {
		r = pthread_create(&s->cl[started].thr, NULL, client_main, &s->cl[started]);
		if (r) {
			fprintf(stderr, PROG ": cannot start thread %u: %s\n", started,
			        strerror(r));
			_exit(1); /* the started ones wait at the barrier forever */
		}
	}
	pthread_barrier_wait(&s->go);
	for (unsigned i = 0; i < s->c.clients; i++)
		prep_errs += s->cl[i].prep_err != 0;
	s->evictions_ok = server_evictions(s, &s->evictions0) == 0;
	if (prep_errs)
		atomic_store(&s->stop, true);
	t_go = kv_now_ns();
	pthread_barrier_wait(&s->go);

	t_end = t_go + (uint64_t)(s->c.duration * 1e9);
	next = t_go;
	while (!prep_errs) {
		struct vm v;

		next += (uint64_t)(s->c.interval * 1e9);
		sleep_until(KV_MIN(next, t_end));
		if (kv_now_ns() >= t_end)
			break;
		v = sample_vm(s);
		if (!warm_taken && v.ok && (double)(kv_now_ns() - t_go) / 1e9 >= s->c.warmup) {
			s->vm_warm = v;
			warm_taken = true;
		}
		progress(s, &v);
	}
	atomic_store(&s->stop, true);
	for (unsigned i = 0; i < started; i++)
		pthread_join(s->cl[i].thr, NULL);
	secs = (double)(kv_now_ns() - t_go) / 1e9;
	alarm(0);
	pthread_barrier_destroy(&s->go);
	if (prep_errs)
		goto out_teardown;
	if (s->evictions_ok)
		s->evictions_ok = server_evictions(s, &s->evictions1) == 0;
	add_totals(s, &t);
	/* The end sample: every client gone, the server idle. */
	for (unsigned i = 0; i < s->c.clients; i++)
		client_teardown(&s->cl[i]);
	usleep(200000);
	s->vm_end = sample_vm(s);
	if (!warm_taken)
		s->vm_warm = s->vm_start.ok && s->nvm > 1 ? s->vm[1] : s->vm_start;

	ok = true;
	if (atomic_load(&s->mismatches)) {
		snprintf(verdict, sizeof(verdict), "FAIL: %" PRIu64 " mismatches",
		         (uint64_t)atomic_load(&s->mismatches));
		ok = false;
	} else if (t.unexpected) {
		snprintf(verdict, sizeof(verdict), "FAIL: %" PRIu64 " unexpected errors",
		         t.unexpected);
		ok = false;
	} else if (s->evictions_ok && t.evicted > s->evictions1 - s->evictions0) {
		snprintf(verdict, sizeof(verdict),
		         "FAIL: %" PRIu64 " keys went missing but the server evicted only %" PRIu64,
		         t.evicted, s->evictions1 - s->evictions0);
		ok = false;
	} else if (s->c.require_evictions && (!s->evictions_ok || s->evictions1 == s->evictions0)) {
		snprintf(
		        verdict, sizeof(verdict),
		        "FAIL: the server evicted nothing (--require-evictions; use more --keys or "
		        "a larger --max-size)");
		ok = false;
	} else if (s->c.max_growth) {
		if (!s->vm_end.ok || !s->vm_warm.ok) {
			snprintf(verdict, sizeof(verdict),
			         "FAIL: no memory samples of PID %d for --max-growth",
			         s->c.server_pid);
			ok = false;
		} else if (s->vm_end.rss > s->vm_warm.rss + s->c.max_growth / 1024 ||
		           s->vm_end.data > s->vm_warm.data + s->c.max_growth / 1024) {
			snprintf(verdict, sizeof(verdict),
			         "FAIL: server memory grew by more than %" PRIu64
			         " KiB after warm-up (VmRSS %" PRIu64 " -> %" PRIu64
			         " KiB, VmData %" PRIu64 " -> %" PRIu64 " KiB)",
			         s->c.max_growth / 1024, s->vm_warm.rss, s->vm_end.rss,
			         s->vm_warm.data, s->vm_end.data);
			ok = false;
		}
	}
	report(s, &t, secs, verdict, ok);
	if (!ok && s->c.json)
		fprintf(stderr, PROG ": %s\n", verdict);
	rc = ok ? 0 : 1;

out_teardown:
	for (unsigned i = 0; s->cl && i < s->c.clients; i++)
		client_teardown(&s->cl[i]);
out_free:
	kvc_close(s->mon);
	free(s->cl);
	pthread_mutex_destroy(&s->report_lock);
	free(s);
	return rc;
}
