/* SPDX-License-Identifier: MIT */
/*
 * kvfs client library: talks to kv-server over the protobuf control channel
 * (docs/protocol.md) and moves value bytes with the transfer engine.
 * kvfs (the FUSE daemon), kvctl and kv-bench are built on it.
 *
 * Threads
 * -------
 * A struct kvc owns one TCP connection, one transfer engine (unless the
 * provider is "none") and one I/O thread that sends requests, matches
 * responses to requests by id (many in flight, answered in any order) and
 * enforces deadlines.  Every function may be called from any thread.
 * Completion callbacks of the *_async calls run on the I/O thread: they must
 * not block, must not call the synchronous kvc functions and must not call
 * kvc_close() (they may submit more async calls).
 *
 * Errors
 * ------
 * Every call returns 0 (or a count) or a negative errno, and sets a
 * thread-local message readable with kvc_strerror() (server text or local
 * reason; empty after a successful call).  Server status codes map to
 * errno as in wire.h: -ENOENT, -EEXIST, -ESTALE (version mismatch),
 * -ENOSPC, -EFBIG, -ENAMETOOLONG, -EINVAL, -EACCES (auth), -ENOTSUP, -EIO,
 * -ETIMEDOUT, -EAGAIN (BUSY).
 * A call never waits longer than its deadline (opts.timeout_ms): a dead or
 * unreachable server gives -ETIMEDOUT, -ECONNREFUSED or -ECONNRESET.
 * A synchronous call the server refuses with BUSY (it did nothing: its
 * in-flight limit, or this client holding failed transfers past the
 * server's --max-held) is resent after a pause, 10 ms doubling to 500 ms,
 * while its deadline leaves room for one; it fails with -EAGAIN only then.
 *
 * Reconnect
 * ---------
 * When the connection breaks, calls in flight fail with -ECONNRESET; the
 * next call reconnects (engine address, Hello, auth) with exponential backoff
 * (100 ms doubling to 2 s) bounded by that call's deadline, so a restarted
 * server is picked up without recreating the struct kvc.  A refused
 * connection (nothing listens at the address) ends the call at once with
 * -ECONNREFUSED instead of waiting out the deadline; the next call asks
 * again.  A call whose
 * request never left (the connection broke first) is resent on the new
 * connection within its deadline; one that was sent is not (it may have
 * been applied).  A call that timed out with no byte received from the
 * server during its whole deadline also drops the connection.
 *
 * Server restarts
 * ---------------
 * kv-server keeps values in memory only, and a restarted server starts with
 * an empty store whose versions count from 1 again: a version number seen
 * before the restart may name a different value after it.  Each kv-server
 * process announces a random instance id in its HelloResponse.  The client
 * remembers the id of its connections; a reconnect that finds another one
 * starts a new *epoch* (kvc_server_epoch(): 1 at kvc_connect, +1 per
 * restart seen), logs once at warning level ("kv-server at HOST:PORT
 * restarted (instance X, was Y): its store may be empty; cached data
 * dropped") and calls opts.on_restart.  Contract for users that cache:
 *   - every struct kvc_entry carries the epoch of the connection that
 *     answered it; a version is meaningful only together with its epoch
 *     (two entries describe the same value only when both version and
 *     epoch are equal);
 *   - with if_version, pass the epoch the version was read in as if_epoch
 *     (kvc_get_opts, kvc_put_opts): on a connection of another epoch the
 *     call fails with -ESTALE without being sent, as for a changed value.
 *     if_epoch 0 compares the version alone, across restarts too
 *     (kvc_delete()'s if_version always does);
 *   - GET pieces read inline (no RDMA) are pinned to one version of one
 *     epoch: a restart between pieces restarts the read.
 * A server that does not announce an instance (older than this field) is
 * an unknown instance: no restart is detected, the epoch stays.
 *
 * Value transport
 * ---------------
 * Values up to the server's max_inline travel inline.  Larger ones use RDMA
 * when both sides have the same provider family: the server RDMA-READs a PUT
 * from, and RDMA-WRITEs a GET into, client memory (a bounce buffer, a
 * staging buffer of the value's size, or the caller's regions for the _mr
 * calls; the caller's plain memory is never registered).  Without RDMA (provider "none", or the
 * server has none) a GET of more than max_inline bytes is done in max_inline pieces that must all
 * belong to one version (the read restarts if the value changes meanwhile),
 * and a PUT above max_inline fails with -EFBIG (it could not be atomic).
 */
#ifndef KVFS_CLIENT_H
#define KVFS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h> /* ssize_t */

#include "kvfs/xfer.h"

#ifdef __cplusplus
extern "C" {
#endif

struct kvc;

#define KVC_DEFAULT_PORT 7070

struct kvc_opts {
	const char *server;          /* "HOST:PORT", "HOST" (port 7070), "[V6]:PORT" */
	const char *provider;        /* "auto" (default), "tcp", "shm", "verbs", "efa", or
	                              * "none": no RDMA, values travel inline on the socket */
	const char *bind;            /* engine bind address; NULL = the local address of the
	                              * control connection (the interface that reaches the server) */
	const char *auth_token_file; /* file holding the shared token, NULL = no auth */
	int timeout_ms;              /* per-call deadline, 0 = 10000 */
	int connect_timeout_ms;      /* first connect, 0 = timeout_ms */
	size_t bounce_size;          /* registered bounce buffer for kvc_put/kvc_get with plain
	                              * memory, 0 = 8 MiB (up to 4 allocated on demand); larger
	                              * values go through a registered buffer of their size
	                              * (the largest so far is kept for reuse) */
	const char *client_id;       /* free text for the server's logs, NULL = "kvfs-client" */
	const char *auth_option;     /* how the program's user gives auth_token_file, named in
	                              * the advice of auth errors, e.g. "--auth-token-file";
	                              * NULL = "auth_token_file" (kvfs's -o name) */
	/* Called once per server restart seen (a reconnect found another instance
	 * id), with the new epoch, after the new connection is up: on the thread
	 * that reconnected, inside one of its kvc calls, with no lock held.  It
	 * must not block and must not call kvc functions (hand the work to
	 * another thread).  NULL = none. */
	void (*on_restart)(void *arg, uint64_t epoch);
	void *on_restart_arg;
	size_t upload_part;      /* bytes of one upload part buffer, 0 = 4 MiB */
	unsigned upload_buffers; /* part buffers all uploads share, 0 = 32 (registered
	                          * on first use): an upload's memory is bounded by them */
};

void kvc_opts_init(struct kvc_opts *opts);

/* Connect and handshake: one attempt, bounded by connect_timeout_ms.  Fails
 * with the connect or Hello error (-ECONNREFUSED, -ETIMEDOUT, -EACCES for a
 * missing or refused token, -ENOTSUP for no common protocol version, -ENOENT
 * etc. for an unreadable token file, -EINVAL for a bad address); the
 * message says what to do.  The transfer engine is opened here unless the
 * provider is "none", bound to the local address of the control connection
 * (opts.bind overrides; shm binds nothing); with provider "auto" and no
 * usable provider the client goes inline only. */
int kvc_connect(const struct kvc_opts *opts, struct kvc **ret_kvc);
/* Fail async calls in flight with -ECANCELED (their callbacks run before
 * this returns) and free everything.  No other thread may be inside a
 * synchronous kvc call.  Accepts NULL. */
void kvc_close(struct kvc *kvc);

/* Thread-local text of the last error of this thread's last kvc call. */
const char *kvc_strerror(void);

/* The engine, to register buffers for the zero-copy calls; NULL with
 * provider "none" or when the server does not do RDMA. */
struct xfer_engine *kvc_engine(struct kvc *kvc);

/* Limits the server announced in its Hello. */
struct kvc_limits {
	uint64_t max_value;
	uint64_t max_inline; /* values up to this travel inline (0: never) */
	uint64_t chunk_size;
	bool rdma;    /* RDMA descriptors are honoured */
	bool uploads; /* the server takes uploads (kvc_upload_*; an older one does not) */
	char server_provider[64];
	char provider[64]; /* ours ("none" when inline only) */
};
void kvc_limits(struct kvc *kvc, struct kvc_limits *ret_limits);

/* The server epoch of the current (or last) connection, >= 1 once
 * kvc_connect() returned: it grows by one each time a reconnect finds a
 * restarted server (see "Server restarts" above).  *ret_instance (may be
 * NULL) gets the last instance id announced, 0 when the server announces
 * none.  Any thread. */
uint64_t kvc_server_epoch(struct kvc *kvc, uint64_t *ret_instance);

/* What a key is to a file system (kvc_entry.type, kvc_put_opts.type). */
#define KVC_TYPE_FILE    0 /* the value is a file's content */
#define KVC_TYPE_SYMLINK 1 /* the value is a symbolic link's target (1..4095 bytes, no NUL) */
#define KVC_TYPE_SPECIAL 2 /* a fifo, socket or device: empty; mode has its S_IFMT bits */

/* Metadata of one key. */
struct kvc_entry {
	uint64_t size;
	uint64_t version; /* never 0 for an existing key */
	int64_t mtime_ns;
	int64_t ctime_ns; /* last change of value or metadata (an older server: mtime_ns) */
	int64_t atime_ns; /* last access reported (kvc_setattr()); older server: mtime_ns */
	uint32_t mode;
	uint64_t epoch; /* server epoch the answer came from (kvc_server_epoch()): the
	                 * version names a value only within its epoch */
	bool pinned;    /* never evicted (kvc_pin()) */
	bool has_owner; /* an owner was stored (uid, gid); false: none, e.g. kvctl put */
	uint32_t uid, gid;
	uint8_t type;  /* KVC_TYPE_* */
	uint64_t rdev; /* KVC_TYPE_SPECIAL: a device's number */
};

struct kvc_put_opts {
	uint32_t mode;       /* 0 = 0644 */
	int64_t mtime_ns;    /* 0 = server's clock */
	bool if_absent;      /* -EEXIST if the key exists */
	uint64_t if_version; /* != 0: compare-and-swap, -ESTALE on mismatch */
	uint64_t if_epoch;   /* != 0 with if_version: the epoch if_version was read in;
	                      * -ESTALE, nothing sent, on a connection of another */
	int timeout_ms;      /* 0 = connection default */
	bool set_owner;      /* store uid, gid; false: keep the replaced key's (or none) */
	uint32_t uid, gid;
	uint8_t type;     /* KVC_TYPE_*; 0 = a file */
	bool drop_xattrs; /* the stored key has no extended attributes; false: it keeps
	                   * the replaced key's */
	uint64_t rdev;    /* KVC_TYPE_SPECIAL (mode then has its S_IFMT bits): a device's
	                   * number */
};

struct kvc_get_opts {
	uint64_t if_version; /* != 0: -ESTALE unless the value has this version */
	uint64_t if_epoch;   /* != 0 with if_version: as in kvc_put_opts */
	int timeout_ms;
};

/*
 * Store @len bytes from plain memory.  Small values go inline, larger ones
 * are copied into a registered buffer that the server RDMA-READs (a bounce
 * buffer, or one of the value's size): one PUT either way.  Atomic: readers
 * see the old or new value, also when the call failed (it may or may not
 * have been applied).  @val is never registered: once the call returns,
 * failed or not, nothing reads it any more.  On success fills *ret (may be
 * NULL).
 */
int kvc_put(struct kvc *kvc, const void *key, size_t keylen, const void *val, size_t len,
            const struct kvc_put_opts *opts, struct kvc_entry *ret);

/* Zero copy: the value is @len bytes at @off in @mr (registered with
 * XFER_ACCESS_REMOTE_READ on kvc_engine()); the server RDMA-READs it.  Values
 * up to max_inline are sent inline from the region's memory instead.
 * -ENOTSUP when a larger value cannot use RDMA. */
int kvc_put_mr(struct kvc *kvc, const void *key, size_t keylen, struct xfer_mr *mr, uint64_t off,
               uint64_t len, const struct kvc_put_opts *opts, struct kvc_entry *ret);

/*
 * Read up to @len bytes of the value from @off into plain memory @buf.
 * Returns the number of bytes read (short at the end of the value, 0 past
 * it) and fills *ret (may be NULL) with the value's metadata.  The server
 * RDMA-WRITEs into a registered buffer (a bounce buffer, or one of the
 * read's size) that is copied into @buf; @buf itself is never registered,
 * so once the call returns, failed or not, nothing writes into it.  With
 * @len 0 only the metadata is fetched (not the owner or type: kvc_stat()).
 */
ssize_t kvc_get(struct kvc *kvc, const void *key, size_t keylen, uint64_t off, void *buf,
                size_t len, const struct kvc_get_opts *opts, struct kvc_entry *ret);

/* Zero copy: the server RDMA-WRITEs into @dst (regions registered with
 * XFER_ACCESS_REMOTE_WRITE on kvc_engine(); at most 1024 pieces, filled in
 * order).  Reads of up to max_inline bytes come inline and are copied in.
 * Returns bytes written.  After a failure without the server's answer
 * (-ETIMEDOUT, -ECONNRESET, ...) a transfer still under way may write into
 * @dst later, even after the connection was reset (tcp and shm check the
 * key only when a transfer message begins): drop such regions with
 * xfer_mr_dereg_lost() instead of reusing them. */
ssize_t kvc_get_mr(struct kvc *kvc, const void *key, size_t keylen, uint64_t off,
                   const struct xfer_sge *dst, size_t ndst, const struct kvc_get_opts *opts,
                   struct kvc_entry *ret);

int kvc_stat(struct kvc *kvc, const void *key, size_t keylen, struct kvc_entry *ret);
/* kvc_stat(), and for a missing key whether its name is a directory (some
 * key starts with key + "/"): then 1, with *ret its marker's entry ("key/")
 * or zeros.  One round trip; an older server gets a STAT and a LIST. */
int kvc_stat_dir(struct kvc *kvc, const void *key, size_t keylen, struct kvc_entry *ret);
int kvc_delete(struct kvc *kvc, const void *key, size_t keylen, uint64_t if_version);
int kvc_rename(struct kvc *kvc, const void *src, size_t srclen, const void *dst, size_t dstlen,
               bool no_overwrite, uint64_t *ret_version);
/* Change what @set names (KVC_SET_*), without a new version; with
 * if_version != 0 only if the key has that version (-ESTALE).  Setting the
 * uid or gid alone of a key with no owner yet makes the other one 0. */
#define KVC_SET_MODE  0x1u
#define KVC_SET_MTIME 0x2u
#define KVC_SET_UID   0x4u
#define KVC_SET_GID   0x8u
#define KVC_SET_ATIME 0x10u /* atime_ns is the atime (utimensat): the ctime becomes now */
/* atime_ns is an access: the atime moves forward to it, if later; the ctime stays */
#define KVC_ACCESSED 0x20u
struct kvc_setattr_opts {
	unsigned set; /* KVC_SET_*; 0: only fetch the entry */
	uint32_t mode;
	int64_t mtime_ns;
	int64_t atime_ns;
	uint32_t uid, gid;
	uint64_t if_version;
};
int kvc_setattr(struct kvc *kvc, const void *key, size_t keylen,
                const struct kvc_setattr_opts *opts, struct kvc_entry *ret);

/*
 * Extended attributes of a key (docs/protocol.md, "Extended attributes"):
 * names of 1..255 bytes (any but NUL; the server gives no meaning to a
 * "user." prefix), values of at most 65536 bytes, at most 65536 bytes of
 * names and values per key.  As getxattr(2) and friends:
 * kvc_getxattr() copies the value into @buf and returns its length, or
 * with @size 0 only returns it; -ERANGE when @size is too small, -ENODATA
 * when there is no such attribute.  kvc_setxattr() with @flags
 * KVC_XATTR_CREATE (-EEXIST if it exists) or KVC_XATTR_REPLACE (-ENODATA
 * if not); -E2BIG for a value above 65536 bytes, -ENOSPC past the key's
 * total.  kvc_removexattr(): -ENODATA if there was none.  kvc_listxattr()
 * writes the names, each followed by a NUL, and returns their length (with
 * @size 0 only that); -ERANGE when @size is too small.  All: -ENOENT when
 * the key does not exist.
 */
#define KVC_XATTR_CREATE  0x1
#define KVC_XATTR_REPLACE 0x2
ssize_t kvc_getxattr(struct kvc *kvc, const void *key, size_t keylen, const char *name, void *buf,
                     size_t size);
int kvc_setxattr(struct kvc *kvc, const void *key, size_t keylen, const char *name,
                 const void *value, size_t size, int flags);
int kvc_removexattr(struct kvc *kvc, const void *key, size_t keylen, const char *name);
ssize_t kvc_listxattr(struct kvc *kvc, const void *key, size_t keylen, char *buf, size_t size);

/*
 * Pin @key (@pin true: the server never evicts it, however full) or unpin
 * it.  The pin belongs to the key: a PUT replacing its value and a RENAME
 * moving it keep it, a DELETE drops it; keys created later are not pinned.
 * Fills *ret (may be NULL) with the entry after the change.  Returns 0,
 * -ENOENT, -ENOSPC when its bytes would take the server's pinned bytes past
 * its --max-pinned (kvc_strerror() says so), or the errors of kvc_stat().
 * A server that predates pins ignores the request: *ret then says
 * pinned false.
 */
int kvc_pin(struct kvc *kvc, const void *key, size_t keylen, bool pin, struct kvc_entry *ret);

/* One LIST page.  Entries and prefixes are malloc'd; free with kvc_list_free(). */
struct kvc_list_entry {
	char *key; /* NUL-terminated copy (keys contain no NUL) */
	size_t keylen;
	struct kvc_entry e;
};
struct kvc_list {
	struct kvc_list_entry *entries;
	size_t n_entries;
	char **prefixes;            /* common prefixes, each ending with the delimiter */
	struct kvc_entry *prefix_e; /* per prefix: the key equal to it (a directory
	                             * marker), or all zero (version 0) when none */
	size_t n_prefixes;
	bool truncated;
	char *next_start_after; /* pass as start_after for the next page, or NULL */
};
int kvc_list(struct kvc *kvc, const char *prefix, const char *delimiter, const char *start_after,
             uint32_t limit, struct kvc_list *ret);
void kvc_list_free(struct kvc_list *l);

/* Server counters as name/value pairs; calls @fn once per counter. */
int kvc_stats(struct kvc *kvc, void (*fn)(void *arg, const char *name, uint64_t value), void *arg);

/* Asynchronous zero-copy calls: many may be in flight.  @done runs once on
 * the I/O thread with the result (bytes for GET, 0 for PUT, or -errno) and
 * the entry (NULL on failure).  A nonzero return means @done will not run.
 * The submitting thread may block (re)connecting, up to the deadline.
 * Unlike the synchronous calls these are not resent after a reconnect or a
 * BUSY; without RDMA an async GET returns at most max_inline bytes (short
 * read).
 * The piece list is copied; the regions must stay registered until @done,
 * and after a failure they may still be written (GET) or read (PUT) by a
 * transfer under way, as for kvc_get_mr(). */
typedef void (*kvc_done_t)(void *arg, ssize_t result, const struct kvc_entry *entry);
int kvc_get_mr_async(struct kvc *kvc, const void *key, size_t keylen, uint64_t off,
                     const struct xfer_sge *dst, size_t ndst, const struct kvc_get_opts *opts,
                     kvc_done_t done, void *arg);
int kvc_put_mr_async(struct kvc *kvc, const void *key, size_t keylen, struct xfer_mr *mr,
                     uint64_t off, uint64_t len, const struct kvc_put_opts *opts, kvc_done_t done,
                     void *arg);

/*
 * Uploads: a PUT streamed while its bytes are produced.
 *
 * kvc_upload_open() starts one for @key: empty, or with opts.base_version
 * (and base_epoch, as for if_version) a copy of the key's value at that
 * version, of which only what is written is sent (the server shares the
 * rest: copy-on-write).  *ret_size is the upload's size to begin with.
 * kvc_upload_write() copies @len bytes at @off into part buffers; a full
 * buffer, or one the next write does not continue, goes to the server
 * while the caller fills the next (the server RDMA-READs it; without RDMA
 * the parts travel inline).  Writes past the end leave zeros between.
 * kvc_upload_truncate() cuts or extends (zeros) the value.
 * kvc_upload_read() reads back what the upload holds (sends what is
 * buffered first; inline pieces, for the rare reader of a file being
 * written): bytes read, fewer at the end, or -errno.
 * kvc_upload_commit() sends what is left, waits for every part, and
 * publishes the value with @opts (as kvc_put(): if_version, mode, ...)
 * in one step: readers see the old value or the new one.
 * kvc_upload_abort() drops it; the server frees its memory.  Commit and
 * abort free @u, whatever the outcome.
 *
 * Nothing is visible before the commit.  An upload lives on its
 * connection: a reconnect in between fails it with -ECONNRESET, and a
 * failed part fails every later call; either way nothing is stored.
 * Memory: the client's part buffers (kvc_opts.upload_part x
 * upload_buffers, shared by all uploads; one upload holds at most 4).
 * Thread: one thread at a time per upload.
 */
struct kvc_upload;

struct kvc_upload_opts {
	uint64_t base_version; /* 0: start empty */
	uint64_t base_epoch;   /* epoch of base_version (kvc_entry.epoch), 0 = any */
	int timeout_ms;        /* per request, 0 = the client's */
};

int kvc_upload_open(struct kvc *kvc, const void *key, size_t keylen,
                    const struct kvc_upload_opts *opts, struct kvc_upload **ret,
                    uint64_t *ret_size);
int kvc_upload_write(struct kvc_upload *u, uint64_t off, const void *buf, size_t len);
int kvc_upload_truncate(struct kvc_upload *u, uint64_t size);
ssize_t kvc_upload_read(struct kvc_upload *u, uint64_t off, void *buf, size_t len);
uint64_t kvc_upload_size(const struct kvc_upload *u);
int kvc_upload_commit(struct kvc_upload *u, const struct kvc_put_opts *opts, struct kvc_entry *ret);
void kvc_upload_abort(struct kvc_upload *u);

#ifdef __cplusplus
}
#endif
#endif /* KVFS_CLIENT_H */
