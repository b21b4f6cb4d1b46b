/* SPDX-License-Identifier: MIT */
/*
 * Frame codec for the kvfs control channel: see src/include/kvfs/wire.h for the
 * contracts and docs/protocol.md for the protocol.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfs/log.h"
#include "kvfs/util.h"
#include "kvfs/wire.h"

#define WIRE_TAG "wire"

/* A partial-frame buffer larger than this is freed once its frame is done,
 * so one big frame does not pin memory for the life of the connection. */
#define WIRE_READER_KEEP ((size_t)(64 * 1024))

_Static_assert(WIRE_MAX_INLINE_DEFAULT + KV_KEY_MAX + 1024 <= WIRE_MAX_FRAME_DEFAULT,
               "a default inline PUT must fit a default frame");

static const ProtobufCMessageDescriptor *wire_type_desc(unsigned type)
{
	switch (type) {
	case WIRE_FRAME_REQUEST:
		return &kvfs__request__descriptor;
	case WIRE_FRAME_RESPONSE:
		return &kvfs__response__descriptor;
	case WIRE_FRAME_SERVER_HELLO:
		return &kvfs__server_hello__descriptor;
	}
	return NULL;
}

static size_t wire_limit(size_t max_frame)
{
	return max_frame ? max_frame : WIRE_MAX_FRAME_DEFAULT;
}

static void wire_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t wire_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void wire_msg_free(struct wire_msg *msg)
{
	if (!msg)
		return;
	switch (msg->type) {
	case WIRE_FRAME_REQUEST:
		if (msg->req)
			kvfs__request__free_unpacked(msg->req, NULL);
		break;
	case WIRE_FRAME_RESPONSE:
		if (msg->resp)
			kvfs__response__free_unpacked(msg->resp, NULL);
		break;
	case WIRE_FRAME_SERVER_HELLO:
		if (msg->shel)
			kvfs__server_hello__free_unpacked(msg->shel, NULL);
		break;
	}
	memset(msg, 0, sizeof(*msg));
}

/* ---- encoding ---------------------------------------------------------- */

size_t wire_frame_size(const ProtobufCMessage *msg)
{
	return WIRE_HDR_LEN + protobuf_c_message_get_packed_size(msg);
}

/* Check @msg against @type and the limit; returns 0 and the payload size. */
static int wire_encode_check(enum wire_frame_type type, const ProtobufCMessage *msg,
                             size_t max_frame, size_t *ret_payload)
{
	const ProtobufCMessageDescriptor *desc = wire_type_desc(type);
	size_t payload;

	if (!desc || !msg || msg->descriptor != desc)
		return -EINVAL;
	if (!protobuf_c_message_check(msg)) {
		KV_DEBUG(WIRE_TAG, "refusing to encode %s: a required field is missing",
		         desc->short_name);
		return -EINVAL;
	}
	payload = protobuf_c_message_get_packed_size(msg);
	if (payload + 1 > wire_limit(max_frame) || payload + 1 > UINT32_MAX)
		return -EMSGSIZE;
	*ret_payload = payload;
	return 0;
}

static void wire_encode_into(enum wire_frame_type type, const ProtobufCMessage *msg, size_t payload,
                             uint8_t *buf)
{
	wire_put_be32(buf, (uint32_t)(payload + 1));
	buf[4] = (uint8_t)type;
	protobuf_c_message_pack(msg, buf + WIRE_HDR_LEN);
}

int wire_encode(enum wire_frame_type type, const ProtobufCMessage *msg, size_t max_frame, void *buf,
                size_t cap, size_t *ret_len)
{
	size_t payload;
	int rc;

	rc = wire_encode_check(type, msg, max_frame, &payload);
	if (rc)
		return rc;
	if (!buf || cap < WIRE_HDR_LEN + payload)
		return -ENOSPC;
	wire_encode_into(type, msg, payload, buf);
	*ret_len = WIRE_HDR_LEN + payload;
	return 0;
}

int wire_encode_alloc(enum wire_frame_type type, const ProtobufCMessage *msg, size_t max_frame,
                      void **ret_buf, size_t *ret_len)
{
	size_t payload;
	uint8_t *buf;
	int rc;

	rc = wire_encode_check(type, msg, max_frame, &payload);
	if (rc)
		return rc;
	buf = malloc(WIRE_HDR_LEN + payload);
	if (!buf)
		return -ENOMEM;
	wire_encode_into(type, msg, payload, buf);
	*ret_buf = buf;
	*ret_len = WIRE_HDR_LEN + payload;
	return 0;
}

/* ---- decoding ---------------------------------------------------------- */

/* Header check shared by wire_hdr_parse() and the reader; @why (may be NULL)
 * receives the reason. */
static int wire_hdr_check(const uint8_t *hdr, size_t max_frame, unsigned accept,
                          enum wire_frame_type *ret_type, size_t *ret_payload, char *why,
                          size_t whylen)
{
	uint32_t len = wire_get_be32(hdr);
	uint8_t type = hdr[4];

	if (len == 0) {
		if (why)
			snprintf(why, whylen, "frame with zero length");
		return -EPROTO;
	}
	if (len > wire_limit(max_frame)) {
		if (why)
			snprintf(why, whylen, "frame of %u bytes exceeds the limit of %zu", len,
			         wire_limit(max_frame));
		return -EMSGSIZE;
	}
	if (!wire_type_desc(type)) {
		if (why)
			snprintf(why, whylen, "unknown frame type %u", type);
		return -EPROTO;
	}
	if (!(accept & (1u << type))) {
		if (why)
			snprintf(why, whylen, "frame type %u not expected in this direction", type);
		return -EPROTO;
	}
	*ret_type = (enum wire_frame_type)type;
	*ret_payload = len - 1;
	return 0;
}

int wire_hdr_parse(const uint8_t hdr[WIRE_HDR_LEN], size_t max_frame, unsigned accept,
                   enum wire_frame_type *ret_type, size_t *ret_payload_len)
{
	return wire_hdr_check(hdr, max_frame, accept, ret_type, ret_payload_len, NULL, 0);
}

int wire_payload_decode(enum wire_frame_type type, const void *payload, size_t len,
                        struct wire_msg *ret_msg)
{
	const ProtobufCMessageDescriptor *desc = wire_type_desc(type);
	ProtobufCMessage *m;

	if (!desc)
		return -EINVAL;
	m = protobuf_c_message_unpack(desc, NULL, len, payload);
	if (!m)
		return -EBADMSG;
	ret_msg->type = type;
	switch (type) {
	case WIRE_FRAME_REQUEST:
		ret_msg->req = (Kvfs__Request *)m;
		break;
	case WIRE_FRAME_RESPONSE:
		ret_msg->resp = (Kvfs__Response *)m;
		break;
	case WIRE_FRAME_SERVER_HELLO:
		ret_msg->shel = (Kvfs__ServerHello *)m;
		break;
	}
	return 0;
}

static bool wire_accept_valid(unsigned accept)
{
	return accept && !(accept & ~(unsigned)WIRE_ACCEPT_ANY);
}

static bool wire_limit_valid(size_t max_frame)
{
	return max_frame == 0 ||
	       (max_frame >= WIRE_MAX_FRAME_MIN && max_frame <= WIRE_MAX_FRAME_MAX);
}

int wire_reader_init(struct wire_reader *r, size_t max_frame, unsigned accept)
{
	if (!r || !wire_limit_valid(max_frame) || !wire_accept_valid(accept))
		return -EINVAL;
	memset(r, 0, sizeof(*r));
	r->max_frame = wire_limit(max_frame);
	r->accept = accept;
	return 0;
}

void wire_reader_fini(struct wire_reader *r)
{
	if (!r)
		return;
	free(r->buf);
	r->buf = NULL;
	r->cap = 0;
	r->have = 0;
	r->hdr_have = 0;
}

int wire_reader_set_limit(struct wire_reader *r, size_t max_frame)
{
	if (!wire_limit_valid(max_frame))
		return -EINVAL;
	r->max_frame = wire_limit(max_frame);
	return 0;
}

bool wire_reader_pending(const struct wire_reader *r)
{
	return r->hdr_have > 0;
}

const char *wire_reader_error(const struct wire_reader *r)
{
	return r->reason;
}

static int wire_reader_fail(struct wire_reader *r, int err, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int wire_reader_fail(struct wire_reader *r, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
	r->err = err;
	KV_DEBUG(WIRE_TAG, "reader: %s", r->reason);
	return err;
}

/* The frame in progress is done: get ready for the next header. */
static void wire_reader_reset_frame(struct wire_reader *r)
{
	r->hdr_have = 0;
	r->have = 0;
	r->need = 0;
	if (r->cap > WIRE_READER_KEEP) {
		free(r->buf);
		r->buf = NULL;
		r->cap = 0;
	}
}

static int wire_reader_decode(struct wire_reader *r, const void *payload, struct wire_msg *msg)
{
	int rc = wire_payload_decode(r->type, payload, r->need, msg);

	if (rc)
		return wire_reader_fail(r, rc, "cannot unpack %s payload of %zu bytes",
		                        wire_type_desc(r->type)->short_name, r->need);
	return 0;
}

/* Append up to the rest of the payload from @data; sets *ret_n to the bytes
 * taken.  The buffer is sized once per frame, after the limit check. */
static int wire_reader_buffer(struct wire_reader *r, const uint8_t *data, size_t len, size_t *ret_n)
{
	size_t n;

	if (r->cap < r->need) {
		uint8_t *nb = malloc(r->need);

		if (!nb)
			return wire_reader_fail(r, -ENOMEM, "out of memory for a %zu-byte frame",
			                        r->need);
		free(r->buf);
		r->buf = nb;
		r->cap = r->need;
	}
	n = KV_MIN(r->need - r->have, len);
	memcpy(r->buf + r->have, data, n);
	r->have += n;
	*ret_n = n;
	return 0;
}

int wire_reader_feed(struct wire_reader *r, const void *data, size_t len, size_t *ret_used,
                     struct wire_msg *ret_msg)
{
	const uint8_t *p = data;
	size_t used = 0, n = 0;
	struct wire_msg msg;
	int rc;

	if (r->err)
		return r->err;
	if (len == 0) {
		*ret_used = 0;
		return 0;
	}

	/* Header. */
	if (r->hdr_have < WIRE_HDR_LEN) {
		n = KV_MIN(WIRE_HDR_LEN - r->hdr_have, len);
		memcpy(r->hdr + r->hdr_have, p, n);
		r->hdr_have += n;
		used += n;
		if (r->hdr_have < WIRE_HDR_LEN) {
			*ret_used = used;
			return 0;
		}
		rc = wire_hdr_check(r->hdr, r->max_frame, r->accept, &r->type, &r->need, r->reason,
		                    sizeof(r->reason));
		if (rc) {
			r->err = rc;
			KV_DEBUG(WIRE_TAG, "reader: %s", r->reason);
			return rc;
		}
		r->have = 0;
	}

	if (r->have == 0 && len - used >= r->need) {
		/* Whole payload in this chunk and nothing buffered: decode in place. */
		rc = wire_reader_decode(r, p + used, &msg);
		if (rc)
			return rc;
		used += r->need;
	} else {
		rc = wire_reader_buffer(r, p + used, len - used, &n);
		if (rc)
			return rc;
		used += n;
		if (r->have < r->need) {
			*ret_used = used;
			return 0;
		}
		rc = wire_reader_decode(r, r->buf, &msg);
		if (rc)
			return rc;
	}

	wire_reader_reset_frame(r);
	*ret_used = used;
	*ret_msg = msg;
	return 1;
}

/* ---- status codes ------------------------------------------------------ */

static const struct {
	int32_t status;
	int err; /* positive errno */
	const char *name;
} wire_status_tab[] = {
        {KVFS__STATUS__OK, 0, "OK"},
        {KVFS__STATUS__NOT_FOUND, ENOENT, "NOT_FOUND"},
        {KVFS__STATUS__EXISTS, EEXIST, "EXISTS"},
        {KVFS__STATUS__VERSION_MISMATCH, ESTALE, "VERSION_MISMATCH"},
        {KVFS__STATUS__NO_SPACE, ENOSPC, "NO_SPACE"},
        {KVFS__STATUS__TOO_BIG, EFBIG, "TOO_BIG"},
        {KVFS__STATUS__NAME_TOO_LONG, ENAMETOOLONG, "NAME_TOO_LONG"},
        {KVFS__STATUS__INVALID, EINVAL, "INVALID"},
        {KVFS__STATUS__BUSY, EAGAIN, "BUSY"},
        {KVFS__STATUS__AUTH, EACCES, "AUTH"},
        {KVFS__STATUS__UNSUPPORTED, ENOTSUP, "UNSUPPORTED"},
        {KVFS__STATUS__IO, EIO, "IO"},
        {KVFS__STATUS__STALE, ECONNRESET, "STALE"},
        {KVFS__STATUS__TIMEOUT, ETIMEDOUT, "TIMEOUT"},
        {KVFS__STATUS__NOT_EMPTY, ENOTEMPTY, "NOT_EMPTY"},
        {KVFS__STATUS__INTERNAL, EIO, "INTERNAL"},
        {KVFS__STATUS__NO_MEMORY, ENOMEM, "NO_MEMORY"},
        {KVFS__STATUS__CANCELED, ECANCELED, "CANCELED"},
        {KVFS__STATUS__PROTOCOL, EPROTO, "PROTOCOL"},
};

int wire_status_to_errno(int32_t status)
{
	for (size_t i = 0; i < KV_ARRAY_SIZE(wire_status_tab); i++)
		if (wire_status_tab[i].status == status)
			return -wire_status_tab[i].err;
	return -EIO;
}

int32_t wire_errno_to_status(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case EBUSY:
		return KVFS__STATUS__BUSY;
	case EPERM:
		return KVFS__STATUS__AUTH;
	case ENOSYS:
		return KVFS__STATUS__UNSUPPORTED;
	}
	if (err == EOPNOTSUPP)
		return KVFS__STATUS__UNSUPPORTED;
	if (err == EWOULDBLOCK)
		return KVFS__STATUS__BUSY;
	/* First match wins: IO precedes INTERNAL in the table. */
	for (size_t i = 0; i < KV_ARRAY_SIZE(wire_status_tab); i++)
		if (wire_status_tab[i].err == err)
			return wire_status_tab[i].status;
	return KVFS__STATUS__INTERNAL;
}

const char *wire_status_name(int32_t status)
{
	for (size_t i = 0; i < KV_ARRAY_SIZE(wire_status_tab); i++)
		if (wire_status_tab[i].status == status)
			return wire_status_tab[i].name;
	return "UNKNOWN";
}

/* ---- keys, descriptors, request checks --------------------------------- */

/* Why a key fails the policy; index into wire_key_text[] and the per-field
 * tables of wire_request_check(). */
enum wire_key_err {
	WIRE_KEY_OK,
	WIRE_KEY_EMPTY,
	WIRE_KEY_LONG,
	WIRE_KEY_NUL,
	WIRE_KEY_EMPTY_COMP,
	WIRE_KEY_DOT_COMP,
	WIRE_KEY_NERR,
};

#define WIRE_KEY_TEXTS(pfx)                                                                        \
	{                                                                                          \
		pfx "ok", pfx "key is empty", pfx "key is longer than 4096 bytes",                 \
		        pfx "key contains a NUL byte",                                             \
		        pfx "key has an empty path component (leading '/' or '//')",               \
		        pfx "key has a '.' or '..' path component",                                \
	}

static const char *const wire_key_text[WIRE_KEY_NERR] = WIRE_KEY_TEXTS("");

/* The policy of wire.h "Keys", in one pass. */
static enum wire_key_err wire_key_scan(const char *key, size_t len, unsigned flags)
{
	const uint8_t *p = (const uint8_t *)key;
	bool prefix = flags & WIRE_KEY_PREFIX;
	size_t comp = 0; /* start of the current path component */

	if (len == 0)
		return prefix ? WIRE_KEY_OK : WIRE_KEY_EMPTY;
	if (!key)
		return WIRE_KEY_EMPTY;
	if (len > KV_KEY_MAX)
		return WIRE_KEY_LONG;
	for (size_t i = 0; i < len; i++) {
		if (p[i] == 0)
			return WIRE_KEY_NUL;
		if (p[i] == '/') {
			size_t cl = i - comp;

			/* A trailing '/' (directory marker "dir/") is allowed
			 * after a non-empty component only. */
			if (cl == 0)
				return WIRE_KEY_EMPTY_COMP;
			if ((cl == 1 && p[comp] == '.') ||
			    (cl == 2 && p[comp] == '.' && p[comp + 1] == '.'))
				return WIRE_KEY_DOT_COMP;
			comp = i + 1;
		}
	}
	/* The last component (empty after a trailing '/') of a prefix may be
	 * the start of a longer name: ".hidden" begins with ".". */
	if (!prefix && ((len - comp == 1 && p[comp] == '.') ||
	                (len - comp == 2 && p[comp] == '.' && p[comp + 1] == '.')))
		return WIRE_KEY_DOT_COMP;
	return WIRE_KEY_OK;
}

int wire_key_validate(const char *key, size_t len, unsigned flags, const char **ret_reason)
{
	enum wire_key_err e = wire_key_scan(key, len, flags);

	if (ret_reason)
		*ret_reason = wire_key_text[e];
	if (e == WIRE_KEY_OK)
		return 0;
	return e == WIRE_KEY_LONG ? -ENAMETOOLONG : -EINVAL;
}

int wire_key_check(const char *key, size_t len)
{
	return wire_key_validate(key, len, 0, NULL);
}

void wire_desc_to_xfer(const Kvfs__Desc *m, struct xfer_desc *ret_desc)
{
	ret_desc->addr = m->addr;
	ret_desc->len = m->len;
	ret_desc->key = m->key;
}

void wire_desc_from_xfer(Kvfs__Desc *m, const struct xfer_desc *d)
{
	kvfs__desc__init(m);
	m->addr = d->addr;
	m->len = d->len;
	m->key = d->key;
}

int wire_seg_to_rsge(const Kvfs__Segment *seg, struct xfer_rsge *ret_rsge)
{
	uint64_t off;

	if (!seg || !seg->desc)
		return -EINVAL;
	off = seg->has_offset ? seg->offset : 0;
	if (seg->length == 0 || off > seg->desc->len || seg->length > seg->desc->len - off)
		return -EINVAL;
	wire_desc_to_xfer(seg->desc, &ret_rsge->desc);
	ret_rsge->off = off;
	ret_rsge->len = seg->length;
	return 0;
}

/* Validate a list without converting it; returns 0 and its total. */
static int wire_segs_total(Kvfs__Segment *const *segs, size_t n, uint64_t *ret_total)
{
	struct xfer_rsge r;
	uint64_t total = 0;

	if (n > WIRE_MAX_SEGS)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (wire_seg_to_rsge(segs[i], &r) || r.len > UINT64_MAX - total)
			return -EINVAL;
		total += r.len;
	}
	*ret_total = total;
	return 0;
}

int wire_segs_to_rsge(Kvfs__Segment *const *segs, size_t n, struct xfer_rsge *ret_rsge, size_t cap,
                      size_t *ret_n, uint64_t *ret_total)
{
	uint64_t total;
	int rc;

	rc = wire_segs_total(segs, n, &total);
	if (rc)
		return rc;
	if (n > cap)
		return -ENOSPC;
	for (size_t i = 0; i < n; i++)
		wire_seg_to_rsge(segs[i], &ret_rsge[i]);
	*ret_n = n;
	*ret_total = total;
	return 0;
}

Kvfs__Segment **wire_segs_new(const struct xfer_rsge *rsge, size_t n)
{
	Kvfs__Segment **ptrs;
	Kvfs__Segment *segs;
	Kvfs__Desc *descs;

	if (n == 0 || n > WIRE_MAX_SEGS)
		return NULL;
	/* Pointers, then segments, then descriptors: each part stays aligned
	 * because all three element sizes are multiples of a pointer. */
	ptrs = malloc(n * (sizeof(*ptrs) + sizeof(*segs) + sizeof(*descs)));
	if (!ptrs)
		return NULL;
	segs = (Kvfs__Segment *)(ptrs + n);
	descs = (Kvfs__Desc *)(segs + n);
	for (size_t i = 0; i < n; i++) {
		kvfs__segment__init(&segs[i]);
		wire_desc_from_xfer(&descs[i], &rsge[i].desc);
		segs[i].desc = &descs[i];
		segs[i].has_offset = rsge[i].off != 0;
		segs[i].offset = rsge[i].off;
		segs[i].length = rsge[i].len;
		ptrs[i] = &segs[i];
	}
	return ptrs;
}

void wire_segs_free(Kvfs__Segment **segs)
{
	free(segs);
}

/* Record @text as the reason and return @rc. */
static int wire_why(const char **why, const char *text, int rc)
{
	*why = text;
	return rc;
}

/* Key-bearing request fields, each with its own reasons so a refusal says
 * which key and what is wrong with it. */
enum wire_key_field {
	WIRE_KF_PUT,
	WIRE_KF_GET,
	WIRE_KF_STAT,
	WIRE_KF_DELETE,
	WIRE_KF_RENAME_SRC,
	WIRE_KF_RENAME_DST,
	WIRE_KF_SETATTR,
	WIRE_KF_LIST_PREFIX,
	WIRE_KF_LIST_AFTER,
	WIRE_KF_XATTR,
};

static const char *const wire_key_why[][WIRE_KEY_NERR] = {
        [WIRE_KF_PUT] = WIRE_KEY_TEXTS("PUT: "),
        [WIRE_KF_GET] = WIRE_KEY_TEXTS("GET: "),
        [WIRE_KF_STAT] = WIRE_KEY_TEXTS("STAT: "),
        [WIRE_KF_DELETE] = WIRE_KEY_TEXTS("DELETE: "),
        [WIRE_KF_RENAME_SRC] = WIRE_KEY_TEXTS("RENAME: source "),
        [WIRE_KF_RENAME_DST] = WIRE_KEY_TEXTS("RENAME: destination "),
        [WIRE_KF_SETATTR] = WIRE_KEY_TEXTS("SETATTR: "),
        [WIRE_KF_LIST_PREFIX] = WIRE_KEY_TEXTS("LIST: prefix "),
        [WIRE_KF_LIST_AFTER] = WIRE_KEY_TEXTS("LIST: start_after "),
        [WIRE_KF_XATTR] = WIRE_KEY_TEXTS("XATTR: "),
};

static int wire_field_check(const ProtobufCBinaryData *b, unsigned flags, enum wire_key_field field,
                            const char **why)
{
	enum wire_key_err e = wire_key_scan((const char *)b->data, b->len, flags);

	if (e == WIRE_KEY_OK)
		return 0;
	return wire_why(why, wire_key_why[field][e], e == WIRE_KEY_LONG ? -ENAMETOOLONG : -EINVAL);
}

static int wire_check_put(const Kvfs__PutRequest *put, const char **why)
{
	uint64_t total;
	int rc;

	rc = wire_field_check(&put->key, 0, WIRE_KF_PUT, why);
	if (rc)
		return rc;
	if (put->has_upload) {
		if (put->has_value || put->n_src)
			return wire_why(why, "PUT: an upload's commit carries no value nor src",
			                -EINVAL);
	} else if (put->has_value == (put->n_src > 0)) {
		return wire_why(why, "PUT: exactly one of value and src must be given", -EINVAL);
	}
	if (put->has_if_version && put->has_if_absent && put->if_absent)
		return wire_why(why, "PUT: if_absent and if_version exclude each other", -EINVAL);
	if (put->has_uid != put->has_gid)
		return wire_why(why, "PUT: uid and gid go together", -EINVAL);
	if (put->has_type && put->type != KVFS__KEY_TYPE__FILE &&
	    put->type != KVFS__KEY_TYPE__SYMLINK && put->type != KVFS__KEY_TYPE__SPECIAL)
		return wire_why(why, "PUT: unknown type", -EINVAL);
	if (put->has_upload && put->has_type && put->type != KVFS__KEY_TYPE__FILE)
		return wire_why(why, "PUT: an upload commits a file", -EINVAL);
	if (put->has_type && put->type == KVFS__KEY_TYPE__SPECIAL) {
		uint32_t fmt = put->has_mode ? put->mode & 0170000 : 0;
		uint64_t n = put->has_value ? put->value.len : put->has_length ? put->length : 0;

		if (fmt != 0010000 && fmt != 0020000 && fmt != 0060000 && fmt != 0140000)
			return wire_why(why,
			                "PUT: a special file's mode names a fifo, socket or device",
			                -EINVAL);
		if (n)
			return wire_why(why, "PUT: a special file has an empty value", -EINVAL);
		if (put->has_rdev && put->rdev && fmt != 0020000 && fmt != 0060000)
			return wire_why(why, "PUT: only a device has an rdev", -EINVAL);
	} else if (put->has_rdev && put->rdev) {
		return wire_why(why, "PUT: only a special file has an rdev", -EINVAL);
	}
	if (put->has_type && put->type == KVFS__KEY_TYPE__SYMLINK) {
		uint64_t n = put->has_value ? put->value.len : put->has_length ? put->length : 0;

		if (n == 0 || n > WIRE_SYMLINK_MAX)
			return wire_why(why, "PUT: a symbolic link's target is 1 to 4095 bytes",
			                -EINVAL);
		if (put->has_value && memchr(put->value.data, 0, put->value.len))
			return wire_why(why, "PUT: a symbolic link's target holds a NUL byte",
			                -EINVAL);
	}
	if (put->has_upload)
		return 0;
	if (put->has_value) {
		if (put->has_length && put->length != put->value.len)
			return wire_why(why, "PUT: length differs from the inline value's",
			                -EINVAL);
		return 0;
	}
	if (wire_segs_total(put->src, put->n_src, &total))
		return wire_why(why, "PUT: bad src segment", -EINVAL);
	if (!put->has_length || put->length != total)
		return wire_why(why, "PUT: length must equal the sum of src lengths", -EINVAL);
	return 0;
}

static int wire_check_upload_part(const Kvfs__UploadPartRequest *u, const char **why)
{
	uint64_t total;
	int n = !!u->has_data + !!u->n_src + !!u->has_truncate;

	if (n != 1)
		return wire_why(why, "UPLOAD_PART: exactly one of data, src and truncate", -EINVAL);
	if (u->has_truncate)
		return u->has_offset || u->has_length
		               ? wire_why(why, "UPLOAD_PART: truncate goes alone", -EINVAL)
		               : 0;
	if (u->has_data) {
		if (!u->data.len || (u->has_length && u->length != u->data.len))
			return wire_why(why, "UPLOAD_PART: data is 1 byte or more (length its own)",
			                -EINVAL);
		total = u->data.len;
	} else {
		if (wire_segs_total(u->src, u->n_src, &total))
			return wire_why(why, "UPLOAD_PART: bad src segment", -EINVAL);
		if (!u->has_length || u->length != total || !total)
			return wire_why(why,
			                "UPLOAD_PART: length must equal the sum of src lengths",
			                -EINVAL);
	}
	if (u->offset + total < u->offset)
		return wire_why(why, "UPLOAD_PART: offset + length wraps", -EINVAL);
	return 0;
}

static int wire_check_get(const Kvfs__GetRequest *get, const char **why)
{
	uint64_t total;
	int rc;

	rc = wire_field_check(&get->key, 0, WIRE_KF_GET, why);
	if (rc)
		return rc;
	if (get->n_dst && get->has_want_inline && get->want_inline)
		return wire_why(why, "GET: dst and want_inline exclude each other", -EINVAL);
	if (get->has_upload && !(get->has_want_inline && get->want_inline))
		return wire_why(why, "GET: an upload is read inline", -EINVAL);
	if (wire_segs_total(get->dst, get->n_dst, &total))
		return wire_why(why, "GET: bad dst segment", -EINVAL);
	return 0;
}

static int wire_check_list(const Kvfs__ListRequest *list, const char **why)
{
	int rc;

	if (list->has_prefix) {
		rc = wire_field_check(&list->prefix, WIRE_KEY_PREFIX, WIRE_KF_LIST_PREFIX, why);
		if (rc)
			return rc;
	}
	if (list->has_delimiter &&
	    (list->delimiter.len > 1 || (list->delimiter.len == 1 && list->delimiter.data[0] == 0)))
		return wire_why(why, "LIST: the delimiter must be one byte other than NUL",
		                -EINVAL);
	if (list->has_start_after)
		return wire_field_check(&list->start_after, WIRE_KEY_PREFIX, WIRE_KF_LIST_AFTER,
		                        why);
	return 0;
}

/* An extended attribute's name: 1..WIRE_XATTR_NAME_MAX bytes, no NUL. */
static int wire_check_xname(const ProtobufCBinaryData *name, const char **why)
{
	if (!name->len || name->len > WIRE_XATTR_NAME_MAX)
		return wire_why(why, "XATTR: a name is 1 to 255 bytes", -EINVAL);
	if (memchr(name->data, 0, name->len))
		return wire_why(why, "XATTR: the name holds a NUL byte", -EINVAL);
	return 0;
}

static int wire_check_setxattr(const Kvfs__SetXattrRequest *a, const char **why)
{
	bool rm = a->has_remove && a->remove;
	bool create = a->has_create && a->create, replace = a->has_replace && a->replace;
	int rc;

	rc = wire_field_check(&a->key, 0, WIRE_KF_XATTR, why);
	if (rc == 0)
		rc = wire_check_xname(&a->name, why);
	if (rc)
		return rc;
	if (rm && (a->has_value || create || replace))
		return wire_why(why, "SETXATTR: remove goes with no value, create or replace",
		                -EINVAL);
	if (!rm && !a->has_value)
		return wire_why(why, "SETXATTR: a value or remove is required", -EINVAL);
	if (create && replace)
		return wire_why(why, "SETXATTR: create and replace exclude each other", -EINVAL);
	if (a->has_value && a->value.len > WIRE_XATTR_VALUE_MAX)
		return wire_why(why, "SETXATTR: a value is at most 65536 bytes", -EFBIG);
	return 0;
}

static int wire_check_hello(const Kvfs__HelloRequest *h, const char **why)
{
	uint64_t total;

	if (h->min_version > h->max_version)
		return wire_why(why, "HELLO: min_version above max_version", -EINVAL);
	if (!h->engine_proof != !h->has_engine_nonce)
		return wire_why(why, "HELLO: engine_proof and engine_nonce go together", -EINVAL);
	if (!h->engine_proof)
		return 0;
	if (h->engine_nonce.len != WIRE_ENGINE_NONCE_LEN)
		return wire_why(why, "HELLO: engine_nonce must be 32 bytes", -EINVAL);
	if (wire_segs_total((Kvfs__Segment *const *)&h->engine_proof, 1, &total) ||
	    total != WIRE_ENGINE_NONCE_LEN)
		return wire_why(why, "HELLO: engine_proof must be one segment of 32 bytes",
		                -EINVAL);
	return 0;
}

int wire_request_check(const Kvfs__Request *req, const char **ret_reason)
{
	const char *why = "ok";
	int rc = 0;

	switch (req->body_case) {
	case KVFS__REQUEST__BODY_HELLO:
		rc = wire_check_hello(req->hello, &why);
		break;
	case KVFS__REQUEST__BODY_PUT:
		rc = wire_check_put(req->put, &why);
		break;
	case KVFS__REQUEST__BODY_GET:
		rc = wire_check_get(req->get, &why);
		break;
	case KVFS__REQUEST__BODY_STAT:
		rc = wire_field_check(&req->stat->key, 0, WIRE_KF_STAT, &why);
		break;
	case KVFS__REQUEST__BODY_DELETE:
		rc = wire_field_check(&req->delete_->key, 0, WIRE_KF_DELETE, &why);
		break;
	case KVFS__REQUEST__BODY_LIST:
		rc = wire_check_list(req->list, &why);
		break;
	case KVFS__REQUEST__BODY_RENAME:
		rc = wire_field_check(&req->rename->src, 0, WIRE_KF_RENAME_SRC, &why);
		if (rc == 0)
			rc = wire_field_check(&req->rename->dst, 0, WIRE_KF_RENAME_DST, &why);
		break;
	case KVFS__REQUEST__BODY_SETATTR:
		rc = wire_field_check(&req->setattr->key, 0, WIRE_KF_SETATTR, &why);
		break;
	case KVFS__REQUEST__BODY_STATS:
	case KVFS__REQUEST__BODY_UPLOAD_ABORT:
		break;
	case KVFS__REQUEST__BODY_UPLOAD_OPEN:
		rc = wire_field_check(&req->upload_open->key, 0, WIRE_KF_PUT, &why);
		break;
	case KVFS__REQUEST__BODY_UPLOAD_PART:
		rc = wire_check_upload_part(req->upload_part, &why);
		break;
	case KVFS__REQUEST__BODY_GETXATTR:
		rc = wire_field_check(&req->getxattr->key, 0, WIRE_KF_XATTR, &why);
		if (rc == 0)
			rc = wire_check_xname(&req->getxattr->name, &why);
		break;
	case KVFS__REQUEST__BODY_SETXATTR:
		rc = wire_check_setxattr(req->setxattr, &why);
		break;
	case KVFS__REQUEST__BODY_LISTXATTR:
		rc = wire_field_check(&req->listxattr->key, 0, WIRE_KF_XATTR, &why);
		break;
	case KVFS__REQUEST__BODY__NOT_SET:
	default:
		why = "request without a known body (newer client?)";
		rc = -ENOTSUP;
		break;
	}
	*ret_reason = why;
	return rc;
}

bool wire_reason_is_key(const char *reason)
{
	for (size_t f = 0; f < KV_ARRAY_SIZE(wire_key_why); f++)
		for (size_t e = WIRE_KEY_OK + 1; e < WIRE_KEY_NERR; e++)
			if (reason == wire_key_why[f][e])
				return true;
	return false;
}
