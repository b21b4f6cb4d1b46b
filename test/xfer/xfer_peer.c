/* SPDX-License-Identifier: MIT */
/*
 * Passive peer for the two-process and two-host xfer tests.
 *   xfer_peer PROVIDER NODE|- SIZE SEED
 * Registers SIZE bytes (remote read+write) filled with pattern SEED, prints
 *   PEER <addr-hex> <desc.addr> <desc.len> <desc.key>
 * and then answers stdin commands:
 *   CHECK <seed>  -> "OK" or "BAD <offset>"  (buffer holds that pattern?)
 *   LOCK          -> "LOCKED" (shm: takes the spin lock of our own region
 *                    and keeps it, as libfabric's progress does for a moment:
 *                    a peer killed now dies holding it) or "NOLOCK <why>"
 *   LOCKPEER <hex> -> the same for the region of the engine at address
 *                    <hex> (as a peer posting to it holds that lock)
 *   REAP          -> "REAPED" (shm_reap_stale(): removes the regions of dead
 *                    processes, as every kvfs and kv-server does at start)
 *   QUIT or EOF   -> exit 0
 * Immediates received are printed as "IMM <value>".
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvfs/log.h"
#include "xfer_shm.h"
#include "xfer_test.h"

static void on_imm(void *arg, uint32_t imm)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "IMM %u\n", imm);

	(void)arg;
	if (write(STDOUT_FILENO, line, (size_t)n) < 0)
		exit(1);
}

int main(int argc, char **argv)
{
	struct xfer_opts o;
	struct xfer_engine *e;
	struct xfer_mr *mr;
	struct xfer_desc d;
	uint8_t addr[XFER_ADDR_MAX];
	char hex[2 * XFER_ADDR_MAX + 1], line[512];
	size_t alen = sizeof(addr);
	uint64_t size, seed;
	int r;

	if (argc != 5) {
		fprintf(stderr, "usage: xfer_peer PROVIDER NODE|- SIZE SEED\n");
		return 2;
	}
	kv_log_init("xfer_peer");
	kv_log_level = KV_LOG_WARN;
	size = strtoull(argv[3], NULL, 0);
	seed = strtoull(argv[4], NULL, 0);
	xfer_opts_init(&o);
	o.provider = argv[1];
	o.node = strcmp(argv[2], "-") ? argv[2] : NULL;
	o.on_imm = on_imm;
	r = xfer_open(&o, &e);
	if (r < 0) {
		fprintf(stderr, "xfer_peer: xfer_open(%s): %s\n", argv[1], strerror(-r));
		return 1;
	}
	r = xfer_buf_alloc(e, size,
	                   XFER_ACCESS_LOCAL | XFER_ACCESS_REMOTE_READ | XFER_ACCESS_REMOTE_WRITE,
	                   &mr);
	if (r < 0) {
		fprintf(stderr, "xfer_peer: xfer_buf_alloc: %s\n", strerror(-r));
		return 1;
	}
	pat_fill(xfer_mr_addr(mr), size, seed);
	xfer_mr_desc(mr, &d);
	xfer_addr(e, addr, &alen);
	hex_encode(addr, alen, hex);
	snprintf(line, sizeof(line), "PEER %s %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", hex, d.addr,
	         d.len, d.key);
	if (write(STDOUT_FILENO, line, strlen(line)) < 0)
		return 1;
	xfer_expect(e, 1); /* we are a passive target the whole time */
	while (fgets(line, sizeof(line), stdin)) {
		uint64_t s;
		long bad;
		int n;

		if (sscanf(line, "CHECK %" SCNu64, &s) == 1) {
			bad = pat_check(xfer_mr_addr(mr), size, s);
			if (bad < 0)
				n = snprintf(line, sizeof(line), "OK\n");
			else
				n = snprintf(line, sizeof(line), "BAD %ld\n", bad);
			if (write(STDOUT_FILENO, line, (size_t)n) < 0)
				return 1;
		} else if (!strncmp(line, "LOCK", 4)) {
			/* an address is "fi_shm://NAME", the region /dev/shm/NAME,
			 * NAME = "PID:UID:N" */
			uint8_t other[XFER_ADDR_MAX];
			const uint8_t *a = addr;
			size_t al = alen;
			char name[XFER_ADDR_MAX + 1] = "";
			pthread_spinlock_t *lock = NULL;

			if (!strncmp(line, "LOCKPEER ", 9)) {
				line[strcspn(line, "\n")] = '\0';
				al = hex_decode(line + 9, other, sizeof(other));
				a = other;
			}
			errno = EPROTO;
			if (al > 9 && al <= XFER_ADDR_MAX && !memcmp(a, "fi_shm://", 9)) {
				memcpy(name, a + 9, al - 9);
				lock = shm_lock_map(name, (pid_t)strtol(name, NULL, 10));
			}

			if (lock)
				pthread_spin_lock(lock); /* and never unlock it */
			n = lock ? snprintf(line, sizeof(line), "LOCKED\n")
			         : snprintf(line, sizeof(line), "NOLOCK %s\n", strerror(errno));
			if (write(STDOUT_FILENO, line, (size_t)n) < 0)
				return 1;
		} else if (!strncmp(line, "REAP", 4)) {
			/* what every kvfs and kv-server does at start */
			shm_reap_stale();
			n = snprintf(line, sizeof(line), "REAPED\n");
			if (write(STDOUT_FILENO, line, (size_t)n) < 0)
				return 1;
		} else if (!strncmp(line, "QUIT", 4)) {
			break;
		}
	}
	xfer_mr_dereg(mr);
	xfer_close(e);
	return 0;
}
