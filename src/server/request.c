/* SPDX-License-Identifier: MIT */
/*
 * kv-server's requests: one handler per body case, found in req_handlers[]
 * by req_dispatch().  Validation happens once, before the handler runs:
 * wire_request_check() (src/wire) refuses bad keys, contradictory or
 * incomplete arguments and bad segment lists, so a handler checks only
 * what depends on this server (its limits, the connection's RDMA) and on
 * the store.  Handlers answer with conn_respond(), at once or, for an RDMA
 * GET or PUT, when the transfer completes (op.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kvfs/log.h"
#include "kvfs/sockpeer.h"
#include "kvfs/util.h"
#include "kvfs/wire_auth.h"
#include "server_i.h"
#include "tenant.h"

#define TAG SRV_TAG

typedef void (*req_handler_fn)(struct conn *c, const Kvfs__Request *rq);

/* The longest BUSY message of held_check(). */
#define REQ_BUSY_MSG 240

/* ------------------------------------------------------------------ */
/* Tenants: a connection's namespace                                   */

/* Bytes the store's keys have before the names @c's client knows them by:
 * its tenant's prefix (0 for the whole namespace). */
static size_t conn_strip(const struct conn *c)
{
	return c->tenant ? c->tenant->prefixlen : 0;
}

/*
 * @k, a key of @c's request, as the store names it (its tenant's prefix
 * first) in @buf (KV_KEY_MAX bytes); 0 and *ret_key, *ret_len.  A key too
 * long for the tenant's namespace is answered (NAME_TOO_LONG) and
 * -ENAMETOOLONG returned.
 */
static int req_key(struct conn *c, uint64_t id, const ProtobufCBinaryData *k, char *buf,
                   const char **ret_key, size_t *ret_len)
{
	char m[128];

	if (tenant_key(c->tenant, k->data, k->len, buf, KV_KEY_MAX, ret_key, ret_len) == 0)
		return 0;
	snprintf(m, sizeof(m),
	         "key longer than %zu bytes, the longest this tenant's namespace holds",
	         (size_t)KV_KEY_MAX - c->tenant->prefixlen);
	conn_respond(c, id, -ENAMETOOLONG, m, NULL);
	return -ENAMETOOLONG;
}

/* Answer @id refused for a quota (store: -EDQUOT) on @key: NO_SPACE, with
 * the quota in words.  Only the connection's own tenant, or for the whole
 * namespace the tenant @key belongs to, is named. */
static void respond_quota(struct conn *c, uint64_t id, const char *key, size_t keylen)
{
	struct srv *s = c->srv;
	int ns = store_ns_of(s->store, key, keylen);
	struct store_ns_usage u;
	char m[256], q[32], used[32];

	if (ns < 0) { /* cannot be: a quota belongs to a namespace */
		conn_respond(c, id, -ENOSPC, "over a tenant's quota", NULL);
		return;
	}
	store_ns_usage(s->store, (unsigned)ns, &u);
	snprintf(m, sizeof(m),
	         "over %s%s%s quota of %s (%s used; a key counts its value, its name and %d "
	         "bytes): delete keys or ask for a larger quota",
	         c->tenant ? "this tenant's" : "tenant ", c->tenant ? "" : s->tenants.t[ns].name,
	         c->tenant ? "" : "'s", kv_fmt_size(s->tenants.t[ns].quota, q, sizeof(q)),
	         kv_fmt_size(u.charged, used, sizeof(used)), STORE_NS_KEY_CHARGE);
	conn_respond(c, id, -ENOSPC, m, NULL);
}

static void fill_entry(const struct store *st, Kvfs__Entry *e, const struct store_item *it,
                       size_t strip)
{
	size_t kl;

	/* Every key a tenant reaches starts with its prefix. */
	e->key.data = (uint8_t *)store_item_key(it, &kl) + strip;
	e->key.len = kl - strip;
	e->size = store_item_size(it);
	e->version = store_item_version(it);
	e->has_mtime_ns = true;
	e->mtime_ns = (int64_t)store_item_mtime(it);
	e->has_mode = true;
	e->mode = store_item_mode(it);
	e->has_pinned = store_item_kept(it); /* absent: not pinned */
	e->pinned = store_item_kept(it);
	e->has_uid = e->has_gid = store_item_owner(st, it, &e->uid, &e->gid);
	e->has_type = store_item_type(it) != STORE_TYPE_FILE;
	e->type = store_item_type(it);
	e->has_ctime_ns = e->has_atime_ns = true;
	e->ctime_ns = (int64_t)store_item_ctime(st, it);
	e->atime_ns = (int64_t)store_item_atime(st, it);
	e->rdev = store_item_rdev(st, it);
	e->has_rdev = e->rdev != 0;
}

static uint64_t srv_max_value(struct srv *s)
{
	struct store_stats st;

	store_get_stats(s->store, &st);
	return s->o.max_value ? KV_MIN(s->o.max_value, st.arena_usable) : st.arena_usable;
}

/* The largest value @c's client may store: a tenant's quota holds a value
 * and its key's charge. */
static uint64_t conn_max_value(struct conn *c)
{
	uint64_t m = srv_max_value(c->srv), q = c->tenant ? c->tenant->quota : 0;

	if (q)
		m = KV_MIN(m, q - KV_MIN(q, (uint64_t)STORE_NS_KEY_CHARGE + 1));
	return m;
}

/* ------------------------------------------------------------------ */
/* HELLO                                                               */

/*
 * A shm peer shares this host: watch its process (the one its address
 * names, proven to hold the connection) so that the
 * engine posts nothing more to it once it has exited.  libfabric's shm
 * provider takes a spin lock inside the peer's memory region for every
 * post; a client killed while holding it would otherwise stall our
 * progress thread, and every transfer with it, for good.
 */
static void conn_watch_peer(struct srv *s, struct conn *c, pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	if (fd < 0) {
		KV_DEBUG(TAG, "%s: cannot watch process %d: %s", c->name, (int)pid,
		         strerror(errno));
		return;
	}
	xfer_peer_watch(s->eng, c->peer, fd);
}

static void hello_answer(struct conn *c, uint64_t id, uint32_t version, const uint8_t *sproof,
                         const char *rdma_note)
{
	struct srv *s = c->srv;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__HelloResponse hr = KVFS__HELLO_RESPONSE__INIT;
	uint8_t addr[XFER_ADDR_MAX];
	size_t alen = sizeof(addr);

	hr.version = version;
	hr.max_frame = s->o.max_frame;
	hr.max_value = conn_max_value(c);
	hr.chunk_size = s->eng ? xfer_chunk_size(s->eng) : 0;
	hr.has_max_inline = true;
	hr.max_inline = s->o.max_inline;
	hr.has_max_inflight = true;
	hr.max_inflight = s->o.max_inflight;
	hr.server_id = "kv-server " KVFS_VERSION;
	hr.has_instance_id = true;
	hr.instance_id = s->instance;
	hr.has_features = true;
	hr.features = KVFS__FEATURE__FEATURE_UPLOADS | KVFS__FEATURE__FEATURE_STAT_DIR;
	hr.has_rdma = true;
	hr.rdma = c->rdma;
	if (!c->rdma && rdma_note)
		hr.rdma_note = (char *)rdma_note;
	if (s->eng) {
		hr.provider = (char *)xfer_provider(s->eng);
		if (xfer_addr(s->eng, addr, &alen) == 0) {
			hr.has_engine_addr = true;
			hr.engine_addr.data = addr;
			hr.engine_addr.len = alen;
		}
	}
	if (sproof) {
		hr.has_server_proof = true;
		hr.server_proof.data = (uint8_t *)sproof;
		hr.server_proof.len = WIRE_AUTH_PROOF_LEN;
	}
	c->state = CONN_READY;
	resp.body_case = KVFS__RESPONSE__BODY_HELLO;
	resp.hello = &hr;
	conn_respond(c, id, 0, NULL, &resp);
}

/*
 * May the engine address in @h become @c's transfer peer?  Not our own
 * engine (we would move our own memory for the client), and over shm only
 * the process that holds this connection's other end (the address names a
 * process; a client could name another's, or kv-server's).  Returns 0 and
 * *ret_pid (0 for a network provider), or -EPERM after logging why.
 */
static int hello_engine_allowed(struct conn *c, const Kvfs__HelloRequest *h, pid_t *ret_pid)
{
	struct srv *s = c->srv;
	uint8_t own[XFER_ADDR_MAX];
	size_t olen = sizeof(own);
	pid_t pid = 0;
	int r;

	if (xfer_addr(s->eng, own, &olen) == 0 && olen == h->engine_addr.len &&
	    !memcmp(own, h->engine_addr.data, olen)) {
		KV_WARN(TAG, "%s: HELLO names the server's own engine: inline only", c->name);
		return -EPERM;
	}
	r = xfer_addr_pid(s->eng, h->engine_addr.data, h->engine_addr.len, &pid);
	if (r == -ENOENT) {
		pid = 0;
	} else if (r < 0) {
		KV_WARN(TAG, "%s: HELLO's engine address is no %s address: inline only", c->name,
		        xfer_provider(s->eng));
		return -EPERM;
	} else if ((r = kv_sock_peer_is_pid(c->fd, pid)) != 1) {
		KV_WARN(TAG, "%s: HELLO's engine belongs to process %d, %s: inline only", c->name,
		        (int)pid,
		        r == 0 ? "which does not hold this connection"
		               : "and which process holds this connection cannot be told");
		return -EPERM;
	}
	*ret_pid = pid;
	return 0;
}

/*
 * Start the engine proof of a HELLO: add the client's engine as a peer and
 * read the nonce it says its engine_proof region holds.  RDMA is granted
 * only once the bytes read are that nonce (req_hello_bound()): a client
 * that names another's engine cannot know a key of that engine's regions,
 * let alone put its nonce there.  Returns 1 when the answer now waits for
 * the proof, 0 when HELLO is answered at once (inline only), a negative
 * errno when the read cannot be posted (HELLO is refused; -EDEADLK: the
 * engine is stuck).
 */
static int hello_bind(struct conn *c, const Kvfs__Request *rq, uint32_t version,
                      const uint8_t *sproof)
{
	struct srv *s = c->srv;
	const Kvfs__HelloRequest *h = rq->hello;
	struct srv_op *op;
	uint64_t total;
	size_t n;
	pid_t pid;
	int r;

	if (!h->provider || strcmp(h->provider, xfer_provider(s->eng)) || !h->has_engine_addr) {
		KV_DEBUG(TAG, "%s: provider %s vs ours %s: inline only", c->name,
		         h->provider ? h->provider : "(none)", xfer_provider(s->eng));
		return 0;
	}
	if (!h->engine_proof) { /* wire_request_check(): both or neither */
		KV_INFO(TAG, "%s: HELLO without an engine proof: inline only", c->name);
		return 0;
	}
	if (hello_engine_allowed(c, h, &pid))
		return 0;
	op = op_new(1);
	if (!op)
		return 0;
	r = xfer_buf_alloc(s->eng, 4096, XFER_ACCESS_LOCAL, &op->mr);
	if (r == 0)
		r = wire_segs_to_rsge(&h->engine_proof, 1, op->rsge, 1, &n, &total);
	if (r == 0)
		r = xfer_peer_add(s->eng, h->engine_addr.data, h->engine_addr.len, &c->peer);
	if (r < 0) {
		KV_INFO(TAG, "%s: cannot add its engine address: %s; inline only", c->name,
		        strerror(-r));
		op_free(op);
		return 0;
	}
	op->kind = OP_BIND;
	op->conn = c;
	op->id = rq->id;
	op->bytes = WIRE_ENGINE_NONCE_LEN;
	op->version = version;
	op->watch_pid = pid;
	memcpy(op->nonce, h->engine_nonce.data, sizeof(op->nonce));
	if (sproof) {
		op->has_sproof = true;
		memcpy(op->sproof, sproof, sizeof(op->sproof));
	}
	c->binding = true;
	r = op_submit(c, op, XFER_READ, 0, WIRE_ENGINE_NONCE_LEN, 1);
	if (r < 0) {
		KV_INFO(TAG, "%s: cannot read its engine proof: %s", c->name, strerror(-r));
		c->binding = false;
		conn_peer_release(c);
		op_free(op);
		/* A stuck engine moves nothing, a full one moves nothing now:
		 * refuse, so the client says why and asks again later instead
		 * of staying inline only. */
		return r;
	}
	return 1;
}

void req_hello_bound(struct srv_op *op, int status)
{
	struct conn *c = op->conn;
	struct srv *s = c->srv;
	bool proven =
	        status == 0 && wire_ct_equal(xfer_mr_addr(op->mr), op->nonce, sizeof(op->nonce));

	c->binding = false;
	if (proven && !conn_closed(c)) {
		c->rdma = true;
		if (op->watch_pid)
			conn_watch_peer(s, c, op->watch_pid);
	} else {
		conn_peer_release(c);
	}
	if (conn_closed(c))
		return;
	if (op_conn_failure(status) || status == -ETIMEDOUT) {
		/* The proof could not be read: a link that just healed, an
		 * engine restarting.  Inline only would last as long as the
		 * connection for a passing fault; refuse, and the client asks
		 * again after its backoff.  (A key the engine refuses is a
		 * failed proof, below.) */
		char m[160];

		KV_WARN(TAG, "%s: cannot read its engine proof (%s): HELLO refused", c->name,
		        strerror(-status));
		snprintf(m, sizeof(m),
		         "the server could not read this client's engine proof through its "
		         "transfer engine (%s); the client asks again",
		         strerror(-status));
		conn_respond(c, op->id, -EIO, m, NULL);
		conn_refuse(c);
		return;
	}
	if (!proven)
		KV_WARN(TAG, "%s: its engine did not prove to be its own (%s): inline only",
		        c->name, status ? strerror(-status) : "wrong nonce");
	KV_INFO(TAG, "%s: hello, %s", c->name, c->rdma ? "RDMA" : "inline only");
	hello_answer(c, op->id, op->version, op->has_sproof ? op->sproof : NULL,
	             c->rdma ? NULL : "the client's engine did not prove to be its own");
}

/* Per host, failed proofs are answered later and later: 100 ms after the
 * second within a minute, doubling to 2 s.  With at most a quarter of
 * --max-unauth connections per host waiting in HELLO, one host tries at
 * most a few tokens a second (7,100 a second before), and a right proof
 * is never delayed. */
uint64_t auth_backoff(struct srv *s, const struct conn *c)
{
	const char *colon = strrchr(c->name, ':');
	size_t hl = colon ? (size_t)(colon - c->name) : strlen(c->name);
	struct srv_authfail *f = NULL, *oldest = &s->authfail[0];
	uint64_t now = kv_now_ms();

	hl = KV_MIN(hl, sizeof(f->host) - 1);
	for (size_t i = 0; i < KV_ARRAY_SIZE(s->authfail); i++) {
		struct srv_authfail *a = &s->authfail[i];

		if (a->fails && strlen(a->host) == hl && !memcmp(a->host, c->name, hl)) {
			f = a;
			break;
		}
		if (a->last_ms < oldest->last_ms)
			oldest = a;
	}
	if (!f) {
		f = oldest;
		memcpy(f->host, c->name, hl);
		f->host[hl] = '\0';
		f->fails = 0;
	}
	if (now - f->last_ms > 60000)
		f->fails = 0;
	f->fails++;
	f->last_ms = now;
	return f->fails < 2 ? 0 : KV_MIN(100ULL << KV_MIN(f->fails - 2, 5u), 2000ULL);
}

/*
 * Which token made HELLO's proof: 0 for --auth-token-file's, i + 1 for
 * tenant i's, -1 for none.  Every token is tried whatever matched before,
 * each in constant time (wire_auth_check_client()), so how long the answer
 * takes does not tell which token matched, or how much of one.
 */
static int hello_token(struct srv *s, const struct conn *c, const Kvfs__HelloRequest *h)
{
	const uint8_t *proof = h->has_auth_proof ? h->auth_proof.data : NULL;
	int who = -1;

	if (s->tokenlen &&
	    wire_auth_check_client(s->token, s->tokenlen, c->nonce, proof, h->auth_proof.len))
		who = 0;
	for (size_t i = 0; i < s->tenants.n; i++) {
		const struct tenant *t = &s->tenants.t[i];

		if (wire_auth_check_client(t->token, t->tokenlen, c->nonce, proof,
		                           h->auth_proof.len))
			who = (int)i + 1;
	}
	return who;
}

static void req_hello(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__HelloRequest *h = rq->hello;
	uint8_t sproof[WIRE_AUTH_PROOF_LEN];
	const uint8_t *token = s->token;
	size_t tokenlen = s->tokenlen;
	bool has_sproof;
	uint32_t v;
	int r, who = 0;

	if (c->state != CONN_HELLO) {
		conn_respond(c, rq->id, -EPROTO, "HELLO sent twice", NULL);
		return;
	}
	if (s->auth)
		who = hello_token(s, c, h);
	if (who < 0) {
		uint64_t wait = auth_backoff(s, c);

		s->c.auth_failures++;
		KV_WARN_RL(TAG, "%s: authentication failed%s", c->name,
		           wait ? "; answering later (failed proofs from that host)" : "");
		if (wait) { /* srv_check_deadlines() answers */
			c->refuse_at = kv_now_ms() + wait;
			c->refuse_id = rq->id;
			return;
		}
		/* the client advises: it knows how its user gives the token */
		conn_respond(c, rq->id, -EACCES, "authentication failed", NULL);
		conn_refuse(c);
		return;
	}
	if (who > 0) { /* bound to the tenant for the connection's life */
		c->tenant = &s->tenants.t[who - 1];
		token = c->tenant->token;
		tokenlen = c->tenant->tokenlen;
	}
	/* wire_request_check() refused min_version > max_version. */
	v = KV_MIN(h->max_version, (uint32_t)WIRE_VERSION_MAX);
	if (v < h->min_version || v < WIRE_VERSION_MIN) {
		char m[128];

		snprintf(m, sizeof(m), "no common protocol version: client %u-%u, server %u-%u",
		         h->min_version, h->max_version, WIRE_VERSION_MIN, WIRE_VERSION_MAX);
		conn_respond(c, rq->id, -ENOTSUP, m, NULL);
		conn_refuse(c);
		return;
	}
	/* A proof that cannot be computed is left out: the client then refuses. */
	has_sproof = s->auth && h->has_client_nonce && h->client_nonce.len == WIRE_AUTH_NONCE_LEN &&
	             wire_auth_server_proof(token, tokenlen, h->client_nonce.data, c->nonce,
	                                    sproof) == 0;
	KV_INFO(TAG, "%s: hello from %s, provider %s%s%s", c->name,
	        h->client_id ? h->client_id : "client", h->provider ? h->provider : "none",
	        c->tenant ? ", tenant " : "", c->tenant ? c->tenant->name : "");
	r = s->eng ? hello_bind(c, rq, v, has_sproof ? sproof : NULL) : 0;
	if (r > 0)
		return; /* answered by req_hello_bound() */
	if (r < 0) {
		char m[160];

		snprintf(m, sizeof(m), "the server cannot read this client's engine proof now (%s)",
		         strerror(-r));
		conn_respond(c, rq->id, -EIO, op_submit_error_msg(r, m), NULL);
		conn_refuse(c);
		return;
	}
	hello_answer(c, rq->id, v, has_sproof ? sproof : NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* GET and PUT                                                         */

/* Cut @rsge (n entries) down to @len bytes; returns the new count. */
static size_t rsge_trim(struct xfer_rsge *rsge, size_t n, uint64_t len)
{
	size_t i;

	for (i = 0; i < n && len; i++) {
		if (rsge[i].len > len)
			rsge[i].len = len;
		len -= rsge[i].len;
	}
	return i;
}

/* Submit GET @op: @n bytes from @off of pinned @it into @op's @nr remote
 * segments, from however many arena ranges hold them. */
static int get_submit(struct conn *c, struct srv_op *op, const struct store_item *it, uint64_t off,
                      uint64_t n, size_t nr)
{
	struct store_seg sbuf[16], *segs = sbuf;
	size_t ns = store_item_segs(it, off, n, sbuf, KV_ARRAY_SIZE(sbuf));
	int r;

	if (ns > KV_ARRAY_SIZE(sbuf)) {
		segs = calloc(ns, sizeof(*segs));
		if (!segs)
			return -ENOMEM;
		store_item_segs(it, off, n, segs, ns);
	}
	r = op_submit_segs(c, op, XFER_WRITE, segs, ns, nr);
	if (segs != sbuf)
		free(segs);
	return r;
}

/* @n (> 0, at most max_inline) bytes from @off of pinned @it, contiguous:
 * in the arena when one range holds them, else gathered into *@copy (the
 * caller frees it after encoding the answer).  NULL: no memory. */
static uint8_t *inline_bytes(struct srv *s, const struct store_item *it, uint64_t off, uint64_t n,
                             uint8_t **copy)
{
	uint8_t *base = store_arena_base(s->store);
	struct store_seg seg;
	uint64_t at = 0;

	if (store_item_segs(it, off, n, &seg, 1) == 1)
		return base + seg.off;
	*copy = malloc(n);
	if (!*copy)
		return NULL;
	while (at < n && store_item_segs(it, off + at, n - at, &seg, 1)) {
		memcpy(*copy + at, base + seg.off, seg.len);
		at += seg.len;
	}
	return *copy;
}

static struct srv_upload *upload_find(struct conn *c, uint64_t id, struct srv_upload ***ret_pp);

/* GET of an upload: what it holds so far, inline (wire_check_get()). */
static void get_upload(struct conn *c, const Kvfs__Request *rq, const char *key, size_t klen)
{
	struct srv *s = c->srv;
	const Kvfs__GetRequest *g = rq->get;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__GetResponse gr = KVFS__GET_RESPONSE__INIT;
	struct srv_upload *up = upload_find(c, g->upload, NULL);
	const struct store_item *it;
	uint64_t off = g->has_offset ? g->offset : 0, n;
	const char *ukey;
	uint8_t *inl = NULL;
	size_t uklen;

	if (!up) {
		conn_respond(c, rq->id, -ENOENT,
		             "no such upload on this connection (ended, or never opened)", NULL);
		return;
	}
	ukey = store_resv_key(up->resv, &uklen);
	if (uklen != klen || memcmp(ukey, key, klen)) {
		conn_respond(c, rq->id, -EINVAL, "GET: the key is not the upload's", NULL);
		return;
	}
	if (up->pending || up->err) {
		conn_respond(c, rq->id, up->err ? up->err : -EAGAIN,
		             up->err ? "a part of this upload failed"
		                     : "parts of this upload are in flight: wait for their answers",
		             NULL);
		return;
	}
	it = store_resv_item(up->resv);
	gr.size = store_item_size(it);
	n = off >= gr.size ? 0 : gr.size - off;
	if (g->has_length)
		n = KV_MIN(n, g->length);
	n = KV_MIN(n, s->o.max_inline);
	gr.has_data = true;
	gr.data.len = n;
	gr.data.data = n ? inline_bytes(s, it, off, n, &inl) : NULL;
	if (n && !gr.data.data) {
		conn_respond(c, rq->id, -ENOMEM, NULL, NULL);
		return;
	}
	gr.bytes = n;
	resp.body_case = KVFS__RESPONSE__BODY_GET;
	resp.get = &gr;
	conn_respond(c, rq->id, 0, NULL, &resp);
	free(inl);
}

static void req_get(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__GetRequest *g = rq->get;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__GetResponse gr = KVFS__GET_RESPONSE__INIT;
	struct store_item *it;
	struct srv_op *op;
	uint64_t size, off = g->has_offset ? g->offset : 0, n, cap = 0;
	char busy[REQ_BUSY_MSG], kb[KV_KEY_MAX];
	const char *msg = NULL, *key;
	uint8_t *inl = NULL;
	size_t nr = 0, klen;
	int r;

	s->c.gets++;
	if (g->n_dst && (!c->rdma || !s->eng)) {
		conn_respond(c, rq->id, -ENOTSUP, "no RDMA on this connection: ask for inline data",
		             NULL);
		return;
	}
	if (req_key(c, rq->id, &g->key, kb, &key, &klen))
		return;
	if (g->has_upload) {
		get_upload(c, rq, key, klen);
		return;
	}
	r = store_get(s->store, key, klen, &it);
	if (r < 0) {
		conn_respond(c, rq->id, r, r == -ENOENT ? "no such key" : NULL, NULL);
		return;
	}
	/* @it is pinned: from here every way out answers and unpins at
	 * out_unpin, except a submitted transfer, which takes the pin over. */
	if (g->has_if_version && g->if_version && g->if_version != store_item_version(it)) {
		r = -ESTALE;
		msg = "value changed (version mismatch)";
		goto out_unpin;
	}
	size = store_item_size(it);
	n = off >= size ? 0 : size - off;
	if (g->has_length)
		n = KV_MIN(n, g->length);
	gr.size = size;
	gr.version = store_item_version(it);
	gr.has_mtime_ns = gr.has_mode = true;
	gr.mtime_ns = (int64_t)store_item_mtime(it);
	gr.mode = store_item_mode(it);
	gr.has_ctime_ns = gr.has_atime_ns = true;
	gr.ctime_ns = (int64_t)store_item_ctime(s->store, it);
	gr.atime_ns = (int64_t)store_item_atime(s->store, it);
	resp.body_case = KVFS__RESPONSE__BODY_GET;
	resp.get = &gr;

	if (g->n_dst) {
		r = n ? held_check(c, n, busy, sizeof(busy)) : 0;
		if (r < 0) {
			msg = busy;
			goto out_unpin;
		}
		op = op_new(g->n_dst);
		if (!op) {
			r = -ENOMEM;
			goto out_unpin;
		}
		/* Cannot fail: wire_check_get() checked the same segments. */
		(void)wire_segs_to_rsge(g->dst, g->n_dst, op->rsge, g->n_dst, &nr, &cap);
		n = KV_MIN(n, cap);
		if (n) {
			nr = rsge_trim(op->rsge, nr, n);
			op->kind = OP_GET;
			op->conn = c;
			op->id = rq->id;
			op->item = it;
			op->bytes = n;
			r = get_submit(c, op, it, off, n, nr);
			if (r == 0) {
				s->c.rdma_gets++;
				return; /* answered on completion */
			}
			msg = op_submit_error_msg(r, "cannot start the transfer to the client");
		}
		op_free(op);
		if (r < 0)
			goto out_unpin;
	} else if (g->has_want_inline && g->want_inline) {
		n = KV_MIN(n, s->o.max_inline);
		gr.has_data = true;
		gr.data.len = n;
		gr.data.data = n ? inline_bytes(s, it, off, n, &inl) : NULL;
		if (n && !gr.data.data) {
			r = -ENOMEM;
			goto out_unpin;
		}
		s->c.inline_gets++;
	} else {
		n = 0;
	}
	gr.bytes = n;
	s->c.get_bytes += n;
out_unpin:
	/* The inline bytes are encoded into the output buffer right here,
	 * before the unpin. */
	conn_respond(c, rq->id, r, msg, r < 0 ? NULL : &resp);
	store_item_unpin(s->store, it);
	free(inl);
}

/* Answer a store refusal of a PUT or an upload's part for @key. */
static void respond_store_err(struct conn *c, uint64_t id, int r, const char *key, size_t klen)
{
	char why[160];

	if (r == -EDQUOT)
		respond_quota(c, id, key, klen);
	else if (r == -EOVERFLOW) /* a pinned key grows past --max-pinned */
		conn_respond(c, id, -ENOSPC, srv_pin_limit_msg(c->srv, why, sizeof(why)), NULL);
	else
		conn_respond(c, id, r,
		             r == -ENOSPC  ? srv_full_msg(c->srv, why, sizeof(why))
		             : r == -EFBIG ? "value larger than the server's --max-value"
		                           : NULL,
		             NULL);
}

/* ------------------------------------------------------------------ */
/* Uploads: streaming PUT                                              */

static struct srv_upload *upload_find(struct conn *c, uint64_t id, struct srv_upload ***ret_pp)
{
	struct srv_upload **pp;

	for (pp = &c->uploads; *pp; pp = &(*pp)->next)
		if ((*pp)->id == id) {
			if (ret_pp)
				*ret_pp = pp;
			return *pp;
		}
	return NULL;
}

/* Unlink @up (found at @pp) and free it, aborting its value unless
 * committed (resv NULL).  No part of it may be in flight. */
static void upload_drop(struct conn *c, struct srv_upload **pp)
{
	struct srv_upload *up = *pp;

	*pp = up->next;
	c->nuploads--;
	c->srv->uploads_open--;
	store_put_abort(c->srv->store, up->resv);
	free(up);
}

void req_uploads_drop(struct conn *c)
{
	while (c->uploads)
		upload_drop(c, &c->uploads);
}

static void upload_missing(struct conn *c, uint64_t id)
{
	conn_respond(c, id, -ENOENT, "no such upload on this connection (ended, or never opened)",
	             NULL);
}

static void req_upload_open(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__UploadOpenRequest *u = rq->upload_open;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__UploadOpenResponse ur = KVFS__UPLOAD_OPEN_RESPONSE__INIT;
	struct srv_upload *up;
	char kb[KV_KEY_MAX];
	const char *key;
	size_t klen;
	int r;

	s->c.uploads++;
	if (req_key(c, rq->id, &u->key, kb, &key, &klen))
		return;
	if (c->nuploads >= SRV_UPLOADS_MAX) {
		conn_respond(c, rq->id, -EAGAIN,
		             "too many uploads open on this connection: commit or abort some",
		             NULL);
		return;
	}
	up = calloc(1, sizeof(*up));
	if (!up) {
		conn_respond(c, rq->id, -ENOMEM, NULL, NULL);
		return;
	}
	r = store_up_open(s->store, key, klen, u->has_base_version ? u->base_version : 0,
	                  &up->resv);
	if (r < 0) {
		free(up);
		if (r == -ESTALE || r == -ENOENT)
			conn_respond(c, rq->id, r,
			             r == -ENOENT ? "no such key to start from"
			                          : "value changed (version mismatch)",
			             NULL);
		else
			respond_store_err(c, rq->id, r, key, klen);
		return;
	}
	up->id = ++c->next_upload;
	up->next = c->uploads;
	c->uploads = up;
	c->nuploads++;
	s->uploads_open++;
	ur.upload = up->id;
	ur.size = store_up_size(up->resv);
	resp.body_case = KVFS__RESPONSE__BODY_UPLOAD_OPEN;
	resp.upload_open = &ur;
	conn_respond(c, rq->id, 0, NULL, &resp);
}

static void req_upload_part(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__UploadPartRequest *u = rq->upload_part;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__UploadPartResponse ur = KVFS__UPLOAD_PART_RESPONSE__INIT;
	struct srv_upload *up = upload_find(c, u->upload, NULL);
	char busy[REQ_BUSY_MSG];
	struct store_ext *x;
	struct srv_op *op;
	uint64_t aoff, len, tot = 0;
	size_t nr = 0, klen;
	const char *key;
	int r;

	if (!up) {
		upload_missing(c, rq->id);
		return;
	}
	key = store_resv_key(up->resv, &klen);
	if (up->err) {
		conn_respond(c, rq->id, up->err, "an earlier part of this upload failed", NULL);
		return;
	}
	/* wire_check_upload_part(): one of data, src, truncate; lengths add up */
	if (u->has_truncate) {
		r = store_up_truncate(s->store, up->resv, u->truncate);
		goto answer;
	}
	len = u->has_data ? u->data.len : u->length;
	if (u->has_data && len > s->o.max_inline) {
		conn_respond(c, rq->id, -EFBIG, "inline part above max_inline", NULL);
		return;
	}
	if (!u->has_data) {
		if (!c->rdma || !s->eng) {
			conn_respond(c, rq->id, -ENOTSUP,
			             "no RDMA on this connection: send the part inline", NULL);
			return;
		}
		r = held_check(c, len, busy, sizeof(busy));
		if (r < 0) {
			conn_respond(c, rq->id, r, busy, NULL);
			return;
		}
	}
	r = store_up_write(s->store, up->resv, u->offset, len, &aoff, &x);
	if (r < 0)
		goto answer;
	if (u->has_data) {
		memcpy((uint8_t *)store_arena_base(s->store) + aoff, u->data.data, len);
		store_ext_put(s->store, x);
		s->c.put_bytes += len;
		goto answer;
	}
	op = op_new(u->n_src);
	if (!op) {
		store_ext_put(s->store, x);
		up->err = -ENOMEM; /* the range holds nothing now */
		conn_respond(c, rq->id, -ENOMEM, NULL, NULL);
		return;
	}
	(void)wire_segs_to_rsge(u->src, u->n_src, op->rsge, u->n_src, &nr, &tot);
	op->kind = OP_PART;
	op->conn = c;
	op->id = rq->id;
	op->up = up;
	op->ext = x;
	op->bytes = len;
	r = op_submit(c, op, XFER_READ, aoff, len, nr);
	if (r < 0) {
		store_ext_put(s->store, x);
		op_free(op);
		up->err = -EIO;
		conn_respond(c, rq->id, r,
		             op_submit_error_msg(r, "cannot start the transfer from the client"),
		             NULL);
		return;
	}
	up->pending++;
	s->c.rdma_puts++;
	return; /* answered on completion (op_complete()) */

answer:
	if (r < 0) {
		respond_store_err(c, rq->id, r, key, klen);
		return;
	}
	ur.size = store_up_size(up->resv);
	resp.body_case = KVFS__RESPONSE__BODY_UPLOAD_PART;
	resp.upload_part = &ur;
	conn_respond(c, rq->id, 0, NULL, &resp);
}

static void req_upload_abort(struct conn *c, const Kvfs__Request *rq)
{
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__UploadAbortResponse ur = KVFS__UPLOAD_ABORT_RESPONSE__INIT;
	struct srv_upload **pp, *up = upload_find(c, rq->upload_abort->upload, &pp);

	if (!up) {
		upload_missing(c, rq->id);
		return;
	}
	if (up->pending) {
		conn_respond(c, rq->id, -EAGAIN, "parts of this upload are still in flight", NULL);
		return;
	}
	upload_drop(c, pp);
	resp.body_case = KVFS__RESPONSE__BODY_UPLOAD_ABORT;
	resp.upload_abort = &ur;
	conn_respond(c, rq->id, 0, NULL, &resp);
}

/* PUT naming an upload: publish it under its key. */
static void put_commit_upload(struct conn *c, const Kvfs__Request *rq, const char *key, size_t klen,
                              const struct store_put_cond *cond, struct store_attrs *attrs)
{
	struct srv *s = c->srv;
	const Kvfs__PutRequest *p = rq->put;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__PutResponse pr = KVFS__PUT_RESPONSE__INIT;
	struct srv_upload **pp, *up = upload_find(c, p->upload, &pp);
	const char *ukey;
	size_t uklen;
	uint64_t ver;
	int r;

	if (!up) {
		upload_missing(c, rq->id);
		return;
	}
	ukey = store_resv_key(up->resv, &uklen);
	if (uklen != klen || memcmp(ukey, key, klen)) {
		conn_respond(c, rq->id, -EINVAL, "PUT: the key is not the upload's", NULL);
		return;
	}
	if (up->pending) {
		conn_respond(c, rq->id, -EAGAIN,
		             "parts of this upload are still in flight: wait for their answers",
		             NULL);
		return;
	}
	if (up->err) {
		r = up->err;
		upload_drop(c, pp);
		conn_respond(c, rq->id, r, "a part of this upload failed; nothing was stored",
		             NULL);
		return;
	}
	if (p->has_length && p->length != store_up_size(up->resv)) {
		upload_drop(c, pp);
		conn_respond(c, rq->id, -EINVAL, "PUT: length is not the upload's size", NULL);
		return;
	}
	if (!attrs->mtime_ns)
		attrs->mtime_ns = srv_realtime_ns();
	r = store_put_commit_attrs(s->store, up->resv, cond, attrs, &ver);
	if (r == 0)
		up->resv = NULL; /* published */
	upload_drop(c, pp);
	if (r < 0) {
		if (r == -EOVERFLOW || r == -ENOSPC)
			respond_store_err(c, rq->id, r, key, klen);
		else
			conn_respond(c, rq->id, r,
			             r == -ESTALE ? "value changed (version mismatch)" : NULL,
			             NULL);
		return;
	}
	s->c.upload_commits++;
	pr.version = ver;
	pr.has_mtime_ns = true;
	pr.mtime_ns = (int64_t)attrs->mtime_ns;
	resp.body_case = KVFS__RESPONSE__BODY_PUT;
	resp.put = &pr;
	conn_respond(c, rq->id, 0, NULL, &resp);
}

static void req_put(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__PutRequest *p = rq->put;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__PutResponse pr = KVFS__PUT_RESPONSE__INIT;
	struct store_put_cond cond = {0};
	struct store_attrs attrs = {0};
	struct store_resv *resv;
	struct srv_op *op;
	uint64_t len, tot = 0, ver;
	char busy[REQ_BUSY_MSG], kb[KV_KEY_MAX], why[160];
	const char *key;
	size_t nr = 0, klen;
	int r;

	/* wire_check_put() refused: both or neither of value and src,
	 * if_absent with if_version, a length other than the inline value's,
	 * and src without a length equal to its segments' total (> 0). */
	s->c.puts++;
	if (req_key(c, rq->id, &p->key, kb, &key, &klen))
		return;
	cond.if_absent = p->has_if_absent && p->if_absent;
	cond.if_version = p->has_if_version ? p->if_version : 0;
	/* wire_check_put(): uid and gid together, a known type */
	attrs.type = p->has_type ? (uint8_t)p->type : STORE_TYPE_FILE;
	/* a special file's mode keeps its file-type bits (wire_check_put()) */
	attrs.mode = (p->has_mode ? p->mode : 0644) &
	             (attrs.type == STORE_TYPE_SPECIAL ? 0177777 : 07777);
	attrs.rdev = p->has_rdev ? p->rdev : 0;
	attrs.mtime_ns = p->has_mtime_ns ? (uint64_t)p->mtime_ns : 0;
	attrs.mtime_given = p->has_mtime_ns && p->mtime_ns;
	attrs.has_owner = p->has_uid;
	attrs.uid = p->uid;
	attrs.gid = p->gid;
	attrs.drop_xattrs = p->has_drop_xattrs && p->drop_xattrs;
	if (p->has_upload) {
		put_commit_upload(c, rq, key, klen, &cond, &attrs);
		return;
	}
	if (p->has_value) {
		len = p->value.len;
		if (len > s->o.max_inline) {
			conn_respond(c, rq->id, -EFBIG, "inline value above max_inline", NULL);
			return;
		}
	} else {
		if (!c->rdma || !s->eng) {
			conn_respond(c, rq->id, -ENOTSUP,
			             "no RDMA on this connection: send the value inline", NULL);
			return;
		}
		len = p->length;
		r = held_check(c, len, busy, sizeof(busy));
		if (r < 0) {
			conn_respond(c, rq->id, r, busy, NULL);
			return;
		}
	}
	r = store_put_begin(s->store, key, klen, len, &resv);
	if (r < 0) {
		respond_store_err(c, rq->id, r, key, klen);
		return;
	}
	if (p->has_value) {
		if (len)
			memcpy((uint8_t *)store_arena_base(s->store) + store_resv_offset(resv),
			       p->value.data, len);
		if (!attrs.mtime_ns)
			attrs.mtime_ns = srv_realtime_ns();
		r = store_put_commit_attrs(s->store, resv, &cond, &attrs, &ver);
		if (r < 0) {
			store_put_abort(s->store, resv);
			if (r == -EOVERFLOW)
				conn_respond(c, rq->id, -ENOSPC,
				             srv_pin_limit_msg(s, why, sizeof(why)), NULL);
			else
				conn_respond(c, rq->id, r, NULL, NULL);
			return;
		}
		s->c.inline_puts++;
		s->c.put_bytes += len;
		pr.version = ver;
		pr.has_mtime_ns = true; /* what was stored: the client's, or now */
		pr.mtime_ns = (int64_t)attrs.mtime_ns;
		resp.body_case = KVFS__RESPONSE__BODY_PUT;
		resp.put = &pr;
		conn_respond(c, rq->id, 0, NULL, &resp);
		return;
	}

	op = op_new(p->n_src);
	if (!op) {
		store_put_abort(s->store, resv);
		conn_respond(c, rq->id, -ENOMEM, NULL, NULL);
		return;
	}
	/* Cannot fail: wire_check_put() checked the same segments. */
	(void)wire_segs_to_rsge(p->src, p->n_src, op->rsge, p->n_src, &nr, &tot);
	op->kind = OP_PUT;
	op->conn = c;
	op->id = rq->id;
	op->resv = resv;
	op->cond = cond;
	op->attrs = attrs;
	op->bytes = len;
	r = op_submit(c, op, XFER_READ, store_resv_offset(resv), len, nr);
	if (r < 0) {
		store_put_abort(s->store, resv);
		op_free(op);
		conn_respond(c, rq->id, r,
		             op_submit_error_msg(r, "cannot start the transfer from the client"),
		             NULL);
		return;
	}
	s->c.rdma_puts++;
}

/* ------------------------------------------------------------------ */
/* LIST                                                                */

struct list_ctx {
	Kvfs__ListResponse *lr;
	Kvfs__Entry *ents;
	size_t cap;
	size_t bytes, max_bytes;
	size_t limit;
	bool cut; /* stopped for size */
	const char *last;
	size_t lastlen;
	size_t strip; /* the tenant's prefix, taken off every name (conn_strip()) */
	const struct store *st;
};

static int list_cb(void *arg, const char *name, size_t namelen, const struct store_item *it,
                   bool prefix)
{
	struct list_ctx *l = arg;
	Kvfs__ListResponse *lr = l->lr;
	size_t need = namelen + 48 + (prefix && it ? namelen + 48 : 0);
	Kvfs__Entry *e;

	if (l->bytes + need > l->max_bytes) {
		l->cut = true;
		return -ENOSPC;
	}
	l->bytes += need;
	/* Every name listed starts with the request's prefix, and so with
	 * the tenant's; none is the tenant's prefix alone (start_after). */
	if (prefix) {
		lr->common_prefixes[lr->n_common_prefixes].data = (uint8_t *)name + l->strip;
		lr->common_prefixes[lr->n_common_prefixes].len = namelen - l->strip;
		lr->n_common_prefixes++;
	}
	if (it) { /* a key, or a prefix's marker */
		e = &l->ents[lr->n_entries + lr->n_prefix_markers];
		kvfs__entry__init(e);
		fill_entry(l->st, e, it, l->strip);
		if (prefix)
			lr->prefix_markers[lr->n_prefix_markers++] = e;
		else
			lr->entries[lr->n_entries++] = e;
	}
	l->last = name;
	l->lastlen = namelen;
	return 0;
}

static void req_list(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__ListRequest *q = rq->list;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__ListResponse lr = KVFS__LIST_RESPONSE__INIT;
	struct store_list_req req = {0};
	struct list_ctx l = {.lr = &lr, .strip = conn_strip(c), .st = s->store};
	bool truncated = false;
	size_t limit = q->has_limit && q->limit ? KV_MIN(q->limit, 10000u) : 1000;
	/* wire_check_list() bounds both to KV_KEY_MAX: a tenant's fit */
	char pb[2 * KV_KEY_MAX], ab[2 * KV_KEY_MAX];
	int r;

	/* wire_check_list() refused a delimiter of more than one byte. */
	s->c.lists++;
	req.prefix = q->has_prefix ? (const char *)q->prefix.data : NULL;
	req.prefixlen = q->has_prefix ? q->prefix.len : 0;
	req.delimiter = q->has_delimiter && q->delimiter.len ? (char)q->delimiter.data[0] : 0;
	req.start_after = q->has_start_after ? (const char *)q->start_after.data : NULL;
	req.start_after_len = q->has_start_after ? q->start_after.len : 0;
	if (c->tenant) {
		/* Within the tenant's prefix; a listing starts after the prefix
		 * itself (a marker only the whole namespace can make), whatever
		 * start_after says, so no cursor points outside. */
		(void)tenant_key(c->tenant, req.prefix, req.prefixlen, pb, sizeof(pb), &req.prefix,
		                 &req.prefixlen);
		(void)tenant_key(c->tenant, req.start_after, req.start_after_len, ab, sizeof(ab),
		                 &req.start_after, &req.start_after_len);
	}
	req.limit = limit;
	l.limit = limit;
	l.max_bytes = WIRE_MAX_FRAME_DEFAULT - 64 * 1024;
	l.ents = calloc(limit, sizeof(*l.ents));
	lr.entries = calloc(limit, sizeof(*lr.entries));
	lr.common_prefixes = calloc(limit, sizeof(*lr.common_prefixes));
	lr.prefix_markers = calloc(limit, sizeof(*lr.prefix_markers));
	if (!l.ents || !lr.entries || !lr.common_prefixes || !lr.prefix_markers) {
		conn_respond(c, rq->id, -ENOMEM, NULL, NULL);
		goto out_free;
	}
	r = store_list(s->store, &req, list_cb, &l, &truncated);
	if (r < 0 && !l.cut) {
		conn_respond(c, rq->id, r, NULL, NULL);
		goto out_free;
	}
	if (l.cut)
		truncated = true;
	lr.has_truncated = true;
	lr.truncated = truncated;
	if (truncated && l.last) {
		lr.has_next_start_after = true;
		lr.next_start_after.data = (uint8_t *)l.last + l.strip;
		lr.next_start_after.len = l.lastlen - l.strip;
	}
	resp.body_case = KVFS__RESPONSE__BODY_LIST;
	resp.list = &lr;
	conn_respond(c, rq->id, 0, NULL, &resp);
out_free:
	free(l.ents);
	free(lr.entries);
	free(lr.common_prefixes);
	free(lr.prefix_markers);
}

/* ------------------------------------------------------------------ */
/* STAT, DELETE, RENAME, SETATTR: one store call each                  */

static int stat_dir_cb(void *arg, const char *name, size_t namelen, const struct store_item *it,
                       bool prefix)
{
	(void)name;
	(void)namelen;
	(void)it;
	(void)prefix;
	*(bool *)arg = true;
	return 0;
}

static void req_stat(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__StatResponse sr = KVFS__STAT_RESPONSE__INIT;
	Kvfs__Entry e = KVFS__ENTRY__INIT;
	const struct store_item *it;
	char kb[KV_KEY_MAX], pfx[KV_KEY_MAX]; /* pfx: the answer's key may point into it */
	const char *key;
	size_t klen;
	int r;

	s->c.stat_calls++;
	if (req_key(c, rq->id, &rq->stat->key, kb, &key, &klen))
		return;
	r = store_lookup(s->store, key, klen, &it);
	if (r == -ENOENT && rq->stat->has_dir && rq->stat->dir && klen < KV_KEY_MAX) {
		/* a directory: a key below it; its marker's entry when it has one */
		bool below = false;
		struct store_list_req lr = {.prefix = pfx, .prefixlen = klen + 1, .limit = 1};

		memcpy(pfx, key, klen);
		pfx[klen] = '/';
		store_list(s->store, &lr, stat_dir_cb, &below, NULL);
		if (below) {
			if (store_lookup(s->store, pfx, klen + 1, &it) == 0) {
				fill_entry(s->store, &e, it, conn_strip(c));
			} else {
				e.key.data = (uint8_t *)pfx + conn_strip(c);
				e.key.len = klen + 1 - conn_strip(c);
			}
			sr.has_dir = sr.dir = true;
			r = 0;
			goto answer;
		}
	}
	if (r < 0) {
		conn_respond(c, rq->id, r, r == -ENOENT ? "no such key" : NULL, NULL);
		return;
	}
	fill_entry(s->store, &e, it, conn_strip(c));
answer:
	sr.entry = &e;
	resp.body_case = KVFS__RESPONSE__BODY_STAT;
	resp.stat = &sr;
	conn_respond(c, rq->id, 0, NULL, &resp);
}

static void req_delete(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__DeleteRequest *d = rq->delete_;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__DeleteResponse dr = KVFS__DELETE_RESPONSE__INIT;
	uint64_t ver = 0;
	char kb[KV_KEY_MAX];
	const char *key;
	size_t klen;
	int r;

	s->c.deletes++;
	if (req_key(c, rq->id, &d->key, kb, &key, &klen))
		return;
	r = store_delete(s->store, key, klen, d->has_if_version ? d->if_version : 0, &ver);
	if (r < 0) {
		conn_respond(c, rq->id, r, r == -ENOENT ? "no such key" : NULL, NULL);
		return;
	}
	dr.has_version = true;
	dr.version = ver;
	resp.body_case = KVFS__RESPONSE__BODY_DELETE;
	resp.delete_ = &dr;
	conn_respond(c, rq->id, 0, NULL, &resp);
}

static void req_rename(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__RenameRequest *m = rq->rename;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__RenameResponse rr = KVFS__RENAME_RESPONSE__INIT;
	const struct store_item *it;
	char sb[KV_KEY_MAX], db[KV_KEY_MAX];
	const char *src, *dst;
	size_t slen, dlen;
	int r;

	s->c.renames++;
	if (req_key(c, rq->id, &m->src, sb, &src, &slen) ||
	    req_key(c, rq->id, &m->dst, db, &dst, &dlen))
		return;
	r = store_rename(s->store, src, slen, dst, dlen, m->has_no_overwrite && m->no_overwrite,
	                 &it);
	if (r == -EDQUOT) {
		respond_quota(c, rq->id, dst, dlen);
		return;
	}
	if (r < 0) {
		conn_respond(c, rq->id, r,
		             r == -ENOENT   ? "no such key"
		             : r == -EEXIST ? "destination exists"
		                            : NULL,
		             NULL);
		return;
	}
	rr.version = store_item_version(it);
	resp.body_case = KVFS__RESPONSE__BODY_RENAME;
	resp.rename = &rr;
	conn_respond(c, rq->id, 0, NULL, &resp);
}

/* SETATTR's pinned field, applied first: when it fails nothing changed
 * (the store checks the same if_version again after it).  Returns 0, or -1
 * when it answered the request. */
static int setattr_pin(struct conn *c, uint64_t id, const Kvfs__SetAttrRequest *a, const char *key,
                       size_t klen)
{
	struct srv *s = c->srv;
	char why[160];
	int r;

	r = store_keep(s->store, key, klen, a->pinned, a->has_if_version ? a->if_version : 0, NULL);
	if (r == -EOVERFLOW)
		conn_respond(c, id, -ENOSPC, srv_pin_limit_msg(s, why, sizeof(why)), NULL);
	else if (r < 0)
		conn_respond(c, id, r, r == -ENOENT ? "no such key" : NULL, NULL);
	return r < 0 ? -1 : 0;
}

static void req_setattr(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__SetAttrRequest *a = rq->setattr;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__SetAttrResponse ar = KVFS__SET_ATTR_RESPONSE__INIT;
	Kvfs__Entry e = KVFS__ENTRY__INIT;
	unsigned which =
	        (a->has_mode ? STORE_SET_MODE : 0) | (a->has_mtime_ns ? STORE_SET_MTIME : 0);
	const struct store_item *it;
	char kb[KV_KEY_MAX];
	const char *key;
	size_t klen;
	int r;

	s->c.setattrs++;
	if (req_key(c, rq->id, &a->key, kb, &key, &klen))
		return;
	if (a->has_pinned && setattr_pin(c, rq->id, a, key, klen))
		return;
	/* The owner first: it alone can fail for memory, before anything
	 * changed. */
	r = store_chown(s->store, key, klen,
	                (a->has_uid ? STORE_SET_UID : 0) | (a->has_gid ? STORE_SET_GID : 0), a->uid,
	                a->gid, a->has_if_version ? a->if_version : 0);
	if (r == 0)
		r = store_setattr(s->store, key, klen, which, a->mode & 07777,
		                  (uint64_t)a->mtime_ns, a->has_if_version ? a->if_version : 0,
		                  &it);
	if (r == 0 && a->has_atime_ns)
		r = store_set_atime(s->store, key, klen, (uint64_t)a->atime_ns, false,
		                    a->has_if_version ? a->if_version : 0, &it);
	if (r == 0 && a->has_accessed_ns)
		r = store_set_atime(s->store, key, klen, (uint64_t)a->accessed_ns, true,
		                    a->has_if_version ? a->if_version : 0, &it);
	if (r < 0) {
		conn_respond(c, rq->id, r, r == -ENOENT ? "no such key" : NULL, NULL);
		return;
	}
	fill_entry(s->store, &e, it, conn_strip(c));
	ar.entry = &e;
	resp.body_case = KVFS__RESPONSE__BODY_SETATTR;
	resp.setattr = &ar;
	conn_respond(c, rq->id, 0, NULL, &resp);
}

/* ------------------------------------------------------------------ */
/* GETXATTR, SETXATTR, LISTXATTR: a key's extended attributes          */

static void req_getxattr(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__GetXattrRequest *g = rq->getxattr;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__GetXattrResponse gr = KVFS__GET_XATTR_RESPONSE__INIT;
	char kb[KV_KEY_MAX];
	const void *val;
	const char *key;
	size_t klen, vlen;
	int r;

	s->c.xattr_calls++;
	if (req_key(c, rq->id, &g->key, kb, &key, &klen))
		return;
	/* wire_check_xattr() checked the name */
	r = store_xattr_get(s->store, key, klen, (const char *)g->name.data, g->name.len, &val,
	                    &vlen);
	if (r < 0 && r != -ENODATA) {
		conn_respond(c, rq->id, r, r == -ENOENT ? "no such key" : NULL, NULL);
		return;
	}
	if (r == 0) { /* absent: no such attribute */
		gr.has_value = true;
		gr.value.data = (uint8_t *)(uintptr_t)val;
		gr.value.len = vlen;
	}
	resp.body_case = KVFS__RESPONSE__BODY_GETXATTR;
	resp.getxattr = &gr;
	conn_respond(c, rq->id, 0, NULL, &resp);
}

static void req_setxattr(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	const Kvfs__SetXattrRequest *a = rq->setxattr;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__SetXattrResponse sr = KVFS__SET_XATTR_RESPONSE__INIT;
	unsigned flags = (a->has_create && a->create ? STORE_XATTR_CREATE : 0) |
	                 (a->has_replace && a->replace ? STORE_XATTR_REPLACE : 0) |
	                 (a->has_remove && a->remove ? STORE_XATTR_REMOVE : 0);
	char kb[KV_KEY_MAX], m[128];
	const char *key;
	size_t klen;
	bool found = false;
	int r;

	s->c.xattr_calls++;
	if (req_key(c, rq->id, &a->key, kb, &key, &klen))
		return;
	/* wire_check_xattr() checked the name, the value's size and the flags */
	r = store_xattr_set(s->store, key, klen, (const char *)a->name.data, a->name.len,
	                    a->has_value ? a->value.data : NULL, a->has_value ? a->value.len : 0,
	                    flags, &found);
	if (r < 0) {
		const char *msg = r == -ENOENT   ? "no such key"
		                  : r == -EEXIST ? "the attribute exists"
		                                 : NULL;

		if (r == -ENOSPC || r == -E2BIG) {
			snprintf(m, sizeof(m),
			         r == -ENOSPC
			                 ? "a key holds at most %d bytes of extended attribute "
			                   "names and values (or --max-meta is reached)"
			                 : "an extended attribute's value is at most %d bytes",
			         STORE_XATTR_TOTAL_MAX);
			msg = m;
		}
		/* E2BIG travels as TOO_BIG (EFBIG) */
		conn_respond(c, rq->id, r == -E2BIG ? -EFBIG : r, msg, NULL);
		return;
	}
	sr.found = found;
	resp.body_case = KVFS__RESPONSE__BODY_SETXATTR;
	resp.setxattr = &sr;
	conn_respond(c, rq->id, 0, NULL, &resp);
}

struct xlist_ctx {
	ProtobufCBinaryData *names;
	size_t n;
};

static int xlist_count(void *arg, const char *name, size_t namelen)
{
	(void)name;
	(void)namelen;
	((struct xlist_ctx *)arg)->n++;
	return 0;
}

static int xlist_add(void *arg, const char *name, size_t namelen)
{
	struct xlist_ctx *x = arg;

	x->names[x->n].data = (uint8_t *)(uintptr_t)name;
	x->names[x->n].len = namelen;
	x->n++;
	return 0;
}

static void req_listxattr(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__ListXattrResponse lr = KVFS__LIST_XATTR_RESPONSE__INIT;
	struct xlist_ctx x = {0};
	char kb[KV_KEY_MAX];
	const char *key;
	size_t klen;
	int r;

	s->c.xattr_calls++;
	if (req_key(c, rq->id, &rq->listxattr->key, kb, &key, &klen))
		return;
	r = store_xattr_list(s->store, key, klen, xlist_count, &x);
	if (r < 0) {
		conn_respond(c, rq->id, r, r == -ENOENT ? "no such key" : NULL, NULL);
		return;
	}
	/* at most STORE_XATTR_TOTAL_MAX bytes of names: the answer fits a frame */
	x.names = calloc(x.n ? x.n : 1, sizeof(*x.names));
	if (!x.names) {
		conn_respond(c, rq->id, -ENOMEM, NULL, NULL);
		return;
	}
	x.n = 0;
	(void)store_xattr_list(s->store, key, klen, xlist_add, &x);
	lr.names = x.names;
	lr.n_names = x.n;
	resp.body_case = KVFS__RESPONSE__BODY_LISTXATTR;
	resp.listxattr = &lr;
	conn_respond(c, rq->id, 0, NULL, &resp);
	free(x.names);
}

/* ------------------------------------------------------------------ */
/* STATS                                                               */

/* Room for the counters of one STATS answer. */
struct stats_buf {
	Kvfs__Counter *cs, **cp;
	size_t n, cap;
	char (*names)[TENANT_NAME_MAX + 32]; /* per-tenant counter names */
};

#define CNT(nm, v)                                                                                 \
	do {                                                                                       \
		kvfs__counter__init(&b->cs[b->n]);                                                 \
		b->cs[b->n].name = (char *)(nm);                                                   \
		b->cs[b->n].value = (uint64_t)(v);                                                 \
		b->cp[b->n] = &b->cs[b->n];                                                        \
		b->n++;                                                                            \
	} while (0)

/*
 * A tenant's STATS: what it holds and may hold, and the server's
 * configuration (capacity, largest value), nothing that moves with what
 * other tenants store or do (free memory, evictions, request counts):
 * free_bytes is what its quota, or without one the server's memory, leaves
 * after its own keys, so a tenant's df shows its quota.
 */
static void stats_tenant(struct conn *c, struct stats_buf *b)
{
	struct srv *s = c->srv;
	const struct tenant *t = c->tenant;
	struct store_ns_usage u;
	struct store_stats st;
	uint64_t cap;

	store_get_stats(s->store, &st);
	store_ns_usage(s->store, (unsigned)(t - s->tenants.t), &u);
	cap = t->quota ? t->quota : st.arena_usable;
	CNT("keys", u.keys);
	CNT("value_bytes", u.value_bytes);
	CNT("used_bytes", u.charged);
	CNT("quota_bytes", t->quota);
	CNT("capacity_bytes", cap);
	CNT("free_bytes", cap - KV_MIN(cap, u.charged));
	CNT("max_value", conn_max_value(c));
	CNT("instance_id", s->instance); /* as HELLO's: tells a restart */
	/* a quota refuses instead of evicting */
	CNT("eviction_lru", !t->quota && s->o.eviction == STORE_EVICT_LRU);
}

static void stats_server(struct conn *c, struct stats_buf *b)
{
	struct srv *s = c->srv;
	struct store_stats st;
	struct xfer_stats xs = {0};

	store_get_stats(s->store, &st);
	if (s->eng)
		xfer_get_stats(s->eng, &xs);
	CNT("instance_id", s->instance);
	CNT("keys", st.keys);
	CNT("value_bytes", st.value_bytes);
	CNT("capacity_bytes", st.arena_usable);
	CNT("free_bytes", st.arena_free);
	CNT("largest_free_bytes", st.largest_free);
	CNT("eviction_lru", s->o.eviction == STORE_EVICT_LRU); /* a full server evicts */
	CNT("evictions", st.evictions);
	CNT("evicted_bytes", st.evicted_bytes);
	CNT("pinned_items", st.pinned_items);
	CNT("pinned_bytes", st.pinned_bytes);
	CNT("reservations", st.resv_count);
	CNT("reserved_bytes", st.resv_bytes);
	CNT("meta_bytes", st.meta_bytes);
	CNT("meta_evictions", st.meta_evictions);
	CNT("pinned_keys", st.kept_keys); /* never evicted (SETATTR pinned) */
	CNT("pinned_key_bytes", st.kept_bytes);
	CNT("max_pinned_bytes", st.max_kept);
	CNT("overhead_bytes", st.overhead_bytes);
	CNT("max_value", srv_max_value(s));
	CNT("connections", s->nconns);
	CNT("connections_total", s->c.conns_total);
	CNT("connections_refused", s->c.conns_refused);
	CNT("auth_failures", s->c.auth_failures);
	CNT("bad_frames", s->c.bad_frames);
	CNT("refused_keys", s->c.refused_keys);
	CNT("closed_hello_timeout", s->c.closed_hello);
	CNT("connections_refused_unauthenticated", s->c.refused_unauth);
	CNT("closed_slow", s->c.closed_slow);
	CNT("closed_idle", s->c.closed_idle);
	CNT("gets", s->c.gets);
	CNT("puts", s->c.puts);
	CNT("deletes", s->c.deletes);
	CNT("lists", s->c.lists);
	CNT("renames", s->c.renames);
	CNT("setattrs", s->c.setattrs);
	CNT("stat_calls", s->c.stat_calls);
	CNT("xattr_calls", s->c.xattr_calls);
	CNT("get_bytes", s->c.get_bytes);
	CNT("put_bytes", s->c.put_bytes);
	CNT("rdma_gets", s->c.rdma_gets);
	CNT("rdma_puts", s->c.rdma_puts);
	CNT("inline_gets", s->c.inline_gets);
	CNT("inline_puts", s->c.inline_puts);
	CNT("uploads", s->c.uploads);               /* opened */
	CNT("upload_commits", s->c.upload_commits); /* published */
	CNT("uploads_open", s->uploads_open);
	CNT("errors", s->c.errors);
	CNT("rdma_failures", s->c.rdma_failures);
	CNT("rdma_inflight", s->ops);
	CNT("rdma_unsettled", s->unsettled); /* failed, memory not yet given back */
	CNT("rdma_unsettled_bytes", s->unsettled_bytes);
	CNT("refused_held", s->c.refused_held); /* BUSY: the client held too much */
	CNT("xfer_ops_done", xs.ops_done);
	CNT("xfer_ops_failed", xs.ops_failed);
	CNT("xfer_timeouts", xs.ops_timedout);
	CNT("xfer_stuck", xs.stuck); /* 1: a provider call has not returned (see xfer_submit) */
	CNT("xfer_stuck_events", xs.stuck_events);
	CNT("xfer_locks_released", xs.locks_released);
	CNT("xfer_resets", xs.resets);
	/* The whole namespace sees each tenant's figures. */
	for (size_t i = 0; i < s->tenants.n; i++) {
		static const char *const what[] = {"keys", "value_bytes", "used_bytes",
		                                   "quota_bytes"};
		const struct tenant *t = &s->tenants.t[i];
		struct store_ns_usage u;
		uint64_t v[4];

		store_ns_usage(s->store, (unsigned)i, &u);
		v[0] = u.keys;
		v[1] = u.value_bytes;
		v[2] = u.charged;
		v[3] = t->quota;
		for (size_t k = 0; k < KV_ARRAY_SIZE(what); k++) {
			char *nm = b->names[i * KV_ARRAY_SIZE(what) + k];

			snprintf(nm, sizeof(b->names[0]), "tenant.%s.%s", t->name, what[k]);
			CNT(nm, v[k]);
		}
	}
}
#undef CNT

static void req_stats(struct conn *c, const Kvfs__Request *rq)
{
	struct srv *s = c->srv;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__StatsResponse sr = KVFS__STATS_RESPONSE__INIT;
	struct stats_buf b = {.cap = 80 + 4 * s->tenants.n};

	s->c.stats++;
	b.cs = calloc(b.cap, sizeof(*b.cs));
	b.cp = calloc(b.cap, sizeof(*b.cp));
	b.names = calloc(4 * s->tenants.n + 1, sizeof(*b.names));
	if (!b.cs || !b.cp || !b.names) {
		conn_respond(c, rq->id, -ENOMEM, NULL, NULL);
		goto out_free;
	}
	if (c->tenant)
		stats_tenant(c, &b);
	else
		stats_server(c, &b);
	sr.n_counters = b.n;
	sr.counters = b.cp;
	resp.body_case = KVFS__RESPONSE__BODY_STATS;
	resp.stats = &sr;
	conn_respond(c, rq->id, 0, NULL, &resp);
out_free:
	free(b.cs);
	free(b.cp);
	free(b.names);
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                            */

/* Indexed by Kvfs__Request.body_case. */
static const req_handler_fn req_handlers[] = {
        [KVFS__REQUEST__BODY_HELLO] = req_hello,         /* first, once per connection */
        [KVFS__REQUEST__BODY_PUT] = req_put,             /* inline, or RDMA-READ from the client */
        [KVFS__REQUEST__BODY_GET] = req_get,             /* inline, or RDMA-WRITE to the client */
        [KVFS__REQUEST__BODY_STAT] = req_stat,           /* one key's entry */
        [KVFS__REQUEST__BODY_DELETE] = req_delete,       /* answers the version deleted */
        [KVFS__REQUEST__BODY_LIST] = req_list,           /* a page of keys and common prefixes */
        [KVFS__REQUEST__BODY_RENAME] = req_rename,       /* answers the new version */
        [KVFS__REQUEST__BODY_SETATTR] = req_setattr,     /* answers the entry */
        [KVFS__REQUEST__BODY_STATS] = req_stats,         /* the server's counters */
        [KVFS__REQUEST__BODY_GETXATTR] = req_getxattr,   /* one extended attribute */
        [KVFS__REQUEST__BODY_SETXATTR] = req_setxattr,   /* set or remove one */
        [KVFS__REQUEST__BODY_LISTXATTR] = req_listxattr, /* their names */
        [KVFS__REQUEST__BODY_UPLOAD_OPEN] = req_upload_open,   /* a streaming PUT begins */
        [KVFS__REQUEST__BODY_UPLOAD_PART] = req_upload_part,   /* bytes of it, or a size */
        [KVFS__REQUEST__BODY_UPLOAD_ABORT] = req_upload_abort, /* dropped */
};

void req_dispatch(struct conn *c, const Kvfs__Request *rq)
{
	const char *why = NULL;
	int r;

	if (c->state == CONN_CLOSING)
		return;
	if (c->refuse_at) /* its refusal is on its way */
		return;
	if (c->binding) { /* a client waits for HELLO's answer */
		conn_respond(c, rq->id, -EPROTO, "a request before HELLO was answered", NULL);
		conn_refuse(c);
		return;
	}
	if (c->state == CONN_HELLO && rq->body_case != KVFS__REQUEST__BODY_HELLO) {
		conn_respond(c, rq->id, c->srv->auth ? -EACCES : -EPROTO,
		             "the first request must be HELLO", NULL);
		conn_refuse(c);
		return;
	}
	r = wire_request_check(rq, &why);
	if (r < 0) {
		if (wire_reason_is_key(why)) {
			c->srv->c.refused_keys++;
			KV_DEBUG(TAG, "%s: request %llu refused: %s", c->name,
			         (unsigned long long)rq->id, why);
		}
		conn_respond(c, rq->id, r, why, NULL);
		return;
	}
	/* wire_request_check() refused a body it does not know; this keeps a
	 * body it knows but no handler serves from indexing past the table. */
	if ((size_t)rq->body_case >= KV_ARRAY_SIZE(req_handlers) || !req_handlers[rq->body_case]) {
		conn_respond(c, rq->id, -ENOTSUP, "unknown operation", NULL);
		return;
	}
	req_handlers[rq->body_case](c, rq);
}
