/* SPDX-License-Identifier: MIT */
/*
 * Test fixture shared by the server suites: a real kv-server process on a
 * free port the kernel picked (Criterion forks one process per test),
 * its log, clients, and deterministic bytes.  The server dies with the test
 * (PR_SET_PDEATHSIG) even when the test crashes.
 */
#ifndef KVFS_TEST_SRV_PROC_H
#define KVFS_TEST_SRV_PROC_H

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvfs/client.h"
#include "../test_port.h"

#define MIB (1024ULL * 1024)

/* ------------------------------------------------------------------ */
/* The server                                                          */
/* ------------------------------------------------------------------ */

struct srv {
	pid_t pid;
	uint16_t port;
	const char *netns; /* run it inside this network namespace, NULL = ours */
	const char *host;  /* listen address, NULL = 127.0.0.1 */
	char addr[48];     /* HOST:PORT */
	char log[96];      /* its stderr */
	char provider[16]; /* --provider */
};

static inline void srv_dump_log(const struct srv *s)
{
	char buf[4096];
	int fd = open(s->log, O_RDONLY);
	off_t size = fd >= 0 ? lseek(fd, 0, SEEK_END) : 0;
	ssize_t n;

	if (fd < 0)
		return;
	lseek(fd, size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0, SEEK_SET);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0) {
		buf[n] = '\0';
		fprintf(stderr, "---- %s ----\n%s---- end ----\n", s->log, buf);
	}
}

/* Print every thread's stack of the running server (gdb, when installed):
 * where it waits when a test finds it stuck. */
static inline void srv_dump_stacks(const struct srv *s)
{
	char cmd[256];

	if (s->pid <= 0 || access("/usr/bin/gdb", X_OK) != 0)
		return;
	snprintf(cmd, sizeof(cmd),
	         "timeout 60 gdb -p %d -batch -ex 'thread apply all bt' 2>&1 | "
	         "grep -E '^(Thread|#)' | head -150 >&2",
	         (int)s->pid);
	fprintf(stderr, "---- kv-server %d stacks ----\n", (int)s->pid);
	if (system(cmd) != 0)
		fprintf(stderr, "(gdb could not attach)\n");
	fprintf(stderr, "---- end ----\n");
}

/* Start kv-server with @provider and extra arguments (NULL-terminated),
 * on s->port if set (restart) or a fresh port; wait until it listens. */
static inline void srv_start_args(struct srv *s, const char *provider, const char *memory,
                                  const char *const *extra)
{
	const char *bin = getenv("KV_SERVER");
	const char *argv[40];
	char listen[48];
	int argc = 0, logfd;
	off_t start;

	if (!bin)
		cr_skip_test("KV_SERVER is not set (run through meson test)");
	if (!s->port)
		s->port = test_free_port();
	snprintf(s->addr, sizeof(s->addr), "%s:%u", s->host ? s->host : "127.0.0.1", s->port);
	snprintf(s->log, sizeof(s->log), "/tmp/kvfs-test-client-%d-%u.log", (int)getpid(), s->port);
	snprintf(s->provider, sizeof(s->provider), "%s", provider);
	snprintf(listen, sizeof(listen), "%s", s->addr);
	if (s->netns) { /* ip execs the server: s->pid is the server's */
		argv[argc++] = "ip";
		argv[argc++] = "netns";
		argv[argc++] = "exec";
		argv[argc++] = s->netns;
	}
	argv[argc++] = bin;
	argv[argc++] = "--listen";
	argv[argc++] = listen;
	argv[argc++] = "--memory";
	argv[argc++] = memory ? memory : "256M";
	argv[argc++] = "--provider";
	argv[argc++] = provider;
	for (int i = 0; extra && extra[i] && argc < 38; i++)
		argv[argc++] = extra[i];
	argv[argc] = NULL;

	logfd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	cr_assert_geq(logfd, 0);
	start = lseek(logfd, 0, SEEK_END);
	s->pid = fork();
	cr_assert_geq(s->pid, 0);
	if (s->pid == 0) {
		int null = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
		dup2(null, 0);
		dup2(null, 1);
		dup2(logfd, 2);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(logfd);
	for (int i = 0; i < 3000; i++) { /* 30 s */
		char buf[8192];
		int fd = open(s->log, O_RDONLY);
		ssize_t n = 0;
		int status;

		if (fd >= 0) {
			n = pread(fd, buf, sizeof(buf) - 1, start);
			close(fd);
		}
		if (n > 0) {
			buf[n] = '\0';
			if (strstr(buf, "kv-server: listening on"))
				return;
		}
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			srv_dump_log(s);
			s->pid = 0;
			cr_assert_fail("kv-server (%s) exited before listening (status 0x%x)",
			               provider, status);
		}
		usleep(10000);
	}
	srv_dump_log(s);
	cr_assert_fail("kv-server did not report listening within 30 s");
}

static inline void srv_start(struct srv *s, const char *provider)
{
	srv_start_args(s, provider, NULL, NULL);
}

/* SIGTERM: must exit 0 within 20 s. */
static inline void srv_stop(struct srv *s)
{
	int status = 0;

	if (s->pid <= 0)
		return;
	kill(s->pid, SIGTERM);
	for (int i = 0; i < 2000; i++) {
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			s->pid = 0;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
				srv_dump_log(s);
			cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			          "kv-server: SIGTERM should exit 0 (status 0x%x)", status);
			return;
		}
		usleep(10000);
	}
	kill(s->pid, SIGKILL);
	waitpid(s->pid, &status, 0);
	s->pid = 0;
	srv_dump_log(s);
	cr_expect_fail("kv-server did not exit within 20 s of SIGTERM");
}

static inline void srv_kill(struct srv *s)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	s->pid = 0;
}

/* Stop it; its log goes too, unless KVFS_TEST_KEEP_LOGS is set (to read a
 * rare failure's whole server log, not only the tail a test prints). */
static inline void srv_done(struct srv *s)
{
	srv_stop(s);
	if (!getenv("KVFS_TEST_KEEP_LOGS"))
		unlink(s->log);
}

/* ------------------------------------------------------------------ */
/* Clients and data                                                    */
/* ------------------------------------------------------------------ */

static inline struct kvc *connect_opts(const struct srv *s, const char *provider, int timeout_ms,
                                       const char *token_file)
{
	struct kvc_opts o;
	struct kvc *kvc = NULL;
	int r;

	kvc_opts_init(&o);
	o.server = s->addr;
	o.provider = provider;
	o.timeout_ms = timeout_ms;
	o.auth_token_file = token_file;
	r = kvc_connect(&o, &kvc);
	if (r)
		srv_dump_log(s);
	cr_assert_eq(r, 0, "kvc_connect(%s, %s): %s", s->addr, provider, kvc_strerror());
	return kvc;
}

static inline struct kvc *connect_to(const struct srv *s, const char *provider)
{
	return connect_opts(s, provider, 60000, NULL);
}

/* Deterministic bytes: value @seed at offset @i. */
static inline void fill(void *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1, *p = buf;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		*p++ = x;
	}
	for (; i < len; i++)
		((uint8_t *)buf)[i] = (uint8_t)(seed + i);
}

static inline void *xmalloc(size_t len)
{
	void *p = malloc(len ? len : 1);

	cr_assert_not_null(p);
	return p;
}

/* Compare and say where the first difference is. */
static inline void check_bytes(const void *got, const void *want, size_t len, const char *what)
{
	if (memcmp(got, want, len) == 0)
		return;
	for (size_t i = 0; i < len; i++) {
		if (((const uint8_t *)got)[i] != ((const uint8_t *)want)[i])
			cr_assert_fail("%s: first difference at byte %zu of %zu", what, i, len);
	}
}

/* ------------------------------------------------------------------ */
/* STATS counters and raw connections                                  */
/* ------------------------------------------------------------------ */

struct cnt {
	const char *name;
	uint64_t value;
	bool found;
};

static inline void cnt_cb(void *arg, const char *name, uint64_t value)
{
	struct cnt *c = arg;

	if (!strcmp(name, c->name)) {
		c->value = value;
		c->found = true;
	}
}

static inline uint64_t counter(struct kvc *kvc, const char *name)
{
	struct cnt c = {.name = name};

	cr_assert_eq(kvc_stats(kvc, cnt_cb, &c), 0, "STATS: %s", kvc_strerror());
	cr_assert(c.found, "no counter %s", name);
	return c.value;
}

/* A raw TCP connection to the server; reads (and drops) its ServerHello. */
static inline int raw_connect(const struct srv *s)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(s->port)};
	uint8_t buf[256];
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_gt(recv(fd, buf, sizeof(buf), 0), 0, "no ServerHello");
	return fd;
}

/* The server closes @fd: recv returns 0 (or ECONNRESET) within 10 s. */
static inline void expect_closed(int fd, const char *what)
{
	uint8_t buf[4096];
	ssize_t n;

	do {
		n = recv(fd, buf, sizeof(buf), 0);
	} while (n > 0);
	cr_assert(n == 0 || errno == ECONNRESET, "%s: connection not closed (%s)", what,
	          n < 0 ? strerror(errno) : "data");
	close(fd);
}

#endif
