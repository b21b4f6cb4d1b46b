/* SPDX-License-Identifier: MIT */
/*
 * kvfs wire: frame codec for the protobuf control channel (proto/kvfs.proto,
 * docs/protocol.md).
 *
 * Frame
 * -----
 *   +----------------+--------+----------------------------+
 *   | length: u32 BE | type:1 | payload: length - 1 bytes  |
 *   +----------------+--------+----------------------------+
 * @length counts the type byte and the payload, not itself, so it is at
 * least 1; a zero length, a length above the receiver's limit, an unknown
 * type and a payload that does not unpack as the message of its type are
 * protocol errors that end the connection.  The payload of a REQUEST frame
 * is a kvfs.Request, of a RESPONSE frame a kvfs.Response, of a SERVER_HELLO
 * frame a kvfs.ServerHello.
 *
 * Threads and ownership
 * ---------------------
 * Every function here is reentrant; a struct wire_reader belongs to one
 * connection and must not be used by two threads at once.  Decoded messages
 * (struct wire_msg) are owned by the caller and released with
 * wire_msg_free().  Nothing here logs above debug level or touches sockets.
 */
#ifndef KVFS_WIRE_H
#define KVFS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvfs.pb-c.h"
#include "kvfs/util.h"      /* KV_KEY_MAX */
#include "kvfs/wire_auth.h" /* the Hello fields' sizes; proofs, wire_ct_equal() */
#include "kvfs/xfer.h"      /* struct xfer_desc, struct xfer_rsge only: no engine code */

#ifdef __cplusplus
extern "C" {
#endif

/* Protocol versions this build speaks (HelloRequest/ServerHello). */
#define WIRE_VERSION_MIN 1
#define WIRE_VERSION_MAX 1

/* Bytes in front of the payload: 4 length + 1 type. */
#define WIRE_HDR_LEN 5

/* Default and bounds of a frame limit (the length field: type + payload). */
#define WIRE_MAX_FRAME_DEFAULT ((size_t)(1024 * 1024 + 64 * 1024))
#define WIRE_MAX_FRAME_MIN     ((size_t)4096)
#define WIRE_MAX_FRAME_MAX     ((size_t)(64 * 1024 * 1024))

/* Largest inline value that fits a default frame with room for the key and
 * the rest of the message. */
#define WIRE_MAX_INLINE_DEFAULT ((size_t)(1024 * 1024))

/* Most segments in one PUT src or GET dst list. */
#define WIRE_MAX_SEGS 1024

/* A symbolic link's target (PUT type SYMLINK): 1..WIRE_SYMLINK_MAX bytes,
 * PATH_MAX less its NUL. */
#define WIRE_SYMLINK_MAX 4095

/* Extended attributes: a name's bytes and a value's (Linux's XATTR_NAME_MAX
 * and XATTR_SIZE_MAX); a key holds at most WIRE_XATTR_VALUE_MAX bytes of
 * names and values together (the server's store). */
#define WIRE_XATTR_NAME_MAX  255
#define WIRE_XATTR_VALUE_MAX 65536

/* Bytes of the nonce a client's engine holds to prove it is the client's
 * (HelloRequest.engine_proof, engine_nonce). */
#define WIRE_ENGINE_NONCE_LEN 32

enum wire_frame_type {
	WIRE_FRAME_REQUEST = 1,      /* client -> server: kvfs.Request */
	WIRE_FRAME_RESPONSE = 2,     /* server -> client: kvfs.Response */
	WIRE_FRAME_SERVER_HELLO = 3, /* server -> client, once, first: kvfs.ServerHello */
};

/* Frame types a reader accepts (others are -EPROTO). */
#define WIRE_ACCEPT_SERVER (1u << WIRE_FRAME_REQUEST)
#define WIRE_ACCEPT_CLIENT ((1u << WIRE_FRAME_RESPONSE) | (1u << WIRE_FRAME_SERVER_HELLO))
#define WIRE_ACCEPT_ANY    (WIRE_ACCEPT_SERVER | WIRE_ACCEPT_CLIENT)

/* One decoded frame.  Exactly the union member matching @type is set. */
struct wire_msg {
	enum wire_frame_type type;
	union {
		Kvfs__Request *req;      /* WIRE_FRAME_REQUEST */
		Kvfs__Response *resp;    /* WIRE_FRAME_RESPONSE */
		Kvfs__ServerHello *shel; /* WIRE_FRAME_SERVER_HELLO */
	};
};

/* Free the decoded message and zero @msg.  Accepts NULL and a zeroed msg. */
void wire_msg_free(struct wire_msg *msg);

/*
 * Encoding
 * --------
 * @msg is &req.base, &resp.base or &shel.base and must match @type
 * (-EINVAL otherwise).  Required fields are checked first (-EINVAL when one
 * is missing), then the frame length against @max_frame (0 = default):
 * -EMSGSIZE when the peer would refuse it.
 */

/* Bytes the whole frame (header included) of @msg takes. */
size_t wire_frame_size(const ProtobufCMessage *msg);

/* Encode into @buf (capacity @cap).  Returns 0 and *ret_len, -EINVAL,
 * -EMSGSIZE, or -ENOSPC when @cap is too small (wire_frame_size() says how
 * much is needed). */
int wire_encode(enum wire_frame_type type, const ProtobufCMessage *msg, size_t max_frame, void *buf,
                size_t cap, size_t *ret_len);

/* Encode into a malloc'd buffer the caller frees with free().  Returns 0,
 * *ret_buf and *ret_len, or -EINVAL, -EMSGSIZE, -ENOMEM. */
int wire_encode_alloc(enum wire_frame_type type, const ProtobufCMessage *msg, size_t max_frame,
                      void **ret_buf, size_t *ret_len);

/*
 * Decoding
 * --------
 * For callers that read the header and the payload themselves (blocking
 * clients): parse the 5 header bytes.  Returns 0, *ret_type and
 * *ret_payload_len, or -EPROTO (zero length, type not in @accept) or
 * -EMSGSIZE (length above @max_frame, 0 = default).
 */
int wire_hdr_parse(const uint8_t hdr[WIRE_HDR_LEN], size_t max_frame, unsigned accept,
                   enum wire_frame_type *ret_type, size_t *ret_payload_len);

/* Unpack a payload of @type.  Returns 0 and *ret_msg, or -EBADMSG (does not
 * unpack: malformed, a required field missing, or out of memory -- protobuf-c
 * does not tell them apart) or -EINVAL (unknown @type). */
int wire_payload_decode(enum wire_frame_type type, const void *payload, size_t len,
                        struct wire_msg *ret_msg);

/*
 * Incremental decoder for a non-blocking socket.  Feed it whatever read()
 * returned; it buffers at most one partial frame (allocating its payload
 * size only once the header has passed the limit check) and decodes frames
 * that arrive whole in one chunk without copying them.
 *
 * Errors are sticky: after a negative return every later feed returns the
 * same error; wire_reader_error() says why in words.  The connection must
 * then be closed, since the byte stream cannot be resynchronised.
 */
struct wire_reader {
	size_t max_frame;          /* limit on the length field */
	unsigned accept;           /* WIRE_ACCEPT_* mask */
	uint8_t hdr[WIRE_HDR_LEN]; /* header being assembled */
	size_t hdr_have;           /* bytes of hdr received */
	enum wire_frame_type type; /* of the frame in progress, once hdr is complete */
	size_t need;               /* payload bytes of that frame */
	uint8_t *buf;              /* partial payload, capacity cap */
	size_t cap;
	size_t have;      /* payload bytes in buf */
	int err;          /* sticky negative errno, 0 while healthy */
	char reason[128]; /* human text for err */
};

/* Initialise @r with a limit (0 = WIRE_MAX_FRAME_DEFAULT) and the accepted
 * frame types.  Returns 0 or -EINVAL (limit outside [WIRE_MAX_FRAME_MIN,
 * WIRE_MAX_FRAME_MAX], empty or unknown @accept).  Allocates nothing. */
int wire_reader_init(struct wire_reader *r, size_t max_frame, unsigned accept);

/* Release the partial-frame buffer.  Accepts NULL; @r may be re-initialised. */
void wire_reader_fini(struct wire_reader *r);

/* Change the limit (e.g. after HELLO negotiated one).  Applies from the next
 * frame header.  Returns 0 or -EINVAL. */
int wire_reader_set_limit(struct wire_reader *r, size_t max_frame);

/*
 * Consume bytes from @data (@len may be 0) until one frame is complete or
 * @len is used up; *ret_used says how many were consumed.  Returns:
 *   1  a frame was decoded into *ret_msg (caller owns it); call again with
 *      the rest of the chunk (@data + *ret_used), there may be more frames;
 *   0  all @len bytes were consumed and no frame is complete yet;
 *  <0  -EMSGSIZE (length above the limit), -EPROTO (zero length, unknown or
 *      unaccepted type), -EBADMSG (payload does not unpack), -ENOMEM
 *      (buffer for a partial frame); *ret_used and *ret_msg are untouched.
 */
int wire_reader_feed(struct wire_reader *r, const void *data, size_t len, size_t *ret_used,
                     struct wire_msg *ret_msg);

/* True while a frame is partially received (bytes fed, frame not done):
 * EOF now means the peer cut a frame short. */
bool wire_reader_pending(const struct wire_reader *r);

/* Why the reader failed ("" while healthy).  Valid until fini. */
const char *wire_reader_error(const struct wire_reader *r);

/*
 * Status codes (enum Kvfs__Status) <-> errno
 * ------------------------------------------
 * wire_status_to_errno() returns 0 for OK and a negative errno otherwise;
 * an unknown code (a newer peer) gives -EIO.  wire_errno_to_status() takes a
 * negative or positive errno (0 gives OK); an errno without its own code
 * gives KVFS__STATUS__INTERNAL.  The two are inverse on every code except
 * INTERNAL (-> EIO -> IO); a few errnos map one way only (EBUSY and
 * EWOULDBLOCK -> BUSY, EPERM -> AUTH, ENOSYS and EOPNOTSUPP -> UNSUPPORTED).
 * VERSION_MISMATCH is ESTALE (not ECANCELED: the transfer engine reports
 * cancelled operations with ECANCELED, which must not read as a failed
 * compare-and-swap).
 */
int wire_status_to_errno(int32_t status);
int32_t wire_errno_to_status(int err);

/* "NOT_FOUND", ... or "UNKNOWN" for a code this build does not know. */
const char *wire_status_name(int32_t status);

/*
 * Keys
 * ----
 * A key is 1..KV_KEY_MAX (4096, PATH_MAX) bytes without NUL, read as
 * '/'-separated path components none of which is empty, "." or "..": no
 * leading '/', no "//".  One trailing '/' is allowed, since "dir/" is the
 * directory marker kvfs stores for mkdir.  Any other byte is allowed, as
 * in a Linux file name (spaces, tabs, newlines, bytes that are not UTF-8):
 * whoever prints a key escapes it (kv_quote_key()).  Keys name files on
 * kvfs mounts and paths in tools that copy them to disk, so shapes a file
 * system cannot hold, or would resolve differently, are refused here once
 * for everyone.
 *
 * With WIRE_KEY_PREFIX the string is a LIST prefix or start_after: it may be
 * empty, and its last component may be the start of a longer name ("a/."
 * begins "a/.hidden"); the components before it follow the rules above.
 *
 * wire_key_validate() returns 0, -EINVAL or -ENAMETOOLONG (longer than
 * KV_KEY_MAX), and points *ret_reason (may be NULL) at a static sentence
 * such as "key contains a NUL byte" ("ok" on success).  wire_key_check() is
 * wire_key_validate(key, len, 0, NULL).  The server runs this check on every
 * key-bearing request field (wire_request_check()), the client library before
 * sending.
 */
#define WIRE_KEY_PREFIX 1u

int wire_key_validate(const char *key, size_t len, unsigned flags, const char **ret_reason);
int wire_key_check(const char *key, size_t len);

/*
 * Memory descriptors
 * ------------------
 * Conversions between the protobuf messages and the transfer engine's plain
 * structs.  The *_to_xfer direction checks what a peer sent: a segment must
 * have 0 < length, offset + length <= desc.len without overflow.
 */
void wire_desc_to_xfer(const Kvfs__Desc *m, struct xfer_desc *ret_desc);
/* Initialise @m (kvfs__desc__init) and fill it from @d. */
void wire_desc_from_xfer(Kvfs__Desc *m, const struct xfer_desc *d);

/* Returns 0 and *ret_rsge or -EINVAL. */
int wire_seg_to_rsge(const Kvfs__Segment *seg, struct xfer_rsge *ret_rsge);

/* Convert a whole list (PutRequest.src, GetRequest.dst) into @ret_rsge
 * (capacity @cap) and its total length.  Returns 0, *ret_n and *ret_total,
 * or -EINVAL (a bad segment, total overflows, more than WIRE_MAX_SEGS) or
 * -ENOSPC (more than @cap segments). */
int wire_segs_to_rsge(Kvfs__Segment *const *segs, size_t n, struct xfer_rsge *ret_rsge, size_t cap,
                      size_t *ret_n, uint64_t *ret_total);

/* Build a segment list for a request from @n local descriptions: one
 * allocation holding the pointer array, the segments and their descriptors,
 * ready to assign to put->src / get->dst (with n_src / n_dst = @n).  Release
 * with wire_segs_free() after encoding.  Returns NULL if @n is 0 or on ENOMEM. */
Kvfs__Segment **wire_segs_new(const struct xfer_rsge *rsge, size_t n);
void wire_segs_free(Kvfs__Segment **segs);

/*
 * Request checks
 * --------------
 * Semantic checks a server runs on a decoded Request before acting on it:
 * a body is set, every key passes wire_key_check() (a LIST prefix and
 * start_after with WIRE_KEY_PREFIX; the delimiter is at most one non-NUL
 * byte), segments are sane and PUT has exactly one of value / src with a
 * consistent length, GET has at most one of dst / want_inline, if_absent
 * excludes if_version; a PUT's uid and gid go together and its type is
 * known, a symbolic link's target is 1..WIRE_SYMLINK_MAX bytes without NUL;
 * an extended attribute's name is 1..WIRE_XATTR_NAME_MAX bytes without NUL
 * and its value at most WIRE_XATTR_VALUE_MAX bytes (-EFBIG), SETXATTR has
 * a value unless it removes, and create excludes replace.  Returns 0 or
 * a negative errno (-EINVAL, -ENAMETOOLONG, -ENOTSUP for an unknown body)
 * and points *ret_reason at a static description that names the operation
 * and, for a key, the field and what is wrong ("RENAME: destination key has
 * a '.' or '..' path component").
 */
int wire_request_check(const Kvfs__Request *req, const char **ret_reason);

/* True when @reason, set by a failed wire_request_check(), is about a key
 * field breaking the key policy (for counting refused keys). */
bool wire_reason_is_key(const char *reason);

#ifdef __cplusplus
}
#endif
#endif /* KVFS_WIRE_H */
