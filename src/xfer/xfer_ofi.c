/* SPDX-License-Identifier: MIT */
/*
 * libfabric back-end of the transfer engine.
 *
 * One FI_EP_RDM endpoint with caps FI_MSG|FI_RMA, one CQ (FI_CQ_FORMAT_DATA)
 * and one FI_AV_TABLE address vector per engine.  Works with the providers
 * that offer reliable-datagram RMA: "tcp;ofi_rxm" and "shm" (exercised by
 * the tests here), "verbs;ofi_rxm" and "efa" (written to the same API, not
 * exercisable without the hardware).  Memory-registration modes are
 * honoured as the provider asks: FI_MR_VIRT_ADDR (remote address is a
 * virtual address, else an offset), FI_MR_PROV_KEY (else we pick keys),
 * FI_MR_LOCAL (local descriptors on every post), FI_MR_ENDPOINT (bind the
 * MR to the endpoint).
 *
 * Unlike the seed prototype's engine, shared memory is never forbidden: on
 * efa the provider itself routes same-host peers through shm, so a client
 * and a server on one machine work.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include "kvfs/util.h" /* kv_random_bytes */
#include "kvfs/log.h"
#include "kvfs/topo.h"
#include "xfer_i.h"
#include "xfer_shm.h"

#define OFI_TAG      "xfer"
#define OFI_VERSION  FI_VERSION(1, 14)
#define OFI_CQ_BATCH 32

struct ofi_be {
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_cq *cq;
	struct fid_av *av;
	struct fid_ep *ep;
	uint64_t mr_mode;
	uint64_t key_mask; /* key bits the provider keeps, when it does not pick keys */
	int wait_fd;       /* CQ wait fd, -1 when the CQ has none */
	bool is_shm;
	bool cma_warned;       /* shm without CMA said once (progress thread only) */
	struct shm_peers *shm; /* shm: its peers' processes and regions (xfer_shm.c) */
};

/* The bits of a requested key that a provider with @size-byte keys keeps
 * (0 = the provider did not say: assume 8). */
static uint64_t ofi_key_mask(size_t size)
{
	return size == 0 || size >= sizeof(uint64_t) ? UINT64_MAX : (1ULL << (8 * size)) - 1;
}

static struct ofi_be *be_of(const struct xfer_engine *e)
{
	return e->be;
}

/* libfabric's FI_E* values are errno values; keep them, map the rest. */
static int ofi_err(int fi_ret)
{
	int r = fi_ret < 0 ? -fi_ret : fi_ret;

	if (r == FI_EAGAIN)
		return -EAGAIN;
	if (r >= FI_ERRNO_OFFSET)
		return -EIO;
	return -r;
}

static const char *const prov_order[] = {"efa", "verbs;ofi_rxm", "tcp;ofi_rxm"};

static const char *prov_fullname(const char *want)
{
	if (!strcmp(want, "tcp"))
		return "tcp;ofi_rxm";
	if (!strcmp(want, "verbs"))
		return "verbs;ofi_rxm";
	return want;
}

static int ofi_getinfo(const char *prov, const struct xfer_opts *o, struct fi_info **ret_info)
{
	struct fi_info *hints, *info = NULL;
	int r;

	hints = fi_allocinfo();
	if (!hints)
		return -ENOMEM;
	hints->caps = FI_MSG | FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE;
	hints->mode = FI_CONTEXT | FI_CONTEXT2;
	hints->ep_attr->type = FI_EP_RDM;
	hints->domain_attr->mr_mode =
	        FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
	hints->domain_attr->threading = FI_THREAD_SAFE;
	hints->tx_attr->msg_order = FI_ORDER_NONE;
	/* A write completes when the peer has the bytes, not when they left
	 * (tcp's default is transmit-complete: a forged key or a dead peer
	 * would otherwise look like success). */
	hints->tx_attr->op_flags = FI_DELIVERY_COMPLETE;
	hints->fabric_attr->prov_name = strdup(prov);
	if (o->domain)
		hints->domain_attr->name = strdup(o->domain);
	r = fi_getinfo(OFI_VERSION, o->node, NULL, o->node ? FI_SOURCE : 0, hints, &info);
	fi_freeinfo(hints);
	if (r)
		return ofi_err(r);
	if (!info)
		return -ENODEV;
	*ret_info = info;
	return 0;
}

/* The endpoint, its CQ and its address vector, on the open domain. */
static int ofi_ep_open(struct xfer_engine *e, struct ofi_be *b)
{
	struct fi_cq_attr cq_attr = {.format = FI_CQ_FORMAT_DATA, .wait_obj = FI_WAIT_FD};
	struct fi_av_attr av_attr = {.type = FI_AV_TABLE};
	const char *what;
	int r;

	cq_attr.size = 1024;
	b->wait_fd = -1;
	r = fi_cq_open(b->domain, &cq_attr, &b->cq, NULL);
	if (r == 0) {
		if (fi_control(&b->cq->fid, FI_GETWAIT, &b->wait_fd))
			b->wait_fd = -1;
	} else {
		cq_attr.wait_obj = FI_WAIT_NONE;
		what = "fi_cq_open";
		r = fi_cq_open(b->domain, &cq_attr, &b->cq, NULL);
		if (r)
			goto out_err;
	}
	what = "fi_av_open";
	r = fi_av_open(b->domain, &av_attr, &b->av, NULL);
	if (r)
		goto out_err;
	what = "fi_endpoint";
	r = fi_endpoint(b->domain, b->info, &b->ep, NULL);
	if (r)
		goto out_err;
	what = "fi_ep_bind(cq)";
	r = fi_ep_bind(b->ep, &b->cq->fid, FI_TRANSMIT | FI_RECV);
	if (r)
		goto out_err;
	what = "fi_ep_bind(av)";
	r = fi_ep_bind(b->ep, &b->av->fid, 0);
	if (r)
		goto out_err;
	what = "fi_enable";
	r = fi_enable(b->ep);
	if (r)
		goto out_err;
	if (b->shm) {
		char self[XFER_ADDR_MAX];
		size_t slen = sizeof(self);

		if (fi_getname(&b->ep->fid, self, &slen) == 0)
			shm_self_note(b->shm, self, slen);
	}
	return 0;
out_err:
	KV_DEBUG(OFI_TAG, "%s on %s: %s", what, e->prov_name, fi_strerror(-r));
	return ofi_err(r);
}

static void ofi_ep_close(struct ofi_be *b)
{
	if (b->ep)
		fi_close(&b->ep->fid);
	if (b->av)
		fi_close(&b->av->fid);
	if (b->cq)
		fi_close(&b->cq->fid);
	b->ep = NULL;
	b->av = NULL;
	b->cq = NULL;
	b->wait_fd = -1;
}

static void ofi_teardown(struct ofi_be *b)
{
	ofi_ep_close(b);
	if (b->domain)
		fi_close(&b->domain->fid);
	if (b->fabric)
		fi_close(&b->fabric->fid);
	if (b->info)
		fi_freeinfo(b->info);
	shm_peers_free(b->shm);
	free(b);
}

static int ofi_setup(struct xfer_engine *e, struct ofi_be *b)
{
	const char *what;
	int r;

	what = "fi_fabric";
	r = fi_fabric(b->info->fabric_attr, &b->fabric, NULL);
	if (r)
		goto out_err;
	what = "fi_domain";
	r = fi_domain(b->fabric, b->info, &b->domain, NULL);
	if (r)
		goto out_err;
	return ofi_ep_open(e, b);
out_err:
	KV_DEBUG(OFI_TAG, "%s on %s: %s", what, e->prov_name, fi_strerror(-r));
	return ofi_err(r);
}

static int ofi_open(struct xfer_engine *e, const struct xfer_opts *o)
{
	const char *want = o->provider ? o->provider : "auto";
	bool is_auto = !strcmp(want, "auto");
	size_t n = is_auto ? sizeof(prov_order) / sizeof(prov_order[0]) : 1;
	struct ofi_be *b;
	int r = -ENODEV;

	if (!is_auto && strcmp(want, "tcp") && strcmp(want, "shm") && strcmp(want, "verbs") &&
	    strcmp(want, "efa") && !strchr(want, ';')) {
		KV_DEBUG(OFI_TAG, "unknown provider '%s' (use auto, tcp, shm, verbs or efa)", want);
		return -EINVAL;
	}
	r = topo_libfabric_load();
	if (r)
		return r;
	if (!strcmp(want, "shm"))
		shm_reap_stale();
	for (size_t i = 0; i < n; i++) {
		const char *prov = is_auto ? prov_order[i] : prov_fullname(want);

		b = calloc(1, sizeof(*b));
		if (!b)
			return -ENOMEM;
		r = ofi_getinfo(prov, o, &b->info);
		if (r < 0) {
			KV_DEBUG(OFI_TAG, "provider %s%s%s%s: not available (%s)", prov,
			         o->domain ? " domain " : "", o->domain ? o->domain : "",
			         o->node ? " (bind address given)" : "",
			         r == -ENODATA || r == -ENODEV ? "no matching device"
			                                       : strerror(-r));
			free(b);
			continue;
		}
		snprintf(e->prov_name, sizeof(e->prov_name), "%s", b->info->fabric_attr->prov_name);
		snprintf(e->domain_name, sizeof(e->domain_name), "%s", b->info->domain_attr->name);
		b->mr_mode = b->info->domain_attr->mr_mode;
		b->is_shm = !strcmp(b->info->fabric_attr->prov_name, "shm");
		b->key_mask = ofi_key_mask(b->info->domain_attr->mr_key_size);
		e->be = b;
		r = b->is_shm && !(b->shm = shm_peers_new()) ? -ENOMEM : ofi_setup(e, b);
		if (r == 0) {
			size_t maxmsg = b->info->ep_attr->max_msg_size;

			if (maxmsg && e->chunk > maxmsg)
				e->chunk = maxmsg;
			if (b->info->tx_attr->size && e->max_inflight > b->info->tx_attr->size)
				e->max_inflight = (unsigned)b->info->tx_attr->size;
			KV_DEBUG(OFI_TAG,
			         "%s: mr_mode 0x%llx, max_msg %zu, tx queue %zu, wait fd %d",
			         e->prov_name, (unsigned long long)b->mr_mode, maxmsg,
			         b->info->tx_attr->size, b->wait_fd);
			return 0;
		}
		KV_DEBUG(OFI_TAG, "provider %s domain %s: setup failed: %s", e->prov_name,
		         e->domain_name, strerror(-r));
		e->be = NULL;
		ofi_teardown(b);
	}
	return r == -ENODATA ? -ENODEV : r;
}

static void ofi_close(struct xfer_engine *e)
{
	if (e->be)
		ofi_teardown(be_of(e));
	e->be = NULL;
}

static int ofi_addr(const struct xfer_engine *e, void *buf, size_t *len)
{
	size_t l = *len;
	int r;

	if (!be_of(e)->ep) /* a reset could not open a new one */
		return -ENOTCONN;
	r = fi_getname(&be_of(e)->ep->fid, buf, &l);

	*len = l;
	if (r == -FI_ETOOSMALL)
		return -ENOSPC;
	return r ? ofi_err(r) : 0;
}

static int ofi_peer_insert(struct xfer_engine *e, const void *addr, size_t len, uint64_t *ret)
{
	fi_addr_t fa = FI_ADDR_UNSPEC;
	int r;

	if (!be_of(e)->av)
		return -ENOTCONN;
	if (be_of(e)->shm && (r = shm_addr_check(addr, len)) < 0)
		return r;
	r = fi_av_insert(be_of(e)->av, addr, 1, &fa, 0, NULL);
	if (r != 1 || fa == FI_ADDR_UNSPEC)
		return r < 0 ? ofi_err(r) : -EINVAL;
	if (be_of(e)->shm)
		shm_peer_note(be_of(e)->shm, fa, addr, len);
	*ret = fa;
	return 0;
}

static void ofi_peer_remove(struct xfer_engine *e, uint64_t prov_addr)
{
	fi_addr_t fa = prov_addr;

	if (be_of(e)->av)
		fi_av_remove(be_of(e)->av, &fa, 1, 0);
	if (be_of(e)->shm)
		shm_peer_forget(be_of(e)->shm, prov_addr);
}

static int ofi_mr_reg(struct xfer_engine *e, struct xfer_mr *mr, unsigned access)
{
	struct ofi_be *b = be_of(e);
	struct fid_mr *fmr = NULL;
	uint64_t acc = 0, key = 0;
	int r;

	if (access & XFER_ACCESS_LOCAL)
		acc |= FI_READ | FI_WRITE;
	if (access & XFER_ACCESS_REMOTE_READ)
		acc |= FI_REMOTE_READ;
	if (access & XFER_ACCESS_REMOTE_WRITE)
		acc |= FI_REMOTE_WRITE;
	/* Where the provider takes the key we ask for (tcp;ofi_rxm), a key is
	 * all a peer needs to reach the region: make it unguessable, never a
	 * counter.  A random key that is already in use is drawn again. */
	for (int tries = 0;; tries++) {
		if (!(b->mr_mode & FI_MR_PROV_KEY)) {
			r = kv_random_bytes(&key, sizeof(key));
			if (r)
				return r;
			key &= b->key_mask;
		}
		r = fi_mr_reg(b->domain, mr->buf, mr->len, acc, 0, key, 0, &fmr, NULL);
		if (r != -FI_ENOKEY || (b->mr_mode & FI_MR_PROV_KEY) || tries >= 8)
			break;
	}
	if (r)
		return ofi_err(r);
	if (b->mr_mode & FI_MR_ENDPOINT) {
		r = fi_mr_bind(fmr, &b->ep->fid, 0);
		if (!r)
			r = fi_mr_enable(fmr);
		if (r) {
			fi_close(&fmr->fid);
			return ofi_err(r);
		}
	}
	mr->prov = fmr;
	mr->prov_desc = fi_mr_desc(fmr);
	mr->desc.addr = (b->mr_mode & FI_MR_VIRT_ADDR) ? (uint64_t)(uintptr_t)mr->buf : 0;
	mr->desc.len = mr->len;
	mr->desc.key = fi_mr_key(fmr);
	return 0;
}

static void ofi_mr_dereg(struct xfer_engine *e, struct xfer_mr *mr)
{
	(void)e;
	if (mr->prov)
		fi_close(&((struct fid_mr *)mr->prov)->fid);
	mr->prov = NULL;
}

/*
 * A write completes when the peer has the bytes (see the hints).  shm with
 * CMA copies them into the peer before it completes, and asking it for
 * FI_DELIVERY_COMPLETE as well takes it off that path and stalls writes
 * with data; without CMA (or before libfabric has checked) it completes
 * when the bytes are queued, so there it must be asked.  libfabric makes
 * the same choice from the same field of our region (smr_cma_enabled()).
 */
static uint64_t ofi_write_flags(const struct ofi_be *b)
{
	return b->is_shm && shm_peer_cma(b->shm) == 1 ? 0 : FI_DELIVERY_COMPLETE;
}

static int ofi_post(struct xfer_engine *e, enum xfer_opcode op, uint64_t peer,
                    const struct xfer_seg *seg, bool has_imm, uint32_t imm, struct xfer_post *ctx)
{
	struct ofi_be *b = be_of(e);
	struct iovec iov = {0};
	void *desc = NULL;
	struct fi_rma_iov riov = {.addr = seg->raddr, .len = seg->len, .key = seg->rkey};
	struct fi_msg_rma msg = {0};
	ssize_t r;

	if (!b->ep)
		return -ENOTCONN;
	if (b->shm && shm_peer_dead(b->shm, peer))
		return -ECONNRESET;
	if (seg->len) {
		iov.iov_base = (char *)seg->mr->buf + seg->loff;
		iov.iov_len = seg->len;
		desc = seg->mr->prov_desc;
		msg.iov_count = 1;
	} else if (b->is_shm) {
		/* libfabric 1.17's shm never completes a zero-length RMA write
		 * (seen here: the op hangs until its deadline), so refuse it. */
		return -ENOTSUP;
	}
	msg.msg_iov = &iov;
	msg.desc = &desc;
	msg.addr = peer;
	msg.rma_iov = &riov;
	msg.rma_iov_count = 1;
	msg.context = ctx->prov_ctx;
	msg.data = imm;
	if (op == XFER_WRITE)
		r = fi_writemsg(b->ep, &msg,
		                FI_COMPLETION | ofi_write_flags(b) |
		                        (has_imm ? FI_REMOTE_CQ_DATA : 0));
	else
		r = fi_readmsg(b->ep, &msg, FI_COMPLETION);
	if (r == -FI_EAGAIN)
		return -EAGAIN;
	return r ? ofi_err((int)r) : 0;
}

static int ofi_progress(struct xfer_engine *e)
{
	struct ofi_be *b = be_of(e);
	struct fi_cq_data_entry ent[OFI_CQ_BATCH];
	int total = 0;

	/* A peer copying into us holds our shm lock, which progress, once
	 * signalled, would spin on: come back at the next tick instead.  A
	 * live peer delays our progress by one copy at most, and the thread
	 * stays free to enforce deadlines meanwhile (a dead peer's lock is
	 * released by shm_self_check()). */
	if (!b->cq || (b->is_shm && shm_self_busy(b->shm)))
		return 0;
	for (;;) {
		ssize_t n = fi_cq_read(b->cq, ent, OFI_CQ_BATCH);

		if (n == -FI_EAGAIN)
			break;
		if (n == -FI_EAVAIL) {
			struct fi_cq_err_entry err = {0};
			char pbuf[128];

			if (fi_cq_readerr(b->cq, &err, 0) != 1)
				break;
			KV_DEBUG(OFI_TAG, "completion error: %s (provider: %s)",
			         fi_strerror(err.err),
			         fi_cq_strerror(b->cq, err.prov_errno, err.err_data, pbuf,
			                        sizeof(pbuf)));
			if (err.op_context)
				xfer_seg_done(e, (struct xfer_post *)err.op_context,
				              err.err ? ofi_err(-err.err) : -EIO);
			total++;
			continue;
		}
		if (n < 0) {
			KV_WARN_RL(OFI_TAG, "fi_cq_read: %s", fi_strerror((int)-n));
			break;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (ent[i].flags & FI_REMOTE_CQ_DATA)
				xfer_imm_arrived(e, (uint32_t)ent[i].data);
			else if (ent[i].op_context)
				xfer_seg_done(e, (struct xfer_post *)ent[i].op_context, 0);
		}
		total += (int)n;
		if (n < OFI_CQ_BATCH)
			break;
	}
	return total;
}

static int ofi_wait_fd(struct xfer_engine *e)
{
	struct ofi_be *b = be_of(e);
	struct fid *f;

	if (b->wait_fd < 0 || !b->cq)
		return -ENOSYS;
	f = &b->cq->fid;
	if (fi_trywait(b->fabric, &f, 1) != FI_SUCCESS)
		return -EAGAIN;
	return b->wait_fd;
}

static enum xfer_target_progress ofi_target_progress(struct xfer_engine *e)
{
	struct ofi_be *b = be_of(e);

	/* shm (no wait fd): a peer that may process_vm_writev into us copies
	 * an RMA write without us; immediate data still waits in our queue
	 * for a poll.  Without CMA the bytes go through our queue in pieces. */
	if (b->is_shm) {
		int cma = shm_peer_cma(b->shm);

		if (cma == 0 && !b->cma_warned) {
			b->cma_warned = true;
			KV_WARN(OFI_TAG,
			        "shm: peers may not copy into this process (no CMA: "
			        "process_vm_writev not permitted here); bytes go through the "
			        "queue, slower, and a peer that dies mid-transfer makes the "
			        "engine open a new endpoint, failing the transfers under way: "
			        "prefer provider=tcp");
		}
		return cma == 1 ? XFER_TP_POLL : XFER_TP_SPIN;
	}
	/* tcp without a wait fd cannot tell us when data arrives. */
	return b->wait_fd < 0 ? XFER_TP_SPIN : XFER_TP_NONE;
}

static int ofi_unwedge(struct xfer_engine *e, bool stuck)
{
	struct shm_peers *t = be_of(e)->shm;
	int n = 0;

	if (!t)
		return 0;
	if (stuck) {
		pthread_mutex_lock(&e->lock); /* serializes the peer table's writers */
		n = shm_unwedge(t);
		pthread_mutex_unlock(&e->lock);
	}
	return n + shm_self_check(t, &e->lock);
}

static bool ofi_peer_dead(struct xfer_engine *e, uint64_t prov_addr)
{
	return be_of(e)->shm && shm_peer_dead(be_of(e)->shm, prov_addr);
}

/*
 * libfabric 1.17's shm without CMA moves an RMA's bytes through the peer's
 * SAR buffers, and the peer's progress answers each piece.  A peer that
 * dies mid-transfer never answers, and smr_progress_resp() reads our
 * response queue in order and stops at the first unanswered entry: every
 * later completion, to every peer, waits behind it for good.  (With CMA a
 * post to a dead peer fails in process_vm_writev instead.)
 */
static bool ofi_dead_peer_blocks(struct xfer_engine *e)
{
	const struct ofi_be *b = be_of(e);

	return b->is_shm && shm_peer_cma(b->shm) != 1;
}

/* Close the endpoint, its CQ and address vector, and open new ones on the
 * same domain: the provider forgets everything posted, and our address
 * changes (shm: a new region).  Registrations live in the domain and stay,
 * unless the provider binds them to the endpoint.  Progress thread, engine
 * lock held (no insert, remove or getname meanwhile). */
static int ofi_reset(struct xfer_engine *e)
{
	struct ofi_be *b = be_of(e);
	int r;

	if (b->mr_mode & FI_MR_ENDPOINT)
		return -ENOTSUP;
	ofi_ep_close(b);
	if (b->shm)
		shm_peers_reset(b->shm);
	r = ofi_ep_open(e, b);
	if (r < 0)
		ofi_ep_close(b);
	return r;
}

const struct xfer_backend_ops xfer_ofi_ops = {
        .name = "ofi",
        .open = ofi_open,
        .close = ofi_close,
        .addr = ofi_addr,
        .peer_insert = ofi_peer_insert,
        .peer_remove = ofi_peer_remove,
        .mr_reg = ofi_mr_reg,
        .mr_dereg = ofi_mr_dereg,
        .post = ofi_post,
        .progress = ofi_progress,
        .wait_fd = ofi_wait_fd,
        .target_progress = ofi_target_progress,
        .unwedge = ofi_unwedge,
        .peer_dead = ofi_peer_dead,
        .dead_peer_blocks = ofi_dead_peer_blocks,
        .reset = ofi_reset,
};
