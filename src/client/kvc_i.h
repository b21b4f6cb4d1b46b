/* SPDX-License-Identifier: MIT */
/*
 * kvfs client library internals (see include/kvfs/client.h).
 *
 * Who owns what
 * -------------
 * Calling threads connect (TCP + Hello, in the state KVC_CONNECTING), build
 * and encode requests and wait for their results.  The I/O thread owns the
 * socket once the connection is up: it writes queued frames, reads and
 * matches responses, enforces deadlines and tears the connection down on
 * error.  The two sides meet only under kvc->lock: the submission list, the
 * connection state and handover, the limits and the bounce pool.
 *
 * Direct calls: while the I/O thread has nothing in flight it "parks" the
 * socket (takes it out of its epoll set and says so under kvc->lock).  A
 * synchronous caller that finds it parked and free claims it (direct_busy),
 * writes its request and reads its own response on the calling thread:
 * no eventfd, no I/O thread wakeup, no semaphore handoff.  Meanwhile the
 * socket, reader, rbuf and io_last_rx_ms belong to that caller; other calls
 * queue for the I/O thread, which takes the socket back (unparks) once the
 * caller releases it.  A direct call abandoned at its deadline is handed
 * back to the I/O thread (kvc->handback) to be resolved like any other.
 *
 * Under concurrency (many callers, the I/O thread awake) the I/O thread
 * batches: callers wake it with one eventfd write per wake-up however many
 * submit meanwhile (io_kick, kick_pending), and it writes every queued
 * frame the server's max_inflight allows with one sendmsg().
 *
 * A struct kvc_call is reference counted: one reference for the caller
 * (sync calls only) and one for the I/O thread until the call is resolved
 * (its response arrived, or the connection it was sent on is gone).  A call
 * is notified once (result known: response, timeout, reset) and resolved
 * once; between the two it is "abandoned": it timed out but the server may
 * still be moving bytes into or out of its memory, so that memory (bounce
 * slot, temporary registration) stays held until resolution.
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
#include "kvfs/wire.h"
#include "kvfs/xfer.h"

#define KVC_TAG              "kvc"
#define KVC_DEFAULT_TIMEOUT  10000
#define KVC_DEFAULT_BOUNCE   (8u << 20)
#define KVC_BOUNCE_SLOTS     4    /* bounce buffers at most; more callers register their memory */
#define KVC_BACKOFF_MIN_MS   100  /* reconnect backoff: first pause */
#define KVC_BACKOFF_MAX_MS   2000 /* and its ceiling */
#define KVC_BUSY_MIN_MS      10   /* pause before resending a call the server refused with BUSY */
#define KVC_BUSY_MAX_MS      500  /* and its ceiling */
#define KVC_MSG_LEN          320  /* error message buffer */
#define KVC_RBUF_LEN         (256u << 10)
#define KVC_SEND_BATCH       64 /* frames per sendmsg() of the I/O thread */
#define KVC_GET_INLINE_RETRY 4  /* inline GET in pieces: restarts when the value changes */

/* Connection life, driven by kvc_ensure_up() (callers) and io_reset() (I/O thread). */
enum kvc_state {
	KVC_DOWN,       /* no connection: the next call connects (after the backoff pause) */
	KVC_CONNECTING, /* one calling thread is connecting and doing Hello; others wait */
	KVC_UP,         /* connected: the socket belongs to the I/O thread */
	KVC_CLOSED,     /* kvc_close() began: every call fails with -ECANCELED */
};

/* What the server granted in its HelloResponse (copied per call). */
struct kvc_lim {
	uint64_t gen;          /* connection generation these limits belong to */
	uint64_t max_frame;    /* server's frame limit */
	uint64_t max_value;    /* largest value */
	uint64_t max_inline;   /* largest inline value (0: none) */
	uint64_t chunk_size;   /* server's transfer chunk */
	uint32_t max_inflight; /* requests the server works on at once, 0 = no limit given */
	bool rdma;             /* descriptors are honoured */
	char server_provider[64];
};

/* A registered bounce buffer for kvc_put/kvc_get with plain memory. */
struct kvc_bounce {
	struct xfer_mr *mr; /* NULL until first used (allocated lazily) */
	bool busy;          /* held by a call */
};

enum kvc_call_kind {
	KVC_CALL_SYNC,      /* a thread waits on @done */
	KVC_CALL_ASYNC_GET, /* kvc_get_mr_async: @cb gets bytes and the entry */
	KVC_CALL_ASYNC_PUT, /* kvc_put_mr_async: @cb gets 0 and the entry */
};

struct kvc_call {
	struct kvc_call *sub_next;    /* submission list (kvc->lock) */
	struct kvc_call *prev, *next; /* I/O thread's table of unresolved calls */
	struct kvc_call *send_next;   /* I/O thread's send queue */
	atomic_int refs;
	enum kvc_call_kind kind;
	uint64_t id;          /* Request.id */
	uint64_t gen;         /* connection generation it was submitted on */
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

struct kvc {
	/* configuration (immutable after kvc_connect) */
	char *server;   /* "HOST:PORT" (the port even if left out), for messages */
	char host[256]; /* parsed */
	uint16_t port;
	char *provider;    /* "auto", "tcp", "shm", ... or "none" */
	char *bind;        /* engine bind address or NULL */
	char *auth_option; /* the token file's option, named in advice (kvc_opts) */
	char *client_id;
	char token[4096]; /* auth token, token_len 0 = none */
	size_t token_len;
	int timeout_ms;
	int connect_timeout_ms;
	size_t bounce_size;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* state changes (CLOCK_MONOTONIC) */
	enum kvc_state state;
	uint64_t gen;                         /* bumped on every successful connect */
	int handover_sock;                    /* socket handed to the I/O thread, -1 = none */
	struct kvc_call *sub_head, *sub_tail; /* submissions not yet taken by the I/O thread */
	struct kvc_lim lim;                   /* of the current connection */
	int backoff_ms;                       /* next reconnect pause */
	uint64_t next_try_ms;                 /* no reconnect before this */
	int last_err;                         /* last connect failure */
	char last_msg[KVC_MSG_LEN];
	struct kvc_bounce bounce[KVC_BOUNCE_SLOTS];
	struct xfer_mr *stage_spare; /* a free staging buffer kept for the next large value */
	bool stop;                   /* the I/O thread must exit */
	bool parked;                 /* the I/O thread left the socket idle (see Direct calls) */
	uint64_t parked_gen;         /* generation of the parked socket, 0 = it was reset */
	bool direct_busy;            /* a calling thread is using the parked socket */
	bool io_wants_sock;          /* the I/O thread has work: the direct caller kicks it */
	struct kvc_call *handback;   /* abandoned direct call for the I/O thread to resolve */

	atomic_uint_fast64_t next_id;

	/* transfer engine (stays across reconnects) */
	struct xfer_engine *engine; /* NULL: inline only */
	bool want_engine;           /* provider is not "none" */
	xfer_peer_t server_peer;
	bool has_peer;
	uint8_t server_addr[XFER_ADDR_MAX]; /* engine address of server_peer */
	size_t server_addr_len;

	/* I/O thread */
	pthread_t io_thread;
	bool io_started;
	int epfd, efd, tfd;
	atomic_bool kick_pending; /* efd written, not yet drained (see io_kick) */
	/* fields below belong to the I/O thread only */
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
	uint8_t *rbuf;
	struct kvc_call *table;                 /* unresolved calls */
	struct kvc_call *send_head, *send_tail; /* frames to write, in order */
};

/* Create the I/O thread's descriptors and start it (kvc_connect).  0, or
 * -errno with this thread's message set; kvc_io_stop() cleans up either way. */
int kvc_io_start(struct kvc *kvc);
/* Stop the I/O thread (kvc->stop set under kvc->lock first), join it, close
 * its descriptors.  Also after kvc_io_start() failed or never ran. */
void kvc_io_stop(struct kvc *kvc);

#endif /* KVFS_CLIENT_KVC_I_H */
