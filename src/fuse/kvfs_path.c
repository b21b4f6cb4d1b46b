/* SPDX-License-Identifier: MIT */
/*
 * Path <-> key mapping.  A file /a/b/c on the mount is the key "a/b/c"; a
 * directory /a/b exists while some key starts with "a/b/", or explicitly
 * through the empty marker key "a/b/" that mkdir stores.  kvfs passes names
 * through unchanged (no escaping), so a name maps to itself; "." / ".."
 * never reach here as names (the kernel resolves them).  Names the key
 * policy refuses (invalid UTF-8, control characters: wire_key_check()) are
 * joined here but refused by the client library and the server with
 * EINVAL, so creating such a file fails and looking one up finds nothing.
 */
#include <errno.h>
#include <string.h>

#include "kvfs_i.h"

static bool name_ok(const char *name)
{
	return name[0] && strcmp(name, ".") && strcmp(name, "..") && !strchr(name, '/');
}

int kvfs_path_join(const char *parent, const char *name, char *out, size_t cap)
{
	size_t pl = strlen(parent), nl = strlen(name), len;

	if (!name_ok(name))
		return -EINVAL;
	len = pl ? pl + 1 + nl : nl;
	if (len > KV_KEY_MAX)
		return -ENAMETOOLONG;
	if (len + 1 > cap)
		return -ENAMETOOLONG;
	if (pl) {
		memcpy(out, parent, pl);
		out[pl] = '/';
		memcpy(out + pl + 1, name, nl + 1);
	} else {
		memcpy(out, name, nl + 1);
	}
	return (int)len;
}

int kvfs_path_dir_marker(const char *dir, char *out, size_t cap)
{
	size_t dl = strlen(dir);

	if (!dl)
		return -EINVAL;
	if (dl + 1 > KV_KEY_MAX || dl + 2 > cap)
		return -ENAMETOOLONG;
	memcpy(out, dir, dl);
	out[dl] = '/';
	out[dl + 1] = '\0';
	return (int)(dl + 1);
}

int kvfs_path_dir_prefix(const char *dir, char *out, size_t cap)
{
	if (!dir[0]) {
		if (cap < 1)
			return -ENAMETOOLONG;
		out[0] = '\0';
		return 0;
	}
	return kvfs_path_dir_marker(dir, out, cap);
}

const char *kvfs_path_base(const char *key)
{
	const char *s = strrchr(key, '/');

	return s ? s + 1 : key;
}

bool kvfs_path_is_marker(const char *key, size_t len)
{
	return len > 0 && key[len - 1] == '/';
}
