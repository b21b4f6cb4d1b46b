/* SPDX-License-Identifier: MIT */
/*
 * kvfs client library internals (see include/kvfs/client.h), shared by the
 * files of src/client:
 *
 *   kvc.c         the handle (kvc_connect, kvc_close, kvc_engine, kvc_limits,
 *                 kvc_server_epoch) and this thread's error message
 *   kvc_call.c    calls: reference counts, results, async completions; the
 *                 bounce pool and staging buffers they lend the server
 *   kvc_conn.c    connection life: connecting, the handshake, backoff, the
 *                 server's instance (a restart starts a new epoch)
 *   kvc_io.c      the I/O thread: call table, send queue, deadlines, parking
 *   kvc_direct.c  direct calls on the parked socket, on the calling thread
 *   kvc_op.c      running one operation: submit, wait, resend
 *   kvc_put.c, kvc_get.c, kvc_meta.c   the operations themselves
 *
 * Threads
 * -------
 * Calling threads connect (TCP + Hello, in the state KVC_CONNECTING), build
 * and encode requests and wait for their results.  The I/O thread owns the
 * socket once the connection is up: it writes queued frames, reads and
 * matches responses, enforces deadlines and tears the connection down on
 * error.  The two sides meet under kvc->lock; struct kvc groups its fields
 * by who may touch them.
 *
 * Direct calls: while the I/O thread has nothing in flight it "parks" the
 * socket (takes it out of its epoll set and says so under kvc->lock).  A
 * synchronous caller that finds it parked and free claims it (direct_busy),
 * writes its request and reads its own response on the calling thread:
 * no eventfd, no I/O thread wakeup, no semaphore handoff.  Meanwhile the
 * socket is that caller's; other calls queue for the I/O thread, which
 * takes the socket back (unparks) once the caller releases it.  A direct
 * call abandoned at its deadline is handed back to the I/O thread
 * (kvc->handback) to be resolved like any other.
 *
 * Under concurrency (many callers, the I/O thread awake) the I/O thread
 * batches: callers wake it with one eventfd write per wake-up however many
 * submit meanwhile (kvc_io_kick, kick_pending), and it writes every queued
 * frame the server's max_inflight allows with one sendmsg().
 *
 * A struct kvc_call is reference counted: one reference for the caller
 * (sync calls only) and one for the I/O thread until the call is resolved
 * (its response arrived, or the connection it was sent on is gone).  A call
 * is notified once (result known: response, timeout, reset) and resolved
 * once; between the two it is "abandoned": it timed out but the server may
 * still be moving bytes into or out of its memory, so that memory (bounce
 * slot, staging buffer) stays held until resolution.
 *
 * How value bytes travel
 * ----------------------
 * - Up to the server's max_inline (and within its frame limit) a value goes
 *   inline in the PUT / GET messages: one round trip, no RDMA.
 * - Larger values use RDMA when the server honours descriptors.  kvc_put /
 *   kvc_get copy through a registered bounce buffer (opts.bounce_size, a
 *   pool of up to KVC_BOUNCE_SLOTS allocated on first use).  A value larger
 *   than a bounce buffer, or any value while every slot is busy, goes
 *   through a staging buffer of its size (the largest so far is kept for
 *   the next call; a smaller one is fenced off, never freed): still one PUT
 *   or one GET, so the value is written atomically and read in one piece of
 *   one version.  The caller's own memory is never registered: once a call
 *   returns, the server cannot touch it, even when the call failed with a
 *   transfer still under way (see below).
 * - Without RDMA (provider "none", or a server that does not do it) a GET
 *   larger than max_inline is read in max_inline pieces pinned to the
 *   version of the first piece (restarted if the value changes meanwhile);
 *   a PUT larger than max_inline cannot be made atomic and fails -EFBIG.
 *
 * Deadlines and abandoned calls
 * -----------------------------
 * The I/O thread (or the direct caller) fails a call at its deadline.  If
 * the server might still RDMA into or out of the call's memory, the bounce
 * slot or staging buffer stays held until the late response arrives or the
 * connection goes away.  One whose fate is then still unknown (no answer,
 * or a failed transfer) is given to xfer_mr_dereg_lost(), never reused:
 * with tcp and shm a transfer message already under way keeps landing
 * after deregistration (the key is checked when the message begins), so
 * the memory is fenced off instead.  Memory passed to the _mr calls is the
 * caller's: after a failure it may still be written (or read) by a
 * transfer under way; drop it with xfer_mr_dereg_lost() rather than reuse
 * it.
 */
#ifndef KVFS_CLIENT_KVC_I_H
#define KVFS_CLIENT_KVC_I_H

#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "kvfs/client.h"
#include "kvfs/token.h"
#include "kvfs/wire.h"
#include "kvfs/xfer.h"

#define KVC_TAG              "kvc"
#define KVC_DEFAULT_TIMEOUT  10000
#define KVC_DEFAULT_BOUNCE   (8u << 20)
#define KVC_DEFAULT_UP_PART  (4u << 20) /* kvc_opts.upload_part */
#define KVC_DEFAULT_UP_BUFS  32         /* kvc_opts.upload_buffers */
#define KVC_BOUNCE_SLOTS     4    /* bounce buffers at most; more callers use staging buffers */
#define KVC_BACKOFF_MIN_MS   100  /* reconnect backoff: first pause */
#define KVC_BACKOFF_MAX_MS   2000 /* and its ceiling */
#define KVC_BUSY_MIN_MS      10   /* pause before resending a call the server refused with BUSY */
#define KVC_BUSY_MAX_MS      500  /* and its ceiling */
#define KVC_MSG_LEN          320  /* error message buffer */
#define KVC_RBUF_LEN         (256u << 10)
#define KVC_SEND_BATCH       64 /* frames per sendmsg() of the I/O thread */
#define KVC_GET_INLINE_RETRY 4  /* inline GET in pieces: restarts when the value changes */

/* Connection life: kvc_ensure_up() (calling threads) brings it up,
 * kvc_conn_lost() (the I/O thread or a direct caller) takes it down. */
enum kvc_state {
	KVC_DOWN,       /* no connection: the next call connects (after the backoff pause) */
	KVC_CONNECTING, /* one calling thread is connecting and doing Hello; others wait */
	KVC_UP,         /* connected: the socket belongs to the I/O thread */
	KVC_CLOSED,     /* kvc_close() began: every call fails with -ECANCELED */
};

/* What the server granted in its HelloResponse (copied per call: kvc_ensure_up). */
struct kvc_lim {
	uint64_t gen;          /* connection generation these limits belong to */
	uint64_t epoch;        /* server epoch of that connection (kvc_server_epoch()) */
	uint64_t instance;     /* HelloResponse.instance_id, 0 = not announced */
	uint64_t max_frame;    /* server's frame limit */
	uint64_t max_value;    /* largest value */
	uint64_t max_inline;   /* largest inline value (0: none) */
	uint64_t chunk_size;   /* server's transfer chunk */
	uint32_t max_inflight; /* requests the server works on at once, 0 = no limit given */
	bool rdma;             /* descriptors are honoured */
	uint64_t features;     /* HelloResponse.features (KVFS__FEATURE__*) */
	char server_provider[64];
	char rdma_note[160]; /* !rdma: the server's reason, "" when it gave none */
};

/* A registered bounce buffer for kvc_put/kvc_get with plain memory. */
struct kvc_bounce {
	struct xfer_mr *mr; /* NULL until first used (allocated lazily) */
	bool busy;          /* held by a call */
};

enum kvc_call_kind {
	KVC_CALL_SYNC,       /* a thread waits on @done */
	KVC_CALL_ASYNC_GET,  /* kvc_get_mr_async: @cb gets bytes and the entry */
	KVC_CALL_ASYNC_PUT,  /* kvc_put_mr_async: @cb gets 0 and the entry */
	KVC_CALL_ASYNC_PART, /* an upload's part (kvc_upload.c): @cb gets 0, no entry */
};

struct kvc_call {
	struct kvc_call *sub_next;    /* submission list (kvc->lock) */
	struct kvc_call *prev, *next; /* I/O thread's table of unresolved calls */
	struct kvc_call *send_next;   /* I/O thread's send queue */
	atomic_int refs;
	enum kvc_call_kind kind;
	uint64_t id;          /* Request.id */
	uint64_t gen;         /* connection generation it was submitted on */
	uint64_t epoch;       /* server epoch of that connection: its entries' epoch */
	uint64_t deadline_ms; /* kv_now_ms() value at which it fails with -ETIMEDOUT */
	uint64_t sent_ms;     /* when its first byte went out (0: not yet) */
	uint8_t *frame;       /* encoded frame, freed once written */
	size_t frame_len;
	size_t frame_off;      /* bytes written */
	bool queued;           /* in the send queue */
	bool counted;          /* counts against the server's max_inflight */
	bool notified;         /* result delivered */
	bool retry;            /* failed before a byte was sent: the caller may resend */
	bool busy;             /* refused with BUSY, nothing done: resend after a pause */
	bool lost;             /* resolved without a response: its memory may still be written */
	bool settled;          /* the server answered in a way that leaves no transfer under
	                        * way (success, or a refusal before any transfer) */
	int status;            /* 0 or -errno, valid once notified */
	struct wire_msg resp;  /* the response (status OK or not), owned by the call */
	char msg[KVC_MSG_LEN]; /* error text, valid once notified with status < 0 */
	char what[128];        /* "GET 'key'", for messages */
	sem_t done;            /* KVC_CALL_SYNC: posted on notify */
	/* async completion */
	kvc_done_t cb;
	void *cb_arg;
	const struct xfer_sge *adst; /* async GET inline: where to scatter the bytes */
	size_t nadst;
	struct xfer_sge *adst_copy; /* owned copy of the caller's list */
	uint64_t put_len;           /* async PUT: value length, for the entry */
	/* memory the server may touch, released on resolution */
	struct kvc_bounce *bounce; /* bounce slot held */
	struct xfer_mr *stage;     /* staging buffer for a value larger than a bounce slot */
	bool expect;               /* xfer_expect(+1) taken */
	bool peer_writes;          /* a GET: the server writes into that memory */
};

/*
 * The client.  Fields are grouped by who may touch them; each group's
 * banner says how access is synchronised.
 */
struct kvc {
	/* --- Configuration: set by kvc_connect() before the I/O thread starts; read-only --- */
	char *server;   /* "HOST:PORT" (the port even if left out), for messages */
	char host[256]; /* parsed */
	uint16_t port;
	char *provider;    /* "auto", "tcp", "shm", ... or "none" */
	char *bind;        /* engine bind address or NULL */
	char *auth_option; /* the token file's option, named in advice (kvc_opts) */
	char *client_id;
	char token[KV_TOKEN_MAX + 1]; /* auth token, token_len 0 = none */
	size_t token_len;
	int timeout_ms;
	int connect_timeout_ms;
	size_t bounce_size;
	void (*on_restart)(void *arg, uint64_t epoch); /* kvc_opts.on_restart */
	void *on_restart_arg;

	/* --- Shared by all threads: guarded by lock --- */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* broadcast on state changes (CLOCK_MONOTONIC) */
	/* connection life: kvc_ensure_up(), kvc_conn_lost() */
	enum kvc_state state;
	uint64_t gen;         /* bumped on every successful connect */
	uint64_t epoch;       /* bumped when a connect finds another server instance */
	uint64_t instance;    /* last instance id a server announced, 0 = none yet */
	struct kvc_lim lim;   /* of the current connection */
	int backoff_ms;       /* next reconnect pause */
	uint64_t next_try_ms; /* no reconnect before this */
	int last_err;         /* last connect failure */
	char last_msg[KVC_MSG_LEN];
	/* from callers to the I/O thread */
	int handover_sock;                    /* socket handed to the I/O thread, -1 = none */
	struct kvc_call *sub_head, *sub_tail; /* submissions not yet taken by the I/O thread */
	bool stop;                            /* the I/O thread must exit */
	/* the parked socket (see "Direct calls" above) */
	bool parked;               /* the I/O thread left the socket idle */
	uint64_t parked_gen;       /* generation of the parked socket, 0 = it was reset */
	bool direct_busy;          /* a calling thread is using the parked socket */
	bool io_wants_sock;        /* the I/O thread has work: the direct caller kicks it */
	struct kvc_call *handback; /* abandoned direct call for the I/O thread to resolve */
	/* buffers: a slot's busy flag is under lock; a busy slot's mr belongs to its call */
	struct kvc_bounce bounce[KVC_BOUNCE_SLOTS];
	struct xfer_mr *stage_spare; /* a free staging buffer kept for the next large value */
	/* uploads' part buffers (kvc_upload.c): up to up_max of up_part bytes, registered on
	 * first use; a free one is on up_free; up_cond is broadcast when one comes back */
	struct xfer_mr **up_free;
	unsigned up_nfree, up_live, up_max;
	size_t up_part;
	pthread_cond_t up_cond;

	/* --- Shared by all threads: atomics, no lock --- */
	atomic_uint_fast64_t next_id; /* next Request.id */
	atomic_bool kick_pending;     /* efd written, not yet drained (see kvc_io_kick) */

	/* --- Transfer engine, kept across reconnects: written only by the thread in
	 * KVC_CONNECTING (and by kvc_close()); other threads use it only after they saw
	 * KVC_UP under lock, which orders those writes before their reads --- */
	struct xfer_engine *engine; /* NULL: inline only */
	bool want_engine;           /* provider is not "none" (cleared when "auto" finds none) */
	xfer_peer_t server_peer;
	bool has_peer;
	uint8_t server_addr[XFER_ADDR_MAX]; /* engine address of server_peer */
	size_t server_addr_len;
	/* Page whose first WIRE_ENGINE_NONCE_LEN bytes prove to the server, at each
	 * HELLO, that the engine we name is ours (new random bytes each time);
	 * the server may read it, nothing more. */
	struct xfer_mr *proof_mr;

	/* --- The I/O thread and its descriptors: set by kvc_io_start(), constant until
	 * kvc_io_stop(); every thread writes efd (kvc_io_kick) --- */
	pthread_t io_thread;
	bool io_started;
	int epfd, efd, tfd;

	/* --- Owned by the I/O thread, no lock.  While the socket is parked and direct_busy,
	 * sock, reader, rbuf and io_last_rx_ms belong to the direct caller instead --- */
	int sock;        /* -1 when down */
	uint64_t io_gen; /* generation of sock */
	uint32_t io_max_inflight;
	unsigned io_counted;    /* calls counted against max_inflight */
	bool io_want_out;       /* EPOLLOUT armed */
	bool io_parked;         /* the socket is parked: not in epoll, not ours to touch */
	uint64_t io_last_rx_ms; /* last time bytes arrived */
	uint64_t io_timer_ms;   /* deadline the timer is armed for (never later than the
	                         * first call's), 0 = disarmed or fired */
	struct wire_reader reader;
	uint8_t *rbuf;                          /* KVC_RBUF_LEN bytes (kvc_connect) */
	struct kvc_call *table;                 /* unresolved calls */
	struct kvc_call *send_head, *send_tail; /* frames to write, in order */
};

/*
 * One operation, resent while it failed before reaching the server and the
 * deadline allows (kvc_op_run).  @prep (may be NULL) fills the request for
 * the current connection's limits and attaches the memory the call uses;
 * @unprep frees what prep allocated for the request.
 */
struct kvc_op {
	const char *name;
	const void *key;
	size_t keylen;
	uint64_t deadline;
	int body; /* expected Response body */
	Kvfs__Request req;
	int (*prep)(struct kvc *kvc, struct kvc_op *op, struct kvc_call *c,
	            const struct kvc_lim *lim);
	void (*unprep)(struct kvc_op *op);
	void *arg;
};

/* --- Uploads (kvc_upload.c, kvc_put.c) --- */

/* The pool of uploads' part buffers: kvc_connect() and kvc_close(). */
void kvc_up_pool_init(struct kvc *kvc, size_t part, unsigned max);
void kvc_up_pool_fini(struct kvc *kvc);
/* PUT committing upload @upload of connection generation @gen, @size bytes. */
int kvc_put_upload(struct kvc *kvc, const void *key, size_t keylen, uint64_t upload, uint64_t gen,
                   uint64_t size, const struct kvc_put_opts *opts, struct kvc_entry *ret);

/* --- Errors (kvc.c) --- */

/* This thread's message for kvc_strerror(): set by kvc_fail(), cleared on success. */
extern _Thread_local char kvc_errbuf[KVC_MSG_LEN];
/* Set this thread's message and return @err.  Any thread. */
__attribute__((format(printf, 2, 3))) int kvc_fail(int err, const char *fmt, ...);
/* snprintf() into @buf (a call's or the connection's message). */
__attribute__((format(printf, 3, 4))) void kvc_fmt_msg(char *buf, size_t len, const char *fmt, ...);
/* What to do about -errno @err, to append to a message ("" when nothing to say). */
const char *kvc_hint(int err);
const char *kvc_status_hint(int32_t st, const char *message);

/* --- Calls and their buffers (kvc_call.c) --- */

/* A call holding one reference (the caller's), or NULL without memory.
 * "@op 'key'" (key may be NULL) names it in messages. */
struct kvc_call *kvc_call_new(enum kvc_call_kind kind, const char *op, const void *key,
                              size_t keylen, uint64_t deadline);
/* Drop a reference (NULL is fine); the last frees the call and releases its
 * memory, fenced off when a transfer into or out of it may still be under way. */
void kvc_call_put(struct kvc *kvc, struct kvc_call *c);
/* Deliver the result (status and msg set): post a sync caller, or run an
 * async call's callback.  Once per call; I/O thread, or the direct caller. */
void kvc_call_notify(struct kvc_call *c);
/* Does an answer with wire status @st leave no transfer of the call under way? */
bool kvc_status_settles(int st);
/* A free bounce slot, registered on first use; NULL when all are busy or it
 * cannot be registered.  Released with its call (c->bounce). */
struct kvc_bounce *kvc_bounce_get(struct kvc *kvc);
/* A registered buffer of at least @len bytes (the spare, or a new one), for
 * c->stage.  0, or -errno with this thread's message set. */
int kvc_stage_get(struct kvc *kvc, const char *what, size_t len, struct xfer_mr **ret_mr);
/* The entry a GetResponse describes, answered in server epoch @epoch. */
void kvc_entry_from_get(const Kvfs__GetResponse *g, uint64_t epoch, struct kvc_entry *e);
/* -ESTALE with this thread's message set when a call conditioned on
 * @if_version read in epoch @if_epoch is about to go out on a connection of
 * another epoch (@lim), else 0. */
int kvc_epoch_check(const struct kvc_call *c, const struct kvc_lim *lim, uint64_t if_version,
                    uint64_t if_epoch);
/* Copy @len bytes from @src into a list of registered pieces, skipping its first @skip bytes. */
void kvc_sge_scatter(const struct xfer_sge *sge, size_t n, uint64_t skip, const uint8_t *src,
                     size_t len);

/* --- I/O thread (kvc_io.c) --- */

/* Create the I/O thread's descriptors and start it (kvc_connect).  0, or
 * -errno with this thread's message set; kvc_io_stop() cleans up either way. */
int kvc_io_start(struct kvc *kvc);
/* Stop the I/O thread (kvc->stop set under kvc->lock first), join it, close
 * its descriptors.  Also after kvc_io_start() failed or never ran. */
void kvc_io_stop(struct kvc *kvc);
/* Wake the I/O thread to look at the shared state.  Any thread, kvc->lock held or not. */
void kvc_io_kick(struct kvc *kvc);

/* --- Connection life (kvc_conn.c) --- */

/* Make sure the connection is up, connecting on this thread if needed,
 * never past @deadline (@once: a single attempt).  0 and a copy of the
 * limits, or -errno with this thread's message set.  Calling threads. */
int kvc_ensure_up(struct kvc *kvc, uint64_t deadline, bool once, struct kvc_lim *ret_lim);
/* The connection of generation @gen is gone: if it is still the current one,
 * state DOWN and the next call reconnects without a pause.  Takes kvc->lock. */
void kvc_conn_lost(struct kvc *kvc, uint64_t gen, int err, const char *why);
/* poll() @fd for @events until the absolute kv_now_ms() @deadline: 0, -ETIMEDOUT or -errno. */
int kvc_fd_wait(int fd, short events, uint64_t deadline);

/* --- Direct calls (kvc_direct.c) --- */

/* Run sync call @c on the parked socket: the caller set kvc->direct_busy and
 * took an I/O reference on @c, which this drops, or hands to the I/O thread
 * when @c is abandoned at its deadline.  @c is notified on return. */
void kvc_direct_run(struct kvc *kvc, struct kvc_call *c);

/* --- Running operations (kvc_op.c) --- */

/* kv_now_ms() deadline for @timeout_ms, the client's timeout when <= 0. */
uint64_t kvc_deadline(const struct kvc *kvc, int timeout_ms);
/* 0 if @key is a valid key, else -errno with this thread's message set. */
int kvc_key_check(const char *what, const void *key, size_t len);
/* 0 if @off+@len lies inside @mr, else -EINVAL with this thread's message set. */
int kvc_mr_range_check(const char *what, struct xfer_mr *mr, uint64_t off, uint64_t len);
/* Run @op to its answer (see struct kvc_op): 0 and *ret_call holds the
 * answered call (response in ->resp; release with kvc_call_put), or -errno
 * with this thread's message set.  Calling threads. */
int kvc_op_run(struct kvc *kvc, struct kvc_op *op, struct kvc_call **ret_call);
/* Prepare and submit @op once as an async call of @kind (no resend: @done
 * gets -ECONNRESET).  Takes @adst (freed on failure).  0 once submitted, or
 * -errno with this thread's message set (@done is then never called). */
int kvc_op_submit_async(struct kvc *kvc, struct kvc_op *op, enum kvc_call_kind kind,
                        kvc_done_t done, void *arg, struct xfer_sge *adst, size_t nadst,
                        uint64_t put_len);

#endif /* KVFS_CLIENT_KVC_I_H */
