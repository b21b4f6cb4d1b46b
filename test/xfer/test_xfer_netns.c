/* SPDX-License-Identifier: MIT */
/*
 * Two hosts: the transfer engine between this namespace and a peer inside a
 * network namespace joined by a veth pair (198.18.0.0/15), over tcp.
 * Run by test/netns-wrap, which creates the namespace (or exits 77 when it
 * cannot) and passes KVFS_NETNS, KVFS_HOST_ADDR and KVFS_PEER_ADDR.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "xfer_child.h"

static void two_hosts(size_t size)
{
	const char *ns = getenv("KVFS_NETNS");

	cr_assert_not_null(ns, "KVFS_NETNS unset: run through meson test");
	two_process(ns, "tcp", getenv("KVFS_PEER_ADDR"), getenv("KVFS_HOST_ADDR"), size);
}

Test(xfer_netns, two_hosts_tcp, .timeout = 180)
{
	two_hosts(16 * 1024 * 1024 + 3);
}

Test(xfer_netns, two_hosts_256mib, .timeout = 180)
{
	two_hosts(256 * 1024 * 1024);
}
