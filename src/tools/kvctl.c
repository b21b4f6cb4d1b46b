/* SPDX-License-Identifier: MIT */
/*
 * kvctl: put, get, list, stat, move, delete, pin and unpin keys of a
 * kv-server from the shell, and read its counters.  One struct kvc per run; every command is a
 * handful of synchronous client calls.
 *
 * Large values: put streams an input above 8 MiB as an upload (kvc_upload_*:
 * bounded memory, published in one step at the end) and sends a smaller
 * one in one PUT; get sizes its buffer with
 * kvc_stat() and reads the value in pieces pinned to the version it saw
 * (if_version), so a value replaced mid-read fails cleanly instead of
 * producing a file that mixes two versions.
 *
 * Exit status is part of the interface (see usage()): scripts tell "not
 * found", "exists / changed" and "server unreachable" apart from other
 * errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kvfs/client.h"
#include "kvfs/log.h"
#include "kvfs/util.h"
#include "kvfs/wire.h"
#include "kvfs/xfer.h"
#include "tool_opts.h"

/* Inputs above this stream in reads of this size (put_stream()). */
#define KVCTL_PUT_CHUNK (8 * KV_MIB)
/* Inputs above this are PUT from where they lie (put_value()). */
#define KVCTL_PUT_MR_MIN ((size_t)8 << 20)

#define PROG            "kvctl"
#define GET_PIECE       (64 * KV_MIB) /* bytes per kvc_get() call */
#define PROGRESS_MIN    (8 * KV_MIB)  /* show a progress bar above this */
#define PROGRESS_TICKMS 200

/* Exit codes; documented in usage(). */
enum {
	EX_OK = 0,
	EX_ERR = 1,
	EX_USAGE = 2,
	EX_NOTFOUND = 3,
	EX_CONFLICT = 4,
	EX_UNREACH = 5,
};

struct ctl {
	char why[256];          /* put_stream(): a failure of the input, not of the server */
	struct topt_client cli; /* -s, -p, -a, -t */
	struct kvc_opts o;      /* built from @cli */
	struct kvc *kvc;        /* connected lazily by ctl_connect() */
	bool quiet;             /* no progress bar, no error messages */
	const char *cmd;        /* command name, for messages */
};

/* ------------------------------------------------------------------ */
/* Help                                                                */

static void usage(FILE *f)
{
	fprintf(f,
	        "Usage: " PROG " [OPTIONS] COMMAND [ARGS...]\n"
	        "Read and write the keys of a kv-server.\n"
	        "\n"
	        "Commands:\n"
	        "  put KEY [FILE|-]      store FILE (default: stdin) as the value of KEY\n"
	        "  get KEY [FILE|-]      write the value of KEY to FILE (default: stdout)\n"
	        "  rm KEY...             delete keys\n"
	        "  ls [-l] [-d] [PREFIX] list keys (-l: size, version, mtime, mode; -d: group at\n"
	        "                        '/' and show common prefixes as directories)\n"
	        "  stat KEY              print size, version, times, mode and type of KEY\n"
	        "  mv [-n] SRC DST       rename SRC to DST (-n: fail if DST exists)\n"
	        "  pin [-r] KEY...       never evict KEY (-r: every key starting with KEY)\n"
	        "  unpin [-r] KEY...     let KEY be evicted again when the server is full\n"
	        "  stats                 print the server's counters, one 'name value' a line\n"
	        "  help [COMMAND]        this text, or the help of COMMAND\n"
	        "\n"
	        "Options (before the command):\n"
	        "  -s, --server HOST:PORT    kv-server address (default $KVFS_SERVER, else "
	        "" TOPT_DEFAULT_SERVER ")\n"
	        "  -p, --provider NAME       auto|tcp|shm|verbs|efa|none (default auto; none =\n"
	        "                            values travel inline on the control connection;\n"
	        "                            unless -p is given, ls, stat, rm, mv, stats and\n"
	        "                            values up to the server's inline limit use none:\n"
	        "                            they need no transfer setup)\n"
	        "  -a, --auth-token-file F   token file, when the server requires one\n"
	        "  -t, --timeout MS          per-call deadline in ms, or with a unit: 500ms, 2s,\n"
	        "                            1m (default 10000)\n"
	        "  -q, --quiet               no progress bar, no error messages (exit status "
	        "only)\n"
	        "  -h, --help                this text\n"
	        "  -V, --version             print the version\n"
	        "\n"
	        "A progress bar is drawn on stderr for transfers above 8 MiB when stderr is a\n"
	        "terminal.  '" PROG " COMMAND --help' describes one command.\n"
	        "\n"
	        "Exit status:\n"
	        "  0  success\n"
	        "  1  other error (I/O, no space, value too big, auth, ...)\n"
	        "  2  bad usage: unknown command or option, missing argument, or a key the\n"
	        "     server would refuse (empty, over 4096 bytes, '..', ...)\n"
	        "  3  key not found\n"
	        "  4  key exists (put -n, mv -n) or the value changed during the call\n"
	        "  5  server unreachable or timed out\n"
	        "With several keys (rm, pin, unpin), the status of the first failure is\n"
	        "returned.\n"
	        "\n"
	        "kv-server is a cache: when its memory is full a PUT evicts the least recently\n"
	        "used keys that are not pinned, unless it runs with --eviction none.\n");
}

struct cmd_help {
	const char *name;
	const char *text;
};

static const struct cmd_help cmd_helps[] = {
        {"put", "Usage: " PROG " put [-n] [-m MODE] KEY [FILE|-]\n"
                "Store the contents of FILE (default and '-': stdin) as the value of KEY,\n"
                "atomically: readers see the old or the new value.  An input above 8 MiB\n"
                "streams to the server while it is read (memory stays bounded, any size);\n"
                "if it fails midway nothing is stored.\n"
                "  -n, --no-overwrite  fail with status 4 if KEY exists\n"
                "  -m, --mode MODE     permission bits, octal (default 0644)\n"},
        {"get", "Usage: " PROG " get KEY [FILE|-]\n"
                "Write the value of KEY to FILE (default and '-': stdout).  The value is\n"
                "read in pieces of 64 MiB pinned to one version: if KEY is replaced while it\n"
                "is read, the command fails with status 4 and removes a partial FILE.\n"},
        {"rm", "Usage: " PROG " rm KEY...\n"
               "Delete each KEY.  Continues past failures; exits with the status of the\n"
               "first one (3 if a key did not exist).\n"},
        {"ls", "Usage: " PROG " ls [-l] [-d] [PREFIX]\n"
               "List the keys starting with PREFIX (default: all), in bytewise order.\n"
               "  -l  long format: size (bytes), version, mtime, mode, key (a symbolic\n"
               "      link: key -> target)\n"
               "  -d  treat '/' as a directory separator: keys below the next '/' after\n"
               "      PREFIX are shown once as their common prefix (ending in '/')\n"},
        {"stat", "Usage: " PROG " stat KEY\n"
                 "Print the metadata of KEY as 'name value' lines: key, size, version,\n"
                 "mtime_ns, mtime (UTC), mode, pinned (1: never evicted, see pin), type\n"
                 "(file, symlink, or what kvfs's mknod made: fifo, socket,\n"
                 "character-device, block-device; then rdev for a device), ctime_ns and\n"
                 "atime_ns, and uid and gid when an owner is stored (kvfs stores its files'\n"
                 "owners).\n"},
        {"mv", "Usage: " PROG " mv [-n] SRC DST\n"
               "Rename SRC to DST atomically; DST gets a new version.  An existing DST is\n"
               "replaced unless -n is given, then the command fails with status 4.\n"
               "  -n, --no-overwrite  do not replace an existing DST\n"},
        {"pin", "Usage: " PROG " pin [-r] KEY...\n"
                "Pin each KEY: the server never evicts it, however full (its value is\n"
                "kept; it can still be deleted).  The pin stays when the value is replaced\n"
                "or the key renamed.  Pinned bytes are bounded by kv-server --max-pinned:\n"
                "a pin past it fails (status 1) and changes nothing.\n"
                "  -r, --recursive  each KEY is a prefix: pin every key starting with it,\n"
                "                   e.g. 'models/' for a kvfs directory.  Keys created under\n"
                "                   it later are not pinned.\n"
                "Prints nothing for single keys; with -r, how many keys were pinned.\n"
                "Status 3 if a KEY (or, with -r, every key under a prefix) does not exist.\n"},
        {"unpin", "Usage: " PROG " unpin [-r] KEY...\n"
                  "Unpin each KEY: the server may evict it again when full.\n"
                  "  -r, --recursive  each KEY is a prefix: unpin every key starting with it\n"
                  "Status 3 if a KEY (or, with -r, every key under a prefix) does not exist.\n"},
        {"stats", "Usage: " PROG " stats\n"
                  "Print every counter of the server, one 'name value' per line\n"
                  "(keys, bytes_used, capacity, gets, puts, ...; see docs/protocol.md).\n"
                  "Every value is a decimal number.  instance_id identifies the server\n"
                  "process: a restart gives a new one (kv-server's and kvfs's logs show it\n"
                  "in hex: printf '%016x' ID).\n"},
};

static const char *cmd_help_text(const char *name)
{
	for (size_t i = 0; i < KV_ARRAY_SIZE(cmd_helps); i++)
		if (!strcmp(cmd_helps[i].name, name))
			return cmd_helps[i].text;
	return NULL;
}

static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "kvctl: [cmd: ]<message>" and where to look; returns EX_USAGE. */
static int usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	if (cmd)
		fprintf(stderr, "%s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" PROG " %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
	return EX_USAGE;
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */

static bool is_unreachable(int err)
{
	switch (err) {
	case -ECONNREFUSED:
	case -ETIMEDOUT:
	case -ECONNRESET:
	case -ECONNABORTED:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
	case -ENETDOWN:
	case -EHOSTDOWN:
	case -EPIPE:
	case -ECANCELED:
		return true;
	default:
		return false;
	}
}

static int exit_code(int err)
{
	if (err == -ENOENT)
		return EX_NOTFOUND;
	if (err == -EEXIST || err == -ESTALE)
		return EX_CONFLICT;
	if (is_unreachable(err))
		return EX_UNREACH;
	return EX_ERR;
}

/* The client's message for the last call of this thread, or strerror. */
static const char *kvc_reason(int err)
{
	const char *m = kvc_strerror();

	return m && *m ? m : strerror(-err);
}

/* "kvctl: <cmd> <what>: <reason>[ (hint)]"; returns the exit code for @err.
 * A key may hold any byte but NUL: control bytes of @what show as \xNN. */
static int fail(const struct ctl *c, const char *what, int err, const char *reason,
                const char *hint)
{
	if (c->quiet)
		return exit_code(err);
	fprintf(stderr, PROG ": %s", c->cmd);
	if (what) {
		fputc(' ', stderr);
		for (const unsigned char *p = (const unsigned char *)what; *p; p++) {
			if (*p < 0x20 || *p == 0x7f)
				fprintf(stderr, "\\x%02x", *p);
			else
				fputc(*p, stderr);
		}
	}
	fprintf(stderr, ": %s%s%s%s\n", reason, hint ? " (" : "", hint ? hint : "",
	        hint ? ")" : "");
	return exit_code(err);
}

static int fail_kvc(const struct ctl *c, const char *what, int err)
{
	const char *hint = NULL;

	if (is_unreachable(err))
		hint = "is kv-server running and reachable? set --server or KVFS_SERVER";
	return fail(c, what, err, kvc_reason(err), hint);
}

/* ------------------------------------------------------------------ */
/* Connection                                                          */

/* Connect on first use.  Without @engine, and unless -p named a provider,
 * connect with "none": no transfer engine, whose setup costs more than a
 * command that moves no value, or a small one, takes (ctl_connect_for()). */
static int ctl_connect(struct ctl *c, const char *what, bool engine)
{
	struct kvc_opts o = c->o;
	int r;

	if (c->kvc)
		return 0;
	if (!engine && (!o.provider || !strcmp(o.provider, "auto")))
		o.provider = "none";
	r = kvc_connect(&o, &c->kvc);
	if (r < 0) {
		/* kvc's message names the server and says what to check. */
		const char *msg = kvc_reason(r);

		if (r == -EACCES || r == -ENOTSUP || r == -ENOMEM || r == -EINVAL)
			return fail(c, what, r, msg, NULL);
		/* Anything else at connect time means we never reached a
		 * working server: report it as unreachable (5). */
		if (!c->quiet)
			fprintf(stderr,
			        PROG ": %s%s%s: %s; the server is set by --server or KVFS_SERVER\n",
			        c->cmd, what ? " " : "", what ? what : "", msg);
		return EX_UNREACH;
	}
	return 0;
}

/* Ready the connection (made by ctl_connect(c, what, false)) to move a
 * value of @len bytes.  With the default provider it has no engine, and a
 * value the server takes inline needs none: that spares the engine's setup
 * (0.37 s over tcp on the test VM).  For a larger value connect again, with
 * the engine. */
static int ctl_connect_for(struct ctl *c, const char *what, uint64_t len)
{
	struct kvc_limits lim;

	if (c->o.provider && strcmp(c->o.provider, "auto"))
		return 0; /* -p named a provider: the connection has it */
	kvc_limits(c->kvc, &lim);
	if (len <= lim.max_inline)
		return 0;
	kvc_close(c->kvc);
	c->kvc = NULL;
	return ctl_connect(c, what, true);
}

/* Refuse a key (or, @prefix, a LIST prefix) the server would refuse, before
 * connecting, with the reason (wire_key_validate(): the one key policy). */
static int check_key_flags(const struct ctl *c, const char *key, unsigned flags)
{
	size_t n = strlen(key);
	const char *why;
	int r;

	if (n == 0 && !(flags & WIRE_KEY_PREFIX))
		return usage_error(c->cmd, "keys are 1 to %d bytes; got an empty key", KV_KEY_MAX);
	if (n > KV_KEY_MAX)
		return usage_error(c->cmd, "keys are 1 to %d bytes; got one of %zu bytes",
		                   KV_KEY_MAX, n);
	r = wire_key_validate(key, n, flags, &why);
	if (r < 0)
		/* The key itself is not echoed: it may hold control characters. */
		return usage_error(c->cmd,
		                   "%s%s (keys are paths like 'dir/name' or the directory "
		                   "marker 'dir/')",
		                   flags & WIRE_KEY_PREFIX ? "prefix: " : "", why);
	return 0;
}

static int check_key(const struct ctl *c, const char *key)
{
	return check_key_flags(c, key, 0);
}

/* ------------------------------------------------------------------ */
/* Progress bar                                                        */

struct progress {
	atomic_uint_least64_t done; /* bytes moved so far */
	uint64_t total;
	uint64_t t0;
	const char *label;
	pthread_t thr;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;   /* under @lock */
	bool active; /* thread running */
};

static void progress_draw(struct progress *p, bool final)
{
	uint64_t done = atomic_load(&p->done);
	double secs = (double)(kv_now_ns() - p->t0) / 1e9;
	double pct = p->total ? 100.0 * (double)done / (double)p->total : 100.0;
	char a[32], b[32];
	int width = 30, fill = (int)(pct / 100.0 * width);

	fprintf(stderr, "\r%s [%.*s%*s] %10s / %-10s %5.1f%% %8.1f MB/s%s", p->label, fill,
	        "##############################", width - fill, "", kv_fmt_size(done, a, sizeof(a)),
	        kv_fmt_size(p->total, b, sizeof(b)), pct,
	        secs > 0 ? (double)done / secs / 1e6 : 0.0, final ? "\n" : "");
}

static void *progress_main(void *arg)
{
	struct progress *p = arg;
	struct timespec ts;

	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += PROGRESS_TICKMS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->cond, &p->lock, &ts);
		if (!p->stop)
			progress_draw(p, false);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void progress_start(struct progress *p, const struct ctl *c, const char *label,
                           uint64_t total)
{
	memset(p, 0, sizeof(*p));
	atomic_init(&p->done, 0);
	p->total = total;
	p->label = label;
	p->t0 = kv_now_ns();
	if (c->quiet || total <= PROGRESS_MIN || !isatty(STDERR_FILENO))
		return;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	if (pthread_create(&p->thr, NULL, progress_main, p) == 0)
		p->active = true;
}

/* @ok: draw the final 100% line; otherwise just end the line. */
static void progress_stop(struct progress *p, bool ok)
{
	if (!p->active)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thr, NULL);
	p->active = false;
	if (ok)
		progress_draw(p, true);
	else
		fputc('\n', stderr);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
}

/* ------------------------------------------------------------------ */
/* put                                                                 */

/* An input held in memory: malloc'd (small: cmd_put()). */
struct input {
	void *buf;
	size_t len;
	bool mapped;
	bool keep; /* a failed transfer may still read it: never unmapped or freed */
};

static void input_free(struct input *in)
{
	if (in->keep)
		return;
	if (in->mapped)
		munmap(in->buf, in->len);
	else
		free(in->buf);
	in->buf = NULL;
}

static int parse_mode(const char *s, uint32_t *ret)
{
	char *end;
	unsigned long m = strtoul(s, &end, 8);

	if (!*s || *end || m > 07777)
		return -EINVAL;
	*ret = (uint32_t)m;
	return 0;
}

/*
 * PUT the input.  A large one is registered where it lies (the file's
 * mapping) and the server RDMA-READs it from there: no copy into a staging
 * buffer, whose fresh pages cost more than the transfer.  If that PUT
 * fails, a transfer may still be reading the input, so it stays mapped
 * until the process exits (in->keep).  Without RDMA, or when the memory
 * cannot be registered, kvc_put() copies as usual.
 */
static int put_value(struct ctl *c, const char *key, struct input *in,
                     const struct kvc_put_opts *po)
{
	struct xfer_engine *eng = kvc_engine(c->kvc);
	struct xfer_mr *mr;
	int r;

	if (!eng || in->len <= KVCTL_PUT_MR_MIN ||
	    xfer_mr_reg(eng, in->buf, in->len, XFER_ACCESS_REMOTE_READ, &mr))
		return kvc_put(c->kvc, key, strlen(key), in->buf, in->len, po, NULL);
	r = kvc_put_mr(c->kvc, key, strlen(key), mr, 0, in->len, po, NULL);
	if (r == -ENOTSUP) { /* the server does not RDMA after all */
		xfer_mr_dereg(mr);
		return kvc_put(c->kvc, key, strlen(key), in->buf, in->len, po, NULL);
	}
	if (r < 0) {
		xfer_mr_dereg_lost(mr);
		in->keep = true;
	} else {
		xfer_mr_dereg(mr);
	}
	return r;
}

/*
 * PUT what @fd holds beyond the @head bytes already read: streamed as an
 * upload (kvc_upload_*) in KVCTL_PUT_CHUNK reads, so a file of any size
 * takes bounded memory; published in one step at the end.  @total (0:
 * unknown, a pipe) sizes the progress bar.
 */
static int put_stream(struct ctl *c, const char *key, int fd, struct input *head, uint64_t total,
                      const struct kvc_put_opts *po)
{
	struct kvc_upload *u;
	struct progress prog;
	uint8_t *buf = head->buf;
	uint64_t off = 0;
	size_t len = head->len;
	int r;

	r = kvc_upload_open(c->kvc, key, strlen(key), NULL, &u, NULL);
	if (r < 0)
		return r;
	progress_start(&prog, c, "put", total);
	for (;;) {
		ssize_t n;

		r = kvc_upload_write(u, off, buf, len);
		if (r < 0)
			break;
		off += len;
		atomic_store(&prog.done, off);
		n = read(fd, buf, KVCTL_PUT_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(c->why, sizeof(c->why), "cannot read the input: %s", strerror(-r));
			break;
		}
		if (n == 0)
			break;
		len = (size_t)n;
	}
	if (r < 0) {
		kvc_upload_abort(u);
		progress_stop(&prog, false);
		return r;
	}
	r = kvc_upload_commit(u, po, NULL);
	progress_stop(&prog, r == 0);
	return r;
}

static int cmd_put(struct ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
	        {"no-overwrite", no_argument, NULL, 'n'},
	        {"mode", required_argument, NULL, 'm'},
	        {"help", no_argument, NULL, 'h'},
	        {0},
	};
	struct kvc_put_opts po = {0};
	const char *key, *path = "-";
	struct input in = {0};
	struct progress prog;
	char what[64];
	int fd = STDIN_FILENO, opt, r;

	while ((opt = getopt_long(argc, argv, "+nm:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'n':
			po.if_absent = true;
			break;
		case 'm':
			if (parse_mode(optarg, &po.mode) < 0)
				return usage_error(c->cmd, "--mode: '%s' is not an octal mode",
				                   optarg);
			break;
		case 'h':
			fputs(cmd_help_text("put"), stdout);
			return EX_OK;
		default:
			return usage_error(c->cmd, "bad option");
		}
	}
	if (argc - optind < 1 || argc - optind > 2)
		return usage_error(c->cmd, "expected KEY [FILE|-]");
	key = argv[optind];
	if (argc - optind == 2)
		path = argv[optind + 1];
	if ((r = check_key(c, key)))
		return r;
	if (strcmp(path, "-")) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			char msg[600];

			r = -errno;
			snprintf(msg, sizeof(msg), "cannot open %s: %s", path, strerror(-r));
			return fail(c, key, -EIO, msg, NULL);
		}
	}
	{ /* an input above KVCTL_PUT_CHUNK streams; a smaller one is one PUT */
		struct stat st;
		size_t got = 0;

		in.buf = malloc(KVCTL_PUT_CHUNK);
		r = in.buf ? 0 : -ENOMEM;
		while (r == 0 && got < KVCTL_PUT_CHUNK) {
			ssize_t n = read(fd, (char *)in.buf + got, KVCTL_PUT_CHUNK - got);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				r = n < 0 ? -errno : 0;
				break;
			}
			got += (size_t)n;
		}
		in.len = got;
		if (r == 0 && got == KVCTL_PUT_CHUNK) {
			uint64_t total = fstat(fd, &st) == 0 && S_ISREG(st.st_mode)
			                         ? (uint64_t)st.st_size
			                         : 0;

			c->why[0] = '\0';
			if ((r = ctl_connect(c, key, true)))
				goto out_close;
			r = put_stream(c, key, fd, &in, total, &po);
			if (r < 0 && c->why[0])
				r = fail(c, key, -EIO, c->why, NULL);
			else if (r == -EEXIST && po.if_absent)
				r = fail(c, key, r, "key exists", "drop -n to replace it");
			else if (r < 0)
				r = fail_kvc(c, key, r);
			else
				r = EX_OK;
			goto out_close;
		}
	}
	if (fd != STDIN_FILENO)
		close(fd);
	if (r < 0) {
		char msg[600];

		snprintf(msg, sizeof(msg), "cannot read %s: %s", strcmp(path, "-") ? path : "stdin",
		         strerror(-r));
		return fail(c, key, -EIO, msg, NULL);
	}
	if ((r = ctl_connect(c, key, false)) || (r = ctl_connect_for(c, key, in.len)))
		goto out_free;
	snprintf(what, sizeof(what), "put");
	progress_start(&prog, c, what, in.len);
	r = put_value(c, key, &in, &po);
	if (r == 0)
		atomic_store(&prog.done, in.len);
	progress_stop(&prog, r == 0);
	if (r < 0) {
		if (r == -EEXIST && po.if_absent)
			r = fail(c, key, r, "key exists", "drop -n to replace it");
		else
			r = fail_kvc(c, key, r);
		goto out_free;
	}
	r = EX_OK;
out_free:
	input_free(&in);
	return r;
out_close:
	if (fd != STDIN_FILENO)
		close(fd);
	free(in.buf);
	return r;
}

/* ------------------------------------------------------------------ */
/* get                                                                 */

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int cmd_get(struct ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
	        {"help", no_argument, NULL, 'h'},
	        {0},
	};
	const char *key, *path = "-";
	struct kvc_get_opts go = {0};
	struct kvc_entry e;
	struct progress prog;
	bool to_file = false, partial_unlink = false;
	uint64_t off = 0;
	size_t cap;
	char *buf = NULL;
	int fd = STDOUT_FILENO, opt, r;

	while ((opt = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
		if (opt == 'h') {
			fputs(cmd_help_text("get"), stdout);
			return EX_OK;
		}
		return usage_error(c->cmd, "bad option");
	}
	if (argc - optind < 1 || argc - optind > 2)
		return usage_error(c->cmd, "expected KEY [FILE|-]");
	key = argv[optind];
	if (argc - optind == 2)
		path = argv[optind + 1];
	if ((r = check_key(c, key)))
		return r;
	if ((r = ctl_connect(c, key, false)))
		return r;
	/* Size the buffer and pin the version before touching the output, so
	 * a missing key does not create an empty file. */
	r = kvc_stat(c->kvc, key, strlen(key), &e);
	if (r < 0)
		return fail_kvc(c, key, r);
	if ((r = ctl_connect_for(c, key, e.size)))
		return r;
	if (strcmp(path, "-")) {
		struct stat st;

		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
		if (fd < 0) {
			char msg[600];

			r = -errno;
			snprintf(msg, sizeof(msg), "cannot create %s: %s", path, strerror(-r));
			return fail(c, key, -EIO, msg, NULL);
		}
		to_file = true;
		/* A regular file that ends up partial is removed on failure
		 * (O_TRUNC already dropped its old contents). */
		partial_unlink = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	}
	/* Smaller pieces while a progress bar is drawn, so it moves. */
	progress_start(&prog, c, "get", e.size);
	cap = (size_t)KV_MIN(e.size, prog.active ? PROGRESS_MIN : GET_PIECE);
	if (cap) {
		buf = malloc(cap);
		if (!buf) {
			progress_stop(&prog, false);
			r = fail(c, key, -ENOMEM, "cannot allocate the read buffer", NULL);
			goto out_close;
		}
	}
	go.if_version = e.version;
	while (off < e.size) {
		size_t want = (size_t)KV_MIN(e.size - off, cap);
		ssize_t n = kvc_get(c->kvc, key, strlen(key), off, buf, want, &go, NULL);

		if (n < 0) {
			progress_stop(&prog, false);
			if (n == -ESTALE) {
				char msg[160];

				snprintf(msg, sizeof(msg),
				         "value changed while it was read (had version %" PRIu64
				         ")",
				         e.version);
				r = fail(c, key, -ESTALE, msg, "run the command again");
			} else {
				r = fail_kvc(c, key, (int)n);
			}
			goto out_free;
		}
		if (n == 0) {
			progress_stop(&prog, false);
			r = fail(c, key, -EIO, "value ended early", "run the command again");
			goto out_free;
		}
		r = write_all(fd, buf, (size_t)n);
		if (r < 0) {
			char msg[600];

			progress_stop(&prog, false);
			if (r == -EPIPE && !to_file) {
				r = EX_ERR; /* reader went away: nothing to say */
				goto out_free;
			}
			snprintf(msg, sizeof(msg), "cannot write %s: %s", to_file ? path : "stdout",
			         strerror(-r));
			r = fail(c, key, -EIO, msg, NULL);
			goto out_free;
		}
		off += (uint64_t)n;
		atomic_store(&prog.done, off);
	}
	progress_stop(&prog, true);
	if (to_file && fsync(fd) < 0 && errno != EINVAL && errno != EROFS) {
		char msg[600];

		snprintf(msg, sizeof(msg), "cannot write %s: %s", path, strerror(errno));
		r = fail(c, key, -EIO, msg, NULL);
		goto out_free;
	}
	r = EX_OK;
out_free:
	free(buf);
out_close:
	if (to_file) {
		if (close(fd) < 0 && r == EX_OK) {
			char msg[600];

			snprintf(msg, sizeof(msg), "cannot write %s: %s", path, strerror(errno));
			r = fail(c, key, -EIO, msg, NULL);
		}
		/* Do not leave a partial file behind that looks like the value. */
		if (r != EX_OK && partial_unlink)
			unlink(path);
	}
	return r;
}

/* ------------------------------------------------------------------ */
/* rm, stat, mv, stats                                                 */

static int simple_opts(struct ctl *c, int argc, char **argv, const char *name)
{
	static const struct option lo[] = {
	        {"help", no_argument, NULL, 'h'},
	        {0},
	};
	int opt;

	while ((opt = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
		if (opt == 'h') {
			fputs(cmd_help_text(name), stdout);
			return -1;
		}
		return usage_error(c->cmd, "bad option");
	}
	return 0;
}

static int cmd_rm(struct ctl *c, int argc, char **argv)
{
	int r, first = EX_OK;

	if ((r = simple_opts(c, argc, argv, "rm")))
		return r < 0 ? EX_OK : r;
	if (optind >= argc)
		return usage_error(c->cmd, "expected KEY...");
	for (int i = optind; i < argc; i++)
		if ((r = check_key(c, argv[i])))
			return r;
	if ((r = ctl_connect(c, argv[optind], false)))
		return r;
	for (int i = optind; i < argc; i++) {
		r = kvc_delete(c->kvc, argv[i], strlen(argv[i]), 0);
		if (r < 0) {
			r = fail_kvc(c, argv[i], r);
			if (first == EX_OK)
				first = r;
			if (r == EX_UNREACH)
				break;
		}
	}
	return first;
}

static void fmt_mtime(int64_t ns, char *buf, size_t len)
{
	time_t t = (time_t)(ns / 1000000000LL);
	struct tm tm;

	if (ns < 0 || !gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, len, "-");
}

/* What kvfs makes of a key (KeyType, and a special file's mode). */
static const char *type_name(const struct kvc_entry *e)
{
	static const char *const special[16] = {
	        [S_IFIFO >> 12] = "fifo",
	        [S_IFCHR >> 12] = "character-device",
	        [S_IFBLK >> 12] = "block-device",
	        [S_IFSOCK >> 12] = "socket",
	};

	switch (e->type) {
	case KVC_TYPE_FILE:
		return "file";
	case KVC_TYPE_SYMLINK:
		return "symlink";
	case KVC_TYPE_SPECIAL:
		return special[(e->mode & S_IFMT) >> 12] ? special[(e->mode & S_IFMT) >> 12]
		                                         : "special";
	default:
		return "unknown";
	}
}

static int cmd_stat(struct ctl *c, int argc, char **argv)
{
	struct kvc_entry e;
	const char *key;
	char ts[64];
	int r;

	if ((r = simple_opts(c, argc, argv, "stat")))
		return r < 0 ? EX_OK : r;
	if (argc - optind != 1)
		return usage_error(c->cmd, "expected KEY");
	key = argv[optind];
	if ((r = check_key(c, key)) || (r = ctl_connect(c, key, false)))
		return r;
	r = kvc_stat(c->kvc, key, strlen(key), &e);
	if (r < 0)
		return fail_kvc(c, key, r);
	fmt_mtime(e.mtime_ns, ts, sizeof(ts));
	printf("key %s\nsize %" PRIu64 "\nversion %" PRIu64 "\nmtime_ns %" PRId64
	       "\nmtime %s\nmode %04o\npinned %d\n",
	       key, e.size, e.version, e.mtime_ns, ts, e.mode & 07777, e.pinned);
	printf("type %s\n", type_name(&e));
	if (e.rdev)
		printf("rdev %" PRIu64 "\n", e.rdev);
	printf("ctime_ns %" PRId64 "\natime_ns %" PRId64 "\n", e.ctime_ns, e.atime_ns);
	if (e.has_owner)
		printf("uid %" PRIu32 "\ngid %" PRIu32 "\n", e.uid, e.gid);
	return EX_OK;
}

/* ------------------------------------------------------------------ */
/* pin, unpin                                                          */

/* Pin or unpin every key starting with @prefix, a LIST page at a time.
 * Keys deleted meanwhile are skipped; the first other failure stops it. */
static int pin_prefix(struct ctl *c, const char *prefix, bool pin)
{
	uint64_t n = 0, bytes = 0;
	char *start = NULL, sz[32];
	int r = EX_OK;

	for (;;) {
		struct kvc_list l;
		bool more;

		memset(&l, 0, sizeof(l));
		r = kvc_list(c->kvc, prefix, NULL, start, 0, &l);
		if (r < 0) {
			r = fail_kvc(c, prefix, r);
			break;
		}
		for (size_t i = 0; i < l.n_entries && r >= 0; i++) {
			struct kvc_entry e;

			r = kvc_pin(c->kvc, l.entries[i].key, l.entries[i].keylen, pin, &e);
			if (r == -ENOENT) { /* deleted since the listing */
				r = 0;
				continue;
			}
			if (r == 0) {
				n++;
				bytes += e.size;
			}
		}
		if (r < 0) {
			char done[64];

			kvc_list_free(&l);
			snprintf(done, sizeof(done), "%" PRIu64 " keys under it %s before this", n,
			         pin ? "pinned" : "unpinned");
			r = n ? fail(c, prefix, r, kvc_reason(r), done) : fail_kvc(c, prefix, r);
			break;
		}
		more = l.truncated && l.next_start_after &&
		       !(start && !strcmp(start, l.next_start_after));
		free(start);
		start = more ? strdup(l.next_start_after) : NULL;
		kvc_list_free(&l);
		if (more && !start) {
			r = fail(c, prefix, -ENOMEM, "out of memory", NULL);
			break;
		}
		if (!more) {
			r = EX_OK;
			break;
		}
	}
	free(start);
	if (r != EX_OK)
		return r;
	if (!n)
		return fail(c, prefix, -ENOENT, "no key starts with it", NULL);
	if (!c->quiet)
		printf("%s %" PRIu64 " keys (%s) under '%s'\n", pin ? "pinned" : "unpinned", n,
		       kv_fmt_size(bytes, sz, sizeof(sz)), prefix);
	return EX_OK;
}

static int pin_cmd(struct ctl *c, int argc, char **argv, bool pin)
{
	static const struct option lo[] = {
	        {"recursive", no_argument, NULL, 'r'},
	        {"help", no_argument, NULL, 'h'},
	        {0},
	};
	bool recursive = false;
	int opt, r, first = EX_OK;

	while ((opt = getopt_long(argc, argv, "+rh", lo, NULL)) != -1) {
		switch (opt) {
		case 'r':
			recursive = true;
			break;
		case 'h':
			fputs(cmd_help_text(c->cmd), stdout);
			return EX_OK;
		default:
			return usage_error(c->cmd, "bad option");
		}
	}
	if (optind >= argc)
		return usage_error(c->cmd, recursive ? "expected PREFIX..." : "expected KEY...");
	for (int i = optind; i < argc; i++)
		if ((r = check_key_flags(c, argv[i], recursive ? WIRE_KEY_PREFIX : 0)))
			return r;
	if ((r = ctl_connect(c, argv[optind], false)))
		return r;
	for (int i = optind; i < argc; i++) {
		if (recursive) {
			r = pin_prefix(c, argv[i], pin);
		} else {
			r = kvc_pin(c->kvc, argv[i], strlen(argv[i]), pin, NULL);
			if (r < 0)
				r = fail_kvc(c, argv[i], r);
		}
		if (r != EX_OK) {
			if (first == EX_OK)
				first = r;
			if (r == EX_UNREACH)
				break;
		}
	}
	return first;
}

static int cmd_pin(struct ctl *c, int argc, char **argv)
{
	return pin_cmd(c, argc, argv, true);
}

static int cmd_unpin(struct ctl *c, int argc, char **argv)
{
	return pin_cmd(c, argc, argv, false);
}

static int cmd_mv(struct ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
	        {"no-overwrite", no_argument, NULL, 'n'},
	        {"help", no_argument, NULL, 'h'},
	        {0},
	};
	bool no_overwrite = false;
	const char *src, *dst;
	char what[2 * KV_KEY_MAX + 2];
	int opt, r;

	while ((opt = getopt_long(argc, argv, "+nh", lo, NULL)) != -1) {
		switch (opt) {
		case 'n':
			no_overwrite = true;
			break;
		case 'h':
			fputs(cmd_help_text("mv"), stdout);
			return EX_OK;
		default:
			return usage_error(c->cmd, "bad option");
		}
	}
	if (argc - optind != 2)
		return usage_error(c->cmd, "expected SRC DST");
	src = argv[optind];
	dst = argv[optind + 1];
	if ((r = check_key(c, src)) || (r = check_key(c, dst)))
		return r;
	snprintf(what, sizeof(what), "%s %s", src, dst);
	if ((r = ctl_connect(c, what, false)))
		return r;
	r = kvc_rename(c->kvc, src, strlen(src), dst, strlen(dst), no_overwrite, NULL);
	if (r == -EEXIST)
		return fail(c, what, r, "destination exists", "drop -n to replace it");
	if (r < 0)
		return fail_kvc(c, what, r);
	return EX_OK;
}

static void print_counter(void *arg, const char *name, uint64_t value)
{
	(void)arg;
	printf("%s %" PRIu64 "\n", name, value);
}

static int cmd_stats(struct ctl *c, int argc, char **argv)
{
	int r;

	if ((r = simple_opts(c, argc, argv, "stats")))
		return r < 0 ? EX_OK : r;
	if (optind != argc)
		return usage_error(c->cmd, "unexpected argument '%s'", argv[optind]);
	if ((r = ctl_connect(c, NULL, false)))
		return r;
	r = kvc_stats(c->kvc, print_counter, NULL);
	if (r < 0)
		return fail_kvc(c, NULL, r);
	return EX_OK;
}

/* ------------------------------------------------------------------ */
/* ls                                                                  */

/* With -l a symbolic link (kvfs's) shows its target, as ls -l does. */
static void print_entry(struct ctl *c, const struct kvc_list_entry *le, bool lng)
{
	char ts[64], target[4096];
	ssize_t n = -1;

	if (!lng) {
		printf("%s\n", le->key);
		return;
	}
	if (le->e.type == KVC_TYPE_SYMLINK)
		n = kvc_get(c->kvc, le->key, le->keylen, 0, target, sizeof(target) - 1, NULL, NULL);
	fmt_mtime(le->e.mtime_ns, ts, sizeof(ts));
	printf("%12" PRIu64 " %10" PRIu64 " %-20s %04o %s", le->e.size, le->e.version, ts,
	       le->e.mode & 07777, le->key);
	if (n >= 0)
		printf(" -> %.*s", (int)n, target);
	printf("\n");
}

/* A common prefix; with -l its marker's version, mtime and mode (a key
 * equal to the prefix: what kvfs's mkdir stores), or dashes. */
static void print_prefix(const char *p, const struct kvc_entry *marker, bool lng)
{
	char ts[64];

	if (!lng) {
		printf("%s\n", p);
	} else if (marker->version) {
		fmt_mtime(marker->mtime_ns, ts, sizeof(ts));
		printf("%12s %10" PRIu64 " %-20s %04o %s\n", "DIR", marker->version, ts,
		       marker->mode & 07777, p);
	} else {
		printf("%12s %10s %-20s %4s %s\n", "DIR", "-", "-", "-", p);
	}
}

static int cmd_ls(struct ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
	        {"long", no_argument, NULL, 'l'},
	        {"directories", no_argument, NULL, 'd'},
	        {"help", no_argument, NULL, 'h'},
	        {0},
	};
	bool lng = false, dirs = false;
	const char *prefix = NULL;
	char *start = NULL;
	int opt, r;

	while ((opt = getopt_long(argc, argv, "+ldh", lo, NULL)) != -1) {
		switch (opt) {
		case 'l':
			lng = true;
			break;
		case 'd':
			dirs = true;
			break;
		case 'h':
			fputs(cmd_help_text("ls"), stdout);
			return EX_OK;
		default:
			return usage_error(c->cmd, "bad option");
		}
	}
	if (argc - optind > 1)
		return usage_error(c->cmd, "unexpected argument '%s'", argv[optind + 1]);
	if (argc - optind == 1 && argv[optind][0]) {
		prefix = argv[optind];
		if ((r = check_key_flags(c, prefix, WIRE_KEY_PREFIX)))
			return r;
	}
	if ((r = ctl_connect(c, prefix, false)))
		return r;
	for (;;) {
		struct kvc_list l;
		size_t i = 0, j = 0;

		memset(&l, 0, sizeof(l));
		r = kvc_list(c->kvc, prefix, dirs ? "/" : NULL, start, 0, &l);
		if (r < 0) {
			r = fail_kvc(c, prefix, r);
			break;
		}
		/* Both arrays are sorted: merge them so the output is too. */
		while (i < l.n_entries || j < l.n_prefixes) {
			if (j == l.n_prefixes ||
			    (i < l.n_entries && strcmp(l.entries[i].key, l.prefixes[j]) < 0))
				print_entry(c, &l.entries[i++], lng);
			else {
				print_prefix(l.prefixes[j], &l.prefix_e[j], lng);
				j++;
			}
		}
		if (!l.truncated) {
			kvc_list_free(&l);
			r = EX_OK;
			break;
		}
		if (!l.next_start_after || (start && !strcmp(start, l.next_start_after))) {
			kvc_list_free(&l);
			r = fail(c, prefix, -EIO,
			         "server said the listing is truncated but gave no way to continue",
			         "report this as a kv-server bug");
			break;
		}
		free(start);
		start = strdup(l.next_start_after);
		kvc_list_free(&l);
		if (!start) {
			r = fail(c, prefix, -ENOMEM, "out of memory", NULL);
			break;
		}
	}
	free(start);
	if (fflush(stdout) == EOF && r == EX_OK)
		r = EX_ERR;
	return r;
}

/* ------------------------------------------------------------------ */

struct command {
	const char *name;
	int (*fn)(struct ctl *c, int argc, char **argv);
};

static const struct command commands[] = {
        {"put", cmd_put},     {"get", cmd_get},   {"rm", cmd_rm},
        {"ls", cmd_ls},       {"stat", cmd_stat}, {"mv", cmd_mv},
        {"stats", cmd_stats}, {"pin", cmd_pin},   {"unpin", cmd_unpin},
};

static const struct topt_tool tool = {.prog = PROG, .usage = usage};

int main(int argc, char **argv)
{
	static const struct option lo[] = {
	        TOPT_CLIENT_LONG,
	        {"quiet", no_argument, NULL, 'q'},
	        {0},
	};
	struct ctl c = {0};
	const struct command *cmd = NULL;
	int opt, r;

	kv_log_init(PROG);
	/* Library chatter stays hidden unless KVFS_LOG asks for it. */
	if (!getenv("KVFS_LOG"))
		kv_log_level = KV_LOG_ERR;
	/* A closed stdout pipe or a dead server shows up as EPIPE, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	topt_client_init(&c.cli);
	c.cmd = PROG;

	while ((opt = getopt_long(argc, argv, "+" TOPT_CLIENT_SHORT "q", lo, NULL)) != -1) {
		r = topt_client_opt(&tool, &c.cli, opt, optarg);
		if (r < 0)
			return EX_USAGE;
		if (r == TOPT_EXIT)
			return EX_OK;
		if (opt == 'q')
			c.quiet = true;
	}
	if (optind >= argc) {
		fprintf(stderr, PROG ": missing command\n");
		usage(stderr);
		return EX_USAGE;
	}
	if (topt_client_check(&tool, &c.cli) < 0)
		return EX_USAGE;
	topt_client_kvc_opts(&c.cli, PROG, &c.o);

	if (!strcmp(argv[optind], "help")) {
		const char *t = optind + 1 < argc ? cmd_help_text(argv[optind + 1]) : NULL;

		if (optind + 1 < argc && !t)
			return usage_error(NULL, "unknown command '%s'", argv[optind + 1]);
		if (t)
			fputs(t, stdout);
		else
			usage(stdout);
		return EX_OK;
	}
	for (size_t i = 0; i < KV_ARRAY_SIZE(commands); i++)
		if (!strcmp(commands[i].name, argv[optind]))
			cmd = &commands[i];
	if (!cmd)
		return usage_error(NULL, "unknown command '%s'", argv[optind]);
	c.cmd = cmd->name;
	/* The command parses its own options from its name on. */
	argc -= optind;
	argv += optind;
	optind = 0; /* glibc: full re-initialisation, scanning starts at argv[1] */
	r = cmd->fn(&c, argc, argv);
	kvc_close(c.kvc);
	if (fflush(stdout) == EOF && r == EX_OK) {
		if (!c.quiet && errno != EPIPE)
			fprintf(stderr, PROG ": %s: cannot write stdout: %s\n", c.cmd,
			        strerror(errno));
		r = EX_ERR;
	}
	return r;
}
