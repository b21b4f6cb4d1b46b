/* SPDX-License-Identifier: MIT */
/*
 * kv-server connections: their life (enum conn_state in server_i.h, moved
 * on by conn_step()), their output queue and the decoding of what they
 * send.  Reading the socket is the loop's (loop.c); serving a request is
 * request.c's.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvfs/log.h"
#include "kvfs/util.h"
#include "server_i.h"

#define TAG SRV_TAG

/* Queued-output capacity kept between responses; a larger buffer is freed
 * once drained, so one big response does not pin memory. */
#define SRV_OUT_KEEP ((size_t)(256 * 1024))
/* Answers collected while one read's frames are served (conn_read). */
#define SRV_CORK_MAX ((size_t)(64 * 1024))

/* ------------------------------------------------------------------ */
/* Life                                                                */

void conn_step(struct conn *c)
{
	switch (c->state) {
	case CONN_HELLO:
	case CONN_READY:
		conn_arm(c); /* read unless paused, write while output waits */
		break;
	case CONN_CLOSING:
		if (c->out_off >= c->out_len)
			conn_close(c, "refused"); /* its refusal is out */
		else
			conn_arm(c); /* write only */
		break;
	case CONN_DRAINING:
		/* Freed after the current epoll batch (srv_free_dead()), never
		 * inside it: the batch may still hold an event for @c, collected
		 * before it was closed (a use-after-free under ASan when the
		 * last completion of a closed connection freed it at once). */
		if (c->ops == 0) {
			c->state = CONN_DEAD;
			c->next = c->srv->dead;
			c->srv->dead = c;
		}
		break;
	case CONN_DEAD:
		break;
	}
}

void conn_refuse(struct conn *c)
{
	/* Forward only: the refusal's send may have closed @c already. */
	if (c->state < CONN_CLOSING)
		c->state = CONN_CLOSING;
}

void conn_close(struct conn *c, const char *why)
{
	struct srv *s = c->srv;

	if (conn_closed(c))
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
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	/* Not freed here: the callers up the stack (req_dispatch, conn_feed)
	 * still look at @c.  Ops in flight hand it on at their last completion. */
	c->state = CONN_DRAINING;
	conn_step(c);
}

void conn_peer_release(struct conn *c)
{
	struct srv *s = c->srv;
	const struct conn *o;

	/* One that is still proving its engine uses the peer too: removing it
	 * would cancel that proof's read (a client that reconnected while its
	 * old connection drained was left inline only). */
	for (o = s->conns; o && (o == c || !((o->rdma || o->binding) && o->peer == c->peer));
	     o = o->next)
		;
	if (!o && s->eng)
		xfer_peer_remove(s->eng, c->peer);
	c->rdma = false;
}

/* Called when a connection is closed and its last operation is done. */
static void conn_free(struct conn *c)
{
	/* Release the client's engine from ours (without this every connection
	 * ever made kept an address-vector entry: over shm a 16 MiB mapping of
	 * the client's region, found by kv-soak --reconnect), unless another
	 * open connection from the same engine still uses it. */
	if (c->rdma)
		conn_peer_release(c);
	req_uploads_drop(c); /* a client gone mid-upload: the memory comes back */
	wire_reader_fini(&c->rd);
	free(c->out);
	free(c->stash);
	free(c);
}

void srv_free_dead(struct srv *s)
{
	while (s->dead) {
		struct conn *c = s->dead;

		s->dead = c->next;
		conn_free(c);
	}
}

/* @a and @b ("HOST:PORT") come from the same host. */
static bool same_host(const char *a, const char *b)
{
	const char *pa = strrchr(a, ':'), *pb = strrchr(b, ':');

	return pa && pb && pa - a == pb - b && !memcmp(a, b, (size_t)(pa - a));
}

/*
 * Room for a new connection from @name?  All connections are capped by
 * max_conns; those still in HELLO also by max_unauth, and one host may
 * hold a quarter of that: sockets that never send HELLO (reopened as they
 * are closed) fill at most max_unauth of the max_conns slots, and one
 * host's cannot keep another host's clients out.  (Processes of one host
 * share its quarter.)  Returns 0, or -EMFILE to refuse (counted, and
 * logged at a limited rate).
 */
static int conn_admit(struct srv *s, const char *name)
{
	unsigned pending = 0, here = 0, per_host = KV_MAX(s->o.max_unauth / 4, 1u);
	const struct conn *c;

	for (c = s->conns; c; c = c->next) {
		if (c->state != CONN_HELLO)
			continue;
		pending++;
		here += same_host(c->name, name);
	}
	if (s->nconns >= s->o.max_conns) {
		KV_WARN_RL(TAG, "refusing a connection: %u connections open (--max-conns)",
		           s->nconns);
		return -EMFILE;
	}
	if (pending >= s->o.max_unauth || here >= per_host) {
		s->c.refused_unauth++;
		KV_WARN_RL(TAG,
		           "refusing a connection from %s: %u connections wait for HELLO, %u of "
		           "them from that host (--max-unauth %u, a quarter per host)",
		           name, pending, here, s->o.max_unauth);
		return -EMFILE;
	}
	return 0;
}

int srv_adopt_fd(struct srv *s, int fd, const char *name)
{
	struct epoll_event ev;
	Kvfs__ServerHello sh = KVFS__SERVER_HELLO__INIT;
	uint8_t eaddr[XFER_ADDR_MAX];
	size_t ealen = sizeof(eaddr);
	struct conn *c;
	int one = 1;

	s->c.conns_total++;
	if (conn_admit(s, name) < 0) {
		s->c.conns_refused++;
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
	if (s->eng && xfer_addr(s->eng, eaddr, &ealen) == 0) {
		sh.provider = (char *)xfer_provider(s->eng);
		sh.has_engine_addr = true;
		sh.engine_addr.data = eaddr;
		sh.engine_addr.len = ealen;
	}
	if (s->auth) {
		kv_random_bytes(c->nonce, sizeof(c->nonce));
		sh.has_auth_nonce = true;
		sh.auth_nonce.data = c->nonce;
		sh.auth_nonce.len = sizeof(c->nonce);
	}
	conn_queue(c, WIRE_FRAME_SERVER_HELLO, &sh.base);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Output                                                              */

void conn_arm(struct conn *c)
{
	struct epoll_event ev = {.data.ptr = c};
	bool rd = c->state != CONN_CLOSING && !c->srv->stopping &&
	          c->ops < c->srv->o.max_inflight && c->out_len - c->out_off < c->srv->o.max_outbuf;
	bool wr = c->out_off < c->out_len;

	if (conn_closed(c) || (rd == c->reading && wr == c->want_out))
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

/* Keeps out_deadline: set while output waits, moved on by any progress. */
int conn_flush(struct conn *c)
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

int conn_queue(struct conn *c, enum wire_frame_type type, const ProtobufCMessage *m)
{
	size_t need = wire_frame_size(m), len;
	int r;

	if (conn_closed(c))
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

void conn_respond(struct conn *c, uint64_t id, int err, const char *msg, Kvfs__Response *resp)
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
/* Input                                                               */

size_t conn_feed(struct conn *c, const uint8_t *data, size_t len)
{
	struct srv *s = c->srv;
	size_t off = 0;
	bool done = false; /* a frame completed */

	while (off < len && !conn_closed(c) && c->reading) {
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
		req_dispatch(c, m.req);
		wire_msg_free(&m);
		if (c->state == CONN_CLOSING) {
			conn_step(c); /* refused: the rest of its input is dropped */
			return len;
		}
	}
	/* Slow-loris: a frame that has started must complete in time. */
	if (!conn_closed(c)) {
		if (!wire_reader_pending(&c->rd))
			c->frame_deadline = 0;
		else if (done || !c->frame_deadline)
			c->frame_deadline = kv_now_ms() + (uint64_t)s->o.frame_timeout_ms;
	}
	return off;
}
