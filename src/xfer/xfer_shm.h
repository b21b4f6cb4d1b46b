/* SPDX-License-Identifier: MIT */
/*
 * What the libfabric back-end does about shm peers that die (xfer_shm.c).
 * All of it is about one provider weakness; see the comment there.
 */
#ifndef KVFS_XFER_SHM_H
#define KVFS_XFER_SHM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct shm_peers;

/* Remove /dev/shm regions of processes that no longer exist. */
void shm_reap_stale(void);

/* The table of shm peers (pid and region name by fi_addr).  Writers
 * (note, forget, unwedge) are serialized by the caller; shm_peer_dead()
 * may run beside them. */
struct shm_peers *shm_peers_new(void);
void shm_peers_free(struct shm_peers *t);
/* Remember our own address ("fi_shm://PID:..."): its region's lock too
 * can be left held by a peer that dies. */
void shm_self_note(struct shm_peers *t, const void *addr, size_t len);
/* Remember the peer at @fa from the address it sent ("fi_shm://PID:..."). */
void shm_peer_note(struct shm_peers *t, uint64_t fa, const void *addr, size_t len);
void shm_peer_forget(struct shm_peers *t, uint64_t fa);
/* Does the peer's process no longer exist?  Cheap: one kill(pid, 0). */
bool shm_peer_dead(const struct shm_peers *t, uint64_t fa);
/* Release the region lock of every peer whose process has exited (or is a
 * zombie) while holding it.  Returns how many locks were released. */
int shm_unwedge(struct shm_peers *t);

/*
 * Our own region's lock, left held by a peer that died posting to us
 * (xfer_shm.c says when that is safe to conclude).  In three steps, so
 * that the wait holds no lock of the caller's:
 *  - shm_self_suspect() (serialized with the writers): 0 if our lock is
 *    free or nothing suggests a dead holder; else the number of dead
 *    peers, their pids in @dead (up to @max);
 *  - shm_self_wait() (alone): spins on the lock for up to @ms, as a
 *    waiter would; true if it got it (a live holder);
 *  - shm_self_release() (serialized): the dead peers are accounted for,
 *    and the lock is released if @held (the wait never got it).  Returns
 *    how many locks it released (0 or 1).
 */
#define SHM_SELF_WAIT_MS 1000
int shm_self_suspect(struct shm_peers *t, pid_t *dead, int max);
bool shm_self_wait(struct shm_peers *t, unsigned ms);
int shm_self_release(struct shm_peers *t, const pid_t *dead, int n, bool held);

/*
 * Map the header of region @name (no "fi_shm://" prefix) and return its
 * spin lock, or NULL with errno: ENOENT (no such region), EPROTO (a
 * layout this code does not know), ESRCH (the region is not @pid's).
 * Release with shm_lock_unmap().  Exposed for the test peer, which uses
 * it to hold its own lock as libfabric's progress does.
 */
pthread_spinlock_t *shm_lock_map(const char *name, pid_t pid);
void shm_lock_unmap(pthread_spinlock_t *lock);

#endif /* KVFS_XFER_SHM_H */
