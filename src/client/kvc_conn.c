/* SPDX-License-Identifier: MIT */
/*
 * Connection life, on the calling threads: kvc_ensure_up() connects (TCP,
 * the transfer engine on first use, ServerHello, Hello with the token
 * proofs both ways: connect_once()) one thread at a time with a backoff
 * between attempts, and hands the socket to the I/O thread;
 * kvc_conn_lost() is the way back down.  A connection to another server
 * instance than the last one starts a new epoch (instance_seen()).
 */

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvc_i.h"
#include "kvfs/wire_auth.h"
#include "kvfs/log.h"
#include "kvfs/util.h"

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

/* Providers are compatible when their core names ("tcp" of "tcp;ofi_rxm") match. */
static bool same_family(const char *a, const char *b)
{
	size_t la = strcspn(a, ";"), lb = strcspn(b, ";");

	return la == lb && !strncmp(a, b, la);
}

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

/* Make the server's engine at @addr our transfer peer (kvc->server_peer),
 * replacing one at another address (a restarted server). */
static void server_peer_set(struct kvc *kvc, const void *addr, size_t len)
{
	if (kvc->has_peer && (kvc->server_addr_len != len || memcmp(kvc->server_addr, addr, len))) {
		xfer_peer_remove(kvc->engine, kvc->server_peer);
		kvc->has_peer = false;
	}
	/* Adding the same address again also revives a peer marked failed. */
	if (len <= sizeof(kvc->server_addr) &&
	    xfer_peer_add(kvc->engine, addr, len, &kvc->server_peer) == 0) {
		kvc->has_peer = true;
		memcpy(kvc->server_addr, addr, len);
		kvc->server_addr_len = len;
	} else {
		KV_DEBUG(KVC_TAG, "cannot add the server's engine as a peer; it still reaches us");
	}
}

/* Fill @lim from the HelloResponse and decide whether RDMA is used. */
static void hello_limits(struct kvc *kvc, const Kvfs__HelloResponse *h, struct kvc_lim *lim)
{
	memset(lim, 0, sizeof(*lim));
	lim->max_frame = KV_MAX(KV_MIN(h->max_frame, WIRE_MAX_FRAME_MAX), WIRE_MAX_FRAME_MIN);
	lim->max_value = h->max_value;
	lim->max_inline = h->has_max_inline ? h->max_inline : 0;
	lim->chunk_size = h->chunk_size;
	lim->instance = h->has_instance_id ? h->instance_id : 0;
	lim->max_inflight = h->has_max_inflight ? h->max_inflight : 0;
	lim->features = h->has_features ? h->features : 0;
	snprintf(lim->server_provider, sizeof(lim->server_provider), "%s",
	         h->provider ? h->provider : "none");
	snprintf(lim->rdma_note, sizeof(lim->rdma_note), "%s", h->rdma_note ? h->rdma_note : "");
	lim->rdma = kvc->engine && h->has_rdma && h->rdma && h->provider && h->has_engine_addr &&
	            same_family(h->provider, xfer_provider(kvc->engine));
	if (kvc->engine && !lim->rdma)
		KV_DEBUG(KVC_TAG, "server %s: %s (ours %s, server's %s): values travel inline only",
		         kvc->server,
		         h->has_rdma && h->rdma ? "provider families differ" : "no RDMA offered",
		         xfer_provider(kvc->engine), lim->server_provider);
	if (lim->rdma)
		server_peer_set(kvc, h->engine_addr.data, h->engine_addr.len);
}

/*
 * The engine proof of a HELLO: new random bytes in our proof page (made on
 * first use), described by @seg/@desc, and their copy in @nonce.  The
 * server reads the page through the engine we name and compares: so it
 * knows that engine is ours before it moves a value to or from it.
 */
static int engine_proof(struct kvc *kvc, Kvfs__Segment *seg, Kvfs__Desc *desc,
                        uint8_t nonce[WIRE_ENGINE_NONCE_LEN])
{
	struct xfer_desc d;
	int r;

	if (!kvc->proof_mr) {
		r = xfer_buf_alloc(kvc->engine, 4096, XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ,
		                   &kvc->proof_mr);
		if (r)
			return r;
	}
	r = kv_random_bytes(nonce, WIRE_ENGINE_NONCE_LEN);
	if (r)
		return r;
	memcpy(xfer_mr_addr(kvc->proof_mr), nonce, WIRE_ENGINE_NONCE_LEN);
	xfer_mr_desc(kvc->proof_mr, &d);
	desc->addr = d.addr;
	desc->len = d.len;
	desc->key = d.key;
	seg->desc = desc;
	seg->has_offset = 1;
	seg->offset = 0;
	seg->length = WIRE_ENGINE_NONCE_LEN;
	return 0;
}

/* One attempt: TCP connect (the first time: engine, then connect again),
 * ServerHello, Hello. */
static int connect_once(struct kvc *kvc, uint64_t deadline, int *ret_fd, struct kvc_lim *ret_lim,
                        bool *ret_transient, char *msg, size_t msglen)
{
	Kvfs__HelloRequest hello = KVFS__HELLO_REQUEST__INIT;
	Kvfs__Request req = KVFS__REQUEST__INIT;
	struct wire_msg m = {0};
	uint8_t addr[XFER_ADDR_MAX], proof[WIRE_AUTH_PROOF_LEN], cnonce[WIRE_AUTH_NONCE_LEN];
	uint8_t nonce[WIRE_AUTH_NONCE_LEN], enonce[WIRE_ENGINE_NONCE_LEN];
	Kvfs__Segment proof_seg = KVFS__SEGMENT__INIT;
	Kvfs__Desc proof_desc = KVFS__DESC__INIT;
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
	} else if (kvc->token_len) {
		/* Mutual authentication: whoever answers at this address without
		 * asking for the token may be anyone.  It gets neither our values
		 * nor our trust in its bytes. */
		r = -EACCES;
		kvc_fmt_msg(
		        msg, msglen,
		        "kvc: the server at %s did not ask for the token (%s is set): it is not "
		        "the kv-server started with --auth-token-file, or that server runs "
		        "without one; refusing to send it data or trust its answers",
		        kvc->server, kvc->auth_option);
		goto out_close;
	}
	/* The server reads our engine proof before it answers HELLO: know its
	 * engine first (shm without CMA serves reads only to a known peer). */
	if (kvc->engine && m.shel->provider && m.shel->has_engine_addr &&
	    same_family(m.shel->provider, xfer_provider(kvc->engine)))
		server_peer_set(kvc, m.shel->engine_addr.data, m.shel->engine_addr.len);
	wire_msg_free(&m);

	hello.min_version = WIRE_VERSION_MIN;
	hello.max_version = WIRE_VERSION_MAX;
	hello.client_id = kvc->client_id;
	hello.has_pid = 1; /* a shm server watches it: see docs/protocol.md */
	hello.pid = (uint32_t)getpid();
	if (kvc->engine && xfer_addr(kvc->engine, addr, &addrlen) == 0 &&
	    engine_proof(kvc, &proof_seg, &proof_desc, enonce) == 0) {
		hello.provider = (char *)xfer_provider(kvc->engine);
		hello.has_engine_addr = 1;
		hello.engine_addr.data = addr;
		hello.engine_addr.len = addrlen;
		hello.engine_proof = &proof_seg;
		hello.has_engine_nonce = 1;
		hello.engine_nonce.data = enonce;
		hello.engine_nonce.len = WIRE_ENGINE_NONCE_LEN;
	}
	if (auth) {
		r = wire_auth_client_proof(kvc->token, kvc->token_len, nonce, proof);
		if (r) {
			kvc_fmt_msg(msg, msglen, "kvc: cannot compute the auth proof: %s",
			            strerror(-r));
			goto out_close;
		}
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
		/* The server could not read our engine proof now (a link that
		 * just healed): asking again soon is expected to work. */
		*ret_transient = st == KVFS__STATUS__IO || st == KVFS__STATUS__BUSY;
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
	if (auth && !wire_auth_check_server(kvc->token, kvc->token_len, cnonce, nonce,
	                                    h->has_server_proof ? h->server_proof.data : NULL,
	                                    h->server_proof.len)) {
		r = -EACCES;
		kvc_fmt_msg(msg, msglen,
		            "kvc: kv-server at %s did not prove it holds the token (%s): wrong "
		            "server or different token",
		            kvc->server, h->has_server_proof ? "wrong proof" : "no proof");
		goto out_close;
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
 * A connection came up with @lim (kvc->lock held): set its epoch.  Another
 * instance id than the last one announced means another server process, with
 * a new store whose versions started from 1 again: a new epoch, and true
 * (with the ids in *ret_was) for the caller to say so once.  A server that
 * announces no id is an unknown instance: no change.
 */
static bool instance_seen(struct kvc *kvc, struct kvc_lim *lim, uint64_t *ret_was)
{
	bool changed = lim->instance && kvc->instance && lim->instance != kvc->instance;

	if (changed) {
		*ret_was = kvc->instance;
		kvc->epoch++;
	}
	if (!kvc->epoch)
		kvc->epoch = 1; /* the first connection */
	if (lim->instance)
		kvc->instance = lim->instance;
	lim->epoch = kvc->epoch;
	return changed;
}

/* Say once that the server restarted (no lock held), and tell the user. */
static void restart_seen(struct kvc *kvc, const struct kvc_lim *lim, uint64_t was)
{
	/* The one message the library logs above debug level: every user of
	 * the server's old answers (caches, versions kept for if_version)
	 * must learn that they no longer hold, and the operator why. */
	KV_WARN(KVC_TAG,
	        "kv-server at %s restarted (instance %016llx, was %016llx): its store may be "
	        "empty; cached data dropped",
	        kvc->server, (unsigned long long)lim->instance, (unsigned long long)was);
	if (kvc->on_restart)
		kvc->on_restart(kvc->on_restart_arg, lim->epoch);
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
	uint64_t was = 0;
	bool restarted = false;
	int r, fd = -1, transient_left = 3;

	pthread_mutex_lock(&kvc->lock);
	for (;;) {
		uint64_t now = kv_now_ms();

		switch (kvc->state) {
		case KVC_UP:
			*ret_lim = kvc->lim;
			pthread_mutex_unlock(&kvc->lock);
			if (restarted) /* we connected, to another instance */
				restart_seen(kvc, ret_lim, was);
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
			bool transient = false;

			r = connect_once(kvc, deadline, &fd, &lim, &transient, msg, sizeof(msg));
			pthread_mutex_lock(&kvc->lock);
			if (kvc->state == KVC_CLOSED) {
				if (r == 0)
					close(fd);
				break;
			}
			if (r == 0) {
				kvc->gen++;
				lim.gen = kvc->gen;
				restarted = instance_seen(kvc, &lim, &was);
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
			/* A single attempt still rides out a refusal the server
			 * calls passing, a few times, within the deadline. */
			if (transient && once && transient_left-- > 0 &&
			    kvc->next_try_ms < deadline)
				break;
			if (once || is_permanent(r) || r == -ECONNREFUSED ||
			    kv_now_ms() >= deadline) {
				pthread_mutex_unlock(&kvc->lock);
				return kvc_fail(r, "%s", msg);
			}
			break;
		}
	}
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
