/* SPDX-License-Identifier: MIT */
/*
 * Test fixture for real mounts: a kv-server process on a unique port and
 * kvfs mounts of it in a temp directory.  Everything started is stopped by
 * PID and every mount is unmounted in env_stop(), also when a test fails
 * (Criterion runs each test in its own process; .fini runs env_stop).
 */
#ifndef KVFS_TEST_FUSE_ENV_H
#define KVFS_TEST_FUSE_ENV_H

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../test_port.h"

#define ENV_MAX_MOUNTS 4

struct env {
	char dir[256];     /* temp dir holding mounts and scratch files */
	char server[64];   /* 127.0.0.1:PORT */
	char srv_wrap[64]; /* command the server runs under ("ip netns exec NS "), "" = none */
	int port;
	pid_t srv_pid;
	pid_t kvfs_pid[ENV_MAX_MOUNTS];
	char mnt[ENV_MAX_MOUNTS][300];
	int nmounts;
	char srv_args[256];
};

static struct env E;

static inline uint64_t env_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline const char *env_bin(const char *var)
{
	const char *p = getenv(var);

	cr_assert_not_null(p, "%s not set: run through meson test", var);
	return p;
}

/* Run a shell command; returns its exit status (or -1). */
static inline int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Start kv-server with extra @args; waits for its "listening" line. */
static inline void env_server_start(const char *args)
{
	char log[300], cmd[1024], line[512];
	uint64_t t0 = env_ms();

	snprintf(E.srv_args, sizeof(E.srv_args), "%s", args ? args : "");
	snprintf(log, sizeof(log), "%s/server.log", E.dir);
	snprintf(cmd, sizeof(cmd), "exec %s%s --listen %s --memory 1G --provider %s %s -q 2>>%s",
	         E.srv_wrap, env_bin("KV_SERVER"), E.server,
	         getenv("KVFS_PROVIDER") ? getenv("KVFS_PROVIDER") : "tcp", E.srv_args, log);
	struct stat lst;
	off_t from = stat(log, &lst) == 0 ? lst.st_size : 0; /* a restart appends */

	E.srv_pid = fork();
	cr_assert_geq(E.srv_pid, 0);
	if (E.srv_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive a crashed test */
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	for (;;) {
		FILE *f = fopen(log, "r");
		bool up = false;

		if (f)
			fseeko(f, from, SEEK_SET);
		while (f && fgets(line, sizeof(line), f))
			if (strstr(line, "listening on"))
				up = true;
		if (f)
			fclose(f);
		if (up)
			return;
		cr_assert_eq(waitpid(E.srv_pid, NULL, WNOHANG), 0, "kv-server exited: see %s", log);
		cr_assert_lt(env_ms() - t0, 60000, "kv-server did not start in 60 s");
		usleep(20000);
	}
}

static inline void env_server_kill(int sig)
{
	if (E.srv_pid > 0) {
		kill(E.srv_pid, sig);
		waitpid(E.srv_pid, NULL, 0);
		E.srv_pid = 0;
	}
}

static inline bool is_mounted(const char *mnt)
{
	char line[1024], needle[1024];
	FILE *f = fopen("/proc/self/mounts", "r");
	bool found = false;

	snprintf(needle, sizeof(needle), " %s fuse", mnt);
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			found = true;
	if (f)
		fclose(f);
	return found;
}

/* Mount kvfs (foreground process we own) on a new dir; returns its index. */
static inline int env_mount(const char *opts)
{
	int i = E.nmounts++;
	char log[400], cmd[2048];
	uint64_t t0 = env_ms();

	cr_assert_lt(i, ENV_MAX_MOUNTS);
	char dir[256];

	memcpy(dir, E.dir, sizeof(dir));
	snprintf(E.mnt[i], sizeof(E.mnt[i]), "%s/mnt%d", dir, i);
	mkdir(E.mnt[i], 0755);
	snprintf(log, sizeof(log), "%s/kvfs%d.log", E.dir, i);
	snprintf(cmd, sizeof(cmd), "exec %s -f -o provider=%s,timeout=%s%s%s %s %s 2>>%s",
	         env_bin("KVFS"), getenv("KVFS_PROVIDER") ? getenv("KVFS_PROVIDER") : "tcp",
	         getenv("KVFS_TIMEOUT") ? getenv("KVFS_TIMEOUT") : "10000", opts ? "," : "",
	         opts ? opts : "", E.server, E.mnt[i], log);
	E.kvfs_pid[i] = fork();
	cr_assert_geq(E.kvfs_pid[i], 0);
	if (E.kvfs_pid[i] == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	while (!is_mounted(E.mnt[i])) {
		cr_assert_eq(waitpid(E.kvfs_pid[i], NULL, WNOHANG), 0, "kvfs exited: see %s", log);
		cr_assert_lt(env_ms() - t0, 60000, "kvfs did not mount in 60 s");
		usleep(20000);
	}
	return i;
}

static inline void env_umount(int i)
{
	pid_t p = E.kvfs_pid[i];
	int st = 0, k;

	sh("fusermount3 -u -z %s 2>/dev/null", E.mnt[i]);
	if (p <= 0)
		return;
	kill(p, SIGTERM);
	for (k = 0; k < 100 && waitpid(p, &st, WNOHANG) == 0; k++)
		usleep(50000);
	if (k == 100) {
		kill(p, SIGKILL);
		waitpid(p, &st, 0);
	}
	E.kvfs_pid[i] = 0;
	/* kvfs killed by a signal of its own (a sanitizer's abort, a crash):
	 * show its log, which goes with the temp dir */
	if (k < 100 && WIFSIGNALED(st)) {
		fprintf(stderr, "kvfs of mount %d died of signal %d; its log:\n", i, WTERMSIG(st));
		sh("tail -60 %s/kvfs%d.log >&2", E.dir, i);
	}
}

/* A fresh server on the same port after a crash of the old one; the
 * mount must serve again without a remount, over every provider.  (Over
 * shm the dead server may have left the lock of kvfs's region held; kvfs
 * releases it: docs/semantics.md.) */
static inline void env_server_restart_after_crash(void)
{
	env_server_start(NULL);
}

/* A fresh temp dir and a free port; nothing started yet. */
static inline void env_init(void)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

	memset(&E, 0, sizeof(E));
	snprintf(E.dir, sizeof(E.dir), "%s/kvfs-test-XXXXXX", tmp);
	cr_assert_not_null(mkdtemp(E.dir));
	E.port = test_free_port();
	snprintf(E.server, sizeof(E.server), "127.0.0.1:%d", E.port);
}

static inline void env_setup(void)
{
	env_init();
	env_server_start(NULL);
	env_mount(NULL);
}

static inline void env_stop(void)
{
	for (int i = 0; i < E.nmounts; i++)
		env_umount(i);
	env_server_kill(SIGTERM);
	if (E.dir[0] && !getenv("KVFS_TEST_KEEP"))
		sh("rm -rf %s", E.dir);
}

/* Path inside mount @i. */
static inline const char *mp(int i, const char *rel)
{
	static __thread char buf[4][700];
	static __thread int k;
	char *b = buf[k++ & 3];

	snprintf(b, 700, "%s/%s", E.mnt[i], rel);
	return b;
}

/* Path in the scratch dir (outside any mount). */
static inline const char *sp(const char *rel)
{
	static __thread char buf[4][700];
	static __thread int k;
	char *b = buf[k++ & 3];

	snprintf(b, 700, "%s/%s", E.dir, rel);
	return b;
}

/* The server's counter @name (kvctl stats), or -1. */
static inline long long env_server_counter(const char *name)
{
	char cmd[512], line[256];
	long long v = -1;
	size_t n = strlen(name);
	FILE *f;

	snprintf(cmd, sizeof(cmd), "%s -q -s %s stats", env_bin("KVCTL"), E.server);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, name, n) && line[n] == ' ')
			v = atoll(line + n + 1);
	pclose(f);
	return v;
}

/* Write @len pattern bytes (seeded) to @path on the local disk. */
static inline void make_file(const char *path, size_t len, unsigned seed)
{
	FILE *f = fopen(path, "w");
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
	uint8_t blk[65536];

	cr_assert_not_null(f, "cannot create %s", path);
	while (len) {
		size_t n = len < sizeof(blk) ? len : sizeof(blk);

		for (size_t i = 0; i < n; i += 8) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			memcpy(blk + i, &x, n - i < 8 ? n - i : 8);
		}
		cr_assert_eq(fwrite(blk, 1, n, f), n);
		len -= n;
	}
	cr_assert_eq(fclose(f), 0);
}

#endif
