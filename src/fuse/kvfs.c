/* SPDX-License-Identifier: MIT */
/*
 * kvfs: a FUSE file system whose files are kv-server keys.
 *
 *   kvfs [-f] [-d] [-o OPTIONS] HOST:PORT MOUNTPOINT
 *
 * libfuse low-level API, multi-threaded.  Reads ask the server to
 * RDMA-WRITE the value straight into registered page buffers, and the FUSE
 * reply is served from that buffer.  Writes are staged (memory, spilling to
 * a temp file), one stage per inode that all of its open descriptors share,
 * and stored with one atomic PUT at flush/fsync/release, so a file is
 * published whole at close.  Semantics: docs/semantics.md.
 *
 * Locking: `fs.lock` guards the inode table and stage references; each
 * stage has its own mutex, taken before fs.lock when both are needed.  No
 * lock is held across a server call except a stage's own mutex.
 *
 * Server restarts: a restarted kv-server has an empty store whose versions
 * count from 1 again, so a version names a value only together with the
 * server epoch it was read in (kvc_entry.epoch, include/kvfs/client.h).
 * Every version kvfs keeps (the inode's cached pages and attributes, a
 * stage's, an open file's) is kept with its epoch and compared as a pair;
 * on a restart a thread of its own also drops the kernel's cached pages,
 * attributes and names of every inode kvfs knows (restart_sweep()).
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "kvfs/client.h"
#include "kvfs/log.h"
#include "kvfs/util.h"
#include "kvfs/wire.h"
#include "kvfs_i.h"

#define TAG "kvfs"

/* ------------------------------------------------------------------ */
/* Inode table                                                         */

struct node {
	uint64_t ino;
	char *path; /* key ("" for the root); owned */
	bool dir;
	uint64_t nlookup;        /* kernel references */
	uint64_t cache_version;  /* version whose pages the kernel may keep, */
	uint64_t cache_epoch;    /* of this server epoch, */
	uint64_t cache_size;     /* and its size */
	uint64_t attr_version;   /* version whose size the kernel last got from us
	                          * (0: unknown, e.g. while it writes the file), */
	uint64_t attr_epoch;     /* of this server epoch */
	struct kstage *stage;    /* the write state its open descriptors share */
	unsigned nopen;          /* open descriptors (kfile_new .. kfile_free) */
	bool holds_stage;        /* removed while open: the node keeps a reference to
	                          * the stage holding its bytes until the last close */
	struct kvc_entry open_e; /* what the last open learned from the server, */
	uint64_t open_ms;        /* and when: answers the kernel's GETATTR after it */
	bool has_owner;          /* the owner last learned from the server (a GET, */
	uint32_t uid, gid;       /* which open's revalidation is, does not carry it) */
	uint32_t mode;           /* and the mode (a directory's: its marker's) */
	struct node *next_ino, *next_path;
};

/* Bytes a read-only open fetches with its revalidating GET. */
#define KVFS_HEAD_MAX ((size_t)64 * 1024)

/*
 * The write state of a file on this mount, one per inode: every open
 * descriptor of the inode reads and writes these bytes (as on a local file
 * system: two descriptors, one file), and a close or fsync of any of them
 * publishes them.  Made by the first writable open or create, found
 * through node->stage, freed with its last reference (refs, under
 * fs.lock): descriptors, and callers pinning it for a moment.
 */
struct kstage {
	pthread_mutex_t lock;
	uint64_t ino;
	unsigned refs;    /* under fs.lock */
	uint64_t version; /* server version the bytes build on (0 = none) */
	uint64_t epoch;   /* server epoch of that version */
	uint64_t size;    /* that version's size */
	uint32_t mode;
	int64_t mtime_ns; /* set by utimensat after the last write; 0 = the PUT's time */
	int64_t atime_ns; /* the server's atime, or set by utimensat (0: unknown) */
	bool has_owner;   /* uid, gid known (from the server, or set here) */
	uint32_t uid, gid;
	bool owner_set;   /* set on this mount (create, chown) and not yet stored: the
	                   * PUT carries it; otherwise the server keeps the key's own */
	bool drop_xattrs; /* a file created here: the PUT starts it without attributes */
	bool dirty;       /* staged bytes not yet stored */
	bool loaded;      /* buf holds the whole value */
	bool replace;     /* the whole content was replaced (new file, O_TRUNC, cut to 0):
	                   * storing it depends on nothing the server holds */
	uint8_t *buf;
	size_t len, cap;
	int spill_fd;          /* >= 0 once spilled: bytes live in this file */
	struct kvc_upload *up; /* streaming (stage_stream()): the bytes are on the server, in
	                        * this upload, len its size; buf holds none */
	int err;               /* sticky error of a failed store, reported by flush */
	size_t room;           /* the server was seen to have room for this many bytes */
	int64_t dirty_ns;      /* when its bytes first changed since stored: the mtime shown
	                        * until stored (a stable one: a changing mtime makes the kernel
	                        * drop the pages of processes that map the file,
	                        * FUSE_CAP_AUTO_INVAL_DATA) */
};

/* One open descriptor. */
struct kfile {
	pthread_mutex_t lock;
	uint64_t ino;
	uint64_t version; /* version at open (0 = new file) */
	uint64_t epoch;   /* server epoch of that version */
	uint64_t size;    /* size at open */
	bool writable;
	bool reads;        /* opened for reading: its close is an access (relatime) */
	struct kstage *st; /* the inode's write state: writable opens, and read-only
	                    * ones made while it existed (they see its bytes) */
	/* read-only opens: the value's first bytes, fetched by open's GET */
	uint8_t *head;
	size_t head_len;
};

struct dirent_snap {
	char *name;
	bool dir;
	struct kvc_entry e;
};

struct kdir {
	struct dirent_snap *ents;
	size_t n;
};

static struct {
	struct kvfs_config cfg;
	struct kvc *kvc;
	struct fuse_session *se; /* for notify_store (kvfs_fs_set_session) */
	atomic_int store_slots;  /* workers that may be inside notify_store at once */
	pthread_mutex_t lock;
	struct node **by_ino, **by_path;
	size_t nbuckets;
	uint64_t next_ino;
	uid_t uid;
	gid_t gid;
	time_t mount_time;
	/* registered read buffers */
	pthread_mutex_t pool_lock;
	pthread_cond_t pool_cond;
	struct xfer_mr *pool_mr;
	uint8_t **pool_free;
	unsigned pool_nfree;
	unsigned pool_live; /* buffers not retired (free or in use) */
	/* server restarts: restart_sweeper() drops the kernel's caches */
	pthread_mutex_t sweep_lock;
	pthread_cond_t sweep_cond;
	pthread_t sweeper;
	bool sweeper_started;
	bool sweep_stop;      /* the sweeper must exit (sweep_lock) */
	uint64_t sweep_epoch; /* latest epoch a restart began (sweep_lock) */
} fs;

/* Do (@v1, @e1) and (@v2, @e2) name the same value?  A version names one
 * only within its server epoch: a restarted server counts from 1 again. */
static bool same_value(uint64_t v1, uint64_t e1, uint64_t v2, uint64_t e2)
{
	return v1 && v1 == v2 && e1 == e2;
}

/* The kernel got @e's attributes of @n's file from us.  fs.lock held. */
static void node_attr_from(struct node *n, const struct kvc_entry *e)
{
	n->attr_version = e->version;
	n->attr_epoch = e->epoch;
}

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 1099511628211ULL;
	return h;
}

static struct node *node_by_ino(uint64_t ino)
{
	struct node *n = fs.by_ino[ino % fs.nbuckets];

	while (n && n->ino != ino)
		n = n->next_ino;
	return n;
}

static struct node *node_by_path(const char *path)
{
	struct node *n = fs.by_path[hash_str(path) % fs.nbuckets];

	while (n && strcmp(n->path, path))
		n = n->next_path;
	return n;
}

static void node_unhash_path(struct node *n)
{
	struct node **pp = &fs.by_path[hash_str(n->path) % fs.nbuckets];

	while (*pp && *pp != n)
		pp = &(*pp)->next_path;
	if (*pp)
		*pp = n->next_path;
}

static void node_hash_path(struct node *n)
{
	size_t b = hash_str(n->path) % fs.nbuckets;

	n->next_path = fs.by_path[b];
	fs.by_path[b] = n;
}

/*
 * A node whose name went away (unlinked, or replaced by a rename) while the
 * kernel still holds it, e.g. open: its path becomes one no key can have, so
 * the name maps to a new node, reads find the value gone (ESTALE), and the
 * bytes a writer staged are dropped at close instead of bringing the file
 * back.  Called with fs.lock held.
 */
#define NODE_ORPHAN '\x01'

static void node_orphan(struct node *n, const char *why)
{
	char *p = malloc(strlen(why) + 2);

	if (!p)
		return;
	p[0] = NODE_ORPHAN;
	strcpy(p + 1, why);
	node_unhash_path(n);
	free(n->path);
	n->path = p;
	node_hash_path(n);
}

/* Find or create the node for @path, taking one kernel reference.
 * Called with fs.lock held.  NULL on ENOMEM. */
static struct node *node_get(const char *path, bool dir)
{
	struct node *n = node_by_path(path);

	if (n) {
		n->dir = dir;
		n->nlookup++;
		return n;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->path = strdup(path);
	if (!n->path) {
		free(n);
		return NULL;
	}
	n->ino = fs.next_ino++;
	n->dir = dir;
	n->nlookup = 1;
	n->next_ino = fs.by_ino[n->ino % fs.nbuckets];
	fs.by_ino[n->ino % fs.nbuckets] = n;
	node_hash_path(n);
	return n;
}

static void node_free_locked(struct node *n);

static void node_forget(uint64_t ino, uint64_t nlookup)
{
	struct node *n;

	if (ino == FUSE_ROOT_ID)
		return;
	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(ino);
	if (n && (n->nlookup -= KV_MIN(n->nlookup, nlookup)) == 0 && !n->stage)
		node_free_locked(n);
	pthread_mutex_unlock(&fs.lock);
}

/* Called with fs.lock held, for a node with no kernel reference and no
 * stage. */
static void node_free_locked(struct node *n)
{
	struct node **pp = &fs.by_ino[n->ino % fs.nbuckets];

	node_unhash_path(n);
	while (*pp != n)
		pp = &(*pp)->next_ino;
	*pp = n->next_ino;
	free(n->path);
	free(n);
}

/* Copy the key of @ino into @out.  0 or -ESTALE (unknown inode). */
static int ino_path(uint64_t ino, char *out, size_t cap, bool *ret_dir)
{
	struct node *n;
	int r = -ESTALE;

	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(ino);
	if (n && strlen(n->path) < cap) {
		strcpy(out, n->path);
		if (ret_dir)
			*ret_dir = n->dir;
		r = 0;
	}
	pthread_mutex_unlock(&fs.lock);
	return r;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* Server and transport errors as a file system reports them. */
static int fs_err(int r)
{
	switch (-r) {
	case ECONNRESET:
	case ECONNREFUSED:
	case ECONNABORTED:
	case ETIMEDOUT:
	case EPIPE:
	case ENOTCONN:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ECANCELED:
	case EPROTO:
	case EBADMSG:
		KV_WARN_RL(TAG, "server %s: %s", fs.cfg.server, kvc_strerror());
		return EIO;
	case EACCES:
		return EACCES;
	default:
		return r < 0 ? -r : EIO;
	}
}

static struct timespec ns_timespec(int64_t ns)
{
	struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};

	return ts;
}

static void fill_file_attr(struct stat *st, uint64_t ino, const struct kvc_entry *e)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	/* a link's permissions are never checked: lrwxrwxrwx, as on Linux */
	st->st_mode = e->type == KVC_TYPE_SYMLINK ? S_IFLNK | 0777 : S_IFREG | (e->mode & 07777);
	if (e->type == KVC_TYPE_SPECIAL && (e->mode & S_IFMT)) {
		/* a fifo, socket or device: the kernel gives it its semantics */
		st->st_mode = e->mode & (S_IFMT | 07777);
		st->st_rdev = (dev_t)e->rdev;
	}
	st->st_nlink = 1;
	st->st_uid = e->has_owner ? e->uid : fs.uid;
	st->st_gid = e->has_owner ? e->gid : fs.gid;
	st->st_size = (off_t)e->size;
	st->st_blksize = 1 << 20;
	st->st_blocks = (blkcnt_t)((e->size + 511) / 512);
	st->st_mtim = ns_timespec(e->mtime_ns);
	st->st_ctim = ns_timespec(e->ctime_ns ? e->ctime_ns : e->mtime_ns);
	st->st_atim = ns_timespec(e->atime_ns ? e->atime_ns : e->mtime_ns);
}

/* @nlink: 2 + its subdirectories when known (probe_links()), else 2 */
static void fill_dir_attr(struct stat *st, uint64_t ino, const struct kvc_entry *marker,
                          nlink_t nlink)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = S_IFDIR | (marker && marker->mode ? marker->mode & 07777 : 0755);
	st->st_nlink = nlink ? nlink : 2;
	st->st_uid = marker && marker->has_owner ? marker->uid : fs.uid;
	st->st_gid = marker && marker->has_owner ? marker->gid : fs.gid;
	st->st_blksize = 4096;
	if (marker && marker->mtime_ns) {
		st->st_mtim = ns_timespec(marker->mtime_ns);
		st->st_ctim = ns_timespec(marker->ctime_ns ? marker->ctime_ns : marker->mtime_ns);
		st->st_atim = ns_timespec(marker->atime_ns ? marker->atime_ns : marker->mtime_ns);
	} else {
		st->st_mtim.tv_sec = fs.mount_time;
		st->st_atim = st->st_ctim = st->st_mtim;
	}
}

/*
 * A directory's link count, as a local file system keeps it: 2 + its
 * subdirectories, counted in the page of its listing that probe_links()
 * fetches anyway (one LIST of up to KVFS_NLINK_PAGE names, rolled up at
 * '/', instead of one name).  A directory with more names than that shows
 * 1, the Linux convention for "not counted" (find and fts then do not
 * infer anything from it).
 */
#define KVFS_NLINK_PAGE 256

static nlink_t dir_links(const struct kvc_list *l)
{
	return l->truncated ? 1 : 2 + (nlink_t)l->n_prefixes;
}

/*
 * What is @key: a file (0, *e filled), a directory (1, *e the marker's
 * metadata or zeroes), or nothing (-ENOENT, also for a name the key policy
 * refuses, so lookups of such names are plain misses).  Other negative errno on
 * server errors.  With @ret_nlink a directory's link count (dir_links()) is
 * set too, else it costs a LIST of one name.
 */
static int probe_links(const char *key, struct kvc_entry *e, nlink_t *ret_nlink)
{
	char pfx[KV_KEY_MAX + 2];
	struct kvc_list l;
	int r;

	if (!key[0]) {
		memset(e, 0, sizeof(*e));
		if (ret_nlink && kvc_list(fs.kvc, "", "/", NULL, KVFS_NLINK_PAGE, &l) == 0) {
			*ret_nlink = dir_links(&l);
			kvc_list_free(&l);
		}
		return 1;
	}
	/*
	 * A STAT, then for a missing key a LIST (is its name a directory?).
	 * kvc_stat_dir() answers both in one round trip, but a lookup that fast
	 * made two races of open() with a rename or unlink on this mount much
	 * more frequent (an open of the replaced inode is ESTALE, the kernel
	 * retries once: kvfs::rename_over_an_open_name_never_einval and sqlite
	 * in WAL mode failed under load); it waits until an open of a replaced
	 * inode can get its old bytes.
	 */
	r = kvc_stat(fs.kvc, key, strlen(key), e);
	if (r == 0)
		return 0;
	if (r == -EINVAL)
		return -ENOENT; /* not a valid key (wire_key_check()): cannot exist */
	if (r != -ENOENT)
		return r;
	r = kvfs_path_dir_marker(key, pfx, sizeof(pfx));
	if (r < 0)
		return -ENOENT; /* too long to be a directory */
	r = kvc_list(fs.kvc, pfx, ret_nlink ? "/" : NULL, NULL, ret_nlink ? KVFS_NLINK_PAGE : 1,
	             &l);
	if (r < 0)
		return r;
	memset(e, 0, sizeof(*e));
	r = l.n_entries || l.n_prefixes ? 1 : -ENOENT;
	if (r == 1 && l.n_entries && !strcmp(l.entries[0].key, pfx))
		*e = l.entries[0].e;
	if (r == 1 && ret_nlink)
		*ret_nlink = dir_links(&l);
	kvc_list_free(&l);
	return r;
}

static int probe(const char *key, struct kvc_entry *e)
{
	return probe_links(key, e, NULL);
}

/* What the server said of @n's owner.  Called with fs.lock held. */
static void node_learn(struct node *n, const struct kvc_entry *e)
{
	n->has_owner = e->has_owner;
	n->uid = e->uid;
	n->gid = e->gid;
	n->mode = e->mode;
}

/*
 * The group a new entry of directory @parent gets, made by @ctx: a
 * set-group-ID directory's own (and *ret_sgid true: a subdirectory keeps
 * the bit), as Linux's local file systems do; else the caller's.  From
 * what kvfs last learned of the directory's marker (the kernel refreshes
 * it before a create when its attributes have expired: it checks the
 * permission to write there).
 */
static gid_t new_gid(fuse_ino_t parent, const struct fuse_ctx *ctx, bool *ret_sgid)
{
	struct node *n;
	gid_t gid = ctx->gid;

	*ret_sgid = false;
	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(parent);
	if (n && n->dir && n->has_owner && (n->mode & S_ISGID)) {
		gid = n->gid;
		*ret_sgid = true;
	}
	pthread_mutex_unlock(&fs.lock);
	return gid;
}

static void reply_entry_links(fuse_req_t req, const char *key, bool dir, const struct kvc_entry *e,
                              nlink_t nlink)
{
	struct fuse_entry_param ep = {0};
	struct node *n;

	pthread_mutex_lock(&fs.lock);
	n = node_get(key, dir);
	if (n && !dir)
		node_attr_from(n, e);
	if (n && e->version)
		node_learn(n, e);
	pthread_mutex_unlock(&fs.lock);
	if (!n) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ep.ino = n->ino;
	ep.attr_timeout = fs.cfg.attr_timeout;
	ep.entry_timeout = fs.cfg.entry_timeout;
	if (dir)
		fill_dir_attr(&ep.attr, n->ino, e, nlink);
	else
		fill_file_attr(&ep.attr, n->ino, e);
	if (fuse_reply_entry(req, &ep))
		node_forget(n->ino, 1);
}

/* A file's entry, or a new directory's (no subdirectory yet). */
static void reply_entry(fuse_req_t req, const char *key, bool dir, const struct kvc_entry *e)
{
	reply_entry_links(req, key, dir, e, 2);
}

/* ------------------------------------------------------------------ */
/* Read buffers                                                        */

static uint8_t *pool_get(void)
{
	uint8_t *b = NULL;

	pthread_mutex_lock(&fs.pool_lock);
	while (fs.pool_mr && fs.pool_nfree == 0 && fs.pool_live > 0)
		pthread_cond_wait(&fs.pool_cond, &fs.pool_lock);
	if (fs.pool_mr && fs.pool_nfree > 0)
		b = fs.pool_free[--fs.pool_nfree];
	pthread_mutex_unlock(&fs.pool_lock);
	return b;
}

static void pool_put(uint8_t *b)
{
	pthread_mutex_lock(&fs.pool_lock);
	fs.pool_free[fs.pool_nfree++] = b;
	pthread_cond_signal(&fs.pool_cond);
	pthread_mutex_unlock(&fs.pool_lock);
}

/* A read into @b failed without a clean answer from the server: a transfer
 * into it may still be under way (tcp and shm keep landing a message that
 * began before the failure), so @b is never handed out again.  Reads fall
 * back to plain memory once every buffer is retired. */
static void pool_retire(uint8_t *b)
{
	unsigned live;

	pthread_mutex_lock(&fs.pool_lock);
	live = --fs.pool_live;
	pthread_cond_broadcast(&fs.pool_cond);
	pthread_mutex_unlock(&fs.pool_lock);
	KV_DEBUG(TAG, "read buffer %p retired after a failed transfer (%u left)", (void *)b, live);
}

static int pool_init(void)
{
	struct xfer_engine *eng = kvc_engine(fs.kvc);
	size_t total = (size_t)fs.cfg.buffers * fs.cfg.buf_size;
	int r;

	if (!eng) {
		KV_INFO(TAG,
		        "no RDMA with this server: reads travel inline on the control channel");
		return 0;
	}
	r = xfer_buf_alloc(eng, total, XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_WRITE, &fs.pool_mr);
	if (r < 0) {
		KV_WARN(TAG, "cannot register %zu read buffers: %s; reads travel inline",
		        (size_t)fs.cfg.buffers, strerror(-r));
		return 0;
	}
	fs.pool_free = calloc(fs.cfg.buffers, sizeof(*fs.pool_free));
	if (!fs.pool_free)
		return -ENOMEM;
	for (unsigned i = 0; i < fs.cfg.buffers; i++)
		fs.pool_free[fs.pool_nfree++] =
		        (uint8_t *)xfer_mr_addr(fs.pool_mr) + i * fs.cfg.buf_size;
	fs.pool_live = fs.cfg.buffers;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Staging of writes                                                   */

static uint8_t *stage_ptr(struct kstage *s)
{
	return s->buf;
}

/* Make room for @len bytes; spills to a temp file past the threshold. */
static int stage_reserve(struct kstage *s, size_t len)
{
	size_t ncap;
	uint8_t *n;

	if (len <= s->cap)
		return 0;
	if (s->spill_fd < 0 && len > fs.cfg.spill_threshold) {
		char tmpl[PATH_MAX];
		int fd;

		snprintf(tmpl, sizeof(tmpl), "%s/kvfs-spill-XXXXXX", fs.cfg.spill_dir);
		fd = mkstemp(tmpl);
		if (fd < 0)
			return -errno;
		unlink(tmpl);
		if (s->len && pwrite(fd, s->buf, s->len, 0) != (ssize_t)s->len) {
			close(fd);
			return -EIO;
		}
		free(s->buf);
		s->buf = NULL;
		s->cap = 0;
		s->spill_fd = fd;
	}
	if (s->spill_fd >= 0) {
		/* Grow the file and map it: the PUT reads straight from it. */
		ncap = KV_MAX(len, s->cap * 2);
		if (ftruncate(s->spill_fd, (off_t)ncap) < 0)
			return -errno;
		if (s->buf)
			munmap(s->buf, s->cap);
		n = mmap(NULL, ncap, PROT_READ | PROT_WRITE, MAP_SHARED, s->spill_fd, 0);
		if (n == MAP_FAILED) {
			s->buf = NULL;
			s->cap = 0;
			return -errno;
		}
		s->buf = n;
		s->cap = ncap;
		return 0;
	}
	ncap = KV_MAX(len, KV_MAX(s->cap * 2, (size_t)64 * 1024));
	n = realloc(s->buf, ncap);
	if (!n)
		return -ENOMEM;
	s->buf = n;
	s->cap = ncap;
	return 0;
}

/* Its bytes changed (called with s->lock held). */
static void stage_touch(struct kstage *s)
{
	struct timespec ts;

	if (s->dirty)
		return; /* the mtime shown stays that of the first change */
	clock_gettime(CLOCK_REALTIME, &ts);
	s->dirty = true;
	s->dirty_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Drop the staged bytes (not the state), streamed ones too. */
static void stage_drop(struct kstage *s)
{
	kvc_upload_abort(s->up); /* the server frees what it held */
	s->up = NULL;
	if (s->spill_fd >= 0) {
		if (s->buf)
			munmap(s->buf, s->cap);
		close(s->spill_fd);
	} else {
		free(s->buf);
	}
	s->buf = NULL;
	s->cap = s->len = 0;
	s->spill_fd = -1;
	s->loaded = false;
}

/* A stage for @ino building on the server's @e (NULL: a new file). */
static struct kstage *stage_new(uint64_t ino, const struct kvc_entry *e)
{
	struct kstage *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	s->ino = ino;
	s->spill_fd = -1;
	s->mode = 0644;
	if (e) {
		s->version = e->version;
		s->epoch = e->epoch;
		s->size = e->size;
		s->mode = e->mode;
		s->atime_ns = e->atime_ns;
		s->has_owner = e->has_owner;
		s->uid = e->uid;
		s->gid = e->gid;
	}
	return s;
}

static void stage_destroy(struct kstage *s)
{
	stage_drop(s);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Read the whole current value into the stage (read-modify-write). */
static int stage_load(struct kstage *s, const char *key)
{
	struct kvc_get_opts go = {.if_version = s->version, .if_epoch = s->epoch};
	struct kvc_entry e;
	bool retried = false;
	size_t got = 0;
	int r;

	if (s->loaded)
		return 0;
	if (s->version == 0) { /* new file: nothing to load */
		s->loaded = true;
		return 0;
	}
	r = stage_reserve(s, s->size);
	if (r < 0)
		return r;
	while (got < s->size) {
		ssize_t n = kvc_get(fs.kvc, key, strlen(key), got, stage_ptr(s) + got,
		                    s->size - got, &go, &e);

		if ((n == -ESTALE || n == 0) && !s->dirty && !retried) {
			/* Stored again since our open (another descriptor that
			 * closed, another mount): nothing here is ours yet, so
			 * build on the newest. */
			r = kvc_stat(fs.kvc, key, strlen(key), &e);
			if (r < 0)
				return r == -ENOENT ? -ESTALE : r;
			retried = true;
			s->version = go.if_version = e.version;
			s->epoch = go.if_epoch = e.epoch;
			s->size = e.size;
			got = 0;
			r = stage_reserve(s, s->size);
			if (r < 0)
				return r;
			continue;
		}
		if (n < 0)
			return n == -ENOENT ? -ESTALE : (int)n;
		if (n == 0)
			return -ESTALE;
		got += (size_t)n;
	}
	s->len = s->size;
	s->loaded = true;
	return 0;
}

/*
 * Make @s stream: from here its bytes go to the server while they are
 * written (an upload, kvc_upload_*), not to memory or a temp file; the
 * close or fsync publishes them (stage_store()).  Bytes the stage holds go
 * first; a stage holding none, of an existing value, starts from that
 * value on the server (copy-on-write: only what is written travels, so an
 * append to a large file sends the appended bytes).  Called with s->lock
 * held.
 */
static int stage_stream(struct kstage *s, const char *key)
{
	struct kvc_upload_opts uo = {0};
	bool from_buf = s->loaded || s->dirty, retried = false;
	struct kvc_upload *up;
	struct kvc_entry e;
	size_t len = s->len;
	uint64_t size;
	int r;

	for (;;) {
		if (!from_buf && s->version) {
			uo.base_version = s->version;
			uo.base_epoch = s->epoch;
		}
		r = kvc_upload_open(fs.kvc, key, strlen(key), &uo, &up, &size);
		if (!(r == -ESTALE || r == -ENOENT) || !uo.base_version || retried)
			break;
		/* Stored again since our open (as in stage_load()): build on
		 * the newest, nothing here is ours yet. */
		r = kvc_stat(fs.kvc, key, strlen(key), &e);
		if (r < 0)
			return r == -ENOENT ? -ESTALE : r;
		retried = true;
		s->version = e.version;
		s->epoch = e.epoch;
		s->size = e.size;
	}
	if (r < 0)
		return r == -ENOENT && uo.base_version ? -ESTALE : r;
	if (from_buf && len)
		r = kvc_upload_write(up, 0, stage_ptr(s), len);
	if (r < 0) {
		kvc_upload_abort(up);
		return r;
	}
	stage_drop(s);
	s->up = up;
	s->len = from_buf ? len : (size_t)size;
	return 0;
}

/* Should a write (or a cut) to @end make @s stream? */
static bool stream_now(const struct kstage *s, uint64_t end)
{
	struct kvc_limits lim;
	bool want;

	if (!fs.cfg.stream_threshold || s->up)
		return false;
	if (s->loaded || s->dirty) /* bytes here: once they grow past the threshold */
		want = end > fs.cfg.stream_threshold;
	else /* none here: rather than load a large value, build on it on the server */
		want = s->version &&
		       (s->size > fs.cfg.stream_threshold || end > fs.cfg.stream_threshold);
	if (!want)
		return false;
	kvc_limits(fs.kvc, &lim); /* once per file: an older server takes no uploads */
	return lim.uploads;
}

/*
 * Store the staged bytes with one PUT.  Called with s->lock held.  Bytes
 * that build on a version read from the server are stored only over that
 * version (if_version): another mount's newer commit is never silently
 * undone; the conflict is -ESTALE, reported by the close or fsync.  A
 * whole-content replacement (new file, O_TRUNC, cut to 0) is stored
 * unconditionally: the last close wins.
 */
/* Store the upload side of the common work of stage_store(): its options. */
static void stage_put_opts(struct kstage *s, struct kvc_put_opts *po)
{
	po->mode = s->mode;
	po->mtime_ns = s->mtime_ns;
	if (!s->replace) {
		po->if_version = s->version;
		po->if_epoch = s->epoch;
	}
	po->set_owner = s->owner_set;
	po->uid = s->uid;
	po->gid = s->gid;
	po->drop_xattrs = s->drop_xattrs;
}

/* Stored: the stage now builds on @e. */
static void stage_stored(struct kstage *s, const struct kvc_entry *e)
{
	struct node *n;

	s->dirty = false;
	s->replace = false;
	s->owner_set = false; /* the server holds them now */
	s->drop_xattrs = false;
	s->err = 0;
	s->version = e->version;
	s->epoch = e->epoch;
	s->size = s->len;
	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(s->ino);
	if (n) { /* our own bytes: the cache is current */
		n->cache_version = e->version;
		n->cache_epoch = e->epoch;
		n->cache_size = s->len;
	}
	pthread_mutex_unlock(&fs.lock);
}

/* A refused conditional store: say why, once in a while; -ESTALE. */
static int stage_conflict(struct kstage *s, const char *key)
{
	char q[80];

	kv_quote_key(key, strlen(key), q, sizeof(q));
	KV_WARN_RL(TAG,
	           "%s: not stored: changed or removed on the server since this "
	           "mount read version %llu (another mount wrote it); the close "
	           "or fsync fails with ESTALE",
	           q, (unsigned long long)s->version);
	return -ESTALE;
}

/* stage_store() of a streaming stage: commit its upload.  Whatever the
 * outcome the upload is gone; on failure the file is what the server
 * held before (its bytes were on the server only). */
static int stage_store_upload(struct kstage *s, const char *key)
{
	struct kvc_put_opts po = {0};
	struct kvc_entry e;
	int r;

	stage_put_opts(s, &po);
	r = kvc_upload_commit(s->up, &po, &e);
	s->up = NULL;
	if (r < 0) {
		KV_INFO(TAG, "a written file was not stored: %s", kvc_strerror()); /* names it */
		s->dirty = false;
		s->len = 0;
		s->loaded = false;
		if (po.if_version && (r == -ESTALE || r == -ENOENT))
			r = stage_conflict(s, key);
		return r;
	}
	stage_stored(s, &e);
	return 0;
}

static int stage_store(struct kstage *s)
{
	char key[KV_KEY_MAX + 1];
	struct kvc_put_opts po = {0};
	struct kvc_entry e;
	int r;

	if (!s->dirty)
		return -s->err;
	r = ino_path(s->ino, key, sizeof(key), NULL);
	if (r < 0)
		return r;
	if (key[0] == NODE_ORPHAN) { /* removed while open: nothing to store */
		KV_DEBUG(TAG, "a file %s while open: %zu staged bytes dropped", key + 1, s->len);
		s->dirty = false;
		return 0;
	}
	if (s->up) /* streamed: its bytes are read from the server after this */
		return stage_store_upload(s, key);
	stage_put_opts(s, &po);
	r = kvc_put(fs.kvc, key, strlen(key), stage_ptr(s), s->len, &po, &e);
	if (r < 0) {
		KV_DEBUG(TAG, "PUT of %zu bytes: %s", s->len, kvc_strerror()); /* names the key */
		if (po.if_version && (r == -ESTALE || r == -ENOENT))
			r = stage_conflict(s, key);
		return r;
	}
	stage_stored(s, &e);
	return 0;
}

/* The stage of @ino with a reference, made from @e if there is none and
 * @create; NULL when there is none (or no memory). */
static struct kstage *stage_ref(uint64_t ino, bool create, const struct kvc_entry *e)
{
	struct kstage *s = NULL;
	struct node *n;

	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(ino);
	if (n && n->stage) {
		s = n->stage;
		s->refs++;
	} else if (n && create && (s = stage_new(ino, e))) {
		s->refs = 1;
		n->stage = s;
	}
	pthread_mutex_unlock(&fs.lock);
	return s;
}

/* Drop a reference; the last one frees the stage (storing nothing: the
 * caller stored what it had to) and a node the kernel already forgot. */
static void stage_unref(struct kstage *s)
{
	struct node *n;
	bool last;

	pthread_mutex_lock(&fs.lock);
	last = --s->refs == 0;
	if (last) {
		n = node_by_ino(s->ino);
		if (n && n->stage == s) {
			n->stage = NULL;
			if (n->nlookup == 0)
				node_free_locked(n);
		}
	}
	pthread_mutex_unlock(&fs.lock);
	if (last)
		stage_destroy(s);
}

/* Attributes of a file whose stage holds bytes not yet stored: then fills
 * @e (size, mode, mtime) and returns true. */
static bool stage_attr_locked(struct kstage *s, struct kvc_entry *e, bool loaded_too)
{
	bool dirty = s->dirty || (loaded_too && s->loaded);

	if (dirty) {
		memset(e, 0, sizeof(*e));
		e->size = s->len;
		e->mode = s->mode;
		e->mtime_ns = s->mtime_ns ? s->mtime_ns : s->dirty_ns;
		/* changed content: a new ctime (when it changed, at the latest) */
		e->ctime_ns = KV_MAX(e->mtime_ns, s->dirty_ns);
		e->atime_ns = s->atime_ns ? s->atime_ns : e->mtime_ns;
		e->has_owner = s->has_owner;
		e->uid = s->uid;
		e->gid = s->gid;
	}
	return dirty;
}

static bool stage_attr_of(struct kstage *s, struct kvc_entry *e, bool loaded_too)
{
	bool dirty;

	pthread_mutex_lock(&s->lock);
	dirty = stage_attr_locked(s, e, loaded_too);
	pthread_mutex_unlock(&s->lock);
	return dirty;
}

static bool stage_attr(struct kstage *s, struct kvc_entry *e)
{
	return stage_attr_of(s, e, false);
}

/* Is @key the path of a node whose name went away (node_orphan())? */
static bool key_orphan(const char *key)
{
	return key[0] == NODE_ORPHAN;
}

/* The kernel sizes the file as it is written: forget the size it got. */
static void node_size_unknown(uint64_t ino)
{
	struct node *n;

	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(ino);
	if (n)
		n->attr_version = 0;
	pthread_mutex_unlock(&fs.lock);
}

/* ------------------------------------------------------------------ */
/* Operations                                                          */

static void kvfs_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->max_read = (unsigned)fs.cfg.buf_size; /* must equal -o max_read */
	conn->max_write = (unsigned)fs.cfg.buf_size;
	conn->max_readahead = (unsigned)fs.cfg.buf_size;
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* every read checks the attributes (kvfs_open() drops them when the
	 * value changed under the kernel's cache) */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	KV_DEBUG(TAG, "FUSE capable 0x%x want 0x%x", conn->capable, conn->want);
}

/* Key for a new entry @name in @parent: kvfs_path_join(), then the key
 * policy (wire_key_check()), so creating a name the server would refuse
 * fails at once with EINVAL rather than at close. */
static int join_new(const char *parent, const char *name, char *out, size_t cap)
{
	int r;

	if (strlen(name) > KVFS_NAME_MAX)
		return -ENAMETOOLONG; /* what statfs says: tools size names by it */
	r = kvfs_path_join(parent, name, out, cap);

	if (r > 0 && wire_key_check(out, (size_t)r) == -EINVAL)
		r = -EINVAL;
	return r;
}

/*
 * A lookup's STAT @e of a file whose stage @s this mount writes may be
 * older than the stage: written and stored through a descriptor between
 * the STAT and now.  The kernel takes the size of a lookup's reply as the
 * file's (a smaller one cuts the pages of processes that map it, SIGBUS,
 * and ends reads early), so STAT again under the stage's lock, which every
 * store holds; or answer with the stage's attributes if it holds bytes not
 * stored by then.  0 or a negative errno.
 */
static int lookup_catch_up(struct kstage *s, const char *key, struct kvc_entry *e)
{
	int r = 0;

	pthread_mutex_lock(&s->lock);
	if (stage_attr_locked(s, e, false))
		e->version = 0; /* written again meanwhile: the kernel sizes it */
	else if (s->version && s->epoch == e->epoch && s->version > e->version)
		r = kvc_stat(fs.kvc, key, strlen(key), e);
	pthread_mutex_unlock(&s->lock);
	return r;
}

static void kvfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	char ppath[KV_KEY_MAX + 1], key[KV_KEY_MAX + 2];
	struct kvc_entry e;
	nlink_t nlink = 2;
	int r;

	r = ino_path(parent, ppath, sizeof(ppath), NULL);
	if (r == 0)
		r = kvfs_path_join(ppath, name, key, sizeof(key));
	if (r < 0) {
		fuse_reply_err(req, r == -EINVAL ? ENOENT : -r);
		return;
	}
	r = probe_links(key, &e, &nlink);
	if (r == 0 || r == -ENOENT) {
		/* A file open for writing on this mount is what its stage holds:
		 * created and not stored yet, or grown past the server's size. */
		struct kstage *s = NULL;
		struct node *n;

		pthread_mutex_lock(&fs.lock);
		n = node_by_path(key);
		if (n && n->stage) {
			s = n->stage;
			s->refs++;
		}
		pthread_mutex_unlock(&fs.lock);
		if (s) {
			struct kvc_entry se;

			if (stage_attr(s, &se)) {
				se.version = 0; /* the kernel sizes it as it writes */
				e = se;
				r = 0;
			} else if (r == 0) {
				r = lookup_catch_up(s, key, &e);
			}
			stage_unref(s);
		}
	}
	if (r < 0) {
		if (r == -ENOENT && strlen(name) > KVFS_NAME_MAX) {
			/* No such name, and none kvfs could make (NAME_MAX): as a
			 * local file system answers it.  A longer name another
			 * client stored is still found above. */
			fuse_reply_err(req, ENAMETOOLONG);
			return;
		}
		if (r == -ENOENT) {
			struct fuse_entry_param ep = {0}; /* negative entry, not cached */

			fuse_reply_entry(req, &ep);
			return;
		}
		fuse_reply_err(req, fs_err(r));
		return;
	}
	reply_entry_links(req, key, r == 1, &e, nlink);
}

static void kvfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_forget(ino, nlookup);
	fuse_reply_none(req);
}

static void kvfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
	for (size_t i = 0; i < count; i++)
		node_forget(f[i].ino, f[i].nlookup);
	fuse_reply_none(req);
}

static void kvfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char key[KV_KEY_MAX + 1];
	struct kvc_entry e;
	nlink_t nlink = 2;
	struct stat st;
	struct node *n;
	bool dir;
	int r;

	(void)fi;
	r = ino_path(ino, key, sizeof(key), &dir);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	/* A file being written reports its staged size; one removed while
	 * open, what its descriptors still read, with no link. */
	if (!dir) {
		struct kstage *s = stage_ref(ino, false, NULL);
		bool staged = s && stage_attr_of(s, &e, key_orphan(key));

		if (s)
			stage_unref(s);
		if (staged) {
			node_size_unknown(ino);
			fill_file_attr(&st, ino, &e);
			if (key_orphan(key))
				st.st_nlink = 0;
			fuse_reply_attr(req, &st, 0);
			return;
		}
		if (key_orphan(key)) {
			fuse_reply_err(req, ESTALE);
			return;
		}
	}
	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(ino);
	/* The kernel asks right after an open (cat's fstat): the open has
	 * just revalidated with the server, within the attribute timeout. */
	if (n && !dir && fs.cfg.attr_timeout > 0 && n->open_ms &&
	    same_value(n->open_e.version, n->open_e.epoch, n->cache_version, n->cache_epoch) &&
	    kv_now_ms() - n->open_ms < (uint64_t)(KV_MIN(fs.cfg.attr_timeout, 1.0) * 1000)) {
		e = n->open_e;
		node_attr_from(n, &e);
		pthread_mutex_unlock(&fs.lock);
		fill_file_attr(&st, ino, &e);
		fuse_reply_attr(req, &st, fs.cfg.attr_timeout);
		return;
	}
	pthread_mutex_unlock(&fs.lock);
	r = probe_links(key, &e, &nlink);
	if (r < 0) {
		fuse_reply_err(req, r == -ENOENT ? ENOENT : fs_err(r));
		return;
	}
	if (r == 1) {
		fill_dir_attr(&st, ino, &e, nlink);
		pthread_mutex_lock(&fs.lock);
		n = node_by_ino(ino);
		if (n && e.version)
			node_learn(n, &e); /* its marker's owner and mode */
		pthread_mutex_unlock(&fs.lock);
	} else {
		fill_file_attr(&st, ino, &e);
		pthread_mutex_lock(&fs.lock);
		n = node_by_ino(ino);
		if (n) {
			node_attr_from(n, &e);
			node_learn(n, &e);
		}
		pthread_mutex_unlock(&fs.lock);
	}
	fuse_reply_attr(req, &st, fs.cfg.attr_timeout);
}

static struct kfile *kfile_new(uint64_t ino, bool writable)
{
	struct kfile *f = calloc(1, sizeof(*f));
	struct node *n;

	if (!f)
		return NULL;
	pthread_mutex_init(&f->lock, NULL);
	f->ino = ino;
	f->writable = writable;
	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(ino);
	if (n)
		n->nopen++;
	pthread_mutex_unlock(&fs.lock);
	return f;
}

static void kfile_free(struct kfile *f)
{
	struct kstage *held = NULL;
	struct node *n;

	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(f->ino);
	if (n && n->nopen && --n->nopen == 0 && n->holds_stage) {
		held = n->stage; /* the last close of a removed file: its bytes go */
		n->holds_stage = false;
	}
	pthread_mutex_unlock(&fs.lock);
	if (f->st)
		stage_unref(f->st);
	if (held)
		stage_unref(held);
	/* A read replying from f->head holds the lock until its reply is
	 * written: the kernel may send RELEASE as soon as it has the reply. */
	pthread_mutex_lock(&f->lock);
	pthread_mutex_unlock(&f->lock);
	free(f->head);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

/* Cut or extend the staged bytes to @size (zeros past the old end). */
static int stage_truncate(struct kstage *s, const char *key, uint64_t size)
{
	int r;

	if (size > SIZE_MAX)
		return -EFBIG;
	pthread_mutex_lock(&s->lock);
	if (size == 0) {
		stage_drop(s);
		s->loaded = true;
		s->replace = true;
		r = 0;
	} else if (s->up || (stream_now(s, size) && !key_orphan(key))) {
		r = s->up ? 0 : stage_stream(s, key);
		if (r == 0)
			r = kvc_upload_truncate(s->up, size);
		if (r == 0) {
			s->len = (size_t)size;
			stage_touch(s);
		}
		goto out_unlock;
	} else {
		r = stage_load(s, key);
	}
	if (r == 0)
		r = stage_reserve(s, (size_t)size);
	if (r == 0) {
		if ((size_t)size > s->len)
			memset(stage_ptr(s) + s->len, 0, (size_t)size - s->len);
		s->len = (size_t)size;
		stage_touch(s);
	}
out_unlock:
	pthread_mutex_unlock(&s->lock);
	node_size_unknown(s->ino);
	return r;
}

/* Put @len bytes of an inode's value, from offset 0, into the kernel's page
 * cache (FUSE_NOTIFY_STORE), after dropping its cached pages and attributes
 * first if @inval.  0, or a negative errno (e.g. -ENOSYS on an old kernel:
 * then reads simply ask). */
static int store_head(fuse_ino_t ino, const uint8_t *bytes, size_t len, bool inval)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(len);
	int r;

	/*
	 * The kernel locks each page it stores into.  If a READ of the same
	 * file holds a page locked, the store waits for that READ, which needs
	 * a free worker to be answered: so never let every worker wait here.
	 * Without a slot, skip the store (reads then simply ask).
	 */
	if (atomic_fetch_sub(&fs.store_slots, 1) <= 0) {
		atomic_fetch_add(&fs.store_slots, 1);
		return -EBUSY;
	}
	bv.buf[0].mem = (void *)bytes;
	r = inval ? fuse_lowlevel_notify_inval_inode(fs.se, ino, 0, 0) : 0;
	if (r == 0)
		r = fuse_lowlevel_notify_store(fs.se, ino, 0, &bv, 0);
	atomic_fetch_add(&fs.store_slots, 1);
	return r;
}

/*
 * Open a file this mount is writing (its stage holds bytes not yet
 * stored): the new descriptor shares them, with no server call, since
 * the server holds an older value or none yet (a file created here and
 * still open).  Returns true when it answered the open.
 */
static bool open_staged(fuse_req_t req, fuse_ino_t ino, const char *key, struct fuse_file_info *fi)
{
	bool wr = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct kstage *s = stage_ref(ino, false, NULL);
	struct kvc_entry se;
	struct kfile *f;

	if (!s)
		return false;
	/* removed while open: its bytes live only in the stage */
	if (!stage_attr_of(s, &se, key_orphan(key))) {
		stage_unref(s);
		return false;
	}
	f = kfile_new(ino, wr);
	if (!f) {
		stage_unref(s);
		fuse_reply_err(req, ENOMEM);
		return true;
	}
	f->st = s;
	pthread_mutex_lock(&s->lock);
	f->version = s->version;
	f->epoch = s->epoch;
	f->size = s->size;
	pthread_mutex_unlock(&s->lock);
	if (wr && (fi->flags & O_TRUNC))
		stage_truncate(s, key, 0);
	/* The kernel's pages hold what was written through this mount. */
	fi->keep_cache = !(fi->flags & O_TRUNC);
	fi->noflush = !wr;
	fi->fh = (uint64_t)(uintptr_t)f;
	if (fuse_reply_open(req, fi))
		kfile_free(f);
	return true;
}

/*
 * The revalidation @e of an open that shares a stage may be older than
 * the stage: another descriptor of this mount stored its bytes between
 * the open's STAT (or GET) and now.  Everything the open tells the kernel
 * (the size of the file above all: a smaller one cuts the pages of
 * processes that map it, SIGBUS, and makes reads short) must then be the
 * stage's version, so STAT again under the stage's lock, which every store
 * holds.  0 or a negative errno.
 */
static int open_catch_up(struct kfile *f, const char *key, struct kvc_entry *e)
{
	struct kstage *s = f->st;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	if (s->version && s->epoch == e->epoch && s->version > e->version) {
		r = kvc_stat(fs.kvc, key, strlen(key), e);
		if (r == 0) {
			pthread_mutex_lock(&f->lock);
			f->version = e->version;
			f->epoch = e->epoch;
			f->size = e->size;
			free(f->head); /* bytes of the older version */
			f->head = NULL;
			f->head_len = 0;
			pthread_mutex_unlock(&f->lock);
		}
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

static void kvfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char key[KV_KEY_MAX + 1];
	struct kvc_entry e;
	struct kfile *f;
	struct node *n;
	bool dir, writing, stale_size, wr = (fi->flags & O_ACCMODE) != O_RDONLY;
	uint8_t *head = NULL;
	ssize_t n_head = 0;
	int r;

	r = ino_path(ino, key, sizeof(key), &dir);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	if (dir) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (open_staged(req, ino, key, fi))
		return;
	if (key_orphan(key)) {
		/* The name now leads to another file (replaced, or removed and
		 * made again): the kernel looks it up again on ESTALE. */
		fuse_reply_err(req, ESTALE);
		return;
	}
	/*
	 * Close-to-open: revalidate against the server's version.  A read-only
	 * open does it with a GET of the value's first bytes instead of a STAT:
	 * one round trip either way, and a small file is then read without
	 * another (the whole of it arrived with the open).
	 */
	if (wr) {
		r = kvc_stat(fs.kvc, key, strlen(key), &e);
	} else {
		head = malloc(KVFS_HEAD_MAX);
		n_head = head ? kvc_get(fs.kvc, key, strlen(key), 0, head, KVFS_HEAD_MAX, NULL, &e)
		              : -ENOMEM;
		r = n_head < 0 ? (int)n_head : 0;
	}
	if (r < 0) {
		free(head);
		fuse_reply_err(req, fs_err(r));
		return;
	}
	f = kfile_new(ino, wr);
	if (!f) {
		free(head);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	f->reads = (fi->flags & O_ACCMODE) != O_WRONLY;
	f->version = e.version;
	f->epoch = e.epoch;
	f->size = e.size;
	f->head = head;
	f->head_len = (size_t)n_head;
	/* Every descriptor of the inode shares one stage: a writable open
	 * makes it if it is the first, a read-only one sees its bytes. */
	f->st = stage_ref(ino, wr, &e);
	if (wr && !f->st) {
		kfile_free(f);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (f->st) {
		r = open_catch_up(f, key, &e);
		if (r < 0) {
			kfile_free(f);
			fuse_reply_err(req, fs_err(r));
			return;
		}
	}
	if (wr) {
		struct kstage *s = f->st;

		pthread_mutex_lock(&s->lock);
		/* Close-to-open for a stage nobody wrote: it builds on what the
		 * server holds now. */
		if (!s->dirty && (e.version > s->version || e.epoch != s->epoch)) {
			stage_drop(s);
			s->version = e.version;
			s->epoch = e.epoch;
			s->size = e.size;
			s->mode = e.mode;
		}
		if (!s->owner_set) {
			s->has_owner = e.has_owner;
			s->uid = e.uid;
			s->gid = e.gid;
		}
		pthread_mutex_unlock(&s->lock);
		if (fi->flags & O_TRUNC)
			stage_truncate(s, key, 0); /* nothing of the old value is kept */
	}
	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(ino);
	/*
	 * The kernel's size of the file may be another version's (attributes
	 * it cached before another client changed the value).  Dropping the
	 * pages is not enough then: a read inside that old size asks nobody,
	 * so a shrunk value would read old bytes past its end and a grown one
	 * would end early.  Its cached attributes are dropped too, so the
	 * first read asks GETATTR (FUSE_CAP_AUTO_INVAL_DATA), which answers
	 * with this open's version.  Versions of another server epoch (before
	 * a restart) never match: the new store reuses the numbers.
	 */
	stale_size = !n || !same_value(n->attr_version, n->attr_epoch, e.version, e.epoch);
	fi->keep_cache = n && !stale_size &&
	                 same_value(n->cache_version, n->cache_epoch, e.version, e.epoch) &&
	                 !(fi->flags & O_TRUNC);
	writing = n && n->stage;
	pthread_mutex_unlock(&fs.lock);
	/* Another descriptor of this mount has it open and the server holds
	 * what its stage builds on: the kernel's pages are this mount's
	 * current bytes (every write of the mount went through them), and
	 * dropping them would pull pages from under processes that map the
	 * file shared (sqlite's -shm index). */
	if (f->st && !(fi->flags & O_TRUNC)) {
		pthread_mutex_lock(&f->st->lock);
		if (same_value(f->st->version, f->st->epoch, e.version, e.epoch))
			fi->keep_cache = 1;
		pthread_mutex_unlock(&f->st->lock);
	}
	/*
	 * The whole of a small file came with the open: put it in the page
	 * cache now, so the read that follows is not another request.  The
	 * pages then hold exactly this version, so the cache is kept.  Not
	 * while a writer on this mount has the file open: its written pages
	 * are in that cache and must not be overwritten with older bytes.
	 */
	if (!wr && !fi->keep_cache && !writing && e.size > 0 && f->head_len == e.size && fs.se &&
	    store_head(ino, f->head, f->head_len, stale_size) == 0)
		fi->keep_cache = 1;
	else if (stale_size && fs.se)
		fuse_lowlevel_notify_inval_inode(fs.se, ino, -1, 0); /* attributes only */
	pthread_mutex_lock(&fs.lock);
	/* A descriptor of this mount stored a newer version since the
	 * revalidation (under its stage's lock, which this open no longer
	 * holds): what the node knows is newer than @e, keep it. */
	if (n && !(n->cache_epoch == e.epoch && n->cache_version > e.version)) {
		n->cache_version = e.version;
		n->cache_epoch = e.epoch;
		n->cache_size = e.size;
		if (wr) {
			node_learn(n, &e);
		} else { /* a GET's entry has no owner: the last one learned */
			e.has_owner = n->has_owner;
			e.uid = n->uid;
			e.gid = n->gid;
		}
		n->open_e = e;
		n->open_ms = kv_now_ms();
	}
	pthread_mutex_unlock(&fs.lock);
	/* Nothing to store at close of a read-only file: spare the FLUSH. */
	fi->noflush = !wr;
	fi->fh = (uint64_t)(uintptr_t)f;
	if (fuse_reply_open(req, fi))
		kfile_free(f);
}

static void kvfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                        struct fuse_file_info *fi)
{
	char ppath[KV_KEY_MAX + 1], key[KV_KEY_MAX + 2];
	struct fuse_entry_param ep = {0};
	struct kvc_entry e = {0};
	struct kfile *f;
	struct node *n;
	bool sgid;
	gid_t gid = new_gid(parent, fuse_req_ctx(req), &sgid);
	int r;

	r = ino_path(parent, ppath, sizeof(ppath), NULL);
	if (r == 0)
		r = join_new(ppath, name, key, sizeof(key));
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	pthread_mutex_lock(&fs.lock);
	n = node_get(key, false);
	pthread_mutex_unlock(&fs.lock);
	f = n ? kfile_new(n->ino, true) : NULL;
	if (f)
		f->st = stage_ref(n->ino, true, NULL);
	if (!f || !f->st) {
		if (f)
			kfile_free(f);
		if (n)
			node_forget(n->ino, 1);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&f->st->lock);
	if (f->st->version == 0 && !f->st->dirty) { /* ours: a new file */
		const struct fuse_ctx *ctx = fuse_req_ctx(req);

		f->st->mode = mode & 07777;
		f->st->loaded = true;
		f->st->replace = true;
		stage_touch(f->st); /* an empty file is stored at close even without writes */
		f->st->has_owner = f->st->owner_set = true; /* its creator's */
		f->st->uid = ctx->uid;
		f->st->gid = gid;
		f->st->drop_xattrs = true;
	}
	pthread_mutex_unlock(&f->st->lock);
	node_size_unknown(n->ino);
	if (!stage_attr(f->st, &e)) { /* another descriptor stored it meanwhile */
		const struct fuse_ctx *ctx = fuse_req_ctx(req);

		e.mode = mode & 07777;
		e.mtime_ns = (int64_t)time(NULL) * 1000000000;
		e.has_owner = true;
		e.uid = ctx->uid;
		e.gid = gid;
	}
	ep.ino = n->ino;
	ep.attr_timeout = fs.cfg.attr_timeout;
	ep.entry_timeout = fs.cfg.entry_timeout;
	fill_file_attr(&ep.attr, n->ino, &e);
	fi->fh = (uint64_t)(uintptr_t)f;
	if (fuse_reply_create(req, &ep, fi)) {
		kfile_free(f);
		node_forget(n->ino, 1);
	}
}

/* Reply to a read of streaming stage @s (s->lock held) from its upload. */
static void read_upload(fuse_req_t req, struct kstage *s, size_t size, off_t off)
{
	uint8_t *buf;
	ssize_t n;

	size = (uint64_t)off >= s->len ? 0 : KV_MIN(size, s->len - (size_t)off);
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = size ? kvc_upload_read(s->up, (uint64_t)off, buf, size) : 0;
	if (n >= 0)
		fuse_reply_buf(req, (const char *)buf, (size_t)n);
	else
		fuse_reply_err(req, n == -ENOSPC ? ENOSPC : fs_err((int)n));
	free(buf);
}

/*
 * What a descriptor reads goes into the page cache that every descriptor
 * of the inode on this mount shares, so it must be what the mount holds
 * now, not what it held when this one was opened: a read-only descriptor
 * opened before a writer on this mount reads through the writer's stage
 * (its bytes, or the version it stored), and one whose version this mount
 * replaced since (stored through another descriptor, or revalidated by a
 * later open) reads the new version.  (Before, such a read put the bytes
 * of the open, e.g. those fetched with it, into the cache over what the
 * writer had just written: sqlite, whose shell opens the database
 * read-only first, lost committed rows.)  Returns the descriptor's stage,
 * or NULL.
 */
static struct kstage *read_follow(struct kfile *f, uint64_t ino)
{
	struct kstage *s = NULL, *st;
	uint64_t v = 0, size = 0;
	struct node *n;

	pthread_mutex_lock(&f->lock);
	st = f->st;
	pthread_mutex_unlock(&f->lock);
	if (st)
		return st;
	s = stage_ref(ino, false, NULL);
	pthread_mutex_lock(&f->lock);
	if (s && !f->st) {
		f->st = s; /* kfile_free() drops the reference */
		s = NULL;
	}
	st = f->st;
	pthread_mutex_unlock(&f->lock);
	if (s)
		stage_unref(s);
	if (st)
		return st;
	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(ino);
	if (n && n->cache_epoch == f->epoch && n->cache_version > f->version) {
		v = n->cache_version;
		size = n->cache_size;
	}
	pthread_mutex_unlock(&fs.lock);
	pthread_mutex_lock(&f->lock);
	if (v > f->version) {
		f->version = v;
		f->size = size;
		free(f->head); /* the open's bytes are of the older version */
		f->head = NULL;
		f->head_len = 0;
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

static void kvfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi)
{
	struct kfile *f = (struct kfile *)(uintptr_t)fi->fh;
	struct kstage *st = read_follow(f, ino);
	char key[KV_KEY_MAX + 1];
	struct kvc_get_opts go = {0};
	uint64_t sv, sepoch, ssize;
	struct kvc_entry e;
	uint8_t *buf;
	ssize_t n;
	int r;

	if (st) {
		struct kstage *s = st;

		pthread_mutex_lock(&s->lock);
		if (s->up) { /* streaming: the bytes written so far are on the server */
			read_upload(req, s, size, off);
			pthread_mutex_unlock(&s->lock);
			return;
		}
		/* A file open for writing on this mount reads what the mount
		 * holds, as a local file system does: load it whole (up to
		 * spill_threshold) so that every descriptor reads the newest
		 * bytes (a commit of another descriptor that raced this one's
		 * open included: stage_load() follows it) and the first write
		 * finds them loaded. */
		if (f->writable && !s->dirty && !s->loaded && s->size <= fs.cfg.spill_threshold &&
		    ino_path(ino, key, sizeof(key), NULL) == 0 && !key_orphan(key) &&
		    (r = stage_load(s, key)) < 0) {
			pthread_mutex_unlock(&s->lock);
			fuse_reply_err(req, r == -ESTALE ? ESTALE : fs_err(r));
			return;
		}
		if (s->dirty || s->loaded) {
			/* This mount's staged bytes, whichever descriptor wrote them. */
			size_t o = (size_t)off < s->len ? (size_t)off : s->len;

			fuse_reply_buf(req, (const char *)stage_ptr(s) + o,
			               KV_MIN(size, s->len - o));
			pthread_mutex_unlock(&s->lock);
			return;
		}
		sv = s->version;
		sepoch = s->epoch;
		ssize = s->size;
		pthread_mutex_unlock(&s->lock);
		pthread_mutex_lock(&f->lock);
		if (sv && !same_value(sv, sepoch, f->version, f->epoch)) {
			/* stored through another descriptor */
			f->version = sv;
			f->epoch = sepoch;
			f->size = ssize;
			free(f->head); /* the open's bytes are of the older version */
			f->head = NULL;
			f->head_len = 0;
		}
		pthread_mutex_unlock(&f->lock);
	}
	pthread_mutex_lock(&f->lock);
	if ((uint64_t)off < f->size && f->head &&
	    ((uint64_t)off + size <= f->head_len || f->head_len == f->size)) {
		/* Within the bytes open fetched (all of a small file).  Replied
		 * under the lock: once the kernel has the reply it may send the
		 * RELEASE that frees f->head, and the reply's writev may not
		 * have returned yet. */
		fuse_reply_buf(req, (const char *)f->head + off,
		               KV_MIN(size, f->head_len - (size_t)off));
		pthread_mutex_unlock(&f->lock);
		return;
	}
	go.if_version = f->version;
	go.if_epoch = f->epoch; /* a restarted server's same number is another value */
	pthread_mutex_unlock(&f->lock);
	if ((uint64_t)off >= f->size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	r = ino_path(ino, key, sizeof(key), NULL);
	if (r == 0 && key_orphan(key)) {
		/* Removed since the open: the bytes kept for its descriptors,
		 * if the removal could keep them. */
		struct kstage *s = stage_ref(ino, false, NULL);

		if (s) {
			bool kept;

			pthread_mutex_lock(&s->lock);
			kept = s->loaded || s->up;
			if (s->up) {
				read_upload(req, s, size, off);
			} else if (kept) {
				size_t o = (size_t)off < s->len ? (size_t)off : s->len;

				fuse_reply_buf(req, (const char *)stage_ptr(s) + o,
				               KV_MIN(size, s->len - o));
			}
			pthread_mutex_unlock(&s->lock);
			stage_unref(s);
			if (kept)
				return;
		}
		r = -ESTALE;
	}
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	size = KV_MIN(size, fs.cfg.buf_size);
	buf = pool_get();
	if (buf) {
		struct xfer_sge sge = {.mr = fs.pool_mr,
		                       .off = (uint64_t)(buf - (uint8_t *)xfer_mr_addr(fs.pool_mr)),
		                       .len = size};

		n = kvc_get_mr(fs.kvc, key, strlen(key), (uint64_t)off, &sge, 1, &go, &e);
		if (n >= 0)
			fuse_reply_buf(req, (const char *)buf, (size_t)n);
		if (n >= 0 || n == -ESTALE || n == -ENOENT)
			pool_put(buf);
		else
			pool_retire(buf);
	} else {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		n = kvc_get(fs.kvc, key, strlen(key), (uint64_t)off, buf, size, &go, &e);
		if (n >= 0)
			fuse_reply_buf(req, (const char *)buf, (size_t)n);
		free(buf);
	}
	if (n < 0) {
		/* Changed or evicted under an open file: never mix versions. */
		fuse_reply_err(req, n == -ESTALE || n == -ENOENT ? ESTALE : fs_err((int)n));
	}
}

struct stats_acc {
	uint64_t cap, free_b, keys;
	bool lru;
};

static void stats_cb(void *arg, const char *name, uint64_t value)
{
	struct stats_acc *a = arg;

	if (!strcmp(name, "capacity_bytes"))
		a->cap = value;
	else if (!strcmp(name, "free_bytes"))
		a->free_b = value;
	else if (!strcmp(name, "keys"))
		a->keys = value;
	else if (!strcmp(name, "eviction_lru"))
		a->lru = value != 0;
}

/* How far past the checked size a growing file goes before asking again. */
#define KVFS_ROOM_STEP ((size_t)8 << 20)

/*
 * What the server said of its room, for every file of the mount: that it
 * evicts, from one STATS, trusted for a second within one server epoch.
 * So creating many small files on a server that evicts costs no STATS
 * each; a server that does not evict is asked at every check.
 */
static struct {
	pthread_mutex_t lock;
	bool valid, lru;
	uint64_t epoch, at_ms, free_b;
} room = {.lock = PTHREAD_MUTEX_INITIALIZER};

/*
 * A write that takes a file to @end bytes: can the server take it?  Past
 * the server's largest value -EFBIG, past its free memory when it will not
 * evict (--eviction none, a tenant's quota) -ENOSPC: the write fails where
 * it happens, not the close after it.  Asks the server (STATS) at most
 * once per KVFS_ROOM_STEP of a file's growth, and through the mount-wide
 * cache above.  Called with s->lock held.
 */
static int stage_room(struct kstage *s, size_t end)
{
	struct stats_acc a = {.lru = true}; /* an older server: no counter, it evicts */
	struct kvc_limits lim;
	uint64_t epoch, now;
	bool cached;

	if (end <= s->room) /* s->room never passes the largest value */
		return 0;
	epoch = kvc_server_epoch(fs.kvc, NULL);
	now = kv_now_ms();
	kvc_limits(fs.kvc, &lim); /* no call: what the last HELLO said */
	if (lim.max_value && end > lim.max_value)
		return -EFBIG;
	pthread_mutex_lock(&room.lock);
	/* a server that evicts has room for whatever fits it; one that does
	 * not is asked each time (what this mount stored since counts) */
	cached = room.valid && room.lru && room.epoch == epoch && now - room.at_ms < 1000;
	if (cached) {
		a.lru = room.lru;
		a.free_b = room.free_b;
	}
	pthread_mutex_unlock(&room.lock);
	if (!cached) {
		if (kvc_stats(fs.kvc, stats_cb, &a) < 0)
			return 0; /* the close will say; a write does not fail for STATS */
		pthread_mutex_lock(&room.lock);
		room.valid = true;
		room.lru = a.lru;
		room.free_b = a.free_b;
		room.epoch = kvc_server_epoch(fs.kvc, NULL); /* it may have reconnected */
		room.at_ms = kv_now_ms();
		pthread_mutex_unlock(&room.lock);
		kvc_limits(fs.kvc, &lim);
		if (lim.max_value && end > lim.max_value)
			return -EFBIG;
	}
	if (!a.lru && end > a.free_b)
		return -ENOSPC;
	/* ask again sooner as the server fills, and at the largest value */
	s->room = end + (a.lru ? KVFS_ROOM_STEP : KV_MIN(KVFS_ROOM_STEP, (a.free_b - end) / 2));
	if (lim.max_value)
		s->room = KV_MIN(s->room, lim.max_value);
	return 0;
}

static void kvfs_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
	struct kfile *f = (struct kfile *)(uintptr_t)fi->fh;
	char key[KV_KEY_MAX + 1];
	struct kstage *s;
	size_t end;
	int r;

	if (off < 0 || (uint64_t)off > SIZE_MAX - size) {
		fuse_reply_err(req, EFBIG);
		return;
	}
	end = (size_t)off + size;
	s = f->st;
	if (!s) {
		fuse_reply_err(req, EBADF);
		return;
	}
	pthread_mutex_lock(&s->lock);
	r = ino_path(ino, key, sizeof(key), NULL);
	if (r == 0 && stream_now(s, end) && !key_orphan(key))
		r = stage_stream(s, key);
	if (r == 0 && !s->loaded && !s->up)
		r = stage_load(s, key);
	if (r == 0 && end > s->len)
		r = stage_room(s, end);
	if (r == 0)
		r = s->up ? kvc_upload_write(s->up, (uint64_t)off, data, size)
		          : stage_reserve(s, end);
	if (r < 0) {
		pthread_mutex_unlock(&s->lock);
		fuse_reply_err(req, r == -ESTALE || r == -EFBIG || r == -ENOSPC ? -r : fs_err(r));
		return;
	}
	if (s->up) {
		/* sent, or on its way while the next writes come */
	} else {
		if ((size_t)off > s->len)
			memset(stage_ptr(s) + s->len, 0, (size_t)off - s->len);
		memcpy(stage_ptr(s) + off, data, size);
	}
	if (end > s->len)
		s->len = end;
	stage_touch(s);
	s->mtime_ns = 0; /* a write after utimensat: the time of the store */
	pthread_mutex_unlock(&s->lock);
	node_size_unknown(ino);
	fuse_reply_write(req, size);
}

static void kvfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct kfile *f = (struct kfile *)(uintptr_t)fi->fh;
	struct kstage *s = f->st;
	int r = 0;

	(void)ino;
	if (s && f->writable) {
		pthread_mutex_lock(&s->lock);
		r = stage_store(s);
		if (r < 0)
			s->err = -r;
		pthread_mutex_unlock(&s->lock);
	}
	fuse_reply_err(req,
	               r < 0 ? (r == -ENOSPC || r == -EFBIG || r == -ESTALE ? -r : fs_err(r)) : 0);
}

static void kvfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)datasync;
	kvfs_flush(req, ino, fi);
}

/*
 * Atimes, relatime-like and without a server call per read: the close of
 * a descriptor opened for reading is the access (the kernel serves cached
 * pages without asking kvfs, so reads cannot be counted), and it is told
 * to the server only when the atime the open learned is not after the
 * mtime or the ctime, or is a day old; the server moves the atime forward
 * only.  Called after the RELEASE was answered.
 */
#define KVFS_RELATIME_NS (24LL * 3600 * 1000000000)

static void access_push(uint64_t ino)
{
	char key[KV_KEY_MAX + 1];
	struct kvc_setattr_opts so = {.set = KVC_ACCESSED};
	struct timespec ts;
	struct node *n;
	bool push = true;

	clock_gettime(CLOCK_REALTIME, &ts);
	so.atime_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(ino);
	if (!n || n->dir || key_orphan(n->path) || strlen(n->path) >= sizeof(key)) {
		pthread_mutex_unlock(&fs.lock);
		return;
	}
	strcpy(key, n->path);
	if (n->open_e.version) { /* what the last open learned */
		const struct kvc_entry *e = &n->open_e;

		push = e->atime_ns <= e->mtime_ns || e->atime_ns <= e->ctime_ns ||
		       so.atime_ns - e->atime_ns >= KVFS_RELATIME_NS;
		if (push)
			n->open_e.atime_ns = so.atime_ns; /* told once */
	}
	pthread_mutex_unlock(&fs.lock);
	if (push && kvc_setattr(fs.kvc, key, strlen(key), &so, NULL) < 0)
		KV_DEBUG(TAG, "atime of %s not stored: %s", key, kvc_strerror());
}

static void kvfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct kfile *f = (struct kfile *)(uintptr_t)fi->fh;
	struct kstage *s = f->st;
	bool reads = f->reads;

	if (s && f->writable) { /* e.g. mmap'd pages written after the close */
		pthread_mutex_lock(&s->lock);
		if (s->dirty && stage_store(s) < 0)
			KV_WARN(TAG, "release: could not store a written file: %s", kvc_strerror());
		pthread_mutex_unlock(&s->lock);
	}
	kfile_free(f);
	fuse_reply_err(req, 0);
	if (reads)
		access_push(ino);
}

/* Truncate the value of @key to @size with no open file: read, cut, PUT. */
static int truncate_key(const char *key, uint64_t size, uint64_t ino)
{
	struct kvc_entry e;
	struct kstage *s;
	int r;

	r = kvc_stat(fs.kvc, key, strlen(key), &e);
	if (r < 0)
		return r;
	if (e.size == size)
		return 0;
	s = stage_new(ino, &e); /* its own: no descriptor is open */
	if (!s)
		return -ENOMEM;
	r = stage_truncate(s, key, size);
	if (r == 0) {
		pthread_mutex_lock(&s->lock);
		r = stage_store(s);
		pthread_mutex_unlock(&s->lock);
	}
	stage_destroy(s);
	return r;
}

/* The mtime a SETATTR asks for, in ns since the epoch; -1 if none. */
static int64_t setattr_mtime(const struct stat *attr, int to_set)
{
	struct timespec ts;

	if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
		clock_gettime(CLOCK_REALTIME, &ts);
		return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	}
	if (to_set & FUSE_SET_ATTR_MTIME)
		return (int64_t)attr->st_mtim.tv_sec * 1000000000 + attr->st_mtim.tv_nsec;
	return -1;
}

/* The atime a SETATTR asks for (utimensat), in ns since the epoch; -1 if
 * none. */
static int64_t setattr_atime(const struct stat *attr, int to_set)
{
	struct timespec ts;

	if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
		clock_gettime(CLOCK_REALTIME, &ts);
		return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	}
	if (to_set & FUSE_SET_ATTR_ATIME)
		return (int64_t)attr->st_atim.tv_sec * 1000000000 + attr->st_atim.tv_nsec;
	return -1;
}

/* What a SETATTR asks to change of mode, times and owner, as kvc_setattr()
 * takes it.  The uid or gid left out of a chown is filled from @cur (the
 * key's entry: its owner, or the mount's when it has none), so the server
 * always gets both. */
static void setattr_opts(const struct stat *attr, int to_set, const struct kvc_entry *cur,
                         struct kvc_setattr_opts *o)
{
	memset(o, 0, sizeof(*o));
	if (to_set & FUSE_SET_ATTR_MODE) {
		o->set |= KVC_SET_MODE;
		o->mode = attr->st_mode & 07777;
	}
	o->mtime_ns = setattr_mtime(attr, to_set);
	if (o->mtime_ns >= 0)
		o->set |= KVC_SET_MTIME;
	o->atime_ns = setattr_atime(attr, to_set);
	if (o->atime_ns >= 0)
		o->set |= KVC_SET_ATIME;
	if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		o->set |= KVC_SET_UID | KVC_SET_GID;
		o->uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid
		         : cur && cur->has_owner      ? cur->uid
		                                      : fs.uid;
		o->gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid
		         : cur && cur->has_owner      ? cur->gid
		                                      : fs.gid;
	}
}

/* chmod, chown and utimensat of directory @key: kept in its marker, which
 * an implicit directory gets now (created with the mode asked, or 0755,
 * and the owner asked, or the mount's). */
static int dir_setattr(const char *key, const struct stat *attr, int to_set)
{
	char marker[KV_KEY_MAX + 3];
	struct kvc_put_opts po = {.mode = 0755, .if_absent = true};
	struct kvc_setattr_opts so;
	struct kvc_entry cur = {0};
	int r;

	r = kvfs_path_dir_marker(key, marker, sizeof(marker));
	if (r < 0)
		return r;
	if ((to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) !=
	            (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) &&
	    (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
		(void)kvc_stat(fs.kvc, marker, strlen(marker), &cur); /* the half kept */
	setattr_opts(attr, to_set, &cur, &so);
	if (!so.set)
		return 0;
	r = kvc_setattr(fs.kvc, marker, strlen(marker), &so, NULL);
	if (r == -ENOENT) {
		if (so.set & KVC_SET_MODE)
			po.mode = so.mode;
		po.mtime_ns = (so.set & KVC_SET_MTIME) && so.mtime_ns > 0 ? so.mtime_ns : 0;
		po.set_owner = true;
		po.uid = (so.set & KVC_SET_UID) ? so.uid : fs.uid;
		po.gid = (so.set & KVC_SET_GID) ? so.gid : fs.gid;
		r = kvc_put(fs.kvc, marker, strlen(marker), "", 0, &po, NULL);
		if (r == -EEXIST || (r == 0 && (so.set & KVC_SET_ATIME))) /* made meanwhile; or
		                                                           * the atime, which a
		                                                           * PUT does not set */
			r = kvc_setattr(fs.kvc, marker, strlen(marker), &so, NULL);
	}
	return r;
}

/* SETATTR of a file removed while open: its kept bytes only (the server
 * no longer has it).  -ESTALE when nothing was kept. */
static int orphan_setattr(uint64_t ino, const struct stat *attr, int to_set)
{
	struct kstage *s = stage_ref(ino, false, NULL);
	int r = 0;

	if (!s)
		return -ESTALE;
	pthread_mutex_lock(&s->lock);
	if (!s->loaded && !s->up) {
		r = -ESTALE;
	} else if (s->up && (to_set & FUSE_SET_ATTR_SIZE)) {
		r = kvc_upload_truncate(s->up, (uint64_t)attr->st_size);
		if (r == 0)
			s->len = (size_t)attr->st_size;
	} else if (to_set & FUSE_SET_ATTR_SIZE) {
		if ((uint64_t)attr->st_size > SIZE_MAX)
			r = -EFBIG;
		else
			r = stage_reserve(s, (size_t)attr->st_size);
		if (r == 0) {
			if ((size_t)attr->st_size > s->len)
				memset(stage_ptr(s) + s->len, 0, (size_t)attr->st_size - s->len);
			s->len = (size_t)attr->st_size;
		}
	}
	if (r == 0 && (to_set & FUSE_SET_ATTR_MODE))
		s->mode = attr->st_mode & 07777;
	if (r == 0 && (to_set & FUSE_SET_ATTR_UID)) {
		s->has_owner = true;
		s->uid = attr->st_uid;
	}
	if (r == 0 && (to_set & FUSE_SET_ATTR_GID)) {
		s->has_owner = true;
		s->gid = attr->st_gid;
	}
	if (r == 0 && setattr_mtime(attr, to_set) >= 0)
		s->mtime_ns = setattr_mtime(attr, to_set);
	if (r == 0 && setattr_atime(attr, to_set) >= 0)
		s->atime_ns = setattr_atime(attr, to_set);
	pthread_mutex_unlock(&s->lock);
	stage_unref(s);
	return r;
}

static void kvfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                         struct fuse_file_info *fi)
{
	char key[KV_KEY_MAX + 1];
	struct kvc_entry e;
	struct node *sn;
	bool dir;
	int r;

	/* the attributes an open learned are about to change */
	pthread_mutex_lock(&fs.lock);
	sn = node_by_ino(ino);
	if (sn)
		sn->open_ms = 0;
	pthread_mutex_unlock(&fs.lock);
	r = ino_path(ino, key, sizeof(key), &dir);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	if (!dir && key_orphan(key)) {
		r = orphan_setattr(ino, attr, to_set);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
		kvfs_getattr(req, ino, NULL);
		return;
	}
	if (dir) {
		r = key[0] ? dir_setattr(key, attr, to_set) : 0; /* the root's are synthesized */
		if (r < 0) {
			fuse_reply_err(req, fs_err(r));
			return;
		}
		kvfs_getattr(req, ino, NULL);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		/* An open file's stage takes it, by descriptor or by path. */
		struct kstage *s = stage_ref(ino, false, NULL);

		if (s) {
			r = stage_truncate(s, key, (uint64_t)attr->st_size);
			stage_unref(s);
		} else {
			r = truncate_key(key, (uint64_t)attr->st_size, ino);
		}
		if (r < 0) {
			fuse_reply_err(req, r == -ESTALE ? ESTALE : fs_err(r));
			return;
		}
	}
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW |
	              FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_UID |
	              FUSE_SET_ATTR_GID)) {
		struct kstage *s = stage_ref(ino, false, NULL);
		struct kvc_setattr_opts so;
		struct kvc_entry cur = {0};
		bool pending = false, half = (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) &&
		                             (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) !=
		                                     (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID);

		if (s) { /* the owner a chown keeps half of: the stage's */
			pthread_mutex_lock(&s->lock);
			cur.has_owner = s->has_owner;
			cur.uid = s->uid;
			cur.gid = s->gid;
			pthread_mutex_unlock(&s->lock);
		} else if (half) {
			(void)kvc_stat(fs.kvc, key, strlen(key), &cur);
		}
		setattr_opts(attr, to_set, &cur, &so);
		if (s) { /* applies to the pending PUT too */
			pthread_mutex_lock(&s->lock);
			if (so.set & KVC_SET_MODE)
				s->mode = so.mode;
			if (so.set & KVC_SET_MTIME)
				s->mtime_ns = so.mtime_ns;
			if (so.set & KVC_SET_ATIME)
				s->atime_ns = so.atime_ns;
			if (so.set & KVC_SET_UID) {
				s->has_owner = s->owner_set = true;
				s->uid = so.uid;
				s->gid = so.gid;
			}
			pending = s->dirty;
			pthread_mutex_unlock(&s->lock);
			stage_unref(s);
		}
		r = kvc_setattr(fs.kvc, key, strlen(key), &so, &e);
		if (r == -ENOENT && pending)
			r = 0; /* not stored yet: the PUT at close carries them */
		if (r < 0) {
			fuse_reply_err(req, fs_err(r));
			return;
		}
	}
	kvfs_getattr(req, ino, NULL);
}

static void kvfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	char ppath[KV_KEY_MAX + 1], key[KV_KEY_MAX + 2], marker[KV_KEY_MAX + 3];
	struct kvc_put_opts po = {.mode = mode & 07777, .if_absent = true};
	struct kvc_entry e;
	bool sgid;
	int r;

	r = ino_path(parent, ppath, sizeof(ppath), NULL);
	if (r == 0)
		r = join_new(ppath, name, key, sizeof(key));
	if (r >= 0)
		r = kvfs_path_dir_marker(key, marker, sizeof(marker));
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	r = probe(key, &e);
	if (r >= 0) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	po.set_owner = true; /* its creator's */
	po.uid = fuse_req_ctx(req)->uid;
	po.gid = new_gid(parent, fuse_req_ctx(req), &sgid);
	if (sgid)
		po.mode |= S_ISGID;
	po.drop_xattrs = true;
	r = kvc_put(fs.kvc, marker, strlen(marker), "", 0, &po, &e);
	if (r == -EEXIST) { /* made meanwhile: it is what it is */
		r = kvc_stat(fs.kvc, marker, strlen(marker), &e);
		if (r == 0) {
			fuse_reply_err(req, EEXIST);
			return;
		}
	}
	if (r < 0) {
		fuse_reply_err(req, fs_err(r));
		return;
	}
	reply_entry(req, key, true, &e);
}

/*
 * The name of a file this mount has open is about to go (unlink, or a
 * rename over it): keep its bytes for its descriptors until their last
 * close, as POSIX says, in its stage, held by the node (holds_stage).
 * Only a file that fits the stage's memory (up to spill_threshold) is
 * kept; the descriptors of a larger one then read ESTALE.
 */
static void keep_for_open(const char *key)
{
	struct kvc_entry e;
	struct kstage *s;
	struct node *n;
	uint64_t ino;
	bool open;
	int r;

	pthread_mutex_lock(&fs.lock);
	n = node_by_path(key);
	open = n && !n->dir && n->nopen && !n->holds_stage;
	ino = n ? n->ino : 0;
	pthread_mutex_unlock(&fs.lock);
	if (!open)
		return;
	s = stage_ref(ino, false, NULL);
	if (!s) {
		r = kvc_stat(fs.kvc, key, strlen(key), &e);
		if (r < 0 || (e.size > fs.cfg.spill_threshold && !fs.cfg.stream_threshold))
			return;
		s = stage_ref(ino, true, &e);
		if (!s)
			return;
	}
	pthread_mutex_lock(&s->lock);
	if (s->loaded || s->up)
		r = 0;
	else if (s->size <= fs.cfg.spill_threshold)
		r = stage_load(s, key);
	else /* a larger one stays on the server, as an upload built on it */
		r = fs.cfg.stream_threshold ? stage_stream(s, key) : -EFBIG;
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&fs.lock);
	n = node_by_ino(ino);
	if (r == 0 && n && n->stage == s && n->nopen && !n->holds_stage) {
		n->holds_stage = true; /* keeps this reference */
		s = NULL;
	}
	pthread_mutex_unlock(&fs.lock);
	if (s)
		stage_unref(s);
	if (r < 0) {
		char q[80];

		kv_quote_key(key, strlen(key), q, sizeof(q));
		KV_DEBUG(TAG, "%s: removed while open, its bytes not kept: %s", q, strerror(-r));
	}
}

static void kvfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	char ppath[KV_KEY_MAX + 1], key[KV_KEY_MAX + 2];
	int r;

	r = ino_path(parent, ppath, sizeof(ppath), NULL);
	if (r == 0)
		r = kvfs_path_join(ppath, name, key, sizeof(key));
	if (r >= 0) {
		keep_for_open(key);
		r = kvc_delete(fs.kvc, key, strlen(key), 0);
	}
	if (r == 0 || r == -ENOENT) {
		struct node *n;

		pthread_mutex_lock(&fs.lock);
		n = node_by_path(key);
		if (n && r == -ENOENT && n->stage)
			r = 0; /* created here and not stored yet */
		if (n && r == 0)
			node_orphan(n, "unlinked");
		pthread_mutex_unlock(&fs.lock);
	}
	fuse_reply_err(req, r < 0 ? (r == -ENOENT || r == -ENAMETOOLONG ? -r : fs_err(r)) : 0);
}

/* Does directory @key hold anything besides its marker? 1 yes, 0 no. */
static int dir_nonempty(const char *key)
{
	char pfx[KV_KEY_MAX + 3];
	struct kvc_list l;
	int r;

	r = kvfs_path_dir_marker(key, pfx, sizeof(pfx));
	if (r < 0)
		return r;
	r = kvc_list(fs.kvc, pfx, "/", NULL, 2, &l);
	if (r < 0)
		return r;
	r = l.n_prefixes > 0;
	for (size_t i = 0; i < l.n_entries; i++)
		if (strcmp(l.entries[i].key, pfx))
			r = 1;
	kvc_list_free(&l);
	return r;
}

static void kvfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	char ppath[KV_KEY_MAX + 1], key[KV_KEY_MAX + 2], marker[KV_KEY_MAX + 3];
	int r;

	r = ino_path(parent, ppath, sizeof(ppath), NULL);
	if (r == 0)
		r = kvfs_path_join(ppath, name, key, sizeof(key));
	if (r >= 0)
		r = kvfs_path_dir_marker(key, marker, sizeof(marker));
	if (r >= 0)
		r = dir_nonempty(key);
	if (r == 1) {
		fuse_reply_err(req, ENOTEMPTY);
		return;
	}
	if (r >= 0)
		r = kvc_delete(fs.kvc, marker, strlen(marker), 0);
	if (r == -ENOENT)
		r = 0; /* an implicit directory with nothing left in it */
	fuse_reply_err(req, r < 0 ? fs_err(r) : 0);
}

/* Rename every key under directory @src to the same place under @dst.
 * Renamed keys leave the listed prefix, so each page starts afresh. */
/* Length of the longest key starting with @pfx, through every LIST page;
 * negative errno on failure. */
static ssize_t longest_key(const char *pfx)
{
	char after[KV_KEY_MAX + 1] = "";
	size_t longest = 0;

	for (;;) {
		struct kvc_list l;
		bool more;
		int r = kvc_list(fs.kvc, pfx, NULL, after[0] ? after : NULL, 1000, &l);

		if (r < 0)
			return r;
		for (size_t i = 0; i < l.n_entries; i++)
			longest = KV_MAX(longest, l.entries[i].keylen);
		more = l.truncated && l.n_entries > 0;
		if (more)
			snprintf(after, sizeof(after), "%s", l.entries[l.n_entries - 1].key);
		kvc_list_free(&l);
		if (!more)
			return (ssize_t)longest;
	}
}

static int rename_dir(const char *src, const char *dst)
{
	char spfx[KV_KEY_MAX + 3], dkey[2 * KV_KEY_MAX + 4];
	ssize_t longest;
	size_t sl;
	int r;

	r = kvfs_path_dir_marker(src, spfx, sizeof(spfx));
	if (r < 0)
		return r;
	sl = (size_t)r;
	/* every new key must fit before the first is moved: a rename that
	 * fails half way would leave the tree split in two (a name no longer
	 * than the old one cannot grow a key: no scan then) */
	if (strlen(dst) > strlen(src)) {
		longest = longest_key(spfx);
		if (longest < 0)
			return (int)longest;
		if (longest > 0 && strlen(dst) + 1 + (size_t)longest - sl > KV_KEY_MAX)
			return -ENAMETOOLONG;
	}
	for (;;) {
		struct kvc_list l;
		bool more;

		r = kvc_list(fs.kvc, spfx, NULL, NULL, 1000, &l);
		if (r < 0)
			return r;
		for (size_t i = 0; i < l.n_entries && r >= 0; i++) {
			int n = snprintf(dkey, sizeof(dkey), "%s/%s", dst, l.entries[i].key + sl);

			if (n > KV_KEY_MAX) {
				r = -ENAMETOOLONG;
				break;
			}
			r = kvc_rename(fs.kvc, l.entries[i].key, l.entries[i].keylen, dkey,
			               (size_t)n, false, NULL);
			if (r == -ENOENT)
				r = 0; /* deleted meanwhile */
		}
		more = l.truncated && l.n_entries > 0;
		kvc_list_free(&l);
		if (r < 0 || !more)
			return r < 0 ? r : 0;
	}
}

static void kvfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                        const char *newname, unsigned int flags)
{
	char pp[KV_KEY_MAX + 1], np[KV_KEY_MAX + 1];
	char src[KV_KEY_MAX + 2], dst[KV_KEY_MAX + 2];
	struct kvc_entry se, de;
	bool pending = false;
	int r, sk, dk;

	if (flags & ~(unsigned)RENAME_NOREPLACE) {
		fuse_reply_err(req, EINVAL); /* RENAME_EXCHANGE, RENAME_WHITEOUT */
		return;
	}
	r = ino_path(parent, pp, sizeof(pp), NULL);
	if (r == 0)
		r = ino_path(newparent, np, sizeof(np), NULL);
	if (r == 0)
		r = kvfs_path_join(pp, name, src, sizeof(src));
	if (r >= 0)
		r = join_new(np, newname, dst, sizeof(dst));
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	sk = probe(src, &se);
	if (sk == -ENOENT) { /* created here and not stored yet: renamed here */
		struct node *sn;

		pthread_mutex_lock(&fs.lock);
		sn = node_by_path(src);
		pending = sn && sn->stage;
		pthread_mutex_unlock(&fs.lock);
		if (pending)
			sk = 0;
	}
	if (sk < 0) {
		fuse_reply_err(req, sk == -ENOENT ? ENOENT : fs_err(sk));
		return;
	}
	dk = probe(dst, &de);
	if (dk < 0 && dk != -ENOENT) {
		fuse_reply_err(req, fs_err(dk));
		return;
	}
	if (dk >= 0 && (flags & RENAME_NOREPLACE)) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	if (sk == 0) { /* a file: one atomic RENAME on the server */
		if (dk == 1) {
			fuse_reply_err(req, EISDIR);
			return;
		}
		if (dk == 0)
			keep_for_open(dst); /* its open descriptors keep the old bytes */
		r = pending ? 0
		            : kvc_rename(fs.kvc, src, strlen(src), dst, strlen(dst), false, NULL);
	} else {
		if (dk == 0) {
			fuse_reply_err(req, ENOTDIR);
			return;
		}
		if (dk == 1 && dir_nonempty(dst) == 1) {
			fuse_reply_err(req, ENOTEMPTY);
			return;
		}
		if (!strncmp(dst, src, strlen(src)) && dst[strlen(src)] == '/') {
			fuse_reply_err(req, EINVAL); /* into itself */
			return;
		}
		if (dk == 1) { /* drop the empty destination's marker */
			char m[KV_KEY_MAX + 3];

			if (kvfs_path_dir_marker(dst, m, sizeof(m)) >= 0)
				kvc_delete(fs.kvc, m, strlen(m), 0);
		}
		r = rename_dir(src, dst);
	}
	if (r < 0) {
		fuse_reply_err(req, fs_err(r));
		return;
	}
	/* Move the inode table's paths: the node and everything under it. */
	pthread_mutex_lock(&fs.lock);
	{
		size_t sl = strlen(src);
		struct node *old = node_by_path(dst);

		if (old) /* the replaced file keeps its inode but loses its name */
			node_orphan(old, "replaced");
		for (size_t b = 0; b < fs.nbuckets; b++) {
			for (struct node *n = fs.by_ino[b]; n; n = n->next_ino) {
				if (strncmp(n->path, src, sl) ||
				    (n->path[sl] && n->path[sl] != '/'))
					continue;
				char *p = malloc(strlen(dst) + strlen(n->path + sl) + 1);

				if (!p)
					continue;
				strcpy(p, dst);
				strcat(p, n->path + sl);
				node_unhash_path(n);
				free(n->path);
				n->path = p;
				node_hash_path(n);
			}
		}
	}
	pthread_mutex_unlock(&fs.lock);
	fuse_reply_err(req, 0);
}

static void kdir_free(struct kdir *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->ents[i].name);
	free(d->ents);
	free(d);
}

static int kdir_add(struct kdir *d, size_t *cap, const char *name, size_t len, bool dir,
                    const struct kvc_entry *e)
{
	if (d->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 256;
		void *p = realloc(d->ents, nc * sizeof(*d->ents));

		if (!p)
			return -ENOMEM;
		d->ents = p;
		*cap = nc;
	}
	d->ents[d->n].name = strndup(name, len);
	if (!d->ents[d->n].name)
		return -ENOMEM;
	d->ents[d->n].dir = dir;
	if (e)
		d->ents[d->n].e = *e;
	else
		memset(&d->ents[d->n].e, 0, sizeof(*e));
	d->n++;
	return 0;
}

static int dirent_cmp(const void *a, const void *b)
{
	const struct dirent_snap *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : (int)x->dir - (int)y->dir; /* the file first */
}

/*
 * Sort a listing by name, and list a name that is both a key and a prefix of
 * others ("conf" and "conf/f", written by other clients) once, as the file:
 * a lookup finds the file first too (probe()).
 */
static void kdir_dedup(struct kdir *d)
{
	size_t k = 0;

	if (d->n < 2)
		return;
	qsort(d->ents, d->n, sizeof(*d->ents), dirent_cmp);
	for (size_t i = 0; i < d->n; i++) {
		if (k && !strcmp(d->ents[k - 1].name, d->ents[i].name)) {
			free(d->ents[i].name);
			continue;
		}
		d->ents[k++] = d->ents[i];
	}
	d->n = k;
}

static void kvfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char key[KV_KEY_MAX + 1], pfx[KV_KEY_MAX + 2];
	struct kdir *d;
	char *after = NULL;
	size_t cap = 0, pl;
	int r;

	r = ino_path(ino, key, sizeof(key), NULL);
	if (r == 0)
		r = kvfs_path_dir_prefix(key, pfx, sizeof(pfx));
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	pl = (size_t)r;
	d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Snapshot the listing, page by page: readdir serves from it. */
	for (;;) {
		struct kvc_list l;

		r = kvc_list(fs.kvc, pfx, "/", after, 1000, &l);
		free(after);
		after = NULL;
		if (r < 0)
			break;
		for (size_t i = 0; i < l.n_entries && r >= 0; i++) {
			if (l.entries[i].keylen == pl)
				continue; /* the directory's own marker */
			r = kdir_add(d, &cap, l.entries[i].key + pl, l.entries[i].keylen - pl,
			             false, &l.entries[i].e);
		}
		for (size_t i = 0; i < l.n_prefixes && r >= 0; i++) {
			size_t len = strlen(l.prefixes[i]);

			/* with its marker's mode and times (zero: an implicit one) */
			r = kdir_add(d, &cap, l.prefixes[i] + pl, len - pl - 1, true,
			             &l.prefix_e[i]);
		}
		if (r >= 0 && l.truncated && l.next_start_after)
			after = strdup(l.next_start_after);
		kvc_list_free(&l);
		if (r < 0 || !after)
			break;
	}
	free(after);
	if (r < 0) {
		kdir_free(d);
		fuse_reply_err(req, fs_err(r));
		return;
	}
	kdir_dedup(d);
	fi->fh = (uint64_t)(uintptr_t)d;
	fi->cache_readdir = 0;
	if (fuse_reply_open(req, fi))
		kdir_free(d);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi, bool plus)
{
	struct kdir *d = (struct kdir *)(uintptr_t)fi->fh;
	char dkey[KV_KEY_MAX + 1], key[KV_KEY_MAX + 2];
	char *buf = malloc(size), *p;
	size_t rem = size;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (ino_path(ino, dkey, sizeof(dkey), NULL) < 0)
		dkey[0] = '\0';
	p = buf;
	for (size_t i = (size_t)off; i < d->n + 2; i++) {
		struct fuse_entry_param ep = {0};
		const char *name;
		size_t need;

		if (i == 0 || i == 1) {
			name = i == 0 ? "." : "..";
			ep.attr.st_ino = ino;
			ep.attr.st_mode = S_IFDIR;
			if (plus)
				need = fuse_add_direntry_plus(req, p, rem, name, &ep, (off_t)i + 1);
			else
				need = fuse_add_direntry(req, p, rem, name, &ep.attr, (off_t)i + 1);
		} else {
			struct dirent_snap *s = &d->ents[i - 2];
			struct node *n = NULL;

			name = s->name;
			if (plus) {
				/* A directory's attributes are its marker's, which
				 * LIST carries (prefix_markers), as stat shows them:
				 * tar finds nothing "changed as we read it". */
				if (kvfs_path_join(dkey, name, key, sizeof(key)) < 0)
					continue;
				pthread_mutex_lock(&fs.lock);
				n = node_get(key, s->dir);
				if (n && !s->dir)
					node_attr_from(n, &s->e);
				if (n && s->e.version)
					node_learn(n, &s->e);
				pthread_mutex_unlock(&fs.lock);
				if (!n)
					break;
				ep.ino = n->ino;
				ep.attr_timeout = fs.cfg.attr_timeout;
				ep.entry_timeout = fs.cfg.entry_timeout;
				if (s->dir)
					fill_dir_attr(&ep.attr, n->ino, &s->e, 2);
				else
					fill_file_attr(&ep.attr, n->ino, &s->e);
				need = fuse_add_direntry_plus(req, p, rem, name, &ep, (off_t)i + 1);
			} else {
				ep.attr.st_ino = 0;
				ep.attr.st_mode = s->dir                          ? S_IFDIR
				                  : s->e.type == KVC_TYPE_SYMLINK ? S_IFLNK
				                                                  : S_IFREG;
				if (!s->dir && s->e.type == KVC_TYPE_SPECIAL &&
				    (s->e.mode & S_IFMT))
					ep.attr.st_mode = s->e.mode & S_IFMT;
				need = fuse_add_direntry(req, p, rem, name, &ep.attr, (off_t)i + 1);
			}
			if (need > rem) {
				if (n)
					node_forget(n->ino, 1); /* not handed to the kernel */
				break;
			}
		}
		if (need > rem)
			break;
		p += need;
		rem -= need;
	}
	fuse_reply_buf(req, buf, size - rem);
	free(buf);
}

static void kvfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                         struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

static void kvfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                             struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

static void kvfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	kdir_free((struct kdir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void kvfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct stats_acc a = {0};
	struct statvfs sv = {0};
	int r;

	(void)ino;
	r = kvc_stats(fs.kvc, stats_cb, &a);
	if (r < 0) {
		fuse_reply_err(req, fs_err(r));
		return;
	}
	sv.f_bsize = sv.f_frsize = 4096;
	sv.f_blocks = a.cap / 4096;
	sv.f_bfree = sv.f_bavail = a.free_b / 4096;
	sv.f_files = a.keys + a.free_b / 4096;
	sv.f_ffree = sv.f_favail = a.free_b / 4096;
	sv.f_namemax = KVFS_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

/*
 * A symbolic link is a key of type SYMLINK whose value is its target,
 * created whole with one PUT (if_absent: never over an existing name),
 * owned by its creator.
 */
static void kvfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	char ppath[KV_KEY_MAX + 1], key[KV_KEY_MAX + 2];
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	bool sgid;
	struct kvc_put_opts po = {.mode = 0777,
	                          .if_absent = true,
	                          .set_owner = true,
	                          .uid = ctx->uid,
	                          .gid = new_gid(parent, ctx, &sgid),
	                          .type = KVC_TYPE_SYMLINK,
	                          .drop_xattrs = true};
	struct kvc_entry e;
	size_t len = strlen(link);
	int r;

	if (len == 0 || len > WIRE_SYMLINK_MAX) {
		fuse_reply_err(req, len ? ENAMETOOLONG : ENOENT);
		return;
	}
	r = ino_path(parent, ppath, sizeof(ppath), NULL);
	if (r == 0)
		r = join_new(ppath, name, key, sizeof(key));
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	r = probe(key, &e); /* a directory of that name has no key to collide with */
	if (r >= 0) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	r = kvc_put(fs.kvc, key, strlen(key), link, len, &po, &e);
	if (r < 0) {
		fuse_reply_err(req, r == -EEXIST ? EEXIST : fs_err(r));
		return;
	}
	reply_entry(req, key, false, &e);
}

static void kvfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char key[KV_KEY_MAX + 1], target[WIRE_SYMLINK_MAX + 1];
	struct kvc_entry e;
	ssize_t n;
	int r;

	r = ino_path(ino, key, sizeof(key), NULL);
	if (r == 0 && key_orphan(key))
		r = -ESTALE;
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	n = kvc_get(fs.kvc, key, strlen(key), 0, target, WIRE_SYMLINK_MAX, NULL, &e);
	if (n < 0) {
		fuse_reply_err(req, n == -ENOENT ? ENOENT : fs_err((int)n));
		return;
	}
	if (n == 0 || e.size > WIRE_SYMLINK_MAX) {
		fuse_reply_err(req, EINVAL); /* replaced by a file meanwhile */
		return;
	}
	target[n] = '\0'; /* a target holds no NUL (the server refuses one) */
	fuse_reply_readlink(req, target);
}

/*
 * Hard links: a key has one name, and a value belongs to one key, so a
 * second name for the same bytes cannot be made (docs/semantics.md says
 * why and what tar, cp -a and rsync -H do then).
 */
static void kvfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino;
	(void)newparent;
	(void)newname;
	fuse_reply_err(req, EPERM); /* link(2): "the file system does not support hard links" */
}

/*
 * mknod of a regular file (tar --xattrs makes its files so, then sets
 * their attributes, then opens them): an empty key, stored at once.  Of
 * a fifo, socket or device: an empty key of type SPECIAL whose mode keeps
 * the file-type bits (and rdev a device's number).  kvfs only stores and
 * reports such a file: the kernel opens fifos and devices itself.
 */
static void kvfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	char ppath[KV_KEY_MAX + 1], key[KV_KEY_MAX + 2];
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	bool sgid;
	struct kvc_put_opts po = {.mode = mode & 07777,
	                          .if_absent = true,
	                          .set_owner = true,
	                          .uid = ctx->uid,
	                          .gid = new_gid(parent, ctx, &sgid),
	                          .drop_xattrs = true};
	struct kvc_entry e;
	int r;

	if (S_ISFIFO(mode) || S_ISSOCK(mode) || S_ISCHR(mode) || S_ISBLK(mode)) {
		po.type = KVC_TYPE_SPECIAL;
		po.mode = mode & (S_IFMT | 07777);
		po.rdev = S_ISCHR(mode) || S_ISBLK(mode) ? (uint64_t)rdev : 0;
	} else if (!S_ISREG(mode)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	r = ino_path(parent, ppath, sizeof(ppath), NULL);
	if (r == 0)
		r = join_new(ppath, name, key, sizeof(key));
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	r = probe(key, &e);
	if (r >= 0) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	r = kvc_put(fs.kvc, key, strlen(key), "", 0, &po, &e);
	if (r < 0) {
		fuse_reply_err(req, fs_err(r));
		return;
	}
	reply_entry(req, key, false, &e);
}

/* ------------------------------------------------------------------ */
/* Extended attributes: user.* only, kept with the key on the server   */

static bool xattr_user(const char *name)
{
	return !strncmp(name, "user.", 5);
}

/*
 * The key holding @ino's extended attributes in @out: a file's own key, a
 * directory's marker.  0, 1 for a directory with no marker (nothing
 * stored: an implicit directory), or a negative errno (-ENOTSUP for the
 * root, which has no key).
 */
static int xattr_key(fuse_ino_t ino, char *out, size_t cap)
{
	char key[KV_KEY_MAX + 1];
	struct kvc_entry e;
	bool dir;
	int r;

	r = ino_path(ino, key, sizeof(key), &dir);
	if (r < 0)
		return r;
	if (key_orphan(key))
		return -ESTALE;
	if (!dir) {
		snprintf(out, cap, "%s", key);
		return 0;
	}
	if (!key[0])
		return -ENOTSUP;
	r = kvfs_path_dir_marker(key, out, cap);
	if (r < 0)
		return r;
	r = kvc_stat(fs.kvc, out, strlen(out), &e);
	return r == -ENOENT ? 1 : r;
}

/* A file created on this mount and not stored yet: store it now, so the
 * server has a key to hold the attribute (cp -a sets them on the open
 * destination before its close).  Returns true when it stored one. */
/* Is @ino a file created on this mount and not stored yet?  Then the
 * server has no key for it and it has no attributes: a get or list
 * answers so without storing it. */
static bool xattr_pending(fuse_ino_t ino)
{
	struct kstage *s = stage_ref(ino, false, NULL);
	bool pending = false;

	if (!s)
		return false;
	pthread_mutex_lock(&s->lock);
	pending = s->dirty && s->version == 0;
	pthread_mutex_unlock(&s->lock);
	stage_unref(s);
	return pending;
}

/* Answer a getxattr/listxattr of @size (0: the kernel asks the length)
 * with the @n bytes in @buf, or the error @n. */
static void reply_xattr_sized(fuse_req_t req, const char *buf, size_t size, ssize_t n)
{
	if (n < 0)
		fuse_reply_err(req, fs_err((int)n));
	else if (size)
		fuse_reply_buf(req, buf, (size_t)n);
	else
		fuse_reply_xattr(req, (size_t)n);
}

static bool xattr_store_pending(fuse_ino_t ino)
{
	struct kstage *s = stage_ref(ino, false, NULL);
	int r = -ENOENT;

	if (!s)
		return false;
	pthread_mutex_lock(&s->lock);
	if (s->dirty && s->version == 0)
		r = stage_store(s);
	pthread_mutex_unlock(&s->lock);
	stage_unref(s);
	return r == 0;
}

/*
 * user.kvfs.pinned: the server's pin of a file's key ("1": never evicted,
 * "0": evictable as any).  Not listed by listxattr (a property of the key
 * on the server, not data a copy should carry); XATTR_CREATE/REPLACE are
 * ignored, the attribute always exists on a file.  Setting it stores a
 * file written on this mount first, so the pin holds its bytes.  A
 * directory answers EISDIR / ENODATA: `kvctl pin -r DIR/` pins its keys.
 */
#define KVFS_XATTR_PINNED "user.kvfs.pinned"

static void pin_xattr_set(fuse_req_t req, fuse_ino_t ino, const char *value, size_t size)
{
	char key[KV_KEY_MAX + 1];
	struct kstage *s;
	bool dir, pin;
	int r;

	if (size < 1 || size > 2 || (value[0] != '0' && value[0] != '1') ||
	    (size == 2 && value[1] != '\n')) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	pin = value[0] == '1';
	r = ino_path(ino, key, sizeof(key), &dir);
	if (r == 0 && dir)
		r = -EISDIR;
	if (r == 0 && key[0] == NODE_ORPHAN)
		r = -ENOENT;
	s = r == 0 ? stage_ref(ino, false, NULL) : NULL;
	if (s) { /* bytes written here and not yet stored go first */
		pthread_mutex_lock(&s->lock);
		r = stage_store(s);
		if (r < 0)
			s->err = -r;
		pthread_mutex_unlock(&s->lock);
		stage_unref(s);
	}
	if (r == 0)
		r = kvc_pin(fs.kvc, key, strlen(key), pin, NULL);
	if (r == -ENOSPC)
		KV_WARN_RL(TAG, "%s: not pinned: %s", key, kvc_strerror());
	fuse_reply_err(req, r < 0 ? (r == -ENOSPC || r == -EISDIR ? -r : fs_err(r)) : 0);
}

static void pin_xattr_get(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char key[KV_KEY_MAX + 1];
	struct kvc_entry e;
	bool dir;
	int r;

	r = ino_path(ino, key, sizeof(key), &dir);
	if (r == 0 && (dir || key[0] == NODE_ORPHAN))
		r = -ENODATA;
	if (r == 0)
		r = kvc_stat(fs.kvc, key, strlen(key), &e);
	if (r == -ENOENT) { /* written here, not yet stored: not pinned */
		struct kstage *s = stage_ref(ino, false, NULL);

		if (s) {
			if (stage_attr(s, &e)) /* clears e.pinned */
				r = 0;
			stage_unref(s);
		}
	}
	if (r < 0)
		fuse_reply_err(req, r == -ENODATA ? ENODATA : fs_err(r));
	else if (size == 0)
		fuse_reply_xattr(req, 1);
	else if (size < 1)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, e.pinned ? "1" : "0", 1);
}

static void kvfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                          size_t size, int flags)
{
	if (!strcmp(name, KVFS_XATTR_PINNED)) { /* not an attribute: the server's pin */
		pin_xattr_set(req, ino, value, size);
		return;
	}
	char key[KV_KEY_MAX + 3];
	int r;

	if (!xattr_user(name)) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	r = xattr_key(ino, key, sizeof(key));
	if (r == 1) { /* an implicit directory gets its marker now */
		struct kvc_put_opts po = {.mode = 0755, .if_absent = true};

		r = kvc_put(fs.kvc, key, strlen(key), "", 0, &po, NULL);
		if (r == -EEXIST)
			r = 0;
	}
	if (r == 0) {
		r = kvc_setxattr(fs.kvc, key, strlen(key), name, value, size, flags);
		if (r == -ENOENT && xattr_store_pending(ino))
			r = kvc_setxattr(fs.kvc, key, strlen(key), name, value, size, flags);
	}
	fuse_reply_err(req, r < 0 ? fs_err(r) : 0);
}

static void kvfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	if (!strcmp(name, KVFS_XATTR_PINNED)) {
		pin_xattr_get(req, ino, size);
		return;
	}
	char key[KV_KEY_MAX + 3], *buf = NULL;
	ssize_t n;
	int r;

	if (!xattr_user(name)) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	r = xattr_key(ino, key, sizeof(key));
	if (r == 1 || r == -ENOTSUP) {
		fuse_reply_err(req, ENODATA); /* nothing stored for it */
		return;
	}
	if (r < 0) {
		fuse_reply_err(req, fs_err(r));
		return;
	}
	if (size) {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	n = kvc_getxattr(fs.kvc, key, strlen(key), name, buf, size);
	if (n == -ENOENT && xattr_pending(ino))
		n = -ENODATA; /* created here, and no attribute yet */
	reply_xattr_sized(req, buf, size, n);
	free(buf);
}

static void kvfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char key[KV_KEY_MAX + 3], *buf = NULL;
	ssize_t n;
	int r;

	r = xattr_key(ino, key, sizeof(key));
	if (r == 1 || r == -ENOTSUP) { /* none stored */
		if (size == 0)
			fuse_reply_xattr(req, 0);
		else
			fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (r < 0) {
		fuse_reply_err(req, fs_err(r));
		return;
	}
	if (size) {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	n = kvc_listxattr(fs.kvc, key, strlen(key), buf, size);
	if (n == -ENOENT && xattr_pending(ino))
		n = 0; /* created here, and no attribute yet */
	reply_xattr_sized(req, buf, size, n);
	free(buf);
}

static void kvfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	char key[KV_KEY_MAX + 3];
	int r;

	if (!xattr_user(name)) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	r = xattr_key(ino, key, sizeof(key));
	if (r == 1 || r == -ENOTSUP) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	if (r == 0)
		r = kvc_removexattr(fs.kvc, key, strlen(key), name);
	fuse_reply_err(req, r < 0 ? fs_err(r) : 0);
}

const struct fuse_lowlevel_ops kvfs_ops = {
        .init = kvfs_init,
        .lookup = kvfs_lookup,
        .forget = kvfs_forget,
        .forget_multi = kvfs_forget_multi,
        .getattr = kvfs_getattr,
        .setattr = kvfs_setattr,
        .open = kvfs_open,
        .create = kvfs_create,
        .read = kvfs_read,
        .write = kvfs_write,
        .flush = kvfs_flush,
        .fsync = kvfs_fsync,
        .release = kvfs_release,
        .mkdir = kvfs_mkdir,
        .unlink = kvfs_unlink,
        .rmdir = kvfs_rmdir,
        .rename = kvfs_rename,
        .opendir = kvfs_opendir,
        .readdir = kvfs_readdir,
        .readdirplus = kvfs_readdirplus,
        .releasedir = kvfs_releasedir,
        .statfs = kvfs_statfs,
        .link = kvfs_link,
        .symlink = kvfs_symlink,
        .readlink = kvfs_readlink,
        .mknod = kvfs_mknod,
        .setxattr = kvfs_setxattr,
        .getxattr = kvfs_getxattr,
        .listxattr = kvfs_listxattr,
        .removexattr = kvfs_removexattr,
};

/* ------------------------------------------------------------------ */
/* Server restarts                                                     */

/* What the kernel may cache of one inode, to drop after a restart. */
struct inval {
	uint64_t ino;
	uint64_t parent; /* its name's directory, 0 = none to drop */
	char *name;
};

/*
 * The server restarted: whatever the kernel cached from the old instance
 * (pages, attributes, names: the store they came from is gone) is dropped
 * for every inode kvfs knows.  The inode table forgets the versions too.
 * Opens already compare versions with their epochs, so this is not what
 * keeps old bytes from being served; it makes a stat, ls or a read through
 * an open file see the new server now rather than after attr_timeout or
 * entry_timeout.  On the sweeper thread: never inside a request handler
 * (a notification may wait for a READ a worker must answer).
 */
static void restart_sweep(void)
{
	struct inval *v;
	size_t n = 0, cap;

	pthread_mutex_lock(&fs.lock);
	cap = 0;
	for (size_t b = 0; b < fs.nbuckets; b++)
		for (struct node *nd = fs.by_ino[b]; nd; nd = nd->next_ino)
			cap++;
	v = calloc(cap ? cap : 1, sizeof(*v));
	for (size_t b = 0; v && b < fs.nbuckets; b++) {
		for (struct node *nd = fs.by_ino[b]; nd && n < cap; nd = nd->next_ino) {
			const char *base;
			struct node *p;

			nd->cache_version = nd->attr_version = 0;
			nd->open_ms = 0;
			v[n].ino = nd->ino;
			/* not the name of a file written here and not stored yet:
			 * a lookup would not find it on the server */
			if (nd->path[0] && nd->path[0] != NODE_ORPHAN && !nd->stage) {
				char dir[KV_KEY_MAX + 1];

				base = kvfs_path_base(nd->path);
				snprintf(dir, sizeof(dir), "%.*s",
				         (int)(base > nd->path ? base - nd->path - 1 : 0),
				         nd->path);
				p = node_by_path(dir);
				if (p && (v[n].name = strdup(base)))
					v[n].parent = p->ino;
			}
			n++;
		}
	}
	pthread_mutex_unlock(&fs.lock);
	if (!v) {
		KV_WARN(TAG, "server restarted: no memory to drop the kernel's caches; they "
		             "expire with attr_timeout and entry_timeout");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (fs.se) {
			if (v[i].parent)
				fuse_lowlevel_notify_inval_entry(fs.se, v[i].parent, v[i].name,
				                                 strlen(v[i].name));
			fuse_lowlevel_notify_inval_inode(fs.se, v[i].ino, 0, 0);
		}
		free(v[i].name);
	}
	free(v);
	KV_INFO(TAG,
	        "server restarted: dropped the cached pages, attributes and names of %zu "
	        "inodes",
	        n);
}

static void *restart_sweeper(void *arg)
{
	uint64_t done = 0;

	(void)arg;
	pthread_mutex_lock(&fs.sweep_lock);
	for (;;) {
		while (!fs.sweep_stop && fs.sweep_epoch == done)
			pthread_cond_wait(&fs.sweep_cond, &fs.sweep_lock);
		if (fs.sweep_stop)
			break;
		done = fs.sweep_epoch;
		pthread_mutex_unlock(&fs.sweep_lock);
		restart_sweep();
		pthread_mutex_lock(&fs.sweep_lock);
	}
	pthread_mutex_unlock(&fs.sweep_lock);
	return NULL;
}

/* kvc_opts.on_restart: on a worker inside a kvc call; hand over. */
static void kvfs_restarted(void *arg, uint64_t epoch)
{
	(void)arg;
	pthread_mutex_lock(&fs.sweep_lock);
	fs.sweep_epoch = epoch;
	pthread_cond_signal(&fs.sweep_cond);
	pthread_mutex_unlock(&fs.sweep_lock);
}

/* ------------------------------------------------------------------ */
/* Setup (called from main in kvfs-main.c)                             */

int kvfs_fs_init(const struct kvfs_config *cfg)
{
	struct kvc_opts ko;
	struct node *root;
	int r;

	fs.cfg = *cfg;
	atomic_init(&fs.store_slots, (int)cfg->threads - 1); /* one is left to answer READs */
	fs.uid = getuid();
	fs.gid = getgid();
	fs.mount_time = time(NULL);
	pthread_mutex_init(&fs.lock, NULL);
	pthread_mutex_init(&fs.pool_lock, NULL);
	pthread_cond_init(&fs.pool_cond, NULL);
	pthread_mutex_init(&fs.sweep_lock, NULL);
	pthread_cond_init(&fs.sweep_cond, NULL);
	fs.nbuckets = 1 << 16;
	fs.by_ino = calloc(fs.nbuckets, sizeof(*fs.by_ino));
	fs.by_path = calloc(fs.nbuckets, sizeof(*fs.by_path));
	if (!fs.by_ino || !fs.by_path)
		return -ENOMEM;
	fs.next_ino = FUSE_ROOT_ID;
	root = node_get("", true);
	if (!root)
		return -ENOMEM;

	kvc_opts_init(&ko);
	ko.server = cfg->server;
	ko.provider = cfg->provider;
	ko.auth_token_file = cfg->auth_token_file;
	ko.timeout_ms = cfg->timeout_ms;
	ko.client_id = "kvfs";
	ko.on_restart = kvfs_restarted;
	ko.upload_part = cfg->upload_part;
	ko.upload_buffers = cfg->upload_buffers;
	r = kvc_connect(&ko, &fs.kvc);
	if (r < 0) {
		fprintf(stderr, "kvfs: %s\n", kvc_strerror()); /* names the server */
		return r;
	}
	r = pool_init();
	if (r == 0) {
		struct kvc_limits lim;

		kvc_limits(fs.kvc, &lim);
		KV_INFO(TAG, "server %s: transfer provider %s (server: %s), %s", cfg->server,
		        lim.provider, lim.server_provider,
		        fs.pool_mr ? "reads by RDMA into registered buffers"
		                   : "reads inline on the control channel");
	}
	return r;
}

void kvfs_fs_set_session(struct fuse_session *se)
{
	if (se) {
		fs.se = se;
		fs.sweeper_started = pthread_create(&fs.sweeper, NULL, restart_sweeper, NULL) == 0;
		if (!fs.sweeper_started)
			KV_WARN(TAG, "no thread to drop the kernel's caches after a server "
			             "restart: they expire with attr_timeout and entry_timeout");
		return;
	}
	if (fs.sweeper_started) {
		pthread_mutex_lock(&fs.sweep_lock);
		fs.sweep_stop = true;
		pthread_cond_signal(&fs.sweep_cond);
		pthread_mutex_unlock(&fs.sweep_lock);
		pthread_join(fs.sweeper, NULL);
		fs.sweeper_started = false;
	}
	fs.se = NULL;
}

void kvfs_fs_fini(void)
{
	/* Buffers first: the engine closes with no region registered. */
	if (fs.pool_mr) {
		if (fs.pool_live < fs.cfg.buffers)
			xfer_mr_dereg_lost(fs.pool_mr); /* retired buffers: fenced until close */
		else
			xfer_mr_dereg(fs.pool_mr);
		fs.pool_mr = NULL;
	}
	free(fs.pool_free);
	fs.pool_free = NULL;
	kvc_close(fs.kvc);
	fs.kvc = NULL;
}
