/* SPDX-License-Identifier: MIT */
/*
 * PUT: kvc_put (plain memory: inline, or through a bounce or staging buffer),
 * kvc_put_mr and kvc_put_mr_async (the caller's registered memory).
 */

#include <errno.h>
#include <string.h>

#include "kvc_i.h"
#include "kvfs/util.h"

struct put_ctx {
	Kvfs__PutRequest put;
	const void *val;    /* plain memory (kvc_put), or NULL */
	struct xfer_mr *mr; /* zero copy (kvc_put_mr), or NULL */
	uint64_t off;
	uint64_t len;
	Kvfs__Segment **segs;
	bool zero_copy_only; /* _mr: no RDMA is -ENOTSUP rather than -EFBIG */
	uint64_t if_epoch;   /* kvc_put_opts.if_epoch of the if_version */
	uint64_t upload_gen; /* kvc_put_upload(): the connection the upload lives on */
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

	r = kvc_epoch_check(c, lim, p->put.if_version, p->if_epoch);
	if (r)
		return r;
	if (p->put.has_upload) {
		if (lim->gen != p->upload_gen)
			return kvc_fail(-ECONNRESET,
			                "kvc: %s: the connection to the server was lost during the "
			                "upload; the server dropped it and nothing was stored",
			                c->what);
		return 0;
	}
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
		                "RDMA is not available (client provider %s, server %s%s%s)",
		                c->what, kv_fmt_size(p->len, a, sizeof(a)),
		                kv_fmt_size(put_inline_max(lim, op->keylen), b, sizeof(b)),
		                kvc->provider, lim->server_provider, lim->rdma_note[0] ? ": " : "",
		                lim->rdma_note);
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
		p->if_epoch = o->if_epoch;
	}
	if (o && o->set_owner) {
		p->put.has_uid = p->put.has_gid = 1;
		p->put.uid = o->uid;
		p->put.gid = o->gid;
	}
	if (o && o->type) {
		p->put.has_type = 1;
		p->put.type = o->type;
	}
	if (o && o->rdev) {
		p->put.has_rdev = 1;
		p->put.rdev = o->rdev;
	}
	if (o && o->drop_xattrs) {
		p->put.has_drop_xattrs = 1;
		p->put.drop_xattrs = 1;
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
		ret->epoch = c->epoch;
		ret->version = c->resp.resp->put->version;
		ret->mtime_ns = c->resp.resp->put->has_mtime_ns ? c->resp.resp->put->mtime_ns : 0;
		/* a commit changes the ctime (to the server's clock: about now) and
		 * keeps a replaced key's atime, which only a STAT tells */
		ret->ctime_ns = ret->atime_ns = ret->mtime_ns;
		ret->mode = o && o->mode ? o->mode : 0644;
		ret->type = o ? o->type : KVC_TYPE_FILE;
		ret->rdev = o ? o->rdev : 0;
		/* with no owner given the server kept the replaced key's, which
		 * only a STAT tells */
		ret->has_owner = o && o->set_owner;
		ret->uid = ret->has_owner ? o->uid : 0;
		ret->gid = ret->has_owner ? o->gid : 0;
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

int kvc_put_upload(struct kvc *kvc, const void *key, size_t keylen, uint64_t upload, uint64_t gen,
                   uint64_t size, const struct kvc_put_opts *opts, struct kvc_entry *ret)
{
	struct put_ctx p;
	struct kvc_op op;

	put_init(&p, &op, kvc, key, keylen, opts);
	p.len = size;
	p.upload_gen = gen;
	p.put.has_upload = 1;
	p.put.upload = upload;
	p.put.has_length = 1;
	p.put.length = size;
	return put_run(kvc, &op, &p, opts, ret);
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
