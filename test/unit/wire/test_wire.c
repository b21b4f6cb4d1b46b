/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfs/util.h"
#include "kvfs/wire.h"

/* ---- helpers ----------------------------------------------------------- */

#define BIN(s) ((ProtobufCBinaryData){.len = sizeof(s) - 1, .data = (uint8_t *)(s)})

static uint8_t *encode(enum wire_frame_type type, const ProtobufCMessage *m, size_t *ret_len)
{
	void *buf = NULL;

	cr_assert_eq(wire_encode_alloc(type, m, 0, &buf, ret_len), 0);
	cr_assert_eq(*ret_len, wire_frame_size(m));
	return buf;
}

/* Feed @buf in chunks of @chunk bytes (0 = random 1..64) and collect every
 * frame; fails the test on any error. */
static size_t feed_all(struct wire_reader *r, const uint8_t *buf, size_t len, size_t chunk,
                       struct wire_msg *msgs, size_t max)
{
	size_t pos = 0, got = 0;

	while (pos < len) {
		size_t n = chunk ? chunk : 1 + (size_t)(rand() % 64);
		size_t off = 0;

		if (n > len - pos)
			n = len - pos;
		for (;;) {
			size_t used = 0;
			struct wire_msg m = {0};
			int rc = wire_reader_feed(r, buf + pos + off, n - off, &used, &m);

			cr_assert_geq(rc, 0, "feed: %d %s", rc, wire_reader_error(r));
			cr_assert_leq(used, n - off);
			off += used;
			if (rc == 1) {
				cr_assert_lt(got, max);
				msgs[got++] = m;
				continue;
			}
			cr_assert_eq(off, n, "0 means the whole chunk was consumed");
			break;
		}
		pos += n;
	}
	return got;
}

/* Encode @m, decode it fed byte by byte, in random chunks and whole, and
 * check the re-encoded bytes equal the original. */
static void roundtrip(enum wire_frame_type type, const ProtobufCMessage *m)
{
	size_t chunks[] = {1, 0, 0, 0, 3, 7, 1 << 20};
	size_t len;
	uint8_t *buf = encode(type, m, &len);

	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		struct wire_reader r;
		struct wire_msg out = {0};
		ProtobufCMessage *dec;
		size_t len2;
		uint8_t *buf2;

		cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_ANY), 0);
		cr_assert_eq(feed_all(&r, buf, len, chunks[i], &out, 1), 1);
		cr_assert_not(wire_reader_pending(&r));
		cr_assert_eq(out.type, type);
		dec = out.type == WIRE_FRAME_REQUEST    ? &out.req->base
		      : out.type == WIRE_FRAME_RESPONSE ? &out.resp->base
		                                        : &out.shel->base;
		buf2 = encode(type, dec, &len2);
		cr_assert_eq(len2, len);
		cr_assert_arr_eq(buf2, buf, len, "re-encoded frame differs (chunk %zu)", chunks[i]);
		free(buf2);
		wire_msg_free(&out);
		wire_reader_fini(&r);
	}
	free(buf);
}

/* Decode one frame fed whole; returns the message. */
static struct wire_msg decode_one(const uint8_t *buf, size_t len)
{
	struct wire_reader r;
	struct wire_msg m = {0};

	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_ANY), 0);
	cr_assert_eq(feed_all(&r, buf, len, len, &m, 1), 1);
	wire_reader_fini(&r);
	return m;
}

/* ---- round trips: every message type ----------------------------------- */

Test(wire_roundtrip, server_hello)
{
	uint8_t nonce[WIRE_AUTH_NONCE_LEN];
	Kvfs__ServerHello sh = KVFS__SERVER_HELLO__INIT;

	memset(nonce, 0xa5, sizeof(nonce));
	sh.min_version = WIRE_VERSION_MIN;
	sh.max_version = WIRE_VERSION_MAX;
	sh.has_auth_nonce = 1;
	sh.auth_nonce = (ProtobufCBinaryData){sizeof(nonce), nonce};
	sh.server_id = "kv-server test";
	roundtrip(WIRE_FRAME_SERVER_HELLO, &sh.base);
}

Test(wire_roundtrip, hello)
{
	uint8_t proof[WIRE_AUTH_PROOF_LEN] = {1, 2, 3};
	Kvfs__Request req = KVFS__REQUEST__INIT;
	Kvfs__HelloRequest h = KVFS__HELLO_REQUEST__INIT;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__HelloResponse hr = KVFS__HELLO_RESPONSE__INIT;
	struct wire_msg m;
	size_t len;
	uint8_t *buf;

	h.min_version = 1;
	h.max_version = 3;
	h.provider = "tcp;ofi_rxm";
	h.has_engine_addr = 1;
	h.engine_addr = BIN("\x02\x00\x1f\x90\x7f\x00\x00\x01");
	h.has_auth_proof = 1;
	h.auth_proof = (ProtobufCBinaryData){sizeof(proof), proof};
	req.id = 1;
	req.body_case = KVFS__REQUEST__BODY_HELLO;
	req.hello = &h;
	roundtrip(WIRE_FRAME_REQUEST, &req.base);

	buf = encode(WIRE_FRAME_REQUEST, &req.base, &len);
	m = decode_one(buf, len);
	cr_assert_eq(m.req->id, 1);
	cr_assert_eq(m.req->body_case, KVFS__REQUEST__BODY_HELLO);
	cr_assert_str_eq(m.req->hello->provider, "tcp;ofi_rxm");
	cr_assert_eq(m.req->hello->engine_addr.len, 8);
	cr_assert(m.req->hello->has_auth_proof);
	cr_assert(wire_ct_equal(m.req->hello->auth_proof.data, proof, sizeof(proof)));
	cr_assert_not(m.req->hello->has_client_nonce);
	cr_assert_null(m.req->hello->client_id);
	wire_msg_free(&m);
	free(buf);

	hr.version = 1;
	hr.provider = "tcp;ofi_rxm";
	hr.has_engine_addr = 1;
	hr.engine_addr = BIN("abcdefgh");
	hr.max_frame = WIRE_MAX_FRAME_DEFAULT;
	hr.max_value = 1ULL << 32;
	hr.chunk_size = 1 << 20;
	hr.has_max_inline = 1;
	hr.max_inline = WIRE_MAX_INLINE_DEFAULT;
	hr.has_rdma = 1;
	hr.rdma = 1;
	resp.id = 1;
	resp.body_case = KVFS__RESPONSE__BODY_HELLO;
	resp.hello = &hr;
	roundtrip(WIRE_FRAME_RESPONSE, &resp.base);
}

Test(wire_roundtrip, put_inline_and_rdma)
{
	struct xfer_rsge rs[2] = {
	        {.desc = {.addr = 0x7f0000001000, .len = 1 << 20, .key = 0xdead},
	         .off = 0,
	         .len = 4096},
	        {.desc = {.addr = 0x7f0000200000, .len = 8192, .key = 0xbeef},
	         .off = 4096,
	         .len = 4096},
	};
	Kvfs__Request req = KVFS__REQUEST__INIT;
	Kvfs__PutRequest put = KVFS__PUT_REQUEST__INIT;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__PutResponse pr = KVFS__PUT_RESPONSE__INIT;
	struct xfer_rsge back[4];
	const char *why;
	uint64_t total;
	struct wire_msg m;
	size_t len, n;
	uint8_t *buf;

	req.id = 42;
	req.body_case = KVFS__REQUEST__BODY_PUT;
	req.put = &put;
	put.key = BIN("layer0/blk/17");
	put.has_value = 1;
	put.value = BIN("hello world");
	put.has_mode = 1;
	put.mode = 0600;
	put.has_mtime_ns = 1;
	put.mtime_ns = -5;
	put.has_if_absent = 1;
	put.if_absent = 1;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	roundtrip(WIRE_FRAME_REQUEST, &req.base);

	/* RDMA variant: descriptors instead of bytes, compare-and-swap. */
	put.has_value = 0;
	put.has_if_absent = 0;
	put.has_if_version = 1;
	put.if_version = 7;
	put.src = wire_segs_new(rs, 2);
	cr_assert_not_null(put.src);
	put.n_src = 2;
	put.has_length = 1;
	put.length = 8192;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	roundtrip(WIRE_FRAME_REQUEST, &req.base);

	buf = encode(WIRE_FRAME_REQUEST, &req.base, &len);
	m = decode_one(buf, len);
	cr_assert_eq(m.req->put->n_src, 2);
	cr_assert_eq(wire_segs_to_rsge(m.req->put->src, m.req->put->n_src, back, 4, &n, &total), 0);
	cr_assert_eq(n, 2);
	cr_assert_eq(total, 8192);
	cr_assert_arr_eq(back, rs, sizeof(rs));
	cr_assert_eq(m.req->put->if_version, 7);
	cr_assert_eq(m.req->put->mode, 0600);
	cr_assert_not(m.req->put->has_value);
	cr_assert_not(m.req->put->has_if_absent);
	wire_msg_free(&m);
	free(buf);
	wire_segs_free(put.src);

	pr.version = 99;
	pr.has_mtime_ns = 1;
	pr.mtime_ns = 1700000000123456789LL;
	resp.id = 42;
	resp.body_case = KVFS__RESPONSE__BODY_PUT;
	resp.put = &pr;
	roundtrip(WIRE_FRAME_RESPONSE, &resp.base);
}

Test(wire_roundtrip, get)
{
	struct xfer_rsge rs = {
	        .desc = {.addr = 4096, .len = 65536, .key = 3}, .off = 512, .len = 1024};
	Kvfs__Request req = KVFS__REQUEST__INIT;
	Kvfs__GetRequest get = KVFS__GET_REQUEST__INIT;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__GetResponse gr = KVFS__GET_RESPONSE__INIT;
	const char *why;

	req.id = UINT64_MAX;
	req.body_case = KVFS__REQUEST__BODY_GET;
	req.get = &get;
	get.key = BIN("k");
	get.has_offset = 1;
	get.offset = 100;
	get.has_length = 1;
	get.length = 1024;
	get.has_if_version = 1;
	get.if_version = 5;
	get.dst = wire_segs_new(&rs, 1);
	get.n_dst = 1;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	roundtrip(WIRE_FRAME_REQUEST, &req.base);
	wire_segs_free(get.dst);

	get.dst = NULL;
	get.n_dst = 0;
	get.has_want_inline = 1;
	get.want_inline = 1;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	roundtrip(WIRE_FRAME_REQUEST, &req.base);

	resp.id = UINT64_MAX;
	resp.body_case = KVFS__RESPONSE__BODY_GET;
	resp.get = &gr;
	gr.bytes = 5;
	gr.size = 105;
	gr.version = 5;
	gr.has_mode = 1;
	gr.mode = 0644;
	gr.has_data = 1;
	gr.data = BIN("abcde");
	roundtrip(WIRE_FRAME_RESPONSE, &resp.base);
}

Test(wire_roundtrip, stat_delete_rename_setattr)
{
	Kvfs__Request req = KVFS__REQUEST__INIT;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__StatRequest st = KVFS__STAT_REQUEST__INIT;
	Kvfs__StatResponse str = KVFS__STAT_RESPONSE__INIT;
	Kvfs__DeleteRequest del = KVFS__DELETE_REQUEST__INIT;
	Kvfs__DeleteResponse delr = KVFS__DELETE_RESPONSE__INIT;
	Kvfs__RenameRequest ren = KVFS__RENAME_REQUEST__INIT;
	Kvfs__RenameResponse renr = KVFS__RENAME_RESPONSE__INIT;
	Kvfs__SetAttrRequest sa = KVFS__SET_ATTR_REQUEST__INIT;
	Kvfs__SetAttrResponse sar = KVFS__SET_ATTR_RESPONSE__INIT;
	Kvfs__Entry e = KVFS__ENTRY__INIT;
	const char *why;

	e.key = BIN("a/b");
	e.size = 123;
	e.version = 4;
	e.has_mtime_ns = 1;
	e.mtime_ns = 1;
	e.has_mode = 1;
	e.mode = 0644;

	req.id = 2;
	st.key = BIN("a/b");
	req.body_case = KVFS__REQUEST__BODY_STAT;
	req.stat = &st;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	roundtrip(WIRE_FRAME_REQUEST, &req.base);
	str.entry = &e;
	resp.id = 2;
	resp.body_case = KVFS__RESPONSE__BODY_STAT;
	resp.stat = &str;
	roundtrip(WIRE_FRAME_RESPONSE, &resp.base);

	del.key = BIN("a/b");
	del.has_if_version = 1;
	del.if_version = 4;
	req.body_case = KVFS__REQUEST__BODY_DELETE;
	req.delete_ = &del;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	roundtrip(WIRE_FRAME_REQUEST, &req.base);
	delr.has_version = 1;
	delr.version = 4;
	resp.body_case = KVFS__RESPONSE__BODY_DELETE;
	resp.delete_ = &delr;
	roundtrip(WIRE_FRAME_RESPONSE, &resp.base);

	ren.src = BIN("a/b");
	ren.dst = BIN("a/c");
	ren.has_no_overwrite = 1;
	ren.no_overwrite = 1;
	req.body_case = KVFS__REQUEST__BODY_RENAME;
	req.rename = &ren;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	roundtrip(WIRE_FRAME_REQUEST, &req.base);
	renr.version = 5;
	resp.body_case = KVFS__RESPONSE__BODY_RENAME;
	resp.rename = &renr;
	roundtrip(WIRE_FRAME_RESPONSE, &resp.base);

	sa.key = BIN("a/c");
	sa.has_mode = 1;
	sa.mode = 0400;
	req.body_case = KVFS__REQUEST__BODY_SETATTR;
	req.setattr = &sa;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	roundtrip(WIRE_FRAME_REQUEST, &req.base);
	sar.entry = &e;
	resp.body_case = KVFS__RESPONSE__BODY_SETATTR;
	resp.setattr = &sar;
	roundtrip(WIRE_FRAME_RESPONSE, &resp.base);
}

Test(wire_roundtrip, list_and_stats)
{
	Kvfs__Request req = KVFS__REQUEST__INIT;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__ListRequest lr = KVFS__LIST_REQUEST__INIT;
	Kvfs__ListResponse lres = KVFS__LIST_RESPONSE__INIT;
	Kvfs__StatsRequest sr = KVFS__STATS_REQUEST__INIT;
	Kvfs__StatsResponse sres = KVFS__STATS_RESPONSE__INIT;
	Kvfs__Entry e[3] = {KVFS__ENTRY__INIT, KVFS__ENTRY__INIT, KVFS__ENTRY__INIT};
	Kvfs__Entry *ep[3] = {&e[0], &e[1], &e[2]};
	ProtobufCBinaryData cps[2] = {BIN("dir/x/"), BIN("dir/y/")};
	Kvfs__Counter c[3] = {KVFS__COUNTER__INIT, KVFS__COUNTER__INIT, KVFS__COUNTER__INIT};
	Kvfs__Counter *cp[3] = {&c[0], &c[1], &c[2]};
	const char *why;
	struct wire_msg m;
	size_t len;
	uint8_t *buf;

	lr.has_prefix = 1;
	lr.prefix = BIN("dir/");
	lr.has_delimiter = 1;
	lr.delimiter = BIN("/");
	lr.has_start_after = 1;
	lr.start_after = BIN("dir/a");
	lr.has_limit = 1;
	lr.limit = 5;
	req.id = 9;
	req.body_case = KVFS__REQUEST__BODY_LIST;
	req.list = &lr;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	roundtrip(WIRE_FRAME_REQUEST, &req.base);

	for (int i = 0; i < 3; i++) {
		e[i].key = BIN("dir/b");
		e[i].size = (uint64_t)i;
		e[i].version = (uint64_t)i + 1;
	}
	lres.n_entries = 3;
	lres.entries = ep;
	lres.n_common_prefixes = 2;
	lres.common_prefixes = cps;
	lres.has_truncated = 1;
	lres.truncated = 1;
	lres.has_next_start_after = 1;
	lres.next_start_after = BIN("dir/y/");
	resp.id = 9;
	resp.body_case = KVFS__RESPONSE__BODY_LIST;
	resp.list = &lres;
	roundtrip(WIRE_FRAME_RESPONSE, &resp.base);

	req.body_case = KVFS__REQUEST__BODY_STATS;
	req.stats = &sr;
	roundtrip(WIRE_FRAME_REQUEST, &req.base);
	c[0].name = "keys";
	c[0].value = 10;
	c[1].name = "bytes_used";
	c[1].value = 1ULL << 40;
	c[2].name = "evictions";
	c[2].value = 0;
	sres.n_counters = 3;
	sres.counters = cp;
	resp.body_case = KVFS__RESPONSE__BODY_STATS;
	resp.stats = &sres;
	roundtrip(WIRE_FRAME_RESPONSE, &resp.base);

	buf = encode(WIRE_FRAME_RESPONSE, &resp.base, &len);
	m = decode_one(buf, len);
	cr_assert_eq(m.resp->stats->n_counters, 3);
	cr_assert_str_eq(m.resp->stats->counters[1]->name, "bytes_used");
	cr_assert_eq(m.resp->stats->counters[1]->value, 1ULL << 40);
	wire_msg_free(&m);
	free(buf);
}

Test(wire_roundtrip, error_response)
{
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	struct wire_msg m;
	size_t len;
	uint8_t *buf;

	resp.id = 77;
	resp.has_status = 1;
	resp.status = wire_errno_to_status(-ENOENT);
	resp.message = "no such key: a/b";
	roundtrip(WIRE_FRAME_RESPONSE, &resp.base);

	buf = encode(WIRE_FRAME_RESPONSE, &resp.base, &len);
	m = decode_one(buf, len);
	cr_assert_eq(wire_status_to_errno(m.resp->status), -ENOENT);
	cr_assert_str_eq(m.resp->message, "no such key: a/b");
	cr_assert_eq(m.resp->body_case, KVFS__RESPONSE__BODY__NOT_SET);
	wire_msg_free(&m);
	free(buf);
}

/* ---- streams ----------------------------------------------------------- */

Test(wire_reader, many_frames_one_buffer)
{
	enum { N = 200 };
	struct wire_msg *msgs = calloc(N, sizeof(*msgs));
	uint8_t *all = NULL;
	size_t total = 0;

	for (int i = 0; i < N; i++) {
		Kvfs__Request req = KVFS__REQUEST__INIT;
		Kvfs__StatRequest st = KVFS__STAT_REQUEST__INIT;
		char key[32];
		size_t len;
		uint8_t *buf;

		snprintf(key, sizeof(key), "key-%d", i);
		st.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
		req.id = (uint64_t)i;
		req.body_case = KVFS__REQUEST__BODY_STAT;
		req.stat = &st;
		buf = encode(WIRE_FRAME_REQUEST, &req.base, &len);
		all = realloc(all, total + len);
		memcpy(all + total, buf, len);
		total += len;
		free(buf);
	}

	for (size_t chunk = 0; chunk < 3; chunk++) {
		size_t sizes[] = {total, 1, 0};
		struct wire_reader r;

		cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_SERVER), 0);
		cr_assert_eq(feed_all(&r, all, total, sizes[chunk], msgs, N), N);
		for (int i = 0; i < N; i++) {
			char key[32];

			snprintf(key, sizeof(key), "key-%d", i);
			cr_assert_eq(msgs[i].type, WIRE_FRAME_REQUEST);
			cr_assert_eq(msgs[i].req->id, (uint64_t)i);
			cr_assert_eq(msgs[i].req->stat->key.len, strlen(key));
			cr_assert_arr_eq(msgs[i].req->stat->key.data, key, strlen(key));
			wire_msg_free(&msgs[i]);
		}
		cr_assert_not(wire_reader_pending(&r));
		wire_reader_fini(&r);
	}
	free(all);
	free(msgs);
}

Test(wire_reader, truncated_frame_stays_pending)
{
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	struct wire_reader r;
	struct wire_msg m = {0};
	size_t len, used;
	uint8_t *buf;

	resp.id = 5;
	resp.message = "partial";
	buf = encode(WIRE_FRAME_RESPONSE, &resp.base, &len);
	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_CLIENT), 0);
	cr_assert_not(wire_reader_pending(&r));

	/* Header only, then all but the last byte: pending, no error. */
	cr_assert_eq(wire_reader_feed(&r, buf, 3, &used, &m), 0);
	cr_assert_eq(used, 3);
	cr_assert(wire_reader_pending(&r));
	cr_assert_eq(wire_reader_feed(&r, buf + 3, len - 4, &used, &m), 0);
	cr_assert_eq(used, len - 4);
	cr_assert(wire_reader_pending(&r));
	cr_assert_eq(wire_reader_feed(&r, buf, 0, &used, &m), 0, "empty feed is fine");
	cr_assert_eq(used, 0);
	cr_assert_eq(wire_reader_feed(&r, NULL, 0, &used, &m), 0, "even with NULL data");
	cr_assert_str_eq(wire_reader_error(&r), "");

	cr_assert_eq(wire_reader_feed(&r, buf + len - 1, 1, &used, &m), 1);
	cr_assert_eq(used, 1);
	cr_assert_eq(m.resp->id, 5);
	cr_assert_str_eq(m.resp->message, "partial");
	cr_assert_not(wire_reader_pending(&r));
	wire_msg_free(&m);
	cr_assert_null(m.resp);
	wire_reader_fini(&r);
	free(buf);
}

/* ---- rejected input ---------------------------------------------------- */

Test(wire_reader, oversize_rejected_before_allocation)
{
	uint8_t hdr[WIRE_HDR_LEN] = {0x7f, 0xff, 0xff, 0xff, WIRE_FRAME_REQUEST};
	struct wire_reader r;
	struct wire_msg m = {0};
	size_t used = 12345;

	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_ANY), 0);
	cr_assert_eq(wire_reader_feed(&r, hdr, sizeof(hdr), &used, &m), -EMSGSIZE);
	cr_assert_eq(used, 12345, "ret_used untouched on failure");
	cr_assert_null(r.buf, "no buffer allocated for the claimed size");
	cr_assert_eq(r.cap, 0);
	cr_assert_neq(strstr(wire_reader_error(&r), "exceeds the limit"), NULL, "%s",
	              wire_reader_error(&r));
	/* Sticky. */
	cr_assert_eq(wire_reader_feed(&r, hdr, 1, &used, &m), -EMSGSIZE);
	wire_reader_fini(&r);

	/* Exactly at a custom limit passes the header check; one above fails. */
	cr_assert_eq(wire_reader_init(&r, 8192, WIRE_ACCEPT_ANY), 0);
	hdr[0] = 0;
	hdr[1] = 0;
	hdr[2] = 0x20;
	hdr[3] = 0x01;
	cr_assert_eq(wire_reader_feed(&r, hdr, sizeof(hdr), &used, &m), -EMSGSIZE);
	cr_assert_null(r.buf);
	wire_reader_fini(&r);
	cr_assert_eq(wire_reader_init(&r, 8192, WIRE_ACCEPT_ANY), 0);
	hdr[3] = 0x00;
	cr_assert_eq(wire_reader_feed(&r, hdr, sizeof(hdr), &used, &m), 0);
	cr_assert(wire_reader_pending(&r));
	wire_reader_fini(&r);

	/* The header parser for blocking callers agrees. */
	enum wire_frame_type t;
	size_t plen;

	hdr[3] = 0x01;
	cr_assert_eq(wire_hdr_parse(hdr, 8192, WIRE_ACCEPT_ANY, &t, &plen), -EMSGSIZE);
	hdr[3] = 0x00;
	cr_assert_eq(wire_hdr_parse(hdr, 8192, WIRE_ACCEPT_ANY, &t, &plen), 0);
	cr_assert_eq(t, WIRE_FRAME_REQUEST);
	cr_assert_eq(plen, 8191);
}

Test(wire_reader, zero_length_and_bad_type)
{
	uint8_t zero[WIRE_HDR_LEN] = {0, 0, 0, 0, WIRE_FRAME_REQUEST};
	uint8_t badtype[WIRE_HDR_LEN] = {0, 0, 0, 3, 0x42};
	uint8_t typezero[WIRE_HDR_LEN] = {0, 0, 0, 3, 0};
	uint8_t wrongdir[WIRE_HDR_LEN] = {0, 0, 0, 3, WIRE_FRAME_RESPONSE};
	struct wire_reader r;
	struct wire_msg m = {0};
	size_t used;

	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_ANY), 0);
	cr_assert_eq(wire_reader_feed(&r, zero, sizeof(zero), &used, &m), -EPROTO);
	cr_assert_neq(strstr(wire_reader_error(&r), "zero length"), NULL);
	wire_reader_fini(&r);

	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_ANY), 0);
	cr_assert_eq(wire_reader_feed(&r, badtype, sizeof(badtype), &used, &m), -EPROTO);
	cr_assert_neq(strstr(wire_reader_error(&r), "unknown frame type"), NULL);
	wire_reader_fini(&r);

	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_ANY), 0);
	cr_assert_eq(wire_reader_feed(&r, typezero, sizeof(typezero), &used, &m), -EPROTO);
	wire_reader_fini(&r);

	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_SERVER), 0);
	cr_assert_eq(wire_reader_feed(&r, wrongdir, sizeof(wrongdir), &used, &m), -EPROTO);
	cr_assert_neq(strstr(wire_reader_error(&r), "not expected"), NULL);
	wire_reader_fini(&r);
}

Test(wire_reader, garbage_payload)
{
	/* Length 6: type + 5 bytes that are not a valid Request (field 1 with
	 * wire type 7, which does not exist). */
	uint8_t bad[] = {0, 0, 0, 6, WIRE_FRAME_REQUEST, 0x0f, 0xff, 0xff, 0xff, 0xff};
	/* Type byte only: an empty Request lacks the required id. */
	uint8_t empty[] = {0, 0, 0, 1, WIRE_FRAME_REQUEST};
	/* Length-delimited field running past the end of the payload. */
	uint8_t overrun[] = {0, 0, 0, 5, WIRE_FRAME_RESPONSE, 0x08, 0x01, 0x1a, 0x7f, 'x'};
	struct wire_reader r;
	struct wire_msg m = {0};
	size_t used;
	uint8_t noise[4096];

	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_ANY), 0);
	cr_assert_eq(wire_reader_feed(&r, bad, sizeof(bad), &used, &m), -EBADMSG);
	cr_assert_neq(strstr(wire_reader_error(&r), "cannot unpack"), NULL);
	cr_assert_null(m.req);
	wire_reader_fini(&r);

	/* Same, fed byte by byte (buffered path). */
	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_ANY), 0);
	for (size_t i = 0; i < sizeof(bad) - 1; i++)
		cr_assert_eq(wire_reader_feed(&r, bad + i, 1, &used, &m), 0);
	cr_assert_eq(wire_reader_feed(&r, bad + sizeof(bad) - 1, 1, &used, &m), -EBADMSG);
	wire_reader_fini(&r);

	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_ANY), 0);
	cr_assert_eq(wire_reader_feed(&r, empty, sizeof(empty), &used, &m), -EBADMSG);
	wire_reader_fini(&r);

	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_ANY), 0);
	cr_assert_eq(wire_reader_feed(&r, overrun, sizeof(overrun), &used, &m), -EBADMSG);
	wire_reader_fini(&r);

	/* Random noise never crashes and ends in one of the documented errors
	 * (or stays pending). */
	srand(1234);
	for (int round = 0; round < 200; round++) {
		int rc = 0;
		size_t pos = 0;

		for (size_t i = 0; i < sizeof(noise); i++)
			noise[i] = (uint8_t)rand();
		noise[0] = 0;
		noise[1] = 0; /* keep most claimed lengths small enough to finish */
		cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_ANY), 0);
		while (pos < sizeof(noise)) {
			rc = wire_reader_feed(&r, noise + pos, sizeof(noise) - pos, &used, &m);
			if (rc < 0)
				break;
			pos += used;
			if (rc == 1)
				wire_msg_free(&m);
		}
		cr_assert(rc >= 0 || rc == -EBADMSG || rc == -EPROTO || rc == -EMSGSIZE, "rc %d",
		          rc);
		wire_reader_fini(&r);
	}
}

Test(wire_reader, init_and_limits)
{
	struct wire_reader r;

	cr_assert_eq(wire_reader_init(&r, 100, WIRE_ACCEPT_ANY), -EINVAL);
	cr_assert_eq(wire_reader_init(&r, WIRE_MAX_FRAME_MAX + 1, WIRE_ACCEPT_ANY), -EINVAL);
	cr_assert_eq(wire_reader_init(&r, 0, 0), -EINVAL);
	cr_assert_eq(wire_reader_init(&r, 0, 1u << 9), -EINVAL);
	cr_assert_eq(wire_reader_init(&r, 0, WIRE_ACCEPT_CLIENT), 0);
	cr_assert_eq(r.max_frame, WIRE_MAX_FRAME_DEFAULT);
	cr_assert_eq(wire_reader_set_limit(&r, 1), -EINVAL);
	cr_assert_eq(wire_reader_set_limit(&r, WIRE_MAX_FRAME_MIN), 0);
	cr_assert_eq(r.max_frame, WIRE_MAX_FRAME_MIN);
	wire_reader_fini(&r);
	wire_reader_fini(NULL);
	wire_msg_free(NULL);
}

/* ---- encoder ----------------------------------------------------------- */

Test(wire_encode, limits_and_checks)
{
	Kvfs__Request req = KVFS__REQUEST__INIT;
	Kvfs__PutRequest put = KVFS__PUT_REQUEST__INIT;
	Kvfs__Response resp = KVFS__RESPONSE__INIT;
	Kvfs__StatResponse sr = KVFS__STAT_RESPONSE__INIT;
	uint8_t small[8], *big = calloc(1, 2 * WIRE_MAX_FRAME_DEFAULT);
	size_t len = 999;
	void *p = NULL;

	req.id = 1;
	req.body_case = KVFS__REQUEST__BODY_PUT;
	req.put = &put;
	put.key = BIN("k");
	put.has_value = 1;
	put.value = (ProtobufCBinaryData){WIRE_MAX_FRAME_DEFAULT, big};

	/* Too big for the default limit, fits a bigger one. */
	cr_assert_eq(wire_encode(WIRE_FRAME_REQUEST, &req.base, 0, big, 2 * WIRE_MAX_FRAME_DEFAULT,
	                         &len),
	             -EMSGSIZE);
	cr_assert_eq(len, 999);
	cr_assert_eq(wire_encode_alloc(WIRE_FRAME_REQUEST, &req.base, 0, &p, &len), -EMSGSIZE);
	cr_assert_null(p);
	cr_assert_eq(wire_encode_alloc(WIRE_FRAME_REQUEST, &req.base, 2 * WIRE_MAX_FRAME_DEFAULT,
	                               &p, &len),
	             0);
	cr_assert_eq(len, wire_frame_size(&req.base));
	free(p);

	/* Inline values up to WIRE_MAX_INLINE_DEFAULT fit a default frame with
	 * a longest key. */
	put.value.len = WIRE_MAX_INLINE_DEFAULT;
	put.key = (ProtobufCBinaryData){KV_KEY_MAX, big + 1};
	put.has_mode = put.has_mtime_ns = put.has_if_version = put.has_length = 1;
	put.mode = 0777;
	put.mtime_ns = INT64_MIN;
	put.if_version = UINT64_MAX;
	put.length = WIRE_MAX_INLINE_DEFAULT;
	req.id = UINT64_MAX;
	cr_assert_eq(wire_encode_alloc(WIRE_FRAME_REQUEST, &req.base, 0, &p, &len), 0);
	free(p);

	/* Caller buffer too small. */
	put.value.len = 100;
	cr_assert_eq(wire_encode(WIRE_FRAME_REQUEST, &req.base, 0, small, sizeof(small), &len),
	             -ENOSPC);

	/* Type and message disagree. */
	cr_assert_eq(
	        wire_encode(WIRE_FRAME_RESPONSE, &req.base, 0, big, WIRE_MAX_FRAME_DEFAULT, &len),
	        -EINVAL);

	/* A required field missing (StatResponse.entry) is refused. */
	resp.id = 1;
	resp.body_case = KVFS__RESPONSE__BODY_STAT;
	resp.stat = &sr;
	cr_assert_eq(wire_encode_alloc(WIRE_FRAME_RESPONSE, &resp.base, 0, &p, &len), -EINVAL);
	free(big);
}

Test(wire_encode, header_layout)
{
	Kvfs__Request req = KVFS__REQUEST__INIT;
	Kvfs__StatsRequest sr = KVFS__STATS_REQUEST__INIT;
	uint8_t buf[64];
	size_t len;

	req.id = 1;
	req.body_case = KVFS__REQUEST__BODY_STATS;
	req.stats = &sr;
	cr_assert_eq(wire_encode(WIRE_FRAME_REQUEST, &req.base, 0, buf, sizeof(buf), &len), 0);
	/* id=1 (08 01) + empty stats (92 01 00) = 5 bytes of payload. */
	cr_assert_eq(len, WIRE_HDR_LEN + 5);
	cr_assert_eq(buf[0], 0);
	cr_assert_eq(buf[1], 0);
	cr_assert_eq(buf[2], 0);
	cr_assert_eq(buf[3], 6, "length counts type + payload");
	cr_assert_eq(buf[4], WIRE_FRAME_REQUEST);
	cr_assert_eq(buf[5], 0x08);
	cr_assert_eq(buf[6], 0x01);
}

/* ---- status codes ------------------------------------------------------ */

Test(wire_status, errno_mapping_both_ways)
{
	static const struct {
		int32_t st;
		int err;
	} pairs[] = {
	        {KVFS__STATUS__OK, 0},
	        {KVFS__STATUS__NOT_FOUND, ENOENT},
	        {KVFS__STATUS__EXISTS, EEXIST},
	        {KVFS__STATUS__VERSION_MISMATCH, ESTALE},
	        {KVFS__STATUS__NO_SPACE, ENOSPC},
	        {KVFS__STATUS__TOO_BIG, EFBIG},
	        {KVFS__STATUS__NAME_TOO_LONG, ENAMETOOLONG},
	        {KVFS__STATUS__INVALID, EINVAL},
	        {KVFS__STATUS__BUSY, EAGAIN},
	        {KVFS__STATUS__AUTH, EACCES},
	        {KVFS__STATUS__UNSUPPORTED, ENOTSUP},
	        {KVFS__STATUS__IO, EIO},
	        {KVFS__STATUS__STALE, ECONNRESET},
	        {KVFS__STATUS__TIMEOUT, ETIMEDOUT},
	        {KVFS__STATUS__NOT_EMPTY, ENOTEMPTY},
	        {KVFS__STATUS__NO_MEMORY, ENOMEM},
	        {KVFS__STATUS__CANCELED, ECANCELED},
	        {KVFS__STATUS__PROTOCOL, EPROTO},
	};

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		cr_assert_eq(wire_status_to_errno(pairs[i].st), -pairs[i].err, "%s",
		             wire_status_name(pairs[i].st));
		cr_assert_eq(wire_errno_to_status(-pairs[i].err), pairs[i].st, "%s",
		             wire_status_name(pairs[i].st));
		cr_assert_eq(wire_errno_to_status(pairs[i].err), pairs[i].st, "positive errno");
		cr_assert_str_neq(wire_status_name(pairs[i].st), "UNKNOWN");
	}
	/* Every code of the enum is covered by the table above or is INTERNAL. */
	cr_assert_eq(sizeof(pairs) / sizeof(pairs[0]) + 1, kvfs__status__descriptor.n_values);

	/* One-way mappings. */
	cr_assert_eq(wire_status_to_errno(KVFS__STATUS__INTERNAL), -EIO);
	cr_assert_eq(wire_errno_to_status(-EBUSY), KVFS__STATUS__BUSY);
	cr_assert_eq(wire_errno_to_status(-EPERM), KVFS__STATUS__AUTH);
	cr_assert_eq(wire_errno_to_status(-ENOSYS), KVFS__STATUS__UNSUPPORTED);
	cr_assert_eq(wire_errno_to_status(-EOPNOTSUPP), KVFS__STATUS__UNSUPPORTED);
	cr_assert_eq(wire_errno_to_status(-EXDEV), KVFS__STATUS__INTERNAL);
	cr_assert_eq(wire_status_to_errno(12345), -EIO, "unknown code from a newer peer");
	cr_assert_eq(wire_status_to_errno(-1), -EIO);
	cr_assert_str_eq(wire_status_name(12345), "UNKNOWN");
	cr_assert_str_eq(wire_status_name(KVFS__STATUS__VERSION_MISMATCH), "VERSION_MISMATCH");
}

/* ---- keys, descriptors, request checks --------------------------------- */

Test(wire_key, check)
{
	char *k = malloc(KV_KEY_MAX + 1);

	memset(k, 'a', KV_KEY_MAX + 1);
	cr_assert_eq(wire_key_check(k, KV_KEY_MAX), 0);
	cr_assert_eq(wire_key_check(k, KV_KEY_MAX + 1), -ENAMETOOLONG);
	cr_assert_eq(wire_key_check(k, 1), 0);
	cr_assert_eq(wire_key_check(k, 0), -EINVAL);
	cr_assert_eq(wire_key_check(NULL, 3), -EINVAL);
	cr_assert_eq(wire_key_check("a\0b", 3), -EINVAL);
	cr_assert_eq(wire_key_check("\0", 1), -EINVAL);
	free(k);
}

/* The key policy (wire.h "Keys"): every shape kvfs, kvctl and kv-bench make
 * passes; the rest is refused with a reason. */
Test(wire_key, policy)
{
	static const char *const good[] = {
	        "a",
	        "a/b/c",
	        "dir/",
	        "a/b/",
	        "kvbench/00000001",
	        ".hidden",
	        "a/.hidden",
	        "..x",
	        "a/...",
	        "a b/c d",
	        "caf\xc3\xa9",
	        "\xe2\x82\xac",
	        "\xf0\x9f\x98\x80",
	        "\xef\xbf\xbf",
	        "a~/b-c_d.e",
	        /* any byte but NUL and '/', as in a Linux file name */
	        "a\x01",
	        "a\nb",
	        "a\tb",
	        "a\x1f",
	        "a\x7f",
	        "\xff",
	        "\xc3",
	        "\xc0\xaf",
	        "\xed\xa0\x80",
	        "\x80",
	        "a\xe2\x82",
	        "\x1b[31mred",
	};
	static const struct {
		const char *key;
		const char *why; /* a word of the reason */
	} bad[] = {
	        {"/a", "empty"}, {"a//b", "empty"}, {"a//", "empty"}, {"/", "empty"},
	        {".", "'.'"},    {"..", "'.'"},     {"a/.", "'.'"},   {"a/..", "'.'"},
	        {"./a", "'.'"},  {"a/../b", "'.'"}, {"../", "'.'"},   {"a/\n/..", "'.'"},
	};
	const char *why;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		cr_assert_eq(wire_key_validate(good[i], strlen(good[i]), 0, &why), 0,
		             "'%s' refused: %s", good[i], why);
		cr_assert_str_eq(why, "ok");
		cr_assert_eq(wire_key_check(good[i], strlen(good[i])), 0);
		cr_assert_eq(wire_key_validate(good[i], strlen(good[i]), WIRE_KEY_PREFIX, NULL), 0,
		             "prefix '%s'", good[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(wire_key_validate(bad[i].key, strlen(bad[i].key), 0, &why), -EINVAL,
		             "bad key #%zu accepted", i);
		cr_assert_not_null(strstr(why, bad[i].why), "#%zu: reason '%s'", i, why);
		cr_assert_eq(wire_key_check(bad[i].key, strlen(bad[i].key)), -EINVAL);
	}
	cr_assert_eq(wire_key_validate("a\0b", 3, 0, &why), -EINVAL);
	cr_assert_not_null(strstr(why, "NUL"));
	cr_assert_eq(wire_key_validate("", 0, 0, &why), -EINVAL);
	cr_assert_not_null(strstr(why, "empty"));

	/* Prefixes: may be empty, the last component may be partial. */
	cr_assert_eq(wire_key_validate("", 0, WIRE_KEY_PREFIX, NULL), 0);
	cr_assert_eq(wire_key_validate(NULL, 0, WIRE_KEY_PREFIX, NULL), 0);
	cr_assert_eq(wire_key_validate("a/.", 3, WIRE_KEY_PREFIX, NULL), 0);
	cr_assert_eq(wire_key_validate("a/..", 4, WIRE_KEY_PREFIX, NULL), 0);
	cr_assert_eq(wire_key_validate(".", 1, WIRE_KEY_PREFIX, NULL), 0);
	cr_assert_eq(wire_key_validate("a\xe2\x82", 3, WIRE_KEY_PREFIX, NULL), 0, "cut char");
	cr_assert_eq(wire_key_validate("a\xe2\x28", 3, WIRE_KEY_PREFIX, NULL), 0);
	cr_assert_eq(wire_key_validate("/", 1, WIRE_KEY_PREFIX, NULL), -EINVAL);
	cr_assert_eq(wire_key_validate("a//", 3, WIRE_KEY_PREFIX, NULL), -EINVAL);
	cr_assert_eq(wire_key_validate("../a", 4, WIRE_KEY_PREFIX, NULL), -EINVAL);
	cr_assert_eq(wire_key_validate("./", 2, WIRE_KEY_PREFIX, NULL), -EINVAL);
	cr_assert_eq(wire_key_validate("a\x01", 2, WIRE_KEY_PREFIX, NULL), 0);
	cr_assert_eq(wire_key_validate("a/\0", 3, WIRE_KEY_PREFIX, NULL), -EINVAL);
}

Test(wire_desc, conversions)
{
	struct xfer_desc d = {.addr = 0x1000, .len = 4096, .key = 0xabcdef0123456789ULL}, d2;
	struct xfer_rsge rs[3], out;
	Kvfs__Desc md;
	Kvfs__Segment seg = KVFS__SEGMENT__INIT;
	Kvfs__Segment **segs;
	uint64_t total;
	size_t n = 77;

	wire_desc_from_xfer(&md, &d);
	cr_assert_eq(md.addr, d.addr);
	cr_assert_eq(md.key, d.key);
	wire_desc_to_xfer(&md, &d2);
	cr_assert_arr_eq(&d2, &d, sizeof(d));

	seg.desc = &md;
	seg.length = 4096;
	cr_assert_eq(wire_seg_to_rsge(&seg, &out), 0);
	cr_assert_eq(out.off, 0);
	cr_assert_eq(out.len, 4096);
	seg.has_offset = 1;
	seg.offset = 1;
	cr_assert_eq(wire_seg_to_rsge(&seg, &out), -EINVAL, "runs past the region");
	seg.offset = UINT64_MAX;
	seg.length = 2;
	cr_assert_eq(wire_seg_to_rsge(&seg, &out), -EINVAL, "overflow");
	seg.offset = 0;
	seg.length = 0;
	cr_assert_eq(wire_seg_to_rsge(&seg, &out), -EINVAL, "empty");
	seg.desc = NULL;
	seg.length = 1;
	cr_assert_eq(wire_seg_to_rsge(&seg, &out), -EINVAL, "no desc");

	for (int i = 0; i < 3; i++) {
		rs[i].desc = d;
		rs[i].off = (uint64_t)i * 1024;
		rs[i].len = 1024;
	}
	segs = wire_segs_new(rs, 3);
	cr_assert_not_null(segs);
	cr_assert_eq(wire_segs_to_rsge(segs, 3, rs, 2, &n, &total), -ENOSPC);
	cr_assert_eq(n, 77);
	cr_assert_eq(segs[0]->has_offset, 0);
	cr_assert_eq(segs[2]->offset, 2048);
	segs[1]->length = UINT64_MAX;
	cr_assert_eq(wire_segs_to_rsge(segs, 3, rs, 3, &n, &total), -EINVAL);
	wire_segs_free(segs);
	cr_assert_null(wire_segs_new(rs, 0));
	wire_segs_free(NULL);
}

Test(wire_check, request_semantics)
{
	struct xfer_rsge rs = {.desc = {.addr = 0, .len = 100, .key = 1}, .off = 0, .len = 100};
	Kvfs__Request req = KVFS__REQUEST__INIT;
	Kvfs__PutRequest put = KVFS__PUT_REQUEST__INIT;
	Kvfs__GetRequest get = KVFS__GET_REQUEST__INIT;
	Kvfs__RenameRequest ren = KVFS__RENAME_REQUEST__INIT;
	Kvfs__HelloRequest h = KVFS__HELLO_REQUEST__INIT;
	char longkey[KV_KEY_MAX + 1];
	const char *why = NULL;

	cr_assert_eq(wire_request_check(&req, &why), -ENOTSUP, "no body");
	cr_assert_not_null(why);

	req.body_case = KVFS__REQUEST__BODY_PUT;
	req.put = &put;
	put.key = BIN("k");
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "neither value nor src");
	put.has_value = 1;
	put.value = BIN("v");
	put.src = wire_segs_new(&rs, 1);
	put.n_src = 1;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "both value and src");
	put.has_value = 0;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "src without length");
	put.has_length = 1;
	put.length = 99;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "length != sum");
	put.length = 100;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	put.has_if_absent = put.if_absent = 1;
	put.has_if_version = 1;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "if_absent + if_version");
	put.has_if_absent = 0;
	memset(longkey, 'x', sizeof(longkey));
	put.key = (ProtobufCBinaryData){sizeof(longkey), (uint8_t *)longkey};
	cr_assert_eq(wire_request_check(&req, &why), -ENAMETOOLONG);
	put.key = BIN("a\0b");
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL);
	put.key = BIN("a/../b");
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL);
	cr_assert_str_eq(why, "PUT: key has a '.' or '..' path component");
	wire_segs_free(put.src);

	req.body_case = KVFS__REQUEST__BODY_GET;
	req.get = &get;
	get.key = BIN("k");
	get.dst = wire_segs_new(&rs, 1);
	get.n_dst = 1;
	get.has_want_inline = get.want_inline = 1;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "dst + inline");
	get.want_inline = 0;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	get.dst[0]->length = 101;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "segment past region");
	wire_segs_free(get.dst);

	req.body_case = KVFS__REQUEST__BODY_RENAME;
	req.rename = &ren;
	ren.src = BIN("a");
	ren.dst = (ProtobufCBinaryData){0, NULL};
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "empty dst");
	ren.dst = BIN("b//c");
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "dst with //");
	cr_assert_str_eq(why, "RENAME: destination key has an empty path component (leading '/' "
	                      "or '//')");
	ren.src = BIN("./x");
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL);
	cr_assert_not_null(strstr(why, "RENAME: source key has a '.'"), "%s", why);

	{
		Kvfs__ListRequest lr = KVFS__LIST_REQUEST__INIT;

		req.body_case = KVFS__REQUEST__BODY_LIST;
		req.list = &lr;
		lr.has_prefix = lr.has_delimiter = lr.has_start_after = 1;
		lr.prefix = (ProtobufCBinaryData){0, NULL};
		lr.delimiter = BIN("/");
		lr.start_after = BIN("a/.");
		cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
		lr.prefix = BIN("d/");
		cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
		lr.prefix = BIN("/d");
		cr_assert_eq(wire_request_check(&req, &why), -EINVAL);
		cr_assert_not_null(strstr(why, "LIST: prefix key has an empty"), "%s", why);
		lr.prefix = BIN("d/");
		lr.delimiter = BIN("//");
		cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "two-byte delimiter");
		lr.delimiter = BIN("/");
		lr.start_after = BIN("x\x7f"); /* any byte but NUL */
		cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
		lr.start_after = BIN("x//");
		cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "start_after");
	}

	req.body_case = KVFS__REQUEST__BODY_HELLO;
	req.hello = &h;
	h.min_version = 2;
	h.max_version = 1;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL);
}

/* kv-server's handlers (src/server/request.c) check none of these: they
 * rely on wire_request_check() having refused each one before dispatch. */
Test(wire_check, refusals_the_server_relies_on)
{
	static Kvfs__Segment *many[WIRE_MAX_SEGS + 1];
	struct xfer_rsge rs = {.desc = {.addr = 0, .len = 100, .key = 1}, .off = 0, .len = 100};
	Kvfs__Request req = KVFS__REQUEST__INIT;
	Kvfs__PutRequest put = KVFS__PUT_REQUEST__INIT;
	Kvfs__GetRequest get = KVFS__GET_REQUEST__INIT;
	Kvfs__ListRequest list = KVFS__LIST_REQUEST__INIT;
	Kvfs__HelloRequest h = KVFS__HELLO_REQUEST__INIT;
	Kvfs__Segment **src = wire_segs_new(&rs, 1);
	const char *why = NULL;

	req.body_case = KVFS__REQUEST__BODY_PUT;
	req.put = &put;
	put.key = BIN("k");
	/* PUT inline */
	put.has_value = 1;
	put.value = BIN("value");
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	put.has_length = 1;
	put.length = 4;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "length is not the value's");
	cr_assert_str_eq(why, "PUT: length differs from the inline value's");
	put.length = 5;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	put.has_if_absent = put.if_absent = 1;
	put.has_if_version = 1;
	put.if_version = 7;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "if_absent with if_version");
	put.has_if_absent = put.if_absent = put.has_if_version = 0;
	put.src = src;
	put.n_src = 1;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "value and src");
	/* PUT from segments */
	put.has_value = 0;
	put.has_length = 0;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "src without length");
	put.has_length = 1;
	put.length = 100;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	put.length = 0;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "length 0 with src");
	put.length = 100;
	src[0]->length = 0;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "empty segment");
	cr_assert_str_eq(why, "PUT: bad src segment");
	src[0]->length = 100;
	src[0]->has_offset = 1;
	src[0]->offset = 1;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "segment past its region");
	src[0]->has_offset = 0;
	for (size_t i = 0; i < KV_ARRAY_SIZE(many); i++)
		many[i] = src[0];
	put.src = many;
	put.n_src = KV_ARRAY_SIZE(many);
	put.length = 100 * KV_ARRAY_SIZE(many);
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "more than WIRE_MAX_SEGS");
	put.n_src = WIRE_MAX_SEGS;
	put.length = 100 * WIRE_MAX_SEGS;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	put.n_src = 0;
	put.has_length = 0;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "neither value nor src");

	/* GET into segments */
	req.body_case = KVFS__REQUEST__BODY_GET;
	req.get = &get;
	get.key = BIN("k");
	get.dst = src;
	get.n_dst = 1;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	src[0]->desc->len = 99;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "segment past its region");
	cr_assert_str_eq(why, "GET: bad dst segment");
	src[0]->desc->len = 100;
	get.dst = many;
	get.n_dst = KV_ARRAY_SIZE(many);
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "more than WIRE_MAX_SEGS");

	/* LIST delimiter */
	req.body_case = KVFS__REQUEST__BODY_LIST;
	req.list = &list;
	list.has_delimiter = 1;
	list.delimiter = BIN("/");
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	list.delimiter = BIN("ab");
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "two-byte delimiter");

	/* HELLO versions */
	req.body_case = KVFS__REQUEST__BODY_HELLO;
	req.hello = &h;
	h.min_version = h.max_version = 1;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	h.min_version = 2;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "min_version above max_version");

	/* A body without a handler */
	req.body_case = (Kvfs__Request__BodyCase)99;
	cr_assert_eq(wire_request_check(&req, &why), -ENOTSUP, "unknown body");
	wire_segs_free(src);
}

/* An unknown oneof member from a newer peer decodes with body unset. */
/* Owner, type and extended attributes: bounds a hostile client cannot pass. */
Test(wire_check, owner_symlink_and_xattr_refusals)
{
	static uint8_t big[WIRE_XATTR_VALUE_MAX + 1];
	Kvfs__Request req = KVFS__REQUEST__INIT;
	Kvfs__PutRequest put = KVFS__PUT_REQUEST__INIT;
	Kvfs__GetXattrRequest gx = KVFS__GET_XATTR_REQUEST__INIT;
	Kvfs__SetXattrRequest sx = KVFS__SET_XATTR_REQUEST__INIT;
	Kvfs__ListXattrRequest lx = KVFS__LIST_XATTR_REQUEST__INIT;
	char name[WIRE_XATTR_NAME_MAX + 1];
	const char *why = NULL;

	req.body_case = KVFS__REQUEST__BODY_PUT;
	req.put = &put;
	put.key = BIN("k");
	put.has_value = 1;
	put.value = BIN("target");
	put.has_uid = 1;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "uid without gid");
	cr_assert_str_eq(why, "PUT: uid and gid go together");
	put.has_gid = 1;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	put.has_type = 1;
	put.type = 2;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "unknown type");
	put.type = KVFS__KEY_TYPE__SYMLINK;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	put.value = (ProtobufCBinaryData){.data = (uint8_t *)"a\0b", .len = 3};
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "a NUL in a target");
	put.value = (ProtobufCBinaryData){.data = big, .len = WIRE_SYMLINK_MAX + 1};
	memset(big, 'x', sizeof(big));
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "a target of 4096 bytes");
	put.value.len = WIRE_SYMLINK_MAX;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	put.value.len = 0;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "an empty target");

	req.body_case = KVFS__REQUEST__BODY_GETXATTR;
	req.getxattr = &gx;
	gx.key = BIN("k");
	gx.name = BIN("");
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "empty name");
	memset(name, 'n', sizeof(name));
	gx.name = (ProtobufCBinaryData){.data = (uint8_t *)name, .len = WIRE_XATTR_NAME_MAX + 1};
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "a name of 256 bytes");
	gx.name.len = WIRE_XATTR_NAME_MAX;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	gx.name = (ProtobufCBinaryData){.data = (uint8_t *)"user.\0", .len = 6};
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "a NUL in a name");
	gx.name = BIN("user.a");
	gx.key = BIN("a//b");
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "its key is checked");
	cr_assert(wire_reason_is_key(why));

	req.body_case = KVFS__REQUEST__BODY_SETXATTR;
	req.setxattr = &sx;
	sx.key = BIN("k");
	sx.name = BIN("user.a");
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "no value, no remove");
	sx.has_value = 1;
	sx.value = (ProtobufCBinaryData){.data = big, .len = WIRE_XATTR_VALUE_MAX + 1};
	cr_assert_eq(wire_request_check(&req, &why), -EFBIG, "a value above 64 KiB");
	sx.value.len = WIRE_XATTR_VALUE_MAX;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
	sx.has_create = sx.create = sx.has_replace = sx.replace = 1;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "create and replace");
	sx.has_create = sx.create = sx.has_replace = sx.replace = 0;
	sx.has_remove = sx.remove = 1;
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "remove with a value");
	sx.has_value = 0;
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);

	req.body_case = KVFS__REQUEST__BODY_LISTXATTR;
	req.listxattr = &lx;
	lx.key = BIN("k/.");
	cr_assert_eq(wire_request_check(&req, &why), -EINVAL, "its key is checked");
	lx.key = BIN("k");
	cr_assert_eq(wire_request_check(&req, &why), 0, "%s", why);
}

Test(wire_compat, unknown_body_field)
{
	/* id=3 (08 03), field 99 length-delimited, 2 bytes. */
	uint8_t frame[] = {0, 0, 0, 8, WIRE_FRAME_REQUEST, 0x08, 0x03, 0x9a, 0x06, 0x02, 'h', 'i'};
	const char *why;
	struct wire_msg m = decode_one(frame, sizeof(frame));

	cr_assert_eq(m.req->id, 3);
	cr_assert_eq(m.req->body_case, KVFS__REQUEST__BODY__NOT_SET);
	cr_assert_eq(wire_request_check(m.req, &why), -ENOTSUP);
	wire_msg_free(&m);
}
