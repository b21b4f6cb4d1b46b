/* SPDX-License-Identifier: MIT */
/*
 * kv-server core.  One epoll loop owns: the listening socket, every client
 * connection, a signalfd (SIGTERM/SIGINT), and the eventfd of the engine's
 * completion queue.  Requests that move bytes by RDMA (GET into client
 * descriptors, PUT from client descriptors) become a struct srv_op that waits
 * for its engine completion; everything else is answered at once.
 *
 * Connection life (enum conn_state, driven by conn_drive()):
 *   HELLO   connected, ServerHello sent, waiting for the client's HELLO
 *   READY   serving requests
 *   CLOSING a fatal error or a refusal: flush what is queued, then close
 * Deadlines (check_deadlines()): a connection in HELLO is closed
 * hello_timeout_ms after it connected; a frame that started arriving must
 * complete within frame_timeout_ms (slow-loris), and queued responses must
 * make progress within frame_timeout_ms (a client that does not read); a
 * READY connection with nothing in flight may be closed after
 * idle_timeout_ms (off by default: clients keep connections open).
 * Reading stops while a connection has max_inflight RDMA ops or max_outbuf
 * bytes queued; bytes already received past that point wait in conn->stash.
 * A closed connection whose RDMA ops are still in flight stays allocated
 * (conn->ops > 0) until the last op completes, so ops never point at freed
 * memory; their values are unpinned and their reservations aborted then.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "kvfs/hmac.h"
#include "kvfs/log.h"
#include "kvfs/util.h"
#include "kvfs/wire.h"
#include "kvfs/xfer.h"
#include "server.h"

#define TAG "server"

enum conn_state {
	CONN_HELLO,   /* waiting for the client's HELLO */
	CONN_READY,   /* serving */
	CONN_CLOSING, /* flushing the last responses, then close */
};

struct conn {
	struct srv *srv;
	struct conn *next, *prev;
	int fd;
	enum conn_state state;
	char name[80]; /* peer address, for logs */
	uint64_t serial;
	struct wire_reader rd;
	uint8_t *out; /* queued response bytes */
	size_t out_len, out_off, out_cap;
	uint8_t nonce[WIRE_AUTH_NONCE_LEN];
	bool rdma;
	xfer_peer_t peer;
	unsigned ops;            /* RDMA ops in flight for this connection */
	bool closed;             /* fd closed, waiting for ops to drain */
	bool reading;            /* EPOLLIN armed */
	bool want_out;           /* EPOLLOUT armed */
	bool corked;             /* serving one read: answers wait for its end (conn_read) */
	uint64_t hello_deadline; /* CONN_HELLO: close at this time (ms) */
	uint64_t frame_deadline; /* a frame is partly received: complete by then; 0 = none */
	uint64_t out_deadline;   /* output queued: some must be sent by then; 0 = none */
	uint64_t last_recv;      /* last time bytes arrived (ms), for idle_timeout_ms */
	uint8_t *stash;          /* received, not yet fed: reading paused mid-chunk */
	size_t stash_len, stash_off;
};

enum srv_op_kind { OP_GET, OP_PUT };

struct srv_op {
	enum srv_op_kind kind;
	struct conn *conn;
	uint64_t id;
	struct store_item *item; /* GET: pinned */
	struct store_resv *resv; /* PUT: reserved */
	struct store_put_cond cond;
	uint32_t mode;
	uint64_t mtime;
	uint64_t bytes; /* GET: bytes being written */
	xfer_peer_t peer;
	struct xfer_rsge *rsge;
};

/* What one client (its engine address) holds in failed transfers whose
 * memory its provider has not given back yet (op_complete() to
 * op_settled()).  Only clients holding something have an entry. */
struct srv_held {
	xfer_peer_t peer;
	uint64_t bytes;
};

struct srv {
	struct srv_opts o;
	char host[256];
	uint16_t port;
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
	uint8_t token[256];
	size_t tokenlen;
	bool auth;
	bool stopping;
	unsigned ops;       /* RDMA ops in flight, all connections */
	unsigned unsettled; /* failed ops whose arena range the provider still holds */
	uint64_t unsettled_bytes;
	struct srv_held *held; /* per client, see srv_held */
	size_t nheld, held_cap;
	struct {
		uint64_t gets, puts, deletes, lists, renames, setattrs, stats, stat_calls;
		uint64_t get_bytes, put_bytes, rdma_gets, rdma_puts, inline_gets, inline_puts;
		uint64_t errors, rdma_failures, conns_total, conns_refused, auth_failures;
		uint64_t bad_frames, refused_keys, refused_held;
		uint64_t closed_hello, closed_slow, closed_idle;
	} c;
	bool resume;       /* a connection with stashed bytes may read again */
	struct conn *dead; /* closed, no ops left: freed at the end of the loop turn */
};

/* epoll tags: pointers to these mark the non-connection fds. */
static char tag_listen, tag_signal, tag_cq;

void srv_opts_init(struct srv_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->listen = "127.0.0.1:7070";
	o->memory = 1ULL << 30;
	o->provider = "auto";
	o->eviction = STORE_EVICT_LRU;
	o->max_inline = 64 * 1024;
	o->max_conns = 1024;
	o->max_inflight = 64;
	o->max_outbuf = 8 * 1024 * 1024;
	o->max_frame = WIRE_MAX_FRAME_DEFAULT;
	o->timeout_ms = 10000;
	o->hello_timeout_ms = 10000;
	o->frame_timeout_ms = 10000;
	o->idle_timeout_ms = 0;
	o->max_held = 0; /* 1/8 of memory */
}

/* Queued-output capacity kept between responses; a larger buffer is freed
 * once drained, so one big response does not pin memory. */
#define SRV_OUT_KEEP ((size_t)(256 * 1024))
/* Answers collected while one read's frames are served (conn_read). */
#define SRV_CORK_MAX ((size_t)(64 * 1024))

/* ------------------------------------------------------------------ */
/* Output                                                              */

static void conn_arm(struct conn *c)
{
	struct epoll_event ev = {.data.ptr = c};
	bool rd = c->state != CONN_CLOSING && !c->srv->stopping &&
	          c->ops < c->srv->o.max_inflight && c->out_len - c->out_off < c->srv->o.max_outbuf;
	bool wr = c->out_off < c->out_len;

	if (c->closed || (rd == c->reading && wr == c->want_out))
		return;
	if (rd && !c->reading) {
		if (c->stash_len)
			c->srv->resume = true; /* no EPOLLIN may come for those bytes */
		if (c->frame_deadline)         /* the pause was ours: restart the clock */
			c->frame_deadline = kv_now_ms() + (uint64_t)c->srv->o.frame_timeout_ms;
	}
	ev.events = (rd ? EPOLLIN : 0) | (wr ? EPOLLOUT : 0) | EPOLLRDHUP;
	epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->fd, &ev);
	c->reading = rd;
	c->want_out = wr;
}

static void conn_close(struct conn *c, const char *why);

/* Write what is queued; returns 0 or a negative errno (connection dead).
 * Keeps out_deadline: set while output waits, moved on by any progress. */
static int conn_flush(struct conn *c)
{
	bool sent = false;

	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return -errno;
		}
		c->out_off += (size_t)n;
		sent = true;
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		c->out_deadline = 0;
		if (c->out_cap > SRV_OUT_KEEP) {
			free(c->out);
			c->out = NULL;
			c->out_cap = 0;
		}
	} else if (sent || !c->out_deadline) {
		c->out_deadline = kv_now_ms() + (uint64_t)c->srv->o.frame_timeout_ms;
	}
	return 0;
}

static int conn_queue(struct conn *c, enum wire_frame_type type, const ProtobufCMessage *m)
{
	size_t need = wire_frame_size(m), len;
	int r;

	if (c->closed)
		return -EPIPE;
	if (c->out_off && c->out_len + need > c->out_cap) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + need > c->out_cap) {
		/* Doubling, but not past what max_outbuf lets accumulate. */
		size_t ncap = KV_MAX(KV_MIN(c->out_cap * 2, c->srv->o.max_outbuf + need),
		                     c->out_len + need);
		uint8_t *n = realloc(c->out, ncap);

		if (!n)
			return -ENOMEM;
		c->out = n;
		c->out_cap = ncap;
	}
	r = wire_encode(type, m, WIRE_MAX_FRAME_MAX, c->out + c->out_len, c->out_cap - c->out_len,
	                &len);
	if (r < 0)
		return r;
	c->out_len += len;
	/* While frames of one read are served, small answers collect and go
	 * out together when it ends; past SRV_CORK_MAX they go at once, so
	 * max_outbuf still pauses reading. */
	if (c->corked && c->out_len - c->out_off < KV_MIN(SRV_CORK_MAX, c->srv->o.max_outbuf))
		return 0;
	r = conn_flush(c);
	if (r < 0) {
		conn_close(c, "send failed");
		return r;
	}
	conn_arm(c);
	return 0;
}

/* Answer @id with @status (0 or negative errno) and @body. */
static void respond(struct conn *c, uint64_t id, int err, const char *msg, Kvfs__Response *resp)
{
	Kvfs__Response def = KVFS__RESPONSE__INIT;

	if (!resp)
		resp = &def;
	resp->id = id;
	if (err) {
		resp->has_status = true;
		resp->status = wire_errno_to_status(err);
		resp->message = (char *)(msg ? msg : strerror(-err));
		resp->body_case = KVFS__RESPONSE__BODY__NOT_SET;
		c->srv->c.errors++;
	}
	if (conn_queue(c, WIRE_FRAME_RESPONSE, &resp->base) < 0)
		KV_DEBUG(TAG, "%s: response %llu dropped", c->name, (unsigned long long)id);
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */

/* Called when a connection is closed and its last operation is done. */
static void conn_free(struct conn *c)
{
	struct srv *s = c->srv;
	const struct conn *o;

	/* Release the client's engine from ours (without this every connection
	 * ever made kept an address-vector entry: over shm a 16 MiB mapping of
	 * the client's region, found by kv-soak --reconnect), unless another
	 * open connection from the same engine still uses it. */
	if (c->rdma && s->eng) {
		for (o = s->conns; o && !(o->rdma && o->peer == c->peer); o = o->next)
			;
		if (!o)
			xfer_peer_remove(s->eng, c->peer);
	}
	wire_reader_fini(&c->rd);
	free(c->out);
	free(c->stash);
	free(c);
}

/* Free closed @c after the current epoll batch (srv_free_dead()), never
 * inside it: the batch may still hold an event for @c, collected before
 * it was closed (a use-after-free under ASan when the last completion of
 * a closed connection freed it at once). */
static void conn_defer_free(struct conn *c)
{
	c->next = c->srv->dead;
	c->srv->dead = c;
}

static void conn_close(struct conn *c, const char *why)
{
	struct srv *s = c->srv;

	if (c->closed)
		return;
	/* A client that resets before its HELLO is routine (the client library
	 * learns its route on one connection, then opens its engine and says
	 * HELLO on a second): debug, like a plain close. */
	bool routine = !why || !strcmp(why, "client closed") ||
	               (c->state == CONN_HELLO && !strcmp(why, strerror(ECONNRESET)));

	KV_LOG(routine ? KV_LOG_DEBUG : KV_LOG_INFO, TAG, "%s: connection closed: %s", c->name,
	       why ? why : "done");
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->closed = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	/* Not freed here: the callers up the stack (dispatch, conn_feed) still
	 * look at @c.  Ops in flight hand it on at their last completion. */
	if (c->ops == 0)
		conn_defer_free(c);
}

static void srv_free_dead(struct srv *s)
{
	while (s->dead) {
		struct conn *c = s->dead;

		s->dead = c->next;
		conn_free(c);
	}
}

static void fmt_sockaddr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char h[INET6_ADDRSTRLEN] = "?";
	uint16_t port = 0;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)ss;
		inet_ntop(AF_INET, &a->sin_addr, h, sizeof(h));
		port = ntohs(a->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof(h));
		port = ntohs(a->sin6_port);
	}
	snprintf(buf, len, "%s:%u", h, port);
}

int srv_adopt_fd(struct srv *s, int fd, const char *name)
{
	struct epoll_event ev;
	Kvfs__ServerHello sh = KVFS__SERVER_HELLO__INIT;
	struct conn *c;
	int one = 1;

	s->c.conns_total++;
	if (s->nconns >= s->o.max_conns) {
		s->c.conns_refused++;
		KV_WARN_RL(TAG, "refusing a connection: %u connections open (--max-conns)",
		           s->nconns);
		close(fd);
		return -EMFILE;
	}
	c = calloc(1, sizeof(*c));
	if (!c || wire_reader_init(&c->rd, s->o.max_frame, WIRE_ACCEPT_SERVER) < 0) {
		free(c);
		close(fd);
		return -ENOMEM;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->srv = s;
	c->fd = fd;
	c->serial = ++s->serial;
	c->state = CONN_HELLO;
	c->last_recv = kv_now_ms();
	c->hello_deadline = c->last_recv + (uint64_t)s->o.hello_timeout_ms;
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.ptr = c;
	c->reading = true;
	epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
	KV_DEBUG(TAG, "%s: connected", c->name);

	sh.min_version = WIRE_VERSION_MIN;
	sh.max_version = WIRE_VERSION_MAX;
	sh.server_id = "kv-server " KVFS_VERSION;
	if (s->auth) {
		kv_random_bytes(c->nonce, sizeof(c->nonce));
		sh.has_auth_nonce = true;
		sh.auth_nonce.data = c->nonce;
		sh.auth_nonce.len = sizeof(c->nonce);
	}
	conn_queue(c, WIRE_FRAME_SERVER_HELLO, &sh.base);
	return 0;
}

static void srv_accept(struct srv *s)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char name[80];
		int fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				KV_WARN_RL(TAG, "accept: %s", strerror(errno));
			return;
		}
		fmt_sockaddr(&ss, name, sizeof(name));
		srv_adopt_fd(s, fd, name);
	}
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */

static void fill_entry(Kvfs__Entry *e, const struct store_item *it)
{
	size_t kl;

	e->key.data = (uint8_t *)store_item_key(it, &kl);
	e->key.len = kl;
	e->size = store_item_size(it);
	e->version = store_item_version(it);
	e->has_mtime_ns = true;
	e->mtime_ns = (int64_t)store_item_mtime(it);
	e->has_mode = true;
	e->mode = store_item_mode(it);
}

static uint64_t now_realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t srv_max_value(struct srv *s)
{
	struct store_stats st;

	store_get_stats(s->store, &st);
	return s->o.max_value ? KV_MIN(s->o.max_value, st.arena_usable) : st.arena_usable;
}

/*
 * A shm peer shares this host: watch its process (HELLO's pid) so that the
 * engine posts nothing more to it once it has exited.  libfabric's shm
 * provider takes a spin lock inside the peer's memory region for every
 * post; a client killed while holding it would otherwise stall our
 * progress thread, and every transfer with it, for good.
 */
static void conn_watch_peer(struct srv *s, struct conn *c, const Kvfs__HelloRequest *h)
{
	int fd;

	if (!h->has_pid || h->pid == 0 || strncmp(xfer_provider(s->eng), "shm", 3))
		return;
	fd = (int)syscall(SYS_pidfd_open, (pid_t)h->pid, 0);
	if (fd < 0) {
		KV_DEBUG(TAG, "%s: cannot watch process %u: %s", c->name, h->pid, strerror(errno));
		return;
	}
	xfer_peer_watch(s->eng, c->peer, fd);
}

static void do_hello(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__HelloRequest *h = rq->hello;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__HelloResponse hr = KVFS__HELLO_RESPONSE__INIT;
	uint8_t addr[XFER_ADDR_MAX], proof[32], sproof[32];
	size_t alen = sizeof(addr);
	uint32_t v;

	if (c->state != CONN_HELLO) {
		respond(c, rq->id, -EPROTO, "HELLO sent twice", NULL);
		return;
	}
	if (s->auth) {
		uint8_t m[sizeof(WIRE_AUTH_CLIENT_LABEL) + WIRE_AUTH_NONCE_LEN];
		size_t ll = strlen(WIRE_AUTH_CLIENT_LABEL);

		memcpy(m, WIRE_AUTH_CLIENT_LABEL, ll);
		memcpy(m + ll, c->nonce, WIRE_AUTH_NONCE_LEN);
		kv_hmac_sha256(s->token, s->tokenlen, m, ll + WIRE_AUTH_NONCE_LEN, proof);
		if (!h->has_auth_proof || h->auth_proof.len != sizeof(proof) ||
		    !wire_ct_equal(h->auth_proof.data, proof, sizeof(proof))) {
			s->c.auth_failures++;
			KV_WARN(TAG, "%s: authentication failed", c->name);
			/* the client advises: it knows how its user gives the token */
			respond(c, rq->id, -EACCES, "authentication failed", NULL);
			c->state = CONN_CLOSING;
			return;
		}
	}
	v = KV_MIN(h->max_version, (uint32_t)WIRE_VERSION_MAX);
	if (h->min_version > h->max_version || v < h->min_version || v < WIRE_VERSION_MIN) {
		char m[128];

		snprintf(m, sizeof(m), "no common protocol version: client %u-%u, server %u-%u",
		         h->min_version, h->max_version, WIRE_VERSION_MIN, WIRE_VERSION_MAX);
		respond(c, rq->id, -ENOTSUP, m, NULL);
		c->state = CONN_CLOSING;
		return;
	}
	hr.version = v;
	hr.max_frame = s->o.max_frame;
	hr.max_value = srv_max_value(s);
	hr.chunk_size = s->eng ? xfer_chunk_size(s->eng) : 0;
	hr.has_max_inline = true;
	hr.max_inline = s->o.max_inline;
	hr.has_max_inflight = true;
	hr.max_inflight = s->o.max_inflight;
	hr.server_id = "kv-server " KVFS_VERSION;
	hr.has_rdma = true;
	hr.rdma = false;
	if (s->eng) {
		hr.provider = (char *)xfer_provider(s->eng);
		if (xfer_addr(s->eng, addr, &alen) == 0) {
			hr.has_engine_addr = true;
			hr.engine_addr.data = addr;
			hr.engine_addr.len = alen;
		}
		if (h->provider && !strcmp(h->provider, xfer_provider(s->eng)) &&
		    h->has_engine_addr) {
			int r = xfer_peer_add(s->eng, h->engine_addr.data, h->engine_addr.len,
			                      &c->peer);
			if (r == 0) {
				c->rdma = true;
				conn_watch_peer(s, c, h);
			} else
				KV_INFO(TAG, "%s: cannot add its engine address: %s; inline only",
				        c->name, strerror(-r));
		} else {
			KV_DEBUG(TAG, "%s: provider %s vs ours %s: inline only", c->name,
			         h->provider ? h->provider : "(none)", xfer_provider(s->eng));
		}
		hr.rdma = c->rdma;
	}
	if (s->auth && h->has_client_nonce && h->client_nonce.len == WIRE_AUTH_NONCE_LEN) {
		uint8_t m[sizeof(WIRE_AUTH_SERVER_LABEL) + WIRE_AUTH_NONCE_LEN * 2];
		size_t ll = strlen(WIRE_AUTH_SERVER_LABEL);

		memcpy(m, WIRE_AUTH_SERVER_LABEL, ll);
		memcpy(m + ll, h->client_nonce.data, WIRE_AUTH_NONCE_LEN);
		memcpy(m + ll + WIRE_AUTH_NONCE_LEN, c->nonce, WIRE_AUTH_NONCE_LEN);
		kv_hmac_sha256(s->token, s->tokenlen, m, ll + 2 * WIRE_AUTH_NONCE_LEN, sproof);
		hr.has_server_proof = true;
		hr.server_proof.data = sproof;
		hr.server_proof.len = sizeof(sproof);
	}
	c->state = CONN_READY;
	KV_INFO(TAG, "%s: hello from %s, provider %s, %s", c->name,
	        h->client_id ? h->client_id : "client", h->provider ? h->provider : "none",
	        c->rdma ? "RDMA" : "inline only");
	resp.body_case = KVFS__RESPONSE__BODY_HELLO;
	resp.hello = &hr;
	respond(c, rq->id, 0, NULL, &resp);
}

/* ------------------------------------------------------------------ */
/* Failed transfers held per client                                    */

static struct srv_held *held_find(struct srv *s, xfer_peer_t peer)
{
	for (size_t i = 0; i < s->nheld; i++)
		if (s->held[i].peer == peer)
			return &s->held[i];
	return NULL;
}

/* @op failed with part of it still posted: its memory stays held until
 * op_settled().  Without room for the entry the cap does not see it (the
 * server-wide counters still do). */
static void held_add(struct srv *s, struct srv_op *op)
{
	struct srv_held *h = held_find(s, op->peer);

	s->unsettled++;
	s->unsettled_bytes += op->bytes;
	if (!h && s->nheld == s->held_cap) {
		size_t ncap = s->held_cap ? s->held_cap * 2 : 8;
		void *n = realloc(s->held, ncap * sizeof(*s->held));

		if (!n)
			return;
		s->held = n;
		s->held_cap = ncap;
	}
	if (!h) {
		h = &s->held[s->nheld++];
		h->peer = op->peer;
		h->bytes = 0;
	}
	h->bytes += op->bytes;
}

static void held_sub(struct srv *s, struct srv_op *op)
{
	struct srv_held *h = held_find(s, op->peer);

	s->unsettled--;
	s->unsettled_bytes -= op->bytes;
	if (!h)
		return;
	h->bytes -= KV_MIN(h->bytes, op->bytes);
	if (!h->bytes)
		*h = s->held[--s->nheld];
}

/* Refuse an RDMA GET or PUT of @len bytes from a client that already holds
 * failed transfers (a slow or cut link): each attempt that reaches the
 * server and fails the same way holds one more value's memory, until the
 * link is back or TCP gives up on it.  Other clients keep their room.
 * Answers BUSY and returns true when refused. */
static bool held_refuse(struct conn *c, uint64_t id, uint64_t len)
{
	struct srv *s = c->srv;
	struct srv_held *h = held_find(s, c->peer);
	char a[32], b[32], msg[240];

	if (!h || h->bytes + len <= s->o.max_held)
		return false;
	s->c.refused_held++;
	KV_WARN_RL(TAG,
	           "%s: refused a transfer of %llu bytes: the client holds %llu bytes in "
	           "failed transfers not yet given back (--max-held %llu)",
	           c->name, (unsigned long long)len, (unsigned long long)h->bytes,
	           (unsigned long long)s->o.max_held);
	snprintf(msg, sizeof(msg),
	         "this client already holds %s of the server's memory in earlier transfers "
	         "that failed and have not come back (a slow or cut link?); the server's "
	         "limit is %s (--max-held)",
	         kv_fmt_size(h->bytes, a, sizeof(a)), kv_fmt_size(s->o.max_held, b, sizeof(b)));
	respond(c, id, -EAGAIN, msg, NULL);
	return true;
}

static void op_free(struct srv_op *op)
{
	free(op->rsge);
	free(op);
}

/* An RDMA op with room for @nseg remote pieces; NULL on ENOMEM. */
static struct srv_op *op_new(size_t nseg)
{
	struct srv_op *op = calloc(1, sizeof(*op));

	if (op)
		op->rsge = calloc(nseg, sizeof(*op->rsge));
	if (op && !op->rsge) {
		free(op);
		op = NULL;
	}
	return op;
}

/* What a client is told when op_submit() fails with @err. */
static const char *submit_error_msg(int err, const char *what)
{
	if (err == -EDEADLK) /* xfer_submit(): the engine's watchdog saw it stuck */
		return "the server's transfer engine is stuck in its provider (see the server "
		       "log); restart kv-server";
	return what;
}

static int op_submit(struct conn *c, struct srv_op *op, enum xfer_opcode opc, uint64_t arena_off,
                     uint64_t len, size_t nrsge)
{
	struct srv *s = c->srv;
	struct xfer_sge l = {.mr = s->arena_mr, .off = arena_off, .len = len};
	struct xfer_op x = {.opcode = opc,
	                    .peer = c->peer,
	                    .local = &l,
	                    .nlocal = 1,
	                    .remote = op->rsge,
	                    .nremote = nrsge,
	                    .timeout_ms = s->o.timeout_ms,
	                    .notify_settled = true, /* see op_settled() */
	                    .cookie = (uint64_t)(uintptr_t)op,
	                    .cq = s->cq};
	int r;

	op->peer = c->peer; /* held_add() may outlive the connection */
	r = xfer_submit(s->eng, &x);
	if (r < 0)
		return r;
	c->ops++;
	s->ops++;
	conn_arm(c);
	return 0;
}

/* Cut @rsge (n entries) down to @len bytes; returns the new count. */
static size_t rsge_trim(struct xfer_rsge *rsge, size_t n, uint64_t len)
{
	size_t i;

	for (i = 0; i < n && len; i++) {
		if (rsge[i].len > len)
			rsge[i].len = len;
		len -= rsge[i].len;
	}
	return i;
}

static void do_get(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__GetRequest *g = rq->get;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__GetResponse gr = KVFS__GET_RESPONSE__INIT;
	struct store_item *it;
	struct srv_op *op;
	uint64_t size, off = g->has_offset ? g->offset : 0, n, cap = 0;
	size_t nr = 0;
	int r;

	s->c.gets++;
	if (g->n_dst && (!c->rdma || !s->eng)) {
		respond(c, rq->id, -ENOTSUP, "no RDMA on this connection: ask for inline data",
		        NULL);
		return;
	}
	r = store_get(s->store, (const char *)g->key.data, g->key.len, &it);
	if (r < 0) {
		respond(c, rq->id, r, r == -ENOENT ? "no such key" : NULL, NULL);
		return;
	}
	if (g->has_if_version && g->if_version && g->if_version != store_item_version(it)) {
		store_item_unpin(s->store, it);
		respond(c, rq->id, -ESTALE, "value changed (version mismatch)", NULL);
		return;
	}
	size = store_item_size(it);
	n = off >= size ? 0 : size - off;
	if (g->has_length)
		n = KV_MIN(n, g->length);
	gr.size = size;
	gr.version = store_item_version(it);
	gr.has_mtime_ns = gr.has_mode = true;
	gr.mtime_ns = (int64_t)store_item_mtime(it);
	gr.mode = store_item_mode(it);
	resp.body_case = KVFS__RESPONSE__BODY_GET;
	resp.get = &gr;

	if (g->n_dst) {
		if (n && held_refuse(c, rq->id, n)) {
			store_item_unpin(s->store, it);
			return;
		}
		op = op_new(g->n_dst);
		if (!op) {
			store_item_unpin(s->store, it);
			respond(c, rq->id, -ENOMEM, NULL, NULL);
			return;
		}
		r = wire_segs_to_rsge(g->dst, g->n_dst, op->rsge, g->n_dst, &nr, &cap);
		if (r < 0) {
			store_item_unpin(s->store, it);
			op_free(op);
			respond(c, rq->id, r, "bad destination descriptors", NULL);
			return;
		}
		n = KV_MIN(n, cap);
		if (n) {
			nr = rsge_trim(op->rsge, nr, n);
			op->kind = OP_GET;
			op->conn = c;
			op->id = rq->id;
			op->item = it;
			op->bytes = n;
			r = op_submit(c, op, XFER_WRITE, store_item_offset(it) + off, n, nr);
			if (r == 0) {
				s->c.rdma_gets++;
				return; /* answered on completion */
			}
			store_item_unpin(s->store, it);
			op_free(op);
			respond(c, rq->id, r,
			        submit_error_msg(r, "cannot start the transfer to the client"),
			        NULL);
			return;
		}
		op_free(op);
	} else if (g->has_want_inline && g->want_inline) {
		n = KV_MIN(n, s->o.max_inline);
		gr.has_data = true;
		/* An offset past the end gives no bytes; the pointer must still
		 * stay inside the arena (the client picks @off). */
		gr.data.data = (uint8_t *)store_arena_base(s->store) + store_item_offset(it) +
		               KV_MIN(off, size);
		gr.data.len = n;
		s->c.inline_gets++;
	} else {
		n = 0;
	}
	gr.bytes = n;
	s->c.get_bytes += n;
	/* The inline bytes are encoded into the output buffer right here. */
	respond(c, rq->id, 0, NULL, &resp);
	store_item_unpin(s->store, it);
}

static void do_put(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__PutRequest *p = rq->put;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__PutResponse pr = KVFS__PUT_RESPONSE__INIT;
	struct store_put_cond cond = {0};
	struct store_resv *resv;
	struct srv_op *op;
	uint64_t len, tot = 0, ver;
	size_t nr = 0;
	int r;

	s->c.puts++;
	if (p->has_if_absent && p->if_absent && p->has_if_version) {
		respond(c, rq->id, -EINVAL, "if_absent and if_version together", NULL);
		return;
	}
	cond.if_absent = p->has_if_absent && p->if_absent;
	cond.if_version = p->has_if_version ? p->if_version : 0;
	if (p->has_value == (p->n_src > 0)) {
		respond(c, rq->id, -EINVAL,
		        "give exactly one of an inline value or source segments", NULL);
		return;
	}
	if (p->has_value) {
		len = p->value.len;
		if (len > s->o.max_inline) {
			respond(c, rq->id, -EFBIG, "inline value above max_inline", NULL);
			return;
		}
		if (p->has_length && p->length != len) {
			respond(c, rq->id, -EINVAL, "length differs from the inline value", NULL);
			return;
		}
	} else {
		if (!c->rdma || !s->eng) {
			respond(c, rq->id, -ENOTSUP,
			        "no RDMA on this connection: send the value inline", NULL);
			return;
		}
		if (!p->has_length) {
			respond(c, rq->id, -EINVAL, "length is required with source segments",
			        NULL);
			return;
		}
		len = p->length;
		if (held_refuse(c, rq->id, len))
			return;
	}
	r = store_put_begin(s->store, (const char *)p->key.data, p->key.len, len, &resv);
	if (r < 0) {
		respond(c, rq->id, r,
		        r == -ENOSPC  ? "server full: nothing can be evicted"
		        : r == -EFBIG ? "value larger than the server's --max-value"
		                      : NULL,
		        NULL);
		return;
	}
	if (p->has_value || len == 0) {
		if (len)
			memcpy((uint8_t *)store_arena_base(s->store) + store_resv_offset(resv),
			       p->value.data, len);
		r = store_put_commit(s->store, resv, &cond, p->has_mode ? p->mode : 0644,
		                     p->has_mtime_ns ? (uint64_t)p->mtime_ns : now_realtime_ns(),
		                     &ver);
		if (r < 0) {
			store_put_abort(s->store, resv);
			respond(c, rq->id, r, NULL, NULL);
			return;
		}
		s->c.inline_puts++;
		s->c.put_bytes += len;
		pr.version = ver;
		resp.body_case = KVFS__RESPONSE__BODY_PUT;
		resp.put = &pr;
		respond(c, rq->id, 0, NULL, &resp);
		return;
	}

	op = op_new(p->n_src);
	if (!op) {
		store_put_abort(s->store, resv);
		respond(c, rq->id, -ENOMEM, NULL, NULL);
		return;
	}
	r = wire_segs_to_rsge(p->src, p->n_src, op->rsge, p->n_src, &nr, &tot);
	if (r < 0 || tot != len) {
		store_put_abort(s->store, resv);
		op_free(op);
		respond(c, rq->id, r < 0 ? r : -EINVAL,
		        r < 0 ? "bad source descriptors"
		              : "length differs from the source segments",
		        NULL);
		return;
	}
	op->kind = OP_PUT;
	op->conn = c;
	op->id = rq->id;
	op->resv = resv;
	op->cond = cond;
	op->mode = p->has_mode ? p->mode : 0644;
	op->mtime = p->has_mtime_ns ? (uint64_t)p->mtime_ns : 0;
	op->bytes = len;
	r = op_submit(c, op, XFER_READ, store_resv_offset(resv), len, nr);
	if (r < 0) {
		store_put_abort(s->store, resv);
		op_free(op);
		respond(c, rq->id, r,
		        submit_error_msg(r, "cannot start the transfer from the client"), NULL);
		return;
	}
	s->c.rdma_puts++;
}

/* A transfer error that means the connection to the peer is gone. */
static bool conn_failure(int err)
{
	switch (-err) {
	case ECONNRESET:
	case ECANCELED:
	case ECONNABORTED:
	case ECONNREFUSED:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ENOTCONN:
	case EPIPE:
	case ESHUTDOWN:
		return true;
	default:
		return false;
	}
}

/* The provider gave back the last segment of an op that had failed with
 * some still posted (xfer_comp.unsettled): only now may its arena range be
 * reused.  Before, a client paused past the deadline sent the rest of its
 * PUT late, into a range that by then held another value. */
static void op_settled(struct srv *s, struct srv_op *op)
{
	if (op->kind == OP_GET)
		store_item_unpin(s->store, op->item);
	else
		store_put_abort(s->store, op->resv);
	held_sub(s, op);
	KV_DEBUG(TAG, "a failed %s's %llu bytes are back from the provider; %u still held",
	         op->kind == OP_GET ? "GET" : "PUT", (unsigned long long)op->bytes, s->unsettled);
	op_free(op);
}

static void op_complete(struct srv *s, struct srv_op *op, int status, bool unsettled)
{
	struct conn *c = op->conn;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__GetResponse gr = KVFS__GET_RESPONSE__INIT;
	Kvfs__PutResponse pr = KVFS__PUT_RESPONSE__INIT;
	const char *msg = NULL;
	uint64_t ver;
	int r = status;

	if (status < 0) {
		s->c.rdma_failures++;
		msg = status == -ETIMEDOUT ? "RDMA transfer timed out"
		                           : "RDMA transfer failed (client memory not reachable)";
		KV_INFO(TAG, "%s: %s %s: %s", c->name, op->kind == OP_GET ? "GET" : "PUT", msg,
		        strerror(-status));
		/* The client sees TIMEOUT, STALE or IO, whatever the provider said
		 * (its codes mean nothing to a client).  STALE when the transfer
		 * connection to the client failed and nothing was committed: the
		 * client reconnects (a new Hello adds its engine again) and
		 * resends.  ECANCELED is what the provider gives operations queued
		 * on a connection it tears down, e.g. when a revived peer replaces
		 * a dead one after a network cut; tcp also reports a refused
		 * remote key that way, which then ends at the client's deadline. */
		if (!c->closed && conn_failure(status))
			r = -ECONNRESET;
		else if (status != -ETIMEDOUT && status != -ECONNRESET)
			r = -EIO;
	}
	if (op->kind == OP_GET) {
		if (r == 0) {
			gr.bytes = op->bytes;
			gr.size = store_item_size(op->item);
			gr.version = store_item_version(op->item);
			gr.has_mtime_ns = gr.has_mode = true;
			gr.mtime_ns = (int64_t)store_item_mtime(op->item);
			gr.mode = store_item_mode(op->item);
			resp.body_case = KVFS__RESPONSE__BODY_GET;
			resp.get = &gr;
			s->c.get_bytes += op->bytes;
		}
		if (!unsettled)
			store_item_unpin(s->store, op->item);
	} else {
		if (r == 0) {
			r = store_put_commit(s->store, op->resv, &op->cond, op->mode,
			                     op->mtime ? op->mtime : now_realtime_ns(), &ver);
			if (r == 0) {
				pr.version = ver;
				resp.body_case = KVFS__RESPONSE__BODY_PUT;
				resp.put = &pr;
				s->c.put_bytes += op->bytes;
			}
		}
		if (r < 0 && !unsettled)
			store_put_abort(s->store, op->resv);
	}
	if (unsettled) { /* op_settled() follows */
		KV_INFO(TAG,
		        "%s: %s: the provider still holds part of it; its %s stays held until "
		        "it gives it back",
		        c->name, op->kind == OP_GET ? "GET" : "PUT",
		        op->kind == OP_GET ? "value" : "reservation");
		op->conn = NULL;
		held_add(s, op);
	}
	c->ops--;
	s->ops--;
	if (c->closed) {
		if (c->ops == 0)
			conn_defer_free(c);
	} else {
		respond(c, op->id, r, msg, &resp);
		conn_arm(c);
	}
	if (!unsettled)
		op_free(op);
}

static void srv_reap(struct srv *s)
{
	struct xfer_comp comps[64];
	int n;

	while ((n = xfer_cq_poll(s->cq, comps, 64)) > 0)
		for (int i = 0; i < n; i++)
			if (comps[i].settled)
				op_settled(s, (struct srv_op *)(uintptr_t)comps[i].cookie);
			else
				op_complete(s, (struct srv_op *)(uintptr_t)comps[i].cookie,
				            comps[i].status, comps[i].unsettled);
}

struct list_ctx {
	Kvfs__ListResponse *lr;
	Kvfs__Entry *ents;
	size_t cap;
	size_t bytes, max_bytes;
	size_t limit;
	bool cut; /* stopped for size */
	const char *last;
	size_t lastlen;
};

static int list_cb(void *arg, const char *name, size_t namelen, const struct store_item *it,
                   bool prefix)
{
	struct list_ctx *l = arg;
	Kvfs__ListResponse *lr = l->lr;
	size_t need = namelen + 48 + (prefix && it ? namelen + 48 : 0);
	Kvfs__Entry *e;

	if (l->bytes + need > l->max_bytes) {
		l->cut = true;
		return -ENOSPC;
	}
	l->bytes += need;
	if (prefix) {
		lr->common_prefixes[lr->n_common_prefixes].data = (uint8_t *)name;
		lr->common_prefixes[lr->n_common_prefixes].len = namelen;
		lr->n_common_prefixes++;
	}
	if (it) { /* a key, or a prefix's marker */
		e = &l->ents[lr->n_entries + lr->n_prefix_markers];
		kvfs__entry__init(e);
		fill_entry(e, it);
		if (prefix)
			lr->prefix_markers[lr->n_prefix_markers++] = e;
		else
			lr->entries[lr->n_entries++] = e;
	}
	l->last = name;
	l->lastlen = namelen;
	return 0;
}

static void do_list(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__ListRequest *q = rq->list;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__ListResponse lr = KVFS__LIST_RESPONSE__INIT;
	struct store_list_req req = {0};
	struct list_ctx l = {.lr = &lr};
	bool truncated = false;
	size_t limit = q->has_limit && q->limit ? KV_MIN(q->limit, 10000u) : 1000;
	int r;

	s->c.lists++;
	if (q->has_delimiter && q->delimiter.len > 1) {
		respond(c, rq->id, -EINVAL, "the delimiter must be one byte", NULL);
		return;
	}
	req.prefix = q->has_prefix ? (const char *)q->prefix.data : NULL;
	req.prefixlen = q->has_prefix ? q->prefix.len : 0;
	req.delimiter = q->has_delimiter && q->delimiter.len ? (char)q->delimiter.data[0] : 0;
	req.start_after = q->has_start_after ? (const char *)q->start_after.data : NULL;
	req.start_after_len = q->has_start_after ? q->start_after.len : 0;
	req.limit = limit;
	l.limit = limit;
	l.max_bytes = WIRE_MAX_FRAME_DEFAULT - 64 * 1024;
	l.ents = calloc(limit, sizeof(*l.ents));
	lr.entries = calloc(limit, sizeof(*lr.entries));
	lr.common_prefixes = calloc(limit, sizeof(*lr.common_prefixes));
	lr.prefix_markers = calloc(limit, sizeof(*lr.prefix_markers));
	if (!l.ents || !lr.entries || !lr.common_prefixes || !lr.prefix_markers) {
		respond(c, rq->id, -ENOMEM, NULL, NULL);
		goto out_free;
	}
	r = store_list(s->store, &req, list_cb, &l, &truncated);
	if (r < 0 && !l.cut) {
		respond(c, rq->id, r, NULL, NULL);
		goto out_free;
	}
	if (l.cut)
		truncated = true;
	lr.has_truncated = true;
	lr.truncated = truncated;
	if (truncated && l.last) {
		lr.has_next_start_after = true;
		lr.next_start_after.data = (uint8_t *)l.last;
		lr.next_start_after.len = l.lastlen;
	}
	resp.body_case = KVFS__RESPONSE__BODY_LIST;
	resp.list = &lr;
	respond(c, rq->id, 0, NULL, &resp);
out_free:
	free(l.ents);
	free(lr.entries);
	free(lr.common_prefixes);
	free(lr.prefix_markers);
}

static void do_meta(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__Entry e = KVFS__ENTRY__INIT;
	const struct store_item *it;
	int r;

	switch (rq->body_case) {
	case KVFS__REQUEST__BODY_STAT: {
		Kvfs__StatResponse sr = KVFS__STAT_RESPONSE__INIT;

		s->c.stat_calls++;
		r = store_lookup(s->store, (const char *)rq->stat->key.data, rq->stat->key.len,
		                 &it);
		if (r < 0) {
			respond(c, rq->id, r, r == -ENOENT ? "no such key" : NULL, NULL);
			return;
		}
		fill_entry(&e, it);
		sr.entry = &e;
		resp.body_case = KVFS__RESPONSE__BODY_STAT;
		resp.stat = &sr;
		respond(c, rq->id, 0, NULL, &resp);
		return;
	}
	case KVFS__REQUEST__BODY_DELETE: {
		Kvfs__DeleteResponse dr = KVFS__DELETE_RESPONSE__INIT;
		const Kvfs__DeleteRequest *d = rq->delete_;
		uint64_t ver = 0;

		s->c.deletes++;
		r = store_delete(s->store, (const char *)d->key.data, d->key.len,
		                 d->has_if_version ? d->if_version : 0, &ver);
		if (r < 0) {
			respond(c, rq->id, r, r == -ENOENT ? "no such key" : NULL, NULL);
			return;
		}
		dr.has_version = true;
		dr.version = ver;
		resp.body_case = KVFS__RESPONSE__BODY_DELETE;
		resp.delete_ = &dr;
		respond(c, rq->id, 0, NULL, &resp);
		return;
	}
	case KVFS__REQUEST__BODY_RENAME: {
		Kvfs__RenameResponse rr = KVFS__RENAME_RESPONSE__INIT;
		const Kvfs__RenameRequest *m = rq->rename;

		s->c.renames++;
		r = store_rename(s->store, (const char *)m->src.data, m->src.len,
		                 (const char *)m->dst.data, m->dst.len,
		                 m->has_no_overwrite && m->no_overwrite, &it);
		if (r < 0) {
			respond(c, rq->id, r,
			        r == -ENOENT   ? "no such key"
			        : r == -EEXIST ? "destination exists"
			                       : NULL,
			        NULL);
			return;
		}
		rr.version = store_item_version(it);
		resp.body_case = KVFS__RESPONSE__BODY_RENAME;
		resp.rename = &rr;
		respond(c, rq->id, 0, NULL, &resp);
		return;
	}
	case KVFS__REQUEST__BODY_SETATTR: {
		Kvfs__SetAttrResponse ar = KVFS__SET_ATTR_RESPONSE__INIT;
		const Kvfs__SetAttrRequest *a = rq->setattr;
		unsigned which = (a->has_mode ? STORE_SET_MODE : 0) |
		                 (a->has_mtime_ns ? STORE_SET_MTIME : 0);

		s->c.setattrs++;
		r = store_setattr(s->store, (const char *)a->key.data, a->key.len, which,
		                  a->mode & 07777, (uint64_t)a->mtime_ns,
		                  a->has_if_version ? a->if_version : 0, &it);
		if (r < 0) {
			respond(c, rq->id, r, r == -ENOENT ? "no such key" : NULL, NULL);
			return;
		}
		fill_entry(&e, it);
		ar.entry = &e;
		resp.body_case = KVFS__RESPONSE__BODY_SETATTR;
		resp.setattr = &ar;
		respond(c, rq->id, 0, NULL, &resp);
		return;
	}
	default:
		respond(c, rq->id, -ENOTSUP, "unknown operation", NULL);
		return;
	}
}

static void do_stats(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__StatsResponse sr = KVFS__STATS_RESPONSE__INIT;
	struct store_stats st;
	struct xfer_stats xs = {0};
	Kvfs__Counter cs[64], *cp[64];
	size_t n = 0;

	s->c.stats++;
	store_get_stats(s->store, &st);
	if (s->eng)
		xfer_get_stats(s->eng, &xs);
#define CNT(nm, v)                                                                                 \
	do {                                                                                       \
		kvfs__counter__init(&cs[n]);                                                       \
		cs[n].name = (char *)(nm);                                                         \
		cs[n].value = (uint64_t)(v);                                                       \
		cp[n] = &cs[n];                                                                    \
		n++;                                                                               \
	} while (0)
	CNT("keys", st.keys);
	CNT("value_bytes", st.value_bytes);
	CNT("capacity_bytes", st.arena_usable);
	CNT("free_bytes", st.arena_free);
	CNT("largest_free_bytes", st.largest_free);
	CNT("evictions", st.evictions);
	CNT("evicted_bytes", st.evicted_bytes);
	CNT("pinned_items", st.pinned_items);
	CNT("pinned_bytes", st.pinned_bytes);
	CNT("reservations", st.resv_count);
	CNT("reserved_bytes", st.resv_bytes);
	CNT("meta_bytes", st.meta_bytes);
	CNT("overhead_bytes", st.overhead_bytes);
	CNT("max_value", srv_max_value(s));
	CNT("connections", s->nconns);
	CNT("connections_total", s->c.conns_total);
	CNT("connections_refused", s->c.conns_refused);
	CNT("auth_failures", s->c.auth_failures);
	CNT("bad_frames", s->c.bad_frames);
	CNT("refused_keys", s->c.refused_keys);
	CNT("closed_hello_timeout", s->c.closed_hello);
	CNT("closed_slow", s->c.closed_slow);
	CNT("closed_idle", s->c.closed_idle);
	CNT("gets", s->c.gets);
	CNT("puts", s->c.puts);
	CNT("deletes", s->c.deletes);
	CNT("lists", s->c.lists);
	CNT("renames", s->c.renames);
	CNT("setattrs", s->c.setattrs);
	CNT("stat_calls", s->c.stat_calls);
	CNT("get_bytes", s->c.get_bytes);
	CNT("put_bytes", s->c.put_bytes);
	CNT("rdma_gets", s->c.rdma_gets);
	CNT("rdma_puts", s->c.rdma_puts);
	CNT("inline_gets", s->c.inline_gets);
	CNT("inline_puts", s->c.inline_puts);
	CNT("errors", s->c.errors);
	CNT("rdma_failures", s->c.rdma_failures);
	CNT("rdma_inflight", s->ops);
	CNT("rdma_unsettled", s->unsettled); /* failed, memory not yet given back */
	CNT("rdma_unsettled_bytes", s->unsettled_bytes);
	CNT("refused_held", s->c.refused_held); /* BUSY: the client held too much */
	CNT("xfer_ops_done", xs.ops_done);
	CNT("xfer_ops_failed", xs.ops_failed);
	CNT("xfer_timeouts", xs.ops_timedout);
	CNT("xfer_stuck", xs.stuck); /* 1: a provider call has not returned (see xfer_submit) */
	CNT("xfer_stuck_events", xs.stuck_events);
	CNT("xfer_locks_released", xs.locks_released);
	CNT("xfer_resets", xs.resets);
#undef CNT
	sr.n_counters = n;
	sr.counters = cp;
	resp.body_case = KVFS__RESPONSE__BODY_STATS;
	resp.stats = &sr;
	respond(c, rq->id, 0, NULL, &resp);
}

static void dispatch(struct conn *c, const Kvfs__Request *rq)
{
	const char *why = NULL;
	int r;

	if (c->state == CONN_CLOSING)
		return;
	if (c->state == CONN_HELLO && rq->body_case != KVFS__REQUEST__BODY_HELLO) {
		respond(c, rq->id, c->srv->auth ? -EACCES : -EPROTO,
		        "the first request must be HELLO", NULL);
		c->state = CONN_CLOSING;
		return;
	}
	r = wire_request_check(rq, &why);
	if (r < 0) {
		if (wire_reason_is_key(why)) {
			c->srv->c.refused_keys++;
			KV_DEBUG(TAG, "%s: request %llu refused: %s", c->name,
			         (unsigned long long)rq->id, why);
		}
		respond(c, rq->id, r, why, NULL);
		return;
	}
	switch (rq->body_case) {
	case KVFS__REQUEST__BODY_HELLO:
		do_hello(c, rq);
		break;
	case KVFS__REQUEST__BODY_GET:
		do_get(c, rq);
		break;
	case KVFS__REQUEST__BODY_PUT:
		do_put(c, rq);
		break;
	case KVFS__REQUEST__BODY_LIST:
		do_list(c, rq);
		break;
	case KVFS__REQUEST__BODY_STATS:
		do_stats(c, rq);
		break;
	default:
		do_meta(c, rq);
		break;
	}
}

/* Decode and serve frames from @data until it is used up, the connection
 * must not read more (max_inflight, max_outbuf, closing) or it is closed.
 * Returns the bytes consumed. */
static size_t conn_feed(struct conn *c, const uint8_t *data, size_t len)
{
	struct srv *s = c->srv;
	size_t off = 0;
	bool done = false; /* a frame completed */

	while (off < len && !c->closed && c->reading) {
		struct wire_msg m;
		size_t used = 0;
		int r = wire_reader_feed(&c->rd, data + off, len - off, &used, &m);

		if (r < 0) {
			char why[200];

			s->c.bad_frames++;
			snprintf(why, sizeof(why), "bad frame: %s", wire_reader_error(&c->rd));
			KV_WARN(TAG, "%s: %s", c->name, why);
			conn_close(c, why);
			return len;
		}
		off += used;
		if (r == 0)
			break;
		done = true;
		dispatch(c, m.req);
		wire_msg_free(&m);
		if (c->state == CONN_CLOSING) {
			if (c->out_off >= c->out_len)
				conn_close(c, "refused");
			else
				conn_arm(c);
			return len;
		}
	}
	/* Slow-loris: a frame that has started must complete in time. */
	if (!c->closed) {
		if (!wire_reader_pending(&c->rd))
			c->frame_deadline = 0;
		else if (done || !c->frame_deadline)
			c->frame_deadline = kv_now_ms() + (uint64_t)s->o.frame_timeout_ms;
	}
	return off;
}

/* Read and serve; stops when the connection must not read more.  Bytes
 * received but not fed when it stops wait in the stash (at most one recv,
 * 64 KiB) and are fed first when reading resumes. */
static void conn_read_corked(struct conn *c)
{
	uint8_t buf[64 * 1024];

	while (!c->closed && c->reading) {
		size_t used;
		ssize_t n;

		if (c->stash_len) {
			used = conn_feed(c, c->stash + c->stash_off, c->stash_len - c->stash_off);
			if (c->closed)
				return;
			c->stash_off += used;
			if (c->stash_off == c->stash_len) {
				free(c->stash);
				c->stash = NULL;
				c->stash_len = c->stash_off = 0;
			}
			continue;
		}
		n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0) {
			conn_close(c, wire_reader_pending(&c->rd) ? "client closed mid-frame"
			                                          : "client closed");
			return;
		}
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			conn_close(c, strerror(errno));
			return;
		}
		c->last_recv = kv_now_ms();
		used = conn_feed(c, buf, (size_t)n);
		if (!c->closed && used < (size_t)n) {
			c->stash = malloc((size_t)n - used);
			if (!c->stash) {
				conn_close(c, "out of memory");
				return;
			}
			memcpy(c->stash, buf + used, (size_t)n - used);
			c->stash_len = (size_t)n - used;
			c->stash_off = 0;
		}
	}
}

/* Serve what can be read, then send the answers collected meanwhile with
 * one send where they fit (a client with many calls in flight gets them in
 * one segment instead of one send each). */
static void conn_read(struct conn *c)
{
	c->corked = true;
	conn_read_corked(c);
	c->corked = false;
	if (c->closed || c->out_off >= c->out_len)
		return;
	if (conn_flush(c) < 0) {
		conn_close(c, "send failed");
		return;
	}
	if (c->state == CONN_CLOSING && c->out_off >= c->out_len) {
		conn_close(c, "refused"); /* its refusal is out */
		return;
	}
	conn_arm(c);
}

/* Connections paused with stashed bytes that may read again: serve them
 * (no EPOLLIN announces bytes we already hold). */
static void srv_resume(struct srv *s)
{
	struct conn *c, *next;

	s->resume = false;
	for (c = s->conns; c; c = next) {
		next = c->next;
		if (c->stash_len && c->reading && !c->closed)
			conn_read(c);
	}
}

static void conn_event(struct conn *c, uint32_t ev)
{
	if ((ev & EPOLLOUT) && !c->closed) {
		if (conn_flush(c) < 0) {
			conn_close(c, "send failed");
			return;
		}
		if (c->state == CONN_CLOSING && c->out_off >= c->out_len) {
			conn_close(c, "refused");
			return;
		}
		conn_arm(c);
	}
	if ((ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !c->closed) {
		if (c->reading)
			conn_read(c);
		else if (ev & (EPOLLHUP | EPOLLERR))
			conn_close(c, "connection reset");
	}
}

/* ------------------------------------------------------------------ */
/* Setup and loop                                                      */

static int srv_listen(struct srv *s)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *ai, *a;
	char port[8], addr[sizeof(s->host) + 8];
	int r, one = 1;

	snprintf(port, sizeof(port), "%u", s->port);
	r = getaddrinfo(s->host, port, &hints, &ai);
	if (r) {
		fprintf(stderr, "kv-server: cannot resolve listen address %s: %s\n", s->host,
		        gai_strerror(r));
		return -EINVAL;
	}
	r = -EADDRNOTAVAIL;
	for (a = ai; a; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 512) == 0) {
			s->lfd = fd;
			r = 0;
			break;
		}
		r = -errno;
		close(fd);
	}
	freeaddrinfo(ai);
	if (r < 0)
		fprintf(stderr, "kv-server: cannot listen on %s: %s%s\n",
		        kv_fmt_hostport(s->host, s->port, addr, sizeof(addr)), strerror(-r),
		        r == -EADDRINUSE
		                ? " (another server runs there: pick another --listen port)"
		                : "");
	return r;
}

static int numeric_host(const char *host, char *out, size_t len)
{
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai;

	if (getaddrinfo(host, NULL, &hints, &ai))
		return -EINVAL;
	inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, out, (socklen_t)len);
	freeaddrinfo(ai);
	return 0;
}

int srv_create(const struct srv_opts *o, struct srv **ret)
{
	struct store_opts so = {0};
	struct epoll_event ev;
	struct srv *s;
	char bind_host[64];
	sigset_t mask;
	int r;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->o = *o;
	s->lfd = s->epfd = s->sigfd = -1;
	if (!s->o.max_held)
		s->o.max_held = KV_MAX(o->memory / 8, 1);
	r = o->listen ? kv_parse_hostport(o->listen, s->host, sizeof(s->host), 7070, &s->port) : 0;
	if (r < 0) {
		fprintf(stderr,
		        "kv-server: bad --listen '%s': use HOST:PORT, e.g. 127.0.0.1:7070\n",
		        o->listen);
		goto out_free;
	}
	if (o->auth_token_file) {
		r = kv_read_token_file(o->auth_token_file, (char *)s->token, sizeof(s->token),
		                       &s->tokenlen);
		if (r < 0) {
			fprintf(stderr,
			        "kv-server: cannot read --auth-token-file %s: %s (it must hold "
			        "one non-empty line)\n",
			        o->auth_token_file, strerror(-r));
			goto out_free;
		}
		s->auth = true;
	}

	if (strcmp(o->provider, "none")) {
		struct xfer_opts xo;

		xfer_opts_init(&xo);
		xo.provider = o->provider;
		xo.timeout_ms = o->timeout_ms;
		if (o->engine_bind)
			xo.node = o->engine_bind;
		else if (strcmp(s->host, "0.0.0.0") && strcmp(s->host, "::") &&
		         numeric_host(s->host, bind_host, sizeof(bind_host)) == 0)
			xo.node = bind_host;
		if (!strcmp(o->provider, "shm"))
			xo.node = NULL;
		r = xfer_open(&xo, &s->eng);
		if (r < 0) {
			fprintf(stderr,
			        "kv-server: cannot open transfer provider '%s'%s%s: %s (try "
			        "--provider tcp, or none for inline values only)\n",
			        o->provider, xo.node ? " on " : "", xo.node ? xo.node : "",
			        xfer_strerror(r));
			goto out_free;
		}
		r = xfer_cq_create(&s->cq);
		if (r < 0)
			goto out_close_eng;
		/* Local access only: clients never get remote access to the arena. */
		r = xfer_buf_alloc(s->eng, o->memory, XFER_ACCESS_LOCAL, &s->arena_mr);
		if (r < 0) {
			char b[32];

			fprintf(stderr,
			        "kv-server: cannot register %s with provider %s: %s (try a smaller "
			        "--memory)\n",
			        kv_fmt_size(o->memory, b, sizeof(b)), xfer_provider(s->eng),
			        strerror(-r));
			goto out_destroy_cq;
		}
		s->arena_len = o->memory;
		s->arena = xfer_mr_addr(s->arena_mr);
	} else {
		s->arena = mmap(NULL, o->memory, PROT_READ | PROT_WRITE,
		                MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (s->arena == MAP_FAILED) {
			r = -errno;
			fprintf(stderr, "kv-server: cannot allocate --memory: %s\n", strerror(-r));
			goto out_free;
		}
		s->arena_len = o->memory;
	}
	so.evict = o->eviction;
	so.max_value = o->max_value;
	r = store_create(s->arena, s->arena_len, &so, &s->store);
	if (r < 0) {
		fprintf(stderr, "kv-server: cannot create the store: %s (--memory too small?)\n",
		        strerror(-r));
		goto out_free_arena;
	}

	r = o->listen ? srv_listen(s) : 0;
	if (r < 0)
		goto out_destroy_store;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	s->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s->epfd < 0 || s->sigfd < 0) {
		r = -errno;
		goto out_close_fds;
	}
	ev.events = EPOLLIN;
	ev.data.ptr = &tag_listen;
	if (s->lfd >= 0)
		epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &ev);
	ev.data.ptr = &tag_signal;
	epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->sigfd, &ev);
	if (s->cq) {
		ev.data.ptr = &tag_cq;
		epoll_ctl(s->epfd, EPOLL_CTL_ADD, xfer_cq_fd(s->cq), &ev);
	}
	if (!s->auth && s->lfd >= 0 && strcmp(s->host, "127.0.0.1") && strcmp(s->host, "::1") &&
	    strcmp(s->host, "localhost"))
		KV_WARN(TAG,
		        "listening on %s without --auth-token-file: anyone who can reach it "
		        "can read and write every key",
		        s->host);
	*ret = s;
	return 0;

out_close_fds:
	if (s->sigfd >= 0)
		close(s->sigfd);
	if (s->epfd >= 0)
		close(s->epfd);
	if (s->lfd >= 0)
		close(s->lfd);
out_destroy_store:
	store_destroy(s->store);
out_free_arena:
	if (s->arena_mr)
		xfer_mr_dereg(s->arena_mr);
	else if (s->arena && s->arena != MAP_FAILED)
		munmap(s->arena, s->arena_len);
out_destroy_cq:
	xfer_cq_destroy(s->cq);
out_close_eng:
	xfer_close(s->eng);
out_free:
	free(s);
	return r;
}

static void check_deadlines(struct srv *s)
{
	uint64_t now = kv_now_ms();
	struct conn *c, *next;
	char why[128];

	for (c = s->conns; c; c = next) {
		next = c->next;
		if (c->state == CONN_HELLO && now >= c->hello_deadline) {
			s->c.closed_hello++;
			snprintf(why, sizeof(why), "no HELLO within %d ms (--hello-timeout)",
			         s->o.hello_timeout_ms);
			conn_close(c, why);
		} else if (c->frame_deadline && c->reading && now >= c->frame_deadline) {
			s->c.closed_slow++;
			snprintf(why, sizeof(why),
			         "frame not completed within %d ms (--frame-timeout): slow or "
			         "stalled client",
			         s->o.frame_timeout_ms);
			conn_close(c, why);
		} else if (c->out_deadline && now >= c->out_deadline) {
			s->c.closed_slow++;
			snprintf(why, sizeof(why),
			         "client took none of its %zu queued response bytes for %d ms "
			         "(--frame-timeout)",
			         c->out_len - c->out_off, s->o.frame_timeout_ms);
			conn_close(c, why);
		} else if (s->o.idle_timeout_ms > 0 && c->state == CONN_READY && !c->ops &&
		           !c->out_deadline && !c->frame_deadline && !c->stash_len &&
		           now - c->last_recv >= (uint64_t)s->o.idle_timeout_ms) {
			s->c.closed_idle++;
			snprintf(why, sizeof(why), "idle for %d ms (--idle-timeout)",
			         s->o.idle_timeout_ms);
			conn_close(c, why);
		}
	}
}

int srv_poll_once(struct srv *s, int timeout_ms)
{
	struct epoll_event evs[64];
	int n = epoll_wait(s->epfd, evs, 64, s->resume ? 0 : timeout_ms);

	if (n < 0 && errno != EINTR)
		return -errno;
	for (int i = 0; i < n; i++) {
		void *p = evs[i].data.ptr;

		if (p == &tag_listen) {
			srv_accept(s);
		} else if (p == &tag_signal) {
			struct signalfd_siginfo si;

			while (read(s->sigfd, &si, sizeof(si)) == sizeof(si)) {
				if (!s->stopping)
					KV_INFO(TAG, "signal %u: stopping (finishing %u transfers)",
					        si.ssi_signo, s->ops);
				s->stopping = true;
			}
		} else if (p == &tag_cq) {
			srv_reap(s);
		} else {
			conn_event(p, evs[i].events);
		}
	}
	if (s->resume)
		srv_resume(s);
	check_deadlines(s);
	srv_free_dead(s);
	return n > 0 ? n : 0;
}

int srv_run(struct srv *s)
{
	uint64_t stop_deadline = 0;
	char b[32], addr[sizeof(s->host) + 8];

	fprintf(stderr, "kv-server: listening on %s (provider %s, memory %s, eviction %s%s)\n",
	        kv_fmt_hostport(s->host, s->port, addr, sizeof(addr)),
	        s->eng ? xfer_provider(s->eng) : "none", kv_fmt_size(s->arena_len, b, sizeof(b)),
	        s->o.eviction == STORE_EVICT_LRU ? "lru" : "none", s->auth ? ", auth" : "");
	for (;;) {
		int r = srv_poll_once(s, 1000);

		if (r < 0)
			return r;
		if (s->stopping) {
			struct conn *c, *next;

			if (!stop_deadline) {
				stop_deadline = kv_now_ms() + (uint64_t)s->o.timeout_ms + 2000;
				epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->lfd, NULL);
				close(s->lfd);
				s->lfd = -1;
				for (c = s->conns; c; c = c->next)
					conn_arm(c);
			}
			if (s->ops == 0 || kv_now_ms() >= stop_deadline) {
				for (c = s->conns; c; c = next) {
					next = c->next;
					conn_flush(c);
					conn_close(c, "server stopping");
				}
				break;
			}
		}
	}
	KV_INFO(TAG, "stopped");
	return 0;
}

void srv_destroy(struct srv *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_close(s->conns, "server stopping");
	srv_free_dead(s);
	if (s->eng) {
		/* srv_run() waited for every transfer (bounded by their
		 * deadlines); whatever is left fails into the cq at close and
		 * only unpins or aborts, never touching the arena.  A failed
		 * transfer whose memory the provider has not given back
		 * (s->unsettled) may still use the arena: it stays registered,
		 * and xfer_close() leaves the provider to the process's exit. */
		if (!s->unsettled)
			xfer_mr_dereg(s->arena_mr);
		xfer_close(s->eng);
		s->eng = NULL;
		srv_reap(s);
		srv_free_dead(s);
	} else if (s->arena) {
		munmap(s->arena, s->arena_len);
	}
	store_destroy(s->store);
	xfer_cq_destroy(s->cq);
	if (s->lfd >= 0)
		close(s->lfd);
	close(s->sigfd);
	close(s->epfd);
	explicit_bzero(s->token, sizeof(s->token));
	free(s->held);
	free(s);
}
