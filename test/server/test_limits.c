/* SPDX-License-Identifier: MIT */
/*
 * kv-server against hostile and misbehaving clients (docs/reliability.md,
 * "Limits"): connections that never say HELLO, a slow-loris that dribbles
 * a frame, a client that does not read its responses, declared lengths far
 * above the frame limit, keys the key policy refuses, RDMA descriptors that
 * point outside what the client registered, and the auth token staying out
 * of every log.  Each runs next to a well-behaved client that must keep
 * working.  Waits are bounded; nothing asserts on speed.
 */
#include <poll.h>
#include <sys/time.h>

#include "kvfs/log.h"
#include "kvfs/util.h"
#include "kvfs/wire.h"
#include "kvfs/xfer.h"
#include "srv_proc.h"

/* ------------------------------------------------------------------ */
/* Raw protocol helpers                                                */

static void recv_all(int fd, void *buf, size_t len, const char *what)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(fd, (uint8_t *)buf + got, len - got, 0);

		cr_assert_gt(n, 0, "%s: %s", what, n == 0 ? "connection closed" : strerror(errno));
		got += (size_t)n;
	}
}

static void raw_send(int fd, Kvfs__Request *req)
{
	void *buf;
	size_t len;

	cr_assert_eq(wire_encode_alloc(WIRE_FRAME_REQUEST, &req->base, 0, &buf, &len), 0);
	cr_assert_eq(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len, "send: %s", strerror(errno));
	free(buf);
}

/* One RESPONSE frame (within the 10 s SO_RCVTIMEO raw_connect() sets). */
static Kvfs__Response *raw_recv(int fd)
{
	uint8_t hdr[WIRE_HDR_LEN], *payload;
	enum wire_frame_type type;
	struct wire_msg m;
	size_t plen;

	recv_all(fd, hdr, sizeof(hdr), "response header");
	cr_assert_eq(wire_hdr_parse(hdr, 0, WIRE_ACCEPT_CLIENT, &type, &plen), 0);
	cr_assert_eq(type, WIRE_FRAME_RESPONSE);
	payload = xmalloc(plen);
	recv_all(fd, payload, plen, "response payload");
	cr_assert_eq(wire_payload_decode(type, payload, plen, &m), 0);
	free(payload);
	return m.resp;
}

static Kvfs__Response *raw_call(int fd, Kvfs__Request *req)
{
	Kvfs__Response *r;

	raw_send(fd, req);
	r = raw_recv(fd);
	cr_assert_eq(r->id, req->id, "response %llu to request %llu", (unsigned long long)r->id,
	             (unsigned long long)req->id);
	return r;
}

static void resp_free(Kvfs__Response *r)
{
	kvfs__response__free_unpacked(r, NULL);
}

/* HELLO without auth; with @provider, offer RDMA from engine address @addr. */
/* HELLO on a raw connection; with @eng, naming that engine and proving it
 * is ours (a page holding the nonce, read by the server: docs/protocol.md,
 * "Engine proof"). */
static void raw_hello(int fd, struct xfer_engine *eng, bool want_rdma)
{
	Kvfs__Request rq = KVFS__REQUEST__INIT;
	Kvfs__HelloRequest h = KVFS__HELLO_REQUEST__INIT;
	Kvfs__Segment seg = KVFS__SEGMENT__INIT;
	Kvfs__Desc desc = KVFS__DESC__INIT;
	uint8_t addr[XFER_ADDR_MAX], nonce[WIRE_ENGINE_NONCE_LEN];
	size_t alen = sizeof(addr);
	struct xfer_mr *proof = NULL;
	struct xfer_desc d;
	Kvfs__Response *r;

	h.min_version = WIRE_VERSION_MIN;
	h.max_version = WIRE_VERSION_MAX;
	h.client_id = "test_limits";
	if (eng) {
		cr_assert_eq(xfer_addr(eng, addr, &alen), 0);
		cr_assert_eq(xfer_buf_alloc(eng, 4096, XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ,
		                            &proof),
		             0);
		memset(nonce, 0x6b, sizeof(nonce));
		memcpy(xfer_mr_addr(proof), nonce, sizeof(nonce));
		xfer_mr_desc(proof, &d);
		desc.addr = d.addr;
		desc.len = d.len;
		desc.key = d.key;
		seg.desc = &desc;
		seg.length = sizeof(nonce);
		h.provider = (char *)xfer_provider(eng);
		h.has_engine_addr = true;
		h.engine_addr.data = addr;
		h.engine_addr.len = alen;
		h.engine_proof = &seg;
		h.has_engine_nonce = true;
		h.engine_nonce.data = nonce;
		h.engine_nonce.len = sizeof(nonce);
	}
	rq.id = 1;
	rq.body_case = KVFS__REQUEST__BODY_HELLO;
	rq.hello = &h;
	r = raw_call(fd, &rq);
	xfer_mr_dereg(proof); /* the server read it before it answered */
	cr_assert_eq(r->status, 0, "HELLO: %s", r->message ? r->message : "");
	cr_assert_eq(r->body_case, KVFS__RESPONSE__BODY_HELLO);
	cr_assert_eq(r->hello->rdma, want_rdma, "HELLO: rdma %d", r->hello->rdma);
	resp_free(r);
}

static ProtobufCBinaryData bin(const char *s)
{
	return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

/* Inline PUT of @val under @key on a raw connection; returns the status. */
static int32_t raw_put(int fd, uint64_t id, ProtobufCBinaryData key, ProtobufCBinaryData val)
{
	Kvfs__Request rq = KVFS__REQUEST__INIT;
	Kvfs__PutRequest p = KVFS__PUT_REQUEST__INIT;
	Kvfs__Response *r;
	int32_t st;

	p.key = key;
	p.has_value = true;
	p.value = val;
	rq.id = id;
	rq.body_case = KVFS__REQUEST__BODY_PUT;
	rq.put = &p;
	r = raw_call(fd, &rq);
	st = r->status;
	resp_free(r);
	return st;
}

/* True once the server has closed @fd (EOF or reset; not merely quiet). */
static bool is_closed(int fd)
{
	uint8_t b[4096];
	ssize_t n;

	do {
		n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
	} while (n > 0);
	return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static bool log_has(const struct srv *s, const char *needle)
{
	char *buf = xmalloc(1 << 20);
	int fd = open(s->log, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, (1 << 20) - 1) : 0;
	bool found;

	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = '\0';
	found = memmem(buf, (size_t)(n > 0 ? n : 0), needle, strlen(needle)) != NULL;
	free(buf);
	return found;
}

static long vmrss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	cr_assert_geq(kib, 0, "no VmRSS in %s", path);
	return kib;
}

static void put_get(struct kvc *kvc, const char *key, size_t len, uint64_t seed)
{
	void *want = xmalloc(len), *got = xmalloc(len);
	ssize_t n;

	fill(want, len, seed);
	cr_assert_eq(kvc_put(kvc, key, strlen(key), want, len, NULL, NULL), 0, "PUT %s: %s", key,
	             kvc_strerror());
	n = kvc_get(kvc, key, strlen(key), 0, got, len, NULL, NULL);
	cr_assert_eq(n, (ssize_t)len, "GET %s: %zd (%s)", key, n, kvc_strerror());
	check_bytes(got, want, len, key);
	free(want);
	free(got);
}

/* ------------------------------------------------------------------ */
/* Deadlines                                                           */

#define MAX_CONNS 8

/* Silent connections fill all but two slots, a slow-loris takes one (after
 * HELLO, sending one byte of a frame a second), a real client the last.
 * The real client keeps working; the server is full (a ninth connection is
 * refused) until --hello-timeout closes the silent ones and
 * --frame-timeout the slow-loris; then new clients get in. */
Test(limits, silent_and_slowloris_closed_by_deadlines, .timeout = 120)
{
	const char *extra[] = {"--max-conns", "8", "--hello-timeout", "3000", "--frame-timeout",
	                       "2500",        NULL};
	int silent[MAX_CONNS - 2], loris, extra_fd;
	bool silent_closed[MAX_CONNS - 2] = {0}, loris_closed = false;
	struct srv s = {0};
	struct kvc *good, *later;
	uint8_t frame[64];
	uint64_t t0, next_byte;
	size_t flen, sent = 0;
	int nclosed = 0, ops = 0;

	srv_start_args(&s, "tcp", "64M", extra);
	good = connect_to(&s, "tcp");
	put_get(good, "before", 4096, 1);

	/* the slow-loris: a valid HELLO, then a PUT frame a byte at a time */
	loris = raw_connect(&s);
	raw_hello(loris, NULL, false);
	{
		Kvfs__Request rq = KVFS__REQUEST__INIT;
		Kvfs__PutRequest p = KVFS__PUT_REQUEST__INIT;

		p.key = bin("loris");
		p.has_value = true;
		p.value = bin("dribbled value");
		rq.id = 2;
		rq.body_case = KVFS__REQUEST__BODY_PUT;
		rq.put = &p;
		cr_assert_eq(
		        wire_encode(WIRE_FRAME_REQUEST, &rq.base, 0, frame, sizeof(frame), &flen),
		        0);
	}
	for (int i = 0; i < MAX_CONNS - 2; i++)
		silent[i] = raw_connect(&s);

	/* full: one more is closed before any ServerHello */
	{
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(s.port)};
		struct timeval tv = {.tv_sec = 10};
		uint8_t b[64];
		ssize_t n;

		extra_fd = socket(AF_INET, SOCK_STREAM, 0);
		inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
		setsockopt(extra_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		cr_assert_eq(connect(extra_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		n = recv(extra_fd, b, sizeof(b), 0);
		cr_assert(n == 0 || (n < 0 && errno == ECONNRESET),
		          "a connection beyond --max-conns was served");
		close(extra_fd);
	}

	t0 = kv_now_ms();
	next_byte = t0;
	while (kv_now_ms() - t0 < 30000 && (!loris_closed || nclosed < MAX_CONNS - 2)) {
		char key[32];

		snprintf(key, sizeof(key), "k%d", ops % 16);
		put_get(good, key, 1000 + (size_t)ops, (uint64_t)ops);
		ops++;
		if (!loris_closed && kv_now_ms() >= next_byte && sent < flen) {
			if (send(loris, frame + sent, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
				sent++;
			next_byte += 1000;
		}
		if (!loris_closed && is_closed(loris))
			loris_closed = true;
		for (int i = 0; i < MAX_CONNS - 2; i++) {
			if (!silent_closed[i] && is_closed(silent[i])) {
				silent_closed[i] = true;
				nclosed++;
			}
		}
		usleep(20000);
	}
	cr_assert(loris_closed, "the slow-loris (%zu of %zu bytes sent) is still open", sent, flen);
	cr_assert_lt(sent, flen, "the dribbled frame completed");
	cr_assert_eq(nclosed, MAX_CONNS - 2, "only %d of %d silent connections closed", nclosed,
	             MAX_CONNS - 2);
	cr_assert_gt(ops, 0);
	for (int i = 0; i < MAX_CONNS - 2; i++)
		close(silent[i]);
	close(loris);

	/* slots are free again; the real client never noticed */
	later = connect_to(&s, "tcp");
	put_get(later, "after", 100000, 7);
	put_get(good, "before", 4096, 1);
	cr_assert_geq(counter(good, "closed_hello_timeout"), MAX_CONNS - 2);
	cr_assert_geq(counter(good, "closed_slow"), 1);
	cr_assert_geq(counter(good, "connections_refused"), 1);
	struct kvc_entry e;
	cr_assert_eq(kvc_stat(good, "loris", 5, &e), -ENOENT, "the dribbled PUT was applied");
	cr_assert(log_has(&s, "no HELLO within 3000 ms (--hello-timeout)"));
	cr_assert(log_has(&s, "frame not completed within 2500 ms (--frame-timeout)"));
	kvc_close(later);
	kvc_close(good);
	srv_done(&s);
}

/* A pre-HELLO connection that dribbles bytes is still held to the HELLO
 * deadline; a READY client idle for a while is not closed by default. */
Test(limits, dribbling_hello_closed_idle_ready_kept, .timeout = 60)
{
	const char *extra[] = {"--hello-timeout", "3000", "--frame-timeout", "60000", NULL};
	static const uint8_t hdr[] = {0, 0, 0, 40, 1, 0x08};
	struct srv s = {0};
	struct kvc *good;
	int fd;
	uint64_t t0, conns0;
	size_t i = 0;

	srv_start_args(&s, "tcp", "64M", extra);
	good = connect_to(&s, "tcp");
	put_get(good, "x", 100, 1);
	conns0 = counter(good, "connections_total");
	fd = raw_connect(&s);
	t0 = kv_now_ms();
	while (!is_closed(fd) && kv_now_ms() - t0 < 15000) {
		if (i < sizeof(hdr))
			send(fd, hdr + i++, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		usleep(200000);
	}
	cr_assert(is_closed(fd), "a dribbling pre-HELLO connection stayed open");
	close(fd);
	/* the real client was idle about as long: it is still connected */
	cr_assert_eq(counter(good, "closed_idle"), 0);
	cr_assert_eq(counter(good, "connections_total"), conns0 + 1, "the real client reconnected");
	put_get(good, "x", 100, 2);
	kvc_close(good);
	srv_done(&s);
}

/* --idle-timeout closes an idle READY connection; the client library's next
 * call reconnects by itself. */
Test(limits, idle_timeout_client_reconnects, .timeout = 60)
{
	const char *extra[] = {"--idle-timeout", "1000", NULL};
	struct srv s = {0};
	struct kvc *kvc;
	uint64_t t0;

	srv_start_args(&s, "tcp", "64M", extra);
	kvc = connect_to(&s, "tcp");
	put_get(kvc, "x", 100, 1);
	t0 = kv_now_ms();
	while (!log_has(&s, "idle for 1000 ms (--idle-timeout)") && kv_now_ms() - t0 < 15000)
		usleep(100000);
	cr_assert(log_has(&s, "idle for 1000 ms (--idle-timeout)"), "idle client not closed");
	usleep(100000);
	/* the first call may find the connection gone; kvc reconnects */
	for (int i = 0; i < 2; i++) {
		void *b = xmalloc(100);
		ssize_t n = kvc_get(kvc, "x", 1, 0, b, 100, NULL, NULL);

		free(b);
		if (n == 100)
			break;
		cr_assert_eq(i, 0, "GET after the idle close: %zd (%s)", n, kvc_strerror());
		cr_assert_eq(n, -ECONNRESET, "GET after the idle close: %zd (%s)", n,
		             kvc_strerror());
	}
	put_get(kvc, "x", 100, 2);
	cr_assert_geq(counter(kvc, "closed_idle"), 1);
	kvc_close(kvc);
	srv_done(&s);
}

/* A client that sends GETs and never reads the answers: the server stops
 * reading it at --max-outbuf and closes it when its queued responses make no
 * progress for --frame-timeout; its memory does not grow with the requests. */
Test(limits, client_not_reading_closed, .timeout = 90)
{
	const char *extra[] = {"--max-outbuf", "64K", "--frame-timeout", "2000", NULL};
	const size_t vlen = 60000;
	struct srv s = {0};
	struct kvc *good;
	uint8_t *val = xmalloc(vlen);
	int fd, small = 4096;
	long rss0, rss1;
	uint64_t t0;
	size_t queued = 0;

	srv_start_args(&s, "tcp", "64M", extra);
	good = connect_to(&s, "tcp");
	fill(val, vlen, 3);
	cr_assert_eq(kvc_put(good, "big", 3, val, vlen, NULL, NULL), 0, "%s", kvc_strerror());
	rss0 = vmrss_kib(s.pid);

	fd = raw_connect(&s);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	raw_hello(fd, NULL, false);
	{
		Kvfs__Request rq = KVFS__REQUEST__INIT;
		Kvfs__GetRequest g = KVFS__GET_REQUEST__INIT;
		void *frame;
		size_t flen;

		g.key = bin("big");
		g.has_want_inline = g.want_inline = true;
		rq.body_case = KVFS__REQUEST__BODY_GET;
		rq.get = &g;
		/* 2,000 GETs of 60 KB each: 120 MB of answers nobody reads */
		for (int i = 0; i < 2000; i++) {
			rq.id = 100 + (uint64_t)i;
			cr_assert_eq(
			        wire_encode_alloc(WIRE_FRAME_REQUEST, &rq.base, 0, &frame, &flen),
			        0);
			if (send(fd, frame, flen, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)flen)
				queued++;
			free(frame);
		}
	}
	cr_assert_gt(queued, 100, "could not queue requests");
	t0 = kv_now_ms();
	while (counter(good, "closed_slow") == 0 && kv_now_ms() - t0 < 20000) {
		put_get(good, "meanwhile", 5000, 9);
		usleep(100000);
	}
	cr_assert_eq(counter(good, "closed_slow"), 1, "the non-reading client was not closed");
	cr_assert(log_has(&s, "queued response bytes for 2000 ms (--frame-timeout)"));
	rss1 = vmrss_kib(s.pid);
	cr_assert_lt(rss1 - rss0, 32 * 1024, "server RSS grew by %ld KiB", rss1 - rss0);
	close(fd);
	put_get(good, "after", 5000, 10);
	free(val);
	kvc_close(good);
	srv_done(&s);
}

/* ------------------------------------------------------------------ */
/* Frame size                                                          */

/* Declared lengths above the limit are refused at the header, before any
 * payload is buffered: 40 connections each push up to 4 MiB behind a
 * 2 GiB or (limit + 1) header, and the server's RSS does not grow. */
Test(limits, huge_declared_length_refused_rss_flat, .timeout = 120)
{
	const char *extra[] = {"--max-frame", "64K", NULL};
	static const uint8_t over[][5] = {
	        {0x7f, 0xff, 0xff, 0xff, 1}, /* 2 GiB */
	        {0xff, 0xff, 0xff, 0xff, 1}, /* 4 GiB */
	        {0, 1, 0, 1, 1},             /* 64 KiB + 1 */
	};
	const size_t chunk = 64 * 1024;
	uint8_t *junk = xmalloc(chunk);
	struct srv s = {0};
	struct kvc *good;
	long rss0, rss1;
	uint64_t bad0;

	srv_start_args(&s, "tcp", "64M", extra);
	good = connect_to(&s, "tcp");
	put_get(good, "keep", 50000, 4);
	bad0 = counter(good, "bad_frames");
	memset(junk, 0x5a, chunk);
	rss0 = vmrss_kib(s.pid);
	for (int i = 0; i < 40; i++) {
		int fd = raw_connect(&s);
		size_t pushed = 0;

		cr_assert_eq(send(fd, over[i % 3], 5, MSG_NOSIGNAL), 5);
		/* keep pushing payload until the server's close stops us */
		while (pushed < 4 * MIB) {
			ssize_t n = send(fd, junk, chunk, MSG_NOSIGNAL);

			if (n <= 0)
				break;
			pushed += (size_t)n;
		}
		expect_closed(fd, "declared length above --max-frame");
	}
	rss1 = vmrss_kib(s.pid);
	cr_assert_lt(rss1 - rss0, 8 * 1024, "server RSS grew by %ld KiB", rss1 - rss0);
	cr_assert_eq(counter(good, "bad_frames") - bad0, 40);
	cr_assert(log_has(&s, "frame of 2147483647 bytes exceeds the limit of 65536"));
	cr_assert(log_has(&s, "frame of 65537 bytes exceeds the limit of 65536"));
	/* a frame at the limit is fine: the client learned max_frame in HELLO */
	put_get(good, "keep", 50000, 4);
	put_get(good, "big", 3 * MIB, 5); /* above max_inline: goes by RDMA */
	free(junk);
	kvc_close(good);
	srv_done(&s);
}

/* ------------------------------------------------------------------ */
/* Keys                                                                */

static const char *const bad_keys[] = {
        "/lead", "a//b", "a//", "/", ".", "..", "a/.", "a/../b", "./a", "ctl\x01/../x",
};
/* of those, the ones that are bad as a LIST prefix too */
static const char *const bad_prefixes[] = {"/lead", "a//b", "/", "../x", "bad\xff//"};

static void expect_invalid(int fd, Kvfs__Request *rq, const char *op, const char *key)
{
	Kvfs__Response *r = raw_call(fd, rq);

	cr_assert_eq(r->status, KVFS__STATUS__INVALID,
	             "%s of a bad key (%zu bytes): status %d (%s)", op, strlen(key), r->status,
	             r->message ? r->message : "");
	cr_assert_not_null(r->message);
	cr_assert(strstr(r->message, op) && strstr(r->message, "key"), "message '%s'", r->message);
	cr_assert_eq(r->body_case, KVFS__RESPONSE__BODY__NOT_SET);
	resp_free(r);
}

/* Every key-bearing request with every bad key shape: INVALID with a
 * message saying what is wrong, the connection stays usable, STATS counts
 * them; the accepted shapes (dir/ marker, dot-files, UTF-8) work. */
Test(limits, bad_keys_refused_connection_usable, .timeout = 60)
{
	static const char *const good_keys[] = {"dir/", "dir/.hidden", "..x",
	                                        "caf\xc3\xa9 \xe2\x82\xac", "a/b/c"};
	struct srv s = {0};
	struct kvc *kvc;
	uint64_t id = 10, refused = 0;
	int fd;

	srv_start(&s, "tcp");
	kvc = connect_to(&s, "tcp");
	fd = raw_connect(&s);
	raw_hello(fd, NULL, false);
	cr_assert_eq(raw_put(fd, id++, bin("ok"), bin("v")), 0);

	for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
		ProtobufCBinaryData k = bin(bad_keys[i]);
		Kvfs__Request rq = KVFS__REQUEST__INIT;
		Kvfs__PutRequest p = KVFS__PUT_REQUEST__INIT;
		Kvfs__GetRequest g = KVFS__GET_REQUEST__INIT;
		Kvfs__StatRequest st = KVFS__STAT_REQUEST__INIT;
		Kvfs__DeleteRequest d = KVFS__DELETE_REQUEST__INIT;
		Kvfs__RenameRequest rn = KVFS__RENAME_REQUEST__INIT;
		Kvfs__SetAttrRequest sa = KVFS__SET_ATTR_REQUEST__INIT;

		p.key = k;
		p.has_value = true;
		p.value = bin("v");
		rq.id = id++;
		rq.body_case = KVFS__REQUEST__BODY_PUT;
		rq.put = &p;
		expect_invalid(fd, &rq, "PUT", bad_keys[i]);
		g.key = k;
		g.has_want_inline = g.want_inline = true;
		rq.id = id++;
		rq.body_case = KVFS__REQUEST__BODY_GET;
		rq.get = &g;
		expect_invalid(fd, &rq, "GET", bad_keys[i]);
		st.key = k;
		rq.id = id++;
		rq.body_case = KVFS__REQUEST__BODY_STAT;
		rq.stat = &st;
		expect_invalid(fd, &rq, "STAT", bad_keys[i]);
		d.key = k;
		rq.id = id++;
		rq.body_case = KVFS__REQUEST__BODY_DELETE;
		rq.delete_ = &d;
		expect_invalid(fd, &rq, "DELETE", bad_keys[i]);
		rn.src = k;
		rn.dst = bin("ok2");
		rq.id = id++;
		rq.body_case = KVFS__REQUEST__BODY_RENAME;
		rq.rename = &rn;
		expect_invalid(fd, &rq, "RENAME: source", bad_keys[i]);
		rn.src = bin("ok");
		rn.dst = k;
		rq.id = id++;
		expect_invalid(fd, &rq, "RENAME: destination", bad_keys[i]);
		sa.key = k;
		sa.has_mode = true;
		sa.mode = 0600;
		rq.id = id++;
		rq.body_case = KVFS__REQUEST__BODY_SETATTR;
		rq.setattr = &sa;
		expect_invalid(fd, &rq, "SETATTR", bad_keys[i]);
		refused += 7;
	}
	for (size_t i = 0; i < sizeof(bad_prefixes) / sizeof(bad_prefixes[0]); i++) {
		Kvfs__Request rq = KVFS__REQUEST__INIT;
		Kvfs__ListRequest l = KVFS__LIST_REQUEST__INIT;

		l.has_prefix = true;
		l.prefix = bin(bad_prefixes[i]);
		rq.id = id++;
		rq.body_case = KVFS__REQUEST__BODY_LIST;
		rq.list = &l;
		expect_invalid(fd, &rq, "LIST: prefix", bad_prefixes[i]);
		l.prefix = bin("");
		l.has_start_after = true;
		l.start_after = bin(bad_prefixes[i]);
		rq.id = id++;
		expect_invalid(fd, &rq, "LIST: start_after", bad_prefixes[i]);
		refused += 2;
	}

	/* the same connection still works, and the accepted shapes do */
	for (size_t i = 0; i < sizeof(good_keys) / sizeof(good_keys[0]); i++)
		cr_assert_eq(raw_put(fd, id++, bin(good_keys[i]), bin("")), 0, "PUT '%s'",
		             good_keys[i]);
	{
		Kvfs__Request rq = KVFS__REQUEST__INIT;
		Kvfs__ListRequest l = KVFS__LIST_REQUEST__INIT;
		Kvfs__Response *r;

		l.has_prefix = true;
		l.prefix = bin("dir/.");
		rq.id = id++;
		rq.body_case = KVFS__REQUEST__BODY_LIST;
		rq.list = &l;
		r = raw_call(fd, &rq);
		cr_assert_eq(r->status, 0, "LIST dir/.: %s", r->message ? r->message : "");
		cr_assert_eq(r->list->n_entries, 1);
		resp_free(r);
		l.prefix = bin("");
		l.has_delimiter = true;
		l.delimiter = bin("/");
		rq.id = id++;
		r = raw_call(fd, &rq);
		cr_assert_eq(r->status, 0);
		cr_assert_eq(r->list->n_common_prefixes, 2, "a/ and dir/");
		resp_free(r);
	}
	cr_assert_eq(counter(kvc, "refused_keys"), refused);

	/* the client library refuses the same keys before sending anything */
	for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
		int r = kvc_put(kvc, bad_keys[i], strlen(bad_keys[i]), "v", 1, NULL, NULL);

		cr_assert_eq(r, -EINVAL, "kvc_put of bad key #%zu: %d", i, r);
		cr_assert_not_null(strstr(kvc_strerror(), "key"), "%s", kvc_strerror());
	}
	cr_assert_eq(counter(kvc, "refused_keys"), refused, "kvc sent a bad key");
	put_get(kvc, "dir/sub/file", 10, 1);
	close(fd);
	kvc_close(kvc);
	srv_done(&s);
}

/* ------------------------------------------------------------------ */
/* RDMA descriptors                                                    */

/* GET/PUT descriptors that point outside what the client registered (a
 * forged key, an address beyond the region, a wrapping address) are
 * answered with an error; the server keeps serving this and other clients. */
Test(limits, rdma_descriptor_outside_registration_refused, .timeout = 120)
{
	const char *extra[] = {"--timeout", "3000", NULL};
	const size_t len = 64 * 1024;
	struct srv s = {0};
	struct xfer_opts xo;
	struct xfer_engine *eng;
	struct xfer_mr *mr;
	struct xfer_desc real;
	struct kvc *good;
	uint8_t addr[XFER_ADDR_MAX];
	size_t alen = sizeof(addr);
	uint8_t *val = xmalloc(len);
	uint64_t id = 10, fails0;
	int fd;
	struct {
		const char *what;
		struct xfer_desc d;
	} bad[4];

	srv_start_args(&s, "tcp", "256M", extra);
	good = connect_to(&s, "tcp");
	fill(val, len, 11);
	cr_assert_eq(kvc_put(good, "val", 3, val, len, NULL, NULL), 0, "%s", kvc_strerror());
	fails0 = counter(good, "rdma_failures");

	xfer_opts_init(&xo);
	xo.provider = "tcp";
	xo.node = "127.0.0.1";
	cr_assert_eq(xfer_open(&xo, &eng), 0);
	cr_assert_eq(xfer_addr(eng, addr, &alen), 0);
	cr_assert_eq(xfer_buf_alloc(eng, len,
	                            XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ |
	                                    XFER_ACCESS_REMOTE_WRITE,
	                            &mr),
	             0);
	xfer_mr_desc(mr, &real);
	bad[0].what = "forged key";
	bad[0].d = real;
	bad[0].d.key ^= 0x5a5a5a5a;
	bad[1].what = "address past the region";
	bad[1].d = real;
	bad[1].d.addr += 64 * MIB;
	bad[2].what = "wrapping address";
	bad[2].d = real;
	bad[2].d.addr = UINT64_MAX - 4095;
	bad[3].what = "region longer than registered";
	bad[3].d = real;
	bad[3].d.len = 64 * MIB;

	fd = raw_connect(&s);
	raw_hello(fd, eng, true);

	for (int i = 0; i < 4; i++) {
		for (int put = 0; put < 2; put++) {
			Kvfs__Request rq = KVFS__REQUEST__INIT;
			Kvfs__GetRequest g = KVFS__GET_REQUEST__INIT;
			Kvfs__PutRequest p = KVFS__PUT_REQUEST__INIT;
			struct xfer_rsge rs = {
			        .desc = bad[i].d, .off = i == 3 ? 32 * MIB : 0, .len = len};
			Kvfs__Segment **segs = wire_segs_new(&rs, 1);
			Kvfs__Response *r;

			cr_assert_not_null(segs);
			rq.id = id++;
			if (put) {
				p.key = bin("val");
				p.src = segs;
				p.n_src = 1;
				p.has_length = true;
				p.length = len;
				rq.body_case = KVFS__REQUEST__BODY_PUT;
				rq.put = &p;
			} else {
				g.key = bin("val");
				g.dst = segs;
				g.n_dst = 1;
				rq.body_case = KVFS__REQUEST__BODY_GET;
				rq.get = &g;
			}
			r = raw_call(fd, &rq);
			cr_assert_neq(r->status, 0, "%s %s was served", put ? "PUT" : "GET",
			              bad[i].what);
			cr_assert(r->status == KVFS__STATUS__IO ||
			                  r->status == KVFS__STATUS__INVALID ||
			                  r->status == KVFS__STATUS__STALE,
			          "%s %s: status %s", put ? "PUT" : "GET", bad[i].what,
			          wire_status_name(r->status));
			cr_assert_eq(r->body_case, KVFS__RESPONSE__BODY__NOT_SET);
			cr_log_info("%s from/to %s: %s (%s)", put ? "PUT" : "GET", bad[i].what,
			            wire_status_name(r->status), r->message ? r->message : "");
			resp_free(r);
			wire_segs_free(segs);
			/* others are served meanwhile, and the value is untouched */
			put_get(good, "other", 1000, (uint64_t)(i * 2 + put));
			{
				uint8_t *got = xmalloc(len);

				cr_assert_eq(kvc_get(good, "val", 3, 0, got, len, NULL, NULL),
				             (ssize_t)len);
				check_bytes(got, val, len, "val after a refused transfer");
				free(got);
			}
		}
	}
	cr_assert_gt(counter(good, "rdma_failures"), fails0);
	/* the offending connection still answers requests without RDMA */
	{
		Kvfs__Request rq = KVFS__REQUEST__INIT;
		Kvfs__StatRequest st = KVFS__STAT_REQUEST__INIT;
		Kvfs__Response *r;

		st.key = bin("val");
		rq.id = id++;
		rq.body_case = KVFS__REQUEST__BODY_STAT;
		rq.stat = &st;
		r = raw_call(fd, &rq);
		cr_assert_eq(r->status, 0, "STAT: %s", r->message ? r->message : "");
		cr_assert_eq(r->stat->entry->size, len);
		resp_free(r);
	}
	close(fd);
	xfer_mr_dereg(mr);
	xfer_close(eng);
	free(val);
	kvc_close(good);
	srv_done(&s);
}

/* ------------------------------------------------------------------ */
/* The auth token stays secret                                         */

#define TOKEN_GOOD "kvfs-SECRET-good-7f3a9c21"
#define TOKEN_BAD  "kvfs-SECRET-wrong-41d2e8b0"

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

static bool file_has(const char *path, const char *needle)
{
	char buf[65536];
	int fd = open(path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : 0;

	if (fd >= 0)
		close(fd);
	return n > 0 && memmem(buf, (size_t)n, needle, strlen(needle)) != NULL;
}

/* kv-server -v with --auth-token-file; clients with the right token, a
 * wrong one and none, with the client library logging at debug level:
 * neither token (nor its hex) appears in the server's log, the client's
 * stderr or the error text; the refusal says only that authentication
 * failed. */
Test(limits, auth_token_never_logged, .timeout = 60)
{
	char good_f[64], bad_f[64], cerr[64], hex[2 * sizeof(TOKEN_GOOD) + 1];
	const char *secrets[] = {TOKEN_GOOD, TOKEN_BAD, "SECRET", hex};
	struct srv s = {0};
	struct kvc_opts o;
	struct kvc *ok, *no = NULL;
	char msg_bad[512], msg_none[512];
	int r, saved, cfd;

	snprintf(good_f, sizeof(good_f), "/tmp/kvfs-lim-token-%d", (int)getpid());
	snprintf(bad_f, sizeof(bad_f), "/tmp/kvfs-lim-token-bad-%d", (int)getpid());
	snprintf(cerr, sizeof(cerr), "/tmp/kvfs-lim-client-err-%d", (int)getpid());
	write_file(good_f, TOKEN_GOOD "\n");
	write_file(bad_f, TOKEN_BAD "\n");
	for (size_t i = 0; i < strlen(TOKEN_GOOD); i++)
		snprintf(hex + 2 * i, 3, "%02x", (unsigned char)TOKEN_GOOD[i]);
	const char *extra[] = {"--auth-token-file", good_f, "-v", NULL};
	srv_start_args(&s, "tcp", "64M", extra);

	/* the client side: its library logs to our stderr, captured */
	kv_log_level = KV_LOG_DEBUG;
	fflush(stderr);
	saved = dup(2);
	cfd = open(cerr, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(cfd, 0);
	dup2(cfd, 2);
	close(cfd);

	ok = connect_opts(&s, "tcp", 10000, good_f);
	put_get(ok, "authed", 100000, 3);
	kvc_opts_init(&o);
	o.server = s.addr;
	o.provider = "tcp";
	o.timeout_ms = 10000;
	o.auth_token_file = bad_f;
	r = kvc_connect(&o, &no);
	snprintf(msg_bad, sizeof(msg_bad), "%s", kvc_strerror());
	cr_assert_eq(r, -EACCES, "wrong token: %d %s", r, msg_bad);
	o.auth_token_file = NULL;
	r = kvc_connect(&o, &no);
	snprintf(msg_none, sizeof(msg_none), "%s", kvc_strerror());
	cr_assert_eq(r, -EACCES, "no token: %d %s", r, msg_none);

	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	kv_log_level = KV_LOG_INFO;

	cr_assert_not_null(strstr(msg_bad, "authentication failed"), "wrong token: '%s'", msg_bad);
	cr_assert_null(strstr(msg_bad, "proof"), "the refusal says why in detail: '%s'", msg_bad);
	cr_assert_geq(counter(ok, "auth_failures"), 1);
	kvc_close(ok);
	srv_stop(&s);
	cr_assert(log_has(&s, "authentication failed"), "the server did not log the refusal");
	cr_assert(log_has(&s, "hello from"), "no debug/info log at all?");
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
		cr_assert(!log_has(&s, secrets[i]), "server log holds '%s'", secrets[i]);
		cr_assert(!file_has(cerr, secrets[i]), "client stderr holds '%s'", secrets[i]);
		cr_assert_null(strstr(msg_bad, secrets[i]));
		cr_assert_null(strstr(msg_none, secrets[i]));
	}
	unlink(good_f);
	unlink(bad_f);
	unlink(cerr);
	unlink(s.log);
}
