/* SPDX-License-Identifier: MIT */
/*
 * kvfs command line, mount and daemon life.
 *
 * kvfs forks before it starts any thread: the child connects, mounts and
 * then tells the parent through a pipe whether it worked, so `kvfs` returns
 * 0 only once the mount is usable and prints the real error otherwise.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvfs/client.h"
#include "kvfs/log.h"
#include "kvfs/token.h"
#include "kvfs/util.h"
#include "kvfs_i.h"

struct cli {
	char *server;
	char *provider;
	char *auth_token_file;
	char *attr_timeout;
	char *entry_timeout;
	char *timeout;
	char *buffers;
	char *readahead_kb;
	char *spill_threshold;
	char *spill_dir;
	char *stream_threshold;
	char *upload_part;
	char *upload_buffers;
	int threads;
};

#define KVFS_OPT(t, p)                                                                             \
	{                                                                                          \
		t, offsetof(struct cli, p), 1                                                      \
	}
static const struct fuse_opt kvfs_opts[] = {
        KVFS_OPT("provider=%s", provider),
        KVFS_OPT("auth_token_file=%s", auth_token_file),
        KVFS_OPT("attr_timeout=%s", attr_timeout),
        KVFS_OPT("entry_timeout=%s", entry_timeout),
        KVFS_OPT("timeout=%s", timeout),
        KVFS_OPT("buffers=%s", buffers),
        KVFS_OPT("readahead_kb=%s", readahead_kb),
        KVFS_OPT("spill_threshold=%s", spill_threshold),
        KVFS_OPT("spill_dir=%s", spill_dir),
        KVFS_OPT("stream_threshold=%s", stream_threshold),
        KVFS_OPT("upload_part=%s", upload_part),
        KVFS_OPT("upload_buffers=%s", upload_buffers),
        KVFS_OPT("threads=%d", threads),
        FUSE_OPT_END,
};

static int kvfs_main(int argc, char **argv);

struct ra_args {
	const char *mnt;
	unsigned kb;
};

static void set_readahead(const char *mnt, unsigned kb);

/* Runs once the loop serves: the stat is answered by this very daemon. */
static void *readahead_late(void *arg)
{
	struct ra_args *ra = arg;
	struct stat st;

	if (stat(ra->mnt, &st) == 0)
		set_readahead(ra->mnt, ra->kb);
	return NULL;
}

static void usage(const char *prog)
{
	printf("Usage: %s [OPTIONS] HOST:PORT MOUNTPOINT\n"
	       "Mount the keys of a kv-server as files: a file name is a key, '/' makes\n"
	       "directories.  cp, cat, ls, rm, mv, rsync and tar work on the mount.\n"
	       "When kv-server restarts (empty), the mount reconnects, logs it once and\n"
	       "drops what it cached from the old server (docs/semantics.md).\n"
	       "kv-server is a cache: when full it evicts the least recently used files\n"
	       "unless pinned (setfattr -n user.kvfs.pinned -v 1 FILE) or it runs with\n"
	       "--eviction none (docs/semantics.md, \"Eviction and pinning\").\n"
	       "\n"
	       "kvfs options (-o name=value,...):\n"
	       "    provider=NAME          transfer provider: auto (default), tcp, shm, verbs,\n"
	       "                           efa, or none (values travel on the TCP channel)\n"
	       "    auth_token_file=FILE   token shared with kv-server --auth-token-file\n"
	       "    attr_timeout=SEC       attribute cache time (default 1.0)\n"
	       "    entry_timeout=SEC      name cache time (default 1.0)\n"
	       "    timeout=MS             deadline of every server call (default 10000); a\n"
	       "                           dead server gives EIO within it, never a hang\n"
	       "    buffers=N              registered 1 MiB read buffers (default 64)\n"
	       "    readahead_kb=KB        read-ahead set on the mount (default 4096; 0 keeps\n"
	       "                           the kernel's 128)\n"
	       "    stream_threshold=SIZE  a file written past this streams to the server while\n"
	       "                           it is written, nothing staged locally (default 4M;\n"
	       "                           0: stage whole files, published at close)\n"
	       "    upload_part=SIZE       bytes per upload part (default 4M)\n"
	       "    upload_buffers=N       upload part buffers the mount shares (default 32):\n"
	       "                           bounds the memory of files being written\n"
	       "    spill_threshold=SIZE   a file loaded for rewriting above this goes to a\n"
	       "                           temp file (64M)\n"
	       "    spill_dir=DIR          where (default $TMPDIR or /tmp)\n"
	       "    threads=N              FUSE worker threads (default 16)\n"
	       "\n"
	       "Files keep their owners (chown is stored).  For a mount several users share,\n"
	       "add -o allow_other,default_permissions (root, or user_allow_other in\n"
	       "/etc/fuse.conf): the kernel then checks modes and owners for every user.\n"
	       "\n"
	       "Mount with mount(8) or /etc/fstab (type fuse.kvfs, source HOST:PORT) once\n"
	       "kvfs is installed with its mount.fuse.kvfs link in /sbin:\n"
	       "    mount -t fuse.kvfs 127.0.0.1:7070 /mnt/kv -o provider=tcp\n"
	       "Unmount with: fusermount3 -u MOUNTPOINT\n"
	       "\n"
	       "FUSE options:\n",
	       prog);
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct cli *c = data;

	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT && !c->server) {
		c->server = strdup(arg);
		return 0; /* consumed: the next non-option is the mount point */
	}
	return 1;
}

static int parse_double(const char *name, const char *v, double def, double *ret)
{
	char *end;

	if (!v) {
		*ret = def;
		return 0;
	}
	*ret = strtod(v, &end);
	if (*end || *ret < 0) {
		fprintf(stderr, "kvfs: -o %s=%s: not a number of seconds\n", name, v);
		return -1;
	}
	return 0;
}

static int parse_u64(const char *name, const char *v, uint64_t def, uint64_t *ret)
{
	if (!v) {
		*ret = def;
		return 0;
	}
	if (kv_parse_size(v, ret) < 0) {
		fprintf(stderr, "kvfs: -o %s=%s: not a number\n", name, v);
		return -1;
	}
	return 0;
}

/* A kvfs that died leaves "Transport endpoint is not connected" behind:
 * lazily unmount it so the new one can mount in the same place. */
static void clear_stale_mount(const char *mnt)
{
	struct stat st;
	pid_t pid;

	if (stat(mnt, &st) == 0 || errno != ENOTCONN)
		return;
	fprintf(stderr, "kvfs: %s is a stale mount (its kvfs died); unmounting it\n", mnt);
	pid = fork();
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", mnt, (char *)NULL);
		execlp("umount", "umount", "-l", mnt, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

/* Raise the mount's read-ahead: the kernel only lowers what FUSE asks. */
static void set_readahead(const char *mnt, unsigned kb)
{
	char line[4096], path[128], real[PATH_MAX];
	FILE *f;

	if (!kb || !realpath(mnt, real))
		return;
	f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char dev[32], mp[PATH_MAX];
		int fd;

		/* id parent maj:min root mountpoint ... */
		if (sscanf(line, "%*s %*s %31s %*s %4095s", dev, mp) != 2 || strcmp(mp, real))
			continue;
		snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
		fd = open(path, O_WRONLY);
		if (fd < 0)
			KV_DEBUG("kvfs", "cannot open %s: %s; read-ahead stays at the kernel's",
			         path, strerror(errno));
		if (fd >= 0) {
			int n = snprintf(line, sizeof(line), "%u", kb);

			if (write(fd, line, (size_t)n) != n)
				KV_DEBUG("kvfs", "cannot set %s: %s", path, strerror(errno));
			close(fd);
		}
	}
	fclose(f);
}

/* An fstab option that only mount(8) or systemd act on: FUSE refuses it. */
static bool mount_only_opt(const char *o, size_t len)
{
	static const char *const names[] = {"_netdev", "nofail", "auto",  "noauto", "user",
	                                    "nouser",  "users",  "owner", "group",  "defaults"};

	if ((len >= 2 && !strncmp(o, "x-", 2)) || (len >= 8 && !strncmp(o, "comment=", 8)))
		return true;
	for (size_t i = 0; i < KV_ARRAY_SIZE(names); i++)
		if (strlen(names[i]) == len && !strncmp(o, names[i], len))
			return true;
	return false;
}

/* "-oOPTS" of @opts without the mount(8)-only options, in a new string
 * ("" if none is left); NULL when out of memory. */
static char *fuse_opts_of(const char *opts)
{
	char *out = malloc(strlen(opts) + 3), *w;

	if (!out)
		return NULL;
	memcpy(out, "-o", 2);
	w = out + 2;
	for (const char *o = opts; *o;) {
		size_t len = strcspn(o, ",");

		if (len && !mount_only_opt(o, len)) {
			if (w != out + 2)
				*w++ = ',';
			memcpy(w, o, len);
			w += len;
		}
		o += len + (o[len] == ',');
	}
	*w = '\0';
	if (w == out + 2)
		*out = '\0';
	return out;
}

/*
 * Called as mount.fuse.kvfs by mount(8) / fstab:
 *   mount.fuse.kvfs SOURCE DIR [-sfnv] [-N NS] [-o OPTIONS] [-t fuse.kvfs]
 * Keep SOURCE, DIR and -o; drop what only mount(8) means, among the options
 * too (_netdev, nofail, x-systemd.*, ...).  Returns the new argc, or -1 when
 * out of memory; -f (fake) makes kvfs exit 0 without mounting.
 */
static int mount_helper_args(int argc, char **argv, bool *fake)
{
	int n = 1;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-t") || !strcmp(a, "-N")) {
			i++;
			continue;
		}
		if (a[0] == '-' && a[1] && a[1] != 'o' && strspn(a + 1, "sfnv") == strlen(a + 1)) {
			if (strchr(a, 'f'))
				*fake = true;
			continue;
		}
		if (!strncmp(a, "-o", 2) && (a[2] || i + 1 < argc)) {
			char *o = fuse_opts_of(a[2] ? a + 2 : argv[++i]);

			if (!o)
				return -1;
			if (*o)
				argv[n++] = o; /* lives as long as argv */
			else
				free(o);
			continue;
		}
		argv[n++] = argv[i];
	}
	argv[n] = NULL;
	return n;
}

int main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	bool fake = false;

	if (!strncmp(base, "mount.", 6)) {
		argc = mount_helper_args(argc, argv, &fake);
		if (argc < 0) {
			fprintf(stderr, "kvfs: out of memory\n");
			return 1;
		}
		if (fake)
			return 0;
	}
	return kvfs_main(argc, argv);
}

static int kvfs_main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts o = {0};
	struct kvfs_config cfg = {0};
	struct fuse_loop_config *lc;
	struct fuse_session *se;
	struct cli c = {0};
	char host[256], server[270];
	uint16_t port;
	uint64_t v;
	int pfd[2] = {-1, -1}, r = 1;
	char status = 1;

	kv_log_init("kvfs");
	if (fuse_opt_parse(&args, &c, kvfs_opts, opt_proc) < 0)
		return 2;
	if (fuse_parse_cmdline(&args, &o) != 0)
		return 2;
	if (o.show_help) {
		usage(argv[0]);
		return 0;
	}
	if (o.show_version) {
		printf("kvfs %s, libfuse %s\n", KVFS_VERSION, fuse_pkgversion());
		return 0;
	}
	if (!c.server || !o.mountpoint) {
		fprintf(stderr, "usage: %s [OPTIONS] HOST:PORT MOUNTPOINT (see --help)\n", argv[0]);
		return 2;
	}
	/* Named HOST:PORT from here on, with the port even if it was left out;
	 * a bad address is left to the client library to explain. */
	cfg.server = c.server;
	if (kv_parse_hostport(c.server, host, sizeof(host), KVC_DEFAULT_PORT, &port) == 0)
		cfg.server = kv_fmt_hostport(host, port, server, sizeof(server));
	cfg.provider = c.provider ? c.provider : "auto";
	cfg.auth_token_file = c.auth_token_file;
	if (kv_token_file_exposed(c.auth_token_file))
		fprintf(stderr,
		        "kvfs: warning: the token file %s can be read by other users: they can "
		        "take the token (chmod 600 %s)\n",
		        c.auth_token_file, c.auth_token_file);
	cfg.buf_size = 1 << 20;
	cfg.spill_dir = c.spill_dir ? c.spill_dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	if (parse_double("attr_timeout", c.attr_timeout, 1.0, &cfg.attr_timeout) ||
	    parse_double("entry_timeout", c.entry_timeout, 1.0, &cfg.entry_timeout) ||
	    parse_u64("timeout", c.timeout, 10000, &v))
		return 2;
	cfg.timeout_ms = (int)KV_MIN(v, 3600000);
	if (parse_u64("buffers", c.buffers, 64, &v))
		return 2;
	cfg.buffers = (unsigned)KV_MAX(KV_MIN(v, 4096), 1);
	if (parse_u64("readahead_kb", c.readahead_kb, 4096, &v))
		return 2;
	cfg.readahead_kb = (unsigned)v;
	/* -s: one worker, which must never wait in a page-cache store */
	cfg.threads = o.singlethread ? 1 : c.threads > 0 ? (unsigned)c.threads : 16;
	if (parse_u64("spill_threshold", c.spill_threshold, 64ULL << 20, &v))
		return 2;
	cfg.spill_threshold = v;
	if (parse_u64("stream_threshold", c.stream_threshold, 4ULL << 20, &v))
		return 2;
	cfg.stream_threshold = v;
	if (parse_u64("upload_part", c.upload_part, 4ULL << 20, &v))
		return 2;
	if (v < 64 * 1024 || v > 256ULL << 20) {
		fprintf(stderr, "kvfs: upload_part=%s: use 64K to 256M\n", c.upload_part);
		return 2;
	}
	cfg.upload_part = v;
	if (parse_u64("upload_buffers", c.upload_buffers, 32, &v))
		return 2;
	if (v < 2 || v > 4096) {
		fprintf(stderr, "kvfs: upload_buffers=%s: use 2 to 4096\n", c.upload_buffers);
		return 2;
	}
	cfg.upload_buffers = (unsigned)v;
	if (o.debug)
		kv_log_level = KV_LOG_DEBUG;

	fuse_opt_add_arg(&args, "-omax_read=1048576");
	{
		char fsname[300];

		snprintf(fsname, sizeof(fsname), "-ofsname=kvfs#%s,subtype=kvfs", cfg.server);
		fuse_opt_add_arg(&args, fsname);
	}
	clear_stale_mount(o.mountpoint);
	/* FUSE mounts on a regular file too, but kvfs serves a directory: every
	 * access there would fail with EIO. */
	{
		struct stat st;

		if (stat(o.mountpoint, &st) == 0 && !S_ISDIR(st.st_mode)) {
			fprintf(stderr, "kvfs: %s is not a directory\n", o.mountpoint);
			goto out_report;
		}
	}

	/* Fork before any thread exists; the parent waits for the verdict. */
	if (!o.foreground) {
		pid_t pid;

		if (pipe(pfd) < 0) {
			perror("kvfs: pipe");
			return 1;
		}
		pid = fork();
		if (pid < 0) {
			perror("kvfs: fork");
			return 1;
		}
		if (pid > 0) {
			close(pfd[1]);
			if (read(pfd[0], &status, 1) != 1)
				status = 1;
			return status;
		}
		close(pfd[0]);
		setsid();
	}

	if (kvfs_fs_init(&cfg) < 0)
		goto out_report;
	se = fuse_session_new(&args, &kvfs_ops, sizeof(kvfs_ops), NULL);
	if (!se)
		goto out_fini;
	kvfs_fs_set_session(se);
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	if (fuse_session_mount(se, o.mountpoint) != 0) {
		fprintf(stderr, "kvfs: cannot mount on %s (does it exist? is /dev/fuse there?)\n",
		        o.mountpoint);
		goto out_signals;
	}
	set_readahead(o.mountpoint, cfg.readahead_kb);
	/* The kernel caps read-ahead at max_readahead when INIT is answered,
	 * so set it again once the mount serves requests (values > 1 MiB). */
	{
		static struct ra_args ra;
		pthread_t t;

		ra.mnt = o.mountpoint;
		ra.kb = cfg.readahead_kb;
		if (cfg.readahead_kb > 1024 && pthread_create(&t, NULL, readahead_late, &ra) == 0)
			pthread_detach(t);
	}
	KV_INFO("kvfs", "mounted %s on %s", cfg.server, o.mountpoint);
	if (!o.foreground) {
		int nul = open("/dev/null", O_RDWR);

		status = 0;
		if (write(pfd[1], &status, 1) != 1) {
			/* parent gone: keep serving */
		}
		close(pfd[1]);
		pfd[1] = -1;
		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 1);
			dup2(nul, 2);
			close(nul);
		}
		if (chdir("/") < 0) {
			/* harmless */
		}
	}
	lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(lc, cfg.threads);
	fuse_loop_cfg_set_clone_fd(lc, o.clone_fd);
	r = o.singlethread ? fuse_session_loop(se) : fuse_session_loop_mt(se, lc);
	fuse_loop_cfg_destroy(lc);
	fuse_session_unmount(se);
	r = r < 0 ? 1 : 0;
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	kvfs_fs_set_session(NULL); /* no notification after this */
	fuse_session_destroy(se);
out_fini:
	kvfs_fs_fini();
out_report:
	if (pfd[1] >= 0) {
		status = (char)r;
		if (write(pfd[1], &status, 1) != 1) {
			/* parent gone */
		}
	}
	free(o.mountpoint);
	fuse_opt_free_args(&args);
	return r;
}
