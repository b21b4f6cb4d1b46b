/* SPDX-License-Identifier: MIT */
/*
 * kvfs transfer engine: one-sided RDMA WRITE/READ between registered memory
 * regions of two processes, over libfabric (tcp;ofi_rxm, shm, verbs, efa).
 *
 * Model
 * -----
 * An engine owns one fabric endpoint, one completion queue, one address
 * vector and one progress thread.  Peers exchange their engine addresses
 * (opaque bytes, xfer_addr()) and memory descriptors (struct xfer_desc, a
 * plain struct safe to serialize) over some other channel -- in kvfs the
 * protobuf control channel -- and then move bytes with xfer_submit().
 *
 * Threads and completions
 * -----------------------
 * xfer_submit() may be called from any thread; it never blocks on the
 * network.  The progress thread posts the work to the provider, drives
 * provider progress, and delivers exactly one completion per operation:
 * either a callback (run on the progress thread: it must not block and must
 * not call xfer_close()), or an entry in a struct xfer_cq whose eventfd
 * becomes readable so an epoll loop can reap it with xfer_cq_poll().
 *
 * Deadlines
 * ---------
 * Every operation has a deadline (op->timeout_ms, or the engine default).
 * An operation that cannot finish -- peer dead or unreachable, provider
 * without loopback -- completes with a negative errno (-ETIMEDOUT,
 * -ECONNRESET, -EHOSTUNREACH, ...) no later than its deadline plus one
 * progress tick.  After an operation ended in an error, a late provider
 * completion for it is swallowed; the engine stops using the peer (later
 * submits to it fail with -ECONNRESET) until xfer_peer_add() adds it again.
 * The local memory of an operation that timed out may still be touched by
 * the provider until the peer's connection is torn down (its completion
 * says so: xfer_comp.unsettled); callers drop such buffers with
 * xfer_mr_dereg_lost() instead of reusing them, or ask for a second
 * completion once the provider has given the memory back
 * (op->notify_settled; not delivered at xfer_close()).
 *
 * Reset
 * -----
 * Where a peer that dies with segments posted to it would hold every later
 * completion behind them for good (libfabric 1.17's shm without CMA), the
 * engine opens its endpoint anew once it sees such a peer dead: every
 * operation not yet completed fails with -ECONNRESET, every peer is marked
 * failed (add it again, as after any failure), and xfer_addr() changes, so
 * peers must be given the new address.  xfer_stats.resets counts it.
 *
 * Safety
 * ------
 * A local range outside its registered region, or a remote range outside the
 * descriptor it names, is refused with -EINVAL before the provider sees it.
 * The provider in turn checks the remote key and range against what the
 * peer really registered, so a forged descriptor yields an error completion,
 * never a write outside the peer's region.
 */
#ifndef KVFS_XFER_H
#define KVFS_XFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h> /* pid_t */

#ifdef __cplusplus
extern "C" {
#endif

struct xfer_engine;
struct xfer_mr;
struct xfer_cq;

/* Largest engine address, in bytes (efa: 32, verbs: ~40, tcp/shm: <= 64). */
#define XFER_ADDR_MAX 128

/* Memory access rights for xfer_mr_reg(). */
enum xfer_access {
	XFER_ACCESS_LOCAL = 1 << 0,        /* source/destination of own ops */
	XFER_ACCESS_REMOTE_READ = 1 << 1,  /* peers may READ from it */
	XFER_ACCESS_REMOTE_WRITE = 1 << 2, /* peers may WRITE into it */
};

struct xfer_opts {
	const char *provider;  /* "auto" (efa, verbs, tcp), "tcp", "shm", "verbs", "efa" */
	const char *domain;    /* NIC / libfabric domain name, NULL = first usable */
	const char *node;      /* local address to bind (tcp/verbs), NULL = provider's choice */
	int cpu;               /* progress-thread CPU, -1 = a CPU on the NIC's NUMA node */
	int timeout_ms;        /* default operation deadline, 0 = 10000 */
	size_t chunk_size;     /* split transfers into chunks of this size, 0 = 1 MiB */
	unsigned max_inflight; /* provider operations in flight, 0 = 64 */
	/* Called on the progress thread when a peer's WRITE with immediate data
	 * has landed in our memory (all of its bytes are visible).  May be NULL. */
	void (*on_imm)(void *arg, uint32_t imm);
	void *imm_arg;
};

/* Fill @opts with defaults (provider "auto", cpu -1, everything else 0). */
void xfer_opts_init(struct xfer_opts *opts);

/*
 * Open an engine.  Logs (at debug) which provider, domain and CPU were
 * chosen and why; callers report xfer_provider()/xfer_domain() to users.  Returns 0 and
 * *ret_engine, or a negative errno: -ENODEV when no provider matches the request, -ELIBACC when
 * libfabric itself cannot be loaded (topo_libfabric_load()), -ENOMEM, or the provider's error.
 */
int xfer_open(const struct xfer_opts *opts, struct xfer_engine **ret_engine);

/* Why an engine call failed with @err (negative errno), for people: its
 * strerror(), or what to do when libfabric cannot be loaded (-ELIBACC). */
const char *xfer_strerror(int err);

/* Stop the progress thread, fail every pending operation with -ECANCELED
 * (their completions are delivered before this returns), and free the
 * engine.  All memory regions must have been deregistered, except those a
 * failed operation's segments may still use (xfer_comp.unsettled, no
 * settled completion yet): while any segment is still at the provider,
 * closing the endpoint crashed libfabric 1.17's tcp;ofi_rxm, so the
 * provider, those regions and the engine are left to the process's exit
 * (a warning says so).  Accepts NULL. */
void xfer_close(struct xfer_engine *engine);

/* libfabric provider name in use ("tcp;ofi_rxm", "shm", "efa", "verbs;ofi_rxm"). */
const char *xfer_provider(const struct xfer_engine *engine);
/* Domain (NIC) name in use ("lo", "eth0", "mlx5_0", "shm"). */
const char *xfer_domain(const struct xfer_engine *engine);
/* Largest single provider operation the engine will post (chunk size). */
size_t xfer_chunk_size(const struct xfer_engine *engine);

/* Copy the engine's address into @buf (capacity *@len); sets *@len.
 * Returns 0, -ENOSPC (then *@len is the size needed) or -ENOTCONN (a reset
 * could not open a new endpoint).  Ask again after a reset (see above). */
int xfer_addr(struct xfer_engine *engine, void *buf, size_t *len);

/*
 * The local process an engine address names, for providers whose peers
 * share this host (shm: "fi_shm://PID:..."), so that a caller can check it
 * against what it knows of the peer before adding it.  Returns 0 and
 * *ret_pid, -ENOENT when the provider's addresses name no process (tcp,
 * verbs, efa), -EINVAL when @addr is not an address of this provider.
 */
int xfer_addr_pid(const struct xfer_engine *engine, const void *addr, size_t len, pid_t *ret_pid);

typedef uint64_t xfer_peer_t;

/* Add a peer from the address bytes it sent.  Adding the same address twice
 * returns the same handle (and revives a peer that was marked failed). */
int xfer_peer_add(struct xfer_engine *engine, const void *addr, size_t len, xfer_peer_t *ret_peer);

/*
 * Tell the engine how to see that @peer is gone: @fd polls readable once the
 * peer's process has exited (a pidfd; shm peers, which share this host).
 * Before each segment it posts to the peer the engine polls @fd; once
 * readable, the peer is marked failed and nothing more is posted to it (a
 * post into a dead shm peer can wait forever on a lock the peer held when
 * it died).  The engine owns @fd from here on, also on error, and closes it
 * when the peer is released.  0, or -EINVAL for an unknown peer.
 */
int xfer_peer_watch(struct xfer_engine *engine, xfer_peer_t peer, int fd);

/* Forget a peer: operations to it still pending complete with an error
 * (-ECONNRESET) and new ones are refused.  Once none of them is left, its
 * provider entry is released (shm: the mapping of the peer's region; tcp:
 * its connection) and the handle may be given to a new peer.  Every peer a
 * long-running process adds must be removed when it is done with it, or
 * the entries accumulate. */
void xfer_peer_remove(struct xfer_engine *engine, xfer_peer_t peer);

/*
 * Remote memory descriptor: what a process tells its peer about one of its
 * registered regions.  Plain data in host byte order; serialize the fields.
 */
struct xfer_desc {
	uint64_t addr; /* address the peer uses in RMA (virtual or offset, per provider) */
	uint64_t len;  /* bytes the region spans */
	uint64_t key;  /* remote protection key */
};

/*
 * Register @len bytes at @buf.  The engine does not own @buf.  Returns 0 and
 * *ret_mr, -EINVAL for a bad range or access mask, or the provider's error.
 */
int xfer_mr_reg(struct xfer_engine *engine, void *buf, size_t len, unsigned access,
                struct xfer_mr **ret_mr);

/*
 * Allocate and register @len bytes: page aligned, on the NUMA node of the
 * engine's NIC, backed by 2 MiB huge pages when the system has them free
 * (falls back to normal pages), zero filled.  xfer_mr_dereg() frees it.
 */
int xfer_buf_alloc(struct xfer_engine *engine, size_t len, unsigned access,
                   struct xfer_mr **ret_mr);

/* Deregister (and free what xfer_buf_alloc() allocated).  No operation may
 * still use the region.  Accepts NULL. */
void xfer_mr_dereg(struct xfer_mr *mr);
/* Deregister a region whose fate is unknown: a peer's transfer into or out
 * of it outlived a deadline or a lost connection.  A software provider (tcp,
 * shm) checks the key when a transfer message begins, not for each byte, so
 * the message under way can keep landing after deregistration.  Memory from
 * xfer_buf_alloc() is therefore not freed but made inaccessible, address
 * range kept, until xfer_close(): late bytes fail in the provider instead of
 * landing in memory reused for something else.  Caller memory (xfer_mr_reg)
 * cannot be fenced off: do not expose memory you will reuse.  Accepts NULL. */
void xfer_mr_dereg_lost(struct xfer_mr *mr);
/* The same for a region a peer can at most still read (the source of a
 * transfer that outlived its deadline, never the destination of one): its
 * range becomes read-only zeros, so a read the provider already accepted
 * is still answered and the peer's operation completes. */
void xfer_mr_dereg_lost_ro(struct xfer_mr *mr);

void *xfer_mr_addr(const struct xfer_mr *mr);
size_t xfer_mr_len(const struct xfer_mr *mr);
/* Descriptor to hand to peers. */
void xfer_mr_desc(const struct xfer_mr *mr, struct xfer_desc *ret_desc);

/* A local piece of an operation: @len bytes at @off inside @mr. */
struct xfer_sge {
	struct xfer_mr *mr;
	uint64_t off;
	uint64_t len;
};

/* A remote piece: @len bytes at @off inside the peer's region @desc. */
struct xfer_rsge {
	struct xfer_desc desc;
	uint64_t off;
	uint64_t len;
};

enum xfer_opcode {
	XFER_WRITE = 1, /* local -> remote */
	XFER_READ = 2,  /* remote -> local */
};

/* One completion. */
struct xfer_comp {
	uint64_t cookie; /* op->cookie */
	int status;      /* 0 or a negative errno */
	uint64_t bytes;  /* bytes moved (all of them on success) */
	/* status < 0 while some segments are still at the provider: it may
	 * still read or write the op's local memory (a peer that was paused
	 * past the deadline sends its data late).  With op->notify_settled a
	 * second completion follows, with settled set, once none is left. */
	bool unsettled;
	bool settled; /* that second completion: the local memory is free */
};

typedef void (*xfer_cb_t)(void *arg, const struct xfer_comp *comp);

/*
 * One transfer.  The local and remote lists are walked side by side: their
 * total lengths must be equal, and bytes are matched in order (a KV block
 * table is a list of pages on either side).  The lists are copied by
 * xfer_submit(); the memory they name must stay registered until completion.
 */
struct xfer_op {
	enum xfer_opcode opcode;
	xfer_peer_t peer;
	const struct xfer_sge *local;
	size_t nlocal;
	const struct xfer_rsge *remote;
	size_t nremote;
	bool has_imm; /* WRITE only: deliver @imm to the peer's on_imm after all bytes land */
	uint32_t imm;
	int timeout_ms; /* 0 = engine default */
	/* Deliver a second completion (settled) after an unsettled one: for
	 * callers that must not reuse the local memory before the provider
	 * has given it back (kv-server's arena). */
	bool notify_settled;
	uint64_t cookie;
	/* Exactly one of these receives the completion. */
	xfer_cb_t cb;
	void *cb_arg;
	struct xfer_cq *cq;
};

/*
 * Queue @op.  Returns 0 (exactly one completion will follow) or a negative
 * errno and no completion: -EINVAL (bad ranges, lengths that differ, opcode),
 * -ECONNRESET (peer failed), -ENOMEM, -ESHUTDOWN (engine closing), -EDEADLK
 * (the progress thread has been stuck inside one provider call for longer
 * than twice the deadline, at least 10 s: nothing queued now could move;
 * logged once, and counted in xfer_stats.stuck; or, for good, a reset
 * could not open a new endpoint).
 */
int xfer_submit(struct xfer_engine *engine, const struct xfer_op *op);

/* Submit and wait for the completion (not from the progress thread).
 * Returns the completion status. */
int xfer_submit_wait(struct xfer_engine *engine, const struct xfer_op *op);

/* Completion queue for epoll users: any thread may reap it. */
int xfer_cq_create(struct xfer_cq **ret_cq);
/* Destroy; no submitted operation may still target it.  Accepts NULL. */
void xfer_cq_destroy(struct xfer_cq *cq);
/* An eventfd that is readable while the queue is not empty. */
int xfer_cq_fd(const struct xfer_cq *cq);
/* Move up to @max completions into @comps; returns how many (0 when empty). */
int xfer_cq_poll(struct xfer_cq *cq, struct xfer_comp *comps, int max);

/*
 * Tell the engine that a peer is about to RMA into (or out of) our memory,
 * e.g. a GET request is outstanding: @delta +1 before, -1 after.  Where the
 * provider moves the bytes only while the target side is progressed (shm
 * when the peer may not copy into us with CMA), the progress thread polls
 * eagerly while the balance is positive instead of sleeping up to a
 * millisecond between polls.  Harmless elsewhere.
 */
void xfer_expect(struct xfer_engine *engine, int delta);

/* Counters, for STATS and benchmarks. */
struct xfer_stats {
	uint64_t ops_done;     /* completed operations, success */
	uint64_t ops_failed;   /* completed with an error (incl. timeouts) */
	uint64_t ops_timedout; /* of which by deadline */
	uint64_t bytes_written;
	uint64_t bytes_read;
	uint64_t imm_received;
	uint64_t inflight;       /* operations submitted and not completed */
	uint64_t stuck;          /* 1 while the progress thread is stuck in a provider call,
	                          * or for good if a reset could not open an endpoint */
	uint64_t stuck_events;   /* times it got stuck (see xfer_submit()) */
	uint64_t locks_released; /* shm locks dead peers left held, released */
	uint64_t resets;         /* endpoint opened anew after a dead peer blocked it */
};
void xfer_get_stats(struct xfer_engine *engine, struct xfer_stats *ret_stats);

#ifdef __cplusplus
}
#endif
#endif /* KVFS_XFER_H */
