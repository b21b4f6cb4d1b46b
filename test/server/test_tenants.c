/* SPDX-License-Identifier: MIT */
/*
 * Tenants (kv-server --tenants, issue 21): two tenants with tokens of their
 * own on one real kv-server, "alice" under alice/ with a 1 MiB quota and
 * "bob" under team/bob/ without one, and the whole namespace's token.
 * Neither tenant can name, list, rename into or out of, or learn of the
 * other's keys, through kvc or raw requests that skip the client's checks;
 * the whole namespace sees both under their prefixes; a quota refuses past
 * it and keeps what is stored; a bad tenants file stops kv-server with
 * FILE:LINE.  Before --tenants, every token holder saw every key.
 */
#include <sys/stat.h>

#include "kvfs/token.h"
#include "kvfs/util.h"
#include "kvfs/wire.h"
#include "kvfs/wire_auth.h"
#include "srv_proc.h"

#define KEY_CHARGE                                                                                 \
	128 /* bytes a quota charges a key beyond its value and name                               \
	     * (STORE_NS_KEY_CHARGE) */

/* The fixture's files, in a directory of the test's own. */
struct fx {
	char dir[64];
	char admin[96], alice[96], bob[96], conf[96];
	struct srv s;
};

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	chmod(path, mode);
}

static void fx_files(struct fx *f)
{
	snprintf(f->dir, sizeof(f->dir), "/tmp/kvfs-test-tenants-%d", (int)getpid());
	mkdir(f->dir, 0700);
	snprintf(f->admin, sizeof(f->admin), "%s/admin.token", f->dir);
	snprintf(f->alice, sizeof(f->alice), "%s/alice.token", f->dir);
	snprintf(f->bob, sizeof(f->bob), "%s/bob.token", f->dir);
	snprintf(f->conf, sizeof(f->conf), "%s/tenants", f->dir);
	write_file(f->admin, "the-whole-namespace-token-0123456789\n", 0600);
	write_file(f->alice, "alice-s-own-token-0123456789abcdef\n", 0600);
	write_file(f->bob, "bob-s-own-token-0123456789abcdefgh\n", 0600);
	write_file(f->conf,
	           "# name  token        prefix     quota\n"
	           "alice   alice.token  alice/     1M\n"
	           "\n"
	           "bob     bob.token    team/bob/  none   # no quota\n",
	           0644);
}

static void fx_rm(struct fx *f)
{
	unlink(f->admin);
	unlink(f->alice);
	unlink(f->bob);
	unlink(f->conf);
	rmdir(f->dir);
}

/* A failed assertion ends a test before fx_done(): its files go here. */
static void fx_cleanup(void)
{
	static const char *const names[] = {"admin.token", "alice.token", "bob.token",
	                                    "short.token", "tenants",     "log"};
	char path[128];

	for (size_t i = 0; i < KV_ARRAY_SIZE(names); i++) {
		snprintf(path, sizeof(path), "/tmp/kvfs-test-tenants-%d/%s", (int)getpid(),
		         names[i]);
		unlink(path);
	}
	snprintf(path, sizeof(path), "/tmp/kvfs-test-tenants-%d", (int)getpid());
	rmdir(path);
}

TestSuite(tenants, .fini = fx_cleanup);

static void fx_start(struct fx *f, const char *provider)
{
	const char *extra[] = {"--auth-token-file", f->admin, "--tenants", f->conf, NULL};

	fx_files(f);
	srv_start_args(&f->s, provider, "64M", extra);
}

static void fx_done(struct fx *f)
{
	srv_done(&f->s);
	fx_rm(f);
}

static struct kvc *as(struct fx *f, const char *token_file)
{
	return connect_opts(&f->s, f->s.provider, 20000, token_file);
}

static void put_str(struct kvc *kvc, const char *key, const char *val)
{
	cr_assert_eq(kvc_put(kvc, key, strlen(key), val, strlen(val), NULL, NULL), 0, "PUT %s: %s",
	             key, kvc_strerror());
}

/* @key holds @val for @kvc. */
static void expect_value(struct kvc *kvc, const char *key, const char *val, const char *who)
{
	char buf[256];
	ssize_t n = kvc_get(kvc, key, strlen(key), 0, buf, sizeof(buf), NULL, NULL);

	cr_assert_eq(n, (ssize_t)strlen(val), "%s: GET %s: %zd (%s)", who, key, n, kvc_strerror());
	cr_assert_eq(memcmp(buf, val, (size_t)n), 0, "%s: GET %s: other bytes", who, key);
}

/* Every key @kvc lists from the start, paging @page at a time, joined by
 * spaces (prefixes with a trailing '/' when @delim). */
static void list_all(struct kvc *kvc, const char *prefix, bool delim, uint32_t page, char *out,
                     size_t cap)
{
	char *after = NULL;

	out[0] = '\0';
	for (int pages = 0; pages < 100; pages++) {
		struct kvc_list l;

		cr_assert_eq(kvc_list(kvc, prefix, delim ? "/" : NULL, after, page, &l), 0,
		             "LIST: %s", kvc_strerror());
		for (size_t i = 0; i < l.n_entries; i++) {
			cr_assert_gt(l.entries[i].keylen, 0, "an entry with an empty name");
			snprintf(out + strlen(out), cap - strlen(out), "%s%s", *out ? " " : "",
			         l.entries[i].key);
		}
		for (size_t i = 0; i < l.n_prefixes; i++)
			snprintf(out + strlen(out), cap - strlen(out), "%s[%s]", *out ? " " : "",
			         l.prefixes[i]);
		free(after);
		after = l.next_start_after ? strdup(l.next_start_after) : NULL;
		if (after)
			cr_assert_neq(strncmp(after, "alice/", 6), 0, "a cursor names the prefix");
		kvc_list_free(&l);
		if (!after)
			return;
	}
	cr_assert_fail("LIST did not end");
}

/*
 * Each tenant stores, reads and lists its own keys, under the same names;
 * neither can GET, STAT, SETATTR, DELETE, RENAME or LIST the other's: in
 * its namespace they do not exist.  A rename "into" the other's prefix
 * lands inside its own.  Before, both tokens were one namespace: alice
 * read bob's "team/bob/x" and listed every key.
 */
static void cannot_see_each_other(const char *provider)
{
	struct fx f = {0};
	struct kvc *alice, *bob, *admin;
	struct kvc_entry e;
	char names[1024];

	fx_start(&f, provider);
	alice = as(&f, f.alice);
	bob = as(&f, f.bob);
	admin = as(&f, f.admin);
	put_str(alice, "x", "alice's x");
	put_str(alice, "dir/y", "alice's y");
	put_str(bob, "x", "bob's x");
	put_str(bob, "secret", "bob's secret");
	put_str(admin, "alice/", ""); /* a marker for alice's root: never an empty name */
	put_str(admin, "top", "nobody's");
	expect_value(alice, "x", "alice's x", "alice");
	expect_value(bob, "x", "bob's x", "bob");
	if (strcmp(provider, "none")) { /* by RDMA, both ways */
		char big[256 << 10], back[sizeof(big)];

		fill(big, sizeof(big), 5);
		cr_assert_eq(kvc_put(alice, "big", 3, big, sizeof(big), NULL, NULL), 0, "%s",
		             kvc_strerror());
		cr_assert_eq(kvc_get(alice, "big", 3, 0, back, sizeof(back), NULL, NULL),
		             (ssize_t)sizeof(back), "%s", kvc_strerror());
		check_bytes(back, big, sizeof(big), "alice's big value");
		cr_expect_eq(kvc_get(bob, "big", 3, 0, back, sizeof(back), NULL, NULL), -ENOENT);
		cr_assert_eq(kvc_get(admin, "alice/big", 9, 0, back, sizeof(back), NULL, NULL),
		             (ssize_t)sizeof(back), "%s", kvc_strerror());
		check_bytes(back, big, sizeof(big), "alice's big value, read by the admin");
		cr_assert_eq(kvc_delete(alice, "big", 3, 0), 0);
	}

	list_all(alice, NULL, false, 1000, names, sizeof(names));
	cr_expect_str_eq(names, "dir/y x");
	list_all(alice, NULL, false, 1, names, sizeof(names));
	cr_expect_str_eq(names, "dir/y x", "paged one at a time");
	list_all(alice, "", true, 1000, names, sizeof(names));
	cr_expect_str_eq(names, "x [dir/]");
	list_all(bob, NULL, false, 1000, names, sizeof(names));
	cr_expect_str_eq(names, "secret x");

	/* bob's keys by every name alice could try */
	static const char *const theirs[] = {"secret", "team/bob/secret", "team/bob/x", "top",
	                                     "alice/x"};
	for (size_t i = 0; i < KV_ARRAY_SIZE(theirs); i++) {
		const char *k = theirs[i];
		char buf[64];

		cr_expect_eq(kvc_get(alice, k, strlen(k), 0, buf, sizeof(buf), NULL, NULL), -ENOENT,
		             "alice read %s", k);
		cr_expect_eq(kvc_stat(alice, k, strlen(k), &e), -ENOENT, "alice saw %s", k);
		cr_expect_eq(
		        kvc_setattr(alice, k, strlen(k),
		                    &(struct kvc_setattr_opts){.set = KVC_SET_MODE, .mode = 0777},
		                    &e),
		        -ENOENT, "alice chmod %s", k);
		cr_expect_eq(kvc_delete(alice, k, strlen(k), 0), -ENOENT, "alice deleted %s", k);
		cr_expect_eq(kvc_rename(alice, k, strlen(k), "mine", 4, false, NULL), -ENOENT,
		             "alice took %s", k);
	}
	list_all(alice, "team/", false, 1000, names, sizeof(names));
	cr_expect_str_eq(names, "", "alice listed team/");
	list_all(alice, NULL, false, 1000, names, sizeof(names));
	cr_expect_str_eq(names, "dir/y x", "something moved into alice's namespace");

	/* a rename "into" bob's prefix stays in alice's */
	cr_assert_eq(kvc_rename(alice, "x", 1, "team/bob/x", 10, false, NULL), 0, "%s",
	             kvc_strerror());
	expect_value(bob, "x", "bob's x", "bob after alice's rename");
	expect_value(admin, "alice/team/bob/x", "alice's x", "admin");
	cr_assert_eq(kvc_rename(alice, "team/bob/x", 10, "x", 1, false, NULL), 0);

	expect_value(bob, "x", "bob's x", "bob, at the end");
	expect_value(bob, "secret", "bob's secret", "bob, at the end");
	expect_value(admin, "top", "nobody's", "admin, at the end");
	cr_expect_eq(kvc_stat(bob, "x", 1, &e), 0);
	cr_expect_eq(e.mode, 0644, "alice's chmod reached bob's key");
	kvc_close(alice);
	kvc_close(bob);
	kvc_close(admin);
	fx_done(&f);
}

Test(tenants, cannot_see_each_other_inline, .timeout = 120)
{
	cannot_see_each_other("none");
}
Test(tenants, cannot_see_each_other_tcp, .timeout = 120)
{
	cannot_see_each_other("tcp");
}

/* The whole namespace's token sees each tenant's keys under its prefix,
 * and what it stores there, the tenant sees at its own name. */
Test(tenants, admin_sees_both_under_their_prefixes, .timeout = 120)
{
	struct fx f = {0};
	struct kvc *alice, *bob, *admin;
	char names[1024];

	fx_start(&f, "none");
	alice = as(&f, f.alice);
	bob = as(&f, f.bob);
	admin = as(&f, f.admin);
	put_str(alice, "x", "alice's x");
	put_str(bob, "x", "bob's x");
	list_all(admin, NULL, false, 1000, names, sizeof(names));
	cr_expect_str_eq(names, "alice/x team/bob/x");
	expect_value(admin, "alice/x", "alice's x", "admin");
	expect_value(admin, "team/bob/x", "bob's x", "admin");
	put_str(admin, "team/bob/from-admin", "given");
	expect_value(bob, "from-admin", "given", "bob");
	cr_expect_eq(counter(admin, "tenant.alice.keys"), 1);
	cr_expect_eq(counter(admin, "tenant.bob.keys"), 2);
	cr_expect_eq(counter(admin, "tenant.alice.quota_bytes"), MIB);
	kvc_close(alice);
	kvc_close(bob);
	kvc_close(admin);
	fx_done(&f);
}

/* ------------------------------------------------------------------ */
/* Raw requests: what the client library would refuse to send          */

static int send_req(int fd, Kvfs__Request *rq)
{
	void *buf;
	size_t len;
	int r = wire_encode_alloc(WIRE_FRAME_REQUEST, &rq->base, 0, &buf, &len);

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

static void recv_msg(int fd, struct wire_msg *m)
{
	uint8_t hdr[WIRE_HDR_LEN], *payload;
	enum wire_frame_type t;
	size_t plen;

	cr_assert_eq(recv_all(fd, hdr, sizeof(hdr)), 0, "connection closed");
	cr_assert_eq(wire_hdr_parse(hdr, 0, WIRE_ACCEPT_CLIENT, &t, &plen), 0);
	payload = xmalloc(plen);
	cr_assert_eq(recv_all(fd, payload, plen), 0);
	cr_assert_eq(wire_payload_decode(t, payload, plen, m), 0);
	free(payload);
}

/* A raw connection past HELLO, proving the token in @token_file. */
static int raw_login(const struct srv *s, const char *token_file)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(s->port)};
	struct timeval tv = {.tv_sec = 20};
	Kvfs__Request rq = KVFS__REQUEST__INIT;
	Kvfs__HelloRequest h = KVFS__HELLO_REQUEST__INIT;
	uint8_t proof[WIRE_AUTH_PROOF_LEN];
	char tok[KV_TOKEN_MAX + 1];
	size_t toklen;
	struct wire_msg m;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	recv_msg(fd, &m);
	cr_assert_eq(m.type, WIRE_FRAME_SERVER_HELLO);
	cr_assert(m.shel->has_auth_nonce && m.shel->auth_nonce.len == WIRE_AUTH_NONCE_LEN);
	cr_assert_eq(kv_read_token_file(token_file, tok, sizeof(tok), &toklen), 0);
	cr_assert_eq(wire_auth_client_proof(tok, toklen, m.shel->auth_nonce.data, proof), 0);
	wire_msg_free(&m);
	h.min_version = WIRE_VERSION_MIN;
	h.max_version = WIRE_VERSION_MAX;
	h.has_auth_proof = true;
	h.auth_proof.data = proof;
	h.auth_proof.len = sizeof(proof);
	rq.id = 1;
	rq.body_case = KVFS__REQUEST__BODY_HELLO;
	rq.hello = &h;
	cr_assert_eq(send_req(fd, &rq), 0);
	recv_msg(fd, &m);
	cr_assert(!m.resp->has_status || m.resp->status == 0, "HELLO refused: %s",
	          m.resp->message ? m.resp->message : "");
	wire_msg_free(&m);
	return fd;
}

/* Send @rq, return its answer's status; *ret (may be NULL) keeps the
 * answer (wire_msg_free() it). */
static int raw_call(int fd, Kvfs__Request *rq, struct wire_msg *ret)
{
	struct wire_msg m;
	int st;

	rq->id++;
	cr_assert_eq(send_req(fd, rq), 0);
	recv_msg(fd, &m);
	cr_assert_eq(m.resp->id, rq->id);
	st = m.resp->has_status ? m.resp->status : 0;
	if (ret)
		*ret = m;
	else
		wire_msg_free(&m);
	return st;
}

#define BIN(s) ((ProtobufCBinaryData){.len = strlen(s), .data = (uint8_t *)(s)})

/* One of the names alice has: "x", or "dir/" and what is under it. */
static bool alices(const ProtobufCBinaryData *k)
{
	return (k->len == 1 && k->data[0] == 'x') || (k->len >= 4 && !memcmp(k->data, "dir/", 4));
}

/* No key in @m's LIST answer, nor its cursor, names one outside alice's
 * namespace as she sees it. */
static void expect_only_alices(const struct wire_msg *m, const char *what)
{
	const Kvfs__ListResponse *l = m->resp->list;

	cr_assert_not_null(l, "%s: no LIST answer", what);
	for (size_t i = 0; i < l->n_entries; i++) {
		const ProtobufCBinaryData *k = &l->entries[i]->key;

		cr_expect(alices(k), "%s: listed '%.*s'", what, (int)k->len, (const char *)k->data);
	}
	for (size_t i = 0; i < l->n_common_prefixes; i++)
		cr_expect(alices(&l->common_prefixes[i]), "%s: listed prefix '%.*s'", what,
		          (int)l->common_prefixes[i].len, (const char *)l->common_prefixes[i].data);
	if (l->has_next_start_after)
		cr_expect(alices(&l->next_start_after), "%s: cursor '%.*s'", what,
		          (int)l->next_start_after.len, (const char *)l->next_start_after.data);
}

/*
 * Keys that would climb out of alice's prefix ("..", a leading '/', empty
 * names and components, a NUL) are refused by the server itself, sent raw;
 * LIST cursors and prefixes from anywhere list only her keys.
 */
Test(tenants, no_key_form_escapes, .timeout = 120)
{
	static const char *const bad[] = {
	        "../team/bob/x", "/team/bob/x",         "", ".", "..", "./x",
	        "a//x",          "dir/../../team/bob/x"};
	static const char *const cursors[] = {
	        "", "0", "a", "alice/", "team/bob/", "~~~~", "\xef\xbf\xbd", "x"};
	struct fx f = {0};
	struct kvc *alice, *bob;
	struct wire_msg m;
	int fd;

	fx_start(&f, "none");
	alice = as(&f, f.alice);
	bob = as(&f, f.bob);
	put_str(alice, "x", "alice's x");
	put_str(alice, "dir/y", "alice's y");
	put_str(bob, "x", "bob's x");
	fd = raw_login(&f.s, f.alice);
	for (size_t i = 0; i < KV_ARRAY_SIZE(bad); i++) {
		Kvfs__Request rq = KVFS__REQUEST__INIT;
		Kvfs__GetRequest g = KVFS__GET_REQUEST__INIT;
		Kvfs__StatRequest st = KVFS__STAT_REQUEST__INIT;
		Kvfs__RenameRequest rn = KVFS__RENAME_REQUEST__INIT;
		Kvfs__DeleteRequest d = KVFS__DELETE_REQUEST__INIT;
		Kvfs__ListRequest l = KVFS__LIST_REQUEST__INIT;
		const char *k = bad[i];
		int s;

		rq.id = 10 * (i + 1);
		g.key = BIN(k);
		g.has_want_inline = g.want_inline = true;
		rq.body_case = KVFS__REQUEST__BODY_GET;
		rq.get = &g;
		s = raw_call(fd, &rq, NULL);
		cr_expect_eq(s, KVFS__STATUS__INVALID, "GET '%s': status %d", k, s);
		st.key = BIN(k);
		rq.body_case = KVFS__REQUEST__BODY_STAT;
		rq.stat = &st;
		s = raw_call(fd, &rq, NULL);
		cr_expect_eq(s, KVFS__STATUS__INVALID, "STAT '%s': status %d", k, s);
		d.key = BIN(k);
		rq.body_case = KVFS__REQUEST__BODY_DELETE;
		rq.delete_ = &d;
		s = raw_call(fd, &rq, NULL);
		cr_expect_eq(s, KVFS__STATUS__INVALID, "DELETE '%s': status %d", k, s);
		rn.src = BIN("x");
		rn.dst = BIN(k);
		rq.body_case = KVFS__REQUEST__BODY_RENAME;
		rq.rename = &rn;
		s = raw_call(fd, &rq, NULL);
		cr_expect_eq(s, KVFS__STATUS__INVALID, "RENAME x to '%s': status %d", k, s);
		rn.src = BIN(k);
		rn.dst = BIN("stolen");
		s = raw_call(fd, &rq, NULL);
		cr_expect_eq(s, KVFS__STATUS__INVALID, "RENAME '%s': status %d", k, s);
		if (*k) { /* an empty LIST prefix is the whole namespace */
			l.has_prefix = true;
			l.prefix = BIN(k);
			rq.body_case = KVFS__REQUEST__BODY_LIST;
			rq.list = &l;
			s = raw_call(fd, &rq, &m);
			cr_expect(s == KVFS__STATUS__INVALID ||
			                  (s == 0 && m.resp->list && !m.resp->list->n_entries),
			          "LIST '%s': status %d", k, s);
			wire_msg_free(&m);
		}
	}
	for (size_t i = 0; i < KV_ARRAY_SIZE(cursors); i++) {
		Kvfs__Request rq = KVFS__REQUEST__INIT;
		Kvfs__ListRequest l = KVFS__LIST_REQUEST__INIT;
		char what[64];
		int s;

		rq.id = 1000 * (i + 1);
		l.has_start_after = true;
		l.start_after = BIN(cursors[i]);
		l.has_limit = true;
		l.limit = 1;
		rq.body_case = KVFS__REQUEST__BODY_LIST;
		rq.list = &l;
		snprintf(what, sizeof(what), "LIST after cursor %zu", i);
		s = raw_call(fd, &rq, &m);
		cr_expect_eq(s, 0, "%s: status %d", what, s);
		if (s == 0)
			expect_only_alices(&m, what);
		wire_msg_free(&m);
		l.has_delimiter = true;
		l.delimiter = BIN("/");
		s = raw_call(fd, &rq, &m);
		cr_expect_eq(s, 0, "%s with '/': status %d", what, s);
		if (s == 0)
			expect_only_alices(&m, what);
		wire_msg_free(&m);
	}
	close(fd);
	expect_value(bob, "x", "bob's x", "bob");
	kvc_close(alice);
	kvc_close(bob);
	fx_done(&f);
}

/* A name that would pass the longest key once the prefix is put before
 * it is refused with NAME_TOO_LONG and says why. */
Test(tenants, prefix_counts_in_the_longest_key, .timeout = 60)
{
	struct fx f = {0};
	struct kvc *alice;
	char key[KV_KEY_MAX];
	size_t room = KV_KEY_MAX - strlen("alice/");

	fx_start(&f, "none");
	alice = as(&f, f.alice);
	memset(key, 'k', sizeof(key));
	cr_expect_eq(kvc_put(alice, key, room + 1, "v", 1, NULL, NULL), -ENAMETOOLONG);
	cr_expect(strstr(kvc_strerror(), "tenant") != NULL, "%s", kvc_strerror());
	cr_expect_eq(kvc_put(alice, key, room, "v", 1, NULL, NULL), 0, "%s", kvc_strerror());
	kvc_close(alice);
	fx_done(&f);
}

/* ------------------------------------------------------------------ */
/* Quotas and STATS                                                    */

/*
 * alice's 1 MiB quota: PUTs of 60 KiB succeed until the next would pass
 * it, which fails with ENOSPC and a message naming the quota; everything
 * she stored reads back intact and nothing was evicted; bob, without a
 * quota, stores on.  Each tenant's STATS shows its own keys and quota and
 * none of the server's counters.
 */
Test(tenants, quota_refuses_and_keeps_data, .timeout = 120)
{
	enum { V = 60 * 1024 };
	struct fx f = {0};
	struct kvc *alice, *bob, *admin;
	static char val[V], back[V];
	char key[32];
	int n, r = 0;

	fx_start(&f, "none");
	alice = as(&f, f.alice);
	bob = as(&f, f.bob);
	admin = as(&f, f.admin);
	for (n = 0; n < 40; n++) {
		snprintf(key, sizeof(key), "v%02d", n);
		fill(val, V, (uint64_t)n);
		r = kvc_put(alice, key, strlen(key), val, V, NULL, NULL);
		if (r)
			break;
	}
	cr_assert_eq(r, -ENOSPC, "PUT %d past the quota: %d (%s)", n, r, kvc_strerror());
	cr_expect_eq(n, (int)(MIB / (V + 3 + KEY_CHARGE)), "stored %d values", n);
	cr_expect(strstr(kvc_strerror(), "quota of 1.0 MiB") != NULL, "message: %s",
	          kvc_strerror());
	cr_expect(strstr(kvc_strerror(), "--memory") == NULL, "wrong advice: %s", kvc_strerror());
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "v%02d", i);
		fill(val, V, (uint64_t)i);
		cr_assert_eq(kvc_get(alice, key, strlen(key), 0, back, V, NULL, NULL), V,
		             "GET %s: %s", key, kvc_strerror());
		check_bytes(back, val, V, key);
	}
	snprintf(key, sizeof(key), "v%02d", n);
	cr_expect_eq(kvc_stat(alice, key, strlen(key), &(struct kvc_entry){0}), -ENOENT);
	for (int i = 0; i < 2 * n; i++) {
		snprintf(key, sizeof(key), "b%02d", i);
		cr_assert_eq(kvc_put(bob, key, strlen(key), val, V, NULL, NULL), 0, "bob: %s",
		             kvc_strerror());
	}

	/* STATS: each its own */
	cr_expect_eq(counter(alice, "keys"), (uint64_t)n);
	cr_expect_eq(counter(alice, "value_bytes"), (uint64_t)n * V);
	cr_expect_eq(counter(alice, "quota_bytes"), MIB);
	cr_expect_eq(counter(alice, "capacity_bytes"), MIB);
	cr_expect_lt(counter(alice, "free_bytes"), (uint64_t)V);
	cr_expect_eq(counter(bob, "keys"), (uint64_t)2 * n);
	cr_expect_eq(counter(bob, "quota_bytes"), 0);
	cr_expect_eq(counter(admin, "keys"), (uint64_t)3 * n);
	cr_expect_eq(counter(admin, "evictions"), 0);
	{
		struct cnt c = {.name = "puts"};

		cr_assert_eq(kvc_stats(alice, cnt_cb, &c), 0);
		cr_expect_not(c.found, "a tenant sees the server's request counters");
		c = (struct cnt){.name = "tenant.bob.keys"};
		cr_assert_eq(kvc_stats(alice, cnt_cb, &c), 0);
		cr_expect_not(c.found, "a tenant sees another's figures");
	}

	/* deleting makes room again */
	cr_assert_eq(kvc_delete(alice, "v00", 3, 0), 0);
	cr_expect_eq(kvc_put(alice, "again", 5, val, V, NULL, NULL), 0, "%s", kvc_strerror());
	kvc_close(alice);
	kvc_close(bob);
	kvc_close(admin);
	fx_done(&f);
}

/* ------------------------------------------------------------------ */
/* Tokens and the file                                                 */

/*
 * Only tenants, no whole-namespace token: each tenant connects (and its
 * client checks the server's proof, made with its own token), anyone else
 * is refused.
 */
Test(tenants, tenants_without_a_whole_namespace_token, .timeout = 60)
{
	struct fx f = {0};
	struct kvc *alice;
	struct kvc_opts o;
	struct kvc *kvc = NULL;

	fx_files(&f);
	const char *extra[] = {"--tenants", f.conf, NULL};
	srv_start_args(&f.s, "none", "64M", extra);
	alice = as(&f, f.alice);
	put_str(alice, "x", "alice's x");
	kvc_opts_init(&o);
	o.server = f.s.addr;
	o.provider = "none";
	o.timeout_ms = 5000;
	cr_expect_eq(kvc_connect(&o, &kvc), -EACCES, "no token: %s", kvc_strerror());
	o.auth_token_file = f.admin;
	cr_expect_eq(kvc_connect(&o, &kvc), -EACCES, "a token the server does not know: %s",
	             kvc_strerror());
	kvc_close(alice);
	fx_done(&f);
}

/* Run kv-server with a tenants file holding @conf; it must exit non-zero
 * before listening and say @want on stderr. */
static void bad_conf(struct fx *f, const char *conf, const char *want)
{
	const char *bin = getenv("KV_SERVER");
	char log[128], out[4096] = "", listen[32];
	int status, logfd;
	ssize_t n;
	pid_t pid;

	if (!bin)
		cr_skip_test("KV_SERVER is not set (run through meson test)");
	write_file(f->conf, conf, 0644);
	snprintf(log, sizeof(log), "%s/log", f->dir);
	logfd = open(log, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(logfd, 0);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", test_free_port());
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		dup2(logfd, 2);
		execl(bin, bin, "--listen", listen, "--memory", "16M", "--provider", "none",
		      "--auth-token-file", f->admin, "--tenants", f->conf, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; waitpid(pid, &status, WNOHANG) != pid; i++) {
		if (i == 2000) { /* 20 s: it is serving */
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		usleep(10000);
	}
	n = pread(logfd, out, sizeof(out) - 1, 0);
	close(logfd);
	unlink(log);
	out[n > 0 ? n : 0] = '\0';
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) != 0,
	          "kv-server started with '%s' (status 0x%x)", conf, status);
	cr_expect(strstr(out, want) != NULL, "for '%s' kv-server said: %s(wanted '%s')", conf, out,
	          want);
	cr_expect(strstr(out, "token-0123") == NULL, "a token in the message: %s", out);
}

Test(tenants, bad_file_stops_the_server_with_file_and_line, .timeout = 120)
{
	struct fx f = {0};
	char want[256], other[128];

	fx_files(&f);
#define AT(line, text) (snprintf(want, sizeof(want), "%s:%d: %s", f.conf, line, text), want)
	bad_conf(&f, "alice alice.token alice/\n", AT(1, "expected NAME TOKEN_FILE PREFIX QUOTA"));
	bad_conf(&f, "# c\nalice alice.token alice/ 1M extra\n", AT(2, "expected NAME"));
	bad_conf(&f, "alice alice.token alice/ 1M\nalice bob.token bob/ 1M\n",
	         AT(2, "tenant name alice is taken already (line 1)"));
	bad_conf(&f, "alice alice.token team/ 1M\nbob bob.token team/bob/ 1M\n",
	         AT(2, "prefix 'team/bob/' of tenant bob lies inside"));
	bad_conf(&f, "bob bob.token team/bob/ 1M\nalice alice.token team/ 1M\n",
	         AT(2, "prefix 'team/' of tenant alice holds"));
	bad_conf(&f, "alice alice.token a/ 1M\nbob alice.token b/ 1M\n",
	         AT(2, "tenant bob has the token of tenant alice (line 1)"));
	bad_conf(&f, "alice nothing-here a/ 1M\n", AT(1, "cannot use the token file"));
	bad_conf(&f, "alice alice.token a/ lots\n", AT(1, "quota 'lots' of tenant alice"));
	bad_conf(&f, "alice alice.token a/ 0\n", AT(1, "quota '0' of tenant alice"));
	bad_conf(&f, "alice alice.token alice 1M\n",
	         AT(1, "prefix 'alice' of tenant alice must end with '/'"));
	bad_conf(&f, "alice alice.token ../a/ 1M\n",
	         AT(1, "prefix '../a/' of tenant alice is no valid key"));
	bad_conf(&f, "al/ice alice.token a/ 1M\n", AT(1, "tenant name 'al/ice'"));
	bad_conf(&f, "# nothing\n\n", "names no tenant");
	snprintf(other, sizeof(other), "%s/short.token", f.dir);
	write_file(other, "short", 0600);
	bad_conf(&f, "alice short.token a/ 1M\n", AT(1, "cannot use the token file"));
	bad_conf(&f, "alice short.token a/ 1M\n", "shorter than 16 bytes");
	unlink(other);
	/* the whole namespace's token may not be a tenant's */
	snprintf(other, sizeof(other), "%s", f.alice);
	write_file(f.alice, "the-whole-namespace-token-0123456789\n", 0600);
	bad_conf(&f, "alice alice.token a/ 1M\n", "the --auth-token-file token is tenant alice's");
#undef AT
	fx_rm(&f);
}

/* A tenant's token file others can read: a warning naming it, as for
 * --auth-token-file. */
Test(tenants, exposed_token_file_warns, .timeout = 60)
{
	struct fx f = {0};
	char log[4096] = "";
	int fd;
	ssize_t n;

	fx_files(&f);
	chmod(f.bob, 0644);
	const char *extra[] = {"--tenants", f.conf, NULL};
	srv_start_args(&f.s, "none", "16M", extra);
	fd = open(f.s.log, O_RDONLY);
	cr_assert_geq(fd, 0);
	n = read(fd, log, sizeof(log) - 1);
	close(fd);
	log[n > 0 ? n : 0] = '\0';
	cr_expect(strstr(log, "bob.token of tenant bob can be read by other users") != NULL,
	          "log: %s", log);
	fx_done(&f);
}

/* kvctl with a tenant's token: its namespace is the whole store. */
Test(tenants, kvctl_with_a_tenant_token, .timeout = 60)
{
	const char *kvctl = getenv("KVCTL");
	struct fx f = {0};
	struct kvc *bob;
	char cmd[2048], out[1024] = "";
	FILE *p;
	size_t n;

	if (!kvctl)
		cr_skip_test("KVCTL is not set (run through meson test)");
	fx_start(&f, "none");
	bob = as(&f, f.bob);
	put_str(bob, "bobs-key", "bob's");
	snprintf(cmd, sizeof(cmd),
	         "K='%s -s %s -a %s'; printf alice-value | $K put mine && $K ls && $K get mine && "
	         "echo && $K stat bobs-key; echo rc=$?",
	         kvctl, f.s.addr, f.alice);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	pclose(p);
	cr_expect_str_eq(out, "mine\nalice-value\nrc=3\n");
	expect_value(bob, "bobs-key", "bob's", "bob");
	kvc_close(bob);
	fx_done(&f);
}
