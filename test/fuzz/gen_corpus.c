/* SPDX-License-Identifier: MIT */
/*
 * Writes the seed corpus of the fuzz harnesses: valid frames of every
 * request type (and of a response and a ServerHello for the frame decoder),
 * in the input layout each harness expects, and a few path/name pairs.
 *
 *   gen_corpus OUTDIR     writes OUTDIR/<harness>/<seed> (OUTDIR/<harness> must exist)
 *
 * The output is deterministic; test/fuzz/corpus/ holds what it wrote.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfs/wire.h"

struct blob {
	uint8_t buf[8192];
	size_t len;
};

static const char *outdir;
static uint64_t next_id = 1;

static void die(const char *what)
{
	fprintf(stderr, "gen_corpus: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void put_bytes(struct blob *b, const void *p, size_t n)
{
	if (b->len + n > sizeof(b->buf)) {
		errno = ENOSPC;
		die("seed too large");
	}
	memcpy(b->buf + b->len, p, n);
	b->len += n;
}

static void put_frame(struct blob *b, enum wire_frame_type type, const ProtobufCMessage *m)
{
	size_t len;
	int r = wire_encode(type, m, 0, b->buf + b->len, sizeof(b->buf) - b->len, &len);

	if (r < 0) {
		errno = -r;
		die("wire_encode");
	}
	b->len += len;
}

static void write_seed(const char *harness, const char *name, const struct blob *b)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", outdir, harness, name);
	f = fopen(path, "wb");
	if (!f || fwrite(b->buf, 1, b->len, f) != b->len || fclose(f))
		die(path);
}

static ProtobufCBinaryData bin(const char *s)
{
	ProtobufCBinaryData d = {.len = strlen(s), .data = (uint8_t *)s};

	return d;
}

/* Request builders: each appends one REQUEST frame to @b. */
static Kvfs__Request req_init(void)
{
	Kvfs__Request rq = KVFS__REQUEST__INIT;

	rq.id = next_id++;
	return rq;
}

static void rq_hello(struct blob *b)
{
	Kvfs__Request rq = req_init();
	Kvfs__HelloRequest h = KVFS__HELLO_REQUEST__INIT;

	h.min_version = WIRE_VERSION_MIN;
	h.max_version = WIRE_VERSION_MAX;
	h.client_id = "seed";
	rq.body_case = KVFS__REQUEST__BODY_HELLO;
	rq.hello = &h;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_put(struct blob *b, const char *key, const char *val)
{
	Kvfs__Request rq = req_init();
	Kvfs__PutRequest p = KVFS__PUT_REQUEST__INIT;

	p.key = bin(key);
	p.has_value = true;
	p.value = bin(val);
	p.has_mode = true;
	p.mode = 0600;
	rq.body_case = KVFS__REQUEST__BODY_PUT;
	rq.put = &p;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_put_cond(struct blob *b, const char *key, const char *val)
{
	Kvfs__Request rq = req_init();
	Kvfs__PutRequest p = KVFS__PUT_REQUEST__INIT;

	p.key = bin(key);
	p.has_value = true;
	p.value = bin(val);
	p.has_length = true;
	p.length = strlen(val);
	p.has_if_version = true;
	p.if_version = 1;
	p.has_mtime_ns = true;
	p.mtime_ns = 1700000000000000000;
	rq.body_case = KVFS__REQUEST__BODY_PUT;
	rq.put = &p;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_put_src(struct blob *b, const char *key)
{
	Kvfs__Request rq = req_init();
	Kvfs__PutRequest p = KVFS__PUT_REQUEST__INIT;
	struct xfer_rsge rs[2] = {
	        {.desc = {.addr = 0x10000, .len = 8192, .key = 42}, .off = 0, .len = 4096},
	        {.desc = {.addr = 0x20000, .len = 4096, .key = 43}, .off = 100, .len = 96},
	};
	Kvfs__Segment **segs = wire_segs_new(rs, 2);

	if (!segs)
		die("wire_segs_new");
	p.key = bin(key);
	p.n_src = 2;
	p.src = segs;
	p.has_length = true;
	p.length = 4096 + 96;
	p.has_if_absent = true;
	p.if_absent = true;
	rq.body_case = KVFS__REQUEST__BODY_PUT;
	rq.put = &p;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
	wire_segs_free(segs);
}

static void rq_get(struct blob *b, const char *key, bool dst)
{
	Kvfs__Request rq = req_init();
	Kvfs__GetRequest g = KVFS__GET_REQUEST__INIT;
	struct xfer_rsge rs = {.desc = {.addr = 0x10000, .len = 65536, .key = 7}, .len = 65536};
	Kvfs__Segment **segs = NULL;

	g.key = bin(key);
	if (dst) {
		segs = wire_segs_new(&rs, 1);
		if (!segs)
			die("wire_segs_new");
		g.n_dst = 1;
		g.dst = segs;
	} else {
		g.has_want_inline = true;
		g.want_inline = true;
		g.has_offset = true;
		g.offset = 1;
		g.has_length = true;
		g.length = 3;
		g.has_if_version = true;
		g.if_version = 0;
	}
	rq.body_case = KVFS__REQUEST__BODY_GET;
	rq.get = &g;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
	wire_segs_free(segs);
}

/* GET of inline bytes from an offset far past the end of the value. */
static void rq_get_past_end(struct blob *b, const char *key)
{
	Kvfs__Request rq = req_init();
	Kvfs__GetRequest g = KVFS__GET_REQUEST__INIT;

	g.key = bin(key);
	g.has_want_inline = true;
	g.want_inline = true;
	g.has_offset = true;
	g.offset = UINT64_MAX - 15;
	rq.body_case = KVFS__REQUEST__BODY_GET;
	rq.get = &g;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_stat(struct blob *b, const char *key)
{
	Kvfs__Request rq = req_init();
	Kvfs__StatRequest st = KVFS__STAT_REQUEST__INIT;

	st.key = bin(key);
	rq.body_case = KVFS__REQUEST__BODY_STAT;
	rq.stat = &st;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_delete(struct blob *b, const char *key)
{
	Kvfs__Request rq = req_init();
	Kvfs__DeleteRequest d = KVFS__DELETE_REQUEST__INIT;

	d.key = bin(key);
	d.has_if_version = true;
	d.if_version = 0;
	rq.body_case = KVFS__REQUEST__BODY_DELETE;
	rq.delete_ = &d;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_list(struct blob *b, const char *prefix)
{
	Kvfs__Request rq = req_init();
	Kvfs__ListRequest l = KVFS__LIST_REQUEST__INIT;

	l.has_prefix = true;
	l.prefix = bin(prefix);
	l.has_delimiter = true;
	l.delimiter = bin("/");
	l.has_start_after = true;
	l.start_after = bin(prefix);
	l.has_limit = true;
	l.limit = 2;
	rq.body_case = KVFS__REQUEST__BODY_LIST;
	rq.list = &l;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_rename(struct blob *b, const char *src, const char *dst)
{
	Kvfs__Request rq = req_init();
	Kvfs__RenameRequest m = KVFS__RENAME_REQUEST__INIT;

	m.src = bin(src);
	m.dst = bin(dst);
	m.has_no_overwrite = true;
	m.no_overwrite = true;
	rq.body_case = KVFS__REQUEST__BODY_RENAME;
	rq.rename = &m;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_setattr(struct blob *b, const char *key)
{
	Kvfs__Request rq = req_init();
	Kvfs__SetAttrRequest a = KVFS__SET_ATTR_REQUEST__INIT;

	a.key = bin(key);
	a.has_mode = true;
	a.mode = 0755;
	a.has_mtime_ns = true;
	a.mtime_ns = 1;
	rq.body_case = KVFS__REQUEST__BODY_SETATTR;
	rq.setattr = &a;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_stats(struct blob *b)
{
	Kvfs__Request rq = req_init();
	Kvfs__StatsRequest st = KVFS__STATS_REQUEST__INIT;

	rq.body_case = KVFS__REQUEST__BODY_STATS;
	rq.stats = &st;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

/* A symbolic link with an owner, and a rewrite that drops its attributes. */
static void rq_put_link(struct blob *b, const char *key, const char *target)
{
	Kvfs__Request rq = req_init();
	Kvfs__PutRequest p = KVFS__PUT_REQUEST__INIT;

	p.key = bin(key);
	p.has_value = true;
	p.value = bin(target);
	p.has_uid = p.has_gid = true;
	p.uid = 1000;
	p.gid = 100;
	p.has_type = true;
	p.type = KVFS__KEY_TYPE__SYMLINK;
	p.has_drop_xattrs = p.drop_xattrs = true;
	rq.body_case = KVFS__REQUEST__BODY_PUT;
	rq.put = &p;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_chown(struct blob *b, const char *key)
{
	Kvfs__Request rq = req_init();
	Kvfs__SetAttrRequest a = KVFS__SET_ATTR_REQUEST__INIT;

	a.key = bin(key);
	a.has_uid = true;
	a.uid = 7;
	a.has_gid = true;
	a.gid = 8;
	rq.body_case = KVFS__REQUEST__BODY_SETATTR;
	rq.setattr = &a;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_setxattr(struct blob *b, const char *key, const char *name, const char *val)
{
	Kvfs__Request rq = req_init();
	Kvfs__SetXattrRequest a = KVFS__SET_XATTR_REQUEST__INIT;

	a.key = bin(key);
	a.name = bin(name);
	if (val) {
		a.has_value = true;
		a.value = bin(val);
		a.has_create = a.create = true;
	} else {
		a.has_remove = a.remove = true;
	}
	rq.body_case = KVFS__REQUEST__BODY_SETXATTR;
	rq.setxattr = &a;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_getxattr(struct blob *b, const char *key, const char *name)
{
	Kvfs__Request rq = req_init();
	Kvfs__GetXattrRequest g = KVFS__GET_XATTR_REQUEST__INIT;

	g.key = bin(key);
	g.name = bin(name);
	rq.body_case = KVFS__REQUEST__BODY_GETXATTR;
	rq.getxattr = &g;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_listxattr(struct blob *b, const char *key)
{
	Kvfs__Request rq = req_init();
	Kvfs__ListXattrRequest l = KVFS__LIST_XATTR_REQUEST__INIT;

	l.key = bin(key);
	rq.body_case = KVFS__REQUEST__BODY_LISTXATTR;
	rq.listxattr = &l;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_upload_open(struct blob *b, const char *key, uint64_t base)
{
	Kvfs__Request rq = req_init();
	Kvfs__UploadOpenRequest o = KVFS__UPLOAD_OPEN_REQUEST__INIT;

	o.key = bin(key);
	o.has_base_version = base != 0;
	o.base_version = base;
	rq.body_case = KVFS__REQUEST__BODY_UPLOAD_OPEN;
	rq.upload_open = &o;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

/* A part of upload 1: inline @val at @off, or with @val NULL a cut to @off. */
static void rq_upload_part(struct blob *b, uint64_t off, const char *val)
{
	Kvfs__Request rq = req_init();
	Kvfs__UploadPartRequest u = KVFS__UPLOAD_PART_REQUEST__INIT;

	u.upload = 1;
	if (val) {
		u.has_offset = true;
		u.offset = off;
		u.has_data = true;
		u.data = bin(val);
	} else {
		u.has_truncate = true;
		u.truncate = off;
	}
	rq.body_case = KVFS__REQUEST__BODY_UPLOAD_PART;
	rq.upload_part = &u;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_upload_read(struct blob *b, const char *key)
{
	Kvfs__Request rq = req_init();
	Kvfs__GetRequest g = KVFS__GET_REQUEST__INIT;

	g.key = bin(key);
	g.has_upload = g.has_want_inline = true;
	g.upload = 1;
	g.want_inline = true;
	rq.body_case = KVFS__REQUEST__BODY_GET;
	rq.get = &g;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_upload_commit(struct blob *b, const char *key)
{
	Kvfs__Request rq = req_init();
	Kvfs__PutRequest p = KVFS__PUT_REQUEST__INIT;

	p.key = bin(key);
	p.has_upload = true;
	p.upload = 1;
	rq.body_case = KVFS__REQUEST__BODY_PUT;
	rq.put = &p;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

static void rq_upload_abort(struct blob *b)
{
	Kvfs__Request rq = req_init();
	Kvfs__UploadAbortRequest a = KVFS__UPLOAD_ABORT_REQUEST__INIT;

	a.upload = 1;
	rq.body_case = KVFS__REQUEST__BODY_UPLOAD_ABORT;
	rq.upload_abort = &a;
	put_frame(b, WIRE_FRAME_REQUEST, &rq.base);
}

/* Every request type after HELLO, as one session. */
static void rq_all(struct blob *b)
{
	rq_put(b, "dir/a", "hello");
	rq_put(b, "dir/sub/b", "world");
	rq_put_cond(b, "dir/a", "again");
	rq_put_src(b, "dir/rdma");
	rq_get(b, "dir/a", false);
	rq_get(b, "dir/a", true);
	rq_stat(b, "dir/a");
	rq_list(b, "dir/");
	rq_rename(b, "dir/a", "dir/c");
	rq_setattr(b, "dir/c");
	rq_chown(b, "dir/c");
	rq_put_link(b, "dir/l", "../c");
	rq_setxattr(b, "dir/c", "user.a", "v");
	rq_getxattr(b, "dir/c", "user.a");
	rq_listxattr(b, "dir/c");
	rq_setxattr(b, "dir/c", "user.a", NULL);
	rq_delete(b, "dir/sub/b");
	rq_upload_open(b, "dir/up", 0);
	rq_upload_part(b, 5, "hello");
	rq_upload_part(b, 0, "w");
	rq_upload_read(b, "dir/up");
	rq_upload_part(b, 3, NULL);
	rq_upload_commit(b, "dir/up");
	rq_stats(b);
}

typedef void (*one_fn)(struct blob *b);

static void one_put(struct blob *b)
{
	rq_put(b, "k", "value");
}
static void one_put_cond(struct blob *b)
{
	rq_put(b, "k", "v");
	rq_put_cond(b, "k", "value2");
}
static void one_put_src(struct blob *b)
{
	rq_put_src(b, "k");
}
static void one_get(struct blob *b)
{
	rq_put(b, "k", "value");
	rq_get(b, "k", false);
}
static void one_get_past_end(struct blob *b)
{
	rq_put(b, "k", "value");
	rq_get_past_end(b, "k");
}
static void one_get_dst(struct blob *b)
{
	rq_put(b, "k", "value");
	rq_get(b, "k", true);
}
static void one_stat(struct blob *b)
{
	rq_put(b, "k", "value");
	rq_stat(b, "k");
}
static void one_delete(struct blob *b)
{
	rq_put(b, "k", "value");
	rq_delete(b, "k");
}
static void one_list(struct blob *b)
{
	rq_put(b, "d/x", "1");
	rq_put(b, "d/y/z", "2");
	rq_list(b, "d/");
}
static void one_rename(struct blob *b)
{
	rq_put(b, "k", "value");
	rq_rename(b, "k", "k2");
}
static void one_setattr(struct blob *b)
{
	rq_put(b, "k", "value");
	rq_setattr(b, "k");
}
static void one_stats(struct blob *b)
{
	rq_stats(b);
}
static void one_symlink_chown(struct blob *b)
{
	rq_put_link(b, "l", "target");
	rq_chown(b, "l");
	rq_stat(b, "l");
}
static void one_xattr(struct blob *b)
{
	rq_put(b, "k", "value");
	rq_setxattr(b, "k", "user.a", "v");
	rq_setxattr(b, "k", "user.b", "");
	rq_getxattr(b, "k", "user.a");
	rq_listxattr(b, "k");
	rq_rename(b, "k", "k2");
	rq_setxattr(b, "k2", "user.a", NULL);
}

static void one_upload(struct blob *b)
{
	rq_put(b, "k", "value");
	rq_upload_open(b, "k", 2); /* a base version, perhaps the right one */
	rq_upload_part(b, 2, "XY");
	rq_upload_part(b, 9, "end");
	rq_upload_read(b, "k");
	rq_upload_part(b, 4, NULL);
	rq_upload_commit(b, "k");
	rq_get(b, "k", false);
}
static void one_upload_abort(struct blob *b)
{
	rq_upload_open(b, "k", 0);
	rq_upload_part(b, 0, "abc");
	rq_upload_abort(b);
	rq_upload_commit(b, "k");
}

static const struct {
	const char *name;
	one_fn fn;
} ones[] = {
        {"put", one_put},
        {"put_cond", one_put_cond},
        {"put_src", one_put_src},
        {"get", one_get},
        {"get_past_end", one_get_past_end},
        {"get_dst", one_get_dst},
        {"stat", one_stat},
        {"delete", one_delete},
        {"list", one_list},
        {"rename", one_rename},
        {"setattr", one_setattr},
        {"stats", one_stats},
        {"symlink_chown", one_symlink_chown},
        {"xattr", one_xattr},
        {"upload", one_upload},
        {"upload_abort", one_upload_abort},
};

static void gen_dispatch(void)
{
	const char *h = "fuzz_server_dispatch";
	struct blob b;
	uint8_t flags;

	for (size_t i = 0; i < sizeof(ones) / sizeof(ones[0]); i++) {
		b.len = 0;
		flags = 1; /* harness sends HELLO first */
		put_bytes(&b, &flags, 1);
		ones[i].fn(&b);
		write_seed(h, ones[i].name, &b);
	}

	b.len = 0;
	flags = 1;
	put_bytes(&b, &flags, 1);
	rq_all(&b);
	write_seed(h, "all", &b);

	b.len = 0;
	flags = 1 | 2 | 4 | (2 << 3); /* auth, server proof, 16-byte chunks */
	put_bytes(&b, &flags, 1);
	rq_all(&b);
	write_seed(h, "all_auth_chunked", &b);

	b.len = 0;
	flags = 0; /* the input's own HELLO */
	put_bytes(&b, &flags, 1);
	rq_hello(&b);
	rq_put(&b, "k", "v");
	rq_hello(&b); /* twice: refused */
	write_seed(h, "hello", &b);

	b.len = 0;
	flags = 0; /* no HELLO: refused */
	put_bytes(&b, &flags, 1);
	rq_get(&b, "k", false);
	write_seed(h, "no_hello", &b);
}

static void gen_reader(void)
{
	const char *h = "fuzz_wire_reader";
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__GetResponse gr = KVFS__GET_RESPONSE__INIT;
	Kvfs__ServerHello sh = KVFS__SERVER_HELLO__INIT;
	struct blob b;
	uint8_t sel[2];

	for (size_t i = 0; i < sizeof(ones) / sizeof(ones[0]); i++) {
		b.len = 0;
		sel[0] = 0; /* WIRE_ACCEPT_SERVER, default limit */
		sel[1] = (uint8_t)(i * 37 + 1);
		put_bytes(&b, sel, 2);
		ones[i].fn(&b);
		write_seed(h, ones[i].name, &b);
	}

	b.len = 0;
	sel[0] = 0x10; /* WIRE_ACCEPT_SERVER, 4 KiB limit */
	sel[1] = 3;
	put_bytes(&b, sel, 2);
	rq_hello(&b);
	rq_all(&b);
	write_seed(h, "session", &b);

	b.len = 0;
	sel[0] = 1; /* WIRE_ACCEPT_CLIENT */
	sel[1] = 9;
	put_bytes(&b, sel, 2);
	sh.min_version = sh.max_version = 1;
	sh.server_id = "kv-server";
	put_frame(&b, WIRE_FRAME_SERVER_HELLO, &sh.base);
	resp.id = 2;
	resp.body_case = KVFS__RESPONSE__BODY_GET;
	resp.get = &gr;
	gr.bytes = gr.size = 5;
	gr.version = 3;
	gr.has_data = true;
	gr.data = bin("hello");
	put_frame(&b, WIRE_FRAME_RESPONSE, &resp.base);
	kvfs__response__init(&resp);
	resp.id = 3;
	resp.has_status = true;
	resp.status = KVFS__STATUS__NOT_FOUND;
	resp.message = "no such key";
	put_frame(&b, WIRE_FRAME_RESPONSE, &resp.base);
	write_seed(h, "client_side", &b);

	b.len = 0;
	sel[0] = 2; /* WIRE_ACCEPT_ANY; a frame cut short */
	sel[1] = 1;
	put_bytes(&b, sel, 2);
	rq_put(&b, "key", "a value cut short");
	b.len -= 4;
	write_seed(h, "truncated", &b);
}

static void gen_path(void)
{
	static const struct {
		const char *name;
		uint16_t cap;
		const char *parent, *child;
	} seeds[] = {
	        {"root", 64, "", "file"},  {"nested", 64, "a/b", "c"}, {"dot", 64, "a", ".."},
	        {"slash", 64, "a", "b/c"}, {"tight", 6, "ab", "cd"},   {"marker", 64, "dir/", "x"},
	};
	struct blob b;

	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		uint8_t cap[2] = {(uint8_t)(seeds[i].cap >> 8), (uint8_t)seeds[i].cap};

		b.len = 0;
		put_bytes(&b, cap, 2);
		put_bytes(&b, seeds[i].parent, strlen(seeds[i].parent) + 1);
		put_bytes(&b, seeds[i].child, strlen(seeds[i].child));
		write_seed("fuzz_kvfs_path", seeds[i].name, &b);
	}
	/* a parent near KV_KEY_MAX */
	b.len = 0;
	put_bytes(&b, (uint8_t[]){0x04, 0x10}, 2); /* cap 1040 */
	for (int i = 0; i < 1020; i++)
		put_bytes(&b, i % 10 == 9 ? "/" : "x", 1);
	put_bytes(&b, "\0name", 5);
	write_seed("fuzz_kvfs_path", "long", &b);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_corpus OUTDIR (OUTDIR/fuzz_* must exist)\n");
		return 2;
	}
	outdir = argv[1];
	gen_dispatch();
	gen_reader();
	gen_path();
	return 0;
}
