/* SPDX-License-Identifier: MIT */
/*
 * file-bench: read every regular file under a directory with N threads, or
 * (--write) create N new files of one size in it.
 *
 * The reader for scripts/bench's many-small-files measurement.  Unlike
 * `find | xargs -P16 cat`, which forks a process per batch and maps a fresh
 * buffer per file, each thread here loops open / read until EOF / close
 * with one buffer, so what is measured is the file system, not process
 * start-up.  The same tool reads kvfs, sshfs and a tmpfs copy in one run.
 *
 * The file list is built first (a walk that is not timed), then the
 * threads take files from it in order.  Every file is read to its end; a
 * failure to open or read is counted and the first one is printed with its
 * path and errno.  Output is one line:
 *   files=N bytes=N seconds=S files_per_s=R errors=N
 * With --cpu PID[,PID...] the line also tells where the CPU time of the
 * timed part went: all CPUs busy and idle (/proc/stat), and each PID's user
 * plus system time (all its threads), in seconds ("-" for a process that
 * could not be read at the start or the end):
 *   cpu_busy_s=S cpu_idle_s=S cpu_pids_s=S[,S...]
 * With --write --files N --size SIZE the threads instead take the names
 * DIR/f0000000 .. DIR/f<N-1> in order and each one creates its file
 * (O_CREAT | O_EXCL: the files must be new), writes SIZE bytes in writes of
 * --buf bytes and closes it; a failed open, write or close (a network file
 * system reports at close what it could not store) is counted as above.
 * The line is the same, bytes counting the bytes written.
 * Exit status: 0 if every file was read (written), 1 if any failed, 2 on
 * bad usage.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool_opts.h"

#define PROG "file-bench"

struct list {
	char **paths; /* owned, each malloc'd */
	size_t n;
	size_t cap;
};

static struct list files;
static atomic_size_t next_file;
static atomic_uint_fast64_t total_bytes;
static atomic_uint_fast64_t errors;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t buf_size = 128 * 1024;
/* --write: make nwrite files of write_size bytes under write_dir */
static const char *write_dir;
static size_t nwrite;
static uint64_t write_size = 4096;

#define CPU_PIDS_MAX 8

/* CPU ticks at one moment: all CPUs busy (user, nice, system, irq, softirq;
 * not steal) and idle (idle, iowait), and each watched process's
 * (CPU_PID_GONE when it could not be read). */
#define CPU_PID_GONE ULLONG_MAX
struct cpu_snap {
	unsigned long long busy, idle;
	unsigned long long pid[CPU_PIDS_MAX];
};

static void cpu_snap(struct cpu_snap *s, const int *pids, size_t npids)
{
	unsigned long long v[8] = {0};
	FILE *f = fopen("/proc/stat", "r");

	if (f) {
		if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
		           &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
			memset(v, 0, sizeof(v));
		fclose(f);
	}
	s->busy = v[0] + v[1] + v[2] + v[5] + v[6];
	s->idle = v[3] + v[4];
	for (size_t i = 0; i < npids; i++) {
		char path[64], line[1024], *p;
		unsigned long long ut = 0, st = 0;

		s->pid[i] = CPU_PID_GONE;
		snprintf(path, sizeof(path), "/proc/%d/stat", pids[i]);
		f = fopen(path, "r");
		if (!f)
			continue;
		/* Fields after the command name, which may hold spaces: state is
		 * the 3rd field, utime and stime the 14th and 15th. */
		if (fgets(line, sizeof(line), f) && (p = strrchr(line, ')')) &&
		    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
		           &st) == 2)
			s->pid[i] = ut + st;
		fclose(f);
	}
}

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: %s [--threads N] [--buf BYTES] [--cpu PID[,PID...]] DIR\n"
	        "       %s --write --files N [--size SIZE] [--threads N] [--buf BYTES]\n"
	        "          [--cpu PID[,PID...]] DIR\n"
	        "Read every regular file under DIR to its end with N threads (default 16),\n"
	        "each thread with one buffer of BYTES (default 131072; or e.g. 64K), and print\n"
	        "  files=N bytes=N seconds=S files_per_s=R errors=N\n"
	        "The walk that lists the files is not timed.\n"
	        "With --write, create N new files DIR/f0000000 .. (DIR must exist, the files\n"
	        "must not: O_EXCL) with the threads, each file written with SIZE bytes\n"
	        "(default 4096; e.g. 4K, 1M) in writes of BYTES and closed; the same line\n"
	        "follows, bytes counting what was written.  With --cpu the line adds the\n"
	        "CPU-seconds of the timed part: all CPUs busy and idle, and each PID's\n"
	        "(up to %d; e.g. the file system daemon and its server; \"-\" when one\n"
	        "could not be read):\n"
	        "  cpu_busy_s=S cpu_idle_s=S cpu_pids_s=S[,S...]\n"
	        "Exit 0 when every file was read (written), 1 when any open, read, write or\n"
	        "close failed (the first failure is printed).  --help prints this, --version\n"
	        "the version.\n",
	        PROG, PROG, CPU_PIDS_MAX);
}

static int list_add(struct list *l, const char *path)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 1024;
		char **p = realloc(l->paths, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->paths = p;
		l->cap = cap;
	}
	l->paths[l->n] = strdup(path);
	if (!l->paths[l->n])
		return -ENOMEM;
	l->n++;
	return 0;
}

/* Depth-first walk of @dir; regular files go to the list. */
static int walk(const char *dir)
{
	struct dirent *de;
	char path[4096];
	int r = 0;
	DIR *d = opendir(dir);

	if (!d) {
		r = -errno;
		fprintf(stderr, "%s: cannot list %s: %s\n", PROG, dir, strerror(-r));
		return r;
	}
	while (r == 0 && (de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
		    sizeof(path)) {
			fprintf(stderr, "%s: path too long under %s\n", PROG, dir);
			r = -ENAMETOOLONG;
			break;
		}
		if (de->d_type == DT_REG) {
			r = list_add(&files, path);
		} else if (de->d_type == DT_DIR) {
			r = walk(path);
		} else if (de->d_type == DT_UNKNOWN && lstat(path, &st) == 0) {
			if (S_ISREG(st.st_mode))
				r = list_add(&files, path);
			else if (S_ISDIR(st.st_mode))
				r = walk(path);
		}
	}
	closedir(d);
	return r;
}

static void note_error(const char *what, const char *path, int err)
{
	if (atomic_fetch_add(&errors, 1) == 0) {
		pthread_mutex_lock(&err_lock);
		fprintf(stderr, "%s: cannot %s %s: %s\n", PROG, what, path, strerror(err));
		pthread_mutex_unlock(&err_lock);
	}
}

static void *reader(void *arg)
{
	char *buf = malloc(buf_size);
	uint64_t bytes = 0;

	(void)arg;
	if (!buf) {
		note_error("allocate a buffer for", "a reader", ENOMEM);
		return NULL;
	}
	for (;;) {
		size_t i = atomic_fetch_add(&next_file, 1);
		const char *path;
		ssize_t n;
		int fd;

		if (i >= files.n)
			break;
		path = files.paths[i];
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			note_error("open", path, errno);
			continue;
		}
		while ((n = read(fd, buf, buf_size)) > 0)
			bytes += (uint64_t)n;
		if (n < 0)
			note_error("read", path, errno);
		close(fd);
	}
	atomic_fetch_add(&total_bytes, bytes);
	free(buf);
	return NULL;
}

/* --write: create, fill and close files until none are left. */
static void *writer(void *arg)
{
	char *buf = malloc(buf_size), path[4096];
	uint64_t bytes = 0;

	(void)arg;
	if (!buf) {
		note_error("allocate a buffer for", "a writer", ENOMEM);
		return NULL;
	}
	for (size_t i = 0; i < buf_size; i++)
		buf[i] = (char)(i * 131u + 7u);
	for (;;) {
		size_t i = atomic_fetch_add(&next_file, 1);
		uint64_t left = write_size;
		int fd;

		if (i >= nwrite)
			break;
		snprintf(path, sizeof(path), "%s/f%07zu", write_dir, i);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0) {
			note_error("create", path, errno);
			continue;
		}
		while (left) {
			ssize_t n = write(fd, buf, left < buf_size ? (size_t)left : buf_size);

			if (n <= 0) {
				note_error("write", path, n < 0 ? errno : EIO);
				break;
			}
			left -= (uint64_t)n;
			bytes += (uint64_t)n;
		}
		if (close(fd) < 0 && !left)
			note_error("close", path, errno);
	}
	atomic_fetch_add(&total_bytes, bytes);
	free(buf);
	return NULL;
}

static const struct topt_tool tool = {.prog = PROG, .usage = usage};

/* Append --cpu PID[,PID...] to the *@n entries of @pids (CPU_PIDS_MAX at
 * most); 0 or -EINVAL. */
static int add_pids(const char *arg, int *pids, size_t *n)
{
	const char *s = arg;
	char *end;

	while (*s) {
		long v = strtol(s, &end, 10);

		if (end == s || v <= 0 || v > INT32_MAX || *n == CPU_PIDS_MAX ||
		    (*end && *end != ','))
			return -EINVAL;
		pids[(*n)++] = (int)v;
		s = *end ? end + 1 : end;
	}
	return 0;
}

int main(int argc, char **argv)
{
	enum { O_THREADS = 256, O_BUF, O_CPU, O_WRITE, O_FILES, O_SIZE };
	static const struct option lo[] = {
	        {"threads", required_argument, NULL, O_THREADS},
	        {"buf", required_argument, NULL, O_BUF},
	        {"cpu", required_argument, NULL, O_CPU},
	        {"write", no_argument, NULL, O_WRITE},
	        {"files", required_argument, NULL, O_FILES},
	        {"size", required_argument, NULL, O_SIZE},
	        {"help", no_argument, NULL, 'h'},
	        {"version", no_argument, NULL, 'V'},
	        {0},
	};
	uint64_t v;
	int opt;
	size_t nthreads = 16;
	const char *dir = NULL;
	pthread_t *tids;
	struct timespec t0, t1;
	struct cpu_snap c0, c1;
	int pids[CPU_PIDS_MAX];
	size_t npids = 0;
	bool cpu = false, wr = false;
	size_t nfiles = 0;
	double secs;
	size_t started = 0;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hV", lo, NULL)) != -1) {
		if (topt_std_opt(&tool, opt))
			return 0;
		switch (opt) {
		case O_THREADS:
			if (topt_parse_uint(optarg, 1, 1024, &v)) {
				fprintf(stderr, "%s: --threads wants 1..1024, not %s\n", PROG,
				        optarg);
				return 2;
			}
			nthreads = (size_t)v;
			break;
		case O_BUF:
			if (topt_parse_size(optarg, 1, (size_t)1 << 30, &v)) {
				fprintf(stderr, "%s: --buf wants 1..1073741824 bytes, not %s\n",
				        PROG, optarg);
				return 2;
			}
			buf_size = (size_t)v;
			break;
		case O_CPU:
			cpu = true;
			if (add_pids(optarg, pids, &npids)) {
				fprintf(stderr,
				        "%s: --cpu wants up to %d process IDs separated by "
				        "commas, not %s\n",
				        PROG, CPU_PIDS_MAX, optarg);
				return 2;
			}
			break;
		case O_WRITE:
			wr = true;
			break;
		case O_FILES:
			if (topt_parse_uint(optarg, 1, 100000000, &v)) {
				fprintf(stderr, "%s: --files wants 1..100000000, not %s\n", PROG,
				        optarg);
				return 2;
			}
			nwrite = (size_t)v;
			break;
		case O_SIZE:
			if (topt_parse_size(optarg, 0, (uint64_t)1 << 40, &v)) {
				fprintf(stderr, "%s: --size wants 0..1T bytes, not %s\n", PROG,
				        optarg);
				return 2;
			}
			write_size = v;
			break;
		default:
			fprintf(stderr, "%s: unexpected argument %s (see --help)\n", PROG,
			        argv[optind - 1]);
			return 2;
		}
	}
	if (argc - optind > 1) {
		fprintf(stderr, "%s: unexpected argument %s (see --help)\n", PROG,
		        argv[optind + 1]);
		return 2;
	}
	if (optind == argc) {
		usage(stderr);
		return 2;
	}
	dir = argv[optind];
	if (wr != (nwrite > 0)) {
		fprintf(stderr, "%s: --write and --files N go together (see --help)\n", PROG);
		return 2;
	}
	if (wr) {
		struct stat st;

		if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
			fprintf(stderr, "%s: %s is not a directory to write in (make it first)\n",
			        PROG, dir);
			return 1;
		}
		write_dir = dir;
		nfiles = nwrite;
	} else {
		if (walk(dir))
			return 1;
		if (files.n == 0) {
			fprintf(stderr, "%s: no regular files under %s\n", PROG, dir);
			return 1;
		}
		nfiles = files.n;
	}
	tids = calloc(nthreads, sizeof(*tids));
	if (!tids) {
		fprintf(stderr, "%s: out of memory\n", PROG);
		return 1;
	}
	if (cpu)
		cpu_snap(&c0, pids, npids);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (; started < nthreads; started++) {
		int r = pthread_create(&tids[started], NULL, wr ? writer : reader, NULL);

		if (r) {
			fprintf(stderr, "%s: cannot start thread %zu: %s\n", PROG, started,
			        strerror(r));
			break;
		}
	}
	for (size_t i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (cpu)
		cpu_snap(&c1, pids, npids);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("files=%zu bytes=%llu seconds=%.3f files_per_s=%.0f errors=%llu", nfiles,
	       (unsigned long long)atomic_load(&total_bytes), secs, (double)nfiles / secs,
	       (unsigned long long)atomic_load(&errors));
	if (cpu) {
		double hz = (double)sysconf(_SC_CLK_TCK);

		printf(" cpu_busy_s=%.2f cpu_idle_s=%.2f cpu_pids_s=",
		       (double)(c1.busy - c0.busy) / hz, (double)(c1.idle - c0.idle) / hz);
		for (size_t i = 0; i < npids; i++) {
			if (c0.pid[i] == CPU_PID_GONE || c1.pid[i] == CPU_PID_GONE)
				printf("%s-", i ? "," : "");
			else
				printf("%s%.2f", i ? "," : "",
				       (double)(c1.pid[i] - c0.pid[i]) / hz);
		}
	}
	printf("\n");
	for (size_t i = 0; i < files.n; i++)
		free(files.paths[i]);
	free(files.paths);
	free(tids);
	return started == 0 || atomic_load(&errors) ? 1 : 0;
}
