/* SPDX-License-Identifier: MIT */
/*
 * Transfer engine, generic layer: validation, splitting into provider-sized
 * segments, pipelining, deadlines, completion delivery and the progress
 * thread.  The provider is reached only through engine->ops.
 *
 * Life of an operation
 * --------------------
 * xfer_submit() (any thread) validates the op, cuts it into segments and
 * queues a struct xfer_req on submitq.  The progress thread moves it to the
 * live list, posts its segments (at most max_inflight at the provider across
 * all operations; a WRITE's immediate rides on its last segment, which is
 * posted only after every other segment completed, so the peer never sees
 * the immediate before the bytes), reaps provider completions, and delivers
 * the one user completion when the last segment is done, on the first
 * error, or at the deadline.  A request completed early whose segments are
 * still at the provider stays on the live list as a zombie until they come
 * back, so the provider never holds a dangling context.  Its completion
 * says so (unsettled); with op->notify_settled a second one (settled)
 * follows when they are back or the peer's process is gone, whichever
 * comes first: only then may the caller reuse the local memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <numa.h>

#include "kvfs/log.h"
#include "kvfs/topo.h"
#include "kvfs/util.h"
#include "xfer_i.h"
#include "xfer_shm.h"

#define XFER_TAG              "xfer"
#define XFER_DEFAULT_TIMEOUT  10000
#define XFER_DEFAULT_CHUNK    (1024 * 1024)
#define XFER_DEFAULT_INFLIGHT 64
#define XFER_SPIN_LIMIT       2000 /* idle passes before sleeping while busy */
#define XFER_HUGE_PAGE        (2UL * 1024 * 1024)

struct xfer_req {
	struct xfer_req *next, *prev; /* submitq (next only) or live list */
	enum xfer_opcode opcode;
	xfer_peer_t peer;
	uint64_t prov_addr;
	bool has_imm;
	uint32_t imm;
	uint64_t deadline_ns;
	uint64_t cookie;
	xfer_cb_t cb;
	void *cb_arg;
	struct xfer_cq *cq;
	struct xfer_seg *segs;
	size_t nsegs;
	size_t next_seg;     /* next segment to post */
	unsigned posted;     /* segments at the provider */
	size_t done_segs;    /* segments completed successfully */
	uint64_t bytes;      /* bytes of completed segments */
	uint64_t total;      /* bytes of the whole op */
	bool completed;      /* user completion delivered */
	bool notify_settled; /* op->notify_settled */
	bool owes_settled;   /* delivered unsettled: a settled completion follows at retire */
	struct xfer_seg one; /* storage when nsegs == 1 */
};

struct xfer_cq {
	pthread_mutex_t lock;
	int efd;
	struct xfer_comp *ring;
	size_t cap, head, count;
};

/* ------------------------------------------------------------------ */
/* Completion queue                                                    */

int xfer_cq_create(struct xfer_cq **ret_cq)
{
	struct xfer_cq *cq = calloc(1, sizeof(*cq));

	if (!cq)
		return -ENOMEM;
	cq->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (cq->efd < 0) {
		int r = -errno;

		free(cq);
		return r;
	}
	pthread_mutex_init(&cq->lock, NULL);
	*ret_cq = cq;
	return 0;
}

void xfer_cq_destroy(struct xfer_cq *cq)
{
	if (!cq)
		return;
	close(cq->efd);
	pthread_mutex_destroy(&cq->lock);
	free(cq->ring);
	free(cq);
}

int xfer_cq_fd(const struct xfer_cq *cq)
{
	return cq->efd;
}

static void cq_push(struct xfer_cq *cq, const struct xfer_comp *c)
{
	uint64_t one = 1;

	pthread_mutex_lock(&cq->lock);
	if (cq->count == cq->cap) {
		size_t ncap = cq->cap ? cq->cap * 2 : 64;
		struct xfer_comp *n = malloc(ncap * sizeof(*n));

		if (!n) {
			/* Cannot lose a completion: spin until memory is back. */
			pthread_mutex_unlock(&cq->lock);
			KV_WARN_RL(XFER_TAG, "out of memory queueing a completion; retrying");
			usleep(1000);
			cq_push(cq, c);
			return;
		}
		for (size_t i = 0; i < cq->count; i++)
			n[i] = cq->ring[(cq->head + i) % cq->cap];
		free(cq->ring);
		cq->ring = n;
		cq->cap = ncap;
		cq->head = 0;
	}
	cq->ring[(cq->head + cq->count) % cq->cap] = *c;
	if (cq->count++ == 0 && write(cq->efd, &one, sizeof(one)) < 0) {
		/* eventfd counter cannot overflow here: it is drained when empty */
	}
	pthread_mutex_unlock(&cq->lock);
}

int xfer_cq_poll(struct xfer_cq *cq, struct xfer_comp *comps, int max)
{
	uint64_t v;
	int n = 0;

	pthread_mutex_lock(&cq->lock);
	while (n < max && cq->count) {
		comps[n++] = cq->ring[cq->head];
		cq->head = (cq->head + 1) % cq->cap;
		cq->count--;
	}
	if (cq->count == 0 && read(cq->efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: already clear */
	}
	pthread_mutex_unlock(&cq->lock);
	return n;
}

/* ------------------------------------------------------------------ */
/* Options, open, close                                                */

void xfer_opts_init(struct xfer_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->provider = "auto";
	opts->cpu = -1;
}

static void wake(struct xfer_engine *e)
{
	uint64_t one = 1;

	if (write(e->wake_fd, &one, sizeof(one)) < 0) {
		/* counter saturated: the thread is awake anyway */
	}
}

static void *progress_main(void *arg);
static void *watchdog_main(void *arg);
static inline void prov_enter(struct xfer_engine *e);
static inline void prov_leave(struct xfer_engine *e);
static void peer_unwatch_locked(struct xfer_engine *e, struct xfer_peer_ent *p);

/*
 * Placement of the progress thread: on the CPU the caller named; else on
 * the CPUs of the NIC's NUMA node when that is known; else wherever the
 * scheduler likes.  Never one fixed CPU by default: two engines on one host
 * (a client and a server, or both ends of a benchmark) would share it and
 * lose most of their bandwidth (measured: shm 64 MiB writes 7.4 -> 17 GB/s).
 */
static void pin_progress_thread(struct xfer_engine *e)
{
	cpu_set_t set;
	char what[64] = "unpinned";

	CPU_ZERO(&set);
	if (e->cpu >= 0) {
		CPU_SET(e->cpu, &set);
		snprintf(what, sizeof(what), "on CPU %d", e->cpu);
	} else if (e->numa_node >= 0 && numa_available() >= 0 && numa_max_node() > 0) {
		struct bitmask *bm = numa_allocate_cpumask();

		if (bm && numa_node_to_cpus(e->numa_node, bm) == 0) {
			for (unsigned i = 0; i < bm->size && i < CPU_SETSIZE; i++)
				if (numa_bitmask_isbitset(bm, i))
					CPU_SET(i, &set);
			snprintf(what, sizeof(what), "on the CPUs of NUMA node %d", e->numa_node);
		}
		if (bm)
			numa_free_cpumask(bm);
	}
	if (CPU_COUNT(&set) && pthread_setaffinity_np(e->thread, sizeof(set), &set)) {
		KV_DEBUG(XFER_TAG, "cannot pin the progress thread %s", what);
		snprintf(what, sizeof(what), "unpinned");
	}
	snprintf(e->placement, sizeof(e->placement), "%s", what);
}

int xfer_open(const struct xfer_opts *opts, struct xfer_engine **ret_engine)
{
	struct xfer_engine *e;
	struct topo *topo = NULL;
	const char *stall;
	int r;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	if (opts)
		e->opts = *opts;
	else
		xfer_opts_init(&e->opts);
	if (!e->opts.provider)
		e->opts.provider = "auto";
	e->timeout_ms = e->opts.timeout_ms > 0 ? e->opts.timeout_ms : XFER_DEFAULT_TIMEOUT;
	e->chunk = e->opts.chunk_size ? e->opts.chunk_size : XFER_DEFAULT_CHUNK;
	e->max_inflight = e->opts.max_inflight ? e->opts.max_inflight : XFER_DEFAULT_INFLIGHT;
	e->ops = &xfer_ofi_ops;
	pthread_mutex_init(&e->lock, NULL);
	e->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (e->wake_fd < 0) {
		r = -errno;
		goto out_free;
	}

	r = e->ops->open(e, &e->opts);
	if (r < 0)
		goto out_close_wake;

	e->post_pool = calloc(e->max_inflight, sizeof(*e->post_pool));
	if (!e->post_pool) {
		r = -ENOMEM;
		goto out_close_be;
	}
	for (unsigned i = 0; i < e->max_inflight; i++) {
		e->post_pool[i].next_free = e->free_posts;
		e->free_posts = &e->post_pool[i];
	}

	/* Placement: a CPU next to the NIC, buffers on its node. */
	e->numa_node = -1;
	if (topo_scan(&topo) == 0) {
		e->numa_node = topo_domain_numa_node(topo, e->domain_name);
		topo_free(topo);
	}
	e->cpu = e->opts.cpu;

	stall = getenv("KVFS_XFER_TEST_STALL_MS");
	if (stall)
		e->test_stall_ms = (unsigned)strtoul(stall, NULL, 10);
	r = -pthread_create(&e->thread, NULL, progress_main, e);
	if (r < 0)
		goto out_free_pool;
	pin_progress_thread(e);
	kv_cond_init_monotonic(&e->wd_cond);
	pthread_mutex_init(&e->wd_lock, NULL);
	e->watchdog_up = pthread_create(&e->watchdog, NULL, watchdog_main, e) == 0;
	if (!e->watchdog_up)
		KV_WARN(XFER_TAG,
		        "cannot start the watchdog thread: a stuck provider goes unnoticed");
	KV_DEBUG(XFER_TAG,
	         "engine up: provider %s, domain %s, NIC NUMA node %d, progress thread %s, "
	         "chunk %zu KiB, %u in flight, deadline %d ms",
	         e->prov_name, e->domain_name, e->numa_node, e->placement, e->chunk / 1024,
	         e->max_inflight, e->timeout_ms);
	*ret_engine = e;
	return 0;

out_free_pool:
	free(e->post_pool);
out_close_be:
	e->ops->close(e);
out_close_wake:
	close(e->wake_fd);
out_free:
	pthread_mutex_destroy(&e->lock);
	free(e);
	return r;
}

const char *xfer_strerror(int err)
{
	if (err == -ELIBACC)
		return "libfabric.so.1 cannot be loaded (install libfabric1)";
	return strerror(-err);
}

static void req_free(struct xfer_req *rq)
{
	if (rq->segs != &rq->one)
		free(rq->segs);
	free(rq);
}

static void comp_push(struct xfer_req *rq, const struct xfer_comp *c)
{
	if (rq->cb)
		rq->cb(rq->cb_arg, c);
	else if (rq->cq)
		cq_push(rq->cq, c);
}

/* The second completion of an unsettled op: the provider can no longer
 * touch its local memory. */
static void settle(struct xfer_req *rq)
{
	struct xfer_comp c = {.cookie = rq->cookie, .status = 0, .settled = true};

	rq->owes_settled = false;
	comp_push(rq, &c);
}

static void deliver(struct xfer_engine *e, struct xfer_req *rq, int status)
{
	struct xfer_comp c = {.cookie = rq->cookie,
	                      .status = status,
	                      .bytes = rq->bytes,
	                      .unsettled = status < 0 && rq->posted > 0};

	if (rq->completed)
		return;
	rq->completed = true;
	rq->owes_settled = c.unsettled && rq->notify_settled;
	/* Segments still at the provider become zombies: they no longer count
	 * against max_inflight, so a dead peer that never returns them (shm)
	 * cannot starve operations to other peers. */
	e->posted -= rq->posted;
	atomic_fetch_sub(&e->st.inflight, 1);
	if (status == 0) {
		atomic_fetch_add(&e->st.ops_done, 1);
		if (rq->opcode == XFER_WRITE)
			atomic_fetch_add(&e->st.bytes_written, rq->bytes);
		else
			atomic_fetch_add(&e->st.bytes_read, rq->bytes);
	} else {
		atomic_fetch_add(&e->st.ops_failed, 1);
		if (status == -ETIMEDOUT)
			atomic_fetch_add(&e->st.ops_timedout, 1);
	}
	comp_push(rq, &c);
}

static void lost_free(struct xfer_engine *e);

/* xfer_close(): fail every operation not yet delivered with -ECANCELED, and
 * free them unless the provider may still hold their segment contexts. */
static void cancel_all(struct xfer_engine *e, bool free_reqs)
{
	struct xfer_req *lists[2] = {e->active_head, e->submit_head}, *rq, *next;

	for (size_t i = 0; i < KV_ARRAY_SIZE(lists); i++) {
		for (rq = lists[i]; rq; rq = next) {
			next = rq->next;
			deliver(e, rq, -ECANCELED);
			if (free_reqs)
				req_free(rq);
		}
	}
}

void xfer_close(struct xfer_engine *e)
{
	struct xfer_req *rq;

	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	e->stopping = true;
	pthread_mutex_unlock(&e->lock);
	wake(e);
	pthread_mutex_lock(&e->wd_lock);
	e->wd_stop = true;
	pthread_cond_signal(&e->wd_cond);
	pthread_mutex_unlock(&e->wd_lock);
	if (e->watchdog_up)
		pthread_join(e->watchdog, NULL);
	pthread_cond_destroy(&e->wd_cond);
	pthread_mutex_destroy(&e->wd_lock);
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 5;
		if (pthread_timedjoin_np(e->thread, NULL, &ts) != 0) {
			/* The progress thread is stuck inside the provider (seen with
			 * libfabric 1.17 shm after a peer died holding a lock in a
			 * shared region).  Never hang the caller: leave the engine
			 * to the process's exit. */
			KV_WARN(XFER_TAG,
			        "provider %s did not return within 5 s; leaving its "
			        "resources to process exit",
			        e->prov_name);
			return;
		}
	}

	/* Segments still at the provider belong to operations that failed
	 * with their memory not given back (a slow or cut link).  Closing the
	 * endpoint over them crashed libfabric 1.17's tcp;ofi_rxm (SIGSEGV in
	 * fi_close of the endpoint), so leave the provider, and the segment
	 * contexts and memory it may still use, to the process's exit. */
	{
		unsigned held = 0;

		for (rq = e->active_head; rq; rq = rq->next)
			held += rq->posted;
		if (held) {
			KV_WARN(XFER_TAG,
			        "%u transfer segments are still at provider %s (failed, their "
			        "memory not given back); leaving its resources to process exit",
			        held, e->prov_name);
			cancel_all(e, false);
			return;
		}
	}

	/* Closing the endpoint makes the provider forget every posted segment. */
	e->ops->close(e);
	cancel_all(e, true);
	while (e->free_posts) {
		struct xfer_post *ctx = e->free_posts;

		e->free_posts = ctx->next_free;
		if (ctx->heap)
			free(ctx);
	}
	free(e->post_pool);
	for (size_t i = 0; i < e->npeers; i++)
		peer_unwatch_locked(e, &e->peers[i]); /* the progress thread is gone */
	free(e->peers);
	lost_free(e);
	close(e->wake_fd);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

const char *xfer_provider(const struct xfer_engine *e)
{
	return e->prov_name;
}

int xfer_addr_pid(const struct xfer_engine *e, const void *addr, size_t len, pid_t *ret_pid)
{
	pid_t pid;

	if (strcmp(e->prov_name, "shm"))
		return -ENOENT;
	pid = shm_addr_pid(addr, len);
	if (!pid)
		return -EINVAL;
	*ret_pid = pid;
	return 0;
}

const char *xfer_domain(const struct xfer_engine *e)
{
	return e->domain_name;
}

size_t xfer_chunk_size(const struct xfer_engine *e)
{
	return e->chunk;
}

int xfer_addr(struct xfer_engine *e, void *buf, size_t *len)
{
	int r;

	pthread_mutex_lock(&e->lock); /* not during a reset */
	r = e->ops->addr(e, buf, len);
	pthread_mutex_unlock(&e->lock);
	return r;
}

void xfer_expect(struct xfer_engine *e, int delta)
{
	if (atomic_fetch_add(&e->expect, delta) <= 0 && delta > 0)
		wake(e);
}

void xfer_get_stats(struct xfer_engine *e, struct xfer_stats *s)
{
	s->ops_done = atomic_load(&e->st.ops_done);
	s->ops_failed = atomic_load(&e->st.ops_failed);
	s->ops_timedout = atomic_load(&e->st.ops_timedout);
	s->bytes_written = atomic_load(&e->st.bytes_written);
	s->bytes_read = atomic_load(&e->st.bytes_read);
	s->imm_received = atomic_load(&e->st.imm_received);
	s->inflight = atomic_load(&e->st.inflight);
	s->stuck = atomic_load(&e->stuck) || atomic_load(&e->no_ep);
	s->stuck_events = atomic_load(&e->st.stuck_events);
	s->locks_released = atomic_load(&e->st.locks_released);
	s->resets = atomic_load(&e->st.resets);
}

/* ------------------------------------------------------------------ */
/* Peers                                                               */

/* Drop @p's watch (xfer_peer_watch()), if any. */
static void peer_unwatch_locked(struct xfer_engine *e, struct xfer_peer_ent *p)
{
	if (p->gone_fd > 0) {
		close(p->gone_fd);
		p->gone_fd = 0;
		atomic_fetch_sub(&e->nwatched, 1);
	}
}

/* Release a removed peer once no request names it: its provider entry goes
 * (shm: the mapping of the peer's region; tcp: its connection) and the
 * slot is free for the next xfer_peer_add().  Called with e->lock held. */
static void peer_release_locked(struct xfer_engine *e, struct xfer_peer_ent *p)
{
	if (!p->removing || p->refs)
		return;
	if (p->valid)
		e->ops->peer_remove(e, p->prov_addr);
	peer_unwatch_locked(e, p);
	memset(p, 0, sizeof(*p)); /* addrlen 0: a free slot */
}

int xfer_peer_watch(struct xfer_engine *e, xfer_peer_t peer, int fd)
{
	int r = -EINVAL;

	pthread_mutex_lock(&e->lock);
	if (peer < e->npeers && e->peers[peer].addrlen && fd > 0) {
		struct xfer_peer_ent *p = &e->peers[peer];

		if (p->gone_fd > 0)
			close(p->gone_fd);
		else
			atomic_fetch_add(&e->nwatched, 1);
		p->gone_fd = fd;
		r = 0;
	}
	pthread_mutex_unlock(&e->lock);
	if (r < 0 && fd > 0)
		close(fd);
	return r;
}

/* Has @peer's process exited (xfer_peer_watch())?  Then mark it failed. */
static bool peer_gone(struct xfer_engine *e, xfer_peer_t peer)
{
	struct pollfd pfd = {.events = POLLIN};
	bool gone = false;

	if (!atomic_load_explicit(&e->nwatched, memory_order_relaxed))
		return false; /* no watched peer (tcp, verbs, efa): no lock per segment */
	pthread_mutex_lock(&e->lock);
	if (peer < e->npeers)
		pfd.fd = e->peers[peer].gone_fd;
	if (pfd.fd > 0 && poll(&pfd, 1, 0) > 0) {
		gone = true;
		if (!e->peers[peer].failed)
			KV_DEBUG(XFER_TAG,
			         "peer %llu: its process has exited; posting nothing more",
			         (unsigned long long)peer);
		e->peers[peer].failed = true;
	}
	pthread_mutex_unlock(&e->lock);
	return gone;
}

int xfer_peer_add(struct xfer_engine *e, const void *addr, size_t len, xfer_peer_t *ret_peer)
{
	struct xfer_peer_ent *p = NULL;
	size_t i, free_slot = SIZE_MAX;
	uint64_t pa;
	int r;

	if (!addr || len == 0 || len > XFER_ADDR_MAX)
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	for (i = 0; i < e->npeers; i++) {
		p = &e->peers[i];
		if (p->addrlen == len && !memcmp(p->addr, addr, len))
			break;
		if (free_slot == SIZE_MAX && !p->addrlen && !p->refs)
			free_slot = i;
	}
	if (i < e->npeers)
		p->removing = false; /* added again before its release: keep it */
	if (i < e->npeers && p->valid && !p->failed) {
		*ret_peer = i;
		pthread_mutex_unlock(&e->lock);
		return 0;
	}
	if (i < e->npeers && p->valid && p->refs) {
		/* Revive, but keep the provider entry: operations naming it are
		 * still alive, failed ones perhaps with segments posted on its
		 * connection.  Removing it would close that connection under
		 * them, and libfabric 1.17's ofi_rxm then never gives them back
		 * (seen: no completion, then a crash in fi_cq_read).  They come
		 * back when the connection moves again or fails by itself; rxm
		 * replaces a connection that failed on the next post. */
		KV_DEBUG(XFER_TAG,
		         "peer %zu: added again; keeping its connection for the %u operation(s) "
		         "still naming it",
		         i, p->refs);
		p->failed = false;
		peer_unwatch_locked(e, p);
		*ret_peer = i;
		pthread_mutex_unlock(&e->lock);
		return 0;
	}
	if (i < e->npeers && p->valid) {
		/* Revive: drop the old provider entry (and its connection), and
		 * the old watch: whoever revives it watches it anew. */
		e->ops->peer_remove(e, p->prov_addr);
		p->valid = false;
		peer_unwatch_locked(e, p);
	}
	r = e->ops->peer_insert(e, addr, len, &pa);
	if (r < 0)
		goto out_unlock;
	if (i == e->npeers && free_slot != SIZE_MAX) {
		i = free_slot;
		p = &e->peers[i];
		memset(p, 0, sizeof(*p));
		memcpy(p->addr, addr, len);
		p->addrlen = len;
	} else if (i == e->npeers) {
		if (e->npeers == e->peers_cap) {
			size_t ncap = e->peers_cap ? e->peers_cap * 2 : 16;
			void *n = realloc(e->peers, ncap * sizeof(*e->peers));

			if (!n) {
				e->ops->peer_remove(e, pa);
				r = -ENOMEM;
				goto out_unlock;
			}
			e->peers = n;
			e->peers_cap = ncap;
		}
		e->npeers++;
		p = &e->peers[i];
		memset(p, 0, sizeof(*p));
		memcpy(p->addr, addr, len);
		p->addrlen = len;
	}
	p->prov_addr = pa;
	p->valid = true;
	p->failed = false;
	*ret_peer = i;
	r = 0;
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

void xfer_peer_remove(struct xfer_engine *e, xfer_peer_t peer)
{
	pthread_mutex_lock(&e->lock);
	if (peer < e->npeers && e->peers[peer].addrlen) {
		e->peers[peer].failed = true;
		e->peers[peer].removing = true;
		peer_release_locked(e, &e->peers[peer]);
	}
	pthread_mutex_unlock(&e->lock);
	wake(e);
}

static bool peer_failed(struct xfer_engine *e, xfer_peer_t peer)
{
	bool f;

	pthread_mutex_lock(&e->lock);
	f = peer >= e->npeers || !e->peers[peer].valid || e->peers[peer].failed;
	pthread_mutex_unlock(&e->lock);
	return f;
}

static void peer_mark_failed(struct xfer_engine *e, xfer_peer_t peer)
{
	pthread_mutex_lock(&e->lock);
	if (peer < e->npeers)
		e->peers[peer].failed = true;
	pthread_mutex_unlock(&e->lock);
}

/* ------------------------------------------------------------------ */
/* Memory                                                              */

int xfer_mr_reg(struct xfer_engine *e, void *buf, size_t len, unsigned access,
                struct xfer_mr **ret_mr)
{
	struct xfer_mr *mr;
	int r;

	if (!buf || len == 0 || !access ||
	    (access &
	     ~(unsigned)(XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ | XFER_ACCESS_REMOTE_WRITE)))
		return -EINVAL;
	mr = calloc(1, sizeof(*mr));
	if (!mr)
		return -ENOMEM;
	mr->engine = e;
	mr->buf = buf;
	mr->len = len;
	r = e->ops->mr_reg(e, mr, access);
	if (r < 0) {
		free(mr);
		return r;
	}
	*ret_mr = mr;
	return 0;
}

static void buf_free(void *buf, size_t alloc_len, bool huge, bool on_numa)
{
	if (huge)
		munmap(buf, alloc_len);
	else if (on_numa)
		numa_free(buf, alloc_len);
	else
		free(buf);
}

int xfer_buf_alloc(struct xfer_engine *e, size_t len, unsigned access, struct xfer_mr **ret_mr)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t alen;
	bool huge = false, on_numa = false;
	void *buf = MAP_FAILED;
	int r;

	if (len == 0 || len > SIZE_MAX - XFER_HUGE_PAGE)
		return -EINVAL;
	alen = (len + pg - 1) / pg * pg;
	if (len >= XFER_HUGE_PAGE) {
		size_t hlen = (len + XFER_HUGE_PAGE - 1) / XFER_HUGE_PAGE * XFER_HUGE_PAGE;

		buf = mmap(NULL, hlen, PROT_READ | PROT_WRITE,
		           MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
		if (buf != MAP_FAILED) {
			huge = true;
			alen = hlen;
		}
	}
	if (!huge && e->numa_node >= 0 && numa_available() >= 0) {
		buf = numa_alloc_onnode(alen, e->numa_node);
		if (buf) {
			on_numa = true;
			memset(buf, 0, alen); /* fault the pages in on that node */
		}
	}
	if (!huge && !on_numa) {
		if (posix_memalign(&buf, pg, alen))
			return -ENOMEM;
		if (alen >= XFER_HUGE_PAGE)
			madvise(buf, alen, MADV_HUGEPAGE);
		memset(buf, 0, alen);
	}
	r = xfer_mr_reg(e, buf, len, access, ret_mr);
	if (r < 0) {
		buf_free(buf, alen, huge, on_numa);
		return r;
	}
	(*ret_mr)->alloc_len = alen;
	(*ret_mr)->huge = huge;
	(*ret_mr)->numa = on_numa;
	return 0;
}

void xfer_mr_dereg(struct xfer_mr *mr)
{
	if (!mr)
		return;
	mr->engine->ops->mr_dereg(mr->engine, mr);
	if (mr->alloc_len)
		buf_free(mr->buf, mr->alloc_len, mr->huge, mr->numa);
	free(mr);
}

static void mr_dereg_fenced(struct xfer_mr *mr, int prot);

void xfer_mr_dereg_lost(struct xfer_mr *mr)
{
	mr_dereg_fenced(mr, PROT_NONE);
}

void xfer_mr_dereg_lost_ro(struct xfer_mr *mr)
{
	mr_dereg_fenced(mr, PROT_READ);
}

static void mr_dereg_fenced(struct xfer_mr *mr, int prot)
{
	struct xfer_engine *e;

	if (!mr)
		return;
	e = mr->engine;
	e->ops->mr_dereg(e, mr);
	if (!mr->alloc_len) {
		free(mr);
		return;
	}
	/* Keep the address range.  Where a peer may still write (PROT_NONE),
	 * without access: a late provider copy fails (EFAULT) instead of
	 * landing in memory that is someone else's; the provider then drops
	 * the connection, which gives the peer its operation back.  Where a
	 * peer can at most still read (PROT_READ), as read-only zero pages: a
	 * read the provider already accepted is answered, with zeros the
	 * peer has given up on.  Made inaccessible instead, the answer failed
	 * (EFAULT) and libfabric 1.17's tcp provider never told the peer: the
	 * server's read, and the range it held for it, waited for good (one
	 * range leaked per PUT that timed out over a slow link). */
	if (mmap(mr->buf, mr->alloc_len, prot,
	         MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) == MAP_FAILED) {
		KV_WARN(XFER_TAG, "cannot fence off a lost buffer of %zu bytes: %s; leaking it",
		        mr->alloc_len, strerror(errno));
		free(mr);
		return;
	}
	pthread_mutex_lock(&e->lock);
	mr->lost_next = e->lost;
	e->lost = mr;
	pthread_mutex_unlock(&e->lock);
}

/* xfer_close(), endpoint closed: nothing can reach the lost buffers now. */
static void lost_free(struct xfer_engine *e)
{
	while (e->lost) {
		struct xfer_mr *mr = e->lost;

		e->lost = mr->lost_next;
		if (mmap(mr->buf, mr->alloc_len, PROT_READ | PROT_WRITE,
		         MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED)
			buf_free(mr->buf, mr->alloc_len, mr->huge, mr->numa);
		free(mr);
	}
}

void *xfer_mr_addr(const struct xfer_mr *mr)
{
	return mr->buf;
}

size_t xfer_mr_len(const struct xfer_mr *mr)
{
	return mr->len;
}

void xfer_mr_desc(const struct xfer_mr *mr, struct xfer_desc *ret_desc)
{
	*ret_desc = mr->desc;
}

/* ------------------------------------------------------------------ */
/* Submission                                                          */

static bool range_ok(uint64_t off, uint64_t len, uint64_t limit)
{
	return off <= limit && len <= limit - off;
}

/* Cut @op into segments no larger than the chunk size.  Validates every
 * range first.  Returns the number of segments or a negative errno. */
static long build_segs(const struct xfer_engine *e, const struct xfer_op *op,
                       struct xfer_seg **ret_segs, struct xfer_seg *one, uint64_t *ret_total)
{
	uint64_t ltot = 0, rtot = 0;
	size_t li = 0, ri = 0, n = 0, cap;
	uint64_t lo = 0, ro = 0;
	struct xfer_seg *segs;

	if ((op->nlocal && !op->local) || (op->nremote && !op->remote))
		return -EINVAL;
	for (size_t i = 0; i < op->nlocal; i++) {
		const struct xfer_sge *s = &op->local[i];

		if (!s->mr || s->mr->engine != e || !range_ok(s->off, s->len, s->mr->len))
			return -EINVAL;
		if (ltot + s->len < ltot)
			return -EINVAL;
		ltot += s->len;
	}
	for (size_t i = 0; i < op->nremote; i++) {
		const struct xfer_rsge *s = &op->remote[i];

		if (!range_ok(s->off, s->len, s->desc.len) ||
		    s->off + s->len > UINT64_MAX - s->desc.addr)
			return -EINVAL;
		if (rtot + s->len < rtot)
			return -EINVAL;
		rtot += s->len;
	}
	if (ltot != rtot)
		return -EINVAL;
	*ret_total = ltot;
	if (ltot == 0) {
		*ret_segs = NULL;
		return 0;
	}

	/* Upper bound: one per chunk plus one per list boundary. */
	cap = ltot / e->chunk + op->nlocal + op->nremote + 1;
	segs = cap == 1 ? one : malloc(cap * sizeof(*segs));
	if (!segs)
		return -ENOMEM;
	while (li < op->nlocal && ri < op->nremote) {
		const struct xfer_sge *l = &op->local[li];
		const struct xfer_rsge *r = &op->remote[ri];
		uint64_t len = KV_MIN(l->len - lo, r->len - ro);

		len = KV_MIN(len, (uint64_t)e->chunk);
		if (len) {
			if (n == cap) { /* cannot happen; keeps the bound honest */
				if (segs != one)
					free(segs);
				return -EINVAL;
			}
			segs[n++] = (struct xfer_seg){.mr = l->mr,
			                              .loff = l->off + lo,
			                              .raddr = r->desc.addr + r->off + ro,
			                              .rkey = r->desc.key,
			                              .len = len};
		}
		lo += len;
		ro += len;
		if (lo == l->len) {
			li++;
			lo = 0;
		}
		if (ro == r->len) {
			ri++;
			ro = 0;
		}
	}
	*ret_segs = segs;
	return (long)n;
}

int xfer_submit(struct xfer_engine *e, const struct xfer_op *op)
{
	struct xfer_req *rq;
	long n;
	int tmo;

	if (!op || (op->opcode != XFER_WRITE && op->opcode != XFER_READ) ||
	    (op->has_imm && op->opcode != XFER_WRITE) || (!op->cb && !op->cq) ||
	    (op->cb && op->cq) || op->timeout_ms < 0)
		return -EINVAL;
	rq = calloc(1, sizeof(*rq));
	if (!rq)
		return -ENOMEM;
	n = build_segs(e, op, &rq->segs, &rq->one, &rq->total);
	if (n < 0) {
		free(rq);
		return (int)n;
	}
	rq->nsegs = (size_t)n;
	if (rq->nsegs == 0 && op->has_imm) {
		/* Immediate only: one zero-length write carries it. */
		rq->segs = &rq->one;
		rq->one = (struct xfer_seg){0};
		if (op->nremote) {
			rq->one.raddr = op->remote[0].desc.addr + op->remote[0].off;
			rq->one.rkey = op->remote[0].desc.key;
		}
		rq->nsegs = 1;
	}
	rq->opcode = op->opcode;
	rq->peer = op->peer;
	rq->has_imm = op->has_imm;
	rq->imm = op->imm;
	rq->cookie = op->cookie;
	rq->notify_settled = op->notify_settled;
	rq->cb = op->cb;
	rq->cb_arg = op->cb_arg;
	rq->cq = op->cq;
	tmo = op->timeout_ms ? op->timeout_ms : e->timeout_ms;
	rq->deadline_ns = kv_now_ns() + (uint64_t)tmo * 1000000ULL;

	pthread_mutex_lock(&e->lock);
	if (e->stopping) {
		pthread_mutex_unlock(&e->lock);
		req_free(rq);
		return -ESHUTDOWN;
	}
	if (atomic_load(&e->stuck) || atomic_load(&e->no_ep)) {
		pthread_mutex_unlock(&e->lock);
		req_free(rq);
		return -EDEADLK;
	}
	if (op->peer >= e->npeers || !e->peers[op->peer].valid || e->peers[op->peer].failed) {
		pthread_mutex_unlock(&e->lock);
		req_free(rq);
		return -ECONNRESET;
	}
	rq->prov_addr = e->peers[op->peer].prov_addr;
	e->peers[op->peer].refs++; /* until the request retires */
	if (e->submit_tail)
		e->submit_tail->next = rq;
	else
		e->submit_head = rq;
	e->submit_tail = rq;
	atomic_fetch_add(&e->st.inflight, 1);
	pthread_mutex_unlock(&e->lock);
	wake(e);
	return 0;
}

struct sync_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int status;
};

static void sync_cb(void *arg, const struct xfer_comp *c)
{
	struct sync_wait *w = arg;

	pthread_mutex_lock(&w->lock);
	w->status = c->status;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

int xfer_submit_wait(struct xfer_engine *e, const struct xfer_op *op)
{
	struct sync_wait w = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	struct xfer_op o;
	int r;

	if (!op)
		return -EINVAL;
	if (pthread_equal(pthread_self(), e->thread))
		return -EDEADLK;
	o = *op;
	o.cb = sync_cb;
	o.cb_arg = &w;
	o.cq = NULL;
	r = xfer_submit(e, &o);
	if (r < 0)
		return r;
	pthread_mutex_lock(&w.lock);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.lock);
	pthread_mutex_unlock(&w.lock);
	return w.status;
}

/* ------------------------------------------------------------------ */
/* Progress thread                                                     */

static void live_append(struct xfer_engine *e, struct xfer_req *rq)
{
	rq->next = NULL;
	rq->prev = e->active_tail;
	if (e->active_tail)
		e->active_tail->next = rq;
	else
		e->active_head = rq;
	e->active_tail = rq;
}

static void live_unlink(struct xfer_engine *e, struct xfer_req *rq)
{
	if (rq->prev)
		rq->prev->next = rq->next;
	else
		e->active_head = rq->next;
	if (rq->next)
		rq->next->prev = rq->prev;
	else
		e->active_tail = rq->prev;
}

/* Free @rq once nothing refers to it any more. */
static void req_maybe_retire(struct xfer_engine *e, struct xfer_req *rq)
{
	if (rq->completed && rq->posted == 0) {
		if (rq->owes_settled)
			settle(rq);
		live_unlink(e, rq);
		pthread_mutex_lock(&e->lock);
		if (rq->peer < e->npeers && e->peers[rq->peer].refs) {
			e->peers[rq->peer].refs--;
			peer_release_locked(e, &e->peers[rq->peer]);
		}
		pthread_mutex_unlock(&e->lock);
		req_free(rq);
	}
}

static bool is_conn_error(int status)
{
	switch (-status) {
	case ECONNRESET:
	case ECONNREFUSED:
	case ECONNABORTED:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ENOTCONN:
	case EPIPE:
	case ETIMEDOUT:
	case EIO:
		return true;
	default:
		return false;
	}
}

void xfer_seg_done(struct xfer_engine *e, struct xfer_post *ctx, int status)
{
	struct xfer_req *rq = ctx->req;

	rq->posted--;
	if (!rq->completed)
		e->posted--;
	ctx->req = NULL;
	ctx->next_free = e->free_posts;
	e->free_posts = ctx;
	if (status == 0) {
		rq->done_segs++;
		rq->bytes += ctx->len;
		if (rq->done_segs == rq->nsegs)
			deliver(e, rq, 0);
	} else if (!rq->completed) {
		KV_DEBUG(XFER_TAG, "%s to peer %llu failed: %s",
		         rq->opcode == XFER_WRITE ? "write" : "read", (unsigned long long)rq->peer,
		         strerror(-status));
		if (is_conn_error(status))
			peer_mark_failed(e, rq->peer);
		deliver(e, rq, status);
	}
	req_maybe_retire(e, rq);
}

void xfer_imm_arrived(struct xfer_engine *e, uint32_t imm)
{
	atomic_fetch_add(&e->st.imm_received, 1);
	if (e->opts.on_imm)
		e->opts.on_imm(e->opts.imm_arg, imm);
}

/* A free segment context: from the pool, or a new one while zombies (posts
 * of failed operations the provider still holds) have taken the pool's.
 * Stays on the free list for reuse; freed at close. */
static struct xfer_post *post_ctx_get(struct xfer_engine *e)
{
	struct xfer_post *ctx;

	if (e->free_posts)
		return e->free_posts;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return NULL;
	ctx->heap = true;
	ctx->heap_next = e->heap_posts;
	e->heap_posts = ctx;
	e->free_posts = ctx;
	return ctx;
}

/* Post what can be posted.  Returns the number of segments posted. */
static int post_ready(struct xfer_engine *e)
{
	struct xfer_req *rq, *next;
	int did = 0;

	for (rq = e->active_head; rq && e->posted < e->max_inflight; rq = next) {
		next = rq->next;
		while (!rq->completed && rq->next_seg < rq->nsegs && e->posted < e->max_inflight) {
			bool last = rq->next_seg == rq->nsegs - 1;
			bool imm = last && rq->has_imm;
			struct xfer_post *ctx;
			int r;

			/* The immediate goes last, after every byte has landed. */
			if (imm && rq->posted)
				break;
			if (peer_gone(e, rq->peer)) {
				deliver(e, rq, -ECONNRESET);
				break;
			}
			ctx = post_ctx_get(e);
			if (!ctx)
				return did; /* out of memory: retry on the next pass */
			ctx->req = rq;
			ctx->len = rq->segs[rq->next_seg].len;
			prov_enter(e);
			if (e->test_stall_ms &&
			    ctx->len > 4096) { /* test hook: a value's post hangs */
				usleep(e->test_stall_ms * 1000);
				e->test_stall_ms = 0;
			}
			r = e->ops->post(e, rq->opcode, rq->prov_addr, &rq->segs[rq->next_seg], imm,
			                 rq->imm, ctx);
			prov_leave(e);
			if (r == -EAGAIN)
				break; /* this peer's queue is full: serve the others */
			if (r < 0) {
				ctx->req = NULL;
				deliver(e, rq, r);
				break;
			}
			e->free_posts = ctx->next_free;
			ctx->next_free = NULL;
			rq->next_seg++;
			rq->posted++;
			e->posted++;
			did++;
		}
		req_maybe_retire(e, rq);
	}
	return did;
}

/* Has the process at the other end of @rq exited?  Then it can never touch
 * our memory again, whatever the provider still holds (shm returns nothing
 * posted to a dead peer). */
static bool peer_is_dead(struct xfer_engine *e, const struct xfer_req *rq)
{
	return peer_gone(e, rq->peer) || (e->ops->peer_dead && e->ops->peer_dead(e, rq->prov_addr));
}

/* Fail what is past its deadline or aimed at a failed peer, and settle
 * what only a dead peer still held; returns the earliest remaining
 * deadline. */
static uint64_t check_deadlines(struct xfer_engine *e, uint64_t now)
{
	struct xfer_req *rq, *next;
	uint64_t earliest = UINT64_MAX;

	for (rq = e->active_head; rq; rq = next) {
		next = rq->next;
		if (rq->completed) {
			if (rq->owes_settled && peer_is_dead(e, rq))
				settle(rq);
			continue;
		}
		if (now >= rq->deadline_ns) {
			KV_DEBUG(XFER_TAG,
			         "%s to peer %llu: deadline passed with %u segments posted",
			         rq->opcode == XFER_WRITE ? "write" : "read",
			         (unsigned long long)rq->peer, rq->posted);
			peer_mark_failed(e, rq->peer);
			deliver(e, rq, -ETIMEDOUT);
		} else if (peer_failed(e, rq->peer)) {
			deliver(e, rq, -ECONNRESET);
		} else if (rq->deadline_ns < earliest) {
			earliest = rq->deadline_ns;
		}
		req_maybe_retire(e, rq);
	}
	return earliest;
}

/* A peer whose process has died while segments of ours are still posted
 * to it; UINT64_MAX if none (with the number of such segments). */
static xfer_peer_t dead_peer_posted(struct xfer_engine *e, unsigned *ret_segs)
{
	for (struct xfer_req *rq = e->active_head; rq; rq = rq->next) {
		if (rq->posted && peer_is_dead(e, rq)) {
			*ret_segs = rq->posted;
			return rq->peer;
		}
	}
	return UINT64_MAX;
}

/*
 * The provider holds every completion behind segments posted to @dead,
 * a peer that died, and never gives them back (ops->dead_peer_blocks).
 * Waiting would fail every operation, to every peer, at its deadline and
 * go on doing so; so open the endpoint anew.  Every operation not yet
 * completed fails with -ECONNRESET, what was posted is forgotten (so its
 * memory is settled), and every peer is marked failed, as after a broken
 * connection: callers add it again, with our new address.  kv-server does
 * that when a client says Hello again, which a failed op makes it do.
 */
static void ep_reset(struct xfer_engine *e, xfer_peer_t dead, unsigned segs)
{
	struct xfer_req *rq, *next, *sub;
	unsigned failed = 0;
	int r;

	pthread_mutex_lock(&e->lock);
	sub = e->submit_head; /* they name addresses of the old endpoint */
	e->submit_head = e->submit_tail = NULL;
	for (size_t i = 0; i < e->npeers; i++) {
		if (e->peers[i].valid) {
			e->peers[i].valid = false; /* not in the new address vector */
			e->peers[i].failed = true;
		}
	}
	prov_enter(e);
	r = e->ops->reset(e);
	prov_leave(e);
	pthread_mutex_unlock(&e->lock);
	for (rq = sub; rq; rq = next) {
		next = rq->next;
		live_append(e, rq);
	}

	/* Nothing is at the provider any more: every context is free. */
	e->free_posts = NULL;
	for (unsigned i = 0; i < e->max_inflight; i++) {
		e->post_pool[i].req = NULL;
		e->post_pool[i].next_free = e->free_posts;
		e->free_posts = &e->post_pool[i];
	}
	for (struct xfer_post *ctx = e->heap_posts; ctx; ctx = ctx->heap_next) {
		ctx->req = NULL;
		ctx->next_free = e->free_posts;
		e->free_posts = ctx;
	}
	e->posted = 0;
	for (rq = e->active_head; rq; rq = next) {
		next = rq->next;
		rq->posted = 0; /* so nothing is delivered unsettled */
		if (!rq->completed) {
			deliver(e, rq, -ECONNRESET);
			failed++;
		}
		req_maybe_retire(e, rq); /* settles what was owed */
	}
	atomic_fetch_add(&e->st.resets, 1);
	if (r < 0) {
		atomic_store(&e->no_ep, true);
		KV_ERR(XFER_TAG,
		       "peer %llu died with %u segment(s) posted to it, which provider %s never "
		       "completes; opening a new endpoint failed (%s): no transfer can run, "
		       "restart this process",
		       (unsigned long long)dead, segs, e->prov_name, strerror(-r));
		return;
	}
	KV_WARN(XFER_TAG,
	        "peer %llu died with %u segment(s) posted to it, which provider %s never "
	        "completes (shm without CMA), holding every later completion behind them: "
	        "opened a new endpoint; %u operation(s) failed, every peer must be added "
	        "again",
	        (unsigned long long)dead, segs, e->prov_name, failed);
}

static bool take_submissions(struct xfer_engine *e)
{
	struct xfer_req *rq, *next;
	bool stop;

	pthread_mutex_lock(&e->lock);
	rq = e->submit_head;
	e->submit_head = e->submit_tail = NULL;
	stop = e->stopping;
	pthread_mutex_unlock(&e->lock);
	for (; rq; rq = next) {
		next = rq->next;
		live_append(e, rq);
		if (rq->nsegs == 0) /* nothing to move: complete at once */
			deliver(e, rq, 0);
		req_maybe_retire(e, rq);
	}
	return stop;
}

/*
 * The watchdog.  The progress thread is the only one that calls into the
 * provider for posts and progress, and it also enforces every deadline; if
 * a provider call never returns (libfabric 1.17 shm spinning on a lock a
 * dead peer held in its region), no deadline fires and every transfer
 * waits forever.  This thread notices a provider call older than twice the
 * deadline (at least 10 s), says so once, and from then on xfer_submit()
 * fails at once with -EDEADLK instead of queueing behind it.  Every tick
 * it asks the back-end to undo what a dead peer may have left held
 * (ops->unwedge): in our own resources always (shm: our region's lock,
 * which would block the next post to us), and in the peer's once a call
 * is a second old (shm: the lock of a dead peer's region), which frees
 * the thread in the case seen here; if the call does return, the engine
 * carries on.
 */
static void watchdog_unwedge(struct xfer_engine *e, bool stuck)
{
	int n;

	pthread_mutex_unlock(&e->wd_lock); /* never both: xfer_close() takes them in turn */
	n = e->ops->unwedge(e, stuck);
	pthread_mutex_lock(&e->wd_lock);
	if (n > 0)
		atomic_fetch_add(&e->st.locks_released, (unsigned)n);
}

static void *watchdog_main(void *arg)
{
	struct xfer_engine *e = arg;
	uint64_t limit = KV_MAX((uint64_t)e->timeout_ms * 2, 10000) * 1000000ULL;
	const uint64_t unwedge_after = 1000000000ULL; /* no shm post takes a second */
	uint64_t last_calls = 0, since = 0;           /* when the current call was first seen */

	pthread_mutex_lock(&e->wd_lock);
	while (!e->wd_stop) {
		uint64_t calls = atomic_load_explicit(&e->provider_calls, memory_order_relaxed);
		uint64_t now = kv_now_ns();
		bool stuck;

		if (atomic_load_explicit(&e->in_provider, memory_order_relaxed) &&
		    calls == last_calls) {
			if (!since)
				since = now;
		} else {
			since = 0;
			last_calls = calls;
		}
		if (e->ops->unwedge)
			watchdog_unwedge(e, since && now - since > unwedge_after);
		stuck = since && now - since > limit;
		if (stuck && !atomic_load(&e->stuck)) {
			atomic_store(&e->stuck, true);
			atomic_fetch_add(&e->st.stuck_events, 1);
			KV_ERR(XFER_TAG,
			       "provider %s has not returned from a call for %llu s; transfers "
			       "cannot complete until it does (with shm: a peer process may have "
			       "died holding a lock in its region); new transfers fail at once",
			       e->prov_name, (unsigned long long)((now - since) / 1000000000ULL));
		} else if (!stuck && atomic_load(&e->stuck)) {
			atomic_store(&e->stuck, false);
			KV_WARN(XFER_TAG, "provider %s returned; transfers move again",
			        e->prov_name);
		}
		kv_cond_wait_until(&e->wd_cond, &e->wd_lock,
		                   kv_now_ms() + 200); /* or xfer_close() */
	}
	pthread_mutex_unlock(&e->wd_lock);
	return NULL;
}

/* Around each provider call of the progress thread, for the watchdog: a
 * flag and a counter, no clock read on the hot path. */
static inline void prov_enter(struct xfer_engine *e)
{
	atomic_store_explicit(&e->in_provider, true, memory_order_relaxed);
}

static inline void prov_leave(struct xfer_engine *e)
{
	atomic_store_explicit(&e->in_provider, false, memory_order_relaxed);
	atomic_fetch_add_explicit(&e->provider_calls, 1, memory_order_relaxed);
}

static void *progress_main(void *arg)
{
	struct xfer_engine *e = arg;
	uint64_t next_check = 0, earliest = UINT64_MAX, next_dead_check = 0;
	unsigned spins = 0;

	for (;;) {
		enum xfer_target_progress tp;
		uint64_t now, v;
		bool busy;
		int did, fd, tmo;
		struct pollfd pfd[2];
		int nfd = 1;

		if (take_submissions(e))
			break;
		did = post_ready(e);
		prov_enter(e);
		did += e->ops->progress(e);
		prov_leave(e);
		now = kv_now_ns();
		if (now >= next_check || now >= earliest) {
			earliest = check_deadlines(e, now);
			next_check = now + 1000000ULL;
		}
		if (e->active_head && now >= next_dead_check && e->ops->reset &&
		    e->ops->dead_peer_blocks && e->ops->dead_peer_blocks(e)) {
			unsigned segs = 0;
			xfer_peer_t dead = dead_peer_posted(e, &segs);

			next_dead_check = now + 50000000ULL; /* a kill() per op: not every tick */
			if (dead != UINT64_MAX) {
				ep_reset(e, dead, segs);
				continue;
			}
		}
		if (did) {
			spins = 0;
			continue;
		}
		/* A peer's RMA into us needs our eager progress only where the
		 * provider moves its bytes in the target (shm without CMA); on tcp
		 * the CQ's wait fd wakes us, and shm with CMA copies in the
		 * initiator, so there an expected transfer is no reason to spin:
		 * on two CPUs the spinning took CPU from the copy itself. */
		tp = e->ops->target_progress(e);
		busy = e->active_head || (atomic_load(&e->expect) > 0 && tp == XFER_TP_SPIN);
		if (busy && spins < XFER_SPIN_LIMIT) {
			spins++;
			sched_yield();
			continue;
		}
		spins = 0;
		/* Sleep until the provider, a submitter or a deadline needs us. */
		if (busy || tp != XFER_TP_NONE)
			tmo = 1;
		else
			tmo = 100;
		fd = e->ops->wait_fd(e);
		if (fd == -EAGAIN)
			continue;
		pfd[0] = (struct pollfd){.fd = e->wake_fd, .events = POLLIN};
		if (fd >= 0)
			pfd[nfd++] = (struct pollfd){.fd = fd, .events = POLLIN};
		if (poll(pfd, nfd, tmo) > 0 && (pfd[0].revents & POLLIN)) {
			if (read(e->wake_fd, &v, sizeof(v)) < 0) {
				/* spurious: nothing to drain */
			}
		}
	}
	return NULL;
}
