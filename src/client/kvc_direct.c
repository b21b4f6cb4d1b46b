/* SPDX-License-Identifier: MIT */
/*
 * Direct calls: a synchronous call written and read on the calling thread,
 * on the socket the I/O thread parked (see "Direct calls" in kvc_i.h), with
 * the same outcomes as through the I/O thread.
 */

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvc_i.h"
#include "kvfs/log.h"
#include "kvfs/util.h"

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
		            resp->message ? resp->message : "", kvc_status_hint(st, resp->message));
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
