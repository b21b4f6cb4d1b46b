/* SPDX-License-Identifier: MIT */
/*
 * kv-server's event loop: one epoll set over the listening socket, every
 * connection, a signalfd (SIGTERM/SIGINT) and the engine's completion
 * queue.  Each turn accepts, reads what connections sent (conn_feed()
 * decodes and serves it), flushes, reaps transfer completions, enforces
 * the deadlines and frees the connections that died in it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvfs/log.h"
#include "kvfs/util.h"
#include "server_i.h"

#define TAG SRV_TAG

/* epoll tags: pointers to these mark the non-connection fds. */
static char tag_listen, tag_signal, tag_cq;

/* ------------------------------------------------------------------ */
/* Reading                                                             */

/* Read and serve; stops when the connection must not read more.  Bytes
 * received but not fed when it stops wait in the stash (at most one recv,
 * 64 KiB) and are fed first when reading resumes. */
static void conn_read_corked(struct conn *c)
{
	uint8_t buf[64 * 1024];

	while (!conn_closed(c) && c->reading) {
		size_t used;
		ssize_t n;

		if (c->stash_len) {
			used = conn_feed(c, c->stash + c->stash_off, c->stash_len - c->stash_off);
			if (conn_closed(c))
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
		if (!conn_closed(c) && used < (size_t)n) {
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
	if (conn_closed(c) || c->out_off >= c->out_len)
		return;
	if (conn_flush(c) < 0) {
		conn_close(c, "send failed");
		return;
	}
	conn_step(c);
}

/* Connections paused with stashed bytes that may read again: serve them
 * (no EPOLLIN announces bytes we already hold). */
static void srv_resume(struct srv *s)
{
	struct conn *c, *next;

	s->resume = false;
	for (c = s->conns; c; c = next) {
		next = c->next;
		if (c->stash_len && c->reading && !conn_closed(c))
			conn_read(c);
	}
}

static void conn_event(struct conn *c, uint32_t ev)
{
	if ((ev & EPOLLOUT) && !conn_closed(c)) {
		if (conn_flush(c) < 0) {
			conn_close(c, "send failed");
			return;
		}
		conn_step(c);
	}
	if ((ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !conn_closed(c)) {
		if (c->reading)
			conn_read(c);
		else if (ev & (EPOLLHUP | EPOLLERR))
			conn_close(c, "connection reset");
	}
}

/* ------------------------------------------------------------------ */
/* Accepting                                                           */

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
/* The loop                                                            */

static void srv_check_deadlines(struct srv *s)
{
	uint64_t now = kv_now_ms();
	struct conn *c, *next;
	char why[128];

	for (c = s->conns; c; c = next) {
		next = c->next;
		if (c->refuse_at && now >= c->refuse_at) { /* a failed proof's answer */
			c->refuse_at = 0;
			conn_respond(c, c->refuse_id, -EACCES, "authentication failed", NULL);
			conn_refuse(c);
			conn_step(c);
		} else if (c->state == CONN_HELLO && now >= c->hello_deadline) {
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

int srv_loop_init(struct srv *s)
{
	struct epoll_event ev;
	sigset_t mask;

	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	s->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s->epfd < 0 || s->sigfd < 0)
		return -errno;
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
	return 0;
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
	srv_evlog_flush(s, false);
	srv_check_deadlines(s);
	srv_free_dead(s);
	return n > 0 ? n : 0;
}

int srv_run(struct srv *s)
{
	uint64_t stop_deadline = 0;
	char b[32], v[32], m[32], addr[sizeof(s->host) + 8];

	fprintf(stderr,
	        "kv-server: listening on %s (provider %s, memory %s: %s for values, %s for the "
	        "index; eviction %s%s, instance %016llx)\n",
	        kv_fmt_hostport(s->host, s->port, addr, sizeof(addr)),
	        s->eng ? xfer_provider(s->eng) : "none", kv_fmt_size(s->o.memory, b, sizeof(b)),
	        kv_fmt_size(s->arena_len, v, sizeof(v)),
	        kv_fmt_size(srv_meta_budget(&s->o), m, sizeof(m)),
	        s->o.eviction == STORE_EVICT_LRU ? "lru" : "none", s->auth ? ", auth" : "",
	        (unsigned long long)s->instance);
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
					conn_arm(c); /* stop reading */
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
