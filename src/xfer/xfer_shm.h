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

/* Remove /dev/shm regions of processes that no longer exist, releasing
 * the lock of one whose process died holding it (a peer may spin on it). */
void shm_reap_stale(void);

/* The table of shm peers (pid and region name by fi_addr).  Writers
 * (note, forget, unwedge) are serialized by the caller; shm_peer_dead()
 * may run beside them. */
struct shm_peers *shm_peers_new(void);
void shm_peers_free(struct shm_peers *t);
/* Forget every peer and our own region: the endpoint was opened anew (an
 * empty address vector, a new region).  Note the new address next. */
void shm_peers_reset(struct shm_peers *t);
/* Remember our own address ("fi_shm://PID:..."): its region's lock too
 * can be left held by a peer that dies. */
void shm_self_note(struct shm_peers *t, const void *addr, size_t len);
/* The process an address "fi_shm://PID:..." names; 0 if it is not one. */
pid_t shm_addr_pid(const void *addr, size_t len);
/* Before an address a peer sent reaches the provider: is it a live shm
 * region of the process it names ("fi_shm://PID:..." whose header is of
 * the layout this code knows, written by that PID)?  libfabric 1.17 maps
 * whatever /dev/shm object an address names and trusts what it finds
 * there (a foreign object crashed kv-server in fi_av_insert).  0, -EINVAL
 * (not such an address or region), -ENOENT (no such region). */
int shm_addr_check(const void *addr, size_t len);
/* Remember the peer at @fa from the address it sent ("fi_shm://PID:..."). */
void shm_peer_note(struct shm_peers *t, uint64_t fa, const void *addr, size_t len);
void shm_peer_forget(struct shm_peers *t, uint64_t fa);
/* Does the peer's process no longer exist?  Cheap: one kill(pid, 0). */
bool shm_peer_dead(const struct shm_peers *t, uint64_t fa);
/* Release the region lock of every peer whose process has exited (or is a
 * zombie) while holding it.  Returns how many locks were released. */
int shm_unwedge(struct shm_peers *t);

/*
 * Our own region's lock, left held by a peer that died posting to us:
 * release it if that is safe to conclude (xfer_shm.c says when).  Takes
 * @writers (what serializes note, forget and unwedge) for the table, and
 * may then spin up to a second without it.  Returns 1 if it released the
 * lock, else 0.
 */
int shm_self_check(struct shm_peers *t, pthread_mutex_t *writers);

/*
 * May the peers copy into our memory themselves (process_vm_writev)?  As
 * libfabric's shm records it in our region (cma_cap_peer, set by the first
 * peer that connects): 1 yes, 0 no, -1 not known (no peer yet, or a layout
 * this code does not know).  With CMA an RMA write into us needs none of
 * our progress, unless it carries immediate data; without it, the bytes
 * go through our queue, and a write completes at the initiator when they
 * are put there, not when they land.
 */
int shm_peer_cma(const struct shm_peers *t);

/*
 * Is our own region's lock held right now?  A peer holds it for the whole
 * CMA copy of an RMA into us (libfabric 1.17's smr_generic_rma), and our
 * progress, once signalled, takes it: progress then spins as long as the
 * copy lasts, on the CPU the copy needs.  A look, not a lock: false when
 * the layout is not known.
 */
bool shm_self_busy(const struct shm_peers *t);

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
