/* SPDX-License-Identifier: MIT */
/*
 * kv-server internals shared by its files (server.h is the API):
 *
 *   server.c   options, srv_create() and srv_destroy()
 *   loop.c     the epoll loop: accept, read, events, deadlines, shutdown
 *   conn.c     a connection's life (enum conn_state, conn_step()), its
 *              output queue and its frame decoding
 *   request.c  one handler per request type, dispatched by body case
 *   op.c       RDMA transfers (struct srv_op) and what failed ones hold
 *
 * One epoll loop owns the listening socket, every client connection, a
 * signalfd (SIGTERM/SIGINT) and the eventfd of the engine's completion
 * queue.  Requests that move bytes by RDMA (GET into client descriptors,
 * PUT from client descriptors) become a struct srv_op that waits for its
 * engine completion; everything else is answered at once.
 *
 * Threads: everything here runs on the loop's thread (srv_run() or
 * srv_poll_once()); the engine's progress thread only hands completions
 * over through the xfer_cq eventfd.
 */
#ifndef KVFS_SERVER_SERVER_I_H
#define KVFS_SERVER_SERVER_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "kvfs/token.h"
#include "kvfs/wire.h"
#include "kvfs/xfer.h"
#include "server.h"
#include "store.h"
#include "tenant.h"

#define SRV_TAG "server"

/*
 * A connection's life.  States only move forward, in this order; each
 * comment says what the connection does there and who moves it in.  The
 * one switch that moves a connection on by itself, once what it waited
 * for has happened, is conn_step().
 */
enum conn_state {
	CONN_HELLO,    /* connected, ServerHello queued: serves only HELLO; closed
	                * hello_timeout_ms after connecting (srv_adopt_fd) */
	CONN_READY,    /* HELLO accepted: serving requests (req_hello) */
	CONN_CLOSING,  /* refused (failed HELLO, a request before it): reads nothing
	                * more, closed once its answer is flushed (conn_refuse) */
	CONN_DRAINING, /* socket closed, RDMA ops in flight: stays allocated so they
	                * never point at freed memory (conn_close) */
	CONN_DEAD,     /* socket closed, nothing in flight: on srv->dead, freed after
	                * the current epoll batch (conn_step) */
};

/*
 * Deadlines (srv_check_deadlines()): a connection in CONN_HELLO is closed
 * hello_timeout_ms after it connected; a frame that started arriving must
 * complete within frame_timeout_ms (slow-loris), and queued responses must
 * make progress within frame_timeout_ms (a client that does not read); a
 * CONN_READY connection with nothing in flight may be closed after
 * idle_timeout_ms (off by default: clients keep connections open).
 * Reading stops while a connection has max_inflight RDMA ops or max_outbuf
 * bytes queued; bytes already received past that point wait in stash.
 */
struct conn {
	struct srv *srv;
	struct conn *next, *prev; /* srv->conns while open; srv->dead once CONN_DEAD */
	int fd;                   /* -1 from CONN_DRAINING on */
	enum conn_state state;
	char name[80]; /* peer address, for logs */
	uint64_t serial;
	struct wire_reader rd;
	uint8_t *out; /* queued response bytes */
	size_t out_len, out_off, out_cap;
	uint8_t nonce[WIRE_AUTH_NONCE_LEN];
	const struct tenant *tenant; /* its HELLO proved this tenant's token: its prefix is
	                              * the whole store to it; NULL = the whole namespace */
	bool rdma;                   /* the client's engine is our peer, proven to be its own */
	bool binding;                /* HELLO waits for that proof (an OP_BIND in flight) */
	xfer_peer_t peer;            /* valid when rdma or binding */
	unsigned ops;                /* RDMA ops in flight for this connection */
	bool reading;                /* EPOLLIN armed */
	bool want_out;               /* EPOLLOUT armed */
	bool corked;                 /* serving one read: answers wait for its end (conn_read) */
	uint64_t hello_deadline;     /* CONN_HELLO: close at this time (ms) */
	uint64_t frame_deadline;     /* a frame is partly received: complete by then; 0 = none */
	uint64_t out_deadline;       /* output queued: some must be sent by then; 0 = none */
	uint64_t last_recv;          /* last time bytes arrived (ms), for idle_timeout_ms */
	uint64_t refuse_at;          /* a failed proof's answer waits until then (ms; 0: none) */
	uint64_t refuse_id;          /* the HELLO it answers */
	uint8_t *stash;              /* received, not yet fed: reading paused mid-chunk */
	size_t stash_len, stash_off;
	struct srv_upload *uploads; /* open uploads (UPLOAD_OPEN), dropped with the connection */
	unsigned nuploads;
	uint64_t next_upload; /* the next upload's id */
};

/*
 * An upload a connection opened (UPLOAD_OPEN): a value built in parts
 * (store_up_*) as UPLOAD_PARTs arrive, published by a PUT naming it.
 * Freed by that PUT, UPLOAD_ABORT, or with its connection (conn_free(),
 * once no part is in flight).
 */
struct srv_upload {
	struct srv_upload *next;
	uint64_t id;
	struct store_resv *resv;
	unsigned pending; /* part transfers in flight */
	int err;          /* a part's transfer failed: what its commit answers */
};

#define SRV_UPLOADS_MAX 256 /* open uploads per connection */

/* Drop @c's uploads (conn_free(): none has a part in flight). */
void req_uploads_drop(struct conn *c);

/* The socket is gone (CONN_DRAINING or CONN_DEAD): nothing is read, queued
 * or sent any more. */
static inline bool conn_closed(const struct conn *c)
{
	return c->state >= CONN_DRAINING;
}

enum srv_op_kind {
	OP_GET,  /* a value into client descriptors */
	OP_PUT,  /* a value out of client descriptors into a reservation */
	OP_BIND, /* HELLO: read the nonce the client's engine holds (req_hello) */
	OP_PART, /* an upload's part out of client descriptors into new arena memory */
};

/* An RDMA GET, PUT or BIND between its submission and its completion (and,
 * if it failed with segments still at the provider, until it is settled). */
struct srv_op {
	enum srv_op_kind kind;
	struct conn *conn;       /* NULL once it only waits to be settled */
	uint64_t id;             /* request id, for the answer */
	struct store_item *item; /* GET: pinned */
	struct store_resv *resv; /* PUT: reserved */
	struct srv_upload *up;   /* PART: its upload (NULL once only waiting to be settled) */
	struct store_ext *ext;   /* PART: the memory it fills, held until settled */
	struct store_put_cond cond;
	struct store_attrs attrs; /* PUT: mtime_ns 0 = the clock at commit */
	uint64_t bytes;           /* bytes being moved */
	xfer_peer_t peer;
	struct xfer_rsge *rsge;
	/* OP_BIND: the proof of the client's engine, and the HELLO answer
	 * that waits for it. */
	struct xfer_mr *mr; /* registered page the nonce is read into */
	uint8_t nonce[WIRE_ENGINE_NONCE_LEN];
	uint32_t version; /* negotiated protocol version */
	bool has_sproof;
	bool retried; /* OP_BIND: read once more after a connection failure */
	uint8_t sproof[WIRE_AUTH_PROOF_LEN];
	pid_t watch_pid; /* shm: the client's process, proven to hold the connection */
};

/* What one client (its engine address) holds in failed transfers whose
 * memory its provider has not given back yet (op_complete() to
 * op_settled()).  Only clients holding something have an entry. */
struct srv_held {
	xfer_peer_t peer;
	uint64_t bytes;
};

/* Evictions not yet logged (srv_evlog_flush()). */
struct srv_evlog {
	uint64_t last_ms;      /* when the last line was written */
	uint64_t count, bytes; /* keys evicted since, and their value bytes */
	uint64_t meta;         /* of them, to keep the index within max_meta */
	uint64_t put_max;      /* the largest PUT the others made room for */
	uint64_t more;         /* keys not named (no room in @keys) */
	char keys[256];        /* the first ones, quoted, escaped, cut */
	size_t keys_len;
};

struct srv {
	struct srv_opts o;
	char host[256];
	uint16_t port;
	uint64_t instance; /* random, nonzero, picked at start: HelloResponse.instance_id */
	int lfd, epfd, sigfd;
	struct xfer_engine *eng;
	struct xfer_cq *cq;
	struct xfer_mr *arena_mr;
	void *arena; /* when not registered (provider none) */
	size_t arena_len;
	struct store *store;
	struct conn *conns;
	unsigned nconns;
	uint64_t serial;
	uint8_t token[KV_TOKEN_MAX + 1]; /* --auth-token-file's: the whole namespace */
	size_t tokenlen;                 /* 0 = no such token */
	struct tenant_table tenants;     /* --tenants, sorted by prefix */
	struct store_ns *ns;             /* the store's namespaces: tenant i is ns[i] */
	bool auth;                       /* HELLO must prove a token (either kind) */
	bool stopping;
	unsigned ops;       /* RDMA ops in flight, all connections */
	unsigned unsettled; /* failed ops whose arena range the provider still holds */
	uint64_t unsettled_bytes;
	struct srv_held *held; /* per client, see srv_held */
	struct srv_authfail {  /* recent failed proofs per host: auth_backoff() */
		char host[64];
		unsigned fails;
		uint64_t last_ms;
	} authfail[64];
	size_t nheld, held_cap;
	struct {
		uint64_t gets, puts, deletes, lists, renames, setattrs, stats, stat_calls,
		        xattr_calls;
		uint64_t get_bytes, put_bytes, rdma_gets, rdma_puts, inline_gets, inline_puts;
		uint64_t errors, rdma_failures, conns_total, conns_refused, auth_failures;
		uint64_t bad_frames, refused_keys, refused_held;
		uint64_t closed_hello, closed_slow, closed_idle, refused_unauth;
		uint64_t uploads, upload_commits;
	} c;
	uint64_t uploads_open; /* on all connections (struct srv_upload) */
	struct srv_evlog evlog;
	bool resume;       /* a connection with stashed bytes may read again */
	struct conn *dead; /* CONN_DEAD: freed at the end of the loop turn */
};

/* ---- conn.c: connection life, output, frame decoding ------------------ */

/* Move @c on after what it waited for happened (a frame served, output
 * flushed, an op completed): see enum conn_state. */
void conn_step(struct conn *c);
/* CONN_HELLO -> CONN_CLOSING after the refusal was queued. */
void conn_refuse(struct conn *c);
/* Close the socket: CONN_DRAINING, or CONN_DEAD when nothing is in flight.
 * Never frees @c (callers up the stack still look at it).  @why is logged;
 * NULL is a plain end. */
void conn_close(struct conn *c, const char *why);
/* Remove @c's client engine from our peers unless another open connection
 * with RDMA still uses it (the same engine reconnected). */
void conn_peer_release(struct conn *c);
/* Free the CONN_DEAD connections (after an epoll batch). */
void srv_free_dead(struct srv *s);

/* Set EPOLLIN/EPOLLOUT interest from the state, the limits and the output. */
void conn_arm(struct conn *c);
/* Write what is queued; returns 0 or a negative errno (connection dead). */
int conn_flush(struct conn *c);
/* Queue one frame (sent at once unless corked).  Returns 0 or a negative
 * errno; a failed send closes @c. */
int conn_queue(struct conn *c, enum wire_frame_type type, const ProtobufCMessage *m);
/* Answer @id with @err (0 or a negative errno, with @msg or strerror) or,
 * when 0, with @resp (NULL: an empty OK). */
void conn_respond(struct conn *c, uint64_t id, int err, const char *msg, Kvfs__Response *resp);

/* Decode and serve frames from @data until it is used up, @c must not
 * read more (max_inflight, max_outbuf, closing) or it is closed.  Returns
 * the bytes consumed. */
size_t conn_feed(struct conn *c, const uint8_t *data, size_t len);

/* ---- request.c: handlers ---------------------------------------------- */

/* A failed proof from @c's host: how long its answer waits (ms). */
uint64_t auth_backoff(struct srv *s, const struct conn *c);

/* Serve one decoded request on @c: the state's rules, wire_request_check(),
 * then the handler of its body case. */
void req_dispatch(struct conn *c, const Kvfs__Request *rq);
/* The engine proof of @op's connection is in (@status 0: its bytes read,
 * else the read's error): grant RDMA if they are the nonce, then answer the
 * HELLO that waited for it. */
void req_hello_bound(struct srv_op *op, int status);

/* ---- op.c: RDMA transfers ---------------------------------------------- */

/* An RDMA op with room for @nseg remote pieces; NULL on ENOMEM. */
struct srv_op *op_new(size_t nseg);
void op_free(struct srv_op *op);
/* Post @op (its rsge filled, @nrsge of them) moving @len bytes at
 * @arena_off; its completion comes to srv_reap().  Returns 0 or a negative
 * errno (nothing posted: the caller still owns @op). */
int op_submit(struct conn *c, struct srv_op *op, enum xfer_opcode opc, uint64_t arena_off,
              uint64_t len, size_t nrsge);
/* The same from the arena ranges @segs (store_item_segs()). */
int op_submit_segs(struct conn *c, struct srv_op *op, enum xfer_opcode opc,
                   const struct store_seg *segs, size_t nsegs, size_t nrsge);
/* What a client is told when op_submit() fails with @err. */
bool op_conn_failure(int err);
const char *op_submit_error_msg(int err, const char *what);
/* -EAGAIN (BUSY) with the reason in @msg when @c's client already holds so
 * much in failed transfers that @len more would pass --max-held; else 0. */
int held_check(struct conn *c, uint64_t len, char *msg, size_t msglen);
/* Handle the engine's completions. */
void srv_reap(struct srv *s);

/* ---- server.c ---------------------------------------------------------- */

/* Log the evictions noted since the last line, as one warning, unless that
 * line is less than a second old (@force: in any case). */
void srv_evlog_flush(struct srv *s, bool force);
/* What a client is told when a pin or a pinned key's new value would pass
 * --max-pinned (the store's -EOVERFLOW), and when a PUT finds no room
 * (-ENOSPC); in @buf or a constant. */
const char *srv_pin_limit_msg(struct srv *s, char *buf, size_t len);
const char *srv_full_msg(struct srv *s, char *buf, size_t len);

/* ---- loop.c ------------------------------------------------------------ */

/* Create the epoll set and the signalfd and add the listening socket, the
 * signalfd and the completion queue to it.  Returns 0 or a negative errno
 * (what was created stays in @s for the caller to close). */
int srv_loop_init(struct srv *s);

/* ---- shared helpers ---------------------------------------------------- */

static inline uint64_t srv_realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

#endif /* KVFS_SERVER_SERVER_I_H */
