/* SPDX-License-Identifier: MIT */
/*
 * A kvfs mount across a network that fails: kv-server inside the namespace
 * of test/netns-wrap, kvfs mounted here against it over tcp.  The link is
 * cut during a cold read of a large file and during a write; the reader and
 * the writer must fail within the mount's timeout (plus slack), no process
 * may stay in D state, and once the link heals the same mount reads and
 * writes again, every file whole.
 */
#include "../fuse/fuse_env.h"
#include "net_env.h"

#define MNT_TIMEOUT 3000 /* ms: -o timeout= of the mount */
#define BIG         (64 * 1024 * 1024)

static void start(void)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	const char *ns = net_ns();

	memset(&E, 0, sizeof(E));
	snprintf(E.dir, sizeof(E.dir), "%s/kvfs-net-XXXXXX", tmp);
	cr_assert_not_null(mkdtemp(E.dir));
	E.port = 22000 + (int)(getpid() % 20000);
	snprintf(E.server, sizeof(E.server), "%s:%d", getenv("KVFS_PEER_ADDR"), E.port);
	snprintf(E.srv_wrap, sizeof(E.srv_wrap), "ip netns exec %s ", ns);
	setenv("KVFS_PROVIDER", "tcp", 1);
	setenv("KVFS_TIMEOUT", "3000", 1);
	env_server_start(NULL);
	env_mount(NULL);
}

static void stop(void)
{
	net_restore(); /* first: unmounting needs no server, but the server's exit does */
	env_stop();
}

TestSuite(net_kvfs, .init = start, .fini = stop, .timeout = 180);

/* Process state letter of @pid from /proc ('?' when gone). */
static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return '?';
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* the command name may hold spaces */
	return p && p[1] == ' ' ? p[2] : '?';
}

/* Read @path to the end in 1 MiB pieces and compare with @want (same
 * length); exit 0 when everything matched, else the errno of the failed
 * read (or 200 for wrong bytes, 201 for a short file).  After the first
 * piece it writes one byte to @ready. */
static void reader_main(const char *path, const char *want, int ready)
{
	static uint8_t a[1 << 20], b[1 << 20];
	int fd = open(path, O_RDONLY), wfd = open(want, O_RDONLY);
	bool told = false;

	if (fd < 0 || wfd < 0)
		_exit(errno ? errno : 1);
	for (;;) {
		ssize_t n = read(fd, a, sizeof(a)), m;

		if (n < 0)
			_exit(errno);
		m = n ? read(wfd, b, (size_t)n) : read(wfd, b, 1);
		if (n == 0)
			_exit(m == 0 ? 0 : 201);
		if (m != n || memcmp(a, b, (size_t)n))
			_exit(200);
		if (!told) {
			told = write(ready, "r", 1) == 1;
			close(ready);
		}
	}
}

struct waited {
	int status;    /* exit status, -1 = killed after @bound_ms */
	uint64_t ms;   /* from @t0 to its exit */
	char last;     /* its state when last seen alive */
	uint64_t d_ms; /* time seen in D state: waiting for a FUSE answer is
	                * killable but shows as D, a hang would stay there */
};

/* Wait for @pid (bounded by @bound_ms from @t0), sampling its state. */
static struct waited wait_bounded(pid_t pid, uint64_t t0, uint64_t bound_ms)
{
	struct waited w = {.status = -1, .last = '?'};

	for (;;) {
		int st;
		char s;

		if (waitpid(pid, &st, WNOHANG) == pid) {
			w.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			w.ms = env_ms() - t0;
			return w;
		}
		s = proc_state(pid);
		if (s != '?')
			w.last = s;
		w.d_ms += s == 'D' ? 50 : 0;
		if (env_ms() - t0 > bound_ms) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			w.ms = env_ms() - t0;
			return w;
		}
		usleep(50000);
	}
}

static pid_t reader_start(const char *path, const char *want)
{
	int p[2];
	pid_t pid;
	char c;

	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(p[0]);
		reader_main(path, want, p[1]);
	}
	close(p[1]);
	cr_assert_eq(read(p[0], &c, 1), 1, "the reader did not get its first MiB");
	close(p[0]);
	return pid;
}

Test(net_kvfs, cut_during_cold_read_then_heal)
{
	struct waited w;
	uint64_t t0, bound = 2 * MNT_TIMEOUT + NET_SLACK_MS;
	pid_t pid;
	int r = -1;

	/* Across the namespaces: cp in, read back. */
	make_file(sp("big"), BIG, 5);
	cr_assert_eq(sh("cp %s %s", sp("big"), mp(0, "big")), 0, "cp into the mount");
	cr_assert_eq(sh("cmp %s %s", sp("big"), mp(0, "big")), 0, "cmp through the mount");
	/* A fresh mount: nothing of the file in its page cache. */
	env_umount(0);
	E.nmounts = 0;
	env_mount(NULL);

	/* 100 Mbit/s: the 64 MiB read takes about 5 s, so the cut meets it. */
	cr_assert_eq(net_sh("rate", "100000"), 0, "scripts/netns rate failed (tc tbf)");
	pid = reader_start(mp(0, "big"), sp("big"));
	usleep(500000);
	t0 = env_ms();
	net_cut();
	w = wait_bounded(pid, t0, 60000);
	cr_log_info("cold read cut: reader %s %d after %llu ms (mount timeout %d ms), about %llu "
	            "ms of it in D state (waiting for kvfs)",
	            w.status < 0 ? "killed," : "exit", w.status, (unsigned long long)w.ms,
	            MNT_TIMEOUT, (unsigned long long)w.d_ms);
	cr_assert_geq(w.status, 0, "the reader hung for 60 s (state %c)", w.last);
	cr_expect(w.status == EIO || w.status == ETIMEDOUT || w.status == ENOTCONN,
	          "the reader ended with %d (%s), not EIO", w.status,
	          w.status == 0 ? "read everything" : strerror(w.status));
	cr_expect_leq(w.ms, bound, "the reader failed after %llu ms (bound %llu)",
	              (unsigned long long)w.ms, (unsigned long long)bound);
	cr_assert_neq(sh("ps -eo stat,cmd | grep '^D' | grep -q %s", E.mnt[0]), 0,
	              "a process is in D state on the mount");

	/* Heal: the same mount reads again, without remounting. */
	net_restore();
	t0 = env_ms();
	for (int i = 0; i < 10 && r != 0; i++)
		r = sh("cmp %s %s", sp("big"), mp(0, "big"));
	cr_assert_eq(r, 0, "cmp after the link healed");
	cr_log_info("after heal: the file read back whole after %llu ms",
	            (unsigned long long)(env_ms() - t0));
}

Test(net_kvfs, cut_during_write_then_heal)
{
	uint64_t t0, el, bound = MNT_TIMEOUT + NET_SLACK_MS;
	static uint8_t buf[1 << 20];
	FILE *f;
	int fd, r = -1, go[2], st;
	pid_t cutter;

	make_file(sp("old"), 16 * 1024 * 1024, 6);
	make_file(sp("new"), 16 * 1024 * 1024, 7);
	cr_assert_eq(sh("cp %s %s", sp("old"), mp(0, "w")), 0);
	/* Stage the new contents (kvfs keeps them until close), then cut:
	 * close() stores the file with one PUT, which must fail in time.  The
	 * cut comes from a process forked before the open: closing any copy of
	 * the descriptor (a fork's exec does) would store the file early. */
	cr_assert_eq(pipe(go), 0);
	cutter = fork();
	cr_assert_geq(cutter, 0);
	if (cutter == 0) {
		char c;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(go[1]);
		_exit(read(go[0], &c, 1) == 1 ? net_sh("cut", NULL) : 1);
	}
	close(go[0]);
	fd = open(mp(0, "w"), O_WRONLY | O_TRUNC);
	cr_assert_geq(fd, 0, "open: %s", strerror(errno));
	f = fopen(sp("new"), "r");
	cr_assert_not_null(f);
	for (size_t n; (n = fread(buf, 1, sizeof(buf), f)) > 0;)
		cr_assert_eq(write(fd, buf, n), (ssize_t)n, "staging write: %s", strerror(errno));
	fclose(f);
	cr_assert_eq(write(go[1], "c", 1), 1);
	cr_assert_eq(waitpid(cutter, &st, 0), cutter);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "scripts/netns cut failed");
	close(go[1]);
	t0 = env_ms();
	r = close(fd);
	el = env_ms() - t0;
	cr_log_info("write cut: close() %s after %llu ms", r ? strerror(errno) : "succeeded",
	            (unsigned long long)el);
	cr_expect_eq(r, -1, "close() over a cut link succeeded");
	if (r)
		cr_expect(errno == EIO || errno == ETIMEDOUT || errno == ENOTCONN,
		          "close(): %s, not EIO", strerror(errno));
	cr_expect_leq(el, bound, "close() took %llu ms (bound %llu)", (unsigned long long)el,
	              (unsigned long long)bound);
	cr_assert_neq(sh("ps -eo stat,cmd | grep '^D' | grep -q %s", E.mnt[0]), 0,
	              "a process is in D state on the mount");
	net_heal();
	/* The failed PUT left the old value or the new one, whole. */
	r = -1;
	for (int i = 0; i < 10 && r != 0 && r != 1; i++)
		r = sh("cmp -s %s %s", sp("old"), mp(0, "w"));
	cr_assert(r == 0 || sh("cmp -s %s %s", sp("new"), mp(0, "w")) == 0,
	          "after the cut 'w' is neither the old nor the new file");
	cr_log_info("after heal: 'w' holds the %s contents", r == 0 ? "old" : "new");
	cr_assert_eq(sh("cp %s %s", sp("new"), mp(0, "w")), 0, "cp after the link healed");
	cr_assert_eq(sh("cmp %s %s", sp("new"), mp(0, "w")), 0);
}
