/* SPDX-License-Identifier: MIT */
/*
 * Calls and the memory they lend the server: a call's life (new, notify,
 * put), the bounce pool and the staging buffer, and fencing off memory a
 * transfer may still touch (see "Deadlines and abandoned calls" in
 * kvc_i.h).  Async completions are delivered here, on the I/O thread.
 */

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvc_i.h"
#include "kvfs/log.h"
#include "kvfs/util.h"

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
		kv_quote_key(key, keylen, q, sizeof(q));
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
 * or allocation failed (the caller then uses a staging buffer: kvc_stage_get). */
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
		KV_DEBUG(KVC_TAG, "bounce buffer of %zu bytes: %s; using a staging buffer",
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

void kvc_entry_from_get(const Kvfs__GetResponse *g, uint64_t epoch, struct kvc_entry *e)
{
	e->epoch = epoch;
	e->size = g->size;
	e->version = g->version;
	e->mtime_ns = g->has_mtime_ns ? g->mtime_ns : 0;
	e->ctime_ns = g->has_ctime_ns ? g->ctime_ns : e->mtime_ns;
	e->atime_ns = g->has_atime_ns ? g->atime_ns : e->mtime_ns;
	e->mode = g->has_mode ? g->mode : 0;
	/* a GET does not carry owner or type: STAT does */
	e->has_owner = false;
	e->uid = e->gid = 0;
	e->type = KVC_TYPE_FILE;
	e->rdev = 0;
}

int kvc_epoch_check(const struct kvc_call *c, const struct kvc_lim *lim, uint64_t if_version,
                    uint64_t if_epoch)
{
	if (!if_version || !if_epoch || if_epoch == lim->epoch)
		return 0;
	return kvc_fail(-ESTALE,
	                "kvc: %s: version %llu is of an earlier kv-server instance (epoch %llu, "
	                "now %llu): the server restarted and that value is gone",
	                c->what, (unsigned long long)if_version, (unsigned long long)if_epoch,
	                (unsigned long long)lim->epoch);
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

			kvc_entry_from_get(g, c->epoch, &e);
			res = (ssize_t)g->bytes;
			if (g->has_data)
				kvc_sge_scatter(c->adst, c->nadst, 0, g->data.data,
				                KV_MIN(g->data.len, (size_t)g->bytes));
		}
	} else if (res == 0 && c->kind == KVC_CALL_ASYNC_PART) {
		if (resp->body_case != KVFS__RESPONSE__BODY_UPLOAD_PART || !resp->upload_part)
			res = -EPROTO;
	} else if (res == 0) {
		if (resp->body_case != KVFS__RESPONSE__BODY_PUT || !resp->put) {
			res = -EPROTO;
		} else {
			e.size = c->put_len;
			e.epoch = c->epoch;
			e.version = resp->put->version;
			e.mtime_ns = resp->put->has_mtime_ns ? resp->put->mtime_ns : 0;
			e.ctime_ns = e.atime_ns = e.mtime_ns;
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
