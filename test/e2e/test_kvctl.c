/* SPDX-License-Identifier: MIT */
/*
 * kvctl and kv-bench against a real kv-server (tcp provider) on a unique
 * loopback port: what a shell script observes -- bytes, output lines, exit
 * status.  Every test starts its own server in .init and kills it by PID in
 * .fini (which also runs after a failed assertion); the server gets
 * PR_SET_PDEATHSIG so even a crashed test leaves nothing behind.
 *
 * Paths come from meson: KVCTL, KV_BENCH, KV_SERVER.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvfs/util.h"

#define SERVER_UP_MS 20000  /* bound on waiting for "listening on" */
#define CMD_LIMIT_MS 180000 /* bound on any one command */

static char tmpdir[PATH_MAX];
static char srv_log[PATH_MAX + 32];
static char addr[64];
static pid_t srv_pid = -1;

/* Output of one command. */
struct run {
	int status; /* exit code, or 128 + signal */
	char *out;  /* stdout, NUL-terminated (binary safe with outlen) */
	size_t outlen;
	char *err;   /* stderr */
	double secs; /* wall time */
};

static const char *env_path(const char *name)
{
	const char *p = getenv(name);

	cr_assert(p && *p, "%s is not set (run through meson test)", name);
	return p;
}

static char *tp(const char *name)
{
	static char bufs[8][PATH_MAX + 64];
	static int i;
	char *b = bufs[i++ % 8];

	snprintf(b, sizeof(bufs[0]), "%s/%s", tmpdir, name);
	return b;
}

static char *slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	if (ret_len)
		*ret_len = (size_t)n;
	return buf;
}

static void make_file(const char *path, size_t size, unsigned seed)
{
	FILE *f = fopen(path, "wb");
	uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
	char buf[65536];

	cr_assert_not_null(f, "create %s: %s", path, strerror(errno));
	while (size) {
		size_t n = KV_MIN(size, sizeof(buf));

		for (size_t i = 0; i < n; i++) {
			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			buf[i] = (char)(s >> 24);
		}
		cr_assert_eq(fwrite(buf, 1, n, f), n);
		size -= n;
	}
	cr_assert_eq(fclose(f), 0);
}

static void assert_same_file(const char *a, const char *b)
{
	size_t la, lb;
	char *da = slurp(a, &la), *db = slurp(b, &lb);

	cr_assert_eq(la, lb, "%s has %zu bytes, %s has %zu", a, la, b, lb);
	cr_assert(memcmp(da, db, la) == 0, "%s and %s differ", a, b);
	free(da);
	free(db);
}

/* ------------------------------------------------------------------ */
/* Processes                                                           */

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
	memset(r, 0, sizeof(*r));
}

/* Run argv with stdin from @in (NULL: /dev/null), stdout into @out_path
 * (NULL: captured), stderr captured.  Kills it after CMD_LIMIT_MS. */
static void run_argv(struct run *r, const char *in, const char *out_path, char *const argv[])
{
	const char *o = out_path ? out_path : tp(".stdout");
	uint64_t t0 = kv_now_ms();
	int st = 0;
	pid_t pid, w, parent;

	memset(r, 0, sizeof(*r));
	parent = getpid();
	pid = fork();
	cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
	if (pid == 0) {
		int fi = open(in ? in : "/dev/null", O_RDONLY);
		int fo = open(o, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int fe = open(tp(".stderr"), O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fi < 0 || fo < 0 || fe < 0)
			_exit(126);
		dup2(fi, 0);
		dup2(fo, 1);
		dup2(fe, 2);
		/* Die with the test; it may already be gone before prctl(). */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(125);
		execv(argv[0], argv);
		_exit(127);
	}
	for (;;) {
		w = waitpid(pid, &st, WNOHANG);
		if (w == pid)
			break;
		if (kv_now_ms() - t0 > CMD_LIMIT_MS) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			cr_log_error("%s %s: killed after %d ms", argv[0], argv[1] ? argv[1] : "",
			             CMD_LIMIT_MS);
			break;
		}
		usleep(2000);
	}
	r->secs = (double)(kv_now_ms() - t0) / 1000.0;
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	r->out = out_path ? strdup("") : slurp(o, &r->outlen);
	r->err = slurp(tp(".stderr"), NULL);
}

/* kvctl --server ADDR ARGS... (NULL-terminated) */
static void kvctl_in(struct run *r, const char *in, const char *out_path, ...)
{
	char *argv[32];
	int n = 0;
	va_list ap;

	argv[n++] = (char *)env_path("KVCTL");
	argv[n++] = "--server";
	argv[n++] = addr;
	argv[n++] = "--timeout";
	argv[n++] = "20000";
	va_start(ap, out_path);
	while (n < 31 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	run_argv(r, in, out_path, argv);
}

#define kvctl(r, ...) kvctl_in((r), NULL, NULL, __VA_ARGS__, (char *)NULL)

/* Exit status @want, or fail showing what the command printed. */
#define expect_status(r, want, what)                                                               \
	cr_assert_eq((r)->status, (want), "%s: exit %d, wanted %d; stderr: %s", (what),            \
	             (r)->status, (want), (r)->err)

/* kvctl ARGS... must exit 0 (@what names it when it does not). */
#define kvctl_ok(what, ...)                                                                        \
	do {                                                                                       \
		struct run r_;                                                                     \
		kvctl(&r_, __VA_ARGS__);                                                           \
		expect_status(&r_, 0, (what));                                                     \
		run_free(&r_);                                                                     \
	} while (0)

/* kv-server on a fresh port with @extra options (NULL-terminated, may be
 * NULL) after the suite's, which they override; the temp dir is made once. */
static void server_start_with(const char *const *extra)
{
	char tmpl[] = "/tmp/kvctl-e2e-XXXXXX";
	const char *bin = env_path("KV_SERVER");
	const char *argv[32] = {bin, "--provider", "tcp", "--memory", "256M", "--listen", addr};
	int n = 7;

	for (; extra && *extra && n < 31; extra++)
		argv[n++] = *extra;
	if (!tmpdir[0]) {
		cr_assert_not_null(mkdtemp(tmpl), "mkdtemp: %s", strerror(errno));
		snprintf(tmpdir, sizeof(tmpdir), "%s", tmpl);
	}
	snprintf(srv_log, sizeof(srv_log), "%s/server.log", tmpdir);
	for (int attempt = 0; attempt < 8; attempt++) {
		unsigned port = 30000 + ((unsigned)getpid() + (unsigned)attempt * 2311u) % 20000;
		uint64_t t0 = kv_now_ms();
		pid_t parent;
		int st;

		/* Created here, so it exists before we first read it. */
		int fd = open(srv_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		cr_assert_geq(fd, 0, "create %s: %s", srv_log, strerror(errno));
		snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
		parent = getpid();
		srv_pid = fork();
		cr_assert_neq(srv_pid, -1, "fork: %s", strerror(errno));
		if (srv_pid == 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			/* Die with the test; it may already be gone before prctl(). */
			if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
				_exit(125);
			execv(bin, (char *const *)argv);
			_exit(127);
		}
		close(fd);
		/* The log goes to a file, so the server never blocks on a full pipe. */
		while (kv_now_ms() - t0 < SERVER_UP_MS) {
			char *log = slurp(srv_log, NULL);
			bool up = strstr(log, "listening on") != NULL;

			free(log);
			if (up)
				return;
			if (waitpid(srv_pid, &st, WNOHANG) == srv_pid) {
				srv_pid = -1;
				break; /* port taken? try the next one */
			}
			usleep(20000);
		}
		if (srv_pid > 0) {
			char *log = slurp(srv_log, NULL);

			kill(srv_pid, SIGKILL);
			waitpid(srv_pid, &st, 0);
			srv_pid = -1;
			cr_assert_fail("kv-server did not say 'listening on' within %d ms: %s",
			               SERVER_UP_MS, log);
		}
	}
	cr_assert_fail("kv-server would not start on any of 8 ports: %s", slurp(srv_log, NULL));
}

static void server_start(void)
{
	server_start_with(NULL);
}

static void server_kill(void)
{
	uint64_t t0 = kv_now_ms();
	int st;

	if (srv_pid <= 0)
		return;
	kill(srv_pid, SIGCONT); /* in case a test stopped it */
	kill(srv_pid, SIGTERM);
	while (waitpid(srv_pid, &st, WNOHANG) != srv_pid) {
		if (kv_now_ms() - t0 > 5000) {
			kill(srv_pid, SIGKILL);
			waitpid(srv_pid, &st, 0);
			break;
		}
		usleep(10000);
	}
	srv_pid = -1;
}

static void server_stop(void)
{
	char cmd[PATH_MAX + 16];

	server_kill();
	if (tmpdir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			cr_log_warn("could not remove %s", tmpdir);
		tmpdir[0] = '\0';
	}
}

TestSuite(kvctl, .init = server_start, .fini = server_stop, .timeout = 300);

/* ------------------------------------------------------------------ */
/* put / get                                                           */

static void roundtrip_file(size_t size)
{
	struct run r;
	char key[64];

	snprintf(key, sizeof(key), "data/file-%zu", size);
	make_file(tp("in"), size, (unsigned)size + 1);
	kvctl_ok("put", "put", key, tp("in"));
	kvctl(&r, "get", key, tp("out"));
	expect_status(&r, 0, "get");
	cr_assert_eq(r.outlen, 0, "get to a file printed to stdout");
	run_free(&r);
	assert_same_file(tp("in"), tp("out"));
	kvctl(&r, "stat", key);
	expect_status(&r, 0, "stat");
	{
		char want[64];

		snprintf(want, sizeof(want), "\nsize %zu\n", size);
		cr_assert_not_null(strstr(r.out, want), "stat says: %s", r.out);
	}
	run_free(&r);
}

ParameterizedTestParameters(kvctl, put_get_file)
{
	static size_t sizes[] = {0, 1, 4096, 3 * 1024 * 1024 + 1, 64 * 1024 * 1024};

	return cr_make_param_array(size_t, sizes, sizeof(sizes) / sizeof(sizes[0]));
}

ParameterizedTest(size_t *size, kvctl, put_get_file)
{
	roundtrip_file(*size);
}

Test(kvctl, stdin_stdout_pipe)
{
	struct run r;

	make_file(tp("in"), 3 * 1024 * 1024 + 17, 9);
	kvctl_in(&r, tp("in"), NULL, "put", "piped", (char *)NULL);
	expect_status(&r, 0, "put from stdin");
	run_free(&r);
	kvctl_in(&r, tp("in"), NULL, "put", "piped2", "-", (char *)NULL);
	expect_status(&r, 0, "put -");
	run_free(&r);
	kvctl_in(&r, NULL, tp("out"), "get", "piped", (char *)NULL);
	expect_status(&r, 0, "get to stdout");
	run_free(&r);
	assert_same_file(tp("in"), tp("out"));
	kvctl_in(&r, NULL, tp("out2"), "get", "piped2", "-", (char *)NULL);
	expect_status(&r, 0, "get -");
	run_free(&r);
	assert_same_file(tp("in"), tp("out2"));
	/* through a real pipe, empty and small */
	{
		char cmd[4 * PATH_MAX];
		int st;

		snprintf(cmd, sizeof(cmd),
		         "printf 'hello\\n' | %s --server %s put hello && "
		         "[ \"$(%s --server %s get hello)\" = hello ] && "
		         "%s --server %s put empty < /dev/null && "
		         "[ $(%s --server %s get empty | wc -c) = 0 ]",
		         env_path("KVCTL"), addr, env_path("KVCTL"), addr, env_path("KVCTL"), addr,
		         env_path("KVCTL"), addr);
		st = system(cmd);
		cr_assert_eq(st, 0, "shell pipe round trip failed (%d)", st);
	}
}

Test(kvctl, put_no_overwrite_and_mode)
{
	struct run r;

	make_file(tp("in"), 100, 1);
	kvctl_ok("put -m", "put", "-m", "0600", "k", tp("in"));
	kvctl(&r, "stat", "k");
	expect_status(&r, 0, "stat");
	cr_assert_not_null(strstr(r.out, "\nmode 0600\n"), "stat: %s", r.out);
	run_free(&r);
	kvctl(&r, "put", "-n", "k", tp("in"));
	expect_status(&r, 4, "put -n on an existing key");
	cr_assert_not_null(strstr(r.err, "kvctl: put k: "), "message: %s", r.err);
	run_free(&r);
}

/* ------------------------------------------------------------------ */
/* ls                                                                  */

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

Test(kvctl, ls_plain_long_dirs)
{
	static const char *keys[] = {"a/1", "a/2", "b/x/1", "b/x/2", "c"};
	struct run r;

	make_file(tp("in"), 10, 3);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		kvctl(&r, "put", keys[i], tp("in"));
		expect_status(&r, 0, "put");
		run_free(&r);
	}
	kvctl(&r, "ls");
	expect_status(&r, 0, "ls");
	cr_assert_str_eq(r.out, "a/1\na/2\nb/x/1\nb/x/2\nc\n");
	run_free(&r);

	kvctl(&r, "ls", "a/");
	expect_status(&r, 0, "ls a/");
	cr_assert_str_eq(r.out, "a/1\na/2\n");
	run_free(&r);

	kvctl(&r, "ls", "-d");
	expect_status(&r, 0, "ls -d");
	cr_assert_str_eq(r.out, "a/\nb/\nc\n");
	run_free(&r);

	kvctl(&r, "ls", "-d", "b/");
	expect_status(&r, 0, "ls -d b/");
	cr_assert_str_eq(r.out, "b/x/\n");
	run_free(&r);

	kvctl(&r, "ls", "-l", "a/");
	expect_status(&r, 0, "ls -l");
	cr_assert_eq(count_lines(r.out), 2);
	{
		unsigned long long size, version;
		char mtime[64], mode[16], key[64];

		cr_assert_eq(sscanf(r.out, "%llu %llu %63s %15s %63s", &size, &version, mtime, mode,
		                    key),
		             5, "ls -l line: %s", r.out);
		cr_assert_eq(size, 10);
		cr_assert_gt(version, 0);
		cr_assert_str_eq(mode, "0644");
		cr_assert_str_eq(key, "a/1");
	}
	run_free(&r);

	kvctl(&r, "ls", "-l", "-d");
	expect_status(&r, 0, "ls -l -d");
	cr_assert_eq(count_lines(r.out), 3);
	cr_assert_not_null(strstr(r.out, "DIR"), "ls -l -d: %s", r.out);
	run_free(&r);

	/* a prefix that is also a key (kvfs's mkdir marker) shows that key's */
	make_file(tp("empty"), 0, 4);
	kvctl(&r, "put", "b/", tp("empty"));
	expect_status(&r, 0, "put b/");
	run_free(&r);
	kvctl(&r, "ls", "-l", "-d");
	expect_status(&r, 0, "ls -l -d with a marker");
	cr_assert_eq(count_lines(r.out), 3, "ls -l -d: %s", r.out);
	{
		unsigned long long version = 0;
		char what[16], mtime[64], mode[16], key[64];
		const char *line = strstr(r.out, "b/\n");

		cr_assert_not_null(line, "no b/ in: %s", r.out);
		while (line > r.out && line[-1] != '\n')
			line--;
		cr_assert_eq(
		        sscanf(line, "%15s %llu %63s %15s %63s", what, &version, mtime, mode, key),
		        5, "ls -l -d line of a marked prefix: %s", r.out);
		cr_assert_str_eq(what, "DIR");
		cr_assert_gt(version, 0);
		cr_assert_str_eq(mode, "0644");
		cr_assert_str_eq(key, "b/");
	}
	run_free(&r);

	kvctl(&r, "ls", "nothing-here/");
	expect_status(&r, 0, "ls of an empty prefix");
	cr_assert_str_eq(r.out, "");
	run_free(&r);
}

Test(kvctl, ls_pages_through_many_keys)
{
	char *argv[] = {(char *)env_path("KV_BENCH"),
	                "--server",
	                addr,
	                "--keys",
	                "2500",
	                "--size",
	                "16",
	                "--duration",
	                "0",
	                "--concurrency",
	                "4",
	                NULL};
	struct run r;

	run_argv(&r, NULL, NULL, argv);
	expect_status(&r, 0, "kv-bench load");
	run_free(&r);
	kvctl(&r, "ls", "kvbench/");
	expect_status(&r, 0, "ls");
	cr_assert_eq(count_lines(r.out), 2500, "ls listed %d keys", count_lines(r.out));
	cr_assert(!strncmp(r.out, "kvbench/00000000\nkvbench/00000001\n", 34));
	cr_assert_not_null(strstr(r.out, "kvbench/00002499\n"));
	run_free(&r);
	kvctl(&r, "ls", "-l", "kvbench/0000249");
	expect_status(&r, 0, "ls -l");
	cr_assert_eq(count_lines(r.out), 10);
	run_free(&r);
}

/* ------------------------------------------------------------------ */
/* stat, mv, rm                                                        */

Test(kvctl, stat_fields)
{
	struct run r;
	unsigned long long v1, v2;
	char *p;

	make_file(tp("in"), 1234, 5);
	kvctl(&r, "put", "s", tp("in"));
	run_free(&r);
	kvctl(&r, "stat", "s");
	expect_status(&r, 0, "stat");
	cr_assert(!strncmp(r.out, "key s\nsize 1234\nversion ", 24), "stat: %s", r.out);
	p = strstr(r.out, "version ");
	cr_assert_eq(sscanf(p, "version %llu", &v1), 1);
	cr_assert_gt(v1, 0);
	cr_assert_not_null(strstr(r.out, "\nmtime_ns "));
	cr_assert_not_null(strstr(r.out, "\nmode 0644\n"));
	cr_assert_not_null(strstr(r.out, "\ntype file\nctime_ns "), "stat: %s", r.out);
	cr_assert_not_null(strstr(r.out, "\natime_ns "));
	run_free(&r);
	/* a new PUT gives a new version */
	kvctl(&r, "put", "s", tp("in"));
	run_free(&r);
	kvctl(&r, "stat", "s");
	cr_assert_eq(sscanf(strstr(r.out, "version "), "version %llu", &v2), 1);
	cr_assert_neq(v1, v2);
	run_free(&r);
	kvctl(&r, "stat", "missing");
	expect_status(&r, 3, "stat of a missing key");
	cr_assert(!strncmp(r.err, "kvctl: stat missing: ", 21), "message: %s", r.err);
	run_free(&r);
}

Test(kvctl, mv_and_no_overwrite)
{
	struct run r;

	make_file(tp("a"), 5000, 11);
	make_file(tp("b"), 700, 12);
	kvctl(&r, "put", "src", tp("a"));
	run_free(&r);
	kvctl(&r, "put", "other", tp("b"));
	run_free(&r);
	kvctl_ok("mv", "mv", "src", "dst");
	kvctl_ok("get dst", "get", "dst", tp("out"));
	assert_same_file(tp("a"), tp("out"));
	kvctl(&r, "stat", "src");
	expect_status(&r, 3, "stat of the moved-away key");
	run_free(&r);

	kvctl(&r, "mv", "-n", "other", "dst");
	expect_status(&r, 4, "mv -n onto an existing key");
	cr_assert_not_null(strstr(r.err, "kvctl: mv other dst: "), "message: %s", r.err);
	run_free(&r);
	/* both unchanged */
	kvctl(&r, "get", "dst", tp("out"));
	run_free(&r);
	assert_same_file(tp("a"), tp("out"));
	kvctl(&r, "get", "other", tp("out"));
	run_free(&r);
	assert_same_file(tp("b"), tp("out"));

	kvctl_ok("mv replacing", "mv", "other", "dst");
	kvctl(&r, "get", "dst", tp("out"));
	run_free(&r);
	assert_same_file(tp("b"), tp("out"));

	kvctl(&r, "mv", "nope", "x");
	expect_status(&r, 3, "mv of a missing key");
	run_free(&r);
}

Test(kvctl, rm_then_get_not_found)
{
	struct run r;

	make_file(tp("in"), 64, 2);
	kvctl(&r, "put", "r1", tp("in"));
	run_free(&r);
	kvctl(&r, "put", "r2", tp("in"));
	run_free(&r);
	kvctl_ok("rm", "rm", "r1", "r2");
	kvctl(&r, "get", "r1", tp("never"));
	expect_status(&r, 3, "get after rm");
	cr_assert(!strncmp(r.err, "kvctl: get r1: ", 15), "message: %s", r.err);
	run_free(&r);
	cr_assert_neq(access(tp("never"), F_OK), 0, "get of a missing key created its file");
	kvctl(&r, "get", "r2");
	expect_status(&r, 3, "get r2 after rm");
	cr_assert_eq(r.outlen, 0);
	run_free(&r);
	kvctl(&r, "rm", "r1");
	expect_status(&r, 3, "rm of a missing key");
	run_free(&r);
	kvctl(&r, "-q", "rm", "r1");
	expect_status(&r, 3, "rm -q of a missing key");
	cr_assert_str_eq(r.err, "", "-q printed: %s", r.err);
	run_free(&r);
}

Test(kvctl, stats_has_keys)
{
	struct run r;
	unsigned long long keys = 99;
	char *p;

	make_file(tp("in"), 64, 2);
	kvctl(&r, "put", "one", tp("in"));
	run_free(&r);
	kvctl(&r, "stats");
	expect_status(&r, 0, "stats");
	p = strstr(r.out, "keys ");
	cr_assert(p && (p == r.out || p[-1] == '\n'), "no 'keys' line: %s", r.out);
	cr_assert_eq(sscanf(p, "keys %llu", &keys), 1);
	cr_assert_eq(keys, 1);
	/* every line is "name value" */
	for (char *line = r.out; *line;) {
		char name[128];
		unsigned long long v;
		char *nl = strchr(line, '\n');

		cr_assert_not_null(nl);
		cr_assert_eq(sscanf(line, "%127s %llu", name, &v), 2, "line: %.*s",
		             (int)(nl - line), line);
		line = nl + 1;
	}
	run_free(&r);
}

static int count_in_log(const char *needle)
{
	char *log = slurp(srv_log, NULL);
	int n = 0;

	for (const char *p = log; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	free(log);
	return n;
}

/* Commands that move no value, and values the server takes inline, connect
 * without the transfer engine unless -p names a provider; a larger value
 * connects again with the engine (the server logs each hello). */
Test(kvctl, engine_only_for_values_that_need_it)
{
	const char *none = "hello from kvctl, provider none",
	           *tcp = "hello from kvctl, provider tcp";
	int n_none, n_tcp;
	struct run r;

	make_file(tp("in"), 100000, 3); /* above the server's inline limit (64 KiB) */
	make_file(tp("small"), 1000, 5);
	n_none = count_in_log(none);
	n_tcp = count_in_log(tcp);
	kvctl_ok("put", "put", "meta/one", tp("in"));
	cr_assert_eq(count_in_log(tcp), n_tcp + 1, "a large put connects with the engine");
	kvctl_ok("put small", "put", "meta/small", tp("small"));
	kvctl_ok("get small", "get", "meta/small", tp("small.out"));
	assert_same_file(tp("small"), tp("small.out"));
	cr_assert_eq(count_in_log(tcp), n_tcp + 1, "a small put or get needs no engine");
	kvctl_ok("stats", "stats");
	kvctl(&r, "ls", "meta/");
	expect_status(&r, 0, "ls");
	cr_assert_str_eq(r.out, "meta/one\nmeta/small\n");
	run_free(&r);
	kvctl_ok("stat", "stat", "meta/one");
	kvctl_ok("mv", "mv", "meta/one", "meta/two");
	kvctl_ok("rm", "rm", "meta/small");
	cr_assert_eq(count_in_log(tcp), n_tcp + 1, "ls, stat, mv, rm and stats need no engine");
	kvctl_ok("stats -p tcp", "--provider", "tcp", "stats");
	cr_assert_eq(count_in_log(tcp), n_tcp + 2, "an explicit -p is kept");
	kvctl_ok("get", "get", "meta/two", tp("out"));
	assert_same_file(tp("in"), tp("out"));
	cr_assert_eq(count_in_log(tcp), n_tcp + 3, "a large get connects with the engine");
	/* put, put small, get small, stats, ls, stat, mv, rm, get: one each */
	cr_assert_eq(count_in_log(none), n_none + 9, "every command but -p tcp began without");
}

/* libfabric is loaded when an engine is first opened (src/topo/ofi_lazy.c).
 * When it cannot be: a named provider fails with a message that says so,
 * auto falls back to inline values, and a value that fits inline still
 * round-trips. */
Test(kvctl, without_libfabric)
{
	struct run r;
	int fd;

	/* An empty libfabric.so.1 first in the search path: dlopen() fails. */
	cr_assert_eq(mkdir(tp("badlib"), 0755), 0);
	fd = open(tp("badlib/libfabric.so.1"), O_WRONLY | O_CREAT, 0644);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(setenv("LD_LIBRARY_PATH", tp("badlib"), 1), 0);
	make_file(tp("in"), 60000, 4); /* below the server's inline limit (64 KiB) */
	kvctl(&r, "--provider", "tcp", "put", "nolib", tp("in"));
	cr_assert_neq(r.status, 0, "put -p tcp without libfabric succeeded");
	cr_assert_not_null(strstr(r.err, "libfabric.so.1"), "no word of libfabric: %s", r.err);
	run_free(&r);
	kvctl_ok("put (auto) without libfabric", "put", "nolib", tp("in"));
	kvctl_ok("get (auto) without libfabric", "get", "nolib", tp("out"));
	assert_same_file(tp("in"), tp("out"));
	/* kv-server asked for tcp says the same, and exits (it opens the
	 * engine before it listens: the test server's port is no obstacle). */
	{
		char *argv[] = {(char *)env_path("KV_SERVER"),
		                "--provider",
		                "tcp",
		                "--memory",
		                "64M",
		                "--listen",
		                addr,
		                NULL};

		run_argv(&r, NULL, NULL, argv);
		cr_assert_neq(r.status, 0, "kv-server -p tcp without libfabric started");
		cr_assert_not_null(strstr(r.err, "libfabric.so.1 cannot be loaded"),
		                   "kv-server did not say why: %s", r.err);
		run_free(&r);
	}
	unsetenv("LD_LIBRARY_PATH");
}

/* `kvctl --server SERVER --timeout MS stat x`, in a network namespace of
 * its own (unshare -n: nothing answers there) if @own_netns. */
static void stat_with_timeout(struct run *r, const char *server, const char *ms, bool own_netns)
{
	char *argv[] = {"/usr/bin/unshare",
	                "-n",
	                (char *)env_path("KVCTL"),
	                "--server",
	                (char *)server,
	                "--timeout",
	                (char *)ms,
	                "stat",
	                "x",
	                NULL};

	if (own_netns && access(argv[0], X_OK) < 0)
		cr_skip_test("no %s", argv[0]);
	run_argv(r, NULL, NULL, own_netns ? argv : argv + 2);
	if (own_netns && strstr(r->err, "unshare:"))
		cr_skip_test("cannot make a network namespace: %s", r->err);
}

Test(kvctl, server_down_exit_5_within_timeout)
{
	struct run r;

	server_kill(); /* the port is now free: nothing listens there */
	stat_with_timeout(&r, addr, "2000", false);
	expect_status(&r, 5, "stat with the server down");
	cr_assert_lt(r.secs, 2.0 + 3.0, "took %.1f s with --timeout 2000", r.secs);
	cr_assert(!strncmp(r.err, "kvctl: stat x: ", 15), "message: %s", r.err);
	/* says it once, names the address, and where the address comes from */
	const char *first = strstr(r.err, "cannot connect");
	cr_assert_not_null(first, "message: %s", r.err);
	cr_assert_null(strstr(first + 1, "cannot connect"), "said twice: %s", r.err);
	cr_assert_not_null(strstr(r.err, addr), "message: %s", r.err);
	cr_assert_not_null(strstr(r.err, "--server or KVFS_SERVER"), "message: %s", r.err);
	run_free(&r);
}

/* A server given without a port: the message names the port assumed.  In
 * a network namespace of its own nothing answers on 127.0.0.1:7070. */
Test(kvctl, missing_port_is_named)
{
	struct run r;

	stat_with_timeout(&r, "127.0.0.1", "2000", true);
	expect_status(&r, 5, "stat with nothing listening");
	cr_assert_not_null(strstr(r.err, "at 127.0.0.1:7070:"), "message: %s", r.err);
	run_free(&r);
}

Test(kvctl, server_hung_exit_5_within_timeout)
{
	struct run r;

	/* Connections are accepted by the kernel but nothing answers. */
	cr_assert_eq(kill(srv_pid, SIGSTOP), 0);
	stat_with_timeout(&r, addr, "1500", false);
	kill(srv_pid, SIGCONT);
	expect_status(&r, 5, "stat with the server stopped");
	cr_assert_lt(r.secs, 1.5 + 3.0, "took %.1f s with --timeout 1500", r.secs);
	run_free(&r);
}

/*
 * Every binary a user runs answers --version with "NAME VERSION" and
 * --help with its usage, both with status 0, and an unknown option with
 * status 2 (kv-bench, kv-soak, xfer-bench and kvfs-topo had no --version).
 */
Test(kvctl, every_binary_has_version_and_help)
{
	static const char *const bins[][2] = {
	        {"KVCTL", "kvctl"},     {"KV_SERVER", "kv-server"},   {"KV_BENCH", "kv-bench"},
	        {"KV_SOAK", "kv-soak"}, {"XFER_BENCH", "xfer-bench"}, {"KVFS_TOPO", "kvfs-topo"},
	};
	char want[64];
	struct run r;

	snprintf(want, sizeof(want), " %s", KVFS_VERSION);
	for (size_t i = 0; i < sizeof(bins) / sizeof(bins[0]); i++) {
		char *argv[3] = {(char *)env_path(bins[i][0]), "--version", NULL};

		run_argv(&r, NULL, NULL, argv);
		expect_status(&r, 0, bins[i][1]);
		cr_assert(!strncmp(r.out, bins[i][1], strlen(bins[i][1])) && strstr(r.out, want),
		          "%s --version printed '%s'", bins[i][1], r.out);
		run_free(&r);
		argv[1] = "--help";
		run_argv(&r, NULL, NULL, argv);
		expect_status(&r, 0, bins[i][1]);
		cr_assert_not_null(strstr(r.out, "--version"), "%s --help does not name --version",
		                   bins[i][1]);
		run_free(&r);
		argv[1] = "--no-such-option";
		run_argv(&r, NULL, NULL, argv);
		expect_status(&r, 2, bins[i][1]);
		run_free(&r);
	}
}

/*
 * A --server that is not HOST:PORT is bad usage, status 2, in every client
 * tool, said before anything connects (kv-soak tried to connect and exited
 * with 1).
 */
Test(kvctl, bad_server_address_is_bad_usage)
{
	static const char *const bins[][3] = {
	        {"KVCTL", "kvctl", "stats"},
	        {"KV_BENCH", "kv-bench", NULL},
	        {"KV_SOAK", "kv-soak", NULL},
	};
	struct run r;

	for (size_t i = 0; i < sizeof(bins) / sizeof(bins[0]); i++) {
		char *argv[] = {(char *)env_path(bins[i][0]), "--server", "a:b:c",
		                (char *)bins[i][2], NULL};

		run_argv(&r, NULL, NULL, argv);
		expect_status(&r, 2, bins[i][1]);
		cr_assert_not_null(
		        strstr(r.err, "'a:b:c' is not HOST:PORT (--server / KVFS_SERVER)"),
		        "%s: %s", bins[i][1], r.err);
		cr_assert_null(strstr(r.err, "cannot connect"), "%s: %s", bins[i][1], r.err);
		run_free(&r);
	}
}

Test(kvctl, usage_errors_and_help)
{
	struct run r;

	kvctl(&r, "--help");
	expect_status(&r, 0, "--help");
	cr_assert_not_null(strstr(r.out, "Exit status"), "--help: %s", r.out);
	cr_assert_not_null(strstr(r.out, "2  bad usage: unknown command or option, missing "
	                                 "argument, or a key"),
	                   "--help: %s", r.out);
	run_free(&r);
	kvctl(&r, "ls", "--help");
	expect_status(&r, 0, "ls --help");
	cr_assert_not_null(strstr(r.out, "-d"));
	run_free(&r);
	kvctl(&r, "frobnicate");
	expect_status(&r, 2, "unknown command");
	run_free(&r);
	kvctl(&r, "get");
	expect_status(&r, 2, "get without a key");
	run_free(&r);
	kvctl(&r, "mv", "a");
	expect_status(&r, 2, "mv with one key");
	run_free(&r);
	/* keys the server would refuse: a usage error before connecting,
	 * naming the rule and not echoing the key */
	kvctl(&r, "put", "a//b");
	expect_status(&r, 2, "put a//b");
	cr_assert_not_null(strstr(r.err, "empty path component"), "%s", r.err);
	run_free(&r);
	kvctl(&r, "stat", "x/../y");
	expect_status(&r, 2, "stat x/../y");
	cr_assert_not_null(strstr(r.err, "'..'"), "%s", r.err);
	run_free(&r);
	/* any byte but NUL is a key byte; a message escapes it, never echoes
	 * it raw */
	kvctl(&r, "get", "ctl\x01key");
	expect_status(&r, 3, "get of a missing key with a control character");
	cr_assert_not_null(strstr(r.err, "ctl\\x01key"), "%s", r.err);
	cr_assert_null(strstr(r.err, "ctl\x01"), "the key was echoed raw: %s", r.err);
	run_free(&r);
	kvctl(&r, "ls", "/top");
	expect_status(&r, 2, "ls /top");
	cr_assert_not_null(strstr(r.err, "prefix"), "%s", r.err);
	run_free(&r);
	{
		char key[4098];

		memset(key, 'k', 4097);
		key[4097] = '\0';
		kvctl(&r, "put", key, "/dev/null");
		expect_status(&r, 2, "put of a 4097-byte key");
		cr_assert_not_null(strstr(r.err, "1 to 4096 bytes; got one of 4097"), "%s", r.err);
		run_free(&r);
		key[4096] = '\0';
		kvctl_ok("put of a 4096-byte key", "put", key, "/dev/null");
	}
	kvctl_ok("ls dir/. (a partial name is a fine prefix)", "ls", "dir/.");
	{
		char *argv[] = {(char *)env_path("KVCTL"), NULL};

		run_argv(&r, NULL, NULL, argv);
		expect_status(&r, 2, "no command");
		run_free(&r);
	}
}

/* How many times @needle occurs in @hay. */
static int count_of(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* kvctl names its own option for the token, and says what to check once. */
Test(kvctl, auth_errors_name_kvctl_option)
{
	char token[PATH_MAX + 64];
	const char *const extra[] = {"--auth-token-file", token, NULL};
	struct run r;
	FILE *f;

	snprintf(token, sizeof(token), "%s", tp("token"));

	cr_assert_not_null(f = fopen(token, "w"));
	fputs("right-token-of-some-length\n", f);
	cr_assert_eq(fclose(f), 0);
	cr_assert_not_null(f = fopen(tp("wrong"), "w"));
	fputs("wrong-token-of-some-length\n", f);
	cr_assert_eq(fclose(f), 0);
	server_kill();
	server_start_with(extra);

	kvctl(&r, "ls");
	expect_status(&r, 1, "ls without a token");
	cr_assert_not_null(strstr(r.err, "requires authentication: set --auth-token-file"), "%s",
	                   r.err);
	cr_assert_null(strstr(r.err, "auth_token_file"), "kvfs's option named: %s", r.err);
	run_free(&r);
	kvctl(&r, "-a", tp("wrong"), "ls");
	expect_status(&r, 1, "ls with a wrong token");
	cr_assert_not_null(strstr(r.err, "--auth-token-file"), "%s", r.err);
	cr_assert_null(strstr(r.err, "auth_token_file"), "kvfs's option named: %s", r.err);
	cr_assert_eq(count_of(r.err, "check"), 1, "advice not given once: %s", r.err);
	run_free(&r);
	kvctl_ok("ls with the token", "-a", token, "ls");
}

/* A full server that cannot evict: exit 1, the advice once. */
Test(kvctl, no_space_advice_once)
{
	const char *const extra[] = {"--memory", "4M", "--eviction", "none", NULL};
	struct run r;

	server_kill();
	server_start_with(extra);
	make_file(tp("in"), 3 << 20, 7);
	kvctl_ok("first 3 MiB put", "put", "a", tp("in"));
	kvctl(&r, "put", "b", tp("in"));
	expect_status(&r, 1, "put into a full server");
	cr_assert_not_null(strstr(r.err, "more --memory"), "%s", r.err);
	cr_assert_eq(count_of(r.err, "delete keys"), 1, "advice not given once: %s", r.err);
	run_free(&r);
}

/* kv-server warns of a --max-value it can never honour (the suite's
 * server holds the port, so this one exits when it finds it taken). */
Test(kvctl, server_max_value_above_memory_warns)
{
	char *argv[] = {(char *)env_path("KV_SERVER"),
	                "--provider",
	                "none",
	                "--memory",
	                "64M",
	                "--max-value",
	                "1G",
	                "--listen",
	                addr,
	                NULL};
	struct run r;

	run_argv(&r, NULL, NULL, argv);
	cr_assert_neq(r.status, 0, "a second server on %s started", addr);
	cr_assert_not_null(strstr(r.err, "--max-value 1.0 GiB is above the 56.0 MiB of --memory "
	                                 "64.0 MiB left for values"),
	                   "%s", r.err);
	run_free(&r);
	argv[6] = "56M"; /* --max-meta, 1/8, takes the rest */
	run_argv(&r, NULL, NULL, argv);
	cr_assert_null(strstr(r.err, "--max-value"), "warned of a fitting --max-value: %s", r.err);
	run_free(&r);
}

/* ------------------------------------------------------------------ */
/* kv-bench                                                            */

Test(kvctl, bench_mixed_runs_clean)
{
	char *argv[] = {(char *)env_path("KV_BENCH"),
	                "--server",
	                addr,
	                "--op",
	                "mixed",
	                "--size",
	                "64K",
	                "--concurrency",
	                "2",
	                "--keys",
	                "200",
	                "--duration",
	                "2",
	                "--json",
	                NULL};
	struct run r;
	unsigned long long mism = 99, verified = 0, ops = 0, errors = 99;
	char *p;

	run_argv(&r, NULL, NULL, argv);
	expect_status(&r, 0, "kv-bench --op mixed");
	cr_assert_lt(r.secs, 60, "kv-bench --duration 2 took %.1f s", r.secs);
	cr_assert_eq(r.out[0], '{', "not JSON: %s", r.out);
	p = strstr(r.out, "\"mismatches\":");
	cr_assert_not_null(p, "no mismatches field: %s", r.out);
	cr_assert_eq(sscanf(p, "\"mismatches\":%llu", &mism), 1);
	cr_assert_eq(mism, 0, "%llu mismatches", mism);
	cr_assert_eq(sscanf(strstr(r.out, "\"verified\":"), "\"verified\":%llu", &verified), 1);
	cr_assert_gt(verified, 0);
	cr_assert_eq(sscanf(strstr(r.out, "\"ops\":"), "\"ops\":%llu", &ops), 1);
	cr_assert_gt(ops, 0);
	cr_assert_eq(sscanf(strstr(r.out, "\"errors\":"), "\"errors\":%llu", &errors), 1);
	cr_assert_eq(errors, 0);
	run_free(&r);
}

/* Issue 22 item 5: pin and unpin from the shell; exit codes and messages. */
Test(kvctl, pin_unpin_exit_codes_and_messages)
{
	const char *const extra[] = {"--max-pinned", "10K", NULL};
	struct run r;

	server_kill();
	server_start_with(extra);
	make_file(tp("in"), 4096, 3);
	kvctl_ok("put d/a", "put", "d/a", tp("in"));
	kvctl_ok("put d/b", "put", "d/b", tp("in"));
	kvctl_ok("put e", "put", "e", tp("in"));

	kvctl(&r, "pin", "d/a");
	expect_status(&r, 0, "pin");
	cr_assert_str_eq(r.out, "", "pin of one key prints nothing: %s", r.out);
	run_free(&r);
	kvctl(&r, "stat", "d/a");
	cr_assert_not_null(strstr(r.out, "\npinned 1\n"), "stat: %s", r.out);
	run_free(&r);
	kvctl(&r, "stat", "d/b");
	cr_assert_not_null(strstr(r.out, "\npinned 0\n"), "stat: %s", r.out);
	run_free(&r);

	/* a missing key: 3, and the others are still pinned */
	kvctl(&r, "pin", "nope", "d/b");
	expect_status(&r, 3, "pin of a missing key");
	cr_assert(!strncmp(r.err, "kvctl: pin nope: ", 17), "message: %s", r.err);
	run_free(&r);
	kvctl(&r, "stat", "d/b");
	cr_assert_not_null(strstr(r.out, "\npinned 1\n"), "d/b pinned after nope: %s", r.out);
	run_free(&r);

	/* past --max-pinned: 1, the message names the option */
	kvctl(&r, "pin", "e");
	expect_status(&r, 1, "pin past --max-pinned");
	cr_assert_not_null(strstr(r.err, "--max-pinned"), "%s", r.err);
	cr_assert_null(strstr(r.err, "more --memory"), "misleading advice: %s", r.err);
	run_free(&r);

	/* unpin -r a prefix, then pin -r it */
	kvctl(&r, "unpin", "-r", "d/");
	expect_status(&r, 0, "unpin -r");
	cr_assert_str_eq(r.out, "unpinned 2 keys (8.0 KiB) under 'd/'\n", "%s", r.out);
	run_free(&r);
	kvctl(&r, "stats");
	cr_assert_not_null(strstr(r.out, "\npinned_keys 0\n"), "%s", r.out);
	cr_assert_not_null(strstr(r.out, "\nevictions 0\n"), "%s", r.out);
	cr_assert_not_null(strstr(r.out, "\nevicted_bytes 0\n"), "%s", r.out);
	run_free(&r);
	kvctl(&r, "pin", "-r", "d/");
	expect_status(&r, 0, "pin -r");
	cr_assert_str_eq(r.out, "pinned 2 keys (8.0 KiB) under 'd/'\n", "%s", r.out);
	run_free(&r);
	kvctl(&r, "stats");
	cr_assert_not_null(strstr(r.out, "\npinned_keys 2\n"), "%s", r.out);
	cr_assert_not_null(strstr(r.out, "\npinned_key_bytes 8192\n"), "%s", r.out);
	run_free(&r);
	kvctl(&r, "pin", "-r", "zz/");
	expect_status(&r, 3, "pin -r of a prefix with no keys");
	cr_assert_not_null(strstr(r.err, "kvctl: pin zz/: no key starts with it"), "%s", r.err);
	run_free(&r);
	kvctl(&r, "pin");
	expect_status(&r, 2, "pin without a key");
	run_free(&r);
	kvctl(&r, "unpin", "--help");
	expect_status(&r, 0, "unpin --help");
	cr_assert_not_null(strstr(r.out, "Usage: kvctl unpin"), "%s", r.out);
	run_free(&r);
}

/* Issue 23: put streams a large input.  A 192 MiB pipe goes up with the
 * client's memory far below the value's size, and reads back whole. */
Test(kvctl, put_streams_with_bounded_memory)
{
	char cmd[4 * PATH_MAX];
	struct rusage ru;
	int st;
	pid_t pid;

	make_file(tp("big"), 192u << 20, 23);
	snprintf(cmd, sizeof(cmd), "cat '%s' | exec %s -q --server %s put big", tp("big"),
	         env_path("KVCTL"), addr);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	cr_assert_eq(wait4(pid, &st, 0, &ru), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "kvctl put failed (%d)", st);
	/* ru_maxrss (KiB) covers the largest of sh, cat and kvctl */
	cr_assert_lt(ru.ru_maxrss, 96 * 1024, "kvctl put of 192 MiB held %ld KiB", ru.ru_maxrss);
	kvctl_ok("get", "get", "big", tp("back"));
	assert_same_file(tp("big"), tp("back"));
}

/* kv-bench --stream: mixed GETs and streamed PUTs of 3 MiB in 1 MiB writes
 * (parts cross the writes), every first GET checked byte for byte. */
Test(kvctl, bench_streamed_puts_run_clean)
{
	char *argv[] = {(char *)env_path("KV_BENCH"),
	                "--server",
	                addr,
	                "--op",
	                "mixed",
	                "--read-pct",
	                "50",
	                "--size",
	                "3M",
	                "--stream=1M",
	                "--keys",
	                "8",
	                "--duration",
	                "1",
	                "--json",
	                NULL};
	unsigned long long mism = 99, verified = 0, puts = 0, errors = 99;
	struct run r;

	run_argv(&r, NULL, NULL, argv);
	expect_status(&r, 0, "kv-bench --stream");
	cr_assert_not_null(strstr(r.out, "\"stream\":true"), "%s", r.out);
	cr_assert_eq(sscanf(strstr(r.out, "\"mismatches\":"), "\"mismatches\":%llu", &mism), 1);
	cr_assert_eq(mism, 0, "%llu mismatches", mism);
	cr_assert_eq(sscanf(strstr(r.out, "\"verified\":"), "\"verified\":%llu", &verified), 1);
	cr_assert_gt(verified, 0);
	cr_assert_eq(sscanf(strstr(r.out, "\"puts\":"), "\"puts\":%llu", &puts), 1);
	cr_assert_gt(puts, 0);
	cr_assert_eq(sscanf(strstr(r.out, "\"errors\":"), "\"errors\":%llu", &errors), 1);
	cr_assert_eq(errors, 0);
	run_free(&r);
}
