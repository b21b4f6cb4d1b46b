/* SPDX-License-Identifier: MIT */
/*
 * Watchdog linked into every Criterion test binary (test/meson.build adds it to
 * criterion_dep): a test binary that wedges says where, instead of being
 * killed silently by meson's timeout.
 *
 * Criterion 2.4.1 (Debian 12) runs each test in a worker process: its runner
 * forks, the child (BoxFort's code, still a copy of the runner) closes file
 * descriptors, stops for the runner to write /dev/shm/bxfi_<pid>, then
 * re-executes the binary as "boxfort-worker"; runner and workers talk over a
 * nanomsg socket, /tmp/criterion_<runner pid>.sock.
 *
 * Why a runner wedges: BoxFort calls malloc() between fork() and exec(), and
 * the runner has other threads that allocate (nanomsg's I/O thread, BoxFort's
 * child reaper). GCC 12's AddressSanitizer does not take its allocator locks
 * around fork() (LLVM does since release 18), so a fork made while another
 * thread held one of them leaves the child waiting forever for a lock that no
 * thread of its own will release. The runner then waits for that child in
 * BoxFort's handshake, where no Criterion timeout is armed yet: the binary
 * hangs until meson kills it. Rare (the first report was one run in 600), and
 * only under ASan.
 *
 * What the watchdog does:
 *  - Every process of the binary prints where it is on WD_DUMP_SIGNAL: the test
 *    it runs, or "between fork() and exec()", or "runner", then the stack of
 *    each of its threads (glibc's raw one, then ASan's symbolized one in
 *    sanitizer builds). Dumps are serialized across processes with flock() on
 *    the executable, so they do not interleave.
 *  - In the runner, a thread started at PRE_ALL looks once a second for a child
 *    that has not reached exec() after WD_SPAWN_LIMIT_S seconds. It reports
 *    it with the stacks, removes the runner's socket and shm files, and runs
 *    the whole binary once more (execve() of the runner with
 *    KVFS_CR_WEDGE_RETRIED=1: the wedge is the allocator's, not a test's);
 *    a second wedge fails the binary (exit 1), long before meson's timeout.
 *  - On SIGTERM (meson's timeout) or SIGINT the runner prints the same report,
 *    naming the tests still running and their stacks, before it exits.
 *  - A worker started with KVFS_CR_TEST_TIMEOUT=N in its environment (the unit
 *    suite sets it, test/unit/meson.build) prints its test's name and stacks
 *    after N seconds and aborts: Criterion reports that test as crashed, by
 *    name, and runs the others.
 *
 * Threads and signals: the watchdog thread blocks every signal and allocates
 * nothing (a lock it held while the runner forks would be the same hazard).
 * Signal handlers use write(), open(), flock(), kill(), backtrace_symbols_fd()
 * and snprintf() into stack buffers.
 */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <dirent.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Present only in sanitizer builds. */
extern void __sanitizer_print_stack_trace(void) __attribute__((weak));

#define WD_DUMP_SIGNAL SIGUSR2
/* A spawn takes milliseconds, a second or two under heavy load; meson's
 * default timeout is 30 s. */
#define WD_SPAWN_LIMIT_S 10
#define WD_MAX_CHILDREN  256

static const char *wd_prog = "criterion test";
static char wd_exe[256]; /* the binary's path, for addr2line */
/* The runner's command line and environment for its one retry after a
 * child stuck between fork() and exec() (wd_retry()): read at start, since
 * the watchdog thread allocates nothing. */
static char wd_cmdline[4096];
static char *wd_argv[64];
static char *wd_envp[512];
static char wd_retry_env[] = "KVFS_CR_WEDGE_RETRIED=1";
extern char **environ;
static pid_t wd_runner_pid; /* the runner's pid, set at PRE_ALL; 0 in a worker */
static int wd_pipe[2] = {-1, -1};
static unsigned wd_test_timeout;
/* Set by a dump request that must be over within meson's 0.5 s between SIGTERM
 * and SIGKILL: glibc's raw stacks only, not ASan's slower symbolized ones. */
static volatile sig_atomic_t wd_quick;

/* Formats into a stack buffer and writes it to stderr with one write(). */
__attribute__((format(printf, 1, 2))) static void wd_say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	if (write(STDERR_FILENO, buf, (size_t)n) < 0)
		return;
}

/* Reads a small file (of /proc) into @buf, NUL-terminated; returns its length
 * or -errno. */
static ssize_t wd_read_file(const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return n;
}

/* The lock that keeps the dumps of all processes of the binary apart: flock()
 * on the executable, which every process of it can open. Returns the fd
 * holding it, -2 if @nonblock and another holds it, or -1 (then the dump goes
 * unlocked). */
static int wd_print_lock(int nonblock)
{
	int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	while (flock(fd, LOCK_EX | (nonblock ? LOCK_NB : 0)) < 0) {
		if (errno != EINTR) {
			int busy = errno == EWOULDBLOCK;

			close(fd);
			return busy ? -2 : -1;
		}
	}
	return fd;
}

static void wd_where(char *buf, size_t len)
{
	const struct criterion_test *t = criterion_current_test;

	if (t)
		snprintf(buf, len, "in test %s::%s", t->category, t->name);
	else if (wd_runner_pid && getpid() != wd_runner_pid)
		snprintf(buf, len,
		         "a worker between fork() and exec(), still a copy of the runner");
	else if (wd_runner_pid)
		snprintf(buf, len, "the Criterion runner");
	else
		snprintf(buf, len, "a worker whose test has not started");
}

static void wd_print_stack(int sig)
{
	void *pc[64];
	char where[192];
	int n, lock = wd_print_lock(0);

	wd_where(where, sizeof(where));
	wd_say("kvfs-watchdog: %s: pid %d thread %ld (signal %d), %s; stack:\n", wd_prog,
	       (int)getpid(), (long)syscall(SYS_gettid), sig, where);
	n = backtrace(pc, 64);
	backtrace_symbols_fd(pc, n, STDERR_FILENO);
	if (__sanitizer_print_stack_trace && !wd_quick)
		__sanitizer_print_stack_trace();
	if (lock >= 0)
		close(lock);
}

/* Sends @sig to every other thread of this process. */
static void wd_signal_threads(int sig)
{
	char buf[2048];
	long self = syscall(SYS_gettid);
	int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return;
	for (;;) {
		long n = syscall(SYS_getdents64, fd, buf, sizeof(buf));

		if (n <= 0)
			break;
		for (long off = 0; off < n;) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);
			long tid = strtol(d->d_name, NULL, 10);

			off += d->d_reclen;
			if (tid > 0 && tid != self)
				syscall(SYS_tgkill, (long)getpid(), tid, sig);
		}
	}
	close(fd);
}

/* WD_DUMP_SIGNAL. Queued to a process by the runner's watchdog, with 1 for a
 * quick dump: the thread that takes it passes it on to the other threads, each
 * prints its own stack. */
static void wd_on_dump(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;

	(void)uc;
	if (si->si_code == SI_QUEUE || si->si_code == SI_USER) {
		wd_quick = si->si_code == SI_QUEUE && si->si_value.sival_int == 1;
		wd_signal_threads(sig);
	}
	wd_print_stack(sig);
	errno = saved;
}

static void wd_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000 * 1000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* SIGALRM in a worker: its test ran past KVFS_CR_TEST_TIMEOUT. */
static void wd_on_test_timeout(int sig)
{
	char where[192];
	int lock;

	wd_where(where, sizeof(where));
	wd_say("kvfs-watchdog: %s: FAIL: pid %d, %s, is still running after %u s "
	       "(KVFS_CR_TEST_TIMEOUT); its threads' stacks, then abort:\n",
	       wd_prog, (int)getpid(), where, wd_test_timeout);
	wd_print_stack(sig);
	wd_signal_threads(WD_DUMP_SIGNAL);
	/* Let the other threads print, for 2 s at most. */
	wd_sleep_ms(50);
	for (int waited = 50; (lock = wd_print_lock(1)) == -2 && waited < 2000; waited += 10)
		wd_sleep_ms(10);
	abort();
}

/* ---- runner ------------------------------------------------------------ */

/* Fills @out with the runner's live children (it forks its workers from its
 * main thread); returns how many. */
static int wd_children(pid_t *out, int max)
{
	char path[64], buf[4096], *p, *end;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)wd_runner_pid,
	         (int)wd_runner_pid);
	if (wd_read_file(path, buf, sizeof(buf)) >= 0) {
		for (p = buf; n < max; p = end) {
			long pid = strtol(p, &end, 10);

			if (end == p)
				break;
			out[n++] = (pid_t)pid;
		}
		return n;
	}

	/* A kernel without CONFIG_PROC_CHILDREN: every /proc/<pid>/stat. */
	int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	for (;;) {
		long len = syscall(SYS_getdents64, fd, buf, sizeof(buf));

		if (len <= 0)
			break;
		for (long off = 0; off < len && n < max;) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);
			long pid = strtol(d->d_name, &end, 10);
			char st[512], *q;
			int ppid;

			off += d->d_reclen;
			if (pid <= 0 || *end)
				continue;
			snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
			if (wd_read_file(path, st, sizeof(st)) < 0)
				continue;
			q = strrchr(st, ')');
			if (q && sscanf(q + 2, "%*c %d", &ppid) == 1 && ppid == (int)wd_runner_pid)
				out[n++] = (pid_t)pid;
		}
	}
	close(fd);
	return n;
}

struct wd_child {
	pid_t pid;
	char state; /* of /proc/<pid>/stat */
	int execed; /* runs the worker image ("boxfort-worker") */
	double age; /* seconds since its fork */
	char wchan[64];
};

static int wd_inspect(pid_t pid, struct wd_child *c)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;
	struct timespec now;
	long hz = sysconf(_SC_CLK_TCK);

	c->pid = pid;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (wd_read_file(path, buf, sizeof(buf)) < 0)
		return -ESRCH;
	p = strrchr(buf, ')');
	/* state, then field 22: start time in clock ticks after boot */
	if (!p || sscanf(p + 2,
	                 "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
	                 "%*d %*d %*d %llu",
	                 &c->state, &start) != 2)
		return -EPROTO;
	clock_gettime(CLOCK_BOOTTIME, &now);
	c->age = (double)now.tv_sec + now.tv_nsec / 1e9 -
	         (double)start / (double)(hz > 0 ? hz : 100);

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	c->execed = wd_read_file(path, buf, sizeof(buf)) > 0 && !strcmp(buf, "boxfort-worker");

	snprintf(path, sizeof(path), "/proc/%d/wchan", (int)pid);
	if (wd_read_file(path, c->wchan, sizeof(c->wchan)) <= 0)
		snprintf(c->wchan, sizeof(c->wchan), "-");
	return 0;
}

/* Asks @pid (or the runner's main thread, pid 0) for its stacks and waits up
 * to @ms for that dump to be over. */
static void wd_dump_one(pid_t pid, long ms)
{
	int lock;

	if (pid)
		sigqueue(pid, WD_DUMP_SIGNAL, (union sigval){.sival_int = wd_quick});
	else
		syscall(SYS_tgkill, (long)wd_runner_pid, (long)wd_runner_pid, WD_DUMP_SIGNAL);
	/* Give it time to take the print lock, then wait for it to let go. */
	wd_sleep_ms(ms < 100 ? ms / 2 : 50);
	for (long waited = 50; waited < ms; waited += 10) {
		lock = wd_print_lock(1);
		if (lock >= 0) {
			close(lock);
			return;
		}
		if (lock == -1)
			return;
		wd_sleep_ms(10);
	}
}

/* Says what each child is doing and has each print its stacks (@first, the
 * stuck one, first), removes the files a killed run leaves, kills the children
 * and exits. @ms is the time it may take for the dumps. Watchdog thread. */
__attribute__((noreturn)) static void wd_report_and_exit(int status, const char *why, pid_t first,
                                                         long ms)
{
	pid_t kids[WD_MAX_CHILDREN];
	struct wd_child c[WD_MAX_CHILDREN];
	int n = wd_children(kids, WD_MAX_CHILDREN), m = 0, lock;
	char path[64];

	wd_say("kvfs-watchdog: %s (runner pid %d): %s\n", wd_prog, (int)wd_runner_pid, why);
	for (int i = 0; i < n; i++) {
		if (wd_inspect(kids[i], &c[m]) < 0)
			continue;
		wd_say("kvfs-watchdog:   pid %d: %s, state %c, in %s, %.1f s old\n", (int)kids[i],
		       c[m].execed ? "worker" : "not yet a worker (between fork() and exec())",
		       c[m].state, c[m].wchan, c[m].age);
		m++;
	}
	if (wd_quick)
		wd_say("kvfs-watchdog: their stacks and the runner's, raw: a frame "
		       "\"boxfort-worker(+0x1234)\" is addr2line -f -i -e %s 0x1234\n",
		       wd_exe);
	else
		wd_say("kvfs-watchdog: their stacks%s, and the runner's:\n",
		       first ? " (the stuck one first)" : "");
	if (first)
		wd_dump_one(first, ms / 3);
	for (int i = 0; i < m; i++)
		if (c[i].pid != first && c[i].state != 'Z')
			wd_dump_one(c[i].pid, ms / (first ? 3 : 2) / (m > 0 ? m : 1));
	wd_dump_one(0, ms / 3);

	/* The last word comes after the dumps, unless one of them hangs. */
	for (int waited = 0; (lock = wd_print_lock(1)) == -2 && waited < (wd_quick ? 30 : 500);
	     waited += 10)
		wd_sleep_ms(10);
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "/dev/shm/bxfi_%d", (int)kids[i]);
		unlink(path);
		kill(kids[i], SIGKILL);
	}
	snprintf(path, sizeof(path), "/tmp/criterion_%d.sock", (int)wd_runner_pid);
	unlink(path);
	if (first && wd_argv[0] && !getenv("KVFS_CR_WEDGE_RETRIED")) {
		/* The wedge is the allocator's (see the top), not a test's:
		 * run the whole binary again, once.  Its result is the one. */
		wd_say("kvfs-watchdog: %s: running the whole binary once more "
		       "(KVFS_CR_WEDGE_RETRIED=1)\n",
		       wd_prog);
		execve(wd_exe, wd_argv, wd_envp);
	}
	wd_say("kvfs-watchdog: %s: FAIL (exit %d)\n", wd_prog, status);
	(void)lock;
	_exit(status);
}

/* A child stuck before exec() for WD_SPAWN_LIMIT_S, or 0. */
static pid_t wd_stuck_spawn(double *ret_age)
{
	pid_t kids[WD_MAX_CHILDREN];
	int n = wd_children(kids, WD_MAX_CHILDREN);

	for (int i = 0; i < n; i++) {
		struct wd_child c;

		if (wd_inspect(kids[i], &c) < 0 || c.execed || c.state == 'Z' || c.state == 'X')
			continue;
		if (c.age >= WD_SPAWN_LIMIT_S) {
			*ret_age = c.age;
			return kids[i];
		}
	}
	return 0;
}

static void *wd_thread(void *arg)
{
	char why[320];

	(void)arg;
	for (;;) {
		struct pollfd pfd = {.fd = wd_pipe[0], .events = POLLIN};
		unsigned char sig;
		double age = 0;
		pid_t stuck;

		if (poll(&pfd, 1, 1000) > 0 && read(wd_pipe[0], &sig, 1) == 1) {
			snprintf(why, sizeof(why),
			         "got %s; what each test process was doing follows",
			         sig == SIGINT ? "SIGINT" : "SIGTERM (meson's timeout?)");
			/* meson sends SIGKILL 0.5 s after SIGTERM */
			wd_quick = 1;
			wd_report_and_exit(sig == SIGINT ? 130 : 1, why, 0, 350);
		}
		stuck = wd_stuck_spawn(&age);
		if (stuck) {
			snprintf(why, sizeof(why),
			         "FAIL: child %d has been stuck for %.0f s between fork() and "
			         "exec() of "
			         "a Criterion worker, and the runner waits for it forever (under "
			         "ASan: "
			         "GCC 12's allocator is not fork-safe, see test/cr_watchdog.c)",
			         (int)stuck, age);
			wd_report_and_exit(1, why, stuck, 6000);
		}
	}
	return NULL;
}

/* SIGTERM or SIGINT in the runner: the watchdog thread reports and exits. */
static void wd_on_term(int sig)
{
	unsigned char b = (unsigned char)sig;

	if (getpid() != wd_runner_pid || write(wd_pipe[1], &b, 1) != 1) {
		signal(sig, SIG_DFL);
		raise(sig);
	}
}

/* Runs in the runner after criterion_initialize() has installed Criterion's
 * own SIGTERM handler, before the first worker is spawned. */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
	struct sigaction sa = {.sa_handler = wd_on_term, .sa_flags = SA_RESTART};
	sigset_t all, old;
	pthread_t t;

	(void)set;
	wd_runner_pid = getpid();
	if (pipe2(wd_pipe, O_CLOEXEC) < 0) {
		wd_say("kvfs-watchdog: %s: no watchdog: pipe: %s\n", wd_prog, strerror(errno));
		return;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (pthread_create(&t, NULL, wd_thread, NULL) != 0) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		wd_say("kvfs-watchdog: %s: no watchdog thread\n", wd_prog);
		return;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_detach(t);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}

/* Every process of the binary: runner, forked child, worker. */
__attribute__((constructor)) static void wd_init(void)
{
	struct sigaction sa = {.sa_sigaction = wd_on_dump, .sa_flags = SA_SIGINFO | SA_RESTART};
	const char *env = getenv("KVFS_CR_TEST_TIMEOUT");
	int worker = getenv("BXFI_MAP") != NULL; /* BoxFort's exec passes it */
	ssize_t n = readlink("/proc/self/exe", wd_exe, sizeof(wd_exe) - 1);
	void *pc[4];

	wd_prog = program_invocation_short_name;
	if (n > 0) {
		wd_exe[n] = '\0';
		/* A worker's argv[0] is "boxfort-worker": name it after the binary. */
		if (worker)
			wd_prog = strrchr(wd_exe, '/') ? strrchr(wd_exe, '/') + 1 : wd_exe;
	}
	if (!worker) { /* the runner: what a retry execs */
		int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
		ssize_t len = fd >= 0 ? read(fd, wd_cmdline, sizeof(wd_cmdline) - 1) : -1;
		size_t k = 0, e = 0;

		if (fd >= 0)
			close(fd);
		for (ssize_t i = 0;
		     len > 0 && i < len && k + 1 < sizeof(wd_argv) / sizeof(wd_argv[0]);
		     i += (ssize_t)strlen(wd_cmdline + i) + 1)
			wd_argv[k++] = wd_cmdline + i;
		if (len <= 0 || len >= (ssize_t)sizeof(wd_cmdline) - 1)
			wd_argv[0] = NULL; /* cut short: no retry */
		for (char **v = environ; v && *v && e + 2 < sizeof(wd_envp) / sizeof(wd_envp[0]);
		     v++)
			wd_envp[e++] = *v;
		wd_envp[e++] = wd_retry_env;
	}
	backtrace(pc, 4); /* loads libgcc_s now rather than in a signal handler */
	sigemptyset(&sa.sa_mask);
	sigaction(WD_DUMP_SIGNAL, &sa, NULL);

	if (worker && env && atoi(env) > 0) {
		wd_test_timeout = (unsigned)atoi(env);
		signal(SIGALRM, wd_on_test_timeout);
		alarm(wd_test_timeout);
	}
}
