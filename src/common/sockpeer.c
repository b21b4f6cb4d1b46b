/* SPDX-License-Identifier: MIT */
/*
 * kvfs sockpeer: see src/include/kvfs/sockpeer.h.
 *
 * The other end of our socket is the socket whose local address is our
 * peer address and whose remote address is our local address.  The
 * kernel's TCP table (/proc/net/tcp, tcp6) gives that socket's inode, and
 * a process holds the socket iff one of its descriptors links to
 * "socket:[INODE]".
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvfs/sockpeer.h"

/* An address as /proc/net/tcp{,6} prints it: the raw 32-bit words of the
 * address in %08X (host order of the network-order bytes), ":", the port. */
static int proc_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

		snprintf(buf, len, "%08X:%04X", (unsigned)a->sin_addr.s_addr, ntohs(a->sin_port));
		return 0;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		uint32_t w[4];

		memcpy(w, &a->sin6_addr, sizeof(w));
		snprintf(buf, len, "%08X%08X%08X%08X:%04X", (unsigned)w[0], (unsigned)w[1],
		         (unsigned)w[2], (unsigned)w[3], ntohs(a->sin6_port));
		return 0;
	}
	return -ENOTCONN;
}

/* Inode of the socket in @table whose local address is @local and remote
 * address @remote; 0 when there is none. */
static unsigned long find_inode(const char *table, const char *local, const char *remote)
{
	char line[512], la[64], ra[64];
	unsigned long inode, found = 0;
	FILE *f = fopen(table, "re");

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		/* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
		if (sscanf(line, " %*s %63s %63s %*s %*s %*s %*s %*s %*s %lu", la, ra, &inode) != 3)
			continue;
		if (!strcmp(la, local) && !strcmp(ra, remote))
			found = inode;
	}
	fclose(f);
	return found;
}

int kv_sock_peer_is_pid(int fd, pid_t pid)
{
	struct sockaddr_storage us, them;
	socklen_t ul = sizeof(us), tl = sizeof(them);
	char local[64], remote[64], dir[64], want[64];
	unsigned long inode;
	struct dirent *de;
	bool held = false;
	DIR *d;

	if (getsockname(fd, (struct sockaddr *)&us, &ul) ||
	    getpeername(fd, (struct sockaddr *)&them, &tl))
		return -ENOTCONN;
	/* The other end's local address is our peer address, and so on. */
	if (proc_addr(&them, local, sizeof(local)) || proc_addr(&us, remote, sizeof(remote)))
		return -ENOTCONN;
	inode = find_inode(us.ss_family == AF_INET ? "/proc/net/tcp" : "/proc/net/tcp6", local,
	                   remote);
	if (!inode)
		return -ESRCH;
	if (pid <= 0)
		return 0;
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -EACCES;
	snprintf(want, sizeof(want), "socket:[%lu]", inode);
	while (!held && (de = readdir(d))) {
		char link[64];
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		n = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		held = !strcmp(link, want);
	}
	closedir(d);
	return held;
}
