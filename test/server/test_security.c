/* SPDX-License-Identifier: MIT */
/*
 * Attacks on kvfs's trust boundaries (issue 21), each tried as an attacker
 * would with real processes: an impostor server, a client naming someone
 * else's engine, a client naming the server's own, a foreign /dev/shm
 * object as an engine address.  Each test failed before its fix.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "kvfs/util.h"
#include "kvfs/wire.h"
#include "kvfs/xfer.h"
#include "srv_proc.h"

#define TOKEN "a-test-token-of-32-bytes-length!"

static void write_token(char *path, size_t cap)
{
	int fd;

	snprintf(path, cap, "/tmp/kvfs-test-sec-token-%d", (int)getpid());
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, TOKEN, strlen(TOKEN)), (ssize_t)strlen(TOKEN));
	close(fd);
}

/* ------------------------------------------------------------------ */
/* An impostor: a server that never asks for the token                 */
/* ------------------------------------------------------------------ */

struct impostor {
	int lfd;
	uint16_t port;
	pthread_t thr;
	atomic_int puts; /* PUT requests it received (values it was given) */
	atomic_int gets; /* GET requests it answered with forged bytes */
	atomic_int stop;
};

static int send_frame(int fd, enum wire_frame_type t, const ProtobufCMessage *m)
{
	void *buf;
	size_t len;
	int r = wire_encode_alloc(t, m, 0, &buf, &len);

	if (r)
		return r;
	r = send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -EIO;
	free(buf);
	return r;
}

static int recv_all(int fd, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t n = recv(fd, (char *)buf + got, len - got, 0);

		if (n <= 0)
			return -EIO;
		got += (size_t)n;
	}
	return 0;
}

/* Answer one client like a real server would, minus the authentication. */
static void impostor_serve(struct impostor *im, int fd)
{
	Kvfs__ServerHello sh = KVFS__SERVER_HELLO__INIT;
	struct timeval tv = {.tv_sec = 10};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	sh.min_version = WIRE_VERSION_MIN;
	sh.max_version = WIRE_VERSION_MAX;
	sh.server_id = "impostor";
	if (send_frame(fd, WIRE_FRAME_SERVER_HELLO, &sh.base))
		return;
	while (!atomic_load(&im->stop)) {
		uint8_t hdr[WIRE_HDR_LEN], *payload;
		enum wire_frame_type t;
		size_t plen;
		struct wire_msg m;
		Kvfs__Response resp = KVFS__RESPONSE__INIT;
		Kvfs__HelloResponse hr = KVFS__HELLO_RESPONSE__INIT;
		Kvfs__PutResponse pr = KVFS__PUT_RESPONSE__INIT;
		Kvfs__GetResponse gr = KVFS__GET_RESPONSE__INIT;
		static uint8_t forged[] = "forged bytes";

		if (recv_all(fd, hdr, sizeof(hdr)) ||
		    wire_hdr_parse(hdr, 0, WIRE_ACCEPT_SERVER, &t, &plen))
			return;
		payload = malloc(plen);
		if (!payload || recv_all(fd, payload, plen) ||
		    wire_payload_decode(t, payload, plen, &m)) {
			free(payload);
			return;
		}
		free(payload);
		resp.id = m.req->id;
		switch (m.req->body_case) {
		case KVFS__REQUEST__BODY_HELLO:
			hr.version = WIRE_VERSION_MAX;
			hr.max_frame = 16 << 20;
			hr.max_value = 1 << 30;
			hr.chunk_size = 1 << 20;
			hr.has_max_inline = true;
			hr.max_inline = 1 << 20;
			hr.has_rdma = true;
			hr.rdma = false;
			resp.body_case = KVFS__RESPONSE__BODY_HELLO;
			resp.hello = &hr;
			break;
		case KVFS__REQUEST__BODY_PUT:
			atomic_fetch_add(&im->puts, 1);
			pr.version = 1;
			resp.body_case = KVFS__RESPONSE__BODY_PUT;
			resp.put = &pr;
			break;
		case KVFS__REQUEST__BODY_GET:
			atomic_fetch_add(&im->gets, 1);
			gr.bytes = sizeof(forged) - 1;
			gr.size = sizeof(forged) - 1;
			gr.version = 1;
			gr.has_data = true;
			gr.data.data = forged;
			gr.data.len = sizeof(forged) - 1;
			resp.body_case = KVFS__RESPONSE__BODY_GET;
			resp.get = &gr;
			break;
		default:
			resp.has_status = true;
			resp.status = KVFS__STATUS__UNSUPPORTED;
			break;
		}
		wire_msg_free(&m);
		if (send_frame(fd, WIRE_FRAME_RESPONSE, &resp.base))
			return;
	}
}

static void *impostor_main(void *arg)
{
	struct impostor *im = arg;

	while (!atomic_load(&im->stop)) {
		int fd = accept(im->lfd, NULL, NULL);

		if (fd < 0)
			continue;
		impostor_serve(im, fd);
		close(fd);
	}
	return NULL;
}

static void impostor_start(struct impostor *im)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
	int one = 1;

	memset(im, 0, sizeof(*im));
	im->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(im->lfd, 0);
	setsockopt(im->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(im->lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)); /* accept wakes to stop */
	cr_assert_eq(bind(im->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(im->lfd, (struct sockaddr *)&a, &len), 0);
	cr_assert_eq(listen(im->lfd, 8), 0);
	im->port = ntohs(a.sin_port);
	cr_assert_eq(pthread_create(&im->thr, NULL, impostor_main, im), 0);
}

static void impostor_stop(struct impostor *im)
{
	atomic_store(&im->stop, 1);
	pthread_join(im->thr, NULL);
	close(im->lfd);
}

/*
 * A client holding a token refuses a server that never asked for it: the
 * impostor receives no value and hands back no forged bytes, and the error
 * says why.  Before, the client went on without authentication: its PUT
 * reached the impostor and its GET returned the forged bytes.
 */
Test(security, impostor_gets_nothing, .timeout = 60)
{
	struct impostor im;
	struct kvc_opts o;
	struct kvc *kvc = NULL;
	char tok[64], addr[32];
	int r;

	write_token(tok, sizeof(tok));
	impostor_start(&im);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", im.port);
	kvc_opts_init(&o);
	o.server = addr;
	o.provider = "none";
	o.timeout_ms = 5000;
	o.auth_token_file = tok;
	r = kvc_connect(&o, &kvc);
	if (r == 0) { /* what the fix prevents: show the damage */
		char buf[64];
		ssize_t n;

		kvc_put(kvc, "k", 1, "secret", 6, NULL, NULL);
		n = kvc_get(kvc, "k", 1, 0, buf, sizeof(buf), NULL, NULL);
		kvc_close(kvc);
		cr_expect_fail("connected to a server that never asked for the token (GET gave %zd "
		               "bytes)",
		               n);
	}
	cr_expect_eq(r, -EACCES, "kvc_connect: %d (%s)", r, kvc_strerror());
	cr_expect(strstr(kvc_strerror(), "did not ask") != NULL, "message: %s", kvc_strerror());
	impostor_stop(&im);
	cr_expect_eq(atomic_load(&im.puts), 0, "the impostor received %d values", im.puts);
	cr_expect_eq(atomic_load(&im.gets), 0, "the impostor answered %d reads", im.gets);
	unlink(tok);
}

/* ------------------------------------------------------------------ */
/* Hostile engine addresses in HELLO                                   */
/* ------------------------------------------------------------------ */

/* What a raw HELLO says about the engine it names. */
struct raw_engine {
	const char *provider;
	const void *addr; /* the engine address named */
	size_t alen;
	bool proof;            /* send engine_proof + engine_nonce */
	struct xfer_desc desc; /* the proof region claimed */
};

/* Send HELLO on a raw connection (its ServerHello already read, no auth)
 * naming @e's engine (NULL: none); return the response's status, and
 * *ret_rdma and the server's engine address (@srv_addr, may be NULL, room
 * for XFER_ADDR_MAX; *ret_slen), or -EIO when the connection died. */
static int raw_hello(int fd, const struct raw_engine *e, bool *ret_rdma, uint8_t *srv_addr,
                     size_t *ret_slen)
{
	Kvfs__Request rq = KVFS__REQUEST__INIT;
	Kvfs__HelloRequest h = KVFS__HELLO_REQUEST__INIT;
	Kvfs__Segment seg = KVFS__SEGMENT__INIT;
	Kvfs__Desc desc = KVFS__DESC__INIT;
	uint8_t hdr[WIRE_HDR_LEN], *payload, nonce[WIRE_ENGINE_NONCE_LEN];
	struct timeval tv = {.tv_sec = 30}; /* the server's transfer deadline and more */
	enum wire_frame_type t;
	struct wire_msg m;
	size_t plen;
	int st;

	h.min_version = WIRE_VERSION_MIN;
	h.max_version = WIRE_VERSION_MAX;
	if (e) {
		h.provider = (char *)e->provider;
		h.has_engine_addr = true;
		h.engine_addr.data = (uint8_t *)e->addr;
		h.engine_addr.len = e->alen;
	}
	if (e && e->proof) {
		memset(nonce, 0x42, sizeof(nonce));
		desc.addr = e->desc.addr;
		desc.len = e->desc.len;
		desc.key = e->desc.key;
		seg.desc = &desc;
		seg.length = WIRE_ENGINE_NONCE_LEN;
		h.engine_proof = &seg;
		h.has_engine_nonce = true;
		h.engine_nonce.data = nonce;
		h.engine_nonce.len = sizeof(nonce);
	}
	h.has_pid = true;
	h.pid = (uint32_t)getpid();
	rq.id = 1;
	rq.body_case = KVFS__REQUEST__BODY_HELLO;
	rq.hello = &h;
	if (send_frame(fd, WIRE_FRAME_REQUEST, &rq.base))
		return -EIO;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (recv_all(fd, hdr, sizeof(hdr)) || wire_hdr_parse(hdr, 0, WIRE_ACCEPT_CLIENT, &t, &plen))
		return -EIO;
	payload = malloc(plen);
	cr_assert_not_null(payload);
	if (recv_all(fd, payload, plen) || wire_payload_decode(t, payload, plen, &m)) {
		free(payload);
		return -EIO;
	}
	free(payload);
	cr_assert_eq(m.type, WIRE_FRAME_RESPONSE);
	st = m.resp->has_status ? m.resp->status : 0;
	*ret_rdma = st == 0 && m.resp->hello && m.resp->hello->has_rdma && m.resp->hello->rdma;
	if (srv_addr && st == 0 && m.resp->hello && m.resp->hello->has_engine_addr) {
		cr_assert_leq(m.resp->hello->engine_addr.len, XFER_ADDR_MAX);
		memcpy(srv_addr, m.resp->hello->engine_addr.data, m.resp->hello->engine_addr.len);
		*ret_slen = m.resp->hello->engine_addr.len;
	}
	wire_msg_free(&m);
	return st;
}

/* A server whose transfers (an engine proof among them) end within 3 s,
 * well inside raw_hello()'s wait. */
static void start_short(struct srv *s, const char *provider)
{
	static const char *const extra[] = {"--timeout", "3000", NULL};

	srv_start_args(s, provider, NULL, extra);
}

/* kv-server is alive and serves a normal client over @provider. */
/* @kvc stores a 256 KiB value (beyond inline: by RDMA when it has RDMA)
 * under @key and reads the same bytes back. */
static void roundtrip(struct kvc *kvc, const char *key, uint64_t seed, const char *what)
{
	char big[256 << 10], back[sizeof(big)];

	fill(big, sizeof(big), seed);
	cr_assert_eq(kvc_put(kvc, key, strlen(key), big, sizeof(big), NULL, NULL), 0, "%s: put: %s",
	             what, kvc_strerror());
	cr_assert_eq(kvc_get(kvc, key, strlen(key), 0, back, sizeof(back), NULL, NULL),
	             (ssize_t)sizeof(back), "%s: get: %s", what, kvc_strerror());
	check_bytes(back, big, sizeof(big), what);
}

static void still_serves(struct srv *s, const char *provider)
{
	struct kvc *kvc = connect_to(s, provider);

	roundtrip(kvc, "after", 7, "value after the attack");
	kvc_close(kvc);
}

/*
 * A HELLO naming a /dev/shm object that is no libfabric region, or no
 * region at all, as its shm engine: the server refuses RDMA for that
 * connection and keeps serving.  Before, libfabric mapped the object and
 * kv-server died of SIGSEGV in fi_av_insert.
 */
Test(security, foreign_shm_object_as_engine, .timeout = 120)
{
	struct srv s = {0};
	char name[64], addr[80], path[96];
	bool rdma = true;
	int fd, obj;
	uint8_t junk[8192];

	start_short(&s, "shm");
	snprintf(name, sizeof(name), "%d:0:4242", (int)getpid());
	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	obj = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(obj, 0);
	memset(junk, 0xff, sizeof(junk));
	cr_assert_eq(write(obj, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(obj);
	snprintf(addr, sizeof(addr), "fi_shm://%s", name);

	struct raw_engine e = {.provider = "shm", .addr = addr, .alen = strlen(addr) + 1};

	fd = raw_connect(&s);
	cr_expect_eq(raw_hello(fd, &e, &rdma, NULL, NULL), 0);
	cr_expect_not(rdma, "RDMA granted to a foreign /dev/shm object");
	close(fd);
	unlink(path);

	snprintf(addr, sizeof(addr), "fi_shm://%d:0:4343", (int)getpid());
	e.alen = strlen(addr) + 1;
	fd = raw_connect(&s);
	cr_expect_eq(raw_hello(fd, &e, &rdma, NULL, NULL), 0);
	cr_expect_not(rdma, "RDMA granted to a region that does not exist");
	close(fd);

	still_serves(&s, "shm");
	srv_done(&s);
}

/* A client that proves its engine gets RDMA (the proof costs no RDMA). */
static void rdma_granted(const char *provider)
{
	struct srv s = {0};
	struct kvc *kvc;
	struct kvc_limits lim;

	start_short(&s, provider);
	kvc = connect_to(&s, provider);
	kvc_limits(kvc, &lim);
	cr_expect(lim.rdma, "a client proving its own engine got no RDMA over %s", provider);
	kvc_close(kvc);
	still_serves(&s, provider);
	srv_done(&s);
}

Test(security, rdma_granted_to_a_proven_engine_tcp, .timeout = 120)
{
	rdma_granted("tcp");
}
Test(security, rdma_granted_to_a_proven_engine_shm, .timeout = 120)
{
	rdma_granted("shm");
}

/*
 * Confused deputy: a client names another client's engine in its HELLO.
 * The server must not take that engine as the attacker's peer: the
 * attacker cannot prove it (it knows no key of the victim's regions), so
 * it gets no RDMA, and cannot make the server read the victim's buffers
 * into its PUTs or write values into them with its GETs.  Before, the
 * server added the victim's engine for the attacker's connection.
 */
static void deputy(const char *provider)
{
	struct srv s = {0};
	struct kvc *victim;
	struct kvc_limits lim;
	uint8_t addr[XFER_ADDR_MAX];
	size_t alen = sizeof(addr);
	bool rdma = true;
	int fd;

	start_short(&s, provider);
	victim = connect_to(&s, provider);
	kvc_limits(victim, &lim);
	cr_assert(lim.rdma);
	cr_assert_eq(xfer_addr(kvc_engine(victim), addr, &alen), 0);

	struct raw_engine e = {.provider = lim.server_provider, .addr = addr, .alen = alen};

	fd = raw_connect(&s); /* no proof at all */
	cr_expect_eq(raw_hello(fd, &e, &rdma, NULL, NULL), 0);
	cr_expect_not(rdma, "RDMA granted on another client's engine without a proof");
	close(fd);
	for (uint64_t key = 0; key < 4; key++) { /* guessed proofs */
		int st;

		e.proof = true;
		e.desc = (struct xfer_desc){.addr = 0, .len = 4096, .key = key};
		fd = raw_connect(&s);
		/* Answered inline only, or refused: tcp's engine drops the
		 * connection that carried a read with a key it does not know,
		 * which the server cannot tell from a cut link. */
		st = raw_hello(fd, &e, &rdma, NULL, NULL);
		cr_expect(st == 0 || st == KVFS__STATUS__IO,
		          "HELLO with a guessed proof: status %d", st);
		cr_expect_not(rdma, "RDMA granted on another client's engine (key %llu)",
		              (unsigned long long)key);
		close(fd);
	}
	roundtrip(victim, "v", 9, "the victim's value"); /* served as before */
	kvc_close(victim);
	srv_done(&s);
}

Test(security, deputy_tcp, .timeout = 120)
{
	deputy("tcp");
}
Test(security, deputy_shm, .timeout = 120)
{
	deputy("shm");
}

/*
 * A client names kv-server's own engine: the server would read and write
 * its own memory (its heap, the token) for the client.  Refused, with or
 * without a proof.  Before, the server added itself as the client's peer.
 */
static void self_peer(const char *provider)
{
	struct srv s = {0};
	uint8_t saddr[XFER_ADDR_MAX];
	size_t slen = 0;
	bool rdma = true;
	int fd;

	start_short(&s, provider);
	fd = raw_connect(&s);
	cr_assert_eq(raw_hello(fd, NULL, &rdma, saddr, &slen), 0);
	close(fd);
	cr_assert_gt(slen, 0, "no engine address in the server's answer");

	struct raw_engine e = {.provider = NULL,
	                       .addr = saddr,
	                       .alen = slen,
	                       .proof = true,
	                       .desc = {.addr = 0, .len = 1 << 20, .key = 1}};
	struct kvc *kvc = connect_to(&s, provider);
	struct kvc_limits lim;

	kvc_limits(kvc, &lim);
	kvc_close(kvc);
	e.provider = lim.server_provider;
	fd = raw_connect(&s);
	cr_expect_eq(raw_hello(fd, &e, &rdma, NULL, NULL), 0);
	cr_expect_not(rdma, "RDMA granted on the server's own engine");
	close(fd);
	still_serves(&s, provider);
	srv_done(&s);
}

Test(security, self_peer_tcp, .timeout = 120)
{
	self_peer("tcp");
}
Test(security, self_peer_shm, .timeout = 120)
{
	self_peer("shm");
}

/*
 * Over shm an engine address names a process.  A client names another
 * process's engine (here a child of the test that opened one and waits):
 * refused, whatever proof it claims, since that process does not hold the
 * client's connection.
 */
Test(security, shm_engine_of_another_process, .timeout = 120)
{
	struct srv s = {0};
	uint8_t addr[XFER_ADDR_MAX];
	size_t alen = 0;
	int pfd[2], st;
	bool rdma = true;
	pid_t child;

	start_short(&s, "shm");
	cr_assert_eq(pipe(pfd), 0);
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		struct xfer_opts o;
		struct xfer_engine *eng;
		uint8_t a[XFER_ADDR_MAX];
		size_t l = sizeof(a);

		close(pfd[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		xfer_opts_init(&o);
		o.provider = "shm";
		if (xfer_open(&o, &eng) || xfer_addr(eng, a, &l))
			_exit(1);
		if (write(pfd[1], &l, sizeof(l)) != sizeof(l) || write(pfd[1], a, l) != (ssize_t)l)
			_exit(1);
		pause();
		_exit(0);
	}
	close(pfd[1]);
	cr_assert_eq(read(pfd[0], &alen, sizeof(alen)), (ssize_t)sizeof(alen));
	cr_assert_leq(alen, sizeof(addr));
	cr_assert_eq(read(pfd[0], addr, alen), (ssize_t)alen);
	close(pfd[0]);

	struct kvc *kvc = connect_to(&s, "shm");
	struct kvc_limits lim;

	kvc_limits(kvc, &lim);
	kvc_close(kvc);

	struct raw_engine e = {.provider = lim.server_provider,
	                       .addr = addr,
	                       .alen = alen,
	                       .proof = true,
	                       .desc = {.addr = 0, .len = 4096, .key = 0}};
	int fd = raw_connect(&s);

	cr_expect_eq(raw_hello(fd, &e, &rdma, NULL, NULL), 0);
	cr_expect_not(rdma, "RDMA granted on the engine of another process");
	close(fd);
	kill(child, SIGKILL);
	waitpid(child, &st, 0);
	still_serves(&s, "shm");
	srv_done(&s);
}

/* ------------------------------------------------------------------ */
/* Memory: keys and items count                                        */
/* ------------------------------------------------------------------ */

/* Resident memory of process @pid, bytes (VmRSS). */
static uint64_t rss_of(pid_t pid)
{
	char path[64], line[256];
	unsigned long long kb = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

/*
 * 60,000 PUTs of empty values under 1000-byte keys on a 64 MiB server
 * with an 8 MiB index budget: old keys are evicted, the index stays within
 * its budget, the server's resident memory grows by less than the keys'
 * bytes would take, and the newest value reads back.  Before, empty values
 * took no arena space, nothing was evicted, and the server grew without
 * bound (2,000,000 such PUTs: 2.27 GB, then the OOM killer).
 */
Test(security, empty_value_flood_stays_within_budget, .timeout = 300)
{
	static const char *const extra[] = {"--max-meta", "8M", NULL};
	char key[1000], asan[512];
	struct srv s = {0};
	struct kvc *kvc;
	uint64_t rss0, rss1, meta;
	struct kvc_entry e;
	const char *a = getenv("ASAN_OPTIONS");

	/* ASan keeps freed memory in quarantine (256 MB): the evicted keys'
	 * memory must be seen to come back. */
	snprintf(asan, sizeof(asan), "%s%squarantine_size_mb=1", a ? a : "", a ? ":" : "");
	setenv("ASAN_OPTIONS", asan, 1);
	srv_start_args(&s, "none", "64M", extra);
	if (a)
		setenv("ASAN_OPTIONS", a, 1);
	kvc = connect_to(&s, "none");
	memset(key, 'k', sizeof(key));
	for (int i = 0; i < 2000; i++) { /* warm up: the allocator's pools */
		snprintf(key, 16, "w%014d", i);
		key[15] = 'k';
		cr_assert_eq(kvc_put(kvc, key, sizeof(key), "", 0, NULL, NULL), 0, "%s",
		             kvc_strerror());
	}
	rss0 = rss_of(s.pid);
	for (int i = 0; i < 60000; i++) {
		snprintf(key, 16, "%015d", i);
		key[15] = 'k';
		cr_assert_eq(kvc_put(kvc, key, sizeof(key), "", 0, NULL, NULL), 0, "PUT %d: %s", i,
		             kvc_strerror());
	}
	rss1 = rss_of(s.pid);
	meta = counter(kvc, "meta_bytes");
	cr_expect_leq(meta, 8 * MIB + 2 * MIB, "index of %llu bytes past its 8 MiB budget",
	              (unsigned long long)meta);
	cr_expect_gt(counter(kvc, "meta_evictions"), 0, "nothing evicted for the index");
	cr_expect_lt(rss1 - KV_MIN(rss1, rss0), 32 * MIB,
	             "server grew by %llu MiB for 60,000 keys (%llu MiB of key bytes)",
	             (unsigned long long)((rss1 - KV_MIN(rss1, rss0)) / MIB),
	             (unsigned long long)(60000ULL * sizeof(key) / MIB));
	snprintf(key, 16, "%015d", 59999);
	key[15] = 'k';
	cr_expect_eq(kvc_stat(kvc, key, sizeof(key), &e), 0, "the newest key is gone: %s",
	             kvc_strerror());
	kvc_close(kvc);
	srv_done(&s);
}

/*
 * Guessing the token: each failed proof from one host is answered later
 * than the one before (to 2 s), so 8 wrong guesses in a row take seconds
 * where they took milliseconds (7,100 a second before); a client with the
 * right token is answered at once.
 */
Test(security, failed_proofs_back_off, .timeout = 120)
{
	char tok[64], bad[64];
	struct srv s = {0};
	struct kvc_opts o;
	struct kvc *kvc = NULL;
	uint64_t t0, took;
	int fd;

	write_token(tok, sizeof(tok));
	snprintf(bad, sizeof(bad), "/tmp/kvfs-test-sec-bad-%d", (int)getpid());
	fd = open(bad, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "a-wrong-guess-of-the-token", 26), 26);
	close(fd);
	const char *extra[] = {"--auth-token-file", tok, NULL};
	srv_start_args(&s, "none", "64M", extra);
	kvc_opts_init(&o);
	o.server = s.addr;
	o.provider = "none";
	o.timeout_ms = 10000;
	o.auth_token_file = bad;
	t0 = kv_now_ms();
	for (int i = 0; i < 8; i++)
		cr_assert_eq(kvc_connect(&o, &kvc), -EACCES, "guess %d: %s", i, kvc_strerror());
	took = kv_now_ms() - t0;
	cr_expect_geq(took, 4000, "8 wrong proofs answered in %llu ms: no back-off",
	              (unsigned long long)took);
	o.auth_token_file = tok;
	cr_assert_eq(kvc_connect(&o, &kvc), 0, "the right token after the guesses: %s",
	             kvc_strerror());
	cr_expect_eq(counter(kvc, "auth_failures"), 8);
	kvc_close(kvc);
	srv_done(&s);
	unlink(bad);
	unlink(tok);
}
