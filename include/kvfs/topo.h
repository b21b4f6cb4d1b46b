/* SPDX-License-Identifier: MIT */
/*
 * kvfs topology: which RDMA NICs this host has (libibverbs + sysfs), which
 * libfabric domain each one is, and which CPUs and NUMA node sit next to it
 * (libnuma).  The transfer engine uses it to place its progress thread and
 * its buffers; `kvfs-topo` prints it.
 *
 * All functions are thread-safe; nothing here keeps global state.
 */
#ifndef KVFS_TOPO_H
#define KVFS_TOPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define TOPO_NAME_MAX 64

struct topo_nic {
	char name[TOPO_NAME_MAX];      /* ibverbs device name, e.g. "mlx5_0", "rdmap0s6" */
	char netdev[TOPO_NAME_MAX];    /* matching network interface or "" */
	char transport[16];            /* "InfiniBand", "RoCE", "iWARP", "EFA", "unknown" */
	int port;                      /* first port number (1-based) */
	bool active;                   /* port state is ACTIVE */
	unsigned rate_mbps;            /* link rate of that port, 0 when unknown */
	int numa_node;                 /* from sysfs, -1 when unknown */
	char fi_provider[32];          /* libfabric provider serving it ("verbs", "efa") or "" */
	char fi_domain[TOPO_NAME_MAX]; /* libfabric domain name or "" */
};

struct topo {
	int n_nics;
	struct topo_nic *nics; /* n_nics entries */
	int n_numa_nodes;      /* 1 when libnuma reports NUMA unavailable */
	bool numa_available;
	char ibverbs_note[128]; /* why no NIC was found, "" otherwise */
};

/* Enumerate.  Never fails for lack of hardware: a host without NICs yields
 * n_nics = 0 and a note.  Returns 0 or -ENOMEM. */
int topo_scan(struct topo **ret_topo);
void topo_free(struct topo *topo); /* accepts NULL */

/* NUMA node of the NIC serving libfabric domain @fi_domain (or of the
 * netdev of that name, e.g. "eth0" for tcp), -1 when unknown. */
int topo_domain_numa_node(const struct topo *topo, const char *fi_domain);

/* Pick a CPU on @numa_node that the calling process may run on (the last
 * one, leaving CPU 0 to the OS); with @numa_node < 0, any allowed CPU.
 * Returns the CPU number or -ENOENT. */
int topo_pick_cpu(int numa_node);

/* Human-readable report (what `kvfs-topo` prints). */
void topo_print(const struct topo *topo, FILE *out);
/* The same as one JSON object. */
void topo_print_json(const struct topo *topo, FILE *out);

#endif /* KVFS_TOPO_H */
