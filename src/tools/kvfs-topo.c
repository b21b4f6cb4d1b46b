/* SPDX-License-Identifier: MIT */
/*
 * kvfs-topo: print what kvfs sees of this host -- RDMA NICs, NUMA nodes and
 * their CPUs, libfabric providers usable for RDMA, and which one the
 * transfer engine's provider "auto" would take.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfs/log.h"
#include "kvfs/topo.h"
#include "tool_opts.h"

#define PROG "kvfs-topo"

static void usage(FILE *out)
{
	fprintf(out, "Usage: " PROG " [--json] [--help]\n"
	             "\n"
	             "Show the host topology kvfs uses to place its transfer engine:\n"
	             "  - RDMA NICs found by libibverbs: netdev, transport (InfiniBand, RoCE,\n"
	             "    iWARP, EFA), port state, link rate, NUMA node, libfabric domain;\n"
	             "  - NUMA nodes and their CPUs, and the CPUs this process may use;\n"
	             "  - libfabric providers offering reliable datagram endpoints with RMA\n"
	             "    (FI_EP_RDM + FI_RMA), e.g. \"tcp;ofi_rxm domain eth0\", \"shm\";\n"
	             "  - the provider --provider auto would choose (order efa, verbs, tcp)\n"
	             "    and why.\n"
	             "\n"
	             "Options:\n"
	             "  --json     print one JSON object (keys nics, ibverbs_note, numa,\n"
	             "             fabrics, auto) instead of the text report\n"
	             "  -h, --help show this help and exit\n"
	             "  -V, --version print the version and exit\n"
	             "\n"
	             "Environment: KVFS_LOG=debug shows how the scan went; FI_LOG_LEVEL and\n"
	             "FI_PROVIDER are honoured by libfabric as usual.\n"
	             "\n"
	             "Exit status: 0 on success, 1 when the scan fails, 2 on bad usage.\n");
}

static const struct topt_tool tool = {.prog = PROG, .usage = usage};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"json", no_argument, NULL, 'j'},
	        {"help", no_argument, NULL, 'h'},
	        {"version", no_argument, NULL, 'V'},
	        {NULL, 0, NULL, 0},
	};
	struct topo *topo;
	bool json = false;
	int c, ret;

	kv_log_init(PROG);
	opterr = 0;
	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		if (topt_std_opt(&tool, c))
			return 0;
		switch (c) {
		case 'j':
			json = true;
			break;
		default:
			fprintf(stderr, PROG ": invalid option '%s' (try --help)\n",
			        argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s' (try --help)\n", argv[optind]);
		return 2;
	}

	ret = topo_scan(&topo);
	if (ret) {
		fprintf(stderr, PROG ": cannot scan the host topology: %s\n", strerror(-ret));
		return 1;
	}
	if (json)
		topo_print_json(topo, stdout);
	else
		topo_print(topo, stdout);
	topo_free(topo);
	return fflush(stdout) ? 1 : 0;
}
