/* SPDX-License-Identifier: MIT */
/*
 * Transfer engine internals: the generic layer (xfer.c: submission, chunking,
 * deadlines, completion delivery, progress thread) and the back-end ops table
 * it drives.  The libfabric back-end is xfer_ofi.c; a raw-verbs back-end
 * would fill the same table.
 */
#ifndef KVFS_XFER_I_H
#define KVFS_XFER_I_H

#include <pthread.h>
#include <stdatomic.h>

#include "kvfs/xfer.h"

struct xfer_req;

/* One provider operation: a contiguous local range <-> a contiguous remote
 * range, at most chunk_size bytes. */
struct xfer_seg {
	struct xfer_mr *mr; /* local region */
	uint64_t loff;      /* offset in mr */
	uint64_t raddr;     /* remote address (desc.addr + off) */
	uint64_t rkey;
	uint64_t len;
};

/*
 * Context of one posted segment.  The back-end hands it to the provider and
 * gives it back through xfer_seg_done().  Must start with room for the
 * provider's own context (FI_CONTEXT2).
 */
struct xfer_post {
	void *prov_ctx[8];    /* struct fi_context2, owned by the provider while posted */
	struct xfer_req *req; /* operation this segment belongs to */
	struct xfer_post *next_free;
	struct xfer_post *heap_next; /* heap: the engine's list of them all */
	uint64_t len;
	bool heap; /* allocated past the pool (see post_ctx_get) */
};

enum xfer_target_progress {
	XFER_TP_NONE,
	XFER_TP_POLL,
	XFER_TP_SPIN,
};

struct xfer_backend_ops {
	const char *name;
	/* Open the provider for @opts; fills engine->prov_name/domain_name. */
	int (*open)(struct xfer_engine *e, const struct xfer_opts *opts);
	void (*close)(struct xfer_engine *e);
	int (*addr)(const struct xfer_engine *e, void *buf, size_t *len);
	int (*peer_insert)(struct xfer_engine *e, const void *addr, size_t len, uint64_t *ret);
	void (*peer_remove)(struct xfer_engine *e, uint64_t prov_addr);
	/* Register; sets mr->desc (addr, len, key) and mr->prov. */
	int (*mr_reg)(struct xfer_engine *e, struct xfer_mr *mr, unsigned access);
	void (*mr_dereg)(struct xfer_engine *e, struct xfer_mr *mr);
	/* Post one segment.  0, -EAGAIN (queue full: retry after progress), or error. */
	int (*post)(struct xfer_engine *e, enum xfer_opcode op, uint64_t peer,
	            const struct xfer_seg *seg, bool has_imm, uint32_t imm, struct xfer_post *ctx);
	/* Reap provider completions; calls xfer_seg_done()/xfer_imm_arrived().
	 * Returns how many were reaped. */
	int (*progress)(struct xfer_engine *e);
	/* fd readable when progress has work, or -1 (then the engine polls). */
	int (*wait_fd)(struct xfer_engine *e);
	/* How a peer's RMA into us depends on our progress: XFER_TP_NONE (the
	 * wait fd tells us), XFER_TP_POLL (only for what rides in our queue,
	 * e.g. immediate data: a poll every millisecond will do) or
	 * XFER_TP_SPIN (it moves no byte without us: poll eagerly while a
	 * transfer is expected). */
	enum xfer_target_progress (*target_progress)(struct xfer_engine *e);
	/* Every watchdog tick (200 ms): undo what a dead peer left held.
	 * Always in our own resources (shm: our region's lock, held by a peer
	 * that died posting to us); when @stuck (the progress thread has been
	 * inside one provider call for a second), also in the peer's (shm:
	 * the lock of its region).  Called without the engine lock; takes it
	 * itself, and may wait up to a second without it.  Returns how many
	 * things it released.  Optional. */
	int (*unwedge)(struct xfer_engine *e, bool stuck);
	/* Is the process behind this peer known to have exited?  Optional. */
	bool (*peer_dead)(struct xfer_engine *e, uint64_t prov_addr);
	/* Does a peer that dies with segments posted to it hold every later
	 * completion behind them, for good?  Then the engine resets.  Optional. */
	bool (*dead_peer_blocks)(struct xfer_engine *e);
	/* Open the endpoint anew: everything posted is forgotten, every peer
	 * must be inserted again, our address changes.  Progress thread, with
	 * the engine lock held.  Optional. */
	int (*reset)(struct xfer_engine *e);
};

extern const struct xfer_backend_ops xfer_ofi_ops;

struct xfer_mr {
	struct xfer_engine *engine;
	void *buf;
	size_t len;
	struct xfer_desc desc;     /* what peers get */
	void *prov;                /* back-end handle (struct fid_mr *) */
	void *prov_desc;           /* local descriptor for posts (fi_mr_desc) */
	size_t alloc_len;          /* > 0 when the engine allocated buf (xfer_buf_alloc) */
	bool huge;                 /* buf is backed by huge pages (mmap) */
	bool numa;                 /* buf came from numa_alloc_onnode */
	struct xfer_mr *lost_next; /* engine's list of lost regions (xfer_mr_dereg_lost) */
};

/* Called by back-ends from progress(): a posted segment finished. */
void xfer_seg_done(struct xfer_engine *e, struct xfer_post *ctx, int status);
/* Called by back-ends from progress(): a peer's write with immediate landed. */
void xfer_imm_arrived(struct xfer_engine *e, uint32_t imm);

struct xfer_engine {
	const struct xfer_backend_ops *ops;
	void *be; /* back-end state */
	struct xfer_opts opts;
	char prov_name[64];
	char domain_name[64];
	int numa_node;        /* of the NIC, -1 unknown */
	int cpu;              /* progress thread CPU asked for, -1 none */
	char placement[64];   /* where the progress thread runs, for logs */
	struct xfer_mr *lost; /* buffers made inaccessible until close (lock) */
	size_t chunk;
	unsigned max_inflight;
	int timeout_ms;

	pthread_t thread;
	pthread_t watchdog;                  /* see watchdog_main() */
	bool watchdog_up;                    /* started: join it at close */
	atomic_bool in_provider;             /* progress thread inside a provider call */
	atomic_uint_fast64_t provider_calls; /* provider calls returned: the watchdog's heartbeat */
	atomic_uint nwatched;                /* peers with a gone_fd (xfer_peer_watch) */
	atomic_bool stuck;                   /* the provider call has not returned for too long */
	atomic_bool no_ep;                   /* a reset could not open a new endpoint: for good */
	pthread_mutex_t wd_lock;             /* wd_stop, and wd_cond's sleep */
	pthread_cond_t wd_cond;              /* xfer_close() wakes the watchdog at once */
	bool wd_stop;                        /* xfer_close(): watchdog, exit */
	unsigned test_stall_ms; /* $KVFS_XFER_TEST_STALL_MS: the first post of more than 4 KiB
	                         * sleeps this long inside the provider window (a hanging
	                         * provider call, for tests; a HELLO's engine proof is
	                         * smaller and passes) */
	pthread_mutex_t lock;   /* submitq, peers, stopping */
	struct xfer_req *submit_head, *submit_tail;
	int wake_fd; /* eventfd: submissions, close */
	bool stopping;
	atomic_int expect; /* xfer_expect() balance */

	/* Peers: index is the xfer_peer_t handle.  Guarded by lock. */
	struct xfer_peer_ent *peers;
	size_t npeers, peers_cap;

	/* Progress-thread only. */
	struct xfer_req *active_head, *active_tail; /* FIFO of operations with work */
	struct xfer_post *post_pool, *free_posts;
	struct xfer_post *heap_posts; /* every context past the pool (heap_next) */
	unsigned posted;              /* segments at the provider */

	struct {
		atomic_uint_fast64_t ops_done, ops_failed, ops_timedout;
		atomic_uint_fast64_t bytes_written, bytes_read, imm_received, inflight;
		atomic_uint_fast64_t stuck_events, locks_released, resets;
	} st;
};

struct xfer_peer_ent {
	uint8_t addr[XFER_ADDR_MAX];
	size_t addrlen;
	uint64_t prov_addr; /* fi_addr_t */
	bool valid;         /* inserted in the provider */
	bool failed;        /* an operation to it failed: refuse new ones */
	bool removing;      /* xfer_peer_remove()d: released when refs drops to 0 */
	unsigned refs;      /* requests alive (submitted, not yet retired) naming it */
	int gone_fd;        /* xfer_peer_watch(): readable once the peer has exited; 0 = none */
};

#endif /* KVFS_XFER_I_H */
