/* SPDX-License-Identifier: MIT */
/* Two-process helpers for the xfer tests: start xfer_peer (optionally in a
 * network namespace), talk to it, and run a verified write/read exchange. */
#ifndef KVFS_XFER_CHILD_H
#define KVFS_XFER_CHILD_H

#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvfs/log.h"
#include "xfer_test.h"

#ifndef ACC_ALL
#define ACC_ALL (XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ | XFER_ACCESS_REMOTE_WRITE)
#endif

struct child {
	pid_t pid;
	FILE *in, *out; /* to / from the peer */
	uint8_t addr[XFER_ADDR_MAX];
	size_t alen;
	struct xfer_desc desc;
};

static const char *peer_path(void)
{
	const char *p = getenv("XFER_PEER");

	cr_assert_not_null(p, "XFER_PEER not set (run through meson test)");
	return p;
}

/* Start xfer_peer, optionally prefixed by "ip netns exec NS". */
static void child_start(struct child *c, const char *netns, const char *prov, const char *node,
                        uint64_t size, uint64_t seed)
{
	int to[2], from[2];
	char sz[32], sd[32], line[512], hex[2 * XFER_ADDR_MAX + 2];

	cr_assert_eq(pipe(to), 0);
	cr_assert_eq(pipe(from), 0);
	snprintf(sz, sizeof(sz), "%" PRIu64, size);
	snprintf(sd, sizeof(sd), "%" PRIu64, seed);
	c->pid = fork();
	cr_assert_geq(c->pid, 0);
	if (c->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* even if stopped: never outlive a failed test */
		dup2(to[0], 0);
		dup2(from[1], 1);
		close(to[1]);
		close(from[0]);
		if (netns)
			execlp("ip", "ip", "netns", "exec", netns, peer_path(), prov, node, sz, sd,
			       (char *)NULL);
		else
			execl(peer_path(), peer_path(), prov, node, sz, sd, (char *)NULL);
		_exit(127);
	}
	close(to[0]);
	close(from[1]);
	c->in = fdopen(to[1], "w");
	c->out = fdopen(from[0], "r");
	setvbuf(c->in, NULL, _IOLBF, 0);
	cr_assert_not_null(fgets(line, sizeof(line), c->out), "peer did not start");
	cr_assert_eq(sscanf(line, "PEER %257s %" SCNu64 " %" SCNu64 " %" SCNu64, hex, &c->desc.addr,
	                    &c->desc.len, &c->desc.key),
	             4, "bad peer line: %s", line);
	int n = hex_decode(hex, c->addr, sizeof(c->addr));
	cr_assert_gt(n, 0);
	c->alen = (size_t)n;
}

static void child_expect(struct child *c, const char *cmd, const char *want)
{
	char line[128];

	fprintf(c->in, "%s\n", cmd);
	cr_assert_not_null(fgets(line, sizeof(line), c->out), "peer died");
	cr_assert_eq(strncmp(line, want, strlen(want)), 0, "peer answered %s to %s", line, cmd);
}

static void child_stop(struct child *c)
{
	int st;

	fprintf(c->in, "QUIT\n");
	fclose(c->in);
	fclose(c->out);
	cr_assert_eq(waitpid(c->pid, &st, 0), c->pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "peer exit status %d", st);
}

/* Write a pattern into the peer, have the peer verify it, read back. */
static void two_process(const char *netns, const char *prov, const char *peer_node,
                        const char *my_node, size_t size)
{
	struct xfer_opts o;
	struct xfer_engine *e;
	struct xfer_mr *buf;
	struct child c;
	xfer_peer_t peer;
	char cmd[64];
	int r;

	kv_log_level = KV_LOG_WARN;
	child_start(&c, netns, prov, peer_node, size, 1);
	xfer_opts_init(&o);
	o.provider = prov;
	o.node = my_node;
	o.timeout_ms = 10000;
	cr_assert_eq(xfer_open(&o, &e), 0);
	cr_assert_eq(xfer_peer_add(e, c.addr, c.alen, &peer), 0);
	cr_assert_eq(xfer_buf_alloc(e, size, ACC_ALL, &buf), 0);

	struct one_xfer x;

	one_xfer_init(&x, peer, XFER_READ, buf, 0, &c.desc, 0, size);
	r = xfer_submit_wait(e, &x.op);
	cr_assert_eq(r, 0, "read from peer: %s", strerror(-r));
	cr_assert_eq(pat_check(xfer_mr_addr(buf), size, 1), -1, "read bytes differ");

	pat_fill(xfer_mr_addr(buf), size, 2);
	x.op.opcode = XFER_WRITE;
	r = xfer_submit_wait(e, &x.op);
	cr_assert_eq(r, 0, "write to peer: %s", strerror(-r));
	snprintf(cmd, sizeof(cmd), "CHECK 2");
	child_expect(&c, cmd, "OK");

	/* An immediate reaches the peer process after the bytes. */
	x.op.has_imm = true;
	x.op.imm = 31337;
	cr_assert_eq(xfer_submit_wait(e, &x.op), 0);
	char line[64];
	cr_assert_not_null(fgets(line, sizeof(line), c.out));
	cr_assert_str_eq(line, "IMM 31337\n");

	child_stop(&c);
	xfer_mr_dereg(buf);
	xfer_close(e);
}

Test(xfer_tcp, two_processes, .timeout = 120)
{
	two_process(NULL, "tcp", "-", NULL, 32 * 1024 * 1024 + 5);
}

Test(xfer_shm, two_processes, .timeout = 120)
{
	two_process(NULL, "shm", "-", NULL, 32 * 1024 * 1024 + 5);
}

#endif
