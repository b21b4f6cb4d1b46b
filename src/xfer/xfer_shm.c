/* SPDX-License-Identifier: MIT */
/*
 * libfabric's shm provider and peers that die.
 *
 * shm keeps each endpoint's command queue in a region, /dev/shm/PID:UID:N,
 * guarded by a spin lock inside the region (struct smr_region,
 * include/ofi_shm.h in libfabric).  A sender takes the *receiver's* lock
 * for every post; a process takes its own lock each time it progresses,
 * which a client waiting for a transfer does all the time.  A process
 * SIGKILLed while it held its own lock leaves it held for good, and the
 * next post to it spins forever in pthread_spin_lock -- in the engine's
 * progress thread, which also enforces every deadline.
 *
 * The defences, cheapest first:
 *  - shm_reap_stale(): a region left by a killed process is removed (else
 *    a later process with the same pid cannot open shm: EBUSY), its lock
 *    released first if the process died holding it: a live peer may be
 *    spinning on it, and once the name is gone shm_unwedge() cannot open
 *    the region to release it (every kvfs and kv-server reaps at start);
 *  - shm_peer_dead(): before each post, the peer's process must exist
 *    (the engine also polls a pidfd when kv-server gave it one);
 *  - shm_unwedge(): the peer can still die after that check, holding the
 *    lock, while the post waits for it.  The engine's watchdog calls this
 *    when a provider call has not returned for a second: the lock of
 *    every peer whose process is gone is released, since its holder never
 *    will.  The post then goes on into the dead region and fails (the
 *    process_vm_writev to a dead pid), so the transfer ends in an error.
 *    This writes into libfabric's region header, whose layout is
 *    libfabric's: it acts only on the header version it knows (4:
 *    libfabric 1.17 and 1.18, same prefix) and only on a region whose
 *    header names the dead process.
 *  - shm_self_check(): our *own* region.  A sender holds the receiver's
 *    lock for the whole CMA copy of an RMA, so a kv-server SIGKILLed while
 *    writing into kvfs leaves kvfs's lock held.  kvfs itself does not
 *    notice (its progress takes its own lock only when signalled), but
 *    the next post to it -- the restarted server's first write -- spins
 *    for good.  A spin lock does not say who holds it, so the engine's
 *    watchdog, every tick, tries our lock once; only
 *    if it is taken, a process that was our peer has died since we last
 *    looked (each dead peer accounts for one release at most) and no live
 *    peer of ours is stopped (a stopped holder would come back for it),
 *    it spins on it for SHM_SELF_WAIT_MS as a waiter would.  A live
 *    holder lets go after each copy, so the spin gets it, most often
 *    within microseconds; if it never does, the dead peer held it, and it
 *    is released.
 *  - without CMA a peer that dies with pieces of our transfer posted never
 *    answers them, and libfabric holds every later completion behind them:
 *    the engine opens its endpoint anew (xfer.c, ep_reset()), and
 *    shm_peers_reset() forgets the table and our old region with it.
 *
 * Live peers hold our lock too, for every copy they make into us, and our
 * progress would spin on it meanwhile: shm_self_busy() lets the engine look
 * first and come back later (xfer_ofi.c, ofi_progress()).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvfs/log.h"
#include "kvfs/util.h"
#include "xfer_shm.h"

#define SHM_TAG          "xfer"
#define SHM_PREFIX       "fi_shm://"
#define SHM_MAX_PEERS    256 /* libfabric's SMR_MAX_PEERS: AV_TABLE indices stay below */
#define SHM_NAME_MAX     64  /* "PID:UID:N" */
#define SHM_GONE_MAX     16  /* forgotten peers still watched for our own lock */
#define SHM_SELF_WAIT_MS 1000
#define SHM_OLD_SELF_MAX 16 /* our regions before endpoint resets, still mapped */

/* The start of libfabric's struct smr_region, header version 4. */
struct shm_hdr_v4 {
	uint8_t version;
	uint8_t resv;
	uint16_t flags;
	int pid;
	uint8_t cma_cap_peer;
	uint8_t cma_cap_self;
	uint32_t max_sar_buf_per_peer;
	void *base_addr;
	pthread_spinlock_t lock; /* what "free" is depends on the C library's port */
};
#define SHM_HDR_VERSION 4
#define SHM_CMA_CAP_ON  1 /* libfabric's SMR_CMA_CAP_*: NA 0, ON 1, OFF 2 */
#define SHM_CMA_CAP_OFF 2

struct shm_peer {
	atomic_int pid; /* 0: no peer at this fi_addr */
	bool done;      /* shm_unwedge() released its lock or gave up on it: once */
	bool self_done; /* dead, and accounted for in a look at our own lock */
	char name[SHM_NAME_MAX];
};

/* A peer removed from the table: its process may still hold our lock. */
struct shm_gone {
	pid_t pid; /* 0: unused */
	bool self_done;
};

struct shm_peers {
	struct shm_peer p[SHM_MAX_PEERS];
	struct shm_gone gone[SHM_GONE_MAX];
	unsigned gone_next;
	char self[SHM_NAME_MAX];       /* our own region */
	pthread_spinlock_t *self_lock; /* its lock; NULL: not known, never touched */
	int spin_free;                 /* what a free spin lock holds (spin_free_value()) */
	/* The locks of our regions before shm_peers_reset(): the watchdog may
	 * still be looking at one, so they stay mapped until the end. */
	pthread_spinlock_t *old_self[SHM_OLD_SELF_MAX];
	unsigned nold;
};

static int spin_free_value(void);

/*
 * The process @pid of region @name is gone.  If it died holding the
 * region's lock, release it: its holder never will, and the next to take
 * it is a live peer's post spinning on it.  Returns 1 if released, 0 if
 * the lock was free, -errno if the region's header cannot be used
 * (-ENOENT: removed; -EPROTO: a layout this code does not know).  @why
 * ends the warning.
 */
static int release_dead_lock(const char *name, pid_t pid, int spin_free, const char *why)
{
	pthread_spinlock_t *lock = shm_lock_map(name, pid);
	int released = 0;

	if (!lock)
		return -errno;
	if (__atomic_load_n(lock, __ATOMIC_ACQUIRE) != spin_free) {
		pthread_spin_unlock(lock);
		released = 1;
		KV_WARN(SHM_TAG, "process %d died holding the lock of shm region %s: released it%s",
		        (int)pid, name, why);
	}
	shm_lock_unmap(lock);
	return released;
}

void shm_reap_stale(void)
{
	DIR *d = opendir("/dev/shm");
	const int spin_free = spin_free_value();
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		unsigned long pid, a, b;
		char tail;

		if (sscanf(de->d_name, "%lu:%lu:%lu%c", &pid, &a, &b, &tail) != 3 || pid == 0 ||
		    pid > 4194304)
			continue;
		if (kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
			/* Release first: once the name is gone, shm_unwedge()
			 * could no longer open the region to do it. */
			release_dead_lock(de->d_name, (pid_t)pid, spin_free,
			                  " before removing the region");
			if (unlinkat(dirfd(d), de->d_name, 0) == 0)
				KV_DEBUG(SHM_TAG, "removed stale shm region /dev/shm/%s",
				         de->d_name);
		}
	}
	closedir(d);
}

/* What a free spin lock holds: 1 on x86-64 glibc, 0 elsewhere. */
static int spin_free_value(void)
{
	pthread_spinlock_t l;

	pthread_spin_init(&l, PTHREAD_PROCESS_SHARED);
	return (int)l;
}

struct shm_peers *shm_peers_new(void)
{
	struct shm_peers *t = calloc(1, sizeof(*t));

	if (t)
		t->spin_free = spin_free_value();
	return t;
}

void shm_peers_free(struct shm_peers *t)
{
	if (!t)
		return;
	shm_lock_unmap(t->self_lock);
	for (unsigned i = 0; i < t->nold; i++)
		shm_lock_unmap(t->old_self[i]);
	free(t);
}

void shm_peers_reset(struct shm_peers *t)
{
	pthread_spinlock_t *old = __atomic_exchange_n(&t->self_lock, NULL, __ATOMIC_ACQ_REL);

	/* Past SHM_OLD_SELF_MAX resets an old header stays mapped for good:
	 * one page each, and unmapping it under the watchdog would fault. */
	if (old && t->nold < SHM_OLD_SELF_MAX)
		t->old_self[t->nold++] = old;
	for (size_t i = 0; i < SHM_MAX_PEERS; i++) {
		atomic_store_explicit(&t->p[i].pid, 0, memory_order_release);
		t->p[i].done = t->p[i].self_done = false;
	}
	memset(t->gone, 0, sizeof(t->gone));
	t->gone_next = 0;
	t->self[0] = '\0';
}

/* "fi_shm://PID:UID:N" (perhaps NUL-terminated) -> name "PID:UID:N" and
 * its pid; 0 if @addr is not one. */
static pid_t shm_addr_name(const void *addr, size_t len, char name[SHM_NAME_MAX])
{
	const size_t plen = sizeof(SHM_PREFIX) - 1;
	long pid;

	if (len <= plen || memcmp(addr, SHM_PREFIX, plen))
		return 0;
	len = strnlen((const char *)addr + plen, len - plen);
	if (len >= SHM_NAME_MAX)
		return 0;
	memcpy(name, (const char *)addr + plen, len);
	name[len] = '\0';
	pid = strtol(name, NULL, 10);
	return pid > 0 && pid <= 4194304 ? (pid_t)pid : 0;
}

pid_t shm_addr_pid(const void *addr, size_t len)
{
	char name[SHM_NAME_MAX];

	return shm_addr_name(addr, len, name);
}

int shm_addr_check(const void *addr, size_t len)
{
	char name[SHM_NAME_MAX];
	pthread_spinlock_t *lock;
	pid_t pid = shm_addr_name(addr, len, name);

	if (!pid || strchr(name, '/'))
		return -EINVAL;
	lock = shm_lock_map(name, pid);
	if (!lock)
		return errno == ENOENT ? -ENOENT : -EINVAL;
	shm_lock_unmap(lock);
	return 0;
}

void shm_self_note(struct shm_peers *t, const void *addr, size_t len)
{
	pthread_spinlock_t *lock;

	if (!shm_addr_name(addr, len, t->self))
		return;
	lock = shm_lock_map(t->self, getpid());
	__atomic_store_n(&t->self_lock, lock, __ATOMIC_RELEASE);
	if (!lock)
		KV_WARN(SHM_TAG,
		        "our shm region %s: %s; a lock a dead peer leaves in it will not be "
		        "released",
		        t->self, errno == EPROTO ? "unknown layout" : strerror(errno));
}

int shm_peer_cma(const struct shm_peers *t)
{
	const struct shm_hdr_v4 *h;

	if (!t || !t->self_lock)
		return -1;
	h = (const void *)((const char *)t->self_lock - offsetof(struct shm_hdr_v4, lock));
	switch (__atomic_load_n(&h->cma_cap_peer, __ATOMIC_RELAXED)) {
	case SHM_CMA_CAP_ON:
		return 1;
	case SHM_CMA_CAP_OFF:
		return 0;
	default:
		return -1;
	}
}

bool shm_self_busy(const struct shm_peers *t)
{
	if (!t || !t->self_lock)
		return false;
	return __atomic_load_n((const int *)t->self_lock, __ATOMIC_RELAXED) != t->spin_free;
}

void shm_peer_note(struct shm_peers *t, uint64_t fa, const void *addr, size_t len)
{
	char name[SHM_NAME_MAX];
	pid_t pid;

	if (fa >= SHM_MAX_PEERS || !(pid = shm_addr_name(addr, len, name)))
		return;
	memcpy(t->p[fa].name, name, sizeof(name));
	t->p[fa].done = false;
	t->p[fa].self_done = false;
	atomic_store_explicit(&t->p[fa].pid, (int)pid, memory_order_release);
}

void shm_peer_forget(struct shm_peers *t, uint64_t fa)
{
	struct shm_gone *g;
	pid_t pid;

	if (fa >= SHM_MAX_PEERS)
		return;
	pid = atomic_exchange_explicit(&t->p[fa].pid, 0, memory_order_acq_rel);
	if (pid <= 0 || t->p[fa].self_done)
		return;
	g = &t->gone[t->gone_next++ % SHM_GONE_MAX]; /* the oldest goes */
	g->pid = pid;
	g->self_done = false;
}

static bool pid_gone(pid_t pid)
{
	return kill(pid, 0) < 0 && errno == ESRCH;
}

bool shm_peer_dead(const struct shm_peers *t, uint64_t fa)
{
	pid_t pid;

	if (fa >= SHM_MAX_PEERS)
		return false;
	pid = atomic_load_explicit(&t->p[fa].pid, memory_order_acquire);
	return pid > 0 && pid_gone(pid);
}

/* The state letter of /proc/PID/stat ('R', 'S', 'T', 'Z', ...), 'X' if
 * the process is gone, '?' if it cannot be read. */
static char pid_state(pid_t pid)
{
	char path[32], buf[512], *p;
	ssize_t n;
	int fd;

	if (pid_gone(pid))
		return 'X';
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 'X' : '?';
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* "PID (comm) S ...": comm may hold anything */
	return p && p[1] == ' ' && p[2] ? p[2] : '?';
}

/* Gone, or a zombie: nothing of it runs any more.  (A process that is
 * still tearing down after SIGKILL shows up on a later call.) */
static bool pid_dead(pid_t pid)
{
	char c = pid_state(pid);

	return c == 'X' || c == 'Z' || c == 'x';
}

static bool pid_stopped(pid_t pid)
{
	char c = pid_state(pid);

	return c == 'T' || c == 't' || c == '?';
}

pthread_spinlock_t *shm_lock_map(const char *name, pid_t pid)
{
	struct shm_hdr_v4 *h;
	struct stat st;
	int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(*h)) {
		close(fd);
		errno = EPROTO; /* too short for a header: touching it would fault */
		return NULL;
	}
	h = mmap(NULL, sizeof(*h), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (h == MAP_FAILED)
		return NULL;
	if (h->version != SHM_HDR_VERSION || h->pid != pid) {
		errno = h->version != SHM_HDR_VERSION ? EPROTO : ESRCH;
		munmap(h, sizeof(*h));
		return NULL;
	}
	return &h->lock;
}

void shm_lock_unmap(pthread_spinlock_t *lock)
{
	if (lock)
		munmap((char *)lock - offsetof(struct shm_hdr_v4, lock), sizeof(struct shm_hdr_v4));
}

int shm_unwedge(struct shm_peers *t)
{
	int released = 0;

	for (size_t i = 0; i < SHM_MAX_PEERS; i++) {
		pid_t pid = atomic_load_explicit(&t->p[i].pid, memory_order_acquire);
		int r;

		if (pid <= 0 || t->p[i].done || !pid_dead(pid))
			continue;
		/* The next to take it is our own waiting post, so release it
		 * only this once. */
		r = release_dead_lock(t->p[i].name, pid, t->spin_free, "");
		if (r == -EPROTO) {
			t->p[i].done = true;
			KV_WARN(SHM_TAG, "shm region %s: unknown layout, lock not released",
			        t->p[i].name);
		} else if (r == 1) {
			t->p[i].done = true;
			released++;
		}
	}
	return released;
}

/* Peers and removed peers alike, by index below SHM_MAX_PEERS +
 * SHM_GONE_MAX: the pid (0: none) and the flag saying it is accounted for
 * in a look at our own lock. */
static pid_t watched(struct shm_peers *t, size_t i, bool **self_done)
{
	if (i < SHM_MAX_PEERS) {
		*self_done = &t->p[i].self_done;
		return atomic_load_explicit(&t->p[i].pid, memory_order_acquire);
	}
	*self_done = &t->gone[i - SHM_MAX_PEERS].self_done;
	return t->gone[i - SHM_MAX_PEERS].pid;
}

/* Dead peers not yet accounted for, their pids in @dead; 0 if there are
 * none or a live peer is stopped (it may hold our lock and come back). */
static int dead_suspects(struct shm_peers *t, pid_t *dead, int max)
{
	int n = 0;

	for (size_t i = 0; i < SHM_MAX_PEERS + SHM_GONE_MAX; i++) {
		bool *done;
		pid_t pid = watched(t, i, &done);

		if (pid <= 0 || *done)
			continue;
		if (pid_dead(pid)) {
			if (n < max)
				dead[n++] = pid;
		} else if (pid_stopped(pid)) {
			return 0;
		}
	}
	return n;
}

/* Spin on @lock for up to @ms as a waiter would, reading first and taking
 * only what looks free (@fresh: what a free lock holds).  A live holder
 * lets go between two posts, perhaps for well under a microsecond.
 * Returns the nanoseconds it took to get the lock (and let it go), or
 * UINT64_MAX if it never did. */
static uint64_t spin_until_free(pthread_spinlock_t *lock, int fresh, unsigned ms)
{
	uint64_t start = kv_now_ns(), end = start + (uint64_t)ms * 1000000;

	for (unsigned i = 1;; i++) {
		if (__atomic_load_n(lock, __ATOMIC_RELAXED) == fresh &&
		    pthread_spin_trylock(lock) == 0) {
			pthread_spin_unlock(lock);
			return kv_now_ns() - start;
		}
		if (i % 4096 == 0) {
			if (kv_now_ns() >= end)
				return UINT64_MAX;
			sched_yield(); /* the holder may want this CPU */
		}
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	}
}

int shm_self_check(struct shm_peers *t, pthread_mutex_t *writers)
{
	/* Read once: an endpoint reset may put a new region in its place. */
	pthread_spinlock_t *lock = __atomic_load_n(&t->self_lock, __ATOMIC_ACQUIRE);
	pid_t dead[8];
	uint64_t waited;
	int n;

	if (!lock)
		return 0;
	if (pthread_spin_trylock(lock) == 0) {
		pthread_spin_unlock(lock); /* free: nothing to do */
		return 0;
	}
	pthread_mutex_lock(writers);
	n = dead_suspects(t, dead, (int)KV_ARRAY_SIZE(dead));
	pthread_mutex_unlock(writers);
	if (n == 0)
		return 0;

	/* without the writers' lock: the table may change meanwhile */
	waited = spin_until_free(lock, t->spin_free, SHM_SELF_WAIT_MS);

	/* Held or not, these dead peers are accounted for: a dead process
	 * takes no lock, and holds at most the one it had. */
	pthread_mutex_lock(writers);
	for (size_t i = 0; i < SHM_MAX_PEERS + SHM_GONE_MAX; i++) {
		bool *done;
		pid_t pid = watched(t, i, &done);

		for (int j = 0; j < n && pid > 0; j++)
			if (pid == dead[j])
				*done = true;
	}
	pthread_mutex_unlock(writers);
	if (waited != UINT64_MAX) {
		KV_DEBUG(SHM_TAG,
		         "our shm region %s was locked after peer process %d died; a live "
		         "holder let go after %llu us: left alone",
		         t->self, (int)dead[0], (unsigned long long)(waited / 1000));
		return 0;
	}
	pthread_spin_unlock(lock);
	KV_WARN(SHM_TAG,
	        "our shm region %s stayed locked for %d ms after peer process %d%s died: "
	        "released the lock",
	        t->self, SHM_SELF_WAIT_MS, (int)dead[0], n > 1 ? " (or another)" : "");
	return 1;
}
