/* SPDX-License-Identifier: MIT */
/*
 * Fuzz kvfs's path <-> key mapping (src/fuse/kvfs_path.c).
 *
 * Input: bytes 0-1 give the output capacity (0..1099, so both sides of
 * KV_KEY_MAX + 1 are hit), then "parent NUL name": the parent directory key
 * and the name looked up in it.  Output buffers are malloc'd with exactly
 * that capacity, so ASan sees any write past it.
 *
 * Invariants:
 *   join: a name that is "", ".", ".." or holds '/' is -EINVAL; otherwise the
 *     key is "parent/name" (or "name" under the root), it is returned only
 *     when it fits KV_KEY_MAX and the buffer, and then its length is the
 *     return value; a parent without "//" and without a trailing '/' gives a
 *     key without "//"; base(key) is the name.
 *   dir_marker: "dir/" for a non-empty dir, is_marker() of it is true and its
 *     base is ""; dir_prefix is "" for the root, else the marker.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "kvfs_i.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	return 0;
}

static bool name_ok(const char *name)
{
	return name[0] && strcmp(name, ".") && strcmp(name, "..") && !strchr(name, '/');
}

static void check_join(const char *parent, const char *name, size_t cap)
{
	size_t pl = strlen(parent), nl = strlen(name), want = pl ? pl + 1 + nl : nl;
	char *out = malloc(cap ? cap : 1);
	int r;

	CHECK(out);
	r = kvfs_path_join(parent, name, cap ? out : NULL, cap);
	if (!name_ok(name)) {
		CHECK(r == -EINVAL);
	} else if (want > KV_KEY_MAX || want + 1 > cap) {
		CHECK(r == -ENAMETOOLONG);
	} else {
		CHECK(r >= 0 && (size_t)r == want && strlen(out) == want);
		CHECK(!strncmp(out, parent, pl));
		CHECK(!pl || out[pl] == '/');
		CHECK(!strcmp(out + (pl ? pl + 1 : 0), name));
		CHECK(!strcmp(kvfs_path_base(out), name));
		CHECK(!kvfs_path_is_marker(out, (size_t)r));
		if (!strstr(parent, "//") && (!pl || parent[pl - 1] != '/'))
			CHECK(!strstr(out, "//"));
	}
	free(out);
}

static void check_marker(const char *dir, size_t cap)
{
	size_t dl = strlen(dir);
	char *out = malloc(cap ? cap : 1);
	int r;

	CHECK(out);
	r = kvfs_path_dir_marker(dir, cap ? out : NULL, cap);
	if (!dl) {
		CHECK(r == -EINVAL);
	} else if (dl + 1 > KV_KEY_MAX || dl + 2 > cap) {
		CHECK(r == -ENAMETOOLONG);
	} else {
		CHECK(r >= 0 && (size_t)r == dl + 1 && strlen(out) == dl + 1);
		CHECK(!strncmp(out, dir, dl) && out[dl] == '/');
		CHECK(kvfs_path_is_marker(out, (size_t)r));
		CHECK(kvfs_path_base(out)[0] == '\0');
	}

	r = kvfs_path_dir_prefix(dir, cap ? out : NULL, cap);
	if (!dl) {
		CHECK(cap ? r == 0 && out[0] == '\0' : r == -ENAMETOOLONG);
	} else if (dl + 1 > KV_KEY_MAX || dl + 2 > cap) {
		CHECK(r == -ENAMETOOLONG);
	} else {
		CHECK(r >= 0 && (size_t)r == dl + 1 && out[dl] == '/' && out[dl + 1] == '\0');
	}
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *base;
	char *buf, *name;
	size_t cap, n, blen;

	if (size < 2)
		return 0;
	cap = (size_t)((data[0] << 8) | data[1]) % 1100;
	n = size - 2;
	/* parent NUL name, NUL-terminated even when the input is not */
	buf = malloc(n + 2);
	CHECK(buf);
	memcpy(buf, data + 2, n);
	buf[n] = buf[n + 1] = '\0';
	name = buf + strlen(buf) + 1;

	check_join(buf, name, cap);
	check_marker(buf, cap);
	check_marker(name, cap);

	base = kvfs_path_base(buf);
	blen = strlen(base);
	CHECK(base >= buf && base + blen == buf + strlen(buf) && !strchr(base, '/'));
	CHECK(kvfs_path_is_marker(buf, strlen(buf)) == (buf[0] && buf[strlen(buf) - 1] == '/'));
	CHECK(!kvfs_path_is_marker(buf, 0));
	free(buf);
	return 0;
}
