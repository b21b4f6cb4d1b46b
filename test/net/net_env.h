/* SPDX-License-Identifier: MIT */
/*
 * Network faults between two "hosts": this namespace and the one that
 * test/netns-wrap made (KVFS_NETNS, joined by a veth pair; KVFS_HOST_ADDR is
 * our end, KVFS_PEER_ADDR the other).  scripts/netns cuts, heals, delays and
 * slows the link.  Every test leaves the link healed and clear (.fini).
 */
#ifndef KVFS_TEST_NET_ENV_H
#define KVFS_TEST_NET_ENV_H

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

/* Hang check: a call may end this much after its deadline (a loaded 2-CPU
 * machine shared with other test runs, sanitizers). */
#define NET_SLACK_MS 3000

static inline uint64_t net_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline const char *net_ns(void)
{
	const char *ns = getenv("KVFS_NETNS");

	if (!ns || !getenv("KVFS_PEER_ADDR") || !getenv("NETNS_SH"))
		cr_skip_test("KVFS_NETNS/KVFS_PEER_ADDR/NETNS_SH unset: run through meson test "
		             "(test/netns-wrap)");
	return ns;
}

/* scripts/netns @verb NS [args]: its exit status. */
__attribute__((format(printf, 2, 3))) static inline int net_sh(const char *verb, const char *fmt,
                                                               ...)
{
	char cmd[512], args[128] = "";
	va_list ap;
	int st;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(args, sizeof(args), fmt, ap);
		va_end(ap);
	}
	snprintf(cmd, sizeof(cmd), "%s %s %s %s", getenv("NETNS_SH"), verb, net_ns(), args);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline void net_cut(void)
{
	cr_assert_eq(net_sh("cut", NULL), 0, "scripts/netns cut failed");
}

static inline void net_heal(void)
{
	cr_assert_eq(net_sh("heal", NULL), 0, "scripts/netns heal failed");
}

/* netem delay (and loss): skips the test when the kernel has no netem. */
static inline void net_delay(int ms, int loss_pct)
{
	int r = loss_pct ? net_sh("delay", "%d %d 2>&1", ms, loss_pct)
	                 : net_sh("delay", "%d 2>&1", ms);

	if (r == 3)
		cr_skip_test("tc netem is not available in this kernel (CONFIG_NET_SCH_NETEM; "
		             "modprobe sch_netem)");
	cr_assert_eq(r, 0, "scripts/netns delay failed");
}

/* Undo cut, delay and rate: every test's .fini. */
static inline void net_restore(void)
{
	if (!getenv("KVFS_NETNS") || !getenv("NETNS_SH"))
		return;
	net_sh("clear", NULL);
	net_sh("heal", NULL);
}

#endif
