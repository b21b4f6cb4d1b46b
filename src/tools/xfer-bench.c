/* SPDX-License-Identifier: MIT */
/*
 * xfer-bench: bandwidth and latency of the kvfs transfer engine between two
 * processes on one host.
 *
 * The initiator (this process) re-executes itself as the passive target
 * (--target, internal) with a socketpair on the target's stdin: the target
 * opens an engine, registers one region for remote READ and WRITE, and sends
 * "READY <addr-hex> <desc.addr> <desc.len> <desc.key>".  The initiator then
 * drives WRITEs into / READs out of that region at a fixed number of
 * operations in flight (the "depth"): every completion immediately submits
 * the next operation from the engine's completion callback, so the harness
 * adds no thread hop of its own.  The target lives until the socket closes
 * (or its parent dies), so one command runs everything and leaves nothing
 * behind.
 *
 * Bandwidth is payload bytes over the time from the first submit to the last
 * completion of a point, in GB/s (10^9 bytes per second, the unit iperf3's
 * Gbit/s converts to).  Latency is submit-to-completion of each operation.
 * The memcpy line copies between two already-faulted buffers of the same
 * size on one thread: the yardstick for shm, which moves bytes with copies.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvfs/log.h"
#include "kvfs/util.h"
#include "kvfs/xfer.h"
#include "tool_opts.h"

#define PROG            "xfer-bench"
#define MAX_SIZES       32
#define MAX_DEPTHS      16
#define MAX_PROVIDERS   4
#define MAX_DEPTH_VALUE 1024
#define REGION_CAP      (256 * KV_MIB) /* per side: sizes * depths share at most this */
#define LAT_CAP         (1u << 20)     /* latency samples kept per point */
#define READY_TIMEOUT   20000          /* ms for the target to come up */
#define ACC_ALL         (XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ | XFER_ACCESS_REMOTE_WRITE)

enum { OP_WRITE = 1, OP_READ = 2 };

struct cfg {
	const char *providers[MAX_PROVIDERS];
	size_t nproviders;
	uint64_t sizes[MAX_SIZES];
	size_t nsizes;
	unsigned depths[MAX_DEPTHS];
	size_t ndepths;
	unsigned ops;      /* OP_WRITE | OP_READ */
	double seconds;    /* per point; 0 = until iters */
	uint64_t iters;    /* per point; 0 = until seconds */
	uint64_t chunk;    /* engine chunk size, 0 = engine default */
	unsigned inflight; /* engine max_inflight, 0 = engine default */
	int cpu_init;      /* initiator progress-thread CPU, -1 = engine's choice */
	int cpu_target;    /* target progress-thread CPU, -1 = engine's choice */
	const char *node;  /* bind address for both engines (tcp), NULL = default */
	int timeout_ms;    /* per-operation deadline */
	bool json;
	bool memcpy_line; /* measure memcpy as well */
	bool memcpy_only; /* only memcpy */
	bool transfers;   /* run engine points (false with --memcpy) */
};

/* One measured point. */
struct result {
	const char *kind; /* provider name, or "memcpy" */
	const char *op;   /* "write", "read", "copy" */
	uint64_t size;
	unsigned depth;
	uint64_t chunk;
	uint64_t ops;
	double secs;
	double gbps;
	double ops_per_s;
	double p50_us, p99_us, max_us;
};

/* State of the point being run; completion callbacks (progress thread) and
 * the main thread share it under @lock. */
struct point {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct xfer_engine *e;
	xfer_peer_t peer;
	struct xfer_mr *local;
	struct xfer_desc remote;
	enum xfer_opcode opcode;
	uint64_t size;
	unsigned nslots;    /* distinct buffer slots of @size in the regions */
	uint64_t end_ns;    /* stop submitting after this (0 = no time limit) */
	uint64_t max_ops;   /* stop submitting after this many (0 = no limit) */
	uint64_t submitted; /* operations submitted */
	uint64_t completed; /* operations completed successfully */
	unsigned inflight;  /* submitted, not completed */
	int error;          /* first failure, 0 if none */
	uint64_t *t_submit; /* per depth slot: submit time */
	uint64_t *lat;      /* latency samples, ns */
	uint64_t nlat;
	uint64_t last_done_ns;
	int timeout_ms;
};

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: " PROG " [options]\n"
	        "\n"
	        "Measure the kvfs transfer engine between two processes on this host: this\n"
	        "process starts a copy of itself as the passive target, registers a region in\n"
	        "both, and runs WRITE and READ at each size and in-flight depth.  Prints a table\n"
	        "(provider, op, size, depth -> GB/s, ops/s, p50/p99 latency) and a memcpy line\n"
	        "per size (single thread, two already-faulted buffers).\n"
	        "\n"
	        "Options:\n"
	        "  -p, --provider LIST  tcp, shm, auto (or a libfabric name), comma separated\n"
	        "                       (default tcp,shm)\n"
	        "  -s, --sizes LIST     transfer sizes, e.g. 4K,64K,1M (default\n"
	        "                       4K,64K,1M,16M,64M)\n"
	        "  -d, --depth LIST     operations in flight, e.g. 1,4,16 (default 1,4,16)\n"
	        "  -o, --op OP          write, read or both (default both)\n"
	        "  -t, --seconds S      time per point, or with a unit: 500ms, 1m (default 1;\n"
	        "                       0 with --iters)\n"
	        "  -n, --iters N        operations per point (stops at whichever comes first)\n"
	        "  -c, --chunk SIZE     engine chunk size (default: the engine's, 1M)\n"
	        "      --inflight N     engine provider operations in flight (default: engine's)\n"
	        "      --cpu I,T        pin the progress threads of initiator I and target T\n"
	        "                       (-1 = engine's choice, the default)\n"
	        "      --node ADDR      local address both engines bind (tcp), e.g. 127.0.0.1\n"
	        "      --timeout MS     per-operation deadline in ms, or with a unit: 2s, 1m\n"
	        "                       (default 10000)\n"
	        "      --memcpy         only measure memcpy for the sizes\n"
	        "      --no-memcpy      skip the memcpy lines\n"
	        "  -j, --json           print one JSON object instead of the table\n"
	        "  -h, --help           show this help and exit\n"
	        "  -V, --version        print the version and exit\n"
	        "\n"
	        "GB/s is 10^9 bytes per second of payload.  Environment: KVFS_LOG=info shows\n"
	        "which provider/domain/CPU the engines chose.\n"
	        "\n"
	        "Exit status: 0 on success, 1 when a measurement fails, 2 on bad usage.\n");
}

/* ------------------------------------------------------------------ */
/* Option parsing                                                      */

static int parse_sizes(const char *s, uint64_t *out, size_t cap, size_t *ret_n)
{
	char buf[512], *save = NULL, *tok;
	size_t n = 0;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t v;

		if (n == cap || topt_parse_size(tok, 1, UINT64_MAX, &v) < 0)
			return -EINVAL;
		out[n++] = v;
	}
	if (n == 0)
		return -EINVAL;
	*ret_n = n;
	return 0;
}

static int parse_uint_list(const char *s, unsigned *out, size_t cap, unsigned maxv, size_t *ret_n)
{
	char buf[256], *save = NULL, *tok;
	size_t n = 0;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t v;

		if (n == cap || topt_parse_uint(tok, 1, maxv, &v) < 0)
			return -EINVAL;
		out[n++] = (unsigned)v;
	}
	if (n == 0)
		return -EINVAL;
	*ret_n = n;
	return 0;
}

static int parse_cpu_pair(const char *s, int *ret_a, int *ret_b)
{
	char *end;
	long a, b;

	a = strtol(s, &end, 10);
	if (*end != ',')
		return -EINVAL;
	b = strtol(end + 1, &end, 10);
	if (*end || a < -1 || b < -1 || a > 4096 || b > 4096)
		return -EINVAL;
	*ret_a = (int)a;
	*ret_b = (int)b;
	return 0;
}

static char *fmt_size(uint64_t v, char *buf, size_t len)
{
	if (v >= KV_GIB && v % KV_GIB == 0)
		snprintf(buf, len, "%" PRIu64 "G", (uint64_t)(v / KV_GIB));
	else if (v >= KV_MIB && v % KV_MIB == 0)
		snprintf(buf, len, "%" PRIu64 "M", (uint64_t)(v / KV_MIB));
	else if (v >= KV_KIB && v % KV_KIB == 0)
		snprintf(buf, len, "%" PRIu64 "K", (uint64_t)(v / KV_KIB));
	else
		snprintf(buf, len, "%" PRIu64, v);
	return buf;
}

/* ------------------------------------------------------------------ */
/* Target (passive side)                                               */

/* Runs in the child: serve one region until fd 0 reaches EOF or the parent
 * goes away. */
static int target_main(const char *provider, uint64_t bytes, uint64_t chunk, int cpu,
                       const char *node)
{
	struct xfer_opts o;
	struct xfer_engine *e;
	struct xfer_mr *mr;
	struct xfer_desc d;
	uint8_t addr[XFER_ADDR_MAX];
	size_t alen = sizeof(addr);
	char line[2 * XFER_ADDR_MAX + 128];
	pid_t parent = getppid();
	int n, r;

	prctl(PR_SET_NAME, "xfer-bench-tgt"); /* exec'd as /proc/self/exe: name it */
	xfer_opts_init(&o);
	o.provider = provider;
	o.chunk_size = chunk;
	o.cpu = cpu;
	o.node = node;
	r = xfer_open(&o, &e);
	if (r < 0) {
		n = snprintf(line, sizeof(line), "ERROR cannot open provider %s: %s\n", provider,
		             strerror(-r));
		goto out_report;
	}
	r = xfer_buf_alloc(e, bytes, ACC_ALL, &mr);
	if (r < 0) {
		n = snprintf(line, sizeof(line), "ERROR cannot register %" PRIu64 " bytes: %s\n",
		             bytes, strerror(-r));
		goto out_close;
	}
	r = xfer_addr(e, addr, &alen);
	if (r < 0) {
		n = snprintf(line, sizeof(line), "ERROR xfer_addr: %s\n", strerror(-r));
		goto out_dereg;
	}
	xfer_mr_desc(mr, &d);
	n = snprintf(line, sizeof(line), "READY ");
	for (size_t i = 0; i < alen; i++)
		n += snprintf(line + n, sizeof(line) - (size_t)n, "%02x", addr[i]);
	n += snprintf(line + n, sizeof(line) - (size_t)n, " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
	              d.addr, d.len, d.key);
	if (write(STDIN_FILENO, line, (size_t)n) != n) {
		r = -EPIPE;
		n = 0; /* nobody to report to */
		goto out_dereg;
	}
	/* A passive target the whole time: shm without CMA moves data in our
	 * progress. */
	xfer_expect(e, 1);
	for (;;) {
		struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
		char buf[64];

		r = poll(&p, 1, 1000);
		if (r < 0 && errno != EINTR)
			break;
		if (getppid() != parent)
			break;
		if (r > 0 && read(STDIN_FILENO, buf, sizeof(buf)) <= 0)
			break;
	}
	xfer_expect(e, -1);
	r = 0;
out_dereg:
	xfer_mr_dereg(mr);
out_close:
	xfer_close(e);
	if (r == 0)
		return 0;
out_report:
	if (r < 0 && n > 0 && write(STDIN_FILENO, line, (size_t)n) < 0) {
		/* parent gone: nobody to tell */
	}
	return 1;
}

struct target {
	pid_t pid;
	int fd; /* socket to the target; closing it stops the target */
	uint8_t addr[XFER_ADDR_MAX];
	size_t alen;
	struct xfer_desc desc;
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Read one line from @fd within @timeout_ms. */
static int read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
	uint64_t deadline = kv_now_ms() + (uint64_t)timeout_ms;
	size_t n = 0;

	while (n + 1 < cap) {
		uint64_t now = kv_now_ms();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t k;
		int r;

		if (now >= deadline)
			return -ETIMEDOUT;
		r = poll(&p, 1, (int)(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		k = read(fd, buf + n, 1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EPIPE;
		if (buf[n] == '\n') {
			buf[n] = 0;
			return 0;
		}
		n++;
	}
	return -E2BIG;
}

static void target_stop(struct target *t)
{
	int st;

	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	if (t->pid <= 0)
		return;
	/* Closing the socket makes it exit; do not wait forever if it hangs. */
	for (int i = 0; i < 100; i++) {
		if (waitpid(t->pid, &st, WNOHANG) == t->pid) {
			t->pid = -1;
			return;
		}
		usleep(50000);
	}
	kill(t->pid, SIGKILL);
	waitpid(t->pid, &st, 0);
	t->pid = -1;
}

static int target_start(const struct cfg *c, const char *provider, uint64_t bytes, struct target *t)
{
	char sz[32], chunk[32], cpu[16], line[2 * XFER_ADDR_MAX + 128];
	char hex[2 * XFER_ADDR_MAX + 2];
	int sv[2], r;
	const char *argv[16];
	int argc = 0;
	char *p;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	snprintf(sz, sizeof(sz), "%" PRIu64, bytes);
	snprintf(chunk, sizeof(chunk), "%" PRIu64, c->chunk);
	snprintf(cpu, sizeof(cpu), "%d", c->cpu_target);
	argv[argc++] = PROG;
	argv[argc++] = "--target";
	argv[argc++] = "--provider";
	argv[argc++] = provider;
	argv[argc++] = "--bytes";
	argv[argc++] = sz;
	if (c->chunk) {
		argv[argc++] = "--chunk";
		argv[argc++] = chunk;
	}
	argv[argc++] = "--target-cpu";
	argv[argc++] = cpu;
	if (c->node) {
		argv[argc++] = "--node";
		argv[argc++] = c->node;
	}
	argv[argc] = NULL;

	t->pid = fork();
	if (t->pid < 0) {
		r = -errno;
		close(sv[0]);
		close(sv[1]);
		return r;
	}
	if (t->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (dup2(sv[1], STDIN_FILENO) < 0)
			_exit(127);
		execv("/proc/self/exe", (char *const *)argv);
		fprintf(stderr, PROG ": cannot exec /proc/self/exe as target: %s\n",
		        strerror(errno));
		_exit(127);
	}
	close(sv[1]);
	t->fd = sv[0];
	r = read_line(t->fd, line, sizeof(line), READY_TIMEOUT);
	if (r < 0) {
		fprintf(stderr, PROG ": target for provider %s did not come up: %s\n", provider,
		        r == -ETIMEDOUT ? "no answer in 20 s" : strerror(-r));
		goto out_stop;
	}
	if (!strncmp(line, "ERROR ", 6)) {
		fprintf(stderr, PROG ": target: %s\n", line + 6);
		r = -EIO;
		goto out_stop;
	}
	if (sscanf(line, "READY %257s %" SCNu64 " %" SCNu64 " %" SCNu64, hex, &t->desc.addr,
	           &t->desc.len, &t->desc.key) != 4 ||
	    strlen(hex) % 2 || strlen(hex) / 2 > XFER_ADDR_MAX) {
		fprintf(stderr, PROG ": target sent a bad line: %s\n", line);
		r = -EPROTO;
		goto out_stop;
	}
	t->alen = 0;
	for (p = hex; *p; p += 2) {
		int hi = hexval(p[0]), lo = hexval(p[1]);

		if (hi < 0 || lo < 0) {
			fprintf(stderr, PROG ": target sent a bad address: %s\n", hex);
			r = -EPROTO;
			goto out_stop;
		}
		t->addr[t->alen++] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
out_stop:
	target_stop(t);
	return r;
}

/* ------------------------------------------------------------------ */
/* Measurement                                                         */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_us(uint64_t *v, uint64_t n, double p)
{
	uint64_t i;

	if (n == 0)
		return 0;
	i = (uint64_t)(p * (double)(n - 1) + 0.5);
	return (double)v[i] / 1000.0;
}

static int point_submit(struct point *pt, unsigned slot);

/* Completion callback, on the engine's progress thread: record, resubmit. */
static void point_done(void *arg, const struct xfer_comp *comp)
{
	struct point *pt = arg;
	unsigned slot = (unsigned)comp->cookie;
	uint64_t now = kv_now_ns();
	bool more;

	pthread_mutex_lock(&pt->lock);
	pt->inflight--;
	if (comp->status < 0) {
		if (!pt->error)
			pt->error = comp->status;
	} else {
		pt->completed++;
		pt->lat[pt->nlat++ % LAT_CAP] = now - pt->t_submit[slot];
		pt->last_done_ns = now;
	}
	more = !pt->error && (!pt->max_ops || pt->submitted < pt->max_ops) &&
	       (!pt->end_ns || now < pt->end_ns);
	if (more) {
		int r = point_submit(pt, slot);

		if (r < 0 && !pt->error)
			pt->error = r;
	}
	if (pt->inflight == 0)
		pthread_cond_signal(&pt->cond);
	pthread_mutex_unlock(&pt->lock);
}

/* Submit one operation in depth slot @slot; called with pt->lock held. */
static int point_submit(struct point *pt, unsigned slot)
{
	uint64_t off = (uint64_t)(slot % pt->nslots) * pt->size;
	struct xfer_sge s = {.mr = pt->local, .off = off, .len = pt->size};
	struct xfer_rsge rs = {.desc = pt->remote, .off = off, .len = pt->size};
	struct xfer_op op = {.opcode = pt->opcode,
	                     .peer = pt->peer,
	                     .local = &s,
	                     .nlocal = 1,
	                     .remote = &rs,
	                     .nremote = 1,
	                     .timeout_ms = pt->timeout_ms,
	                     .cookie = slot,
	                     .cb = point_done,
	                     .cb_arg = pt};
	int r;

	pt->t_submit[slot] = kv_now_ns();
	pt->submitted++;
	pt->inflight++;
	r = xfer_submit(pt->e, &op);
	if (r < 0) {
		pt->submitted--;
		pt->inflight--;
	}
	return r;
}

static int run_point(const struct cfg *c, struct xfer_engine *e, xfer_peer_t peer,
                     struct xfer_mr *local, const struct xfer_desc *remote, enum xfer_opcode opcode,
                     uint64_t size, unsigned depth, struct result *res)
{
	struct point pt = {.lock = PTHREAD_MUTEX_INITIALIZER,
	                   .cond = PTHREAD_COND_INITIALIZER,
	                   .e = e,
	                   .peer = peer,
	                   .local = local,
	                   .remote = *remote,
	                   .opcode = opcode,
	                   .size = size,
	                   .max_ops = c->iters,
	                   .timeout_ms = c->timeout_ms};
	uint64_t region = KV_MIN((uint64_t)xfer_mr_len(local), remote->len);
	uint64_t t0, hard_ns, budget_ns;
	struct xfer_sge ws = {.mr = local, .off = 0, .len = size};
	struct xfer_rsge wrs = {.desc = *remote, .off = 0, .len = size};
	struct xfer_op warm = {.opcode = opcode,
	                       .peer = peer,
	                       .local = &ws,
	                       .nlocal = 1,
	                       .remote = &wrs,
	                       .nremote = 1,
	                       .timeout_ms = c->timeout_ms};
	int r = 0;

	if (size > region)
		return -EINVAL;
	/* Warm-up outside the clock: connection set-up, first-touch paths.
	 * Returns -ETIME only when operations are stuck past every bound. */
	r = xfer_submit_wait(e, &warm);
	if (r < 0)
		return r;

	pt.nslots = (unsigned)KV_MIN(region / size, (uint64_t)depth);
	pt.t_submit = calloc(depth, sizeof(*pt.t_submit));
	pt.lat = malloc(LAT_CAP * sizeof(*pt.lat));
	if (!pt.t_submit || !pt.lat) {
		r = -ENOMEM;
		goto out_free;
	}

	t0 = kv_now_ns();
	if (c->seconds > 0)
		pt.end_ns = t0 + (uint64_t)(c->seconds * 1e9);
	/* Hard bound: the timed part, plus one deadline for the last ops. */
	budget_ns = c->seconds > 0 ? (uint64_t)(c->seconds * 1e9) : 600ULL * 1000000000ULL;
	hard_ns = t0 + budget_ns + (uint64_t)c->timeout_ms * 1000000ULL + 2000000000ULL;

	pthread_mutex_lock(&pt.lock);
	for (unsigned i = 0; i < depth && (!pt.max_ops || pt.submitted < pt.max_ops); i++) {
		r = point_submit(&pt, i);
		if (r < 0) {
			pt.error = r;
			break;
		}
	}
	while (pt.inflight > 0) {
		struct timespec ts;
		uint64_t wake_ns;

		if (kv_now_ns() >= hard_ns) {
			pthread_mutex_unlock(&pt.lock);
			/* Operations still reference pt: the process cannot go on. */
			fprintf(stderr,
			        PROG ": %s %s at depth %u did not finish within its time bound "
			             "(%u operations outstanding); giving up\n",
			        opcode == XFER_WRITE ? "write" : "read",
			        fmt_size(size, (char[32]){0}, 32), depth, pt.inflight);
			return -ETIME;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		wake_ns = (uint64_t)ts.tv_nsec + 100000000ULL;
		ts.tv_sec += (time_t)(wake_ns / 1000000000ULL);
		ts.tv_nsec = (long)(wake_ns % 1000000000ULL);
		pthread_cond_timedwait(&pt.cond, &pt.lock, &ts);
	}
	pthread_mutex_unlock(&pt.lock);
	if (pt.error) {
		r = pt.error;
		goto out_free;
	}

	res->ops = pt.completed;
	res->secs = (double)(pt.last_done_ns - t0) / 1e9;
	if (res->secs <= 0)
		res->secs = 1e-9;
	res->gbps = (double)pt.completed * (double)size / res->secs / 1e9;
	res->ops_per_s = (double)pt.completed / res->secs;
	{
		uint64_t n = KV_MIN(pt.nlat, (uint64_t)LAT_CAP);

		qsort(pt.lat, n, sizeof(*pt.lat), cmp_u64);
		res->p50_us = pct_us(pt.lat, n, 0.50);
		res->p99_us = pct_us(pt.lat, n, 0.99);
		res->max_us = n ? (double)pt.lat[n - 1] / 1000.0 : 0;
	}
	r = 0;
out_free:
	free(pt.t_submit);
	free(pt.lat);
	return r;
}

/* Copy between two faulted buffers of @size on this thread. */
static int run_memcpy(const struct cfg *c, uint64_t size, struct result *res)
{
	uint64_t t0, t_end, now, n = 0, max_n, batch;
	uint64_t *lat;
	uint64_t nlat = 0;
	char *src, *dst;

	src = aligned_alloc(4096, (size + 4095) / 4096 * 4096);
	dst = aligned_alloc(4096, (size + 4095) / 4096 * 4096);
	lat = malloc(LAT_CAP * sizeof(*lat));
	if (!src || !dst || !lat) {
		free(src);
		free(dst);
		free(lat);
		return -ENOMEM;
	}
	memset(src, 0x5a, size);
	memset(dst, 0xa5, size);
	memcpy(dst, src, size); /* warm */

	max_n = c->iters ? c->iters : UINT64_MAX;
	t0 = now = kv_now_ns();
	t_end = c->seconds > 0 ? t0 + (uint64_t)(c->seconds * 1e9) : UINT64_MAX;
	/* Small copies are timed in batches so the clock does not dominate. */
	batch = size >= KV_MIB ? 1 : KV_MIB / size;
	while (n < max_n && now < t_end) {
		uint64_t t = now, k = KV_MIN(batch, max_n - n);

		for (uint64_t i = 0; i < k; i++) {
			memcpy(dst, src, size);
			__asm__ volatile("" : : "r"(dst) : "memory"); /* keep every copy */
		}
		now = kv_now_ns();
		lat[nlat++ % LAT_CAP] = (now - t) / k;
		n += k;
	}
	res->ops = n;
	res->secs = (double)(now - t0) / 1e9;
	res->gbps = (double)n * (double)size / res->secs / 1e9;
	res->ops_per_s = (double)n / res->secs;
	nlat = KV_MIN(nlat, (uint64_t)LAT_CAP);
	qsort(lat, nlat, sizeof(*lat), cmp_u64);
	res->p50_us = pct_us(lat, nlat, 0.50);
	res->p99_us = pct_us(lat, nlat, 0.99);
	res->max_us = nlat ? (double)lat[nlat - 1] / 1000.0 : 0;
	free(src);
	free(dst);
	free(lat);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Output                                                              */

static void print_header(void)
{
	printf("%-12s %-5s %6s %5s %9s %10s %10s %10s %8s\n", "provider", "op", "size", "depth",
	       "GB/s", "ops/s", "p50_us", "p99_us", "ops");
}

static void print_row(const struct result *r)
{
	char sz[32], depth[16];

	if (r->depth)
		snprintf(depth, sizeof(depth), "%u", r->depth);
	else
		snprintf(depth, sizeof(depth), "-");
	printf("%-12s %-5s %6s %5s %9.3f %10.0f %10.1f %10.1f %8" PRIu64 "\n", r->kind, r->op,
	       fmt_size(r->size, sz, sizeof(sz)), depth, r->gbps, r->ops_per_s, r->p50_us,
	       r->p99_us, r->ops);
	fflush(stdout);
}

static void print_json(const struct cfg *c, const struct result *res, size_t n)
{
	printf("{\"tool\":\"" PROG "\",\"unit_gbps\":\"1e9 bytes/s\",\"seconds_per_point\":%g,"
	       "\"iters_per_point\":%" PRIu64 ",\"chunk\":%" PRIu64 ",\"results\":[",
	       c->seconds, c->iters, c->chunk);
	for (size_t i = 0; i < n; i++) {
		const struct result *r = &res[i];

		printf("%s\n{\"provider\":\"%s\",\"op\":\"%s\",\"size\":%" PRIu64
		       ",\"depth\":%u,\"chunk\":%" PRIu64 ",\"ops\":%" PRIu64
		       ",\"seconds\":%.6f,\"gbps\":%.4f,\"ops_per_s\":%.1f,\"p50_us\":%.2f,"
		       "\"p99_us\":%.2f,\"max_us\":%.2f}",
		       i ? "," : "", r->kind, r->op, r->size, r->depth, r->chunk, r->ops, r->secs,
		       r->gbps, r->ops_per_s, r->p50_us, r->p99_us, r->max_us);
	}
	printf("]}\n");
}

/* ------------------------------------------------------------------ */
/* Driver                                                              */

struct run {
	const struct cfg *c;
	struct result *res;
	size_t nres, cap;
	char names[MAX_PROVIDERS][64]; /* provider names the engines reported */
};

static int add_result(struct run *run, const struct result *r)
{
	if (run->nres == run->cap) {
		size_t ncap = run->cap ? run->cap * 2 : 64;
		struct result *n = realloc(run->res, ncap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		run->res = n;
		run->cap = ncap;
	}
	run->res[run->nres++] = *r;
	if (!run->c->json)
		print_row(r);
	return 0;
}

static uint64_t region_bytes(const struct cfg *c)
{
	uint64_t maxsz = 0, want;
	unsigned maxd = 0;

	for (size_t i = 0; i < c->nsizes; i++)
		maxsz = KV_MAX(maxsz, c->sizes[i]);
	for (size_t i = 0; i < c->ndepths; i++)
		maxd = KV_MAX(maxd, c->depths[i]);
	want = maxsz > REGION_CAP / maxd ? maxsz : maxsz * maxd;
	return KV_MAX(maxsz, KV_MIN(want, REGION_CAP));
}

static int bench_provider(struct run *run, size_t pi)
{
	const struct cfg *c = run->c;
	const char *provider = c->providers[pi];
	uint64_t bytes = region_bytes(c);
	struct target t = {.pid = -1, .fd = -1};
	struct xfer_opts o;
	struct xfer_engine *e;
	struct xfer_mr *mr;
	xfer_peer_t peer;
	char human[32];
	int r;

	r = target_start(c, provider, bytes, &t);
	if (r < 0)
		return r;
	xfer_opts_init(&o);
	o.provider = provider;
	o.chunk_size = c->chunk;
	o.max_inflight = c->inflight;
	o.cpu = c->cpu_init;
	o.node = c->node;
	o.timeout_ms = c->timeout_ms;
	r = xfer_open(&o, &e);
	if (r < 0) {
		fprintf(stderr,
		        PROG ": cannot open provider %s: %s (see kvfs-topo for usable ones)\n",
		        provider, strerror(-r));
		goto out_stop;
	}
	r = xfer_buf_alloc(e, bytes, ACC_ALL, &mr);
	if (r < 0) {
		fprintf(stderr,
		        PROG ": cannot register %s with provider %s: %s (try smaller --sizes)\n",
		        kv_fmt_size(bytes, human, sizeof(human)), xfer_provider(e), strerror(-r));
		goto out_close;
	}
	r = xfer_peer_add(e, t.addr, t.alen, &peer);
	if (r < 0) {
		fprintf(stderr, PROG ": cannot add the target as a peer on %s: %s\n",
		        xfer_provider(e), strerror(-r));
		goto out_dereg;
	}
	snprintf(run->names[pi], sizeof(run->names[pi]), "%s",
	         !strcmp(xfer_provider(e), "tcp;ofi_rxm") ? "tcp" : xfer_provider(e));
	if (!c->json)
		fprintf(stderr, PROG ": provider %s domain %s, chunk %zu KiB, region %s per side\n",
		        xfer_provider(e), xfer_domain(e), xfer_chunk_size(e) / 1024,
		        kv_fmt_size(bytes, human, sizeof(human)));

	for (int k = 0; k < 2; k++) {
		enum xfer_opcode opc = k == 0 ? XFER_WRITE : XFER_READ;

		if (!(c->ops & (k == 0 ? OP_WRITE : OP_READ)))
			continue;
		for (size_t si = 0; si < c->nsizes; si++) {
			for (size_t di = 0; di < c->ndepths; di++) {
				struct result res = {.kind = run->names[pi],
				                     .op = k == 0 ? "write" : "read",
				                     .size = c->sizes[si],
				                     .depth = c->depths[di],
				                     .chunk = xfer_chunk_size(e)};

				r = run_point(c, e, peer, mr, &t.desc, opc, c->sizes[si],
				              c->depths[di], &res);
				if (r == -ETIME) {
					/* Stuck operations reference stack state:
					 * exit without unwinding; the target dies
					 * with us (socket EOF, parent-death signal). */
					target_stop(&t);
					_exit(1);
				}
				if (r < 0) {
					fprintf(stderr,
					        PROG ": %s %s at depth %u over %s failed: %s\n",
					        res.op, fmt_size(res.size, human, sizeof(human)),
					        res.depth, xfer_provider(e), strerror(-r));
					goto out_dereg;
				}
				r = add_result(run, &res);
				if (r < 0)
					goto out_dereg;
			}
		}
	}
	r = 0;
out_dereg:
	xfer_mr_dereg(mr);
out_close:
	xfer_close(e);
out_stop:
	target_stop(&t);
	return r;
}

static int bench_memcpy(struct run *run)
{
	const struct cfg *c = run->c;

	for (size_t si = 0; si < c->nsizes; si++) {
		struct result res = {.kind = "memcpy", .op = "copy", .size = c->sizes[si]};
		int r = run_memcpy(c, c->sizes[si], &res);

		if (r < 0) {
			fprintf(stderr, PROG ": memcpy of %" PRIu64 " bytes: %s\n", c->sizes[si],
			        strerror(-r));
			return r;
		}
		r = add_result(run, &res);
		if (r < 0)
			return r;
	}
	return 0;
}

enum {
	OPT_INFLIGHT = 256,
	OPT_CPU,
	OPT_NODE,
	OPT_TIMEOUT,
	OPT_MEMCPY,
	OPT_NO_MEMCPY,
	OPT_TARGET,
	OPT_BYTES,
	OPT_TARGET_CPU,
};

static const struct topt_tool tool = {.prog = PROG, .usage = usage};

static int bad_usage(const char *what, const char *val)
{
	fprintf(stderr, PROG ": invalid %s '%s' (see --help)\n", what, val ? val : "");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
	        {"provider", required_argument, NULL, 'p'},
	        {"sizes", required_argument, NULL, 's'},
	        {"depth", required_argument, NULL, 'd'},
	        {"op", required_argument, NULL, 'o'},
	        {"seconds", required_argument, NULL, 't'},
	        {"iters", required_argument, NULL, 'n'},
	        {"chunk", required_argument, NULL, 'c'},
	        {"inflight", required_argument, NULL, OPT_INFLIGHT},
	        {"cpu", required_argument, NULL, OPT_CPU},
	        {"node", required_argument, NULL, OPT_NODE},
	        {"timeout", required_argument, NULL, OPT_TIMEOUT},
	        {"memcpy", no_argument, NULL, OPT_MEMCPY},
	        {"no-memcpy", no_argument, NULL, OPT_NO_MEMCPY},
	        {"json", no_argument, NULL, 'j'},
	        {"help", no_argument, NULL, 'h'},
	        {"version", no_argument, NULL, 'V'},
	        /* internal: the passive side */
	        {"target", no_argument, NULL, OPT_TARGET},
	        {"bytes", required_argument, NULL, OPT_BYTES},
	        {"target-cpu", required_argument, NULL, OPT_TARGET_CPU},
	        {NULL, 0, NULL, 0},
	};
	struct cfg c = {.providers = {"tcp", "shm"},
	                .nproviders = 2,
	                .sizes = {4 * KV_KIB, 64 * KV_KIB, KV_MIB, 16 * KV_MIB, 64 * KV_MIB},
	                .nsizes = 5,
	                .depths = {1, 4, 16},
	                .ndepths = 3,
	                .ops = OP_WRITE | OP_READ,
	                .seconds = -1,
	                .cpu_init = -1,
	                .cpu_target = -1,
	                .timeout_ms = 10000,
	                .memcpy_line = true,
	                .transfers = true};
	bool target = false;
	uint64_t bytes = 0;
	struct run run = {.c = &c};
	char provbuf[256];
	uint64_t v;
	int opt, r = 0;

	kv_log_init(PROG);
	if (!getenv("KVFS_LOG"))
		kv_log_level = KV_LOG_WARN;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "p:s:d:o:t:n:c:jhV", lopts, NULL)) != -1) {
		char *end;

		if (topt_std_opt(&tool, opt))
			return 0;
		switch (opt) {
		case 'p': {
			char *save = NULL, *tok;

			if (strlen(optarg) >= sizeof(provbuf))
				return bad_usage("--provider", optarg);
			strcpy(provbuf, optarg);
			c.nproviders = 0;
			for (tok = strtok_r(provbuf, ",", &save); tok;
			     tok = strtok_r(NULL, ",", &save)) {
				if (c.nproviders == MAX_PROVIDERS)
					return bad_usage("--provider (at most 4)", optarg);
				c.providers[c.nproviders++] = tok;
			}
			if (!c.nproviders)
				return bad_usage("--provider", optarg);
			break;
		}
		case 's':
			if (parse_sizes(optarg, c.sizes, MAX_SIZES, &c.nsizes) < 0)
				return bad_usage("--sizes (want e.g. 4K,64K,1M)", optarg);
			break;
		case 'd':
			if (parse_uint_list(optarg, c.depths, MAX_DEPTHS, MAX_DEPTH_VALUE,
			                    &c.ndepths) < 0)
				return bad_usage("--depth (want e.g. 1,4,16; 1..1024)", optarg);
			break;
		case 'o':
			if (!strcmp(optarg, "write"))
				c.ops = OP_WRITE;
			else if (!strcmp(optarg, "read"))
				c.ops = OP_READ;
			else if (!strcmp(optarg, "both"))
				c.ops = OP_WRITE | OP_READ;
			else
				return bad_usage("--op (write, read or both)", optarg);
			break;
		case 't':
			if (topt_parse_secs(optarg, 0, 3600, &c.seconds) < 0)
				return bad_usage("--seconds (0..3600)", optarg);
			break;
		case 'n':
			if (topt_parse_uint(optarg, 1, UINT64_MAX, &c.iters) < 0)
				return bad_usage("--iters", optarg);
			break;
		case 'c':
			if (topt_parse_size(optarg, 1, UINT64_MAX, &c.chunk) < 0)
				return bad_usage("--chunk", optarg);
			break;
		case OPT_INFLIGHT:
			if (topt_parse_uint(optarg, 1, 65536, &v) < 0)
				return bad_usage("--inflight", optarg);
			c.inflight = (unsigned)v;
			break;
		case OPT_CPU:
			if (parse_cpu_pair(optarg, &c.cpu_init, &c.cpu_target) < 0)
				return bad_usage("--cpu (want I,T, e.g. 0,1)", optarg);
			break;
		case OPT_NODE:
			c.node = optarg;
			break;
		case OPT_TIMEOUT:
			if (topt_parse_ms(optarg, 1, 600000, &c.timeout_ms) < 0)
				return bad_usage("--timeout", optarg);
			break;
		case OPT_MEMCPY:
			c.memcpy_only = true;
			break;
		case OPT_NO_MEMCPY:
			c.memcpy_line = false;
			break;
		case 'j':
			c.json = true;
			break;
		case OPT_TARGET:
			target = true;
			break;
		case OPT_BYTES:
			if (topt_parse_size(optarg, 1, UINT64_MAX, &bytes) < 0)
				return bad_usage("--bytes", optarg);
			break;
		case OPT_TARGET_CPU:
			c.cpu_target = (int)strtol(optarg, &end, 10);
			if (*end || end == optarg)
				return bad_usage("--target-cpu", optarg);
			break;
		default:
			fprintf(stderr, PROG ": unknown or incomplete option '%s' (see --help)\n",
			        argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s' (see --help)\n", argv[optind]);
		return 2;
	}
	if (target) {
		if (!bytes || c.nproviders != 1)
			return bad_usage(
			        "--target use (internal: needs --bytes and one --provider)", "");
		return target_main(c.providers[0], bytes, c.chunk, c.cpu_target, c.node);
	}
	if (c.seconds < 0)
		c.seconds = c.iters ? 0 : 1;
	if (c.seconds == 0 && !c.iters)
		return bad_usage("--seconds 0 (needs --iters)", "0");
	if (c.memcpy_only) {
		c.transfers = false;
		c.memcpy_line = true;
	}
	signal(SIGPIPE, SIG_IGN);

	if (!c.json)
		print_header();
	if (c.memcpy_line) {
		r = bench_memcpy(&run);
		if (r < 0)
			goto out;
	}
	for (size_t i = 0; c.transfers && i < c.nproviders; i++) {
		r = bench_provider(&run, i);
		if (r < 0)
			goto out;
	}
	if (c.json)
		print_json(&c, run.res, run.nres);
out:
	free(run.res);
	return r < 0 ? 1 : 0;
}
