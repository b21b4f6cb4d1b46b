/* SPDX-License-Identifier: MIT */
/*
 * Topology scan: libibverbs for the NICs, sysfs for their netdev and NUMA
 * node, libnuma for CPUs, fi_getinfo() for the libfabric side.  Nothing is
 * cached; every call reads the system again.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <numa.h>
#include <rdma/fabric.h>

#include "kvfs/log.h"
#include "kvfs/topo.h"
#include "kvfs/util.h"

#define TAG     "topo"
#define SYS_IB  "/sys/class/infiniband"
#define SYS_NET "/sys/class/net"
#define SYS_DEV "/sys/devices/"

#define TOPO_FI_VERSION FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION)

/* Bounded copy that always terminates @dst. */
static void copy_str(char *dst, size_t len, const char *src)
{
	size_t n = strnlen(src, len - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Read the first line of a sysfs file, without its newline. */
static int read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	int ret = 0;

	if (!f)
		return -errno;
	if (!fgets(buf, (int)len, f)) {
		ret = ferror(f) ? -EIO : -ENODATA;
		goto out_close;
	}
	buf[strcspn(buf, "\n")] = '\0';
out_close:
	fclose(f);
	return ret;
}

static int read_int(const char *path, int *ret_val)
{
	char buf[32], *end;
	long v;
	int ret;

	ret = read_line(path, buf, sizeof(buf));
	if (ret)
		return ret;
	errno = 0;
	v = strtol(buf, &end, 0);
	if (errno || end == buf || v < INT_MIN || v > INT_MAX)
		return -EINVAL;
	*ret_val = (int)v;
	return 0;
}

/*
 * NUMA node of the device that sysfs link @dev_link points to: the first
 * "numa_node" found walking from it up towards /sys/devices (a virtio or
 * USB netdev carries none; its PCI parent does).  -1 when none says.
 */
static int sysfs_numa_node(const char *dev_link)
{
	char path[PATH_MAX], file[PATH_MAX + 16];
	char *slash;
	int node;

	if (!realpath(dev_link, path))
		return -1;
	while (!strncmp(path, SYS_DEV, strlen(SYS_DEV))) {
		snprintf(file, sizeof(file), "%s/numa_node", path);
		if (!read_int(file, &node))
			return node < 0 ? -1 : node;
		slash = strrchr(path, '/');
		if (!slash)
			break;
		*slash = '\0';
	}
	return -1;
}

/* A name that is safe to paste into a sysfs path. */
static bool sane_name(const char *name)
{
	return name && name[0] && strcmp(name, ".") && strcmp(name, "..") && !strchr(name, '/') &&
	       strlen(name) < TOPO_NAME_MAX;
}

/* Per-lane rate in Mb/s of ibv_port_attr.active_speed (nominal signalling
 * rates, as `ibstat` reports them: 4x EDR = 100 Gb/s). */
static unsigned lane_mbps(uint8_t speed)
{
	switch (speed) {
	case 1: /* SDR */
		return 2500;
	case 2: /* DDR */
		return 5000;
	case 4: /* QDR */
	case 8: /* FDR10 */
		return 10000;
	case 16: /* FDR */
		return 14000;
	case 32: /* EDR */
		return 25000;
	case 64: /* HDR */
		return 50000;
	case 128: /* NDR */
		return 100000;
	default:
		return 0;
	}
}

static unsigned lanes(uint8_t width)
{
	switch (width) {
	case 1:
		return 1;
	case 2:
		return 4;
	case 4:
		return 8;
	case 8:
		return 12;
	case 16:
		return 2;
	default:
		return 0;
	}
}

/* Kernel driver bound to the NIC's device ("mlx5_core", "efa"), or "". */
static void nic_driver(const char *name, char *buf, size_t len)
{
	char link[PATH_MAX], target[PATH_MAX];
	ssize_t n;
	const char *base;

	buf[0] = '\0';
	snprintf(link, sizeof(link), SYS_IB "/%s/device/driver", name);
	n = readlink(link, target, sizeof(target) - 1);
	if (n <= 0)
		return;
	target[n] = '\0';
	base = strrchr(target, '/');
	copy_str(buf, len, base ? base + 1 : target);
}

static int netdev_filter(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* The netdev of @nic's port: the RoCE GID table names it; otherwise the
 * first entry under device/net (IPoIB, iWARP, EFA has none). */
static void nic_netdev(struct topo_nic *nic)
{
	char path[PATH_MAX];
	struct dirent **ents;
	int n;

	snprintf(path, sizeof(path), SYS_IB "/%s/ports/%d/gid_attrs/ndevs/0", nic->name, nic->port);
	if (!read_line(path, nic->netdev, sizeof(nic->netdev)) && nic->netdev[0])
		return;
	nic->netdev[0] = '\0';

	snprintf(path, sizeof(path), SYS_IB "/%s/device/net", nic->name);
	n = scandir(path, &ents, netdev_filter, alphasort);
	if (n < 0)
		return;
	if (n > 0)
		copy_str(nic->netdev, sizeof(nic->netdev), ents[0]->d_name);
	for (int i = 0; i < n; i++)
		free(ents[i]);
	free(ents);
}

/* Fill port, state, rate and transport from the open device. */
static void nic_query(struct ibv_device *dev, struct topo_nic *nic)
{
	struct ibv_device_attr dattr;
	struct ibv_port_attr pattr, first;
	struct ibv_context *ctx;
	char driver[64];
	bool have_port = false;

	nic->port = 1;
	copy_str(nic->transport, sizeof(nic->transport), "unknown");

	ctx = ibv_open_device(dev);
	if (!ctx) {
		KV_DEBUG(TAG, "%s: ibv_open_device: %s", nic->name, strerror(errno));
		goto out_transport;
	}
	if (ibv_query_device(ctx, &dattr)) {
		KV_DEBUG(TAG, "%s: ibv_query_device failed", nic->name);
		goto out_close_dev;
	}
	for (int p = 1; p <= dattr.phys_port_cnt; p++) {
		if (ibv_query_port(ctx, (uint8_t)p, &pattr))
			continue;
		if (!have_port) {
			first = pattr;
			have_port = true;
		}
		if (pattr.state == IBV_PORT_ACTIVE) {
			first = pattr;
			nic->port = p;
			nic->active = true;
			break;
		}
	}
	if (have_port) {
		nic->rate_mbps = lane_mbps(first.active_speed) * lanes(first.active_width);
		if (first.link_layer == IBV_LINK_LAYER_INFINIBAND)
			copy_str(nic->transport, sizeof(nic->transport), "InfiniBand");
		else if (first.link_layer == IBV_LINK_LAYER_ETHERNET)
			copy_str(nic->transport, sizeof(nic->transport), "RoCE");
	}
out_close_dev:
	ibv_close_device(ctx);
out_transport:
	/* iWARP and EFA report an Ethernet or unspecified link layer too;
	 * the node type and the driver tell them apart. */
	nic_driver(nic->name, driver, sizeof(driver));
	if (dev->node_type == IBV_NODE_RNIC || dev->transport_type == IBV_TRANSPORT_IWARP)
		copy_str(nic->transport, sizeof(nic->transport), "iWARP");
	else if (!strcmp(driver, "efa") || dev->node_type == IBV_NODE_UNSPECIFIED)
		copy_str(nic->transport, sizeof(nic->transport), "EFA");
}

static int nics_scan(struct topo *topo)
{
	struct ibv_device **list;
	char path[PATH_MAX];
	int n = 0;

	list = ibv_get_device_list(&n);
	if (!list && errno == ENOSYS) {
		/* No /sys/class/infiniband_verbs: no RDMA driver in the kernel. */
		copy_str(
		        topo->ibverbs_note, sizeof(topo->ibverbs_note),
		        "no RDMA devices found by libibverbs (no kernel RDMA support); the tcp and "
		        "shm providers will be used");
		return 0;
	}
	if (!list) {
		snprintf(topo->ibverbs_note, sizeof(topo->ibverbs_note),
		         "libibverbs cannot list devices (%s); the tcp and shm providers will be "
		         "used",
		         strerror(errno));
		return 0;
	}
	if (n <= 0) {
		copy_str(topo->ibverbs_note, sizeof(topo->ibverbs_note),
		         "no RDMA devices found by libibverbs; the tcp and shm providers will be "
		         "used");
		goto out_free_list;
	}
	topo->nics = calloc((size_t)n, sizeof(*topo->nics));
	if (!topo->nics) {
		ibv_free_device_list(list);
		return -ENOMEM;
	}
	for (int i = 0; i < n; i++) {
		struct topo_nic *nic = &topo->nics[i];

		copy_str(nic->name, sizeof(nic->name), ibv_get_device_name(list[i]));
		nic_query(list[i], nic);
		nic_netdev(nic);
		snprintf(path, sizeof(path), SYS_IB "/%s/device", nic->name);
		nic->numa_node = sysfs_numa_node(path);
		KV_DEBUG(TAG, "%s: %s port %d %s %u Mb/s netdev '%s' numa %d", nic->name,
		         nic->transport, nic->port, nic->active ? "active" : "down", nic->rate_mbps,
		         nic->netdev, nic->numa_node);
	}
	topo->n_nics = n;
out_free_list:
	ibv_free_device_list(list);
	return 0;
}

/* Hints that list every provider fi_info would list: all modes accepted,
 * every modern memory registration mode. */
static struct fi_info *fi_hints(const char *prov, bool rdm_rma)
{
	struct fi_info *hints = fi_allocinfo();

	if (!hints)
		return NULL;
	hints->mode = ~0ULL;
	hints->domain_attr->mode = ~0ULL;
	hints->domain_attr->mr_mode = ~(FI_MR_BASIC | FI_MR_SCALABLE);
	if (rdm_rma) {
		hints->ep_attr->type = FI_EP_RDM;
		hints->caps = FI_RMA;
	}
	if (prov) {
		hints->fabric_attr->prov_name = strdup(prov);
		if (!hints->fabric_attr->prov_name) {
			fi_freeinfo(hints);
			return NULL;
		}
	}
	return hints;
}

/* @dom is @nic's name, alone or followed by "-suffix" ("-rdm", "-dgrm"). */
static bool domain_is_nic(const char *dom, const char *nic)
{
	size_t n = strlen(nic);

	return n && !strncmp(dom, nic, n) && (dom[n] == '\0' || dom[n] == '-');
}

/* Record which verbs/efa domain serves each NIC, preferring an RDM one. */
static int nics_match_fabric(struct topo *topo)
{
	static const char *const provs[] = {"efa", "verbs"};

	for (size_t p = 0; p < KV_ARRAY_SIZE(provs); p++) {
		struct fi_info *hints, *info = NULL;
		int ret;

		hints = fi_hints(provs[p], false);
		if (!hints)
			return -ENOMEM;
		ret = fi_getinfo(TOPO_FI_VERSION, NULL, NULL, 0, hints, &info);
		fi_freeinfo(hints);
		if (ret) {
			KV_DEBUG(TAG, "fi_getinfo(%s): %s", provs[p], fi_strerror(-ret));
			continue;
		}
		for (int i = 0; i < topo->n_nics; i++) {
			struct topo_nic *nic = &topo->nics[i];
			bool have_rdm = false;

			if (nic->fi_provider[0])
				continue; /* an earlier provider (efa) serves it */

			for (struct fi_info *fi = info; fi; fi = fi->next) {
				const char *dom = fi->domain_attr->name;
				bool rdm = fi->ep_attr->type == FI_EP_RDM;

				if (!dom || !domain_is_nic(dom, nic->name))
					continue;
				if (nic->fi_domain[0] && (have_rdm || !rdm))
					continue;
				copy_str(nic->fi_provider, sizeof(nic->fi_provider), provs[p]);
				copy_str(nic->fi_domain, sizeof(nic->fi_domain), dom);
				have_rdm = rdm;
			}
		}
		fi_freeinfo(info);
	}
	return 0;
}

/* Every distinct (provider, domain) offering FI_EP_RDM with FI_RMA. */
static int fabrics_scan(struct topo *topo)
{
	struct fi_info *hints, *info = NULL;
	int ret, cap = 0;

	hints = fi_hints(NULL, true);
	if (!hints)
		return -ENOMEM;
	ret = fi_getinfo(TOPO_FI_VERSION, NULL, NULL, 0, hints, &info);
	fi_freeinfo(hints);
	if (ret) {
		KV_DEBUG(TAG, "fi_getinfo(FI_EP_RDM, FI_RMA): %s", fi_strerror(-ret));
		return 0;
	}
	ret = 0;
	for (struct fi_info *fi = info; fi; fi = fi->next) {
		const char *prov = fi->fabric_attr->prov_name ? fi->fabric_attr->prov_name : "";
		const char *dom = fi->domain_attr->name ? fi->domain_attr->name : "";
		struct topo_fabric *f;
		bool dup = false;

		for (int i = 0; i < topo->n_fabrics && !dup; i++)
			dup = !strcmp(topo->fabrics[i].provider, prov) &&
			      !strcmp(topo->fabrics[i].domain, dom);
		if (dup)
			continue;
		if (topo->n_fabrics == cap) {
			int ncap = cap ? cap * 2 : 8;
			void *p = realloc(topo->fabrics, (size_t)ncap * sizeof(*topo->fabrics));

			if (!p) {
				ret = -ENOMEM;
				goto out_free_info;
			}
			topo->fabrics = p;
			cap = ncap;
		}
		f = &topo->fabrics[topo->n_fabrics++];
		copy_str(f->provider, sizeof(f->provider), prov);
		copy_str(f->domain, sizeof(f->domain), dom);
		f->numa_node = topo_domain_numa_node(topo, dom);
	}
out_free_info:
	fi_freeinfo(info);
	return ret;
}

int topo_scan(struct topo **ret_topo)
{
	struct topo *topo;
	int ret;

	topo = calloc(1, sizeof(*topo));
	if (!topo)
		return -ENOMEM;

	topo->numa_available = numa_available() >= 0;
	topo->n_numa_nodes = topo->numa_available ? numa_num_configured_nodes() : 1;
	if (topo->n_numa_nodes < 1)
		topo->n_numa_nodes = 1;

	ret = nics_scan(topo);
	if (ret)
		goto out_free_topo;
	if (topo->n_nics) {
		ret = nics_match_fabric(topo);
		if (ret)
			goto out_free_topo;
	}
	ret = fabrics_scan(topo);
	if (ret)
		goto out_free_topo;

	KV_DEBUG(TAG, "%d NIC(s)%s%s, %d NUMA node(s), %d libfabric RDM+RMA domain(s)",
	         topo->n_nics, topo->ibverbs_note[0] ? ": " : "", topo->ibverbs_note,
	         topo->n_numa_nodes, topo->n_fabrics);
	*ret_topo = topo;
	return 0;

out_free_topo:
	topo_free(topo);
	return ret;
}

void topo_free(struct topo *topo)
{
	if (!topo)
		return;
	free(topo->nics);
	free(topo->fabrics);
	free(topo);
}

int topo_domain_numa_node(const struct topo *topo, const char *fi_domain)
{
	char path[PATH_MAX], base[TOPO_NAME_MAX];
	char *dash;

	if (!fi_domain || !fi_domain[0])
		return -1;
	for (int i = 0; topo && i < topo->n_nics; i++) {
		const struct topo_nic *nic = &topo->nics[i];

		if (!strcmp(nic->fi_domain, fi_domain) || domain_is_nic(fi_domain, nic->name) ||
		    (nic->netdev[0] && !strcmp(nic->netdev, fi_domain)))
			return nic->numa_node;
	}
	if (!sane_name(fi_domain))
		return -1;

	snprintf(path, sizeof(path), SYS_NET "/%s/device", fi_domain);
	if (!access(path, F_OK))
		return sysfs_numa_node(path);

	/* An ibverbs device, with or without the libfabric suffix. */
	copy_str(base, sizeof(base), fi_domain);
	dash = strrchr(base, '-');
	if (dash && (!strcmp(dash, "-rdm") || !strcmp(dash, "-dgrm")))
		*dash = '\0';
	snprintf(path, sizeof(path), SYS_IB "/%s/device", base);
	if (base[0] && !access(path, F_OK))
		return sysfs_numa_node(path);
	return -1;
}

/* The calling process's affinity mask, sized for however many CPUs the
 * kernel supports.  Free with CPU_FREE(). */
static int affinity_get(cpu_set_t **ret_set, size_t *ret_size, int *ret_ncpus)
{
	int ncpus = 1024;

	for (;;) {
		cpu_set_t *set = CPU_ALLOC(ncpus);
		size_t size = CPU_ALLOC_SIZE(ncpus);
		int err;

		if (!set)
			return -ENOMEM;
		if (!sched_getaffinity(0, size, set)) {
			*ret_set = set;
			*ret_size = size;
			*ret_ncpus = (int)(size * 8);
			return 0;
		}
		err = errno;
		CPU_FREE(set);
		if (err != EINVAL || ncpus >= (1 << 22))
			return err > 0 ? -err : -EIO;
		ncpus *= 2;
	}
}

int topo_pick_cpu(int numa_node)
{
	struct bitmask *node_cpus = NULL;
	cpu_set_t *allowed;
	size_t size;
	int ncpus, ret;

	if (numa_node >= 0) {
		if (numa_available() < 0) {
			if (numa_node != 0)
				return -ENOENT;
			numa_node = -1; /* one node holding every CPU */
		} else if (numa_node > numa_max_node() ||
		           !numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)numa_node)) {
			return -ENOENT;
		}
	}

	ret = affinity_get(&allowed, &size, &ncpus);
	if (ret)
		return ret;
	if (numa_node >= 0) {
		node_cpus = numa_allocate_cpumask();
		if (numa_node_to_cpus(numa_node, node_cpus) < 0) {
			ret = -ENOENT;
			goto out_free_mask;
		}
	}

	ret = -ENOENT;
	for (int cpu = ncpus - 1; cpu >= 0; cpu--) {
		if (!CPU_ISSET_S(cpu, size, allowed))
			continue;
		if (node_cpus &&
		    ((unsigned)cpu >= node_cpus->size || !numa_bitmask_isbitset(node_cpus, cpu)))
			continue;
		ret = cpu;
		break;
	}
	KV_DEBUG(TAG, "pick_cpu(node %d) = %d", numa_node, ret);
out_free_mask:
	if (node_cpus)
		numa_bitmask_free(node_cpus);
	CPU_FREE(allowed);
	return ret;
}

/* First component of a layered provider name: "tcp;ofi_rxm" -> "tcp". */
static bool core_prov_is(const char *prov, const char *core)
{
	size_t n = strlen(core);

	return !strncmp(prov, core, n) && (prov[n] == '\0' || prov[n] == ';');
}

static bool fabric_nic_active(const struct topo *topo, const struct topo_fabric *f)
{
	for (int i = 0; i < topo->n_nics; i++) {
		if (domain_is_nic(f->domain, topo->nics[i].name))
			return topo->nics[i].active;
	}
	return false;
}

/* First entry of core provider @core; with @want_active, one whose NIC port
 * is ACTIVE if there is such an entry. */
static const struct topo_fabric *find_fabric(const struct topo *topo, const char *core,
                                             bool want_active)
{
	const struct topo_fabric *first = NULL;

	for (int i = 0; i < topo->n_fabrics; i++) {
		const struct topo_fabric *f = &topo->fabrics[i];

		if (!core_prov_is(f->provider, core))
			continue;
		if (!want_active || fabric_nic_active(topo, f))
			return f;
		if (!first)
			first = f;
	}
	return first;
}

const struct topo_fabric *topo_auto_fabric(const struct topo *topo, char *why, size_t why_len)
{
	const struct topo_fabric *pick;
	char dummy[1];

	if (!why || !why_len) {
		why = dummy;
		why_len = sizeof(dummy);
	}
	pick = find_fabric(topo, "efa", true);
	if (pick) {
		snprintf(why, why_len, "efa comes first in the auto order (efa, verbs, tcp)");
		return pick;
	}
	pick = find_fabric(topo, "verbs", true);
	if (pick) {
		snprintf(why, why_len,
		         "no efa provider here; verbs comes next (order efa, verbs, tcp)");
		return pick;
	}
	pick = find_fabric(topo, "tcp", false);
	if (pick) {
		snprintf(why, why_len,
		         "no efa or verbs provider offers FI_EP_RDM with FI_RMA here (%s); tcp is "
		         "the "
		         "fallback",
		         topo->n_nics ? "RDMA NICs present but unusable by libfabric"
		                      : "no RDMA devices found by libibverbs");
		return pick;
	}
	snprintf(why, why_len, "none of efa, verbs, tcp offers FI_EP_RDM with FI_RMA here%s%s",
	         topo->ibverbs_note[0] ? "; " : "", topo->ibverbs_note);
	return NULL;
}

/* Linux cpulist ("0-3,8") of the set bits of @bm. */
static void cpulist(const struct bitmask *bm, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < bm->size; i++) {
		unsigned j = i;
		int n;

		if (!numa_bitmask_isbitset(bm, i))
			continue;
		while (j + 1 < bm->size && numa_bitmask_isbitset(bm, j + 1))
			j++;
		if (j == i)
			n = snprintf(buf + off, len - off, "%s%u", off ? "," : "", i);
		else
			n = snprintf(buf + off, len - off, "%s%u-%u", off ? "," : "", i, j);
		if (n < 0 || (size_t)n >= len - off) {
			buf[off] = '\0'; /* drop the partial entry */
			return;
		}
		off += (size_t)n;
		i = j;
	}
}

/* CPUs of NUMA node @node (all online CPUs when libnuma is unavailable). */
static int node_cpulist(int node, char *buf, size_t len)
{
	struct bitmask *bm;
	int ret = 0;

	if (numa_available() < 0) {
		if (read_line("/sys/devices/system/cpu/online", buf, len))
			snprintf(buf, len, "0-%ld", sysconf(_SC_NPROCESSORS_CONF) - 1);
		return 0;
	}
	bm = numa_allocate_cpumask();
	if (numa_node_to_cpus(node, bm) < 0)
		ret = -ENOENT;
	else
		cpulist(bm, buf, len);
	numa_bitmask_free(bm);
	return ret;
}

/* CPUs this process may run on, as a cpulist. */
static void allowed_cpulist(char *buf, size_t len)
{
	struct bitmask *bm;
	cpu_set_t *set;
	size_t size;
	int ncpus;

	buf[0] = '\0';
	if (affinity_get(&set, &size, &ncpus))
		return;
	bm = numa_bitmask_alloc((unsigned)ncpus);
	for (int c = 0; c < ncpus; c++) {
		if (CPU_ISSET_S(c, size, set))
			numa_bitmask_setbit(bm, (unsigned)c);
	}
	cpulist(bm, buf, len);
	numa_bitmask_free(bm);
	CPU_FREE(set);
}

/* Node ids to report: those libnuma knows, or just 0 without NUMA. */
static int max_node(void)
{
	return numa_available() < 0 ? 0 : numa_max_node();
}

static bool node_exists(int node)
{
	return numa_available() < 0 ? node == 0
	                            : numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)node);
}

static void print_numa(int node, FILE *out)
{
	if (node < 0)
		fprintf(out, "unknown");
	else
		fprintf(out, "%d", node);
}

void topo_print(const struct topo *topo, FILE *out)
{
	const struct topo_fabric *pick;
	char buf[1024], why[256];

	fprintf(out, "RDMA NICs (libibverbs): %d\n", topo->n_nics);
	if (!topo->n_nics)
		fprintf(out, "  %s\n", topo->ibverbs_note);
	for (int i = 0; i < topo->n_nics; i++) {
		const struct topo_nic *nic = &topo->nics[i];

		fprintf(out, "  %s: netdev %s, %s, port %d %s, ", nic->name,
		        nic->netdev[0] ? nic->netdev : "-", nic->transport, nic->port,
		        nic->active ? "ACTIVE" : "not active");
		if (nic->rate_mbps)
			fprintf(out, "%g Gb/s", nic->rate_mbps / 1000.0);
		else
			fprintf(out, "rate unknown");
		fprintf(out, ", NUMA node ");
		print_numa(nic->numa_node, out);
		if (nic->fi_domain[0])
			fprintf(out, ", libfabric %s domain %s\n", nic->fi_provider,
			        nic->fi_domain);
		else
			fprintf(out, ", no libfabric verbs/efa domain\n");
	}

	fprintf(out, "\nNUMA: %s, %d node%s\n",
	        topo->numa_available ? "libnuma available" : "not available (one node assumed)",
	        topo->n_numa_nodes, topo->n_numa_nodes == 1 ? "" : "s");
	for (int n = 0; n <= max_node(); n++) {
		if (!node_exists(n))
			continue;
		if (node_cpulist(n, buf, sizeof(buf)))
			copy_str(buf, sizeof(buf), "?");
		fprintf(out, "  node %d: CPUs %s\n", n, buf[0] ? buf : "none");
	}
	allowed_cpulist(buf, sizeof(buf));
	fprintf(out, "  this process may run on CPUs %s\n", buf[0] ? buf : "?");

	fprintf(out, "\nlibfabric providers with FI_EP_RDM + FI_RMA (libfabric %u.%u): %d\n",
	        FI_MAJOR(fi_version()), FI_MINOR(fi_version()), topo->n_fabrics);
	for (int i = 0; i < topo->n_fabrics; i++) {
		const struct topo_fabric *f = &topo->fabrics[i];

		fprintf(out, "  %-16s domain %-16s NUMA node ", f->provider, f->domain);
		print_numa(f->numa_node, out);
		fputc('\n', out);
	}

	pick = topo_auto_fabric(topo, why, sizeof(why));
	if (pick)
		fprintf(out, "\nauto would pick: %s, domain %s -- %s\n", pick->provider,
		        pick->domain, why);
	else
		fprintf(out, "\nauto would pick: nothing -- %s\n", why);
}

/* @s as a JSON string literal. */
static void json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

void topo_print_json(const struct topo *topo, FILE *out)
{
	const struct topo_fabric *pick;
	char buf[1024], why[256];
	bool first = true;

	fprintf(out, "{\n  \"nics\": [");
	for (int i = 0; i < topo->n_nics; i++) {
		const struct topo_nic *nic = &topo->nics[i];

		fprintf(out, "%s\n    {\"name\": ", i ? "," : "");
		json_str(out, nic->name);
		fprintf(out, ", \"netdev\": ");
		json_str(out, nic->netdev);
		fprintf(out, ", \"transport\": ");
		json_str(out, nic->transport);
		fprintf(out, ", \"port\": %d, \"active\": %s, \"rate_mbps\": %u, \"numa_node\": %d",
		        nic->port, nic->active ? "true" : "false", nic->rate_mbps, nic->numa_node);
		fprintf(out, ", \"fi_provider\": ");
		json_str(out, nic->fi_provider);
		fprintf(out, ", \"fi_domain\": ");
		json_str(out, nic->fi_domain);
		fprintf(out, "}");
	}
	fprintf(out, "%s],\n  \"ibverbs_note\": ", topo->n_nics ? "\n  " : "");
	json_str(out, topo->ibverbs_note);

	fprintf(out, ",\n  \"numa\": {\"available\": %s, \"n_nodes\": %d, \"nodes\": [",
	        topo->numa_available ? "true" : "false", topo->n_numa_nodes);
	for (int n = 0; n <= max_node(); n++) {
		if (!node_exists(n))
			continue;
		if (node_cpulist(n, buf, sizeof(buf)))
			buf[0] = '\0';
		fprintf(out, "%s{\"node\": %d, \"cpus\": ", first ? "" : ", ", n);
		json_str(out, buf);
		fputc('}', out);
		first = false;
	}
	allowed_cpulist(buf, sizeof(buf));
	fprintf(out, "], \"allowed_cpus\": ");
	json_str(out, buf);

	fprintf(out, "},\n  \"fabrics\": [");
	for (int i = 0; i < topo->n_fabrics; i++) {
		const struct topo_fabric *f = &topo->fabrics[i];

		fprintf(out, "%s\n    {\"provider\": ", i ? "," : "");
		json_str(out, f->provider);
		fprintf(out, ", \"domain\": ");
		json_str(out, f->domain);
		fprintf(out, ", \"numa_node\": %d}", f->numa_node);
	}
	fprintf(out, "%s],\n  \"auto\": ", topo->n_fabrics ? "\n  " : "");

	pick = topo_auto_fabric(topo, why, sizeof(why));
	if (pick) {
		fprintf(out, "{\"provider\": ");
		json_str(out, pick->provider);
		fprintf(out, ", \"domain\": ");
		json_str(out, pick->domain);
	} else {
		fprintf(out, "{\"provider\": null, \"domain\": null");
	}
	fprintf(out, ", \"why\": ");
	json_str(out, why);
	fprintf(out, "}\n}\n");
}
