/* SPDX-License-Identifier: MIT */
/*
 * Running one operation on the calling thread: argument checks, submitting
 * its call (on the direct path when the socket is parked and free, else to
 * the I/O thread), waiting, and resending while the deadline allows when
 * the call never reached the server or the server refused it with BUSY.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvc_i.h"
#include "kvfs/log.h"
#include "kvfs/util.h"

uint64_t kvc_deadline(const struct kvc *kvc, int timeout_ms)
{
	return kv_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : kvc->timeout_ms);
}

int kvc_key_check(const char *what, const void *key, size_t len)
{
	const char *why;
	int r = wire_key_validate(key, len, 0, &why);

	if (r == -ENAMETOOLONG)
		return kvc_fail(r, "kvc: %s: key of %zu bytes is longer than %d bytes", what, len,
		                KV_KEY_MAX);
	if (r)
		return kvc_fail(r, "kvc: %s: %s (see docs/protocol.md, \"Keys\")", what, why);
	return 0;
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
	c->epoch = lim->epoch;
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
