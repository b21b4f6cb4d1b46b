/* SPDX-License-Identifier: MIT */
/*
 * libfabric, loaded when first used.
 *
 * Debian's libfabric links the psm provider, whose libinfinipath runs a
 * constructor at load time that calibrates its clock with about 800
 * usleep() calls: 0.2 s on the test VM, paid by every process that links
 * libfabric, also by those that never open a transfer engine (`kvctl ls`,
 * `kvctl -p none ...`, `--help`).  So kvfs does not link it: the six
 * functions it calls as symbols (everything else in libfabric's API is an
 * inline call through the objects those return) are defined here and
 * forward to the library, which is dlopen()ed on the first call.
 *
 * Defaults kvfs wants from libfabric are set here too, before the library
 * can read its environment (lib_load()).
 *
 * If libfabric cannot be loaded, topo_libfabric_load() says -ELIBACC (the
 * engine's open checks it first), fi_getinfo() and fi_fabric() fail with
 * -FI_ENOSYS, and the reason is logged once.  These definitions are
 * not exported from the executables, so libfabric's own calls to these
 * names stay inside the library.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#include <rdma/fabric.h>
#include <rdma/fi_errno.h>

#include "kvfs/log.h"
#include "kvfs/topo.h"

#define TAG    "ofi"
#define LIB_SO "libfabric.so.1"

static struct {
	pthread_once_t once;
	void *h;
	int (*getinfo)(uint32_t, const char *, const char *, uint64_t, const struct fi_info *,
	               struct fi_info **);
	void (*freeinfo)(struct fi_info *);
	struct fi_info *(*dupinfo)(const struct fi_info *);
	int (*fabric)(struct fi_fabric_attr *, struct fid_fabric **, void *);
	const char *(*strerror)(int);
	uint32_t (*version)(void);
} lib = {.once = PTHREAD_ONCE_INIT};

static void lib_load(void)
{
	void *h;

	/*
	 * ofi_rxm (the layer over tcp and verbs) sizes its bounce buffers by
	 * FI_OFI_RXM_BUFFER_SIZE, 16 KiB by default, and fills pools of them
	 * at endpoint setup: 4 × 17 MiB, whose first touch took 0.19 s of
	 * every engine open on the test VM.  The engine moves values by RMA
	 * from registered memory, which bypasses those buffers, so 4 KiB ones
	 * are plenty.  A value the user set is kept.
	 */
	setenv("FI_OFI_RXM_BUFFER_SIZE", "4096", 0);
	h = dlopen(LIB_SO, RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		KV_WARN(TAG,
		        "cannot load %s (%s): no RDMA transfer provider is available; install "
		        "libfabric1, or use the provider none",
		        LIB_SO, dlerror());
		return;
	}
	*(void **)&lib.getinfo = dlsym(h, "fi_getinfo");
	*(void **)&lib.freeinfo = dlsym(h, "fi_freeinfo");
	*(void **)&lib.dupinfo = dlsym(h, "fi_dupinfo");
	*(void **)&lib.fabric = dlsym(h, "fi_fabric");
	*(void **)&lib.strerror = dlsym(h, "fi_strerror");
	*(void **)&lib.version = dlsym(h, "fi_version");
	if (!lib.getinfo || !lib.freeinfo || !lib.dupinfo || !lib.fabric || !lib.strerror ||
	    !lib.version) {
		KV_WARN(TAG,
		        "%s lacks one of fi_getinfo, fi_freeinfo, fi_dupinfo, fi_fabric, "
		        "fi_strerror and fi_version: no RDMA transfer provider is available",
		        LIB_SO);
		return; /* the handle stays open: harmless, and dlclose() could run
		         * destructors of a half-used library */
	}
	lib.h = h;
}

static bool lib_ready(void)
{
	pthread_once(&lib.once, lib_load);
	return lib.h != NULL;
}

int topo_libfabric_load(void)
{
	return lib_ready() ? 0 : -ELIBACC;
}

int fi_getinfo(uint32_t version, const char *node, const char *service, uint64_t flags,
               const struct fi_info *hints, struct fi_info **info)
{
	if (!lib_ready())
		return -FI_ENOSYS;
	return lib.getinfo(version, node, service, flags, hints, info);
}

void fi_freeinfo(struct fi_info *info)
{
	if (info && lib_ready())
		lib.freeinfo(info);
}

struct fi_info *fi_dupinfo(const struct fi_info *info)
{
	return lib_ready() ? lib.dupinfo(info) : NULL;
}

int fi_fabric(struct fi_fabric_attr *attr, struct fid_fabric **fabric, void *context)
{
	if (!lib_ready())
		return -FI_ENOSYS;
	return lib.fabric(attr, fabric, context);
}

const char *fi_strerror(int errnum)
{
	return lib_ready() ? lib.strerror(errnum) : "libfabric is not available";
}

uint32_t fi_version(void)
{
	return lib_ready() ? lib.version() : 0;
}
