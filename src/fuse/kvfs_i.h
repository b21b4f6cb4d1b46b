/* SPDX-License-Identifier: MIT */
/*
 * kvfs internals: the FUSE low-level file system (kvfs.c) over the kvfs
 * client library, and its path <-> key mapping (kvfs_path.c).
 */
#ifndef KVFS_FUSE_I_H
#define KVFS_FUSE_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvfs/util.h" /* KV_KEY_MAX */

/* Longest name kvfs creates (statfs f_namemax, as NAME_MAX); longer ones
 * written by other clients can still be looked up. */
#define KVFS_NAME_MAX 255

/*
 * Key of @name inside directory @parent ("" is the root), written to @out
 * (capacity @cap, NUL-terminated).  Returns the key length, -ENAMETOOLONG
 * when it exceeds KV_KEY_MAX, -EINVAL for a name that cannot be a key
 * component ("", ".", "..", containing '/').
 */
int kvfs_path_join(const char *parent, const char *name, char *out, size_t cap);

/* Marker key that makes @dir (a key without trailing '/') an explicit
 * directory: "dir/".  Same returns as kvfs_path_join(). */
int kvfs_path_dir_marker(const char *dir, char *out, size_t cap);

/* Prefix listing the children of @dir: "" for the root, else "dir/". */
int kvfs_path_dir_prefix(const char *dir, char *out, size_t cap);

/* Last component of @key (after the last '/'). */
const char *kvfs_path_base(const char *key);

/* Is @key (a listed key) a directory marker ("…/" ending)? */
bool kvfs_path_is_marker(const char *key, size_t len);

struct kvfs_config {
	const char *server;   /* HOST:PORT */
	const char *provider; /* transfer provider for kvc */
	const char *auth_token_file;
	double attr_timeout;     /* seconds the kernel caches attributes */
	double entry_timeout;    /* seconds it caches names */
	int timeout_ms;          /* per-call deadline */
	unsigned buffers;        /* registered read buffers */
	size_t buf_size;         /* each one: max_read */
	unsigned readahead_kb;   /* set on the mount's bdi (0 = kernel default) */
	size_t spill_threshold;  /* staged writes above this go to a temp file */
	size_t stream_threshold; /* a file written past this streams to the server (upload) */
	size_t upload_part;      /* bytes per upload part buffer (kvc_opts.upload_part) */
	unsigned upload_buffers; /* part buffers the mount's uploads share */
	const char *spill_dir;
	unsigned threads; /* FUSE worker threads (the loop's maximum) */
};

/* kvfs.c: connect to the server and register the read buffers; then the
 * operations table below serves the mount.  fini undoes init. */
int kvfs_fs_init(const struct kvfs_config *cfg);
void kvfs_fs_fini(void);
/* The session the operations answer on, for notifications (store of a
 * small file's bytes at open; dropping the kernel's caches after a server
 * restart, from a thread started here); set before the session loop
 * starts.  NULL, before the session is destroyed: that thread stops and
 * no notification is sent any more. */
struct fuse_session;
void kvfs_fs_set_session(struct fuse_session *se);
struct fuse_lowlevel_ops;
extern const struct fuse_lowlevel_ops kvfs_ops;

#endif /* KVFS_FUSE_I_H */
