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
	int port;                      /* first ACTIVE port (1-based), else 1 */
	bool active;                   /* port state is ACTIVE */
	unsigned rate_mbps;            /* link rate of that port, 0 when unknown */
	int numa_node;                 /* from sysfs, -1 when unknown */
	char fi_provider[32];          /* libfabric provider serving it ("verbs", "efa") or "" */
	char fi_domain[TOPO_NAME_MAX]; /* libfabric domain name or "" */
};

/* One libfabric (provider, domain) pair offering FI_EP_RDM with FI_RMA. */
struct topo_fabric {
	char provider[32];          /* as libfabric names it: "tcp;ofi_rxm", "shm", "efa" */
	char domain[TOPO_NAME_MAX]; /* "eth0", "lo", "shm", "mlx5_0", "rdmap0s6-rdm" */
	int numa_node;              /* topo_domain_numa_node() of @domain */
};

struct topo {
	int n_nics;
	struct topo_nic *nics; /* n_nics entries */
	int n_numa_nodes;      /* 1 when libnuma reports NUMA unavailable */
	bool numa_available;
	char ibverbs_note[128];      /* why no NIC was found, "" otherwise */
	int n_fabrics;               /* distinct pairs, in fi_getinfo() order */
	struct topo_fabric *fabrics; /* n_fabrics entries */
};

/* Enumerate NICs (libibverbs, sysfs), NUMA nodes (libnuma) and the
 * libfabric providers usable for RDM + RMA (fi_getinfo()).  Never fails for
 * lack of hardware: a host without NICs yields n_nics = 0 and a note, one
 * without usable providers n_fabrics = 0.  Returns 0 and *ret_topo (free it
 * with topo_free()) or -ENOMEM. */
int topo_scan(struct topo **ret_topo);
void topo_free(struct topo *topo); /* accepts NULL */

/* libfabric is not linked but loaded on first use (src/topo/ofi_lazy.c).
 * Load it now if need be: 0, or -ELIBACC when it cannot be loaded (the
 * reason is logged once, as a warning). */
int topo_libfabric_load(void);

/* NUMA node of the NIC serving libfabric domain @fi_domain (its ibverbs
 * name, possibly with a "-rdm"/"-dgrm" suffix), or of the netdev of that
 * name (e.g. "eth0" for tcp; the nearest sysfs device ancestor that states
 * a node), -1 when unknown ("lo", "shm").  @topo may be NULL: then only
 * sysfs is consulted. */
int topo_domain_numa_node(const struct topo *topo, const char *fi_domain);

/* Pick a CPU on @numa_node that the calling process may run on (the last
 * one, leaving CPU 0 to the OS); with @numa_node < 0, any allowed CPU.
 * Without libnuma support node 0 stands for every CPU.  Returns the CPU
 * number, -ENOENT when the node does not exist or none of its CPUs is in
 * the affinity mask (callers fall back to topo_pick_cpu(-1)), or -ENOMEM. */
int topo_pick_cpu(int numa_node);

/* The provider "auto" stands for (xfer_opts.provider; xfer may call this to
 * decide, kvfs-topo reports it): the first of efa, verbs, tcp with an
 * entry in @topo->fabrics (for efa/verbs, preferring a domain whose NIC port
 * is ACTIVE).  Writes a one-line reason into @why (may be NULL).  Returns
 * the entry (owned by @topo) or NULL when none of them is usable. */
const struct topo_fabric *topo_auto_fabric(const struct topo *topo, char *why, size_t why_len);

/* Human-readable report (what `kvfs-topo` prints): NICs, NUMA nodes with
 * their CPUs, libfabric providers, the auto pick. */
void topo_print(const struct topo *topo, FILE *out);
/* The same as one JSON object with keys "nics", "ibverbs_note", "numa",
 * "fabrics", "auto". */
void topo_print_json(const struct topo *topo, FILE *out);

#endif /* KVFS_TOPO_H */
