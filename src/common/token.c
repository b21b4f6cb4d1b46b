/* SPDX-License-Identifier: MIT */
/* The shared auth token's file.  See src/include/kvfs/token.h. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvfs/token.h"

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int kv_read_token_file(const char *path, char *buf, size_t cap, size_t *ret_len)
{
	size_t have = 0;
	int fd, err = 0;

	if (!path || !buf || cap < 2 || !ret_len)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n;

		if (have == cap) {
			/* Full: the token is too long unless only whitespace follows. */
			char c;

			n = read(fd, &c, 1);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				err = -errno;
				break;
			}
			if (n == 0)
				break;
			if (!is_space(c)) {
				err = -EFBIG;
				break;
			}
			continue;
		}
		n = read(fd, buf + have, cap - have);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		if (n == 0)
			break;
		have += (size_t)n;
	}
	close(fd);
	while (!err && have && is_space(buf[have - 1]))
		have--;
	if (!err && have == 0)
		err = -ENODATA;
	if (!err && (have >= cap || have > KV_TOKEN_MAX))
		err = -EFBIG;
	if (!err && have < KV_TOKEN_MIN)
		err = -EKEYREJECTED;
	if (err) {
		explicit_bzero(buf, cap); /* cannot be optimised away */
		return err;
	}
	buf[have] = '\0';
	*ret_len = have;
	return 0;
}

_Static_assert(KV_TOKEN_MIN == 16 && KV_TOKEN_MAX == 1024, "kv_token_strerror() names the limits");

const char *kv_token_strerror(int err)
{
	switch (err) {
	case -ENODATA:
		return "it is empty";
	case -EKEYREJECTED:
		return "the token is shorter than 16 bytes, which is guessable (make one with: "
		       "head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE)";
	case -EFBIG:
		return "the token is longer than 1024 bytes";
	default:
		return strerror(-err);
	}
}

bool kv_token_file_exposed(const char *path)
{
	struct stat st;

	return path && stat(path, &st) == 0 && (st.st_mode & (S_IRGRP | S_IROTH));
}
