/* SPDX-License-Identifier: MIT */
/*
 * kv-server's RDMA transfers: a GET that writes a pinned value into client
 * descriptors or a PUT that reads a client's value into a reservation is a
 * struct srv_op from op_submit() to its completion (op_complete()), and, if
 * it failed with segments still at the provider, to op_settled().  While
 * it is unsettled its memory is held, and so counted per client against
 * --max-held (held_*).  A closed connection whose ops are in flight stays
 * allocated (CONN_DRAINING) until the last one completes; their values are
 * unpinned and their reservations aborted then.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfs/log.h"
#include "kvfs/util.h"
#include "server_i.h"

#define TAG SRV_TAG

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

/* Refuse an RDMA GET or PUT from a client that already holds failed
 * transfers (a slow or cut link): each attempt that reaches the server and
 * fails the same way holds one more value's memory, until the link is back
 * or TCP gives up on it.  Other clients keep their room.  A client is one
 * proven engine (one process), so many processes are bounded by the total
 * (--max-held-total) as well. */
int held_check(struct conn *c, uint64_t len, char *msg, size_t msglen)
{
	struct srv *s = c->srv;
	struct srv_held *h = held_find(s, c->peer);
	char a[32], b[32];

	/* Past the total, only clients that hold some of it wait: one whose
	 * link is fine is never refused for what others hold. */
	if (h && s->unsettled_bytes + len > s->o.max_held_total) {
		s->c.refused_held++;
		KV_WARN_RL(TAG,
		           "%s: refused a transfer of %llu bytes: clients hold %llu bytes in "
		           "failed transfers not yet given back (--max-held-total %llu)",
		           c->name, (unsigned long long)len, (unsigned long long)s->unsettled_bytes,
		           (unsigned long long)s->o.max_held_total);
		snprintf(msg, msglen,
		         "clients hold %s of the server's memory in earlier transfers that failed "
		         "and have not come back (slow or cut links?); the server's limit for all "
		         "clients is %s (--max-held-total)",
		         kv_fmt_size(s->unsettled_bytes, a, sizeof(a)),
		         kv_fmt_size(s->o.max_held_total, b, sizeof(b)));
		return -EAGAIN;
	}
	if (!h || h->bytes + len <= s->o.max_held)
		return 0;
	s->c.refused_held++;
	KV_WARN_RL(TAG,
	           "%s: refused a transfer of %llu bytes: the client holds %llu bytes in "
	           "failed transfers not yet given back (--max-held %llu)",
	           c->name, (unsigned long long)len, (unsigned long long)h->bytes,
	           (unsigned long long)s->o.max_held);
	snprintf(msg, msglen,
	         "this client already holds %s of the server's memory in earlier transfers "
	         "that failed and have not come back (a slow or cut link?); the server's "
	         "limit is %s (--max-held)",
	         kv_fmt_size(h->bytes, a, sizeof(a)), kv_fmt_size(s->o.max_held, b, sizeof(b)));
	return -EAGAIN;
}

/* ------------------------------------------------------------------ */
/* Ops                                                                 */

void op_free(struct srv_op *op)
{
	xfer_mr_dereg(op->mr);
	free(op->rsge);
	free(op);
}

static const char *op_name(const struct srv_op *op)
{
	switch (op->kind) {
	case OP_GET:
		return "GET";
	case OP_PUT:
		return "PUT";
	case OP_PART:
		return "upload part";
	case OP_BIND:
		break;
	}
	return "engine proof";
}

struct srv_op *op_new(size_t nseg)
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

const char *op_submit_error_msg(int err, const char *what)
{
	if (err == -EDEADLK) /* xfer_submit(): the engine's watchdog saw it stuck */
		return "the server's transfer engine is stuck in its provider (see the server "
		       "log); restart kv-server";
	return what;
}

int op_submit(struct conn *c, struct srv_op *op, enum xfer_opcode opc, uint64_t arena_off,
              uint64_t len, size_t nrsge)
{
	struct store_seg seg = {.off = arena_off, .len = len};

	return op_submit_segs(c, op, opc, &seg, 1, nrsge);
}

int op_submit_segs(struct conn *c, struct srv_op *op, enum xfer_opcode opc,
                   const struct store_seg *segs, size_t nsegs, size_t nrsge)
{
	struct srv *s = c->srv;
	struct xfer_sge lbuf[16], *l = lbuf;
	struct xfer_op x = {.opcode = opc,
	                    .peer = c->peer,
	                    .nlocal = nsegs,
	                    .remote = op->rsge,
	                    .nremote = nrsge,
	                    .timeout_ms = s->o.timeout_ms,
	                    .notify_settled = true, /* see op_settled() */
	                    .cookie = (uint64_t)(uintptr_t)op,
	                    .cq = s->cq};
	int r;

	if (nsegs > KV_ARRAY_SIZE(lbuf) && !(l = calloc(nsegs, sizeof(*l))))
		return -ENOMEM;
	for (size_t i = 0; i < nsegs; i++)
		l[i] = (struct xfer_sge){.mr = op->mr ? op->mr : s->arena_mr,
		                         .off = segs[i].off,
		                         .len = segs[i].len};
	x.local = l;
	op->peer = c->peer;          /* held_add() may outlive the connection */
	r = xfer_submit(s->eng, &x); /* copies the lists */
	if (l != lbuf)
		free(l);
	if (r < 0)
		return r;
	c->ops++;
	s->ops++;
	conn_arm(c);
	return 0;
}

/* A transfer error that means the connection to the peer is gone. */
bool op_conn_failure(int err)
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
	else if (op->kind == OP_PUT)
		store_put_abort(s->store, op->resv);
	else if (op->kind == OP_PART)
		store_ext_put(s->store, op->ext);
	held_sub(s, op);
	KV_DEBUG(TAG, "a failed %s's %llu bytes are back from the provider; %u still held",
	         op_name(op), (unsigned long long)op->bytes, s->unsettled);
	op_free(op);
}

/* An engine proof came back: req_hello_bound() answers the HELLO. */
static void op_bound(struct srv *s, struct srv_op *op, int status, bool unsettled)
{
	struct conn *c = op->conn;

	if (status < 0)
		s->c.rdma_failures++;
	/* The provider's connection to that engine broke earlier (a cut link,
	 * a client that reconnected): its next transfer connects anew, so one
	 * more read spares the client a refused HELLO. */
	if (status < 0 && !unsettled && !op->retried && op_conn_failure(status) &&
	    !conn_closed(c)) {
		op->retried = true;
		c->ops--;
		s->ops--;
		if (op_submit(c, op, XFER_READ, 0, WIRE_ENGINE_NONCE_LEN, 1) == 0) {
			KV_INFO(TAG, "%s: reading its engine proof failed (%s); reading again",
			        c->name, strerror(-status));
			return;
		}
		c->ops++;
		s->ops++;
	}
	req_hello_bound(op, status);
	if (unsettled) { /* op_settled() follows: the page may still be written */
		op->conn = NULL;
		held_add(s, op);
	}
	c->ops--;
	s->ops--;
	conn_step(c);
	if (!unsettled)
		op_free(op);
}

static void op_complete(struct srv *s, struct srv_op *op, int status, bool unsettled)
{
	struct conn *c = op->conn;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__GetResponse gr = KVFS__GET_RESPONSE__INIT;
	Kvfs__PutResponse pr = KVFS__PUT_RESPONSE__INIT;
	Kvfs__UploadPartResponse up_pr = KVFS__UPLOAD_PART_RESPONSE__INIT;
	const char *msg = NULL;
	char why[160];
	uint64_t ver;
	int r = status;

	if (status < 0) {
		s->c.rdma_failures++;
		msg = status == -ETIMEDOUT ? "RDMA transfer timed out"
		                           : "RDMA transfer failed (client memory not reachable)";
		KV_INFO(TAG, "%s: %s %s: %s", c->name, op_name(op), msg, strerror(-status));
		/* The client sees TIMEOUT, STALE or IO, whatever the provider said
		 * (its codes mean nothing to a client).  STALE when the transfer
		 * connection to the client failed and nothing was committed: the
		 * client reconnects (a new Hello adds its engine again) and
		 * resends.  ECANCELED is what the provider gives operations queued
		 * on a connection it tears down, e.g. when a revived peer replaces
		 * a dead one after a network cut; tcp also reports a refused
		 * remote key that way, which then ends at the client's deadline. */
		if (!conn_closed(c) && op_conn_failure(status))
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
			gr.has_ctime_ns = gr.has_atime_ns = true;
			gr.ctime_ns = (int64_t)store_item_ctime(s->store, op->item);
			gr.atime_ns = (int64_t)store_item_atime(s->store, op->item);
			resp.body_case = KVFS__RESPONSE__BODY_GET;
			resp.get = &gr;
			s->c.get_bytes += op->bytes;
		}
		if (!unsettled)
			store_item_unpin(s->store, op->item);
	} else if (op->kind == OP_PART) {
		struct srv_upload *up = op->up;

		up->pending--;
		if (r < 0 && !up->err)
			up->err = r == -ETIMEDOUT || r == -ECONNRESET ? r : -EIO;
		if (r == 0) {
			up_pr.size = store_up_size(up->resv);
			resp.body_case = KVFS__RESPONSE__BODY_UPLOAD_PART;
			resp.upload_part = &up_pr;
			s->c.put_bytes += op->bytes;
		}
		op->up = NULL;
		if (!unsettled) {
			store_ext_put(s->store, op->ext);
			op->ext = NULL;
		}
	} else {
		if (r == 0) {
			if (!op->attrs.mtime_ns)
				op->attrs.mtime_ns = srv_realtime_ns();
			r = store_put_commit_attrs(s->store, op->resv, &op->cond, &op->attrs, &ver);
			if (r == -EOVERFLOW) { /* a pinned key grew past --max-pinned */
				r = -ENOSPC;
				msg = srv_pin_limit_msg(s, why, sizeof(why));
			}
			if (r == 0) {
				pr.version = ver;
				pr.has_mtime_ns = true;
				pr.mtime_ns = (int64_t)op->attrs.mtime_ns;
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
		        c->name, op_name(op),
		        op->kind == OP_GET   ? "value"
		        : op->kind == OP_PUT ? "reservation"
		                             : "memory");
		op->conn = NULL;
		held_add(s, op);
	}
	c->ops--;
	s->ops--;
	if (!conn_closed(c))
		conn_respond(c, op->id, r, msg, &resp);
	conn_step(c); /* reads again below max_inflight; a draining one may be freed */
	if (!unsettled)
		op_free(op);
}

void srv_reap(struct srv *s)
{
	struct xfer_comp comps[64];
	int n;

	while ((n = xfer_cq_poll(s->cq, comps, 64)) > 0) {
		for (int i = 0; i < n; i++) {
			struct srv_op *op = (struct srv_op *)(uintptr_t)comps[i].cookie;

			if (comps[i].settled)
				op_settled(s, op);
			else if (op->kind == OP_BIND)
				op_bound(s, op, comps[i].status, comps[i].unsettled);
			else
				op_complete(s, op, comps[i].status, comps[i].unsettled);
		}
	}
}
