/* SPDX-License-Identifier: MIT */
/*
 * Fuzz the frame decoder (struct wire_reader, src/wire/wire.c).
 *
 * Input: byte 0 picks the accepted frame types and the frame limit, byte 1
 * seeds the chunking, the rest is the byte stream a peer sends.
 *
 * The stream is decoded twice: fed in one piece and fed in pseudo-random
 * chunks of 1..64 bytes.  Both must give the same frames and end the same
 * way (same error, or the same partial frame pending).  Every decoded frame
 * must re-encode (wire_encode_alloc), and re-encoding is a fixpoint: decode
 * the re-encoded payload and encode it again, same bytes.  Requests also go
 * through wire_request_check() and their segment lists through
 * wire_segs_to_rsge(), as the server does.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "kvfs/log.h"
#include "kvfs/wire.h"

/* What one decoding pass saw. */
struct trace {
	uint8_t *buf; /* re-encoded frames, back to back */
	size_t len, cap;
	unsigned frames;
	int err;      /* sticky reader error, 0 if none */
	bool pending; /* a partial frame at the end */
};

static const unsigned accepts[] = {
        WIRE_ACCEPT_SERVER,
        WIRE_ACCEPT_CLIENT,
        WIRE_ACCEPT_ANY,
        1u << WIRE_FRAME_RESPONSE,
        1u << WIRE_FRAME_SERVER_HELLO,
};
static const size_t limits[] = {0, WIRE_MAX_FRAME_MIN, 65536, WIRE_MAX_FRAME_MAX};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	kv_log_level = getenv("KVFS_FUZZ_LOG") ? KV_LOG_DEBUG : KV_LOG_ERR;
	return 0;
}

static void trace_add(struct trace *t, const void *p, size_t n)
{
	if (t->len + n > t->cap) {
		size_t ncap = t->cap ? t->cap : 4096;

		while (ncap < t->len + n)
			ncap *= 2;
		t->buf = realloc(t->buf, ncap);
		CHECK(t->buf);
		t->cap = ncap;
	}
	memcpy(t->buf + t->len, p, n);
	t->len += n;
}

/* The checks the server runs on a request must not trip on anything that
 * decodes. */
static void check_request(const Kvfs__Request *rq)
{
	const char *why = NULL;
	struct xfer_rsge rs[8];
	size_t n = 0;
	uint64_t total = 0;
	int r = wire_request_check(rq, &why);

	CHECK(why && (r == 0 || r == -EINVAL || r == -ENAMETOOLONG || r == -ENOTSUP));
	if (rq->body_case == KVFS__REQUEST__BODY_PUT && rq->put->n_src <= 8) {
		r = wire_segs_to_rsge(rq->put->src, rq->put->n_src, rs, 8, &n, &total);
		CHECK(r < 0 || n == rq->put->n_src);
	}
	if (rq->body_case == KVFS__REQUEST__BODY_GET && rq->get->n_dst <= 8) {
		r = wire_segs_to_rsge(rq->get->dst, rq->get->n_dst, rs, 8, &n, &total);
		CHECK(r < 0 || n == rq->get->n_dst);
	}
}

static const ProtobufCMessage *msg_base(const struct wire_msg *m)
{
	switch (m->type) {
	case WIRE_FRAME_REQUEST:
		return &m->req->base;
	case WIRE_FRAME_RESPONSE:
		return &m->resp->base;
	case WIRE_FRAME_SERVER_HELLO:
		return &m->shel->base;
	}
	CHECK(!"decoded frame of unknown type");
	return NULL;
}

/*
 * libprotobuf-c 1.4.1 accepts field number 0 when its tag takes more than one
 * byte (0x80 0x00) and keeps it as an unknown field, but rejects the one-byte
 * form (0x00) it writes back, so such a message does not survive a round
 * trip.  Harmless to kvfs (unknown fields are ignored and received messages
 * are never forwarded), see docs/reliability.md; spot it to skip that check.
 */
static bool has_field0(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;

	for (unsigned i = 0; i < m->n_unknown_fields; i++)
		if (m->unknown_fields[i].tag == 0)
			return true;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const uint8_t *p = (const uint8_t *)m + f->offset;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)((const uint8_t *)m + f->quantifier_offset);
			ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)p;

			for (size_t j = 0; j < n; j++)
				if (has_field0(v[j]))
					return true;
		} else {
			const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)p;

			/* A oneof member is set only when the case says so. */
			if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
			    *(const uint32_t *)((const uint8_t *)m + f->quantifier_offset) != f->id)
				continue;
			if (sub && has_field0(sub))
				return true;
		}
	}
	return false;
}

/* Re-encode @m, check the fixpoint and append the bytes to @t. */
static void record(struct trace *t, const struct wire_msg *m)
{
	struct wire_msg m2;
	void *b1, *b2;
	size_t l1, l2;
	enum wire_frame_type type;
	size_t plen;

	if (m->type == WIRE_FRAME_REQUEST)
		check_request(m->req);
	if (m->type == WIRE_FRAME_RESPONSE)
		CHECK(wire_status_name(m->resp->status) &&
		      wire_status_to_errno(m->resp->status) <= 0);

	CHECK(wire_encode_alloc(m->type, msg_base(m), WIRE_MAX_FRAME_MAX, &b1, &l1) == 0);
	CHECK(l1 == wire_frame_size(msg_base(m)));
	CHECK(wire_hdr_parse(b1, WIRE_MAX_FRAME_MAX, WIRE_ACCEPT_ANY, &type, &plen) == 0);
	CHECK(type == m->type && plen + WIRE_HDR_LEN == l1);
	if (!has_field0(msg_base(m))) {
		CHECK(wire_payload_decode(type, (uint8_t *)b1 + WIRE_HDR_LEN, plen, &m2) == 0);
		CHECK(wire_encode_alloc(m2.type, msg_base(&m2), WIRE_MAX_FRAME_MAX, &b2, &l2) == 0);
		CHECK(l1 == l2 && !memcmp(b1, b2, l1));
		wire_msg_free(&m2);
		free(b2);
	}

	trace_add(t, b1, l1);
	free(b1);
	t->frames++;
}

/* Decode @p in chunks: the whole rest when @seed is 0, else 1..64 bytes. */
static void decode(const uint8_t *p, size_t n, unsigned accept, size_t limit, uint32_t seed,
                   struct trace *t)
{
	struct wire_reader r;
	size_t off = 0;

	memset(t, 0, sizeof(*t));
	CHECK(wire_reader_init(&r, limit, accept) == 0);
	while (off < n) {
		size_t chunk = seed ? 1 + fuzz_rand(&seed) % 64 : n - off, coff = 0;

		if (chunk > n - off)
			chunk = n - off;
		for (;;) {
			struct wire_msg m = {0};
			size_t used = (size_t)-1;
			int rc = wire_reader_feed(&r, p + off + coff, chunk - coff, &used, &m);

			if (rc < 0) {
				size_t u2 = (size_t)-1;

				CHECK(used == (size_t)-1 && m.req == NULL);
				CHECK(wire_reader_error(&r)[0] != '\0');
				/* Sticky. */
				CHECK(wire_reader_feed(&r, p, n, &u2, &m) == rc &&
				      u2 == (size_t)-1);
				t->err = rc;
				goto out;
			}
			CHECK(used <= chunk - coff);
			coff += used;
			if (rc == 0) {
				CHECK(coff == chunk);
				break;
			}
			CHECK(rc == 1 && used > 0 && (accept & (1u << m.type)));
			record(t, &m);
			wire_msg_free(&m);
		}
		off += chunk;
	}
	t->pending = wire_reader_pending(&r);
out:
	wire_reader_fini(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct trace whole, chunked;
	unsigned accept;
	size_t limit;

	if (size < 2)
		return 0;
	accept = accepts[data[0] % (sizeof(accepts) / sizeof(accepts[0]))];
	limit = limits[(data[0] >> 4) % (sizeof(limits) / sizeof(limits[0]))];

	decode(data + 2, size - 2, accept, limit, 0, &whole);
	decode(data + 2, size - 2, accept, limit, data[1] | 0x100u, &chunked);
	CHECK(whole.frames == chunked.frames);
	CHECK(whole.err == chunked.err);
	CHECK(whole.pending == chunked.pending);
	CHECK(whole.len == chunked.len &&
	      (!whole.len || !memcmp(whole.buf, chunked.buf, whole.len)));
	free(whole.buf);
	free(chunked.buf);
	return 0;
}
