/* SPDX-License-Identifier: MIT */
/*
 * flood ADDR PORT N SECONDS: an attacker's idle sockets.  Keeps N TCP
 * connections to ADDR:PORT open without ever sending a byte, reopening each
 * one the server closes, for SECONDS (or until killed); then prints how
 * many it reopened.  The net tests run it in the other namespace, so that
 * its connections come from another host than the clients'.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int open_one(const struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (const struct sockaddr *)a, sizeof(*a)) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	struct rlimit rl;
	unsigned long n, reopened = 0;
	time_t end;
	int *fd;

	if (argc != 5 || inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) {
		fprintf(stderr, "usage: flood ADDR PORT N SECONDS\n");
		return 2;
	}
	a.sin_port = htons((uint16_t)atoi(argv[2]));
	n = strtoul(argv[3], NULL, 10);
	end = time(NULL) + atol(argv[4]);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < n + 64) {
		rl.rlim_cur = rl.rlim_max < n + 64 ? rl.rlim_max : n + 64;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	fd = calloc(n, sizeof(*fd));
	if (!fd)
		return 1;
	for (unsigned long i = 0; i < n; i++)
		fd[i] = open_one(&a);
	while (time(NULL) < end) {
		for (unsigned long i = 0; i < n; i++) {
			char buf[256];
			ssize_t r = fd[i] < 0 ? 0 : recv(fd[i], buf, sizeof(buf), MSG_DONTWAIT);

			if (fd[i] >= 0 && (r > 0 || (r < 0 && errno == EAGAIN)))
				continue; /* open: its ServerHello, or nothing yet */
			if (fd[i] >= 0)
				close(fd[i]);
			fd[i] = open_one(&a);
			reopened++;
		}
		usleep(20000);
	}
	printf("%lu\n", reopened);
	return 0;
}
