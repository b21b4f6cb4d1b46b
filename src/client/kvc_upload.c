/* SPDX-License-Identifier: MIT */
/*
 * Uploads: a PUT streamed in parts while the caller produces the bytes
 * (kvc_upload_*, include/kvfs/client.h).
 *
 * The bytes written go into a part buffer; when it is full, or the next
 * write does not continue it, the buffer is sent as an UPLOAD_PART (the
 * server RDMA-READs it, or it travels inline without RDMA) and the caller
 * goes on filling another buffer while the server pulls the first.  Part
 * buffers come from one pool per client (kvc->up_*: registered on first
 * use, at most up_max of up_part bytes), so memory is bounded per client,
 * not per file.  An upload holds at most KVC_UP_INFLIGHT buffers at once.
 *
 * An upload lives on the connection that opened it (the server drops it
 * with the connection): every request of it names that connection's
 * generation, and a reconnect fails the upload (-ECONNRESET) instead of
 * sending its parts to an upload of the same id on the new connection.
 *
 * Threads: one thread at a time calls an upload's functions; part answers
 * arrive on the I/O thread (part_done()), under u->lock.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvc_i.h"
#include "kvfs/util.h"

#define KVC_UP_INFLIGHT 4 /* buffers one upload holds at most: 1 filling, the rest sent */

struct kvc_upload {
	struct kvc *kvc;
	uint8_t *key;
	size_t keylen;
	uint64_t id;         /* the server's upload id on connection @gen */
	uint64_t gen, epoch; /* that connection */
	bool rdma;
	uint64_t max_inline; /* of that connection, for inline parts */
	uint64_t size;       /* the value's size with every write so far */
	int timeout_ms;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* a part answered */
	unsigned inflight;   /* parts sent, not answered */
	int err;             /* first failure: every later call fails with it */
	char msg[KVC_MSG_LEN];

	uint8_t *cur;           /* the buffer being filled, or NULL */
	struct xfer_mr *cur_mr; /* its registration (RDMA), or NULL: it is inl */
	uint64_t cur_off;       /* value offset of its first byte */
	size_t cur_len;
	uint8_t *inl; /* without RDMA: the one buffer (inline parts are copied into
	               * their frame when sent, so it is free again at once) */
};

/* One UPLOAD_PART in flight: what its answer (part_done()) needs. */
struct part_ctx {
	struct kvc_upload *u;
	struct xfer_mr *mr;
};

/* Sending it (send_cur(), on the caller's stack: the answer may come, and
 * free the part_ctx, before the submission returns). */
struct part_send {
	struct kvc_upload *u;
	struct xfer_mr *mr;
	Kvfs__UploadPartRequest part;
	Kvfs__Segment **segs;
};

/* ---- the pool of part buffers ------------------------------------------- */

void kvc_up_pool_init(struct kvc *kvc, size_t part, unsigned max)
{
	kvc->up_part = part ? part : KVC_DEFAULT_UP_PART;
	kvc->up_max = max ? max : KVC_DEFAULT_UP_BUFS;
	kv_cond_init_monotonic(&kvc->up_cond);
}

void kvc_up_pool_fini(struct kvc *kvc)
{
	for (unsigned i = 0; i < kvc->up_nfree; i++)
		xfer_mr_dereg(kvc->up_free[i]);
	free(kvc->up_free);
	pthread_cond_destroy(&kvc->up_cond);
}

/* A free part buffer, waiting for one until @deadline when all are in use. */
static int pool_get(struct kvc *kvc, uint64_t deadline, struct xfer_mr **ret)
{
	struct xfer_mr *mr = NULL;
	char a[32];
	int r = 0;

	pthread_mutex_lock(&kvc->lock);
	if (!kvc->up_free) {
		kvc->up_free = calloc(kvc->up_max, sizeof(*kvc->up_free));
		if (!kvc->up_free)
			r = -ENOMEM;
	}
	while (!r && !kvc->up_nfree && kvc->up_live >= kvc->up_max) {
		if (kv_now_ms() >= deadline)
			r = -ETIMEDOUT;
		else
			kv_cond_wait_until(&kvc->up_cond, &kvc->lock, deadline);
	}
	if (!r && kvc->up_nfree)
		mr = kvc->up_free[--kvc->up_nfree];
	else if (!r)
		kvc->up_live++; /* a new one, registered below */
	pthread_mutex_unlock(&kvc->lock);
	if (r == -ETIMEDOUT)
		return kvc_fail(r,
		                "kvc: upload: all %u part buffers stayed in use (other uploads "
		                "hold them); raise the number of upload buffers",
		                kvc->up_max);
	if (r)
		return kvc_fail(r, "kvc: upload: out of memory");
	if (!mr) {
		r = xfer_buf_alloc(kvc->engine, kvc->up_part,
		                   XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ, &mr);
		if (r) {
			pthread_mutex_lock(&kvc->lock);
			kvc->up_live--;
			pthread_cond_broadcast(&kvc->up_cond);
			pthread_mutex_unlock(&kvc->lock);
			return kvc_fail(
			        r, "kvc: upload: cannot allocate a registered buffer of %s: %s",
			        kv_fmt_size(kvc->up_part, a, sizeof(a)), strerror(-r));
		}
	}
	*ret = mr;
	return 0;
}

/* Give a buffer back; @lost: the server may still read it (a failed
 * part), so it is fenced off instead (read-only zeros) and not reused. */
static void pool_put(struct kvc *kvc, struct xfer_mr *mr, bool lost)
{
	if (!mr)
		return;
	pthread_mutex_lock(&kvc->lock);
	if (lost)
		kvc->up_live--;
	else
		kvc->up_free[kvc->up_nfree++] = mr;
	pthread_cond_broadcast(&kvc->up_cond);
	pthread_mutex_unlock(&kvc->lock);
	if (lost)
		xfer_mr_dereg_lost_ro(mr);
}

/* ---- requests ------------------------------------------------------------ */

/* Fail a call prepared on another connection than the upload's. */
static int same_conn(const struct kvc_upload *u, const struct kvc_call *c,
                     const struct kvc_lim *lim)
{
	if (lim->gen == u->gen)
		return 0;
	return kvc_fail(-ECONNRESET,
	                "kvc: %s: the connection to the server was lost during the upload; the "
	                "server dropped it and nothing was stored",
	                c->what);
}

static void up_fail(struct kvc_upload *u, int err, const char *msg)
{
	pthread_mutex_lock(&u->lock);
	if (!u->err) {
		u->err = err;
		snprintf(u->msg, sizeof(u->msg), "%s", msg);
	}
	pthread_mutex_unlock(&u->lock);
}

static int up_err(struct kvc_upload *u)
{
	int err;

	pthread_mutex_lock(&u->lock);
	err = u->err;
	if (err)
		snprintf(kvc_errbuf, sizeof(kvc_errbuf), "%s", u->msg);
	pthread_mutex_unlock(&u->lock);
	return err;
}

static int part_prep(struct kvc *kvc, struct kvc_op *op, struct kvc_call *c,
                     const struct kvc_lim *lim)
{
	struct part_send *p = op->arg;
	struct xfer_rsge rs;
	int r = same_conn(p->u, c, lim);

	(void)kvc;
	if (r || p->part.has_truncate || p->part.has_data)
		return r;
	xfer_mr_desc(p->mr, &rs.desc);
	rs.off = 0;
	rs.len = p->part.length;
	p->segs = wire_segs_new(&rs, 1);
	if (!p->segs)
		return kvc_fail(-ENOMEM, "kvc: %s: out of memory", c->what);
	p->part.n_src = 1;
	p->part.src = p->segs;
	c->expect = true;
	xfer_expect(kvc->engine, +1);
	return 0;
}

static void part_unprep(struct kvc_op *op)
{
	struct part_send *p = op->arg;

	wire_segs_free(p->segs);
	p->segs = NULL;
	p->part.src = NULL;
	p->part.n_src = 0;
}

static void op_init(struct kvc_op *op, struct kvc_upload *u, const char *name,
                    Kvfs__Request__BodyCase body)
{
	memset(op, 0, sizeof(*op));
	kvfs__request__init(&op->req);
	op->req.body_case = body;
	op->name = name;
	op->key = u->key;
	op->keylen = u->keylen;
	op->deadline = kvc_deadline(u->kvc, u->timeout_ms);
	op->body = (int)body; /* the answer has the same body case */
}

/* Can the server still be reading a part's buffer after answer @res?  Not
 * after a success, nor after a refusal, which comes before any transfer
 * (a full server, a quota, a value too large, a busy server, an unknown
 * upload); after a failed or timed-out transfer or a lost connection it
 * can, so that buffer is fenced off rather than reused. */
static bool part_may_be_read(ssize_t res)
{
	switch (-res) {
	case 0:
	case ENOSPC:
	case EFBIG:
	case EAGAIN:
	case ENOENT:
	case EINVAL:
	case ENOMEM:
		return false;
	default:
		return true;
	}
}

/* An UPLOAD_PART answered (I/O thread, or the caller on a failed submit). */
static void part_done(void *arg, ssize_t res, const struct kvc_entry *e)
{
	struct part_ctx *p = arg;
	struct kvc_upload *u = p->u;

	(void)e;
	pool_put(u->kvc, p->mr, part_may_be_read(res));
	pthread_mutex_lock(&u->lock);
	if (res < 0 && !u->err) {
		u->err = (int)res;
		snprintf(u->msg, sizeof(u->msg), "%s", kvc_errbuf);
	}
	u->inflight--;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->lock);
	free(p);
}

/* Send the buffer being filled as a part (it comes back in part_done()). */
static int send_cur(struct kvc_upload *u)
{
	struct part_send ps = {.u = u, .mr = u->cur_mr};
	struct part_ctx *p;
	struct kvc_op op;
	int r;

	if (!u->cur)
		return 0;
	p = calloc(1, sizeof(*p));
	if (!p) {
		r = kvc_fail(-ENOMEM, "kvc: upload: out of memory");
		up_fail(u, r, kvc_errbuf);
		return r;
	}
	p->u = u;
	p->mr = u->cur_mr;
	kvfs__upload_part_request__init(&ps.part);
	ps.part.upload = u->id;
	ps.part.has_offset = u->cur_off != 0;
	ps.part.offset = u->cur_off;
	if (!ps.mr) { /* inline: each part fits in max_inline (part_max()) */
		ps.part.has_data = 1;
		ps.part.data.data = u->cur;
		ps.part.data.len = u->cur_len;
	} else {
		ps.part.has_length = 1;
		ps.part.length = u->cur_len;
	}
	u->cur = NULL;
	u->cur_mr = NULL;
	op_init(&op, u, "UPLOAD_PART", KVFS__REQUEST__BODY_UPLOAD_PART);
	op.req.upload_part = &ps.part;
	op.prep = part_prep;
	op.unprep = part_unprep;
	op.arg = &ps;
	pthread_mutex_lock(&u->lock);
	u->inflight++;
	pthread_mutex_unlock(&u->lock);
	r = kvc_op_submit_async(u->kvc, &op, KVC_CALL_ASYNC_PART, part_done, p, NULL, 0, 0);
	if (r) { /* nothing was sent: the buffer is reusable */
		pool_put(u->kvc, ps.mr, false);
		pthread_mutex_lock(&u->lock);
		u->inflight--;
		pthread_mutex_unlock(&u->lock);
		up_fail(u, r, kvc_errbuf);
		free(p);
	}
	return r;
}

/* Wait until at most @n parts are in flight; the upload's error, if any. */
static int wait_inflight(struct kvc_upload *u, unsigned n)
{
	pthread_mutex_lock(&u->lock);
	while (u->inflight > n)
		pthread_cond_wait(&u->cond, &u->lock); /* every part ends by its deadline */
	pthread_mutex_unlock(&u->lock);
	return up_err(u);
}

/* ---- the API --------------------------------------------------------------- */

static int open_prep(struct kvc *kvc, struct kvc_op *op, struct kvc_call *c,
                     const struct kvc_lim *lim)
{
	struct kvc_upload *u = op->arg;
	const Kvfs__UploadOpenRequest *o = op->req.upload_open;

	(void)kvc;
	if (o->has_base_version) {
		int r = kvc_epoch_check(c, lim, o->base_version, u->epoch);

		if (r)
			return r;
	}
	u->gen = lim->gen;
	u->epoch = lim->epoch;
	u->rdma = lim->rdma;
	u->max_inline = lim->max_inline;
	return 0;
}

int kvc_upload_open(struct kvc *kvc, const void *key, size_t keylen,
                    const struct kvc_upload_opts *opts, struct kvc_upload **ret, uint64_t *ret_size)
{
	Kvfs__UploadOpenRequest o = KVFS__UPLOAD_OPEN_REQUEST__INIT;
	struct kvc_upload *u;
	struct kvc_call *c;
	struct kvc_op op;
	int r = kvc_key_check("UPLOAD", key, keylen);

	if (r)
		return r;
	u = calloc(1, sizeof(*u));
	if (!u || !(u->key = malloc(keylen ? keylen : 1))) {
		free(u);
		return kvc_fail(-ENOMEM, "kvc: UPLOAD: out of memory");
	}
	memcpy(u->key, key, keylen);
	u->keylen = keylen;
	u->kvc = kvc;
	u->timeout_ms = opts ? opts->timeout_ms : 0;
	pthread_mutex_init(&u->lock, NULL);
	pthread_cond_init(&u->cond, NULL);
	o.key.data = u->key;
	o.key.len = keylen;
	if (opts && opts->base_version) {
		o.has_base_version = 1;
		o.base_version = opts->base_version;
		u->epoch = opts->base_epoch;
	}
	op_init(&op, u, "UPLOAD_OPEN", KVFS__REQUEST__BODY_UPLOAD_OPEN);
	op.req.upload_open = &o;
	op.prep = open_prep;
	op.arg = u;
	r = kvc_op_run(kvc, &op, &c);
	if (r) {
		kvc_upload_abort(u);
		return r;
	}
	u->id = c->resp.resp->upload_open->upload;
	u->size = c->resp.resp->upload_open->size;
	kvc_call_put(kvc, c);
	if (ret_size)
		*ret_size = u->size;
	*ret = u;
	kvc_errbuf[0] = '\0';
	return 0;
}

/* Bytes one part carries: a pool buffer, or inline what one frame holds. */
static size_t part_max(const struct kvc_upload *u)
{
	size_t inl = u->max_inline > 1024 ? u->max_inline - 1024 : 0;

	return u->rdma ? u->kvc->up_part : KV_MIN(u->kvc->up_part, inl);
}

/* A buffer to fill: one buffer fills while the others are on their way. */
static int get_buf(struct kvc_upload *u)
{
	int r = wait_inflight(u, u->rdma ? KVC_UP_INFLIGHT - 1 : KVC_UP_INFLIGHT);

	if (r)
		return r;
	if (!u->rdma) {
		if (!u->inl && !(u->inl = malloc(part_max(u))))
			r = kvc_fail(-ENOMEM, "kvc: upload: out of memory");
		u->cur = u->inl;
	} else {
		r = pool_get(u->kvc, kvc_deadline(u->kvc, u->timeout_ms), &u->cur_mr);
		if (r == 0)
			u->cur = xfer_mr_addr(u->cur_mr);
	}
	if (r)
		up_fail(u, r, kvc_errbuf);
	return r;
}

int kvc_upload_write(struct kvc_upload *u, uint64_t off, const void *buf, size_t len)
{
	size_t pmax = part_max(u);
	int r = up_err(u);

	if (r)
		return r;
	if (!pmax)
		return kvc_fail(-EFBIG, "kvc: UPLOAD: the server takes no inline bytes and RDMA "
		                        "is not available");
	if (off + len < off)
		return kvc_fail(-EINVAL, "kvc: UPLOAD: offset + length wraps");
	while (len) {
		size_t n;

		if (u->cur && (off != u->cur_off + u->cur_len || u->cur_len == pmax)) {
			r = send_cur(u);
			if (r)
				return r;
		}
		if (!u->cur) {
			r = get_buf(u);
			if (r)
				return r;
			u->cur_off = off;
			u->cur_len = 0;
		}
		n = KV_MIN(len, pmax - u->cur_len);
		memcpy(u->cur + u->cur_len, buf, n);
		u->cur_len += n;
		off += n;
		buf = (const uint8_t *)buf + n;
		len -= n;
		u->size = KV_MAX(u->size, off);
	}
	return 0;
}

static int sync_prep(struct kvc *kvc, struct kvc_op *op, struct kvc_call *c,
                     const struct kvc_lim *lim)
{
	(void)kvc;
	return same_conn(op->arg, c, lim);
}

static void abort_unprep(struct kvc_op *op)
{
	(void)op;
}

/* Send what is buffered and wait for every part's answer. */
static int flush(struct kvc_upload *u)
{
	int r = up_err(u);

	if (r == 0)
		r = send_cur(u);
	if (r == 0)
		r = wait_inflight(u, 0);
	else
		(void)wait_inflight(u, 0);
	return r ? r : up_err(u);
}

int kvc_upload_truncate(struct kvc_upload *u, uint64_t size)
{
	Kvfs__UploadPartRequest t = KVFS__UPLOAD_PART_REQUEST__INIT;
	struct kvc_call *c;
	struct kvc_op op;
	int r = flush(u);

	if (r)
		return r;
	t.upload = u->id;
	t.has_truncate = 1;
	t.truncate = size;
	op_init(&op, u, "UPLOAD_PART", KVFS__REQUEST__BODY_UPLOAD_PART);
	op.req.upload_part = &t;
	op.prep = sync_prep;
	op.arg = u;
	r = kvc_op_run(u->kvc, &op, &c);
	if (r) {
		up_fail(u, r, kvc_errbuf);
		return r;
	}
	u->size = c->resp.resp->upload_part->size;
	kvc_call_put(u->kvc, c);
	return 0;
}

ssize_t kvc_upload_read(struct kvc_upload *u, uint64_t off, void *buf, size_t len)
{
	Kvfs__GetRequest g = KVFS__GET_REQUEST__INIT;
	size_t got = 0;
	int r = flush(u);

	if (r)
		return r;
	g.key.data = u->key;
	g.key.len = u->keylen;
	g.has_upload = g.has_want_inline = 1;
	g.upload = u->id;
	g.want_inline = 1;
	while (got < len) {
		const Kvfs__GetResponse *gr;
		struct kvc_call *c;
		struct kvc_op op;
		size_t n;

		g.has_offset = 1;
		g.offset = off + got;
		g.has_length = 1;
		g.length = len - got;
		op_init(&op, u, "GET", KVFS__REQUEST__BODY_GET);
		op.req.get = &g;
		op.prep = sync_prep;
		op.arg = u;
		r = kvc_op_run(u->kvc, &op, &c);
		if (r)
			return r;
		gr = c->resp.resp->get;
		n = gr->has_data ? KV_MIN(gr->data.len, len - got) : 0;
		if (n)
			memcpy((uint8_t *)buf + got, gr->data.data, n);
		kvc_call_put(u->kvc, c);
		if (!n)
			break; /* the end */
		got += n;
	}
	return (ssize_t)got;
}

uint64_t kvc_upload_size(const struct kvc_upload *u)
{
	return u->size;
}

/* Free @u; its buffers are back (no part in flight). */
static void up_free(struct kvc_upload *u)
{
	pool_put(u->kvc, u->cur_mr, false);
	free(u->inl);
	pthread_mutex_destroy(&u->lock);
	pthread_cond_destroy(&u->cond);
	free(u->key);
	free(u);
}

int kvc_upload_commit(struct kvc_upload *u, const struct kvc_put_opts *opts, struct kvc_entry *ret)
{
	struct kvc *kvc = u->kvc;
	int r = flush(u);

	if (r == 0) {
		struct kvc_put_opts o = opts ? *opts : (struct kvc_put_opts){0};

		o.timeout_ms = o.timeout_ms ? o.timeout_ms : u->timeout_ms;
		r = kvc_put_upload(kvc, u->key, u->keylen, u->id, u->gen, u->size, &o, ret);
	} else {
		kvc_upload_abort(u);
		return r;
	}
	if (r) { /* the server dropped the upload (or the connection is gone) */
		char saved[KVC_MSG_LEN];

		snprintf(saved, sizeof(saved), "%s", kvc_errbuf);
		up_free(u);
		snprintf(kvc_errbuf, sizeof(kvc_errbuf), "%s", saved);
		return r;
	}
	up_free(u);
	return 0;
}

/* UPLOAD_ABORT answered (I/O thread): nothing to do, the upload is freed. */
static void abort_done(void *arg, ssize_t res, const struct kvc_entry *e)
{
	(void)arg;
	(void)res;
	(void)e;
}

void kvc_upload_abort(struct kvc_upload *u)
{
	Kvfs__UploadAbortRequest a = KVFS__UPLOAD_ABORT_REQUEST__INIT;
	char saved[KVC_MSG_LEN];
	struct kvc_op op;
	bool live;

	if (!u)
		return;
	snprintf(saved, sizeof(saved), "%s", kvc_errbuf);
	(void)wait_inflight(u, 0);
	/* Tell the server, without waiting: on its connection, if that is
	 * still up (a closed connection dropped the upload already, and a
	 * close must not wait out a dead link's deadline once more). */
	pthread_mutex_lock(&u->kvc->lock);
	live = u->id && u->kvc->state == KVC_UP && u->kvc->gen == u->gen;
	pthread_mutex_unlock(&u->kvc->lock);
	if (live) {
		a.upload = u->id;
		op_init(&op, u, "UPLOAD_ABORT", KVFS__REQUEST__BODY_UPLOAD_ABORT);
		op.req.upload_abort = &a;
		op.prep = sync_prep;
		op.unprep = abort_unprep;
		op.arg = u;
		(void)kvc_op_submit_async(u->kvc, &op, KVC_CALL_ASYNC_PART, abort_done, NULL, NULL,
		                          0, 0);
	}
	up_free(u);
	snprintf(kvc_errbuf, sizeof(kvc_errbuf), "%s", saved);
}
