/* SPDX-License-Identifier: MIT */
/*
 * A free TCP port on loopback for a test's kv-server: the kernel picks one
 * (bind to port 0), so test programs running side by side never collide.
 */
#ifndef KVFS_TEST_PORT_H
#define KVFS_TEST_PORT_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

static inline uint16_t test_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint16_t port = 0;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port ? port : (uint16_t)(20000 + getpid() % 20000);
}

#endif /* KVFS_TEST_PORT_H */
