/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "kvfs/topo.h"
/* For the static helpers; the library's copy is then not linked in. */
#include "../../../src/topo/topo.c"

static bool cpu_allowed(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	return cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &set);
}

/* Everything @print wrote for @topo, as one malloc'ed string. */
static char *capture(const struct topo *topo, void (*print)(const struct topo *, FILE *))
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	cr_assert_not_null(f);
	print(topo, f);
	cr_assert_eq(fclose(f), 0);
	return buf;
}

Test(topo, scan)
{
	struct topo *topo = NULL;

	cr_assert_eq(topo_scan(&topo), 0);
	cr_assert_not_null(topo);
	cr_assert_geq(topo->n_nics, 0);
	cr_assert_geq(topo->n_numa_nodes, 1);
	if (topo->n_nics == 0)
		cr_assert_neq(topo->ibverbs_note[0], '\0', "no NIC must come with a note");
	else
		cr_assert_not_null(topo->nics);

	for (int i = 0; i < topo->n_nics; i++) {
		const struct topo_nic *nic = &topo->nics[i];
		static const char *const transports[] = {"InfiniBand", "RoCE", "iWARP", "EFA",
		                                         "unknown"};
		bool known = false;

		cr_assert_neq(nic->name[0], '\0');
		cr_assert_lt(strnlen(nic->name, TOPO_NAME_MAX), TOPO_NAME_MAX);
		for (size_t t = 0; t < sizeof(transports) / sizeof(transports[0]); t++)
			known |= !strcmp(nic->transport, transports[t]);
		cr_assert(known, "transport '%s'", nic->transport);
		cr_assert_geq(nic->port, 1);
		cr_assert_geq(nic->numa_node, -1);
		if (nic->fi_domain[0]) {
			cr_assert(!strcmp(nic->fi_provider, "verbs") ||
			          !strcmp(nic->fi_provider, "efa"));
			cr_assert_eq(strncmp(nic->fi_domain, nic->name, strlen(nic->name)), 0);
			cr_assert_eq(topo_domain_numa_node(topo, nic->fi_domain), nic->numa_node);
		}
	}

	/* libfabric's tcp provider always exists; entries are distinct. */
	bool have_tcp = false;
	for (int i = 0; i < topo->n_fabrics; i++) {
		const struct topo_fabric *f = &topo->fabrics[i];

		cr_assert_neq(f->provider[0], '\0');
		have_tcp |= !strncmp(f->provider, "tcp", 3);
		for (int j = 0; j < i; j++)
			cr_assert(strcmp(f->provider, topo->fabrics[j].provider) ||
			                  strcmp(f->domain, topo->fabrics[j].domain),
			          "duplicate %s/%s", f->provider, f->domain);
	}
	cr_assert(have_tcp, "tcp provider with FI_EP_RDM + FI_RMA not listed");
	topo_free(topo);
	topo_free(NULL);
}

Test(topo, auto_pick)
{
	struct topo *topo;
	const struct topo_fabric *pick;
	char why[256] = "";

	cr_assert_eq(topo_scan(&topo), 0);
	pick = topo_auto_fabric(topo, why, sizeof(why));
	cr_assert_not_null(pick);
	cr_assert_neq(why[0], '\0');
	cr_assert(pick >= topo->fabrics && pick < topo->fabrics + topo->n_fabrics);
	if (topo->n_nics == 0)
		cr_assert_eq(strncmp(pick->provider, "tcp", 3), 0, "picked %s", pick->provider);
	cr_assert_eq(topo_auto_fabric(topo, NULL, 0), pick);

	/* Without any provider: NULL and a reason. */
	struct topo empty = {.n_fabrics = 0};
	cr_assert_null(topo_auto_fabric(&empty, why, sizeof(why)));
	cr_assert_neq(why[0], '\0');
	topo_free(topo);
}

Test(topo, auto_order)
{
	struct topo_nic nics[] = {
	        {.name = "mlx5_0", .active = false},
	        {.name = "mlx5_1", .active = true},
	        {.name = "rdmap0s6", .active = true},
	};
	struct topo_fabric fabrics[] = {
	        {.provider = "tcp;ofi_rxm", .domain = "eth0"},
	        {.provider = "verbs;ofi_rxm", .domain = "mlx5_0"},
	        {.provider = "verbs;ofi_rxm", .domain = "mlx5_1"},
	        {.provider = "efa", .domain = "rdmap0s6-rdm"},
	        {.provider = "shm", .domain = "shm"},
	};
	struct topo t = {.n_nics = 3, .nics = nics, .n_fabrics = 5, .fabrics = fabrics};
	char why[256];

	/* efa first, verbs on an ACTIVE port next, tcp last; shm never. */
	cr_assert_eq(topo_auto_fabric(&t, why, sizeof(why)), &fabrics[3]);
	cr_assert_not_null(strstr(why, "efa"));
	t.n_fabrics = 3;
	cr_assert_eq(topo_auto_fabric(&t, why, sizeof(why)), &fabrics[2]);
	nics[1].active = false;
	cr_assert_eq(topo_auto_fabric(&t, why, sizeof(why)), &fabrics[1], "no port up: first");
	t.n_fabrics = 1;
	cr_assert_eq(topo_auto_fabric(&t, why, sizeof(why)), &fabrics[0]);
	cr_assert_not_null(strstr(why, "tcp"));
	t.fabrics = &fabrics[4];
	cr_assert_null(topo_auto_fabric(&t, why, sizeof(why)));
	/* A short buffer is still terminated. */
	cr_assert_null(topo_auto_fabric(&t, why, 4));
	cr_assert_eq(strlen(why), 3);
}

Test(topo, helpers)
{
	struct bitmask *bm = numa_bitmask_alloc(64);
	char buf[64];

	/* 4x EDR, 4x HDR, 1x SDR, 12x QDR, unknown speed. */
	cr_assert_eq(lane_mbps(32) * lanes(2), 100000u);
	cr_assert_eq(lane_mbps(64) * lanes(2), 200000u);
	cr_assert_eq(lane_mbps(1) * lanes(1), 2500u);
	cr_assert_eq(lane_mbps(4) * lanes(8), 120000u);
	cr_assert_eq(lane_mbps(3) * lanes(2), 0u);

	cr_assert(domain_is_nic("mlx5_0", "mlx5_0"));
	cr_assert(domain_is_nic("rdmap0s6-rdm", "rdmap0s6"));
	cr_assert(domain_is_nic("mlx5_0-dgrm", "mlx5_0"));
	cr_assert(!domain_is_nic("mlx5_10", "mlx5_1"));
	cr_assert(!domain_is_nic("mlx5", "mlx5_0"));
	cr_assert(!domain_is_nic("eth0", ""));

	cr_assert(core_prov_is("tcp;ofi_rxm", "tcp"));
	cr_assert(core_prov_is("efa", "efa"));
	cr_assert(!core_prov_is("tcpx", "tcp"));

	cr_assert(sane_name("eth0"));
	cr_assert(!sane_name(".."));
	cr_assert(!sane_name("a/b"));
	cr_assert(!sane_name(""));

	for (unsigned c = 0; c < 64; c++) {
		if (c <= 2 || c == 5 || c == 7 || c == 8 || c == 63)
			numa_bitmask_setbit(bm, c);
	}
	cpulist(bm, buf, sizeof(buf));
	cr_assert_str_eq(buf, "0-2,5,7-8,63");
	cpulist(bm, buf, 6);
	cr_assert_str_eq(buf, "0-2,5", "truncated at an entry boundary");
	cpulist(bm, buf, 5);
	cr_assert_str_eq(buf, "0-2", "no partial entry");
	numa_bitmask_clearall(bm);
	cpulist(bm, buf, sizeof(buf));
	cr_assert_str_eq(buf, "");
	numa_bitmask_free(bm);

	/* lo is virtual: no device, no node. */
	cr_assert_eq(sysfs_numa_node("/sys/class/net/lo/device"), -1);
}

Test(topo, pick_cpu_any)
{
	int cpu = topo_pick_cpu(-1);

	cr_assert_geq(cpu, 0, "topo_pick_cpu(-1) = %d", cpu);
	cr_assert(cpu_allowed(cpu), "CPU %d not in the affinity mask", cpu);
}

Test(topo, pick_cpu_node0)
{
	/* Every Linux host has node 0 (or no NUMA, where 0 means all CPUs). */
	int cpu = topo_pick_cpu(0);

	cr_assert_geq(cpu, 0, "topo_pick_cpu(0) = %d", cpu);
	cr_assert(cpu_allowed(cpu), "CPU %d not in the affinity mask", cpu);
}

Test(topo, pick_cpu_follows_affinity)
{
	cpu_set_t set;
	int lowest = -1;

	cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	for (int c = 0; c < CPU_SETSIZE && lowest < 0; c++) {
		if (CPU_ISSET(c, &set))
			lowest = c;
	}
	cr_assert_geq(lowest, 0);
	/* Criterion runs each test in its own process: narrowing is local. */
	CPU_ZERO(&set);
	CPU_SET(lowest, &set);
	cr_assert_eq(sched_setaffinity(0, sizeof(set), &set), 0);
	cr_assert_eq(topo_pick_cpu(-1), lowest);
}

Test(topo, pick_cpu_no_such_node)
{
	cr_assert_eq(topo_pick_cpu(4096), -ENOENT);
	cr_assert_eq(topo_pick_cpu(1 << 30), -ENOENT);
}

Test(topo, domain_numa_node)
{
	struct topo *topo;

	cr_assert_eq(topo_domain_numa_node(NULL, "lo"), -1);
	cr_assert_eq(topo_domain_numa_node(NULL, "shm"), -1);
	cr_assert_eq(topo_domain_numa_node(NULL, ""), -1);
	cr_assert_eq(topo_domain_numa_node(NULL, NULL), -1);
	cr_assert_eq(topo_domain_numa_node(NULL, "../../../etc"), -1);
	cr_assert_eq(topo_domain_numa_node(NULL, "no-such-nic-rdm"), -1);

	cr_assert_eq(topo_scan(&topo), 0);
	cr_assert_eq(topo_domain_numa_node(topo, "lo"), -1);
	for (int i = 0; i < topo->n_fabrics; i++) {
		int node = topo->fabrics[i].numa_node;

		cr_assert_geq(node, -1);
		cr_assert_lt(node, 4096);
		cr_assert_eq(topo_domain_numa_node(topo, topo->fabrics[i].domain), node);
	}
	topo_free(topo);
}

Test(topo, print_text)
{
	struct topo *topo;
	char *s;

	cr_assert_eq(topo_scan(&topo), 0);
	s = capture(topo, topo_print);
	cr_assert_not_null(strstr(s, "RDMA NICs"));
	cr_assert_not_null(strstr(s, "node 0: CPUs "));
	cr_assert_not_null(strstr(s, "tcp;ofi_rxm"));
	cr_assert_not_null(strstr(s, "auto would pick: "));
	if (topo->n_nics == 0)
		cr_assert_not_null(strstr(s, topo->ibverbs_note));
	free(s);
	topo_free(topo);
}

/* Structural JSON check: balanced brackets outside strings, valid escapes. */
static void assert_json_object(const char *s)
{
	char stack[64];
	int depth = 0;
	bool in_str = false;
	size_t len = strlen(s);

	while (len && (s[len - 1] == '\n' || s[len - 1] == ' '))
		len--;
	cr_assert_eq(s[0], '{');
	cr_assert_eq(s[len - 1], '}');
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (in_str) {
			cr_assert((unsigned char)c >= 0x20, "control char in string at %zu", i);
			if (c == '\\') {
				i++;
				cr_assert(i < len && strchr("\"\\/bfnrtu", s[i]),
				          "bad escape at %zu", i);
			} else if (c == '"') {
				in_str = false;
			}
			continue;
		}
		if (c == '"') {
			in_str = true;
		} else if (c == '{' || c == '[') {
			cr_assert_lt(depth, (int)sizeof(stack));
			stack[depth++] = c;
		} else if (c == '}' || c == ']') {
			cr_assert_gt(depth, 0, "unbalanced at %zu", i);
			cr_assert_eq(stack[--depth], c == '}' ? '{' : '[', "mismatched at %zu", i);
			if (depth == 0)
				cr_assert_eq(i, len - 1, "text after the top-level object");
		}
	}
	cr_assert(!in_str);
	cr_assert_eq(depth, 0);
}

Test(topo, print_json)
{
	struct topo *topo;
	char *s;

	cr_assert_eq(topo_scan(&topo), 0);
	s = capture(topo, topo_print_json);
	assert_json_object(s);
	cr_assert_not_null(strstr(s, "\"nics\": ["));
	cr_assert_not_null(strstr(s, "\"fabrics\": ["));
	cr_assert_not_null(strstr(s, "\"auto\": {\"provider\": \""));
	cr_assert_not_null(strstr(s, "\"ibverbs_note\": "));
	free(s);

	/* Names that need escaping stay valid JSON. */
	struct topo_nic nic = {.name = "we\"ird\\nic\n", .transport = "unknown", .numa_node = -1};
	struct topo fake = {.n_nics = 1, .nics = &nic, .n_numa_nodes = 1};
	s = capture(&fake, topo_print_json);
	assert_json_object(s);
	cr_assert_not_null(strstr(s, "we\\\"ird\\\\nic\\u000a"));
	cr_assert_not_null(strstr(s, "\"provider\": null"));
	free(s);
	topo_free(topo);
}

/* Run kvfs-topo with @args; returns its exit status and output. */
static int run_tool(const char *args, char **ret_out)
{
	const char *bin = getenv("KVFS_TOPO_BIN");
	const char *root = getenv("KVFS_BUILD_ROOT");
	char cmd[4096], path[2048], *buf = NULL;
	size_t len = 0, n;
	char chunk[4096];
	FILE *p, *mem;
	int status;

	if (!bin && root) {
		snprintf(path, sizeof(path), "%s/src/tools/kvfs-topo", root);
		bin = path;
	}
	cr_assert_not_null(bin, "neither KVFS_TOPO_BIN nor KVFS_BUILD_ROOT set (run through "
	                        "meson test)");
	snprintf(cmd, sizeof(cmd), "'%s' %s 2>&1", bin, args);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	mem = open_memstream(&buf, &len);
	cr_assert_not_null(mem);
	while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
		fwrite(chunk, 1, n, mem);
	fclose(mem);
	status = pclose(p);
	cr_assert(WIFEXITED(status), "kvfs-topo %s died (status %#x)", args, status);
	*ret_out = buf;
	return WEXITSTATUS(status);
}

Test(kvfs_topo, text)
{
	char *out;

	cr_assert_eq(run_tool("", &out), 0, "output: %s", out);
	cr_assert_not_null(strstr(out, "tcp"), "output: %s", out);
	cr_assert_not_null(strstr(out, "auto would pick: "), "output: %s", out);
	free(out);
}

Test(kvfs_topo, json)
{
	char *out;

	cr_assert_eq(run_tool("--json", &out), 0, "output: %s", out);
	assert_json_object(out);
	cr_assert_not_null(strstr(out, "\"nics\""));
	cr_assert_not_null(strstr(out, "tcp"));
	free(out);
}

Test(kvfs_topo, help)
{
	char *out;

	cr_assert_eq(run_tool("--help", &out), 0);
	cr_assert_not_null(strstr(out, "Usage: kvfs-topo"));
	cr_assert_not_null(strstr(out, "--json"));
	free(out);
}

Test(kvfs_topo, bad_usage)
{
	char *out;

	cr_assert_eq(run_tool("--bogus", &out), 2);
	cr_assert_not_null(strstr(out, "--bogus"), "output: %s", out);
	cr_assert_not_null(strstr(out, "--help"));
	free(out);
	cr_assert_eq(run_tool("extra", &out), 2);
	free(out);
}
