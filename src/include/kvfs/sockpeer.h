/* SPDX-License-Identifier: MIT */
/*
 * kvfs sockpeer: which local process holds the other end of a TCP
 * connection.  kv-server uses it before it adds a shm peer: the engine
 * address a client sends names a process ("fi_shm://PID:..."), and only the
 * process at the other end of that client's own control connection may be
 * named (never the server itself, never a third process).
 *
 * Reads /proc (the TCP table of the caller's network namespace, and the
 * named process's descriptors), so it answers only for a peer on this host,
 * in this network namespace, whose /proc/PID/fd the caller may read (same
 * user, or root).  Reentrant; allocation-free; nothing here logs.
 */
#ifndef KVFS_SOCKPEER_H
#define KVFS_SOCKPEER_H

#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Does process @pid hold the other end of the connected TCP socket @fd?
 * Returns 1 yes, 0 no (another process, or @pid does not exist), or a
 * negative errno when it cannot tell: -ENOTCONN (@fd is not a connected
 * TCP socket), -ESRCH (the other end is not a socket of this host and
 * network namespace), -EACCES (@pid's descriptors cannot be read).
 */
int kv_sock_peer_is_pid(int fd, pid_t pid);

#ifdef __cplusplus
}
#endif
#endif /* KVFS_SOCKPEER_H */
