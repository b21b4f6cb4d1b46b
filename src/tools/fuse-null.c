/* SPDX-License-Identifier: MIT */
/*
 * fuse-null: the FUSE ceiling for kvfs's sequential reads (and, with -o write, writes).
 *
 * A libfuse low-level file system with one read-only file, "file", of a
 * given size.  READ replies with a static 1 MiB pattern buffer, so a `cat`
 * of the file measures only the kernel's FUSE path (page cache, read-ahead,
 * /dev/fuse copies, libfuse's worker threads) and no transport.
 *
 * It negotiates exactly what kvfs does (src/fuse/kvfs.c kvfs_init and
 * kvfs-main.c): -o max_read=1048576; conn->max_read, max_write and
 * max_readahead 1 MiB; max_background 64, congestion_threshold 48; async
 * read, readdirplus (always), parallel dirops, auto inval data, no
 * writeback cache (null_init() asks what kvfs_init() asks); a
 * multi-threaded loop with 16 workers; and, after the mount, the same write
 * of readahead_kb (default 4096, again once INIT is answered) into the
 * mount's /sys/class/bdi/<maj:min>/read_ahead_kb, done at the same moment
 * (after fuse_session_mount, before the loop answers INIT).  Nothing of
 * kvfs's file system or client is linked (only the tools' option parsing,
 * whose sizes are kv_parse_size()'s, as kvfs's -o values are): a difference
 * between the two is kvfs's own cost.
 *
 * With -o files=N it also has a directory "small" of N files of 4 KiB,
 * served the way kvfs serves small files: the bytes go into the page cache
 * at open (notify_store) and the open keeps the cache, so reading sends no
 * READ; a FLUSH is never asked for.  That is the FUSE ceiling for the
 * small-file benchmark: OPEN, RELEASE and LOOKUPs answered at once.
 *
 * With -o write it is also the FUSE ceiling for writes: CREATE (of a file
 * anywhere: in the root, in small/ or in a directory made by MKDIR), OPEN
 * for writing, WRITE, FLUSH, RELEASE, FSYNC and SETATTR (size, mode,
 * times) are answered at once, and a WRITE's bytes are discarded (the
 * reply says all of them were written; the file's size grows to the end
 * of the write).  kvfs's max_write (1 MiB) and its open flags for a
 * written file (the cache kept unless O_TRUNC, a FLUSH at every close)
 * are kept, so `dd bs=1M of=MNT/x` and `cp` measure only the kernel's
 * FUSE write path.  A created file reads back as the pattern (not what was
 * written), is not listed by READDIR and lives until the unmount (its
 * name can be UNLINKed).  Created nodes live in a table under one mutex.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tool_opts.h"

#define PROG       "fuse-null"
#define FILE_NAME  "file"
#define FILE_INO   2
#define SMALL_NAME "small"
#define SMALL_INO  3
#define SMALL_BASE 4 /* inode of small/f0 */
#define SMALL_SIZE 4096
#define BUF_SIZE   (1u << 20) /* max_read, max_write, max_readahead: as kvfs */
#define NODE_HASH  (1u << 16) /* buckets of the created nodes' (parent, name) table */

struct cli {
	char *size;         /* -o size=SIZE, the file's length (default 1G) */
	char *readahead_kb; /* -o readahead_kb=KB written to the bdi (default 4096) */
	int threads;        /* -o threads=N FUSE workers (default 16) */
	int files;          /* -o files=N small files under small/ (default 0) */
	int write;          /* -o write: accept creates and writes, discard the bytes */
};

#define NULL_OPT(t, p)                                                                             \
	{                                                                                          \
		t, offsetof(struct cli, p), 1                                                      \
	}
static const struct fuse_opt null_opts[] = {
        NULL_OPT("size=%s", size),       NULL_OPT("readahead_kb=%s", readahead_kb),
        NULL_OPT("threads=%d", threads), NULL_OPT("files=%d", files),
        NULL_OPT("write", write),        FUSE_OPT_END,
};

static uint64_t file_size;              /* set once before the loop starts */
static unsigned char pattern[BUF_SIZE]; /* what every READ returns */
static unsigned nsmall;                 /* files under small/ */
static struct fuse_session *session;    /* for notify_store at open */

static bool is_small(fuse_ino_t ino)
{
	return ino >= SMALL_BASE && ino < SMALL_BASE + (fuse_ino_t)nsmall;
}

/*
 * -o write: the files and directories made through the mount.  Node i has
 * inode node_base + i; nodes are never freed before the unmount (UNLINK
 * only takes the name out of the table), so a node pointer found under
 * node_lock stays valid, and its size is read and written under the lock.
 */
struct node {
	struct node *hnext; /* next in its hash bucket (NULL: last or unlinked) */
	fuse_ino_t ino;
	fuse_ino_t parent;
	mode_t mode; /* S_IFREG | 0644 or S_IFDIR | 0755 */
	uint64_t size;
	bool linked; /* its name is in the table */
	char name[];
};

static bool write_mode;
static fuse_ino_t node_base; /* first created inode: after small/'s files */
static pthread_mutex_t node_lock = PTHREAD_MUTEX_INITIALIZER;
static struct node **nodes; /* by inode - node_base */
static size_t nnodes, nodes_cap;
static struct node *node_hash[NODE_HASH];

static unsigned node_bucket(fuse_ino_t parent, const char *name)
{
	uint64_t h = 1469598103934665603ULL ^ parent;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ULL;
	return (unsigned)(h ^ (h >> 32)) & (NODE_HASH - 1);
}

/* The node of @ino, or NULL; call with node_lock held. */
static struct node *node_get(fuse_ino_t ino)
{
	if (!write_mode || ino < node_base || ino - node_base >= nnodes)
		return NULL;
	return nodes[ino - node_base];
}

/* The inode named @name under @parent, or 0; call with node_lock held. */
static fuse_ino_t node_find(fuse_ino_t parent, const char *name)
{
	for (struct node *n = node_hash[node_bucket(parent, name)]; n; n = n->hnext)
		if (n->parent == parent && !strcmp(n->name, name))
			return n->ino;
	return 0;
}

/* Add a node named @name under @parent; call with node_lock held.
 * Returns its inode, or 0 when out of memory. */
static fuse_ino_t node_add(fuse_ino_t parent, const char *name, mode_t mode)
{
	size_t len = strlen(name) + 1;
	unsigned b = node_bucket(parent, name);
	struct node *n;

	if (nnodes == nodes_cap) {
		size_t cap = nodes_cap ? 2 * nodes_cap : 4096;
		struct node **p = realloc(nodes, cap * sizeof(*p));

		if (!p)
			return 0;
		nodes = p;
		nodes_cap = cap;
	}
	n = calloc(1, sizeof(*n) + len);
	if (!n)
		return 0;
	memcpy(n->name, name, len);
	n->ino = node_base + nnodes;
	n->parent = parent;
	n->mode = mode;
	n->linked = true;
	n->hnext = node_hash[b];
	node_hash[b] = n;
	nodes[nnodes++] = n;
	return n->ino;
}

/* Take @name under @parent out of the table (the node stays); call with
 * node_lock held.  Returns 0 or -ENOENT. */
static int node_unlink(fuse_ino_t parent, const char *name)
{
	for (struct node **pp = &node_hash[node_bucket(parent, name)]; *pp; pp = &(*pp)->hnext) {
		struct node *n = *pp;

		if (n->parent == parent && !strcmp(n->name, name)) {
			*pp = n->hnext;
			n->hnext = NULL;
			n->linked = false;
			return 0;
		}
	}
	return -ENOENT;
}

static void usage(const char *prog)
{
	printf("Usage: %s [OPTIONS] MOUNTPOINT\n"
	       "A FUSE file system with one file, '" FILE_NAME "', whose READs return a static\n"
	       "buffer: the FUSE ceiling for kvfs, mounted with kvfs's libfuse options.\n"
	       "With -o write, also the FUSE write ceiling: WRITEs are dropped.\n"
	       "\n"
	       "fuse-null options (-o name=value,...):\n"
	       "    size=SIZE              length of the file, e.g. 1G (default 1G)\n"
	       "    readahead_kb=KB        read-ahead set on the mount (default 4096; 0 keeps\n"
	       "                           the kernel's 128), as kvfs does\n"
	       "    threads=N              FUSE worker threads (default 16)\n"
	       "    files=N                also a directory '" SMALL_NAME "' of N files of 4 KiB,\n"
	       "                           stored in the page cache at open as kvfs does\n"
	       "    write                  also accept creates, mkdir, writes, truncates and\n"
	       "                           unlinks of new files anywhere (the FUSE write "
	       "ceiling):\n"
	       "                           WRITEs are answered at once and their bytes dropped; a\n"
	       "                           created file reads back as the pattern, is not listed\n"
	       "                           and lives until the unmount\n"
	       "\n"
	       "Unmount with: fusermount3 -u MOUNTPOINT\n"
	       "\n"
	       "FUSE options:\n",
	       prog);
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

static void fill_reg(struct stat *st, uint64_t size)
{
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	st->st_blksize = BUF_SIZE;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
}

/* @ino's attributes; 0 or -ENOENT (an inode this file system never had). */
static int fill_attr(fuse_ino_t ino, struct stat *st)
{
	struct node *n;
	int r = 0;

	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = getuid();
	st->st_gid = getgid();
	if (ino == FUSE_ROOT_ID || (nsmall && ino == SMALL_INO)) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else if (is_small(ino)) {
		st->st_mode = S_IFREG | 0444;
		fill_reg(st, SMALL_SIZE);
	} else if (ino == FILE_INO) {
		st->st_mode = S_IFREG | 0444;
		fill_reg(st, file_size);
	} else {
		pthread_mutex_lock(&node_lock);
		n = node_get(ino);
		if (!n) {
			r = -ENOENT;
		} else if (S_ISDIR(n->mode)) {
			st->st_mode = n->mode;
			st->st_nlink = 2;
		} else {
			st->st_mode = n->mode;
			fill_reg(st, n->size);
		}
		pthread_mutex_unlock(&node_lock);
	}
	return r;
}

/* Is @ino a directory a file can be made in (-o write)? */
static bool is_dir(fuse_ino_t ino)
{
	struct node *n;
	bool d;

	if (ino == FUSE_ROOT_ID || (nsmall && ino == SMALL_INO))
		return true;
	pthread_mutex_lock(&node_lock);
	n = node_get(ino);
	d = n && S_ISDIR(n->mode);
	pthread_mutex_unlock(&node_lock);
	return d;
}

static void null_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->max_read = BUF_SIZE; /* must equal -o max_read */
	conn->max_write = BUF_SIZE;
	conn->max_readahead = BUF_SIZE;
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* kvfs asks for it so that a read checks the attributes (its open
	 * drops them when a value changed under the kernel's cache) */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

/* The fixed inode named @name under @parent ("file", "small", small/fN),
 * or 0. */
static fuse_ino_t static_find(fuse_ino_t parent, const char *name)
{
	unsigned long i;
	char *end;

	if (parent == FUSE_ROOT_ID && !strcmp(name, FILE_NAME))
		return FILE_INO;
	if (parent == FUSE_ROOT_ID && nsmall && !strcmp(name, SMALL_NAME))
		return SMALL_INO;
	if (nsmall && parent == SMALL_INO && name[0] == 'f' &&
	    (i = strtoul(name + 1, &end, 10), !*end && end != name + 1 && i < nsmall))
		return SMALL_BASE + i;
	return 0;
}

static void reply_entry(fuse_req_t req, fuse_ino_t ino)
{
	struct fuse_entry_param ep = {0};

	ep.ino = ino;
	ep.attr_timeout = 1.0; /* kvfs's defaults */
	ep.entry_timeout = 1.0;
	if (fill_attr(ino, &ep.attr) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fuse_reply_entry(req, &ep);
}

static void null_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_ino_t ino = static_find(parent, name);

	if (!ino && write_mode) {
		pthread_mutex_lock(&node_lock);
		ino = node_find(parent, name);
		pthread_mutex_unlock(&node_lock);
	}
	if (!ino) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	reply_entry(req, ino);
}

static void null_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (fill_attr(ino, &st) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fuse_reply_attr(req, &st, 1.0);
}

/* The open flags kvfs gives a descriptor: a reader never flushes; a writer
 * keeps the page cache unless it truncates (src/fuse/kvfs.c). */
static void open_flags(struct fuse_file_info *fi)
{
	bool wr = (fi->flags & O_ACCMODE) != O_RDONLY;

	fi->noflush = !wr;
	fi->keep_cache = !(fi->flags & O_TRUNC);
}

static void null_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n;
	bool dir = false;

	if (ino == FUSE_ROOT_ID || ino == SMALL_INO) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (ino >= SMALL_BASE + (fuse_ino_t)nsmall) {
		/* a created node (-o write) */
		pthread_mutex_lock(&node_lock);
		n = node_get(ino);
		if (n && !(dir = S_ISDIR(n->mode)) && (fi->flags & O_TRUNC))
			n->size = 0;
		pthread_mutex_unlock(&node_lock);
		if (!n || dir) {
			fuse_reply_err(req, n ? EISDIR : ENOENT);
			return;
		}
		open_flags(fi);
		fuse_reply_open(req, fi);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EACCES);
		return;
	}
	fi->noflush = 1;
	if (is_small(ino)) {
		/* As kvfs: the bytes into the page cache now, keep them. */
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(SMALL_SIZE);

		bv.buf[0].mem = pattern;
		fi->keep_cache = fuse_lowlevel_notify_store(session, ino, 0, &bv, 0) == 0;
	}
	fuse_reply_open(req, fi);
}

static void null_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi)
{
	uint64_t left, len = is_small(ino) ? SMALL_SIZE : file_size;

	(void)fi;
	if (ino >= SMALL_BASE + (fuse_ino_t)nsmall) {
		struct node *n;

		pthread_mutex_lock(&node_lock);
		n = node_get(ino);
		len = n ? n->size : 0;
		pthread_mutex_unlock(&node_lock);
	}
	if (off < 0 || (uint64_t)off >= len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	left = len - (uint64_t)off;
	if (size > BUF_SIZE)
		size = BUF_SIZE;
	if (size > left)
		size = (size_t)left;
	fuse_reply_buf(req, (const char *)pattern, size);
}

/* -o write: make a file or directory @name under @parent.  @fi is NULL for
 * MKDIR; for CREATE an existing created file is opened (EEXIST with
 * O_EXCL).  The fixed files cannot be made or written (EEXIST, EACCES). */
static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
	struct fuse_entry_param ep = {0};
	bool excl = !fi || (fi->flags & O_EXCL);
	fuse_ino_t ino;
	int err = 0;

	if (!write_mode) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!is_dir(parent)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (static_find(parent, name)) {
		fuse_reply_err(req, excl ? EEXIST : EACCES);
		return;
	}
	pthread_mutex_lock(&node_lock);
	ino = node_find(parent, name);
	if (ino && excl) {
		err = EEXIST;
	} else if (ino) {
		struct node *n = node_get(ino);

		if (S_ISDIR(n->mode))
			err = EISDIR;
		else if (fi->flags & O_TRUNC)
			n->size = 0;
	} else {
		ino = node_add(parent, name, mode);
		if (!ino)
			err = ENOMEM;
	}
	pthread_mutex_unlock(&node_lock);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	ep.ino = ino;
	ep.attr_timeout = 1.0;
	ep.entry_timeout = 1.0;
	fill_attr(ino, &ep.attr);
	if (!fi) {
		fuse_reply_entry(req, &ep);
		return;
	}
	open_flags(fi);
	fuse_reply_create(req, &ep, fi);
}

static void null_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                        struct fuse_file_info *fi)
{
	(void)mode;
	make_node(req, parent, name, S_IFREG | 0644, fi);
}

static void null_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)mode;
	make_node(req, parent, name, S_IFDIR | 0755, NULL);
}

/* UNLINK and RMDIR of a created name (a directory need not be empty: its
 * files just cannot be reached any more). */
static void null_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int r;

	pthread_mutex_lock(&node_lock);
	r = write_mode ? node_unlink(parent, name) : -ENOENT;
	pthread_mutex_unlock(&node_lock);
	if (r < 0 && static_find(parent, name))
		r = -EACCES;
	fuse_reply_err(req, -r);
}

/* The bytes are dropped; the file's size grows to the write's end. */
static void null_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
	struct node *n;

	(void)buf;
	(void)fi;
	pthread_mutex_lock(&node_lock);
	n = node_get(ino);
	if (n && off >= 0 && (uint64_t)off + size > n->size)
		n->size = (uint64_t)off + size;
	pthread_mutex_unlock(&node_lock);
	if (!n) {
		fuse_reply_err(req, EBADF);
		return;
	}
	fuse_reply_write(req, size);
}

/* Truncate a created file; mode and times are accepted and (but for the
 * permission bits of a created node) not kept. */
static void null_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                         struct fuse_file_info *fi)
{
	struct node *n;
	struct stat st;
	int err = 0;

	(void)fi;
	pthread_mutex_lock(&node_lock);
	n = node_get(ino);
	if (n && (to_set & FUSE_SET_ATTR_SIZE)) {
		if (S_ISDIR(n->mode))
			err = EISDIR;
		else
			n->size = (uint64_t)attr->st_size;
	}
	if (n && !err && (to_set & FUSE_SET_ATTR_MODE))
		n->mode = (n->mode & S_IFMT) | (attr->st_mode & 07777);
	pthread_mutex_unlock(&node_lock);
	if (!n && (to_set & FUSE_SET_ATTR_SIZE))
		err = ino == FUSE_ROOT_ID || ino == SMALL_INO ? EISDIR : EACCES;
	if (!err && fill_attr(ino, &st) < 0)
		err = ENOENT;
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	fuse_reply_attr(req, &st, 1.0);
}

/* FLUSH (every close of a writer), FSYNC and RELEASE: nothing to do. */
static void null_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void null_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	fuse_reply_err(req, 0);
}

/* Add one directory entry to @buf; returns the new length or @len when it
 * does not fit. */
static size_t dirent_add(fuse_req_t req, char *buf, size_t len, size_t cap, const char *name,
                         fuse_ino_t ino, off_t next, bool plus)
{
	struct fuse_entry_param ep = {0};
	size_t need;

	if (plus) {
		/* As kvfs: entries with attributes, so the kernel needs no LOOKUP;
		 * "." and ".." carry no node (ino 0: not linked). */
		fill_attr(ino, &ep.attr);
		ep.ino = name[0] == '.' ? 0 : ino;
		ep.attr_timeout = 1.0;
		ep.entry_timeout = 1.0;
		need = fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0);
		if (len + need > cap)
			return len;
		fuse_add_direntry_plus(req, buf + len, cap - len, name, &ep, next);
		return len + need;
	}
	ep.attr.st_ino = ino;
	ep.attr.st_mode = ino == FILE_INO || is_small(ino) ? S_IFREG : S_IFDIR;
	need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
	if (len + need > cap)
		return len;
	fuse_add_direntry(req, buf + len, cap - len, name, &ep.attr, next);
	return len + need;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	char buf[16384], name[32];
	size_t cap = size < sizeof(buf) ? size : sizeof(buf), len = 0, before;

	if (ino == SMALL_INO && nsmall) {
		/* ".", "..", then f0 .. f<N-1> at offsets 3 .. N+2 */
		if (off < 1)
			len = dirent_add(req, buf, len, cap, ".", SMALL_INO, 1, plus);
		if (off < 2)
			len = dirent_add(req, buf, len, cap, "..", FUSE_ROOT_ID, 2, plus);
		for (off_t o = off < 2 ? 2 : off; o < (off_t)nsmall + 2; o++) {
			snprintf(name, sizeof(name), "f%lld", (long long)(o - 2));
			before = len;
			len = dirent_add(req, buf, len, cap, name, SMALL_BASE + (fuse_ino_t)(o - 2),
			                 o + 1, plus);
			if (len == before)
				break;
		}
		fuse_reply_buf(req, buf, len);
		return;
	}
	if (ino != FUSE_ROOT_ID && is_dir(ino)) {
		/* a created directory: its files are not listed */
		if (off < 1)
			len = dirent_add(req, buf, len, cap, ".", ino, 1, plus);
		if (off < 2)
			len = dirent_add(req, buf, len, cap, "..", FUSE_ROOT_ID, 2, plus);
		fuse_reply_buf(req, buf, len);
		return;
	}
	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (off < 1)
		len = dirent_add(req, buf, len, cap, ".", FUSE_ROOT_ID, 1, plus);
	if (off < 2)
		len = dirent_add(req, buf, len, cap, "..", FUSE_ROOT_ID, 2, plus);
	if (off < 3)
		len = dirent_add(req, buf, len, cap, FILE_NAME, FILE_INO, 3, plus);
	if (off < 4 && nsmall)
		len = dirent_add(req, buf, len, cap, SMALL_NAME, SMALL_INO, 4, plus);
	fuse_reply_buf(req, buf, len);
}

static void null_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                         struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, false);
}

static void null_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                             struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, true);
}

static const struct fuse_lowlevel_ops null_ops = {
        .init = null_init,
        .lookup = null_lookup,
        .getattr = null_getattr,
        .open = null_open,
        .read = null_read,
        .readdir = null_readdir,
        .readdirplus = null_readdirplus,
        .create = null_create,
        .mkdir = null_mkdir,
        .unlink = null_unlink,
        .rmdir = null_unlink,
        .write = null_write,
        .setattr = null_setattr,
        .flush = null_flush,
        .fsync = null_fsync,
        .release = null_flush,
};

/* Raise the mount's read-ahead, as kvfs-main.c does: the kernel only lowers
 * what FUSE asks.  Returns 0 or a negative errno. */
static int set_readahead(const char *mnt, unsigned kb)
{
	char line[4096], path[128], real[PATH_MAX];
	FILE *f;
	int r = -ENOENT;

	if (!kb)
		return 0;
	if (!realpath(mnt, real))
		return -errno;
	f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char dev[32], mp[PATH_MAX];
		int fd, n;

		/* id parent maj:min root mountpoint ... */
		if (sscanf(line, "%*s %*s %31s %*s %4095s", dev, mp) != 2 || strcmp(mp, real))
			continue;
		snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
		fd = open(path, O_WRONLY);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		n = snprintf(line, sizeof(line), "%u", kb);
		r = write(fd, line, (size_t)n) == n ? 0 : -errno;
		close(fd);
	}
	fclose(f);
	return r;
}

struct ra_late {
	const char *mnt;
	unsigned kb;
};

/* As kvfs: INIT caps read-ahead at max_readahead (1 MiB), so a larger
 * value is written again once the loop answers (the stat waits for it). */
static void *readahead_late(void *arg)
{
	struct ra_late *ra = arg;
	struct stat st;

	if (stat(ra->mnt, &st) == 0 && set_readahead(ra->mnt, ra->kb) < 0)
		fprintf(stderr, PROG ": cannot set read_ahead_kb=%u on %s after INIT\n", ra->kb,
		        ra->mnt);
	return NULL;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts o = {0};
	struct fuse_loop_config *lc;
	struct fuse_session *se;
	struct cli c = {0};
	uint64_t ra = 4096;
	static struct ra_late late;
	pthread_t late_tid;
	int r = 1;

	if (fuse_opt_parse(&args, &c, null_opts, NULL) < 0)
		return 2;
	if (fuse_parse_cmdline(&args, &o) != 0)
		return 2;
	if (o.show_help) {
		usage(argv[0]);
		r = 0;
		goto out_free;
	}
	if (o.show_version) {
		printf(PROG ", libfuse %s\n", fuse_pkgversion());
		r = 0;
		goto out_free;
	}
	if (!o.mountpoint) {
		fprintf(stderr, "usage: %s [-o size=SIZE] MOUNTPOINT (see --help)\n", argv[0]);
		r = 2;
		goto out_free;
	}
	file_size = 1ULL << 30;
	if (c.size && topt_parse_size(c.size, 0, UINT64_MAX, &file_size) < 0) {
		fprintf(stderr, PROG ": -o size=%s: not a size (try 1G, 512M or a byte count)\n",
		        c.size);
		r = 2;
		goto out_free;
	}
	if (c.readahead_kb && topt_parse_size(c.readahead_kb, 0, UINT_MAX, &ra) < 0) {
		fprintf(stderr, PROG ": -o readahead_kb=%s: not a number of KiB\n", c.readahead_kb);
		r = 2;
		goto out_free;
	}
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (unsigned char)(i * 131u + 7u);

	fuse_opt_add_arg(&args, "-omax_read=1048576");
	fuse_opt_add_arg(&args, "-ofsname=fuse-null,subtype=fuse-null");
	se = fuse_session_new(&args, &null_ops, sizeof(null_ops), NULL);
	if (!se)
		goto out_free;
	session = se;
	nsmall = c.files > 0 ? (unsigned)c.files : 0;
	write_mode = c.write;
	node_base = SMALL_BASE + nsmall;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	if (fuse_session_mount(se, o.mountpoint) != 0) {
		fprintf(stderr, PROG ": cannot mount on %s (does it exist? is /dev/fuse there?)\n",
		        o.mountpoint);
		goto out_signals;
	}
	/* Same moment as kvfs: after the mount, before INIT is answered. */
	if (set_readahead(o.mountpoint, (unsigned)ra) < 0)
		fprintf(stderr, PROG ": cannot set read_ahead_kb=%u on %s (kept the kernel's)\n",
		        (unsigned)ra, o.mountpoint);
	if (fuse_daemonize(o.foreground) != 0)
		goto out_unmount;
	lc = fuse_loop_cfg_create();
	if (!lc)
		goto out_unmount;
	fuse_loop_cfg_set_max_threads(lc, c.threads > 0 ? (unsigned)c.threads : 16);
	fuse_loop_cfg_set_clone_fd(lc, o.clone_fd);
	late.mnt = o.mountpoint;
	late.kb = (unsigned)ra;
	if (ra > 1024 && pthread_create(&late_tid, NULL, readahead_late, &late) == 0)
		pthread_detach(late_tid);
	r = o.singlethread ? fuse_session_loop(se) : fuse_session_loop_mt(se, lc);
	r = r < 0 ? 1 : 0;
	fuse_loop_cfg_destroy(lc);
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
out_free:
	free(o.mountpoint);
	free(c.size);
	free(c.readahead_kb);
	fuse_opt_free_args(&args);
	return r;
}
