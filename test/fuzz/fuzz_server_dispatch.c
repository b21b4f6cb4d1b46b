/* SPDX-License-Identifier: MIT */
/*
 * Fuzz kv-server's request path: bytes a client sends go through the real
 * connection code (conn_read -> conn_feed -> wire_reader_feed ->
 * req_dispatch -> req_*) and every response goes back through
 * conn_queue/conn_flush.
 *
 * Each input gets a fresh server (srv_create with no listening socket,
 * provider "none", a 256 KiB arena so eviction and ENOSPC are reachable) and
 * one connection: one end of a socketpair handed to srv_adopt_fd(), the
 * other end played by this harness, driven with srv_poll_once().  No engine
 * runs in-process, so the server answers HELLO with rdma = false and
 * descriptor GET/PUT stop at "no RDMA on this connection" (the segment lists
 * are still checked by wire_request_check() on the way).
 *
 * Input: byte 0 is a set of flags, the rest is the client's byte stream.
 *   bit 0  send a valid HELLO first, so the bytes reach the handlers past it
 *   bit 1  server requires auth; the HELLO of bit 0 carries the right proof
 *   bit 2  that HELLO also asks the server to prove the token (client_nonce)
 *   bits 3-5  write the stream in chunks of 4^k bytes (0: all at once),
 *          running one loop iteration between chunks
 * After the stream the harness shuts its write side; the server must then
 * close the connection.  Everything it sends must decode: one SERVER_HELLO
 * first, then RESPONSE frames only; with bit 0 the first response answers
 * the HELLO with OK.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "kvfs/log.h"
#include "kvfs/wire.h"
#include "kvfs/wire_auth.h"
#include "server.h"

#define TOKEN "fuzz-token-fuzz-token"

static char token_path[] = "/tmp/kvfs-fuzz-token-XXXXXX";

static void remove_token(void)
{
	unlink(token_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int fd = mkstemp(token_path);

	CHECK(fd >= 0);
	CHECK(write(fd, TOKEN "\n", sizeof(TOKEN)) == (ssize_t)sizeof(TOKEN));
	close(fd);
	atexit(remove_token);
	kv_log_level = getenv("KVFS_FUZZ_LOG") ? KV_LOG_DEBUG : KV_LOG_ERR;
	return 0;
}

/* The client end of the connection. */
struct peer {
	int fd;
	struct wire_reader rd;
	unsigned frames;                    /* decoded from the server */
	bool want_hello;                    /* bit 0: the first response must be an OK HELLO */
	bool eof;                           /* server closed */
	uint8_t nonce[WIRE_AUTH_NONCE_LEN]; /* from ServerHello, when auth */
	bool has_nonce;
};

static void peer_check(struct peer *p, const struct wire_msg *m)
{
	if (p->frames++ == 0) {
		CHECK(m->type == WIRE_FRAME_SERVER_HELLO);
		CHECK(m->shel->min_version == WIRE_VERSION_MIN);
		if (m->shel->has_auth_nonce) {
			CHECK(m->shel->auth_nonce.len == sizeof(p->nonce));
			memcpy(p->nonce, m->shel->auth_nonce.data, sizeof(p->nonce));
			p->has_nonce = true;
		}
		return;
	}
	CHECK(m->type == WIRE_FRAME_RESPONSE);
	if (m->resp->has_status && m->resp->status)
		CHECK(m->resp->body_case == KVFS__RESPONSE__BODY__NOT_SET);
	if (p->frames == 2 && p->want_hello) {
		CHECK(m->resp->id == 1 && !m->resp->status);
		CHECK(m->resp->body_case == KVFS__RESPONSE__BODY_HELLO && !m->resp->hello->rdma);
	}
}

/* Read and check whatever the server sent. */
static void peer_drain(struct peer *p)
{
	uint8_t buf[65536];

	while (!p->eof) {
		ssize_t n = recv(p->fd, buf, sizeof(buf), MSG_DONTWAIT);
		size_t off = 0;

		if (n == 0) {
			p->eof = true;
			CHECK(!wire_reader_pending(&p->rd));
			break;
		}
		if (n < 0) {
			CHECK(errno == EAGAIN || errno == EINTR);
			break;
		}
		while (off < (size_t)n) {
			struct wire_msg m;
			size_t used;
			int r = wire_reader_feed(&p->rd, buf + off, (size_t)n - off, &used, &m);

			CHECK(r >= 0); /* the server never sends a bad frame */
			off += used;
			if (r == 0)
				break;
			peer_check(p, &m);
			wire_msg_free(&m);
		}
	}
}

/* Write all of @data, letting the server run when the socket is full. */
static void peer_send(struct srv *s, struct peer *p, const uint8_t *data, size_t len, size_t chunk)
{
	size_t off = 0;
	unsigned stuck = 0;

	while (off < len && !p->eof) {
		size_t n = chunk && chunk < len - off ? chunk : len - off;
		ssize_t w = send(p->fd, data + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (w > 0) {
			off += (size_t)w;
			stuck = 0;
		} else {
			/* EAGAIN, or EPIPE once the server closed: stop when the
			 * server no longer makes progress. */
			CHECK(w < 0 && (errno == EAGAIN || errno == EPIPE || errno == ECONNRESET));
			if (errno != EAGAIN || ++stuck > 1000)
				break;
		}
		CHECK(srv_poll_once(s, 0) >= 0);
		peer_drain(p);
	}
}

/* HELLO (id 1) as a client would send it. */
static size_t hello_frame(const struct peer *p, bool client_nonce, uint8_t *buf, size_t cap)
{
	Kvfs__Request rq = KVFS__REQUEST__INIT;
	Kvfs__HelloRequest h = KVFS__HELLO_REQUEST__INIT;
	uint8_t proof[WIRE_AUTH_PROOF_LEN], cn[WIRE_AUTH_NONCE_LEN];
	size_t len = 0;

	rq.id = 1;
	rq.body_case = KVFS__REQUEST__BODY_HELLO;
	rq.hello = &h;
	h.min_version = WIRE_VERSION_MIN;
	h.max_version = WIRE_VERSION_MAX;
	h.client_id = "fuzz";
	if (p->has_nonce) {
		CHECK(wire_auth_client_proof(TOKEN, strlen(TOKEN), p->nonce, proof) == 0);
		h.has_auth_proof = true;
		h.auth_proof.data = proof;
		h.auth_proof.len = sizeof(proof);
	}
	if (client_nonce) {
		memset(cn, 0x5a, sizeof(cn));
		h.has_client_nonce = true;
		h.client_nonce.data = cn;
		h.client_nonce.len = sizeof(cn);
	}
	CHECK(wire_encode(WIRE_FRAME_REQUEST, &rq.base, 0, buf, cap, &len) == 0);
	return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct srv_opts o;
	struct srv *s = NULL;
	struct peer p = {0};
	uint8_t hello[512];
	unsigned flags, k;
	int sv[2];

	if (size < 1)
		return 0;
	flags = data[0];
	srv_opts_init(&o);
	o.listen = NULL;
	o.provider = "none";
	o.memory = 256 * 1024;
	o.max_meta = 64 * 1024; /* the default (at least 1 MiB) would leave no arena */
	o.max_inline = 64 * 1024;
	o.auth_token_file = flags & 2 ? token_path : NULL;
	CHECK(srv_create(&o, &s) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
	CHECK(wire_reader_init(&p.rd, WIRE_MAX_FRAME_MAX, WIRE_ACCEPT_CLIENT) == 0);
	p.fd = sv[1];
	CHECK(srv_adopt_fd(s, sv[0], "fuzz-peer") == 0); /* s owns sv[0] now */
	peer_drain(&p);                                  /* ServerHello, queued at once */
	CHECK(p.frames == 1 && p.has_nonce == !!(flags & 2));

	k = (flags >> 3) & 7;
	if (flags & 1) {
		p.want_hello = true;
		peer_send(s, &p, hello, hello_frame(&p, flags & 4, hello, sizeof(hello)), 0);
	}
	peer_send(s, &p, data + 1, size - 1, k ? (size_t)1 << (2 * k) : 0);
	shutdown(p.fd, SHUT_WR);
	/* The server must notice the end and close; every loop either reads
	 * something or flushes, so a bound this large means it hangs. */
	for (unsigned i = 0; !p.eof; i++) {
		CHECK(i < 100000);
		CHECK(srv_poll_once(s, 0) >= 0);
		peer_drain(&p);
	}
	CHECK(!(flags & 1) || p.frames >= 2);

	srv_destroy(s);
	close(p.fd);
	wire_reader_fini(&p.rd);
	return 0;
}
