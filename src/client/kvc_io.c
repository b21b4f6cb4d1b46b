/* SPDX-License-Identifier: MIT */
/*
 * The I/O thread.  Once the connection is up it owns the socket: it takes
 * submissions (io_take), writes queued frames in batches (io_flush), reads
 * responses and matches them against its table of unresolved calls, fails
 * calls at their deadlines and tears the connection down on error
 * (io_reset).  With nothing in flight it parks the socket for direct calls
 * (kvc_direct.c).
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "kvc_i.h"
#include "kvfs/log.h"
#include "kvfs/util.h"

enum { EV_EFD = 1, EV_TFD = 2, EV_SOCK = 3 }; /* epoll_event.data.u32: which descriptor */

/* ------------------------------------------------------------------ */
/* Waking the thread                                                  */
/* ------------------------------------------------------------------ */

static void efd_kick(int efd)
{
	uint64_t one = 1;
	ssize_t n = write(efd, &one, sizeof(one));

	(void)n; /* EAGAIN: the counter is already nonzero, the thread wakes anyway */
}

/* Wake the I/O thread: one eventfd write per wake-up, however many
 * callers ask before it runs.  It drains the eventfd, then clears
 * kick_pending, then looks at the shared state (io_take): a caller who saw
 * kick_pending still set changed that state before the clear, so the look
 * that follows sees it. */
void kvc_io_kick(struct kvc *kvc)
{
	if (!atomic_exchange(&kvc->kick_pending, true))
		efd_kick(kvc->efd);
}

static void efd_drain(int fd)
{
	uint64_t v;
	ssize_t n = read(fd, &v, sizeof(v));

	(void)n;
}

/* ------------------------------------------------------------------ */
/* Call table and send queue                                          */
/* ------------------------------------------------------------------ */

static void table_add(struct kvc *kvc, struct kvc_call *c)
{
	c->prev = NULL;
	c->next = kvc->table;
	if (kvc->table)
		kvc->table->prev = c;
	kvc->table = c;
}

static void table_del(struct kvc *kvc, struct kvc_call *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		kvc->table = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static struct kvc_call *table_find(struct kvc *kvc, uint64_t id)
{
	for (struct kvc_call *c = kvc->table; c; c = c->next) {
		if (c->id == id)
			return c;
	}
	return NULL;
}

static void sendq_push(struct kvc *kvc, struct kvc_call *c)
{
	c->send_next = NULL;
	if (kvc->send_tail)
		kvc->send_tail->send_next = c;
	else
		kvc->send_head = c;
	kvc->send_tail = c;
	c->queued = true;
}

static void sendq_remove(struct kvc *kvc, struct kvc_call *c)
{
	struct kvc_call **pp = &kvc->send_head, *prev = NULL;

	while (*pp && *pp != c) {
		prev = *pp;
		pp = &(*pp)->send_next;
	}
	if (!*pp)
		return;
	*pp = c->send_next;
	if (kvc->send_tail == c)
		kvc->send_tail = prev;
	c->send_next = NULL;
	c->queued = false;
}

/* Drop the I/O thread's hold on @c. */
static void io_resolve(struct kvc *kvc, struct kvc_call *c)
{
	table_del(kvc, c);
	if (c->queued)
		sendq_remove(kvc, c);
	if (c->counted)
		kvc->io_counted--;
	c->counted = false;
	kvc_call_put(kvc, c);
}

/* ------------------------------------------------------------------ */
/* The socket                                                         */
/* ------------------------------------------------------------------ */

static void io_set_out(struct kvc *kvc, bool want)
{
	struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = EV_SOCK};

	if (kvc->io_parked || kvc->sock < 0 || want == kvc->io_want_out)
		return;
	if (epoll_ctl(kvc->epfd, EPOLL_CTL_MOD, kvc->sock, &ev) == 0)
		kvc->io_want_out = want;
}

/* Fail every call in the table with @err (unless already notified) and
 * resolve it.  @why is the reason shown to the caller. */
static void io_fail_all(struct kvc *kvc, int err, const char *why)
{
	struct kvc_call *c, *next;

	for (c = kvc->table; c; c = next) {
		next = c->next;
		if (!c->notified) {
			c->status = err;
			c->retry = c->sent_ms == 0 && c->frame_off == 0;
			kvc_fmt_msg(c->msg, sizeof(c->msg), "kvc: %s on %s: %s%s", c->what,
			            kvc->server, why, kvc_hint(err));
			kvc_call_notify(c);
		}
		/* Sent and unanswered: the server may still be moving its bytes. */
		c->lost = c->sent_ms != 0;
		io_resolve(kvc, c);
	}
	kvc->send_head = kvc->send_tail = NULL;
	kvc->io_counted = 0;
}

/* Tear the connection down: every call on it fails with @err (unless
 * already notified) and is resolved. */
static void io_reset(struct kvc *kvc, int err, const char *why)
{
	if (kvc->io_parked || kvc->sock < 0)
		return;
	KV_DEBUG(KVC_TAG, "connection to %s dropped: %s", kvc->server, why);
	epoll_ctl(kvc->epfd, EPOLL_CTL_DEL, kvc->sock, NULL);
	close(kvc->sock);
	kvc->sock = -1;
	kvc->io_want_out = false;
	wire_reader_fini(&kvc->reader);
	io_fail_all(kvc, err, why);
	kvc_conn_lost(kvc, kvc->io_gen, err, why);
}

/* Write queued frames while the socket takes them and the server's
 * max_inflight allows: up to KVC_SEND_BATCH frames per sendmsg(). */
static void io_flush(struct kvc *kvc)
{
	char why[160];

	while (!kvc->io_parked && kvc->sock >= 0 && kvc->send_head) {
		struct iovec iov[KVC_SEND_BATCH];
		struct msghdr mh = {.msg_iov = iov};
		struct kvc_call *c;
		uint64_t now;
		ssize_t n;

		for (c = kvc->send_head; c && mh.msg_iovlen < KVC_SEND_BATCH; c = c->send_next) {
			if (!c->counted) {
				if (kvc->io_max_inflight && kvc->io_counted >= kvc->io_max_inflight)
					break;
				c->counted = true;
				kvc->io_counted++;
			}
			iov[mh.msg_iovlen].iov_base = c->frame + c->frame_off;
			iov[mh.msg_iovlen++].iov_len = c->frame_len - c->frame_off;
		}
		if (!mh.msg_iovlen)
			break;
		n = sendmsg(kvc->sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				io_set_out(kvc, true);
				return;
			}
			kvc_fmt_msg(why, sizeof(why), "send failed: %s", strerror(errno));
			io_reset(kvc, -ECONNRESET, why);
			return;
		}
		now = kv_now_ms();
		while (n > 0) {
			size_t take;

			c = kvc->send_head;
			take = KV_MIN((size_t)n, c->frame_len - c->frame_off);
			if (!c->sent_ms)
				c->sent_ms = now;
			c->frame_off += take;
			n -= (ssize_t)take;
			if (c->frame_off == c->frame_len) {
				sendq_remove(kvc, c);
				free(c->frame);
				c->frame = NULL;
			}
		}
	}
	io_set_out(kvc, false);
}

static void io_dispatch(struct kvc *kvc, struct wire_msg *msg)
{
	const Kvfs__Response *resp;
	struct kvc_call *c;
	bool stale = false;

	if (msg->type != WIRE_FRAME_RESPONSE) {
		wire_msg_free(msg);
		io_reset(kvc, -EPROTO, "protocol error: a second ServerHello");
		return;
	}
	resp = msg->resp;
	c = table_find(kvc, resp->id);
	if (!c) {
		KV_DEBUG(KVC_TAG, "response to unknown request %llu ignored",
		         (unsigned long long)resp->id);
		wire_msg_free(msg);
		return;
	}
	c->settled = kvc_status_settles(resp->has_status ? resp->status : 0);
	if (c->notified) {
		wire_msg_free(msg); /* late answer to a call that timed out */
	} else {
		int st = resp->has_status ? resp->status : 0;

		c->status = wire_status_to_errno(st);
		if (c->status) {
			stale = st == KVFS__STATUS__STALE;
			c->retry = stale; /* the server did nothing: safe to resend */
			c->busy = st == KVFS__STATUS__BUSY;
			kvc_fmt_msg(c->msg, sizeof(c->msg), "kvc: %s: %s%s%s%s", c->what,
			            wire_status_name(st),
			            resp->message && *resp->message ? ": " : "",
			            resp->message ? resp->message : "",
			            kvc_status_hint(st, resp->message));
		}
		c->resp = *msg;
		memset(msg, 0, sizeof(*msg));
		kvc_call_notify(c);
	}
	io_resolve(kvc, c);
	if (stale)
		io_reset(kvc, -ECONNRESET, "server dropped our transfer peer (STALE)");
}

static void io_read(struct kvc *kvc)
{
	char why[200];

	while (kvc->sock >= 0) {
		ssize_t n = recv(kvc->sock, kvc->rbuf, KVC_RBUF_LEN, MSG_DONTWAIT);
		size_t off = 0;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			kvc_fmt_msg(why, sizeof(why), "receive failed: %s", strerror(errno));
			io_reset(kvc, -ECONNRESET, why);
			return;
		}
		if (n == 0) {
			io_reset(kvc, -ECONNRESET, "server closed the connection");
			return;
		}
		kvc->io_last_rx_ms = kv_now_ms();
		while (off < (size_t)n && kvc->sock >= 0) {
			struct wire_msg msg = {0};
			size_t used = 0;
			int r = wire_reader_feed(&kvc->reader, kvc->rbuf + off, (size_t)n - off,
			                         &used, &msg);

			if (r < 0) {
				kvc_fmt_msg(why, sizeof(why), "protocol error: %s",
				            wire_reader_error(&kvc->reader));
				io_reset(kvc, r, why);
				return;
			}
			off += used;
			if (r == 1)
				io_dispatch(kvc, &msg);
		}
		/* Short read: the socket is drained (epoll is level-triggered and
		 * reports anything that arrives later), so skip the EAGAIN recv. */
		if ((size_t)n < KVC_RBUF_LEN)
			return;
	}
}

static void io_timeouts(struct kvc *kvc)
{
	uint64_t now = kv_now_ms();
	struct kvc_call *c, *next;
	bool dead = false;

	for (c = kvc->table; c; c = next) {
		next = c->next;
		if (c->notified || c->deadline_ms > now)
			continue;
		c->status = -ETIMEDOUT;
		kvc_fmt_msg(c->msg, sizeof(c->msg),
		            "kvc: %s on %s: no answer within the deadline%s", c->what, kvc->server,
		            kvc_hint(-ETIMEDOUT));
		kvc_call_notify(c);
		if (c->sent_ms == 0) {
			io_resolve(kvc, c); /* never left: nothing to wait for */
			continue;
		}
		/* Abandoned: resolved by its late response or by a reset.  If the
		 * server sent nothing at all while it waited, it is gone. */
		if (kvc->io_last_rx_ms < c->sent_ms)
			dead = true;
	}
	if (dead)
		io_reset(kvc, -ETIMEDOUT, "server silent for a whole deadline");
}

static void io_arm_timer(struct kvc *kvc)
{
	uint64_t first = 0;
	struct itimerspec its = {0};

	for (struct kvc_call *c = kvc->table; c; c = c->next) {
		if (!c->notified && (!first || c->deadline_ms < first))
			first = c->deadline_ms;
	}
	/* Only move the timer earlier: a timer that fires for a call already
	 * answered costs one wakeup per deadline, re-arming it for every call
	 * costs two syscalls per call. */
	if (!first || (kvc->io_timer_ms && kvc->io_timer_ms <= first))
		return;
	kvc->io_timer_ms = first;
	if (first) {
		its.it_value.tv_sec = (time_t)(first / 1000);
		its.it_value.tv_nsec = (long)(first % 1000) * 1000000L;
	}
	timerfd_settime(kvc->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* ------------------------------------------------------------------ */
/* Parking the socket for direct calls, taking submissions            */
/* ------------------------------------------------------------------ */

/* Take the parked socket back, with kvc->lock held and no direct caller.
 * Returns false when a direct caller reset it meanwhile. */
static bool io_unpark(struct kvc *kvc)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = EV_SOCK};

	kvc->parked = false;
	kvc->parked_gen = 0;
	kvc->io_parked = false;
	kvc->io_wants_sock = false;
	kvc->io_want_out = false;
	if (kvc->sock < 0)
		return false; /* closed, so already out of the epoll set */
	epoll_ctl(kvc->epfd, EPOLL_CTL_MOD, kvc->sock, &ev);
	return true;
}

/* Nothing in flight: park the socket so that a synchronous caller can use
 * it directly (see "Direct calls" in kvc_i.h).  It stays in the epoll set
 * for one report of the peer closing or an error (so that an idle
 * connection that breaks is still noticed and reset before the next call),
 * but not for incoming data. */
static void io_maybe_park(struct kvc *kvc)
{
	struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT, .data.u32 = EV_SOCK};

	if (kvc->io_parked || kvc->sock < 0 || kvc->table || kvc->send_head)
		return;
	pthread_mutex_lock(&kvc->lock);
	if (!kvc->sub_head && !kvc->handback && kvc->handover_sock < 0 && !kvc->stop &&
	    kvc->state == KVC_UP && kvc->gen == kvc->io_gen) {
		epoll_ctl(kvc->epfd, EPOLL_CTL_MOD, kvc->sock, &ev);
		kvc->io_parked = true;
		kvc->parked = true;
		kvc->parked_gen = kvc->io_gen;
		kvc->io_want_out = false;
	}
	pthread_mutex_unlock(&kvc->lock);
}

/* Adopt a freshly handed-over connection and take new submissions. */
static bool io_take(struct kvc *kvc)
{
	struct kvc_call *list, *c, *next, *back = NULL;
	bool stop, lost = false;

	pthread_mutex_lock(&kvc->lock);
	if (kvc->io_parked) {
		bool work = kvc->sub_head || kvc->table || kvc->handback || kvc->stop ||
		            kvc->handover_sock >= 0 || kvc->io_wants_sock;

		if (kvc->direct_busy)
			kvc->io_wants_sock = work; /* the direct caller kicks us when done */
		else if (work)
			lost = !io_unpark(kvc);
	}
	if (!kvc->io_parked) {
		back = kvc->handback;
		kvc->handback = NULL;
	}
	if (!kvc->io_parked && kvc->handover_sock >= 0 && kvc->sock < 0) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = EV_SOCK};

		kvc->sock = kvc->handover_sock;
		kvc->handover_sock = -1;
		kvc->io_gen = kvc->gen;
		kvc->io_max_inflight = kvc->lim.max_inflight;
		kvc->io_last_rx_ms = kv_now_ms();
		kvc->io_want_out = false;
		wire_reader_init(&kvc->reader, WIRE_MAX_FRAME_MAX, WIRE_ACCEPT_CLIENT);
		epoll_ctl(kvc->epfd, EPOLL_CTL_ADD, kvc->sock, &ev);
	}
	list = kvc->sub_head;
	kvc->sub_head = kvc->sub_tail = NULL;
	stop = kvc->stop;
	pthread_mutex_unlock(&kvc->lock);

	/* Calls queued while a direct caller held the socket and lost it. */
	if (lost)
		io_fail_all(kvc, -ECONNRESET, "connection lost before sending");
	/* An abandoned direct call: resolved by its late response or a reset. */
	if (back) {
		if (kvc->sock >= 0 && back->gen == kvc->io_gen) {
			table_add(kvc, back);
		} else {
			back->lost = true;
			kvc_call_put(kvc, back);
		}
	}
	for (c = list; c; c = next) {
		next = c->sub_next;
		c->sub_next = NULL;
		if ((!kvc->io_parked && kvc->sock < 0) || c->gen != kvc->io_gen) {
			c->status = -ECONNRESET;
			c->retry = true;
			kvc_fmt_msg(c->msg, sizeof(c->msg),
			            "kvc: %s on %s: connection lost before sending%s", c->what,
			            kvc->server, kvc_hint(-ECONNRESET));
			kvc_call_notify(c);
			kvc_call_put(kvc, c);
			continue;
		}
		table_add(kvc, c);
		sendq_push(kvc, c);
	}
	return stop;
}

/* The parked socket reported the peer closing or an error (once: the
 * registration is one-shot).  Take it back and read, unless a direct
 * caller has it: that caller sees the error itself and kicks us after. */
static void io_parked_event(struct kvc *kvc)
{
	bool lost = false;

	pthread_mutex_lock(&kvc->lock);
	if (kvc->direct_busy)
		kvc->io_wants_sock = true;
	else
		lost = !io_unpark(kvc);
	pthread_mutex_unlock(&kvc->lock);
	if (lost)
		io_fail_all(kvc, -ECONNRESET, "connection lost before sending");
}

/* ------------------------------------------------------------------ */
/* The thread                                                         */
/* ------------------------------------------------------------------ */

static void *io_main(void *arg)
{
	struct kvc *kvc = arg;
	struct epoll_event evs[8];
	bool stop = false;

	while (!stop) {
		int n;

		io_arm_timer(kvc);
		n = epoll_wait(kvc->epfd, evs, (int)KV_ARRAY_SIZE(evs), -1);
		if (n < 0)
			continue; /* EINTR */
		for (int i = 0; i < n; i++) {
			switch (evs[i].data.u32) {
			case EV_EFD:
				efd_drain(kvc->efd);
				atomic_store(&kvc->kick_pending, false);
				stop = io_take(kvc);
				break;
			case EV_TFD:
				efd_drain(kvc->tfd);
				kvc->io_timer_ms = 0;
				io_timeouts(kvc);
				break;
			case EV_SOCK:
				if (kvc->io_parked)
					io_parked_event(kvc);
				if (!kvc->io_parked &&
				    (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)))
					io_read(kvc);
				break;
			}
		}
		io_flush(kvc);
		io_maybe_park(kvc);
	}

	/* kvc_close(): everything still here fails with -ECANCELED. */
	io_take(kvc);
	for (struct kvc_call *c = kvc->table, *next; c; c = next) {
		next = c->next;
		if (!c->notified) {
			c->status = -ECANCELED;
			kvc_fmt_msg(c->msg, sizeof(c->msg), "kvc: %s: client closed", c->what);
			kvc_call_notify(c);
		}
		c->lost = c->sent_ms != 0;
		io_resolve(kvc, c);
	}
	if (kvc->sock >= 0) {
		close(kvc->sock);
		kvc->sock = -1;
		wire_reader_fini(&kvc->reader);
	}
	return NULL;
}

/* Create the I/O thread's descriptors and start it.  0, or -errno with this
 * thread's message set; kvc_io_stop() cleans up after either. */
int kvc_io_start(struct kvc *kvc)
{
	struct epoll_event ev = {.events = EPOLLIN};
	int r;

	kvc->epfd = epoll_create1(EPOLL_CLOEXEC);
	kvc->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	kvc->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (kvc->epfd < 0 || kvc->efd < 0 || kvc->tfd < 0)
		return kvc_fail(-errno, "kvc: cannot create the I/O thread's descriptors: %s",
		                strerror(errno));
	ev.data.u32 = EV_EFD;
	epoll_ctl(kvc->epfd, EPOLL_CTL_ADD, kvc->efd, &ev);
	ev.data.u32 = EV_TFD;
	epoll_ctl(kvc->epfd, EPOLL_CTL_ADD, kvc->tfd, &ev);
	r = pthread_create(&kvc->io_thread, NULL, io_main, kvc);
	if (r)
		return kvc_fail(-r, "kvc: cannot start the I/O thread: %s", strerror(r));
	kvc->io_started = true;
	return 0;
}

/* Wake the I/O thread to exit (kvc->stop already set under kvc->lock), join
 * it and close its descriptors.  Also after kvc_io_start() failed or never
 * ran (descriptors -1). */
void kvc_io_stop(struct kvc *kvc)
{
	if (kvc->io_started) {
		kvc_io_kick(kvc);
		pthread_join(kvc->io_thread, NULL);
		kvc->io_started = false;
	}
	if (kvc->epfd >= 0)
		close(kvc->epfd);
	if (kvc->efd >= 0)
		close(kvc->efd);
	if (kvc->tfd >= 0)
		close(kvc->tfd);
	kvc->epfd = kvc->efd = kvc->tfd = -1;
}
