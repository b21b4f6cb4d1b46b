/* SPDX-License-Identifier: MIT */
/*
 * fuse-null: the FUSE ceiling for kvfs's sequential reads.
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

struct cli {
	char *size;         /* -o size=SIZE, the file's length (default 1G) */
	char *readahead_kb; /* -o readahead_kb=KB written to the bdi (default 4096) */
	int threads;        /* -o threads=N FUSE workers (default 16) */
	int files;          /* -o files=N small files under small/ (default 0) */
};

#define NULL_OPT(t, p)                                                                             \
	{                                                                                          \
		t, offsetof(struct cli, p), 1                                                      \
	}
static const struct fuse_opt null_opts[] = {
        NULL_OPT("size=%s", size),
        NULL_OPT("readahead_kb=%s", readahead_kb),
        NULL_OPT("threads=%d", threads),
        NULL_OPT("files=%d", files),
        FUSE_OPT_END,
};

static uint64_t file_size;              /* set once before the loop starts */
static unsigned char pattern[BUF_SIZE]; /* what every READ returns */
static unsigned nsmall;                 /* files under small/ */
static struct fuse_session *session;    /* for notify_store at open */

static bool is_small(fuse_ino_t ino)
{
	return ino >= SMALL_BASE && ino < SMALL_BASE + (fuse_ino_t)nsmall;
}

static void usage(const char *prog)
{
	printf("Usage: %s [OPTIONS] MOUNTPOINT\n"
	       "A FUSE file system with one file, '" FILE_NAME "', whose READs return a static\n"
	       "buffer: the FUSE ceiling for kvfs, mounted with kvfs's libfuse options.\n"
	       "\n"
	       "fuse-null options (-o name=value,...):\n"
	       "    size=SIZE              length of the file, e.g. 1G (default 1G)\n"
	       "    readahead_kb=KB        read-ahead set on the mount (default 4096; 0 keeps\n"
	       "                           the kernel's 128), as kvfs does\n"
	       "    threads=N              FUSE worker threads (default 16)\n"
	       "    files=N                also a directory '" SMALL_NAME "' of N files of 4 KiB,\n"
	       "                           stored in the page cache at open as kvfs does\n"
	       "\n"
	       "Unmount with: fusermount3 -u MOUNTPOINT\n"
	       "\n"
	       "FUSE options:\n",
	       prog);
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

static void fill_attr(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = getuid();
	st->st_gid = getgid();
	if (ino == FUSE_ROOT_ID || ino == SMALL_INO) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else if (is_small(ino)) {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = SMALL_SIZE;
		st->st_blksize = BUF_SIZE;
		st->st_blocks = SMALL_SIZE / 512;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)file_size;
		st->st_blksize = BUF_SIZE;
		st->st_blocks = (blkcnt_t)((file_size + 511) / 512);
	}
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

static void null_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param ep = {0};
	unsigned long i;
	char *end;

	if (parent == FUSE_ROOT_ID && !strcmp(name, FILE_NAME)) {
		ep.ino = FILE_INO;
	} else if (parent == FUSE_ROOT_ID && nsmall && !strcmp(name, SMALL_NAME)) {
		ep.ino = SMALL_INO;
	} else if (parent == SMALL_INO && name[0] == 'f' &&
	           (i = strtoul(name + 1, &end, 10), !*end && end != name + 1 && i < nsmall)) {
		ep.ino = SMALL_BASE + i;
	} else {
		fuse_reply_err(req, ENOENT);
		return;
	}
	ep.attr_timeout = 1.0; /* kvfs's defaults */
	ep.entry_timeout = 1.0;
	fill_attr(ep.ino, &ep.attr);
	fuse_reply_entry(req, &ep);
}

static void null_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (ino != FUSE_ROOT_ID && ino != FILE_INO && !(nsmall && ino == SMALL_INO) &&
	    !is_small(ino)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(ino, &st);
	fuse_reply_attr(req, &st, 1.0);
}

static void null_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino == FUSE_ROOT_ID || ino == SMALL_INO) {
		fuse_reply_err(req, EISDIR);
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
