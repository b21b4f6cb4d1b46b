/* SPDX-License-Identifier: MIT */
/* kv_sock_peer_is_pid(): who holds the other end of a loopback connection. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvfs/sockpeer.h"

/* A listening socket on loopback (@family) and a connection to it:
 * *ret_srv is the accepted end, *ret_cli the connecting end. */
static void pair(int family, int *ret_srv, int *ret_cli)
{
	struct sockaddr_storage ss = {0};
	socklen_t len;
	int l, c, s;

	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		len = sizeof(*a);
	}
	l = socket(family, SOCK_STREAM, 0);
	cr_assert_geq(l, 0);
	if (bind(l, (struct sockaddr *)&ss, len) != 0) {
		close(l);
		cr_skip_test("no loopback for family %d: %s", family, strerror(errno));
	}
	cr_assert_eq(getsockname(l, (struct sockaddr *)&ss, &len), 0);
	cr_assert_eq(listen(l, 1), 0);
	c = socket(family, SOCK_STREAM, 0);
	cr_assert_eq(connect(c, (struct sockaddr *)&ss, len), 0);
	s = accept(l, NULL, NULL);
	cr_assert_geq(s, 0);
	close(l);
	*ret_srv = s;
	*ret_cli = c;
}

static void holder_is_found(int family)
{
	int s, c, st;
	pid_t child;

	pair(family, &s, &c);
	cr_expect_eq(kv_sock_peer_is_pid(s, getpid()), 1, "we hold the client end");
	cr_expect_eq(kv_sock_peer_is_pid(c, getpid()), 1, "and the server end");

	/* A child that has its own copy of nothing: not the holder. */
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		close(s);
		close(c);
		pause();
		_exit(0);
	}
	usleep(50000);
	cr_expect_eq(kv_sock_peer_is_pid(s, child), 0, "a process without the socket");
	kill(child, SIGKILL);
	waitpid(child, &st, 0);
	cr_expect_eq(kv_sock_peer_is_pid(s, child), 0, "a process that is gone");

	/* Hand the client end to a child and drop ours: the child is the holder. */
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		close(s);
		pause();
		_exit(0);
	}
	close(c);
	cr_expect_eq(kv_sock_peer_is_pid(s, child), 1, "the child holds the client end");
	cr_expect_eq(kv_sock_peer_is_pid(s, getpid()), 0, "we no longer do");
	kill(child, SIGKILL);
	waitpid(child, &st, 0);
	close(s);
}

Test(sockpeer, ipv4)
{
	holder_is_found(AF_INET);
}
Test(sockpeer, ipv6)
{
	holder_is_found(AF_INET6);
}

Test(sockpeer, not_a_connection)
{
	int fds[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	cr_expect_eq(kv_sock_peer_is_pid(fds[0], getpid()), -ENOTCONN);
	close(fds[0]);
	close(fds[1]);
	cr_expect_eq(kv_sock_peer_is_pid(-1, getpid()), -ENOTCONN);
}
