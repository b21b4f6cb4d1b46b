/* SPDX-License-Identifier: MIT */
/*
 * kv-server core: one epoll loop serving the protobuf control channel
 * (docs/protocol.md) over the store (store.h), moving value bytes with the
 * transfer engine (kvfs/xfer.h).  Its internals: server_i.h.
 *
 * Threads: srv_run() runs the loop on the calling thread; every connection,
 * the store and every engine completion are handled there.  The engine's own
 * progress thread only hands completions over through an xfer_cq eventfd.
 */
#ifndef KVFS_SERVER_SERVER_H
#define KVFS_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct srv_opts {
	const char *listen;      /* HOST:PORT, default 127.0.0.1:7070; NULL = no listening
	                          * socket (in-process use: srv_adopt_fd() only) */
	uint64_t memory;         /* all the store's memory: the index (max_meta of it)
	                          * and the value arena (the rest) */
	const char *provider;    /* auto|tcp|shm|verbs|efa|none */
	const char *engine_bind; /* engine address; NULL = the listen host */
	enum store_evict eviction;
	uint64_t max_value;          /* 0 = arena */
	uint64_t max_inline;         /* inline PUT/GET limit */
	const char *auth_token_file; /* the whole namespace's token; NULL = none */
	const char *tenants_file;    /* tenants' tokens, prefixes, quotas (tenant.h);
	                              * NULL = none; with neither file: no auth */
	unsigned max_conns;          /* connections at once */
	unsigned max_unauth;         /* connections that have not finished HELLO at once,
	                              * a quarter of them per host: their own quota, so
	                              * idle sockets cannot keep clients out */
	unsigned max_inflight;       /* RDMA requests being worked on per connection */
	size_t max_outbuf;           /* bytes queued to one client before we stop reading it */
	size_t max_frame;            /* largest request frame (length field) read */
	int timeout_ms;              /* transfer deadline */
	int hello_timeout_ms;        /* close a connection without a HELLO this long after
	                              * connecting */
	int frame_timeout_ms;        /* close a connection whose frame has not completed this
	                              * long after it started, or that has not taken any of
	                              * its queued responses for this long */
	int idle_timeout_ms;         /* close an authenticated connection with nothing in
	                              * flight, silent this long; 0 = never */
	uint64_t max_meta;           /* part of memory the index (keys and items) may take
	                              * before PUTs evict or fail like for values; 0 =
	                              * memory / 8, at least 1 MiB (srv_meta_budget()) */
	uint64_t max_held;           /* bytes one client may hold in failed transfers its
	                              * provider has not given back before its next RDMA
	                              * GET or PUT is refused (BUSY); 0 = memory / 8 */
	uint64_t max_held_total;     /* the same for all clients together; 0 = memory / 4 */
	uint64_t max_pinned;         /* value bytes of pinned keys (never evicted);
	                              * SRV_MAX_PINNED_DEFAULT = half the value arena
	                              * (srv_max_pinned()), 0 = pinning refused */
};

#define SRV_MAX_PINNED_DEFAULT UINT64_MAX

/*
 * Memory per connection is bounded by the options above: the frame being
 * received (at most max_frame bytes, allocated once its header passed the
 * limit), up to 64 KiB received but not yet decoded while the connection
 * is paused, and the responses queued for it (at most max_outbuf plus one
 * response: reading stops at max_outbuf).  The server's heap beyond the
 * arena and the index is thus at most about
 *   max_conns * (max_frame + 64 KiB + max_outbuf + 1.1 MiB).
 */

void srv_opts_init(struct srv_opts *o);
/* How @o's memory divides: the index's budget, and the value arena (the
 * rest, whole pages); srv_opts_check() refuses a budget above half. */
uint64_t srv_meta_budget(const struct srv_opts *o);
uint64_t srv_value_space(const struct srv_opts *o);
/* --max-pinned as the store applies it. */
uint64_t srv_max_pinned(const struct srv_opts *o);

struct srv;

/* Create: parse the listen address, read the token, open the engine,
 * register the arena, create the store, listen.  Errors are printed with
 * what to do; returns a negative errno. */
int srv_create(const struct srv_opts *o, struct srv **ret);
/* Serve until SIGTERM/SIGINT (blocked by the caller and read via
 * signalfd); then stop accepting, finish in-flight requests (bounded by the
 * transfer deadline) and return 0, or return a negative errno from
 * epoll_wait(). */
int srv_run(struct srv *s);
void srv_destroy(struct srv *s); /* accepts NULL */

/*
 * Building blocks of srv_run(), for driving a server in-process (fuzzers,
 * tests).  Same thread rules as srv_run().
 *
 * srv_adopt_fd(): serve @fd, a connected non-blocking stream socket (e.g. one
 * end of a socketpair), exactly as an accepted client: ServerHello is queued
 * at once.  The server owns @fd from the call on, also on failure (it is
 * closed).  @name labels the connection in logs.  Returns 0, -EMFILE
 * (--max-conns reached) or -ENOMEM.
 *
 * srv_poll_once(): wait up to @timeout_ms (0 = do not block, -1 = forever)
 * and handle what is ready: accept, read and answer requests, flush
 * responses, reap transfer completions, note SIGTERM/SIGINT, close idle
 * connections.  Returns the number of events handled or a negative errno
 * from epoll_wait().  Does not do srv_run()'s orderly shutdown.
 */
int srv_adopt_fd(struct srv *s, int fd, const char *name);
int srv_poll_once(struct srv *s, int timeout_ms);

#endif /* KVFS_SERVER_SERVER_H */
