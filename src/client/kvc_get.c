/* SPDX-License-Identifier: MIT */
/*
 * GET: kvc_get (plain memory: inline, or through a bounce or staging
 * buffer), kvc_get_mr and kvc_get_mr_async (the caller's registered
 * pieces).  Without RDMA a large GET is read in inline pieces pinned to the
 * version of the first.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvc_i.h"
#include "kvfs/util.h"

struct get_ctx {
	Kvfs__GetRequest get;
	uint8_t *buf;               /* plain memory (kvc_get), or NULL */
	const struct xfer_sge *dst; /* zero copy (kvc_get_mr) */
	size_t ndst;
	uint64_t off;       /* value offset of the whole read */
	uint64_t len;       /* capacity of the whole read */
	uint64_t done;      /* bytes read so far (inline pieces) */
	uint64_t pin;       /* version the pieces must belong to, 0 = first piece */
	uint64_t pin_epoch; /* and its server epoch, 0 = any */
	uint64_t want;      /* capacity of this request */
	bool inl;           /* this request is inline */
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

	r = kvc_epoch_check(c, lim, g->pin, g->pin_epoch);
	if (r)
		return r;
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
	g->pin_epoch = o ? o->if_epoch : 0;
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
			g->pin_epoch = 0;
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
		kvc_entry_from_get(gr, c->epoch, &e);
		g->done += got;
		kvc_call_put(kvc, c);
		if (!g->inl || got < g->want || g->done == g->len || g->off + g->done >= e.size)
			break;
		g->pin = e.version; /* more pieces follow: same version (of this epoch) only */
		g->pin_epoch = e.epoch;
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
