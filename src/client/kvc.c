/* SPDX-License-Identifier: MIT */
/*
 * kvfs client library (include/kvfs/client.h); internals in kvc_i.h.
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
 *   the next call; a smaller one is fenced off, never freed): still one PUT or one GET, so the
 * value is written atomically and read in one piece of one version.  The caller's own memory is
 * never registered: once a call returns, the server cannot touch it, even when the call failed with
 * a transfer still under way (see below).
 * - Without RDMA (provider "none", or a server that does not do it) a GET
 *   larger than max_inline is read in max_inline pieces pinned to the
 *   version of the first piece (restarted if the value changes meanwhile);
 *   a PUT larger than max_inline cannot be made atomic and fails -EFBIG.
 *
 * Deadlines and abandoned calls
 * -----------------------------
 * The I/O thread fails a call at its deadline.  If the server might still
 * RDMA into or out of the call's memory, the bounce slot or staging buffer
 * stays held until the late response arrives or the connection goes away.
 * One whose fate is then still unknown (no answer, or a failed transfer) is
 * given to xfer_mr_dereg_lost(), never reused: with tcp and shm a transfer
 * message already under way keeps landing after deregistration (the key
 * is checked when the message begins), so the memory is fenced off
 * instead.  Memory passed to the _mr calls is the caller's: after a failure
 * it may still be written (or read) by a transfer under way; drop it with
 * xfer_mr_dereg_lost() rather than reuse it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "kvc_i.h"
#include "kvfs/hmac.h"
#include "kvfs/log.h"
#include "kvfs/util.h"

enum { EV_EFD = 1, EV_TFD = 2, EV_SOCK = 3 };

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

_Thread_local char kvc_errbuf[KVC_MSG_LEN];

const char *kvc_strerror(void)
{
	return kvc_errbuf;
}

static void set_errv(const char *fmt, va_list ap)
{
	vsnprintf(kvc_errbuf, sizeof(kvc_errbuf), fmt, ap);
}

/* Set this thread's message and return @err. */
int kvc_fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_errv(fmt, ap);
	va_end(ap);
	return err;
}

void kvc_fmt_msg(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* What to do about an error, appended to messages. */
const char *kvc_hint(int err)
{
	switch (-err) {
	case ECONNREFUSED:
		return " (is kv-server running there?)";
	case ETIMEDOUT:
		return " (server slow or unreachable: check it, or give the client a longer "
		       "timeout)";
	case ECONNRESET:
		return " (connection lost; the next call reconnects)";
	case EACCES:
		return " (check that the client's token file holds the server's token)";
	case ENOSPC:
		return " (delete keys or give kv-server more --memory)";
	case EAGAIN:
		return " (server busy: retry later)";
	case EHOSTUNREACH:
	case ENETUNREACH:
		return " (check the address and the network)";
	default:
		return "";
	}
}

/* "'key'" with unprintable bytes escaped, shortened past 48 bytes. */
static void quote_key(const void *key, size_t len, char *out, size_t cap)
{
	const unsigned char *k = key;
	size_t o = 0, i;

	out[o++] = '\'';
	for (i = 0; i < len && o + 8 < cap && i < 48; i++) {
		if (isprint(k[i]) && k[i] != '\'' && k[i] != '\\')
			out[o++] = (char)k[i];
		else
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", k[i]);
	}
	if (i < len && o + 5 < cap) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o++] = '\'';
	out[o] = '\0';
}

static bool is_permanent(int err)
{
	switch (-err) {
	case EACCES:
	case ENOTSUP:
	case EINVAL:
	case ENODEV:
	case ENOMEM:
	case EPROTO:
	case ECANCELED:
		return true;
	default:
		return false;
	}
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

uint64_t kvc_deadline(const struct kvc *kvc, int timeout_ms)
{
	return kv_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : kvc->timeout_ms);
}

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

static const char *provider_of(const struct kvc *kvc)
{
	return kvc->engine ? xfer_provider(kvc->engine) : "none";
}

/* Providers are compatible when their core names ("tcp" of "tcp;ofi_rxm") match. */
static bool same_family(const char *a, const char *b)
{
	size_t la = strcspn(a, ";"), lb = strcspn(b, ";");

	return la == lb && !strncmp(a, b, la);
}

int kvc_key_check(const char *what, const void *key, size_t len)
{
	const char *why;
	int r = wire_key_validate(key, len, 0, &why);

	if (r == -ENAMETOOLONG)
		return kvc_fail(r, "kvc: %s: key of %zu bytes is longer than %d bytes", what, len,
		                WIRE_KEY_MAX);
	if (r)
		return kvc_fail(r, "kvc: %s: %s (see docs/protocol.md, \"Keys\")", what, why);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Calls                                                               */
/* ------------------------------------------------------------------ */

struct kvc_call *kvc_call_new(enum kvc_call_kind kind, const char *op, const void *key,
                              size_t keylen, uint64_t deadline)
{
	struct kvc_call *c = calloc(1, sizeof(*c));
	char q[80];

	if (!c)
		return NULL;
	atomic_init(&c->refs, 1);
	c->kind = kind;
	c->deadline_ms = deadline;
	if (kind == KVC_CALL_SYNC && sem_init(&c->done, 0, 0)) {
		free(c);
		return NULL;
	}
	if (key) {
		quote_key(key, keylen, q, sizeof(q));
		snprintf(c->what, sizeof(c->what), "%s %s", op, q);
	} else {
		snprintf(c->what, sizeof(c->what), "%s", op);
	}
	return c;
}

/* Fence off a staging or bounce buffer (xfer_mr_dereg_lost()): read-only
 * zeros when the server can at most still read it (a PUT's source), so
 * that a read it already asked for is answered and its PUT ends. */
static void buf_fence(struct xfer_mr *mr, bool peer_writes)
{
	if (peer_writes)
		xfer_mr_dereg_lost(mr);
	else
		xfer_mr_dereg_lost_ro(mr);
}

static void bounce_put(struct kvc *kvc, struct kvc_bounce *b, bool drop, bool peer_writes)
{
	struct xfer_mr *mr = NULL;

	pthread_mutex_lock(&kvc->lock);
	if (drop) {
		mr = b->mr;
		b->mr = NULL;
	}
	b->busy = false;
	pthread_mutex_unlock(&kvc->lock);
	if (mr)
		buf_fence(mr, peer_writes);
}

/* A registered buffer of at least @len bytes for one call: the spare if it
 * is large enough, else a new one.  On failure this thread's message is set. */
int kvc_stage_get(struct kvc *kvc, const char *what, size_t len, struct xfer_mr **ret_mr)
{
	struct xfer_mr *mr = NULL;
	char a[32];
	int r;

	pthread_mutex_lock(&kvc->lock);
	if (kvc->stage_spare && xfer_mr_len(kvc->stage_spare) >= len) {
		mr = kvc->stage_spare;
		kvc->stage_spare = NULL;
	}
	pthread_mutex_unlock(&kvc->lock);
	if (mr) {
		*ret_mr = mr;
		return 0;
	}
	r = xfer_buf_alloc(kvc->engine, len,
	                   XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ | XFER_ACCESS_REMOTE_WRITE,
	                   &mr);
	if (r)
		return kvc_fail(
		        r,
		        "kvc: %s: cannot allocate a registered buffer of %s for the transfer: "
		        "%s",
		        what, kv_fmt_size(len, a, sizeof(a)), strerror(-r));
	*ret_mr = mr;
	return 0;
}

/* Done with a staging buffer: fenced off when @lost, else kept as the
 * spare if it is the larger one, and the other fenced off. */
static void stage_put(struct kvc *kvc, struct xfer_mr *mr, bool lost, bool peer_writes)
{
	if (!mr)
		return;
	if (lost) {
		buf_fence(mr, peer_writes);
		return;
	}
	/*
	 * Keep the larger of this and the spare for the next call.  The other
	 * is fenced off, not freed: the tcp provider was seen (ASan, a kvfs
	 * 256 MiB PUT under load) still serving a remote read of a staging
	 * buffer after its PUT had been answered, and a read from freed memory
	 * would crash the process.  A fenced buffer's pages are returned; its
	 * address range stays reserved until the engine closes.
	 */
	pthread_mutex_lock(&kvc->lock);
	if (!kvc->stage_spare || xfer_mr_len(kvc->stage_spare) < xfer_mr_len(mr)) {
		struct xfer_mr *old = kvc->stage_spare;

		kvc->stage_spare = mr;
		mr = old;
	}
	pthread_mutex_unlock(&kvc->lock);
	if (mr) /* settled: no write can come late, a read can */
		xfer_mr_dereg_lost_ro(mr);
}

/* A free bounce slot (registered on first use), or NULL when all are busy
 * or allocation failed (the caller then registers its own memory). */
struct kvc_bounce *kvc_bounce_get(struct kvc *kvc)
{
	struct kvc_bounce *b = NULL;
	int r;

	pthread_mutex_lock(&kvc->lock);
	for (int i = 0; i < KVC_BOUNCE_SLOTS; i++) {
		if (!kvc->bounce[i].busy && (!b || (!b->mr && kvc->bounce[i].mr)))
			b = &kvc->bounce[i];
	}
	if (b)
		b->busy = true;
	pthread_mutex_unlock(&kvc->lock);
	if (!b || b->mr)
		return b;
	r = xfer_buf_alloc(kvc->engine, kvc->bounce_size,
	                   XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ | XFER_ACCESS_REMOTE_WRITE,
	                   &b->mr);
	if (r) {
		KV_DEBUG(KVC_TAG, "bounce buffer of %zu bytes: %s; registering caller memory",
		         kvc->bounce_size, strerror(-r));
		bounce_put(kvc, b, false, false);
		return NULL;
	}
	return b;
}

static void call_free(struct kvc *kvc, struct kvc_call *c)
{
	/* Sent with RDMA descriptors and not settled by the server's answer:
	 * a transfer may still be moving bytes in or out of that memory. */
	bool lost = c->lost || (c->expect && c->sent_ms && !c->settled);

	if (c->bounce)
		bounce_put(kvc, c->bounce, lost, c->peer_writes);
	stage_put(kvc, c->stage, lost, c->peer_writes);
	if (c->expect)
		xfer_expect(kvc->engine, -1);
	wire_msg_free(&c->resp);
	free(c->frame);
	free(c->adst_copy);
	if (c->kind == KVC_CALL_SYNC)
		sem_destroy(&c->done);
	free(c);
}

void kvc_call_put(struct kvc *kvc, struct kvc_call *c)
{
	if (c && atomic_fetch_sub(&c->refs, 1) == 1)
		call_free(kvc, c);
}

void kvc_entry_from_get(const Kvfs__GetResponse *g, struct kvc_entry *e)
{
	e->size = g->size;
	e->version = g->version;
	e->mtime_ns = g->has_mtime_ns ? g->mtime_ns : 0;
	e->mode = g->has_mode ? g->mode : 0;
}

static void entry_from_pb(const Kvfs__Entry *m, struct kvc_entry *e)
{
	e->size = m->size;
	e->version = m->version;
	e->mtime_ns = m->has_mtime_ns ? m->mtime_ns : 0;
	e->mode = m->has_mode ? m->mode : 0;
}

/* Copy @len bytes into a list of local pieces, skipping the first @skip bytes. */
void kvc_sge_scatter(const struct xfer_sge *sge, size_t n, uint64_t skip, const uint8_t *src,
                     size_t len)
{
	for (size_t i = 0; i < n && len; i++) {
		uint64_t l = sge[i].len;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		size_t take = (size_t)KV_MIN(l - skip, (uint64_t)len);

		memcpy((uint8_t *)xfer_mr_addr(sge[i].mr) + sge[i].off + skip, src, take);
		src += take;
		len -= take;
		skip = 0;
	}
}

/* Async completion, on the I/O thread. */
static void async_complete(struct kvc_call *c)
{
	const Kvfs__Response *resp = c->resp.resp;
	struct kvc_entry e = {0};
	ssize_t res = c->status;

	if (res == 0 && c->kind == KVC_CALL_ASYNC_GET) {
		if (resp->body_case != KVFS__RESPONSE__BODY_GET || !resp->get) {
			res = -EPROTO;
		} else {
			const Kvfs__GetResponse *g = resp->get;

			kvc_entry_from_get(g, &e);
			res = (ssize_t)g->bytes;
			if (g->has_data)
				kvc_sge_scatter(c->adst, c->nadst, 0, g->data.data,
				                KV_MIN(g->data.len, (size_t)g->bytes));
		}
	} else if (res == 0) {
		if (resp->body_case != KVFS__RESPONSE__BODY_PUT || !resp->put) {
			res = -EPROTO;
		} else {
			e.size = c->put_len;
			e.version = resp->put->version;
			e.mtime_ns = resp->put->has_mtime_ns ? resp->put->mtime_ns : 0;
		}
	}
	if (res == -EPROTO && c->status == 0)
		kvc_fmt_msg(c->msg, sizeof(c->msg), "kvc: %s: server answered without a body",
		            c->what);
	if (res < 0)
		snprintf(kvc_errbuf, sizeof(kvc_errbuf), "%s", c->msg);
	c->cb(c->cb_arg, res, res >= 0 ? &e : NULL);
}

/* Does an answer with status @st leave no transfer of the call under way?
 * Refusals come before any transfer; a failed or cancelled transfer may
 * still have a message in flight. */
bool kvc_status_settles(int st)
{
	switch (st) {
	case KVFS__STATUS__IO:
	case KVFS__STATUS__TIMEOUT:
	case KVFS__STATUS__INTERNAL:
	case KVFS__STATUS__CANCELED:
	case KVFS__STATUS__STALE:
		return false;
	default:
		return true;
	}
}

/* Deliver the result (status and msg already set).  I/O thread. */
void kvc_call_notify(struct kvc_call *c)
{
	c->notified = true;
	if (c->kind == KVC_CALL_SYNC)
		sem_post(&c->done);
	else
		async_complete(c);
}

/* ------------------------------------------------------------------ */
/* I/O thread                                                          */
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

static void io_set_out(struct kvc *kvc, bool want)
{
	struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = EV_SOCK};

	if (kvc->io_parked || kvc->sock < 0 || want == kvc->io_want_out)
		return;
	if (epoll_ctl(kvc->epfd, EPOLL_CTL_MOD, kvc->sock, &ev) == 0)
		kvc->io_want_out = want;
}

/* The connection of generation @gen is gone: the next call reconnects.
 * Takes kvc->lock. */
void kvc_conn_lost(struct kvc *kvc, uint64_t gen, int err, const char *why)
{
	pthread_mutex_lock(&kvc->lock);
	if (kvc->state == KVC_UP && kvc->gen == gen) {
		kvc->state = KVC_DOWN;
		kvc->next_try_ms = 0;
		kvc->backoff_ms = KVC_BACKOFF_MIN_MS;
		kvc_fmt_msg(kvc->last_msg, sizeof(kvc->last_msg), "kvc: connection to %s lost: %s",
		            kvc->server, why);
		kvc->last_err = err;
	}
	pthread_cond_broadcast(&kvc->cond);
	pthread_mutex_unlock(&kvc->lock);
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
			            resp->message ? resp->message : "", kvc_hint(c->status));
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

/* ------------------------------------------------------------------ */
/* Connecting (calling threads)                                        */
/* ------------------------------------------------------------------ */

/* Wait until @fd is ready for @events or the deadline passes. */
int kvc_fd_wait(int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = kv_now_ms();
		struct pollfd p = {.fd = fd, .events = events};
		int r;

		if (now >= deadline)
			return -ETIMEDOUT;
		r = poll(&p, 1, (int)KV_MIN(deadline - now, (uint64_t)1000));
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r > 0)
			return 0;
	}
}

static int hs_send(int fd, const void *buf, size_t len, uint64_t deadline)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			int r;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			r = kvc_fd_wait(fd, POLLOUT, deadline);
			if (r)
				return r;
			continue;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int hs_recv_all(int fd, void *buf, size_t len, uint64_t deadline)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, MSG_DONTWAIT);

		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			int r;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			r = kvc_fd_wait(fd, POLLIN, deadline);
			if (r)
				return r;
			continue;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read one whole frame during the handshake. */
static int hs_recv(int fd, uint64_t deadline, struct wire_msg *ret)
{
	uint8_t hdr[WIRE_HDR_LEN], *payload;
	enum wire_frame_type type;
	size_t plen;
	int r;

	r = hs_recv_all(fd, hdr, sizeof(hdr), deadline);
	if (r)
		return r;
	r = wire_hdr_parse(hdr, WIRE_MAX_FRAME_MAX, WIRE_ACCEPT_CLIENT, &type, &plen);
	if (r)
		return r;
	payload = malloc(plen ? plen : 1);
	if (!payload)
		return -ENOMEM;
	r = hs_recv_all(fd, payload, plen, deadline);
	if (!r)
		r = wire_payload_decode(type, payload, plen, ret);
	free(payload);
	return r;
}

/* Open the engine on first connect.  Bound to the local address of the
 * control connection: the interface that reaches the server (that is what
 * makes a client in another network namespace work).  shm binds nothing. */
static int engine_open(struct kvc *kvc, int fd, char *msg, size_t msglen)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct xfer_opts xo;
	char node[INET6_ADDRSTRLEN] = "";
	int r;

	xfer_opts_init(&xo);
	xo.provider = kvc->provider;
	xo.timeout_ms = kvc->timeout_ms;
	if (kvc->bind) {
		xo.node = kvc->bind;
	} else if (strcmp(kvc->provider, "shm") && getsockname(fd, (void *)&ss, &sl) == 0) {
		const void *a = ss.ss_family == AF_INET6
		                        ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
		                        : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;

		if (inet_ntop(ss.ss_family, a, node, sizeof(node)))
			xo.node = node;
	}
	r = xfer_open(&xo, &kvc->engine);
	if (r == 0) {
		KV_DEBUG(KVC_TAG, "engine %s on %s (bind %s)", xfer_provider(kvc->engine),
		         xfer_domain(kvc->engine), xo.node ? xo.node : "-");
		return 0;
	}
	kvc->engine = NULL;
	if (!strcmp(kvc->provider, "auto")) {
		KV_DEBUG(KVC_TAG, "no transfer engine (%s, bind %s): values travel inline",
		         xfer_strerror(r), xo.node ? xo.node : "-");
		kvc->want_engine = false;
		return 0;
	}
	kvc_fmt_msg(msg, msglen,
	            "kvc: cannot open the transfer engine with provider %s%s%s: %s (choose another "
	            "provider, or \"none\" for inline-only values)",
	            kvc->provider, xo.node ? " bound to " : "", xo.node ? xo.node : "",
	            xfer_strerror(r));
	return r;
}

static int tcp_connect(struct kvc *kvc, uint64_t deadline, int *ret_fd, char *msg, size_t msglen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *ai, *a;
	char port[8];
	int fd = -1, r, one = 1;

	snprintf(port, sizeof(port), "%u", kvc->port);
	r = getaddrinfo(kvc->host, port, &hints, &ai);
	if (r) {
		kvc_fmt_msg(msg, msglen, "kvc: cannot resolve '%s': %s (check the server address)",
		            kvc->host, gai_strerror(r));
		return r == EAI_NONAME || r == EAI_AGAIN ? -EHOSTUNREACH : -EINVAL;
	}
	r = -ECONNREFUSED;
	for (a = ai; a; a = a->ai_next) {
		int err = 0;
		socklen_t el = sizeof(err);

		fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		r = -errno;
		if (r == -EINPROGRESS) {
			r = kvc_fd_wait(fd, POLLOUT, deadline);
			if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0)
				r = -err;
			if (r == 0)
				break;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		kvc_fmt_msg(msg, msglen, "kvc: cannot connect to kv-server at %s: %s%s",
		            kvc->server, strerror(-r), kvc_hint(r));
		return r;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*ret_fd = fd;
	return 0;
}

/* Fill @lim from the HelloResponse and decide whether RDMA is used. */
static void hello_limits(struct kvc *kvc, const Kvfs__HelloResponse *h, struct kvc_lim *lim)
{
	memset(lim, 0, sizeof(*lim));
	lim->max_frame = KV_MAX(KV_MIN(h->max_frame, WIRE_MAX_FRAME_MAX), WIRE_MAX_FRAME_MIN);
	lim->max_value = h->max_value;
	lim->max_inline = h->has_max_inline ? h->max_inline : 0;
	lim->chunk_size = h->chunk_size;
	lim->max_inflight = h->has_max_inflight ? h->max_inflight : 0;
	snprintf(lim->server_provider, sizeof(lim->server_provider), "%s",
	         h->provider ? h->provider : "none");
	lim->rdma = kvc->engine && h->has_rdma && h->rdma && h->provider && h->has_engine_addr &&
	            same_family(h->provider, xfer_provider(kvc->engine));
	if (kvc->engine && !lim->rdma)
		KV_DEBUG(KVC_TAG, "server %s: %s (ours %s, server's %s): values travel inline only",
		         kvc->server,
		         h->has_rdma && h->rdma ? "provider families differ" : "no RDMA offered",
		         xfer_provider(kvc->engine), lim->server_provider);
	if (!lim->rdma)
		return;
	if (kvc->has_peer && (kvc->server_addr_len != h->engine_addr.len ||
	                      memcmp(kvc->server_addr, h->engine_addr.data, h->engine_addr.len))) {
		xfer_peer_remove(kvc->engine, kvc->server_peer);
		kvc->has_peer = false;
	}
	/* Adding the same address again also revives a peer marked failed. */
	if (h->engine_addr.len <= sizeof(kvc->server_addr) &&
	    xfer_peer_add(kvc->engine, h->engine_addr.data, h->engine_addr.len,
	                  &kvc->server_peer) == 0) {
		kvc->has_peer = true;
		memcpy(kvc->server_addr, h->engine_addr.data, h->engine_addr.len);
		kvc->server_addr_len = h->engine_addr.len;
	} else {
		KV_DEBUG(KVC_TAG, "cannot add the server's engine as a peer; it still reaches us");
	}
}

/* One attempt: TCP connect (the first time: engine, then connect again),
 * ServerHello, Hello. */
static int connect_once(struct kvc *kvc, uint64_t deadline, int *ret_fd, struct kvc_lim *ret_lim,
                        char *msg, size_t msglen)
{
	Kvfs__HelloRequest hello = KVFS__HELLO_REQUEST__INIT;
	Kvfs__Request req = KVFS__REQUEST__INIT;
	struct wire_msg m = {0};
	uint8_t addr[XFER_ADDR_MAX], proof[KV_SHA256_LEN], cnonce[WIRE_AUTH_NONCE_LEN];
	uint8_t nonce[WIRE_AUTH_NONCE_LEN], mac_in[64 + 2 * WIRE_AUTH_NONCE_LEN];
	size_t addrlen = sizeof(addr), flen;
	const Kvfs__HelloResponse *h;
	bool auth = false;
	void *frame;
	int fd = -1, r;

	r = tcp_connect(kvc, deadline, &fd, msg, msglen);
	if (r)
		return r;
	if (kvc->want_engine && !kvc->engine) {
		/* The engine binds to this connection's local address.  Opening it
		 * (provider discovery) can take seconds on a loaded host, longer
		 * than the server waits for a Hello: connect again afterwards, so
		 * the Hello goes out on a fresh connection. */
		r = engine_open(kvc, fd, msg, msglen);
		close(fd);
		fd = -1;
		if (r == 0)
			r = tcp_connect(kvc, deadline, &fd, msg, msglen);
		if (r)
			return r;
	}

	r = hs_recv(fd, deadline, &m);
	if (r == 0 && m.type != WIRE_FRAME_SERVER_HELLO)
		r = -EPROTO;
	if (r) {
		kvc_fmt_msg(msg, msglen, "kvc: %s: no ServerHello: %s%s", kvc->server, strerror(-r),
		            r == -EPROTO || r == -EBADMSG ? " (is that a kv-server?)"
		                                          : kvc_hint(r));
		goto out_close;
	}
	if (m.shel->min_version > WIRE_VERSION_MAX || m.shel->max_version < WIRE_VERSION_MIN) {
		r = -ENOTSUP;
		kvc_fmt_msg(
		        msg, msglen,
		        "kvc: kv-server at %s speaks protocol versions %u..%u, this client %u..%u "
		        "(upgrade the older side)",
		        kvc->server, m.shel->min_version, m.shel->max_version, WIRE_VERSION_MIN,
		        WIRE_VERSION_MAX);
		goto out_close;
	}
	if (m.shel->has_auth_nonce) {
		if (!kvc->token_len) {
			r = -EACCES;
			kvc_fmt_msg(
			        msg, msglen,
			        "kvc: kv-server at %s requires authentication: set %s to a file "
			        "holding its token",
			        kvc->server, kvc->auth_option);
			goto out_close;
		}
		if (m.shel->auth_nonce.len != WIRE_AUTH_NONCE_LEN) {
			r = -EPROTO;
			kvc_fmt_msg(msg, msglen, "kvc: %s: auth nonce of %zu bytes, expected %d",
			            kvc->server, m.shel->auth_nonce.len, WIRE_AUTH_NONCE_LEN);
			goto out_close;
		}
		memcpy(nonce, m.shel->auth_nonce.data, sizeof(nonce));
		auth = true;
	}
	wire_msg_free(&m);

	hello.min_version = WIRE_VERSION_MIN;
	hello.max_version = WIRE_VERSION_MAX;
	hello.client_id = kvc->client_id;
	hello.has_pid = 1; /* a shm server watches it: see docs/protocol.md */
	hello.pid = (uint32_t)getpid();
	if (kvc->engine && xfer_addr(kvc->engine, addr, &addrlen) == 0) {
		hello.provider = (char *)xfer_provider(kvc->engine);
		hello.has_engine_addr = 1;
		hello.engine_addr.data = addr;
		hello.engine_addr.len = addrlen;
	}
	if (auth) {
		size_t l = strlen(WIRE_AUTH_CLIENT_LABEL);

		memcpy(mac_in, WIRE_AUTH_CLIENT_LABEL, l);
		memcpy(mac_in + l, nonce, sizeof(nonce));
		kv_hmac_sha256(kvc->token, kvc->token_len, mac_in, l + sizeof(nonce), proof);
		hello.has_auth_proof = 1;
		hello.auth_proof.data = proof;
		hello.auth_proof.len = sizeof(proof);
		r = kv_random_bytes(cnonce, sizeof(cnonce));
		if (r) {
			kvc_fmt_msg(msg, msglen, "kvc: no random bytes for the auth nonce: %s",
			            strerror(-r));
			goto out_close;
		}
		hello.has_client_nonce = 1;
		hello.client_nonce.data = cnonce;
		hello.client_nonce.len = sizeof(cnonce);
	}
	req.id = atomic_fetch_add(&kvc->next_id, 1);
	req.body_case = KVFS__REQUEST__BODY_HELLO;
	req.hello = &hello;
	r = wire_encode_alloc(WIRE_FRAME_REQUEST, &req.base, 0, &frame, &flen);
	if (r) {
		kvc_fmt_msg(msg, msglen, "kvc: cannot encode Hello: %s", strerror(-r));
		goto out_close;
	}
	r = hs_send(fd, frame, flen, deadline);
	free(frame);
	if (r == 0)
		r = hs_recv(fd, deadline, &m);
	if (r == 0 && (m.type != WIRE_FRAME_RESPONSE || m.resp->id != req.id))
		r = -EPROTO;
	if (r) {
		kvc_fmt_msg(msg, msglen, "kvc: Hello to %s failed: %s%s", kvc->server, strerror(-r),
		            kvc_hint(r));
		goto out_close;
	}
	if (m.resp->has_status && m.resp->status) {
		int st = m.resp->status;

		r = wire_status_to_errno(st);
		if (r == -EACCES)
			kvc_fmt_msg(
			        msg, msglen,
			        "kvc: kv-server at %s refused the authentication%s%s (check that "
			        "the file given by %s holds the same token as the server's "
			        "--auth-token-file)",
			        kvc->server, m.resp->message ? ": " : "",
			        m.resp->message ? m.resp->message : "", kvc->auth_option);
		else
			kvc_fmt_msg(msg, msglen, "kvc: kv-server at %s refused Hello: %s%s%s%s",
			            kvc->server, wire_status_name(st), m.resp->message ? ": " : "",
			            m.resp->message ? m.resp->message : "", kvc_hint(r));
		goto out_close;
	}
	if (m.resp->body_case != KVFS__RESPONSE__BODY_HELLO || !m.resp->hello) {
		r = -EPROTO;
		kvc_fmt_msg(msg, msglen, "kvc: %s answered Hello without a HelloResponse",
		            kvc->server);
		goto out_close;
	}
	h = m.resp->hello;
	if (auth) {
		size_t l = strlen(WIRE_AUTH_SERVER_LABEL);
		uint8_t want[KV_SHA256_LEN];

		memcpy(mac_in, WIRE_AUTH_SERVER_LABEL, l);
		memcpy(mac_in + l, cnonce, sizeof(cnonce));
		memcpy(mac_in + l + sizeof(cnonce), nonce, sizeof(nonce));
		kv_hmac_sha256(kvc->token, kvc->token_len, mac_in,
		               l + sizeof(cnonce) + sizeof(nonce), want);
		if (!h->has_server_proof || h->server_proof.len != sizeof(want) ||
		    !wire_ct_equal(h->server_proof.data, want, sizeof(want))) {
			r = -EACCES;
			kvc_fmt_msg(
			        msg, msglen,
			        "kvc: kv-server at %s did not prove it holds the token (%s): wrong "
			        "server or different token",
			        kvc->server, h->has_server_proof ? "wrong proof" : "no proof");
			goto out_close;
		}
	}
	hello_limits(kvc, h, ret_lim);
	KV_DEBUG(KVC_TAG, "connected to %s (%s): protocol %u, max_inline %llu, rdma %s",
	         kvc->server, h->server_id ? h->server_id : "?", h->version,
	         (unsigned long long)ret_lim->max_inline, ret_lim->rdma ? "yes" : "no");
	wire_msg_free(&m);
	*ret_fd = fd;
	return 0;

out_close:
	wire_msg_free(&m);
	close(fd);
	return r;
}

/*
 * Make sure the connection is up, connecting if needed (one thread at a
 * time; the others wait), pausing between attempts with the backoff, never
 * past @deadline.  A refused connection ends the call at once (the server
 * is not running: fail fast, and let the next call try again).  @once: a
 * single attempt (kvc_connect).  Returns 0 and a
 * copy of the limits, or an error with this thread's message set.
 */
int kvc_ensure_up(struct kvc *kvc, uint64_t deadline, bool once, struct kvc_lim *ret_lim)
{
	char msg[KVC_MSG_LEN];
	struct kvc_lim lim;
	int r, fd = -1;

	pthread_mutex_lock(&kvc->lock);
	for (;;) {
		uint64_t now = kv_now_ms();

		switch (kvc->state) {
		case KVC_UP:
			*ret_lim = kvc->lim;
			pthread_mutex_unlock(&kvc->lock);
			return 0;
		case KVC_CLOSED:
			pthread_mutex_unlock(&kvc->lock);
			return kvc_fail(-ECANCELED, "kvc: the client of %s is closing",
			                kvc->server);
		case KVC_CONNECTING:
			if (now >= deadline) {
				pthread_mutex_unlock(&kvc->lock);
				return kvc_fail(-ETIMEDOUT,
				                "kvc: reconnecting to %s did not finish within the "
				                "deadline%s",
				                kvc->server, kvc_hint(-ETIMEDOUT));
			}
			kv_cond_wait_until(&kvc->cond, &kvc->lock, deadline);
			break;
		case KVC_DOWN:
			/* Refused: nothing listens there, and asking again costs one
			 * round trip, so every call asks once (and fails at once)
			 * instead of sleeping out its deadline in the backoff. */
			if (now < kvc->next_try_ms && kvc->last_err != -ECONNREFUSED) {
				if (kvc->next_try_ms >= deadline) {
					r = kvc->last_err ? kvc->last_err : -ECONNRESET;
					pthread_mutex_unlock(&kvc->lock);
					return kvc_fail(
					        r, "%s (retrying in %llu ms)", kvc->last_msg,
					        (unsigned long long)(kvc->next_try_ms - now));
				}
				kv_cond_wait_until(&kvc->cond, &kvc->lock, kvc->next_try_ms);
				break;
			}
			kvc->state = KVC_CONNECTING;
			pthread_mutex_unlock(&kvc->lock);
			r = connect_once(kvc, deadline, &fd, &lim, msg, sizeof(msg));
			pthread_mutex_lock(&kvc->lock);
			if (kvc->state == KVC_CLOSED) {
				if (r == 0)
					close(fd);
				break;
			}
			if (r == 0) {
				kvc->gen++;
				lim.gen = kvc->gen;
				kvc->lim = lim;
				kvc->state = KVC_UP;
				kvc->handover_sock = fd;
				kvc->backoff_ms = KVC_BACKOFF_MIN_MS;
				kvc->next_try_ms = 0;
				kvc->last_err = 0;
				pthread_cond_broadcast(&kvc->cond);
				kvc_io_kick(kvc);
				break;
			}
			KV_DEBUG(KVC_TAG, "%s", msg);
			kvc->state = KVC_DOWN;
			kvc->last_err = r;
			memcpy(kvc->last_msg, msg, sizeof(msg));
			kvc->next_try_ms = kv_now_ms() + (uint64_t)kvc->backoff_ms;
			kvc->backoff_ms = KV_MIN(2 * kvc->backoff_ms, KVC_BACKOFF_MAX_MS);
			pthread_cond_broadcast(&kvc->cond);
			if (once || is_permanent(r) || r == -ECONNREFUSED ||
			    kv_now_ms() >= deadline) {
				pthread_mutex_unlock(&kvc->lock);
				return kvc_fail(r, "%s", msg);
			}
			break;
		}
	}
}

/* ------------------------------------------------------------------ */
/* Submitting and waiting                                              */
/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* Direct calls (calling thread, parked socket; see kvc_i.h)           */
/* ------------------------------------------------------------------ */

/* Release the parked socket; @back (may be NULL) is an abandoned call whose
 * I/O reference moves to the I/O thread. */
static void direct_release(struct kvc *kvc, struct kvc_call *back, bool reset)
{
	bool kick;

	pthread_mutex_lock(&kvc->lock);
	kvc->direct_busy = false;
	if (reset)
		kvc->parked_gen = 0; /* no direct call on a closed socket */
	if (back)
		kvc->handback = back;
	kick = kvc->io_wants_sock || kvc->sub_head || kvc->handback || kvc->stop;
	pthread_mutex_unlock(&kvc->lock);
	if (kick)
		kvc_io_kick(kvc);
}

/* The connection broke under a direct call: close it (the next call
 * reconnects), fail @c unless it has its result, release the socket. */
static void direct_reset(struct kvc *kvc, struct kvc_call *c, int err, const char *why)
{
	KV_DEBUG(KVC_TAG, "connection to %s dropped: %s", kvc->server, why);
	close(kvc->sock);
	kvc->sock = -1;
	wire_reader_fini(&kvc->reader);
	if (!c->notified) {
		c->status = err;
		c->retry = c->sent_ms == 0 && c->frame_off == 0;
		kvc_fmt_msg(c->msg, sizeof(c->msg), "kvc: %s on %s: %s%s", c->what, kvc->server,
		            why, kvc_hint(err));
		kvc_call_notify(c);
	}
	/* Sent and unanswered: the server may still be moving its bytes. */
	c->lost = c->sent_ms != 0 && !c->resp.resp;
	kvc_conn_lost(kvc, c->gen, err, why);
	direct_release(kvc, NULL, true);
	kvc_call_put(kvc, c); /* the I/O reference */
}

/* Write @c's frame.  0, -ETIMEDOUT, or another error with @why set. */
static int direct_send(struct kvc *kvc, struct kvc_call *c, char *why, size_t whylen)
{
	while (c->frame_off < c->frame_len) {
		ssize_t n = send(kvc->sock, c->frame + c->frame_off, c->frame_len - c->frame_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			int r;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN) {
				kvc_fmt_msg(why, whylen, "send failed: %s", strerror(errno));
				return -ECONNRESET;
			}
			r = kvc_fd_wait(kvc->sock, POLLOUT, c->deadline_ms);
			if (r == -ETIMEDOUT)
				return r;
			if (r) {
				kvc_fmt_msg(why, whylen, "poll failed: %s", strerror(-r));
				return -ECONNRESET;
			}
			continue;
		}
		if (!c->sent_ms)
			c->sent_ms = kv_now_ms();
		c->frame_off += (size_t)n;
	}
	free(c->frame);
	c->frame = NULL;
	return 0;
}

/* Take one decoded frame: 1 when it answers @c.  <0 on a protocol error. */
static int direct_dispatch(struct kvc *kvc, struct kvc_call *c, struct wire_msg *msg)
{
	const Kvfs__Response *resp = msg->resp;
	int st;

	if (msg->type != WIRE_FRAME_RESPONSE) {
		wire_msg_free(msg);
		return -EPROTO;
	}
	if (resp->id != c->id || c->resp.resp) {
		KV_DEBUG(KVC_TAG, "response to unknown request %llu ignored",
		         (unsigned long long)resp->id);
		wire_msg_free(msg);
		return 0;
	}
	st = resp->has_status ? resp->status : 0;
	c->settled = kvc_status_settles(st);
	c->status = wire_status_to_errno(st);
	if (c->status) {
		c->retry = st == KVFS__STATUS__STALE; /* the server did nothing: safe to resend */
		c->busy = st == KVFS__STATUS__BUSY;
		kvc_fmt_msg(c->msg, sizeof(c->msg), "kvc: %s: %s%s%s%s", c->what,
		            wire_status_name(st), resp->message && *resp->message ? ": " : "",
		            resp->message ? resp->message : "", kvc_hint(c->status));
	}
	c->resp = *msg;
	memset(msg, 0, sizeof(*msg));
	return 1;
}

/* Read until @c's response arrives.  0, -ETIMEDOUT, or another error with
 * @why set. */
static int direct_recv(struct kvc *kvc, struct kvc_call *c, char *why, size_t whylen)
{
	while (!c->resp.resp) {
		ssize_t n;
		size_t off = 0;
		int r = kvc_fd_wait(kvc->sock, POLLIN, c->deadline_ms);

		if (r == -ETIMEDOUT)
			return r;
		if (r) {
			kvc_fmt_msg(why, whylen, "poll failed: %s", strerror(-r));
			return -ECONNRESET;
		}
		n = recv(kvc->sock, kvc->rbuf, KVC_RBUF_LEN, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			kvc_fmt_msg(why, whylen, "receive failed: %s", strerror(errno));
			return -ECONNRESET;
		}
		if (n == 0) {
			kvc_fmt_msg(why, whylen, "server closed the connection");
			return -ECONNRESET;
		}
		kvc->io_last_rx_ms = kv_now_ms();
		while (off < (size_t)n) {
			struct wire_msg msg = {0};
			size_t used = 0;

			r = wire_reader_feed(&kvc->reader, kvc->rbuf + off, (size_t)n - off, &used,
			                     &msg);
			if (r == 1)
				r = direct_dispatch(kvc, c, &msg);
			if (r == -EPROTO) {
				kvc_fmt_msg(why, whylen, "protocol error: a second ServerHello");
				return r;
			}
			if (r < 0) {
				kvc_fmt_msg(why, whylen, "protocol error: %s",
				            wire_reader_error(&kvc->reader));
				return r;
			}
			off += used;
		}
	}
	return 0;
}

/* Run @c on the parked socket (kvc->direct_busy is ours; @c holds an I/O
 * reference): the same outcomes as through the I/O thread. */
void kvc_direct_run(struct kvc *kvc, struct kvc_call *c)
{
	char why[200];
	int r;

	r = direct_send(kvc, c, why, sizeof(why));
	if (r == 0)
		r = direct_recv(kvc, c, why, sizeof(why));
	if (r == 0) {
		bool stale = c->retry;

		kvc_call_notify(c);
		if (stale) {
			direct_reset(kvc, c, -ECONNRESET,
			             "server dropped our transfer peer (STALE)");
			return;
		}
		direct_release(kvc, NULL, false);
		kvc_call_put(kvc, c);
		return;
	}
	if (r != -ETIMEDOUT) {
		direct_reset(kvc, c, r, why);
		return;
	}
	c->status = -ETIMEDOUT;
	kvc_fmt_msg(c->msg, sizeof(c->msg), "kvc: %s on %s: no answer within the deadline%s",
	            c->what, kvc->server, kvc_hint(-ETIMEDOUT));
	kvc_call_notify(c);
	if (c->sent_ms == 0) { /* never left: nothing to wait for */
		direct_release(kvc, NULL, false);
		kvc_call_put(kvc, c);
	} else if (c->frame_off < c->frame_len) {
		direct_reset(kvc, c, -ETIMEDOUT, "request cut short at its deadline");
	} else if (kvc->io_last_rx_ms < c->sent_ms) {
		direct_reset(kvc, c, -ETIMEDOUT, "server silent for a whole deadline");
	} else {
		/* Abandoned: the I/O thread resolves it (late response or reset). */
		direct_release(kvc, c, false);
	}
}

static int call_submit(struct kvc *kvc, struct kvc_call *c, const struct kvc_lim *lim,
                       Kvfs__Request *req)
{
	void *frame;
	size_t len;
	bool direct;
	int r;

	c->id = atomic_fetch_add(&kvc->next_id, 1);
	req->id = c->id;
	r = wire_encode_alloc(WIRE_FRAME_REQUEST, &req->base, lim->max_frame, &frame, &len);
	if (r)
		return kvc_fail(r, "kvc: %s: cannot encode the request: %s%s", c->what,
		                strerror(-r),
		                r == -EMSGSIZE ? " (above the server's frame limit)" : "");
	free(c->frame);
	c->frame = frame;
	c->frame_len = len;
	c->frame_off = 0;
	pthread_mutex_lock(&kvc->lock);
	if (kvc->state != KVC_UP || kvc->gen != lim->gen) {
		bool closed = kvc->state == KVC_CLOSED;

		pthread_mutex_unlock(&kvc->lock);
		c->retry = !closed;
		return kvc_fail(closed ? -ECANCELED : -ECONNRESET, "kvc: %s on %s: %s", c->what,
		                kvc->server, closed ? "client closing" : "connection lost");
	}
	c->gen = kvc->gen;
	atomic_fetch_add(&c->refs, 1); /* the I/O thread's (or the direct path's) */
	direct = c->kind == KVC_CALL_SYNC && kvc->parked && kvc->parked_gen == kvc->gen &&
	         !kvc->direct_busy && !kvc->io_wants_sock && !kvc->sub_head && !kvc->handback;
	if (direct) {
		kvc->direct_busy = true;
	} else {
		if (kvc->sub_tail)
			kvc->sub_tail->sub_next = c;
		else
			kvc->sub_head = c;
		kvc->sub_tail = c;
	}
	pthread_mutex_unlock(&kvc->lock);
	if (direct)
		kvc_direct_run(kvc, c); /* notifies @c: call_wait() returns at once */
	else
		kvc_io_kick(kvc);
	return 0;
}

static int call_wait(struct kvc_call *c)
{
	while (sem_wait(&c->done) && errno == EINTR)
		;
	if (c->status)
		return kvc_fail(c->status, "%s", c->msg);
	return 0;
}

int kvc_op_run(struct kvc *kvc, struct kvc_op *op, struct kvc_call **ret_call)
{
	uint64_t pause = KVC_BUSY_MIN_MS;
	struct kvc_lim lim;
	int r;

	for (;;) {
		uint64_t sent = kv_now_ms();
		struct kvc_call *c;
		bool retry, busy;

		r = kvc_ensure_up(kvc, op->deadline, false, &lim);
		if (r)
			return r;
		c = kvc_call_new(KVC_CALL_SYNC, op->name, op->key, op->keylen, op->deadline);
		if (!c)
			return kvc_fail(-ENOMEM, "kvc: %s: out of memory", op->name);
		r = op->prep ? op->prep(kvc, op, c, &lim) : 0;
		if (r == 0)
			r = call_submit(kvc, c, &lim, &op->req);
		if (op->unprep)
			op->unprep(op);
		if (r == 0)
			r = call_wait(c);
		if (r == 0) {
			const Kvfs__Response *resp = c->resp.resp;

			if ((int)resp->body_case != op->body) {
				r = kvc_fail(-EPROTO, "kvc: %s: server answered without a body",
				             c->what);
				kvc_call_put(kvc, c);
				return r;
			}
			*ret_call = c;
			return 0;
		}
		retry = c->retry;
		busy = c->busy;
		kvc_call_put(kvc, c);
		if (busy) {
			/* Refused before anything was done (the server's
			 * in-flight limit, or this client holding failed
			 * transfers past --max-held, which come back within
			 * seconds once a link is up again): pause and resend
			 * while the deadline leaves room for the pause and a
			 * round trip as long as this one; else the BUSY stands. */
			uint64_t now = kv_now_ms();

			if (now + pause + (now - sent) >= op->deadline)
				return r;
			KV_DEBUG(KVC_TAG, "%s: resending in %llu ms after: %s", op->name,
			         (unsigned long long)pause, kvc_errbuf);
			usleep((useconds_t)pause * 1000);
			pause = KV_MIN(pause * 2, KVC_BUSY_MAX_MS);
			continue;
		}
		if (!retry || kv_now_ms() >= op->deadline)
			return r;
		KV_DEBUG(KVC_TAG, "%s: resending after: %s", op->name, kvc_errbuf);
	}
}

/* ------------------------------------------------------------------ */
/* Connect / close / info                                              */
/* ------------------------------------------------------------------ */

void kvc_opts_init(struct kvc_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->provider = "auto";
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

int kvc_connect(const struct kvc_opts *opts, struct kvc **ret_kvc)
{
	char saved[KVC_MSG_LEN];
	struct kvc_lim lim;
	struct kvc *kvc;
	char addr[sizeof(kvc->host) + 8]; /* "[host]:port" */
	int r;

	if (!opts || !opts->server || !*opts->server || !ret_kvc)
		return kvc_fail(-EINVAL, "kvc: no server address given (opts.server = HOST:PORT)");
	kvc = calloc(1, sizeof(*kvc));
	if (!kvc)
		return kvc_fail(-ENOMEM, "kvc: out of memory");
	kvc->sock = kvc->handover_sock = kvc->epfd = kvc->efd = kvc->tfd = -1;
	pthread_mutex_init(&kvc->lock, NULL);
	kv_cond_init_monotonic(&kvc->cond);
	kvc->state = KVC_DOWN;
	kvc->backoff_ms = KVC_BACKOFF_MIN_MS;
	atomic_init(&kvc->next_id, 1);
	atomic_init(&kvc->kick_pending, false);

	r = kv_parse_hostport(opts->server, kvc->host, sizeof(kvc->host), KVC_DEFAULT_PORT,
	                      &kvc->port);
	if (r) {
		r = kvc_fail(r, "kvc: bad server address '%s' (use HOST:PORT, HOST or [V6]:PORT)",
		             opts->server);
		goto out_close;
	}
	/* Messages name HOST:PORT, with the port even when it was left out. */
	kvc->server = strdup(kv_fmt_hostport(kvc->host, kvc->port, addr, sizeof(addr)));
	kvc->provider = strdup(opts->provider && *opts->provider ? opts->provider : "auto");
	kvc->bind = dup_or_null(opts->bind);
	kvc->auth_option = strdup(opts->auth_option ? opts->auth_option : "auth_token_file");
	kvc->client_id = strdup(opts->client_id ? opts->client_id : "kvfs-client");
	kvc->rbuf = malloc(KVC_RBUF_LEN);
	if (!kvc->server || !kvc->provider || !kvc->client_id || !kvc->rbuf || !kvc->auth_option ||
	    (opts->bind && !kvc->bind)) {
		r = kvc_fail(-ENOMEM, "kvc: out of memory");
		goto out_close;
	}
	kvc->want_engine = strcmp(kvc->provider, "none") != 0;
	kvc->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : KVC_DEFAULT_TIMEOUT;
	kvc->connect_timeout_ms =
	        opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : kvc->timeout_ms;
	kvc->bounce_size = opts->bounce_size ? opts->bounce_size : KVC_DEFAULT_BOUNCE;
	if (opts->auth_token_file) {
		r = kv_read_token_file(opts->auth_token_file, kvc->token, sizeof(kvc->token),
		                       &kvc->token_len);
		if (r) {
			r = kvc_fail(r, "kvc: cannot read the auth token file %s: %s%s",
			             opts->auth_token_file,
			             r == -ENODATA ? "it is empty" : strerror(-r),
			             r == -EFBIG ? " (tokens are at most 4095 bytes)" : "");
			goto out_close;
		}
	}

	r = kvc_io_start(kvc);
	if (r)
		goto out_close;

	r = kvc_ensure_up(kvc, kvc_deadline(kvc, kvc->connect_timeout_ms), true, &lim);
	if (r)
		goto out_close;
	*ret_kvc = kvc;
	kvc_errbuf[0] = '\0';
	return 0;

out_close:
	snprintf(saved, sizeof(saved), "%s", kvc_errbuf);
	kvc_close(kvc);
	snprintf(kvc_errbuf, sizeof(kvc_errbuf), "%s", saved);
	return r;
}

void kvc_close(struct kvc *kvc)
{
	if (!kvc)
		return;
	pthread_mutex_lock(&kvc->lock);
	kvc->state = KVC_CLOSED;
	kvc->stop = true;
	pthread_cond_broadcast(&kvc->cond);
	pthread_mutex_unlock(&kvc->lock);
	kvc_io_stop(kvc);
	if (kvc->handover_sock >= 0)
		close(kvc->handover_sock);
	for (int i = 0; i < KVC_BOUNCE_SLOTS; i++)
		xfer_mr_dereg(kvc->bounce[i].mr);
	xfer_mr_dereg(kvc->stage_spare);
	if (kvc->has_peer)
		xfer_peer_remove(kvc->engine, kvc->server_peer);
	xfer_close(kvc->engine);
	pthread_cond_destroy(&kvc->cond);
	pthread_mutex_destroy(&kvc->lock);
	memset(kvc->token, 0, sizeof(kvc->token));
	free(kvc->rbuf);
	free(kvc->server);
	free(kvc->provider);
	free(kvc->bind);
	free(kvc->auth_option);
	free(kvc->client_id);
	free(kvc);
}

struct xfer_engine *kvc_engine(struct kvc *kvc)
{
	bool rdma;

	pthread_mutex_lock(&kvc->lock);
	rdma = kvc->lim.rdma;
	pthread_mutex_unlock(&kvc->lock);
	return rdma ? kvc->engine : NULL;
}

void kvc_limits(struct kvc *kvc, struct kvc_limits *ret_limits)
{
	struct kvc_limits l = {0};

	pthread_mutex_lock(&kvc->lock);
	l.max_value = kvc->lim.max_value;
	l.max_inline = kvc->lim.max_inline;
	l.chunk_size = kvc->lim.chunk_size;
	l.rdma = kvc->lim.rdma;
	snprintf(l.server_provider, sizeof(l.server_provider), "%s", kvc->lim.server_provider);
	snprintf(l.provider, sizeof(l.provider), "%s", l.rdma ? provider_of(kvc) : "none");
	pthread_mutex_unlock(&kvc->lock);
	*ret_limits = l;
}

/* ------------------------------------------------------------------ */
/* PUT                                                                 */
/* ------------------------------------------------------------------ */

struct put_ctx {
	Kvfs__PutRequest put;
	const void *val;    /* plain memory (kvc_put), or NULL */
	struct xfer_mr *mr; /* zero copy (kvc_put_mr), or NULL */
	uint64_t off;
	uint64_t len;
	Kvfs__Segment **segs;
	bool zero_copy_only; /* _mr: no RDMA is -ENOTSUP rather than -EFBIG */
};

/* Largest value that goes inline in a PUT with a key of @keylen bytes. */
static uint64_t put_inline_max(const struct kvc_lim *lim, size_t keylen)
{
	uint64_t room = lim->max_frame > keylen + 256 ? lim->max_frame - keylen - 256 : 0;

	return KV_MIN(lim->max_inline, room);
}

static int put_prep(struct kvc *kvc, struct kvc_op *op, struct kvc_call *c,
                    const struct kvc_lim *lim)
{
	struct put_ctx *p = op->arg;
	struct xfer_rsge rs;
	struct xfer_sge sg;
	char a[32], b[32];
	int r;

	p->put.has_value = 0;
	p->put.n_src = 0;
	p->put.src = NULL;
	p->put.has_length = 0;
	if (p->len <= put_inline_max(lim, op->keylen)) {
		p->put.has_value = 1;
		p->put.value.len = p->len;
		p->put.value.data = p->mr ? (uint8_t *)xfer_mr_addr(p->mr) + p->off
		                          : (uint8_t *)(uintptr_t)p->val;
		return 0;
	}
	if (lim->max_value && p->len > lim->max_value)
		return kvc_fail(-EFBIG,
		                "kvc: %s: value of %s is above the server's max_value of %s",
		                c->what, kv_fmt_size(p->len, a, sizeof(a)),
		                kv_fmt_size(lim->max_value, b, sizeof(b)));
	if (!lim->rdma)
		return kvc_fail(p->zero_copy_only ? -ENOTSUP : -EFBIG,
		                "kvc: %s: value of %s is above the server's inline limit of %s and "
		                "RDMA is not available (client provider %s, server %s)",
		                c->what, kv_fmt_size(p->len, a, sizeof(a)),
		                kv_fmt_size(put_inline_max(lim, op->keylen), b, sizeof(b)),
		                kvc->provider, lim->server_provider);
	if (p->mr) {
		sg = (struct xfer_sge){.mr = p->mr, .off = p->off, .len = p->len};
	} else if (p->len <= kvc->bounce_size && (c->bounce = kvc_bounce_get(kvc))) {
		memcpy(xfer_mr_addr(c->bounce->mr), p->val, p->len);
		sg = (struct xfer_sge){.mr = c->bounce->mr, .off = 0, .len = p->len};
	} else {
		r = kvc_stage_get(kvc, c->what, p->len, &c->stage);
		if (r)
			return r;
		memcpy(xfer_mr_addr(c->stage), p->val, p->len);
		sg = (struct xfer_sge){.mr = c->stage, .off = 0, .len = p->len};
	}
	xfer_mr_desc(sg.mr, &rs.desc);
	rs.off = sg.off;
	rs.len = sg.len;
	p->segs = wire_segs_new(&rs, 1);
	if (!p->segs)
		return kvc_fail(-ENOMEM, "kvc: %s: out of memory", c->what);
	p->put.n_src = 1;
	p->put.src = p->segs;
	p->put.has_length = 1;
	p->put.length = p->len;
	c->expect = true;
	xfer_expect(kvc->engine, +1);
	return 0;
}

static void put_unprep(struct kvc_op *op)
{
	struct put_ctx *p = op->arg;

	wire_segs_free(p->segs);
	p->segs = NULL;
	p->put.src = NULL;
	p->put.n_src = 0;
}

static void put_init(struct put_ctx *p, struct kvc_op *op, struct kvc *kvc, const void *key,
                     size_t keylen, const struct kvc_put_opts *o)
{
	memset(p, 0, sizeof(*p));
	memset(op, 0, sizeof(*op));
	kvfs__put_request__init(&p->put);
	p->put.key.data = (uint8_t *)(uintptr_t)key;
	p->put.key.len = keylen;
	if (o && o->mode) {
		p->put.has_mode = 1;
		p->put.mode = o->mode;
	}
	if (o && o->mtime_ns) {
		p->put.has_mtime_ns = 1;
		p->put.mtime_ns = o->mtime_ns;
	}
	if (o && o->if_absent) {
		p->put.has_if_absent = 1;
		p->put.if_absent = 1;
	}
	if (o && o->if_version) {
		p->put.has_if_version = 1;
		p->put.if_version = o->if_version;
	}
	kvfs__request__init(&op->req);
	op->req.body_case = KVFS__REQUEST__BODY_PUT;
	op->req.put = &p->put;
	op->name = "PUT";
	op->key = key;
	op->keylen = keylen;
	op->deadline = kvc_deadline(kvc, o ? o->timeout_ms : 0);
	op->body = KVFS__RESPONSE__BODY_PUT;
	op->prep = put_prep;
	op->unprep = put_unprep;
	op->arg = p;
}

static int put_run(struct kvc *kvc, struct kvc_op *op, struct put_ctx *p,
                   const struct kvc_put_opts *o, struct kvc_entry *ret)
{
	struct kvc_call *c;
	int r;

	if (o && o->if_absent && o->if_version)
		return kvc_fail(-EINVAL, "kvc: PUT: if_absent and if_version exclude each other");
	r = kvc_op_run(kvc, op, &c);
	if (r)
		return r;
	if (ret) {
		ret->size = p->len;
		ret->version = c->resp.resp->put->version;
		ret->mtime_ns = c->resp.resp->put->has_mtime_ns ? c->resp.resp->put->mtime_ns : 0;
		ret->mode = o && o->mode ? o->mode : 0644;
	}
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}

int kvc_put(struct kvc *kvc, const void *key, size_t keylen, const void *val, size_t len,
            const struct kvc_put_opts *opts, struct kvc_entry *ret)
{
	struct put_ctx p;
	struct kvc_op op;
	int r = kvc_key_check("PUT", key, keylen);

	if (r)
		return r;
	if (!val && len)
		return kvc_fail(-EINVAL, "kvc: PUT: NULL value of %zu bytes", len);
	put_init(&p, &op, kvc, key, keylen, opts);
	p.val = val ? val : "";
	p.len = len;
	return put_run(kvc, &op, &p, opts, ret);
}

int kvc_mr_range_check(const char *what, struct xfer_mr *mr, uint64_t off, uint64_t len)
{
	if (!mr || off > xfer_mr_len(mr) || len > xfer_mr_len(mr) - off)
		return kvc_fail(-EINVAL,
		                "kvc: %s: range %llu+%llu is outside the registered region of %zu "
		                "bytes",
		                what, (unsigned long long)off, (unsigned long long)len,
		                mr ? xfer_mr_len(mr) : 0);
	return 0;
}

int kvc_put_mr(struct kvc *kvc, const void *key, size_t keylen, struct xfer_mr *mr, uint64_t off,
               uint64_t len, const struct kvc_put_opts *opts, struct kvc_entry *ret)
{
	struct put_ctx p;
	struct kvc_op op;
	int r = kvc_key_check("PUT", key, keylen);

	if (r || (r = kvc_mr_range_check("PUT", mr, off, len)))
		return r;
	put_init(&p, &op, kvc, key, keylen, opts);
	p.mr = mr;
	p.off = off;
	p.len = len;
	p.zero_copy_only = true;
	return put_run(kvc, &op, &p, opts, ret);
}

/* ------------------------------------------------------------------ */
/* GET                                                                 */
/* ------------------------------------------------------------------ */

struct get_ctx {
	Kvfs__GetRequest get;
	uint8_t *buf;               /* plain memory (kvc_get), or NULL */
	const struct xfer_sge *dst; /* zero copy (kvc_get_mr) */
	size_t ndst;
	uint64_t off;  /* value offset of the whole read */
	uint64_t len;  /* capacity of the whole read */
	uint64_t done; /* bytes read so far (inline pieces) */
	uint64_t pin;  /* version the pieces must belong to, 0 = first piece */
	uint64_t want; /* capacity of this request */
	bool inl;      /* this request is inline */
	bool rdma_bounce;
	Kvfs__Segment **segs;
};

/* Largest inline GET: the server's max_inline, within the frame size it
 * promises not to exceed. */
static uint64_t get_inline_max(const struct kvc_lim *lim)
{
	return KV_MIN(lim->max_inline, (uint64_t)WIRE_MAX_INLINE_DEFAULT);
}

static int get_prep(struct kvc *kvc, struct kvc_op *op, struct kvc_call *c,
                    const struct kvc_lim *lim)
{
	struct get_ctx *g = op->arg;
	uint64_t left = g->len - g->done, imax = get_inline_max(lim);
	struct xfer_rsge rs[WIRE_MAX_SEGS];
	size_t n = 0;
	int r;

	g->get.offset = g->off + g->done;
	g->get.has_offset = g->get.offset != 0;
	g->get.has_if_version = g->pin != 0;
	g->get.if_version = g->pin;
	g->get.has_want_inline = 0;
	g->get.want_inline = 0;
	g->get.n_dst = 0;
	g->get.dst = NULL;
	g->inl = false;
	g->rdma_bounce = false;
	g->get.has_length = 1;
	if (left == 0) {
		g->want = g->get.length = 0; /* metadata only */
		return 0;
	}
	if (left <= imax || !lim->rdma) {
		if (!imax)
			return kvc_fail(
			        g->dst ? -ENOTSUP : -EFBIG,
			        "kvc: %s: neither inline values nor RDMA are available (client "
			        "provider %s, server %s)",
			        c->what, kvc->provider, lim->server_provider);
		/* Inline; without RDMA a larger read continues in pieces. */
		g->want = g->get.length = KV_MIN(left, imax);
		g->get.has_want_inline = 1;
		g->get.want_inline = 1;
		g->inl = true;
		return 0;
	}
	g->want = g->get.length = left;
	if (g->dst) {
		uint64_t skip = g->done;

		for (size_t i = 0; i < g->ndst; i++) {
			if (g->dst[i].len <= skip) {
				skip -= g->dst[i].len;
				continue;
			}
			xfer_mr_desc(g->dst[i].mr, &rs[n].desc);
			rs[n].off = g->dst[i].off + skip;
			rs[n].len = g->dst[i].len - skip;
			skip = 0;
			n++;
		}
	} else if (left <= kvc->bounce_size && (c->bounce = kvc_bounce_get(kvc))) {
		xfer_mr_desc(c->bounce->mr, &rs[0].desc);
		rs[0].off = 0;
		rs[0].len = left;
		n = 1;
		g->rdma_bounce = true;
	} else {
		r = kvc_stage_get(kvc, c->what, left, &c->stage);
		if (r)
			return r;
		xfer_mr_desc(c->stage, &rs[0].desc);
		rs[0].off = 0;
		rs[0].len = left;
		n = 1;
	}
	g->segs = wire_segs_new(rs, n);
	if (!g->segs)
		return kvc_fail(-ENOMEM, "kvc: %s: out of memory", c->what);
	g->get.n_dst = n;
	g->get.dst = g->segs;
	c->peer_writes = true;
	c->expect = true;
	xfer_expect(kvc->engine, +1);
	return 0;
}

static void get_unprep(struct kvc_op *op)
{
	struct get_ctx *g = op->arg;

	wire_segs_free(g->segs);
	g->segs = NULL;
	g->get.dst = NULL;
	g->get.n_dst = 0;
}

static void get_init(struct get_ctx *g, struct kvc_op *op, struct kvc *kvc, const void *key,
                     size_t keylen, uint64_t off, const struct kvc_get_opts *o)
{
	memset(g, 0, sizeof(*g));
	memset(op, 0, sizeof(*op));
	kvfs__get_request__init(&g->get);
	g->get.key.data = (uint8_t *)(uintptr_t)key;
	g->get.key.len = keylen;
	g->off = off;
	g->pin = o ? o->if_version : 0;
	kvfs__request__init(&op->req);
	op->req.body_case = KVFS__REQUEST__BODY_GET;
	op->req.get = &g->get;
	op->name = "GET";
	op->key = key;
	op->keylen = keylen;
	op->deadline = kvc_deadline(kvc, o ? o->timeout_ms : 0);
	op->body = KVFS__RESPONSE__BODY_GET;
	op->prep = get_prep;
	op->unprep = get_unprep;
	op->arg = g;
}

/* Run a GET to completion: one request with RDMA, or inline pieces pinned
 * to the first piece's version (restarted if the value changes). */
static ssize_t get_run(struct kvc *kvc, struct kvc_op *op, struct get_ctx *g,
                       const struct kvc_get_opts *o, struct kvc_entry *ret)
{
	struct kvc_entry e = {0};
	int restarts = 0;

	if (g->dst) {
		for (size_t i = 0; i < g->ndst; i++) {
			int r = kvc_mr_range_check("GET", g->dst[i].mr, g->dst[i].off,
			                           g->dst[i].len);

			if (r)
				return r;
			g->len += g->dst[i].len;
		}
		if (g->ndst > WIRE_MAX_SEGS)
			return kvc_fail(-EINVAL, "kvc: GET: %zu pieces, at most %d", g->ndst,
			                WIRE_MAX_SEGS);
	}
	for (;;) {
		const Kvfs__GetResponse *gr;
		struct kvc_call *c;
		uint64_t got;
		int r = kvc_op_run(kvc, op, &c);

		if (r == -ESTALE && g->done && !(o && o->if_version) &&
		    restarts++ < KVC_GET_INLINE_RETRY) {
			/* The value changed between two inline pieces: read it again. */
			g->done = 0;
			g->pin = 0;
			continue;
		}
		if (r)
			return r;
		gr = c->resp.resp->get;
		got = KV_MIN(gr->bytes, g->want);
		if (g->inl) {
			got = KV_MIN(got, gr->has_data ? (uint64_t)gr->data.len : 0);
			if (g->dst)
				kvc_sge_scatter(g->dst, g->ndst, g->done, gr->data.data, got);
			else if (got)
				memcpy(g->buf + g->done, gr->data.data, got);
		} else if (g->rdma_bounce) {
			memcpy(g->buf + g->done, xfer_mr_addr(c->bounce->mr), got);
		} else if (c->stage) {
			memcpy(g->buf + g->done, xfer_mr_addr(c->stage), got);
		}
		kvc_entry_from_get(gr, &e);
		g->done += got;
		kvc_call_put(kvc, c);
		if (!g->inl || got < g->want || g->done == g->len || g->off + g->done >= e.size)
			break;
		g->pin = e.version; /* more pieces follow: same version only */
	}
	if (ret)
		*ret = e;
	kvc_errbuf[0] = '\0';
	return (ssize_t)g->done;
}

ssize_t kvc_get(struct kvc *kvc, const void *key, size_t keylen, uint64_t off, void *buf,
                size_t len, const struct kvc_get_opts *opts, struct kvc_entry *ret)
{
	struct get_ctx g;
	struct kvc_op op;
	int r = kvc_key_check("GET", key, keylen);

	if (r)
		return r;
	if (!buf && len)
		return kvc_fail(-EINVAL, "kvc: GET: NULL buffer of %zu bytes", len);
	get_init(&g, &op, kvc, key, keylen, off, opts);
	g.buf = buf;
	g.len = len;
	return get_run(kvc, &op, &g, opts, ret);
}

ssize_t kvc_get_mr(struct kvc *kvc, const void *key, size_t keylen, uint64_t off,
                   const struct xfer_sge *dst, size_t ndst, const struct kvc_get_opts *opts,
                   struct kvc_entry *ret)
{
	struct get_ctx g;
	struct kvc_op op;
	int r = kvc_key_check("GET", key, keylen);

	if (r)
		return r;
	if (!dst && ndst)
		return kvc_fail(-EINVAL, "kvc: GET: NULL piece list");
	get_init(&g, &op, kvc, key, keylen, off, opts);
	g.dst = dst;
	g.ndst = ndst;
	return get_run(kvc, &op, &g, opts, ret);
}

/* ------------------------------------------------------------------ */
/* Asynchronous zero-copy calls                                        */
/* ------------------------------------------------------------------ */

/* Prepare and submit once (no resend: the callback gets -ECONNRESET).
 * @setup fills the call's async fields before the I/O thread can see it. */
int kvc_op_submit_async(struct kvc *kvc, struct kvc_op *op, enum kvc_call_kind kind,
                        kvc_done_t done, void *arg, struct xfer_sge *adst, size_t nadst,
                        uint64_t put_len)
{
	struct kvc_lim lim;
	struct kvc_call *c;
	int r;

	r = kvc_ensure_up(kvc, op->deadline, false, &lim);
	if (r) {
		free(adst);
		return r;
	}
	c = kvc_call_new(kind, op->name, op->key, op->keylen, op->deadline);
	if (!c) {
		free(adst);
		return kvc_fail(-ENOMEM, "kvc: %s: out of memory", op->name);
	}
	c->cb = done;
	c->cb_arg = arg;
	c->adst_copy = adst; /* the call owns it now */
	c->adst = adst;
	c->nadst = nadst;
	c->put_len = put_len;
	r = op->prep(kvc, op, c, &lim);
	if (r == 0)
		r = call_submit(kvc, c, &lim, &op->req);
	op->unprep(op);
	kvc_call_put(kvc, c);
	if (r == 0)
		kvc_errbuf[0] = '\0';
	return r;
}

int kvc_get_mr_async(struct kvc *kvc, const void *key, size_t keylen, uint64_t off,
                     const struct xfer_sge *dst, size_t ndst, const struct kvc_get_opts *opts,
                     kvc_done_t done, void *arg)
{
	struct xfer_sge *copy = NULL;
	struct get_ctx g;
	struct kvc_op op;
	int r = kvc_key_check("GET", key, keylen);

	if (r)
		return r;
	if (!done)
		return kvc_fail(-EINVAL, "kvc: GET: no completion callback");
	if ((!dst && ndst) || ndst > WIRE_MAX_SEGS)
		return kvc_fail(-EINVAL, "kvc: GET: bad piece list (at most %d pieces)",
		                WIRE_MAX_SEGS);
	get_init(&g, &op, kvc, key, keylen, off, opts);
	for (size_t i = 0; i < ndst; i++) {
		r = kvc_mr_range_check("GET", dst[i].mr, dst[i].off, dst[i].len);
		if (r)
			return r;
		g.len += dst[i].len;
	}
	/* The I/O thread scatters inline bytes after we return: it gets a copy.
	 * Without RDMA at most max_inline bytes come back (a short read). */
	if (ndst) {
		copy = malloc(ndst * sizeof(*copy));
		if (!copy)
			return kvc_fail(-ENOMEM, "kvc: GET: out of memory");
		memcpy(copy, dst, ndst * sizeof(*copy));
	}
	g.dst = copy;
	g.ndst = ndst;
	return kvc_op_submit_async(kvc, &op, KVC_CALL_ASYNC_GET, done, arg, copy, ndst, 0);
}

int kvc_put_mr_async(struct kvc *kvc, const void *key, size_t keylen, struct xfer_mr *mr,
                     uint64_t off, uint64_t len, const struct kvc_put_opts *opts, kvc_done_t done,
                     void *arg)
{
	struct put_ctx p;
	struct kvc_op op;
	int r = kvc_key_check("PUT", key, keylen);

	if (r || (r = kvc_mr_range_check("PUT", mr, off, len)))
		return r;
	if (!done)
		return kvc_fail(-EINVAL, "kvc: PUT: no completion callback");
	if (opts && opts->if_absent && opts->if_version)
		return kvc_fail(-EINVAL, "kvc: PUT: if_absent and if_version exclude each other");
	put_init(&p, &op, kvc, key, keylen, opts);
	p.mr = mr;
	p.off = off;
	p.len = len;
	p.zero_copy_only = true;
	return kvc_op_submit_async(kvc, &op, KVC_CALL_ASYNC_PUT, done, arg, NULL, 0, len);
}

/* ------------------------------------------------------------------ */
/* Metadata operations                                                 */
/* ------------------------------------------------------------------ */

static void op_init(struct kvc_op *op, struct kvc *kvc, const char *name, const void *key,
                    size_t keylen, int body)
{
	memset(op, 0, sizeof(*op));
	kvfs__request__init(&op->req);
	op->name = name;
	op->key = key;
	op->keylen = keylen;
	op->deadline = kvc_deadline(kvc, 0);
	op->body = body;
	op->req.body_case = (Kvfs__Request__BodyCase)body;
}

int kvc_stat(struct kvc *kvc, const void *key, size_t keylen, struct kvc_entry *ret)
{
	Kvfs__StatRequest st = KVFS__STAT_REQUEST__INIT;
	struct kvc_call *c;
	struct kvc_op op;
	int r = kvc_key_check("STAT", key, keylen);

	if (r)
		return r;
	op_init(&op, kvc, "STAT", key, keylen, KVFS__RESPONSE__BODY_STAT);
	st.key.data = (uint8_t *)(uintptr_t)key;
	st.key.len = keylen;
	op.req.stat = &st;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	if (ret)
		entry_from_pb(c->resp.resp->stat->entry, ret);
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}

int kvc_delete(struct kvc *kvc, const void *key, size_t keylen, uint64_t if_version)
{
	Kvfs__DeleteRequest d = KVFS__DELETE_REQUEST__INIT;
	struct kvc_call *c;
	struct kvc_op op;
	int r = kvc_key_check("DELETE", key, keylen);

	if (r)
		return r;
	op_init(&op, kvc, "DELETE", key, keylen, KVFS__RESPONSE__BODY_DELETE);
	d.key.data = (uint8_t *)(uintptr_t)key;
	d.key.len = keylen;
	d.has_if_version = if_version != 0;
	d.if_version = if_version;
	op.req.delete_ = &d;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}

int kvc_rename(struct kvc *kvc, const void *src, size_t srclen, const void *dst, size_t dstlen,
               bool no_overwrite, uint64_t *ret_version)
{
	Kvfs__RenameRequest rn = KVFS__RENAME_REQUEST__INIT;
	struct kvc_call *c;
	struct kvc_op op;
	int r = kvc_key_check("RENAME", src, srclen);

	if (r || (r = kvc_key_check("RENAME", dst, dstlen)))
		return r;
	op_init(&op, kvc, "RENAME", src, srclen, KVFS__RESPONSE__BODY_RENAME);
	rn.src.data = (uint8_t *)(uintptr_t)src;
	rn.src.len = srclen;
	rn.dst.data = (uint8_t *)(uintptr_t)dst;
	rn.dst.len = dstlen;
	rn.has_no_overwrite = no_overwrite;
	rn.no_overwrite = no_overwrite;
	op.req.rename = &rn;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	if (ret_version)
		*ret_version = c->resp.resp->rename->version;
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}

int kvc_setattr(struct kvc *kvc, const void *key, size_t keylen, int64_t mode, int64_t mtime_ns,
                struct kvc_entry *ret)
{
	Kvfs__SetAttrRequest sa = KVFS__SET_ATTR_REQUEST__INIT;
	struct kvc_call *c;
	struct kvc_op op;
	int r = kvc_key_check("SETATTR", key, keylen);

	if (r)
		return r;
	op_init(&op, kvc, "SETATTR", key, keylen, KVFS__RESPONSE__BODY_SETATTR);
	sa.key.data = (uint8_t *)(uintptr_t)key;
	sa.key.len = keylen;
	sa.has_mode = mode >= 0;
	sa.mode = (uint32_t)(mode >= 0 ? mode & 07777 : 0);
	sa.has_mtime_ns = mtime_ns >= 0;
	sa.mtime_ns = mtime_ns >= 0 ? mtime_ns : 0;
	op.req.setattr = &sa;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	if (ret)
		entry_from_pb(c->resp.resp->setattr->entry, ret);
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}

static char *bin_dup(const ProtobufCBinaryData *b)
{
	char *s = malloc(b->len + 1);

	if (s) {
		if (b->len)
			memcpy(s, b->data, b->len);
		s[b->len] = '\0';
	}
	return s;
}

void kvc_list_free(struct kvc_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n_entries; i++)
		free(l->entries[i].key);
	for (size_t i = 0; i < l->n_prefixes; i++)
		free(l->prefixes[i]);
	free(l->entries);
	free(l->prefixes);
	free(l->prefix_e);
	free(l->next_start_after);
	memset(l, 0, sizeof(*l));
}

static int marker_cmp(const Kvfs__Entry *marker, const ProtobufCBinaryData *prefix)
{
	return kv_key_cmp(marker->key.data, marker->key.len, prefix->data, prefix->len);
}

static void set_bin(protobuf_c_boolean *has, ProtobufCBinaryData *b, const char *s)
{
	if (s && *s) {
		*has = 1;
		b->data = (uint8_t *)(uintptr_t)s;
		b->len = strlen(s);
	}
}

int kvc_list(struct kvc *kvc, const char *prefix, const char *delimiter, const char *start_after,
             uint32_t limit, struct kvc_list *ret)
{
	Kvfs__ListRequest lr = KVFS__LIST_REQUEST__INIT;
	const Kvfs__ListResponse *res;
	struct kvc_list l = {0};
	struct kvc_call *c;
	struct kvc_op op;
	int r;

	if (!ret)
		return kvc_fail(-EINVAL, "kvc: LIST: no result given");
	op_init(&op, kvc, "LIST", prefix, prefix ? strlen(prefix) : 0, KVFS__RESPONSE__BODY_LIST);
	if (!prefix || !*prefix)
		op.key = NULL;
	set_bin(&lr.has_prefix, &lr.prefix, prefix);
	set_bin(&lr.has_delimiter, &lr.delimiter, delimiter);
	set_bin(&lr.has_start_after, &lr.start_after, start_after);
	lr.has_limit = limit != 0;
	lr.limit = limit;
	op.req.list = &lr;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	res = c->resp.resp->list;
	l.entries = calloc(res->n_entries ? res->n_entries : 1, sizeof(*l.entries));
	l.prefixes =
	        calloc(res->n_common_prefixes ? res->n_common_prefixes : 1, sizeof(*l.prefixes));
	l.prefix_e =
	        calloc(res->n_common_prefixes ? res->n_common_prefixes : 1, sizeof(*l.prefix_e));
	if (!l.entries || !l.prefixes || !l.prefix_e)
		goto out_nomem;
	for (size_t i = 0; i < res->n_entries; i++) {
		l.entries[i].key = bin_dup(&res->entries[i]->key);
		if (!l.entries[i].key)
			goto out_nomem;
		l.n_entries++;
		l.entries[i].keylen = res->entries[i]->key.len;
		entry_from_pb(res->entries[i], &l.entries[i].e);
	}
	for (size_t i = 0, m = 0; i < res->n_common_prefixes; i++) {
		const ProtobufCBinaryData *pb = &res->common_prefixes[i];

		l.prefixes[i] = bin_dup(pb);
		if (!l.prefixes[i])
			goto out_nomem;
		l.n_prefixes++;
		/* markers come in their prefixes' order; skip any that match none */
		while (m < res->n_prefix_markers && marker_cmp(res->prefix_markers[m], pb) < 0)
			m++;
		if (m < res->n_prefix_markers && marker_cmp(res->prefix_markers[m], pb) == 0)
			entry_from_pb(res->prefix_markers[m++], &l.prefix_e[i]);
	}
	l.truncated = res->has_truncated && res->truncated;
	if (l.truncated && res->has_next_start_after) {
		l.next_start_after = bin_dup(&res->next_start_after);
		if (!l.next_start_after)
			goto out_nomem;
	}
	kvc_call_put(kvc, c);
	*ret = l;
	kvc_errbuf[0] = '\0';
	return 0;

out_nomem:
	kvc_call_put(kvc, c);
	kvc_list_free(&l);
	return kvc_fail(-ENOMEM, "kvc: LIST: out of memory");
}

int kvc_stats(struct kvc *kvc, void (*fn)(void *arg, const char *name, uint64_t value), void *arg)
{
	Kvfs__StatsRequest sr = KVFS__STATS_REQUEST__INIT;
	const Kvfs__StatsResponse *res;
	struct kvc_call *c;
	struct kvc_op op;
	int r;

	op_init(&op, kvc, "STATS", NULL, 0, KVFS__RESPONSE__BODY_STATS);
	op.req.stats = &sr;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	res = c->resp.resp->stats;
	for (size_t i = 0; fn && i < res->n_counters; i++)
		fn(arg, res->counters[i]->name, res->counters[i]->value);
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}
